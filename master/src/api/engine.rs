//! The build engine's REST resources: builders, builds, steps, logs, build
//! requests, buildsets, workers, schedulers, the master and its
//! reconfiguration, with Buildbot's query options; and its JSON-RPC actions:
//! force a build, stop a build, cancel a build request, shut the master down.
//!
//! Stored things are read from the database; what runs is read from the
//! topology's [`View`](crate::control::View), and every action is a command
//! to the topology through [`Control`].

use serde_json::{json, Map, Value};

use super::query::{FieldKind, Query};
use super::ApiResponse;
use crate::config::SchedulerKind;
use crate::control::{Control, ControlError, ShutdownAction};
use crate::db::{Db, Resource, Scope, MASTER_ID};
use crate::schedulers::ForceError;

use FieldKind::{Boolean, Integer, Structured, Text};

/// What the endpoints read and act on.
#[derive(Clone)]
pub struct Engine {
    pub db: Db,
    pub control: Control,
}

const BUILDER_FIELDS: &[(&str, FieldKind)] = &[
    ("builderid", Integer),
    ("name", Text),
    ("description", Text),
    ("tags", Structured),
    ("masterids", Structured),
];
const BUILD_FIELDS: &[(&str, FieldKind)] = &[
    ("buildid", Integer),
    ("number", Integer),
    ("builderid", Integer),
    ("buildrequestid", Integer),
    ("workerid", Integer),
    ("masterid", Integer),
    ("started_at", Integer),
    ("complete", Boolean),
    ("complete_at", Integer),
    ("state_string", Text),
    ("results", Integer),
    ("properties", Structured),
];
const STEP_FIELDS: &[(&str, FieldKind)] = &[
    ("stepid", Integer),
    ("number", Integer),
    ("name", Text),
    ("buildid", Integer),
    ("started_at", Integer),
    ("complete", Boolean),
    ("complete_at", Integer),
    ("state_string", Text),
    ("results", Integer),
    ("urls", Structured),
    ("hidden", Boolean),
];
const LOG_FIELDS: &[(&str, FieldKind)] = &[
    ("logid", Integer),
    ("name", Text),
    ("slug", Text),
    ("stepid", Integer),
    ("complete", Boolean),
    ("num_lines", Integer),
    ("type", Text),
];
const BUILDREQUEST_FIELDS: &[(&str, FieldKind)] = &[
    ("buildrequestid", Integer),
    ("buildsetid", Integer),
    ("builderid", Integer),
    ("priority", Integer),
    ("submitted_at", Integer),
    ("claimed", Boolean),
    ("claimed_at", Integer),
    ("claimed_by_masterid", Integer),
    ("complete", Boolean),
    ("complete_at", Integer),
    ("results", Integer),
    ("waited_for", Boolean),
];
const BUILDSET_FIELDS: &[(&str, FieldKind)] = &[
    ("bsid", Integer),
    ("external_idstring", Text),
    ("reason", Text),
    ("submitted_at", Integer),
    ("complete", Boolean),
    ("complete_at", Integer),
    ("results", Integer),
    ("sourcestamps", Structured),
    ("parent_buildid", Integer),
    ("parent_relationship", Text),
];
const WORKER_FIELDS: &[(&str, FieldKind)] = &[
    ("workerid", Integer),
    ("name", Text),
    ("workerinfo", Structured),
    ("paused", Boolean),
    ("graceful", Boolean),
    ("connected_to", Structured),
    ("configured_on", Structured),
];
const SCHEDULER_FIELDS: &[(&str, FieldKind)] = &[
    ("schedulerid", Integer),
    ("name", Text),
    ("enabled", Boolean),
    ("master", Structured),
];
const FORCESCHEDULER_FIELDS: &[(&str, FieldKind)] = &[
    ("name", Text),
    ("label", Text),
    ("button_name", Text),
    ("builder_names", Structured),
    ("all_fields", Structured),
];

/// Why a request gets no answer but an error.
struct Failure {
    status: u16,
    message: String,
}

fn bad_request(message: impl Into<String>) -> Failure {
    Failure {
        status: 400,
        message: message.into(),
    }
}

fn not_found(message: impl Into<String>) -> Failure {
    Failure {
        status: 404,
        message: message.into(),
    }
}

fn internal(error: crate::db::Error) -> Failure {
    tracing::error!("cannot answer a REST request: {error}");
    Failure {
        status: 500,
        message: "internal error".into(),
    }
}

/// One collection (or single object) to answer with.
struct Listing {
    /// The envelope key, e.g. "builds".
    key: &'static str,
    fields: &'static [(&'static str, FieldKind)],
    rows: Vec<Value>,
    default_order: &'static [(&'static str, bool)],
    /// Answer one object (404 if absent) rather than a collection.
    single: Option<String>,
}

impl Engine {
    /// Answers `GET /api/v2/<path>`; `None` when the path is not one of ours.
    pub async fn get(
        &self,
        path: &[&str],
        query: &[(String, String)],
        accept: Option<&str>,
    ) -> Option<ApiResponse> {
        if let ["logs", id, "raw"] = path {
            return Some(self.raw_log(id).await);
        }
        let result = match path {
            [""] => Ok(root_links()),
            ["logs", id, "contents"] => self.log_contents(id).await,
            ["reconfig"] => Ok(self.reconfig()),
            ["masters"] | ["masters", "1"] => Ok(self.masters().await),
            _ => match self.listing(path).await? {
                Ok(listing) => answer(listing, query),
                Err(failure) => Err(failure),
            },
        };
        Some(respond(result, accept))
    }

    async fn listing(&self, path: &[&str]) -> Option<Result<Listing, Failure>> {
        use Resource::{BuildRequests, Builders, Builds, Buildsets, Logs, Steps};
        Some(match path {
            ["builders"] => self.rows(Builders, None, None).await,
            ["builders", id] => self.builder(id, false).await,
            ["builders", id, "builds"] => self.builder(id, true).await,
            ["builds"] => self.rows(Builds, None, None).await,
            ["builds", id] => self.one(Builds, id).await,
            ["builds", id, "steps"] => self.children(Steps, "buildid", id, "build").await,
            ["steps", id] => self.one(Steps, id).await,
            ["steps", id, "logs"] => self.children(Logs, "stepid", id, "step").await,
            ["logs", id] => self.one(Logs, id).await,
            ["buildrequests"] => self.rows(BuildRequests, None, None).await,
            ["buildrequests", id] => self.one(BuildRequests, id).await,
            ["buildsets"] => self.rows(Buildsets, None, None).await,
            ["buildsets", id] => self.one(Buildsets, id).await,
            ["workers"] => self.workers(None).await,
            ["workers", id] => self.workers(Some(id)).await,
            ["schedulers"] => Ok(self.scheduler_listing(None)),
            ["schedulers", id] => Ok(self.scheduler_listing(Some(id))),
            ["forceschedulers"] => Ok(self.force_listing(None)),
            ["forceschedulers", name] => Ok(self.force_listing(Some(name))),
            _ => return None,
        })
    }

    /// One object of a resource by its numeric id.
    async fn one(&self, resource: Resource, id: &str) -> Result<Listing, Failure> {
        let number = integer(id, noun(resource))?;
        self.rows(resource, scope("id", number), Some(id)).await
    }

    /// The objects of a resource whose `column` is the parent's id.
    async fn children(
        &self,
        resource: Resource,
        column: &'static str,
        parent: &str,
        what: &str,
    ) -> Result<Listing, Failure> {
        let parent = integer(parent, what)?;
        self.rows(resource, scope(column, parent), None).await
    }

    /// A builder, named by id or name, or (`builds`) its builds.
    async fn builder(&self, id: &str, builds: bool) -> Result<Listing, Failure> {
        let builderid = self.builder_id(id).await?;
        if builds {
            self.rows(Resource::Builds, scope("builderid", builderid), None)
                .await
        } else {
            self.rows(Resource::Builders, scope("id", builderid), Some(id))
                .await
        }
    }

    async fn rows(
        &self,
        resource: Resource,
        scope: Option<Scope>,
        single: Option<&str>,
    ) -> Result<Listing, Failure> {
        let rows = self.db.rest_rows(resource, scope).await.map_err(internal)?;
        let (key, fields, default_order): (_, _, &'static [(&str, bool)]) = match resource {
            Resource::Builders => ("builders", BUILDER_FIELDS, &[("builderid", false)]),
            Resource::Workers => ("workers", WORKER_FIELDS, &[("workerid", false)]),
            Resource::Buildsets => ("buildsets", BUILDSET_FIELDS, &[("bsid", false)]),
            Resource::BuildRequests => (
                "buildrequests",
                BUILDREQUEST_FIELDS,
                &[("buildrequestid", false)],
            ),
            Resource::Builds => ("builds", BUILD_FIELDS, &[("buildid", false)]),
            Resource::Steps => ("steps", STEP_FIELDS, &[("number", false)]),
            Resource::Logs => ("logs", LOG_FIELDS, &[("logid", false)]),
        };
        Ok(Listing {
            key,
            fields,
            rows,
            default_order,
            single: single.map(str::to_owned),
        })
    }

    /// A builder's id from its id or its name.
    async fn builder_id(&self, id: &str) -> Result<i64, Failure> {
        if let Ok(id) = id.parse() {
            return Ok(id);
        }
        let builders = self
            .db
            .rest_rows(Resource::Builders, None)
            .await
            .map_err(internal)?;
        builders
            .iter()
            .find(|builder| builder["name"] == id)
            .and_then(|builder| builder["builderid"].as_i64())
            .ok_or_else(|| not_found(format!("no builder is named '{id}'")))
    }

    async fn workers(&self, single: Option<&str>) -> Result<Listing, Failure> {
        let mut rows = self
            .db
            .rest_rows(Resource::Workers, None)
            .await
            .map_err(internal)?;
        let view = self.control.view();
        let builders: Vec<(i64, &Vec<String>)> = view
            .builders
            .iter()
            .map(|(id, config)| (*id, &config.workernames))
            .collect();
        for row in &mut rows {
            let name = row["name"].as_str().unwrap_or_default().to_owned();
            let connected = view.workers.iter().any(|(worker, _)| *worker == name);
            row["connected_to"] = if connected {
                json!([{ "masterid": MASTER_ID }])
            } else {
                json!([])
            };
            row["configured_on"] = builders
                .iter()
                .filter(|(_, names)| names.contains(&name))
                .map(|(builderid, _)| json!({"builderid": builderid, "masterid": MASTER_ID}))
                .collect();
        }
        if let Some(id) = single {
            rows.retain(|row| {
                row["name"] == id
                    || row["workerid"].as_i64().map(|w| w.to_string()).as_deref() == Some(id)
            });
        }
        Ok(Listing {
            key: "workers",
            fields: WORKER_FIELDS,
            rows,
            default_order: &[("workerid", false)],
            single: single.map(str::to_owned),
        })
    }

    fn scheduler_listing(&self, single: Option<&str>) -> Listing {
        let mut rows: Vec<Value> = self
            .control
            .view()
            .schedulers
            .iter()
            .enumerate()
            .map(|(index, scheduler)| {
                json!({
                    "schedulerid": index + 1,
                    "name": scheduler.name,
                    "enabled": true,
                    "master": {"masterid": MASTER_ID, "name": "buildmaster", "active": true},
                })
            })
            .collect();
        if let Some(id) = single {
            let number = id.parse::<u64>().ok();
            rows.retain(|row| row["name"] == id || row["schedulerid"].as_u64() == number);
        }
        Listing {
            key: "schedulers",
            fields: SCHEDULER_FIELDS,
            rows,
            default_order: &[("schedulerid", false)],
            single: single.map(str::to_owned),
        }
    }

    fn force_listing(&self, single: Option<&str>) -> Listing {
        let rows = self
            .control
            .view()
            .schedulers
            .iter()
            .filter(|s| single.is_none_or(|name| s.name == name))
            .filter_map(|scheduler| {
                let SchedulerKind::Force(form) = &scheduler.kind else {
                    return None;
                };
                let fields: Vec<Value> = form
                    .parameters()
                    .map(|p| {
                        json!({
                            "name": p.name,
                            "fullName": p.name,
                            "label": p.label,
                            "type": p.type_name(),
                            "default": p.default,
                            "required": p.required,
                            "hide": false,
                            "readonly": p.fixed,
                        })
                    })
                    .collect();
                Some(json!({
                    "name": scheduler.name,
                    "label": scheduler.name,
                    "button_name": scheduler.name,
                    "builder_names": scheduler.builder_names,
                    "all_fields": fields,
                }))
            })
            .collect();
        Listing {
            key: "forceschedulers",
            fields: FORCESCHEDULER_FIELDS,
            rows,
            default_order: &[],
            single: single.map(str::to_owned),
        }
    }

    /// The last reload attempt, with the tasks that run and whether the
    /// master is healthy (no task failed for good).
    fn reconfig(&self) -> Value {
        let mut status = serde_json::to_value(self.control.reload_status()).unwrap_or_default();
        let (tasks, problems) = self.control.tasks();
        status["healthy"] = Value::Bool(problems.is_empty());
        status["problems"] = json!(problems);
        status["tasks"] = json!(tasks);
        json!({"reconfig": status, "meta": {}})
    }

    /// This master, in Buildbot's shape, with where a shutdown stands.
    async fn masters(&self) -> Value {
        let shutdown = self.control.shutdown(ShutdownAction::Status).await;
        let master = json!({
            "masterid": MASTER_ID,
            "name": self.control.view().name,
            "active": true,
            "last_active": crate::clock::now(),
            "shutdown": shutdown,
        });
        json!({"masters": [master], "meta": {"total": 1}})
    }

    async fn log_contents(&self, id: &str) -> Result<Value, Failure> {
        let logid = integer(id, "log")?;
        let (log, content) = self
            .db
            .log_contents(logid)
            .await
            .map_err(internal)?
            .ok_or_else(|| not_found(format!("no log {logid}")))?;
        let lines = log["num_lines"].as_i64().unwrap_or(0);
        Ok(json!({
            "logchunks": [{
                "logid": logid,
                "firstline": 0,
                "lastline": (lines - 1).max(0),
                "content": content,
            }],
            "meta": {},
        }))
    }

    /// The log as plain text, each line without its channel prefix.
    async fn raw_log(&self, id: &str) -> ApiResponse {
        let contents = match integer(id, "log") {
            Ok(logid) => self.db.log_contents(logid).await.map_err(internal),
            Err(failure) => Err(failure),
        };
        match contents {
            Ok(Some((log, content))) => {
                let text = if log["type"] == "s" {
                    content
                        .lines()
                        .map(|line| line.get(1..).unwrap_or_default())
                        .fold(String::new(), |mut text, line| {
                            text.push_str(line);
                            text.push('\n');
                            text
                        })
                } else {
                    content
                };
                ApiResponse {
                    status: 200,
                    content_type: "text/plain; charset=utf-8",
                    body: text,
                }
            }
            Ok(None) => respond(Err(not_found(format!("no log {id}"))), None),
            Err(failure) => respond(Err(failure), None),
        }
    }

    /// Answers a JSON-RPC `POST /api/v2/<path>`: `force` on a force
    /// scheduler, `stop` on a build, `cancel` on a build request, `shutdown`
    /// on the master. As in Buildbot, the body must be sent as
    /// `application/json`: a web page can make a browser post a form or text
    /// anywhere, but not that.
    pub async fn post(
        &self,
        path: &[&str],
        content_type: Option<&str>,
        body: &[u8],
    ) -> Option<ApiResponse> {
        let target = match path {
            ["forceschedulers", name] => Target::Force((*name).to_owned()),
            ["builds", id] => Target::Build((*id).to_owned()),
            ["buildrequests", id] => Target::Request((*id).to_owned()),
            ["masters", id] => Target::Master((*id).to_owned()),
            _ => return None,
        };
        let media_type = content_type
            .and_then(|value| value.split(';').next())
            .map(|media_type| media_type.trim().to_ascii_lowercase());
        if media_type.as_deref() != Some("application/json") {
            return Some(rpc_error(
                Value::Null,
                -32600,
                "Invalid content-type (use application/json)",
            ));
        }
        let call: Value = match serde_json::from_slice(body) {
            Ok(call @ Value::Object(_)) => call,
            _ => {
                return Some(rpc_error(
                    Value::Null,
                    -32700,
                    "the body is not a JSON object",
                ))
            }
        };
        let id = call.get("id").cloned().unwrap_or(Value::Null);
        let method = call
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let params = match call.get("params") {
            None => Map::new(),
            Some(Value::Object(params)) => params.clone(),
            Some(_) => return Some(rpc_error(id, -32602, "params must be an object")),
        };
        Some(match (target, method) {
            (Target::Force(name), "force") => self.force(id, &name, params).await,
            (Target::Build(build), "stop") => {
                let Ok(buildid) = build.parse::<i64>() else {
                    return Some(rpc_error(
                        id,
                        -32602,
                        &format!("invalid build id '{build}'"),
                    ));
                };
                let reason = params
                    .get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or("no reason");
                match self.control.stop_build(buildid, reason).await {
                    Ok(()) => rpc_result(id, Value::Null),
                    Err(error) => control_error(id, error),
                }
            }
            (Target::Request(request), "cancel") => {
                let Ok(brid) = request.parse::<i64>() else {
                    return Some(rpc_error(
                        id,
                        -32602,
                        &format!("invalid build request id '{request}'"),
                    ));
                };
                match self.control.cancel_request(brid).await {
                    Ok(Some(_)) => rpc_result(id, Value::Null),
                    Ok(None) => {
                        rpc_error(id, -32602, &format!("build request {brid} is not pending"))
                    }
                    Err(error) => control_error(id, error),
                }
            }
            (Target::Master(master), "shutdown") if master == MASTER_ID.to_string() => {
                let word = params
                    .get("action")
                    .and_then(Value::as_str)
                    .unwrap_or("status");
                match ShutdownAction::parse(word) {
                    Some(action) => {
                        let status = self.control.shutdown(action).await;
                        rpc_result(id, json!(status))
                    }
                    None => rpc_error(
                        id,
                        -32602,
                        &format!(
                            "invalid shutdown action '{word}'; use start, cancel, status or now"
                        ),
                    ),
                }
            }
            (Target::Master(master), "shutdown") => {
                rpc_error(id, -32602, &format!("no master has id '{master}'"))
            }
            (_, method) => rpc_error(id, -32601, &format!("invalid method '{method}'")),
        })
    }

    /// `force`: every builder of the scheduler, or those `builderNames`
    /// lists, or the one `builderid` names (by id or name).
    async fn force(&self, id: Value, name: &str, mut params: Map<String, Value>) -> ApiResponse {
        let builder = params.remove("builderid").map(|b| match b {
            Value::String(text) => text,
            other => other.to_string(),
        });
        let builders = match params.remove("builderNames") {
            None => builder.map(|b| vec![b]),
            Some(Value::Array(names)) if names.iter().all(Value::is_string) => Some(
                names
                    .into_iter()
                    .filter_map(|n| n.as_str().map(str::to_owned))
                    .collect(),
            ),
            Some(_) => {
                return rpc_error(id, -32602, "builderNames must be a list of builder names")
            }
        };
        match self.control.force(name, builders, params).await {
            Ok(added) => {
                let requests: Map<String, Value> = added
                    .requests
                    .iter()
                    .map(|(builderid, brid)| (builderid.to_string(), Value::from(*brid)))
                    .collect();
                rpc_result(id, json!([added.bsid, requests]))
            }
            Err(error) => control_error(id, error),
        }
    }
}

/// A command's refusal as a JSON-RPC error.
fn control_error(id: Value, error: ControlError) -> ApiResponse {
    match error {
        ControlError::Force(ForceError::NoSuchScheduler(name)) => ApiResponse {
            status: 404,
            ..rpc_error(id, -32601, &format!("no force scheduler is named '{name}'"))
        },
        ControlError::Force(ForceError::Storage(cause)) => {
            tracing::error!("cannot store a forced buildset: {cause}");
            ApiResponse {
                status: 500,
                ..rpc_error(id, -32603, "internal error")
            }
        }
        ControlError::Internal => ApiResponse {
            status: 500,
            ..rpc_error(id, -32603, "internal error")
        },
        ControlError::Stopping => ApiResponse {
            status: 503,
            ..rpc_error(id, -32603, "the master is stopping")
        },
        error => rpc_error(id, -32602, &error.to_string()),
    }
}

/// The collections at the root of the API.
const ROOT_LINKS: &[&str] = &[
    "builders",
    "buildrequests",
    "builds",
    "buildsets",
    "changes",
    "forceschedulers",
    "masters",
    "reconfig",
    "schedulers",
    "workers",
];

/// `GET /api/v2`: the index of the root collections, in Buildbot's shape.
fn root_links() -> Value {
    let links: Vec<Value> = ROOT_LINKS
        .iter()
        .map(|name| json!({ "name": name }))
        .collect();
    json!({"rootlinks": links, "meta": {"total": links.len()}})
}

enum Target {
    Force(String),
    Build(String),
    Request(String),
    Master(String),
}

fn scope(column: &'static str, id: i64) -> Option<Scope> {
    Some(Scope { column, id })
}

/// What one object of a resource is called in messages.
fn noun(resource: Resource) -> &'static str {
    match resource {
        Resource::Builders => "builder",
        Resource::Workers => "worker",
        Resource::Buildsets => "buildset",
        Resource::BuildRequests => "build request",
        Resource::Builds => "build",
        Resource::Steps => "step",
        Resource::Logs => "log",
    }
}

fn integer(id: &str, what: &str) -> Result<i64, Failure> {
    id.parse()
        .map_err(|_| bad_request(format!("invalid {what} id '{id}'")))
}

/// Applies the query to a listing and wraps it in Buildbot's envelope.
fn answer(listing: Listing, pairs: &[(String, String)]) -> Result<Value, Failure> {
    // `property` chooses the build properties to include; Buildbot leaves
    // them out unless asked.
    let wanted: Vec<&str> = pairs
        .iter()
        .filter(|(name, _)| name == "property")
        .flat_map(|(_, value)| value.split(','))
        .collect();
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .filter(|(name, _)| name != "property")
        .cloned()
        .collect();
    let query = Query::parse(&pairs, listing.fields).map_err(bad_request)?;
    let mut rows = listing.rows;
    if listing.key == "builds" {
        for row in &mut rows {
            keep_properties(row, &wanted);
        }
    }
    if let Some(id) = &listing.single {
        if query.has_filters() {
            return Err(bad_request("filters apply only to collections"));
        }
        let Some(row) = rows.into_iter().next() else {
            return Err(not_found(format!(
                "not found while getting {} {id}",
                listing.key.trim_end_matches('s')
            )));
        };
        return Ok(json!({listing.key: [query.select(row)], "meta": {}}));
    }
    let (page, total) = query.apply(rows, listing.default_order);
    let page: Vec<Value> = page.into_iter().map(|row| query.select(row)).collect();
    Ok(json!({listing.key: page, "meta": {"total": total}}))
}

fn keep_properties(build: &mut Value, wanted: &[&str]) {
    let Some(object) = build.as_object_mut() else {
        return;
    };
    if wanted.is_empty() {
        object.remove("properties");
        return;
    }
    if wanted.contains(&"*") {
        return;
    }
    if let Some(Value::Object(properties)) = object.get_mut("properties") {
        properties.retain(|name, _| wanted.contains(&name.as_str()));
    }
}

fn respond(result: Result<Value, Failure>, accept: Option<&str>) -> ApiResponse {
    match result {
        Ok(body) if accept.is_some_and(|a| a.contains("application/json")) => ApiResponse {
            status: 200,
            content_type: "application/json; charset=utf-8",
            body: body.to_string(),
        },
        Ok(body) => ApiResponse {
            status: 200,
            content_type: "text/plain; charset=utf-8",
            body: format!("{body:#}"),
        },
        Err(failure) => ApiResponse {
            status: failure.status,
            content_type: "text/plain; charset=utf-8",
            body: json!({"error": failure.message}).to_string(),
        },
    }
}

fn rpc_result(id: Value, result: Value) -> ApiResponse {
    ApiResponse {
        status: 200,
        content_type: "application/json; charset=utf-8",
        body: json!({"jsonrpc": "2.0", "result": result, "id": id}).to_string(),
    }
}

/// A JSON-RPC error, answered with 400 as Buildbot does.
fn rpc_error(id: Value, code: i64, message: &str) -> ApiResponse {
    ApiResponse {
        status: 400,
        content_type: "application/json; charset=utf-8",
        body: json!({"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": id})
            .to_string(),
    }
}
