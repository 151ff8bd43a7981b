//! `GET /ui/events/builds/<id>`: a running build's news as Server-Sent
//! Events, read from what the master stores (every 200 ms while a step
//! runs) twice a second: `log` with the new lines of a log the page shows,
//! `steps` when a step or a log appears or a step ends (the page reloads),
//! `done` when the build has finished. The stream also ends when its server
//! stops (a master stopping does not wait for open pages); the page then
//! follows again from the lines it has.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};
use tokio::sync::watch;
use warp::sse::Event;
use warp::Reply;

use super::LOG_TAIL;
use crate::db::{self, Db, LogSummary};
use crate::www::AppState;

/// How often a running build is looked at.
const POLL: Duration = Duration::from_millis(500);

/// At most `limit` lines of `log` from line `first` on: `{stream, text}`
/// each (`o` output, `e` error, `h` header).
pub async fn log_lines(
    db: &Db,
    log: &LogSummary,
    first: usize,
    limit: usize,
) -> Result<Vec<Value>, db::Error> {
    let mut shown = Vec::new();
    if limit == 0 {
        return Ok(shown);
    }
    let last = (first + limit - 1) as i64;
    let mut pieces = db.log_lines(log.logid, first as i64, Some(last));
    while let Some(piece) = pieces.next().await? {
        for line in piece.lines() {
            // A stream log (`s`) starts each line with its channel.
            let (stream, text) = match (log.kind.as_str(), line.as_bytes().first()) {
                ("s", Some(channel @ (b'o' | b'e' | b'h'))) => (*channel as char, &line[1..]),
                _ => ('o', line),
            };
            shown.push(json!({"stream": stream.to_string(), "text": text}));
        }
    }
    Ok(shown)
}

/// What the page knows of the build: the lines of each log it shows, and
/// the steps with their state.
struct Watch {
    db: Db,
    buildid: i64,
    lines: HashMap<i64, usize>,
    shape: Option<String>,
    poll: tokio::time::Interval,
    over: bool,
}

impl Watch {
    /// The events since the last look; `None` once the build is over (or
    /// gone, or unreadable: the page follows again).
    async fn next(&mut self) -> Option<Vec<Event>> {
        if self.over {
            return None;
        }
        self.poll.tick().await;
        let progress = match self.db.build_progress(self.buildid).await {
            Ok(progress) => progress?,
            Err(e) => {
                tracing::warn!("cannot follow build {}: {e}", self.buildid);
                return None;
            }
        };
        // The page's structure: the steps, their ends, and their logs.
        let shape: Vec<String> = progress
            .steps
            .iter()
            .map(|(stepid, complete)| format!("{stepid}:{complete}"))
            .chain(progress.logs.iter().map(|log| format!("log {}", log.logid)))
            .collect();
        let shape = shape.join(",");
        let known_logs = progress
            .logs
            .iter()
            .all(|log| self.lines.contains_key(&log.logid));
        let mut events = Vec::new();
        for log in &progress.logs {
            let Some(&seen) = self.lines.get(&log.logid) else {
                continue;
            };
            if log.num_lines > seen {
                // A long way behind, the page catches up a page a poll.
                let lines = match log_lines(&self.db, log, seen, LOG_TAIL).await {
                    Ok(lines) => lines,
                    Err(e) => {
                        tracing::warn!("cannot follow log {}: {e}", log.logid);
                        return None;
                    }
                };
                let total = seen + lines.len();
                self.lines.insert(log.logid, total);
                let data = json!({"logid": log.logid, "lines": lines, "total": total});
                events.push(Event::default().event("log").data(data.to_string()));
            }
        }
        // The lines first; then the end, or a new shape the page must reload for.
        if progress.complete {
            events.push(Event::default().event("done").data("{}"));
            self.over = true;
            return Some(events);
        }
        match &self.shape {
            None if known_logs => self.shape = Some(shape),
            Some(before) if *before == shape => {}
            _ => {
                events.push(Event::default().event("steps").data("{}"));
                self.over = true;
            }
        }
        Some(events)
    }
}

/// The event stream of build `id`; `logs` is what the page shows, as
/// `LOGID:LINES,…`. It ends when `closed` says its server stops.
pub async fn build_events(
    id: i64,
    query: HashMap<String, String>,
    state: AppState,
    mut closed: watch::Receiver<bool>,
) -> warp::reply::Response {
    match state.db.build_progress(id).await {
        Ok(Some(_)) => {}
        Ok(None) => return super::not_found("no such build"),
        Err(e) => return super::db_failed("a build", e),
    }
    let lines: HashMap<i64, usize> = query
        .get("logs")
        .map(|known| {
            known
                .split(',')
                .filter_map(|pair| {
                    let (logid, lines) = pair.split_once(':')?;
                    Some((logid.parse().ok()?, lines.parse().ok()?))
                })
                .collect()
        })
        .unwrap_or_default();
    let watch = Watch {
        db: state.db.clone(),
        buildid: id,
        lines,
        shape: None,
        // The first tick is at once.
        poll: tokio::time::interval(POLL),
        over: false,
    };
    let events = stream::unfold(watch, |mut watch| async move {
        let events = watch.next().await?;
        Some((
            stream::iter(events.into_iter().map(Ok::<_, Infallible>)),
            watch,
        ))
    })
    .flatten()
    .take_until(async move {
        let _ = closed.wait_for(|closing| *closing).await;
    });
    warp::sse::reply(warp::sse::keep_alive().stream(events)).into_response()
}
