//! The webhook inspector's storage: the last deliveries of each dialect,
//! kept as they came (a replay sends that copy again), and what came of
//! them: the changes, what each scheduler decided of each, and the build
//! requests and builds that followed.

use rusqlite::{Connection, OptionalExtension};
use serde_json::{json, Value};

use super::{Db, Error};

/// A delivery as it came, and the master's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct HookDelivery {
    pub dialect: String,
    pub received_at: f64,
    pub correlation: String,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub status: u16,
    /// The answer's text, or why the request was refused.
    pub verdict: String,
    pub changeids: Vec<i64>,
    /// The delivery this one replayed.
    pub replay_of: Option<i64>,
}

/// What a replay sends again.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredHook {
    pub dialect: String,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// How it was answered when it came.
    pub verdict: String,
}

/// How much of a body the API shows.
const SHOWN_BODY: usize = 2048;

/// Names of headers, form fields and JSON keys that carry credentials,
/// signatures or tokens: the API shows their values as `<redacted>`.
fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "authorization",
        "cookie",
        "signature",
        "token",
        "secret",
        "key",
        "password",
    ]
    .iter()
    .any(|word| name.contains(word))
}

const REDACTED: &str = "<redacted>";

/// JSON with the values of secret keys redacted, at any depth.
fn redact_json(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            for (key, field) in fields.iter_mut() {
                match field {
                    Value::Object(_) => redact_json(field),
                    // A list of secrets (`"tokens": ["…"]`) loses each.
                    Value::Array(items) if is_secret_name(key) => {
                        for item in items.iter_mut().filter(|i| !i.is_object() && !i.is_array()) {
                            *item = Value::from(REDACTED);
                        }
                        items.iter_mut().for_each(redact_json);
                    }
                    Value::Array(_) => redact_json(field),
                    _ if is_secret_name(key) => *field = Value::from(REDACTED),
                    _ => {}
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_json),
        _ => {}
    }
}

/// A form (or a query string) with the values of its secret fields
/// redacted.
fn redact_form(form: &[u8]) -> String {
    form_urlencoded::parse(form)
        .map(|(key, value)| {
            let value = if is_secret_name(&key) {
                REDACTED.into()
            } else {
                value
            };
            format!(
                "{}={}",
                form_urlencoded::byte_serialize(key.as_bytes()).collect::<String>(),
                form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>()
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A request's path as the API shows it: secret query fields redacted (a
/// Mattermost slash command sent by GET carries its token there).
fn shown_path(path: &str) -> String {
    match path.split_once('?') {
        Some((path, query)) => format!("{path}?{}", redact_form(query.as_bytes())),
        None => path.to_owned(),
    }
}

/// The start of a body as the API shows it: a JSON body or a form (as
/// Mattermost's slash commands post, with their token) with its secret
/// fields redacted; any other text as it is.
fn shown_body(body: &[u8]) -> String {
    let shown = if let Ok(mut json) = serde_json::from_slice::<Value>(body) {
        redact_json(&mut json);
        json.to_string()
    } else {
        let text = String::from_utf8_lossy(body);
        let looks_like_form = !text.is_empty()
            && !text.contains(char::is_whitespace)
            && text.split('&').all(|pair| pair.contains('='));
        if looks_like_form {
            redact_form(body)
        } else {
            text.into_owned()
        }
    };
    let mut end = shown.len().min(SHOWN_BODY);
    while !shown.is_char_boundary(end) {
        end -= 1;
    }
    shown[..end].to_owned()
}

impl Db {
    /// Stores a delivery, keeping only the newest `keep` of its dialect.
    pub async fn record_delivery(&self, record: HookDelivery, keep: usize) -> Result<i64, Error> {
        self.transact(move |conn| {
            let headers = serde_json::to_string(&record.headers).unwrap_or_default();
            let changeids = serde_json::to_string(&record.changeids).unwrap_or_default();
            let id: i64 = conn
                .prepare_cached(
                    "INSERT INTO hook_deliveries (dialect, received_at, correlation, method, path,
                         headers, body, status, verdict, changeids, replay_of)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) RETURNING id",
                )?
                .query_row(
                    rusqlite::params![
                        record.dialect,
                        record.received_at,
                        record.correlation,
                        record.method,
                        record.path,
                        headers,
                        record.body,
                        record.status,
                        record.verdict,
                        changeids,
                        record.replay_of,
                    ],
                    |row| row.get(0),
                )?;
            conn.prepare_cached(
                "DELETE FROM hook_deliveries WHERE dialect = ?1 AND id <= (
                     SELECT id FROM hook_deliveries WHERE dialect = ?1
                     ORDER BY id DESC LIMIT 1 OFFSET ?2)",
            )?
            .execute((&record.dialect, keep as i64))?;
            Ok(id)
        })
        .await
    }

    /// The stored copy of delivery `id`, to replay.
    pub async fn stored_delivery(&self, id: i64) -> Result<Option<StoredHook>, Error> {
        self.read(move |conn| {
            let row = conn
                .prepare_cached(
                    "SELECT dialect, method, path, headers, body, verdict
                     FROM hook_deliveries WHERE id = ?1",
                )?
                .query_row([id], |row| {
                    let headers: String = row.get(3)?;
                    Ok(StoredHook {
                        dialect: row.get(0)?,
                        method: row.get(1)?,
                        path: row.get(2)?,
                        headers: serde_json::from_str(&headers).unwrap_or_default(),
                        body: row.get(4)?,
                        verdict: row.get(5)?,
                    })
                })
                .optional()?;
            Ok(row)
        })
        .await
    }

    /// The newest deliveries (of `dialect`, or of all), newest first, as
    /// the inspector shows them.
    pub async fn hook_deliveries(
        &self,
        dialect: Option<String>,
        id: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Value>, Error> {
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT id, dialect, received_at, correlation, method, path, headers, body,
                     status, verdict, changeids, replay_of
                 FROM hook_deliveries
                 WHERE (?1 IS NULL OR dialect = ?1) AND (?2 IS NULL OR id = ?2)
                 ORDER BY id DESC LIMIT ?3",
            )?;
            let rows = statement
                .query_map(rusqlite::params![dialect, id, limit as i64], |row| {
                    let headers: String = row.get(6)?;
                    let body: Vec<u8> = row.get(7)?;
                    let changeids: String = row.get(10)?;
                    Ok((
                        json!({
                            "deliveryid": row.get::<_, i64>(0)?,
                            "dialect": row.get::<_, String>(1)?,
                            "received_at": row.get::<_, f64>(2)?,
                            "correlation": row.get::<_, String>(3)?,
                            "method": row.get::<_, String>(4)?,
                            "path": shown_path(&row.get::<_, String>(5)?),
                            "headers": shown_headers(&headers),
                            "body": shown_body(&body),
                            "body_size": body.len(),
                            "body_truncated": body.len() > SHOWN_BODY,
                            "status": row.get::<_, u16>(8)?,
                            "verdict": row.get::<_, String>(9)?,
                            "replay_of": row.get::<_, Option<i64>>(11)?,
                        }),
                        serde_json::from_str::<Vec<i64>>(&changeids).unwrap_or_default(),
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let mut deliveries = Vec::with_capacity(rows.len());
            for (mut delivery, changeids) in rows {
                let changes = changeids
                    .iter()
                    .map(|changeid| change_outcome(conn, *changeid))
                    .collect::<Result<Vec<_>, _>>()?;
                delivery["changes"] = Value::Array(changes.into_iter().flatten().collect());
                deliveries.push(delivery);
            }
            Ok(deliveries)
        })
        .await
    }
}

/// The headers as stored, secrets redacted.
fn shown_headers(stored: &str) -> Value {
    let headers: Vec<(String, String)> = serde_json::from_str(stored).unwrap_or_default();
    Value::Array(
        headers
            .into_iter()
            .map(|(name, value)| {
                let value = if is_secret_name(&name) {
                    REDACTED.to_owned()
                } else {
                    value
                };
                json!([name, value])
            })
            .collect(),
    )
}

/// A change with what the schedulers decided of it and the build requests
/// and builds of its source stamp; `None` when the janitor removed it.
fn change_outcome(conn: &Connection, changeid: i64) -> Result<Option<Value>, Error> {
    let change = conn
        .prepare_cached(
            "SELECT branch, revision, repository, project, category, codebase, sourcestampid
             FROM changes WHERE changeid = ?1",
        )?
        .query_row([changeid], |row| {
            Ok((
                json!({
                    "changeid": changeid,
                    "branch": row.get::<_, Option<String>>(0)?,
                    "revision": row.get::<_, Option<String>>(1)?,
                    "repository": row.get::<_, String>(2)?,
                    "project": row.get::<_, String>(3)?,
                    "category": row.get::<_, Option<String>>(4)?,
                    "codebase": row.get::<_, String>(5)?,
                }),
                row.get::<_, i64>(6)?,
            ))
        })
        .optional()?;
    let Some((mut change, sourcestampid)) = change else {
        return Ok(None);
    };
    let schedulers = conn
        .prepare_cached(
            "SELECT scheduler, accepted, reason FROM change_decisions WHERE changeid = ?1
             ORDER BY scheduler",
        )?
        .query_map([changeid], |row| {
            Ok(json!({
                "scheduler": row.get::<_, String>(0)?,
                "accepted": row.get::<_, bool>(1)?,
                "reason": row.get::<_, String>(2)?,
            }))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let requests = conn
        .prepare_cached(
            "SELECT r.id, r.builderid, b.name, r.complete, r.results
             FROM buildset_sourcestamps s
             JOIN buildrequests r ON r.buildsetid = s.buildsetid
             JOIN builders b ON b.id = r.builderid
             WHERE s.sourcestampid = ?1 ORDER BY r.id",
        )?
        .query_map([sourcestampid], |row| {
            Ok(json!({
                "buildrequestid": row.get::<_, i64>(0)?,
                "builderid": row.get::<_, i64>(1)?,
                "builder": row.get::<_, String>(2)?,
                "complete": row.get::<_, bool>(3)?,
                "results": row.get::<_, Option<i64>>(4)?,
            }))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut with_builds = Vec::with_capacity(requests.len());
    for mut request in requests {
        let brid = request["buildrequestid"].as_i64().unwrap_or_default();
        let builds = conn
            .prepare_cached(
                "SELECT id, number, results, complete_at FROM builds WHERE buildrequestid = ?1
                 ORDER BY id",
            )?
            .query_map([brid], |row| {
                Ok(json!({
                    "buildid": row.get::<_, i64>(0)?,
                    "number": row.get::<_, i64>(1)?,
                    "results": row.get::<_, Option<i64>>(2)?,
                    "complete": row.get::<_, Option<i64>>(3)?.is_some(),
                }))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        request["builds"] = Value::Array(builds);
        with_builds.push(request);
    }
    change["schedulers"] = Value::Array(schedulers);
    change["buildrequests"] = Value::Array(with_builds);
    Ok(Some(change))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_fields_of_forms_and_json_bodies_are_redacted() {
        let form = b"token=xyz123&team_domain=acme&text=build+app&user_name=ada";
        let shown = shown_body(form);
        assert_eq!(
            shown,
            "token=%3Credacted%3E&team_domain=acme&text=build+app&user_name=ada"
        );
        let json = br#"{"object_kind": "push", "secret": "s", "repository": {"api_key": "k", "name": "app"}}"#;
        let shown: Value = serde_json::from_str(&shown_body(json)).unwrap();
        assert_eq!(shown["secret"], REDACTED);
        assert_eq!(shown["repository"]["api_key"], REDACTED);
        assert_eq!(shown["repository"]["name"], "app");
        let json = br#"{"tokens": ["t1", "t2"], "names": ["a"]}"#;
        let shown: Value = serde_json::from_str(&shown_body(json)).unwrap();
        assert_eq!(shown["tokens"], serde_json::json!([REDACTED, REDACTED]));
        assert_eq!(shown["names"], serde_json::json!(["a"]));
        assert_eq!(
            shown_path("/change_hook/mattermost?token=xyz123&text=build+app"),
            "/change_hook/mattermost?token=%3Credacted%3E&text=build+app"
        );
        assert_eq!(shown_path("/change_hook/base"), "/change_hook/base");
        assert_eq!(
            shown_body(b"plain text, not a form"),
            "plain text, not a form"
        );
        let long = format!("{{\"x\": \"{}\"}}", "é".repeat(3000));
        assert!(shown_body(long.as_bytes()).len() <= SHOWN_BODY);
    }

    #[test]
    fn secret_headers_are_redacted_for_the_api() {
        let stored = serde_json::to_string(&vec![
            ("Content-Type".to_owned(), "application/json".to_owned()),
            ("X-Hub-Signature-256".to_owned(), "sha256=abc".to_owned()),
            ("X-Gitlab-Token".to_owned(), "t0k3n".to_owned()),
            ("Authorization".to_owned(), "Basic eDp5".to_owned()),
        ])
        .unwrap();
        assert_eq!(
            shown_headers(&stored),
            json!([
                ["Content-Type", "application/json"],
                ["X-Hub-Signature-256", "<redacted>"],
                ["X-Gitlab-Token", "<redacted>"],
                ["Authorization", "<redacted>"]
            ])
        );
    }
}
