//! The plugin API of buildmaster.
//!
//! A plugin is a shared library (`cdylib`) that offers change-hook **dialects**
//! (an HTTP request in, changes out) and **reporters** (a build event in, HTTP
//! requests out). Plugin code is pure and synchronous: it opens no sockets, spawns
//! no threads and runs no async runtime. Where it must ask the outside world, it
//! calls the blocking capabilities of the [`Host`] it is handed, which the master
//! implements, limits and logs.
//!
//! Plugin authors implement [`Dialect`] or [`Reporter`] with plain Rust and serde
//! types and export them with [`export_plugin!`]; abi_stable stays out of sight.
//! Every entry point runs under `catch_unwind`, so a panic becomes an HTTP 500 for
//! that one request and a log line naming the plugin.
//!
//! # A complete dialect plugin
//!
//! ```
//! use buildmaster_plugin_api::{export_plugin, Change, Dialect, HookError, HookOutcome, Host, Request};
//!
//! /// `POST /change_hook/hello?who=ada` records one change by `ada`.
//! pub struct Hello {
//!     project: String,
//! }
//!
//! impl Dialect for Hello {
//!     fn new(_name: &str, config: &serde_json::Value) -> Result<Self, String> {
//!         let project = config.get("project").and_then(|p| p.as_str()).unwrap_or("hello");
//!         Ok(Hello { project: project.to_string() })
//!     }
//!
//!     fn handle(&self, request: &Request, host: &Host<'_>) -> Result<HookOutcome, HookError> {
//!         let args = request.args();
//!         let who = args.first("who").ok_or_else(|| HookError::bad_request("missing 'who'"))?;
//!         host.info(&format!("change from {who}"));
//!         Ok(vec![Change {
//!             author: Some(who.to_string()),
//!             comments: Some("hello".into()),
//!             project: self.project.clone(),
//!             ..Change::default()
//!         }]
//!         .into())
//!     }
//! }
//!
//! export_plugin! {
//!     name: "hello",
//!     version: "1.0.0",
//!     dialects: { "hello" => Hello },
//!     reporters: {},
//! }
//! ```
//!
//! Build it with `crate-type = ["cdylib"]` and the default `panic = "unwind"`, drop
//! the `.so` into a plugin directory and enable it in `master.toml`:
//!
//! ```toml
//! [www.change_hook_dialects.hello]
//! project = "demo"
//! ```
//!
//! # A reporter
//!
//! ```
//! use buildmaster_plugin_api::{Host, OutgoingRequest, Reporter, Wants};
//!
//! pub struct Ping {
//!     url: String,
//! }
//!
//! impl Reporter for Ping {
//!     fn new(_name: &str, config: &serde_json::Value) -> Result<Self, String> {
//!         let url = config.get("url").and_then(|u| u.as_str()).ok_or("'url' is required")?;
//!         Ok(Ping { url: url.to_string() })
//!     }
//!
//!     fn wants(&self) -> Wants {
//!         Wants { events: vec!["build_finished".into()], ..Wants::default() }
//!     }
//!
//!     fn render(&self, event: &serde_json::Value, _host: &Host<'_>) -> Result<Vec<OutgoingRequest>, String> {
//!         Ok(vec![OutgoingRequest::post_json(&self.url, event)])
//!     }
//! }
//! ```
//!
//! The [`testing`] module runs a dialect or reporter without the master.
//!
//! For reading payloads:
//! * [`payload`] reads JSON fields so that a missing or mistyped one is a 400 naming it.
//! * [`timestamp`] turns the ISO 8601 dates webhooks send into epoch seconds.

pub mod boundary;
mod change;
pub mod payload;
mod request;
#[cfg(feature = "signatures")]
pub mod signature;
pub mod testing;
pub mod timestamp;

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Re-exported so a plugin crate needs no other dependency for its configuration.
pub use serde_json;

pub use change::Change;
pub use request::{Args, Request};

/// The version of this API; a plugin built against an incompatible one is refused.
pub const API_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A change-hook dialect: turns one HTTP request into changes.
pub trait Dialect: Send + Sync + Sized + 'static {
    /// Builds an instance from its name and its `[www.change_hook_dialects.<name>]`
    /// table (as JSON; `{}` when the table is empty). The error is shown to the
    /// operator as is.
    fn new(name: &str, config: &serde_json::Value) -> Result<Self, String>;

    /// Handles one request. Called concurrently from several threads.
    fn handle(&self, request: &Request, host: &Host<'_>) -> Result<HookOutcome, HookError>;
}

/// A reporter: turns build events into outgoing HTTP requests.
pub trait Reporter: Send + Sync + Sized + 'static {
    /// Builds an instance from its name and its `[[reporters]]` table as JSON.
    fn new(name: &str, config: &serde_json::Value) -> Result<Self, String>;

    /// What the reporter wants to receive.
    fn wants(&self) -> Wants;

    /// Renders one event (the build dictionary of the event, as JSON) into the
    /// requests the host should deliver.
    fn render(
        &self,
        event: &serde_json::Value,
        host: &Host<'_>,
    ) -> Result<Vec<OutgoingRequest>, String>;
}

/// What a dialect returns for an accepted request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HookOutcome {
    /// The changes to store, in order.
    pub changes: Vec<Change>,
    /// Replaces the default `N change found` answer when set.
    pub response: Option<Response>,
}

impl From<Vec<Change>> for HookOutcome {
    fn from(changes: Vec<Change>) -> Self {
        HookOutcome {
            changes,
            response: None,
        }
    }
}

/// A response a dialect sends instead of `N change found`.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Response {
    /// A JSON response with status 200.
    pub fn json(value: &serde_json::Value) -> Response {
        Response {
            status: 200,
            content_type: "application/json".into(),
            body: value.to_string().into_bytes(),
        }
    }

    /// The same response with another status.
    pub fn with_status(mut self, status: u16) -> Response {
        self.status = status;
        self
    }
}

/// How the master answers a [`HookError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The sender's fault: 400.
    BadRequest,
    /// Missing or wrong credentials: 401.
    Unauthorized,
    /// Valid credentials without the right: 403.
    Forbidden,
    /// The dialect's own fault: 500 (the message is logged, not sent).
    Internal,
}

impl ErrorClass {
    /// The HTTP status of this class.
    pub fn status(self) -> u16 {
        match self {
            ErrorClass::BadRequest => 400,
            ErrorClass::Unauthorized => 401,
            ErrorClass::Forbidden => 403,
            ErrorClass::Internal => 500,
        }
    }
}

/// A request the dialect refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookError {
    pub class: ErrorClass,
    /// One line for the sender (for 4xx) or the log (for 500). Never include a
    /// secret or an expected signature.
    pub message: String,
}

impl HookError {
    pub fn new(class: ErrorClass, message: impl Into<String>) -> HookError {
        HookError {
            class,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> HookError {
        HookError::new(ErrorClass::BadRequest, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> HookError {
        HookError::new(ErrorClass::Unauthorized, message)
    }

    pub fn forbidden(message: impl Into<String>) -> HookError {
        HookError::new(ErrorClass::Forbidden, message)
    }

    pub fn internal(message: impl Into<String>) -> HookError {
        HookError::new(ErrorClass::Internal, message)
    }
}

impl std::fmt::Display for HookError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HookError {}

/// What a reporter wants the host to include in the events it receives.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Wants {
    /// Event kinds: `build_started`, `build_finished`, `worker_missing`, …
    pub events: Vec<String>,
    pub properties: bool,
    pub steps: bool,
    pub logs: bool,
    pub previous_build: bool,
}

/// One HTTP request a reporter asks the host to deliver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutgoingRequest {
    pub method: String,
    pub url: String,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    #[serde(default)]
    pub body: String,
}

impl OutgoingRequest {
    /// `POST url` with `value` as a JSON body.
    pub fn post_json(url: &str, value: &serde_json::Value) -> OutgoingRequest {
        OutgoingRequest {
            method: "POST".into(),
            url: url.into(),
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: value.to_string(),
        }
    }
}

/// An HTTP request made through [`Host::http`].
#[derive(Debug, Clone, PartialEq)]
pub struct HttpRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The whole exchange must finish within this time.
    pub timeout: Duration,
}

impl HttpRequest {
    /// `GET url` with a 10 s timeout.
    pub fn get(url: impl Into<String>) -> HttpRequest {
        HttpRequest {
            method: "GET".into(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: Duration::from_secs(10),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> HttpRequest {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// The answer to an [`HttpRequest`].
#[derive(Debug, Clone, PartialEq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The body parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| format!("response is not JSON: {e}"))
    }
}

/// Log levels for [`Host::log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum LogLevel {
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
}

/// The master's capabilities, lent to plugin code for the length of one call.
pub struct Host<'a> {
    inner: boundary::HostRef<'a>,
}

impl Host<'_> {
    /// Performs one blocking HTTP request through the master. `Err` is a one-line
    /// reason (timeout, refused, limit reached); an HTTP error status is `Ok`.
    pub fn http(&self, request: HttpRequest) -> Result<HttpResponse, String> {
        self.request_ffi(request)
    }

    /// `GET url` with the given headers.
    pub fn http_get(&self, url: &str, headers: &[(&str, &str)]) -> Result<HttpResponse, String> {
        let mut request = HttpRequest::get(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.http(request)
    }

    /// Writes a line to the master's log under the plugin's name.
    pub fn log(&self, level: LogLevel, message: &str) {
        self.log_ffi(level, message)
    }

    pub fn error(&self, message: &str) {
        self.log(LogLevel::Error, message)
    }

    pub fn warn(&self, message: &str) {
        self.log(LogLevel::Warn, message)
    }

    pub fn info(&self, message: &str) {
        self.log(LogLevel::Info, message)
    }

    pub fn debug(&self, message: &str) {
        self.log(LogLevel::Debug, message)
    }

    /// The names of the master's polling change sources (`[[change_sources]]`
    /// that poll), for the `poller` dialect and its kind.
    pub fn polling_sources(&self) -> Vec<String> {
        self.polling_sources_ffi()
    }

    /// Asks the named polling change sources to poll now; unknown names are ignored.
    pub fn force_poll(&self, names: &[String]) {
        self.force_poll_ffi(names)
    }
}

/// Exports the dialects and reporters of a plugin library.
///
/// ```text
/// export_plugin! {
///     name: "github",
///     version: env!("CARGO_PKG_VERSION"),
///     dialects: { "github" => GitHub },
///     reporters: { "github_status" => GitHubStatus },
/// }
/// ```
///
/// Use it once per library. The kinds listed are the names `master.toml` uses.
#[macro_export]
macro_rules! export_plugin {
    (
        name: $name:expr,
        version: $version:expr,
        dialects: { $($dkind:literal => $dty:ty),* $(,)? },
        reporters: { $($rkind:literal => $rty:ty),* $(,)? } $(,)?
    ) => {
        const _: () = {
            use $crate::boundary as __bm;
            use __bm::abi_stable::std_types::{RResult, RSlice, RStr};

            static __BM_DIALECT_KINDS: &[RStr<'static>] = &[$(RStr::from_str($dkind)),*];
            static __BM_REPORTER_KINDS: &[RStr<'static>] = &[$(RStr::from_str($rkind)),*];

            extern "C" fn __bm_new_dialect(
                kind: RStr<'_>,
                name: RStr<'_>,
                config: RStr<'_>,
            ) -> RResult<__bm::DialectBox, __bm::FfiError> {
                __bm::construct_dialect(
                    &[$(($dkind, __bm::new_dialect::<$dty> as __bm::DialectCtor)),*],
                    kind,
                    name,
                    config,
                )
            }

            extern "C" fn __bm_new_reporter(
                kind: RStr<'_>,
                name: RStr<'_>,
                config: RStr<'_>,
            ) -> RResult<__bm::ReporterBox, __bm::FfiError> {
                __bm::construct_reporter(
                    &[$(($rkind, __bm::new_reporter::<$rty> as __bm::ReporterCtor)),*],
                    kind,
                    name,
                    config,
                )
            }

            fn __bm_module() -> __bm::PluginModRef {
                __bm::leak_module(__bm::PluginMod {
                    api_version: RStr::from_str($crate::API_VERSION),
                    plugin_name: RStr::from_str($name),
                    plugin_version: RStr::from_str($version),
                    panic_unwinds: cfg!(panic = "unwind"),
                    dialects: RSlice::from_slice(__BM_DIALECT_KINDS),
                    reporters: RSlice::from_slice(__BM_REPORTER_KINDS),
                    new_dialect: __bm_new_dialect,
                    new_reporter: __bm_new_reporter,
                })
            }

            extern "C" fn __bm_load() -> __bm::abi_stable::library::RootModuleResult {
                __bm::call_module_loader(__bm_module)
            }

            #[export_name = "_1as_0lib_1header_0root_bmodule_bloader"]
            static __BM_LIB_HEADER: __bm::abi_stable::library::LibHeader =
                __bm::library_header(__bm_load);
        };
    };
}
