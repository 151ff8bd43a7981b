//! The REST API's JSON-RPC actions (`POST /api/v2/<path>`), as Buildbot's
//! web UI makes them: force a build, stop or rebuild a build, cancel a
//! build request, shut the master down or reload its configuration; stop, kill, pause or unpause a worker; run the
//! janitor now (Buildbot's
//! `force-janitor`); and retry a reporter's dead-lettered delivery. Each is a command to the topology through
//! [`Control`](crate::control::Control).

use serde_json::{json, Map, Value};

use super::response::{ApiResponse, JSON};
use super::Engine;
use crate::config::Action;
use crate::control::{ControlError, ShutdownAction, WorkerAction};
use crate::db::{AddedBuildset, MASTER_ID};
use crate::schedulers::ForceError;

/// Whether the caller may take an action: the web layer's answer, from
/// its login and `[www.authz]`.
pub trait Permit: Send + Sync {
    /// `Err` with the HTTP status (401 when nobody is logged in, else 403)
    /// and why.
    fn check(&self, action: Action, builder: Option<&str>) -> Result<(), (u16, String)>;

    /// The user calling, when one proved who they are.
    fn user(&self) -> Option<String>;

    /// Who is calling, as reasons name them ("anonymous" when nobody).
    fn caller(&self) -> String {
        self.user().unwrap_or_else(|| "anonymous".to_owned())
    }
}

impl Engine {
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
        permit: &dyn Permit,
    ) -> Option<ApiResponse> {
        let target = match path {
            ["forceschedulers", name] => Target::Force((*name).to_owned()),
            ["builds", id] => Target::Build((*id).to_owned()),
            ["buildrequests", id] => Target::Request((*id).to_owned()),
            ["masters", id] => Target::Master((*id).to_owned()),
            ["janitor"] => Target::Janitor,
            ["workers", worker] => Target::Worker((*worker).to_owned()),
            ["reporters", name, "deliveries", id] => {
                Target::Delivery((*name).to_owned(), (*id).to_owned())
            }
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
        for (action, builder) in self.needed(&target, method, &params).await {
            if let Err((status, why)) = permit.check(action, builder.as_deref()) {
                return Some(with_status(status, rpc_error(id, -32001, &why)));
            }
        }
        Some(match (target, method) {
            (Target::Force(name), "force") => {
                // A logged-in user forces as themselves (the build's owner),
                // whatever the form's user name field says.
                let mut params = params;
                if let Some(user) = permit.user() {
                    params.insert("username".into(), Value::from(user));
                }
                self.force(id, &name, params).await
            }
            (Target::Master(master), "reconfig") if master == MASTER_ID.to_string() => {
                match self.control.reconfig().await {
                    Ok(status) => rpc_result(id, json!(status)),
                    Err(error) => control_error(id, error),
                }
            }
            (Target::Build(build), "stop" | "rebuild") => {
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
                if method == "stop" {
                    match self.control.stop_build(buildid, reason).await {
                        Ok(()) => rpc_result(id, Value::Null),
                        Err(error) => control_error(id, error),
                    }
                } else {
                    match self
                        .control
                        .rebuild(buildid, &permit.caller(), reason)
                        .await
                    {
                        Ok(Some(added)) => rpc_result(id, buildset_result(&added)),
                        Ok(None) => rpc_error(id, -32602, &format!("no build has id {buildid}")),
                        Err(error) => control_error(id, error),
                    }
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
            (Target::Worker(worker), "stop" | "kill" | "pause" | "unpause") => {
                let action = match method {
                    "stop" => WorkerAction::Stop,
                    "kill" => WorkerAction::Kill,
                    "pause" => WorkerAction::Pause(
                        params
                            .get("reason")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                    ),
                    _ => WorkerAction::Unpause,
                };
                let name = match self.control.control_worker(&worker, action.clone()).await {
                    Ok(name) => name,
                    Err(error) => return Some(control_error(id, error)),
                };
                // The master acts at once; the database keeps the state for
                // the API and for the next start.
                let recorded = match action {
                    WorkerAction::Pause(reason) => {
                        self.db.record_worker_pause(&name, Some(reason)).await
                    }
                    WorkerAction::Unpause => self.db.record_worker_pause(&name, None).await,
                    WorkerAction::Stop => self.db.record_worker_graceful(&name).await,
                    WorkerAction::Kill => Ok(()),
                };
                match recorded {
                    Ok(()) => rpc_result(id, Value::Null),
                    Err(error) => {
                        tracing::error!("cannot record the {method} of worker {name}: {error}");
                        with_status(500, rpc_error(id, -32603, "internal error"))
                    }
                }
            }
            (Target::Janitor, "run") => match self.control.run_janitor().await {
                Ok(Some(pruned)) => rpc_result(id, json!(pruned)),
                Ok(None) => rpc_error(id, -32602, "no [janitor] is configured"),
                Err(error) => control_error(id, error),
            },
            (Target::Delivery(reporter, delivery), "retry") => {
                let Ok(deliveryid) = delivery.parse::<i64>() else {
                    return Some(rpc_error(
                        id,
                        -32602,
                        &format!("invalid delivery id '{delivery}'"),
                    ));
                };
                match self.db.retry_delivery(reporter.clone(), deliveryid).await {
                    Ok(true) => {
                        self.outbox.notify_one();
                        rpc_result(id, Value::Null)
                    }
                    Ok(false) => rpc_error(
                        id,
                        -32602,
                        &format!(
                            "reporter '{reporter}' has no dead-lettered delivery {deliveryid}"
                        ),
                    ),
                    Err(error) => {
                        tracing::error!("cannot retry delivery {deliveryid}: {error}");
                        rpc_error(id, -32603, "internal error")
                    }
                }
            }
            (_, method) => rpc_error(id, -32601, &format!("invalid method '{method}'")),
        })
    }

    /// The actions a call takes, each with the builder it concerns; checked
    /// before the call runs. A builder that cannot be found is checked as
    /// none (rules for given builders then do not cover it).
    async fn needed(
        &self,
        target: &Target,
        method: &str,
        params: &Map<String, Value>,
    ) -> Vec<(Action, Option<String>)> {
        let view = self.control.view();
        let name_of = |builderid: i64| {
            view.builders
                .iter()
                .find(|(id, _)| *id == builderid)
                .map(|(_, config)| config.name.clone())
        };
        match (target, method) {
            (Target::Force(scheduler), "force") => {
                let named: Option<Vec<String>> =
                    match (params.get("builderNames"), params.get("builderid")) {
                        (Some(Value::Array(names)), _) => Some(
                            names
                                .iter()
                                .filter_map(Value::as_str)
                                .map(str::to_owned)
                                .collect(),
                        ),
                        (_, Some(Value::String(builder))) => Some(vec![builder.clone()]),
                        (_, Some(Value::Number(id))) => {
                            id.as_i64().and_then(name_of).map(|n| vec![n])
                        }
                        _ => None,
                    };
                // `force` takes a builder by name or by id: every builder
                // an entry could mean is checked.
                let named = named.map(|named| {
                    named
                        .into_iter()
                        .flat_map(|wanted| {
                            let meant: Vec<String> = view
                                .builders
                                .iter()
                                .filter(|(id, config)| {
                                    config.name == wanted || id.to_string() == wanted
                                })
                                .map(|(_, config)| config.name.clone())
                                .collect();
                            if meant.is_empty() {
                                vec![wanted]
                            } else {
                                meant
                            }
                        })
                        .collect::<Vec<_>>()
                });
                let builders = named.unwrap_or_else(|| {
                    view.schedulers
                        .iter()
                        .find(|s| s.name == *scheduler)
                        .map(|s| s.builder_names.clone())
                        .unwrap_or_default()
                });
                if builders.is_empty() {
                    return vec![(Action::Force, None)];
                }
                builders
                    .into_iter()
                    .map(|b| (Action::Force, Some(b)))
                    .collect()
            }
            (Target::Build(build), "stop" | "rebuild") => {
                let action = if method == "stop" {
                    Action::Stop
                } else {
                    Action::Rebuild
                };
                let builder = match build.parse::<i64>() {
                    Ok(buildid) => self
                        .db
                        .build_info(buildid)
                        .await
                        .ok()
                        .flatten()
                        .map(|info| info.builder.name),
                    Err(_) => None,
                };
                vec![(action, builder)]
            }
            (Target::Request(request), "cancel") => {
                let builder = match request.parse::<i64>() {
                    Ok(brid) => self
                        .db
                        .request_builder(brid)
                        .await
                        .ok()
                        .flatten()
                        .and_then(name_of),
                    Err(_) => None,
                };
                vec![(Action::Cancel, builder)]
            }
            (Target::Master(_), "shutdown") => vec![(Action::Shutdown, None)],
            (Target::Master(_), "reconfig") => vec![(Action::Reconfig, None)],
            (Target::Worker(_), _) => vec![(Action::Worker, None)],
            (Target::Janitor, _) => vec![(Action::Janitor, None)],
            (Target::Delivery(..), _) => vec![(Action::Retry, None)],
            _ => Vec::new(),
        }
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
            Ok(added) => rpc_result(id, buildset_result(&added)),
            Err(error) => control_error(id, error),
        }
    }
}

enum Target {
    Force(String),
    Build(String),
    Request(String),
    Master(String),
    Janitor,
    /// A worker's name or id.
    Worker(String),
    /// A reporter's name and a delivery id.
    Delivery(String, String),
}

/// Buildbot's result for a new buildset: its id and, by builder id, the
/// id of each build request.
fn buildset_result(added: &AddedBuildset) -> Value {
    let requests: Map<String, Value> = added
        .requests
        .iter()
        .map(|(builderid, brid)| (builderid.to_string(), Value::from(*brid)))
        .collect();
    json!([added.bsid, requests])
}

/// A command's refusal as a JSON-RPC error.
fn control_error(id: Value, error: ControlError) -> ApiResponse {
    match error {
        ControlError::Force(ForceError::NoSuchScheduler(name)) => with_status(
            404,
            rpc_error(id, -32601, &format!("no force scheduler is named '{name}'")),
        ),
        ControlError::Force(ForceError::Storage(cause)) => {
            tracing::error!("cannot store a forced buildset: {cause}");
            with_status(500, rpc_error(id, -32603, "internal error"))
        }
        ControlError::NoSuchWorker(name) => with_status(
            404,
            rpc_error(id, -32601, &format!("no worker is named '{name}'")),
        ),
        ControlError::Internal => with_status(500, rpc_error(id, -32603, "internal error")),
        ControlError::Stopping => with_status(503, rpc_error(id, -32603, "the master is stopping")),
        error => rpc_error(id, -32602, &error.to_string()),
    }
}

/// The same answer with another HTTP status.
fn with_status(status: u16, response: ApiResponse) -> ApiResponse {
    ApiResponse { status, ..response }
}

fn rpc_result(id: Value, result: Value) -> ApiResponse {
    ApiResponse::full(
        200,
        JSON,
        json!({"jsonrpc": "2.0", "result": result, "id": id}).to_string(),
    )
}

/// A JSON-RPC error, answered with 400 as Buildbot does.
fn rpc_error(id: Value, code: i64, message: &str) -> ApiResponse {
    ApiResponse::full(
        400,
        JSON,
        json!({"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": id})
            .to_string(),
    )
}
