//! The `github` dialect: GitHub webhooks (`/change_hook/github`) turned into
//! changes, as Buildbot's GitHub hook does.
//!
//! Events (`X-GitHub-Event`):
//! * `push`: one change per pushed commit of a branch (`refs/heads/…`) or tag
//!   (`refs/tags/…`, category `tag`); a newly created branch or tag gives its head
//!   commit. Deletions, other refs and pushes whose head commit message matches a
//!   skip pattern give no change.
//! * `pull_request`: one change (category `pull`, branch
//!   `refs/pull/<number>/<pullrequest_ref>`) for the actions `opened`, `reopened`
//!   and `synchronize`; the head commit message (for the skip patterns) and the
//!   changed files are read from the GitHub API through the master.
//! * `ping` and `workflow_run`: accepted, no change. Any other event is refused.
//!
//! The payload is the JSON body (`application/json`, parameters allowed) or the
//! `payload` field of a form-encoded body.
//!
//! Options:
//! * `secret`: a string, or a list of strings (any of them signs, for rotation).
//!   When set, every request must be signed: `X-Hub-Signature-256` (HMAC-SHA256,
//!   preferred) or `X-Hub-Signature` (HMAC-SHA1).
//! * `strict` (default `false`): signatures are required whenever `secret` is
//!   set, whatever `strict` says; `strict` without `secret` is a configuration
//!   error.
//! * `codebase`: the codebase of every change.
//! * `github_property_whitelist`: glob patterns (`*` also matches dots) of payload
//!   leaves to copy into `github.<path>` properties; default none.
//! * `skips`: regular expressions searched in the head commit message; default
//!   `\[ *ci *skip *\]` and `\[ *skip *ci *\]`.
//! * `github_api_endpoint` (default `https://api.github.com`) and `token` (sent as
//!   `Authorization: token <token>`): the API used for pull requests.
//! * `pullrequest_ref` (default `merge`): the last part of a pull request's
//!   branch; `head` builds the pull request's own head instead of its merge.
//! * `debug` (default `false`): log every event and payload received.
//! * `verify`: accepted as `true` only; certificates are always checked.

mod api;
mod body;
mod config;
mod pull_request;
mod push;
mod signature;

use buildmaster_plugin_api::payload::Field;
use buildmaster_plugin_api::{export_plugin, Dialect, HookError, HookOutcome, Host, Request};

use crate::config::{Config, Options};

/// The `github` dialect.
pub struct GitHub {
    config: Config,
}

impl Dialect for GitHub {
    type Options = Options;

    fn new(_name: &str, options: Options) -> Result<Self, String> {
        Ok(GitHub {
            config: Config::new(options)?,
        })
    }

    fn handle(&self, request: &Request, host: &Host<'_>) -> Result<HookOutcome, HookError> {
        if let Some(secrets) = &self.config.secrets {
            signature::verify(request, secrets)?;
        }
        let payload = body::decode(request)?;
        let event = request.header("X-GitHub-Event");
        if self.config.debug {
            host.info(&format!(
                "X-GitHub-Event: {}, payload: {payload}",
                event.unwrap_or("(none)")
            ));
        }
        let changes = match event {
            Some("ping" | "workflow_run") => Vec::new(),
            Some("push") => push::changes(&Field::root(&payload)?, &self.config)?,
            Some("pull_request") => {
                pull_request::changes(&Field::root(&payload)?, &self.config, host)?
            }
            Some(other) => return Err(HookError::bad_request(format!("Unknown event: {other}"))),
            None => {
                return Err(HookError::bad_request(
                    "Unknown event: the X-GitHub-Event header is missing",
                ))
            }
        };
        Ok(changes.into())
    }
}

export_plugin! {
    name: "github",
    version: env!("CARGO_PKG_VERSION"),
    dialects: { "github" => GitHub },
}

#[cfg(test)]
mod tests;
