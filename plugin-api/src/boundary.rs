//! The stable ABI between the host and a plugin library.
//!
//! This is the only module (with the [`export_plugin!`](crate::export_plugin) macro)
//! that touches abi_stable. Everything that crosses the boundary is a small
//! `#[repr(C)]` envelope of plain strings, bytes and numbers; structured data (the
//! changes a dialect produces, the events a reporter renders) travels as JSON, so
//! the Change model can grow without changing the layout checked at load time.
//!
//! Every call into plugin code goes through one of the trampolines below, which run
//! it under `catch_unwind`: a panic that unwound across the boundary would end the
//! whole host, so it comes back as an internal error instead.

// `#[sabi_trait]` expands to impls inside constants, which this lint flags.
#![allow(non_local_definitions)]

use std::panic::{catch_unwind, AssertUnwindSafe};

pub use abi_stable;
use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    sabi_trait,
    sabi_types::{RRef, VersionStrings},
    std_types::{RBox, ROption, RResult, RSlice, RStr, RString, RVec, Tuple2},
    StableAbi,
};

use crate::{
    options, Dialect, Envelope, ErrorClass, HookError, HookOutcome, Host, HttpRequest,
    HttpResponse, LogLevel, OutgoingRequest, Reporter, Request, Response,
};

/// The name of the exported static that holds a plugin library's header. The
/// [`export_plugin!`](crate::export_plugin) macro exports it under this name (a
/// test checks that it is the name abi_stable looks for).
pub const ROOT_MODULE_SYMBOL: &str = "_1as_0lib_1header_0root_bmodule_bloader";

/// A name/value pair (query parameter, header).
pub type FfiPair = Tuple2<RString, RString>;

/// One incoming HTTP request, as a dialect sees it.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct FfiRequest {
    pub method: RString,
    pub path: RString,
    /// Decoded query parameters, in order.
    pub query: RVec<FfiPair>,
    /// Header names as received; look-ups are case-insensitive.
    pub headers: RVec<FfiPair>,
    pub body: RVec<u8>,
    pub remote_addr: RString,
}

/// A response that replaces the default `N change found` answer.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct FfiResponse {
    pub status: u16,
    pub content_type: RString,
    pub body: RVec<u8>,
}

/// What a dialect returns for a request it accepted.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct FfiHookResult {
    /// A JSON array of change objects (see [`crate::Change`]).
    pub changes_json: RString,
    pub response: ROption<FfiResponse>,
}

/// An error from plugin code. `status` is the HTTP status it maps to (400, 401,
/// 403 or 500), which keeps the layout stable if more classes are added.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct FfiError {
    pub status: u16,
    pub message: RString,
}

/// An outgoing HTTP request made through the host.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct FfiHttpRequest {
    pub method: RString,
    pub url: RString,
    pub headers: RVec<FfiPair>,
    pub body: RVec<u8>,
    pub timeout_ms: u64,
}

/// A request a reporter asks the host to deliver.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct FfiOutgoingRequest {
    pub method: RString,
    pub url: RString,
    pub headers: RVec<FfiPair>,
    pub body: RVec<u8>,
    /// 0: the host's default.
    pub timeout_ms: u64,
    /// Empty: none.
    pub idempotency_key: RString,
}

/// The answer to an [`FfiHttpRequest`].
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct FfiHttpResponse {
    pub status: u16,
    pub headers: RVec<FfiPair>,
    pub body: RVec<u8>,
}

/// The capabilities the host lends to plugin code for the length of one call.
#[sabi_trait]
pub trait HostFfi: Sync {
    /// Performs one blocking HTTP request; `Err` carries a one-line reason.
    fn http_request(&self, request: &FfiHttpRequest) -> RResult<FfiHttpResponse, RString>;

    /// Writes `message` to the host's log under the plugin's name.
    /// `level`: 0 error, 1 warn, 2 info, 3 debug.
    fn log(&self, level: u8, message: RStr<'_>);

    /// The names of the master's polling change sources.
    fn polling_sources(&self) -> RVec<RString>;

    /// Asks the named polling change sources to poll now.
    #[sabi(last_prefix_field)]
    fn force_poll(&self, names: RSlice<'_, RString>);
}

/// The host's capabilities as passed into a plugin call.
pub type HostRef<'a> = HostFfi_TO<'a, RRef<'a, ()>>;

/// A constructed dialect instance.
#[sabi_trait]
pub trait DialectFfi: Send + Sync {
    #[sabi(last_prefix_field)]
    fn handle(&self, request: &FfiRequest, host: HostRef<'_>) -> RResult<FfiHookResult, FfiError>;
}

/// A boxed dialect instance owned by the host.
pub type DialectBox = DialectFfi_TO<'static, RBox<()>>;

/// A constructed reporter instance.
#[sabi_trait]
pub trait ReporterFfi: Send + Sync {
    /// What the reporter wants, as the JSON of [`crate::Wants`].
    fn wants(&self) -> RString;

    /// Turns one event (the JSON of an [`crate::Envelope`]) into outgoing
    /// requests.
    #[sabi(last_prefix_field)]
    fn render(
        &self,
        event_json: RStr<'_>,
        host: HostRef<'_>,
    ) -> RResult<RVec<FfiOutgoingRequest>, FfiError>;
}

/// A boxed reporter instance owned by the host.
pub type ReporterBox = ReporterFfi_TO<'static, RBox<()>>;

/// The root module as every library since ABI 1.0 exports it, and the layout
/// the master checks a library against. It never changes: abi_stable refuses a
/// library whose root module has fewer fields than the master's view, so the
/// master's view stays the oldest layout it loads. Fields appended in later
/// minor versions are read through [`PluginModExt`].
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
pub struct PluginMod {
    /// The plugin ABI the library was built for, `major.minor`.
    pub abi_version: RStr<'static>,
    pub plugin_name: RStr<'static>,
    pub plugin_version: RStr<'static>,
    /// Whether the plugin was built with `panic = "unwind"`; a plugin built to
    /// abort on panic would take the host down with it, so it is refused.
    pub panic_unwinds: bool,
    /// The dialect kinds this library offers.
    pub dialects: RSlice<'static, RStr<'static>>,
    /// The reporter kinds this library offers.
    pub reporters: RSlice<'static, RStr<'static>>,
    /// Constructs a dialect: `(kind, instance name, options as JSON)`.
    pub new_dialect: extern "C" fn(RStr<'_>, RStr<'_>, RStr<'_>) -> RResult<DialectBox, FfiError>,
    /// Constructs a reporter, as `new_dialect` does.
    #[sabi(last_prefix_field)]
    pub new_reporter: extern "C" fn(RStr<'_>, RStr<'_>, RStr<'_>) -> RResult<ReporterBox, FfiError>,
}

/// The root module as this version of the SDK writes it: [`PluginMod`]'s
/// fields, in the same order and types, then the fields appended since ABI
/// 1.0. Only ever append here. The accessor of an appended field returns
/// `None` for a library built before it (its field accessibility, which the
/// library itself records, says the field is absent): never a panic.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModExtRef)))]
#[sabi(missing_field(option))]
pub struct PluginModExt {
    pub abi_version: RStr<'static>,
    pub plugin_name: RStr<'static>,
    pub plugin_version: RStr<'static>,
    pub panic_unwinds: bool,
    pub dialects: RSlice<'static, RStr<'static>>,
    pub reporters: RSlice<'static, RStr<'static>>,
    pub new_dialect: extern "C" fn(RStr<'_>, RStr<'_>, RStr<'_>) -> RResult<DialectBox, FfiError>,
    #[sabi(last_prefix_field)]
    pub new_reporter: extern "C" fn(RStr<'_>, RStr<'_>, RStr<'_>) -> RResult<ReporterBox, FfiError>,
    /// ABI 1.1: the version of `buildmaster-plugin-api` the library was built with.
    pub sdk_version: RStr<'static>,
    /// ABI 1.1: the text of the library's [`crate::metadata`] section, so
    /// that the host can check it matches what the file said.
    pub metadata: RSlice<'static, u8>,
}

impl PluginModRef {
    /// The same root module seen with the fields appended since ABI 1.0.
    pub fn extended(self) -> PluginModExtRef {
        // SAFETY: both views share the prefix (the ABI 1.0 fields, in the same
        // order and types, `repr(C)`), and an appended field is read only when
        // the field accessibility the library recorded for its own module
        // says the library has it.
        PluginModExtRef(unsafe { self.0.cast() })
    }
}

/// The version abi_stable compares at load time: it refuses a library whose
/// major version differs from the host's. Minor versions are checked by the
/// host against [`PluginMod::abi_version`].
pub const ABI_VERSION_STRINGS: VersionStrings = VersionStrings::new("1.1.0");

impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "buildmaster_plugin";
    const NAME: &'static str = "buildmaster_plugin";
    const VERSION_STRINGS: VersionStrings = ABI_VERSION_STRINGS;
}

// ---------------------------------------------------------------------------
// Plugin side: trampolines the export macro points at.

/// A constructor as the export macro lists it: instance name and options in.
pub type Ctor<T> = fn(&str, &serde_json::Value) -> RResult<T, FfiError>;
/// A dialect constructor.
pub type DialectCtor = Ctor<DialectBox>;
/// A reporter constructor.
pub type ReporterCtor = Ctor<ReporterBox>;

/// How the message of a caught panic starts, so that the host can count
/// panics apart from other internal errors.
pub const PANIC_PREFIX: &str = "plugin panicked: ";

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    let text = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    };
    format!("{PANIC_PREFIX}{text}")
}

/// Runs plugin code, turning a panic into an internal error.
fn guarded<T>(f: impl FnOnce() -> RResult<T, FfiError>) -> RResult<T, FfiError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => RResult::RErr(FfiError {
            status: 500,
            message: panic_message(payload).into(),
        }),
    }
}

fn parse_config(config_json: RStr<'_>) -> Result<serde_json::Value, FfiError> {
    serde_json::from_str(config_json.as_str()).map_err(|e| FfiError {
        status: 500,
        message: format!("configuration is not valid JSON: {e}").into(),
    })
}

fn unknown_kind(what: &str, kind: &str) -> FfiError {
    FfiError {
        status: 500,
        message: format!("this library offers no {what} named '{kind}'").into(),
    }
}

/// Constructs the instance `kind` (a dialect or reporter, as `what` says) from
/// the export macro's `table`, under `catch_unwind`.
fn construct<T>(
    what: &str,
    table: &[(&str, Ctor<T>)],
    kind: RStr<'_>,
    name: RStr<'_>,
    config_json: RStr<'_>,
) -> RResult<T, FfiError> {
    guarded(|| {
        let Some((_, ctor)) = table.iter().find(|(k, _)| *k == kind.as_str()) else {
            return RResult::RErr(unknown_kind(what, kind.as_str()));
        };
        match parse_config(config_json) {
            Ok(config) => ctor(name.as_str(), &config),
            Err(e) => RResult::RErr(e),
        }
    })
}

/// Constructs the dialect `kind` from `table`; used by the export macro.
pub fn construct_dialect(
    table: &[(&str, DialectCtor)],
    kind: RStr<'_>,
    name: RStr<'_>,
    config_json: RStr<'_>,
) -> RResult<DialectBox, FfiError> {
    construct("dialect", table, kind, name, config_json)
}

/// Constructs the reporter `kind` from `table`; used by the export macro.
pub fn construct_reporter(
    table: &[(&str, ReporterCtor)],
    kind: RStr<'_>,
    name: RStr<'_>,
    config_json: RStr<'_>,
) -> RResult<ReporterBox, FfiError> {
    construct("reporter", table, kind, name, config_json)
}

fn construct_error(message: String) -> FfiError {
    FfiError {
        status: 500,
        message: message.into(),
    }
}

/// The typed constructor of dialect `D`, erased for the export macro's table.
pub fn new_dialect<D: Dialect>(
    name: &str,
    config: &serde_json::Value,
) -> RResult<DialectBox, FfiError> {
    let options = match options::parse::<D::Options>(config) {
        Ok(options) => options,
        Err(message) => return RResult::RErr(construct_error(message)),
    };
    match D::new(name, options) {
        Ok(dialect) => RResult::ROk(DialectFfi_TO::from_value(
            DialectAdapter(dialect),
            sabi_trait::TD_Opaque,
        )),
        Err(message) => RResult::RErr(construct_error(message)),
    }
}

/// The typed constructor of reporter `R`, erased for the export macro's table.
pub fn new_reporter<R: Reporter>(
    name: &str,
    config: &serde_json::Value,
) -> RResult<ReporterBox, FfiError> {
    let options = match options::parse::<R::Options>(config) {
        Ok(options) => options,
        Err(message) => return RResult::RErr(construct_error(message)),
    };
    match R::new(name, options) {
        Ok(reporter) => RResult::ROk(ReporterFfi_TO::from_value(
            ReporterAdapter(reporter),
            sabi_trait::TD_Opaque,
        )),
        Err(message) => RResult::RErr(construct_error(message)),
    }
}

struct DialectAdapter<D>(D);

impl<D: Dialect> DialectFfi for DialectAdapter<D> {
    fn handle(&self, request: &FfiRequest, host: HostRef<'_>) -> RResult<FfiHookResult, FfiError> {
        guarded(|| {
            let request = Request::from_ffi(request);
            let host = Host::from_ffi(host);
            match self.0.handle(&request, &host) {
                Ok(outcome) => hook_result(outcome),
                Err(error) => RResult::RErr(error.into_ffi()),
            }
        })
    }
}

fn hook_result(outcome: HookOutcome) -> RResult<FfiHookResult, FfiError> {
    match serde_json::to_string(&outcome.changes) {
        Ok(changes_json) => RResult::ROk(FfiHookResult {
            changes_json: changes_json.into(),
            response: outcome.response.map(Response::into_ffi).into(),
        }),
        Err(e) => RResult::RErr(construct_error(format!("cannot encode changes: {e}"))),
    }
}

struct ReporterAdapter<R>(R);

impl<R: Reporter> ReporterFfi for ReporterAdapter<R> {
    fn wants(&self) -> RString {
        // A panic here cannot be reported as an error; fall back to wanting nothing.
        catch_unwind(AssertUnwindSafe(|| {
            serde_json::to_string(&self.0.wants()).unwrap_or_else(|_| "{}".into())
        }))
        .unwrap_or_else(|_| "{}".into())
        .into()
    }

    fn render(
        &self,
        event_json: RStr<'_>,
        host: HostRef<'_>,
    ) -> RResult<RVec<FfiOutgoingRequest>, FfiError> {
        guarded(|| {
            let envelope: Envelope = match serde_json::from_str(event_json.as_str()) {
                Ok(envelope) => envelope,
                Err(e) => return RResult::RErr(construct_error(format!("unreadable event: {e}"))),
            };
            let host = Host::from_ffi(host);
            match self.0.render(&envelope, &host) {
                Ok(requests) => RResult::ROk(
                    requests
                        .into_iter()
                        .map(OutgoingRequest::into_ffi)
                        .collect(),
                ),
                Err(message) => RResult::RErr(construct_error(message)),
            }
        })
    }
}

// ---------------------------------------------------------------------------
// Conversions between the envelopes and the SDK's types.

fn pairs_from_ffi(pairs: &RVec<FfiPair>) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|p| (p.0.to_string(), p.1.to_string()))
        .collect()
}

fn pairs_to_ffi(pairs: Vec<(String, String)>) -> RVec<FfiPair> {
    pairs
        .into_iter()
        .map(|(n, v)| Tuple2(n.into(), v.into()))
        .collect()
}

impl Request {
    /// Copies an envelope into the SDK's request type.
    pub fn from_ffi(request: &FfiRequest) -> Request {
        Request {
            method: request.method.to_string(),
            path: request.path.to_string(),
            query: pairs_from_ffi(&request.query),
            headers: pairs_from_ffi(&request.headers),
            body: request.body.to_vec(),
            remote_addr: request.remote_addr.to_string(),
        }
    }

    /// Packs the request into its envelope.
    pub fn into_ffi(self) -> FfiRequest {
        FfiRequest {
            method: self.method.into(),
            path: self.path.into(),
            query: pairs_to_ffi(self.query),
            headers: pairs_to_ffi(self.headers),
            body: self.body.into(),
            remote_addr: self.remote_addr.into(),
        }
    }
}

impl Response {
    fn into_ffi(self) -> FfiResponse {
        FfiResponse {
            status: self.status,
            content_type: self.content_type.into(),
            body: self.body.into(),
        }
    }

    /// Copies an envelope into the SDK's response type.
    pub fn from_ffi(response: &FfiResponse) -> Response {
        Response {
            status: response.status,
            content_type: response.content_type.to_string(),
            body: response.body.to_vec(),
        }
    }
}

impl OutgoingRequest {
    fn into_ffi(self) -> FfiOutgoingRequest {
        FfiOutgoingRequest {
            method: self.method.into(),
            url: self.url.into(),
            headers: pairs_to_ffi(self.headers),
            body: self.body.into(),
            timeout_ms: self
                .timeout
                .map_or(0, |t| t.as_millis().clamp(1, u64::MAX as u128) as u64),
            idempotency_key: self.idempotency_key.unwrap_or_default().into(),
        }
    }

    /// Copies an envelope into the SDK's type (host side).
    pub fn from_ffi(request: &FfiOutgoingRequest) -> OutgoingRequest {
        OutgoingRequest {
            method: request.method.to_string(),
            url: request.url.to_string(),
            headers: pairs_from_ffi(&request.headers),
            body: request.body.to_vec(),
            timeout: (request.timeout_ms > 0)
                .then(|| std::time::Duration::from_millis(request.timeout_ms)),
            idempotency_key: (!request.idempotency_key.is_empty())
                .then(|| request.idempotency_key.to_string()),
        }
    }
}

impl HookError {
    fn into_ffi(self) -> FfiError {
        FfiError {
            status: self.class.status(),
            message: self.message.into(),
        }
    }
}

impl ErrorClass {
    /// The class of an error that crossed the boundary with `status`.
    pub fn from_status(status: u16) -> ErrorClass {
        match status {
            401 => ErrorClass::Unauthorized,
            403 => ErrorClass::Forbidden,
            400..=499 => ErrorClass::BadRequest,
            _ => ErrorClass::Internal,
        }
    }
}

/// Lends `implementation` to plugin code as its host.
pub fn host_ref<T: HostFfi>(implementation: &T) -> HostRef<'_> {
    HostFfi_TO::from_ptr(RRef::new(implementation), sabi_trait::TD_Opaque)
}

impl<'a> Host<'a> {
    pub(crate) fn from_ffi(inner: HostRef<'a>) -> Host<'a> {
        Host { inner }
    }

    pub(crate) fn request_ffi(&self, request: HttpRequest) -> Result<HttpResponse, String> {
        let ffi = FfiHttpRequest {
            method: request.method.into(),
            url: request.url.into(),
            headers: pairs_to_ffi(request.headers),
            body: request.body.into(),
            timeout_ms: request.timeout.as_millis().min(u64::MAX as u128) as u64,
        };
        match self.inner.http_request(&ffi) {
            RResult::ROk(response) => Ok(HttpResponse {
                status: response.status,
                headers: pairs_from_ffi(&response.headers),
                body: response.body.to_vec(),
            }),
            RResult::RErr(e) => Err(e.to_string()),
        }
    }

    pub(crate) fn log_ffi(&self, level: LogLevel, message: &str) {
        self.inner.log(level as u8, message.into());
    }

    pub(crate) fn polling_sources_ffi(&self) -> Vec<String> {
        self.inner
            .polling_sources()
            .into_iter()
            .map(|n| n.into_string())
            .collect()
    }

    pub(crate) fn force_poll_ffi(&self, names: &[String]) {
        let names: RVec<RString> = names.iter().map(|n| RString::from(n.as_str())).collect();
        self.inner.force_poll(names.as_rslice());
    }
}

impl HttpRequest {
    /// Copies an envelope into the SDK's type (host side).
    pub fn from_ffi(request: &FfiHttpRequest) -> HttpRequest {
        HttpRequest {
            method: request.method.to_string(),
            url: request.url.to_string(),
            headers: pairs_from_ffi(&request.headers),
            body: request.body.to_vec(),
            timeout: std::time::Duration::from_millis(request.timeout_ms),
        }
    }
}

impl HttpResponse {
    /// Packs the response into its envelope (host side).
    pub fn into_ffi(self) -> FfiHttpResponse {
        FfiHttpResponse {
            status: self.status,
            headers: pairs_to_ffi(self.headers),
            body: self.body.into(),
        }
    }
}

impl LogLevel {
    /// The level of a log call that crossed the boundary.
    pub fn from_u8(level: u8) -> LogLevel {
        match level {
            0 => LogLevel::Error,
            1 => LogLevel::Warn,
            2 => LogLevel::Info,
            _ => LogLevel::Debug,
        }
    }
}

/// Builds the library header static; the export macro calls this in a `static`.
#[doc(hidden)]
pub const fn library_header(
    loader: extern "C" fn() -> abi_stable::library::RootModuleResult,
) -> abi_stable::library::LibHeader {
    // SAFETY: `loader` returns the root module of type `PluginModRef`, which is the
    // type named here; this is what `#[export_root_module]` generates.
    unsafe {
        abi_stable::library::LibHeader::from_constructor::<PluginModRef>(
            loader,
            abi_stable::library::CheckTypeLayout::Yes,
        )
    }
}

/// Calls the plugin's module builder under abi_stable's guard.
#[doc(hidden)]
pub fn call_module_loader(build: fn() -> PluginModRef) -> abi_stable::library::RootModuleResult {
    abi_stable::library::__call_root_module_loader(build)
}

/// Leaks a module description into the prefix reference the host reads.
#[doc(hidden)]
pub fn leak_module(module: PluginModExt) -> PluginModRef {
    use abi_stable::prefix_type::PrefixTypeTrait;
    let extended: PluginModExtRef = module.leak_into_prefix();
    // SAFETY: the inverse of `PluginModRef::extended`: the prefixes are the
    // same fields, in the same order and types.
    PluginModRef(unsafe { extended.0.cast() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_abi_stable_checks_is_the_abi_version() {
        let numbers = abi_stable::sabi_types::VersionNumber::new(ABI_VERSION_STRINGS).unwrap();
        assert_eq!(
            (numbers.major, numbers.minor),
            (crate::ABI_MAJOR, crate::ABI_MINOR)
        );
        assert_eq!(
            crate::ABI_VERSION,
            format!("{}.{}", crate::ABI_MAJOR, crate::ABI_MINOR)
        );
    }

    #[test]
    fn exported_symbol_is_the_one_abi_stable_looks_up() {
        assert_eq!(
            ROOT_MODULE_SYMBOL,
            abi_stable::library::ROOT_MODULE_LOADER_NAME
        );
    }
}
