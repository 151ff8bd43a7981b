//! Deleting history past the janitor's horizons, in short write
//! transactions so that hooks and builds keep being stored meanwhile.
//!
//! Each pass walks from the oldest rows and stops at the first one inside
//! the horizon: ids grow with time, so no pass reads what it keeps.
//!
//! Ids and build numbers must never repeat (a chat message or a bookmark
//! names build 41 for good), and SQLite gives a new row the highest id plus
//! one: so the janitor keeps each builder's last build (with its buildset,
//! requests, steps, logs and journal entries), the newest buildset and the
//! newest change, whatever their age.

use rusqlite::{params_from_iter, Connection, OptionalExtension};
use serde::Serialize;

use super::{Db, Error};

/// Log chunks deleted per transaction, at most (a chunk is up to 64 KiB).
const CHUNKS_PER_BATCH: i64 = 1000;
/// Logs emptied per transaction, at most.
const LOGS_PER_BATCH: usize = 100;
/// Buildsets deleted per transaction.
const BUILDSETS_PER_BATCH: i64 = 50;
/// Changes deleted per transaction.
const CHANGES_PER_BATCH: i64 = 500;

/// What one janitor pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Pruned {
    /// Logs whose contents were deleted (they stay, with type `d`).
    pub logs: u64,
    pub chunks: u64,
    pub buildsets: u64,
    pub builds: u64,
    pub changes: u64,
}

impl Db {
    /// Deletes the contents of the logs of steps that started before
    /// `before` (epoch seconds) and marks those logs deleted (type `d`, as
    /// Buildbot does); the log and its line count stay. A log still being
    /// written is left alone until it is complete.
    pub async fn prune_log_contents(&self, before: i64, pruned: &mut Pruned) -> Result<(), Error> {
        let newest_old_step = self
            .read(move |conn| {
                Ok(conn
                    .query_row(
                        "SELECT id FROM steps WHERE started_at < ?1 ORDER BY id DESC LIMIT 1",
                        [before],
                        |row| row.get::<_, i64>(0),
                    )
                    .optional()?)
            })
            .await?;
        let Some(last_step) = newest_old_step else {
            return Ok(());
        };
        loop {
            let (logs, chunks) = self
                .transact(move |conn| empty_logs(conn, last_step))
                .await?;
            pruned.logs += logs;
            pruned.chunks += chunks;
            if logs == 0 && chunks == 0 {
                return Ok(());
            }
        }
    }

    /// Deletes the buildsets completed before `before` (epoch seconds),
    /// with their requests, builds, steps and logs; but for the newest one
    /// and those holding a builder's last build.
    pub async fn prune_buildsets(&self, before: i64, pruned: &mut Pruned) -> Result<(), Error> {
        loop {
            let (buildsets, builds, chunks) = self
                .transact(move |conn| delete_buildsets(conn, before))
                .await?;
            pruned.buildsets += buildsets;
            pruned.builds += builds;
            pruned.chunks += chunks;
            if buildsets == 0 {
                return Ok(());
            }
        }
    }

    /// Deletes the changes stored before `before` (epoch seconds), but for
    /// the newest one and those a scheduler still holds.
    pub async fn prune_changes(&self, before: i64, pruned: &mut Pruned) -> Result<(), Error> {
        let mut after = 0;
        loop {
            let (deleted, examined_to) = self
                .transact(move |conn| delete_changes(conn, before, after))
                .await?;
            pruned.changes += deleted;
            match examined_to {
                Some(changeid) => after = changeid,
                None => return Ok(()),
            }
        }
    }
}

/// Empties up to [`LOGS_PER_BATCH`] old logs, deleting at most
/// [`CHUNKS_PER_BATCH`] chunks: (logs emptied, chunks deleted).
fn empty_logs(conn: &Connection, last_step: i64) -> Result<(u64, u64), Error> {
    let mut find = conn.prepare_cached(
        "SELECT id FROM logs WHERE stepid <= ?1 AND type != 'd' AND complete = 1
         ORDER BY stepid LIMIT ?2",
    )?;
    let logids: Vec<i64> = find
        .query_map((last_step, LOGS_PER_BATCH as i64), |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut delete = conn.prepare_cached(
        "DELETE FROM logchunks WHERE rowid IN
             (SELECT rowid FROM logchunks WHERE logid = ?1 LIMIT ?2)",
    )?;
    let mut mark = conn.prepare_cached("UPDATE logs SET type = 'd' WHERE id = ?1")?;
    let (mut logs, mut chunks) = (0, 0);
    for logid in logids {
        let budget = CHUNKS_PER_BATCH - chunks as i64;
        let deleted = delete.execute((logid, budget))? as u64;
        chunks += deleted;
        if deleted as i64 == budget {
            // More may be left: the next batch goes on with this log.
            break;
        }
        mark.execute([logid])?;
        logs += 1;
    }
    Ok((logs, chunks))
}

/// Deletes up to [`BUILDSETS_PER_BATCH`] old buildsets and all under them:
/// (buildsets, builds, chunks).
fn delete_buildsets(conn: &Connection, before: i64) -> Result<(u64, u64, u64), Error> {
    let bsids: Vec<i64> = conn
        .prepare_cached(
            "SELECT id FROM buildsets
             WHERE complete = 1 AND complete_at < ?1
               AND id < (SELECT MAX(id) FROM buildsets)
               AND id NOT IN (
                   SELECT buildrequests.buildsetid FROM buildrequests
                   JOIN builds ON builds.buildrequestid = buildrequests.id
                   WHERE builds.id IN (SELECT (SELECT MAX(id) FROM builds
                                               WHERE builds.builderid = builders.id)
                                       FROM builders))
             LIMIT ?2",
        )?
        .query_map((before, BUILDSETS_PER_BATCH), |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if bsids.is_empty() {
        return Ok((0, 0, 0));
    }
    let list = placeholders(bsids.len());
    let ids = || params_from_iter(bsids.iter());
    let requests = format!("SELECT id FROM buildrequests WHERE buildsetid IN ({list})");
    let builds = format!("SELECT id FROM builds WHERE buildrequestid IN ({requests})");
    let steps = format!("SELECT id FROM steps WHERE buildid IN ({builds})");
    let logs = format!("SELECT id FROM logs WHERE stepid IN ({steps})");
    let stamps: Vec<i64> = conn
        .prepare(&format!(
            "SELECT DISTINCT sourcestampid FROM buildset_sourcestamps WHERE buildsetid IN ({list})"
        ))?
        .query_map(ids(), |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let chunks = conn.execute(
        &format!("DELETE FROM logchunks WHERE logid IN ({logs})"),
        ids(),
    )?;
    conn.execute(&format!("DELETE FROM logs WHERE id IN ({logs})"), ids())?;
    conn.execute(&format!("DELETE FROM steps WHERE id IN ({steps})"), ids())?;
    conn.execute(
        &format!("DELETE FROM build_events WHERE buildid IN ({builds})"),
        ids(),
    )?;
    let deleted_builds =
        conn.execute(&format!("DELETE FROM builds WHERE id IN ({builds})"), ids())?;
    conn.execute(
        &format!("DELETE FROM buildrequests WHERE buildsetid IN ({list})"),
        ids(),
    )?;
    conn.execute(
        &format!("DELETE FROM buildset_sourcestamps WHERE buildsetid IN ({list})"),
        ids(),
    )?;
    let buildsets = conn.execute(
        &format!("DELETE FROM buildsets WHERE id IN ({list})"),
        ids(),
    )?;
    delete_unused_stamps(conn, &stamps)?;
    Ok((buildsets as u64, deleted_builds as u64, chunks as u64))
}

/// Deletes up to [`CHANGES_PER_BATCH`] changes after `after` stored before
/// `before`: (deleted, the last change examined when more may be left).
fn delete_changes(conn: &Connection, before: i64, after: i64) -> Result<(u64, Option<i64>), Error> {
    let mut select = conn.prepare_cached(
        "SELECT changes.changeid, sourcestamps.created_at, changes.sourcestampid,
                EXISTS (SELECT 1 FROM scheduler_changes
                        WHERE scheduler_changes.changeid = changes.changeid)
         FROM changes JOIN sourcestamps ON sourcestamps.id = changes.sourcestampid
         WHERE changes.changeid > ?1 AND changes.changeid < (SELECT MAX(changeid) FROM changes)
         ORDER BY changes.changeid LIMIT ?2",
    )?;
    let rows: Vec<(i64, i64, i64, bool)> = select
        .query_map((after, CHANGES_PER_BATCH), |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let full = rows.len() as i64 == CHANGES_PER_BATCH;
    let old: Vec<&(i64, i64, i64, bool)> = rows
        .iter()
        .take_while(|(_, stored_at, _, _)| *stored_at < before)
        .collect();
    let reached_the_horizon = old.len() < rows.len();
    let examined_to = old.last().map(|(changeid, ..)| *changeid);
    let (ids, stamps): (Vec<i64>, Vec<i64>) = old
        .iter()
        .filter(|(_, _, _, held)| !held)
        .map(|(changeid, _, stamp, _)| (*changeid, *stamp))
        .unzip();
    if !ids.is_empty() {
        let list = placeholders(ids.len());
        let twice = params_from_iter(ids.iter().chain(ids.iter()));
        let ids = || params_from_iter(ids.iter());
        // A change's parent is the one before it on its branch, repository,
        // project and codebase: the changes naming a deleted one as their
        // parent are found through that lineage's index, one lookup each.
        conn.execute(
            &format!(
                "UPDATE changes SET parent_changeid = NULL
                 WHERE parent_changeid IN ({list}) AND changeid IN (
                     SELECT (SELECT next.changeid FROM changes AS next
                             WHERE next.branch IS NOT DISTINCT FROM old.branch
                               AND next.repository = old.repository
                               AND next.project = old.project
                               AND next.codebase = old.codebase
                               AND next.changeid > old.changeid
                             ORDER BY next.changeid LIMIT 1)
                     FROM changes AS old WHERE old.changeid IN ({list}))"
            ),
            twice,
        )?;
        for table in [
            "change_files",
            "change_properties",
            "change_decisions",
            "changes",
        ] {
            conn.execute(
                &format!("DELETE FROM {table} WHERE changeid IN ({list})"),
                ids(),
            )?;
        }
        delete_unused_stamps(conn, &stamps)?;
    }
    let more = full && !reached_the_horizon;
    Ok((ids.len() as u64, examined_to.filter(|_| more)))
}

/// Deletes the source stamps of `stamps` that no change and no buildset uses.
fn delete_unused_stamps(conn: &Connection, stamps: &[i64]) -> Result<(), Error> {
    if stamps.is_empty() {
        return Ok(());
    }
    conn.execute(
        &format!(
            "DELETE FROM sourcestamps WHERE id IN ({})
               AND NOT EXISTS (SELECT 1 FROM changes WHERE sourcestampid = sourcestamps.id)
               AND NOT EXISTS (SELECT 1 FROM buildset_sourcestamps
                               WHERE sourcestampid = sourcestamps.id)",
            placeholders(stamps.len())
        ),
        params_from_iter(stamps.iter()),
    )?;
    Ok(())
}

/// `?, ?, ?` for `count` values.
fn placeholders(count: usize) -> String {
    vec!["?"; count].join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::now;

    /// Buildset `id` completed at `at`, with one build of one step whose log
    /// has `chunks` chunks, on source stamp `stamp`.
    fn buildset(conn: &Connection, id: i64, at: i64, stamp: i64, chunks: i64) {
        conn.execute_batch(&format!(
            "INSERT INTO buildsets (id, reason, scheduler, submitted_at, complete, complete_at,
                 properties) VALUES ({id}, 'r', 's', {at}, 1, {at}, '{{}}');
             INSERT INTO buildset_sourcestamps (buildsetid, sourcestampid) VALUES ({id}, {stamp});
             INSERT INTO buildrequests (id, buildsetid, builderid, priority, submitted_at,
                 complete, complete_at) VALUES ({id}, {id}, 1, 0, {at}, 1, {at});
             INSERT INTO builds (id, number, builderid, buildrequestid, workerid, started_at,
                 complete_at, state_string, results, properties)
                 VALUES ({id}, {id}, 1, {id}, 1, {at}, {at}, 'done', 0, '{{}}');
             INSERT INTO build_events (buildid, kind, at) VALUES ({id}, 'finished', {at});
             INSERT INTO steps (id, buildid, number, name, started_at, state_string)
                 VALUES ({id}, {id}, 1, 'make', {at}, 'done');
             INSERT INTO logs (id, stepid, name, slug, type, complete, num_lines)
                 VALUES ({id}, {id}, 'stdio', 'stdio', 's', 1, {chunks});"
        ))
        .unwrap();
        for line in 0..chunks {
            conn.execute(
                "INSERT INTO logchunks (logid, first_line, last_line, content, compressed)
                 VALUES (?1, ?2, ?2, 'oline', 0)",
                (id, line),
            )
            .unwrap();
        }
    }

    /// Change `id` stored at `at` on its own source stamp (id `id + 100`).
    fn change(conn: &Connection, id: i64, at: i64, parent: Option<i64>) {
        conn.execute(
            "INSERT INTO sourcestamps (id, ss_hash, repository, codebase, project, created_at)
             VALUES (?1 + 100, ?1, 'r', '', '', ?2)",
            (id, at),
        )
        .unwrap();
        conn.execute(
            "INSERT INTO changes (changeid, author, comments, branch, revision, when_timestamp,
                 repository, codebase, project, sourcestampid, parent_changeid)
             VALUES (?1, 'a', 'c', 'main', ?1, ?2, 'r', '', '', ?1 + 100, ?3)",
            (id, at, parent),
        )
        .unwrap();
        conn.execute(
            "INSERT INTO change_files (changeid, position, filename) VALUES (?1, 0, 'f')",
            [id],
        )
        .unwrap();
    }

    fn count(conn: &Connection, sql: &str) -> i64 {
        conn.query_row(sql, [], |row| row.get(0)).unwrap()
    }

    async fn history() -> (tempfile::TempDir, Db, i64) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("state.sqlite")).unwrap();
        let recent = now();
        db.transact(move |conn| {
            conn.execute_batch(
                "INSERT INTO builders (id, name, tags) VALUES (1, 'b', '[]');
                 INSERT INTO workers (id, name, info) VALUES (1, 'w', '{}');",
            )?;
            // Changes 1-5 are old, 6 and 7 recent, all on one branch (so each
            // names the one before as its parent, as the writer does); 3 is
            // held by a scheduler, and buildset 1 uses change 2's stamp.
            for id in 1..=7 {
                let at = if id <= 5 { 100 } else { recent };
                let parent = (id > 1).then_some(id - 1);
                change(conn, id, at, parent);
            }
            conn.execute(
                "INSERT INTO scheduler_changes (scheduler, changeid) VALUES ('s', 3)",
                [],
            )?;
            // Buildsets 1 and 2 are old, 3 recent; 2 has a log of 2,500 chunks.
            buildset(conn, 1, 100, 102, 3);
            buildset(conn, 2, 200, 106, 2500);
            buildset(conn, 3, recent, 107, 2);
            Ok(())
        })
        .await
        .unwrap();
        (dir, db, recent - 10)
    }

    #[tokio::test]
    async fn old_log_contents_go_and_their_logs_stay_marked_deleted() {
        let (dir, db, horizon) = history().await;
        let mut pruned = Pruned::default();
        db.prune_log_contents(horizon, &mut pruned).await.unwrap();
        assert_eq!((pruned.logs, pruned.chunks), (2, 2503));
        let conn = Connection::open(dir.path().join("state.sqlite")).unwrap();
        assert_eq!(count(&conn, "SELECT COUNT(*) FROM logchunks"), 2);
        assert_eq!(
            count(
                &conn,
                "SELECT COUNT(*) FROM logs WHERE type = 'd' AND num_lines > 0"
            ),
            2
        );
        // A second pass finds nothing left to do.
        let mut again = Pruned::default();
        db.prune_log_contents(horizon, &mut again).await.unwrap();
        assert_eq!(again, Pruned::default());
        // A log still being written (of an old step) is left until it is complete.
        db.transact(|conn| {
            conn.execute_batch(
                "INSERT INTO logs (id, stepid, name, slug, type, complete, num_lines)
                     VALUES (4, 2, 'trace', 'trace', 's', 0, 1);
                 INSERT INTO logchunks (logid, first_line, last_line, content, compressed)
                     VALUES (4, 0, 0, 'oline', 0);",
            )?;
            Ok(())
        })
        .await
        .unwrap();
        let mut again = Pruned::default();
        db.prune_log_contents(horizon, &mut again).await.unwrap();
        assert_eq!(again, Pruned::default());
        db.transact(|conn| Ok(conn.execute("UPDATE logs SET complete = 1 WHERE id = 4", [])?))
            .await
            .unwrap();
        db.prune_log_contents(horizon, &mut again).await.unwrap();
        assert_eq!((again.logs, again.chunks), (1, 1));
    }

    #[tokio::test]
    async fn old_buildsets_go_with_everything_under_them() {
        let (dir, db, horizon) = history().await;
        let mut pruned = Pruned::default();
        db.prune_buildsets(horizon, &mut pruned).await.unwrap();
        assert_eq!(
            (pruned.buildsets, pruned.builds, pruned.chunks),
            (2, 2, 2503)
        );
        let conn = Connection::open(dir.path().join("state.sqlite")).unwrap();
        for table in [
            "buildsets",
            "buildrequests",
            "builds",
            "steps",
            "logs",
            "build_events",
        ] {
            assert_eq!(
                count(&conn, &format!("SELECT COUNT(*) FROM {table}")),
                1,
                "{table}"
            );
        }
        // The totals the REST API reads follow.
        assert_eq!(
            count(&conn, "SELECT count FROM row_counts WHERE name = 'builds'"),
            1
        );
        // Every stamp of a deleted buildset is also a change's: all seven stay.
        assert_eq!(count(&conn, "SELECT COUNT(*) FROM sourcestamps"), 7);
    }

    #[tokio::test]
    async fn old_changes_go_but_those_a_scheduler_holds() {
        let (dir, db, horizon) = history().await;
        // What a scheduler decided of each change goes with it.
        db.transact(|conn| {
            Ok(conn.execute(
                "INSERT INTO change_decisions (changeid, scheduler, accepted, reason)
                 SELECT changeid, 's', 1, 'change accepted' FROM changes",
                [],
            )?)
        })
        .await
        .unwrap();
        let mut pruned = Pruned::default();
        db.prune_buildsets(horizon, &mut pruned).await.unwrap();
        db.prune_changes(horizon, &mut pruned).await.unwrap();
        assert_eq!(pruned.changes, 4);
        let conn = Connection::open(dir.path().join("state.sqlite")).unwrap();
        let left: Vec<i64> = conn
            .prepare("SELECT changeid FROM changes ORDER BY changeid")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(left, [3, 6, 7]);
        // Those whose parent went have none; 7 keeps 6.
        let parents: Vec<Option<i64>> = conn
            .prepare("SELECT parent_changeid FROM changes ORDER BY changeid")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(parents, [None, None, Some(6)]);
        assert_eq!(count(&conn, "SELECT COUNT(*) FROM change_files"), 3);
        assert_eq!(count(&conn, "SELECT COUNT(*) FROM change_decisions"), 3);
        // The stamps of the changes left, and buildset 3's.
        assert_eq!(count(&conn, "SELECT COUNT(*) FROM sourcestamps"), 3);
        assert_eq!(
            count(&conn, "SELECT count FROM row_counts WHERE name = 'changes'"),
            3
        );
    }

    #[tokio::test]
    async fn the_newest_rows_and_each_builders_last_build_stay_so_ids_never_repeat() {
        let (dir, db, _) = history().await;
        db.transact(|conn| {
            conn.execute_batch(
                "INSERT INTO builders (id, name, tags) VALUES (2, 'b2', '[]');
                 UPDATE buildrequests SET builderid = 2 WHERE id = 1;
                 UPDATE builds SET builderid = 2 WHERE id = 1;",
            )?;
            Ok(())
        })
        .await
        .unwrap();
        // Everything is past a horizon in the future.
        let horizon = now() + 100;
        let mut pruned = Pruned::default();
        db.prune_buildsets(horizon, &mut pruned).await.unwrap();
        db.prune_changes(horizon, &mut pruned).await.unwrap();
        assert_eq!((pruned.buildsets, pruned.builds, pruned.changes), (1, 1, 5));
        let conn = Connection::open(dir.path().join("state.sqlite")).unwrap();
        // Buildset 1 holds builder b2's last build, 3 is the newest.
        let ids = |sql: &str| {
            conn.query_row(sql, [], |row| row.get::<_, String>(0))
                .unwrap()
        };
        assert_eq!(ids("SELECT group_concat(id) FROM buildsets"), "1,3");
        assert_eq!(ids("SELECT group_concat(changeid) FROM changes"), "3,7");
    }
}
