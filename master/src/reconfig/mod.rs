//! Reconfiguration's triggers and record. `SIGHUP` (which `buildmaster
//! reconfig` sends), and a change to master.toml, a plugin library or a
//! secret ([`watch`]), each ask the topology for one reload; every attempt
//! ends in a [`Status`], kept in memory for `/api/v2/reconfig` and written to
//! `<basedir>/reconfig.json` for `buildmaster reconfig` to read.
//!
//! The status is typed: the outcome is a [`ReloadResult`] and an applied
//! reload carries its [`ConfigDiff`]; the log, the CLI and the REST API all
//! render the same value ([`Status::describe`] for people, serde for JSON).

pub mod watch;

use std::fmt;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use crate::config::ConfigDiff;

/// The status file inside a basedir.
pub const STATUS_FILE: &str = "reconfig.json";

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Trigger {
    /// The master's start: the first configuration.
    #[serde(rename = "start")]
    Start,
    /// `SIGHUP`, which `buildmaster reconfig` sends.
    #[serde(rename = "SIGHUP")]
    Signal,
    /// master.toml, a plugin library or a secret changed on disk.
    #[serde(rename = "file change")]
    FileChange,
    /// The REST API's `reconfig` action.
    #[serde(rename = "API")]
    Api,
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Trigger::Start => "start",
            Trigger::Signal => "SIGHUP",
            Trigger::FileChange => "file change",
            Trigger::Api => "API",
        })
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReloadResult {
    /// The master started with this configuration.
    #[default]
    Started,
    /// A new configuration runs.
    Applied,
    /// The configuration is the one running: nothing was done.
    Unchanged,
    /// Something was wrong: the running configuration stays.
    Failed,
}

impl fmt::Display for ReloadResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReloadResult::Started => "started",
            ReloadResult::Applied => "applied",
            ReloadResult::Unchanged => "unchanged",
            ReloadResult::Failed => "failed",
        })
    }
}

/// A configuration that was applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub generation: u64,
    pub trigger: Trigger,
    /// Epoch seconds.
    pub at: i64,
    /// What it changed, one line per component (empty at start).
    pub changes: Vec<String>,
}

/// The outcome of the last attempt, and the live generation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Counts applied configurations; the one the master started with is 1.
    pub generation: u64,
    /// Counts reload attempts, whatever their outcome.
    pub attempts: u64,
    pub result: ReloadResult,
    pub trigger: Option<Trigger>,
    /// Epoch seconds of the last attempt.
    pub last_attempt_at: Option<i64>,
    /// What the last attempt changed, one line per component (rendered
    /// from `diff`).
    pub changes: Vec<String>,
    /// The same, by component: set when the last attempt applied.
    pub diff: Option<ConfigDiff>,
    /// Why the last attempt failed: one entry per problem, with file and line.
    pub errors: Vec<String>,
    /// The last attempt that applied a configuration (the start counts), so
    /// that a later attempt finding nothing new can say since when it runs.
    pub last_applied: Option<Applied>,
}

impl Status {
    /// The status recorded in a basedir, if any.
    pub fn read(basedir: &Path) -> Option<Status> {
        let text = std::fs::read_to_string(basedir.join(STATUS_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The status of a master that just started with its first configuration.
    pub fn started(at: i64) -> Status {
        Status {
            generation: 1,
            last_applied: Some(Applied {
                generation: 1,
                trigger: Trigger::Start,
                at,
                changes: Vec::new(),
            }),
            ..Status::default()
        }
    }

    /// The next attempt's status: the generation and the record of the last
    /// applied configuration carry over.
    pub fn attempt(&self, trigger: Trigger, at: i64) -> Status {
        Status {
            generation: self.generation,
            attempts: self.attempts + 1,
            trigger: Some(trigger),
            last_attempt_at: Some(at),
            last_applied: self.last_applied.clone(),
            ..Status::default()
        }
    }

    /// This attempt applied `diff`: a new generation runs.
    pub fn applied(mut self, diff: ConfigDiff) -> Status {
        self.generation += 1;
        self.result = ReloadResult::Applied;
        self.changes = diff.summary();
        self.diff = Some(diff);
        self.last_applied = Some(Applied {
            generation: self.generation,
            trigger: self.trigger.unwrap_or(Trigger::Signal),
            at: self.last_attempt_at.unwrap_or_default(),
            changes: self.changes.clone(),
        });
        self
    }

    pub fn unchanged(mut self) -> Status {
        self.result = ReloadResult::Unchanged;
        self
    }

    pub fn failed(mut self, errors: Vec<String>) -> Status {
        self.result = ReloadResult::Failed;
        self.errors = errors;
        self
    }

    /// The outcome in words, as the log and `buildmaster reconfig` say it;
    /// `now` (epoch seconds) dates what is already live. Errors follow a
    /// failure, one per line.
    pub fn describe(&self, now: i64) -> String {
        let generation = self.generation;
        match self.result {
            ReloadResult::Started => format!("started: generation {generation}"),
            ReloadResult::Applied => format!(
                "reconfig applied: generation {generation}; {}",
                self.changes.join(", ")
            ),
            ReloadResult::Unchanged => {
                let since = match &self.last_applied {
                    Some(applied) if applied.trigger == Trigger::Start => {
                        " (since the master started)".to_string()
                    }
                    Some(applied) => {
                        let how = match applied.trigger {
                            Trigger::FileChange => "by the file watch",
                            _ => "on SIGHUP",
                        };
                        format!(" (applied {how} {} s ago)", (now - applied.at).max(0))
                    }
                    None => String::new(),
                };
                format!("master.toml is already live in generation {generation}{since}")
            }
            ReloadResult::Failed => {
                let mut text = format!(
                    "reconfig failed; the running configuration (generation {generation}) stays"
                );
                for error in &self.errors {
                    text.push_str("\n  ");
                    text.push_str(error);
                }
                text
            }
        }
    }
}

/// The status shared between the topology, which records it, and the REST
/// API, which shows it.
#[derive(Debug, Default)]
pub struct SharedStatus(Mutex<Status>);

impl SharedStatus {
    pub fn get(&self) -> Status {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Makes `status` the current one, and writes it to the basedir's
    /// status file (aside, then renamed, so a reader never sees half a file).
    pub fn record(&self, basedir: &Path, status: Status) {
        // Memory first, under the lock the file is written with: whoever sees
        // the file change (`buildmaster reconfig`) and then asks the API gets
        // the same status, never the one before.
        let mut current = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *current = status;
        let text = serde_json::to_string_pretty(&*current).unwrap_or_default();
        let temporary = basedir.join(format!(".{STATUS_FILE}.tmp"));
        let written = std::fs::write(&temporary, text)
            .and_then(|()| std::fs::rename(&temporary, basedir.join(STATUS_FILE)));
        if let Err(error) = written {
            tracing::warn!("cannot record the reconfig status in {STATUS_FILE}: {error}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Difference;

    #[test]
    fn each_outcome_is_described_from_the_same_value() {
        let start = Status::started(1_000);
        assert_eq!(start.describe(1_000), "started: generation 1");
        let unchanged = start.attempt(Trigger::Signal, 1_010).unchanged();
        assert_eq!(
            unchanged.describe(1_010),
            "master.toml is already live in generation 1 (since the master started)"
        );
        let diff = ConfigDiff {
            dialects: Difference {
                changed: vec!["github".into()],
                ..Difference::default()
            },
            ..ConfigDiff::default()
        };
        let applied = unchanged
            .attempt(Trigger::FileChange, 1_020)
            .applied(diff.clone());
        assert_eq!(applied.attempts, 2);
        assert_eq!(
            applied.describe(1_020),
            "reconfig applied: generation 2; dialects +0 ~1 -0 (~github)"
        );
        assert_eq!(applied.diff, Some(diff));
        let again = applied.attempt(Trigger::Signal, 1_025).unchanged();
        assert_eq!(
            again.describe(1_025),
            "master.toml is already live in generation 2 (applied by the file watch 5 s ago)"
        );
        let failed = again
            .attempt(Trigger::Signal, 1_030)
            .failed(vec!["master.toml:3:1: unknown field `x`".into()]);
        assert_eq!(
            failed.describe(1_030),
            "reconfig failed; the running configuration (generation 2) stays\n  master.toml:3:1: unknown field `x`"
        );
        assert_eq!(failed.last_applied.as_ref().unwrap().generation, 2);
    }

    #[test]
    fn the_status_round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let shared = SharedStatus::default();
        let status = Status::started(5)
            .attempt(Trigger::FileChange, 6)
            .unchanged();
        shared.record(dir.path(), status.clone());
        assert_eq!(Status::read(dir.path()), Some(status.clone()));
        assert_eq!(shared.get(), status);
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(STATUS_FILE)).unwrap())
                .unwrap();
        assert_eq!(json["result"], "unchanged");
        assert_eq!(json["trigger"], "file change");
        assert_eq!(json["last_applied"]["trigger"], "start");
    }
}
