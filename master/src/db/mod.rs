//! Storage of changes, and of the revisions polling change sources have seen,
//! in SQLite.
//!
//! Writes go through a single writer thread that group-commits whatever is
//! waiting (see [`writer`]); a stored change is on disk when its ids come back.
//! Reads use a small pool of read-only connections on blocking threads, which
//! WAL mode lets run alongside the writer.

mod builds;
mod chat;
mod inspector;
mod janitor;
mod journal;
mod listing;
pub(crate) mod logs;
mod outbox;
mod query;
pub(crate) mod rest;
mod schema;
mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

pub use builds::{
    AddedBuildset, AddedStep, BuildProgress, BuildSummary, BuildsetDetails, CancelledRequest,
    ClassifiedChange, FinishedBuild, LogSummary, NewBuildset, PendingRequest, Recovered,
    SchedulerWrite, StampSpec, StartedBuild,
};
pub use chat::LastBuild;
pub use inspector::{HookDelivery, StoredHook};
pub use janitor::Pruned;
pub use journal::{JournalEntry, JournalKind};
pub use listing::{Field, FieldKind, Filter, Listing, Operand, Operator, MAX_OFFSET};
pub use logs::LogLines;
pub use outbox::{
    shown_url, Attempt, CompletedBuildset, DeliveryRecord, NewOutgoing, OutboxCounts, Outgoing,
    ReportParts,
};
pub use rest::{
    Collection, RowSink, Scope, BUILDERS, BUILDREQUESTS, BUILDS, BUILDSETS, CHANGES, LOGS,
    MASTER_ID, STEPS, WORKERS,
};

use crate::changes::{Change, NewChange};
use crate::clock::now;
use crate::events::{Bus, Event};
use writer::{Counters, WriteRequest};
pub use writer::{Delivery, SourceRevisions, Stored};

/// How long a connection waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Read connections kept open between reads; more are opened under load.
const READERS: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open database {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot switch the database to wal journal mode, it stays in {0} mode")]
    JournalMode(String),
    #[error("cannot apply schema migration {version}: {source}")]
    Migrate {
        version: usize,
        source: rusqlite::Error,
    },
    #[error("database schema version {found} is newer than the latest known version {known}")]
    TooNew { found: usize, known: usize },
    #[error("cannot start the database writer thread: {0}")]
    SpawnWriter(std::io::Error),
    #[error("cannot store change {position} of the request: {source}")]
    Insert {
        position: usize,
        source: rusqlite::Error,
    },
    #[error("cannot record the delivery id: {0}")]
    StoreDelivery(rusqlite::Error),
    #[error("cannot store the last-seen revisions: {0}")]
    StoreRevisions(rusqlite::Error),
    #[error("cannot commit changes: {0}")]
    Commit(Arc<rusqlite::Error>),
    #[error("the database writer has stopped")]
    WriterGone,
    #[error("database error: {0}")]
    Read(#[from] rusqlite::Error),
    #[error("cannot read the last-seen revisions: {0}")]
    ReadRevisions(rusqlite::Error),
    #[error(
        "stored property '{name}' of change {changeid} is not a [value, source] pair: {source}"
    )]
    CorruptProperty {
        changeid: i64,
        name: String,
        source: serde_json::Error,
    },
    #[error("log {logid}: the chunk at line {line} cannot be read: {reason}")]
    CorruptLogChunk {
        logid: i64,
        line: i64,
        reason: String,
    },
    #[error("the read was stopped: its client went away or it took too long")]
    Interrupted,
    #[error("database read task failed: {0}")]
    ReadTask(#[from] tokio::task::JoinError),
}

/// What the writer has done since the database was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Committed transactions; each holds every request that was waiting.
    pub transactions: u64,
    /// Requests handled, whether they succeeded or failed.
    pub requests: u64,
}

/// A handle on the database; clones share the writer and the read pool.
#[derive(Clone)]
pub struct Db {
    shared: Arc<Shared>,
}

struct Shared {
    path: PathBuf,
    /// `None` only while dropping, so the writer sees its channel close.
    requests: Option<mpsc::Sender<WriteRequest>>,
    writer: Option<JoinHandle<()>>,
    readers: Mutex<Vec<Connection>>,
    counters: Arc<Counters>,
    /// Where stored changes are announced, once the master has a bus.
    bus: OnceLock<Bus>,
}

impl Drop for Shared {
    /// Lets the writer finish the requests already sent, then waits for it, so
    /// the file is closed when the last handle is gone. The readers close first
    /// so that the writer's connection is the last one and checkpoints the WAL.
    fn drop(&mut self) {
        self.lock_readers().clear();
        self.requests.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl Db {
    /// Opens the database at `path`, creating it if missing, and brings its
    /// schema up to date.
    pub fn open(path: &Path) -> Result<Db, Error> {
        let open_failed = |source| Error::Open {
            path: path.to_owned(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_failed)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_failed)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(open_failed)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::JournalMode(mode));
        }
        // FULL syncs the WAL on every commit: a returned id means the change is on disk.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_failed)?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(open_failed)?;
        schema::migrate(&mut conn)?;

        let readers = (0..READERS)
            .map(|_| open_reader(path))
            .collect::<Result<Vec<_>, _>>()?;
        let counters = Arc::new(Counters::default());
        let (requests, writer) =
            writer::spawn(conn, Arc::clone(&counters)).map_err(Error::SpawnWriter)?;
        Ok(Db {
            shared: Arc::new(Shared {
                path: path.to_owned(),
                requests: Some(requests),
                writer: Some(writer),
                readers: Mutex::new(readers),
                counters,
                bus: OnceLock::new(),
            }),
        })
    }

    /// Stores the changes in order and returns their ids once they are committed.
    /// Concurrent calls share a transaction, but fail or succeed independently.
    pub async fn add_changes(&self, changes: Vec<NewChange>) -> Result<Vec<i64>, Error> {
        match self.write(changes, None, None).await? {
            Stored::Changes(ids) => Ok(ids),
            Stored::Duplicate => unreachable!("only a request with a delivery id is a duplicate"),
        }
    }

    /// Stores `changes` unless `delivery` was accepted before within its window;
    /// the delivery id is recorded in the same transaction as the changes.
    pub async fn add_delivered_changes(
        &self,
        changes: Vec<NewChange>,
        delivery: Delivery,
    ) -> Result<Stored, Error> {
        self.write(changes, Some(delivery), None).await
    }

    /// Stores the changes a polling change source found together with the
    /// revisions it has now seen, in one transaction: either both are stored or
    /// neither, so the next poll finds the same changes again after a failure.
    pub async fn add_polled_changes(
        &self,
        changes: Vec<NewChange>,
        revisions: SourceRevisions,
    ) -> Result<Vec<i64>, Error> {
        match self.write(changes, None, Some(revisions)).await? {
            Stored::Changes(ids) => Ok(ids),
            Stored::Duplicate => unreachable!("only a request with a delivery id is a duplicate"),
        }
    }

    /// The last revision change source `source` has seen on each branch it
    /// follows; empty before its first poll.
    pub async fn source_revisions(&self, source: &str) -> Result<SourceRevisions, Error> {
        let source = source.to_string();
        self.read(move |conn| {
            let revisions = conn
                .prepare_cached(
                    "SELECT branch, revision FROM change_source_revisions WHERE source = ?1",
                )
                .and_then(|mut select| {
                    select
                        .query_map([&source], |row| Ok((row.get(0)?, row.get(1)?)))?
                        .collect::<rusqlite::Result<BTreeMap<String, String>>>()
                })
                .map_err(Error::ReadRevisions)?;
            Ok(SourceRevisions { source, revisions })
        })
        .await
    }

    /// Whether `delivery` was accepted before within its window. A cheap early
    /// check; [`Db::add_delivered_changes`] makes the binding one.
    pub async fn delivery_seen(&self, delivery: Delivery) -> Result<bool, Error> {
        self.read(move |conn| {
            let seen: Option<i64> = conn
                .query_row(
                    "SELECT received_at FROM delivery_ids WHERE dialect = ?1 AND delivery_id = ?2",
                    (&delivery.dialect, &delivery.id),
                    |row| row.get(0),
                )
                .optional()?;
            Ok(seen.is_some_and(|at| at >= delivery.not_before))
        })
        .await
    }

    /// Forgets delivery ids recorded before `before` (epoch seconds).
    pub async fn purge_deliveries(&self, before: i64) -> Result<usize, Error> {
        let path = self.shared.path.clone();
        tokio::task::spawn_blocking(move || {
            let conn = Connection::open(&path).map_err(|source| Error::Open { path, source })?;
            conn.busy_timeout(BUSY_TIMEOUT)?;
            Ok(conn.execute("DELETE FROM delivery_ids WHERE received_at < ?1", [before])?)
        })
        .await?
    }

    async fn write(
        &self,
        changes: Vec<NewChange>,
        delivery: Option<Delivery>,
        revisions: Option<SourceRevisions>,
    ) -> Result<Stored, Error> {
        let stored = self
            .transact(move |conn| {
                writer::store_changes(conn, &changes, delivery.as_ref(), revisions.as_ref(), now())
            })
            .await?;
        if let (Stored::Changes(ids), Some(bus)) = (&stored, self.shared.bus.get()) {
            for &changeid in ids {
                bus.send(Event::ChangeAdded { changeid });
            }
        }
        Ok(stored)
    }

    /// From now on, every stored change is announced on `bus` once it is
    /// committed, whoever stored it.
    pub fn announce_changes_to(&self, bus: Bus) {
        let _ = self.shared.bus.set(bus);
    }

    /// Runs `work` on the writer's connection inside a transaction shared with
    /// whatever else is waiting, and returns its result once it is committed.
    /// An error rolls back `work` alone.
    async fn transact<T, F>(&self, work: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
    {
        let requests = self.shared.requests.as_ref().ok_or(Error::WriterGone)?;
        let (job, answer) = writer::Closure::boxed(work);
        requests.send(job).map_err(|_| Error::WriterGone)?;
        answer.await.map_err(|_| Error::WriterGone)?
    }

    pub async fn change(&self, changeid: i64) -> Result<Option<Change>, Error> {
        self.read(move |conn| query::get_change(conn, changeid))
            .await
    }

    /// Up to `limit` changes after change `changeid`, oldest first.
    pub async fn changes_after(&self, changeid: i64, limit: u64) -> Result<Vec<Change>, Error> {
        self.read(move |conn| query::changes_after(conn, changeid, limit))
            .await
    }

    /// The changes of these ids, oldest first.
    pub async fn changes_by_id(&self, ids: Vec<i64>) -> Result<Vec<Change>, Error> {
        self.read(move |conn| query::changes_by_id(conn, &ids))
            .await
    }

    pub fn stats(&self) -> Stats {
        let counters = &self.shared.counters;
        Stats {
            transactions: counters.transactions.load(Ordering::Relaxed),
            requests: counters.requests.load(Ordering::Relaxed),
        }
    }

    /// Runs `read` on a pooled connection on a blocking thread, so SQLite never
    /// blocks an async worker.
    async fn read<T, F>(&self, read: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, Error> + Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            let pooled = shared.lock_readers().pop();
            let mut conn = match pooled {
                Some(conn) => conn,
                None => open_reader(&shared.path)?,
            };
            let result = read(&mut conn);
            let mut readers = shared.lock_readers();
            if readers.len() < READERS {
                readers.push(conn);
            }
            result
        })
        .await?
    }
}

impl Shared {
    /// The pool is a plain list, valid even if a holder panicked.
    fn lock_readers(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        self.readers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn open_reader(path: &Path) -> Result<Connection, Error> {
    let open_failed = |source| Error::Open {
        path: path.to_owned(),
        source,
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(open_failed)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_failed)?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn change(value: serde_json::Value) -> NewChange {
        serde_json::from_value(value).unwrap()
    }

    fn temp_db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("state.sqlite")).unwrap();
        (dir, db)
    }

    #[tokio::test]
    async fn a_stored_change_survives_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        let db = Db::open(&path).unwrap();
        let ids = db
            .add_changes(vec![change(json!({
                "author": "me", "files": ["b.c", "a.c"], "properties": {"size": 2},
                "when_timestamp": 1_234, "branch": "main",
            }))])
            .await
            .unwrap();
        let before = db.change(ids[0]).await.unwrap().unwrap();
        drop(db);

        let reopened = Db::open(&path).unwrap();
        let after = reopened.change(ids[0]).await.unwrap().unwrap();
        assert_eq!(after, before);
        assert_eq!(after.files, ["b.c", "a.c"]);
        assert_eq!(after.properties["size"], json!([2, "Change"]));
        assert_eq!(after.when_timestamp, 1_234);
    }

    fn revisions(source: &str, pairs: &[(&str, &str)]) -> SourceRevisions {
        SourceRevisions {
            source: source.into(),
            revisions: pairs
                .iter()
                .map(|(b, r)| (b.to_string(), r.to_string()))
                .collect(),
        }
    }

    #[tokio::test]
    async fn polled_revisions_replace_the_sources_previous_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        let db = Db::open(&path).unwrap();
        assert_eq!(db.source_revisions("a").await.unwrap(), revisions("a", &[]));
        let ids = db
            .add_polled_changes(
                vec![change(json!({"revision": "r2", "branch": "main"}))],
                revisions("a", &[("main", "r2"), ("old", "r0")]),
            )
            .await
            .unwrap();
        assert_eq!(ids, [1]);
        db.add_polled_changes(Vec::new(), revisions("b", &[("main", "x")]))
            .await
            .unwrap();
        db.add_polled_changes(Vec::new(), revisions("a", &[("main", "r3")]))
            .await
            .unwrap();
        drop(db);

        let db = Db::open(&path).unwrap();
        assert_eq!(
            db.source_revisions("a").await.unwrap(),
            revisions("a", &[("main", "r3")])
        );
        assert_eq!(
            db.source_revisions("b").await.unwrap(),
            revisions("b", &[("main", "x")])
        );
    }

    #[tokio::test]
    async fn revisions_are_not_advanced_when_their_changes_fail() {
        let (_dir, db) = temp_db();
        db.add_polled_changes(Vec::new(), revisions("a", &[("main", "r1")]))
            .await
            .unwrap();
        let failed = db
            .add_polled_changes(
                vec![
                    change(json!({"comments": "fine"})),
                    change(json!({"properties": {"": 1}})),
                ],
                revisions("a", &[("main", "r3")]),
            )
            .await;
        assert!(
            matches!(failed, Err(Error::Insert { position: 2, .. })),
            "{failed:?}"
        );
        assert_eq!(
            db.source_revisions("a").await.unwrap(),
            revisions("a", &[("main", "r1")])
        );
        assert_eq!(db.changes_after(0, u64::MAX).await.unwrap().len() as u64, 0);
    }

    #[tokio::test]
    async fn dropping_the_last_handle_closes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        let db = Db::open(&path).unwrap();
        db.add_changes(vec![change(json!({}))]).await.unwrap();
        db.changes_after(0, 10).await.unwrap();
        let wal = dir.path().join("state.sqlite-wal");
        assert!(wal.exists());
        drop(db);
        // SQLite removes the WAL file when its last connection closes.
        assert!(!wal.exists());
    }

    #[tokio::test]
    async fn parents_follow_branch_repository_project_and_codebase() {
        let (_dir, db) = temp_db();
        let main = json!({"branch": "main", "repository": "r", "project": "p"});
        let ids = db
            .add_changes(vec![
                change(main.clone()),
                change(json!({"branch": "other", "repository": "r", "project": "p"})),
                change(main.clone()),
                change(
                    json!({"branch": "main", "repository": "r", "project": "p", "codebase": "c"}),
                ),
                change(json!({})),
            ])
            .await
            .unwrap();
        let later = db
            .add_changes(vec![change(main), change(json!({}))])
            .await
            .unwrap();
        let parent = |id| {
            let db = db.clone();
            async move { db.change(id).await.unwrap().unwrap().parent_changeid }
        };
        assert_eq!(parent(ids[0]).await, None);
        assert_eq!(parent(ids[1]).await, None);
        assert_eq!(parent(ids[2]).await, Some(ids[0]));
        assert_eq!(parent(ids[3]).await, None);
        assert_eq!(parent(ids[4]).await, None);
        assert_eq!(parent(later[0]).await, Some(ids[2]));
        // A null branch is its own lineage.
        assert_eq!(parent(later[1]).await, Some(ids[4]));
    }

    #[tokio::test]
    async fn changes_with_the_same_identity_share_a_sourcestamp() {
        let (_dir, db) = temp_db();
        let same =
            json!({"revision": "abc", "branch": "main", "repository": "r", "comments": "one"});
        let ids = db
            .add_changes(vec![
                change(same.clone()),
                change(json!({"revision": "abc", "branch": "main", "repository": "r", "comments": "two"})),
                change(json!({"revision": "abd", "branch": "main", "repository": "r"})),
            ])
            .await
            .unwrap();
        let stamp = |id| {
            let db = db.clone();
            async move { db.change(id).await.unwrap().unwrap().sourcestamp }
        };
        let first = stamp(ids[0]).await;
        assert_eq!(first, stamp(ids[1]).await);
        assert_ne!(first.ssid, stamp(ids[2]).await.ssid);
        assert_eq!(
            (
                first.revision.as_deref(),
                first.branch.as_deref(),
                &*first.repository
            ),
            (Some("abc"), Some("main"), "r")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_requests_all_commit_with_distinct_ids_in_fewer_transactions() {
        const CALLERS: usize = 200;
        let (_dir, db) = temp_db();
        let start = Arc::new(tokio::sync::Barrier::new(CALLERS));
        let tasks: Vec<_> = (0..CALLERS)
            .map(|caller| {
                let (db, start) = (db.clone(), Arc::clone(&start));
                tokio::spawn(async move {
                    start.wait().await;
                    let comments = format!("caller {caller}");
                    let ids = db
                        .add_changes(vec![change(json!({"comments": comments}))])
                        .await;
                    (comments, ids.unwrap())
                })
            })
            .collect();
        let mut all_ids = std::collections::BTreeSet::new();
        for task in tasks {
            let (comments, ids) = task.await.unwrap();
            assert_eq!(ids.len(), 1);
            assert_eq!(db.change(ids[0]).await.unwrap().unwrap().comments, comments);
            all_ids.insert(ids[0]);
        }
        assert_eq!(all_ids.len(), CALLERS);
        let stats = db.stats();
        assert_eq!(stats.requests, CALLERS as u64);
        assert!(stats.transactions < stats.requests, "{stats:?}");
        assert_eq!(
            db.changes_after(0, u64::MAX).await.unwrap().len() as u64,
            CALLERS as u64
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_failing_request_does_not_fail_concurrent_ones() {
        const CALLERS: usize = 20;
        let (_dir, db) = temp_db();
        let start = Arc::new(tokio::sync::Barrier::new(CALLERS + 1));
        let good: Vec<_> = (0..CALLERS)
            .map(|_| {
                let (db, start) = (db.clone(), Arc::clone(&start));
                tokio::spawn(async move {
                    start.wait().await;
                    db.add_changes(vec![change(json!({"comments": "good"}))])
                        .await
                })
            })
            .collect();
        start.wait().await;
        let bad = db
            .add_changes(vec![change(json!({"properties": {"": "nameless"}}))])
            .await;
        assert!(
            matches!(bad, Err(Error::Insert { position: 1, .. })),
            "{bad:?}"
        );
        for task in good {
            task.await.unwrap().unwrap();
        }
        assert_eq!(
            db.changes_after(0, u64::MAX).await.unwrap().len() as u64,
            CALLERS as u64
        );
    }
}
