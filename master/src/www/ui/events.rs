//! `GET /ui/events/builds/<id>`: a running build's news as Server-Sent
//! Events, read from what the master stores (every 200 ms while a step
//! runs) twice a second: `log` with the new lines of a log the page shows,
//! `steps` when a step or a log appears or a step ends (the page reloads),
//! `done` when the build has finished.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};
use warp::sse::Event;
use warp::Reply;

use super::{api, list, LOG_TAIL};
use crate::www::AppState;

/// How often a running build is looked at.
const POLL: Duration = Duration::from_millis(500);

/// At most `limit` lines of log `logid` from line `offset` on:
/// `{stream, text}` each (`o` output, `e` error, `h` header).
pub async fn log_lines(state: &AppState, logid: i64, offset: usize, limit: usize) -> Vec<Value> {
    let contents = api(
        state,
        &format!("logs/{logid}/contents?offset={offset}&limit={limit}"),
    )
    .await;
    let text = list(contents, "logchunks")
        .first()
        .and_then(|chunk| chunk["content"].as_str().map(str::to_owned))
        .unwrap_or_default();
    text.lines()
        .map(|line| {
            let mut chars = line.chars();
            let stream = match chars.next() {
                Some(c @ ('o' | 'e' | 'h')) => c.to_string(),
                _ => "o".to_owned(),
            };
            json!({"stream": stream, "text": chars.as_str()})
        })
        .collect()
}

/// What the page knows of the build: the lines of each log it shows, and
/// the steps with their state.
struct Watch {
    state: AppState,
    buildid: i64,
    lines: HashMap<i64, usize>,
    steps: Option<String>,
    first: bool,
    over: bool,
}

impl Watch {
    /// The events since the last look; `None` once the build is over.
    async fn next(&mut self) -> Option<Vec<Event>> {
        if self.over {
            return None;
        }
        if !self.first {
            tokio::time::sleep(POLL).await;
        }
        self.first = false;
        let build = list(
            api(&self.state, &format!("builds/{}", self.buildid)).await,
            "builds",
        )
        .pop()?;
        let steps = list(
            api(&self.state, &format!("builds/{}/steps", self.buildid)).await,
            "steps",
        );
        let mut events = Vec::new();
        let mut logs: BTreeMap<i64, usize> = BTreeMap::new();
        for step in &steps {
            for log in list(
                api(&self.state, &format!("steps/{}/logs", step["stepid"])).await,
                "logs",
            ) {
                let logid = log["logid"].as_i64().unwrap_or_default();
                logs.insert(
                    logid,
                    log["num_lines"].as_u64().unwrap_or_default() as usize,
                );
            }
        }
        // The page's structure: the steps, their ends, and their logs.
        let shape: Vec<String> = steps
            .iter()
            .map(|s| format!("{}:{}", s["stepid"], s["complete"]))
            .chain(logs.keys().map(|id| format!("log {id}")))
            .collect();
        let shape = shape.join(",");
        let known_logs = logs.keys().all(|id| self.lines.contains_key(id));
        for (&logid, &total) in &logs {
            let Some(&seen) = self.lines.get(&logid) else {
                continue;
            };
            if total > seen {
                // A long way behind, the page catches up a page a poll.
                let lines = log_lines(&self.state, logid, seen, LOG_TAIL).await;
                let total = seen + lines.len();
                self.lines.insert(logid, total);
                let data = json!({"logid": logid, "lines": lines, "total": total});
                events.push(Event::default().event("log").data(data.to_string()));
            }
        }
        // The lines first; then the end, or a new shape the page must reload for.
        if build["complete"] == true {
            events.push(Event::default().event("done").data("{}"));
            self.over = true;
            return Some(events);
        }
        match &self.steps {
            None if known_logs => self.steps = Some(shape),
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
/// `LOGID:LINES,…`.
pub async fn build_events(
    id: i64,
    query: HashMap<String, String>,
    state: AppState,
) -> warp::reply::Response {
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
        state,
        buildid: id,
        lines,
        steps: None,
        first: true,
        over: false,
    };
    let events = stream::unfold(watch, |mut watch| async move {
        let events = watch.next().await?;
        Some((
            stream::iter(events.into_iter().map(Ok::<_, Infallible>)),
            watch,
        ))
    })
    .flatten();
    warp::sse::reply(warp::sse::keep_alive().stream(events)).into_response()
}
