//! The HTTP side: change hooks, the REST API, the web UI and `/metrics`.
//!
//! Handlers return replies for every domain outcome (Buildbot's exact texts and
//! statuses); warp rejections are kept for "no route here", which one `recover`
//! turns into a JSON 404.

mod auth;
mod hooks;
mod inspector;
mod login;
mod metrics;
mod server;
mod ui;

pub use auth::Sessions;
pub use server::{serve, ClientAddress};

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use crate::api::{ApiResponse, Body, Engine};
use crate::db::Db;
use crate::host::HostServices;
use crate::registry::Registry;
use crate::telegram::{self, WebhookAnswer, WebhookSlot};

/// What every request handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The live configuration generation; each request loads it once.
    pub registry: Arc<ArcSwap<Registry>>,
    pub db: Db,
    pub host: HostServices,
    pub engine: Engine,
    /// Where Telegram's webhook deliveries go.
    pub telegram: WebhookSlot,
    /// The UI's logged-in sessions; they outlive reloads.
    pub sessions: Arc<Sessions>,
}

/// A plain-text reply.
fn text(status: StatusCode, body: impl Into<String>) -> warp::reply::Response {
    let mut response = warp::reply::with_status(body.into(), status).into_response();
    response.headers_mut().insert(
        warp::http::header::CONTENT_TYPE,
        warp::http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Every route of the master; `closed` says when the server stops (the
/// UI's event streams end then).
pub fn routes(
    state: AppState,
    closed: watch::Receiver<bool>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Infallible> + Clone {
    let pages = ui_routes(state.clone(), closed);
    let with_state = warp::any().map(move || state.clone());

    let change_hook = warp::path("change_hook")
        .and(warp::method())
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<ClientAddress>())
        .and(warp::body::stream())
        .and(with_state.clone())
        .then(hooks::handle);

    let deliveries = warp::path!("api" / "v2" / "hooks" / "deliveries")
        .and(warp::get())
        .map(|| None)
        .or(warp::path!("api" / "v2" / "hooks" / "deliveries" / String)
            .and(warp::get())
            .map(Some))
        .unify()
        .and(warp::query::<HashMap<String, String>>())
        .and(with_state.clone())
        .then(inspector::list);
    let replay = warp::path!("api" / "v2" / "hooks" / "deliveries" / String)
        .and(warp::post())
        .and(warp::header::headers_cloned())
        .and(warp::body::content_length_limit(MAX_RPC_BODY))
        .and(warp::body::bytes())
        .and(with_state.clone())
        .then(inspector::replay);

    let api_get = warp::path!("api" / "v2" / ..)
        .and(warp::get())
        .and(warp::path::tail())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::optional::<String>("accept"))
        .and(with_state.clone())
        .and_then(api_engine_get);

    let telegram_webhook = warp::path!("telegram" / String)
        .and(warp::post())
        .and(warp::header::optional::<String>(
            "x-telegram-bot-api-secret-token",
        ))
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::body::content_length_limit(MAX_UPDATE_BODY))
        .and(warp::body::bytes())
        .and(with_state.clone())
        .and_then(telegram_update);

    let api_post = warp::path!("api" / "v2" / ..)
        .and(warp::post())
        .and(warp::path::tail())
        .and(warp::header::headers_cloned())
        .and(warp::body::content_length_limit(MAX_RPC_BODY))
        .and(warp::body::bytes())
        .and(with_state.clone())
        .and_then(api_engine_post);

    let login_form = warp::path!("auth" / "login")
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .and(with_state.clone())
        .then(login::form);
    let login_submit = warp::path!("auth" / "login")
        .and(warp::post())
        .and(warp::body::content_length_limit(MAX_FORM_BODY))
        .and(warp::body::form::<HashMap<String, String>>())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<ClientAddress>())
        .and(with_state.clone())
        .then(login::submit);
    let logout = warp::path!("auth" / "logout")
        .and(warp::post())
        .and(warp::body::content_length_limit(MAX_FORM_BODY))
        .and(
            warp::body::form::<HashMap<String, String>>()
                .or(warp::any().map(HashMap::new))
                .unify(),
        )
        .and(warp::header::headers_cloned())
        .and(with_state.clone())
        .then(login::logout);
    let whoami = warp::path!("auth" / "user")
        .and(warp::get())
        .and(warp::header::headers_cloned())
        .and(with_state.clone())
        .then(login::user);
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(warp::header::headers_cloned())
        .and(with_state)
        .then(metrics::scrape);

    pages
        .or(change_hook)
        .unify()
        .or(deliveries)
        .unify()
        .or(replay)
        .unify()
        .or(api_get)
        .unify()
        .or(api_post)
        .unify()
        .or(telegram_webhook)
        .unify()
        .or(login_form)
        .unify()
        .or(login_submit)
        .unify()
        .or(logout)
        .unify()
        .or(whoami)
        .unify()
        .or(metrics)
        .unify()
        .recover(not_found)
        .unify()
}

/// The web UI's pages, assets and event streams. Each route is boxed: a
/// long chain of unboxed filters makes types the compiler takes very long
/// to check.
fn ui_routes(
    state: AppState,
    closed: watch::Receiver<bool>,
) -> BoxedFilter<(warp::reply::Response,)> {
    let with_state = warp::any().map(move || state.clone()).boxed();
    let page = |path: BoxedFilter<()>| {
        path.and(warp::get())
            .and(warp::header::headers_cloned())
            .and(with_state.clone())
            .boxed()
    };
    let home = warp::path::end()
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::header::headers_cloned())
        .and(with_state.clone())
        .then(ui::builders)
        .boxed();
    let builder = warp::path!("builders" / i64)
        .and(warp::get())
        .and(warp::header::headers_cloned())
        .and(with_state.clone())
        .then(ui::builder)
        .boxed();
    let build = warp::path!("builds" / i64)
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::header::headers_cloned())
        .and(with_state.clone())
        .then(ui::build)
        .boxed();
    let changes = page(warp::path!("changes").boxed())
        .then(ui::changes)
        .boxed();
    let workers = page(warp::path!("workers").boxed())
        .then(ui::workers)
        .boxed();
    let hooks = page(warp::path!("hooks").boxed()).then(ui::hooks).boxed();
    let status = page(warp::path!("status").boxed()).then(ui::status).boxed();
    let events = warp::path!("ui" / "events" / "builds" / i64)
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .and(with_state.clone())
        .and(warp::any().map(move || closed.clone()))
        .then(ui::build_events)
        .boxed();
    let assets = warp::path!("ui" / String)
        .and(warp::get())
        .then(ui::serve_asset)
        .boxed();
    let mut routes = home;
    for route in [
        builder, build, changes, workers, hooks, status, events, assets,
    ] {
        routes = routes.or(route).unify().boxed();
    }
    routes
}

/// The largest JSON-RPC request body accepted.
const MAX_RPC_BODY: u64 = 1024 * 1024;

/// The largest login or logout form accepted.
const MAX_FORM_BODY: u64 = 16 * 1024;

/// The largest Telegram update accepted.
const MAX_UPDATE_BODY: u64 = 1024 * 1024;

/// A Telegram webhook delivery: answered at once, handled after.
async fn telegram_update(
    key: String,
    secret: Option<String>,
    content_type: Option<String>,
    body: bytes::Bytes,
    state: AppState,
) -> Result<warp::reply::Response, Rejection> {
    let answer = telegram::take_update(
        &state.telegram,
        &key,
        secret.as_deref(),
        content_type.as_deref(),
        &body,
    );
    Ok(match answer {
        WebhookAnswer::Accepted => text(StatusCode::OK, ""),
        WebhookAnswer::NotFound => return Err(warp::reject::not_found()),
        WebhookAnswer::Forbidden => text(
            StatusCode::FORBIDDEN,
            "the X-Telegram-Bot-Api-Secret-Token header is missing or wrong",
        ),
        WebhookAnswer::BadRequest(message) => text(StatusCode::BAD_REQUEST, message),
    })
}

async fn api_engine_get(
    tail: warp::path::Tail,
    query: String,
    accept: Option<String>,
    state: AppState,
) -> Result<warp::reply::Response, Rejection> {
    let path: Vec<&str> = tail.as_str().trim_end_matches('/').split('/').collect();
    let query: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    match state.engine.get(&path, &query, accept.as_deref()).await {
        Some(response) => Ok(api_reply(response)),
        None => Err(warp::reject::not_found()),
    }
}

/// Who sends a state-changing request, with what they may do; or the
/// answer for a caller who cannot prove who they are (401) or a session
/// without its CSRF token (403).
async fn caller(
    state: &AppState,
    headers: &warp::http::HeaderMap,
) -> Result<auth::Authority, warp::reply::Response> {
    let registry = state.registry.load_full();
    let identity = match auth::identify(&registry, &state.sessions, headers).await {
        Ok(identity) => identity,
        Err(why) => return Err(text(StatusCode::UNAUTHORIZED, format!("{why}\n"))),
    };
    let csrf = headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
    if !auth::csrf_ok(&identity, csrf) {
        return Err(text(
            StatusCode::FORBIDDEN,
            "missing or wrong X-CSRF-Token for this session\n",
        ));
    }
    Ok(auth::Authority {
        identity,
        users: registry.users.clone(),
        authz: Arc::clone(&registry.authz),
    })
}

async fn api_engine_post(
    tail: warp::path::Tail,
    headers: warp::http::HeaderMap,
    body: bytes::Bytes,
    state: AppState,
) -> Result<warp::reply::Response, Rejection> {
    let path: Vec<&str> = tail.as_str().trim_end_matches('/').split('/').collect();
    let authority = match caller(&state, &headers).await {
        Ok(authority) => authority,
        Err(refused) => return Ok(refused),
    };
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok());
    match state
        .engine
        .post(&path, content_type, &body, &authority)
        .await
    {
        Some(response) => Ok(api_reply(response)),
        None => Err(warp::reject::not_found()),
    }
}

fn api_reply(response: ApiResponse) -> warp::reply::Response {
    let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut reply = match response.body {
        Body::Full(text) => warp::reply::with_status(text, status).into_response(),
        Body::Stream(chunks) => {
            warp::reply::with_status(warp::reply::stream(chunks), status).into_response()
        }
    };
    reply.headers_mut().insert(
        warp::http::header::CONTENT_TYPE,
        warp::http::HeaderValue::from_static(response.content_type),
    );
    reply
}

async fn not_found(_: Rejection) -> Result<warp::reply::Response, Infallible> {
    let body = serde_json::json!({"error": "invalid path"}).to_string();
    let mut reply = warp::reply::with_status(body, StatusCode::NOT_FOUND).into_response();
    reply.headers_mut().insert(
        warp::http::header::CONTENT_TYPE,
        warp::http::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    Ok(reply)
}
