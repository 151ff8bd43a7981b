//! The REST resources (`GET /api/v2/...`): changes, builders, builds, steps,
//! logs, build requests, buildsets, workers, schedulers, the master and its
//! reconfiguration, with Buildbot's query options.
//!
//! Stored things are listed from the database, their query translated to
//! SQL and their answer streamed (see [`response`]); what runs is read from
//! the topology's [`View`](crate::control::View). A query is validated
//! before any data is read.

use std::sync::Arc;

use serde_json::{json, Value};

use super::query;
use super::response::{self, ApiResponse, LogForm, Shape, JSON, TEXT};
use crate::config::force::Kind;
use crate::config::SchedulerKind;
use crate::control::{Control, ShutdownAction};
use crate::db::{self, Collection, Db, Field, FieldKind, Listing, Scope, MASTER_ID};

use FieldKind::{Boolean, Integer, Structured, Text};

/// What the endpoints read and act on.
#[derive(Clone)]
pub struct Engine {
    pub db: Db,
    pub control: Control,
    /// Wakes the report delivery (after a retry).
    pub outbox: Arc<tokio::sync::Notify>,
}

const fn field(name: &'static str, kind: FieldKind) -> Field {
    Field {
        name,
        sql: "",
        kind,
    }
}

/// The schedulers' fields; they come from the configuration, not the database.
static SCHEDULER_FIELDS: &[Field] = &[
    field("schedulerid", Integer),
    field("name", Text),
    field("enabled", Boolean),
    field("master", Structured),
];

static FORCESCHEDULER_FIELDS: &[Field] = &[
    field("name", Text),
    field("label", Text),
    field("button_name", Text),
    field("builder_names", Structured),
    field("all_fields", Structured),
];

/// Why a request gets an error instead of an answer.
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

fn internal(error: db::Error) -> Failure {
    tracing::error!("cannot answer a REST request: {error}");
    Failure {
        status: 500,
        message: "internal error".into(),
    }
}

impl Engine {
    /// Answers `GET /api/v2/<path>`; `None` when the path is not one of ours.
    pub async fn get(
        &self,
        path: &[&str],
        pairs: &[(String, String)],
        accept: Option<&str>,
    ) -> Option<ApiResponse> {
        let collection = |collection: &'static Collection| (collection, None);
        let (target, scope) = match path {
            [""] => return Some(respond(Ok(root_links()), accept)),
            ["reconfig"] => return Some(respond(Ok(self.reconfig()), accept)),
            ["reporters"] => return Some(respond(self.reporters().await, accept)),
            ["reporters", name, "deliveries"] => {
                return Some(respond(self.deliveries(name, pairs).await, accept))
            }
            ["masters"] | ["masters", "1"] => {
                return Some(respond(Ok(self.masters().await), accept))
            }
            ["logs", id, "raw"] => return Some(self.raw_log(id).await),
            ["logs", id, "contents"] => return Some(self.log_contents(id, pairs, accept).await),
            ["schedulers"] => {
                return Some(self.configured(
                    &self.schedulers(),
                    SCHEDULER_FIELDS,
                    "schedulers",
                    None,
                    pairs,
                    accept,
                ))
            }
            ["schedulers", id] => {
                return Some(self.configured(
                    &self.schedulers(),
                    SCHEDULER_FIELDS,
                    "schedulers",
                    Some(id),
                    pairs,
                    accept,
                ))
            }
            ["forceschedulers"] => {
                return Some(self.configured(
                    &self.forceschedulers(),
                    FORCESCHEDULER_FIELDS,
                    "forceschedulers",
                    None,
                    pairs,
                    accept,
                ))
            }
            ["forceschedulers", name] => {
                return Some(self.configured(
                    &self.forceschedulers(),
                    FORCESCHEDULER_FIELDS,
                    "forceschedulers",
                    Some(name),
                    pairs,
                    accept,
                ))
            }
            ["changes"] => collection(&db::CHANGES),
            ["builders"] => collection(&db::BUILDERS),
            ["builds"] => collection(&db::BUILDS),
            ["buildrequests"] => collection(&db::BUILDREQUESTS),
            ["buildsets"] => collection(&db::BUILDSETS),
            ["workers"] => collection(&db::WORKERS),
            ["builders", id, "builds"] => match self.id_or_name(&db::BUILDERS, id).await {
                Ok(builderid) => (&db::BUILDS, scope("builderid", builderid)),
                Err(failure) => return Some(respond(Err(failure), accept)),
            },
            ["builds", id, "steps"] => match integer(id, "build") {
                Ok(buildid) => (&db::STEPS, scope("buildid", buildid)),
                Err(failure) => return Some(respond(Err(failure), accept)),
            },
            ["steps", id, "logs"] => match integer(id, "step") {
                Ok(stepid) => (&db::LOGS, scope("stepid", stepid)),
                Err(failure) => return Some(respond(Err(failure), accept)),
            },
            ["changes", id] => return Some(self.single(&db::CHANGES, id, pairs, accept).await),
            ["builders", id] => return Some(self.single(&db::BUILDERS, id, pairs, accept).await),
            ["builds", id] => return Some(self.single(&db::BUILDS, id, pairs, accept).await),
            ["steps", id] => return Some(self.single(&db::STEPS, id, pairs, accept).await),
            ["logs", id] => return Some(self.single(&db::LOGS, id, pairs, accept).await),
            ["buildrequests", id] => {
                return Some(self.single(&db::BUILDREQUESTS, id, pairs, accept).await)
            }
            ["buildsets", id] => return Some(self.single(&db::BUILDSETS, id, pairs, accept).await),
            ["workers", id] => return Some(self.single(&db::WORKERS, id, pairs, accept).await),
            _ => return None,
        };
        Some(self.list(target, scope, pairs, accept).await)
    }

    /// A listing of a stored collection, streamed.
    async fn list(
        &self,
        collection: &'static Collection,
        scope: Option<Scope>,
        pairs: &[(String, String)],
        accept: Option<&str>,
    ) -> ApiResponse {
        let (pairs, shape) = self.shape(collection, pairs);
        let listing = match Listing::parse(&pairs, collection.fields) {
            Ok(listing) => listing,
            Err(message) => return respond(Err(bad_request(message)), accept),
        };
        let selected = listing.clone();
        let shape: Shape = Arc::new(move |object| selected.select(shape(object)));
        let timeout = self.control.view().rest_timeout;
        response::listing(&self.db, collection, scope, listing, accept, shape, timeout).await
    }

    /// One stored object, by its id (or, for builders and workers, its name),
    /// as a list of one.
    async fn single(
        &self,
        collection: &'static Collection,
        id: &str,
        pairs: &[(String, String)],
        accept: Option<&str>,
    ) -> ApiResponse {
        let (pairs, shape) = self.shape(collection, pairs);
        let result = async {
            let listing = Listing::parse(&pairs, collection.fields).map_err(bad_request)?;
            if listing.has_filters() {
                return Err(bad_request("filters apply only to collections"));
            }
            let number = self.id_or_name(collection, id).await?;
            let object = self
                .db
                .rest_object(collection, number)
                .await
                .map_err(internal)?
                .ok_or_else(|| {
                    not_found(format!("not found while getting {} {id}", collection.noun))
                })?;
            Ok(json!({collection.key: [listing.select(shape(object))], "meta": {}}))
        };
        respond(result.await, accept)
    }

    /// An object's id: the number given, or for builders and workers, the
    /// id of the one of that name.
    async fn id_or_name(&self, collection: &'static Collection, id: &str) -> Result<i64, Failure> {
        if let Ok(number) = id.parse() {
            return Ok(number);
        }
        if !std::ptr::eq(collection, &db::BUILDERS) && !std::ptr::eq(collection, &db::WORKERS) {
            return Err(bad_request(format!(
                "invalid {} id '{id}'",
                collection.noun
            )));
        }
        self.db
            .rest_id_by_name(collection, id)
            .await
            .map_err(internal)?
            .ok_or_else(|| not_found(format!("no {} is named '{id}'", collection.noun)))
    }

    /// The query without the parameters that only shape objects, and the
    /// shaping: the build properties `property=` asks for (Buildbot leaves
    /// them out otherwise), the workers' connections from the running master.
    fn shape(
        &self,
        collection: &'static Collection,
        pairs: &[(String, String)],
    ) -> (Vec<(String, String)>, Shape) {
        if std::ptr::eq(collection, &db::BUILDS) {
            let wanted: Vec<String> = pairs
                .iter()
                .filter(|(name, _)| name == "property")
                .flat_map(|(_, value)| value.split(',').map(str::to_owned))
                .collect();
            let rest = pairs
                .iter()
                .filter(|(name, _)| name != "property")
                .cloned()
                .collect();
            return (rest, Arc::new(move |build| keep_properties(build, &wanted)));
        }
        if std::ptr::eq(collection, &db::WORKERS) {
            let view = self.control.view();
            return (
                pairs.to_vec(),
                Arc::new(move |mut worker| {
                    let name = worker["name"].as_str().unwrap_or_default().to_owned();
                    worker["configured_on"] = view
                        .builders
                        .iter()
                        .filter(|(_, config)| config.workernames.contains(&name))
                        .map(
                            |(builderid, _)| json!({"builderid": builderid, "masterid": MASTER_ID}),
                        )
                        .collect();
                    worker
                }),
            );
        }
        (pairs.to_vec(), Arc::new(|object| object))
    }

    /// A collection that comes from the configuration: small, bounded by it,
    /// and filtered in memory with the same query options.
    fn configured(
        &self,
        rows: &[Value],
        fields: &'static [Field],
        key: &str,
        single: Option<&str>,
        pairs: &[(String, String)],
        accept: Option<&str>,
    ) -> ApiResponse {
        let listing = match Listing::parse(pairs, fields) {
            Ok(listing) => listing,
            Err(message) => return respond(Err(bad_request(message)), accept),
        };
        if let Some(id) = single {
            let result = if listing.has_filters() {
                Err(bad_request("filters apply only to collections"))
            } else {
                rows.iter()
                    .find(|row| {
                        row["name"] == id
                            || row.get("schedulerid").and_then(Value::as_u64)
                                == id.parse::<u64>().ok()
                    })
                    .map(|row| json!({key: [listing.select(row.clone())], "meta": {}}))
                    .ok_or_else(|| {
                        not_found(format!(
                            "not found while getting {} {id}",
                            key.trim_end_matches('s')
                        ))
                    })
            };
            return respond(result, accept);
        }
        let order: &[(&str, bool)] = if key == "schedulers" {
            &[("schedulerid", false)]
        } else {
            &[]
        };
        let (page, total) = query::apply(&listing, rows.to_vec(), order);
        let page: Vec<Value> = page.into_iter().map(|row| listing.select(row)).collect();
        respond(Ok(json!({key: page, "meta": {"total": total}})), accept)
    }

    /// `GET /api/v2/reporters`: each configured reporter with how many of
    /// its requests are pending, delivered, dead-lettered or dropped.
    async fn reporters(&self) -> Result<Value, Failure> {
        let counts = self.db.outbox_counts().await.map_err(internal)?;
        let reporters: Vec<Value> = self
            .control
            .view()
            .reporters
            .iter()
            .map(|(name, kind)| {
                let counts = counts.get(name).copied().unwrap_or_default();
                json!({
                    "name": name,
                    "type": kind,
                    "pending": counts.pending,
                    "delivered": counts.delivered,
                    "failed": counts.dead,
                    "dropped": counts.dropped,
                })
            })
            .collect();
        let total = reporters.len();
        Ok(json!({"reporters": reporters, "meta": {"total": total}}))
    }

    /// `GET /api/v2/reporters/<name>/deliveries[?limit=N]`: its newest
    /// requests (50, at most 500), newest first, without header values or
    /// URL queries.
    async fn deliveries(&self, name: &str, pairs: &[(String, String)]) -> Result<Value, Failure> {
        let mut limit = 50;
        for (key, value) in pairs {
            match key.as_str() {
                "limit" => {
                    limit = value
                        .parse::<u64>()
                        .ok()
                        .filter(|n| (1..=500).contains(n))
                        .ok_or_else(|| bad_request("limit must be a number from 1 to 500"))?
                }
                other => {
                    return Err(bad_request(format!(
                        "unrecognized query parameter '{other}'"
                    )))
                }
            }
        }
        let known = self.control.view().reporters.iter().any(|(n, _)| n == name);
        let deliveries = self
            .db
            .recent_deliveries(name.to_owned(), limit)
            .await
            .map_err(internal)?;
        if !known && deliveries.is_empty() {
            return Err(not_found(format!("no reporter is named '{name}'")));
        }
        let total = deliveries.len();
        Ok(json!({"deliveries": deliveries, "meta": {"total": total}}))
    }

    fn schedulers(&self) -> Vec<Value> {
        self.control
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
            .collect()
    }

    fn forceschedulers(&self) -> Vec<Value> {
        self.control
            .view()
            .schedulers
            .iter()
            .filter_map(|scheduler| {
                let SchedulerKind::Force(form) = &scheduler.kind else {
                    return None;
                };
                let fields: Vec<Value> = form
                    .parameters()
                    .map(|p| {
                        let mut field = json!({
                            "name": p.name,
                            "fullName": p.name,
                            "label": p.label,
                            "type": p.type_name(),
                            "default": p.default,
                            "required": p.required,
                            "hide": false,
                            "readonly": p.fixed,
                        });
                        // Buildbot's ChoiceStringParameter fields.
                        if let Kind::Choice {
                            choices,
                            strict,
                            multiple,
                        } = &p.kind
                        {
                            field["choices"] = json!(choices);
                            field["strict"] = json!(strict);
                            field["multiple"] = json!(multiple);
                        }
                        field
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
            .collect()
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

    /// Buildbot's `logs/<id>/contents`: lines `offset` to `offset + limit - 1`
    /// (to the end without a limit), streamed.
    async fn log_contents(
        &self,
        id: &str,
        pairs: &[(String, String)],
        accept: Option<&str>,
    ) -> ApiResponse {
        let found = async {
            let logid = integer(id, "log")?;
            let (first, limit) = line_range(pairs)?;
            let log = self.log(logid).await?;
            let last = match limit {
                Some(limit) => first + limit - 1,
                None => (log["num_lines"].as_i64().unwrap_or(0) - 1).max(0),
            };
            if first > last {
                return Err(not_found(format!("no lines {first}-{last} in log {logid}")));
            }
            Ok((logid, first, last))
        };
        match found.await {
            Ok((logid, first, last)) => {
                let lines = self.db.log_lines(logid, first, Some(last));
                let form = LogForm::Contents {
                    logid,
                    firstline: first,
                };
                response::log(lines, form, accept).await
            }
            Err(failure) => respond(Err(failure), accept),
        }
    }

    /// The log as plain text, each line without its channel prefix, streamed.
    async fn raw_log(&self, id: &str) -> ApiResponse {
        let found = async {
            let logid = integer(id, "log")?;
            Ok::<_, Failure>((logid, self.log(logid).await?))
        };
        match found.await {
            Ok((logid, log)) => {
                let form = LogForm::Raw {
                    strip_channels: log["type"] == "s",
                };
                response::log(self.db.log_lines(logid, 0, None), form, None).await
            }
            Err(failure) => respond(Err(failure), None),
        }
    }

    async fn log(&self, logid: i64) -> Result<Value, Failure> {
        self.db
            .rest_object(&db::LOGS, logid)
            .await
            .map_err(internal)?
            .ok_or_else(|| not_found(format!("no log {logid}")))
    }
}

/// `offset` and `limit` of a log's lines; nothing else is understood.
fn line_range(pairs: &[(String, String)]) -> Result<(i64, Option<i64>), Failure> {
    let mut range = (0, None);
    for (name, value) in pairs {
        let count = || {
            value
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| bad_request(format!("invalid value '{value}' for '{name}'")))
        };
        match name.as_str() {
            "offset" => range.0 = count()?,
            "limit" => range.1 = Some(count()?),
            other => {
                return Err(bad_request(format!(
                    "unrecognized query parameter '{other}'"
                )))
            }
        }
    }
    Ok(range)
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
    "reporters",
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

fn scope(column: &'static str, id: i64) -> Option<Scope> {
    Some(Scope { column, id })
}

fn integer(id: &str, what: &str) -> Result<i64, Failure> {
    id.parse()
        .map_err(|_| bad_request(format!("invalid {what} id '{id}'")))
}

/// Keeps the build properties that `property=` asked for (`*`: all).
fn keep_properties(mut build: Value, wanted: &[String]) -> Value {
    let Some(object) = build.as_object_mut() else {
        return build;
    };
    if wanted.is_empty() {
        object.remove("properties");
    } else if !wanted.iter().any(|name| name == "*") {
        if let Some(Value::Object(properties)) = object.get_mut("properties") {
            properties.retain(|name, _| wanted.contains(name));
        }
    }
    build
}

/// A whole answer: compact JSON when asked for, else indented text, as
/// Buildbot answers; an error as `{"error": "..."}`.
fn respond(result: Result<Value, Failure>, accept: Option<&str>) -> ApiResponse {
    match result {
        Ok(body) if accept.is_some_and(|a| a.contains("application/json")) => {
            ApiResponse::full(200, JSON, body.to_string())
        }
        Ok(body) => ApiResponse::full(200, TEXT, format!("{body:#}")),
        Err(failure) => ApiResponse::error(failure.status, &failure.message),
    }
}
