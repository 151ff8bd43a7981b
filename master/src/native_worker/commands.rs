//! The commands the native worker runs, with the arguments and updates
//! of buildbot-worker's: `shell`, the file-system commands, and the two
//! file transfers.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rmpv::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use crate::workers::files;
use crate::workers::process::{self, Ending, Stream};
use crate::workers::remote::protocol::{get, text};
use crate::workers::remote::Connection;

/// The commands this worker knows, as `get_worker_info` lists them.
pub const NAMES: [&str; 11] = [
    "shell",
    "mkdir",
    "rmdir",
    "rmfile",
    "stat",
    "glob",
    "listdir",
    "upload_file",
    "uploadFile",
    "download_file",
    "downloadFile",
];

/// How long a worker request may wait for the master's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(300);

/// How output is sent, as `set_worker_settings` says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutputSettings {
    /// Send buffered output once this many bytes wait.
    pub buffer_size: usize,
    /// Send buffered output at least this often.
    pub buffer_timeout: Duration,
    /// Longer lines are cut.
    pub max_line_length: usize,
}

impl Default for OutputSettings {
    fn default() -> OutputSettings {
        OutputSettings {
            buffer_size: 64 * 1024,
            buffer_timeout: Duration::from_secs(5),
            max_line_length: 4096,
        }
    }
}

/// Output is never held longer than this, whatever the master allows: a
/// build's log shows it as it comes.
const MAX_HOLD: Duration = Duration::from_millis(100);

impl OutputSettings {
    pub fn apply(&mut self, args: &Value) {
        if let Some(size) = get(args, "buffer_size").and_then(Value::as_u64) {
            self.buffer_size = (size as usize).max(1);
        }
        if let Some(seconds) = get(args, "buffer_timeout").and_then(number) {
            self.buffer_timeout = Duration::from_secs_f64(seconds.max(0.0));
        }
        if let Some(length) = get(args, "max_line_length").and_then(Value::as_u64) {
            self.max_line_length = (length as usize).max(1);
        }
    }
}

fn number(value: &Value) -> Option<f64> {
    value
        .as_f64()
        .or_else(|| value.as_i64().map(|n| n as f64))
        .or_else(|| value.as_u64().map(|n| n as f64))
}

/// What a running command may use.
pub struct Context {
    pub connection: Arc<Connection>,
    pub id: String,
    pub settings: OutputSettings,
    pub stop: watch::Receiver<bool>,
}

impl Context {
    /// Sends request `op` about this command and waits for the answer.
    pub async fn request(&self, op: &str, mut fields: Vec<(&str, Value)>) -> Result<Value, String> {
        fields.push(("command_id", Value::from(self.id.as_str())));
        self.connection.request(op, fields, ANSWER_TIMEOUT).await
    }

    async fn update(&self, pairs: Vec<(&str, Value)>) -> Result<(), String> {
        let pairs = pairs
            .into_iter()
            .map(|(key, value)| Value::Array(vec![Value::from(key), value]))
            .collect();
        self.request("update", vec![("args", Value::Array(pairs))])
            .await
            .map(drop)
    }

    /// Ends a command that failed: its error text and a non-zero code.
    async fn fail(&self, key: &str, message: String) -> Result<(), String> {
        self.update(vec![
            (key, Value::from(message + "\n")),
            ("rc", Value::from(1)),
        ])
        .await
    }

    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }
}

/// A command, its arguments read.
pub enum Command {
    Shell(Shell),
    MakeDirs(Vec<PathBuf>),
    Remove(Vec<PathBuf>),
    Stat(PathBuf),
    Glob(String),
    ListDir(PathBuf),
    Upload(Transfer),
    Download(Transfer),
}

pub struct Shell {
    workdir: PathBuf,
    argv: Vec<String>,
    env: Vec<(String, Option<String>)>,
    timeout: Option<Duration>,
    max_time: Option<Duration>,
    want_stdout: bool,
    want_stderr: bool,
}

pub struct Transfer {
    path: PathBuf,
    max_size: Option<u64>,
    block_size: usize,
    mode: Option<u32>,
    keep_stamp: bool,
}

/// Reads command `name`'s arguments; an unknown command or a missing
/// argument is an error the master gets when it starts it.
pub fn parse(name: &str, args: &Value) -> Result<Command, String> {
    let string = |key: &str| {
        get(args, key)
            .and_then(text)
            .ok_or_else(|| format!("{name}: argument '{key}' is missing"))
    };
    let path = |key: &str| string(key).map(PathBuf::from);
    let paths = || match get(args, "paths") {
        Some(Value::Array(items)) => Ok(items.iter().filter_map(text).map(PathBuf::from).collect()),
        Some(single) => Ok(text(single).map(PathBuf::from).into_iter().collect()),
        None => Err(format!("{name}: argument 'paths' is missing")),
    };
    let seconds = |key: &str| {
        get(args, key)
            .and_then(number)
            .filter(|s| *s > 0.0)
            .map(Duration::from_secs_f64)
    };
    let transfer = || -> Result<Transfer, String> {
        Ok(Transfer {
            path: path("path")?,
            max_size: get(args, "maxsize").and_then(Value::as_u64),
            block_size: get(args, "blocksize")
                .and_then(Value::as_u64)
                .map_or(16 * 1024, |n| n.clamp(1, 1 << 20) as usize),
            mode: get(args, "mode")
                .and_then(Value::as_u64)
                .map(|mode| mode as u32),
            keep_stamp: get(args, "keepstamp").and_then(Value::as_bool) == Some(true),
        })
    };
    Ok(match name {
        "shell" => {
            let argv = match get(args, "command") {
                Some(Value::Array(words)) => {
                    words.iter().map(|w| text(w).unwrap_or_default()).collect()
                }
                Some(script) => match text(script) {
                    Some(script) => vec!["/bin/sh".into(), "-c".into(), script],
                    None => return Err("shell: command must be a string or a list".into()),
                },
                None => return Err("shell: argument 'command' is missing".into()),
            };
            let env = match get(args, "env") {
                Some(Value::Map(pairs)) => pairs
                    .iter()
                    .filter_map(|(name, value)| Some((text(name)?, env_value(value))))
                    .collect(),
                _ => Vec::new(),
            };
            let wanted = |key: &str| get(args, key).is_none_or(truthy);
            Command::Shell(Shell {
                workdir: path("workdir")?,
                argv,
                env,
                timeout: seconds("timeout"),
                max_time: seconds("maxTime"),
                want_stdout: wanted("want_stdout"),
                want_stderr: wanted("want_stderr"),
            })
        }
        "mkdir" => Command::MakeDirs(paths()?),
        "rmdir" => Command::Remove(paths()?),
        "rmfile" => Command::Remove(vec![path("path")?]),
        "stat" => Command::Stat(path("path")?),
        "glob" => Command::Glob(string("path")?),
        "listdir" => Command::ListDir(path("path")?),
        "upload_file" | "uploadFile" => Command::Upload(transfer()?),
        "download_file" | "downloadFile" => Command::Download(transfer()?),
        other => return Err(format!("unknown command '{other}'")),
    })
}

fn truthy(value: &Value) -> bool {
    match value {
        Value::Boolean(b) => *b,
        Value::Integer(n) => n.as_i64() != Some(0),
        Value::Nil => false,
        _ => true,
    }
}

/// An environment value as Buildbot gives it: a string, a list joined
/// with `:` (for PATH-like variables), or nil to remove the variable;
/// `${NAME}` is replaced by the worker's own value of NAME.
fn env_value(value: &Value) -> Option<String> {
    let joined = match value {
        Value::Nil => return None,
        Value::Array(parts) => parts.iter().filter_map(text).collect::<Vec<_>>().join(":"),
        other => text(other).unwrap_or_else(|| other.to_string()),
    };
    Some(expand(&joined))
}

fn expand(value: &str) -> String {
    let mut expanded = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        let Some(length) = rest[start + 2..].find('}') else {
            break;
        };
        expanded.push_str(&rest[..start]);
        let name = &rest[start + 2..start + 2 + length];
        expanded.push_str(&std::env::var(name).unwrap_or_default());
        rest = &rest[start + 3 + length..];
    }
    expanded.push_str(rest);
    expanded
}

impl Command {
    /// Runs the command, sending its updates; an error is the failure the
    /// `complete` message carries.
    pub async fn run(self, context: &Context) -> Result<(), String> {
        match self {
            Command::Shell(shell) => run_shell(shell, context).await,
            Command::MakeDirs(paths) => {
                for path in paths {
                    if let Err(e) = files::make_dir(&path).await {
                        return context.fail("header", e.to_string()).await;
                    }
                }
                context.update(vec![("rc", Value::from(0))]).await
            }
            Command::Remove(paths) => {
                for path in paths {
                    if let Err(e) = files::remove(&path).await {
                        return context.fail("header", e.to_string()).await;
                    }
                }
                context.update(vec![("rc", Value::from(0))]).await
            }
            Command::Stat(path) => match tokio::fs::metadata(&path).await {
                Ok(metadata) => {
                    context
                        .update(vec![("stat", stat(&metadata)), ("rc", Value::from(0))])
                        .await
                }
                Err(e) => {
                    let message = format!("stat: {e}: {}", path.display());
                    context.fail("header", message).await
                }
            },
            Command::Glob(pattern) => match files::glob(&pattern).await {
                Ok(found) => context.update(found_files(found)).await,
                Err(e) => context.fail("header", e.to_string()).await,
            },
            Command::ListDir(path) => match files::list_dir(&path).await {
                Ok(names) => context.update(found_files(names)).await,
                Err(e) => context.fail("header", e.to_string()).await,
            },
            Command::Upload(transfer) => upload(transfer, context).await,
            Command::Download(transfer) => download(transfer, context).await,
        }
    }
}

fn found_files(names: Vec<String>) -> Vec<(&'static str, Value)> {
    let names = names.into_iter().map(Value::from).collect();
    vec![("files", Value::Array(names)), ("rc", Value::from(0))]
}

/// `os.stat`'s tuple: mode, inode, device, links, uid, gid, size, atime,
/// mtime, ctime.
fn stat(metadata: &std::fs::Metadata) -> Value {
    use std::os::unix::fs::MetadataExt;
    Value::Array(vec![
        Value::from(metadata.mode()),
        Value::from(metadata.ino()),
        Value::from(metadata.dev()),
        Value::from(metadata.nlink()),
        Value::from(metadata.uid()),
        Value::from(metadata.gid()),
        Value::from(metadata.size()),
        Value::from(metadata.atime()),
        Value::from(metadata.mtime()),
        Value::from(metadata.ctime()),
    ])
}

/// Output waiting to be sent, per stream, in protocol v7's form: the text
/// of whole lines, where each line ends, and when each came.
#[derive(Default)]
struct Pending {
    text: String,
    ends: Vec<Value>,
    times: Vec<Value>,
}

impl Pending {
    fn push(&mut self, line: &str, max_length: usize, at: f64) {
        let mut rest = line;
        loop {
            let cut = cut_at(rest, max_length);
            self.text.push_str(&rest[..cut]);
            self.ends.push(Value::from(self.text.len()));
            self.text.push('\n');
            self.times.push(Value::F64(at));
            rest = &rest[cut..];
            if rest.is_empty() {
                break;
            }
        }
    }

    fn take(&mut self) -> Option<Value> {
        if self.text.is_empty() {
            return None;
        }
        Some(Value::Array(vec![
            Value::from(std::mem::take(&mut self.text)),
            Value::Array(std::mem::take(&mut self.ends)),
            Value::Array(std::mem::take(&mut self.times)),
        ]))
    }
}

/// The largest char boundary at most `max` bytes into `line`.
fn cut_at(line: &str, max: usize) -> usize {
    if line.len() <= max {
        return line.len();
    }
    let mut cut = max;
    while !line.is_char_boundary(cut) {
        cut -= 1;
    }
    cut.max(line.chars().next().map_or(1, char::len_utf8))
}

fn epoch_seconds() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

async fn run_shell(shell: Shell, context: &Context) -> Result<(), String> {
    let started = Instant::now();
    let command = process::Command {
        argv: shell.argv,
        workdir: shell.workdir,
        env: shell.env,
        timeout: shell.timeout,
        max_time: shell.max_time,
    };
    let (output, mut lines) = mpsc::channel(256);
    let running = process::run(command, output, context.stop.clone());
    tokio::pin!(running);
    let hold = context.settings.buffer_timeout.min(MAX_HOLD);
    let mut tick = tokio::time::interval(hold.max(Duration::from_millis(10)));
    let mut pending = [Pending::default(), Pending::default()];
    let mut open = true;
    let finished = loop {
        tokio::select! {
            line = lines.recv(), if open => match line {
                Some((stream, line)) => {
                    let (index, wanted) = match stream {
                        Stream::Stdout => (0, shell.want_stdout),
                        Stream::Stderr => (1, shell.want_stderr),
                    };
                    if wanted {
                        pending[index].push(&line, context.settings.max_line_length, epoch_seconds());
                    }
                    let waiting = pending[0].text.len() + pending[1].text.len();
                    if waiting >= context.settings.buffer_size {
                        send_output(context, &mut pending).await?;
                    }
                }
                None => open = false,
            },
            finished = &mut running => break finished,
            _ = tick.tick() => send_output(context, &mut pending).await?,
        }
    };
    while let Ok((stream, line)) = lines.try_recv() {
        let index = usize::from(stream == Stream::Stderr);
        pending[index].push(&line, context.settings.max_line_length, epoch_seconds());
    }
    send_output(context, &mut pending).await?;
    let finished = finished.map_err(|e| format!("cannot run the command: {e}"))?;
    let mut end = Vec::new();
    let rc = match finished.ending {
        Ending::Exited(code) => code,
        Ending::Signalled(signal) => {
            end.push((
                "header",
                Value::from(format!("process killed by signal {signal}\n")),
            ));
            -1
        }
        Ending::TimedOut(_) => {
            end.push(("failure_reason", Value::from("timeout_without_output")));
            -1
        }
        Ending::MaxTimeExceeded(_) => {
            end.push(("failure_reason", Value::from("timeout")));
            -1
        }
        Ending::Cancelled => {
            end.push(("header", Value::from("command interrupted\n")));
            -1
        }
    };
    end.push(("rc", Value::from(rc)));
    end.push(("elapsed", Value::F64(started.elapsed().as_secs_f64())));
    context.update(end).await
}

async fn send_output(context: &Context, pending: &mut [Pending; 2]) -> Result<(), String> {
    let mut pairs = Vec::new();
    if let Some(out) = pending[0].take() {
        pairs.push(("stdout", out));
    }
    if let Some(err) = pending[1].take() {
        pairs.push(("stderr", err));
    }
    if pairs.is_empty() {
        return Ok(());
    }
    context.update(pairs).await
}

/// Sends a file to the master block by block, each written before the
/// next is read.
async fn upload(transfer: Transfer, context: &Context) -> Result<(), String> {
    let path = transfer.path.display().to_string();
    let mut file = match tokio::fs::File::open(&transfer.path).await {
        Ok(file) => file,
        Err(e) => {
            let _ = context.request("update_upload_file_close", vec![]).await;
            return context
                .fail(
                    "stderr",
                    format!("Cannot open file '{path}' for upload: {e}"),
                )
                .await;
        }
    };
    context
        .update(vec![("header", Value::from(format!("sending {path}\n")))])
        .await?;
    let mut remaining = transfer.max_size;
    let mut failure = None;
    let mut block = vec![0; transfer.block_size];
    loop {
        if context.stopped() {
            failure = Some("upload interrupted".to_owned());
            break;
        }
        let length = remaining.map_or(block.len(), |r| (r as usize).min(block.len()));
        if length == 0 {
            // The limit is reached; anything left makes the file too large.
            if file.read(&mut [0]).await.map_err(|e| e.to_string())? > 0 {
                failure = Some(format!(
                    "Maximum filesize reached, truncating file '{path}'"
                ));
            }
            break;
        }
        let read = match file.read(&mut block[..length]).await {
            Ok(read) => read,
            Err(e) => {
                failure = Some(format!("cannot read {path}: {e}"));
                break;
            }
        };
        if read == 0 {
            break;
        }
        remaining = remaining.map(|r| r - read as u64);
        let data = Value::Binary(block[..read].to_vec());
        if let Err(e) = context
            .request("update_upload_file_write", vec![("args", data)])
            .await
        {
            failure = Some(format!("the master refused the upload: {e}"));
            break;
        }
    }
    context.request("update_upload_file_close", vec![]).await?;
    if failure.is_none() && transfer.keep_stamp {
        if let Ok(metadata) = tokio::fs::metadata(&transfer.path).await {
            use std::os::unix::fs::MetadataExt;
            let seconds = |s: i64, ns: i64| Value::F64(s as f64 + ns as f64 / 1e9);
            let times = vec![
                (
                    "access_time",
                    seconds(metadata.atime(), metadata.atime_nsec()),
                ),
                (
                    "modified_time",
                    seconds(metadata.mtime(), metadata.mtime_nsec()),
                ),
            ];
            context.request("update_upload_file_utime", times).await?;
        }
    }
    match failure {
        Some(message) => context.fail("stderr", message).await,
        None => context.update(vec![("rc", Value::from(0))]).await,
    }
}

/// Receives a file from the master block by block.
async fn download(transfer: Transfer, context: &Context) -> Result<(), String> {
    let path = transfer.path.display().to_string();
    let opened = async {
        if let Some(dir) = transfer.path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let file = tokio::fs::File::create(&transfer.path).await?;
        if let Some(mode) = transfer.mode {
            use std::os::unix::fs::PermissionsExt;
            let permissions = std::fs::Permissions::from_mode(mode);
            tokio::fs::set_permissions(&transfer.path, permissions).await?;
        }
        std::io::Result::Ok(file)
    };
    let mut file = match opened.await {
        Ok(file) => file,
        Err(e) => {
            let _ = context.request("update_read_file_close", vec![]).await;
            return context
                .fail(
                    "stderr",
                    format!("Cannot open file '{path}' for download: {e}"),
                )
                .await;
        }
    };
    let mut remaining = transfer.max_size;
    let mut failure = None;
    loop {
        if context.stopped() {
            failure = Some("download interrupted".to_owned());
            break;
        }
        let length = remaining.map_or(transfer.block_size, |r| {
            (r as usize).min(transfer.block_size)
        });
        if length == 0 {
            failure = Some(format!(
                "Maximum filesize reached, truncating file '{path}'"
            ));
            break;
        }
        let data = match context
            .request("update_read_file", vec![("length", Value::from(length))])
            .await
        {
            Ok(Value::Binary(data)) => data,
            Ok(Value::String(s)) => s.into_bytes(),
            Ok(_) => Vec::new(),
            Err(e) => {
                failure = Some(format!("the master could not send the file: {e}"));
                break;
            }
        };
        if data.is_empty() {
            break;
        }
        remaining = remaining.map(|r| r.saturating_sub(data.len() as u64));
        if let Err(e) = file.write_all(&data).await {
            failure = Some(format!("cannot write {path}: {e}"));
            break;
        }
    }
    let flushed = file.flush().await;
    context.request("update_read_file_close", vec![]).await?;
    match (failure, flushed) {
        (Some(message), _) => context.fail("stderr", message).await,
        (None, Err(e)) => {
            context
                .fail("stderr", format!("cannot write {path}: {e}"))
                .await
        }
        (None, Ok(())) => context.update(vec![("rc", Value::from(0))]).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_sent_as_whole_lines_with_their_ends_and_long_lines_cut() {
        let mut pending = Pending::default();
        pending.push("hello", 4096, 1.0);
        pending.push("abcdef", 4, 2.0);
        let Some(Value::Array(parts)) = pending.take() else {
            panic!("output");
        };
        assert_eq!(text(&parts[0]).unwrap(), "hello\nabcd\nef\n");
        assert_eq!(
            parts[1],
            Value::Array(vec![Value::from(5), Value::from(10), Value::from(13)])
        );
        assert_eq!(parts[2].as_array().unwrap().len(), 3);
        assert!(pending.take().is_none());
        assert_eq!(cut_at("ééé", 3), 2, "never inside a character");
    }

    #[test]
    fn arguments_are_read_as_buildbot_sends_them() {
        let args = crate::workers::remote::protocol::map(vec![
            ("workdir", Value::from("/w/b/build")),
            ("command", Value::from("make check")),
            (
                "env",
                Value::Map(vec![
                    (
                        Value::from("PATH"),
                        Value::Array(vec![Value::from("/opt/bin"), Value::from("${PATH}")]),
                    ),
                    (Value::from("GONE"), Value::Nil),
                ]),
            ),
            ("timeout", Value::from(30)),
            ("maxTime", Value::Nil),
            ("want_stderr", Value::from(0)),
        ]);
        let Ok(Command::Shell(shell)) = parse("shell", &args) else {
            panic!("a shell command");
        };
        assert_eq!(shell.argv, ["/bin/sh", "-c", "make check"]);
        assert_eq!(
            shell.env,
            [
                (
                    "PATH".to_owned(),
                    Some(format!("/opt/bin:{}", std::env::var("PATH").unwrap()))
                ),
                ("GONE".to_owned(), None)
            ]
        );
        assert_eq!(shell.timeout, Some(Duration::from_secs(30)));
        assert_eq!(shell.max_time, None);
        assert!(shell.want_stdout && !shell.want_stderr);
        assert!(parse("cpdir", &args)
            .err()
            .unwrap()
            .contains("unknown command 'cpdir'"));
        assert!(parse("stat", &args)
            .err()
            .unwrap()
            .contains("'path' is missing"));
    }
}
