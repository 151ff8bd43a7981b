//! Reading changes: the query a collection request describes, and the SQL
//! that answers it one page at a time.

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, Row};
use serde_json::{Map, Value};

use super::Error;
use crate::changes::{Change, SourceStamp};

/// A scalar column of a change that queries can filter and sort on. Its SQL
/// column name is its REST field name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    ChangeId,
    Author,
    Committer,
    Comments,
    Branch,
    Revision,
    Revlink,
    WhenTimestamp,
    Category,
    Repository,
    Codebase,
    Project,
}

impl Column {
    pub const ALL: [Column; 12] = [
        Column::ChangeId,
        Column::Author,
        Column::Committer,
        Column::Comments,
        Column::Branch,
        Column::Revision,
        Column::Revlink,
        Column::WhenTimestamp,
        Column::Category,
        Column::Repository,
        Column::Codebase,
        Column::Project,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Column::ChangeId => "changeid",
            Column::Author => "author",
            Column::Committer => "committer",
            Column::Comments => "comments",
            Column::Branch => "branch",
            Column::Revision => "revision",
            Column::Revlink => "revlink",
            Column::WhenTimestamp => "when_timestamp",
            Column::Category => "category",
            Column::Repository => "repository",
            Column::Codebase => "codebase",
            Column::Project => "project",
        }
    }

    pub fn from_name(name: &str) -> Option<Column> {
        Column::ALL.into_iter().find(|column| column.name() == name)
    }

    /// Integer columns compare as numbers, the others as text.
    pub fn is_integer(self) -> bool {
        matches!(self, Column::ChangeId | Column::WhenTimestamp)
    }
}

/// How a filter compares a column with its values.
///
/// `Eq` and `In` match a row equal to any value; `Ne` and `NotIn` match a row
/// equal to none of them, including a row where the column is null; `Contains`
/// matches a row whose text contains any value; the ordering operators must
/// hold for every value. Null never equals, contains or orders against a value.
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

/// A value to compare a column with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operand {
    Integer(i64),
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub column: Column,
    pub operator: Operator,
    /// At least one value.
    pub values: Vec<Operand>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Order {
    pub column: Column,
    pub descending: bool,
}

/// Which changes to list. All filters must match. Without an order the newest
/// change comes first; ties in any order are broken newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeQuery {
    pub filters: Vec<Filter>,
    pub order: Vec<Order>,
    pub limit: Option<u64>,
    pub offset: u64,
}

/// One page of a query's matches.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangePage {
    /// How many changes match, before `limit` and `offset`.
    pub total: u64,
    pub changes: Vec<Change>,
}

const SELECT_CHANGES: &str = "SELECT changes.changeid, changes.author, changes.committer,
        changes.comments, changes.revision, changes.when_timestamp, changes.branch,
        changes.category, changes.revlink, changes.repository, changes.project,
        changes.codebase, changes.parent_changeid,
        sourcestamps.id, sourcestamps.branch, sourcestamps.revision,
        sourcestamps.repository, sourcestamps.codebase, sourcestamps.project,
        sourcestamps.created_at
    FROM changes JOIN sourcestamps ON sourcestamps.id = changes.sourcestampid";

/// Counts the matches and loads the requested page, in one read transaction
/// so that both see the same data.
pub(super) fn query_changes(
    conn: &mut Connection,
    query: &ChangeQuery,
) -> Result<ChangePage, Error> {
    let tx = conn.transaction()?;
    let (condition, mut params) = where_clause(&query.filters);
    let total: i64 = tx.query_row(
        &format!("SELECT COUNT(*) FROM changes{condition}"),
        rusqlite::params_from_iter(&params),
        |row| row.get(0),
    )?;
    let order: Vec<String> = query
        .order
        .iter()
        .map(|order| {
            let direction = if order.descending {
                "DESC NULLS LAST"
            } else {
                "ASC NULLS FIRST"
            };
            format!("changes.{} {direction}", order.column.name())
        })
        .chain(["changes.changeid DESC".to_string()])
        .collect();
    let sql = format!(
        "{SELECT_CHANGES}{condition} ORDER BY {} LIMIT ? OFFSET ?",
        order.join(", ")
    );
    params.push(SqlValue::Integer(
        query.limit.map_or(i64::MAX, saturating_i64),
    ));
    params.push(SqlValue::Integer(saturating_i64(query.offset)));
    let changes = load_changes(&tx, &sql, rusqlite::params_from_iter(&params))?;
    Ok(ChangePage {
        total: total as u64,
        changes,
    })
}

/// Loads one change by id.
pub(super) fn get_change(conn: &Connection, changeid: i64) -> Result<Option<Change>, Error> {
    let sql = format!("{SELECT_CHANGES} WHERE changes.changeid = ?1");
    Ok(load_changes(conn, &sql, [changeid])?.pop())
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The SQL condition for all filters, with its parameters in order.
fn where_clause(filters: &[Filter]) -> (String, Vec<SqlValue>) {
    let mut params = Vec::new();
    let conditions: Vec<String> = filters
        .iter()
        .map(|filter| {
            let column = format!("changes.{}", filter.column.name());
            params.extend(filter.values.iter().map(|value| match value {
                Operand::Integer(number) => SqlValue::Integer(*number),
                Operand::Text(text) => SqlValue::Text(text.clone()),
            }));
            let count = filter.values.len();
            let placeholders = vec!["?"; count].join(", ");
            let every =
                |test: String, joiner: &str| format!("({})", vec![test; count].join(joiner));
            match filter.operator {
                Operator::Eq | Operator::In => format!("{column} IN ({placeholders})"),
                Operator::Ne | Operator::NotIn => {
                    format!("({column} IS NULL OR {column} NOT IN ({placeholders}))")
                }
                Operator::Lt => every(format!("{column} < ?"), " AND "),
                Operator::Le => every(format!("{column} <= ?"), " AND "),
                Operator::Gt => every(format!("{column} > ?"), " AND "),
                Operator::Ge => every(format!("{column} >= ?"), " AND "),
                // PostgreSQL spells `instr` as `strpos`; LIKE would ignore case in SQLite.
                Operator::Contains => {
                    every(format!("instr(CAST({column} AS TEXT), ?) > 0"), " OR ")
                }
            }
        })
        .collect();
    if conditions.is_empty() {
        (String::new(), params)
    } else {
        (format!(" WHERE {}", conditions.join(" AND ")), params)
    }
}

fn load_changes(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Change>, Error> {
    let mut statement = conn.prepare(sql)?;
    let mut changes = statement
        .query_map(params, change_from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    let mut files = conn.prepare_cached(
        "SELECT filename FROM change_files WHERE changeid = ?1 ORDER BY position",
    )?;
    let mut properties = conn.prepare_cached(
        "SELECT property_name, property_value FROM change_properties
         WHERE changeid = ?1 ORDER BY property_name",
    )?;
    for change in &mut changes {
        change.files = files
            .query_map([change.changeid], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        let stored = properties
            .query_map([change.changeid], |row| {
                Ok((row.get(0)?, row.get::<_, String>(1)?))
            })?
            .collect::<Result<Vec<(String, String)>, _>>()?;
        change.properties = parse_properties(change.changeid, stored)?;
    }
    Ok(changes)
}

/// Reads each stored `[value, source]` text back into JSON.
fn parse_properties(
    changeid: i64,
    stored: Vec<(String, String)>,
) -> Result<Map<String, Value>, Error> {
    stored
        .into_iter()
        .map(
            |(name, text)| match serde_json::from_str::<(Value, String)>(&text) {
                Ok((value, source)) => Ok((name, Value::from(vec![value, Value::from(source)]))),
                Err(source) => Err(Error::CorruptProperty {
                    changeid,
                    name,
                    source,
                }),
            },
        )
        .collect()
}

/// The change's columns and source stamp; files and properties come separately.
fn change_from_row(row: &Row) -> rusqlite::Result<Change> {
    Ok(Change {
        changeid: row.get(0)?,
        author: row.get(1)?,
        committer: row.get(2)?,
        comments: row.get(3)?,
        revision: row.get(4)?,
        when_timestamp: row.get(5)?,
        branch: row.get(6)?,
        category: row.get(7)?,
        revlink: row.get(8)?,
        repository: row.get(9)?,
        project: row.get(10)?,
        codebase: row.get(11)?,
        parent_changeid: row.get(12)?,
        sourcestamp: SourceStamp {
            ssid: row.get(13)?,
            branch: row.get(14)?,
            revision: row.get(15)?,
            repository: row.get(16)?,
            codebase: row.get(17)?,
            project: row.get(18)?,
            created_at: row.get(19)?,
        },
        files: Vec::new(),
        properties: Map::new(),
    })
}
