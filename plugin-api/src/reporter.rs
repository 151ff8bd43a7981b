//! The reporter contract: what a reporter receives, what it declares it
//! wants, and what it returns.
//!
//! A reporter gets **one envelope per event** and returns the HTTP requests
//! that tell the outside world about it. It opens no connection itself: the
//! master delivers every request (from a durable outbox, with retries), so a
//! reporter is a pure function from events to requests.
//!
//! # The envelope
//!
//! ```json
//! { "event": "finished", "build": { ... } }
//! ```
//!
//! `event` is one of Buildbot's names ([`Event`]). `build` is present for
//! `started` and `finished`, `worker` for the worker events, `buildset` for
//! `buildset_complete`.
//!
//! `buildset_complete` comes once per buildset, after the finish of its last
//! build: `buildset` has the buildset's fields, its `results` (the worst of
//! its builds) and `builds`, the dictionaries of those of its builds that the
//! operator's filters (`builders`, `tags`, …) let through; `mode` is judged
//! on the buildset's result. The worker events belong to remote workers:
//! `worker_missing` when one stays away longer than its `missing_timeout`,
//! `worker_connected` when one logs in; they are not filtered by the
//! operator's generator options.
//!
//! # The build dictionary
//!
//! What Buildbot gives its reporters, with the same keys:
//!
//! | key | value |
//! |---|---|
//! | `buildid`, `number` | the build's id and its number within the builder |
//! | `builderid`, `buildrequestid`, `workerid`, `masterid` | ids |
//! | `builder` | `{ "builderid", "name", "description", "tags" }` |
//! | `buildset` | `{ "bsid", "reason", "submitted_at", "complete", "results", "sourcestamps": [ { "ssid", "branch", "revision", "repository", "project", "codebase", "created_at" } ] }` |
//! | `state_string` | e.g. `"build successful"`, `"failed compile"` |
//! | `results` | Buildbot's result code: 0 success, 1 warnings, 2 failure, 3 skipped, 4 exception, 5 retry, 6 cancelled; `null` while running |
//! | `complete`, `started_at`, `complete_at` | `complete_at` is `null` while running; times are epoch seconds |
//! | `url` | the build's page on the master |
//! | `properties` | `{ "name": [value, source] }`, when wanted |
//! | `blamelist` | the authors of the build's changes, in order, without repeats |
//! | `steps` | `[ { "stepid", "number", "name", "results", "state_string", "started_at", "complete_at", "hidden", "logs": [ { "logid", "name", "type", "num_lines", "content" } ] } ]`, when wanted; a log's `content` only when logs are wanted |
//! | `prev_build` | the builder's previous build, as a dictionary without `steps` or `prev_build`, when wanted (`null` for the first build) |
//!
//! # Wants
//!
//! [`Reporter::wants`](crate::Reporter::wants) declares which events the
//! reporter renders and which optional parts of the build dictionary it
//! needs; the operator's `want_*` options in `[[reporters]]` can only add to
//! it. Events not wanted are never rendered.
//!
//! # Outgoing requests
//!
//! [`OutgoingRequest`] has a byte body, optional headers, an optional
//! per-request timeout (the master's default is 30 s per attempt) and an
//! optional idempotency key. The master keeps one delivery per key and
//! reporter: rendering the same event again (after a restart) cannot send it
//! twice. The key is also sent as the `Idempotency-Key` header unless the
//! request sets that header itself, so a receiver can drop a retried delivery
//! it already took.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The events a reporter can receive, by Buildbot's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A build started (Buildbot's `report_started` / `new`).
    Started,
    /// A build finished, whatever its result.
    Finished,
    /// Every build of a buildset finished.
    BuildsetComplete,
    /// A worker stayed away longer than its `missing_timeout`.
    WorkerMissing,
    /// A worker connected.
    WorkerConnected,
}

impl Event {
    /// Every event, in the order above.
    pub const ALL: [Event; 5] = [
        Event::Started,
        Event::Finished,
        Event::BuildsetComplete,
        Event::WorkerMissing,
        Event::WorkerConnected,
    ];

    /// The name in envelopes and in `master.toml`.
    pub fn name(self) -> &'static str {
        match self {
            Event::Started => "started",
            Event::Finished => "finished",
            Event::BuildsetComplete => "buildset_complete",
            Event::WorkerMissing => "worker_missing",
            Event::WorkerConnected => "worker_connected",
        }
    }
}

/// What a reporter wants to receive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Wants {
    /// The events it renders; by default `finished` only.
    pub events: Vec<Event>,
    /// The build's `properties`.
    pub properties: bool,
    /// The build's `steps` (with their logs' names).
    pub steps: bool,
    /// The content of the steps' logs (implies `steps`).
    pub logs: bool,
    /// The builder's previous build as `prev_build`.
    pub previous_build: bool,
}

impl Default for Wants {
    fn default() -> Wants {
        Wants {
            events: vec![Event::Finished],
            properties: false,
            steps: false,
            logs: false,
            previous_build: false,
        }
    }
}

/// One event as a reporter receives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub event: Event,
    /// Buildbot's build dictionary (see the module documentation), for
    /// `started` and `finished`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<Value>,
    /// `{ "workerid", "name", "connected", "last_connection", "notify" }`
    /// for the worker events: `last_connection` in epoch seconds, `notify`
    /// the worker's `notify_on_missing`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<Value>,
    /// The buildset with its `sourcestamps`, `results` and the dictionaries
    /// of its `builds`, for `buildset_complete`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buildset: Option<Value>,
}

impl Envelope {
    /// The build dictionary, or an error naming the event that lacks it.
    pub fn build(&self) -> Result<&Value, String> {
        self.build
            .as_ref()
            .ok_or_else(|| format!("a '{}' event carries no build", self.event.name()))
    }
}

/// One HTTP request a reporter asks the master to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// How long one delivery attempt may take; the master's default when `None`.
    pub timeout: Option<Duration>,
    /// Identifies the message: the master delivers one request per key.
    pub idempotency_key: Option<String>,
}

impl OutgoingRequest {
    /// `POST url` with `body` of type `content_type`.
    pub fn post(url: &str, content_type: &str, body: impl Into<Vec<u8>>) -> OutgoingRequest {
        OutgoingRequest {
            method: "POST".into(),
            url: url.into(),
            headers: vec![("Content-Type".into(), content_type.into())],
            body: body.into(),
            timeout: None,
            idempotency_key: None,
        }
    }

    /// `POST url` with `value` as a JSON body.
    pub fn post_json(url: &str, value: &Value) -> OutgoingRequest {
        OutgoingRequest::post(url, "application/json", value.to_string())
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> OutgoingRequest {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the time one delivery attempt may take.
    pub fn timeout(mut self, timeout: Duration) -> OutgoingRequest {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the idempotency key, e.g. `build-42-finished`.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> OutgoingRequest {
        self.idempotency_key = Some(key.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn envelopes_and_wants_use_buildbots_event_names() {
        let envelope: Envelope =
            serde_json::from_value(json!({"event": "finished", "build": {"buildid": 1}})).unwrap();
        assert_eq!(envelope.event, Event::Finished);
        assert_eq!(envelope.build().unwrap()["buildid"], 1);
        let worker: Envelope = serde_json::from_value(json!({"event": "worker_missing"})).unwrap();
        assert_eq!(
            worker.build().unwrap_err(),
            "a 'worker_missing' event carries no build"
        );
        for event in Event::ALL {
            assert_eq!(serde_json::to_value(event).unwrap(), json!(event.name()));
        }
        assert!(serde_json::from_value::<Envelope>(json!({"event": "build_finished"})).is_err());
        assert_eq!(Wants::default().events, [Event::Finished]);
        let wants: Wants = serde_json::from_value(json!({"steps": true})).unwrap();
        assert_eq!(wants.events, [Event::Finished]);
        assert!(wants.steps);
    }
}
