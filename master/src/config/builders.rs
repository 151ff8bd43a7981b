//! `[[workers]]` and `[[builders]]` with their steps: the raw shapes serde
//! reads and the validated configuration the build engine runs.
//!
//! Every string a step takes is an [`Interpolate`](crate::builds::interpolate)
//! template, parsed here so that a mistake in one is a configuration error.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use buildmaster_plugin_api::options::Secret;
use serde::Deserialize;
use serde_json::{Map, Value};
use toml::Spanned;

use super::interpolate::Template;
use super::{ConfigError, SourceMap};

/// Buildbot's default no-output timeout for commands: 20 minutes.
const DEFAULT_TIMEOUT: u64 = 1200;

/// The directory, relative to the builder's directory, steps run in by default.
const DEFAULT_WORKDIR: &str = "build";

// ---------------------------------------------------------------------------
// As written.

/// `[[workers]]`
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RawWorker {
    /// Runs steps as child processes of the master.
    Local {
        name: String,
        max_builds: Option<i64>,
        #[serde(default)]
        properties: toml::Table,
    },
    /// Buildbot's `Worker`: a `buildbot-worker` (or `buildmaster worker`)
    /// process that connects over the worker protocol.
    Remote {
        name: String,
        /// A string or a secret reference.
        password: toml::Value,
        max_builds: Option<i64>,
        keepalive_interval: Option<i64>,
        missing_timeout: Option<i64>,
        #[serde(default)]
        notify_on_missing: Vec<String>,
        #[serde(default)]
        properties: toml::Table,
    },
}

/// `[[builders]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBuilder {
    name: Spanned<String>,
    workernames: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    tags: Vec<String>,
    description: Option<String>,
    #[serde(default)]
    properties: toml::Table,
    collapse_requests: Option<bool>,
    #[serde(default)]
    steps: Vec<Spanned<toml::Table>>,
}

/// `[[builders.steps]]` of `type = "shell"`, less the common options.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShell {
    command: toml::Value,
    workdir: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    timeout: Option<i64>,
    max_time: Option<i64>,
}

/// `type = "git"`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGit {
    repourl: Option<String>,
    branch: Option<String>,
    #[serde(default)]
    codebase: String,
    mode: Option<String>,
    method: Option<String>,
    workdir: Option<String>,
    timeout: Option<i64>,
}

/// `type = "set_property"`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSetProperty {
    property: String,
    value: toml::Value,
}

/// `type = "file_upload"` (Buildbot's `FileUpload`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFileUpload {
    workersrc: String,
    masterdest: String,
    workdir: Option<String>,
    maxsize: Option<i64>,
    blocksize: Option<i64>,
    mode: Option<i64>,
    #[serde(default)]
    keepstamp: bool,
}

/// `type = "multiple_file_upload"` (Buildbot's `MultipleFileUpload`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMultipleFileUpload {
    workersrcs: Vec<String>,
    masterdest: String,
    workdir: Option<String>,
    #[serde(default)]
    glob: bool,
    maxsize: Option<i64>,
    blocksize: Option<i64>,
    mode: Option<i64>,
    #[serde(default)]
    keepstamp: bool,
}

/// `type = "file_download"` (Buildbot's `FileDownload`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFileDownload {
    mastersrc: String,
    workerdest: String,
    workdir: Option<String>,
    maxsize: Option<i64>,
    blocksize: Option<i64>,
    mode: Option<i64>,
}

/// The options every step takes (Buildbot's `BuildStep` arguments).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommon {
    name: Option<String>,
    description: Option<String>,
    description_done: Option<String>,
    halt_on_failure: Option<bool>,
    flunk_on_failure: Option<bool>,
    warn_on_failure: Option<bool>,
    flunk_on_warnings: Option<bool>,
    warn_on_warnings: Option<bool>,
    always_run: Option<bool>,
}

const COMMON_KEYS: [&str; 9] = [
    "name",
    "description",
    "description_done",
    "halt_on_failure",
    "flunk_on_failure",
    "warn_on_failure",
    "flunk_on_warnings",
    "warn_on_warnings",
    "always_run",
];

// ---------------------------------------------------------------------------
// Validated.

/// A worker: `local` (steps run as the master's child processes in
/// `<basedir>/workers/<name>/<builder>/`) or `remote`.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerConfig {
    pub name: String,
    /// How many builds may run on it at once; unlimited when `None`.
    pub max_builds: Option<usize>,
    /// Name → value; builds get them with source "Worker".
    pub properties: Map<String, Value>,
    /// `None` for a local worker.
    pub remote: Option<RemoteSettings>,
}

/// What a remote worker's table says besides the common keys.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteSettings {
    pub password: Secret,
    /// How often the master checks the connection (Buildbot's default: an hour).
    pub keepalive_interval: std::time::Duration,
    /// How long a worker may be away before it is "missing".
    pub missing_timeout: std::time::Duration,
    /// Addresses told when it goes missing (kept for the reporters).
    pub notify_on_missing: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BuilderConfig {
    pub name: String,
    pub workernames: Vec<String>,
    pub tags: Vec<String>,
    pub description: Option<String>,
    /// Name → value; builds get them with source "Builder".
    pub properties: Map<String, Value>,
    /// Whether a new request replaces older pending ones for the same sources.
    pub collapse_requests: bool,
    pub steps: Vec<StepConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepConfig {
    /// Unique within the builder.
    pub name: String,
    pub description: Option<Template>,
    pub description_done: Option<Template>,
    pub halt_on_failure: bool,
    pub flunk_on_failure: bool,
    pub warn_on_failure: bool,
    pub flunk_on_warnings: bool,
    pub warn_on_warnings: bool,
    pub always_run: bool,
    pub kind: StepKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    Shell(ShellStep),
    Git(GitStep),
    SetProperty {
        property: String,
        value: Value,
    },
    Upload(UploadStep),
    Download(DownloadStep),
    /// Buildbot's `MakeDirectory`, `RemoveDirectory` and `FileExists`:
    /// one file-system command on a path relative to the builder's
    /// directory.
    FileSystem(FileSystemCommand, Template),
}

/// Copies worker files to the master (Buildbot's `FileUpload` and
/// `MultipleFileUpload`).
#[derive(Debug, Clone, PartialEq)]
pub struct UploadStep {
    /// Relative to `workdir`; shell patterns when `glob`.
    pub sources: Vec<Template>,
    /// Several sources: `masterdest` is a directory receiving each by name.
    pub multiple: bool,
    pub glob: bool,
    /// Relative to the master's base directory unless absolute.
    pub masterdest: Template,
    pub workdir: Template,
    pub limits: TransferLimits,
    pub keepstamp: bool,
}

/// Copies a master file to the worker (Buildbot's `FileDownload`).
#[derive(Debug, Clone, PartialEq)]
pub struct DownloadStep {
    /// Relative to the master's base directory unless absolute.
    pub mastersrc: Template,
    /// Relative to `workdir`.
    pub workerdest: Template,
    pub workdir: Template,
    pub limits: TransferLimits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferLimits {
    /// Larger files fail the step (Buildbot's `maxsize`; no limit by default).
    pub max_size: Option<u64>,
    pub block_size: usize,
    /// Permission bits of the written file.
    pub mode: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileSystemCommand {
    MakeDirectory,
    RemoveDirectory,
    /// Succeeds when the path is a regular file.
    FileExists,
}

/// Runs a command; a string command runs through `/bin/sh -c`.
#[derive(Debug, Clone, PartialEq)]
pub struct ShellStep {
    pub command: CommandLine,
    pub workdir: Template,
    pub env: Vec<(String, Template)>,
    /// Kill after this long without output.
    pub timeout: Option<Duration>,
    /// Kill after this long in all.
    pub max_time: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CommandLine {
    /// Program and arguments, each rendered on its own.
    Argv(Vec<Template>),
    /// A shell script.
    Script(Template),
}

/// Checks out the build's source stamp of one codebase with git.
#[derive(Debug, Clone, PartialEq)]
pub struct GitStep {
    pub repourl: Template,
    /// The branch when the source stamp has none.
    pub branch: Option<Template>,
    pub codebase: String,
    pub mode: GitMode,
    pub workdir: Template,
    pub timeout: Option<Duration>,
}

/// Buildbot's `mode` and `method` of a Git step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitMode {
    /// Update in place, keeping untracked and ignored files.
    Incremental,
    /// `git clean -f -f -d` after updating: untracked files go, ignored ones stay.
    FullClean,
    /// `git clean -f -f -d -x` after updating: a pristine tree, reusing the clone.
    FullFresh,
    /// Remove the directory and clone again.
    FullClobber,
}

// ---------------------------------------------------------------------------
// Validation.

/// Builds the workers, reporting mistakes into `errors`.
pub(super) fn workers(
    map: &SourceMap,
    raw: Vec<Spanned<RawWorker>>,
    resolve: &dyn Fn(toml::Value, &str) -> Result<serde_json::Value, String>,
    errors: &mut Vec<ConfigError>,
) -> Vec<WorkerConfig> {
    let mut built = Vec::new();
    // Every name seen, valid or not, so a duplicate is reported either way.
    let mut seen: Vec<(String, Range<usize>)> = Vec::new();
    for entry in raw {
        let span = entry.span();
        let (name, max_builds, properties, remote) = match entry.into_inner() {
            RawWorker::Local {
                name,
                max_builds,
                properties,
            } => (name, max_builds, properties, None),
            RawWorker::Remote {
                name,
                password,
                max_builds,
                keepalive_interval,
                missing_timeout,
                notify_on_missing,
                properties,
            } => {
                let remote = (
                    password,
                    keepalive_interval,
                    missing_timeout,
                    notify_on_missing,
                );
                (name, max_builds, properties, Some(remote))
            }
        };
        let mut fail = |message: String| errors.push(map.error(span.clone(), message));
        if let Some((_, first)) = seen.iter().find(|(seen, _)| *seen == name) {
            fail(format!(
                "worker name '{name}' is already used at {}",
                map.locate(first.start)
            ));
            continue;
        }
        seen.push((name.clone(), span.clone()));
        if let Err(message) = check_dir_name(&name) {
            fail(format!("worker name '{name}' {message}"));
            continue;
        }
        let max_builds = match max_builds {
            None => None,
            Some(n) if n > 0 => Some(n as usize),
            Some(_) => {
                fail(format!(
                    "worker '{name}': max_builds must be a positive number"
                ));
                continue;
            }
        };
        let remote = match remote {
            None => None,
            // HTTP Basic cannot carry it: the worker could never log in.
            Some(_) if name.contains(':') => {
                fail(format!(
                    "worker name '{name}': a remote worker's name cannot contain ':'"
                ));
                continue;
            }
            Some((password, keepalive, missing, notify)) => {
                let password = match resolve(password, &format!("workers.{name}.password")) {
                    Ok(serde_json::Value::String(password)) if !password.is_empty() => password,
                    Ok(_) => {
                        fail(format!("worker '{name}': password must be a non-empty string or a secret reference"));
                        continue;
                    }
                    Err(message) => {
                        fail(message);
                        continue;
                    }
                };
                let seconds = |value: Option<i64>, default: u64, key: &str| match value {
                    None => Ok(std::time::Duration::from_secs(default)),
                    Some(n) if n > 0 => Ok(std::time::Duration::from_secs(n as u64)),
                    Some(_) => Err(format!(
                        "worker '{name}': {key} must be a positive number of seconds"
                    )),
                };
                let (keepalive_interval, missing_timeout) = match (
                    seconds(keepalive, 3600, "keepalive_interval"),
                    seconds(missing, 3600, "missing_timeout"),
                ) {
                    (Ok(k), Ok(m)) => (k, m),
                    (Err(e), _) | (_, Err(e)) => {
                        fail(e);
                        continue;
                    }
                };
                Some(RemoteSettings {
                    password: Secret::new(password),
                    keepalive_interval,
                    missing_timeout,
                    notify_on_missing: notify,
                })
            }
        };
        built.push(WorkerConfig {
            name,
            max_builds,
            properties: table_to_json(properties),
            remote,
        });
    }
    built
}

/// Builds the builders; their workers must be among `workers`.
pub(super) fn builders(
    map: &SourceMap,
    raw: Vec<Spanned<RawBuilder>>,
    workers: &[WorkerConfig],
    errors: &mut Vec<ConfigError>,
) -> Vec<BuilderConfig> {
    let mut built: Vec<BuilderConfig> = Vec::new();
    // Every name seen, valid or not, so a duplicate is reported either way.
    let mut seen: Vec<(String, Range<usize>)> = Vec::new();
    for entry in raw {
        let span = entry.span();
        let raw = entry.into_inner();
        let name = raw.name.get_ref().clone();
        if let Some((_, first)) = seen.iter().find(|(seen, _)| *seen == name) {
            let message = format!(
                "builder name '{name}' is already used at {}",
                map.locate(first.start)
            );
            errors.push(map.error(raw.name.span(), message));
            continue;
        }
        seen.push((name.clone(), span.clone()));
        if let Err(message) = check_dir_name(&name) {
            errors.push(map.error(raw.name.span(), format!("builder name '{name}' {message}")));
            continue;
        }
        let before = errors.len();
        let workernames = match raw.workernames {
            None => {
                errors.push(map.error(
                    span.clone(),
                    format!("builder '{name}' needs workernames, a list of worker names"),
                ));
                Vec::new()
            }
            Some(names) => {
                let span = names.span();
                let names = names.into_inner();
                if names.is_empty() {
                    errors.push(map.error(
                        span.clone(),
                        format!("builder '{name}': workernames is empty"),
                    ));
                }
                for unknown in names
                    .iter()
                    .filter(|n| !workers.iter().any(|w| &w.name == *n))
                {
                    errors.push(map.error(
                        span.clone(),
                        format!("builder '{name}': no worker is named '{unknown}'"),
                    ));
                }
                names
            }
        };
        let mut steps: Vec<StepConfig> = Vec::new();
        for step in raw.steps {
            let span = step.span();
            match build_step(step.into_inner(), &steps) {
                Ok(step) => steps.push(step),
                Err(message) => {
                    errors.push(map.error(span, format!("builder '{name}': {message}")))
                }
            }
        }
        if errors.len() > before {
            continue;
        }
        built.push(BuilderConfig {
            name,
            workernames,
            tags: raw.tags,
            description: raw.description,
            properties: table_to_json(raw.properties),
            collapse_requests: raw.collapse_requests.unwrap_or(true),
            steps,
        });
    }
    built
}

/// Builds one step from its table: `type` picks the kind, the common options
/// are read first, and what remains must be the kind's own options.
fn build_step(mut table: toml::Table, earlier: &[StepConfig]) -> Result<StepConfig, String> {
    let kind = match table.remove("type") {
        Some(toml::Value::String(kind)) => kind,
        Some(other) => {
            return Err(format!(
                "step type must be a string, found {}",
                other.type_str()
            ))
        }
        None => return Err(format!("a step needs a type ({STEP_TYPES})")),
    };
    let mut common = toml::Table::new();
    for key in COMMON_KEYS {
        if let Some(value) = table.remove(key) {
            common.insert(key.to_owned(), value);
        }
    }
    let common: RawCommon = read(common, &kind)?;
    let (kind, default_name, halt_default) = match kind.as_str() {
        "shell" => (
            StepKind::Shell(shell_step(read(table, &kind)?)?),
            "shell",
            false,
        ),
        // Buildbot's source steps halt the build when they fail.
        "git" => (StepKind::Git(git_step(read(table, &kind)?)?), "git", true),
        "set_property" => {
            let RawSetProperty { property, value } = read(table, &kind)?;
            if property.is_empty() {
                return Err("set_property needs a non-empty property name".into());
            }
            let value = toml_to_json(value);
            check_templates(&value)?;
            (
                StepKind::SetProperty { property, value },
                "SetProperty",
                false,
            )
        }
        "file_upload" => {
            let raw: RawFileUpload = read(table, &kind)?;
            let step = UploadStep {
                sources: vec![worker_path("workersrc", &raw.workersrc)?],
                multiple: false,
                glob: false,
                masterdest: template(&raw.masterdest)?,
                workdir: workdir_template(raw.workdir)?,
                limits: limits(raw.maxsize, raw.blocksize, raw.mode)?,
                keepstamp: raw.keepstamp,
            };
            (StepKind::Upload(step), "upload", false)
        }
        "multiple_file_upload" => {
            let raw: RawMultipleFileUpload = read(table, &kind)?;
            if raw.workersrcs.is_empty() {
                return Err("multiple_file_upload needs workersrcs, a list of paths".into());
            }
            let step = UploadStep {
                sources: raw
                    .workersrcs
                    .iter()
                    .map(|source| worker_path("workersrcs", source))
                    .collect::<Result<_, _>>()?,
                multiple: true,
                glob: raw.glob,
                masterdest: template(&raw.masterdest)?,
                workdir: workdir_template(raw.workdir)?,
                limits: limits(raw.maxsize, raw.blocksize, raw.mode)?,
                keepstamp: raw.keepstamp,
            };
            (StepKind::Upload(step), "upload", false)
        }
        "file_download" => {
            let raw: RawFileDownload = read(table, &kind)?;
            let step = DownloadStep {
                mastersrc: template(&raw.mastersrc)?,
                workerdest: worker_path("workerdest", &raw.workerdest)?,
                workdir: workdir_template(raw.workdir)?,
                limits: limits(raw.maxsize, raw.blocksize, raw.mode)?,
            };
            (StepKind::Download(step), "download", false)
        }
        "make_directory" | "remove_directory" | "file_exists" => {
            let (command, key, name) = match kind.as_str() {
                "make_directory" => (FileSystemCommand::MakeDirectory, "dir", "MakeDirectory"),
                "remove_directory" => {
                    (FileSystemCommand::RemoveDirectory, "dir", "RemoveDirectory")
                }
                _ => (FileSystemCommand::FileExists, "file", "FileExists"),
            };
            let path = match table.remove(key) {
                Some(toml::Value::String(path)) => worker_path(key, &path)?,
                Some(other) => {
                    return Err(format!(
                        "{kind} step: {key} must be a string, found {}",
                        other.type_str()
                    ))
                }
                None => return Err(format!("{kind} step: missing field `{key}`")),
            };
            let () = read::<EmptyTable>(table, &kind).map(drop)?;
            (StepKind::FileSystem(command, path), name, false)
        }
        other => {
            return Err(format!(
                "unknown step type '{other}' (expected {STEP_TYPES})"
            ))
        }
    };
    let name = unique_name(common.name.as_deref().unwrap_or(default_name), earlier);
    Ok(StepConfig {
        name,
        description: common.description.as_deref().map(template).transpose()?,
        description_done: common
            .description_done
            .as_deref()
            .map(template)
            .transpose()?,
        halt_on_failure: common.halt_on_failure.unwrap_or(halt_default),
        flunk_on_failure: common.flunk_on_failure.unwrap_or(true),
        warn_on_failure: common.warn_on_failure.unwrap_or(false),
        flunk_on_warnings: common.flunk_on_warnings.unwrap_or(false),
        warn_on_warnings: common.warn_on_warnings.unwrap_or(true),
        always_run: common.always_run.unwrap_or(false),
        kind,
    })
}

/// Reads a step's remaining options, naming the step type in errors.
fn read<T: serde::de::DeserializeOwned>(table: toml::Table, kind: &str) -> Result<T, String> {
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| format!("{kind} step: {}", e.message().trim_end()))
}

fn shell_step(raw: RawShell) -> Result<ShellStep, String> {
    let command = match raw.command {
        toml::Value::String(script) => CommandLine::Script(template(&script)?),
        toml::Value::Array(words) if !words.is_empty() => CommandLine::Argv(
            words
                .iter()
                .map(|word| match word {
                    toml::Value::String(word) => template(word),
                    other => Err(format!(
                        "command words must be strings, found {}",
                        other.type_str()
                    )),
                })
                .collect::<Result<_, _>>()?,
        ),
        toml::Value::Array(_) => return Err("command is an empty list".into()),
        other => {
            return Err(format!(
                "command must be a string or a list of strings, found {}",
                other.type_str()
            ))
        }
    };
    let env = raw
        .env
        .iter()
        .map(|(name, value)| Ok((name.clone(), template(value)?)))
        .collect::<Result<_, String>>()?;
    Ok(ShellStep {
        command,
        workdir: workdir_template(raw.workdir)?,
        env,
        timeout: seconds("timeout", raw.timeout.unwrap_or(DEFAULT_TIMEOUT as i64))?,
        max_time: raw
            .max_time
            .map(|t| seconds("max_time", t))
            .transpose()?
            .flatten(),
    })
}

fn git_step(raw: RawGit) -> Result<GitStep, String> {
    Ok(GitStep {
        repourl: template(raw.repourl.as_deref().unwrap_or("%(src::repository)s"))?,
        branch: raw.branch.as_deref().map(template).transpose()?,
        codebase: raw.codebase,
        mode: git_mode(raw.mode.as_deref(), raw.method.as_deref())?,
        workdir: workdir_template(raw.workdir)?,
        timeout: seconds("timeout", raw.timeout.unwrap_or(DEFAULT_TIMEOUT as i64))?,
    })
}

const STEP_TYPES: &str = "shell, git, set_property, file_upload, multiple_file_upload, \
    file_download, make_directory, remove_directory or file_exists";

/// A table that must have no key left.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmptyTable {}

/// Buildbot's file transfers send 16 KiB blocks by default.
const DEFAULT_BLOCK_SIZE: i64 = 16 * 1024;

fn limits(
    maxsize: Option<i64>,
    blocksize: Option<i64>,
    mode: Option<i64>,
) -> Result<TransferLimits, String> {
    let max_size = match maxsize {
        None => None,
        Some(n) if n >= 0 => Some(n as u64),
        Some(_) => return Err("maxsize must be a number of bytes".into()),
    };
    let block_size = match blocksize.unwrap_or(DEFAULT_BLOCK_SIZE) {
        n if (1..=1 << 20).contains(&n) => n as usize,
        _ => return Err("blocksize must be between 1 and 1048576 bytes".into()),
    };
    let mode = match mode {
        None => None,
        Some(n) if (0..=0o7777).contains(&n) => Some(n as u32),
        Some(_) => return Err("mode must be permission bits, such as 0o644".into()),
    };
    Ok(TransferLimits {
        max_size,
        block_size,
        mode,
    })
}

/// A path on the worker: relative, without `..`.
fn worker_path(key: &str, path: &str) -> Result<Template, String> {
    if path.is_empty() || path.starts_with('/') || path.split('/').any(|part| part == "..") {
        return Err(format!(
            "{key} '{path}' must be a relative path on the worker, without '..'"
        ));
    }
    template(path)
}

/// Buildbot gives a repeated step name the suffix `_1`, `_2`, ….
fn unique_name(name: &str, earlier: &[StepConfig]) -> String {
    let taken = |candidate: &str| earlier.iter().any(|step| step.name == candidate);
    if !taken(name) {
        return name.to_owned();
    }
    (1..)
        .map(|n| format!("{name}_{n}"))
        .find(|candidate| !taken(candidate))
        .unwrap_or_else(|| name.to_owned())
}

fn git_mode(mode: Option<&str>, method: Option<&str>) -> Result<GitMode, String> {
    match (mode.unwrap_or("incremental"), method) {
        ("incremental", None) => Ok(GitMode::Incremental),
        ("incremental", Some(method)) => {
            Err(format!("method '{method}' applies only to mode 'full'"))
        }
        ("full", None | Some("fresh")) => Ok(GitMode::FullFresh),
        ("full", Some("clean")) => Ok(GitMode::FullClean),
        ("full", Some("clobber")) => Ok(GitMode::FullClobber),
        ("full", Some(method)) => Err(format!(
            "unknown method '{method}' (expected clean, fresh or clobber)"
        )),
        (mode, _) => Err(format!(
            "unknown mode '{mode}' (expected incremental or full)"
        )),
    }
}

fn template(text: &str) -> Result<Template, String> {
    Template::parse(text)
}

fn workdir_template(workdir: Option<String>) -> Result<Template, String> {
    let workdir = workdir.unwrap_or_else(|| DEFAULT_WORKDIR.into());
    if workdir.starts_with('/') || workdir.split('/').any(|part| part == "..") {
        return Err(format!(
            "workdir '{workdir}' must be relative to the builder's directory, without '..'"
        ));
    }
    template(&workdir)
}

/// A positive number of seconds; 0 turns the limit off.
fn seconds(key: &str, value: i64) -> Result<Option<Duration>, String> {
    match value {
        0 => Ok(None),
        n if n > 0 => Ok(Some(Duration::from_secs(n as u64))),
        _ => Err(format!(
            "{key} must be a number of seconds (0 turns it off)"
        )),
    }
}

/// Worker and builder names become directory names.
fn check_dir_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        Err("cannot be used as a directory name")
    } else {
        Ok(())
    }
}

/// Checks every string inside a property value parses as a template.
fn check_templates(value: &Value) -> Result<(), String> {
    match value {
        Value::String(text) => template(text).map(drop),
        Value::Array(items) => items.iter().try_for_each(check_templates),
        Value::Object(fields) => fields.values().try_for_each(check_templates),
        _ => Ok(()),
    }
}

pub(super) fn table_to_json(table: toml::Table) -> Map<String, Value> {
    table
        .into_iter()
        .map(|(key, value)| (key, toml_to_json(value)))
        .collect()
}

pub(super) fn toml_to_json(value: toml::Value) -> Value {
    match value {
        toml::Value::String(text) => Value::String(text),
        toml::Value::Integer(n) => Value::from(n),
        toml::Value::Float(x) => Value::from(x),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(when) => Value::String(when.to_string()),
        toml::Value::Array(items) => Value::Array(items.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(table) => Value::Object(table_to_json(table)),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::Config;
    use super::*;

    fn parse(text: &str) -> Result<Config, Vec<String>> {
        Config::parse(Path::new("base/master.toml"), text)
            .map_err(|errors| errors.iter().map(ToString::to_string).collect())
    }

    const WORKER: &str = "[[workers]]\ntype = \"local\"\nname = \"w\"\n";

    #[test]
    fn builders_with_every_step_kind_and_defaults() {
        let config = parse(&format!(
            r#"{WORKER}
[[builders]]
name = "b"
workernames = ["w"]
tags = ["ci"]
properties = {{ os = "linux" }}
[[builders.steps]]
type = "git"
mode = "full"
method = "clean"
[[builders.steps]]
type = "shell"
command = ["make", "-j%(prop:jobs:-2)s"]
env = {{ CI = "1" }}
timeout = 0
max_time = 60
[[builders.steps]]
type = "shell"
command = "make check"
name = "check"
warn_on_failure = true
flunk_on_failure = false
[[builders.steps]]
type = "shell"
command = "true"
[[builders.steps]]
type = "set_property"
property = "done"
value = "%(prop:buildnumber)s"
"#
        ))
        .unwrap();
        assert_eq!(config.workers[0].name, "w");
        assert_eq!(config.workers[0].max_builds, None);
        let builder = &config.builders[0];
        assert!(builder.collapse_requests);
        assert_eq!(builder.properties["os"], "linux");
        let names: Vec<&str> = builder.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["git", "shell", "check", "shell_1", "SetProperty"]);
        let git = &builder.steps[0];
        assert!(git.halt_on_failure, "source steps halt on failure");
        assert!(matches!(&git.kind, StepKind::Git(g) if g.mode == GitMode::FullClean));
        let StepKind::Shell(make) = &builder.steps[1].kind else {
            panic!("a shell step");
        };
        assert_eq!(make.timeout, None);
        assert_eq!(make.max_time, Some(Duration::from_secs(60)));
        assert_eq!(make.workdir.as_literal(), Some("build"));
        let StepKind::Shell(check) = &builder.steps[2].kind else {
            panic!("a shell step");
        };
        assert_eq!(check.timeout, Some(Duration::from_secs(1200)));
        assert!(matches!(check.command, CommandLine::Script(_)));
        assert!(builder.steps[2].warn_on_failure && !builder.steps[2].flunk_on_failure);
    }

    #[test]
    fn builder_and_step_mistakes_name_the_line_and_the_builder() {
        let errors = parse(&format!(
            r#"{WORKER}
[[builders]]
name = "b"
workernames = ["w", "ghost"]
[[builders.steps]]
type = "shell"
command = "x"
colour = "red"
[[builders.steps]]
type = "compile"
[[builders.steps]]
type = "git"
mode = "full"
method = "copy"
[[builders.steps]]
type = "shell"
command = "%(kw:x)s"
[[builders.steps]]
type = "shell"
command = "x"
workdir = "../elsewhere"

[[builders]]
name = "b"
workernames = ["w"]

[[builders]]
name = "nobody"
"#
        ))
        .unwrap_err();
        let expected = [
            "base/master.toml:7:15: builder 'b': no worker is named 'ghost'",
            "base/master.toml:8:1: builder 'b': shell step: unknown field `colour`, expected one of",
            "base/master.toml:12:1: builder 'b': unknown step type 'compile' (expected shell, git, set_property, file_upload,",
            "base/master.toml:14:1: builder 'b': unknown method 'copy' (expected clean, fresh or clobber)",
            "base/master.toml:18:1: builder 'b': unknown placeholder kind 'kw' in '%(kw:x)s'",
            "base/master.toml:21:1: builder 'b': workdir '../elsewhere' must be relative to the builder's directory, without '..'",
            "base/master.toml:27:8: builder name 'b' is already used at base/master.toml:5:1",
            "base/master.toml:30:1: builder 'nobody' needs workernames, a list of worker names",
        ];
        assert_eq!(errors.len(), expected.len(), "{errors:#?}");
        for (error, expected) in errors.iter().zip(expected) {
            assert!(
                error.starts_with(expected),
                "{error}\n  expected {expected}"
            );
        }
    }

    #[test]
    fn file_transfer_and_file_system_steps() {
        let config = parse(&format!(
            r#"{WORKER}
[[builders]]
name = "b"
workernames = ["w"]
[[builders.steps]]
type = "file_download"
mastersrc = "files/config.json"
workerdest = "conf/config.json"
mode = 0o600
[[builders.steps]]
type = "file_upload"
workersrc = "out/%(prop:buildnumber)s.tar"
masterdest = "/srv/artifacts/app.tar"
maxsize = 1000
keepstamp = true
[[builders.steps]]
type = "multiple_file_upload"
workersrcs = ["out/*.log"]
glob = true
masterdest = "logs"
[[builders.steps]]
type = "make_directory"
dir = "build/out"
[[builders.steps]]
type = "file_exists"
file = "build/out/app.tar"
"#
        ))
        .unwrap();
        let steps = &config.builders[0].steps;
        let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "download",
                "upload",
                "upload_1",
                "MakeDirectory",
                "FileExists"
            ]
        );
        let StepKind::Download(download) = &steps[0].kind else {
            panic!("a download");
        };
        assert_eq!(download.limits.mode, Some(0o600));
        assert_eq!(download.limits.block_size, 16 * 1024);
        let StepKind::Upload(upload) = &steps[1].kind else {
            panic!("an upload");
        };
        assert_eq!(upload.limits.max_size, Some(1000));
        assert!(upload.keepstamp && !upload.multiple);
        assert!(matches!(&steps[2].kind, StepKind::Upload(u) if u.multiple && u.glob));
        assert!(matches!(
            &steps[3].kind,
            StepKind::FileSystem(FileSystemCommand::MakeDirectory, dir) if dir.as_literal() == Some("build/out")
        ));

        let errors = parse(&format!(
            r#"{WORKER}
[[builders]]
name = "b"
workernames = ["w"]
[[builders.steps]]
type = "file_upload"
workersrc = "/etc/passwd"
masterdest = "x"
[[builders.steps]]
type = "file_download"
mastersrc = "x"
workerdest = "y"
blocksize = 0
[[builders.steps]]
type = "remove_directory"
dir = "build"
file = "x"
[[builders.steps]]
type = "file_exists"
"#
        ))
        .unwrap_err();
        let expected = [
            "base/master.toml:8:1: builder 'b': workersrc '/etc/passwd' must be a relative path on the worker, without '..'",
            "base/master.toml:12:1: builder 'b': blocksize must be between 1 and 1048576 bytes",
            "base/master.toml:17:1: builder 'b': remove_directory step: unknown field `file`",
            "base/master.toml:21:1: builder 'b': file_exists step: missing field `file`",
        ];
        assert_eq!(errors.len(), expected.len(), "{errors:#?}");
        for (error, expected) in errors.iter().zip(expected) {
            assert!(
                error.starts_with(expected),
                "{error}\n  expected {expected}"
            );
        }
    }

    #[test]
    fn worker_mistakes_are_reported() {
        let errors = parse("[[workers]]\ntype = \"cloud\"\nname = \"r\"\n").unwrap_err();
        assert_eq!(
            errors,
            ["base/master.toml:2:8: unknown variant `cloud`, expected `local` or `remote`"]
        );
        let errors = parse("[[workers]]\ntype = \"remote\"\nname = \"r\"\n").unwrap_err();
        assert_eq!(errors, ["base/master.toml:1:1: missing field `password`"]);
        let remote = "[[workers]]\ntype = \"remote\"\nname = \"r\"\npassword = \"p\"\n";
        let errors = parse(&format!("{remote}keepalive_interval = 0\n")).unwrap_err();
        assert_eq!(
            errors,
            ["base/master.toml:1:1: worker 'r': keepalive_interval must be a positive number of seconds"]
        );
        let errors = parse(&remote.replace("name = \"r\"", "name = \"a:b\"")).unwrap_err();
        assert_eq!(
            errors[0],
            "base/master.toml:1:1: worker name 'a:b': a remote worker's name cannot contain ':'"
        );
        let errors = parse(remote).unwrap_err();
        assert_eq!(
            errors,
            ["base/master.toml: worker 'r' is remote: remote workers connect to [protocols.msgpack_experimental_v7] port, which is not set"]
        );
        let errors = parse(&format!("{WORKER}max_builds = 0\n{WORKER}")).unwrap_err();
        assert_eq!(
            errors,
            [
                "base/master.toml:1:1: worker 'w': max_builds must be a positive number",
                "base/master.toml:5:1: worker name 'w' is already used at base/master.toml:1:1",
            ]
        );
    }
}
