//! One worker's WebSocket connection: requests from the master matched to
//! their responses by sequence number, and the worker's own requests
//! (`update`, `complete`, …) routed to the command they concern and
//! answered.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rmpv::Value;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::protocol::{self, get, text};

/// What a running command tells.
#[derive(Debug, Clone, PartialEq)]
pub enum CommandEvent {
    /// `update` pairs: `stdout`, `stderr`, `header`, `rc`, `elapsed`, …
    Update(Vec<(String, Value)>),
    /// The command ended; `Some` with the worker's error.
    Complete(Option<String>),
    /// The connection went while it ran.
    Lost,
    /// A step of a file transfer, which the command's follower answers
    /// with [`Connection::answer`] (the worker waits for that answer).
    Transfer { seq: i64, op: Transfer },
}

/// The transfer requests of a worker running `upload_file` or
/// `download_file`.
#[derive(Debug, Clone, PartialEq)]
pub enum Transfer {
    /// `update_upload_file_write`: the next block of the uploaded file.
    Write(Vec<u8>),
    /// `update_upload_file_utime`: the file's times, as seconds.
    Utime { modified: f64 },
    /// `update_upload_file_close`: the upload is whole.
    Close,
    /// `update_read_file`: up to this many bytes of the downloaded file,
    /// answered with the bytes (none at its end).
    Read(usize),
    /// `update_read_file_close`.
    ReadClose,
}

fn transfer(seq: i64, op: Transfer) -> CommandEvent {
    CommandEvent::Transfer { seq, op }
}

/// A live connection. Dropping the last handle does not close it; the
/// reader ends when the worker goes or [`Connection::close`] is called.
/// Command ids, unique for the whole master: a worker keeps its commands
/// across reconnections, so a new connection must not reuse an id.
static NEXT_COMMAND: AtomicI64 = AtomicI64::new(1);

pub struct Connection {
    outgoing: mpsc::UnboundedSender<Message>,
    next_seq: AtomicI64,
    pending: Mutex<HashMap<i64, oneshot::Sender<Result<Value, String>>>>,
    commands: Mutex<HashMap<String, mpsc::UnboundedSender<CommandEvent>>>,
    /// True once the connection is gone.
    closed: watch::Sender<bool>,
    /// Where the peer's other requests go; without it they are refused.
    requests: Option<mpsc::UnboundedSender<Request>>,
}

/// A request of the peer that is not about a command this side started
/// (on a worker: `start_command`, `keepalive`, …), answered with
/// [`Connection::answer`].
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub seq: i64,
    pub op: String,
    pub message: Value,
}

impl Connection {
    /// Serves `socket`: returns the connection and the task that reads it,
    /// which ends when the connection does. The peer's own requests go to
    /// `requests` (a worker's side) or are refused (the master's).
    pub fn start(
        socket: WebSocketStream<TcpStream>,
        requests: Option<mpsc::UnboundedSender<Request>>,
    ) -> (
        std::sync::Arc<Connection>,
        impl std::future::Future<Output = ()>,
    ) {
        let (mut sink, mut stream) = socket.split();
        let (outgoing, mut queued) = mpsc::unbounded_channel::<Message>();
        let connection = std::sync::Arc::new(Connection {
            outgoing,
            next_seq: AtomicI64::new(1),
            pending: Mutex::new(HashMap::new()),
            commands: Mutex::new(HashMap::new()),
            closed: watch::Sender::new(false),
            requests,
        });
        let reader = std::sync::Arc::clone(&connection);
        let serve = async move {
            let writer = async {
                while let Some(message) = queued.recv().await {
                    let close = matches!(message, Message::Close(_));
                    if sink.send(message).await.is_err() || close {
                        break;
                    }
                }
                let _ = sink.close().await;
            };
            let read = async {
                while let Some(frame) = stream.next().await {
                    match frame {
                        Ok(Message::Binary(bytes)) => reader.receive(&bytes),
                        Ok(Message::Close(_)) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            };
            tokio::select! {
                () = writer => {}
                () = read => {}
            }
            reader.closed();
        };
        (connection, serve)
    }

    /// Fails what waits on this connection and marks it closed.
    fn closed(&self) {
        self.closed.send_replace(true);
        for (_, waiting) in self.pending.lock().expect("pending").drain() {
            let _ = waiting.send(Err("the worker disconnected".into()));
        }
        for (_, command) in self.commands.lock().expect("commands").drain() {
            let _ = command.send(CommandEvent::Lost);
        }
    }

    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Resolves when the connection is gone.
    pub async fn wait_closed(&self) {
        let mut closed = self.closed.subscribe();
        let _ = closed.wait_for(|closed| *closed).await;
    }

    /// Closes the connection.
    pub fn close(&self) {
        let _ = self.outgoing.send(Message::Close(None));
    }

    fn send(&self, value: &Value) {
        let _ = self
            .outgoing
            .send(Message::Binary(protocol::encode(value).into()));
    }

    /// Handles one message from the worker.
    fn receive(&self, bytes: &[u8]) {
        let message = match protocol::decode(bytes) {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!("a worker sent a message that is {e}");
                return;
            }
        };
        let op = get(&message, "op")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let Some(seq) = get(&message, "seq_number").and_then(Value::as_i64) else {
            tracing::warn!("a worker sent a message without seq_number (op '{op}')");
            return;
        };
        if op == "response" {
            let waiting = self.pending.lock().expect("pending").remove(&seq);
            if let Some(waiting) = waiting {
                let result = get(&message, "result").cloned().unwrap_or(Value::Nil);
                let failed = get(&message, "is_exception").and_then(Value::as_bool) == Some(true);
                let _ = waiting.send(if failed {
                    Err(text(&result).unwrap_or_else(|| result.to_string()))
                } else {
                    Ok(result)
                });
            }
            return;
        }
        let command = get(&message, "command_id").and_then(text);
        let event = match op {
            "update" => {
                let pairs = get(&message, "args")
                    .and_then(Value::as_array)
                    .map(|pairs| {
                        pairs
                            .iter()
                            .filter_map(|pair| {
                                let pair = pair.as_array()?;
                                Some((text(pair.first()?)?, pair.get(1)?.clone()))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Some(CommandEvent::Update(pairs))
            }
            "update_upload_file_write" => {
                let data = match get(&message, "args") {
                    Some(Value::Binary(bytes)) => bytes.clone(),
                    Some(Value::String(s)) => s.as_bytes().to_vec(),
                    _ => Vec::new(),
                };
                Some(transfer(seq, Transfer::Write(data)))
            }
            "update_upload_file_utime" => {
                let modified = get(&message, "modified_time")
                    .and_then(|t| t.as_f64().or_else(|| t.as_i64().map(|t| t as f64)))
                    .unwrap_or_default();
                Some(transfer(seq, Transfer::Utime { modified }))
            }
            "update_upload_file_close" => Some(transfer(seq, Transfer::Close)),
            "update_read_file" => {
                let length = get(&message, "length")
                    .and_then(Value::as_u64)
                    .unwrap_or_default();
                Some(transfer(seq, Transfer::Read(length as usize)))
            }
            "update_read_file_close" => Some(transfer(seq, Transfer::ReadClose)),
            "complete" => {
                let failure = get(&message, "args")
                    .filter(|a| !a.is_nil())
                    .map(|a| text(a).unwrap_or_else(|| a.to_string()));
                Some(CommandEvent::Complete(failure))
            }
            _ => {
                if let Some(requests) = &self.requests {
                    let op = op.to_owned();
                    let _ = requests.send(Request { seq, op, message });
                    return;
                }
                None
            }
        };
        let failure = match (event, command) {
            (Some(event), Some(id)) => {
                let mut commands = self.commands.lock().expect("commands");
                let complete = matches!(event, CommandEvent::Complete(_));
                let answered_later = matches!(event, CommandEvent::Transfer { .. });
                match commands.get(&id) {
                    Some(sink) => {
                        let _ = sink.send(event);
                        if complete {
                            commands.remove(&id);
                        }
                        if answered_later {
                            return;
                        }
                        None
                    }
                    None => Some(format!("no command {id} is running")),
                }
            }
            _ => Some(format!("the master does not take '{op}' here")),
        };
        self.answer(seq, failure.map_or(Ok(Value::Nil), Err));
    }

    /// Answers the worker's request `seq` (a transfer step): `Ok` with its
    /// result, `Err` with the reason it failed.
    pub fn answer(&self, seq: i64, result: Result<Value, String>) {
        self.send(&protocol::response(seq, result));
    }

    /// Sends request `op` and waits (up to `timeout`) for its result.
    pub async fn request(
        &self,
        op: &str,
        fields: Vec<(&str, Value)>,
        timeout: Duration,
    ) -> Result<Value, String> {
        let seq = self.next_seq.fetch_add(1, Ordering::SeqCst);
        let (answer, answered) = oneshot::channel();
        self.pending.lock().expect("pending").insert(seq, answer);
        if self.is_closed() {
            self.pending.lock().expect("pending").remove(&seq);
            return Err("the worker disconnected".into());
        }
        self.send(&protocol::request(seq, op, fields));
        match tokio::time::timeout(timeout, answered).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("the worker disconnected".into()),
            Err(_) => {
                self.pending.lock().expect("pending").remove(&seq);
                Err(format!(
                    "no answer to '{op}' within {} s",
                    timeout.as_secs()
                ))
            }
        }
    }

    /// Starts command `name` with `args`; its events arrive on the receiver
    /// until `Complete`.
    pub async fn start_command(
        &self,
        name: &str,
        args: Value,
    ) -> Result<(String, mpsc::UnboundedReceiver<CommandEvent>), String> {
        let id = NEXT_COMMAND.fetch_add(1, Ordering::SeqCst).to_string();
        let (sink, events) = mpsc::unbounded_channel();
        self.commands
            .lock()
            .expect("commands")
            .insert(id.clone(), sink);
        let started = self
            .request(
                "start_command",
                vec![
                    ("command_id", Value::from(id.as_str())),
                    ("command_name", Value::from(name)),
                    ("args", args),
                ],
                Duration::from_secs(60),
            )
            .await;
        if let Err(e) = started {
            self.commands.lock().expect("commands").remove(&id);
            return Err(e);
        }
        Ok((id, events))
    }

    /// Asks the worker to stop command `id`.
    pub async fn interrupt(&self, id: &str, why: &str) -> Result<(), String> {
        self.request(
            "interrupt_command",
            vec![("command_id", Value::from(id)), ("why", Value::from(why))],
            Duration::from_secs(60),
        )
        .await
        .map(|_| ())
    }
}
