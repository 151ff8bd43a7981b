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
pub fn asset(name: &str) -> Option<(&'static str, &'static str)> {
    match name {
        "ui.css" => Some((include_str!("ui.css"), "text/css; charset=utf-8")),
        "ui.js" => Some((include_str!("ui.js"), "text/javascript; charset=utf-8")),
        _ => None,
    }
}

/// Buildbot's result names, by code; `None` is a build still running.
fn result_name(code: Option<i64>) -> &'static str {
    match code {
        None => "running",
        Some(0) => "success",
        Some(1) => "warnings",
        Some(2) => "failure",
        Some(3) => "skipped",
        Some(4) => "exception",
        Some(5) => "retry",
        Some(6) => "cancelled",
        Some(_) => "unknown",
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
        env.add_filter("result_class", |code: Option<i64>| result_name(code));
        env.add_filter("result_name", |code: Option<i64>| result_name(code));
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
                (Some(start), Some(end)) => format!("{} s", (end - start).max(0)),
                (Some(_), None) => "running".to_owned(),
                _ => "-".to_owned(),
            }
        });
        env
    })
}

/// Who is looking, for the header: the user, the CSRF token of their
/// session, whether the master has users at all.
struct Viewer {
    user: Option<String>,
    csrf: Option<String>,
    auth: bool,
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
    let title = state.registry.load().title.clone();
    let rendered = environment().get_template(template).and_then(|t| {
        t.render(context! {
            title => title,
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

/// A REST read, as the API answers it (`path` with its query).
pub(super) async fn api(state: &AppState, path: &str) -> Option<Value> {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let segments: Vec<&str> = path.split('/').collect();
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let response = state
        .engine
        .get(&segments, &pairs, Some("application/json"))
        .await?;
    if response.status != 200 {
        return None;
    }
    let text = match response.body {
        Body::Full(text) => text.into_bytes(),
        Body::Stream(mut chunks) => {
            let mut all = Vec::new();
            while let Some(chunk) = chunks.next().await {
                all.extend_from_slice(&chunk.ok()?);
            }
            all
        }
    };
    serde_json::from_slice(&text).ok()
}

fn list(value: Option<Value>, key: &str) -> Vec<Value> {
    value
        .and_then(|mut v| v.get_mut(key).map(Value::take))
        .and_then(|v| match v {
            Value::Array(items) => Some(items),
            _ => None,
        })
        .unwrap_or_default()
}

/// The name of configured builder `id`; empty for one no longer configured.
fn builder_name(view: &crate::control::View, id: Option<i64>) -> String {
    view.builders
        .iter()
        .find(|(builderid, _)| Some(*builderid) == id)
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
        Err(e) => {
            tracing::error!("cannot read recent builds: {e}");
            return super::text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n");
        }
    };
    let tags: BTreeSet<&String> = view.builders.iter().flat_map(|(_, b)| &b.tags).collect();
    // One pass over the recent builds, grouped by builder.
    let mut by_builder: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
    for (builderid, buildid, number, results) in recent {
        by_builder
            .entry(builderid)
            .or_default()
            .push(json!({"buildid": buildid, "number": number, "results": results}));
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

/// `GET /builders/<id>`: the builder's builds, its pending requests and the
/// force forms that can build it.
pub async fn builder(id: i64, headers: HeaderMap, state: AppState) -> warp::reply::Response {
    let Some(builder) = list(api(&state, &format!("builders/{id}")).await, "builders").pop() else {
        return not_found("no such builder");
    };
    let name = builder["name"].as_str().unwrap_or_default().to_owned();
    let builds = list(
        api(
            &state,
            &format!("builders/{id}/builds?order=-number&limit=50"),
        )
        .await,
        "builds",
    );
    let pending = list(
        api(
            &state,
            &format!("buildrequests?builderid={id}&claimed=false&complete=false"),
        )
        .await,
        "buildrequests",
    );
    let forms: Vec<Value> = list(api(&state, "forceschedulers").await, "forceschedulers")
        .into_iter()
        .filter(|f| {
            f["builder_names"]
                .as_array()
                .is_some_and(|n| n.iter().any(|n| n == name.as_str()))
        })
        .collect();
    let data = json!({"builder": builder, "builds": builds, "pending": pending, "forms": forms});
    page(
        &state,
        &headers,
        &format!("/builders/{id}"),
        "builder.html",
        data,
    )
    .await
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
    let Some(build) = list(api(&state, &format!("builds/{id}")).await, "builds").pop() else {
        return not_found("no such build");
    };
    let builder = list(
        api(&state, &format!("builders/{}", build["builderid"])).await,
        "builders",
    )
    .pop()
    .unwrap_or_default();
    let mut steps = list(api(&state, &format!("builds/{id}/steps")).await, "steps");
    for step in &mut steps {
        let logs = list(
            api(&state, &format!("steps/{}/logs", step["stepid"])).await,
            "logs",
        );
        let mut shown = Vec::new();
        for log in logs {
            let logid = log["logid"].as_i64().unwrap_or_default();
            let total = log["num_lines"].as_u64().unwrap_or_default() as usize;
            let whole = full == Some(logid);
            let shown_lines = if whole { LOG_FULL } else { LOG_TAIL };
            let first = total.saturating_sub(shown_lines);
            let lines = events::log_lines(&state, logid, first, shown_lines).await;
            let total = first + lines.len();
            shown.push(json!({
                "logid": logid,
                "name": log["name"],
                "lines": lines,
                "hidden": first,
                "total": total,
                "whole": whole,
            }));
        }
        step["logs"] = Value::Array(shown);
    }
    let worker = list(
        api(&state, &format!("workers/{}", build["workerid"])).await,
        "workers",
    )
    .pop()
    .map(|worker| worker["name"].clone());
    let data = json!({"build": build, "builder": builder, "worker": worker, "steps": steps});
    page(
        &state,
        &headers,
        &format!("/builds/{id}"),
        "build.html",
        data,
    )
    .await
}

/// `GET /changes`: the newest changes with the builds of each.
pub async fn changes(headers: HeaderMap, state: AppState) -> warp::reply::Response {
    let mut changes = list(
        api(&state, "changes?order=-changeid&limit=50").await,
        "changes",
    );
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
        let builds = state.db.sourcestamp_builds(ssid).await.unwrap_or_default();
        change["builds"] = Value::Array(
            builds
                .into_iter()
                .map(|(buildid, builderid, number, results)| {
                    let builder = builder_name(&view, Some(builderid));
                    json!({"buildid": buildid, "builder": builder, "number": number, "results": results})
                })
                .collect(),
        );
    }
    page(
        &state,
        &headers,
        "/changes",
        "changes.html",
        json!({"changes": changes}),
    )
    .await
}

/// `GET /workers`: every worker, connected or not, with its running builds.
pub async fn workers(headers: HeaderMap, state: AppState) -> warp::reply::Response {
    let mut workers = list(api(&state, "workers").await, "workers");
    let running = list(api(&state, "builds?complete=false").await, "builds");
    let view = state.engine.control.view();
    for worker in &mut workers {
        let id = worker["workerid"].clone();
        worker["running"] = Value::Array(
            running
                .iter()
                .filter(|b| b["workerid"] == id)
                .map(|b| {
                    let builder = builder_name(&view, b["builderid"].as_i64());
                    json!({"buildid": b["buildid"], "number": b["number"], "builder": builder})
                })
                .collect(),
        );
        if worker["connected_to"].as_array().is_some_and(Vec::is_empty) {
            worker["connected_to"] = Value::Null;
        }
    }
    page(
        &state,
        &headers,
        "/workers",
        "workers.html",
        json!({"workers": workers}),
    )
    .await
}

/// `GET /hooks`: the webhook inspector's deliveries.
pub async fn hooks(headers: HeaderMap, state: AppState) -> warp::reply::Response {
    let deliveries = state
        .db
        .hook_deliveries(None, None, 50)
        .await
        .unwrap_or_default();
    page(
        &state,
        &headers,
        "/hooks",
        "hooks.html",
        json!({"deliveries": deliveries}),
    )
    .await
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
            let offers: Vec<&String> = library.dialects.iter().chain(&library.reporters).collect();
            json!({
                "name": library.name,
                "version": library.version,
                "offers": offers.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
            })
        })
        .collect();
    let data = json!({"reload": reload, "plugins": plugins, "version": env!("CARGO_PKG_VERSION")});
    page(&state, &headers, "/status", "status.html", data).await
}

/// `GET /ui/<asset>`: the script and the style sheet, cached for an hour.
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
