//! Writing a step's log while the step runs.
//!
//! Lines are kept in Buildbot's stream format, each prefixed by its channel
//! (`o` stdout, `e` stderr, `h` header), and stored in chunks: whatever
//! arrived since the last flush, flushed by the step at a steady pace, so a
//! reader of the REST API sees the log grow.
//!
//! A log keeps its first `[logs] max_size` bytes; past that a header line
//! says the output was truncated, and only the last `max_tail_size` bytes
//! are kept (in memory) and written when the log closes, after a header
//! saying how much was dropped (Buildbot's `logMaxSize`, `logMaxTailSize`).

use std::collections::VecDeque;

use crate::config::LogSettings;
use crate::db::{Db, Error};
use crate::workers::Stream;

/// Flush once this many bytes are waiting, whatever the pace.
const FLUSH_BYTES: usize = 64 * 1024;

pub struct LogWriter {
    db: Db,
    logid: i64,
    settings: LogSettings,
    pending: String,
    lines: i64,
    /// Bytes of output kept from the start, up to `max_size`.
    kept: u64,
    /// Once `max_size` is passed: the last lines, and what was dropped.
    tail: Option<Tail>,
}

/// The end of a log that passed its size cap.
#[derive(Default)]
struct Tail {
    /// Whole lines with their channel and newline.
    lines: VecDeque<String>,
    bytes: u64,
    dropped_bytes: u64,
    dropped_lines: u64,
}

impl LogWriter {
    pub fn new(db: Db, logid: i64, settings: LogSettings) -> LogWriter {
        LogWriter {
            db,
            logid,
            settings,
            pending: String::new(),
            lines: 0,
            kept: 0,
            tail: None,
        }
    }

    /// Adds a header line (what runs, how it ended).
    pub async fn header(&mut self, line: &str) -> Result<(), Error> {
        self.add('h', line).await
    }

    /// Adds a line of output.
    pub async fn output(&mut self, stream: Stream, line: &str) -> Result<(), Error> {
        let channel = match stream {
            Stream::Stdout => 'o',
            Stream::Stderr => 'e',
        };
        self.add(channel, line).await
    }

    async fn add(&mut self, channel: char, text: &str) -> Result<(), Error> {
        // A line break inside a line would make two lines of one.
        for line in text.split('\n') {
            let size = line.len() as u64 + 2;
            if self.tail.is_none() && self.kept + size <= self.settings.max_size {
                self.kept += size;
                self.push(channel, line);
            } else {
                self.keep_in_tail(channel, line);
            }
        }
        if self.pending.len() >= FLUSH_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    fn push(&mut self, channel: char, line: &str) {
        self.pending.push(channel);
        self.pending.push_str(line);
        self.pending.push('\n');
        self.lines += 1;
    }

    fn keep_in_tail(&mut self, channel: char, line: &str) {
        if self.tail.is_none() {
            let marker = format!(
                "Output exceeded {} bytes, remaining output has been truncated",
                self.settings.max_size
            );
            self.push('h', &marker);
            self.tail = Some(Tail::default());
        }
        let max_tail = self.settings.max_tail_size;
        let Some(tail) = self.tail.as_mut() else {
            return;
        };
        tail.lines.push_back(format!("{channel}{line}\n"));
        tail.bytes += line.len() as u64 + 2;
        while tail.bytes > max_tail {
            let Some(dropped) = tail.lines.pop_front() else {
                break;
            };
            tail.bytes -= dropped.len() as u64;
            tail.dropped_bytes += dropped.len() as u64;
            tail.dropped_lines += 1;
        }
    }

    /// Stores what is waiting.
    pub async fn flush(&mut self) -> Result<(), Error> {
        if self.lines == 0 {
            return Ok(());
        }
        let content = std::mem::take(&mut self.pending);
        let lines = std::mem::take(&mut self.lines);
        self.db
            .append_log(self.logid, content, lines, false, self.settings)
            .await
    }

    /// Stores what is waiting, then the tail of a truncated log, and marks
    /// the log complete.
    pub async fn close(mut self) -> Result<(), Error> {
        if let Some(tail) = self.tail.take() {
            if tail.dropped_bytes > 0 {
                let note = format!(
                    "{} bytes ({} lines) of output were dropped; the last {} bytes follow",
                    tail.dropped_bytes, tail.dropped_lines, tail.bytes
                );
                self.push('h', &note);
            }
            for line in tail.lines {
                if self.pending.len() >= FLUSH_BYTES {
                    self.flush().await?;
                }
                self.pending.push_str(&line);
                self.lines += 1;
            }
        }
        let content = std::mem::take(&mut self.pending);
        self.db
            .append_log(self.logid, content, self.lines, true, self.settings)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn log_db() -> (tempfile::TempDir, Db, i64) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("state.sqlite")).unwrap();
        let logid = crate::db::logs::test_log(&db).await;
        (dir, db, logid)
    }

    #[tokio::test]
    async fn a_log_past_its_cap_keeps_its_start_a_marker_and_its_tail() {
        let (_dir, db, logid) = log_db().await;
        let settings = LogSettings {
            max_size: 100,
            max_tail_size: 30,
            ..LogSettings::default()
        };
        let mut log = LogWriter::new(db.clone(), logid, settings);
        log.header("make").await.unwrap();
        for n in 0..100 {
            // 10 bytes a line with its channel and newline.
            log.output(Stream::Stdout, &format!("line {n:03}"))
                .await
                .unwrap();
        }
        log.header("exit 0").await.unwrap();
        log.close().await.unwrap();
        let kept: String = (0..9).map(|n| format!("oline {n:03}\n")).collect();
        assert_eq!(
            crate::db::logs::whole(&db, logid).await,
            format!(
                "hmake\n{kept}hOutput exceeded 100 bytes, remaining output has been \
                 truncated\nh890 bytes (89 lines) of output were dropped; the last 28 bytes \
                 follow\noline 098\noline 099\nhexit 0\n"
            )
        );
    }

    #[tokio::test]
    async fn without_a_tail_the_rest_is_dropped_and_counted() {
        let (_dir, db, logid) = log_db().await;
        let settings = LogSettings {
            max_size: 20,
            max_tail_size: 0,
            ..LogSettings::default()
        };
        let mut log = LogWriter::new(db.clone(), logid, settings);
        for n in 0..5 {
            log.output(Stream::Stderr, &format!("line {n:03}"))
                .await
                .unwrap();
        }
        log.close().await.unwrap();
        assert_eq!(
            crate::db::logs::whole(&db, logid).await,
            "eline 000\neline 001\nhOutput exceeded 20 bytes, remaining output has been \
             truncated\nh30 bytes (3 lines) of output were dropped; the last 0 bytes follow\n"
        );
    }
}
