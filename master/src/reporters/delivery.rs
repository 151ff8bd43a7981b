//! Delivering the outbox: one request at a time per destination, in the
//! order they were stored, each attempt recorded before the next.
//!
//! A 2xx answer delivers a request. A connection failure, a timeout, 408,
//! 429 and 5xx are tried again after an exponential backoff with jitter (or
//! the `Retry-After` of a 429 or 503), until the reporter's `max_attempts`;
//! then the request is dead-lettered. Any other 4xx is final at once. A
//! request whose reporter is no longer configured is dropped with a log line.
//! Delivered and dropped requests are forgotten after a week; dead-lettered
//! ones stay until retried (JSON-RPC `retry`).

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, Notify};

use crate::db::{Attempt, Db, Outgoing};
use crate::host::HostServices;
use crate::registry::Registry;

/// How long one attempt may take unless the reporter asks otherwise, and at most.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_TIMEOUT: Duration = Duration::from_secs(300);

/// The first retry's delay; each next one doubles, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: f64 = 1.0;
const MAX_BACKOFF: f64 = 300.0;

/// The longest `Retry-After` taken as given.
const MAX_RETRY_AFTER: f64 = 3600.0;

/// How long the loop sleeps at most when nothing is due and nothing wakes it.
const IDLE: Duration = Duration::from_secs(60);

/// How often completed requests are looked for to forget.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// Delivered and dropped requests are forgotten after this long; the
/// dead-lettered stay.
const KEEP_COMPLETED: i64 = 7 * 86_400;

/// Delivers the outbox until the task is stopped, with the master's HTTP
/// client. `wake` is notified when requests are stored or one is retried.
pub async fn run(db: Db, registry: Arc<ArcSwap<Registry>>, host: HostServices, wake: Arc<Notify>) {
    let (done, mut finished) = mpsc::unbounded_channel::<String>();
    let mut busy: HashSet<String> = HashSet::new();
    let mut next_purge = Instant::now();
    loop {
        if Instant::now() >= next_purge {
            next_purge += PURGE_EVERY;
            match db.purge_outbox(crate::clock::now() - KEEP_COMPLETED).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!("forgot {n} completed report delivery(s)"),
                Err(e) => tracing::warn!("cannot forget completed report deliveries: {e}"),
            }
        }
        let now = crate::clock::now_precise();
        let next = match db.due_outgoing(now, busy.iter().cloned().collect()).await {
            Ok((due, next)) => {
                for outgoing in due {
                    let registry = registry.load();
                    let Some(reporter) = registry
                        .reporters
                        .iter()
                        .find(|r| r.config.name == outgoing.reporter)
                    else {
                        tracing::warn!(
                            "reporter '{}' is no longer configured: its delivery {} to {} is dropped",
                            outgoing.reporter,
                            outgoing.id,
                            outgoing.destination
                        );
                        if let Err(e) = db.record_attempt(outgoing.id, Attempt::Dropped).await {
                            tracing::error!("cannot record a dropped delivery: {e}");
                        }
                        continue;
                    };
                    busy.insert(outgoing.destination.clone());
                    let settings = Settings {
                        max_attempts: reporter.config.max_attempts,
                        debug: reporter.config.debug,
                    };
                    let (db, host, done) = (db.clone(), host.clone(), done.clone());
                    tokio::spawn(async move {
                        let destination = outgoing.destination.clone();
                        deliver(&db, host.client(), outgoing, settings).await;
                        let _ = done.send(destination);
                    });
                }
                next
            }
            Err(e) => {
                tracing::error!("cannot read the outbox: {e}");
                Some(now + 5.0)
            }
        };
        let sleep = next.map_or(IDLE, |at| {
            Duration::from_secs_f64(
                (at - crate::clock::now_precise()).clamp(0.0, IDLE.as_secs_f64()),
            )
        });
        tokio::select! {
            () = wake.notified() => {}
            Some(destination) = finished.recv() => {
                busy.remove(&destination);
            }
            () = tokio::time::sleep(sleep) => {}
        }
        // Free every destination whose attempt has ended meanwhile.
        while let Ok(destination) = finished.try_recv() {
            busy.remove(&destination);
        }
    }
}

/// What a reporter's configuration says about its deliveries.
#[derive(Debug, Clone, Copy)]
struct Settings {
    max_attempts: u32,
    /// Log each request and its answer.
    debug: bool,
}

/// Makes one attempt at `outgoing` and records its outcome.
async fn deliver(db: &Db, client: &reqwest::Client, outgoing: Outgoing, settings: Settings) {
    let max_attempts = settings.max_attempts;
    let attempt = attempt(client, &outgoing, settings.debug).await;
    let number = outgoing.attempts + 1;
    let recorded = match attempt {
        Outcome::Delivered(status) => {
            tracing::debug!(
                "reporter '{}': delivery {} answered {status}",
                outgoing.reporter,
                outgoing.id
            );
            Attempt::Delivered { status }
        }
        Outcome::Final { status, error } => {
            tracing::warn!(
                "reporter '{}': delivery {} to {} refused ({error}); not tried again",
                outgoing.reporter,
                outgoing.id,
                outgoing.destination
            );
            Attempt::Dead { status, error }
        }
        Outcome::Retry {
            status,
            error,
            after,
        } if number < max_attempts => {
            let delay = after.unwrap_or_else(|| backoff(outgoing.id, number));
            tracing::info!(
                "reporter '{}': delivery {} to {} failed ({error}), attempt {number} of {max_attempts}; next in {delay:.1} s",
                outgoing.reporter,
                outgoing.id,
                outgoing.destination
            );
            Attempt::Retry {
                status,
                error,
                next_at: crate::clock::now_precise() + delay,
            }
        }
        Outcome::Retry { status, error, .. } => {
            tracing::warn!(
                "reporter '{}': delivery {} to {} failed ({error}) {number} times: dead-lettered",
                outgoing.reporter,
                outgoing.id,
                outgoing.destination
            );
            Attempt::Dead { status, error }
        }
    };
    let reporter = [("reporter", outgoing.reporter.as_str())];
    match &recorded {
        Attempt::Delivered { .. } | Attempt::Dropped => {}
        Attempt::Retry { .. } => {
            crate::metrics::count("buildmaster_reporter_delivery_failures_total", &reporter)
        }
        Attempt::Dead { .. } => {
            crate::metrics::count("buildmaster_reporter_delivery_failures_total", &reporter);
            crate::metrics::count("buildmaster_reporter_dead_letters_total", &reporter);
        }
    }
    if let Err(e) = db.record_attempt(outgoing.id, recorded).await {
        tracing::error!("cannot record delivery {}: {e}", outgoing.id);
    }
}

/// How one attempt ended.
#[derive(Debug, PartialEq)]
enum Outcome {
    Delivered(u16),
    Retry {
        status: Option<u16>,
        error: String,
        /// `Retry-After`, in seconds.
        after: Option<f64>,
    },
    Final {
        status: Option<u16>,
        error: String,
    },
}

/// How much of a body a `debug` log line shows.
const DEBUG_BODY: usize = 2048;

/// `body` for a `debug` log line: as text, cut after [`DEBUG_BODY`] bytes.
fn shown_body(body: &[u8]) -> String {
    let shown = String::from_utf8_lossy(&body[..body.len().min(DEBUG_BODY)]).into_owned();
    if body.len() > DEBUG_BODY {
        format!("{shown}… ({} bytes)", body.len())
    } else {
        shown
    }
}

async fn attempt(client: &reqwest::Client, outgoing: &Outgoing, debug: bool) -> Outcome {
    let method = match reqwest::Method::from_bytes(outgoing.method.as_bytes()) {
        Ok(method) => method,
        Err(_) => {
            return Outcome::Final {
                status: None,
                error: format!("invalid HTTP method '{}'", outgoing.method),
            }
        }
    };
    let timeout = outgoing
        .timeout_ms
        .map_or(DEFAULT_TIMEOUT, Duration::from_millis)
        .min(MAX_TIMEOUT);
    let mut request = client
        .request(method, &outgoing.url)
        .timeout(timeout)
        .body(outgoing.body.clone());
    for (name, value) in &outgoing.headers {
        request = request.header(name, value);
    }
    let keyed = outgoing
        .headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("Idempotency-Key"));
    if let (Some(key), false) = (&outgoing.idempotency_key, keyed) {
        request = request.header("Idempotency-Key", key);
    }
    if debug {
        // Header values and the URL's query may be secrets: never shown.
        let names: Vec<&str> = outgoing.headers.iter().map(|(n, _)| n.as_str()).collect();
        tracing::info!(
            "reporter '{}': delivery {} attempt {}: {} {} (headers: {}; values not shown): {}",
            outgoing.reporter,
            outgoing.id,
            outgoing.attempts + 1,
            outgoing.method,
            crate::db::shown_url(&outgoing.url),
            names.join(", "),
            shown_body(&outgoing.body)
        );
    }
    match request.send().await {
        // The URL may carry a token (a query parameter): never in a message.
        Err(e) => Outcome::Retry {
            status: None,
            error: e.without_url().to_string(),
            after: None,
        },
        Ok(response) => {
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            if debug {
                let body = response.bytes().await.unwrap_or_default();
                tracing::info!(
                    "reporter '{}': delivery {} answered {status}: {}",
                    outgoing.reporter,
                    outgoing.id,
                    shown_body(&body)
                );
            }
            classify(status, retry_after.as_deref())
        }
    }
}

/// What an answer means for the request.
fn classify(status: u16, retry_after: Option<&str>) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered(status),
        408 | 429 | 500..=599 => Outcome::Retry {
            status: Some(status),
            error: format!("HTTP {status}"),
            after: match status {
                429 | 503 => retry_after
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .filter(|s| *s >= 0.0)
                    .map(|s| s.min(MAX_RETRY_AFTER)),
                _ => None,
            },
        },
        _ => Outcome::Final {
            status: Some(status),
            error: format!("HTTP {status}"),
        },
    }
}

/// The delay before attempt `number + 1` of request `id`: doubling from
/// [`FIRST_BACKOFF`] up to [`MAX_BACKOFF`], then between 75% and 125% of
/// that, so that requests that failed together do not all come back together.
fn backoff(id: i64, number: u32) -> f64 {
    let base =
        (FIRST_BACKOFF * 2f64.powi(number.saturating_sub(1).min(30) as i32)).min(MAX_BACKOFF);
    let spread = (RandomState::new().hash_one((id, number)) % 1000) as f64 / 1000.0;
    base * (0.75 + spread / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_delivered_retried_or_final() {
        assert_eq!(classify(204, None), Outcome::Delivered(204));
        assert_eq!(
            classify(503, Some("7")),
            Outcome::Retry {
                status: Some(503),
                error: "HTTP 503".into(),
                after: Some(7.0)
            }
        );
        assert_eq!(
            classify(500, Some("7")),
            Outcome::Retry {
                status: Some(500),
                error: "HTTP 500".into(),
                after: None
            }
        );
        assert!(matches!(
            classify(429, Some("soon")),
            Outcome::Retry { after: None, .. }
        ));
        assert!(matches!(classify(408, None), Outcome::Retry { .. }));
        assert!(matches!(
            classify(404, None),
            Outcome::Final {
                status: Some(404),
                ..
            }
        ));
        assert!(
            matches!(classify(429, Some("99999")), Outcome::Retry { after: Some(a), .. } if a == MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn debug_bodies_are_cut_after_their_limit() {
        assert_eq!(shown_body(b"{\"ok\": true}"), "{\"ok\": true}");
        let long = vec![b'x'; DEBUG_BODY + 10];
        let shown = shown_body(&long);
        assert!(shown.starts_with(&"x".repeat(DEBUG_BODY)));
        assert!(shown.ends_with(&format!("… ({} bytes)", DEBUG_BODY + 10)));
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_its_cap() {
        for number in 1..12 {
            let base = (2f64.powi(number as i32 - 1)).min(MAX_BACKOFF);
            let delay = backoff(7, number);
            assert!(
                delay >= base * 0.75 && delay <= base * 1.25,
                "{number}: {delay}"
            );
        }
    }
}
