//! A dialect that panics on every request, and one whose constructor panics.

use buildmaster_plugin_api::{
    export_plugin, serde_json, Dialect, HookError, HookOutcome, Host, Request,
};

pub struct Panicking;

impl Dialect for Panicking {
    fn new(_name: &str, _config: &serde_json::Value) -> Result<Self, String> {
        Ok(Panicking)
    }

    fn handle(&self, _request: &Request, _host: &Host<'_>) -> Result<HookOutcome, HookError> {
        panic!("this dialect always panics")
    }
}

pub struct PanickingConstructor;

impl Dialect for PanickingConstructor {
    fn new(_name: &str, _config: &serde_json::Value) -> Result<Self, String> {
        panic!("this constructor always panics")
    }

    fn handle(&self, _request: &Request, _host: &Host<'_>) -> Result<HookOutcome, HookError> {
        unreachable!("never constructed")
    }
}

export_plugin! {
    name: "panicky",
    version: "0.1.0",
    dialects: { "panicky" => Panicking, "panicky_ctor" => PanickingConstructor },
    reporters: {},
}
