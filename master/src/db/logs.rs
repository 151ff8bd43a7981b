//! Step logs: chunks of whole lines in Buildbot's stream format, each stored
//! as it is or zlib-compressed (Buildbot's `logchunks.compressed` ids 0 and
//! 1), and read back a few chunks at a time, so that neither a reader
//! thread nor the master's memory is held by a long log.

use std::collections::VecDeque;
use std::io::{Read, Write};

use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::Connection;

use super::{Db, Error};
use crate::config::{LogCompression, LogSettings};

/// Buildbot's id of a chunk stored as it is.
const RAW: i64 = 0;
/// Buildbot's id of a zlib-compressed chunk (its `gz`).
const ZLIB: i64 = 1;

/// Chunks read per round trip to the database while a log streams out.
const CHUNKS_PER_READ: i64 = 16;

/// Chunks written before compression, converted per write transaction.
const CONVERT_BATCH: i64 = 100;

/// A chunk as it is stored: compressed when that is asked for, the chunk is
/// at least `compression_limit` bytes long, and compression makes it smaller.
fn encode(content: String, settings: &LogSettings) -> (SqlValue, i64) {
    if settings.compression == LogCompression::Gz && content.len() >= settings.compression_limit {
        let mut encoder = ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        let compressed = encoder
            .write_all(content.as_bytes())
            .and_then(|()| encoder.finish());
        if let Ok(bytes) = compressed {
            if bytes.len() < content.len() {
                return (SqlValue::Blob(bytes), ZLIB);
            }
        }
    }
    (SqlValue::Text(content), RAW)
}

/// A stored chunk's text; `compressed` is NULL for chunks written before
/// compression existed, which are raw.
fn decode(
    logid: i64,
    line: i64,
    content: ValueRef<'_>,
    compressed: Option<i64>,
) -> Result<String, Error> {
    let corrupt = |reason: String| Error::CorruptLogChunk {
        logid,
        line,
        reason,
    };
    let bytes = match content {
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => bytes,
        ValueRef::Null => &[],
        _ => return Err(corrupt("its content is not text".into())),
    };
    match compressed.unwrap_or(RAW) {
        RAW => String::from_utf8(bytes.to_vec()).map_err(|e| corrupt(e.to_string())),
        ZLIB => {
            let mut text = String::new();
            ZlibDecoder::new(bytes)
                .read_to_string(&mut text)
                .map_err(|e| corrupt(e.to_string()))?;
            Ok(text)
        }
        other => Err(corrupt(format!("unknown compression id {other}"))),
    }
}

impl Db {
    /// Appends `lines` lines (each ending in a newline) to a log, stored as
    /// `settings` say; `complete` closes the log. Compression runs on the
    /// blocking pool, not in the writer's transaction.
    pub async fn append_log(
        &self,
        logid: i64,
        content: String,
        lines: i64,
        complete: bool,
        settings: LogSettings,
    ) -> Result<(), Error> {
        let chunk = if lines > 0 {
            Some(tokio::task::spawn_blocking(move || encode(content, &settings)).await?)
        } else {
            None
        };
        self.transact(move |conn| {
            if let Some((content, compressed)) = chunk {
                let first: i64 = conn
                    .prepare_cached("SELECT num_lines FROM logs WHERE id = ?1")?
                    .query_row([logid], |row| row.get(0))?;
                conn.prepare_cached(
                    "INSERT INTO logchunks (logid, first_line, last_line, content, compressed)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute((
                    logid,
                    first,
                    first + lines - 1,
                    content,
                    compressed,
                ))?;
                conn.prepare_cached("UPDATE logs SET num_lines = num_lines + ?2 WHERE id = ?1")?
                    .execute((logid, lines))?;
            }
            if complete {
                conn.prepare_cached("UPDATE logs SET complete = 1 WHERE id = ?1")?
                    .execute([logid])?;
            }
            Ok(())
        })
        .await
    }

    /// Lines `first..=last` of log `logid` (to its end when `last` is
    /// `None`), read as they are asked for.
    pub fn log_lines(&self, logid: i64, first: i64, last: Option<i64>) -> LogLines {
        LogLines {
            db: self.clone(),
            logid,
            next: first.max(0),
            last: last.unwrap_or(i64::MAX),
            pending: VecDeque::new(),
            done: false,
        }
    }

    /// Chunks written before compression that are still to convert.
    pub async fn unconverted_log_chunks(&self) -> Result<u64, Error> {
        self.read(|conn| {
            let count: i64 = conn.query_row(
                "SELECT COUNT(*) FROM logchunks WHERE compressed IS NULL",
                [],
                |row| row.get(0),
            )?;
            Ok(count as u64)
        })
        .await
    }

    /// Stores up to a batch of the chunks written before compression as
    /// `settings` say, in one short write transaction; returns how many it
    /// converted (0 when none is left). Interrupted, it resumes where it
    /// stopped: a converted chunk no longer has a NULL `compressed`.
    pub async fn convert_log_chunks(&self, settings: LogSettings) -> Result<usize, Error> {
        let batch = self
            .read(|conn| {
                let mut select = conn.prepare_cached(
                    "SELECT logid, first_line, content FROM logchunks
                     WHERE compressed IS NULL ORDER BY logid, first_line LIMIT ?1",
                )?;
                let rows = select.query_map([CONVERT_BATCH], |row| {
                    let content = match row.get_ref(2)? {
                        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => {
                            String::from_utf8_lossy(bytes).into_owned()
                        }
                        _ => String::new(),
                    };
                    Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?, content))
                })?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await?;
        if batch.is_empty() {
            return Ok(0);
        }
        let encoded = tokio::task::spawn_blocking(move || {
            batch
                .into_iter()
                .map(|(logid, line, content)| (logid, line, encode(content, &settings)))
                .collect::<Vec<_>>()
        })
        .await?;
        self.transact(move |conn| {
            let mut update = conn.prepare_cached(
                "UPDATE logchunks SET content = ?3, compressed = ?4
                 WHERE logid = ?1 AND first_line = ?2 AND compressed IS NULL",
            )?;
            for (logid, line, (content, compressed)) in &encoded {
                update.execute((logid, line, content, compressed))?;
            }
            Ok(encoded.len())
        })
        .await
    }
}

/// A log's lines, read a few chunks at a time; see [`Db::log_lines`].
pub struct LogLines {
    db: Db,
    logid: i64,
    /// The first line not read yet.
    next: i64,
    last: i64,
    /// Pieces read but not taken, each of whole lines.
    pending: VecDeque<String>,
    done: bool,
}

impl LogLines {
    /// The next piece of whole lines, or `None` at the end.
    pub async fn next(&mut self) -> Result<Option<String>, Error> {
        loop {
            if let Some(piece) = self.pending.pop_front() {
                return Ok(Some(piece));
            }
            if self.done || self.next > self.last {
                return Ok(None);
            }
            let (logid, from, last) = (self.logid, self.next, self.last);
            let chunks = self
                .db
                .read(move |conn| read_chunks(conn, logid, from, last))
                .await?;
            self.done = (chunks.len() as i64) < CHUNKS_PER_READ;
            for (first_line, last_line, text) in chunks {
                let piece = lines_within(&text, first_line, from, last);
                if !piece.is_empty() {
                    self.pending.push_back(piece.to_owned());
                }
                self.next = self.next.max(last_line + 1);
            }
        }
    }
}

/// Up to [`CHUNKS_PER_READ`] chunks holding lines from `from` to `last`,
/// decoded: (first line, last line, text).
fn read_chunks(
    conn: &mut Connection,
    logid: i64,
    from: i64,
    last: i64,
) -> Result<Vec<(i64, i64, String)>, Error> {
    let mut select = conn.prepare_cached(
        "SELECT first_line, last_line, content, compressed FROM logchunks
         WHERE logid = ?1 AND last_line >= ?2 AND first_line <= ?3
         ORDER BY first_line LIMIT ?4",
    )?;
    let mut rows = select.query((logid, from, last, CHUNKS_PER_READ))?;
    let mut chunks = Vec::new();
    while let Some(row) = rows.next()? {
        let first_line: i64 = row.get(0)?;
        let text = decode(logid, first_line, row.get_ref(2)?, row.get(3)?)?;
        chunks.push((first_line, row.get(1)?, text));
    }
    Ok(chunks)
}

/// The lines of a chunk starting at line `first_line` that fall within
/// `from..=last`.
fn lines_within(text: &str, first_line: i64, from: i64, last: i64) -> &str {
    let mut start = 0;
    let mut line = first_line;
    let mut bounds = text.match_indices('\n').map(|(i, _)| i + 1);
    while line < from {
        match bounds.next() {
            Some(end) => start = end,
            None => return "",
        }
        line += 1;
    }
    let mut end = start;
    while line <= last {
        match bounds.next() {
            Some(next) => end = next,
            None => {
                end = text.len();
                break;
            }
        }
        line += 1;
    }
    &text[start..end]
}

/// A whole log, for tests.
#[cfg(test)]
pub(crate) async fn whole(db: &Db, logid: i64) -> String {
    let mut lines = db.log_lines(logid, 0, None);
    let mut text = String::new();
    while let Some(piece) = lines.next().await.unwrap() {
        text.push_str(&piece);
    }
    text
}

#[cfg(test)]
/// A database as the previous release left it: schema version 6, one
/// build whose log has `chunks` chunks of 100 lines stored as text.
pub(crate) fn previous_release(path: &std::path::Path, chunks: i64) -> String {
    let mut conn = Connection::open(path).unwrap();
    super::schema::migrate_to(&mut conn, 6).unwrap();
    conn.execute_batch(
        "INSERT INTO builders (id, name, tags) VALUES (1, 'b', '[]');
         INSERT INTO workers (id, name, info) VALUES (1, 'w', '{}');
         INSERT INTO buildsets (id, reason, scheduler, submitted_at, complete, properties)
             VALUES (1, 'r', 's', 1, 1, '{}');
         INSERT INTO buildrequests (id, buildsetid, builderid, priority, submitted_at, complete)
             VALUES (1, 1, 1, 0, 1, 1);
         INSERT INTO builds (id, number, builderid, buildrequestid, workerid, started_at,
             complete_at, state_string, results, properties)
             VALUES (1, 1, 1, 1, 1, 1, 2, 'finished', 0, '{}');
         INSERT INTO steps (id, buildid, number, name, started_at, state_string)
             VALUES (1, 1, 1, 'make', 1, 'done');
         INSERT INTO logs (id, stepid, name, slug, type, complete, num_lines)
             VALUES (1, 1, 'stdio', 'stdio', 's', 1, 0);",
    )
    .unwrap();
    let mut whole = String::new();
    for chunk in 0..chunks {
        let text: String = (0..100)
            .map(|n| format!("ochunk {chunk} line {n}: compiling src/module_{n}.c\n"))
            .collect();
        conn.execute(
            "INSERT INTO logchunks (logid, first_line, last_line, content)
             VALUES (1, ?1, ?2, ?3)",
            (chunk * 100, chunk * 100 + 99, &text),
        )
        .unwrap();
        whole.push_str(&text);
    }
    conn.execute("UPDATE logs SET num_lines = ?1", [chunks * 100])
        .unwrap();
    whole
}

/// A build with one step and one empty log, for tests; the log's id.
#[cfg(test)]
pub(crate) async fn test_log(db: &Db) -> i64 {
    db.transact(|conn| {
        conn.execute_batch(
            "INSERT INTO builders (id, name, tags) VALUES (1, 'b', '[]');
             INSERT INTO workers (id, name, info) VALUES (1, 'w', '{}');
             INSERT INTO buildsets (id, reason, scheduler, submitted_at, complete, properties)
                 VALUES (1, 'r', 's', 1, 0, '{}');
             INSERT INTO buildrequests (id, buildsetid, builderid, priority, submitted_at, complete)
                 VALUES (1, 1, 1, 0, 1, 0);
             INSERT INTO builds (id, number, builderid, buildrequestid, workerid, started_at,
                 state_string, properties)
                 VALUES (1, 1, 1, 1, 1, 1, 'building', '{}');
             INSERT INTO steps (id, buildid, number, name, started_at, state_string)
                 VALUES (1, 1, 1, 'make', 1, 'running');
             INSERT INTO logs (id, stepid, name, slug, type, complete, num_lines)
                 VALUES (1, 1, 'stdio', 'stdio', 's', 0, 0);",
        )?;
        Ok(1)
    })
    .await
    .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_compress_when_it_pays() {
        let settings = LogSettings::default();
        let long = "ocompiling main.c\n".repeat(1000);
        let (stored, id) = encode(long.clone(), &settings);
        assert_eq!(id, ZLIB);
        let SqlValue::Blob(bytes) = &stored else {
            panic!("{stored:?}")
        };
        assert!(bytes.len() < long.len() / 10);
        assert_eq!(
            decode(1, 0, ValueRef::Blob(bytes), Some(ZLIB)).unwrap(),
            long
        );
        // Below the limit, or with compression off, a chunk stays as it is.
        let (stored, id) = encode("oshort\n".into(), &settings);
        assert_eq!((stored, id), (SqlValue::Text("oshort\n".into()), RAW));
        let raw = LogSettings {
            compression: LogCompression::Raw,
            ..settings
        };
        assert_eq!(encode(long.clone(), &raw).1, RAW);
        // Chunks from before compression have no id.
        assert_eq!(
            decode(1, 0, ValueRef::Text(b"oold\n"), None).unwrap(),
            "oold\n"
        );
        let error = decode(7, 40, ValueRef::Blob(b"not zlib"), Some(ZLIB)).unwrap_err();
        assert!(error
            .to_string()
            .starts_with("log 7: the chunk at line 40 cannot be read"));
    }

    #[test]
    fn a_range_of_lines_is_cut_from_chunks() {
        let text = "oa\nob\noc\nod\n";
        assert_eq!(lines_within(text, 10, 0, i64::MAX), text);
        assert_eq!(lines_within(text, 10, 11, 12), "ob\noc\n");
        assert_eq!(lines_within(text, 10, 13, 20), "od\n");
        assert_eq!(lines_within(text, 10, 14, 20), "");
        assert_eq!(lines_within(text, 10, 0, 10), "oa\n");
    }

    fn stored_as(path: &std::path::Path, compressed: &str) -> i64 {
        let conn = Connection::open(path).unwrap();
        conn.query_row(
            &format!("SELECT COUNT(*) FROM logchunks WHERE compressed {compressed}"),
            [],
            |row| row.get(0),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn logs_of_the_previous_release_are_converted_in_resumable_batches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        let text = previous_release(&path, 250);
        let db = Db::open(&path).unwrap();
        // Readable as they are before any conversion.
        assert_eq!(whole(&db, 1).await, text);
        assert_eq!(db.unconverted_log_chunks().await.unwrap(), 250);
        let settings = LogSettings::default();
        assert_eq!(db.convert_log_chunks(settings).await.unwrap(), 100);
        // Stopped there, the next start goes on from where it was.
        drop(db);
        let db = Db::open(&path).unwrap();
        assert_eq!(db.unconverted_log_chunks().await.unwrap(), 150);
        assert_eq!(whole(&db, 1).await, text);
        while db.convert_log_chunks(settings).await.unwrap() > 0 {}
        assert_eq!(db.unconverted_log_chunks().await.unwrap(), 0);
        assert_eq!(whole(&db, 1).await, text);
        let build = db
            .rest_object(&crate::db::BUILDS, 1)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(build["state_string"], "finished");
        drop(db);
        assert_eq!(stored_as(&path, "= 1"), 250);
    }

    #[tokio::test]
    async fn lines_are_read_back_by_range_across_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        previous_release(&path, 0);
        let db = Db::open(&path).unwrap();
        let settings = LogSettings {
            compression_limit: 100,
            ..LogSettings::default()
        };
        let mut all = String::new();
        // 40 chunks of 25 lines, the first ones big enough to compress.
        for chunk in 0..40 {
            let text: String = (0..25)
                .map(|n| format!("oline {}\n", chunk * 25 + n))
                .collect();
            db.append_log(1, text.clone(), 25, chunk == 39, settings)
                .await
                .unwrap();
            all.push_str(&text);
        }
        assert_eq!(whole(&db, 1).await, all);
        let range = |first: i64, last: i64| {
            let db = db.clone();
            async move {
                let mut lines = db.log_lines(1, first, Some(last));
                let mut text = String::new();
                while let Some(piece) = lines.next().await.unwrap() {
                    text.push_str(&piece);
                }
                text
            }
        };
        assert_eq!(range(0, 0).await, "oline 0\n");
        assert_eq!(range(24, 26).await, "oline 24\noline 25\noline 26\n");
        let middle: String = (390..=610).map(|n| format!("oline {n}\n")).collect();
        assert_eq!(range(390, 610).await, middle);
        assert_eq!(range(999, 5000).await, "oline 999\n");
        assert_eq!(range(1000, 5000).await, "");
        let log = db.rest_object(&crate::db::LOGS, 1).await.unwrap().unwrap();
        assert_eq!(
            (log["num_lines"].clone(), log["complete"].clone()),
            (1000.into(), true.into())
        );
        drop(db);
        assert_eq!(stored_as(&path, "= 1"), 40);
    }
}
