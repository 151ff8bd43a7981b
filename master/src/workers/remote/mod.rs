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
use super::transfer::{Download, Upload};
use super::{files, FileTransfer, PathKind, ShellCommand, Worker};
pub use connection::{CommandEvent, Connection, Request, Transfer};
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
    /// An operator asked for a shutdown once its builds end; a new login
    /// clears it.
    shutting_down: bool,
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
        state.shutting_down = false;
        state.generation += 1;
        state.generation
    }

    /// Takes no new build until the next login.
    pub fn begin_shutdown(&self) {
        self.state.lock().expect("link").shutting_down = true;
    }

    pub fn shutting_down(&self) -> bool {
        self.state.lock().expect("link").shutting_down
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
            let outcome = follow(
                &connection,
                &id,
                events,
                Some(&output),
                stop,
                &mut Endpoint::None,
            )
            .await?;
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
            outcome.succeeded(|| format!("cannot remove {path}"))
        })
    }

    fn make_dir(&self, builder: &str, dir: &str) -> BoxFuture<'static, io::Result<()>> {
        let connection = self.connection();
        let path = self.path(builder, dir);
        Box::pin(async move {
            let connection = connection?;
            let args = map(vec![(
                "paths",
                Value::Array(vec![Value::from(path.as_str())]),
            )]);
            let outcome = quick(&connection, "mkdir", args).await?;
            outcome.succeeded(|| format!("cannot create {path}"))
        })
    }

    fn stat(&self, builder: &str, path: &str) -> BoxFuture<'static, io::Result<Option<PathKind>>> {
        let connection = self.connection();
        let path = self.path(builder, path);
        Box::pin(async move {
            let connection = connection?;
            let outcome =
                quick(&connection, "stat", map(vec![("path", Value::from(path))])).await?;
            Ok(match (outcome.rc, outcome.mode) {
                (Some(0), Some(mode)) => Some(PathKind::from_mode(mode)),
                _ => None,
            })
        })
    }

    fn glob(&self, builder: &str, pattern: &str) -> BoxFuture<'static, io::Result<Vec<String>>> {
        let connection = self.connection();
        let base = self.builder_dir(builder);
        let pattern = self.path(builder, pattern);
        Box::pin(async move {
            let connection = connection?;
            let args = map(vec![("path", Value::from(pattern.as_str()))]);
            let outcome = quick(&connection, "glob", args).await?;
            let mut found = outcome.files(|| format!("cannot match {pattern}"))?;
            found = found.iter().map(|p| files::relative_to(&base, p)).collect();
            found.sort();
            Ok(found)
        })
    }

    fn list_dir(&self, builder: &str, dir: &str) -> BoxFuture<'static, io::Result<Vec<String>>> {
        let connection = self.connection();
        let path = self.path(builder, dir);
        Box::pin(async move {
            let connection = connection?;
            let args = map(vec![("path", Value::from(path.as_str()))]);
            let mut names = quick(&connection, "listdir", args)
                .await?
                .files(|| format!("cannot list {path}"))?;
            names.sort();
            Ok(names)
        })
    }

    fn upload(&self, transfer: FileTransfer) -> BoxFuture<'static, io::Result<u64>> {
        let connection = self.connection();
        let path = self.path(&transfer.builder, &transfer.worker_path);
        Box::pin(async move {
            let connection = connection?;
            let mut upload = Upload::create(&transfer.master_path, transfer.max_size).await?;
            let args = map(vec![
                ("path", Value::from(path.as_str())),
                ("writer", Value::Nil),
                ("maxsize", transfer.max_size.map_or(Value::Nil, Value::from)),
                ("blocksize", Value::from(transfer.block_size)),
                ("keepstamp", Value::from(transfer.keep_stamp)),
            ]);
            let mut endpoint = Endpoint::Upload(&mut upload);
            let outcome = transfer_command(&connection, "upload_file", args, &mut endpoint).await;
            match outcome.and_then(|o| o.succeeded(|| format!("cannot upload {path}"))) {
                Ok(()) => upload.finish(transfer.mode).await,
                Err(e) => {
                    upload.abandon().await;
                    Err(e)
                }
            }
        })
    }

    fn download(&self, transfer: FileTransfer) -> BoxFuture<'static, io::Result<u64>> {
        let connection = self.connection();
        let path = self.path(&transfer.builder, &transfer.worker_path);
        Box::pin(async move {
            let connection = connection?;
            let mut reading = Download::open(&transfer.master_path, transfer.max_size)
                .await
                .map_err(io::Error::other)?;
            let size = reading.size;
            let args = map(vec![
                ("path", Value::from(path.as_str())),
                ("reader", Value::Nil),
                ("maxsize", transfer.max_size.map_or(Value::Nil, Value::from)),
                ("blocksize", Value::from(transfer.block_size)),
                ("mode", transfer.mode.map_or(Value::Nil, Value::from)),
            ]);
            let mut endpoint = Endpoint::Download(&mut reading);
            transfer_command(&connection, "download_file", args, &mut endpoint)
                .await?
                .succeeded(|| format!("cannot download to {path}"))?;
            Ok(size)
        })
    }
}

/// The master's end of a command's transfer requests.
enum Endpoint<'a> {
    None,
    Upload(&'a mut Upload),
    Download(&'a mut Download),
}

impl Endpoint<'_> {
    async fn handle(&mut self, op: Transfer) -> Result<Value, String> {
        match (self, op) {
            (Endpoint::Upload(upload), Transfer::Write(data)) => {
                upload.write(&data).await.map(|()| Value::Nil)
            }
            (Endpoint::Upload(upload), Transfer::Utime { modified }) => {
                upload.set_modified(modified);
                Ok(Value::Nil)
            }
            (Endpoint::Upload(_), Transfer::Close) => Ok(Value::Nil),
            (Endpoint::Download(reading), Transfer::Read(length)) => reading
                .read(length.min(MAX_BLOCK))
                .await
                .map(Value::Binary)
                .map_err(|e| e.to_string()),
            (Endpoint::Download(_), Transfer::ReadClose) => Ok(Value::Nil),
            (_, op) => Err(format!("no transfer here takes {op:?}")),
        }
    }
}

/// The largest block a download sends at once, whatever the worker asks.
const MAX_BLOCK: usize = 1 << 20;

/// Runs a transfer command to its end, answering its transfer requests.
async fn transfer_command(
    connection: &Connection,
    name: &str,
    args: Value,
    endpoint: &mut Endpoint<'_>,
) -> io::Result<Outcome> {
    let (id, events) = connection
        .start_command(name, args)
        .await
        .map_err(|e| start_error(connection, e))?;
    let (_stop, stop) = watch::channel(false);
    follow(connection, &id, events, None, stop, endpoint).await
}

/// Makes the directories of `builders` under the worker's `basedir`, as
/// Buildbot's master does when a worker attaches.
pub async fn make_builder_dirs(
    connection: &Connection,
    basedir: &str,
    builders: &[String],
) -> io::Result<()> {
    if builders.is_empty() {
        return Ok(());
    }
    let base = basedir.trim_end_matches('/');
    let paths = builders
        .iter()
        .map(|builder| Value::from(format!("{base}/{builder}")))
        .collect();
    quick(
        connection,
        "mkdir",
        map(vec![("paths", Value::Array(paths))]),
    )
    .await?
    .succeeded(|| "cannot make the builders' directories".to_owned())
}

/// What a command's updates said.
#[derive(Debug, Default)]
struct Outcome {
    rc: Option<i32>,
    failure_reason: Option<String>,
    header: String,
    /// Standard error of a command whose output is not followed.
    stderr: String,
    /// `files` of `glob` and `listdir`.
    files: Option<Vec<String>>,
    /// The `st_mode` of a `stat`.
    mode: Option<u32>,
    /// The worker's error on completion.
    error: Option<String>,
    interrupted: bool,
}

impl Outcome {
    /// Ok when the command ended with code 0; else an error saying
    /// `what` failed and what the worker said.
    fn succeeded(&self, what: impl FnOnce() -> String) -> io::Result<()> {
        if self.rc == Some(0) && self.error.is_none() {
            return Ok(());
        }
        let said = [self.stderr.trim(), self.header.trim()]
            .into_iter()
            .chain(self.error.as_deref())
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        Err(io::Error::other(if said.is_empty() {
            what()
        } else {
            format!("{}: {said}", what())
        }))
    }

    fn files(self, what: impl FnOnce() -> String) -> io::Result<Vec<String>> {
        self.succeeded(what)?;
        Ok(self.files.unwrap_or_default())
    }
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
    let mut endpoint = Endpoint::None;
    let following = follow(connection, &id, events, None, stop, &mut endpoint);
    tokio::time::timeout(QUICK_COMMAND, following)
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
    endpoint: &mut Endpoint<'_>,
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
            Some(CommandEvent::Transfer { seq, op }) => {
                connection.answer(seq, endpoint.handle(op).await);
            }
            Some(CommandEvent::Complete(error)) => {
                outcome.error = error;
                break;
            }
            Some(CommandEvent::Update(pairs)) => {
                for (key, value) in pairs {
                    match key.as_str() {
                        "stderr" if output.is_none() => {
                            outcome.stderr.push_str(&output_text(&value))
                        }
                        "files" => {
                            let names = value
                                .as_array()
                                .map(|names| names.iter().filter_map(text).collect());
                            outcome.files = names;
                        }
                        "stat" => {
                            outcome.mode = value
                                .as_array()
                                .and_then(|fields| fields.first())
                                .and_then(Value::as_u64)
                                .map(|mode| mode as u32);
                        }
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
