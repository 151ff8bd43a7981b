//! A dialect and a reporter built in two versions (the `v2` feature) that
//! differ only in their answer, for plugin upgrades by reload. The reporter
//! posts `{"version": ..., "buildid": ...}` to its `url` for each finished
//! build; with `buildsets = true`, it also posts `{"version": ..., "bsid":
//! ..., "results": ..., "buildids": [...]}` for each completed buildset;
//! with `workers = true`, `{"version": ..., "event": ..., "worker": ...,
//! "notify": [...]}` for each worker that goes missing or connects.
//! `?sleep_ms=N` holds the
//! request for N milliseconds, so a request can be in flight during an
//! upgrade. Every request stores one change whose comment names the version.

use std::time::Duration;

use buildmaster_plugin_api::options::NoOptions;
use buildmaster_plugin_api::reporter::{Envelope, Event};
use buildmaster_plugin_api::serde::Deserialize;
use buildmaster_plugin_api::serde_json::{json, Value};
use buildmaster_plugin_api::{
    export_plugin, Change, Dialect, HookError, HookOutcome, Host, OutgoingRequest, Reporter,
    Request, Response, Wants,
};

const VERSION: &str = if cfg!(feature = "v2") { "v2" } else { "v1" };

pub struct Versioned;

impl Dialect for Versioned {
    type Options = NoOptions;

    fn new(_name: &str, _options: NoOptions) -> Result<Self, String> {
        Ok(Versioned)
    }

    fn handle(&self, request: &Request, _host: &Host<'_>) -> Result<HookOutcome, HookError> {
        let args = request.args();
        if let Some(ms) = args.first("sleep_ms") {
            let ms = ms
                .parse()
                .map_err(|_| HookError::bad_request("sleep_ms must be a number"))?;
            std::thread::sleep(Duration::from_millis(ms));
        }
        let change = Change {
            comments: Some(format!("stored by {VERSION}")),
            ..Change::default()
        };
        Ok(HookOutcome {
            changes: vec![change],
            response: Some(Response {
                status: 200,
                content_type: "text/plain".into(),
                body: format!("answered by {VERSION}").into_bytes(),
            }),
        })
    }
}

#[derive(Deserialize)]
#[serde(crate = "buildmaster_plugin_api::serde")]
pub struct ReporterOptions {
    url: String,
    #[serde(default)]
    buildsets: bool,
    #[serde(default)]
    workers: bool,
}

pub struct VersionedReporter {
    options: ReporterOptions,
}

impl Reporter for VersionedReporter {
    type Options = ReporterOptions;

    fn new(_name: &str, options: ReporterOptions) -> Result<Self, String> {
        Ok(VersionedReporter { options })
    }

    fn wants(&self) -> Wants {
        let mut wants = Wants::default();
        if self.options.buildsets {
            wants.events.push(Event::BuildsetComplete);
        }
        if self.options.workers {
            wants
                .events
                .extend([Event::WorkerMissing, Event::WorkerConnected]);
        }
        wants
    }

    fn render(
        &self,
        envelope: &Envelope,
        _host: &Host<'_>,
    ) -> Result<Vec<OutgoingRequest>, String> {
        let url = &self.options.url;
        if let Some(worker) = &envelope.worker {
            let body = json!({
                "version": VERSION,
                "event": envelope.event.name(),
                "worker": worker["name"],
                "notify": worker["notify"],
            });
            return Ok(vec![OutgoingRequest::post_json(url, &body)]);
        }
        if let Some(buildset) = &envelope.buildset {
            let buildids: Vec<&Value> = buildset["builds"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|build| &build["buildid"])
                .collect();
            let body = json!({
                "version": VERSION,
                "bsid": buildset["bsid"],
                "results": buildset["results"],
                "buildids": buildids,
            });
            return Ok(vec![OutgoingRequest::post_json(url, &body)]);
        }
        let build = envelope.build()?;
        let body = json!({"version": VERSION, "buildid": build["buildid"]});
        Ok(vec![OutgoingRequest::post_json(url, &body)
            .idempotency_key(format!("build-{}", build["buildid"]))])
    }
}

export_plugin! {
    name: "versioned",
    version: "0.1.0",
    dialects: { "versioned" => Versioned },
    reporters: { "versioned" => VersionedReporter },
}
