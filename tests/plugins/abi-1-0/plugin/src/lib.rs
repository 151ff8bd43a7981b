//! A dialect `abi10` built on the frozen ABI 1.0 boundary, without the SDK's
//! conveniences: every request stores one change whose comment says so, and
//! whose author is the `who` query argument.

#![allow(non_local_definitions)]

use buildmaster_plugin_api::abi_stable::{
    export_root_module,
    prefix_type::PrefixTypeTrait,
    sabi_trait::TD_Opaque,
    std_types::{RResult, RSlice, RStr, RString},
};
use buildmaster_plugin_api::{
    DialectBox, DialectFfi, DialectFfi_TO, FfiError, FfiHookResult, FfiRequest, HostRef, PluginMod,
    PluginModRef, ReporterBox,
};

struct Abi10;

impl DialectFfi for Abi10 {
    fn handle(&self, request: &FfiRequest, _host: HostRef<'_>) -> RResult<FfiHookResult, FfiError> {
        let who = request
            .query
            .iter()
            .find(|pair| pair.0.as_str() == "who")
            .map_or("nobody", |pair| pair.1.as_str());
        let change = format!(
            r#"[{{"author": "{who}", "committer": null, "comments": "handled by a plugin built for ABI 1.0",
                "files": [], "revision": null, "when_timestamp": null, "branch": null, "category": null,
                "revlink": "", "properties": {{}}, "repository": "", "project": "", "codebase": null,
                "src": null}}]"#
        );
        RResult::ROk(FfiHookResult {
            changes_json: change.into(),
            response: None.into(),
        })
    }
}

extern "C" fn new_dialect(
    kind: RStr<'_>,
    _name: RStr<'_>,
    _options: RStr<'_>,
) -> RResult<DialectBox, FfiError> {
    if kind.as_str() != "abi10" {
        return RResult::RErr(FfiError {
            status: 500,
            message: RString::from("no such dialect"),
        });
    }
    RResult::ROk(DialectFfi_TO::from_value(Abi10, TD_Opaque))
}

extern "C" fn new_reporter(
    _kind: RStr<'_>,
    _name: RStr<'_>,
    _options: RStr<'_>,
) -> RResult<ReporterBox, FfiError> {
    RResult::RErr(FfiError {
        status: 500,
        message: RString::from("no reporters"),
    })
}

static DIALECTS: &[RStr<'static>] = &[RStr::from_str("abi10")];

#[export_root_module]
pub fn get_library() -> PluginModRef {
    PluginMod {
        abi_version: RStr::from_str("1.0"),
        plugin_name: RStr::from_str("abi10"),
        plugin_version: RStr::from_str("1.0.0"),
        panic_unwinds: cfg!(panic = "unwind"),
        dialects: RSlice::from_slice(DIALECTS),
        reporters: RSlice::from_slice(&[]),
        new_dialect,
        new_reporter,
    }
    .leak_into_prefix()
}
