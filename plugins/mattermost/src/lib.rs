//! The `mattermost` dialect: a Mattermost slash command starts a build; and
//! the `mattermost` reporter (in `reporter`), which posts results back.
//!
//! A user types `/build <repo> [branch] [revision]`; Mattermost sends the command
//! as a form (`POST`, or `GET` with a query string) and the dialect records one
//! change with author `buildbot`, comments `Build from mattermost`, category
//! `mattermost`, branch (default `master`), revision (default empty: the latest),
//! repository `<repo_base_url><repo>` and project
//! `mattermost_build_<repo>_<branch>`, for a scheduler filtered on them.
//!
//! Options:
//! - `token` (required): the slash command's token. Mattermost sends it in an
//!   `Authorization: Token <token>` header and in the `token` form field; either
//!   may be present, and each one present must match. Compared in constant time,
//!   never echoed.
//! - `channel`: the only channel (`channel_name`) allowed to run the command; any
//!   channel when unset.
//! - `repo_base_url` (required): the prefix of the repository, e.g.
//!   `git@github.com:example/`.
//!
//! Every answer is the JSON a slash command displays to the user who typed it
//! (`{"response_type": "ephemeral", "text": ...}`) with status 200, naming what
//! was queued or saying what is wrong with the command: Mattermost shows the
//! user a reply only when its status is 200, and turns any other into a bare
//! "command failed". A refusal records no change.

mod command;
mod options;
mod reporter;

use buildmaster_plugin_api::{
    export_plugin, Dialect, HookError, HookOutcome, Host, Request, Response,
};

use command::Build;
use options::{Options, RawOptions};
pub use reporter::MattermostReporter;

const USAGE: &str = "usage: /build <repo> [branch] [revision]";

/// The `mattermost` dialect.
pub struct Mattermost {
    options: Options,
}

impl Dialect for Mattermost {
    type Options = RawOptions;

    fn new(_name: &str, options: RawOptions) -> Result<Self, String> {
        Ok(Mattermost {
            options: Options::check(options)?,
        })
    }

    fn handle(&self, request: &Request, host: &Host<'_>) -> Result<HookOutcome, HookError> {
        // Refusals are answered as JSON too, so that Mattermost shows the user why
        // instead of a bare failure.
        Ok(match self.build(request) {
            Ok(build) => HookOutcome {
                changes: vec![build.change(&self.options.repo_base_url)],
                response: Some(ephemeral(&build.summary())),
            },
            Err(message) => {
                host.info(&format!("slash command refused: {message}"));
                HookOutcome {
                    changes: Vec::new(),
                    response: Some(ephemeral(&message)),
                }
            }
        })
    }
}

impl Mattermost {
    /// The build a request asks for, or why it is refused. The checks run in the
    /// order of the original hook: token, channel, text, command; then the
    /// repository name, which ends up in a path and a URL.
    fn build(&self, request: &Request) -> Result<Build, String> {
        let is_form = request.media_type().as_deref() == Some("application/x-www-form-urlencoded");
        if request.method.eq_ignore_ascii_case("POST") && !request.body.is_empty() && !is_form {
            return Err("The slash command must be sent form-encoded \
                        (application/x-www-form-urlencoded)."
                .into());
        }
        let args = request.args();
        if !self.token_matches(request.header("Authorization"), args.first("token")) {
            return Err("Invalid token.".into());
        }
        if let Some(allowed) = &self.options.channel {
            let channel = args.first("channel_name").unwrap_or_default();
            if channel != allowed {
                return Err(format!(
                    "Only channel '{allowed}' may run this command, not '{channel}'."
                ));
            }
        }
        let text = args
            .first("text")
            .ok_or_else(|| format!("The request has no 'text' field; {USAGE}"))?;
        let build = Build::parse(text).ok_or_else(|| format!("Missing parameters; {USAGE}"))?;
        match args.first("command") {
            Some("/build") => {}
            Some(other) => return Err(format!("Unknown command '{other}'; {USAGE}")),
            None => return Err(format!("The request has no 'command' field; {USAGE}")),
        }
        build.check_repo()?;
        Ok(build)
    }

    /// Whether the request carries the slash command's token: in the
    /// `Authorization: Token …` header, in the `token` field, or both, and
    /// then both must match. Another authorization scheme (the Basic
    /// credentials of `change_hook_auth`) carries no token.
    fn token_matches(&self, authorization: Option<&str>, field: Option<&str>) -> bool {
        let header = authorization.and_then(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("token")
                .then_some(token.trim_start())
        });
        // Every token given is compared, so the time taken does not tell which failed.
        let matches: Vec<bool> = [header, field]
            .into_iter()
            .flatten()
            .map(|token| self.options.token.matches(token.as_bytes()))
            .collect();
        !matches.is_empty() && matches.iter().all(|&ok| ok)
    }
}

/// A reply only the user who typed the command sees.
fn ephemeral(text: &str) -> Response {
    Response::json(&serde_json::json!({ "response_type": "ephemeral", "text": text }))
}

export_plugin! {
    name: "mattermost",
    version: env!("CARGO_PKG_VERSION"),
    dialects: { "mattermost" => Mattermost },
    reporters: { "mattermost" => MattermostReporter },
}

#[cfg(test)]
mod tests;
