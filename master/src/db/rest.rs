//! Reading the build engine's tables as Buildbot's REST objects.
//!
//! Each resource is read whole (optionally narrowed to one parent) and the
//! REST layer filters, sorts and pages it; the tables of one master stay
//! small enough for that, and the changes table, which grows fastest, has its
//! own SQL queries.

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, Row};
use serde_json::{json, Value};

use super::builds::{json_object, sourcestamps};
use super::{Db, Error};
use crate::changes::SourceStamp;

/// The id of this master in REST objects; there is one master per database.
pub const MASTER_ID: i64 = 1;

/// A resource of the build engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Builders,
    Workers,
    Buildsets,
    BuildRequests,
    Builds,
    Steps,
    Logs,
}

/// Narrows a resource to the rows whose `column` is `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope {
    pub column: &'static str,
    pub id: i64,
}

impl Db {
    /// Every row of a resource (within `scope`) as a REST object.
    pub async fn rest_rows(
        &self,
        resource: Resource,
        scope: Option<Scope>,
    ) -> Result<Vec<Value>, Error> {
        self.read(move |conn| rows(conn, resource, scope)).await
    }

    /// The build of a builder just before build number `number`, if any: what
    /// reporters compare a finished build with.
    pub async fn previous_build(
        &self,
        builderid: i64,
        number: i64,
    ) -> Result<Option<Value>, Error> {
        self.read(move |conn| {
            let mut select = conn.prepare_cached(&format!(
                "{BUILD_COLUMNS} WHERE builderid = ?1 AND number < ?2 ORDER BY number DESC LIMIT 1"
            ))?;
            let mut rows = select.query((builderid, number))?;
            Ok(match rows.next()? {
                Some(row) => Some(build(conn, row)?),
                None => None,
            })
        })
        .await
    }

    /// A log and its whole content, in Buildbot's stream format.
    pub async fn log_contents(&self, logid: i64) -> Result<Option<(Value, String)>, Error> {
        self.read(move |conn| {
            let scope = Scope {
                column: "id",
                id: logid,
            };
            let Some(log) = rows(conn, Resource::Logs, Some(scope))?.into_iter().next() else {
                return Ok(None);
            };
            let mut select = conn.prepare_cached(
                "SELECT content FROM logchunks WHERE logid = ?1 ORDER BY first_line",
            )?;
            let chunks = select.query_map([logid], |row| row.get::<_, String>(0))?;
            let mut content = String::new();
            for chunk in chunks {
                content.push_str(&chunk?);
            }
            Ok(Some((log, content)))
        })
        .await
    }
}

const BUILD_COLUMNS: &str = "SELECT id, number, builderid, buildrequestid, workerid, started_at,
        complete_at, state_string, results, properties
    FROM builds";

/// Turns one row of a resource's SELECT into its REST object.
type ToJson = fn(&Connection, &Row) -> rusqlite::Result<Value>;

fn rows(conn: &Connection, resource: Resource, scope: Option<Scope>) -> Result<Vec<Value>, Error> {
    let (sql, to_json): (&str, ToJson) = match resource {
        Resource::Builders => ("SELECT id, name, description, tags FROM builders", builder),
        Resource::Workers => ("SELECT id, name, info FROM workers", worker),
        Resource::Buildsets => (
            "SELECT id, external_idstring, reason, submitted_at, complete, complete_at, results
             FROM buildsets",
            buildset,
        ),
        Resource::BuildRequests => (
            "SELECT id, buildsetid, builderid, priority, submitted_at, claimed_at, complete,
                 complete_at, results
             FROM buildrequests",
            buildrequest,
        ),
        Resource::Builds => (BUILD_COLUMNS, build),
        Resource::Steps => (
            "SELECT id, number, name, buildid, started_at, complete_at, state_string, results
             FROM steps",
            step,
        ),
        Resource::Logs => (
            "SELECT id, name, slug, stepid, complete, num_lines, type FROM logs",
            log,
        ),
    };
    let (sql, params) = match scope {
        None => (format!("{sql} ORDER BY id"), Vec::new()),
        Some(scope) => (
            format!("{sql} WHERE {} = ?1 ORDER BY id", scope.column),
            vec![SqlValue::Integer(scope.id)],
        ),
    };
    let mut select = conn.prepare(&sql)?;
    let mut query = select.query(rusqlite::params_from_iter(params))?;
    let mut objects = Vec::new();
    while let Some(row) = query.next()? {
        objects.push(to_json(conn, row)?);
    }
    Ok(objects)
}

fn builder(_: &Connection, row: &Row) -> rusqlite::Result<Value> {
    let tags: String = row.get(3)?;
    Ok(json!({
        "builderid": row.get::<_, i64>(0)?,
        "name": row.get::<_, String>(1)?,
        "description": row.get::<_, Option<String>>(2)?,
        "tags": serde_json::from_str::<Value>(&tags).unwrap_or_else(|_| json!([])),
        "masterids": [MASTER_ID],
    }))
}

fn worker(_: &Connection, row: &Row) -> rusqlite::Result<Value> {
    let info: String = row.get(2)?;
    Ok(json!({
        "workerid": row.get::<_, i64>(0)?,
        "name": row.get::<_, String>(1)?,
        "workerinfo": Value::Object(json_object(&info)),
        "paused": false,
        "graceful": false,
    }))
}

fn buildset(conn: &Connection, row: &Row) -> rusqlite::Result<Value> {
    let bsid: i64 = row.get(0)?;
    let stamps = sourcestamps(conn, bsid)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    Ok(json!({
        "bsid": bsid,
        "external_idstring": row.get::<_, Option<String>>(1)?,
        "reason": row.get::<_, String>(2)?,
        "submitted_at": row.get::<_, i64>(3)?,
        "complete": row.get::<_, bool>(4)?,
        "complete_at": row.get::<_, Option<i64>>(5)?,
        "results": row.get::<_, Option<i64>>(6)?,
        "sourcestamps": stamps.iter().map(SourceStamp::to_rest).collect::<Vec<_>>(),
        "parent_buildid": null,
        "parent_relationship": null,
    }))
}

fn buildrequest(_: &Connection, row: &Row) -> rusqlite::Result<Value> {
    let claimed_at: Option<i64> = row.get(5)?;
    Ok(json!({
        "buildrequestid": row.get::<_, i64>(0)?,
        "buildsetid": row.get::<_, i64>(1)?,
        "builderid": row.get::<_, i64>(2)?,
        "priority": row.get::<_, i64>(3)?,
        "submitted_at": row.get::<_, i64>(4)?,
        "claimed": claimed_at.is_some(),
        "claimed_at": claimed_at,
        "claimed_by_masterid": claimed_at.map(|_| MASTER_ID),
        "complete": row.get::<_, bool>(6)?,
        "complete_at": row.get::<_, Option<i64>>(7)?,
        "results": row.get::<_, Option<i64>>(8)?,
        "waited_for": false,
    }))
}

fn build(_: &Connection, row: &Row) -> rusqlite::Result<Value> {
    let complete_at: Option<i64> = row.get(6)?;
    let properties: String = row.get(9)?;
    Ok(json!({
        "buildid": row.get::<_, i64>(0)?,
        "number": row.get::<_, i64>(1)?,
        "builderid": row.get::<_, i64>(2)?,
        "buildrequestid": row.get::<_, i64>(3)?,
        "workerid": row.get::<_, i64>(4)?,
        "masterid": MASTER_ID,
        "started_at": row.get::<_, i64>(5)?,
        "complete": complete_at.is_some(),
        "complete_at": complete_at,
        "state_string": row.get::<_, String>(7)?,
        "results": row.get::<_, Option<i64>>(8)?,
        "properties": Value::Object(json_object(&properties)),
    }))
}

fn step(_: &Connection, row: &Row) -> rusqlite::Result<Value> {
    let complete_at: Option<i64> = row.get(5)?;
    Ok(json!({
        "stepid": row.get::<_, i64>(0)?,
        "number": row.get::<_, i64>(1)?,
        "name": row.get::<_, String>(2)?,
        "buildid": row.get::<_, i64>(3)?,
        "started_at": row.get::<_, i64>(4)?,
        "complete": complete_at.is_some(),
        "complete_at": complete_at,
        "state_string": row.get::<_, String>(6)?,
        "results": row.get::<_, Option<i64>>(7)?,
        "urls": [],
        "hidden": false,
    }))
}

fn log(_: &Connection, row: &Row) -> rusqlite::Result<Value> {
    Ok(json!({
        "logid": row.get::<_, i64>(0)?,
        "name": row.get::<_, String>(1)?,
        "slug": row.get::<_, String>(2)?,
        "stepid": row.get::<_, i64>(3)?,
        "complete": row.get::<_, bool>(4)?,
        "num_lines": row.get::<_, i64>(5)?,
        "type": row.get::<_, String>(6)?,
    }))
}
