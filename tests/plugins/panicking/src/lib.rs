//! A dialect that panics on every request, one whose constructor panics, and
//! a reporter that panics on build number 1, fails on build 2 and posts
//! `{"number": N}` to its `url` for the later ones.

use buildmaster_plugin_api::options::NoOptions;
use buildmaster_plugin_api::reporter::Envelope;
use buildmaster_plugin_api::serde::Deserialize;
use buildmaster_plugin_api::serde_json::json;
use buildmaster_plugin_api::{
    export_plugin, Dialect, HookError, HookOutcome, Host, OutgoingRequest, Reporter, Request, Wants,
};

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

#[derive(Deserialize)]
#[serde(crate = "buildmaster_plugin_api::serde")]
pub struct ReporterOptions {
    url: String,
}

pub struct PanickingReporter {
    url: String,
}

impl Reporter for PanickingReporter {
    type Options = ReporterOptions;

    fn new(_name: &str, options: ReporterOptions) -> Result<Self, String> {
        Ok(PanickingReporter { url: options.url })
    }

    fn wants(&self) -> Wants {
        Wants::default()
    }

    fn render(
        &self,
        envelope: &Envelope,
        _host: &Host<'_>,
    ) -> Result<Vec<OutgoingRequest>, String> {
        let number = envelope.build()?["number"].as_i64().unwrap_or_default();
        match number {
            1 => panic!("this reporter panics on build 1"),
            2 => Err("this reporter fails on build 2".into()),
            _ => Ok(vec![OutgoingRequest::post_json(
                &self.url,
                &json!({ "number": number }),
            )]),
        }
    }
}

export_plugin! {
    name: "panicky",
    version: "0.1.0",
    dialects: { "panicky" => Panicking, "panicky_ctor" => PanickingConstructor },
    reporters: { "panicky_reporter" => PanickingReporter },
}
