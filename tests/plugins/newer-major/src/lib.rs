//! A library built against a newer major plugin API (2.0): same module name, newer
//! version, so the master must refuse it by version.

use abi_stable::{
    declare_root_module_statics, export_root_module, library::RootModule,
    prefix_type::PrefixTypeTrait, sabi_types::VersionStrings, std_types::RStr, StableAbi,
};

#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = OldModRef)))]
pub struct OldMod {
    #[sabi(last_prefix_field)]
    pub plugin_name: RStr<'static>,
}

impl RootModule for OldModRef {
    declare_root_module_statics! {OldModRef}
    const BASE_NAME: &'static str = "buildmaster_plugin";
    const NAME: &'static str = "buildmaster_plugin";
    const VERSION_STRINGS: VersionStrings = VersionStrings::new("2.0.0");
}

#[export_root_module]
pub fn get_library() -> OldModRef {
    OldMod {
        plugin_name: RStr::from_str("newer-major"),
    }
    .leak_into_prefix()
}
