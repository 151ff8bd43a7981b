//! A dialect that panics on every request, and one whose constructor panics.

use buildmaster_plugin_api::options::NoOptions;
use buildmaster_plugin_api::{export_plugin, Dialect, HookError, HookOutcome, Host, Request};

pub struct Panicking;

impl Dialect for Panicking {
    type Options = NoOptions;

    fn new(_name: &str, _options: NoOptions) -> Result<Self, String> {
        Ok(Panicking)
    }

    fn handle(&self, _request: &Request, _host: &Host<'_>) -> Result<HookOutcome, HookError> {
        panic!("this dialect always panics")
    }
}

pub struct PanickingConstructor;

impl Dialect for PanickingConstructor {
    type Options = NoOptions;

    fn new(_name: &str, _options: NoOptions) -> Result<Self, String> {
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
}
