//! The web UI: pages rendered on the server from the REST API's own data,
//! with a little script for the JSON-RPC actions and a running build's live
//! log (Server-Sent Events). The templates and assets are in the binary;
//! there is no build step.

mod events;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use futures_util::StreamExt;
use minijinja::{context, Environment, Value as Template};
use serde_json::{json, Value};
use warp::http::{header, HeaderMap, HeaderValue, StatusCode};
use warp::Reply;

use super::auth::{self, Identity, Proof};
use super::AppState;
use crate::api::Body;
use crate::db::BuildSummary;
use crate::results::Results;

pub use events::build_events;

const TEMPLATES: &[(&str, &str)] = &[
    ("layout.html", include_str!("layout.html")),
    ("builders.html", include_str!("builders.html")),
    ("builder.html", include_str!("builder.html")),
    ("build.html", include_str!("build.html")),
    ("changes.html", include_str!("changes.html")),
    ("workers.html", include_str!("workers.html")),
    ("hooks.html", include_str!("hooks.html")),
    ("status.html", include_str!("status.html")),
    ("login.html", include_str!("login.html")),
];

/// The script and the style sheet, by name.
fn asset(name: &str) -> Option<(&'static str, &'static str)> {
    match name {
        "ui.css" => Some((include_str!("ui.css"), "text/css; charset=utf-8")),
        "ui.js" => Some((include_str!("ui.js"), "text/javascript; charset=utf-8")),
        _ => None,
    }
}

/// Buildbot's result name of `code` (also the box's class); `None` is a
/// build still running.
fn result_name(code: Option<i64>) -> &'static str {
    code.map_or("running", |code| {
        Results::from_code(code).map_or("unknown", Results::name)
    })
}

/// A duration as the pages show it: `42 s`, `3 min 5 s`, `2 h 10 min`.
fn duration(seconds: i64) -> String {
    let seconds = seconds.max(0);
    match (seconds / 3600, seconds % 3600 / 60, seconds % 60) {
        (0, 0, s) => format!("{s} s"),
        (0, m, s) => format!("{m} min {s} s"),
        (h, m, _) => format!("{h} h {m} min"),
    }
}

fn environment() -> &'static Environment<'static> {
    static ENVIRONMENT: OnceLock<Environment<'static>> = OnceLock::new();
    ENVIRONMENT.get_or_init(|| {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .expect("the built-in templates parse");
        }
        env.add_filter("result", result_name);
        env.add_global("version", env!("CARGO_PKG_VERSION"));
        env.add_filter("when", |at: Option<f64>| match at {
            Some(at) => crate::clock::utc_minute(at as i64),
            None => "-".to_owned(),
        });
        env.add_filter("took", |object: Template| {
            let get = |key: &str| {
                object
                    .get_attr(key)
                    .ok()
                    .and_then(|v| i64::try_from(v).ok())
            };
            match (get("started_at"), get("complete_at")) {
                (Some(start), Some(end)) => duration(end - start),
                (Some(_), None) => "running".to_owned(),
                _ => "-".to_owned(),
            }
        });
        env
    })
}

/// Who is looking, for the header: the user, the CSRF token of their
/// session, whether the master has users at all; and the master's title
/// (from the same configuration).
struct Viewer {
    user: Option<String>,
    csrf: Option<String>,
    auth: bool,
    title: String,
}

async fn viewer(state: &AppState, headers: &HeaderMap) -> Viewer {
    let registry = state.registry.load_full();
    let identity = auth::identify(&registry, &state.sessions, headers)
        .await
        .unwrap_or(Identity::Anonymous);
    let csrf = match &identity {
        Identity::User {
            proof: Proof::Session { csrf, .. },
            ..
        } => Some(csrf.clone()),
        _ => None,
    };
    Viewer {
        user: identity.user().map(str::to_owned),
        csrf,
        auth: registry.users.is_some(),
        title: registry.title.clone(),
    }
}

/// Renders `template` with `data` and the header's context.
async fn page(
    state: &AppState,
    headers: &HeaderMap,
    path: &str,
    template: &str,
    data: Value,
) -> warp::reply::Response {
    let viewer = viewer(state, headers).await;
    let rendered = environment().get_template(template).and_then(|t| {
        t.render(context! {
            title => viewer.title,
            user => viewer.user,
            csrf => viewer.csrf,
            auth => viewer.auth,
            path => path,
            ..Template::from_serialize(&data)
        })
    });
    match rendered {
        Ok(html) => warp::reply::html(html).into_response(),
        Err(e) => {
            tracing::error!("cannot render {template}: {e:#}");
            super::text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
        }
    }
}

/// The login page: the form (unless the master has no users) with
/// `message` above it, then back to `next`.
pub fn login_page(title: &str, next: &str, message: Option<&str>, form: bool) -> String {
    let rendered = environment()
        .get_template("login.html")
        .and_then(|t| t.render(context! { title, next, message, form, path => "/auth/login" }));
    rendered.unwrap_or_else(|e| {
        tracing::error!("cannot render login.html: {e:#}");
        "internal error\n".to_owned()
    })
}

fn not_found(what: &str) -> warp::reply::Response {
    super::text(StatusCode::NOT_FOUND, format!("{what}\n"))
}

/// What a page answers when it cannot read what it shows (the cause is
/// logged where it was found).
fn unreadable(status: StatusCode) -> warp::reply::Response {
    let status = if status.is_server_error() {
        status
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    super::text(
        status,
        "cannot read what this page shows now; the master's log has why\n",
    )
}

/// A database read of a page failed.
fn db_failed(what: &str, error: crate::db::Error) -> warp::reply::Response {
    tracing::error!("cannot read {what} for a page: {error}");
    unreadable(StatusCode::INTERNAL_SERVER_ERROR)
}

/// A page's reads: a failed one is the page's answer.
type Read<T> = Result<T, warp::reply::Response>;

/// A REST read, as the API answers it (`path` with its query); its status
/// when it is not 200 (logged unless 404).
async fn api(state: &AppState, path: &str) -> Result<Value, StatusCode> {
    let (route, query) = path.split_once('?').unwrap_or((path, ""));
    let segments: Vec<&str> = route.split('/').collect();
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let Some(response) = state
        .engine
        .get(&segments, &pairs, Some("application/json"))
        .await
    else {
        return Err(StatusCode::NOT_FOUND);
    };
    if response.status != 200 {
        if response.status != 404 {
            tracing::warn!("a page's read of {path} answered {}", response.status);
        }
        return Err(StatusCode::from_u16(response.status).unwrap_or(StatusCode::BAD_GATEWAY));
    }
    let text = match response.body {
        Body::Full(text) => text.into_bytes(),
        Body::Stream(mut chunks) => {
            let mut all = Vec::new();
            while let Some(chunk) = chunks.next().await {
                match chunk {
                    Ok(chunk) => all.extend_from_slice(&chunk),
                    Err(e) => {
                        tracing::warn!("a page's read of {path} failed: {e}");
                        return Err(StatusCode::INTERNAL_SERVER_ERROR);
                    }
                }
            }
            all
        }
    };
    serde_json::from_slice(&text).map_err(|e| {
        tracing::error!("a page's read of {path} is not JSON: {e}");
        StatusCode::INTERNAL_SERVER_ERROR
    })
}

/// The items under `key` of what a REST read answered.
fn items(mut value: Value, key: &str) -> Vec<Value> {
    match value.get_mut(key).map(Value::take) {
        Some(Value::Array(items)) => items,
        _ => Vec::new(),
    }
}

/// The items under `key` of a REST read.
async fn read_list(state: &AppState, path: &str, key: &str) -> Read<Vec<Value>> {
    match api(state, path).await {
        Ok(value) => Ok(items(value, key)),
        Err(status) => Err(unreadable(status)),
    }
}

/// The one item under `key` of a REST read of one thing; `None` when there
/// is no such thing.
async fn read_one(state: &AppState, path: &str, key: &str) -> Read<Option<Value>> {
    match api(state, path).await {
        Ok(value) => Ok(items(value, key).pop()),
        Err(StatusCode::NOT_FOUND) => Ok(None),
        Err(status) => Err(unreadable(status)),
    }
}

/// The name of configured builder `id`; empty for one no longer configured.
fn builder_name(view: &crate::control::View, id: i64) -> String {
    view.builders
        .iter()
        .find(|(builderid, _)| *builderid == id)
        .map_or_else(String::new, |(_, builder)| builder.name.clone())
}

/// How many builds of each builder the builders page shows.
const RECENT_BUILDS: usize = 12;

/// `GET /`: every builder with its last builds as coloured boxes, filtered
/// by `?tag=`.
pub async fn builders(
    query: std::collections::HashMap<String, String>,
    headers: HeaderMap,
    state: AppState,
) -> warp::reply::Response {
    let view = state.engine.control.view();
    let tag = query.get("tag").cloned();
    let shown: Vec<_> = view
        .builders
        .iter()
        .filter(|(_, b)| tag.as_ref().is_none_or(|t| b.tags.contains(t)))
        .collect();
    let ids = shown.iter().map(|(id, _)| *id).collect();
    let recent = match state.db.recent_builds(ids, RECENT_BUILDS).await {
        Ok(recent) => recent,
        Err(e) => return db_failed("recent builds", e),
    };
    let tags: BTreeSet<&String> = view.builders.iter().flat_map(|(_, b)| &b.tags).collect();
    // One pass over the recent builds, grouped by builder.
    let mut by_builder: BTreeMap<i64, Vec<BuildSummary>> = BTreeMap::new();
    for build in recent {
        by_builder.entry(build.builderid).or_default().push(build);
    }
    let builders: Vec<Value> = shown
        .into_iter()
        .map(|(id, b)| {
            let builds = by_builder.remove(id).unwrap_or_default();
            json!({"builderid": id, "name": b.name, "tags": b.tags, "builds": builds})
        })
        .collect();
    let data = json!({"builders": builders, "tags": tags, "tag": tag});
    page(&state, &headers, "/", "builders.html", data).await
}

/// Renders `template` with what `read` read, or answers why it could not.
async fn page_of(
    state: &AppState,
    headers: &HeaderMap,
    path: &str,
    template: &str,
    read: Read<Value>,
) -> warp::reply::Response {
    match read {
        Ok(data) => page(state, headers, path, template, data).await,
        Err(reply) => reply,
    }
}

/// `GET /builders/<id>`: the builder's builds, its pending requests and the
/// force forms that can build it.
pub async fn builder(id: i64, headers: HeaderMap, state: AppState) -> warp::reply::Response {
    let read = async {
        let Some(builder) = read_one(&state, &format!("builders/{id}"), "builders").await? else {
            return Err(not_found("no such builder"));
        };
        let name = builder["name"].as_str().unwrap_or_default().to_owned();
        let builds = read_list(
            &state,
            &format!("builders/{id}/builds?order=-number&limit=50"),
            "builds",
        )
        .await?;
        let pending = read_list(
            &state,
            &format!("buildrequests?builderid={id}&claimed=false&complete=false"),
            "buildrequests",
        )
        .await?;
        let forms: Vec<Value> = read_list(&state, "forceschedulers", "forceschedulers")
            .await?
            .into_iter()
            .filter(|f| {
                f["builder_names"]
                    .as_array()
                    .is_some_and(|n| n.iter().any(|n| n == name.as_str()))
            })
            .collect();
        Ok(json!({"builder": builder, "builds": builds, "pending": pending, "forms": forms}))
    };
    let read = read.await;
    let path = format!("/builders/{id}");
    page_of(&state, &headers, &path, "builder.html", read).await
}

/// How many of a log's last lines the build page shows.
const LOG_TAIL: usize = 1000;

/// How many of a log's last lines the page shows when asked for all of
/// them; the raw text has the rest.
const LOG_FULL: usize = 50_000;

/// `GET /builds/<id>`: its steps with their logs, live while it runs.
///
/// A long log shows its last [`LOG_TAIL`] lines, with a link to more of
/// them (`?full=<logid>`: up to [`LOG_FULL`]) and to the raw text.
pub async fn build(
    id: i64,
    query: std::collections::HashMap<String, String>,
    headers: HeaderMap,
    state: AppState,
) -> warp::reply::Response {
    let full: Option<i64> = query.get("full").and_then(|logid| logid.parse().ok());
    let read = async {
        let Some(build) = read_one(&state, &format!("builds/{id}"), "builds").await? else {
            return Err(not_found("no such build"));
        };
        let builder = read_one(
            &state,
            &format!("builders/{}", build["builderid"]),
            "builders",
        )
        .await?
        .unwrap_or_default();
        let mut steps = read_list(&state, &format!("builds/{id}/steps"), "steps").await?;
        let logs = match state.db.build_progress(id).await {
            Ok(progress) => progress.map(|p| p.logs).unwrap_or_default(),
            Err(e) => return Err(db_failed("a build's logs", e)),
        };
        for step in &mut steps {
            let mut shown = Vec::new();
            for log in logs.iter().filter(|log| step["stepid"] == log.stepid) {
                let whole = full == Some(log.logid);
                let shown_lines = if whole { LOG_FULL } else { LOG_TAIL };
                let first = log.num_lines.saturating_sub(shown_lines);
                let lines = events::log_lines(&state.db, log, first, shown_lines)
                    .await
                    .map_err(|e| db_failed("a log", e))?;
                let total = first + lines.len();
                shown.push(json!({
                    "logid": log.logid,
                    "name": log.name,
                    "lines": lines,
                    "hidden": first,
                    "total": total,
                    "whole": whole,
                    "keep": shown_lines,
                }));
            }
            step["logs"] = Value::Array(shown);
        }
        let worker = read_one(&state, &format!("workers/{}", build["workerid"]), "workers")
            .await?
            .map(|worker| worker["name"].clone());
        Ok(json!({"build": build, "builder": builder, "worker": worker, "steps": steps}))
    };
    let read = read.await;
    let path = format!("/builds/{id}");
    page_of(&state, &headers, &path, "build.html", read).await
}

/// `GET /changes`: the newest changes with the builds of each.
pub async fn changes(headers: HeaderMap, state: AppState) -> warp::reply::Response {
    let read = async {
        let mut changes = read_list(&state, "changes?order=-changeid&limit=50", "changes").await?;
        let ssids = changes
            .iter()
            .filter_map(|change| change["sourcestamp"]["ssid"].as_i64())
            .collect();
        let mut builds = state
            .db
            .sourcestamp_builds(ssids)
            .await
            .map_err(|e| db_failed("the builds of changes", e))?;
        let view = state.engine.control.view();
        for change in &mut changes {
            let comments = change["comments"].as_str().unwrap_or_default();
            let first: String = comments
                .lines()
                .next()
                .unwrap_or_default()
                .chars()
                .take(80)
                .collect();
            change["summary"] = Value::from(first);
            let ssid = change["sourcestamp"]["ssid"].as_i64().unwrap_or_default();
            let shown: Vec<Value> = builds
                .remove(&ssid)
                .unwrap_or_default()
                .into_iter()
                .map(|build| {
                    let builder = builder_name(&view, build.builderid);
                    json!({"buildid": build.buildid, "builder": builder, "number": build.number, "results": build.results})
                })
                .collect();
            change["builds"] = Value::Array(shown);
        }
        Ok(json!({"changes": changes}))
    };
    let read = read.await;
    page_of(&state, &headers, "/changes", "changes.html", read).await
}

/// `GET /workers`: every worker, connected or not, with its running builds.
pub async fn workers(headers: HeaderMap, state: AppState) -> warp::reply::Response {
    let read = async {
        let mut workers = read_list(&state, "workers", "workers").await?;
        let running = read_list(&state, "builds?complete=false", "builds").await?;
        let view = state.engine.control.view();
        for worker in &mut workers {
            let id = worker["workerid"].clone();
            worker["running"] = Value::Array(
                running
                    .iter()
                    .filter(|b| b["workerid"] == id)
                    .map(|b| {
                        let builder =
                            builder_name(&view, b["builderid"].as_i64().unwrap_or_default());
                        json!({"buildid": b["buildid"], "number": b["number"], "builder": builder})
                    })
                    .collect(),
            );
        }
        Ok(json!({"workers": workers}))
    };
    let read = read.await;
    page_of(&state, &headers, "/workers", "workers.html", read).await
}

/// `GET /hooks`: the webhook inspector's deliveries.
pub async fn hooks(headers: HeaderMap, state: AppState) -> warp::reply::Response {
    let read = match state.db.hook_deliveries(None, None, 50).await {
        Ok(deliveries) => Ok(json!({"deliveries": deliveries})),
        Err(e) => Err(db_failed("kept deliveries", e)),
    };
    page_of(&state, &headers, "/hooks", "hooks.html", read).await
}

/// `GET /status`: the last reload and the loaded plugins with their versions.
pub async fn status(headers: HeaderMap, state: AppState) -> warp::reply::Response {
    let reload = serde_json::to_value(state.engine.control.reload_status()).unwrap_or_default();
    let plugins: Vec<Value> = state
        .registry
        .load()
        .libraries
        .iter()
        .map(|library| {
            let offers: Vec<&str> = library
                .dialects
                .iter()
                .chain(&library.reporters)
                .map(String::as_str)
                .collect();
            json!({
                "name": library.name,
                "version": library.version,
                "offers": offers.join(", "),
            })
        })
        .collect();
    let data = json!({"reload": reload, "plugins": plugins});
    page(&state, &headers, "/status", "status.html", data).await
}

/// `GET /ui/<asset>`: the script and the style sheet, cached for an hour
/// (the pages name them with the master's version, so an upgrade is seen at
/// once).
pub async fn serve_asset(name: String) -> warp::reply::Response {
    let Some((body, content_type)) = asset(&name) else {
        return not_found("no such asset");
    };
    let mut reply = warp::reply::with_status(body, StatusCode::OK).into_response();
    let headers = reply.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=3600"),
    );
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_results_read_as_words() {
        assert_eq!(duration(42), "42 s");
        assert_eq!(duration(185), "3 min 5 s");
        assert_eq!(duration(7825), "2 h 10 min");
        assert_eq!(duration(-3), "0 s");
        assert_eq!(result_name(None), "running");
        assert_eq!(result_name(Some(2)), "failure");
        assert_eq!(result_name(Some(99)), "unknown");
    }

    #[test]
    fn every_template_parses_and_renders_with_escaping() {
        let env = environment();
        for (name, _) in TEMPLATES {
            env.get_template(name)
                .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        }
        let html = env
            .get_template("builders.html")
            .unwrap()
            .render(context! {
                title => "CI <&>",
                builders => vec![json!({"builderid": 1, "name": "<b>", "tags": [], "builds": [
                    {"buildid": 3, "number": 2, "results": 2},
                    {"buildid": 4, "number": 3, "results": null}]})],
                tags => Vec::<String>::new(),
                path => "/",
            })
            .unwrap();
        assert!(
            html.contains("<title>Builders · CI &lt;&amp;&gt;</title>"),
            "{html}"
        );
        assert!(html.contains("&lt;b&gt;"));
        assert!(
            html.contains(r#"<a class="box failure" href="/builds/3""#),
            "{html}"
        );
        assert!(
            html.contains(r#"<a class="box running" href="/builds/4""#),
            "{html}"
        );
    }
}
