//! Storage of the build engine: builders and workers, buildsets and their
//! build requests, builds, steps, logs, and the schedulers' state.
//!
//! Every write is one job of the group-committing writer; a method returns
//! once its rows are committed.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension};
use serde_json::{Map, Value};

use super::journal::{self, JournalKind};
use super::writer::{sourcestamp_id, StampKey};
use super::{now, Db, Error};
use crate::changes::SourceStamp;
use crate::events::{BuildInfo, BuilderInfo, BuildsetInfo};
use crate::results::{worst, Results};

/// A source stamp a buildset is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StampSpec {
    /// The source stamp of a stored change.
    Existing(i64),
    /// Found or created from these attributes (forced and nightly builds).
    New {
        branch: Option<String>,
        revision: Option<String>,
        repository: String,
        project: String,
        codebase: String,
    },
}

/// A buildset to submit: one build request per builder.
#[derive(Debug, Clone, PartialEq)]
pub struct NewBuildset {
    pub reason: String,
    pub scheduler: String,
    pub external_idstring: Option<String>,
    /// Name → `[value, source]`.
    pub properties: Map<String, Value>,
    pub sourcestamps: Vec<StampSpec>,
    /// The builders, with whether each collapses older pending requests.
    pub builders: Vec<(i64, bool)>,
    pub priority: i64,
}

/// A submitted buildset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedBuildset {
    pub bsid: i64,
    pub submitted_at: i64,
    /// Builder id → build request id.
    pub requests: BTreeMap<i64, i64>,
    /// Older requests that the new ones replaced (completed as SKIPPED).
    pub collapsed: Vec<i64>,
    /// The buildsets those completed, with their results.
    pub completed: Vec<(i64, Results)>,
}

/// A build as the UI's lists show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct BuildSummary {
    pub buildid: i64,
    pub builderid: i64,
    pub number: i64,
    /// `None` while it runs.
    pub results: Option<i64>,
}

impl BuildSummary {
    /// From a row of `id, builderid, number, results`.
    fn from_row(row: &rusqlite::Row) -> rusqlite::Result<BuildSummary> {
        Ok(BuildSummary {
            buildid: row.get(0)?,
            builderid: row.get(1)?,
            number: row.get(2)?,
            results: row.get(3)?,
        })
    }
}

/// A log of one of a build's steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSummary {
    pub logid: i64,
    pub stepid: i64,
    pub name: String,
    /// Buildbot's type: `s` (lines prefixed by their channel), `t`, `h`.
    pub kind: String,
    pub num_lines: usize,
}

/// Where a build stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildProgress {
    pub complete: bool,
    /// Its steps in order: id, and whether it ended.
    pub steps: Vec<(i64, bool)>,
    /// Their logs, step by step.
    pub logs: Vec<LogSummary>,
}

/// A build request cancelled before any build claimed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CancelledRequest {
    pub bsid: i64,
    pub builderid: i64,
    pub at: i64,
    /// Its buildset, when this was its last pending request.
    pub buildset_complete: Option<(i64, Results)>,
}

/// Everything a scheduler decided at once, written in one transaction so that
/// a crash never keeps half of it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SchedulerWrite {
    /// (scheduler, state name, value).
    pub state: Vec<(String, String, Value)>,
    /// (scheduler, change id) now waiting for the scheduler's timer.
    pub classify: Vec<(String, i64)>,
    /// (scheduler, change id) no longer waiting.
    pub unclassify: Vec<(String, i64)>,
    /// Schedulers removed from the configuration: their state and waiting
    /// changes are forgotten, so one added again later starts afresh.
    pub forget: Vec<String>,
    pub buildsets: Vec<NewBuildset>,
    /// (change id, scheduler, accepted, why): what each scheduler decided
    /// of a change, for the webhook inspector.
    pub decisions: Vec<(i64, String, bool, String)>,
}

/// A change waiting for a scheduler's timer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassifiedChange {
    pub changeid: i64,
    pub branch: Option<String>,
    pub repository: String,
    pub project: String,
    pub codebase: String,
}

/// A build request waiting for a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRequest {
    pub brid: i64,
    pub buildsetid: i64,
}

/// What a build request asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildsetDetails {
    pub bsid: i64,
    pub reason: String,
    pub scheduler: String,
    pub external_idstring: Option<String>,
    pub submitted_at: i64,
    pub properties: Map<String, Value>,
    pub sourcestamps: Vec<SourceStamp>,
    /// The correlation id of the delivery of its newest change, if any.
    pub correlation: Option<String>,
}

/// A build that was just started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartedBuild {
    pub buildid: i64,
    pub number: i64,
    pub started_at: i64,
}

/// A step that was just added, started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedStep {
    pub stepid: i64,
    /// The ids of its logs, in the order asked for.
    pub logids: Vec<i64>,
    pub started_at: i64,
}

/// A finished build, and what finishing it completed besides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FinishedBuild {
    pub complete_at: i64,
    /// The buildset, when this was its last request.
    pub buildset_complete: Option<(i64, Results)>,
}

/// What start-up recovery found of builds interrupted by a stop or a crash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The builds finished as RETRY.
    pub builds: Vec<i64>,
    /// The build requests made pending again.
    pub requests: Vec<i64>,
}

impl Db {
    /// Makes sure every configured builder has a row, updating its description
    /// and tags, and returns the ids by name. Builders no longer configured keep
    /// their rows (and builds).
    pub async fn sync_builders(
        &self,
        builders: Vec<(String, Option<String>, Vec<String>)>,
    ) -> Result<BTreeMap<String, i64>, Error> {
        self.transact(move |conn| {
            let mut ids = BTreeMap::new();
            for (name, description, tags) in builders {
                let tags = Value::from(tags).to_string();
                let id: i64 = conn
                    .prepare_cached(
                        "INSERT INTO builders (id, name, description, tags)
                         VALUES ((SELECT COALESCE(MAX(id), 0) + 1 FROM builders), ?1, ?2, ?3)
                         ON CONFLICT (name) DO UPDATE
                             SET description = excluded.description, tags = excluded.tags
                         RETURNING id",
                    )?
                    .query_row((&name, &description, &tags), |row| row.get(0))?;
                ids.insert(name, id);
            }
            Ok(ids)
        })
        .await
    }

    /// Makes sure every configured worker has a row and returns the ids by name.
    pub async fn sync_workers(
        &self,
        workers: Vec<(String, Value)>,
    ) -> Result<BTreeMap<String, i64>, Error> {
        let workers = workers
            .into_iter()
            .map(|(name, info)| (name, Some(info)))
            .collect();
        self.sync_worker_kinds(workers, Vec::new()).await
    }

    /// Records the configured workers: a local one (`Some` info) is
    /// connected; a remote one (`None`) keeps the info it last gave and is
    /// connected when it is among `connected_remote` (logged in). Every
    /// other worker is disconnected.
    pub async fn sync_worker_kinds(
        &self,
        workers: Vec<(String, Option<Value>)>,
        connected_remote: Vec<String>,
    ) -> Result<BTreeMap<String, i64>, Error> {
        self.transact(move |conn| {
            conn.execute("UPDATE workers SET connected = 0", [])?;
            let mut ids = BTreeMap::new();
            for (name, info) in workers {
                let local = info.is_some();
                let connected = local || connected_remote.contains(&name);
                let info = info.unwrap_or_else(|| Value::Object(Map::new()));
                let id: i64 = conn
                    .prepare_cached(
                        "INSERT INTO workers (id, name, info, connected)
                         VALUES ((SELECT COALESCE(MAX(id), 0) + 1 FROM workers), ?1, ?2, ?3)
                         ON CONFLICT (name) DO UPDATE SET
                             info = CASE WHEN ?4 THEN excluded.info ELSE info END,
                             connected = ?3
                         RETURNING id",
                    )?
                    .query_row((&name, info.to_string(), connected, local), |row| {
                        row.get(0)
                    })?;
                ids.insert(name, id);
            }
            Ok(ids)
        })
        .await
    }

    /// Records remote worker `name`'s login and what it said of itself.
    pub async fn record_worker_login(&self, name: &str, info: Value) -> Result<(), Error> {
        let name = name.to_owned();
        self.transact(move |conn| {
            // A new connection is not shutting down (Buildbot resets
            // `graceful` when a worker attaches).
            conn.execute(
                "UPDATE workers SET info = ?2, connected = 1, graceful = 0 WHERE name = ?1",
                (&name, info.to_string()),
            )?;
            Ok(())
        })
        .await
    }

    /// Records that worker `name` was paused (`Some` reason, maybe empty)
    /// or unpaused (`None`).
    pub async fn record_worker_pause(
        &self,
        name: &str,
        reason: Option<String>,
    ) -> Result<(), Error> {
        let name = name.to_owned();
        self.transact(move |conn| {
            conn.execute(
                "UPDATE workers SET paused = ?2, pause_reason = ?3 WHERE name = ?1",
                (&name, reason.is_some(), reason.filter(|r| !r.is_empty())),
            )?;
            Ok(())
        })
        .await
    }

    /// Records that worker `name` shuts down once its builds end.
    pub async fn record_worker_graceful(&self, name: &str) -> Result<(), Error> {
        let name = name.to_owned();
        self.transact(move |conn| {
            conn.execute("UPDATE workers SET graceful = 1 WHERE name = ?1", [&name])?;
            Ok(())
        })
        .await
    }

    /// The paused workers, by name, with the reason given (maybe empty).
    pub async fn worker_pauses(&self) -> Result<BTreeMap<String, String>, Error> {
        self.read(|conn| {
            let mut select = conn.prepare_cached(
                "SELECT name, COALESCE(pause_reason, '') FROM workers WHERE paused = 1",
            )?;
            let pauses = select
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<Result<_, _>>()?;
            Ok(pauses)
        })
        .await
    }

    /// Counts a refused login under worker name `name` (nothing for a name
    /// no worker has).
    pub async fn record_refused_login(&self, name: &str) -> Result<(), Error> {
        let name = name.to_owned();
        self.transact(move |conn| {
            conn.execute(
                "UPDATE workers SET refused_logins = refused_logins + 1 WHERE name = ?1",
                [&name],
            )?;
            Ok(())
        })
        .await
    }

    /// Records that remote worker `name` went away.
    pub async fn record_worker_logout(&self, name: &str) -> Result<(), Error> {
        let name = name.to_owned();
        self.transact(move |conn| {
            conn.execute("UPDATE workers SET connected = 0 WHERE name = ?1", [&name])?;
            Ok(())
        })
        .await
    }

    /// Finishes every build left running by a previous process as RETRY (its
    /// unfinished steps too, and its logs closed) and makes its build request
    /// pending again, as Buildbot does when a master comes back.
    pub async fn recover_interrupted_builds(&self) -> Result<Recovered, Error> {
        self.transact(|conn| {
            let now = now();
            let interrupted: Vec<(i64, i64)> = conn
                .prepare("SELECT id, buildrequestid FROM builds WHERE complete_at IS NULL")?
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let retry = Results::Retry as i64;
            let mut recovered = Recovered::default();
            for (buildid, brid) in interrupted {
                conn.execute(
                    "UPDATE logs SET complete = 1 WHERE stepid IN
                         (SELECT id FROM steps WHERE buildid = ?1)",
                    [buildid],
                )?;
                conn.execute(
                    "UPDATE steps SET complete_at = ?2, results = ?3,
                         state_string = state_string || ' (retry)'
                     WHERE buildid = ?1 AND complete_at IS NULL",
                    (buildid, now, retry),
                )?;
                conn.execute(
                    "UPDATE builds SET complete_at = ?2, results = ?3,
                         state_string = 'interrupted by master restart'
                     WHERE id = ?1",
                    (buildid, now, retry),
                )?;
                journal::record(conn, buildid, JournalKind::Finished, now)?;
                let unclaimed = conn.execute(
                    "UPDATE buildrequests SET claimed_at = NULL
                     WHERE id = ?1 AND complete = 0",
                    [brid],
                )?;
                recovered.builds.push(buildid);
                if unclaimed > 0 {
                    recovered.requests.push(brid);
                }
            }
            Ok(recovered)
        })
        .await
    }

    /// A build as events describe it (Buildbot's build dictionary), read
    /// back: what durable consumers of the journal work from.
    pub async fn build_info(&self, buildid: i64) -> Result<Option<BuildInfo>, Error> {
        self.read(move |conn| {
            let row = conn
                .prepare_cached(
                    "SELECT b.number, b.buildrequestid, b.started_at, b.complete_at, b.results,
                         b.state_string, b.properties, b.builderid, bl.name, bl.description,
                         bl.tags, b.workerid, w.name, r.buildsetid
                     FROM builds b
                     JOIN builders bl ON bl.id = b.builderid
                     JOIN workers w ON w.id = b.workerid
                     JOIN buildrequests r ON r.id = b.buildrequestid
                     WHERE b.id = ?1",
                )?
                .query_row([buildid], |row| {
                    Ok((
                        (
                            row.get::<_, i64>(0)?,
                            row.get::<_, i64>(1)?,
                            row.get::<_, i64>(2)?,
                            row.get::<_, Option<i64>>(3)?,
                            row.get::<_, Option<i64>>(4)?,
                            row.get::<_, String>(5)?,
                            row.get::<_, String>(6)?,
                        ),
                        (
                            row.get::<_, i64>(7)?,
                            row.get::<_, String>(8)?,
                            row.get::<_, Option<String>>(9)?,
                            row.get::<_, String>(10)?,
                            row.get::<_, i64>(11)?,
                            row.get::<_, String>(12)?,
                            row.get::<_, i64>(13)?,
                        ),
                    ))
                })
                .optional()?;
            let Some((build, (builderid, name, description, tags, workerid, worker, bsid))) = row
            else {
                return Ok(None);
            };
            let (
                number,
                buildrequestid,
                started_at,
                complete_at,
                results,
                state_string,
                properties,
            ) = build;
            let Some(buildset) = buildset_details(conn, bsid)? else {
                return Ok(None);
            };
            Ok(Some(BuildInfo {
                buildid,
                number,
                buildrequestid,
                started_at,
                complete_at,
                results: results.and_then(Results::from_code),
                state_string,
                builder: BuilderInfo {
                    builderid,
                    name,
                    description,
                    tags: serde_json::from_str(&tags).unwrap_or_default(),
                },
                worker,
                workerid,
                buildset: BuildsetInfo {
                    bsid,
                    reason: buildset.reason,
                    scheduler: buildset.scheduler,
                    external_idstring: buildset.external_idstring,
                    submitted_at: buildset.submitted_at,
                    correlation: buildset.correlation,
                },
                sourcestamps: buildset.sourcestamps,
                properties: json_object(&properties),
            }))
        })
        .await
    }

    /// A scheduler's stored state, by name.
    pub async fn scheduler_state(&self, scheduler: &str) -> Result<Map<String, Value>, Error> {
        let scheduler = scheduler.to_owned();
        self.read(move |conn| {
            let mut select = conn
                .prepare_cached("SELECT name, value FROM scheduler_state WHERE scheduler = ?1")?;
            let rows = select.query_map([&scheduler], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })?;
            let mut state = Map::new();
            for row in rows {
                let (name, value) = row?;
                state.insert(name, serde_json::from_str(&value).unwrap_or(Value::Null));
            }
            Ok(state)
        })
        .await
    }

    /// The changes a scheduler accepted and has not built yet, oldest first.
    pub async fn classified_changes(
        &self,
        scheduler: &str,
    ) -> Result<Vec<ClassifiedChange>, Error> {
        let scheduler = scheduler.to_owned();
        self.read(move |conn| {
            let mut select = conn.prepare_cached(
                "SELECT c.changeid, c.branch, c.repository, c.project, c.codebase
                 FROM scheduler_changes s JOIN changes c ON c.changeid = s.changeid
                 WHERE s.scheduler = ?1 ORDER BY c.changeid",
            )?;
            let changes = select
                .query_map([&scheduler], |row| {
                    Ok(ClassifiedChange {
                        changeid: row.get(0)?,
                        branch: row.get(1)?,
                        repository: row.get(2)?,
                        project: row.get(3)?,
                        codebase: row.get(4)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(changes)
        })
        .await
    }

    /// The id of the newest change, 0 when there is none.
    pub async fn last_changeid(&self) -> Result<i64, Error> {
        self.read(|conn| {
            Ok(conn.query_row(
                "SELECT COALESCE(MAX(changeid), 0) FROM changes",
                [],
                |row| row.get(0),
            )?)
        })
        .await
    }

    /// Writes a scheduler's decisions in one transaction.
    pub async fn scheduler_write(
        &self,
        write: SchedulerWrite,
    ) -> Result<Vec<AddedBuildset>, Error> {
        self.transact(move |conn| {
            let now = now();
            for scheduler in &write.forget {
                conn.prepare_cached("DELETE FROM scheduler_state WHERE scheduler = ?1")?
                    .execute([scheduler])?;
                conn.prepare_cached("DELETE FROM scheduler_changes WHERE scheduler = ?1")?
                    .execute([scheduler])?;
            }
            for (scheduler, name, value) in &write.state {
                conn.prepare_cached(
                    "INSERT INTO scheduler_state (scheduler, name, value) VALUES (?1, ?2, ?3)
                     ON CONFLICT (scheduler, name) DO UPDATE SET value = excluded.value",
                )?
                .execute((scheduler, name, value.to_string()))?;
            }
            for (scheduler, changeid) in &write.classify {
                conn.prepare_cached(
                    "INSERT OR IGNORE INTO scheduler_changes (scheduler, changeid) VALUES (?1, ?2)",
                )?
                .execute((scheduler, changeid))?;
            }
            for (changeid, scheduler, accepted, reason) in &write.decisions {
                conn.prepare_cached(
                    "INSERT OR REPLACE INTO change_decisions (changeid, scheduler, accepted, reason)
                     VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute((changeid, scheduler, accepted, reason))?;
            }
            for (scheduler, changeid) in &write.unclassify {
                conn.prepare_cached(
                    "DELETE FROM scheduler_changes WHERE scheduler = ?1 AND changeid = ?2",
                )?
                .execute((scheduler, changeid))?;
            }
            write
                .buildsets
                .iter()
                .map(|buildset| add_buildset(conn, buildset, now))
                .collect()
        })
        .await
    }

    /// Build requests of a builder that wait for a worker, highest priority
    /// first, then oldest first.
    pub async fn pending_requests(&self, builderid: i64) -> Result<Vec<PendingRequest>, Error> {
        self.read(move |conn| {
            let mut select = conn.prepare_cached(
                "SELECT id, buildsetid FROM buildrequests
                 WHERE builderid = ?1 AND complete = 0 AND claimed_at IS NULL
                 ORDER BY priority DESC, id",
            )?;
            let pending = select
                .query_map([builderid], |row| {
                    Ok(PendingRequest {
                        brid: row.get(0)?,
                        buildsetid: row.get(1)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(pending)
        })
        .await
    }

    /// What a buildset asks for: reason, properties and source stamps.
    pub async fn buildset_details(&self, bsid: i64) -> Result<Option<BuildsetDetails>, Error> {
        self.read(move |conn| buildset_details(conn, bsid)).await
    }

    /// Claims a pending build request and starts its build with the builder's
    /// next number. `None` when the request is no longer pending (collapsed or
    /// claimed meanwhile).
    pub async fn claim_and_start_build(
        &self,
        brid: i64,
        builderid: i64,
        workerid: i64,
        properties: Map<String, Value>,
    ) -> Result<Option<StartedBuild>, Error> {
        self.transact(move |conn| {
            let now = now();
            let claimed = conn
                .prepare_cached(
                    "UPDATE buildrequests SET claimed_at = ?2
                     WHERE id = ?1 AND complete = 0 AND claimed_at IS NULL",
                )?
                .execute((brid, now))?;
            if claimed == 0 {
                return Ok(None);
            }
            let (buildid, number) = conn
                .prepare_cached(
                    "INSERT INTO builds (id, number, builderid, buildrequestid, workerid,
                         started_at, state_string, properties)
                     VALUES ((SELECT COALESCE(MAX(id), 0) + 1 FROM builds),
                         (SELECT COALESCE(MAX(number), 0) + 1 FROM builds WHERE builderid = ?1),
                         ?1, ?2, ?3, ?4, 'starting', ?5)
                     RETURNING id, number",
                )?
                .query_row(
                    (
                        builderid,
                        brid,
                        workerid,
                        now,
                        Value::Object(properties).to_string(),
                    ),
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )?;
            journal::record(conn, buildid, JournalKind::Started, now)?;
            Ok(Some(StartedBuild {
                buildid,
                number,
                started_at: now,
            }))
        })
        .await
    }

    /// Records a build's current description and properties.
    pub async fn update_build(
        &self,
        buildid: i64,
        state_string: String,
        properties: Option<Map<String, Value>>,
    ) -> Result<(), Error> {
        self.transact(move |conn| {
            conn.prepare_cached("UPDATE builds SET state_string = ?2 WHERE id = ?1")?
                .execute((buildid, &state_string))?;
            if let Some(properties) = properties {
                conn.prepare_cached("UPDATE builds SET properties = ?2 WHERE id = ?1")?
                    .execute((buildid, Value::Object(properties).to_string()))?;
            }
            Ok(())
        })
        .await
    }

    /// Finishes a build and its build request, and the buildset when all of
    /// its requests are complete.
    pub async fn finish_build(
        &self,
        buildid: i64,
        brid: i64,
        results: Results,
        state_string: String,
        properties: Map<String, Value>,
    ) -> Result<FinishedBuild, Error> {
        self.transact(move |conn| {
            let now = now();
            conn.prepare_cached(
                "UPDATE builds SET complete_at = ?2, results = ?3, state_string = ?4,
                     properties = ?5
                 WHERE id = ?1",
            )?
            .execute((
                buildid,
                now,
                results as i64,
                &state_string,
                Value::Object(properties).to_string(),
            ))?;
            journal::record(conn, buildid, JournalKind::Finished, now)?;
            // A RETRY build's request waits to be built again (Buildbot's
            // RETRY: its worker went away).
            if results == Results::Retry {
                conn.prepare_cached("UPDATE buildrequests SET claimed_at = NULL WHERE id = ?1")?
                    .execute([brid])?;
                return Ok(FinishedBuild {
                    complete_at: now,
                    buildset_complete: None,
                });
            }
            let buildset_complete = complete_requests(conn, &[brid], results, now)?;
            Ok(FinishedBuild {
                complete_at: now,
                buildset_complete: buildset_complete.into_iter().next(),
            })
        })
        .await
    }

    /// Adds a step to a build, started now, and its logs, returning the step
    /// id and the log ids in the order of `logs`.
    pub async fn add_step(
        &self,
        buildid: i64,
        number: i64,
        name: String,
        state_string: String,
        logs: Vec<String>,
    ) -> Result<AddedStep, Error> {
        self.transact(move |conn| {
            let started_at = now();
            let stepid: i64 = conn
                .prepare_cached(
                    "INSERT INTO steps (id, buildid, number, name, started_at, state_string)
                     VALUES ((SELECT COALESCE(MAX(id), 0) + 1 FROM steps), ?1, ?2, ?3, ?4, ?5)
                     RETURNING id",
                )?
                .query_row((buildid, number, &name, started_at, &state_string), |row| {
                    row.get(0)
                })?;
            let mut logids = Vec::with_capacity(logs.len());
            for log in logs {
                let id: i64 = conn
                    .prepare_cached(
                        "INSERT INTO logs (id, stepid, name, slug, type, complete, num_lines)
                         VALUES ((SELECT COALESCE(MAX(id), 0) + 1 FROM logs), ?1, ?2, ?3, 's', 0, 0)
                         RETURNING id",
                    )?
                    .query_row((stepid, &log, slug(&log)), |row| row.get(0))?;
                logids.push(id);
            }
            Ok(AddedStep {
                stepid,
                logids,
                started_at,
            })
        })
        .await
    }

    /// Finishes a step; returns when it completed, in epoch seconds.
    pub async fn finish_step(
        &self,
        stepid: i64,
        results: Results,
        state_string: String,
    ) -> Result<i64, Error> {
        self.transact(move |conn| {
            let complete_at = now();
            conn.prepare_cached(
                "UPDATE steps SET complete_at = ?2, results = ?3, state_string = ?4 WHERE id = ?1",
            )?
            .execute((stepid, complete_at, results as i64, &state_string))?;
            Ok(complete_at)
        })
        .await
    }

    /// Cancels a build request that no build has claimed yet. False when it
    /// was claimed or complete already.
    pub async fn cancel_request(&self, brid: i64) -> Result<Option<CancelledRequest>, Error> {
        self.transact(move |conn| {
            let pending: Option<(i64, i64)> = conn
                .prepare_cached(
                    "SELECT buildsetid, builderid FROM buildrequests
                     WHERE id = ?1 AND complete = 0 AND claimed_at IS NULL",
                )?
                .query_row([brid], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?;
            let Some((bsid, builderid)) = pending else {
                return Ok(None);
            };
            let at = now();
            let completed = complete_requests(conn, &[brid], Results::Cancelled, at)?;
            Ok(Some(CancelledRequest {
                bsid,
                builderid,
                at,
                buildset_complete: completed.into_iter().next(),
            }))
        })
        .await
    }
}

impl Db {
    /// Buildbot's rebuild: a new buildset with the source stamps and
    /// properties of build `buildid`'s buildset, for its builder only;
    /// `None` when there is no such build.
    pub async fn rebuild(
        &self,
        buildid: i64,
        reason: String,
    ) -> Result<Option<AddedBuildset>, Error> {
        self.transact(move |conn| {
            let found: Option<(i64, i64, String, String)> = conn
                .prepare_cached(
                    "SELECT s.id, r.builderid, s.scheduler, s.properties FROM builds b
                     JOIN buildrequests r ON r.id = b.buildrequestid
                     JOIN buildsets s ON s.id = r.buildsetid
                     WHERE b.id = ?1",
                )?
                .query_row([buildid], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                })
                .optional()?;
            let Some((bsid, builderid, scheduler, properties)) = found else {
                return Ok(None);
            };
            let stamps = conn
                .prepare_cached(
                    "SELECT sourcestampid FROM buildset_sourcestamps WHERE buildsetid = ?1
                     ORDER BY sourcestampid",
                )?
                .query_map([bsid], |row| row.get(0))?
                .map(|ssid| ssid.map(StampSpec::Existing))
                .collect::<Result<Vec<_>, _>>()?;
            let properties = match serde_json::from_str(&properties) {
                Ok(Value::Object(properties)) => properties,
                _ => Map::new(),
            };
            let buildset = NewBuildset {
                reason,
                scheduler,
                external_idstring: None,
                properties,
                sourcestamps: stamps,
                builders: vec![(builderid, false)],
                priority: 0,
            };
            add_buildset(conn, &buildset, now()).map(Some)
        })
        .await
    }

    /// What `/metrics` reads at each scrape: build requests waiting, by
    /// builder id, and reporter requests not yet delivered, by reporter.
    pub async fn backlogs(&self) -> Result<(Vec<(i64, i64)>, Vec<(String, i64)>), Error> {
        self.read(|conn| {
            let pending = conn
                .prepare_cached(
                    "SELECT builderid, COUNT(*) FROM buildrequests
                     WHERE complete = 0 AND claimed_at IS NULL GROUP BY builderid",
                )?
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            let outbox = conn
                .prepare_cached(
                    "SELECT reporter, COUNT(*) FROM outbox WHERE state = 'pending' GROUP BY reporter",
                )?
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok((pending, outbox))
        })
        .await
    }

    /// The last `per_builder` builds of each of `builderids`, newest first.
    /// One indexed range per builder, so a long history costs nothing.
    pub async fn recent_builds(
        &self,
        builderids: Vec<i64>,
        per_builder: usize,
    ) -> Result<Vec<BuildSummary>, Error> {
        self.read(move |conn| {
            let mut newest = conn.prepare_cached(
                "SELECT id, builderid, number, results FROM builds
                 WHERE builderid = ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            let mut recent = Vec::new();
            for builderid in builderids {
                let rows =
                    newest.query_map([builderid, per_builder as i64], BuildSummary::from_row)?;
                for row in rows {
                    recent.push(row?);
                }
            }
            Ok(recent)
        })
        .await
    }

    /// The builds of the buildsets of each of source stamps `ssids`, by
    /// source stamp, oldest first.
    pub async fn sourcestamp_builds(
        &self,
        ssids: Vec<i64>,
    ) -> Result<BTreeMap<i64, Vec<BuildSummary>>, Error> {
        self.read(move |conn| {
            let mut select = conn.prepare_cached(
                "SELECT b.id, b.builderid, b.number, b.results FROM buildset_sourcestamps s
                 JOIN buildrequests r ON r.buildsetid = s.buildsetid
                 JOIN builds b ON b.buildrequestid = r.id
                 WHERE s.sourcestampid = ?1 ORDER BY b.id",
            )?;
            let mut by_stamp = BTreeMap::new();
            for ssid in ssids {
                let builds = select
                    .query_map([ssid], BuildSummary::from_row)?
                    .collect::<Result<Vec<_>, _>>()?;
                by_stamp.insert(ssid, builds);
            }
            Ok(by_stamp)
        })
        .await
    }

    /// Where build `buildid` stands, in one read: whether it is over, its
    /// steps and their logs; `None` for no such build.
    pub async fn build_progress(&self, buildid: i64) -> Result<Option<BuildProgress>, Error> {
        self.read(move |conn| {
            let Some(complete) = conn
                .prepare_cached("SELECT complete_at IS NOT NULL FROM builds WHERE id = ?1")?
                .query_row([buildid], |row| row.get(0))
                .optional()?
            else {
                return Ok(None);
            };
            let steps = conn
                .prepare_cached(
                    "SELECT id, complete_at IS NOT NULL FROM steps WHERE buildid = ?1
                     ORDER BY number",
                )?
                .query_map([buildid], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            let logs = conn
                .prepare_cached(
                    "SELECT l.id, l.stepid, l.name, l.type, l.num_lines FROM steps s
                     JOIN logs l ON l.stepid = s.id
                     WHERE s.buildid = ?1 ORDER BY s.number, l.id",
                )?
                .query_map([buildid], |row| {
                    Ok(LogSummary {
                        logid: row.get(0)?,
                        stepid: row.get(1)?,
                        name: row.get(2)?,
                        kind: row.get(3)?,
                        num_lines: row.get::<_, i64>(4)?.max(0) as usize,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(BuildProgress {
                complete,
                steps,
                logs,
            }))
        })
        .await
    }

    /// The builder of build request `brid`, if there is one.
    pub async fn request_builder(&self, brid: i64) -> Result<Option<i64>, Error> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached("SELECT builderid FROM buildrequests WHERE id = ?1")?
                .query_row([brid], |row| row.get(0))
                .optional()?)
        })
        .await
    }
}

/// Inserts a buildset, its source stamps and one request per builder, then
/// collapses older pending requests the new ones make redundant.
fn add_buildset(
    conn: &Connection,
    buildset: &NewBuildset,
    now: i64,
) -> Result<AddedBuildset, Error> {
    let bsid: i64 = conn
        .prepare_cached(
            "INSERT INTO buildsets (id, external_idstring, reason, scheduler, submitted_at,
                 complete, properties)
             VALUES ((SELECT COALESCE(MAX(id), 0) + 1 FROM buildsets), ?1, ?2, ?3, ?4, 0, ?5)
             RETURNING id",
        )?
        .query_row(
            (
                &buildset.external_idstring,
                &buildset.reason,
                &buildset.scheduler,
                now,
                Value::Object(buildset.properties.clone()).to_string(),
            ),
            |row| row.get(0),
        )?;
    for stamp in &buildset.sourcestamps {
        let ssid = match stamp {
            StampSpec::Existing(ssid) => *ssid,
            StampSpec::New {
                branch,
                revision,
                repository,
                project,
                codebase,
            } => sourcestamp_id(
                conn,
                &StampKey {
                    branch: branch.as_deref(),
                    revision: revision.as_deref(),
                    repository,
                    codebase,
                    project,
                },
                now,
            )?,
        };
        conn.prepare_cached(
            "INSERT OR IGNORE INTO buildset_sourcestamps (buildsetid, sourcestampid) VALUES (?1, ?2)",
        )?
        .execute((bsid, ssid))?;
    }
    let mut added = AddedBuildset {
        bsid,
        submitted_at: now,
        requests: BTreeMap::new(),
        collapsed: Vec::new(),
        completed: Vec::new(),
    };
    for &(builderid, collapse) in &buildset.builders {
        let brid: i64 = conn
            .prepare_cached(
                "INSERT INTO buildrequests (id, buildsetid, builderid, priority, submitted_at,
                     complete)
                 VALUES ((SELECT COALESCE(MAX(id), 0) + 1 FROM buildrequests), ?1, ?2, ?3, ?4, 0)
                 RETURNING id",
            )?
            .query_row((bsid, builderid, buildset.priority, now), |row| row.get(0))?;
        added.requests.insert(builderid, brid);
        if collapse {
            let older = collapsible(conn, builderid, brid, bsid)?;
            let completed = complete_requests(conn, &older, Results::Skipped, now)?;
            added.collapsed.extend(older);
            added.completed.extend(completed);
        }
    }
    Ok(added)
}

/// Pending requests of the builder, older than `brid`, that a build of the new
/// buildset would build the same way (Buildbot's default `collapseRequests`):
/// the same codebases, each on the same repository, branch and project, and
/// either both made from changes or both on the same revision.
fn collapsible(conn: &Connection, builderid: i64, brid: i64, bsid: i64) -> Result<Vec<i64>, Error> {
    let new = stamps_with_origin(conn, bsid)?;
    let candidates: Vec<(i64, i64)> = conn
        .prepare_cached(
            "SELECT id, buildsetid FROM buildrequests
             WHERE builderid = ?1 AND id < ?2 AND complete = 0 AND claimed_at IS NULL",
        )?
        .query_map((builderid, brid), |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut older = Vec::new();
    for (candidate, candidate_bsid) in candidates {
        let old = stamps_with_origin(conn, candidate_bsid)?;
        let compatible = old.len() == new.len()
            && new.iter().all(|(codebase, (stamp, from_changes))| {
                old.get(codebase)
                    .is_some_and(|(other, other_from_changes)| {
                        stamp.repository == other.repository
                            && stamp.branch == other.branch
                            && stamp.project == other.project
                            && from_changes == other_from_changes
                            && (*from_changes || stamp.revision == other.revision)
                    })
            });
        if compatible {
            older.push(candidate);
        }
    }
    Ok(older)
}

/// A buildset's source stamps by codebase, each with whether a change made it.
fn stamps_with_origin(
    conn: &Connection,
    bsid: i64,
) -> Result<BTreeMap<String, (SourceStamp, bool)>, Error> {
    let stamps = sourcestamps(conn, bsid)?;
    let mut by_codebase = BTreeMap::new();
    for stamp in stamps {
        let from_changes: bool = conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM changes WHERE sourcestampid = ?1)")?
            .query_row([stamp.ssid], |row| row.get(0))?;
        by_codebase.insert(stamp.codebase.clone(), (stamp, from_changes));
    }
    Ok(by_codebase)
}

/// Completes build requests with `results` and every buildset they finish;
/// returns the finished buildsets with their overall results.
fn complete_requests(
    conn: &Connection,
    brids: &[i64],
    results: Results,
    now: i64,
) -> Result<Vec<(i64, Results)>, Error> {
    let mut finished = Vec::new();
    for &brid in brids {
        let bsid: i64 = conn
            .prepare_cached(
                "UPDATE buildrequests SET complete = 1, complete_at = ?2, results = ?3
                 WHERE id = ?1 RETURNING buildsetid",
            )?
            .query_row((brid, now, results as i64), |row| row.get(0))?;
        let outcomes: Vec<(bool, Option<i64>)> = conn
            .prepare_cached("SELECT complete, results FROM buildrequests WHERE buildsetid = ?1")?
            .query_map([bsid], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        if outcomes.iter().all(|(complete, _)| *complete) {
            let overall = outcomes
                .iter()
                .filter_map(|(_, results)| results.and_then(Results::from_code))
                .fold(Results::Skipped, worst);
            conn.prepare_cached(
                "UPDATE buildsets SET complete = 1, complete_at = ?2, results = ?3 WHERE id = ?1",
            )?
            .execute((bsid, now, overall as i64))?;
            finished.push((bsid, overall));
        }
    }
    Ok(finished)
}

fn buildset_details(conn: &Connection, bsid: i64) -> Result<Option<BuildsetDetails>, Error> {
    let row = conn
        .prepare_cached(
            "SELECT reason, scheduler, external_idstring, submitted_at, properties
             FROM buildsets WHERE id = ?1",
        )?
        .query_row([bsid], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, Option<String>>(2)?,
                row.get::<_, i64>(3)?,
                row.get::<_, String>(4)?,
            ))
        })
        .optional()?;
    let Some((reason, scheduler, external_idstring, submitted_at, properties)) = row else {
        return Ok(None);
    };
    // The delivery of the newest change built, for the logs.
    let correlation = conn
        .prepare_cached(
            "SELECT c.correlation FROM buildset_sourcestamps s
             JOIN changes c ON c.sourcestampid = s.sourcestampid
             WHERE s.buildsetid = ?1 AND c.correlation IS NOT NULL
             ORDER BY c.changeid DESC LIMIT 1",
        )?
        .query_row([bsid], |row| row.get(0))
        .optional()?;
    Ok(Some(BuildsetDetails {
        bsid,
        reason,
        scheduler,
        external_idstring,
        submitted_at,
        properties: json_object(&properties),
        sourcestamps: sourcestamps(conn, bsid)?,
        correlation,
    }))
}

pub(super) fn sourcestamps(conn: &Connection, bsid: i64) -> Result<Vec<SourceStamp>, Error> {
    let mut select = conn.prepare_cached(
        "SELECT s.id, s.branch, s.revision, s.repository, s.project, s.codebase, s.created_at
         FROM buildset_sourcestamps b JOIN sourcestamps s ON s.id = b.sourcestampid
         WHERE b.buildsetid = ?1 ORDER BY s.codebase, s.id",
    )?;
    let stamps = select
        .query_map([bsid], |row| {
            Ok(SourceStamp {
                ssid: row.get(0)?,
                branch: row.get(1)?,
                revision: row.get(2)?,
                repository: row.get(3)?,
                project: row.get(4)?,
                codebase: row.get(5)?,
                created_at: row.get(6)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(stamps)
}

/// Reads a JSON object stored as text; anything else reads as empty.
pub(super) fn json_object(text: &str) -> Map<String, Value> {
    match serde_json::from_str(text) {
        Ok(Value::Object(object)) => object,
        _ => Map::new(),
    }
}

/// Buildbot's log slug: the name with every character other than a letter,
/// digit, `-` or `_` replaced by `_`.
fn slug(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changes::NewChange;
    use serde_json::json;

    async fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("state.sqlite")).unwrap();
        (dir, db)
    }

    async fn change_stamp(db: &Db, branch: &str, revision: &str) -> i64 {
        let change: NewChange =
            serde_json::from_value(json!({"branch": branch, "revision": revision})).unwrap();
        let id = db.add_changes(vec![change]).await.unwrap()[0];
        db.change(id).await.unwrap().unwrap().sourcestamp.ssid
    }

    /// Builders named `builders` and one worker `w`: their ids.
    async fn builders_and_worker(db: &Db, builders: &[&str]) -> (BTreeMap<String, i64>, i64) {
        let ids = db
            .sync_builders(
                builders
                    .iter()
                    .map(|name| (name.to_string(), None, vec![]))
                    .collect(),
            )
            .await
            .unwrap();
        let workers = db
            .sync_workers(vec![("w".into(), json!({}))])
            .await
            .unwrap();
        (ids, workers["w"])
    }

    fn buildset(stamps: Vec<StampSpec>, builders: Vec<(i64, bool)>) -> NewBuildset {
        NewBuildset {
            reason: "r".into(),
            scheduler: "s".into(),
            external_idstring: None,
            properties: Map::new(),
            sourcestamps: stamps,
            builders,
            priority: 0,
        }
    }

    async fn submit(db: &Db, buildset: NewBuildset) -> AddedBuildset {
        let write = SchedulerWrite {
            buildsets: vec![buildset],
            ..SchedulerWrite::default()
        };
        db.scheduler_write(write).await.unwrap().remove(0)
    }

    #[tokio::test]
    async fn newer_requests_collapse_older_pending_ones_for_the_same_sources() {
        let (_dir, db) = db().await;
        let ids = db
            .sync_builders(vec![("b".into(), None, vec![]), ("c".into(), None, vec![])])
            .await
            .unwrap();
        let (b, c) = (ids["b"], ids["c"]);
        let main1 = change_stamp(&db, "main", "1").await;
        let main2 = change_stamp(&db, "main", "2").await;
        let dev = change_stamp(&db, "dev", "3").await;
        let first = submit(
            &db,
            buildset(
                vec![StampSpec::Existing(main1)],
                vec![(b, true), (c, false)],
            ),
        )
        .await;
        let other_branch = submit(
            &db,
            buildset(vec![StampSpec::Existing(dev)], vec![(b, true)]),
        )
        .await;
        let second = submit(
            &db,
            buildset(
                vec![StampSpec::Existing(main2)],
                vec![(b, true), (c, false)],
            ),
        )
        .await;
        assert_eq!(second.collapsed, vec![first.requests[&b]]);
        assert!(other_branch.collapsed.is_empty());
        let pending_b: Vec<i64> = db
            .pending_requests(b)
            .await
            .unwrap()
            .iter()
            .map(|r| r.brid)
            .collect();
        assert_eq!(pending_b, [other_branch.requests[&b], second.requests[&b]]);
        // Builder c does not collapse: both of its requests wait.
        assert_eq!(db.pending_requests(c).await.unwrap().len(), 2);
        // A forced stamp (no change) collapses only with the same revision.
        let forced = |revision: &str| StampSpec::New {
            branch: Some("main".into()),
            revision: Some(revision.into()),
            repository: String::new(),
            project: String::new(),
            codebase: String::new(),
        };
        let f1 = submit(&db, buildset(vec![forced("x")], vec![(b, true)])).await;
        let f2 = submit(&db, buildset(vec![forced("y")], vec![(b, true)])).await;
        assert!(f2.collapsed.is_empty(), "{f2:?}");
        let f3 = submit(&db, buildset(vec![forced("y")], vec![(b, true)])).await;
        assert_eq!(f3.collapsed, vec![f2.requests[&b]]);
        assert!(!f3.collapsed.contains(&f1.requests[&b]));
        let skipped = crate::db::rest::all(&db, &crate::db::BUILDREQUESTS).await;
        let first_b = skipped
            .iter()
            .find(|r| r["buildrequestid"] == first.requests[&b])
            .unwrap();
        assert_eq!(first_b["complete"], true);
        assert_eq!(first_b["results"], Results::Skipped as i64);
    }

    #[tokio::test]
    async fn a_buildset_completes_with_its_worst_result_when_its_last_build_finishes() {
        let (_dir, db) = db().await;
        let (ids, worker) = builders_and_worker(&db, &["b", "c"]).await;
        let stamp = change_stamp(&db, "main", "1").await;
        let added = submit(
            &db,
            buildset(
                vec![StampSpec::Existing(stamp)],
                vec![(ids["b"], true), (ids["c"], true)],
            ),
        )
        .await;
        let mut builds = Vec::new();
        for builder in ["b", "c"] {
            let brid = added.requests[&ids[builder]];
            let started = db
                .claim_and_start_build(brid, ids[builder], worker, Map::new())
                .await
                .unwrap()
                .expect("claimed");
            assert_eq!(started.number, 1, "numbers count per builder");
            assert_eq!(
                db.claim_and_start_build(brid, ids[builder], worker, Map::new())
                    .await
                    .unwrap(),
                None,
                "a request is claimed once"
            );
            builds.push((started.buildid, brid));
        }
        let first = db
            .finish_build(
                builds[0].0,
                builds[0].1,
                Results::Failure,
                "failed x".into(),
                Map::new(),
            )
            .await
            .unwrap();
        assert_eq!(first.buildset_complete, None);
        let last = db
            .finish_build(
                builds[1].0,
                builds[1].1,
                Results::Success,
                "ok".into(),
                Map::new(),
            )
            .await
            .unwrap();
        assert_eq!(last.buildset_complete, Some((added.bsid, Results::Failure)));
    }

    #[tokio::test]
    async fn recent_builds_are_the_newest_few_of_each_builder_asked_for() {
        let (_dir, db) = db().await;
        let (ids, worker) = builders_and_worker(&db, &["a", "b", "c"]).await;
        let (mut built, mut stamps) = (Vec::new(), Vec::new());
        for (n, builder) in ["a", "b", "a", "a", "b", "c"].into_iter().enumerate() {
            let stamp = change_stamp(&db, "main", &n.to_string()).await;
            stamps.push(stamp);
            let added = submit(
                &db,
                buildset(vec![StampSpec::Existing(stamp)], vec![(ids[builder], true)]),
            )
            .await;
            let started = db
                .claim_and_start_build(
                    added.requests[&ids[builder]],
                    ids[builder],
                    worker,
                    Map::new(),
                )
                .await
                .unwrap()
                .unwrap();
            built.push(started.buildid);
        }
        let recent = db.recent_builds(vec![ids["a"], ids["b"]], 2).await.unwrap();
        let shown: Vec<(i64, i64)> = recent.iter().map(|b| (b.builderid, b.buildid)).collect();
        assert_eq!(
            shown,
            vec![
                (ids["a"], built[3]),
                (ids["a"], built[2]),
                (ids["b"], built[4]),
                (ids["b"], built[1]),
            ]
        );
        assert_eq!(recent[0].number, 3, "the number of a's third build");
        assert_eq!(recent[0].results, None, "still running");

        // The builds of several stamps in one read.
        let by_stamp = db
            .sourcestamp_builds(vec![stamps[1], stamps[5], 999])
            .await
            .unwrap();
        let builds =
            |ssid: i64| -> Vec<i64> { by_stamp[&ssid].iter().map(|b| b.buildid).collect() };
        assert_eq!(builds(stamps[1]), [built[1]]);
        assert_eq!(builds(stamps[5]), [built[5]]);
        assert_eq!(builds(999), Vec::<i64>::new());
    }

    #[tokio::test]
    async fn a_builds_progress_is_its_steps_and_their_logs() {
        let (_dir, db) = db().await;
        let (ids, worker) = builders_and_worker(&db, &["b"]).await;
        let stamp = change_stamp(&db, "main", "1").await;
        let added = submit(
            &db,
            buildset(vec![StampSpec::Existing(stamp)], vec![(ids["b"], true)]),
        )
        .await;
        let build = db
            .claim_and_start_build(added.requests[&ids["b"]], ids["b"], worker, Map::new())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(db.build_progress(build.buildid + 1).await.unwrap(), None);
        let step = db
            .add_step(
                build.buildid,
                0,
                "compile".into(),
                "running".into(),
                vec!["stdio".into()],
            )
            .await
            .unwrap();
        let settings = crate::config::LogSettings::default();
        db.append_log(step.logids[0], "oone\netwo\n".into(), 2, false, settings)
            .await
            .unwrap();
        let progress = db.build_progress(build.buildid).await.unwrap().unwrap();
        assert!(!progress.complete);
        assert_eq!(progress.steps, [(step.stepid, false)]);
        assert_eq!(
            progress.logs,
            [LogSummary {
                logid: step.logids[0],
                stepid: step.stepid,
                name: "stdio".into(),
                kind: "s".into(),
                num_lines: 2,
            }]
        );
    }

    #[tokio::test]
    async fn interrupted_builds_finish_as_retry_and_their_requests_wait_again() {
        let (_dir, db) = db().await;
        let (ids, worker) = builders_and_worker(&db, &["b"]).await;
        let stamp = change_stamp(&db, "main", "1").await;
        let added = submit(
            &db,
            buildset(vec![StampSpec::Existing(stamp)], vec![(ids["b"], true)]),
        )
        .await;
        let brid = added.requests[&ids["b"]];
        let started = db
            .claim_and_start_build(brid, ids["b"], worker, Map::new())
            .await
            .unwrap()
            .unwrap();
        let step = db
            .add_step(
                started.buildid,
                1,
                "shell".into(),
                "'sleep'".into(),
                vec!["stdio".into()],
            )
            .await
            .unwrap();
        db.append_log(
            step.logids[0],
            "ohello\n".into(),
            1,
            false,
            Default::default(),
        )
        .await
        .unwrap();
        assert!(db.pending_requests(ids["b"]).await.unwrap().is_empty());

        let recovered = db.recover_interrupted_builds().await.unwrap();
        assert_eq!(
            recovered,
            Recovered {
                builds: vec![started.buildid],
                requests: vec![brid]
            }
        );
        assert_eq!(db.pending_requests(ids["b"]).await.unwrap()[0].brid, brid);
        let steps = crate::db::rest::all(&db, &crate::db::STEPS).await;
        assert_eq!(steps[0]["stepid"], step.stepid);
        assert_eq!(steps[0]["results"], Results::Retry as i64);
        assert_eq!(steps[0]["state_string"], "'sleep' (retry)");
        let logid = step.logids[0];
        let log = db
            .rest_object(&crate::db::LOGS, logid)
            .await
            .unwrap()
            .unwrap();
        let content = crate::db::logs::whole(&db, logid).await;
        assert_eq!(
            (log["complete"].clone(), content.as_str()),
            (json!(true), "ohello\n")
        );
        // Nothing is left to recover the second time.
        assert_eq!(
            db.recover_interrupted_builds().await.unwrap(),
            Recovered::default()
        );
    }

    #[test]
    fn log_slugs_keep_only_safe_characters() {
        assert_eq!(slug("stdio"), "stdio");
        assert_eq!(slug("test results.xml"), "test_results_xml");
    }
}
