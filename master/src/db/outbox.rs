//! The reporters' outbox: every request a reporter asks for is stored here,
//! committed before any attempt to send it, and marked with each attempt's
//! outcome. A request with an idempotency key is stored once per reporter,
//! however often its event is rendered.

use rusqlite::{Connection, OptionalExtension};
use serde_json::{json, Value};

use super::{Db, Error};

/// A request to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOutgoing {
    pub reporter: String,
    pub idempotency_key: Option<String>,
    /// `scheme://host:port`: requests to one destination go one at a time,
    /// in the order they were stored.
    pub destination: String,
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout_ms: Option<u64>,
    pub buildid: i64,
    /// `started`, `finished`, …
    pub event: String,
}

/// A stored request that is due.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub id: i64,
    pub reporter: String,
    pub destination: String,
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout_ms: Option<u64>,
    pub idempotency_key: Option<String>,
    /// Attempts made so far.
    pub attempts: u32,
}

/// How many of a reporter's requests are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct OutboxCounts {
    pub pending: u64,
    pub delivered: u64,
    pub dead: u64,
    pub dropped: u64,
}

/// One stored request as the REST API shows it: its header values and the
/// query of its URL (which may carry tokens) are left out.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DeliveryRecord {
    pub deliveryid: i64,
    pub event: String,
    pub buildid: i64,
    pub method: String,
    pub url: String,
    pub header_names: Vec<String>,
    pub state: String,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub completed_at: Option<i64>,
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    Delivered {
        status: u16,
    },
    /// Tried again at `next_at` (epoch seconds).
    Retry {
        status: Option<u16>,
        error: String,
        next_at: f64,
    },
    /// No more attempts: dead-lettered.
    Dead {
        status: Option<u16>,
        error: String,
    },
    /// Its reporter is gone from the configuration.
    Dropped,
}

/// What a build dictionary holds beyond the build itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportParts {
    /// The authors of the changes the build's buildset is made of, in order,
    /// without repeats.
    pub blamelist: Vec<String>,
    /// The steps in Buildbot's reporter shape, each with its `logs` (names,
    /// no content), when asked for.
    pub steps: Vec<Value>,
}

/// A buildset whose every build request is done.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletedBuildset {
    pub complete_at: i64,
    pub results: Option<i64>,
    /// Every build made for it, retried ones included, in order.
    pub buildids: Vec<i64>,
}

impl Db {
    /// The blamelist of buildset `bsid` and, with `steps`, the steps of build
    /// `buildid`.
    pub async fn report_parts(
        &self,
        buildid: i64,
        bsid: i64,
        steps: bool,
    ) -> Result<ReportParts, Error> {
        self.read(move |conn| {
            let mut authors = conn.prepare_cached(
                "SELECT c.author FROM changes c
                 JOIN buildset_sourcestamps b ON b.sourcestampid = c.sourcestampid
                 WHERE b.buildsetid = ?1 ORDER BY c.changeid",
            )?;
            let mut blamelist: Vec<String> = Vec::new();
            for author in authors.query_map([bsid], |row| row.get::<_, String>(0))? {
                let author = author?;
                if !blamelist.contains(&author) {
                    blamelist.push(author);
                }
            }
            let steps = if steps {
                report_steps(conn, buildid)?
            } else {
                Vec::new()
            };
            Ok(ReportParts { blamelist, steps })
        })
        .await
    }

    /// Buildset `bsid` if it is complete.
    pub async fn completed_buildset(&self, bsid: i64) -> Result<Option<CompletedBuildset>, Error> {
        self.read(move |conn| {
            let completion = conn
                .prepare_cached(
                    "SELECT complete_at, results FROM buildsets WHERE id = ?1 AND complete = 1",
                )?
                .query_row([bsid], |row| {
                    Ok((row.get::<_, Option<i64>>(0)?, row.get::<_, Option<i64>>(1)?))
                })
                .optional()?;
            let Some((complete_at, results)) = completion else {
                return Ok(None);
            };
            let mut builds = conn.prepare_cached(
                "SELECT b.id FROM builds b JOIN buildrequests r ON r.id = b.buildrequestid
                 WHERE r.buildsetid = ?1 ORDER BY b.id",
            )?;
            let buildids = builds
                .query_map([bsid], |row| row.get::<_, i64>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(CompletedBuildset {
                complete_at: complete_at.unwrap_or_default(),
                results,
                buildids,
            }))
        })
        .await
    }

    /// Stores `requests` in one transaction; those whose (reporter,
    /// idempotency key) is stored already are skipped. Returns how many were
    /// new.
    pub async fn enqueue_outgoing(&self, requests: Vec<NewOutgoing>) -> Result<usize, Error> {
        self.transact(move |conn| {
            let mut insert = conn.prepare_cached(
                "INSERT OR IGNORE INTO outbox (reporter, idempotency_key, destination, method, url,
                     headers, body, timeout_ms, buildid, event, state, next_attempt_at, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'pending', 0, ?11)",
            )?;
            let mut stored = 0;
            for request in requests {
                let headers = serde_json::to_string(&request.headers).unwrap_or_default();
                stored += insert.execute((
                    &request.reporter,
                    &request.idempotency_key,
                    &request.destination,
                    &request.method,
                    &request.url,
                    headers,
                    &request.body,
                    request.timeout_ms.map(|ms| ms as i64),
                    request.buildid,
                    &request.event,
                    super::now(),
                ))?;
            }
            Ok(stored)
        })
        .await
    }

    /// The oldest pending request of each destination whose next attempt is
    /// due at `now` (epoch seconds), skipping `busy` destinations; and the
    /// time the next one not yet due becomes due, if any.
    pub async fn due_outgoing(
        &self,
        now: f64,
        busy: Vec<String>,
    ) -> Result<(Vec<Outgoing>, Option<f64>), Error> {
        self.read(move |conn| {
            let mut heads = conn.prepare_cached(&format!(
                "SELECT {OUTGOING_COLUMNS} FROM outbox WHERE id IN
                     (SELECT MIN(id) FROM outbox WHERE state = 'pending' GROUP BY destination)"
            ))?;
            let rows = heads.query_map([], outgoing)?;
            let mut due = Vec::new();
            let mut next: Option<f64> = None;
            for row in rows {
                let (outgoing, at) = row?;
                if busy.contains(&outgoing.destination) {
                    continue;
                }
                if at <= now {
                    due.push(outgoing);
                } else {
                    next = Some(next.map_or(at, |n: f64| n.min(at)));
                }
            }
            Ok((due, next))
        })
        .await
    }

    /// The counts of every reporter that has stored requests.
    pub async fn outbox_counts(
        &self,
    ) -> Result<std::collections::BTreeMap<String, OutboxCounts>, Error> {
        self.read(|conn| {
            let mut select = conn.prepare_cached(
                "SELECT reporter, state, COUNT(*) FROM outbox GROUP BY reporter, state",
            )?;
            let mut counts = std::collections::BTreeMap::<String, OutboxCounts>::new();
            let rows = select.query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })?;
            for row in rows {
                let (reporter, state, count) = row?;
                let entry = counts.entry(reporter).or_default();
                let count = count as u64;
                match state.as_str() {
                    "pending" => entry.pending += count,
                    "delivered" => entry.delivered += count,
                    "dead" => entry.dead += count,
                    _ => entry.dropped += count,
                }
            }
            Ok(counts)
        })
        .await
    }

    /// Reporter `reporter`'s newest `limit` requests, newest first.
    pub async fn recent_deliveries(
        &self,
        reporter: String,
        limit: u64,
    ) -> Result<Vec<DeliveryRecord>, Error> {
        self.read(move |conn| {
            let mut select = conn.prepare_cached(
                "SELECT id, event, buildid, method, url, headers, state, attempts, last_status,
                        last_error, created_at, completed_at
                 FROM outbox WHERE reporter = ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = select.query_map((reporter, limit as i64), |row| {
                let url: String = row.get(4)?;
                let headers: String = row.get(5)?;
                let headers: Vec<(String, String)> =
                    serde_json::from_str(&headers).unwrap_or_default();
                Ok(DeliveryRecord {
                    deliveryid: row.get(0)?,
                    event: row.get(1)?,
                    buildid: row.get(2)?,
                    method: row.get(3)?,
                    url: shown_url(&url),
                    header_names: headers.into_iter().map(|(name, _)| name).collect(),
                    state: row.get(6)?,
                    attempts: row.get(7)?,
                    last_status: row.get(8)?,
                    last_error: row.get(9)?,
                    created_at: row.get(10)?,
                    completed_at: row.get(11)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    /// Makes dead-lettered request `id` of `reporter` pending again, due now
    /// with a fresh count of attempts; false when there is no such dead request.
    pub async fn retry_delivery(&self, reporter: String, id: i64) -> Result<bool, Error> {
        self.transact(move |conn| {
            let changed = conn.execute(
                "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = 0,
                     completed_at = NULL
                 WHERE id = ?1 AND reporter = ?2 AND state = 'dead'",
                (id, reporter),
            )?;
            Ok(changed == 1)
        })
        .await
    }

    /// Forgets delivered and dropped requests completed before `before`
    /// (epoch seconds); dead-lettered ones stay, to be retried or read.
    pub async fn purge_outbox(&self, before: i64) -> Result<usize, Error> {
        self.transact(move |conn| {
            Ok(conn.execute(
                "DELETE FROM outbox WHERE state IN ('delivered', 'dropped') AND completed_at < ?1",
                [before],
            )?)
        })
        .await
    }

    /// Records how an attempt at request `id` ended.
    pub async fn record_attempt(&self, id: i64, attempt: Attempt) -> Result<(), Error> {
        self.transact(move |conn| {
            let now = super::now();
            match attempt {
                Attempt::Delivered { status } => conn.execute(
                    "UPDATE outbox SET state = 'delivered', attempts = attempts + 1,
                         last_status = ?2, last_error = NULL, completed_at = ?3 WHERE id = ?1",
                    (id, status, now),
                )?,
                Attempt::Retry {
                    status,
                    error,
                    next_at,
                } => conn.execute(
                    "UPDATE outbox SET attempts = attempts + 1, last_status = ?2,
                         last_error = ?3, next_attempt_at = ?4 WHERE id = ?1",
                    (id, status, error, next_at),
                )?,
                Attempt::Dead { status, error } => conn.execute(
                    "UPDATE outbox SET state = 'dead', attempts = attempts + 1,
                         last_status = ?2, last_error = ?3, completed_at = ?4 WHERE id = ?1",
                    (id, status, error, now),
                )?,
                Attempt::Dropped => conn.execute(
                    "UPDATE outbox SET state = 'dropped', completed_at = ?2 WHERE id = ?1",
                    (id, now),
                )?,
            };
            Ok(())
        })
        .await
    }
}

fn report_steps(conn: &Connection, buildid: i64) -> Result<Vec<Value>, Error> {
    let mut steps = conn.prepare_cached(
        "SELECT id, number, name, started_at, complete_at, state_string, results
         FROM steps WHERE buildid = ?1 ORDER BY number",
    )?;
    let mut logs = conn.prepare_cached(
        "SELECT id, name, type, num_lines FROM logs WHERE stepid = ?1 ORDER BY id",
    )?;
    let rows: Vec<(i64, Value)> = steps
        .query_map([buildid], |row| {
            let complete_at: Option<i64> = row.get(4)?;
            Ok((
                row.get(0)?,
                json!({
                    "stepid": row.get::<_, i64>(0)?,
                    "number": row.get::<_, i64>(1)?,
                    "name": row.get::<_, String>(2)?,
                    "buildid": buildid,
                    "started_at": row.get::<_, i64>(3)?,
                    "complete": complete_at.is_some(),
                    "complete_at": complete_at,
                    "state_string": row.get::<_, String>(5)?,
                    "results": row.get::<_, Option<i64>>(6)?,
                    "hidden": false,
                }),
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut built = Vec::with_capacity(rows.len());
    for (stepid, mut step) in rows {
        let step_logs: Vec<Value> = logs
            .query_map([stepid], |row| {
                Ok(json!({
                    "logid": row.get::<_, i64>(0)?,
                    "name": row.get::<_, String>(1)?,
                    "type": row.get::<_, String>(2)?,
                    "num_lines": row.get::<_, i64>(3)?,
                }))
            })?
            .collect::<rusqlite::Result<_>>()?;
        step["logs"] = Value::Array(step_logs);
        built.push(step);
    }
    Ok(built)
}

/// `url` as logs and the API show it: without credentials, query or
/// fragment, which may carry secrets.
pub fn shown_url(url: &str) -> String {
    let mut shown = match url.find(['?', '#']) {
        Some(at) => format!("{}?…", &url[..at]),
        None => url.to_string(),
    };
    if let Some(scheme_end) = shown.find("://") {
        let authority_start = scheme_end + 3;
        let authority_end = shown[authority_start..]
            .find(['/', '?'])
            .map_or(shown.len(), |at| authority_start + at);
        if let Some(at) = shown[authority_start..authority_end].rfind('@') {
            shown.replace_range(authority_start..authority_start + at + 1, "…@");
        }
    }
    shown
}

/// What [`outgoing`] reads.
const OUTGOING_COLUMNS: &str = "id, reporter, destination, method, url, headers, body, timeout_ms,
     idempotency_key, attempts, next_attempt_at";

/// A stored request and when it is due, from a row of [`OUTGOING_COLUMNS`].
fn outgoing(row: &rusqlite::Row<'_>) -> rusqlite::Result<(Outgoing, f64)> {
    let headers: String = row.get(5)?;
    let timeout_ms: Option<i64> = row.get(7)?;
    Ok((
        Outgoing {
            id: row.get(0)?,
            reporter: row.get(1)?,
            destination: row.get(2)?,
            method: row.get(3)?,
            url: row.get(4)?,
            headers: serde_json::from_str(&headers).unwrap_or_default(),
            body: row.get(6)?,
            timeout_ms: timeout_ms.map(|ms| ms as u64),
            idempotency_key: row.get(8)?,
            attempts: row.get(9)?,
        },
        row.get(10)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(reporter: &str, key: Option<&str>, destination: &str) -> NewOutgoing {
        NewOutgoing {
            reporter: reporter.into(),
            idempotency_key: key.map(str::to_string),
            destination: destination.into(),
            method: "POST".into(),
            url: format!("{destination}/hook"),
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: b"{}".to_vec(),
            timeout_ms: None,
            buildid: 1,
            event: "finished".into(),
        }
    }

    #[test]
    fn shown_urls_leave_credentials_and_queries_out() {
        assert_eq!(shown_url("http://h:80/p"), "http://h:80/p");
        assert_eq!(shown_url("https://h/p?token=t#f"), "https://h/p?…");
        assert_eq!(shown_url("https://u:pw@h/p"), "https://…@h/p");
        assert_eq!(shown_url("https://u:p@w@h?x=1"), "https://…@h?…");
    }

    #[tokio::test]
    async fn each_destination_sends_its_oldest_pending_request_first() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("state.sqlite")).unwrap();
        let a = "http://a:80";
        let b = "http://b:80";
        let stored = db
            .enqueue_outgoing(vec![
                request("r", Some("k1"), a),
                request("r", Some("k2"), a),
                request("r", Some("k3"), b),
                // The same key again: stored once.
                request("r", Some("k1"), a),
                // The same key for another reporter is another request.
                request("s", Some("k1"), b),
            ])
            .await
            .unwrap();
        assert_eq!(stored, 4);
        let (due, next) = db.due_outgoing(10.0, Vec::new()).await.unwrap();
        let ids: Vec<(String, Option<String>)> = due
            .iter()
            .map(|o| (o.destination.clone(), o.idempotency_key.clone()))
            .collect();
        assert_eq!(
            ids,
            [
                (a.to_string(), Some("k1".to_string())),
                (b.to_string(), Some("k3".to_string()))
            ]
        );
        assert_eq!(next, None);
        assert_eq!(due[0].headers[0].0, "Content-Type");
        // A busy destination is skipped; a retried head holds its queue back.
        let (due, _) = db.due_outgoing(10.0, vec![b.to_string()]).await.unwrap();
        assert_eq!(due.len(), 1);
        let first = due[0].id;
        db.record_attempt(
            first,
            Attempt::Retry {
                status: Some(503),
                error: "503".into(),
                next_at: 20.0,
            },
        )
        .await
        .unwrap();
        let (due, next) = db.due_outgoing(10.0, vec![b.to_string()]).await.unwrap();
        assert!(due.is_empty());
        assert_eq!(next, Some(20.0));
        db.record_attempt(first, Attempt::Delivered { status: 200 })
            .await
            .unwrap();
        let (due, _) = db.due_outgoing(10.0, vec![b.to_string()]).await.unwrap();
        assert_eq!(due[0].idempotency_key.as_deref(), Some("k2"));
        assert_eq!(due[0].attempts, 0);
    }

    #[tokio::test]
    async fn dead_requests_can_be_retried_and_completed_ones_are_purged() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("state.sqlite")).unwrap();
        let mut secret = request("r", Some("k1"), "http://a:80");
        secret.url = "http://a:80/hook?auth_token=s3cret".into();
        secret
            .headers
            .push(("Authorization".into(), "Bearer s3cret".into()));
        db.enqueue_outgoing(vec![secret, request("r", Some("k2"), "http://b:80")])
            .await
            .unwrap();
        let (due, _) = db.due_outgoing(10.0, Vec::new()).await.unwrap();
        let dead = Attempt::Dead {
            status: Some(404),
            error: "HTTP 404".into(),
        };
        db.record_attempt(due[0].id, dead).await.unwrap();
        db.record_attempt(due[1].id, Attempt::Delivered { status: 200 })
            .await
            .unwrap();
        let counts = db.outbox_counts().await.unwrap();
        assert_eq!(
            counts["r"],
            OutboxCounts {
                pending: 0,
                delivered: 1,
                dead: 1,
                dropped: 0
            }
        );
        let recent = db.recent_deliveries("r".into(), 10).await.unwrap();
        assert_eq!(recent.len(), 2);
        let shown = serde_json::to_string(&recent).unwrap();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert_eq!(recent[1].url, "http://a:80/hook?…");
        assert_eq!(recent[1].header_names, ["Content-Type", "Authorization"]);
        assert!(!db.retry_delivery("r".into(), due[1].id).await.unwrap());
        assert!(db.retry_delivery("r".into(), due[0].id).await.unwrap());
        let (due_again, _) = db.due_outgoing(10.0, Vec::new()).await.unwrap();
        assert_eq!(due_again.len(), 1);
        assert_eq!(due_again[0].attempts, 0);
        assert_eq!(db.purge_outbox(i64::MAX).await.unwrap(), 1);
        assert_eq!(db.outbox_counts().await.unwrap()["r"].delivered, 0);
    }
}
