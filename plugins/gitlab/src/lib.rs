//! The `gitlab` dialect: GitLab's project webhooks.
//!
//! * **Push** and **tag push** events (`object_kind` `push`/`tag_push`, or the
//!   header `X-Gitlab-Event: Push Hook` from old GitLab versions): one change per
//!   commit on a `refs/heads/…` or `refs/tags/…` ref, commits marked
//!   `distinct: false` skipped. The category and the `event` property are the event
//!   name as received.
//! * **Merge request** events: one change for the last commit, on the target
//!   branch, when the merge request is opened, reopened, or updated with new
//!   commits; closed, merged and approved ones and other updates give none.
//! * **Note** (comment) events on a merge request: the same change, with category
//!   `note` and the comment in the `comments` property. Other notes give none.
//!
//! Any other event is accepted with no change. The body is always read as JSON.
//!
//! Options:
//! * `secret`: the secret token configured in GitLab; every request must then
//!   carry it in `X-Gitlab-Token` (compared in constant time) or gets 400.
//! * `codebase`: the codebase of every change. A `codebase` query argument
//!   (`/change_hook/gitlab?codebase=…`) takes precedence over it.

mod merge_request;
mod options;
mod push;

use buildmaster_plugin_api::payload::Field;
use buildmaster_plugin_api::{
    export_plugin, Change, Dialect, HookError, HookOutcome, Host, Request,
};
use serde_json::Value;

use options::Options;

/// The `gitlab` dialect.
pub struct GitLab {
    options: Options,
}

/// What every change of one request shares.
struct Delivery<'a> {
    /// The event name as received: `push`, `Push Hook`, `merge_request`, …
    event: &'a str,
    codebase: Option<String>,
}

impl Delivery<'_> {
    /// A change with the fields every GitLab change has.
    fn change(&self) -> Change {
        let mut properties = serde_json::Map::new();
        properties.insert("event".into(), Value::from(self.event));
        Change {
            category: Some(self.event.to_string()),
            properties,
            codebase: self.codebase.clone(),
            src: Some("git".into()),
            ..Change::default()
        }
    }
}

impl GitLab {
    fn check_token(&self, request: &Request) -> Result<(), HookError> {
        let Some(secrets) = &self.options.secret else {
            return Ok(());
        };
        // Buildbot answers a bad or missing token with 400, not 401.
        match request.header("X-Gitlab-Token") {
            None => Err(HookError::bad_request(
                "Invalid secret: the X-Gitlab-Token header is missing",
            )),
            Some(token) if secrets.matches(token.as_bytes()) => Ok(()),
            Some(_) => Err(HookError::bad_request(
                "Invalid secret: X-Gitlab-Token does not match",
            )),
        }
    }
}

impl Dialect for GitLab {
    type Options = Options;

    fn new(_name: &str, options: Options) -> Result<Self, String> {
        Ok(GitLab { options })
    }

    fn handle(&self, request: &Request, host: &Host<'_>) -> Result<HookOutcome, HookError> {
        self.check_token(request)?;
        let payload: Value = serde_json::from_slice(&request.body)
            .map_err(|e| HookError::bad_request(format!("Error loading JSON: {e}")))?;
        let payload = Field::root(&payload)?;
        // Newer GitLab versions name the event in the payload too.
        let event = match payload.value().get("object_kind") {
            Some(kind) => kind.as_str(),
            None => request.header("X-Gitlab-Event"),
        };
        let delivery = Delivery {
            event: event.unwrap_or_default(),
            codebase: request
                .args()
                .first("codebase")
                .map(str::to_string)
                .or_else(|| self.options.codebase.clone()),
        };
        let changes = match delivery.event {
            "push" | "tag_push" | "Push Hook" => push::changes(&payload, &delivery)?,
            "merge_request" => merge_request::changes(&payload, &delivery)?,
            "note" => merge_request::note_changes(&payload, &delivery)?,
            other => {
                host.debug(&format!("ignoring GitLab event {other:?}"));
                Vec::new()
            }
        };
        Ok(changes.into())
    }
}

export_plugin! {
    name: "gitlab",
    version: env!("CARGO_PKG_VERSION"),
    dialects: { "gitlab" => GitLab },
}

#[cfg(test)]
mod tests;
