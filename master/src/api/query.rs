//! Buildbot's REST query options applied in memory, to a collection that
//! comes from the configuration (schedulers, force schedulers): small, and
//! bounded by the configuration. Stored collections run the same parsed
//! [`Listing`] as SQL instead.
//!
//! Rows are compared by their JSON values: a row value that is null, missing,
//! or of another JSON type than the query value never equals, contains or
//! orders against it.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::Value;

use crate::db::{Filter, Listing, Operand, Operator};

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

impl From<&Operand> for Scalar {
    fn from(operand: &Operand) -> Scalar {
        match operand {
            Operand::Integer(number) => Scalar::Integer(*number),
            Operand::Text(text) => Scalar::Text(text.clone()),
            Operand::Boolean(flag) => Scalar::Boolean(*flag),
        }
    }
}

/// Whether a row passes a filter.
fn matches(filter: &Filter, row: &Value) -> bool {
    let value = Scalar::of(row.get(filter.field.name));
    let values: Vec<Scalar> = filter.values.iter().map(Scalar::from).collect();
    let equals_any = |value: &Scalar| values.contains(value);
    match filter.operator {
        Operator::Eq | Operator::In => value.as_ref().is_some_and(equals_any),
        Operator::Ne | Operator::NotIn => !value.as_ref().is_some_and(equals_any),
        Operator::Contains => value.is_some_and(|value| {
            let text = value.text();
            values.iter().any(|needle| text.contains(&*needle.text()))
        }),
        Operator::Lt | Operator::Le | Operator::Gt | Operator::Ge => value.is_some_and(|value| {
            values.iter().all(|bound| {
                value
                    .compare(bound)
                    .is_some_and(|ordering| accepts(filter.operator, ordering))
            })
        }),
    }
}

/// Filters, sorts, then applies offset and limit; returns the page and the
/// number of matches before paging (Buildbot's `meta.total`).
/// `default_order` applies when the query gives none, and breaks ties.
pub fn apply(
    listing: &Listing,
    rows: Vec<Value>,
    default_order: &[(&str, bool)],
) -> (Vec<Value>, u64) {
    let matches: Vec<Value> = rows
        .into_iter()
        .filter(|row| listing.filters.iter().all(|filter| matches(filter, row)))
        .collect();
    let total = u64::try_from(matches.len()).unwrap_or(u64::MAX);
    let keys: Vec<(&str, bool)> = listing
        .order
        .iter()
        .map(|(field, descending)| (field.name, *descending))
        .chain(default_order.iter().copied())
        .collect();
    let page = sorted(matches, &keys)
        .into_iter()
        .skip(saturating_usize(listing.offset))
        .take(listing.limit.map_or(usize::MAX, saturating_usize))
        .collect();
    (page, total)
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

/// The same semantics two ways: every query of these tests runs in memory
/// and as the SQL a stored collection runs, on the same rows, and both must
/// give the same answer.
#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::db::{Field, FieldKind};
    use serde_json::json;

    const fn field(name: &'static str, kind: FieldKind) -> Field {
        Field {
            name,
            sql: name,
            kind,
        }
    }

    static FIELDS: &[Field] = &[
        field("number", FieldKind::Integer),
        field("builder", FieldKind::Text),
        field("complete", FieldKind::Boolean),
        field("results", FieldKind::Integer),
        field("state_string", FieldKind::Text),
        field("workerid", FieldKind::Integer),
        field("started_at", FieldKind::Integer),
        Field {
            name: "properties",
            sql: "",
            kind: FieldKind::Structured,
        },
    ];

    /// Splits `a=1&b=2` into pairs, undecoded.
    pub(crate) fn pairs(query: &str) -> Vec<(String, String)> {
        query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                (name.to_owned(), value.to_owned())
            })
            .collect()
    }

    /// The numbers of the rows `listing` selects from a table of `rows`, by SQL.
    fn by_sql(
        listing: &Listing,
        rows: &[Value],
        default_order: &[(&str, bool)],
    ) -> (Vec<i64>, u64) {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE t (number INTEGER, builder TEXT, complete INTEGER, results INTEGER,
                 state_string TEXT, workerid INTEGER, started_at INTEGER)",
        )
        .unwrap();
        for row in rows {
            let sql = |name: &str| match &row[name] {
                Value::Null => rusqlite::types::Value::Null,
                Value::Bool(flag) => rusqlite::types::Value::Integer(i64::from(*flag)),
                Value::Number(n) => rusqlite::types::Value::Integer(n.as_i64().unwrap()),
                Value::String(text) => rusqlite::types::Value::Text(text.clone()),
                other => panic!("{other}"),
            };
            conn.execute(
                "INSERT INTO t VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                rusqlite::params_from_iter(
                    [
                        "number",
                        "builder",
                        "complete",
                        "results",
                        "state_string",
                        "workerid",
                        "started_at",
                    ]
                    .map(sql),
                ),
            )
            .unwrap();
        }
        let (condition, mut params) = listing.condition(None);
        let total: i64 = conn
            .query_row(
                &format!("SELECT COUNT(*) FROM t{condition}"),
                rusqlite::params_from_iter(&params),
                |row| row.get(0),
            )
            .unwrap();
        let order = listing.order_by(FIELDS, default_order);
        let page = listing.page(&mut params);
        let mut select = conn
            .prepare(&format!("SELECT number FROM t{condition}{order}{page}"))
            .unwrap();
        let numbers = select
            .query_map(rusqlite::params_from_iter(&params), |row| row.get(0))
            .unwrap()
            .collect::<Result<Vec<i64>, _>>()
            .unwrap();
        (numbers, total as u64)
    }

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

    fn parse(query: &str) -> Listing {
        Listing::parse(&pairs(query), FIELDS).unwrap_or_else(|error| panic!("{query}: {error}"))
    }

    fn numbers_of(page: &[Value]) -> Vec<i64> {
        page.iter()
            .map(|row| row["number"].as_i64().unwrap())
            .collect()
    }

    /// The build numbers a query returns, newest first by default, and the
    /// total: in memory and by SQL, which must agree.
    fn numbers(query: &str) -> (Vec<i64>, u64) {
        numbers_in(query, NEWEST_FIRST)
    }

    fn numbers_in(query: &str, default_order: &[(&str, bool)]) -> (Vec<i64>, u64) {
        let listing = parse(query);
        let (page, total) = apply(&listing, rows(), default_order);
        let in_memory = (numbers_of(&page), total);
        assert_eq!(
            in_memory,
            by_sql(&listing, &rows(), default_order),
            "{query}"
        );
        in_memory
    }

    fn error(query: &str) -> String {
        Listing::parse(&pairs(query), FIELDS).unwrap_err()
    }

    #[test]
    fn without_options_every_row_comes_in_the_default_order() {
        assert_eq!(numbers(""), (vec![4, 3, 2, 1], 4));
        assert_eq!(numbers_in("", &[("number", false)]), (vec![1, 2, 3, 4], 4));
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
        assert_eq!(
            numbers("number=%203%20".replace("%20", " ").as_str()).0,
            [3]
        );
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
        // In memory only: a stored column has one type.
        let matching = |query: &str| numbers_of(&apply(&parse(query), rows.clone(), &[]).0);
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
        // In memory, ties keep the rows' order.
        let (page, _) = apply(&parse("order=builder"), rows(), &[]);
        assert_eq!(numbers_of(&page), [1, 3, 2, 4]);
        let by_builder_then_oldest = [("builder", true), ("number", false)];
        assert_eq!(numbers_in("", &by_builder_then_oldest).0, [4, 2, 1, 3]);
        assert_eq!(
            numbers_in("order=results", &by_builder_then_oldest).0,
            [3, 4, 1, 2]
        );
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
        assert!(Listing::parse(&pairs("field=properties"), FIELDS).is_ok());
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
