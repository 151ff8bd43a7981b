//! A frozen copy of the plugin ABI 1.0 boundary of `buildmaster-plugin-api`:
//! the types that cross between the master and a library, as they were before
//! ABI 1.1 appended `sdk_version` and `metadata` to the root module. A library
//! built on it stands for one built before those fields existed; the master
//! must still load it and serve it. Never edit it to follow the real crate.

// `#[sabi_trait]` expands to impls inside constants, which this lint flags.
#![allow(non_local_definitions)]

pub use abi_stable;
use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    sabi_trait,
    sabi_types::{RRef, VersionStrings},
    std_types::{RBox, ROption, RResult, RSlice, RStr, RString, RVec, Tuple2},
    StableAbi,
};

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
    /// A JSON array of change objects (see change).
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

/// The answer to an request.
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
    /// What the reporter wants, as the JSON of wants.
    fn wants(&self) -> RString;

    /// Turns one event (the JSON of an envelope) into outgoing
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

/// The root module every plugin library exports.
///
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

pub const ABI_VERSION_STRINGS: VersionStrings = VersionStrings::new("1.0.0");

impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "buildmaster_plugin";
    const NAME: &'static str = "buildmaster_plugin";
    const VERSION_STRINGS: VersionStrings = ABI_VERSION_STRINGS;
}
