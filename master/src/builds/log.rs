//! Writing a step's log while the step runs.
//!
//! Lines are kept in Buildbot's stream format, each prefixed by its channel
//! (`o` stdout, `e` stderr, `h` header), and stored in chunks: whatever
//! arrived since the last flush, flushed by the step at a steady pace, so a
//! reader of the REST API sees the log grow.

use crate::db::{Db, Error};
use crate::workers::Stream;

/// Flush once this many bytes are waiting, whatever the pace.
const FLUSH_BYTES: usize = 64 * 1024;

pub struct LogWriter {
    db: Db,
    logid: i64,
    pending: String,
    lines: i64,
}

impl LogWriter {
    pub fn new(db: Db, logid: i64) -> LogWriter {
        LogWriter {
            db,
            logid,
            pending: String::new(),
            lines: 0,
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
            self.pending.push(channel);
            self.pending.push_str(line);
            self.pending.push('\n');
            self.lines += 1;
        }
        if self.pending.len() >= FLUSH_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    /// Stores what is waiting.
    pub async fn flush(&mut self) -> Result<(), Error> {
        if self.lines == 0 {
            return Ok(());
        }
        let content = std::mem::take(&mut self.pending);
        let lines = std::mem::take(&mut self.lines);
        self.db.append_log(self.logid, content, lines, false).await
    }

    /// Stores what is waiting and marks the log complete.
    pub async fn close(mut self) -> Result<(), Error> {
        let content = std::mem::take(&mut self.pending);
        self.db
            .append_log(self.logid, content, self.lines, true)
            .await
    }
}
