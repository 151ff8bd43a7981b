//! The single writer: one thread owns the write connection and commits every
//! request waiting for it in one transaction (group commit), so the cost of a
//! durable commit is shared by all callers that arrived meanwhile.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use super::Error;
use crate::changes::{NewChange, PROPERTY_SOURCE};

/// One unit of work for the writer: it runs inside the batch's transaction
/// under its own savepoint, and learns after COMMIT whether it stuck.
pub(super) trait Job: Send {
    /// Does the work; false rolls this job's savepoint back (and only it).
    fn run(&mut self, conn: &Connection) -> bool;
    /// Reports the outcome once the batch is committed, or the commit's error.
    fn finish(self: Box<Self>, committed: Result<(), Arc<rusqlite::Error>>);
}

pub(super) type WriteRequest = Box<dyn Job>;

/// A job made of a closure, answering its caller through a oneshot channel.
pub(super) struct Closure<T, F> {
    work: Option<F>,
    outcome: Option<Result<T, Error>>,
    reply: oneshot::Sender<Result<T, Error>>,
}

impl<T, F> Closure<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
{
    pub(super) fn boxed(work: F) -> (WriteRequest, oneshot::Receiver<Result<T, Error>>) {
        let (reply, answer) = oneshot::channel();
        let job = Closure {
            work: Some(work),
            outcome: None,
            reply,
        };
        (Box::new(job), answer)
    }
}

impl<T, F> Job for Closure<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let outcome = match self.work.take() {
            Some(work) => work(conn),
            None => Err(Error::WriterGone),
        };
        let ok = outcome.is_ok();
        self.outcome = Some(outcome);
        ok
    }

    fn finish(self: Box<Self>, committed: Result<(), Arc<rusqlite::Error>>) {
        let outcome = match (committed, self.outcome) {
            (Err(error), _) => Err(Error::Commit(error)),
            (Ok(()), Some(outcome)) => outcome,
            (Ok(()), None) => Err(Error::WriterGone),
        };
        // A caller that has gone away only lost interest in the answer.
        let _ = self.reply.send(outcome);
    }
}

/// A change-hook delivery id, as the provider sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub dialect: String,
    pub id: String,
    /// A delivery recorded before this time (epoch seconds) no longer counts.
    pub not_before: i64,
}

/// Every branch a polling change source follows, with the last revision it has
/// seen there. Stored whole: branches left out are forgotten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRevisions {
    pub source: String,
    /// Branch name → revision.
    pub revisions: BTreeMap<String, String>,
}

/// What became of a write request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// The ids of the stored changes, in order.
    Changes(Vec<i64>),
    /// The delivery was accepted before; nothing was stored.
    Duplicate,
}

/// What the writer has done so far.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) transactions: AtomicU64,
    pub(super) requests: AtomicU64,
}

/// Starts the writer thread. It runs until every sender is dropped and the
/// requests already sent are written.
pub(super) fn spawn(
    mut conn: Connection,
    counters: Arc<Counters>,
) -> std::io::Result<(mpsc::Sender<WriteRequest>, JoinHandle<()>)> {
    let (sender, receiver) = mpsc::channel::<WriteRequest>();
    let handle = std::thread::Builder::new()
        .name("db-writer".into())
        .spawn(move || {
            while let Ok(first) = receiver.recv() {
                let mut batch = vec![first];
                batch.extend(receiver.try_iter());
                write_batch(&mut conn, batch, &counters);
            }
        })?;
    Ok((sender, handle))
}

/// Writes a batch in one transaction, each job under its own savepoint so
/// that a job that fails is rolled back alone, then tells every job how the
/// commit went. A job whose caller has gone away is still committed.
fn write_batch(conn: &mut Connection, mut batch: Vec<WriteRequest>, counters: &Counters) {
    counters
        .requests
        .fetch_add(batch.len() as u64, Ordering::Relaxed);
    let committed = commit_batch(conn, &mut batch).map_err(Arc::new);
    if committed.is_ok() {
        counters.transactions.fetch_add(1, Ordering::Relaxed);
    }
    for job in batch {
        job.finish(committed.clone());
    }
}

fn commit_batch(conn: &mut Connection, batch: &mut [WriteRequest]) -> rusqlite::Result<()> {
    let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for job in batch {
        let savepoint = tx.savepoint()?;
        if job.run(&savepoint) {
            savepoint.commit()?;
        } else {
            savepoint.finish()?;
        }
    }
    tx.commit()
}

/// Stores one caller's changes: nothing if `delivery` was accepted before,
/// and with `revisions` replacing the change source's last-seen revisions.
pub(super) fn store_changes(
    conn: &Connection,
    changes: &[NewChange],
    delivery: Option<&Delivery>,
    revisions: Option<&SourceRevisions>,
    now: i64,
) -> Result<Stored, Error> {
    if let Some(delivery) = delivery {
        if !record_delivery(conn, delivery, now).map_err(Error::StoreDelivery)? {
            return Ok(Stored::Duplicate);
        }
    }
    let ids = insert_changes(conn, changes, now)?;
    if let Some(revisions) = revisions {
        replace_revisions(conn, revisions).map_err(Error::StoreRevisions)?;
    }
    Ok(Stored::Changes(ids))
}

/// Records a delivery id; false if it was recorded already within its window.
/// Checked here, inside the transaction, so two concurrent redeliveries cannot
/// both store their changes.
fn record_delivery(conn: &Connection, delivery: &Delivery, now: i64) -> rusqlite::Result<bool> {
    let seen: Option<i64> = conn
        .prepare_cached(
            "SELECT received_at FROM delivery_ids WHERE dialect = ?1 AND delivery_id = ?2",
        )?
        .query_row((&delivery.dialect, &delivery.id), |row| row.get(0))
        .optional()?;
    if seen.is_some_and(|at| at >= delivery.not_before) {
        return Ok(false);
    }
    conn.prepare_cached(
        "INSERT INTO delivery_ids (dialect, delivery_id, received_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (dialect, delivery_id) DO UPDATE SET received_at = excluded.received_at",
    )?
    .execute((&delivery.dialect, &delivery.id, now))?;
    Ok(true)
}

/// Replaces everything stored about the source's branches by `revisions`.
fn replace_revisions(conn: &Connection, revisions: &SourceRevisions) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM change_source_revisions WHERE source = ?1")?
        .execute([&revisions.source])?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO change_source_revisions (source, branch, revision) VALUES (?1, ?2, ?3)",
    )?;
    for (branch, revision) in &revisions.revisions {
        insert.execute((&revisions.source, branch, revision))?;
    }
    Ok(())
}

/// Stores one request's changes in order, so each may be the parent of the next.
fn insert_changes(conn: &Connection, changes: &[NewChange], now: i64) -> Result<Vec<i64>, Error> {
    changes
        .iter()
        .enumerate()
        .map(|(index, change)| {
            insert_change(conn, change, now).map_err(|source| Error::Insert {
                position: index + 1,
                source,
            })
        })
        .collect()
}

fn insert_change(conn: &Connection, change: &NewChange, now: i64) -> rusqlite::Result<i64> {
    let sourcestampid = sourcestamp_id(conn, &StampKey::of(change), now)?;
    let parent: Option<i64> = conn
        .prepare_cached(
            "SELECT changeid FROM changes
             WHERE branch IS NOT DISTINCT FROM ?1 AND repository = ?2
               AND project = ?3 AND codebase = ?4
             ORDER BY changeid DESC LIMIT 1",
        )?
        .query_row(
            (
                &change.branch,
                &change.repository,
                &change.project,
                &change.codebase,
            ),
            |row| row.get(0),
        )
        .optional()?;
    let changeid: i64 = conn
        .prepare_cached(
            "INSERT INTO changes (changeid, author, committer, comments, branch, revision,
                 revlink, when_timestamp, category, repository, codebase, project,
                 sourcestampid, parent_changeid, correlation)
             VALUES ((SELECT COALESCE(MAX(changeid), 0) + 1 FROM changes),
                 ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
             RETURNING changeid",
        )?
        .query_row(
            rusqlite::params![
                change.author,
                change.committer,
                change.comments,
                change.branch,
                change.revision,
                change.revlink,
                change.when_timestamp.unwrap_or(now),
                change.category,
                change.repository,
                change.codebase,
                change.project,
                sourcestampid,
                parent,
                change.correlation,
            ],
            |row| row.get(0),
        )?;
    let mut add_file = conn.prepare_cached(
        "INSERT INTO change_files (changeid, position, filename) VALUES (?1, ?2, ?3)",
    )?;
    for (position, filename) in change.files.iter().enumerate() {
        add_file.execute((changeid, position, filename))?;
    }
    let mut add_property = conn.prepare_cached(
        "INSERT INTO change_properties (changeid, property_name, property_value)
         VALUES (?1, ?2, ?3)",
    )?;
    for (name, value) in &change.properties {
        add_property.execute((changeid, name, json!([value, PROPERTY_SOURCE]).to_string()))?;
    }
    Ok(changeid)
}

/// What identifies a source stamp.
pub(super) struct StampKey<'a> {
    pub(super) branch: Option<&'a str>,
    pub(super) revision: Option<&'a str>,
    pub(super) repository: &'a str,
    pub(super) codebase: &'a str,
    pub(super) project: &'a str,
}

impl<'a> StampKey<'a> {
    fn of(change: &'a NewChange) -> StampKey<'a> {
        StampKey {
            branch: change.branch.as_deref(),
            revision: change.revision.as_deref(),
            repository: &change.repository,
            codebase: &change.codebase,
            project: &change.project,
        }
    }
}

/// Finds the source stamp of (revision, branch, repository, codebase,
/// project), creating it if this is the first time they are seen together.
pub(super) fn sourcestamp_id(conn: &Connection, key: &StampKey, now: i64) -> rusqlite::Result<i64> {
    let hash = sourcestamp_hash(key);
    let existing = conn
        .prepare_cached("SELECT id FROM sourcestamps WHERE ss_hash = ?1")?
        .query_row([&hash], |row| row.get(0))
        .optional()?;
    if let Some(id) = existing {
        return Ok(id);
    }
    conn.prepare_cached(
        "INSERT INTO sourcestamps (id, ss_hash, branch, revision, repository, codebase,
             project, patchid, created_at)
         VALUES ((SELECT COALESCE(MAX(id), 0) + 1 FROM sourcestamps),
             ?1, ?2, ?3, ?4, ?5, ?6, NULL, ?7)
         RETURNING id",
    )?
    .query_row(
        (
            &hash,
            key.branch,
            key.revision,
            key.repository,
            key.codebase,
            key.project,
            now,
        ),
        |row| row.get(0),
    )
}

/// A SHA-256 over the identifying fields. Each field is tagged (null or text)
/// and length-prefixed, so distinct tuples never encode to the same bytes.
fn sourcestamp_hash(key: &StampKey) -> String {
    let fields = [
        key.revision,
        key.branch,
        Some(key.repository),
        Some(key.codebase),
        Some(key.project),
    ];
    let mut hasher = Sha256::new();
    for field in fields {
        match field {
            None => hasher.update([0]),
            Some(text) => {
                hasher.update([1]);
                hasher.update((text.len() as u64).to_be_bytes());
                hasher.update(text.as_bytes());
            }
        }
    }
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(value: serde_json::Value) -> NewChange {
        serde_json::from_value(value).unwrap()
    }

    fn request(
        changes: Vec<NewChange>,
    ) -> (WriteRequest, oneshot::Receiver<Result<Stored, Error>>) {
        delivered(changes, None)
    }

    fn delivered(
        changes: Vec<NewChange>,
        delivery: Option<Delivery>,
    ) -> (WriteRequest, oneshot::Receiver<Result<Stored, Error>>) {
        Closure::boxed(move |conn| store_changes(conn, &changes, delivery.as_ref(), None, 0))
    }

    #[test]
    fn a_failing_request_is_rolled_back_alone_within_its_batch() {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        let (first, first_answer) = request(vec![change(serde_json::json!({"comments": "one"}))]);
        let (bad, bad_answer) = request(vec![
            change(serde_json::json!({"comments": "stored then undone"})),
            change(serde_json::json!({"properties": {"": 1}})),
        ]);
        let (last, last_answer) = request(vec![change(serde_json::json!({"comments": "three"}))]);
        let counters = Counters::default();

        write_batch(&mut conn, vec![first, bad, last], &counters);

        assert_eq!(
            first_answer.blocking_recv().unwrap().unwrap(),
            Stored::Changes(vec![1])
        );
        let error = bad_answer.blocking_recv().unwrap().unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("cannot store change 2 of the request"),
            "{error}"
        );
        assert_eq!(
            last_answer.blocking_recv().unwrap().unwrap(),
            Stored::Changes(vec![2])
        );
        let comments: Vec<String> = conn
            .prepare("SELECT comments FROM changes ORDER BY changeid")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(comments, ["one", "three"]);
        assert_eq!(counters.transactions.load(Ordering::Relaxed), 1);
        assert_eq!(counters.requests.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_redelivery_in_the_same_batch_or_later_stores_nothing() {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        let delivery = |id: &str, not_before| Delivery {
            dialect: "github".into(),
            id: id.into(),
            not_before,
        };
        let one = || vec![change(serde_json::json!({"comments": "c"}))];
        let (a, a_answer) = delivered(one(), Some(delivery("d1", 0)));
        let (b, b_answer) = delivered(one(), Some(delivery("d1", 0)));
        let (c, c_answer) = delivered(one(), Some(delivery("d2", 0)));
        let counters = Counters::default();
        write_batch(&mut conn, vec![a, b, c], &counters);
        assert_eq!(
            a_answer.blocking_recv().unwrap().unwrap(),
            Stored::Changes(vec![1])
        );
        assert_eq!(
            b_answer.blocking_recv().unwrap().unwrap(),
            Stored::Duplicate
        );
        assert_eq!(
            c_answer.blocking_recv().unwrap().unwrap(),
            Stored::Changes(vec![2])
        );
        // The same id recorded before the window starts counts as new again.
        let (late, late_answer) = delivered(one(), Some(delivery("d1", i64::MAX)));
        write_batch(&mut conn, vec![late], &counters);
        assert_eq!(
            late_answer.blocking_recv().unwrap().unwrap(),
            Stored::Changes(vec![3])
        );
        // Another dialect's id space is separate.
        let (other, other_answer) = delivered(
            one(),
            Some(Delivery {
                dialect: "gitlab".into(),
                id: "d2".into(),
                not_before: 0,
            }),
        );
        write_batch(&mut conn, vec![other], &counters);
        assert_eq!(
            other_answer.blocking_recv().unwrap().unwrap(),
            Stored::Changes(vec![4])
        );
    }

    #[test]
    fn sourcestamp_hash_separates_null_from_empty_and_field_boundaries() {
        let hash = |value| sourcestamp_hash(&StampKey::of(&change(value)));
        assert_ne!(
            hash(serde_json::json!({})),
            hash(serde_json::json!({"branch": ""}))
        );
        assert_ne!(
            hash(serde_json::json!({"repository": "ab", "codebase": ""})),
            hash(serde_json::json!({"repository": "a", "codebase": "b"}))
        );
        assert_eq!(
            hash(serde_json::json!({"branch": "x"})),
            hash(serde_json::json!({"branch": "x"}))
        );
    }
}
