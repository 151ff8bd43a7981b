//! A library that claims plugin ABI 1.2, a newer minor version than the
//! master's (it may call what the master lacks). Its root module is built by
//! hand on the real boundary types, so it has no metadata section and the
//! master must load it to learn its version.

use buildmaster_plugin_api::boundary::abi_stable::std_types::{RResult, RSlice, RStr};
use buildmaster_plugin_api::boundary::{
    call_module_loader, leak_module, library_header, DialectBox, FfiError, PluginModExt,
    PluginModRef, ReporterBox,
};

fn never<T>() -> RResult<T, FfiError> {
    RResult::RErr(FfiError {
        status: 500,
        message: "never constructed".into(),
    })
}

extern "C" fn new_dialect(_: RStr<'_>, _: RStr<'_>, _: RStr<'_>) -> RResult<DialectBox, FfiError> {
    never()
}

extern "C" fn new_reporter(
    _: RStr<'_>,
    _: RStr<'_>,
    _: RStr<'_>,
) -> RResult<ReporterBox, FfiError> {
    never()
}

static DIALECTS: &[RStr<'static>] = &[RStr::from_str("newer")];

fn module() -> PluginModRef {
    leak_module(PluginModExt {
        abi_version: RStr::from_str("1.2"),
        plugin_name: RStr::from_str("newer"),
        plugin_version: RStr::from_str("1.0.0"),
        panic_unwinds: true,
        dialects: RSlice::from_slice(DIALECTS),
        reporters: RSlice::from_slice(&[]),
        new_dialect,
        new_reporter,
        sdk_version: RStr::from_str("1.2.0"),
        metadata: RSlice::from_slice(&[]),
    })
}

extern "C" fn load() -> buildmaster_plugin_api::boundary::abi_stable::library::RootModuleResult {
    call_module_loader(module)
}

#[export_name = "_1as_0lib_1header_0root_bmodule_bloader"]
static HEADER: buildmaster_plugin_api::boundary::abi_stable::library::LibHeader =
    library_header(load);
