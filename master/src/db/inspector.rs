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

/// How much of a verdict (a dialect's own answer, maybe long) is kept.
const KEPT_VERDICT: usize = 1024;

/// How many of a delivery's changes the listing expands (a push of
/// thousands of commits is counted, not shown whole).
const SHOWN_CHANGES: usize = 100;

/// Names of headers, form fields and JSON keys that carry credentials,
/// signatures or tokens: the API shows their values as `<redacted>`.
fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "authoriz",
        "cookie",
        "credential",
        "signature",
        "token",
        "secret",
        "key",
        "passw",
    ]
    .iter()
    .any(|word| name.contains(word))
}

const REDACTED: &str = "<redacted>";

/// JSON with the values of secret keys redacted whole, whatever they hold,
/// at any depth.
fn redact_json(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            for (key, field) in fields.iter_mut() {
                if is_secret_name(key) {
                    *field = Value::from(REDACTED);
                } else {
                    redact_json(field);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_json),
        _ => {}
    }
}

/// A form (or a query string) with the values of its secret fields
/// redacted, and those of fields holding JSON (GitHub's `payload=`)
/// redacted within.
fn redact_form(form: &[u8]) -> String {
    let mut shown = form_urlencoded::Serializer::new(String::new());
    for (key, value) in form_urlencoded::parse(form) {
        if is_secret_name(&key) {
            shown.append_pair(&key, REDACTED);
        } else if let Ok(mut json @ (Value::Object(_) | Value::Array(_))) =
            serde_json::from_str::<Value>(&value)
        {
            redact_json(&mut json);
            shown.append_pair(&key, &json.to_string());
        } else {
            shown.append_pair(&key, &value);
        }
    }
    shown.finish()
}

/// A request's path as the API shows it: secret query fields redacted (a
/// Mattermost slash command sent by GET carries its token there).
fn shown_path(path: &str) -> String {
    match path.split_once('?') {
        Some((path, query)) => format!("{path}?{}", redact_form(query.as_bytes())),
        None => path.to_owned(),
    }
}

/// The start of `text`, at most `max` bytes, cut on a character.
fn head(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A body as the API shows it, as its `Content-Type` says it is: JSON or a
/// form with its secret fields redacted. Anything that cannot be redacted
/// (another type, or not what its type says) is not shown, only measured.
/// The start of it, and whether the rest was cut.
fn shown_body(content_type: Option<&str>, body: &[u8]) -> (String, bool) {
    if body.is_empty() {
        return (String::new(), false);
    }
    let content_type = content_type.unwrap_or_default().to_ascii_lowercase();
    let redacted = if content_type.contains("json") {
        serde_json::from_slice::<Value>(body).ok().map(|mut json| {
            redact_json(&mut json);
            json.to_string()
        })
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        std::str::from_utf8(body)
            .ok()
            .map(|form| redact_form(form.trim_end().as_bytes()))
    } else {
        None
    };
    let Some(shown) = redacted else {
        let kind = if content_type.is_empty() {
            "no type"
        } else {
            content_type.as_str()
        };
        return (
            format!("<{} bytes of {kind}, not shown>", body.len()),
            false,
        );
    };
    let cut = head(&shown, SHOWN_BODY);
    (cut.to_owned(), cut.len() < shown.len())
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
                        head(&record.verdict, KEPT_VERDICT),
                        changeids,
                        record.replay_of,
                    ],
                    |row| row.get(0),
                )?;
            prune_dialect(conn, &record.dialect, keep)?;
            Ok(id)
        })
        .await
    }

    /// Keeps the newest `keep` deliveries of each of `dialects` and none of
    /// any other (a dialect no longer configured); how many went.
    pub async fn prune_hook_deliveries(
        &self,
        dialects: Vec<String>,
        keep: usize,
    ) -> Result<usize, Error> {
        self.transact(move |conn| {
            let stored: Vec<String> = conn
                .prepare_cached("SELECT DISTINCT dialect FROM hook_deliveries")?
                .query_map([], |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            let mut pruned = 0;
            for dialect in stored {
                let keep = if dialects.contains(&dialect) { keep } else { 0 };
                pruned += prune_dialect(conn, &dialect, keep)?;
            }
            Ok(pruned)
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
                    let headers: Vec<(String, String)> =
                        serde_json::from_str(&row.get::<_, String>(6)?).unwrap_or_default();
                    let content_type = headers
                        .iter()
                        .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
                        .map(|(_, value)| value.as_str());
                    let body: Vec<u8> = row.get(7)?;
                    let (shown, truncated) = shown_body(content_type, &body);
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
                            "body": shown,
                            "body_size": body.len(),
                            "body_truncated": truncated,
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
                    .take(SHOWN_CHANGES)
                    .map(|changeid| change_outcome(conn, *changeid))
                    .collect::<Result<Vec<_>, _>>()?;
                delivery["changes"] = Value::Array(changes.into_iter().flatten().collect());
                delivery["changes_total"] = Value::from(changeids.len());
                deliveries.push(delivery);
            }
            Ok(deliveries)
        })
        .await
    }
}

/// Deletes all but the newest `keep` deliveries of `dialect`.
fn prune_dialect(conn: &Connection, dialect: &str, keep: usize) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "DELETE FROM hook_deliveries WHERE dialect = ?1 AND id <= (
             SELECT id FROM hook_deliveries WHERE dialect = ?1
             ORDER BY id DESC LIMIT 1 OFFSET ?2)",
    )?
    .execute((dialect, keep as i64))
}

/// The headers as stored, secrets redacted.
fn shown_headers(headers: &[(String, String)]) -> Value {
    Value::Array(
        headers
            .iter()
            .map(|(name, value)| {
                let value = if is_secret_name(name) {
                    REDACTED
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

    const FORM: Option<&str> = Some("application/x-www-form-urlencoded");
    const JSON: Option<&str> = Some("application/json; charset=utf-8");

    fn shown_json(body: &[u8]) -> Value {
        serde_json::from_str(&shown_body(JSON, body).0).unwrap()
    }

    #[test]
    fn secret_fields_of_forms_and_json_bodies_are_redacted() {
        let form = b"token=xyz123&team_domain=acme&text=build+app&author=ada\n";
        assert_eq!(
            shown_body(FORM, form),
            (
                "token=%3Credacted%3E&team_domain=acme&text=build+app&author=ada".to_owned(),
                false
            )
        );
        let shown = shown_json(
            br#"{"object_kind": "push", "secret": "s", "repository": {"api_key": "k", "name": "app"}}"#,
        );
        assert_eq!(shown["secret"], REDACTED);
        assert_eq!(shown["repository"]["api_key"], REDACTED);
        assert_eq!(shown["repository"]["name"], "app");
        // A secret key's value goes whole, whatever it holds.
        let shown = shown_json(
            br#"{"tokens": ["t1", ["t2"]], "secret": {"value": "x"}, "names": ["a"], "passwd": "p"}"#,
        );
        assert_eq!(shown["tokens"], REDACTED);
        assert_eq!(shown["secret"], REDACTED);
        assert_eq!(shown["passwd"], REDACTED);
        assert_eq!(shown["names"], json!(["a"]));
        // JSON carried in a form field is redacted within.
        let (shown, _) = shown_body(
            FORM,
            b"payload=%7B%22secret%22%3A%22s%22%2C%22ref%22%3A%22main%22%7D",
        );
        let payload: String = form_urlencoded::parse(shown.as_bytes())
            .find(|(key, _)| key == "payload")
            .map(|(_, value)| value.into_owned())
            .unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&payload).unwrap(),
            json!({"secret": REDACTED, "ref": "main"})
        );
        assert_eq!(
            shown_path("/change_hook/mattermost?token=xyz123&text=build+app"),
            "/change_hook/mattermost?token=%3Credacted%3E&text=build+app"
        );
        assert_eq!(shown_path("/change_hook/base"), "/change_hook/base");
    }

    #[test]
    fn what_cannot_be_redacted_is_not_shown() {
        assert_eq!(
            shown_body(Some("text/plain"), b"token xyz"),
            ("<9 bytes of text/plain, not shown>".to_owned(), false)
        );
        assert_eq!(
            shown_body(None, b"token=xyz"),
            ("<9 bytes of no type, not shown>".to_owned(), false)
        );
        assert_eq!(
            shown_body(JSON, b"{\"token\": broken"),
            (
                "<16 bytes of application/json; charset=utf-8, not shown>".to_owned(),
                false
            )
        );
        assert_eq!(shown_body(FORM, b""), (String::new(), false));
    }

    #[test]
    fn a_long_body_is_cut_on_a_character_and_says_so() {
        let long = format!("{{\"x\": \"{}\"}}", "é".repeat(3000));
        let (shown, truncated) = shown_body(JSON, long.as_bytes());
        assert!(shown.len() <= SHOWN_BODY && shown.len() > SHOWN_BODY - 2);
        assert!(truncated);
        // Measured on what is shown: a redaction longer than the secret
        // does not make a short body look cut.
        let (shown, truncated) = shown_body(FORM, b"token=x");
        assert_eq!((shown.as_str(), truncated), ("token=%3Credacted%3E", false));
    }

    fn delivery(dialect: &str) -> HookDelivery {
        HookDelivery {
            dialect: dialect.into(),
            received_at: 1.0,
            correlation: "c".into(),
            method: "POST".into(),
            path: format!("/change_hook/{dialect}"),
            headers: Vec::new(),
            body: Vec::new(),
            status: 200,
            verdict: "v".repeat(5000),
            changeids: Vec::new(),
            replay_of: None,
        }
    }

    #[tokio::test]
    async fn what_is_kept_follows_the_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("state.sqlite")).unwrap();
        for dialect in ["github", "gitlab", "github", "github", "gitlab"] {
            db.record_delivery(delivery(dialect), 10).await.unwrap();
        }
        let kept = |db: Db| async move {
            let kept = db.hook_deliveries(None, None, 100).await.unwrap();
            kept.iter()
                .map(|d| d["deliveryid"].as_i64().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(kept(db.clone()).await, [5, 4, 3, 2, 1]);
        let shown = db.hook_deliveries(None, Some(1), 1).await.unwrap();
        assert_eq!(shown[0]["verdict"].as_str().unwrap().len(), KEPT_VERDICT);
        // gitlab is no longer configured; github keeps two.
        let pruned = db
            .prune_hook_deliveries(vec!["github".into()], 2)
            .await
            .unwrap();
        assert_eq!(pruned, 3);
        assert_eq!(kept(db.clone()).await, [4, 3]);
    }

    #[test]
    fn secret_headers_are_redacted_for_the_api() {
        let stored = vec![
            ("Content-Type".to_owned(), "application/json".to_owned()),
            ("X-Hub-Signature-256".to_owned(), "sha256=abc".to_owned()),
            ("X-Gitlab-Token".to_owned(), "t0k3n".to_owned()),
            ("Authorization".to_owned(), "Basic eDp5".to_owned()),
        ];
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
