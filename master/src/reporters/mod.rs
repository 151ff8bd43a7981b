//! Reporters: every build start and finish, and every buildset completed,
//! is offered to the configured reporters; those whose generator takes it get Buildbot's build dictionary,
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
use crate::events::{BuildInfo, Bus, Event as BusEvent};
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
    let workers = renderer.clone();
    let (journal_db, journal_bus) = (db.clone(), bus.clone());
    supervisor.spawn("reporters", Policy::Forever, move || {
        durable::follow(journal_db.clone(), journal_bus.clone(), renderer.clone())
    });
    let worker_bus = bus.clone();
    supervisor.spawn("reporters: workers", Policy::Forever, move || {
        workers.clone().follow_workers(worker_bus.subscribe())
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
        let event = match delivery.entry.kind {
            JournalKind::Started => Event::Started,
            JournalKind::Finished => Event::Finished,
        };
        let mut stored = self.render_build(&registry, &delivery, event).await?;
        if event == Event::Finished {
            stored.extend(self.render_buildset(&registry, &delivery).await?);
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

impl Renderer {
    /// The requests of the reporters that take this start or finish.
    async fn render_build(
        &self,
        registry: &Registry,
        delivery: &Delivery,
        event: Event,
    ) -> Result<Vec<NewOutgoing>, String> {
        let build = &delivery.build;
        let mut chosen: Vec<&Arc<ReporterInstance>> = registry
            .reporters
            .iter()
            .filter(|r| r.wants.events.contains(&event))
            .filter(|r| passes_filters(&r.config.generator, build))
            .collect();
        if chosen.is_empty() {
            return Ok(Vec::new());
        }
        let needs_previous = chosen.iter().any(|r| {
            r.wants.previous_build
                || (event == Event::Finished
                    && r.config.generator.modes.iter().any(|m| m.needs_previous()))
        });
        let previous = if needs_previous {
            self.previous_build(build).await?
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
        let logs = chosen.iter().any(|r| r.wants.logs);
        let (parts, logged) = self.parts(build, steps, logs).await?;
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
            let envelope = json!({ "event": event.name(), "build": dictionary });
            let what = format!("build {} ({})", build.buildid, event.name());
            let key = format!("journal-{}", delivery.entry.eventid);
            let source = Source {
                what: &what,
                key: &key,
                buildid: build.buildid,
                event,
            };
            let rendered = render(reporter, envelope, &self.host, source).await;
            if !rendered.is_empty() {
                tracing::info!(
                    correlation = %build.correlation(),
                    "reporter '{}': {} request(s) queued for {what}",
                    reporter.config.name,
                    rendered.len()
                );
            }
            stored.extend(rendered);
        }
        Ok(stored)
    }

    /// The requests of the reporters that want `buildset_complete`, when
    /// this finish completed the build's buildset. Every finish of the
    /// buildset may see it complete; the idempotency key keeps one request.
    async fn render_buildset(
        &self,
        registry: &Registry,
        delivery: &Delivery,
    ) -> Result<Vec<NewOutgoing>, String> {
        let wanting: Vec<&Arc<ReporterInstance>> = registry
            .reporters
            .iter()
            .filter(|r| r.wants.events.contains(&Event::BuildsetComplete))
            .collect();
        if wanting.is_empty() {
            return Ok(Vec::new());
        }
        let buildset = &delivery.build.buildset;
        let Some(done) = self
            .db
            .completed_buildset(buildset.bsid)
            .await
            .map_err(|e| format!("cannot read buildset {}: {e}", buildset.bsid))?
        else {
            return Ok(Vec::new());
        };
        let mut builds = Vec::new();
        for buildid in done.buildids {
            if buildid == delivery.build.buildid {
                builds.push(Arc::clone(&delivery.build));
            } else if let Some(build) = self
                .db
                .build_info(buildid)
                .await
                .map_err(|e| format!("cannot read build {buildid}: {e}"))?
            {
                builds.push(Arc::new(build));
            }
        }
        let results = done
            .results
            .and_then(Results::from_code)
            .unwrap_or(Results::Exception);
        let mut stored = Vec::new();
        for reporter in wanting {
            let generator = &reporter.config.generator;
            let taken: Vec<&Arc<BuildInfo>> = builds
                .iter()
                .filter(|build| passes_filters(generator, build))
                .collect();
            if taken.is_empty() || !generator.modes.iter().any(|m| m.wants(results, None)) {
                continue;
            }
            let mut dictionaries = Vec::new();
            for build in taken {
                let (parts, logged) = self
                    .parts(build, reporter.wants.steps, reporter.wants.logs)
                    .await?;
                let previous = if reporter.wants.previous_build {
                    self.previous_build(build).await?
                } else {
                    None
                };
                dictionaries.push(build_dictionary(
                    build,
                    &registry.buildbot_url,
                    logged.as_ref().unwrap_or(&parts),
                    &reporter.wants,
                    previous.as_ref(),
                ));
            }
            let first = &delivery.build;
            let envelope = json!({
                "event": Event::BuildsetComplete.name(),
                "buildset": {
                    "bsid": buildset.bsid,
                    "reason": buildset.reason,
                    "scheduler": buildset.scheduler,
                    "external_idstring": buildset.external_idstring,
                    "submitted_at": buildset.submitted_at,
                    "complete": true,
                    "complete_at": done.complete_at,
                    "results": results as i64,
                    "sourcestamps": first.to_json()["sourcestamps"],
                    "builds": dictionaries,
                },
            });
            let what = format!("buildset {}", buildset.bsid);
            let key = format!("buildset-{}", buildset.bsid);
            let source = Source {
                what: &what,
                key: &key,
                buildid: first.buildid,
                event: Event::BuildsetComplete,
            };
            stored.extend(render(reporter, envelope, &self.host, source).await);
        }
        Ok(stored)
    }

    async fn previous_build(&self, build: &BuildInfo) -> Result<Option<Value>, String> {
        self.db
            .previous_build(build.builder.builderid, build.number)
            .await
            .map_err(|e| format!("cannot read the previous build: {e}"))
    }

    /// The blamelist and (with `steps`) the steps of `build`; and, with
    /// `logs`, the same with each log's content.
    async fn parts(
        &self,
        build: &BuildInfo,
        steps: bool,
        logs: bool,
    ) -> Result<(ReportParts, Option<ReportParts>), String> {
        let parts = self
            .db
            .report_parts(build.buildid, build.buildset.bsid, steps || logs)
            .await
            .map_err(|e| format!("cannot read the build's changes and steps: {e}"))?;
        let logged = if logs {
            Some(ReportParts {
                blamelist: parts.blamelist.clone(),
                steps: with_log_contents(&self.db, &parts.steps).await?,
            })
        } else {
            None
        };
        Ok((parts, logged))
    }
}

/// What an envelope is about, for its requests' rows and log lines.
struct Source<'a> {
    /// E.g. `build 7 (finished)`.
    what: &'a str,
    /// Prefix of the idempotency keys of requests that bring none.
    key: &'a str,
    buildid: i64,
    event: Event,
}

/// `reporter`'s requests for `envelope`, rendered on the blocking pool. A
/// render error or a panic costs this event for this reporter only: builds
/// and the other reporters go on.
async fn render(
    reporter: &Arc<ReporterInstance>,
    envelope: Value,
    host: &HostServices,
    source: Source<'_>,
) -> Vec<NewOutgoing> {
    let (instance, host) = (Arc::clone(reporter), host.clone());
    let envelope = envelope.to_string();
    let rendered = tokio::task::spawn_blocking(move || instance.render(&envelope, &host))
        .await
        .unwrap_or_else(|e| Err(format!("the render task failed: {e}")));
    let requests = match rendered {
        Ok(requests) => requests,
        Err(message) => {
            tracing::warn!(
                plugin = %reporter.library.name,
                "reporter '{}' cannot render {}: {message}",
                reporter.config.name,
                source.what
            );
            return Vec::new();
        }
    };
    let mut stored = Vec::new();
    for (index, request) in requests.into_iter().enumerate() {
        match outgoing(reporter, request, &source, index) {
            Ok(new) => stored.push(new),
            Err(message) => tracing::warn!(
                plugin = %reporter.library.name,
                "reporter '{}': {message}",
                reporter.config.name
            ),
        }
    }
    stored
}

impl Renderer {
    /// Renders the workers that go missing or connect for the reporters
    /// that want those events. They come from the bus: a worker event the
    /// master was down for is not reported.
    async fn follow_workers(self, mut events: tokio::sync::broadcast::Receiver<BusEvent>) {
        loop {
            let (event, worker, connected) = match events.recv().await {
                Ok(BusEvent::WorkerMissing(worker)) => (Event::WorkerMissing, worker, false),
                Ok(BusEvent::WorkerConnected(worker)) => (Event::WorkerConnected, worker, true),
                Ok(_) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        "reporters missed {missed} event(s); worker reports may be lost"
                    );
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            let registry = self.registry.load_full();
            let wanting: Vec<&Arc<ReporterInstance>> = registry
                .reporters
                .iter()
                .filter(|r| r.wants.events.contains(&event))
                .collect();
            if wanting.is_empty() {
                continue;
            }
            let envelope = json!({
                "event": event.name(),
                "worker": {
                    "workerid": worker.workerid,
                    "name": worker.name,
                    "connected": connected,
                    "last_connection": worker.at,
                    "notify": registry.worker_notify.get(&worker.name).cloned().unwrap_or_default(),
                },
            });
            let what = format!("worker {} ({})", worker.name, event.name());
            let key = format!("worker-{}-{}-{}", worker.workerid, event.name(), worker.at);
            let mut stored = Vec::new();
            for reporter in wanting {
                let source = Source {
                    what: &what,
                    key: &key,
                    buildid: 0,
                    event,
                };
                stored.extend(render(reporter, envelope.clone(), &self.host, source).await);
            }
            if stored.is_empty() {
                continue;
            }
            match self.db.enqueue_outgoing(stored).await {
                Ok(_) => self.wake.notify_one(),
                Err(e) => tracing::error!("cannot store the reports of {what}: {e}"),
            }
        }
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
    source: &Source<'_>,
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
                .unwrap_or_else(|| format!("{}-{index}", source.key)),
        ),
        destination,
        method: request.method,
        url: request.url,
        headers: request.headers,
        body: request.body,
        timeout_ms: request.timeout.map(|t| t.as_millis() as u64),
        buildid: source.buildid,
        event: source.event.name().to_string(),
    })
}
