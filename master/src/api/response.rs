//! What the REST API answers with, and the writer that streams a listing's
//! envelope (`{"builds": [...], "meta": {"total": N}}`) out as the database
//! reads it, in a few kilobytes at a time: a listing of a million changes
//! never sits in memory, and a client that hangs up stops the read.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::db::{Collection, Db, Error, Listing, LogLines, RowSink, Scope};

pub const JSON: &str = "application/json; charset=utf-8";
pub const TEXT: &str = "text/plain; charset=utf-8";

/// How much of an answer is gathered before it is sent on.
const CHUNK: usize = 32 * 1024;

/// What to send back.
pub struct ApiResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Body,
}

/// A body whole, or streamed.
pub enum Body {
    Full(String),
    Stream(Chunks),
}

impl ApiResponse {
    /// A whole body.
    pub fn full(status: u16, content_type: &'static str, body: String) -> ApiResponse {
        ApiResponse {
            status,
            content_type,
            body: Body::Full(body),
        }
    }

    /// Buildbot's error object, `{"error": "..."}`, sent as text as it does.
    pub fn error(status: u16, message: &str) -> ApiResponse {
        ApiResponse::full(
            status,
            TEXT,
            serde_json::json!({ "error": message }).to_string(),
        )
    }

    /// The whole body, for callers (and tests) that need it in memory.
    pub async fn text(self) -> Result<String, String> {
        match self.body {
            Body::Full(text) => Ok(text),
            Body::Stream(mut chunks) => {
                let mut text = Vec::new();
                while let Some(chunk) = chunks.next().await {
                    text.extend_from_slice(&chunk?);
                }
                String::from_utf8(text).map_err(|e| e.to_string())
            }
        }
    }
}

/// Why a listing could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    /// It ran past its deadline (503).
    TooSlow(String),
    /// The database failed; the cause is logged (500).
    Internal,
}

impl Failure {
    fn message(&self) -> &str {
        match self {
            Failure::TooSlow(message) => message,
            Failure::Internal => "internal error",
        }
    }
}

/// A streamed body: the chunks the reading thread sends.
pub struct Chunks {
    first: Option<Bytes>,
    rest: mpsc::Receiver<Result<Bytes, Failure>>,
}

impl Chunks {
    async fn next(&mut self) -> Option<Result<Bytes, String>> {
        if let Some(first) = self.first.take() {
            return Some(Ok(first));
        }
        let chunk = self.rest.recv().await?;
        Some(chunk.map_err(|failure| failure.message().to_owned()))
    }
}

impl futures_util::Stream for Chunks {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        self.rest.poll_recv(cx).map(|chunk| {
            chunk.map(|chunk| chunk.map_err(|failure| std::io::Error::other(failure.message())))
        })
    }
}

/// Changes each object before it is written: selects fields, adds what the
/// database does not hold.
pub type Shape = Arc<dyn Fn(Value) -> Value + Send + Sync>;

/// Answers a listing of `collection`: status and headers as soon as the
/// first part of the answer (or an error) is known, then the rest streamed.
/// `accept` with `application/json` gives compact JSON, else indented text.
pub async fn listing(
    db: &Db,
    collection: &'static Collection,
    scope: Option<Scope>,
    listing: Listing,
    accept: Option<&str>,
    shape: Shape,
    timeout: Duration,
) -> ApiResponse {
    let compact = accept.is_some_and(|accept| accept.contains("application/json"));
    let (sender, mut received) = mpsc::channel(4);
    let writer = Envelope {
        key: collection.key,
        compact,
        shape,
        buffer: Vec::with_capacity(CHUNK),
        rows: 0,
        sender: sender.clone(),
    };
    let db = db.clone();
    let deadline = Instant::now() + timeout;
    tokio::spawn(async move {
        let result = db
            .read_listing(collection, scope, listing, deadline, writer)
            .await;
        match result {
            Ok(()) => {}
            Err(Error::Interrupted) if sender.is_closed() => {
                tracing::info!("stopped reading {}: the client went away", collection.key);
            }
            Err(error) => {
                if matches!(error, Error::Interrupted) {
                    tracing::warn!(
                        "stopped reading {}: past rest_timeout ({timeout:?})",
                        collection.key
                    );
                }
                let _ = sender.send(Err(failure(&error, timeout))).await;
            }
        }
    });
    let content_type = if compact { JSON } else { TEXT };
    match received.recv().await {
        Some(Ok(first)) => ApiResponse {
            status: 200,
            content_type,
            body: Body::Stream(Chunks {
                first: Some(first),
                rest: received,
            }),
        },
        Some(Err(failure @ Failure::TooSlow(_))) => ApiResponse::error(503, failure.message()),
        Some(Err(Failure::Internal)) | None => ApiResponse::error(500, "internal error"),
    }
}

/// What a client is told of a failed read; the details go to the log.
fn failure(error: &Error, timeout: Duration) -> Failure {
    match error {
        Error::Interrupted => Failure::TooSlow(format!(
            "the query took longer than {timeout:?}; narrow it with filters or a limit"
        )),
        other => {
            tracing::error!("cannot answer a REST listing: {other}");
            Failure::Internal
        }
    }
}

/// Writes a listing's envelope around its objects.
struct Envelope {
    key: &'static str,
    compact: bool,
    shape: Shape,
    buffer: Vec<u8>,
    rows: u64,
    sender: mpsc::Sender<Result<Bytes, Failure>>,
}

impl Envelope {
    fn open(&mut self) {
        let opening = if self.compact {
            format!("{{\"{}\":[", self.key)
        } else {
            format!("{{\n  \"{}\": [", self.key)
        };
        self.buffer.extend_from_slice(opening.as_bytes());
    }

    fn send(&mut self) -> bool {
        let chunk = Bytes::from(std::mem::take(&mut self.buffer));
        self.buffer.reserve(CHUNK);
        self.sender.blocking_send(Ok(chunk)).is_ok()
    }
}

impl RowSink for Envelope {
    fn row(&mut self, object: Value) -> bool {
        if self.rows == 0 {
            self.open();
        } else {
            self.buffer.push(b',');
        }
        self.rows += 1;
        let object = (self.shape)(object);
        if self.compact {
            let _ = serde_json::to_writer(&mut self.buffer, &object);
        } else {
            // Indented as serde_json indents the whole envelope.
            let text = serde_json::to_string_pretty(&object).unwrap_or_default();
            self.buffer.extend_from_slice(b"\n    ");
            self.buffer
                .extend_from_slice(text.replace('\n', "\n    ").as_bytes());
        }
        self.buffer.len() < CHUNK || self.send()
    }

    fn finish(&mut self, total: u64) {
        if self.rows == 0 {
            self.open();
        }
        let closing = match (self.compact, self.rows) {
            (true, _) => format!("],\"meta\":{{\"total\":{total}}}}}"),
            (false, 0) => format!("],\n  \"meta\": {{\n    \"total\": {total}\n  }}\n}}"),
            (false, _) => format!("\n  ],\n  \"meta\": {{\n    \"total\": {total}\n  }}\n}}"),
        };
        self.buffer.extend_from_slice(closing.as_bytes());
        self.send();
    }

    fn abandoned(&self) -> bool {
        self.sender.is_closed()
    }
}

/// How a log is sent.
pub enum LogForm {
    /// Buildbot's `contents`: one logchunk object whose content is the lines
    /// as stored, each with its channel.
    Contents { logid: i64, firstline: i64 },
    /// `raw`: the text, each line without its channel when the log is a
    /// stream of channels (type `s`).
    Raw { strip_channels: bool },
}

/// Streams a log's lines in `form`, a piece at a time as they are read; no
/// deadline applies (a long log takes long to send), but a client that
/// hangs up stops the reading.
pub async fn log(mut lines: LogLines, form: LogForm, accept: Option<&str>) -> ApiResponse {
    let compact = accept.is_some_and(|accept| accept.contains("application/json"));
    let first = match lines.next().await {
        Ok(first) => first,
        Err(error) => {
            tracing::error!("cannot read a log: {error}");
            return ApiResponse::error(500, "internal error");
        }
    };
    let (sender, received) = mpsc::channel(4);
    let (content_type, opening, closing) = match &form {
        LogForm::Contents { logid, firstline } if compact => (
            JSON,
            r#"{"logchunks":[{"content":""#.to_owned(),
            format!(r#"","firstline":{firstline},"logid":{logid}}}],"meta":{{}}}}"#),
        ),
        LogForm::Contents { logid, firstline } => (
            TEXT,
            "{\n  \"logchunks\": [\n    {\n      \"content\": \"".to_owned(),
            format!(
                "\",\n      \"firstline\": {firstline},\n      \"logid\": {logid}\n    }}\n  ],\n  \"meta\": {{}}\n}}"
            ),
        ),
        LogForm::Raw { .. } => (TEXT, String::new(), String::new()),
    };
    let write = move |piece: &str| -> Bytes {
        match &form {
            LogForm::Contents { .. } => {
                // The piece as a JSON string, without its quotes.
                let quoted = serde_json::to_string(piece).unwrap_or_default();
                Bytes::from(quoted[1..quoted.len() - 1].to_owned())
            }
            LogForm::Raw {
                strip_channels: true,
            } => {
                let mut text = String::with_capacity(piece.len());
                for line in piece.lines() {
                    text.push_str(line.get(1..).unwrap_or_default());
                    text.push('\n');
                }
                Bytes::from(text)
            }
            LogForm::Raw { .. } => Bytes::from(piece.to_owned()),
        }
    };
    tokio::spawn(async move {
        let mut piece = first;
        let mut opening = Some(opening);
        loop {
            let mut chunk = opening.take().map(String::into_bytes).unwrap_or_default();
            if let Some(piece) = &piece {
                chunk.extend_from_slice(&write(piece));
            } else {
                chunk.extend_from_slice(closing.as_bytes());
            }
            if !chunk.is_empty() && sender.send(Ok(Bytes::from(chunk))).await.is_err() {
                tracing::info!("stopped sending a log: the client went away");
                return;
            }
            if piece.is_none() {
                return;
            }
            piece = match lines.next().await {
                Ok(next) => next,
                Err(error) => {
                    tracing::error!("cannot read a log: {error}");
                    let _ = sender.send(Err(Failure::Internal)).await;
                    return;
                }
            };
        }
    });
    ApiResponse {
        status: 200,
        content_type,
        body: Body::Stream(Chunks {
            first: None,
            rest: received,
        }),
    }
}
