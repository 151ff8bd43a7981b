//! Reporters: every build start and finish is offered to the configured
//! reporters; those whose generator takes it get Buildbot's build dictionary,
//! their plugin renders it into requests, and the requests are stored in the
//! outbox in one transaction before anything is sent ([`delivery`] sends).
//!
//! Events come from the build journal through a durable consumer, so a
//! master that was down or busy still reports every build, and each request
//! is stored once: a request is keyed by its reporter and its idempotency key
//! (the plugin's, or one made of the journal entry when it gives none), and
//! rendering the same event again stores nothing new.

mod delivery;
mod dictionary;

use std::sync::Arc;

use arc_swap::ArcSwap;
use buildmaster_plugin_api::reporter::Event;
use buildmaster_plugin_api::OutgoingRequest;
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::db::{Db, JournalKind, NewOutgoing, ReportParts};
use crate::durable::{self, Consumer, Delivery};
use crate::events::Bus;
use crate::host::HostServices;
use crate::registry::{Registry, ReporterInstance};
use crate::results::Results;
use crate::tasks::{Policy, Supervisor};

use dictionary::{build_dictionary, passes_filters};

/// The journal cursor's name.
const CONSUMER: &str = "reporters";

/// How much of each log a reporter that wants logs gets: the end, where a
/// failure shows.
const LOG_CONTENT: usize = 64 * 1024;

/// Starts rendering build events and delivering the outbox, with the
/// reporters of whichever registry is live. Notifying `wake` makes the
/// delivery look at the outbox at once (after a retry).
pub fn start(
    db: &Db,
    bus: &Bus,
    registry: Arc<ArcSwap<Registry>>,
    host: HostServices,
    wake: Arc<Notify>,
    supervisor: &Supervisor,
) {
    let renderer = Renderer {
        db: db.clone(),
        registry: Arc::clone(&registry),
        host: host.clone(),
        wake: Arc::clone(&wake),
    };
    let (journal_db, journal_bus) = (db.clone(), bus.clone());
    supervisor.spawn("reporters", Policy::Forever, move || {
        durable::follow(journal_db.clone(), journal_bus.clone(), renderer.clone())
    });
    let outbox_db = db.clone();
    supervisor.spawn("outbox", Policy::Forever, move || {
        delivery::run(
            outbox_db.clone(),
            Arc::clone(&registry),
            host.clone(),
            Arc::clone(&wake),
        )
    });
}

/// Turns journal entries into stored requests.
#[derive(Clone)]
struct Renderer {
    db: Db,
    registry: Arc<ArcSwap<Registry>>,
    host: HostServices,
    wake: Arc<Notify>,
}

impl Consumer for Renderer {
    fn name(&self) -> &str {
        CONSUMER
    }

    async fn handle(&mut self, delivery: Delivery) -> Result<(), String> {
        let registry = self.registry.load_full();
        let build = &delivery.build;
        let event = match delivery.entry.kind {
            JournalKind::Started => Event::Started,
            JournalKind::Finished => Event::Finished,
        };
        let mut chosen: Vec<&Arc<ReporterInstance>> = registry
            .reporters
            .iter()
            .filter(|r| r.wants.events.contains(&event))
            .filter(|r| passes_filters(&r.config.generator, build))
            .collect();
        if chosen.is_empty() {
            return Ok(());
        }
        let needs_previous = chosen.iter().any(|r| {
            r.wants.previous_build
                || (event == Event::Finished
                    && r.config.generator.modes.iter().any(|m| m.needs_previous()))
        });
        let previous = if needs_previous {
            self.db
                .previous_build(build.builder.builderid, build.number)
                .await
                .map_err(|e| format!("cannot read the previous build: {e}"))?
        } else {
            None
        };
        if event == Event::Finished {
            let results = build.results.unwrap_or(Results::Exception);
            let previous_results = previous
                .as_ref()
                .and_then(|p| p["results"].as_i64())
                .and_then(Results::from_code);
            chosen.retain(|r| {
                r.config
                    .generator
                    .modes
                    .iter()
                    .any(|mode| mode.wants(results, previous_results))
            });
        }
        let steps = chosen.iter().any(|r| r.wants.steps);
        let parts = self
            .db
            .report_parts(build.buildid, build.buildset.bsid, steps)
            .await
            .map_err(|e| format!("cannot read the build's changes and steps: {e}"))?;
        let logged = if chosen.iter().any(|r| r.wants.logs) {
            Some(ReportParts {
                blamelist: parts.blamelist.clone(),
                steps: with_log_contents(&self.db, &parts.steps).await?,
            })
        } else {
            None
        };
        let mut stored = Vec::new();
        for reporter in chosen {
            let parts = match &logged {
                Some(logged) if reporter.wants.logs => logged,
                _ => &parts,
            };
            let dictionary = build_dictionary(
                build,
                &registry.buildbot_url,
                parts,
                &reporter.wants,
                previous.as_ref(),
            );
            let envelope = json!({ "event": event.name(), "build": dictionary }).to_string();
            let (instance, host) = (Arc::clone(reporter), self.host.clone());
            let rendered = tokio::task::spawn_blocking(move || instance.render(&envelope, &host))
                .await
                .unwrap_or_else(|e| Err(format!("the render task failed: {e}")));
            match rendered {
                Ok(requests) => {
                    for (index, request) in requests.into_iter().enumerate() {
                        match outgoing(reporter, request, &delivery, event, index) {
                            Ok(new) => stored.push(new),
                            Err(message) => tracing::warn!(
                                plugin = %reporter.library.name,
                                "reporter '{}': {message}",
                                reporter.config.name
                            ),
                        }
                    }
                }
                // This event, for this reporter only: builds and the other
                // reporters go on.
                Err(message) => tracing::warn!(
                    plugin = %reporter.library.name,
                    "reporter '{}' cannot render build {} ({}): {message}",
                    reporter.config.name,
                    build.buildid,
                    event.name()
                ),
            }
        }
        if !stored.is_empty() {
            self.db
                .enqueue_outgoing(stored)
                .await
                .map_err(|e| format!("cannot store the reports: {e}"))?;
            self.wake.notify_one();
        }
        Ok(())
    }
}

/// `steps` with each log's `content`: its last [`LOG_CONTENT`] bytes, as
/// stored (stream logs keep their channel letter at the start of each line).
async fn with_log_contents(db: &Db, steps: &[Value]) -> Result<Vec<Value>, String> {
    let mut logids = Vec::new();
    for (step, value) in steps.iter().enumerate() {
        if let Some(logs) = value["logs"].as_array() {
            for (index, log) in logs.iter().enumerate() {
                if let Some(logid) = log["logid"].as_i64() {
                    logids.push((step, index, logid));
                }
            }
        }
    }
    let mut steps = steps.to_vec();
    for (step, index, logid) in logids {
        let mut lines = db.log_lines(logid, 0, None);
        let mut content = String::new();
        while let Some(piece) = lines
            .next()
            .await
            .map_err(|e| format!("cannot read log {logid}: {e}"))?
        {
            content.push_str(&piece);
            if content.len() > 2 * LOG_CONTENT {
                content = tail(&content, LOG_CONTENT).to_string();
            }
        }
        steps[step]["logs"][index]["content"] = json!(tail(&content, LOG_CONTENT));
    }
    Ok(steps)
}

/// The last `bytes` bytes of `text`, or a little less, to start on a
/// character.
fn tail(text: &str, bytes: usize) -> &str {
    let mut start = text.len().saturating_sub(bytes);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// The outbox row of one rendered request.
fn outgoing(
    reporter: &ReporterInstance,
    request: OutgoingRequest,
    delivery: &Delivery,
    event: Event,
    index: usize,
) -> Result<NewOutgoing, String> {
    let url = reqwest::Url::parse(&request.url)
        .map_err(|e| format!("a request to an invalid URL is not sent: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "a request to a {} URL is not sent: only http and https are",
            url.scheme()
        ));
    }
    let destination = format!(
        "{}://{}:{}",
        url.scheme(),
        url.host_str().unwrap_or_default(),
        url.port_or_known_default().unwrap_or_default()
    );
    Ok(NewOutgoing {
        reporter: reporter.config.name.clone(),
        idempotency_key: Some(
            request
                .idempotency_key
                .unwrap_or_else(|| format!("journal-{}-{index}", delivery.entry.eventid)),
        ),
        destination,
        method: request.method,
        url: request.url,
        headers: request.headers,
        body: request.body,
        timeout_ms: request.timeout.map(|t| t.as_millis() as u64),
        buildid: delivery.build.buildid,
        event: event.name().to_string(),
    })
}
