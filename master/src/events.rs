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

use crate::changes::SourceStamp;
use crate::results::Results;

/// How many events a subscriber may fall behind before it lags.
const CAPACITY: usize = 4096;

/// What happened. Build and step events carry the build as Buildbot's build
/// dictionary has it; the others name what changed, with the time.
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
    /// A pending request was cancelled before any build claimed it.
    BuildRequestCancelled {
        brid: i64,
        bsid: i64,
        builderid: i64,
    },
    BuildStarted(Arc<BuildInfo>),
    /// The build's state string changed (a step started, a stop was asked).
    BuildStateChanged(Arc<BuildInfo>),
    StepStarted {
        build: Arc<BuildInfo>,
        step: StepInfo,
    },
    StepFinished {
        build: Arc<BuildInfo>,
        step: StepInfo,
    },
    /// Every build that ends says so, RETRY ones (after a restart) included.
    BuildFinished(Arc<BuildInfo>),
    /// The last request of a buildset completed.
    BuildsetComplete {
        bsid: i64,
        results: Results,
        complete_at: i64,
    },
    WorkerConnected(WorkerEvent),
    /// The worker went away: it stopped, or a reload removed it.
    WorkerDisconnected(WorkerEvent),
    /// The worker has been gone longer than its `missing_timeout`.
    WorkerMissing(WorkerEvent),
}

/// A worker that came or went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerEvent {
    pub workerid: i64,
    pub name: String,
    /// Epoch seconds.
    pub at: i64,
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

impl BuildInfo {
    /// The correlation id of the delivery it came from, `-` when none.
    pub fn correlation(&self) -> &str {
        self.buildset.correlation.as_deref().unwrap_or("-")
    }
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
    /// The id that follows a change hook delivery into the logs (the newest
    /// change's), for the build's log lines.
    pub correlation: Option<String>,
}

/// A step as Buildbot's REST API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct StepInfo {
    pub stepid: i64,
    pub buildid: i64,
    pub number: i64,
    pub name: String,
    pub started_at: i64,
    pub complete_at: Option<i64>,
    /// `None` while it runs.
    pub results: Option<Results>,
    pub state_string: String,
}

impl StepInfo {
    /// The step in Buildbot's REST shape.
    pub fn to_json(&self) -> Value {
        json!({
            "stepid": self.stepid,
            "number": self.number,
            "name": self.name,
            "buildid": self.buildid,
            "started_at": self.started_at,
            "complete": self.complete_at.is_some(),
            "complete_at": self.complete_at,
            "state_string": self.state_string,
            "results": self.results.map(|r| r as i64),
            "urls": [],
            "hidden": false,
        })
    }
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
            "sourcestamps": self.sourcestamps.iter().map(SourceStamp::to_rest).collect::<Vec<_>>(),
            "properties": self.properties,
        })
    }
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
