//! The database's REST collections: what each declares (its fields, with the
//! SQL that reads them, and how a row becomes Buildbot's object), and the
//! reader that answers a [`Listing`] of one from SQL, row by row.
//!
//! A listing is read on a blocking thread in one read transaction (the count
//! and the rows see the same data) and handed row by row to a [`RowSink`],
//! which writes the answer out as it goes: nothing holds a whole collection.
//! The reader stops when the sink's reader goes away or a deadline passes,
//! also in the middle of a long scan (SQLite's progress handler checks).

use std::sync::Arc;
use std::time::Instant;

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row};
use serde_json::{json, Value};

use super::builds::{json_object, sourcestamps};
use super::listing::{Field, FieldKind, Listing};
use super::{query, Db, Error};
use crate::changes::SourceStamp;

use FieldKind::{Boolean, Integer, Presence, Structured, Text};

/// The id of this master in REST objects; there is one master per database.
pub const MASTER_ID: i64 = 1;

/// How many SQLite virtual-machine steps run between two checks of whether
/// a read should stop.
const CHECK_EVERY: i32 = 10_000;

/// Turns one row of a collection's SELECT into its REST object.
type Reader = fn(&Connection, &Row) -> rusqlite::Result<Value>;

/// A REST collection stored in the database.
pub struct Collection {
    /// The envelope key, e.g. `builds`.
    pub key: &'static str,
    /// One object, in messages.
    pub noun: &'static str,
    /// What the SELECT reads from (a table, or a join).
    from: &'static str,
    /// The table that holds one row per object, which filters name: what
    /// `meta.total` counts, without the joins that only add columns.
    table: &'static str,
    /// The columns the reader expects, in its order.
    columns: &'static str,
    /// The id column, for single objects.
    id: &'static str,
    pub fields: &'static [Field],
    /// The order when a query gives none; it also breaks ties.
    pub default_order: &'static [(&'static str, bool)],
    read: Reader,
}

/// Narrows a collection to the rows whose `column` is a parent's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope {
    pub column: &'static str,
    pub id: i64,
}

/// Where a listing's objects go, as they are read: the writer of the HTTP
/// answer. Runs on the reading thread.
pub trait RowSink: Send + 'static {
    /// Takes one object; false when its reader has gone away.
    fn row(&mut self, object: Value) -> bool;
    /// The listing is complete; `total` is its `meta.total`.
    fn finish(&mut self, total: u64);
    /// Whether its reader has gone away, so the read should stop.
    fn abandoned(&self) -> bool;
}

const fn field(name: &'static str, sql: &'static str, kind: FieldKind) -> Field {
    Field { name, sql, kind }
}

pub static BUILDERS: Collection = Collection {
    key: "builders",
    noun: "builder",
    from: "builders",
    table: "builders",
    columns: "id, name, description, tags",
    id: "id",
    fields: &[
        field("builderid", "id", Integer),
        field("name", "name", Text),
        field("description", "description", Text),
        field("tags", "", Structured),
        field("masterids", "", Structured),
    ],
    default_order: &[("builderid", false)],
    read: builder,
};

pub static WORKERS: Collection = Collection {
    key: "workers",
    noun: "worker",
    from: "workers",
    table: "workers",
    columns: "id, name, info, connected, refused_logins, paused, pause_reason, graceful",
    id: "id",
    fields: &[
        field("workerid", "id", Integer),
        field("name", "name", Text),
        field("workerinfo", "", Structured),
        field("paused", "paused", Boolean),
        field("pause_reason", "pause_reason", Text),
        field("graceful", "graceful", Boolean),
        field("connected_to", "", Structured),
        field("configured_on", "", Structured),
    ],
    default_order: &[("workerid", false)],
    read: worker,
};

pub static BUILDSETS: Collection = Collection {
    key: "buildsets",
    noun: "buildset",
    from: "buildsets",
    table: "buildsets",
    columns: "id, external_idstring, reason, submitted_at, complete, complete_at, results",
    id: "id",
    fields: &[
        field("bsid", "id", Integer),
        field("external_idstring", "external_idstring", Text),
        field("reason", "reason", Text),
        field("submitted_at", "submitted_at", Integer),
        field("complete", "complete", Boolean),
        field("complete_at", "complete_at", Integer),
        field("results", "results", Integer),
        field("sourcestamps", "", Structured),
        field("parent_buildid", "NULL", Integer),
        field("parent_relationship", "NULL", Text),
    ],
    default_order: &[("bsid", false)],
    read: buildset,
};

pub static BUILDREQUESTS: Collection = Collection {
    key: "buildrequests",
    noun: "build request",
    from: "buildrequests",
    table: "buildrequests",
    columns: "id, buildsetid, builderid, priority, submitted_at, claimed_at, complete,
        complete_at, results",
    id: "id",
    fields: &[
        field("buildrequestid", "id", Integer),
        field("buildsetid", "buildsetid", Integer),
        field("builderid", "builderid", Integer),
        field("priority", "priority", Integer),
        field("submitted_at", "submitted_at", Integer),
        field("claimed", "claimed_at", Presence),
        field("claimed_at", "claimed_at", Integer),
        field(
            "claimed_by_masterid",
            "(CASE WHEN claimed_at IS NULL THEN NULL ELSE 1 END)",
            Integer,
        ),
        field("complete", "complete", Boolean),
        field("complete_at", "complete_at", Integer),
        field("results", "results", Integer),
        field("waited_for", "0", Boolean),
    ],
    default_order: &[("buildrequestid", false)],
    read: buildrequest,
};

const BUILD_COLUMNS: &str = "id, number, builderid, buildrequestid, workerid, started_at,
    complete_at, state_string, results, properties";

pub static BUILDS: Collection = Collection {
    key: "builds",
    noun: "build",
    from: "builds",
    table: "builds",
    columns: BUILD_COLUMNS,
    id: "id",
    fields: &[
        field("buildid", "id", Integer),
        field("number", "number", Integer),
        field("builderid", "builderid", Integer),
        field("buildrequestid", "buildrequestid", Integer),
        field("workerid", "workerid", Integer),
        field("masterid", "1", Integer),
        field("started_at", "started_at", Integer),
        field("complete", "complete_at", Presence),
        field("complete_at", "complete_at", Integer),
        field("state_string", "state_string", Text),
        field("results", "results", Integer),
        field("properties", "", Structured),
    ],
    default_order: &[("buildid", false)],
    read: build,
};

pub static STEPS: Collection = Collection {
    key: "steps",
    noun: "step",
    from: "steps",
    table: "steps",
    columns: "id, number, name, buildid, started_at, complete_at, state_string, results",
    id: "id",
    fields: &[
        field("stepid", "id", Integer),
        field("number", "number", Integer),
        field("name", "name", Text),
        field("buildid", "buildid", Integer),
        field("started_at", "started_at", Integer),
        field("complete", "complete_at", Presence),
        field("complete_at", "complete_at", Integer),
        field("state_string", "state_string", Text),
        field("results", "results", Integer),
        field("urls", "", Structured),
        field("hidden", "0", Boolean),
    ],
    default_order: &[("number", false), ("stepid", false)],
    read: step,
};

pub static LOGS: Collection = Collection {
    key: "logs",
    noun: "log",
    from: "logs",
    table: "logs",
    columns: "id, name, slug, stepid, complete, num_lines, type",
    id: "id",
    fields: &[
        field("logid", "id", Integer),
        field("name", "name", Text),
        field("slug", "slug", Text),
        field("stepid", "stepid", Integer),
        field("complete", "complete", Boolean),
        field("num_lines", "num_lines", Integer),
        field("type", "type", Text),
    ],
    default_order: &[("logid", false)],
    read: log,
};

pub static CHANGES: Collection = Collection {
    key: "changes",
    noun: "change",
    from: query::CHANGES_FROM,
    table: "changes",
    columns: query::CHANGE_COLUMNS,
    id: "changes.changeid",
    fields: &[
        field("changeid", "changes.changeid", Integer),
        field("author", "changes.author", Text),
        field("committer", "changes.committer", Text),
        field("comments", "changes.comments", Text),
        field("files", "", Structured),
        field("revision", "changes.revision", Text),
        field("when_timestamp", "changes.when_timestamp", Integer),
        field("branch", "changes.branch", Text),
        field("category", "changes.category", Text),
        field("revlink", "changes.revlink", Text),
        field("properties", "", Structured),
        field("repository", "changes.repository", Text),
        field("project", "changes.project", Text),
        field("codebase", "changes.codebase", Text),
        field("parent_changeids", "", Structured),
        field("sourcestamp", "", Structured),
    ],
    // Buildbot lists changes newest first.
    default_order: &[("changeid", true)],
    read: change,
};

impl Db {
    /// Reads the objects `listing` selects from `collection` (within
    /// `scope`) into `sink`, and gives it `meta.total`: the number of
    /// matches (counted apart when the listing pages, else those read).
    /// Stops with [`Error::Interrupted`] at `deadline` or when the sink's
    /// reader goes away.
    pub async fn read_listing<S: RowSink>(
        &self,
        collection: &'static Collection,
        scope: Option<Scope>,
        listing: Listing,
        deadline: Instant,
        sink: S,
    ) -> Result<(), Error> {
        let sink = Arc::new(std::sync::Mutex::new(sink));
        let watched = Arc::clone(&sink);
        self.read(move |conn| {
            stoppable(conn, deadline, watched, |conn, sink| {
                let tx = conn.transaction()?;
                let statements = Statements::new(collection, scope, &listing);
                let total = match &statements.total {
                    Some(total) => Some(total.read(&tx, &statements.params)?),
                    None => None,
                };
                let mut select = tx.prepare(&statements.select)?;
                let mut rows = select.query(rusqlite::params_from_iter(&statements.params))?;
                let mut read = 0;
                while let Some(row) = rows.next()? {
                    let object = (collection.read)(&tx, row)?;
                    read += 1;
                    if !lock(sink).row(object) {
                        return Err(Error::Interrupted);
                    }
                }
                lock(sink).finish(total.unwrap_or(read));
                Ok(())
            })
        })
        .await
    }

    /// One object of `collection` by its id.
    pub async fn rest_object(
        &self,
        collection: &'static Collection,
        id: i64,
    ) -> Result<Option<Value>, Error> {
        self.read(move |conn| {
            let sql = format!(
                "SELECT {} FROM {} WHERE {} = ?1",
                collection.columns, collection.from, collection.id
            );
            let mut select = conn.prepare_cached(&sql)?;
            let mut rows = select.query([id])?;
            Ok(match rows.next()? {
                Some(row) => Some((collection.read)(conn, row)?),
                None => None,
            })
        })
        .await
    }

    /// The id of the object of `collection` whose `name` is `name`.
    pub async fn rest_id_by_name(
        &self,
        collection: &'static Collection,
        name: &str,
    ) -> Result<Option<i64>, Error> {
        let name = name.to_owned();
        self.read(move |conn| {
            let sql = format!(
                "SELECT {} FROM {} WHERE name = ?1",
                collection.id, collection.from
            );
            Ok(conn
                .prepare_cached(&sql)?
                .query_row([name], |row| row.get(0))
                .optional()?)
        })
        .await
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
                "SELECT {BUILD_COLUMNS} FROM builds
                 WHERE builderid = ?1 AND number < ?2 ORDER BY number DESC LIMIT 1"
            ))?;
            let mut rows = select.query((builderid, number))?;
            Ok(match rows.next()? {
                Some(row) => Some(build(conn, row)?),
                None => None,
            })
        })
        .await
    }
}

/// Matches counted one by one, at most; past this, `meta.total` is an
/// estimate (see [`Total::Counted`]).
pub const EXACT_TOTAL: u64 = 2_000;

/// The SQL that answers one listing.
struct Statements {
    /// How `meta.total` is known when the listing pages.
    total: Option<Total>,
    select: String,
    /// The condition's parameters, then the page's.
    params: Vec<rusqlite::types::Value>,
}

/// How a paged listing learns its `meta.total` without counting the history.
enum Total {
    /// Every row of the table: read from `row_counts`, which triggers keep.
    Rows(&'static str),
    /// The filter's matches, counted in its index up to [`EXACT_TOTAL`].
    /// Past that the total is estimated: the share of matches among the
    /// rows of the newest [`EXACT_TOTAL`] ids times the table's rows (and
    /// never less than `EXACT_TOTAL + 1`).
    Counted {
        table: &'static str,
        /// `SELECT COUNT(*)` of at most `EXACT_TOTAL + 1` matches.
        capped: String,
        /// The matches whose id is above `?` (the condition's parameters first).
        recent: String,
        /// The newest id.
        newest: String,
        /// The rows whose id is above `?`.
        sampled: String,
        condition_params: usize,
    },
}

impl Total {
    fn read(&self, tx: &rusqlite::Transaction<'_>, params: &[SqlValue]) -> rusqlite::Result<u64> {
        match self {
            Total::Rows(table) => table_rows(tx, table),
            Total::Counted {
                table,
                capped,
                recent,
                newest,
                sampled,
                condition_params,
            } => {
                let params = &params[..*condition_params];
                let counted: i64 =
                    tx.query_row(capped, rusqlite::params_from_iter(params), |row| row.get(0))?;
                if counted as u64 <= EXACT_TOTAL {
                    return Ok(counted as u64);
                }
                let newest: i64 = tx.query_row(newest, [], |row| row.get(0))?;
                let since = newest - EXACT_TOTAL as i64;
                let sampled: i64 = tx.query_row(sampled, [since], |row| row.get(0))?;
                let params = params.iter().cloned().chain([SqlValue::Integer(since)]);
                let matched: i64 =
                    tx.query_row(recent, rusqlite::params_from_iter(params), |row| row.get(0))?;
                let estimate = match sampled {
                    0 => 0,
                    sampled => table_rows(tx, table)? * matched as u64 / sampled as u64,
                };
                Ok(estimate.max(EXACT_TOTAL + 1))
            }
        }
    }
}

/// The rows of `table`, as `row_counts` keeps them.
fn table_rows(conn: &Connection, table: &str) -> rusqlite::Result<u64> {
    let count: i64 = conn
        .prepare_cached("SELECT count FROM row_counts WHERE name = ?1")?
        .query_row([table], |row| row.get(0))?;
    Ok(count.max(0) as u64)
}

impl Statements {
    fn new(collection: &Collection, scope: Option<Scope>, listing: &Listing) -> Statements {
        let (condition, mut params) = listing.condition(scope.map(|s| (s.column, s.id)));
        let table = collection.table;
        let total = listing.pages().then(|| {
            if condition.is_empty() {
                Total::Rows(table)
            } else {
                Total::Counted {
                    table,
                    capped: format!(
                        "SELECT COUNT(*) FROM (SELECT 1 FROM {table}{condition} LIMIT {})",
                        EXACT_TOTAL + 1
                    ),
                    recent: format!(
                        "SELECT COUNT(*) FROM {table}{condition} AND {} > ?",
                        collection.id
                    ),
                    newest: format!("SELECT COALESCE(MAX({}), 0) FROM {table}", collection.id),
                    sampled: format!("SELECT COUNT(*) FROM {table} WHERE {} > ?", collection.id),
                    condition_params: params.len(),
                }
            }
        });
        let order = listing.order_by(collection.fields, collection.default_order);
        let page = listing.page(&mut params);
        let select = format!(
            "SELECT {} FROM {}{condition}{order}{page}",
            collection.columns, collection.from
        );
        Statements {
            total,
            select,
            params,
        }
    }
}

fn lock<S>(sink: &std::sync::Mutex<S>) -> std::sync::MutexGuard<'_, S> {
    sink.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs `read` with SQLite checking, every few thousand steps, whether the
/// deadline has passed or the sink's reader has gone; either interrupts it.
fn stoppable<S: RowSink>(
    conn: &mut Connection,
    deadline: Instant,
    sink: Arc<std::sync::Mutex<S>>,
    read: impl FnOnce(&mut Connection, &std::sync::Mutex<S>) -> Result<(), Error>,
) -> Result<(), Error> {
    let watched = Arc::clone(&sink);
    conn.progress_handler(
        CHECK_EVERY,
        Some(move || Instant::now() >= deadline || lock(&watched).abandoned()),
    );
    let result = read(conn, &sink);
    conn.progress_handler(0, None::<fn() -> bool>);
    result.map_err(|error| {
        if interrupted(&error) {
            Error::Interrupted
        } else {
            error
        }
    })
}

/// Whether SQLite stopped `error`'s statement, which may be one a row
/// reader ran (and wrapped) as well as the listing's own.
fn interrupted(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(rusqlite::Error::SqliteFailure(failure, _)) = error.downcast_ref() {
            if failure.code == ErrorCode::OperationInterrupted {
                return true;
            }
        }
        cause = error.source();
    }
    false
}

/// Every object of a collection, for tests.
#[cfg(test)]
pub(crate) async fn all(db: &Db, collection: &'static Collection) -> Vec<Value> {
    struct Collect(std::sync::mpsc::Sender<Value>);
    impl RowSink for Collect {
        fn row(&mut self, object: Value) -> bool {
            self.0.send(object).is_ok()
        }
        fn finish(&mut self, _: u64) {}
        fn abandoned(&self) -> bool {
            false
        }
    }
    let (sender, received) = std::sync::mpsc::channel();
    let listing = Listing::parse(&[], collection.fields).unwrap();
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    db.read_listing(collection, None, listing, deadline, Collect(sender))
        .await
        .unwrap();
    received.try_iter().collect()
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
        "paused": row.get::<_, bool>(5)?,
        "pause_reason": row.get::<_, Option<String>>(6)?,
        "graceful": row.get::<_, bool>(7)?,
        "connected_to": if row.get::<_, bool>(3)? { json!([{"masterid": 1}]) } else { json!([]) },
        "refused_logins": row.get::<_, i64>(4)?,
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

fn change(conn: &Connection, row: &Row) -> rusqlite::Result<Value> {
    let mut change = query::change_from_row(row)?;
    query::complete_change(conn, &mut change)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    Ok(change.to_rest())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::changes::NewChange;

    fn listing(collection: &'static Collection, query: &str) -> Listing {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        Listing::parse(&pairs, collection.fields).unwrap()
    }

    /// SQLite's plan for `sql`, one step per line.
    fn plan(conn: &Connection, sql: &str, params: &[rusqlite::types::Value]) -> String {
        let mut explain = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let steps = explain
            .query_map(rusqlite::params_from_iter(params), |row| {
                row.get::<_, String>(3)
            })
            .unwrap();
        steps.map(Result::unwrap).collect::<Vec<_>>().join("\n")
    }

    #[tokio::test]
    async fn the_queries_dashboards_and_chat_make_are_served_by_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("state.sqlite")).unwrap();
        let builder = Some(Scope {
            column: "builderid",
            id: 1,
        });
        // (collection, scope, query, what the plan must say)
        let cases: &[(&'static Collection, Option<Scope>, &str, &[&str])] = &[
            (&BUILDS, None, "limit=10&order=-buildid", &["SCAN builds"]),
            (
                &BUILDS,
                None,
                "complete=false",
                &["SEARCH builds USING INDEX builds_incomplete (complete_at=?)"],
            ),
            (
                &BUILDS,
                builder,
                "limit=10&order=-buildid",
                &["SEARCH builds USING INDEX builds_builder (builderid=?)"],
            ),
            (&BUILDSETS, None, "limit=10", &["SCAN buildsets"]),
            (
                &BUILDSETS,
                None,
                "complete=false",
                &["SEARCH buildsets USING INDEX buildsets_complete (complete=?)"],
            ),
            (
                &BUILDREQUESTS,
                None,
                "complete=false&limit=10",
                &["SEARCH buildrequests USING INDEX buildrequests_complete (complete=?)"],
            ),
            (
                &CHANGES,
                None,
                "limit=10&branch=br3",
                &["SEARCH changes USING INDEX changes_branch (branch=?)"],
            ),
            (
                &CHANGES,
                None,
                "limit=10&project=p",
                &["SEARCH changes USING INDEX changes_project (project=?)"],
            ),
            (
                &CHANGES,
                None,
                "limit=10&repository=r",
                &["SEARCH changes USING INDEX changes_repository (repository=?)"],
            ),
            (
                &CHANGES,
                None,
                "limit=10&author=nobody",
                &["SEARCH changes USING INDEX changes_author (author=?)"],
            ),
            (
                &CHANGES,
                None,
                "limit=10&order=-changeid",
                &["SCAN changes"],
            ),
        ];
        let cases: Vec<_> = cases
            .iter()
            .map(|(collection, scope, query, wanted)| {
                let listing = listing(collection, query);
                let filtered = scope.is_some() || listing.has_filters();
                let statements = Statements::new(collection, *scope, &listing);
                (*query, statements, filtered, *wanted)
            })
            .collect();
        let failures = db
            .read(move |conn| {
                let mut failures = Vec::new();
                for (query, statements, filtered, wanted) in &cases {
                    let select = plan(conn, &statements.select, &statements.params);
                    // Sorting in a temporary tree would read every match before the first row.
                    let sorted = statements.total.is_some() && select.contains("TEMP B-TREE");
                    if sorted || !wanted.iter().all(|step| select.contains(step)) {
                        failures.push(format!("{query}:\n{select}"));
                    }
                    // A filtered total is counted in the filter's index.
                    if let Some(Total::Counted {
                        capped,
                        recent,
                        condition_params,
                        ..
                    }) = &statements.total
                    {
                        assert!(filtered);
                        let params = &statements.params[..*condition_params];
                        let mut recent_params = params.to_vec();
                        recent_params.push(SqlValue::Integer(0));
                        for plan in [
                            plan(conn, capped, params),
                            plan(conn, recent, &recent_params),
                        ] {
                            let scans_a_table = plan.lines().any(|step| {
                                step.starts_with("SCAN ") && !step.starts_with("SCAN (")
                            });
                            if scans_a_table {
                                failures.push(format!("{query} (total):\n{plan}"));
                            }
                        }
                    }
                }
                Ok(failures)
            })
            .await
            .unwrap();
        assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    }

    async fn changes_on_branches(db: &Db, branches: impl Iterator<Item = &'static str>) {
        let changes: Vec<NewChange> = branches
            .map(|branch| serde_json::from_value(json!({"branch": branch})).unwrap())
            .collect();
        db.add_changes(changes).await.unwrap();
    }

    /// `meta.total` of one listing.
    async fn total(db: &Db, query: &str) -> u64 {
        let sink = Arc::new(std::sync::Mutex::new(None));
        struct Shared(Arc<std::sync::Mutex<Option<u64>>>);
        impl RowSink for Shared {
            fn row(&mut self, _: Value) -> bool {
                true
            }
            fn finish(&mut self, total: u64) {
                *lock(&self.0) = Some(total);
            }
            fn abandoned(&self) -> bool {
                false
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        db.read_listing(
            &CHANGES,
            None,
            listing(&CHANGES, query),
            deadline,
            Shared(sink.clone()),
        )
        .await
        .unwrap();
        let total = *lock(&sink);
        total.expect("a total")
    }

    #[tokio::test]
    async fn totals_are_exact_to_two_thousand_then_estimated_from_the_newest_rows() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("state.sqlite")).unwrap();
        // 20,000 changes, three in four on main.
        let branches = ["main", "main", "main", "dev"]
            .into_iter()
            .cycle()
            .take(20_000);
        changes_on_branches(&db, branches).await;
        assert_eq!(total(&db, "limit=1").await, 20_000);
        assert_eq!(
            total(&db, "limit=1&branch=dev&changeid__gt=18500").await,
            375
        );
        // Past 2,000 matches, estimated: a quarter of the newest 2,000 are on dev.
        assert_eq!(total(&db, "limit=1&branch=dev").await, 5_000);
        assert_eq!(total(&db, "limit=1&branch=main").await, 15_000);
        assert_eq!(
            total(&db, "branch=main&field=changeid").await,
            15_000,
            "read whole"
        );
        // A branch busy long ago and quiet lately is at least past the exact count.
        changes_on_branches(&db, std::iter::repeat_n("dev", 2_000)).await;
        assert_eq!(total(&db, "limit=1&branch=main").await, EXACT_TOTAL + 1);
        assert_eq!(total(&db, "limit=1").await, 22_000);
    }

    /// A sink that takes rows until it is told its reader has gone.
    struct Reader {
        gone_after: usize,
        rows: usize,
    }

    impl RowSink for Reader {
        fn row(&mut self, _: Value) -> bool {
            self.rows += 1;
            true
        }
        fn finish(&mut self, _: u64) {}
        fn abandoned(&self) -> bool {
            self.rows >= self.gone_after
        }
    }

    #[tokio::test]
    async fn a_read_stops_at_its_deadline_or_when_its_reader_goes() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("state.sqlite")).unwrap();
        changes_on_branches(&db, std::iter::repeat_n("main", 2_000)).await;
        let read = |deadline: Instant, gone_after: usize| {
            let sink = Reader {
                gone_after,
                rows: 0,
            };
            db.read_listing(&CHANGES, None, listing(&CHANGES, ""), deadline, sink)
        };
        let later = Instant::now() + Duration::from_secs(60);
        assert!(read(later, usize::MAX).await.is_ok());
        assert!(matches!(
            read(Instant::now(), usize::MAX).await,
            Err(Error::Interrupted)
        ));
        assert!(matches!(read(later, 10).await, Err(Error::Interrupted)));
    }
}
