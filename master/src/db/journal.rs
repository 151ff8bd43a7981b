//! The build journal: one row per build started and per build finished,
//! written in the transaction that starts or finishes the build, and the
//! place each durable consumer has reached in it. A consumer that was down,
//! or fell behind the event bus, reads on from its place: nothing is missed.

use rusqlite::{Connection, OptionalExtension};

use super::{Db, Error};

/// What happened to a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalKind {
    Started,
    Finished,
}

impl JournalKind {
    fn as_str(self) -> &'static str {
        match self {
            JournalKind::Started => "started",
            JournalKind::Finished => "finished",
        }
    }
}

/// One row of the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalEntry {
    /// Increases with every entry.
    pub eventid: i64,
    pub buildid: i64,
    pub kind: JournalKind,
    /// Epoch seconds.
    pub at: i64,
}

/// Appends an entry, inside the caller's transaction.
pub(super) fn record(
    conn: &Connection,
    buildid: i64,
    kind: JournalKind,
    at: i64,
) -> Result<(), Error> {
    conn.prepare_cached(
        "INSERT INTO build_events (eventid, buildid, kind, at)
         VALUES ((SELECT COALESCE(MAX(eventid), 0) + 1 FROM build_events), ?1, ?2, ?3)",
    )?
    .execute((buildid, kind.as_str(), at))?;
    Ok(())
}

impl Db {
    /// Up to `limit` entries after `eventid`, oldest first.
    pub async fn journal_after(
        &self,
        eventid: i64,
        limit: u64,
    ) -> Result<Vec<JournalEntry>, Error> {
        self.read(move |conn| {
            let mut select = conn.prepare_cached(
                "SELECT eventid, buildid, kind, at FROM build_events
                 WHERE eventid > ?1 ORDER BY eventid LIMIT ?2",
            )?;
            let rows = select.query_map((eventid, limit as i64), |row| {
                let kind: String = row.get(2)?;
                Ok(JournalEntry {
                    eventid: row.get(0)?,
                    buildid: row.get(1)?,
                    kind: if kind == "started" {
                        JournalKind::Started
                    } else {
                        JournalKind::Finished
                    },
                    at: row.get(3)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    /// Where consumer `name` has reached; a consumer seen for the first
    /// time starts at the end of the journal, not at its beginning.
    pub async fn consumer_cursor(&self, name: &str) -> Result<i64, Error> {
        let name = name.to_owned();
        self.transact(move |conn| {
            let stored: Option<i64> = conn
                .prepare_cached("SELECT eventid FROM consumer_cursors WHERE consumer = ?1")?
                .query_row([&name], |row| row.get(0))
                .optional()?;
            if let Some(eventid) = stored {
                return Ok(eventid);
            }
            let last: i64 = conn
                .prepare_cached("SELECT COALESCE(MAX(eventid), 0) FROM build_events")?
                .query_row([], |row| row.get(0))?;
            save_cursor(conn, &name, last)?;
            Ok(last)
        })
        .await
    }

    /// Forgets consumer `name`'s place: a consumer of that name starts
    /// again at the end of the journal.
    pub async fn forget_consumer_cursor(&self, name: &str) -> Result<(), Error> {
        let name = name.to_owned();
        self.transact(move |conn| {
            conn.execute("DELETE FROM consumer_cursors WHERE consumer = ?1", [&name])?;
            Ok(())
        })
        .await
    }

    /// Records that consumer `name` has handled every entry up to `eventid`.
    pub async fn save_consumer_cursor(&self, name: &str, eventid: i64) -> Result<(), Error> {
        let name = name.to_owned();
        self.transact(move |conn| save_cursor(conn, &name, eventid))
            .await
    }
}

fn save_cursor(conn: &Connection, name: &str, eventid: i64) -> Result<(), Error> {
    conn.prepare_cached(
        "INSERT INTO consumer_cursors (consumer, eventid) VALUES (?1, ?2)
         ON CONFLICT (consumer) DO UPDATE SET eventid = excluded.eventid",
    )?
    .execute((name, eventid))?;
    Ok(())
}
