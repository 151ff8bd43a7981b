//! Buildbot's REST query options — `field`, the filters `name=value` and
//! `name__op=value`, `order`, `limit`, `offset` — parsed against a
//! collection's declared fields, and turned into one SQL query.
//!
//! Each collection declares its fields once ([`Field`]: the REST name, the
//! SQL that reads it, its kind), and that declaration drives validation (a
//! 400 naming the field or the value), the SQL of filters and order, and
//! what may be selected. Every filter is pushed down to SQL; the indexes of
//! the schema serve the queries dashboards and chat make. `offset` is capped
//! at [`MAX_OFFSET`]: SQL skips rows one by one, so a deep page would cost as
//! much as reading them.
//!
//! Comparisons follow the REST API's rules: null never equals, contains or
//! orders against a value (so `ne` and `notin` match a null), and null sorts
//! first ascending, last descending.

use rusqlite::types::Value as SqlValue;

/// How far a listing may skip; deeper pages are asked with a filter on the
/// id (`buildid__lt=…`) instead.
pub const MAX_OFFSET: u64 = 10_000;

/// The most values one filter may test: each is a term of the SQL condition,
/// and a condition thousands of terms deep is refused by SQLite and costs
/// every row it tests.
pub const MAX_VALUES: usize = 200;

/// The type of a field, which decides how query values parse and compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Integer,
    Text,
    /// Stored as 0 or 1.
    Boolean,
    /// True when its SQL is not null: a build is `complete` when it has a
    /// `complete_at`. Filtering on it uses the column's index.
    Presence,
    /// Lists and objects: may be selected, not filtered or sorted.
    Structured,
}

/// One field of a REST collection.
#[derive(Debug, PartialEq, Eq)]
pub struct Field {
    /// Its name in REST objects and queries.
    pub name: &'static str,
    /// The SQL expression that reads it (empty for structured fields, which
    /// the collection's row reader assembles).
    pub sql: &'static str,
    pub kind: FieldKind,
}

/// How a filter compares a field with its values: `Eq` and `In` match a row
/// equal to any value; `Ne` and `NotIn` a row equal to none of them; the
/// ordering operators must hold for every value; `Contains` matches a row
/// whose text contains any value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Contains,
    In,
    NotIn,
}

impl Operator {
    pub fn from_name(name: &str) -> Option<Operator> {
        Some(match name {
            "eq" => Operator::Eq,
            "ne" => Operator::Ne,
            "lt" => Operator::Lt,
            "le" => Operator::Le,
            "gt" => Operator::Gt,
            "ge" => Operator::Ge,
            "contains" => Operator::Contains,
            "in" => Operator::In,
            "notin" => Operator::NotIn,
            _ => return None,
        })
    }
}

/// A value to compare a field with. `Contains` always searches for text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operand {
    Integer(i64),
    Text(String),
    Boolean(bool),
}

impl Operand {
    fn sql(&self) -> SqlValue {
        match self {
            Operand::Integer(number) => SqlValue::Integer(*number),
            Operand::Text(text) => SqlValue::Text(text.clone()),
            Operand::Boolean(flag) => SqlValue::Integer(i64::from(*flag)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub field: &'static Field,
    pub operator: Operator,
    /// At least one value.
    pub values: Vec<Operand>,
}

/// A parsed query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The fields to return; all of them when `None`.
    pub fields: Option<Vec<String>>,
    pub filters: Vec<Filter>,
    /// (field, descending), in order of importance.
    pub order: Vec<(&'static Field, bool)>,
    pub limit: Option<u64>,
    pub offset: u64,
}

impl Listing {
    /// Reads `field` (repeatable, also comma-separated), `order` (repeatable,
    /// `-name` for descending), `limit`, `offset`, and filters. A repeated
    /// filter parameter contributes all its values; `in` and `notin` also
    /// take comma-separated lists. The errors are the 400 bodies: "no such
    /// field 'x'", "cannot filter on field 'x'", "cannot sort on field 'x'",
    /// "unrecognized query parameter 'x'", "invalid value 'v' for 'name'",
    /// and the offset and value-count caps.
    pub fn parse(pairs: &[(String, String)], fields: &'static [Field]) -> Result<Listing, String> {
        let mut listing = Listing {
            fields: None,
            filters: Vec::new(),
            order: Vec::new(),
            limit: None,
            offset: 0,
        };
        for (name, values) in grouped(pairs) {
            match name {
                "field" => {
                    let selected = listing.fields.get_or_insert_with(Vec::new);
                    for field in values.iter().flat_map(|value| value.split(',')) {
                        find(field, fields)?;
                        selected.push(field.to_owned());
                    }
                }
                "order" => {
                    for value in values {
                        let (descending, field) = match value.strip_prefix('-') {
                            Some(field) => (true, field),
                            None => (false, value),
                        };
                        listing
                            .order
                            .push((comparable(field, "sort on", fields)?, descending));
                    }
                }
                // Like the other options, a repeated limit or offset counts once.
                "limit" => listing.limit = Some(count(name, values[0])?),
                "offset" => {
                    listing.offset = count(name, values[0])?;
                    if listing.offset > MAX_OFFSET {
                        return Err(format!(
                            "offset {} is larger than {MAX_OFFSET}: page further with a filter \
                             on the id (e.g. id__lt=LAST) instead",
                            listing.offset
                        ));
                    }
                }
                _ => listing.filters.push(filter(name, &values, fields)?),
            }
        }
        Ok(listing)
    }

    pub fn has_filters(&self) -> bool {
        !self.filters.is_empty()
    }

    /// Whether the caller pages: then `meta.total` needs a count of its own.
    pub fn pages(&self) -> bool {
        self.limit.is_some() || self.offset > 0
    }

    /// The SQL condition of the filters (and of `scope`, a column equal to a
    /// parent's id), with its parameters in order.
    pub fn condition(&self, scope: Option<(&str, i64)>) -> (String, Vec<SqlValue>) {
        let mut params = Vec::new();
        let mut conditions = Vec::new();
        if let Some((column, id)) = scope {
            conditions.push(format!("{column} = ?"));
            params.push(SqlValue::Integer(id));
        }
        for filter in &self.filters {
            conditions.push(sql_filter(filter, &mut params));
        }
        if conditions.is_empty() {
            (String::new(), params)
        } else {
            (format!(" WHERE {}", conditions.join(" AND ")), params)
        }
    }

    /// `ORDER BY …`: the requested order, its ties broken by `default_order`.
    pub fn order_by(&self, fields: &'static [Field], default_order: &[(&str, bool)]) -> String {
        let defaults = default_order.iter().filter_map(|(name, descending)| {
            fields
                .iter()
                .find(|f| f.name == *name)
                .map(|f| (f, *descending))
        });
        let keys: Vec<String> = self
            .order
            .iter()
            .copied()
            .chain(defaults)
            .map(|(field, descending)| {
                let direction = if descending { "DESC" } else { "ASC" };
                format!("{} {direction}", sql_value(field))
            })
            .collect();
        format!(" ORDER BY {}", keys.join(", "))
    }

    /// ` LIMIT ? OFFSET ?` and its parameters.
    pub fn page(&self, params: &mut Vec<SqlValue>) -> &'static str {
        params
            .push(SqlValue::Integer(self.limit.map_or(i64::MAX, |limit| {
                i64::try_from(limit).unwrap_or(i64::MAX)
            })));
        params.push(SqlValue::Integer(self.offset as i64));
        " LIMIT ? OFFSET ?"
    }

    /// Keeps only the requested fields of one object (all when no `field` was given).
    pub fn select(&self, mut row: serde_json::Value) -> serde_json::Value {
        if let (Some(fields), Some(object)) = (&self.fields, row.as_object_mut()) {
            object.retain(|key, _| fields.contains(key));
        }
        row
    }
}

/// The SQL of a field's value as it compares: a presence is 0 or 1.
fn sql_value(field: &Field) -> String {
    match field.kind {
        FieldKind::Presence => format!("({} IS NOT NULL)", field.sql),
        _ => field.sql.to_owned(),
    }
}

/// The SQL condition of one filter, its values appended to `params`.
fn sql_filter(filter: &Filter, params: &mut Vec<SqlValue>) -> String {
    let field = filter.field;
    if field.kind == FieldKind::Presence
        && matches!(
            filter.operator,
            Operator::Eq | Operator::In | Operator::Ne | Operator::NotIn
        )
    {
        // `complete=false` is `complete_at IS NULL`, which the column's index serves.
        let wanted: Vec<bool> = filter
            .values
            .iter()
            .map(|value| value == &Operand::Boolean(true))
            .collect();
        let negated = matches!(filter.operator, Operator::Ne | Operator::NotIn);
        let (true_ok, false_ok) = (
            wanted.contains(&true) != negated,
            wanted.contains(&false) != negated,
        );
        return match (true_ok, false_ok) {
            (true, true) => "1".to_owned(),
            (false, false) => "0".to_owned(),
            (true, false) => format!("{} IS NOT NULL", field.sql),
            (false, true) => format!("{} IS NULL", field.sql),
        };
    }
    let column = sql_value(field);
    let count = filter.values.len();
    if filter.operator == Operator::Contains {
        // PostgreSQL spells `instr` as `strpos`; LIKE would ignore case in SQLite.
        let text = match field.kind {
            FieldKind::Boolean | FieldKind::Presence => {
                format!("(CASE {column} WHEN 1 THEN 'true' WHEN 0 THEN 'false' END)")
            }
            _ => format!("CAST({column} AS TEXT)"),
        };
        params.extend(filter.values.iter().map(|value| match value {
            Operand::Text(text) => SqlValue::Text(text.clone()),
            other => other.sql(),
        }));
        return format!(
            "({})",
            vec![format!("instr({text}, ?) > 0"); count].join(" OR ")
        );
    }
    params.extend(filter.values.iter().map(Operand::sql));
    let placeholders = vec!["?"; count].join(", ");
    let every = |test: &str| {
        format!(
            "({})",
            vec![format!("{column} {test} ?"); count].join(" AND ")
        )
    };
    match filter.operator {
        // One value is `=`, which a partial index's condition can match.
        Operator::Eq | Operator::In if count == 1 => format!("{column} = ?"),
        Operator::Eq | Operator::In => format!("{column} IN ({placeholders})"),
        Operator::Ne | Operator::NotIn => {
            format!("({column} IS NULL OR {column} NOT IN ({placeholders}))")
        }
        Operator::Lt => every("<"),
        Operator::Le => every("<="),
        Operator::Gt => every(">"),
        Operator::Ge => every(">="),
        Operator::Contains => unreachable!("handled above"),
    }
}

/// The query pairs grouped by name, in the order the names first appear;
/// every group has at least one value.
pub fn grouped(pairs: &[(String, String)]) -> Vec<(&str, Vec<&str>)> {
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for (name, value) in pairs {
        match groups.iter_mut().find(|(seen, _)| seen == name) {
            Some((_, values)) => values.push(value),
            None => groups.push((name, vec![value])),
        }
    }
    groups
}

fn find(field: &str, fields: &'static [Field]) -> Result<&'static Field, String> {
    fields
        .iter()
        .find(|f| f.name == field)
        .ok_or_else(|| format!("no such field '{field}'"))
}

/// A field that `action` (filter on, sort on) needs to compare.
fn comparable(
    field: &str,
    action: &str,
    fields: &'static [Field],
) -> Result<&'static Field, String> {
    let found = find(field, fields)?;
    match found.kind {
        FieldKind::Structured => Err(format!("cannot {action} field '{field}'")),
        _ => Ok(found),
    }
}

/// A filter parameter: a field name alone means equality, `field__op` names
/// the operator.
fn filter(name: &str, values: &[&str], fields: &'static [Field]) -> Result<Filter, String> {
    let unrecognized = || format!("unrecognized query parameter '{name}'");
    let (field, operator) = if fields.iter().any(|f| f.name == name) {
        (name, Operator::Eq)
    } else {
        let (field, operator) = name.rsplit_once("__").ok_or_else(unrecognized)?;
        (
            field,
            Operator::from_name(operator).ok_or_else(unrecognized)?,
        )
    };
    let field = comparable(field, "filter on", fields)?;
    let values: Vec<&str> = match operator {
        Operator::In | Operator::NotIn => {
            values.iter().flat_map(|value| value.split(',')).collect()
        }
        _ => values.to_vec(),
    };
    if values.len() > MAX_VALUES {
        return Err(format!(
            "too many values for '{name}': {} (at most {MAX_VALUES})",
            values.len()
        ));
    }
    let values = values
        .into_iter()
        .map(|value| operand(name, value, field.kind, operator))
        .collect::<Result<_, _>>()?;
    Ok(Filter {
        field,
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
) -> Result<Operand, String> {
    let invalid = || invalid_value(parameter, value);
    match kind {
        _ if operator == Operator::Contains => Ok(Operand::Text(value.to_owned())),
        FieldKind::Integer => value
            .trim()
            .parse()
            .map(Operand::Integer)
            .map_err(|_| invalid()),
        FieldKind::Boolean | FieldKind::Presence => {
            boolean(value).map(Operand::Boolean).ok_or_else(invalid)
        }
        FieldKind::Text | FieldKind::Structured => Ok(Operand::Text(value.to_owned())),
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
