//! Running one step of a build on its worker: `shell`, `git` and
//! `set_property`, with Buildbot's results and summaries.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, watch};

use super::log::LogWriter;
use super::properties::Properties;
use crate::config::interpolate::Template;
use crate::config::{
    CommandLine, DownloadStep, FileSystemCommand, GitMode, GitStep, LogSettings, ShellStep,
    StepConfig, StepKind, UploadStep,
};
use crate::db::{Db, Error};
use crate::results::Results;
use crate::workers::{is_contained, Ending, FileTransfer, PathKind, ShellCommand, Stream, Worker};

/// How often a running step's output is stored.
const LOG_FLUSH_INTERVAL: Duration = Duration::from_millis(200);

/// What a step needs from its build.
pub struct StepContext<'a> {
    pub db: &'a Db,
    pub worker: Arc<dyn Worker>,
    pub builder: &'a str,
    /// The master's base directory: relative master paths start there.
    pub master_dir: &'a std::path::Path,
    pub properties: &'a mut Properties,
    /// How the step's log is kept.
    pub logs: LogSettings,
    pub stop: watch::Receiver<bool>,
}

/// How a step ended and its summary (Buildbot's step `state_string`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepOutcome {
    pub results: Results,
    pub summary: String,
}

/// The logs a step writes.
pub fn log_names(step: &StepConfig) -> Vec<String> {
    match step.kind {
        StepKind::Shell(_)
        | StepKind::Git(_)
        | StepKind::Upload(_)
        | StepKind::Download(_)
        | StepKind::FileSystem(..) => vec!["stdio".to_owned()],
        StepKind::SetProperty { .. } => Vec::new(),
    }
}

/// What the step says while it runs.
pub fn running_summary(step: &StepConfig, properties: &Properties) -> String {
    match &step.description {
        Some(description) => description.render(properties),
        None => default_summary(step, properties),
    }
}

fn default_summary(step: &StepConfig, properties: &Properties) -> String {
    match &step.kind {
        StepKind::Shell(shell) => describe_command(&shell.command, properties),
        StepKind::Git(_) => "update".to_owned(),
        StepKind::SetProperty { property, .. } => format!("property '{property}' set"),
        StepKind::Upload(upload) => match upload.sources.as_slice() {
            [one] if !upload.multiple => {
                format!("uploading {}", base_name(&one.render(properties)))
            }
            _ => "uploading".to_owned(),
        },
        StepKind::Download(download) => {
            format!(
                "downloading to {}",
                base_name(&download.workerdest.render(properties))
            )
        }
        StepKind::FileSystem(command, path) => {
            let verb = match command {
                FileSystemCommand::MakeDirectory => "making",
                FileSystemCommand::RemoveDirectory => "removing",
                FileSystemCommand::FileExists => "checking",
            };
            format!("{verb} {}", path.render(properties))
        }
    }
}

fn base_name(path: &str) -> &str {
    path.rsplit('/')
        .find(|part| !part.is_empty())
        .unwrap_or(path)
}

/// Buildbot's description of a command: its first two words, quoted.
fn describe_command(command: &CommandLine, properties: &Properties) -> String {
    let words: Vec<String> = match command {
        CommandLine::Argv(words) => words.iter().map(|w| w.render(properties)).collect(),
        CommandLine::Script(script) => script
            .render(properties)
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
    };
    let mut shown = words.iter().take(2).cloned().collect::<Vec<_>>().join(" ");
    if words.len() > 2 {
        shown.push_str(" ...");
    }
    format!("'{shown}'")
}

/// Runs a step and returns its outcome; `logs` are the ids of the logs
/// [`log_names`] listed. Only a storage failure is an error.
pub async fn run(
    step: &StepConfig,
    context: StepContext<'_>,
    logs: &[i64],
) -> Result<StepOutcome, Error> {
    let results = match &step.kind {
        StepKind::Shell(shell) => {
            let mut log = LogWriter::new(context.db.clone(), logs[0], context.logs);
            let results = run_shell(shell, &context, &mut log).await?;
            log.close().await?;
            results
        }
        StepKind::Git(git) => {
            let mut log = LogWriter::new(context.db.clone(), logs[0], context.logs);
            let outcome = run_git(git, &context, &mut log).await;
            log.close().await?;
            let (results, got_revision) = outcome?;
            if let Some(got) = got_revision {
                context
                    .properties
                    .set("got_revision", Value::from(got), "Git");
            }
            results
        }
        StepKind::Upload(upload) => {
            let mut log = LogWriter::new(context.db.clone(), logs[0], context.logs);
            let results = run_upload(upload, &context, &mut log).await;
            log.close().await?;
            results?
        }
        StepKind::Download(download) => {
            let mut log = LogWriter::new(context.db.clone(), logs[0], context.logs);
            let results = run_download(download, &context, &mut log).await;
            log.close().await?;
            results?
        }
        StepKind::FileSystem(command, path) => {
            let mut log = LogWriter::new(context.db.clone(), logs[0], context.logs);
            let results = run_file_system(*command, path, &context, &mut log).await;
            log.close().await?;
            results?
        }
        StepKind::SetProperty { property, value } => {
            let value = render_value(value, context.properties);
            context.properties.set(property, value, "SetProperty Step");
            Results::Success
        }
    };
    let mut summary = match (&step.description_done, &step.description) {
        (Some(done), _) => done.render(context.properties),
        (None, Some(description)) => description.render(context.properties),
        (None, None) => default_summary(step, context.properties),
    };
    if results != Results::Success {
        summary.push_str(&format!(" ({results})"));
    }
    Ok(StepOutcome { results, summary })
}

/// Renders every string inside a property value.
fn render_value(value: &Value, properties: &Properties) -> Value {
    match value {
        Value::String(text) => match Template::parse(text) {
            Ok(template) => Value::String(template.render(properties)),
            Err(_) => value.clone(),
        },
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| render_value(item, properties))
                .collect(),
        ),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(key, item)| (key.clone(), render_value(item, properties)))
                .collect(),
        ),
        other => other.clone(),
    }
}

async fn run_shell(
    shell: &ShellStep,
    context: &StepContext<'_>,
    log: &mut LogWriter,
) -> Result<Results, Error> {
    let props = &*context.properties;
    let argv = match &shell.command {
        CommandLine::Argv(words) => words.iter().map(|w| w.render(props)).collect(),
        CommandLine::Script(script) => {
            vec!["/bin/sh".into(), "-c".into(), script.render(props)]
        }
    };
    let Some(workdir) = workdir(&shell.workdir, props, log).await? else {
        return Ok(Results::Exception);
    };
    let env = shell
        .env
        .iter()
        .map(|(name, value)| (name.clone(), Some(value.render(props))))
        .collect();
    let command = ShellCommand {
        builder: context.builder.to_owned(),
        workdir,
        argv,
        env,
        timeout: shell.timeout,
        max_time: shell.max_time,
    };
    execute(command, context, log, None).await
}

/// Renders a step's workdir and checks it stays inside the builder's directory.
async fn workdir(
    template: &Template,
    properties: &Properties,
    log: &mut LogWriter,
) -> Result<Option<String>, Error> {
    let workdir = template.render(properties);
    if is_contained(&workdir) {
        return Ok(Some(workdir));
    }
    log.header(&format!(
        "workdir '{workdir}' leaves the builder's directory; not running"
    ))
    .await?;
    Ok(None)
}

/// A path on the master: relative ones start at its base directory.
fn master_path(context: &StepContext<'_>, path: &str) -> std::path::PathBuf {
    context.master_dir.join(path)
}

/// Renders a worker path inside `workdir`, refusing one that leaves the
/// builder's directory.
async fn inside(
    workdir: &str,
    template: &Template,
    properties: &Properties,
    log: &mut LogWriter,
) -> Result<Option<String>, Error> {
    let path = template.render(properties);
    let joined = if workdir.is_empty() || workdir == "." {
        path
    } else {
        format!("{workdir}/{path}")
    };
    if is_contained(&joined) && !joined.is_empty() {
        return Ok(Some(joined));
    }
    log.header(&format!(
        "'{joined}' leaves the builder's directory; not transferring"
    ))
    .await?;
    Ok(None)
}

/// The result of a worker operation that failed: RETRY when the worker went
/// away, else FAILURE; the reason goes to the log.
async fn failed(error: std::io::Error, log: &mut LogWriter) -> Result<Results, Error> {
    if error.kind() == std::io::ErrorKind::NotConnected {
        log.header(&format!("{error}: the build will be retried"))
            .await?;
        return Ok(Results::Retry);
    }
    log.header(&error.to_string()).await?;
    Ok(Results::Failure)
}

/// Buildbot's `FileUpload` and `MultipleFileUpload`.
async fn run_upload(
    upload: &UploadStep,
    context: &StepContext<'_>,
    log: &mut LogWriter,
) -> Result<Results, Error> {
    let props = &*context.properties;
    let Some(workdir) = workdir(&upload.workdir, props, log).await? else {
        return Ok(Results::Exception);
    };
    let masterdest = master_path(context, &upload.masterdest.render(props));
    let mut sources = Vec::new();
    for source in &upload.sources {
        let Some(path) = inside(&workdir, source, props, log).await? else {
            return Ok(Results::Exception);
        };
        if !upload.glob {
            sources.push(path);
            continue;
        }
        match context.worker.glob(context.builder, &path).await {
            Ok(found) if found.is_empty() => {
                log.header(&format!("no file matches {path}")).await?;
            }
            Ok(found) => sources.extend(found.into_iter().filter(|p| is_contained(p))),
            Err(error) => return failed(error, log).await,
        }
    }
    if upload.multiple && sources.is_empty() {
        log.header("nothing to upload").await?;
        return Ok(Results::Skipped);
    }
    for source in sources {
        let destination = if upload.multiple {
            masterdest.join(base_name(&source))
        } else {
            masterdest.clone()
        };
        if upload.multiple
            && context
                .worker
                .stat(context.builder, &source)
                .await
                .ok()
                .flatten()
                == Some(PathKind::Dir)
        {
            log.header(&format!("{source} is a directory; not uploaded"))
                .await?;
            continue;
        }
        log.header(&format!("uploading {source} to {}", destination.display()))
            .await?;
        let transfer = FileTransfer {
            builder: context.builder.to_owned(),
            worker_path: source,
            master_path: destination,
            max_size: upload.limits.max_size,
            block_size: upload.limits.block_size,
            mode: upload.limits.mode,
            keep_stamp: upload.keepstamp,
        };
        match context.worker.upload(transfer).await {
            Ok(bytes) => log.header(&format!("{bytes} bytes")).await?,
            Err(error) => return failed(error, log).await,
        }
    }
    Ok(Results::Success)
}

/// Buildbot's `FileDownload`.
async fn run_download(
    download: &DownloadStep,
    context: &StepContext<'_>,
    log: &mut LogWriter,
) -> Result<Results, Error> {
    let props = &*context.properties;
    let Some(workdir) = workdir(&download.workdir, props, log).await? else {
        return Ok(Results::Exception);
    };
    let Some(destination) = inside(&workdir, &download.workerdest, props, log).await? else {
        return Ok(Results::Exception);
    };
    let source = master_path(context, &download.mastersrc.render(props));
    log.header(&format!(
        "downloading {} to {destination}",
        source.display()
    ))
    .await?;
    let transfer = FileTransfer {
        builder: context.builder.to_owned(),
        worker_path: destination,
        master_path: source,
        max_size: download.limits.max_size,
        block_size: download.limits.block_size,
        mode: download.limits.mode,
        keep_stamp: false,
    };
    match context.worker.download(transfer).await {
        Ok(bytes) => {
            log.header(&format!("{bytes} bytes")).await?;
            Ok(Results::Success)
        }
        Err(error) => failed(error, log).await,
    }
}

/// Buildbot's `MakeDirectory`, `RemoveDirectory` and `FileExists`.
async fn run_file_system(
    command: FileSystemCommand,
    path: &Template,
    context: &StepContext<'_>,
    log: &mut LogWriter,
) -> Result<Results, Error> {
    let path = path.render(context.properties);
    if !is_contained(&path) {
        log.header(&format!("'{path}' leaves the builder's directory"))
            .await?;
        return Ok(Results::Exception);
    }
    let (worker, builder) = (&context.worker, context.builder);
    let done = match command {
        FileSystemCommand::MakeDirectory => worker.make_dir(builder, &path).await,
        FileSystemCommand::RemoveDirectory => worker.remove_dir(builder, &path).await,
        FileSystemCommand::FileExists => match worker.stat(builder, &path).await {
            Ok(Some(PathKind::File)) => {
                log.header(&format!("{path}: file found")).await?;
                return Ok(Results::Success);
            }
            Ok(Some(_)) => {
                log.header(&format!("{path}: not a file")).await?;
                return Ok(Results::Failure);
            }
            Ok(None) => {
                log.header(&format!("{path}: file not found")).await?;
                return Ok(Results::Failure);
            }
            Err(error) => Err(error),
        },
    };
    match done {
        Ok(()) => Ok(Results::Success),
        Err(error) => failed(error, log).await,
    }
}

/// Runs one command on the worker, writing its output and its ending to the
/// log, and returns its result; `capture`, when given, also receives the
/// stdout lines.
async fn execute(
    command: ShellCommand,
    context: &StepContext<'_>,
    log: &mut LogWriter,
    mut capture: Option<&mut Vec<String>>,
) -> Result<Results, Error> {
    log.header(&shell_quote(&command.argv)).await?;
    log.header(&format!(
        " in dir {}/{}",
        context.worker.builder_dir(&command.builder),
        command.workdir
    ))
    .await?;
    let (output, mut lines) = mpsc::channel(256);
    let running = context.worker.run(command, output, context.stop.clone());
    tokio::pin!(running);
    let mut flush = tokio::time::interval(LOG_FLUSH_INTERVAL);
    let mut open = true;
    let finished = loop {
        tokio::select! {
            line = lines.recv(), if open => match line {
                Some((stream, line)) => record(log, capture.as_deref_mut(), stream, line).await?,
                None => open = false,
            },
            finished = &mut running => break finished,
            _ = flush.tick() => log.flush().await?,
        }
    };
    while let Ok((stream, line)) = lines.try_recv() {
        record(log, capture.as_deref_mut(), stream, line).await?;
    }
    let finished = match finished {
        Ok(finished) => finished,
        // A worker that went away: the build is tried again, as Buildbot does.
        Err(error) => return failed(error, log).await,
    };
    let (results, ending) = match finished.ending {
        Ending::Exited(code) => {
            let results = if code == 0 {
                Results::Success
            } else {
                Results::Failure
            };
            (results, format!("program finished with exit code {code}"))
        }
        Ending::Signalled(signal) => (
            Results::Failure,
            format!("process killed by signal {signal}"),
        ),
        Ending::TimedOut(after) => (
            Results::Failure,
            format!(
                "command timed out: {} seconds without output, attempting to kill",
                after.as_secs()
            ),
        ),
        Ending::MaxTimeExceeded(after) => (
            Results::Failure,
            format!(
                "command timed out: {} seconds elapsed, attempting to kill",
                after.as_secs()
            ),
        ),
        Ending::Cancelled => (Results::Cancelled, "command interrupted".to_owned()),
    };
    log.header(&ending).await?;
    log.header(&format!(
        "elapsedTime={:.6}",
        finished.elapsed.as_secs_f64()
    ))
    .await?;
    Ok(results)
}

/// Logs one line of output, and keeps it when it is stdout being captured.
async fn record(
    log: &mut LogWriter,
    capture: Option<&mut Vec<String>>,
    stream: Stream,
    line: String,
) -> Result<(), Error> {
    log.output(stream, &line).await?;
    if let (Stream::Stdout, Some(captured)) = (stream, capture) {
        captured.push(line);
    }
    Ok(())
}

/// The argv as a shell would read it back, for the log header.
fn shell_quote(argv: &[String]) -> String {
    argv.iter()
        .map(|word| {
            let plain = !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
            if plain {
                word.clone()
            } else {
                format!("'{}'", word.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Buildbot's Git step: brings the workdir to the build's revision (or the
/// tip of its branch) of the repository, and says which revision it got.
async fn run_git(
    git: &GitStep,
    context: &StepContext<'_>,
    log: &mut LogWriter,
) -> Result<(Results, Option<String>), Error> {
    let props = &*context.properties;
    let repourl = git.repourl.render(props);
    let stamp = props
        .sourcestamps
        .iter()
        .find(|stamp| stamp.codebase == git.codebase);
    let branch = stamp
        .and_then(|stamp| stamp.branch.clone())
        .or_else(|| git.branch.as_ref().map(|b| b.render(props)))
        .filter(|branch| !branch.is_empty());
    let revision = stamp
        .and_then(|stamp| stamp.revision.clone())
        .filter(|revision| !revision.is_empty());
    if repourl.is_empty() {
        log.header("no repository to check out: set repourl or build a change that names one")
            .await?;
        return Ok((Results::Failure, None));
    }
    let Some(workdir) = workdir(&git.workdir, props, log).await? else {
        return Ok((Results::Exception, None));
    };
    let worker = &context.worker;
    let builder = context.builder;
    if git.mode == GitMode::FullClobber {
        if let Err(error) = worker.remove_dir(builder, &workdir).await {
            return Ok((failed(error, log).await?, None));
        }
    }
    // A workdir that cannot be listed (not made yet) has no clone.
    let has_clone = worker
        .list_dir(builder, &workdir)
        .await
        .is_ok_and(|names| names.iter().any(|name| name == ".git"));
    let mut commands: Vec<Vec<String>> = Vec::new();
    if !has_clone {
        commands.push(words(&["git", "init", "--quiet"]));
    }
    let fetched = branch.clone().unwrap_or_else(|| "HEAD".into());
    commands.push(words(&["git", "fetch", "-f", "-t", &repourl, &fetched]));
    let target = revision.clone().unwrap_or_else(|| "FETCH_HEAD".into());
    commands.push(words(&["git", "checkout", "-f", &target]));
    if let Some(branch) = &branch {
        commands.push(words(&["git", "checkout", "-B", branch]));
    }
    match git.mode {
        GitMode::FullClean => commands.push(words(&["git", "clean", "-f", "-f", "-d"])),
        GitMode::FullFresh => commands.push(words(&["git", "clean", "-f", "-f", "-d", "-x"])),
        GitMode::Incremental | GitMode::FullClobber => {}
    }
    for argv in commands {
        let command = git_command(builder, &workdir, argv, git.timeout);
        let results = execute(command, context, log, None).await?;
        if results != Results::Success {
            return Ok((results, None));
        }
    }
    let mut head = Vec::new();
    let command = git_command(
        builder,
        &workdir,
        words(&["git", "rev-parse", "HEAD"]),
        git.timeout,
    );
    let results = execute(command, context, log, Some(&mut head)).await?;
    if results != Results::Success {
        return Ok((results, None));
    }
    Ok((
        Results::Success,
        head.first().map(|got| got.trim().to_owned()),
    ))
}

fn git_command(
    builder: &str,
    workdir: &str,
    argv: Vec<String>,
    timeout: Option<Duration>,
) -> ShellCommand {
    ShellCommand {
        builder: builder.to_owned(),
        workdir: workdir.to_owned(),
        argv,
        // A git that asks for a password would wait for its timeout.
        env: vec![("GIT_TERMINAL_PROMPT".into(), Some("0".into()))],
        timeout,
        max_time: None,
    }
}

fn words(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_described_by_their_first_two_words() {
        let props = Properties::default();
        let argv = |words: &[&str]| {
            CommandLine::Argv(words.iter().map(|w| Template::parse(w).unwrap()).collect())
        };
        assert_eq!(describe_command(&argv(&["make"]), &props), "'make'");
        assert_eq!(
            describe_command(&argv(&["make", "test"]), &props),
            "'make test'"
        );
        assert_eq!(
            describe_command(&argv(&["make", "-j4", "all"]), &props),
            "'make -j4 ...'"
        );
        let script = CommandLine::Script(Template::parse("echo  hello world").unwrap());
        assert_eq!(describe_command(&script, &props), "'echo hello ...'");
    }

    #[test]
    fn log_headers_quote_words_a_shell_would_split() {
        let argv = words(&["sh", "-c", "echo 'hi' there", ""]);
        assert_eq!(shell_quote(&argv), r"sh -c 'echo '\''hi'\'' there' ''");
    }
}
