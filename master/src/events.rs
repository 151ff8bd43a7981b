//! The in-process event bus: what happened, for whoever listens (schedulers,
//! builders, the log, and reporters).
//!
//! A broadcast channel: a slow subscriber that falls behind gets `Lagged` and
//! must catch up from the database, which is where the truth is; events only
//! say where to look. Build events carry the build as Buildbot's build
//! dictionary has it (build, builder, buildset, source stamps, properties), so
//! a reporter can render a message without reading the database.

use std::sync::Arc;

use serde_json::{json, Map, Value};
use tokio::sync::broadcast;

use crate::db::{Db, SourceStamp};
use crate::results::Results;

/// How many events a subscriber may fall behind before it lags.
const CAPACITY: usize = 4096;

#[derive(Debug, Clone)]
pub enum Event {
    ChangeAdded {
        changeid: i64,
    },
    BuildRequestAdded {
        brid: i64,
        bsid: i64,
        builderid: i64,
    },
    BuildStarted(Arc<BuildInfo>),
    StepFinished {
        build: Arc<BuildInfo>,
        step: StepInfo,
    },
    BuildFinished(Arc<BuildInfo>),
    WorkerConnected {
        name: String,
    },
    WorkerMissing {
        name: String,
    },
}

/// A build as Buildbot's build dictionary describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildInfo {
    pub buildid: i64,
    pub number: i64,
    pub buildrequestid: i64,
    pub started_at: i64,
    pub complete_at: Option<i64>,
    pub results: Option<Results>,
    pub state_string: String,
    pub builder: BuilderInfo,
    pub worker: String,
    pub workerid: i64,
    pub buildset: BuildsetInfo,
    pub sourcestamps: Vec<SourceStamp>,
    /// Name → `[value, source]`.
    pub properties: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BuilderInfo {
    pub builderid: i64,
    pub name: String,
    pub description: Option<String>,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BuildsetInfo {
    pub bsid: i64,
    pub reason: String,
    pub scheduler: String,
    pub external_idstring: Option<String>,
    pub submitted_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepInfo {
    pub stepid: i64,
    pub number: i64,
    pub name: String,
    pub results: Results,
    pub state_string: String,
}

impl BuildInfo {
    /// The dictionary as JSON, in Buildbot's shape: the build's REST fields
    /// plus `builder`, `buildset`, `sourcestamps` and `properties`.
    pub fn to_json(&self) -> Value {
        json!({
            "buildid": self.buildid,
            "number": self.number,
            "builderid": self.builder.builderid,
            "buildrequestid": self.buildrequestid,
            "workerid": self.workerid,
            "started_at": self.started_at,
            "complete": self.complete_at.is_some(),
            "complete_at": self.complete_at,
            "results": self.results.map(|r| r as i64),
            "state_string": self.state_string,
            "builder": {
                "builderid": self.builder.builderid,
                "name": self.builder.name,
                "description": self.builder.description,
                "tags": self.builder.tags,
            },
            "buildset": {
                "bsid": self.buildset.bsid,
                "reason": self.buildset.reason,
                "scheduler": self.buildset.scheduler,
                "external_idstring": self.buildset.external_idstring,
                "submitted_at": self.buildset.submitted_at,
            },
            "sourcestamps": self.sourcestamps.iter().map(sourcestamp_json).collect::<Vec<_>>(),
            "properties": self.properties,
        })
    }
}

/// A source stamp in Buildbot's REST shape.
pub fn sourcestamp_json(stamp: &SourceStamp) -> Value {
    json!({
        "ssid": stamp.ssid,
        "branch": stamp.branch,
        "revision": stamp.revision,
        "repository": stamp.repository,
        "project": stamp.project,
        "codebase": stamp.codebase,
        "created_at": stamp.created_at,
        "patch": null,
    })
}

/// The sending side; clones share the channel.
#[derive(Debug, Clone)]
pub struct Bus {
    sender: broadcast::Sender<Event>,
}

impl Default for Bus {
    fn default() -> Bus {
        Bus::new()
    }
}

impl Bus {
    pub fn new() -> Bus {
        Bus {
            sender: broadcast::channel(CAPACITY).0,
        }
    }

    /// Publishes an event; having no subscriber is fine.
    pub fn send(&self, event: Event) {
        let _ = self.sender.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }
}

/// Logs one line per build started and finished (saying when a builder's
/// result changed from its previous build), and per worker coming and going,
/// until the bus closes.
pub async fn log_events(db: Db, mut events: broadcast::Receiver<Event>) {
    loop {
        match events.recv().await {
            Ok(Event::BuildStarted(build)) => tracing::info!(
                "build {} #{} started on worker {} (build {})",
                build.builder.name,
                build.number,
                build.worker,
                build.buildid
            ),
            Ok(Event::BuildFinished(build)) => {
                let results = build.results.map_or("unknown", Results::name);
                let previous = db
                    .previous_build(build.builder.builderid, build.number)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|previous| previous["results"].as_i64())
                    .and_then(Results::from_code);
                let change = match previous {
                    Some(previous) if previous.name() != results => {
                        format!(", was {previous}")
                    }
                    _ => String::new(),
                };
                tracing::info!(
                    "build {} #{} finished: {results} ({}{change})",
                    build.builder.name,
                    build.number,
                    build.state_string
                )
            }
            Ok(Event::WorkerConnected { name }) => tracing::info!("worker {name} connected"),
            Ok(Event::WorkerMissing { name }) => tracing::warn!("worker {name} is missing"),
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!("the event log missed {missed} events")
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
