//! Remote workers: Buildbot's `buildbot-worker` (and ours) connected over
//! the `msgpack_experimental_v7` protocol. A [`RemoteWorker`] is the
//! configured worker; its [`Link`] holds the connection while there is one,
//! which the topology's worker listener sets when the worker logs in.

mod connection;
pub mod protocol;

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use rmpv::Value;
use tokio::sync::{mpsc, watch};

use super::process::{Ending, Finished, Stream};
use super::{ShellCommand, Worker};
pub use connection::{CommandEvent, Connection};
use protocol::{map, text};

/// What the master knows of a remote worker's connection.
#[derive(Default)]
pub struct Link {
    state: Mutex<LinkState>,
}

#[derive(Default)]
struct LinkState {
    connection: Option<Arc<Connection>>,
    /// A login is being completed.
    connecting: bool,
    /// Counts logins: a timer started before the last one is stale.
    generation: u64,
    /// The worker's base directory, from its info.
    basedir: String,
}

impl Link {
    pub fn connection(&self) -> Option<Arc<Connection>> {
        self.state
            .lock()
            .expect("link")
            .connection
            .clone()
            .filter(|c| !c.is_closed())
    }

    /// Claims the link for a login; false when the worker is connected or
    /// another login is under way.
    pub fn claim(&self) -> bool {
        let mut state = self.state.lock().expect("link");
        let alive = state.connection.as_ref().is_some_and(|c| !c.is_closed());
        if alive || state.connecting {
            return false;
        }
        state.connecting = true;
        true
    }

    /// Gives up a claim whose login failed.
    pub fn release(&self) {
        self.state.lock().expect("link").connecting = false;
    }

    /// Records a logged-in connection and its base directory; the login's
    /// generation.
    pub fn connect(&self, connection: Arc<Connection>, basedir: String) -> u64 {
        let mut state = self.state.lock().expect("link");
        state.basedir = basedir;
        state.connection = Some(connection);
        state.connecting = false;
        state.generation += 1;
        state.generation
    }

    /// Forgets `connection` if it is the current one; whether it was.
    pub fn disconnect(&self, connection: &Arc<Connection>) -> bool {
        let mut state = self.state.lock().expect("link");
        let current = state
            .connection
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, connection));
        if current {
            state.connection = None;
        }
        current
    }

    /// The number of the last login.
    pub fn generation(&self) -> u64 {
        self.state.lock().expect("link").generation
    }

    fn basedir(&self) -> String {
        self.state.lock().expect("link").basedir.clone()
    }
}

/// A configured remote worker.
pub struct RemoteWorker {
    name: String,
    link: Arc<Link>,
}

impl RemoteWorker {
    pub fn new(name: String, link: Arc<Link>) -> RemoteWorker {
        RemoteWorker { name, link }
    }

    fn path(&self, builder: &str, relative: &str) -> String {
        let dir = format!("{}/{builder}", self.link.basedir().trim_end_matches('/'));
        if relative.is_empty() || relative == "." {
            dir
        } else {
            format!("{dir}/{relative}")
        }
    }

    /// The live connection; `NotConnected` (which makes a build RETRY) when
    /// there is none.
    fn connection(&self) -> io::Result<Arc<Connection>> {
        self.link.connection().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotConnected,
                format!("worker {} is not connected", self.name),
            )
        })
    }
}

/// How long a file-system command may take.
const QUICK_COMMAND: Duration = Duration::from_secs(120);

/// How long an interrupted command may take to end on the worker.
const INTERRUPT_GRACE: Duration = Duration::from_secs(60);

impl Worker for RemoteWorker {
    fn name(&self) -> &str {
        &self.name
    }

    fn connected(&self) -> bool {
        self.link.connection().is_some()
    }

    fn builder_dir(&self, builder: &str) -> String {
        self.path(builder, "")
    }

    fn run(
        &self,
        command: ShellCommand,
        output: mpsc::Sender<(Stream, String)>,
        stop: watch::Receiver<bool>,
    ) -> BoxFuture<'static, io::Result<Finished>> {
        let connection = self.connection();
        let workdir = self.path(&command.builder, &command.workdir);
        Box::pin(async move {
            let connection = connection?;
            let env = command
                .env
                .iter()
                .map(|(name, value)| {
                    let value = value.as_deref().map_or(Value::Nil, Value::from);
                    (Value::from(name.as_str()), value)
                })
                .collect();
            let mut args = vec![
                ("workdir", Value::from(workdir)),
                (
                    "command",
                    Value::Array(
                        command
                            .argv
                            .iter()
                            .map(|a| Value::from(a.as_str()))
                            .collect(),
                    ),
                ),
                ("env", Value::Map(env)),
                ("want_stdout", Value::from(true)),
                ("want_stderr", Value::from(true)),
                ("logEnviron", Value::from(false)),
                ("usePTY", Value::from(false)),
                ("logfiles", Value::Map(Vec::new())),
            ];
            if let Some(timeout) = command.timeout {
                args.push(("timeout", Value::from(timeout.as_secs())));
            }
            if let Some(max_time) = command.max_time {
                args.push(("maxTime", Value::from(max_time.as_secs())));
            }
            let started = Instant::now();
            let (id, events) = connection
                .start_command("shell", map(args))
                .await
                .map_err(|e| start_error(&connection, e))?;
            let outcome = follow(&connection, &id, events, Some(&output), stop).await?;
            let ending = match (outcome.failure_reason.as_deref(), outcome.interrupted) {
                (_, true) => Ending::Cancelled,
                (Some("timeout"), _) => {
                    Ending::MaxTimeExceeded(command.max_time.unwrap_or_default())
                }
                (Some("timeout_without_output"), _) => {
                    Ending::TimedOut(command.timeout.unwrap_or_default())
                }
                _ => match outcome.rc {
                    Some(rc) => Ending::Exited(rc),
                    None => {
                        return Err(io::Error::other(
                            outcome
                                .error
                                .unwrap_or_else(|| "the command ended without a code".into()),
                        ))
                    }
                },
            };
            Ok(Finished {
                ending,
                elapsed: started.elapsed(),
            })
        })
    }

    fn remove_dir(&self, builder: &str, dir: &str) -> BoxFuture<'static, io::Result<()>> {
        let connection = self.connection();
        let path = self.path(builder, dir);
        Box::pin(async move {
            let connection = connection?;
            let args = map(vec![
                ("paths", Value::Array(vec![Value::from(path.as_str())])),
                ("logEnviron", Value::from(false)),
                ("timeout", Value::from(QUICK_COMMAND.as_secs())),
            ]);
            let outcome = quick(&connection, "rmdir", args).await?;
            match outcome.rc {
                Some(0) => Ok(()),
                _ => Err(io::Error::other(format!(
                    "cannot remove {path}: {}",
                    outcome.header.trim()
                ))),
            }
        })
    }

    fn exists(&self, builder: &str, path: &str) -> BoxFuture<'static, io::Result<bool>> {
        let connection = self.connection();
        let path = self.path(builder, path);
        Box::pin(async move {
            let connection = connection?;
            let outcome =
                quick(&connection, "stat", map(vec![("path", Value::from(path))])).await?;
            Ok(outcome.rc == Some(0))
        })
    }
}

/// What a command's updates said.
#[derive(Debug, Default)]
struct Outcome {
    rc: Option<i32>,
    failure_reason: Option<String>,
    header: String,
    /// The worker's error on completion.
    error: Option<String>,
    interrupted: bool,
}

/// The text of an output update: a string, or (protocol v7) `[text, line
/// ends, times]`.
fn output_text(value: &Value) -> String {
    match value {
        Value::Array(parts) => parts.first().and_then(text).unwrap_or_default(),
        other => text(other).unwrap_or_default(),
    }
}

/// A command that could not start: `NotConnected` (the build is retried)
/// when the connection went meanwhile.
fn start_error(connection: &Connection, error: String) -> io::Error {
    if connection.is_closed() {
        io::Error::new(io::ErrorKind::NotConnected, error)
    } else {
        io::Error::other(error)
    }
}

/// Runs a command without output, to its end.
async fn quick(connection: &Connection, name: &str, args: Value) -> io::Result<Outcome> {
    let (id, events) = connection
        .start_command(name, args)
        .await
        .map_err(|e| start_error(connection, e))?;
    let (_stop, stop) = watch::channel(false);
    tokio::time::timeout(QUICK_COMMAND, follow(connection, &id, events, None, stop))
        .await
        .map_err(|_| {
            io::Error::other(format!(
                "'{name}' took longer than {} s",
                QUICK_COMMAND.as_secs()
            ))
        })?
}

/// Follows command `id` to its end: output lines to `output`, `stop`
/// interrupts it.
async fn follow(
    connection: &Connection,
    id: &str,
    mut events: mpsc::UnboundedReceiver<CommandEvent>,
    output: Option<&mpsc::Sender<(Stream, String)>>,
    mut stop: watch::Receiver<bool>,
) -> io::Result<Outcome> {
    let mut outcome = Outcome::default();
    let mut partial = [String::new(), String::new()];
    // Whether a stop can still come (its sender may be gone).
    let mut stoppable = true;
    // After an interrupt, the worker has this long to say the command ended.
    let mut given_up = std::pin::pin!(tokio::time::sleep(Duration::MAX));
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            () = &mut given_up, if outcome.interrupted => {
                tracing::warn!("a worker did not end an interrupted command within {} s", INTERRUPT_GRACE.as_secs());
                return Ok(outcome);
            }
            changed = stop.changed(), if stoppable && !outcome.interrupted => {
                if changed.is_err() {
                    stoppable = false;
                } else if *stop.borrow() {
                    outcome.interrupted = true;
                    given_up
                        .as_mut()
                        .reset(tokio::time::Instant::now() + INTERRUPT_GRACE);
                    if let Err(e) = connection.interrupt(id, "stopped").await {
                        tracing::warn!("cannot interrupt a command: {e}");
                    }
                }
                continue;
            }
        };
        match event {
            None | Some(CommandEvent::Lost) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "the worker disconnected",
                ))
            }
            Some(CommandEvent::Complete(error)) => {
                outcome.error = error;
                break;
            }
            Some(CommandEvent::Update(pairs)) => {
                for (key, value) in pairs {
                    match key.as_str() {
                        "stdout" | "stderr" => {
                            let (stream, index) = if key == "stdout" {
                                (Stream::Stdout, 0)
                            } else {
                                (Stream::Stderr, 1)
                            };
                            partial[index].push_str(&output_text(&value));
                            while let Some(end) = partial[index].find('\n') {
                                let line: String = partial[index].drain(..=end).collect();
                                if let Some(output) = output {
                                    let line = line.trim_end_matches(['\n', '\r']).to_string();
                                    let _ = output.send((stream, line)).await;
                                }
                            }
                        }
                        "header" => outcome.header.push_str(&output_text(&value)),
                        "rc" => outcome.rc = value.as_i64().map(|rc| rc as i32),
                        "failure_reason" => outcome.failure_reason = text(&value),
                        _ => {}
                    }
                }
            }
        }
    }
    // A last line without its newline.
    for (index, stream) in [(0, Stream::Stdout), (1, Stream::Stderr)] {
        if let (false, Some(output)) = (partial[index].is_empty(), output) {
            let _ = output
                .send((stream, std::mem::take(&mut partial[index])))
                .await;
        }
    }
    Ok(outcome)
}
