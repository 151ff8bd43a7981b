//! Buildbot's REST (data API v2) query options, applied to a collection of
//! JSON objects: the filters `name=value` and `name__op=value`, `order`,
//! `offset`, `limit` and `field`.
//!
//! Rows are compared by their JSON values: a row value that is null, missing,
//! or of another JSON type than the query value never equals, contains or
//! orders against it.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::Value;

use crate::db::Operator;

/// The type of a resource field, which decides how query values parse and compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Integer,
    Text,
    Boolean,
    /// objects, lists: may be returned and selected, not filtered or sorted
    Structured,
}

/// A parsed query string.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// The fields to return; all of them when `None`.
    fields: Option<Vec<String>>,
    filters: Vec<Filter>,
    order: Vec<Order>,
    limit: Option<u64>,
    offset: u64,
}

/// Whether a row comparing as `ordering` to a value passes an ordering operator.
fn accepts(operator: Operator, ordering: Ordering) -> bool {
    match operator {
        Operator::Lt => ordering.is_lt(),
        Operator::Le => ordering.is_le(),
        Operator::Gt => ordering.is_gt(),
        Operator::Ge => ordering.is_ge(),
        _ => false,
    }
}

/// A non-null JSON scalar. The derived order (booleans, then integers, then
/// text) only ranks mixed types when sorting; filters compare one type only.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Scalar {
    Boolean(bool),
    Integer(i64),
    Text(String),
}

impl Scalar {
    /// The comparable form of a row's value; `None` for null, a missing
    /// field, or a value no field kind compares.
    fn of(value: Option<&Value>) -> Option<Scalar> {
        match value? {
            Value::Bool(flag) => Some(Scalar::Boolean(*flag)),
            Value::Number(number) => number.as_i64().map(Scalar::Integer),
            Value::String(text) => Some(Scalar::Text(text.clone())),
            _ => None,
        }
    }

    /// The text `contains` searches: integers in decimal, booleans as JSON spells them.
    fn text(&self) -> Cow<'_, str> {
        match self {
            Scalar::Boolean(flag) => Cow::Owned(flag.to_string()),
            Scalar::Integer(number) => Cow::Owned(number.to_string()),
            Scalar::Text(text) => Cow::Borrowed(text),
        }
    }

    /// The order of two scalars of the same type; `None` across types.
    fn compare(&self, other: &Scalar) -> Option<Ordering> {
        match (self, other) {
            (Scalar::Boolean(a), Scalar::Boolean(b)) => Some(a.cmp(b)),
            (Scalar::Integer(a), Scalar::Integer(b)) => Some(a.cmp(b)),
            (Scalar::Text(a), Scalar::Text(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Filter {
    field: String,
    operator: Operator,
    /// At least one value; text for `contains`.
    values: Vec<Scalar>,
}

impl Filter {
    fn matches(&self, row: &Value) -> bool {
        let value = Scalar::of(row.get(&self.field));
        let equals_any = |value: &Scalar| self.values.contains(value);
        match self.operator {
            Operator::Eq | Operator::In => value.as_ref().is_some_and(equals_any),
            Operator::Ne | Operator::NotIn => !value.as_ref().is_some_and(equals_any),
            Operator::Contains => value.is_some_and(|value| {
                let text = value.text();
                self.values
                    .iter()
                    .any(|needle| text.contains(&*needle.text()))
            }),
            Operator::Lt | Operator::Le | Operator::Gt | Operator::Ge => {
                value.is_some_and(|value| {
                    self.values.iter().all(|bound| {
                        value
                            .compare(bound)
                            .is_some_and(|ordering| accepts(self.operator, ordering))
                    })
                })
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Order {
    field: String,
    descending: bool,
}

impl Query {
    /// Reads `field` (repeatable, also comma-separated), `order` (repeatable, `-name` for descending),
    /// `limit`, `offset`, and filters `name=value` (equality) and `name__op=value` with op one of
    /// eq, ne, lt, le, gt, ge, contains, in, notin (in/notin also take comma-separated lists).
    /// A repeated filter parameter contributes all its values. `fields` lists the resource's fields.
    /// Errors (shown to clients as 400 bodies, keep these texts): "no such field 'x'",
    /// "cannot filter on field 'x'" / "cannot sort on field 'x'" (Structured), "unrecognized query
    /// parameter 'x'" (a name that is no field and no known option, or an unknown __op),
    /// "invalid value 'v' for 'name'" (a non-integer for an Integer field except with contains; a
    /// Boolean accepts true/false/1/0/yes/no/on/off, any case; limit/offset need non-negative integers).
    pub fn parse(
        pairs: &[(String, String)],
        fields: &[(&str, FieldKind)],
    ) -> Result<Query, String> {
        let mut query = Query {
            fields: None,
            filters: Vec::new(),
            order: Vec::new(),
            limit: None,
            offset: 0,
        };
        for (name, values) in grouped(pairs) {
            match name {
                "field" => {
                    let selected = query.fields.get_or_insert_with(Vec::new);
                    for field in values.iter().flat_map(|value| value.split(',')) {
                        kind_of(field, fields)?;
                        selected.push(field.to_owned());
                    }
                }
                "order" => {
                    for value in values {
                        query.order.push(order(value, fields)?);
                    }
                }
                // Like the other options, a repeated limit or offset counts once.
                "limit" => query.limit = Some(count(name, values[0])?),
                "offset" => query.offset = count(name, values[0])?,
                _ => query.filters.push(filter(name, &values, fields)?),
            }
        }
        Ok(query)
    }

    /// True when the query has filters (single-resource endpoints refuse them).
    pub fn has_filters(&self) -> bool {
        !self.filters.is_empty()
    }

    /// Filters, sorts, then applies offset and limit; returns the page and the number of matches
    /// before paging (Buildbot's meta.total). `default_order` applies when the query gives none, e.g.
    /// &[("number", true)] for newest first ((field, descending) pairs).
    pub fn apply(&self, rows: Vec<Value>, default_order: &[(&str, bool)]) -> (Vec<Value>, u64) {
        let matches: Vec<Value> = rows
            .into_iter()
            .filter(|row| self.filters.iter().all(|filter| filter.matches(row)))
            .collect();
        let total = u64::try_from(matches.len()).unwrap_or(u64::MAX);
        // The default order still breaks the ties of the requested one.
        let keys: Vec<(&str, bool)> = self
            .order
            .iter()
            .map(|order| (order.field.as_str(), order.descending))
            .chain(default_order.iter().copied())
            .collect();
        let page = sorted(matches, &keys)
            .into_iter()
            .skip(saturating_usize(self.offset))
            .take(self.limit.map_or(usize::MAX, saturating_usize))
            .collect();
        (page, total)
    }

    /// Keeps only the requested fields of one object (all when no `field` was given).
    pub fn select(&self, mut row: Value) -> Value {
        if let (Some(fields), Some(object)) = (&self.fields, row.as_object_mut()) {
            object.retain(|key, _| fields.contains(key));
        }
        row
    }
}

/// The query pairs grouped by name, in the order the names first appear;
/// every group has at least one value.
pub(super) fn grouped(pairs: &[(String, String)]) -> Vec<(&str, Vec<&str>)> {
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for (name, value) in pairs {
        match groups.iter_mut().find(|(seen, _)| seen == name) {
            Some((_, values)) => values.push(value),
            None => groups.push((name, vec![value])),
        }
    }
    groups
}

fn kind_of(field: &str, fields: &[(&str, FieldKind)]) -> Result<FieldKind, String> {
    fields
        .iter()
        .find(|(name, _)| *name == field)
        .map(|(_, kind)| *kind)
        .ok_or_else(|| format!("no such field '{field}'"))
}

/// The kind of a field that `action` (filter on, sort on) needs to compare.
fn comparable_kind(
    field: &str,
    action: &str,
    fields: &[(&str, FieldKind)],
) -> Result<FieldKind, String> {
    match kind_of(field, fields)? {
        FieldKind::Structured => Err(format!("cannot {action} field '{field}'")),
        kind => Ok(kind),
    }
}

fn order(value: &str, fields: &[(&str, FieldKind)]) -> Result<Order, String> {
    let (descending, field) = match value.strip_prefix('-') {
        Some(field) => (true, field),
        None => (false, value),
    };
    comparable_kind(field, "sort on", fields)?;
    Ok(Order {
        field: field.to_owned(),
        descending,
    })
}

/// A filter parameter: a field name alone means equality, `field__op` names
/// the operator.
fn filter(name: &str, values: &[&str], fields: &[(&str, FieldKind)]) -> Result<Filter, String> {
    let unrecognized = || format!("unrecognized query parameter '{name}'");
    let (field, operator) = if fields.iter().any(|(field, _)| *field == name) {
        (name, Operator::Eq)
    } else {
        let (field, operator) = name.rsplit_once("__").ok_or_else(unrecognized)?;
        (
            field,
            Operator::from_name(operator).ok_or_else(unrecognized)?,
        )
    };
    let kind = comparable_kind(field, "filter on", fields)?;
    let values: Vec<&str> = match operator {
        Operator::In | Operator::NotIn => {
            values.iter().flat_map(|value| value.split(',')).collect()
        }
        _ => values.to_vec(),
    };
    let values = values
        .into_iter()
        .map(|value| operand(name, value, kind, operator))
        .collect::<Result<_, _>>()?;
    Ok(Filter {
        field: field.to_owned(),
        operator,
        values,
    })
}

/// One filter value, typed by its field; `contains` always searches for text.
fn operand(
    parameter: &str,
    value: &str,
    kind: FieldKind,
    operator: Operator,
) -> Result<Scalar, String> {
    let invalid = || invalid_value(parameter, value);
    match kind {
        _ if operator == Operator::Contains => Ok(Scalar::Text(value.to_owned())),
        FieldKind::Integer => value
            .trim()
            .parse()
            .map(Scalar::Integer)
            .map_err(|_| invalid()),
        FieldKind::Boolean => boolean(value).map(Scalar::Boolean).ok_or_else(invalid),
        FieldKind::Text | FieldKind::Structured => Ok(Scalar::Text(value.to_owned())),
    }
}

/// Buildbot's spellings of a boolean, in any case.
fn boolean(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn invalid_value(parameter: &str, value: &str) -> String {
    format!("invalid value '{value}' for '{parameter}'")
}

fn count(parameter: &str, value: &str) -> Result<u64, String> {
    value
        .trim()
        .parse()
        .map_err(|_| invalid_value(parameter, value))
}

fn saturating_usize(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

/// Sorts stably by each `(field, descending)` key in turn; null sorts lowest.
fn sorted(rows: Vec<Value>, keys: &[(&str, bool)]) -> Vec<Value> {
    let mut keyed: Vec<(Vec<Option<Scalar>>, Value)> = rows
        .into_iter()
        .map(|row| {
            let key = keys
                .iter()
                .map(|(field, _)| Scalar::of(row.get(field)))
                .collect();
            (key, row)
        })
        .collect();
    keyed.sort_by(|(a, _), (b, _)| compare_keys(a, b, keys));
    keyed.into_iter().map(|(_, row)| row).collect()
}

fn compare_keys(a: &[Option<Scalar>], b: &[Option<Scalar>], keys: &[(&str, bool)]) -> Ordering {
    a.iter()
        .zip(b)
        .zip(keys)
        .map(|((a, b), (_, descending))| {
            let ordering = a.cmp(b);
            if *descending {
                ordering.reverse()
            } else {
                ordering
            }
        })
        .find(|ordering| ordering.is_ne())
        .unwrap_or(Ordering::Equal)
}

/// Splits `a=1&b=2` into pairs, undecoded, as the tests write query strings.
#[cfg(test)]
pub(super) fn pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (name.to_owned(), value.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FIELDS: &[(&str, FieldKind)] = &[
        ("number", FieldKind::Integer),
        ("builder", FieldKind::Text),
        ("complete", FieldKind::Boolean),
        ("results", FieldKind::Integer),
        ("state_string", FieldKind::Text),
        ("workerid", FieldKind::Integer),
        ("started_at", FieldKind::Integer),
        ("properties", FieldKind::Structured),
    ];

    const NEWEST_FIRST: &[(&str, bool)] = &[("number", true)];

    /// Four builds; build 3 has null results and no workerid at all.
    fn rows() -> Vec<Value> {
        vec![
            json!({"number": 1, "builder": "linux", "complete": true, "results": 0,
                   "state_string": "build successful", "workerid": 10, "started_at": 100,
                   "properties": {"owner": ["alice", "Build"]}}),
            json!({"number": 2, "builder": "mac", "complete": true, "results": 2,
                   "state_string": "failed compile", "workerid": null, "started_at": 200,
                   "properties": {}}),
            json!({"number": 3, "builder": "linux", "complete": false, "results": null,
                   "state_string": "building", "started_at": 300, "properties": {}}),
            json!({"number": 4, "builder": "win", "complete": true, "results": 0,
                   "state_string": "Build successful", "workerid": 12, "started_at": 1000,
                   "properties": {}}),
        ]
    }

    fn parse(query: &str) -> Query {
        Query::parse(&pairs(query), FIELDS).unwrap_or_else(|error| panic!("{query}: {error}"))
    }

    fn numbers_of(page: &[Value]) -> Vec<i64> {
        page.iter()
            .map(|row| row["number"].as_i64().unwrap())
            .collect()
    }

    /// The build numbers a query returns, newest first by default, and the total.
    fn numbers(query: &str) -> (Vec<i64>, u64) {
        let (page, total) = parse(query).apply(rows(), NEWEST_FIRST);
        (numbers_of(&page), total)
    }

    fn error(query: &str) -> String {
        Query::parse(&pairs(query), FIELDS).unwrap_err()
    }

    #[test]
    fn without_options_every_row_comes_in_the_default_order() {
        assert_eq!(numbers(""), (vec![4, 3, 2, 1], 4));
        let (page, total) = parse("").apply(rows(), &[]);
        assert_eq!((numbers_of(&page), total), (vec![1, 2, 3, 4], 4));
    }

    #[test]
    fn equality_matches_any_repeated_value_and_never_null() {
        assert_eq!(numbers("builder=linux"), (vec![3, 1], 2));
        assert_eq!(numbers("builder=linux&builder=mac").0, [3, 2, 1]);
        assert_eq!(numbers("builder__eq=mac").0, [2]);
        assert_eq!(numbers("number=3").0, [3]);
        assert_eq!(numbers("results=0").0, [4, 1]);
        assert_eq!(numbers("builder=linux&started_at__gt=100").0, [3]);
        assert_eq!(numbers("builder=nobody"), (vec![], 0));
        // Text values are verbatim: equality does not split on commas.
        assert_eq!(numbers("builder=linux,mac").0, Vec::<i64>::new());
        assert_eq!(numbers("builder= linux").0, Vec::<i64>::new());
    }

    #[test]
    fn integer_values_are_trimmed() {
        let query = Query::parse(&[("number".into(), " 3 ".into())], FIELDS).unwrap();
        assert_eq!(numbers_of(&query.apply(rows(), NEWEST_FIRST).0), [3]);
    }

    #[test]
    fn ne_and_notin_keep_null_and_missing_fields() {
        assert_eq!(numbers("results__ne=0").0, [3, 2]);
        assert_eq!(numbers("results__ne=0&results__ne=2").0, [3]);
        assert_eq!(numbers("workerid__ne=10").0, [4, 3, 2]);
        assert_eq!(numbers("workerid__notin=10,12").0, [3, 2]);
        assert_eq!(numbers("builder__notin=linux&builder__notin=win").0, [2]);
        assert_eq!(numbers("number__notin=1,2&number__notin=4").0, [3]);
    }

    #[test]
    fn in_takes_lists_and_repeats_but_not_null() {
        assert_eq!(numbers("number__in=1,3").0, [3, 1]);
        assert_eq!(numbers("number__in=1&number__in=3").0, [3, 1]);
        assert_eq!(numbers("builder__in=mac,win&builder__in=none").0, [4, 2]);
        assert_eq!(numbers("results__in=0,1").0, [4, 1]);
        assert_eq!(numbers("workerid__in=10,12").0, [4, 1]);
    }

    #[test]
    fn contains_searches_text_case_sensitively() {
        assert_eq!(numbers("state_string__contains=uild").0, [4, 3, 1]);
        assert_eq!(numbers("state_string__contains=build").0, [3, 1]);
        assert_eq!(
            numbers("state_string__contains=fail&state_string__contains=Build").0,
            [4, 2]
        );
        // Integers are searched in their decimal text; null never contains.
        assert_eq!(numbers("started_at__contains=00").0, [4, 3, 2, 1]);
        assert_eq!(numbers("started_at__contains=10").0, [4, 1]);
        assert_eq!(numbers("results__contains=0").0, [4, 1]);
        assert_eq!(numbers("number__contains=x").0, Vec::<i64>::new());
        assert_eq!(numbers("complete__contains=ru").0, [4, 2, 1]);
    }

    #[test]
    fn ordering_filters_compare_by_field_type_and_hold_for_every_value() {
        assert_eq!(numbers("started_at__lt=300").0, [2, 1]);
        assert_eq!(numbers("started_at__le=300").0, [3, 2, 1]);
        assert_eq!(numbers("started_at__gt=200").0, [4, 3]);
        assert_eq!(numbers("started_at__ge=200").0, [4, 3, 2]);
        // As text, "1000" would sort before "300".
        assert_eq!(numbers("started_at__gt=300").0, [4]);
        assert_eq!(numbers("started_at__gt=100&started_at__lt=1000").0, [3, 2]);
        assert_eq!(numbers("started_at__gt=100&started_at__gt=200").0, [4, 3]);
        assert_eq!(numbers("results__lt=1").0, [4, 1]);
        assert_eq!(numbers("results__ge=0").0, [4, 2, 1]);
        assert_eq!(numbers("builder__gt=linux").0, [4, 2]);
        // Byte order: capitals come before lower case.
        assert_eq!(numbers("state_string__lt=b").0, [4]);
        assert_eq!(numbers("complete__lt=true").0, [3]);
        assert_eq!(numbers("complete__gt=false").0, [4, 2, 1]);
    }

    #[test]
    fn a_value_of_another_json_type_never_compares() {
        let rows = vec![
            json!({"number": 1, "results": "0"}),
            json!({"number": 2, "results": 0}),
        ];
        let matching = |query: &str| numbers_of(&parse(query).apply(rows.clone(), &[]).0);
        assert_eq!(matching("results=0"), [2]);
        assert_eq!(matching("results__ne=0"), [1]);
        assert_eq!(matching("results__le=5"), [2]);
        assert_eq!(matching("results__contains=0"), [1, 2]);
    }

    #[test]
    fn boolean_values_accept_buildbot_spellings_in_any_case() {
        for word in ["true", "TRUE", "1", "yes", "Yes", "on", "ON"] {
            assert_eq!(numbers(&format!("complete={word}")).0, [4, 2, 1], "{word}");
        }
        for word in ["false", "False", "0", "no", "NO", "off", "Off"] {
            assert_eq!(numbers(&format!("complete={word}")).0, [3], "{word}");
        }
        assert_eq!(numbers("complete__in=yes,off").0, [4, 3, 2, 1]);
        assert_eq!(
            error("complete=maybe"),
            "invalid value 'maybe' for 'complete'"
        );
        assert_eq!(
            error("complete__ne=2"),
            "invalid value '2' for 'complete__ne'"
        );
    }

    #[test]
    fn order_sorts_with_nulls_lowest_and_ties_by_the_default_order() {
        assert_eq!(numbers("order=started_at").0, [1, 2, 3, 4]);
        assert_eq!(numbers("order=-started_at").0, [4, 3, 2, 1]);
        assert_eq!(numbers("order=number").0, [1, 2, 3, 4]);
        assert_eq!(numbers("order=results").0, [3, 4, 1, 2]);
        assert_eq!(numbers("order=-results").0, [2, 4, 1, 3]);
        // Null and missing both sort lowest, then tie newest first.
        assert_eq!(numbers("order=workerid").0, [3, 2, 1, 4]);
        assert_eq!(numbers("order=-workerid").0, [4, 1, 3, 2]);
        assert_eq!(numbers("order=builder").0, [3, 1, 2, 4]);
        assert_eq!(numbers("order=-builder").0, [4, 2, 3, 1]);
        assert_eq!(numbers("order=builder&order=number").0, [1, 3, 2, 4]);
        assert_eq!(numbers("order=-complete").0, [4, 2, 1, 3]);
        assert_eq!(numbers("order=-complete&order=-results").0, [2, 4, 1, 3]);
    }

    #[test]
    fn sorting_is_stable_and_the_default_order_may_have_several_keys() {
        let (page, _) = parse("order=builder").apply(rows(), &[]);
        assert_eq!(numbers_of(&page), [1, 3, 2, 4]);
        let by_builder_then_oldest = [("builder", true), ("number", false)];
        let (page, _) = parse("").apply(rows(), &by_builder_then_oldest);
        assert_eq!(numbers_of(&page), [4, 2, 1, 3]);
        let (page, _) = parse("order=results").apply(rows(), &by_builder_then_oldest);
        assert_eq!(numbers_of(&page), [3, 4, 1, 2]);
    }

    #[test]
    fn limit_and_offset_page_while_total_counts_all_matches() {
        assert_eq!(numbers("limit=2"), (vec![4, 3], 4));
        assert_eq!(numbers("limit=2&offset=1"), (vec![3, 2], 4));
        assert_eq!(numbers("offset=3"), (vec![1], 4));
        assert_eq!(numbers("offset=10"), (vec![], 4));
        assert_eq!(numbers("limit=0"), (vec![], 4));
        assert_eq!(numbers("limit=18446744073709551615"), (vec![4, 3, 2, 1], 4));
        assert_eq!(numbers("builder=linux&limit=1"), (vec![3], 2));
        assert_eq!(numbers("order=number&limit=1&offset=1"), (vec![2], 4));
        assert_eq!(numbers("limit=1&limit=3"), (vec![4], 4));
    }

    #[test]
    fn field_keeps_only_the_requested_fields() {
        let row = rows().remove(3);
        let query = parse("field=number&field=builder");
        assert_eq!(
            query.select(row.clone()),
            json!({"number": 4, "builder": "win"})
        );
        let query = parse("field=state_string,properties&field=number");
        assert_eq!(
            query.select(row.clone()),
            json!({"number": 4, "state_string": "Build successful", "properties": {}})
        );
        assert_eq!(parse("order=-number").select(row.clone()), row);
        let query = parse("field=workerid");
        assert_eq!(query.select(rows().remove(1)), json!({"workerid": null}));
        assert_eq!(query.select(rows().remove(2)), json!({}));
        assert!(!query.has_filters());
    }

    #[test]
    fn has_filters_tells_filters_from_other_options() {
        assert!(!parse("").has_filters());
        assert!(!parse("field=number&order=-number&limit=1&offset=2").has_filters());
        assert!(parse("builder=linux").has_filters());
        assert!(parse("number__gt=1").has_filters());
    }

    #[test]
    fn structured_fields_are_selected_but_not_filtered_or_sorted() {
        assert!(Query::parse(&pairs("field=properties"), FIELDS).is_ok());
        assert_eq!(error("properties=x"), "cannot filter on field 'properties'");
        assert_eq!(
            error("properties__contains=alice"),
            "cannot filter on field 'properties'"
        );
        assert_eq!(
            error("order=properties"),
            "cannot sort on field 'properties'"
        );
        assert_eq!(
            error("order=-properties"),
            "cannot sort on field 'properties'"
        );
    }

    #[test]
    fn bad_parameters_are_refused_with_their_texts() {
        let cases = [
            ("x=1", "unrecognized query parameter 'x'"),
            (
                "builder__like=a",
                "unrecognized query parameter 'builder__like'",
            ),
            ("nope__like=a", "unrecognized query parameter 'nope__like'"),
            ("field=nope", "no such field 'nope'"),
            ("field=number,", "no such field ''"),
            ("order=-nope", "no such field 'nope'"),
            ("nope__eq=1", "no such field 'nope'"),
            ("limit=ten", "invalid value 'ten' for 'limit'"),
            ("limit=-1", "invalid value '-1' for 'limit'"),
            ("offset=-1", "invalid value '-1' for 'offset'"),
            ("offset=", "invalid value '' for 'offset'"),
            ("number__gt=two", "invalid value 'two' for 'number__gt'"),
            ("number__in=1,x", "invalid value 'x' for 'number__in'"),
            ("started_at=soon", "invalid value 'soon' for 'started_at'"),
            ("number=", "invalid value '' for 'number'"),
            ("number=1.5", "invalid value '1.5' for 'number'"),
        ];
        for (query, message) in cases {
            assert_eq!(error(query), message, "{query}");
        }
    }
}
