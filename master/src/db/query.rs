//! Reading changes back: one by id, the ones after a given id (what the
//! schedulers follow), and the row reader the REST collection uses.

use rusqlite::{Connection, Row};
use serde_json::{Map, Value};

use super::Error;
use crate::changes::{Change, SourceStamp};

/// What the change readers select from.
pub(super) const CHANGES_FROM: &str =
    "changes JOIN sourcestamps ON sourcestamps.id = changes.sourcestampid";

/// The columns [`change_from_row`] reads, in its order.
pub(super) const CHANGE_COLUMNS: &str = "changes.changeid, changes.author, changes.committer,
        changes.comments, changes.revision, changes.when_timestamp, changes.branch,
        changes.category, changes.revlink, changes.repository, changes.project,
        changes.codebase, changes.parent_changeid,
        sourcestamps.id, sourcestamps.branch, sourcestamps.revision,
        sourcestamps.repository, sourcestamps.codebase, sourcestamps.project,
        sourcestamps.created_at, changes.correlation";

/// Loads one change by id.
pub(super) fn get_change(conn: &Connection, changeid: i64) -> Result<Option<Change>, Error> {
    let sql = format!("SELECT {CHANGE_COLUMNS} FROM {CHANGES_FROM} WHERE changes.changeid = ?1");
    Ok(load_changes(conn, &sql, [changeid])?.pop())
}

/// Up to `limit` changes after `changeid`, oldest first.
pub(super) fn changes_after(
    conn: &Connection,
    changeid: i64,
    limit: u64,
) -> Result<Vec<Change>, Error> {
    let sql = format!(
        "SELECT {CHANGE_COLUMNS} FROM {CHANGES_FROM} WHERE changes.changeid > ?1
         ORDER BY changes.changeid LIMIT ?2"
    );
    load_changes(conn, &sql, (changeid, limit as i64))
}

/// The changes of these ids that exist, oldest first.
pub(super) fn changes_by_id(conn: &Connection, ids: &[i64]) -> Result<Vec<Change>, Error> {
    let mut changes = Vec::with_capacity(ids.len());
    for &id in ids {
        changes.extend(get_change(conn, id)?);
    }
    changes.sort_by_key(|change| change.changeid);
    Ok(changes)
}

fn load_changes(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Change>, Error> {
    let mut statement = conn.prepare_cached(sql)?;
    let mut changes = statement
        .query_map(params, change_from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    for change in &mut changes {
        complete_change(conn, change)?;
    }
    Ok(changes)
}

/// Reads a change's files and properties.
pub(super) fn complete_change(conn: &Connection, change: &mut Change) -> Result<(), Error> {
    let mut files = conn.prepare_cached(
        "SELECT filename FROM change_files WHERE changeid = ?1 ORDER BY position",
    )?;
    let mut properties = conn.prepare_cached(
        "SELECT property_name, property_value FROM change_properties
         WHERE changeid = ?1 ORDER BY property_name",
    )?;
    change.files = files
        .query_map([change.changeid], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    let stored = properties
        .query_map([change.changeid], |row| {
            Ok((row.get(0)?, row.get::<_, String>(1)?))
        })?
        .collect::<Result<Vec<(String, String)>, _>>()?;
    change.properties = parse_properties(change.changeid, stored)?;
    Ok(())
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
pub(super) fn change_from_row(row: &Row) -> rusqlite::Result<Change> {
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
        correlation: row.get(20)?,
    })
}
