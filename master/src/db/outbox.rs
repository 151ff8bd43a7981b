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
            let mut heads = conn.prepare_cached(
                "SELECT MIN(id) FROM outbox WHERE state = 'pending' GROUP BY destination",
            )?;
            let ids: Vec<i64> = heads
                .query_map([], |row| row.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let mut due = Vec::new();
            let mut next: Option<f64> = None;
            for id in ids {
                let Some((outgoing, at)) = outgoing(conn, id)? else {
                    continue;
                };
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

/// Request `id` and when it is due.
fn outgoing(conn: &Connection, id: i64) -> Result<Option<(Outgoing, f64)>, Error> {
    let mut select = conn.prepare_cached(
        "SELECT reporter, destination, method, url, headers, body, timeout_ms,
                idempotency_key, attempts, next_attempt_at
         FROM outbox WHERE id = ?1",
    )?;
    let row = select
        .query_row([id], |row| {
            let headers: String = row.get(4)?;
            let timeout_ms: Option<i64> = row.get(6)?;
            Ok((
                Outgoing {
                    id,
                    reporter: row.get(0)?,
                    destination: row.get(1)?,
                    method: row.get(2)?,
                    url: row.get(3)?,
                    headers: serde_json::from_str(&headers).unwrap_or_default(),
                    body: row.get(5)?,
                    timeout_ms: timeout_ms.map(|ms| ms as u64),
                    idempotency_key: row.get(7)?,
                    attempts: row.get(8)?,
                },
                row.get::<_, f64>(9)?,
            ))
        })
        .optional()?;
    Ok(row)
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
}
