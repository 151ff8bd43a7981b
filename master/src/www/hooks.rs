//! `/change_hook/<dialect>`: Buildbot's change-hook dispatcher.
//!
//! Order of checks: method (405), authentication (401, unless the dialect opted
//! out of `change_hook_auth`), body size (413), dialect allow-list (400), then
//! the dialect plugin on the blocking pool, then the changes are committed
//! before the answer goes out.

use std::net::SocketAddr;
use std::sync::Arc;

use buildmaster_plugin_api::boundary::FfiHookResult;
use buildmaster_plugin_api::Request;
use bytes::Buf;
use futures_util::{Stream, StreamExt};
use warp::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use warp::path::FullPath;
use warp::Reply;

use super::{text, AppState};
use crate::changes::NewChange;
use crate::db::{Delivery, Stored};
use crate::registry::DialectSlot;

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
    let remote: Option<SocketAddr> = remote.map(|client| client.0);
    let name = dialect_name(path.as_str()).to_string();
    let from = remote.map(|a| a.ip().to_string()).unwrap_or_default();
    let refuse = |status: StatusCode, reason: String| {
        tracing::info!(dialect = %name, status = status.as_u16(), from = %from, "hook refused: {reason}");
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
    // One snapshot for the whole request: a reload in between does not mix generations.
    let registry = state.registry.load_full();

    let auth = registry
        .auth
        .as_ref()
        .filter(|_| !registry.exempt_from_auth.contains(&name));
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
            tracing::info!(dialect = %name, status = 401, from = %from, "hook refused: change_hook_auth credentials missing or wrong");
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

    let delivery = delivery(&headers, &name, registry.delivery_id_window);
    if let Some(delivery) = &delivery {
        match state.db.delivery_seen(delivery.clone()).await {
            Ok(true) => return redelivered(delivery),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(dialect = %name, "cannot check the delivery id: {e}");
                return text(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL_ERROR);
            }
        }
    }

    let request = Request {
        method: method.to_string(),
        path: path.as_str().to_string(),
        query: form_urlencoded::parse(raw_query.as_bytes())
            .into_owned()
            .collect(),
        headers: headers
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
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
            return refuse(status, error.message.to_string());
        }
        Ok(Err(error)) => {
            tracing::error!(dialect = %name, plugin = %dialect.library.name, "dialect failed: {}", error.message);
            return text(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL_ERROR);
        }
        Err(join_error) => {
            tracing::error!(dialect = %name, plugin = %dialect.library.name, "dialect call failed: {join_error}");
            return text(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL_ERROR);
        }
    };
    store_and_answer(&state, &name, &dialect.library.name, result, delivery).await
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

async fn store_and_answer(
    state: &AppState,
    name: &str,
    plugin: &str,
    result: FfiHookResult,
    delivery: Option<Delivery>,
) -> warp::reply::Response {
    let changes: Vec<NewChange> = match serde_json::from_str(&result.changes_json) {
        Ok(changes) => changes,
        Err(e) => {
            tracing::error!(dialect = %name, plugin = %plugin, "dialect returned malformed changes: {e}");
            return text(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL_ERROR);
        }
    };
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
                "hook accepted: {count} change(s) stored{}",
                if ids.is_empty() { String::new() } else { format!(" (ids {})", id_ranges(&ids)) }
            );
        }
        Ok(Stored::Duplicate) => {
            tracing::info!(dialect = %name, delivery = %delivery_id, "hook accepted: delivery seen before; nothing stored");
            return text(StatusCode::OK, "no change found");
        }
        Err(e) => {
            tracing::error!(dialect = %name, "storing {count} change(s) failed: {e}");
            return text(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL_ERROR);
        }
    }
    if let Some(response) = result.response.into_option() {
        let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::OK);
        let mut reply = warp::reply::with_status(response.body.to_vec(), status).into_response();
        if let Ok(value) = HeaderValue::from_str(&response.content_type) {
            reply.headers_mut().insert(header::CONTENT_TYPE, value);
        }
        return reply;
    }
    match count {
        0 => text(StatusCode::OK, "no change found"),
        n => text(StatusCode::OK, format!("{n} change found")),
    }
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
