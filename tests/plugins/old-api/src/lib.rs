//! A library built against an older plugin API (0.0.1): same module name, older
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
    const VERSION_STRINGS: VersionStrings = VersionStrings::new("0.0.1");
}

#[export_root_module]
pub fn get_library() -> OldModRef {
    OldMod {
        plugin_name: RStr::from_str("old"),
    }
    .leak_into_prefix()
}
