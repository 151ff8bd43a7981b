//! `master.toml`: what the operator wants.
//!
//! Reading happens in two steps. [`RawConfig`] mirrors the file for serde and only
//! checks shapes (unknown keys are errors, with file and line). [`Config::load`]
//! then resolves everything relative to the basedir, reads secrets and password
//! files, and collects every mistake it finds instead of stopping at the first.
//! Plugins are loaded later, by [`crate::registry`], from the built `Config`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use buildmaster_plugin_api::options::Secret;
use serde::Deserialize;
use toml::Spanned;

mod builders;
pub mod change_filter;
mod change_sources;
mod credentials;
pub mod cron;
mod diff;
pub mod force;
pub mod interpolate;
pub mod reporters;
mod retention;
mod schedulers;
pub mod telegram;
mod www_auth;

pub use builders::{
    BuilderConfig, CommandLine, DownloadStep, FileSystemCommand, GitMode, GitStep, RemoteSettings,
    ShellStep, StepConfig, StepKind, TransferLimits, UploadStep, WorkerConfig,
};
pub use change_sources::{redact_url, Branches, GitPollerConfig, RawChangeSource};
pub use credentials::{parse_basic, Credentials};
pub use diff::{ConfigDiff, Difference, Setting};
pub use reporters::{Generator, Mode, ReporterConfig};
pub use retention::{JanitorConfig, LogCompression, LogSettings};
pub use schedulers::{Nightly, SchedulerConfig, SchedulerKind};
pub use telegram::{ChatRef, TelegramConfig};
pub use www_auth::{Action, Authz, Caller, WwwAuth};

/// The file name of the configuration inside a basedir.
pub const CONFIG_FILE: &str = "master.toml";

/// The configuration `create-master` writes: a master that builds something.
pub const STARTER: &str = include_str!("config/starter.toml");

/// Default request-body limit for change hooks: 10 MiB.
const DEFAULT_MAX_BODY_SIZE: u64 = 10 * 1024 * 1024;

/// Default time a change-hook delivery id is remembered: 72 hours.
const DEFAULT_DELIVERY_ID_WINDOW: u64 = 72 * 3600;

/// How many deliveries of each dialect the webhook inspector keeps by default.
const DEFAULT_HOOK_DELIVERIES_KEPT: usize = 50;

/// One mistake in the configuration, located as precisely as possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// `path:line:column`, `path:line` or `path`.
    pub location: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// Maps byte offsets of a file to `file:line:column` locations.
#[derive(Debug, Clone)]
pub struct SourceMap {
    file: PathBuf,
    line_starts: Vec<usize>,
}

impl SourceMap {
    pub fn new(file: &Path, text: &str) -> SourceMap {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        SourceMap {
            file: file.to_path_buf(),
            line_starts,
        }
    }

    /// `file:line:column` (1-based) of a byte offset.
    pub fn locate(&self, offset: usize) -> String {
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let column = offset - self.line_starts[line - 1] + 1;
        format!("{}:{}:{}", self.file.display(), line, column)
    }

    /// An error at `span`.
    pub fn error(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            location: self.locate(span.start),
            message: message.into(),
        }
    }

    /// An error about the file as a whole.
    pub fn file_error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError {
            location: self.file.display().to_string(),
            message: message.into(),
        }
    }
}

// ---------------------------------------------------------------------------
// The file as written.

/// `master.toml` as written; only shapes are checked here.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub master: RawMaster,
    #[serde(default)]
    pub db: RawDb,
    #[serde(default)]
    pub www: RawWww,
    #[serde(default)]
    pub change_sources: Vec<Spanned<RawChangeSource>>,
    #[serde(default)]
    pub workers: Vec<Spanned<builders::RawWorker>>,
    #[serde(default)]
    pub builders: Vec<Spanned<builders::RawBuilder>>,
    #[serde(default)]
    pub schedulers: Vec<Spanned<toml::Table>>,
    #[serde(default)]
    pub reporters: Vec<Spanned<toml::Table>>,
    #[serde(default)]
    pub logs: retention::RawLogs,
    pub janitor: Option<Spanned<retention::RawJanitor>>,
    pub telegram: Option<Spanned<toml::Table>>,
    pub protocols: Option<RawProtocols>,
}

/// `[protocols]`: how remote workers connect (Buildbot's `protocols`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProtocols {
    pub msgpack_experimental_v7: Option<RawProtocol>,
}

/// `[protocols.msgpack_experimental_v7]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProtocol {
    pub port: Spanned<toml::Value>,
}

/// `[master]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMaster {
    pub title: Option<String>,
    pub title_url: Option<String>,
    pub buildbot_url: Option<String>,
    /// Directories searched for plugin libraries; `@builtin` is the directory
    /// holding the `buildmaster` executable.
    pub plugin_dirs: Option<Vec<Spanned<String>>>,
    /// Directory of secret files for `{ from_secret = "name" }` values.
    pub secrets_dir: Option<String>,
    /// Reload when master.toml or a plugin library changes (default true).
    pub reload_on_change: Option<bool>,
}

/// `[db]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDb {
    pub db_url: Option<Spanned<String>>,
}

/// `[www]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWww {
    pub port: Option<Spanned<toml::Value>>,
    #[serde(default)]
    pub change_hook_dialects: BTreeMap<String, Spanned<toml::Value>>,
    pub change_hook_auth: Option<Spanned<Vec<Spanned<toml::Value>>>>,
    pub max_body_size: Option<Spanned<i64>>,
    pub delivery_id_window: Option<Spanned<i64>>,
    pub rest_timeout: Option<Spanned<toml::Value>>,
    pub header_read_timeout: Option<Spanned<toml::Value>>,
    pub idle_timeout: Option<Spanned<toml::Value>>,
    pub max_connections: Option<Spanned<i64>>,
    pub auth: Option<Spanned<www_auth::RawAuth>>,
    pub authz: Option<Spanned<www_auth::RawAuthz>>,
    pub metrics_token: Option<Spanned<toml::Value>>,
    pub hook_deliveries_kept: Option<Spanned<i64>>,
}

// ---------------------------------------------------------------------------
// The built configuration.

/// The configuration of a master, resolved and validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// The directory holding `master.toml`, the database and the plugin cache.
    pub basedir: PathBuf,
    /// The configuration file it was read from.
    pub file: PathBuf,
    pub title: String,
    pub title_url: String,
    pub buildbot_url: String,
    pub plugin_dirs: Vec<PluginDir>,
    /// Where `{ from_secret = "name" }` values are read from.
    pub secrets_dir: Option<PathBuf>,
    /// Whether a change to master.toml, a plugin library or a secret reloads
    /// the master.
    pub reload_on_change: bool,
    pub db_path: PathBuf,
    pub www: WwwConfig,
    /// The polling change sources, in configuration order.
    pub change_sources: Vec<GitPollerConfig>,
    pub workers: Vec<WorkerConfig>,
    pub builders: Vec<BuilderConfig>,
    pub schedulers: Vec<SchedulerConfig>,
    /// `[[reporters]]`, in configuration order.
    pub reporters: Vec<ReporterConfig>,
    pub logs: LogSettings,
    /// `None` when no `[janitor]` is configured: history is kept forever.
    pub janitor: Option<JanitorConfig>,
    /// The Telegram bot, when `[telegram]` is configured.
    pub telegram: Option<TelegramConfig>,
    /// Where remote workers connect (`[protocols.msgpack_experimental_v7]
    /// port`), if anywhere.
    pub worker_listen: Option<SocketAddr>,
}

/// One directory searched for plugins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginDir {
    pub path: PathBuf,
    /// A missing directory is only worth a warning when the operator named it.
    pub explicit: bool,
    /// The only files offered from it (`@builtin`: [`BUILTIN_LIBRARIES`]);
    /// every `*.so` when `None`.
    pub only: Option<&'static [&'static str]>,
}

/// `[www]`, resolved.
#[derive(Debug, Clone)]
pub struct WwwConfig {
    pub listen: SocketAddr,
    pub dialects: Vec<DialectConfig>,
    /// `None` when `change_hook_auth` is not set.
    pub auth: Option<Credentials>,
    /// The password files `auth` was read from.
    pub auth_files: Vec<PathBuf>,
    pub max_body_size: u64,
    /// How long a delivery id is remembered, in seconds; 0 turns de-duplication off.
    pub delivery_id_window: u64,
    pub limits: HttpLimits,
    /// `[www.auth]`: who may log in; `None`: nobody logs in and every
    /// control action is open.
    pub users: Option<WwwAuth>,
    /// `[www.authz]`.
    pub authz: Authz,
    /// The bearer token `/metrics` wants, if it wants one.
    pub metrics_token: Option<Secret>,
    /// How many deliveries of each dialect the inspector keeps; 0: none.
    pub hook_deliveries_kept: usize,
}

/// What one client may make the HTTP server do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// The longest a REST read may work; then it stops and answers 503.
    pub rest_timeout: Duration,
    /// The longest a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// The longest a connection may stay idle between requests.
    pub idle_timeout: Duration,
    /// Connections at once; more are answered 503 and closed.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            rest_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 2048,
        }
    }
}

/// One enabled dialect: `[www.change_hook_dialects.<name>]`.
#[derive(Clone)]
pub struct DialectConfig {
    /// The name in the URL: `/change_hook/<name>`.
    pub name: String,
    /// The dialect kind inside the plugin (`dialect = ...`, default: the name).
    pub kind: String,
    /// `plugin = ...`: a library file or a plugin name; `None` means any loaded
    /// plugin that offers `kind`.
    pub plugin: Option<PluginRef>,
    /// The options handed to the plugin, secrets resolved.
    pub options: serde_json::Value,
    /// A digest of `options`, which tells whether they changed without
    /// comparing (or ever showing) the secrets they hold.
    pub options_digest: [u8; 32],
    /// `change_hook_auth = false`: the dialect authenticates its requests
    /// itself, so `[www] change_hook_auth` does not apply to it.
    pub exempt_from_auth: bool,
    /// Where the table starts, for messages.
    pub location: String,
}

impl DialectConfig {
    /// Whether `other` asks for the same dialect with the same options;
    /// where its table starts does not matter.
    pub fn same_settings(&self, other: &DialectConfig) -> bool {
        self.kind == other.kind
            && self.plugin == other.plugin
            && self.options_digest == other.options_digest
            && self.exempt_from_auth == other.exempt_from_auth
    }
}

/// The digest of a dialect's resolved options: their JSON text, whose keys
/// serde_json keeps in sorted order.
fn options_digest(options: &serde_json::Value) -> [u8; 32] {
    *blake3::hash(options.to_string().as_bytes()).as_bytes()
}

/// Leaves the options out: they may hold resolved secrets.
impl fmt::Debug for DialectConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DialectConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("plugin", &self.plugin)
            .field("exempt_from_auth", &self.exempt_from_auth)
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// How a custom dialect names its plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginRef {
    File(PathBuf),
    Name(String),
}

impl fmt::Display for PluginRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginRef::File(path) => write!(f, "{}", path.display()),
            PluginRef::Name(name) => f.write_str(name),
        }
    }
}

impl Config {
    /// What is allowed but likely a mistake: `checkconfig` prints it, a
    /// start and a reload log it.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let listen = self.www.listen;
        if self.www.users.is_none() && !listen.ip().is_loopback() {
            warnings.push(format!(
                "{}: [www] listens on {listen}, not only loopback, and [www.auth] is not set: \
                 anyone who reaches it may force, stop, cancel and rebuild builds, reload \
                 the configuration and shut the master down",
                self.file.display()
            ));
        }
        warnings
    }

    /// Reads and validates `file` (basedir: its directory).
    pub fn load(file: &Path) -> Result<Config, Vec<ConfigError>> {
        let text = std::fs::read_to_string(file).map_err(|e| {
            vec![ConfigError {
                location: file.display().to_string(),
                message: format!("cannot read: {e}"),
            }]
        })?;
        Config::parse(file, &text)
    }

    /// Validates `text` as the content of `file`.
    pub fn parse(file: &Path, text: &str) -> Result<Config, Vec<ConfigError>> {
        let map = SourceMap::new(file, text);
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let message = e.message().to_string();
            vec![match e.span() {
                Some(span) => map.error(span, message),
                None => map.file_error(message),
            }]
        })?;
        let basedir = match file.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Builder {
            map: &map,
            basedir: &basedir,
            secrets_dir: raw.master.secrets_dir.as_deref().map(|d| basedir.join(d)),
            errors: Vec::new(),
        }
        .build(raw, file)
    }
}

/// Resolves a [`RawConfig`], collecting errors.
struct Builder<'a> {
    map: &'a SourceMap,
    basedir: &'a Path,
    secrets_dir: Option<PathBuf>,
    errors: Vec<ConfigError>,
}

impl Builder<'_> {
    fn build(mut self, raw: RawConfig, file: &Path) -> Result<Config, Vec<ConfigError>> {
        let plugin_dirs = self.plugin_dirs(raw.master.plugin_dirs);
        let db_path = self.db_path(raw.db.db_url);
        let listen = self.listen(raw.www.port);
        let dialects = raw
            .www
            .change_hook_dialects
            .into_iter()
            .filter_map(|(name, value)| self.dialect(name, value))
            .collect();
        let mut auth_files = Vec::new();
        let auth = raw
            .www
            .change_hook_auth
            .and_then(|a| self.auth(a, &mut auth_files));
        let max_body_size = match raw.www.max_body_size {
            None => DEFAULT_MAX_BODY_SIZE,
            Some(size) if *size.get_ref() > 0 => *size.get_ref() as u64,
            Some(size) => {
                let err = self.map.error(
                    size.span(),
                    "max_body_size must be a positive number of bytes",
                );
                self.errors.push(err);
                DEFAULT_MAX_BODY_SIZE
            }
        };
        let delivery_id_window = match raw.www.delivery_id_window {
            None => DEFAULT_DELIVERY_ID_WINDOW,
            Some(window) if *window.get_ref() >= 0 => *window.get_ref() as u64,
            Some(window) => {
                let err = self.map.error(
                    window.span(),
                    "delivery_id_window must be a number of seconds (0 turns it off)",
                );
                self.errors.push(err);
                DEFAULT_DELIVERY_ID_WINDOW
            }
        };
        let defaults = HttpLimits::default();
        let limits = HttpLimits {
            rest_timeout: self.seconds("rest_timeout", raw.www.rest_timeout, defaults.rest_timeout),
            header_read_timeout: self.seconds(
                "header_read_timeout",
                raw.www.header_read_timeout,
                defaults.header_read_timeout,
            ),
            idle_timeout: self.seconds("idle_timeout", raw.www.idle_timeout, defaults.idle_timeout),
            max_connections: match raw.www.max_connections {
                None => defaults.max_connections,
                Some(count) if *count.get_ref() > 0 => *count.get_ref() as usize,
                Some(count) => {
                    let err = self
                        .map
                        .error(count.span(), "max_connections must be a positive number");
                    self.errors.push(err);
                    defaults.max_connections
                }
            },
        };
        let auth_given = raw.www.auth.is_some();
        let users = raw.www.auth.and_then(|raw| {
            let span = raw.span();
            let mut read_users = |file: &str| {
                auth_files.push(self.basedir.join(file));
                let mut users = Credentials::default();
                users.add_checker(&format!("file:{file}"), self.basedir)?;
                Ok(users)
            };
            let resolve = |value, key: &str| self.resolve(value, key);
            match www_auth::auth(raw.into_inner(), &resolve, &mut read_users) {
                Ok(users) => Some(users),
                Err(message) => {
                    self.errors.push(self.map.error(span, message));
                    None
                }
            }
        });
        let authz = match raw.www.authz {
            None => Authz::default(),
            Some(raw) => {
                let span = raw.span();
                match www_auth::authz(raw.into_inner()) {
                    Ok(_) if !auth_given => {
                        let message =
                            "[www.authz] needs [www.auth]: without users, no role can be had";
                        self.errors.push(self.map.error(span, message));
                        Authz::default()
                    }
                    Ok(authz) => authz,
                    Err(message) => {
                        self.errors.push(self.map.error(span, message));
                        Authz::default()
                    }
                }
            }
        };
        let metrics_token = raw.www.metrics_token.and_then(|value| {
            let span = value.span();
            match self.resolve(value.into_inner(), "metrics_token") {
                Ok(serde_json::Value::String(token)) if token.len() >= 16 => {
                    Some(Secret::new(token))
                }
                Ok(_) => {
                    let message = "metrics_token must be a string of at least 16 characters";
                    self.errors.push(self.map.error(span, message));
                    None
                }
                Err(message) => {
                    self.errors.push(self.map.error(span, message));
                    None
                }
            }
        });
        let hook_deliveries_kept = match raw.www.hook_deliveries_kept {
            None => DEFAULT_HOOK_DELIVERIES_KEPT,
            Some(kept) if (0..=100_000).contains(kept.get_ref()) => *kept.get_ref() as usize,
            Some(kept) => {
                let message = "hook_deliveries_kept must be a number from 0 to 100000";
                self.errors.push(self.map.error(kept.span(), message));
                DEFAULT_HOOK_DELIVERIES_KEPT
            }
        };
        let change_sources = change_sources::change_sources(
            self.map,
            self.basedir,
            raw.change_sources,
            &mut self.errors,
        );
        let mut worker_errors = Vec::new();
        let workers = builders::workers(
            self.map,
            raw.workers,
            &|value, key| self.resolve(value, key),
            &mut worker_errors,
        );
        self.errors.extend(worker_errors);
        let worker_listen = match raw.protocols.and_then(|p| p.msgpack_experimental_v7) {
            None => None,
            Some(protocol) => match parse_listen(protocol.port.get_ref()) {
                Ok(addr) => Some(addr),
                Err(message) => {
                    let err = self.map.error(
                        protocol.port.span(),
                        format!("protocols.msgpack_experimental_v7.port: {message}"),
                    );
                    self.errors.push(err);
                    None
                }
            },
        };
        if worker_listen.is_none() {
            if let Some(worker) = workers.iter().find(|w| w.remote.is_some()) {
                self.errors.push(self.map.file_error(format!(
                    "worker '{}' is remote: remote workers connect to [protocols.msgpack_experimental_v7] port, which is not set",
                    worker.name
                )));
            }
        }
        let builders = builders::builders(self.map, raw.builders, &workers, &mut self.errors);
        let schedulers =
            schedulers::schedulers(self.map, raw.schedulers, &builders, &mut self.errors);
        let reporters = self.reporters(raw.reporters);
        let logs = retention::logs(self.map, raw.logs, &mut self.errors);
        let janitor = retention::janitor(self.map, raw.janitor, &mut self.errors);
        let buildbot_url = raw
            .master
            .buildbot_url
            .clone()
            .unwrap_or_else(|| format!("http://localhost:{}/", listen.port()));
        let telegram = raw
            .telegram
            .and_then(|table| self.telegram(table, &buildbot_url));
        if !self.errors.is_empty() {
            return Err(self.errors);
        }
        Ok(Config {
            basedir: self.basedir.to_path_buf(),
            file: file.to_path_buf(),
            title: raw.master.title.unwrap_or_else(|| "buildmaster".into()),
            title_url: raw.master.title_url.unwrap_or_default(),
            buildbot_url,
            plugin_dirs,
            secrets_dir: self.secrets_dir,
            reload_on_change: raw.master.reload_on_change.unwrap_or(true),
            db_path,
            www: WwwConfig {
                listen,
                dialects,
                auth,
                auth_files,
                max_body_size,
                delivery_id_window,
                limits,
                users,
                authz,
                metrics_token,
                hook_deliveries_kept,
            },
            change_sources,
            workers,
            builders,
            schedulers,
            reporters,
            logs,
            janitor,
            telegram,
            worker_listen,
        })
    }

    fn telegram(
        &mut self,
        table: Spanned<toml::Table>,
        buildbot_url: &str,
    ) -> Option<TelegramConfig> {
        let location = self.map.locate(table.span().start);
        let error = |message: String| ConfigError {
            location: location.clone(),
            message,
        };
        let value = match self.resolve(toml::Value::Table(table.into_inner()), "telegram") {
            Ok(value) => value,
            Err(message) => {
                self.errors.push(error(message));
                return None;
            }
        };
        match telegram::telegram(&value, self.basedir, buildbot_url, &location) {
            Ok(config) => Some(config),
            Err(messages) => {
                self.errors.extend(messages.into_iter().map(error));
                None
            }
        }
    }

    /// `plugin = ...`: a library file (relative to the basedir) when it has a
    /// `/` or ends in `.so`, else a plugin's name.
    fn plugin_ref(&self, plugin: String) -> PluginRef {
        if plugin.contains('/') || plugin.ends_with(".so") {
            PluginRef::File(self.basedir.join(plugin))
        } else {
            PluginRef::Name(plugin)
        }
    }

    fn reporters(&mut self, tables: Vec<Spanned<toml::Table>>) -> Vec<ReporterConfig> {
        let mut built: Vec<ReporterConfig> = Vec::new();
        for table in tables {
            let span = table.span();
            let location = self.map.locate(span.start);
            let Some(reporter) = self.reporter(table.into_inner(), &location) else {
                continue;
            };
            if let Some(first) = built.iter().find(|r| r.name == reporter.name) {
                self.errors.push(ConfigError {
                    location,
                    message: format!(
                        "reporter name '{}' is already used at {}",
                        reporter.name, first.location
                    ),
                });
                continue;
            }
            built.push(reporter);
        }
        built
    }

    fn reporter(&mut self, mut table: toml::Table, location: &str) -> Option<ReporterConfig> {
        let error = |message: String| ConfigError {
            location: location.to_string(),
            message,
        };
        let mut text = |key: &str, errors: &mut Vec<ConfigError>| match table.remove(key) {
            None => None,
            Some(toml::Value::String(s)) if !s.is_empty() => Some(s),
            Some(_) => {
                errors.push(error(format!(
                    "reporters: {key} must be a non-empty string"
                )));
                None
            }
        };
        let name = text("name", &mut self.errors);
        let kind = text("type", &mut self.errors);
        let plugin = text("plugin", &mut self.errors).map(|p| self.plugin_ref(p));
        let (Some(name), Some(kind)) = (name, kind) else {
            self.errors.push(error(
                "a reporter needs a `name` and a `type` (the reporter kind a plugin offers)".into(),
            ));
            return None;
        };
        let max_attempts = match table.remove("max_attempts") {
            None => reporters::DEFAULT_MAX_ATTEMPTS,
            Some(toml::Value::Integer(n)) if (1..=1000).contains(&n) => n as u32,
            Some(_) => {
                self.errors.push(error(format!(
                    "reporter '{name}': max_attempts must be a number from 1 to 1000"
                )));
                reporters::DEFAULT_MAX_ATTEMPTS
            }
        };
        let debug = match table.remove("debug") {
            None => false,
            Some(toml::Value::Boolean(debug)) => debug,
            Some(_) => {
                self.errors.push(error(format!(
                    "reporter '{name}': debug must be true or false"
                )));
                false
            }
        };
        let generator = match reporters::generator(&mut table) {
            Ok(generator) => generator,
            Err(messages) => {
                self.errors.extend(
                    messages
                        .into_iter()
                        .map(|m| error(format!("reporter '{name}': {m}"))),
                );
                return None;
            }
        };
        let options = match self.resolve(toml::Value::Table(table), &format!("reporters.{name}")) {
            Ok(options) => options,
            Err(message) => {
                self.errors.push(error(message));
                return None;
            }
        };
        Some(ReporterConfig {
            name,
            kind,
            plugin,
            generator,
            max_attempts,
            debug,
            options_digest: options_digest(&options),
            options,
            location: location.to_string(),
        })
    }

    /// A duration in seconds (an integer or a decimal number, above zero).
    fn seconds(
        &mut self,
        key: &str,
        value: Option<Spanned<toml::Value>>,
        default: Duration,
    ) -> Duration {
        let Some(value) = value else {
            return default;
        };
        match positive_number(value.get_ref()) {
            Some(seconds) => Duration::from_secs_f64(seconds),
            None => {
                let message = format!("{key} must be a positive number of seconds");
                self.errors.push(self.map.error(value.span(), message));
                default
            }
        }
    }

    fn plugin_dirs(&mut self, dirs: Option<Vec<Spanned<String>>>) -> Vec<PluginDir> {
        let Some(dirs) = dirs else {
            return vec![
                PluginDir {
                    path: self.basedir.join("plugins"),
                    explicit: false,
                    only: None,
                },
                PluginDir {
                    path: builtin_plugin_dir(),
                    explicit: false,
                    only: Some(BUILTIN_LIBRARIES),
                },
            ];
        };
        dirs.into_iter()
            .map(|dir| match dir.get_ref().as_str() {
                "@builtin" => PluginDir {
                    path: builtin_plugin_dir(),
                    explicit: true,
                    only: Some(BUILTIN_LIBRARIES),
                },
                other => PluginDir {
                    path: self.basedir.join(other),
                    explicit: true,
                    only: None,
                },
            })
            .collect()
    }

    fn db_path(&mut self, url: Option<Spanned<String>>) -> PathBuf {
        let Some(url) = url else {
            return self.basedir.join("state.sqlite");
        };
        match url.get_ref().strip_prefix("sqlite:///") {
            Some(path) if !path.is_empty() => self.basedir.join(path),
            _ => {
                let message = format!(
                    "db_url '{}' is not supported: use sqlite:///FILE (relative to the basedir) or sqlite:////ABSOLUTE/PATH",
                    url.get_ref()
                );
                self.errors.push(self.map.error(url.span(), message));
                PathBuf::new()
            }
        }
    }

    fn listen(&mut self, port: Option<Spanned<toml::Value>>) -> SocketAddr {
        let default = SocketAddr::from(([0, 0, 0, 0], 8010));
        let Some(port) = port else {
            return default;
        };
        match parse_listen(port.get_ref()) {
            Ok(addr) => addr,
            Err(message) => {
                self.errors.push(self.map.error(port.span(), message));
                default
            }
        }
    }

    fn dialect(&mut self, name: String, value: Spanned<toml::Value>) -> Option<DialectConfig> {
        let span = value.span();
        let location = self.map.locate(span.start);
        let mut options = match value.into_inner() {
            toml::Value::Boolean(false) => return None,
            toml::Value::Boolean(true) => toml::Table::new(),
            toml::Value::Table(table) => table,
            _ => {
                self.errors.push(self.map.error(
                    span,
                    format!("change_hook_dialects.{name} must be a table of options or true"),
                ));
                return None;
            }
        };
        let mut take_string = |key: &str, errors: &mut Vec<ConfigError>| match options.remove(key) {
            None => None,
            Some(toml::Value::String(s)) if !s.is_empty() => Some(s),
            Some(_) => {
                errors.push(ConfigError {
                    location: location.clone(),
                    message: format!(
                        "change_hook_dialects.{name}.{key} must be a non-empty string"
                    ),
                });
                None
            }
        };
        let plugin = take_string("plugin", &mut self.errors).map(|p| self.plugin_ref(p));
        let kind = take_string("dialect", &mut self.errors).unwrap_or_else(|| name.clone());
        let exempt_from_auth = match options.remove("change_hook_auth") {
            None | Some(toml::Value::Boolean(true)) => false,
            Some(toml::Value::Boolean(false)) => {
                if let Err(message) = check_self_authenticating(&name, &kind, &options) {
                    self.errors.push(ConfigError {
                        location: location.clone(),
                        message,
                    });
                }
                true
            }
            Some(_) => {
                self.errors.push(ConfigError {
                    location: location.clone(),
                    message: format!(
                        "change_hook_dialects.{name}.change_hook_auth must be true or false"
                    ),
                });
                false
            }
        };
        let options = match self.resolve(
            toml::Value::Table(options),
            &format!("change_hook_dialects.{name}"),
        ) {
            Ok(options) => options,
            Err(message) => {
                self.errors.push(ConfigError {
                    location: location.clone(),
                    message,
                });
                return None;
            }
        };
        Some(DialectConfig {
            name,
            kind,
            plugin,
            options_digest: options_digest(&options),
            options,
            exempt_from_auth,
            location,
        })
    }

    fn auth(
        &mut self,
        checkers: Spanned<Vec<Spanned<toml::Value>>>,
        files: &mut Vec<PathBuf>,
    ) -> Option<Credentials> {
        let outer_span = checkers.span();
        let mut specs = Vec::new();
        for checker in checkers.into_inner() {
            let span = checker.span();
            match self.resolve(checker.into_inner(), "change_hook_auth") {
                Ok(serde_json::Value::String(spec)) => specs.push((spec, span)),
                Ok(_) => self.errors.push(self.map.error(
                    span,
                    "change_hook_auth entries are strings: \"file:PATH\" or \"memory:USER:PASSWORD\"",
                )),
                Err(message) => self.errors.push(self.map.error(span, message)),
            }
        }
        let mut credentials = Credentials::default();
        for (spec, span) in specs {
            if let Some(path) = spec.strip_prefix("file:") {
                files.push(self.basedir.join(path));
            }
            if let Err(message) = credentials.add_checker(&spec, self.basedir) {
                self.errors.push(self.map.error(span, message));
            }
        }
        if credentials.is_empty() {
            let message = "change_hook_auth lists no user: every request would be refused";
            self.errors.push(self.map.error(outer_span, message));
            return None;
        }
        Some(credentials)
    }

    /// Turns a TOML value into JSON, replacing `{ from_secret = "name" }` and
    /// `{ from_env = "VAR" }` tables by the secret they name.
    fn resolve(&self, value: toml::Value, key: &str) -> Result<serde_json::Value, String> {
        use serde_json::Value as J;
        Ok(match value {
            toml::Value::String(s) => J::String(s),
            toml::Value::Integer(i) => J::from(i),
            toml::Value::Float(f) => J::from(f),
            toml::Value::Boolean(b) => J::Bool(b),
            toml::Value::Datetime(d) => J::String(d.to_string()),
            toml::Value::Array(items) => J::Array(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| self.resolve(v, &format!("{key}[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
            toml::Value::Table(table) => {
                if let Some(secret) = self.secret_reference(&table, key)? {
                    return Ok(J::String(secret));
                }
                let mut map = serde_json::Map::new();
                for (k, v) in table {
                    let resolved = self.resolve(v, &format!("{key}.{k}"))?;
                    map.insert(k, resolved);
                }
                J::Object(map)
            }
        })
    }

    fn secret_reference(&self, table: &toml::Table, key: &str) -> Result<Option<String>, String> {
        if table.len() != 1 {
            return Ok(None);
        }
        let (kind, name) = table.iter().next().expect("one entry");
        let name = match (kind.as_str(), name) {
            ("from_secret" | "from_env", toml::Value::String(name)) => name,
            _ => return Ok(None),
        };
        let value = if kind == "from_env" {
            std::env::var(name)
                .map_err(|_| format!("{key}: environment variable {name} is not set"))?
        } else {
            let dir = self
                .secrets_dir
                .as_ref()
                .ok_or_else(|| format!("{key}: secret '{name}' needs [master] secrets_dir"))?;
            if name.contains('/') || name.starts_with('.') {
                return Err(format!("{key}: '{name}' is not a valid secret name"));
            }
            let path = dir.join(name);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                format!(
                    "{key}: cannot read secret '{name}' from {}: {e}",
                    path.display()
                )
            })?;
            text.trim_end_matches(['\n', '\r']).to_string()
        };
        if value.is_empty() {
            return Err(format!("{key}: secret '{name}' is empty"));
        }
        Ok(Some(value))
    }
}

/// Dialects that check a credential of their own on every request, and the
/// option holding it: only these may opt out of `change_hook_auth`.
const SELF_AUTHENTICATING: &[(&str, &str)] = &[
    ("github", "secret"),
    ("bitbucketcloud", "secret"),
    ("bitbucketserver", "secret"),
    ("gitlab", "secret"),
    ("mattermost", "token"),
];

/// Whether a dialect with `change_hook_auth = false` still authenticates
/// every request: otherwise the opt-out would open the hook to anyone.
fn check_self_authenticating(name: &str, kind: &str, options: &toml::Table) -> Result<(), String> {
    let needed = SELF_AUTHENTICATING
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, option)| *option);
    match needed {
        Some(option) if options.contains_key(option) => Ok(()),
        Some(option) => Err(format!(
            "change_hook_dialects.{name}.change_hook_auth = false needs '{option}': without it, \
             nothing would authenticate the requests of dialect '{kind}'"
        )),
        None => Err(format!(
            "change_hook_dialects.{name}.change_hook_auth = false is only allowed on a dialect \
             that authenticates requests itself (github, bitbucketcloud or bitbucketserver \
             with a secret, gitlab with a secret, mattermost with a token); '{kind}' does not"
        )),
    }
}

/// The files of the built-in plugins, as a workspace build names them.
/// `@builtin` offers only these: a build directory keeps the libraries of
/// plugins that no longer exist (built against older plugin APIs), which
/// would otherwise be refused at every start.
pub const BUILTIN_LIBRARIES: &[&str] = &[
    "libbuildmaster_dialect_base.so",
    "libbuildmaster_dialect_bitbucket.so",
    "libbuildmaster_dialect_github.so",
    "libbuildmaster_dialect_gitlab.so",
    "libbuildmaster_dialect_gitorious.so",
    "libbuildmaster_dialect_mattermost.so",
    "libbuildmaster_dialect_poller.so",
    "libbuildmaster_reporter_hipchat.so",
    "libbuildmaster_reporter_http_status_push.so",
];

/// The directory holding the running executable, where a workspace build puts
/// the built-in plugin libraries.
pub fn builtin_plugin_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `[www] port`: `8010` (all interfaces), `"127.0.0.1:8010"`, or Buildbot's
/// `"tcp:8010"` / `"tcp:8010:interface=127.0.0.1"`.
fn parse_listen(value: &toml::Value) -> Result<SocketAddr, String> {
    let any = |port: u16| SocketAddr::from(([0, 0, 0, 0], port));
    match value {
        toml::Value::Integer(port) => u16::try_from(*port)
            .map(any)
            .map_err(|_| format!("port {port} is out of range")),
        toml::Value::String(text) => {
            if let Some(rest) = text.strip_prefix("tcp:") {
                let mut parts = rest.split(':');
                let port = parts.next().unwrap_or_default();
                let port: u16 = port
                    .trim_start_matches("port=")
                    .parse()
                    .map_err(|_| format!("'{text}': '{port}' is not a port number"))?;
                let mut addr = any(port);
                for part in parts {
                    let ip = part
                        .strip_prefix("interface=")
                        .ok_or_else(|| format!("'{text}': unknown option '{part}'"))?;
                    addr.set_ip(
                        ip.parse()
                            .map_err(|_| format!("'{text}': '{ip}' is not an IP address"))?,
                    );
                }
                return Ok(addr);
            }
            text.parse()
                .map_err(|_| format!("port '{text}' is neither a number nor HOST:PORT"))
        }
        _ => Err("port must be a number or a \"HOST:PORT\" string".into()),
    }
}

/// An integer or decimal number above zero (a duration in seconds or days).
fn positive_number(value: &toml::Value) -> Option<f64> {
    let number = match value {
        toml::Value::Integer(n) => *n as f64,
        toml::Value::Float(f) => *f,
        _ => return None,
    };
    (number > 0.0 && number.is_finite()).then_some(number)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn parse(text: &str) -> Result<Config, Vec<ConfigError>> {
        Config::parse(Path::new("base/master.toml"), text)
    }

    pub(super) fn errors(text: &str) -> Vec<String> {
        parse(text)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn an_empty_file_is_a_master_with_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config.basedir, Path::new("base"));
        assert_eq!(config.db_path, Path::new("base/state.sqlite"));
        assert_eq!(config.www.listen, "0.0.0.0:8010".parse().unwrap());
        assert!(config.www.dialects.is_empty() && config.www.auth.is_none());
        assert_eq!(config.www.delivery_id_window, 72 * 3600);
        assert_eq!(config.plugin_dirs[0].path, Path::new("base/plugins"));
        assert_eq!(config.plugin_dirs[1].path, builtin_plugin_dir());
    }

    #[test]
    fn unknown_keys_and_sections_name_file_line_and_key() {
        let errs = errors("[www]\nport = 1\nprot = 2\n");
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with("base/master.toml:3:1: unknown field `prot`"),
            "{}",
            errs[0]
        );
        let errs = errors("[master]\n\n[telegrm]\ntoken = 'x'\n");
        assert!(errs[0].starts_with("base/master.toml:3:"), "{}", errs[0]);
        assert!(errs[0].contains("unknown field `telegrm`"), "{}", errs[0]);
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let errs = errors("[www]\nport = \n");
        assert!(errs[0].starts_with("base/master.toml:2:"), "{}", errs[0]);
    }

    #[test]
    fn listen_addresses_in_every_form() {
        for (value, addr) in [
            ("8020", "0.0.0.0:8020"),
            ("'127.0.0.1:0'", "127.0.0.1:0"),
            ("'tcp:9000'", "0.0.0.0:9000"),
            ("'tcp:9000:interface=127.0.0.1'", "127.0.0.1:9000"),
        ] {
            let config = parse(&format!("[www]\nport = {value}\n")).unwrap();
            assert_eq!(config.www.listen, addr.parse().unwrap(), "{value}");
        }
        let errs = errors("[www]\nport = 70000\n");
        assert_eq!(errs, ["base/master.toml:2:8: port 70000 is out of range"]);
    }

    #[test]
    fn every_mistake_is_reported_at_once() {
        let errs = errors(
            "[db]\ndb_url = 'postgresql://x'\n[www]\nport = 'nope'\nmax_body_size = 0\n[www.change_hook_dialects]\nbase = 3\n",
        );
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert!(
            errs[0].starts_with("base/master.toml:2:10: db_url 'postgresql://x' is not supported")
        );
        assert!(errs[1].starts_with("base/master.toml:4:8: port 'nope'"));
        assert!(
            errs[2].starts_with("base/master.toml:7:8: change_hook_dialects.base must be a table")
        );
        assert!(errs[3].starts_with("base/master.toml:5:17: max_body_size"));
    }

    #[test]
    fn dialects_with_options_plugins_and_aliases() {
        let config = parse(
            "[www.change_hook_dialects]\nbase = true\noff = false\n\
             [www.change_hook_dialects.mine]\nplugin = 'plugins/libmine.so'\ndialect = 'hello'\ngreeting = 'hi'\n\
             [www.change_hook_dialects.named]\nplugin = 'example'\n",
        )
        .unwrap();
        let d = &config.www.dialects;
        assert_eq!(d.len(), 3);
        assert_eq!((d[0].name.as_str(), d[0].kind.as_str()), ("base", "base"));
        assert_eq!(d[0].options, serde_json::json!({}));
        assert_eq!(d[1].name, "mine");
        assert_eq!(d[1].kind, "hello");
        assert_eq!(
            d[1].plugin,
            Some(PluginRef::File("base/plugins/libmine.so".into()))
        );
        assert_eq!(d[1].options, serde_json::json!({"greeting": "hi"}));
        assert_eq!(d[2].plugin, Some(PluginRef::Name("example".into())));
        assert_eq!(d[1].location, "base/master.toml:4:1");
    }

    #[test]
    fn only_self_authenticating_dialects_may_opt_out_of_change_hook_auth() {
        let config = parse(
            "[www.change_hook_dialects.mattermost]\ntoken = 't'\nrepo_base_url = ''\n\
             change_hook_auth = false\n\
             [www.change_hook_dialects.hub]\ndialect = 'github'\nsecret = 's'\nchange_hook_auth = false\n\
             [www.change_hook_dialects.base]\nchange_hook_auth = true\n",
        )
        .unwrap();
        let exempt: Vec<(&str, bool)> = config
            .www
            .dialects
            .iter()
            .map(|d| (d.name.as_str(), d.exempt_from_auth))
            .collect();
        assert_eq!(
            exempt,
            [("base", false), ("hub", true), ("mattermost", true)]
        );
        assert!(!config.www.dialects[1]
            .options
            .as_object()
            .unwrap()
            .contains_key("change_hook_auth"));
        let errs = errors(
            "[www.change_hook_dialects.base]\nchange_hook_auth = false\n\
             [www.change_hook_dialects.github]\nchange_hook_auth = false\n\
             [www.change_hook_dialects.gitlab]\nchange_hook_auth = 'no'\n",
        );
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs[0].starts_with("base/master.toml:1:1: change_hook_dialects.base.change_hook_auth = false is only allowed"), "{}", errs[0]);
        assert!(errs[1].starts_with("base/master.toml:3:1: change_hook_dialects.github.change_hook_auth = false needs 'secret'"), "{}", errs[1]);
        assert!(
            errs[2].contains("change_hook_auth must be true or false"),
            "{}",
            errs[2]
        );
    }

    #[test]
    fn secrets_come_from_a_directory_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("secrets")).unwrap();
        std::fs::write(dir.path().join("secrets/hook"), "s3cret\n").unwrap();
        std::fs::write(dir.path().join("secrets/empty"), "\n").unwrap();
        std::env::set_var("BUILDMASTER_TEST_SECRET", "from-env");
        let file = dir.path().join("master.toml");
        let text = "[master]\nsecrets_dir = 'secrets'\n[www.change_hook_dialects.x]\n\
                    secret = { from_secret = 'hook' }\ntoken = { from_env = 'BUILDMASTER_TEST_SECRET' }\n\
                    list = [{ from_secret = 'hook' }]\n";
        let config = Config::parse(&file, text).unwrap();
        assert_eq!(
            config.www.dialects[0].options,
            serde_json::json!({"secret": "s3cret", "token": "from-env", "list": ["s3cret"]})
        );
        let bad = "[master]\nsecrets_dir = 'secrets'\n[www.change_hook_dialects.x]\n\
                   a = { from_secret = 'empty' }\n";
        let errs = Config::parse(&file, bad).unwrap_err();
        assert!(
            errs[0].message.contains("secret 'empty' is empty"),
            "{errs:?}"
        );
        let missing =
            "[www.change_hook_dialects.x]\na = { from_env = 'BUILDMASTER_NO_SUCH_VAR' }\n";
        let errs = Config::parse(&file, missing).unwrap_err();
        assert!(
            errs[0]
                .message
                .contains("BUILDMASTER_NO_SUCH_VAR is not set"),
            "{errs:?}"
        );
    }

    #[test]
    fn change_hook_auth_reads_password_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hook.passwd"), "alice:pw\n").unwrap();
        let file = dir.path().join("master.toml");
        let config =
            Config::parse(&file, "[www]\nchange_hook_auth = ['file:hook.passwd']\n").unwrap();
        assert!(config.www.auth.is_some());
        let errs =
            Config::parse(&file, "[www]\nchange_hook_auth = ['file:nope.passwd']\n").unwrap_err();
        assert!(
            errs[0].to_string().contains(":2:21: cannot read"),
            "{errs:?}"
        );
        let errs = Config::parse(&file, "[www]\nchange_hook_auth = []\n").unwrap_err();
        assert!(errs[0].message.contains("lists no user"), "{errs:?}");
    }

    /// Every option, commented: the reference the starter points to.
    const EXAMPLE: &str = include_str!("../../master.toml.example");

    #[test]
    fn the_example_configuration_is_valid() {
        let config = parse(EXAMPLE).unwrap();
        // The values it shows are the defaults.
        assert_eq!(config.www.limits, HttpLimits::default());
        assert_eq!(config.logs, LogSettings::default());
        assert!(config.janitor.is_none());
    }

    #[test]
    fn the_example_telegram_bot_is_valid_once_uncommented() {
        let section = &EXAMPLE[EXAMPLE.find("# [telegram]").unwrap()..];
        let text: String = section
            .lines()
            .take_while(|line| line.starts_with('#'))
            .filter_map(|line| line.strip_prefix("# "))
            // A certificate is a file, for webhook mode only.
            .filter(|line| !line.starts_with("certificate"))
            .map(|line| format!("{line}\n"))
            .collect();
        // The token is a secret in the example; here a literal one.
        let text = text.replace("{ from_secret = \"telegram_token\" }", "\"123:abc\"");
        let bot = parse(&text).unwrap().telegram.unwrap();
        assert_eq!(bot.bot_id(), 123);
        assert_eq!(bot.poll_timeout, 120);
        assert!(bot.authz.allows("force", 123456789) && !bot.authz.allows("force", 1));
        assert!(!bot.use_webhook);
    }

    #[test]
    fn the_example_janitor_is_valid_once_uncommented() {
        let section = &EXAMPLE[EXAMPLE.find("# [janitor]").unwrap()..];
        let text: String = section
            .lines()
            .filter_map(|line| line.strip_prefix("# "))
            .map(|line| format!("{line}\n"))
            .collect();
        let janitor = parse(&text).unwrap().janitor.unwrap();
        let days = |n: u64| Some(Duration::from_secs(n * 86_400));
        assert_eq!(
            (
                janitor.logs_horizon,
                janitor.builds_horizon,
                janitor.changes_horizon
            ),
            (days(30), days(365), days(365))
        );
    }

    #[test]
    fn the_starter_configuration_builds_main_and_on_demand() {
        let config = parse(STARTER).unwrap();
        assert_eq!(config.www.listen, "127.0.0.1:8010".parse().unwrap());
        assert_eq!(config.workers.len(), 1);
        assert_eq!(config.builders[0].steps.len(), 2);
        let kinds: Vec<&str> = config
            .schedulers
            .iter()
            .map(|s| match s.kind {
                SchedulerKind::SingleBranch { .. } => "single_branch",
                SchedulerKind::Force(_) => "force",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["single_branch", "force"]);
    }

    #[test]
    fn the_example_change_source_is_valid_once_uncommented() {
        let section = &EXAMPLE[EXAMPLE.find("# [[change_sources]]").unwrap()..];
        let is_setting = |line: &&str| {
            line.starts_with('[')
                || line
                    .split_once(" = ")
                    .is_some_and(|(key, _)| key.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        };
        let text: String = section
            .lines()
            .filter_map(|line| line.strip_prefix("# "))
            .filter(is_setting)
            .map(|line| format!("{line}\n"))
            .collect();
        let config = parse(&text).unwrap();
        assert_eq!(config.change_sources.len(), 1, "{text}");
        assert_eq!(config.change_sources[0].name, "app");
        assert_eq!(
            config.change_sources[0].branches,
            Branches::Named(vec!["main".into(), "release".into()])
        );
    }
}
