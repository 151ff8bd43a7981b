//! The `poller` dialect: asks the master's polling change sources to poll now,
//! e.g. from a repository's push webhook, instead of waiting for the next
//! interval. It records no change itself; the pollers do when they find one.
//!
//! Every `poller` argument (query string or form field; it may repeat) names a
//! source to poll. Without one, every eligible source polls. A requested name that
//! is not an eligible polling source is refused with 400
//! `Could not find pollers: <names>` and then nothing polls.
//!
//! Option `allowed`: a list of source names; only these are eligible. Without it,
//! every polling change source is.

use buildmaster_plugin_api::{export_plugin, Dialect, HookError, HookOutcome, Host, Request};
use serde_json::Value;

/// The `poller` dialect.
pub struct Poller {
    /// `None`: every polling source may be polled.
    allowed: Option<Vec<String>>,
}

impl Dialect for Poller {
    fn new(_name: &str, config: &Value) -> Result<Self, String> {
        let empty = serde_json::Map::new();
        let table = match config {
            Value::Object(table) => table,
            // `poller = true`: enabled without options.
            Value::Null | Value::Bool(true) => &empty,
            _ => return Err("the poller options must be a table".into()),
        };
        if let Some(unknown) = table.keys().find(|k| *k != "allowed") {
            return Err(format!("unknown option '{unknown}' (known: allowed)"));
        }
        let allowed = table.get("allowed").map(names).transpose()?;
        Ok(Poller { allowed })
    }

    fn handle(&self, request: &Request, host: &Host<'_>) -> Result<HookOutcome, HookError> {
        let args = request.args();
        let requested = args.all("poller");
        let eligible: Vec<String> = host
            .polling_sources()
            .into_iter()
            .filter(|name| self.allows(name))
            .collect();
        let to_poll: Vec<String> = if args.contains("poller") {
            let mut missing: Vec<&str> = Vec::new();
            for name in requested {
                if !eligible.contains(name) && !missing.contains(&name.as_str()) {
                    missing.push(name);
                }
            }
            if !missing.is_empty() {
                return Err(HookError::bad_request(format!(
                    "Could not find pollers: {}",
                    missing.join(",")
                )));
            }
            eligible
                .into_iter()
                .filter(|name| requested.contains(name))
                .collect()
        } else {
            eligible
        };
        if !to_poll.is_empty() {
            host.force_poll(&to_poll);
        }
        Ok(HookOutcome::default())
    }
}

impl Poller {
    fn allows(&self, name: &str) -> bool {
        self.allowed
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|a| a == name))
    }
}

/// The `allowed` option: a list of names.
fn names(value: &Value) -> Result<Vec<String>, String> {
    let not_a_list = || "option 'allowed' must be a list of change source names".to_string();
    value
        .as_array()
        .ok_or_else(not_a_list)?
        .iter()
        .map(|name| name.as_str().map(str::to_string).ok_or_else(not_a_list))
        .collect()
}

export_plugin! {
    name: "poller",
    version: env!("CARGO_PKG_VERSION"),
    dialects: { "poller" => Poller },
    reporters: {},
}

#[cfg(test)]
mod tests;
