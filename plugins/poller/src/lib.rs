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
use serde::Deserialize;

/// The `poller` dialect.
pub struct Poller {
    /// `None`: every polling source may be polled.
    allowed: Option<Vec<String>>,
}

/// `[www.change_hook_dialects.poller]`.
#[derive(Deserialize)]
pub struct Options {
    /// The change sources that may be polled; all when unset.
    #[serde(default)]
    allowed: Option<Vec<String>>,
}

impl Dialect for Poller {
    type Options = Options;

    fn new(_name: &str, options: Options) -> Result<Self, String> {
        Ok(Poller {
            allowed: options.allowed,
        })
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

export_plugin! {
    name: "poller",
    version: env!("CARGO_PKG_VERSION"),
    dialects: { "poller" => Poller },
}

#[cfg(test)]
mod tests;
