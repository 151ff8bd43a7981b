//! A library that claims the current plugin API version but whose root module
//! has another layout, so the master must refuse it as a layout mismatch.

use abi_stable::{
    declare_root_module_statics, export_root_module, library::RootModule,
    prefix_type::PrefixTypeTrait, sabi_types::VersionStrings, StableAbi,
};

#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = WrongModRef)))]
pub struct WrongMod {
    #[sabi(last_prefix_field)]
    pub answer: extern "C" fn() -> u32,
}

impl RootModule for WrongModRef {
    declare_root_module_statics! {WrongModRef}
    const BASE_NAME: &'static str = "buildmaster_plugin";
    const NAME: &'static str = "buildmaster_plugin";
    const VERSION_STRINGS: VersionStrings = buildmaster_plugin_api::boundary::ABI_VERSION_STRINGS;
}

extern "C" fn answer() -> u32 {
    42
}

#[export_root_module]
pub fn get_library() -> WrongModRef {
    WrongMod { answer }.leak_into_prefix()
}
