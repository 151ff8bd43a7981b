//! `/change_hook/<dialect>`: Buildbot's change-hook dispatcher.
//!
//! Order of checks: method (405), authentication (401, unless the dialect opted
//! out of `change_hook_auth`), body size (413), dialect allow-list (400), then
//! the dialect plugin on the blocking pool, then the changes are committed
//! before the answer goes out.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use buildmaster_plugin_api::boundary::FfiHookResult;
use buildmaster_plugin_api::Request;
use bytes::Buf;
use futures_util::{Stream, StreamExt};
use warp::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use warp::path::FullPath;
use warp::Reply;

use super::{text, AppState};
use crate::changes::NewChange;
use crate::db::{Delivery, HookDelivery, Stored};
use crate::registry::{DialectSlot, Registry};

/// The `WWW-Authenticate` value of every 401 answer, as Buildbot sends it.
const CHALLENGE: &str = "basic realm=\"Protected area\"";

/// The body Buildbot sends for any failure that is not the sender's fault.
const INTERNAL_ERROR: &str = "Error processing changes.";

/// The dialect a change-hook path selects: the run of ASCII letters, digits and
/// `_` after `/change_hook/`; an empty run selects `base`.
pub fn dialect_name(path: &str) -> &str {
    let rest = path.strip_prefix("/change_hook").unwrap_or_default();
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    match &rest[..end] {
        "" => "base",
        name => name,
    }
}

/// Answers a change hook, counts it by dialect (configured ones only: any
/// path could be asked for) and status, and keeps it for the inspector.
#[allow(clippy::too_many_arguments)]
pub(super) async fn handle<S, B>(
    method: Method,
    path: FullPath,
    raw_query: String,
    headers: HeaderMap,
    remote: Option<super::ClientAddress>,
    body: S,
    state: AppState,
) -> warp::reply::Response
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let request = Incoming {
        method,
        path: path.as_str().to_owned(),
        raw_query,
        headers,
        remote: remote.map(|client| client.0),
        replay_of: None,
    };
    let (response, _) = answer_and_keep(request, body, &state).await;
    response
}

/// A request to a change hook: live, or the stored copy of one replayed.
pub(super) struct Incoming {
    pub method: Method,
    pub path: String,
    pub raw_query: String,
    pub headers: HeaderMap,
    pub remote: Option<SocketAddr>,
    /// The delivery a replay sends again: its change_hook_auth was checked
    /// when it came (a delivery it refused is not replayed), and its
    /// delivery id is not a duplicate.
    pub replay_of: Option<i64>,
}

/// The verdict of a delivery that failed inside the master: the why (a
/// plugin's or the database's own words) is in the log under the
/// delivery's correlation id, not in what anyone may read.
const FAILED_SEE_LOG: &str = "internal error; the master's log has why (same correlation id)";

/// The verdict of a delivery change_hook_auth refused: such a delivery is
/// kept for the inspector but never replayed (its copy has no credentials
/// to check again).
pub const AUTH_REFUSED: &str = "change_hook_auth credentials missing or wrong";

/// What the inspector keeps of a request, filled in as it is answered.
/// The body is copied only when the delivery is kept.
#[derive(Default)]
struct Trace {
    keeps_body: bool,
    verdict: Mutex<String>,
    body: Mutex<Vec<u8>>,
    changeids: Mutex<Vec<i64>>,
}

impl Trace {
    fn say(&self, verdict: impl Into<String>) {
        *self.verdict.lock().expect("trace") = verdict.into();
    }
}

/// Answers `request`, counts it and keeps it: the answer and the id of the
/// kept delivery (`None` for a dialect that is not configured, or when
/// keeping is off).
pub(super) async fn answer_and_keep<S, B>(
    request: Incoming,
    body: S,
    state: &AppState,
) -> (warp::reply::Response, Option<i64>)
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let registry = state.registry.load_full();
    let asked = dialect_name(&request.path).to_string();
    let known = registry.dialects.contains_key(&asked);
    // Authorization is change_hook_auth's, whose credentials are not kept
    // (a replay is authorized by the API), unless the dialect is not under
    // it and may check the header itself (Mattermost's token): then it is
    // part of the request a replay needs.
    let keeps_authorization = registry.auth.is_none() || registry.exempt_from_auth.contains(&asked);
    // A fresh id that follows the delivery into the logs: 16 hex digits.
    let correlation = super::auth::random_hex::<8>();
    // Only a delivery to a configured dialect is kept, and not at all with
    // `hook_deliveries_kept = 0`: then the request is not copied.
    let keeping = known && registry.hook_deliveries_kept > 0;
    let trace = Trace {
        keeps_body: keeping,
        ..Trace::default()
    };
    let received_at = crate::clock::now_precise();
    let kept = keeping.then(|| KeptRequest {
        method: request.method.to_string(),
        path: match request.raw_query.as_str() {
            "" => request.path.clone(),
            query => format!("{}?{query}", request.path),
        },
        headers: request
            .headers
            .iter()
            .filter(|(name, _)| keeps_authorization || *name != header::AUTHORIZATION)
            .map(header_pair)
            .collect::<Vec<_>>(),
        replay_of: request.replay_of,
    });
    let response = answer(request, body, state, &registry, &correlation, &trace).await;
    let status = response.status();
    let dialect = if known { asked.as_str() } else { "(unknown)" };
    crate::metrics::count(
        "buildmaster_hook_requests_total",
        &[("dialect", dialect), ("status", status.as_str())],
    );
    let Some(kept) = kept else {
        return (response, None);
    };
    // A replay's caller waits for the new delivery's id; anything else is
    // kept off the answer's path (the inspector may lag, the hook does not
    // wait), but a flood does not pile up copies of bodies in memory.
    let permit = match kept.replay_of {
        Some(_) => None,
        None => match PENDING_KEEPS.try_acquire() {
            Ok(permit) => Some(permit),
            Err(_) => {
                tracing::warn!(correlation = %correlation, "the inspector is behind; delivery not kept");
                crate::metrics::count(
                    "buildmaster_hook_deliveries_not_kept_total",
                    &[("dialect", dialect)],
                );
                return (response, None);
            }
        },
    };
    let record = HookDelivery {
        dialect: asked,
        received_at,
        correlation,
        method: kept.method,
        path: kept.path,
        headers: kept.headers,
        body: std::mem::take(&mut *trace.body.lock().expect("trace")),
        status: status.as_u16(),
        verdict: std::mem::take(&mut *trace.verdict.lock().expect("trace")),
        changeids: std::mem::take(&mut *trace.changeids.lock().expect("trace")),
        replay_of: kept.replay_of,
    };
    let (db, keep) = (state.db.clone(), registry.hook_deliveries_kept);
    let recorded = async move { db.record_delivery(record, keep).await };
    let Some(permit) = permit else {
        return match recorded.await {
            Ok(id) => (response, Some(id)),
            Err(e) => {
                tracing::error!("cannot keep a replayed delivery: {e}");
                (response, None)
            }
        };
    };
    tokio::spawn(async move {
        let _permit = permit;
        if let Err(e) = recorded.await {
            tracing::warn!("cannot keep a delivery for the inspector: {e}");
        }
    });
    (response, None)
}

/// What a request is kept as, taken before it is answered.
struct KeptRequest {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    replay_of: Option<i64>,
}

/// A header as text: its name and its value (bytes that are not UTF-8
/// replaced).
fn header_pair((name, value): (&header::HeaderName, &HeaderValue)) -> (String, String) {
    (
        name.to_string(),
        String::from_utf8_lossy(value.as_bytes()).into_owned(),
    )
}

/// How many deliveries may wait to be written for the inspector at once.
static PENDING_KEEPS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(256);

/// Answers `request` with `registry`, the one snapshot of the configuration
/// the whole request sees (a reload meanwhile does not mix generations).
async fn answer<S, B>(
    request: Incoming,
    body: S,
    state: &AppState,
    registry: &Registry,
    correlation: &str,
    trace: &Trace,
) -> warp::reply::Response
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf,
{
    let Incoming {
        method,
        path,
        raw_query,
        headers,
        remote,
        replay_of,
    } = request;
    let name = dialect_name(&path).to_string();
    let from = remote.map(|a| a.ip().to_string()).unwrap_or_default();
    let refuse = |status: StatusCode, reason: String| {
        tracing::info!(dialect = %name, status = status.as_u16(), from = %from, correlation = %correlation, "hook refused: {reason}");
        trace.say(reason.clone());
        text(status, reason)
    };
    if method != Method::GET && method != Method::POST {
        let mut reply = refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {method} is not allowed on change hooks; use POST or GET"),
        );
        reply
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, POST"));
        return reply;
    }
    let auth = registry
        .auth
        .as_ref()
        .filter(|_| !registry.exempt_from_auth.contains(&name) && replay_of.is_none());
    if let Some(credentials) = auth {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let ok = if credentials.is_slow() {
            let credentials = Arc::clone(credentials);
            tokio::task::spawn_blocking(move || credentials.check(authorization.as_deref()))
                .await
                .unwrap_or(false)
        } else {
            credentials.check(authorization.as_deref())
        };
        if !ok {
            // The log says why without echoing what was sent.
            tracing::info!(dialect = %name, status = 401, from = %from, correlation = %correlation, "hook refused: change_hook_auth credentials missing or wrong");
            trace.say(AUTH_REFUSED);
            let mut reply = text(StatusCode::UNAUTHORIZED, "Unauthorized");
            reply.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(CHALLENGE),
            );
            return reply;
        }
    }

    let limit = registry.max_body_size;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = match declared {
        Some(length) if length > limit => None,
        _ => read_body(body, limit).await,
    };
    let Some(body) = body else {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than the limit of {limit} bytes"),
        );
    };
    if trace.keeps_body {
        trace.body.lock().expect("trace").clone_from(&body);
    }

    let dialect = match registry.dialects.get(&name) {
        Some(DialectSlot::Ready(dialect)) => dialect.clone(),
        Some(DialectSlot::NotAPlugin) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!(
                "The dialect specified, '{name}', is not registered as a buildbot.webhook plugin"
            ),
            )
        }
        // Buildbot answers 400 when a handler cannot be created (e.g. GitHub's
        // strict mode without a secret); the cause stays in the master's log.
        Some(DialectSlot::Unavailable) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!(
                    "The dialect specified, '{name}', could not be set up; see the master's log"
                ),
            )
        }
        None => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("The dialect specified, '{name}', wasn't whitelisted in change_hook"),
            )
        }
    };

    // A replay is meant to be handled again.
    let window = if replay_of.is_some() {
        0
    } else {
        registry.delivery_id_window
    };
    let delivery = delivery(&headers, &name, window);
    if let Some(delivery) = &delivery {
        match state.db.delivery_seen(delivery.clone()).await {
            Ok(true) => {
                trace.say("delivery seen before; nothing stored");
                return redelivered(delivery);
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(dialect = %name, correlation = %correlation, "cannot check the delivery id: {e}");
                trace.say(FAILED_SEE_LOG);
                return text(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL_ERROR);
            }
        }
    }

    let request = Request {
        method: method.to_string(),
        path: path.clone(),
        query: form_urlencoded::parse(raw_query.as_bytes())
            .into_owned()
            .collect(),
        headers: headers.iter().map(header_pair).collect(),
        body,
        remote_addr: remote.map(|a| a.to_string()).unwrap_or_default(),
    }
    .into_ffi();
    let host = state.host.clone();
    let plugin_dialect = dialect.clone();
    let outcome = tokio::task::spawn_blocking(move || plugin_dialect.handle(&request, &host)).await;
    let result = match outcome {
        Ok(Ok(result)) => result,
        Ok(Err(error)) if (400..500).contains(&error.status) => {
            let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST);
            if is_signature_failure(&error.message) {
                crate::metrics::count(
                    "buildmaster_hook_signature_failures_total",
                    &[("dialect", &name)],
                );
            }
            return refuse(status, error.message.to_string());
        }
        Ok(Err(error)) => {
            tracing::error!(dialect = %name, plugin = %dialect.library.name, correlation = %correlation, "dialect failed: {}", error.message);
            trace.say(FAILED_SEE_LOG);
            return text(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL_ERROR);
        }
        Err(join_error) => {
            tracing::error!(dialect = %name, plugin = %dialect.library.name, correlation = %correlation, "dialect call failed: {join_error}");
            trace.say(FAILED_SEE_LOG);
            return text(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL_ERROR);
        }
    };
    let called = Called {
        name: &name,
        plugin: &dialect.library.name,
        correlation,
        trace,
    };
    store_and_answer(state, &called, result, delivery).await
}

/// Whether a dialect's refusal is about the request's secret, token or
/// signature: dialects answer those with 400, 401 or 403 as Buildbot does,
/// and name what failed.
fn is_signature_failure(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    ["signature", "secret", "token", "hash mismatch"]
        .iter()
        .any(|word| message.contains(word))
}

/// The headers providers put their delivery ids in.
const DELIVERY_HEADERS: &[&str] = &["x-github-delivery", "x-gitlab-event-uuid", "x-request-uuid"];

/// The delivery id of a request, when de-duplication is on and it carries one.
fn delivery(headers: &HeaderMap, dialect: &str, window: u64) -> Option<Delivery> {
    if window == 0 {
        return None;
    }
    let id = DELIVERY_HEADERS
        .iter()
        .find_map(|h| headers.get(*h)?.to_str().ok())
        .map(str::trim)
        .filter(|id| !id.is_empty())?;
    Some(Delivery {
        dialect: dialect.to_string(),
        id: id.to_string(),
        not_before: crate::clock::now() - window as i64,
    })
}

/// The answer to a delivery accepted before: success, and nothing stored.
fn redelivered(delivery: &Delivery) -> warp::reply::Response {
    tracing::info!(dialect = %delivery.dialect, "delivery {} was accepted before; nothing stored", delivery.id);
    text(StatusCode::OK, "no change found")
}

/// Reads the whole body, or `None` as soon as it exceeds `limit`.
async fn read_body<S, B>(body: S, limit: u64) -> Option<Vec<u8>>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let mut body = std::pin::pin!(body);
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.ok()?;
        if bytes.len() as u64 + chunk.remaining() as u64 > limit {
            return None;
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            bytes.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Some(bytes)
}

/// The dialect a request went to, and what follows it.
struct Called<'a> {
    name: &'a str,
    plugin: &'a str,
    correlation: &'a str,
    trace: &'a Trace,
}

async fn store_and_answer(
    state: &AppState,
    called: &Called<'_>,
    result: FfiHookResult,
    delivery: Option<Delivery>,
) -> warp::reply::Response {
    let Called {
        name,
        plugin,
        correlation,
        trace,
    } = *called;
    let mut changes: Vec<NewChange> = match serde_json::from_str(&result.changes_json) {
        Ok(changes) => changes,
        Err(e) => {
            tracing::error!(dialect = %name, plugin = %plugin, correlation = %correlation, "dialect returned malformed changes: {e}");
            trace.say(FAILED_SEE_LOG);
            return text(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL_ERROR);
        }
    };
    for change in &mut changes {
        change.correlation = Some(correlation.to_owned());
    }
    let count = changes.len();
    let delivery_id = delivery
        .as_ref()
        .map_or_else(|| "-".to_string(), |d| d.id.clone());
    // A delivery is recorded even when it brings no change, so that it is
    // answered the same way when it comes again.
    let stored = match delivery {
        Some(delivery) => state.db.add_delivered_changes(changes, delivery).await,
        None if count == 0 => Ok(Stored::Changes(Vec::new())),
        None => state.db.add_changes(changes).await.map(Stored::Changes),
    };
    match stored {
        Ok(Stored::Changes(ids)) => {
            tracing::info!(
                dialect = %name,
                delivery = %delivery_id,
                correlation = %correlation,
                "hook accepted: {count} change(s) stored{}",
                if ids.is_empty() { String::new() } else { format!(" (ids {})", id_ranges(&ids)) }
            );
            trace.changeids.lock().expect("trace").clone_from(&ids);
        }
        Ok(Stored::Duplicate) => {
            tracing::info!(dialect = %name, delivery = %delivery_id, correlation = %correlation, "hook accepted: delivery seen before; nothing stored");
            trace.say("delivery seen before; nothing stored");
            return text(StatusCode::OK, "no change found");
        }
        Err(e) => {
            tracing::error!(dialect = %name, correlation = %correlation, "storing {count} change(s) failed: {e}");
            trace.say(FAILED_SEE_LOG);
            return text(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL_ERROR);
        }
    }
    if let Some(response) = result.response.into_option() {
        trace.say(String::from_utf8_lossy(&response.body).into_owned());
        let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::OK);
        let mut reply = warp::reply::with_status(response.body.to_vec(), status).into_response();
        if let Ok(value) = HeaderValue::from_str(&response.content_type) {
            reply.headers_mut().insert(header::CONTENT_TYPE, value);
        }
        return reply;
    }
    let verdict = match count {
        0 => "no change found".to_owned(),
        n => format!("{n} change found"),
    };
    trace.say(verdict.clone());
    text(StatusCode::OK, verdict)
}

/// `1, 2, 3, 7` as `1-3, 7`: a push of thousands of commits stays one short line.
fn id_ranges(ids: &[i64]) -> String {
    let mut ranges: Vec<(i64, i64)> = Vec::new();
    for &id in ids {
        match ranges.last_mut() {
            Some((_, last)) if *last + 1 == id => *last = id,
            _ => ranges.push((id, id)),
        }
    }
    let text: Vec<String> = ranges
        .iter()
        .map(|&(first, last)| match last - first {
            0 => first.to_string(),
            1 => format!("{first}, {last}"),
            _ => format!("{first}-{last}"),
        })
        .collect();
    text.join(", ")
}

#[cfg(test)]
mod tests {
    use super::{dialect_name, id_ranges};

    #[test]
    fn stored_ids_are_logged_as_ranges() {
        assert_eq!(id_ranges(&[1]), "1");
        assert_eq!(id_ranges(&[41, 42, 43]), "41-43");
        assert_eq!(id_ranges(&[1, 2, 5, 7, 8, 9]), "1, 2, 5, 7-9");
        let many: Vec<i64> = (1..=2000).collect();
        assert_eq!(id_ranges(&many), "1-2000");
    }

    #[test]
    fn dialect_names_as_buildbot_parses_them() {
        for (path, name) in [
            ("/change_hook", "base"),
            ("/change_hook/", "base"),
            ("/change_hook/github", "github"),
            ("/change_hook/Base", "Base"),
            ("/change_hook/base-v2", "base"),
            ("/change_hook/base/extra/stuff", "base"),
            ("/change_hook/my_dialect2", "my_dialect2"),
            ("/change_hook/-x", "base"),
        ] {
            assert_eq!(dialect_name(path), name, "{path}");
        }
    }
}
