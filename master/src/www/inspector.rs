//! The webhook inspector's API: `GET /api/v2/hooks/deliveries` (the last
//! deliveries, newest first, with what came of them), one by id, and
//! JSON-RPC `replay` on one, which sends the master's own stored copy
//! through its dialect again.

use std::collections::HashMap;

use serde_json::{json, Value};
use warp::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use warp::Reply;

use super::hooks::{answer_and_keep, Incoming, AUTH_REFUSED};
use super::AppState;
use crate::api::Permit;
use crate::config::Action;

/// The most deliveries one listing returns.
const MAX_LIMIT: usize = 1000;

fn json_reply(status: StatusCode, body: &Value) -> warp::reply::Response {
    warp::reply::with_status(warp::reply::json(body), status).into_response()
}

/// `GET /api/v2/hooks/deliveries[/<id>]`
pub async fn list(
    id: Option<String>,
    query: HashMap<String, String>,
    state: AppState,
) -> warp::reply::Response {
    let id = match id.as_deref().map(str::parse::<i64>) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => {
            return json_reply(
                StatusCode::BAD_REQUEST,
                &json!({"error": "invalid delivery id"}),
            )
        }
    };
    let limit = match query.get("limit").map(|l| l.parse::<usize>()) {
        None => 50,
        Some(Ok(limit)) => limit.min(MAX_LIMIT),
        Some(Err(_)) => {
            return json_reply(StatusCode::BAD_REQUEST, &json!({"error": "invalid limit"}))
        }
    };
    let dialect = query.get("dialect").cloned();
    match state.db.hook_deliveries(dialect, id, limit).await {
        Ok(deliveries) if id.is_some() && deliveries.is_empty() => json_reply(
            StatusCode::NOT_FOUND,
            &json!({"error": "no delivery has that id (only the last ones are kept)"}),
        ),
        Ok(deliveries) => {
            let total = deliveries.len();
            json_reply(
                StatusCode::OK,
                &json!({"deliveries": deliveries, "meta": {"total": total}}),
            )
        }
        Err(e) => {
            tracing::error!("cannot read the kept deliveries: {e}");
            json_reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"error": "internal error"}),
            )
        }
    }
}

fn rpc(
    status: StatusCode,
    id: &Value,
    outcome: Result<Value, (i64, String)>,
) -> warp::reply::Response {
    let body = match outcome {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err((code, message)) => {
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
        }
    };
    json_reply(status, &body)
}

/// `POST /api/v2/hooks/deliveries/<id>` with JSON-RPC `replay`.
pub async fn replay(
    delivery: String,
    headers: HeaderMap,
    body: bytes::Bytes,
    state: AppState,
) -> warp::reply::Response {
    let authority = match super::caller(&state, &headers).await {
        Ok(authority) => authority,
        Err(refused) => return refused,
    };
    let json_body = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().unwrap_or_default().trim() == "application/json");
    let call: Value = match serde_json::from_slice(&body) {
        Ok(call @ Value::Object(_)) if json_body => call,
        _ => {
            let message = "send a JSON-RPC object as application/json".to_owned();
            return rpc(
                StatusCode::BAD_REQUEST,
                &Value::Null,
                Err((-32600, message)),
            );
        }
    };
    let id = call.get("id").cloned().unwrap_or(Value::Null);
    if call.get("method").and_then(Value::as_str) != Some("replay") {
        let message = "invalid method (deliveries take replay)".to_owned();
        return rpc(StatusCode::BAD_REQUEST, &id, Err((-32601, message)));
    }
    if let Err((status, why)) = authority.check(Action::Replay, None) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
        return rpc(status, &id, Err((-32001, why)));
    }
    let Ok(deliveryid) = delivery.parse::<i64>() else {
        let message = format!("invalid delivery id '{delivery}'");
        return rpc(StatusCode::BAD_REQUEST, &id, Err((-32602, message)));
    };
    let stored = match state.db.stored_delivery(deliveryid).await {
        Ok(Some(stored)) => stored,
        Ok(None) => {
            let message = format!("no delivery {deliveryid} is kept");
            return rpc(StatusCode::NOT_FOUND, &id, Err((-32602, message)));
        }
        Err(e) => {
            tracing::error!("cannot read delivery {deliveryid}: {e}");
            return rpc(
                StatusCode::INTERNAL_SERVER_ERROR,
                &id,
                Err((-32603, "internal error".into())),
            );
        }
    };
    if stored.verdict == AUTH_REFUSED {
        let message =
            format!("delivery {deliveryid} was refused by change_hook_auth; it cannot be replayed");
        return rpc(StatusCode::CONFLICT, &id, Err((-32602, message)));
    }
    tracing::info!(
        "delivery {deliveryid} ({}) replayed by {}",
        stored.dialect,
        authority.caller()
    );
    let (path, raw_query) = match stored.path.split_once('?') {
        Some((path, query)) => (path.to_owned(), query.to_owned()),
        None => (stored.path.clone(), String::new()),
    };
    let mut replayed_headers = HeaderMap::new();
    for (name, value) in &stored.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            replayed_headers.append(name, value);
        }
    }
    let request = Incoming {
        method: Method::from_bytes(stored.method.as_bytes()).unwrap_or(Method::POST),
        path,
        raw_query,
        headers: replayed_headers,
        remote: None,
        replay_of: Some(deliveryid),
    };
    let body = futures_util::stream::iter([Ok::<_, warp::Error>(bytes::Bytes::from(stored.body))]);
    let (response, kept) = answer_and_keep(request, body, &state).await;
    let status = response.status().as_u16();
    let replayed = match kept {
        Some(kept) => state
            .db
            .hook_deliveries(None, Some(kept), 1)
            .await
            .ok()
            .and_then(|mut found| found.pop())
            .unwrap_or(Value::Null),
        None => Value::Null,
    };
    rpc(
        StatusCode::OK,
        &id,
        Ok(json!({"status": status, "delivery": replayed})),
    )
}
