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
//! use serde::Deserialize;
//!
//! /// `POST /change_hook/hello?who=ada` records one change by `ada`.
//! pub struct Hello {
//!     project: String,
//! }
//!
//! /// `[www.change_hook_dialects.hello]`; an unknown key is refused.
//! #[derive(Deserialize)]
//! pub struct Options {
//!     #[serde(default = "default_project")]
//!     project: String,
//! }
//!
//! fn default_project() -> String {
//!     "hello".into()
//! }
//!
//! impl Dialect for Hello {
//!     type Options = Options;
//!
//!     fn new(_name: &str, options: Options) -> Result<Self, String> {
//!         Ok(Hello { project: options.project })
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
//! # A complete reporter plugin
//!
//! A reporter turns build events into HTTP requests that the master delivers;
//! the [`reporter`] module states the contract (the envelope, the build
//! dictionary, [`Wants`], [`OutgoingRequest`]).
//!
//! ```
//! use buildmaster_plugin_api::reporter::{Envelope, Event};
//! use buildmaster_plugin_api::{export_plugin, Host, OutgoingRequest, Reporter, Wants};
//! use serde::Deserialize;
//! use serde_json::json;
//!
//! /// Posts `<builder> #<number>: <state>` to a chat webhook.
//! pub struct Chat {
//!     url: String,
//! }
//!
//! #[derive(Deserialize)]
//! pub struct Options {
//!     url: String,
//! }
//!
//! impl Reporter for Chat {
//!     type Options = Options;
//!
//!     fn new(_name: &str, options: Options) -> Result<Self, String> {
//!         Ok(Chat { url: options.url })
//!     }
//!
//!     fn wants(&self) -> Wants {
//!         Wants { events: vec![Event::Started, Event::Finished], ..Wants::default() }
//!     }
//!
//!     fn render(&self, envelope: &Envelope, _host: &Host<'_>) -> Result<Vec<OutgoingRequest>, String> {
//!         let build = envelope.build()?;
//!         let text = format!(
//!             "{} #{}: {}",
//!             build["builder"]["name"].as_str().unwrap_or("?"),
//!             build["number"],
//!             build["state_string"].as_str().unwrap_or("")
//!         );
//!         let key = format!("build-{}-{}", build["buildid"], envelope.event.name());
//!         Ok(vec![OutgoingRequest::post_json(&self.url, &json!({ "text": text })).idempotency_key(key)])
//!     }
//! }
//!
//! export_plugin! {
//!     name: "chat",
//!     version: "1.0.0",
//!     reporters: { "chat" => Chat },
//! }
//!
//! # use buildmaster_plugin_api::testing::ReporterHarness;
//! let reporter = ReporterHarness::<Chat>::new(json!({"url": "https://chat.example/hook"}));
//! let requests = reporter.render(&json!({
//!     "event": "finished",
//!     "build": {"buildid": 7, "number": 3, "builder": {"name": "tests"}, "state_string": "build successful"}
//! }));
//! assert_eq!(requests[0].body, br#"{"text":"tests #3: build successful"}"#);
//! assert_eq!(requests[0].idempotency_key.as_deref(), Some("build-7-finished"));
//! ```
//!
//! # Options
//!
//! Each dialect and reporter names an options type; [`options`] reads the
//! plugin's table into it, refusing unknown keys and naming the key path of
//! any error. Secrets arrive resolved, as [`options::Secret`] / [`options::Secrets`].
//!
//! # Helpers
//!
//! * [`payload`] reads JSON fields so that a missing or mistyped one is a 400 naming it.
//! * [`timestamp`] turns the ISO 8601 dates webhooks send into epoch seconds.
//! * [`properties`] copies whitelisted payload leaves into change properties ([`glob`] patterns).
//! * [`signature`] (feature `signatures`) checks HMAC signatures against several live secrets.
//! * [`testing`] runs a dialect or reporter through the real boundary, without the master.
//!
//! # Versions
//!
//! [`ABI_VERSION`] is the version of the binary interface between the master
//! and a library; it is independent of this crate's version. A master loads a
//! library of the same ABI major version and the same or an older minor
//! version. `README.md` states the policy.

pub mod boundary;
mod change;
pub mod glob;
pub mod metadata;
pub mod options;
pub mod payload;
pub mod properties;
pub mod reporter;
mod request;
#[cfg(feature = "signatures")]
pub mod signature;
pub mod testing;
pub mod timestamp;

use std::time::Duration;

use serde::de::DeserializeOwned;

/// Re-exported so that a plugin crate needs no other dependency: derive with
/// `#[derive(buildmaster_plugin_api::serde::Deserialize)]` and
/// `#[serde(crate = "buildmaster_plugin_api::serde")]`.
pub use serde;
/// Re-exported for the same reason.
pub use serde_json;

pub use change::Change;
pub use reporter::{Envelope, OutgoingRequest, Wants};
pub use request::{Args, Request};

/// The plugin ABI this crate builds libraries for, `major.minor`.
pub const ABI_VERSION: &str = "1.1";
/// [`ABI_VERSION`]'s major part: a master loads only libraries with its own.
pub const ABI_MAJOR: u32 = 1;
/// [`ABI_VERSION`]'s minor part: a master loads libraries up to its own.
pub const ABI_MINOR: u32 = 1;

/// The version of this crate, which a library records for the master to show.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A change-hook dialect: turns one HTTP request into changes.
pub trait Dialect: Send + Sync + Sized + 'static {
    /// The `[www.change_hook_dialects.<name>]` table, read by [`options::parse`]:
    /// unknown keys are refused, errors name the key path. Use
    /// [`options::NoOptions`] for a dialect that takes none.
    type Options: DeserializeOwned;

    /// Builds an instance from its name and its options. The error is shown
    /// to the operator as is, after the dialect's name and table location.
    fn new(name: &str, options: Self::Options) -> Result<Self, String>;

    /// Handles one request. Called concurrently from several threads.
    fn handle(&self, request: &Request, host: &Host<'_>) -> Result<HookOutcome, HookError>;
}

/// A reporter: turns build events into outgoing HTTP requests. See
/// [`reporter`] for the contract.
pub trait Reporter: Send + Sync + Sized + 'static {
    /// The reporter's own keys of its `[[reporters]]` table (the master keeps
    /// `name`, `type` and the message-generator keys such as `builders`,
    /// `mode` and `want_steps`).
    type Options: DeserializeOwned;

    /// Builds an instance from its name and its options.
    fn new(name: &str, options: Self::Options) -> Result<Self, String>;

    /// What the reporter wants to receive. Asked once, after `new`.
    fn wants(&self) -> Wants;

    /// Renders one event into the requests the master should deliver, in
    /// order. An error is logged with the reporter's name; nothing is sent.
    fn render(&self, event: &Envelope, host: &Host<'_>) -> Result<Vec<OutgoingRequest>, String>;
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
/// Use it once per library; leave out `dialects` or `reporters` when there are
/// none. The kinds listed are the names `master.toml` uses. Besides the root
/// module, it writes the library's [`metadata`] section, from which the master
/// learns what the library offers without loading it.
#[macro_export]
macro_rules! export_plugin {
    (
        name: $name:expr,
        version: $version:expr
        $(, dialects: { $($dkind:literal => $dty:ty),* $(,)? })?
        $(, reporters: { $($rkind:literal => $rty:ty),* $(,)? })?
        $(,)?
    ) => {
        const _: () = {
            use $crate::boundary as __bm;
            use __bm::abi_stable::std_types::{RResult, RSlice, RStr};

            static __BM_DIALECT_KINDS: &[RStr<'static>] = &[$($(RStr::from_str($dkind)),*)?];
            static __BM_REPORTER_KINDS: &[RStr<'static>] = &[$($(RStr::from_str($rkind)),*)?];

            const __BM_PARTS: &[&str] = &[
                $crate::metadata::PREAMBLE[0],
                $crate::metadata::PREAMBLE[1],
                $crate::metadata::PREAMBLE[2],
                $crate::metadata::PREAMBLE[3],
                $crate::SDK_VERSION,
                "\nname ", $name,
                "\nversion ", $version,
                $($("\ndialect ", $dkind,)*)?
                $($("\nreporter ", $rkind,)*)?
                "\n",
            ];
            const _: () = {
                $crate::metadata::check_word($name);
                $crate::metadata::check_word($version);
                $($($crate::metadata::check_word($dkind);)*)?
                $($($crate::metadata::check_word($rkind);)*)?
            };
            const __BM_METADATA_LEN: usize = $crate::metadata::encoded_len(__BM_PARTS);
            #[used]
            #[link_section = ".buildmaster_plugin"]
            static __BM_METADATA: [u8; __BM_METADATA_LEN] =
                $crate::metadata::encode::<__BM_METADATA_LEN>(__BM_PARTS);

            extern "C" fn __bm_new_dialect(
                kind: RStr<'_>,
                name: RStr<'_>,
                config: RStr<'_>,
            ) -> RResult<__bm::DialectBox, __bm::FfiError> {
                __bm::construct_dialect(
                    &[$($(($dkind, __bm::new_dialect::<$dty> as __bm::DialectCtor)),*)?],
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
                    &[$($(($rkind, __bm::new_reporter::<$rty> as __bm::ReporterCtor)),*)?],
                    kind,
                    name,
                    config,
                )
            }

            fn __bm_module() -> __bm::PluginModRef {
                __bm::leak_module(__bm::PluginModExt {
                    abi_version: RStr::from_str($crate::ABI_VERSION),
                    plugin_name: RStr::from_str($name),
                    plugin_version: RStr::from_str($version),
                    panic_unwinds: cfg!(panic = "unwind"),
                    dialects: RSlice::from_slice(__BM_DIALECT_KINDS),
                    reporters: RSlice::from_slice(__BM_REPORTER_KINDS),
                    new_dialect: __bm_new_dialect,
                    new_reporter: __bm_new_reporter,
                    sdk_version: RStr::from_str($crate::SDK_VERSION),
                    metadata: RSlice::from_slice(&__BM_METADATA),
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
