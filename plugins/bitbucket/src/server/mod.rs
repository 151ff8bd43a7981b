//! The `bitbucketserver` dialect: changes from Bitbucket Server (Data Center)
//! webhooks in the shape of the "bitbucket-webhooks" plug-in
//! (`POST /change_hook/bitbucketserver`, JSON body, event in `X-Event-Key`).
//!
//! * `repo:refs_changed` (and the older name `repo:push`): one change per entry of
//!   `push.changes`, category `push`, or `ref-deleted` when the branch or tag was
//!   deleted (the change then describes the deleted ref). The branch is
//!   `refs/heads/<name>` or `refs/tags/<name>`.
//! * `pullrequest:created` / `:updated`: one change on
//!   `refs/pull-requests/<id>/merge`; `pullrequest:rejected`: on `fromRef`'s
//!   branch; `pullrequest:fulfilled`: on `toRef`'s branch. Categories
//!   `pull-created`, `pull-updated`, `pull-rejected`, `pull-fulfilled`.
//! * Any other event is refused with 400.
//!
//! The repository is `repository.links.self[0].href` without its trailing
//! `browse`, e.g. `http://host/projects/CI/repos/app/`.
//!
//! Options (all optional):
//!
//! * `codebase`: a string set as the codebase of every change.
//! * `bitbucket_property_whitelist`: glob patterns (`*`, `?`, `[...]`) choosing
//!   which leaves of the `pullrequest` object become `bitbucket.<path>` properties.
//! * `secret`: the webhook's secret, or a list of secrets while one is rotated;
//!   requests must then carry a valid `X-Hub-Signature: sha256=<HMAC-SHA256 of
//!   the body>` header, or get 401.

mod pull_request;
mod push;

use buildmaster_plugin_api::payload::Field;
use buildmaster_plugin_api::{Dialect, HookError, HookOutcome, Host, Request};

use crate::common::{self, Options, PullRequestAction, Wording};

const WORDING: Wording = Wording {
    missing_event: "Header X-Event-Key is not present",
    quote_content_type: true,
};

/// The `bitbucketserver` dialect.
pub struct BitbucketServer {
    options: Options,
}

impl Dialect for BitbucketServer {
    type Options = Options;

    fn new(_name: &str, options: Options) -> Result<Self, String> {
        Ok(BitbucketServer { options })
    }

    fn handle(&self, request: &Request, _host: &Host<'_>) -> Result<HookOutcome, HookError> {
        let event = common::read_event(request, &self.options, &WORDING)?;
        let payload = Field::root(&event.payload)?;
        let changes = match event.key.as_str() {
            "repo:refs_changed" | "repo:push" => push::changes(&payload, &self.options)?,
            key => match PullRequestAction::from_event(key) {
                Some(action) => vec![pull_request::change(&payload, action, &self.options)?],
                None => return Err(common::unknown_event(key)),
            },
        };
        Ok(changes.into())
    }
}

/// What every change of a payload says about where it comes from.
struct Origin {
    /// `<actor.displayName> <<actor.username>>`.
    author: String,
    repository: String,
    project: String,
    src: String,
}

impl Origin {
    fn of(payload: &Field) -> Result<Origin, HookError> {
        let actor = payload.get("actor")?;
        let repository = payload.get("repository")?;
        let links = repository.list("links.self")?;
        let href = links
            .first()
            .ok_or_else(|| HookError::bad_request("'repository.links.self' is an empty list"))?
            .text("href")?;
        Ok(Origin {
            author: format!(
                "{} <{}>",
                actor.text("displayName")?,
                actor.text("username")?
            ),
            // Buildbot strips the characters of "browse" from the right; dropping
            // the word gives the same URL without eating into a repository name.
            repository: href.strip_suffix("browse").unwrap_or(href).to_string(),
            project: repository.text("project.name")?.to_string(),
            src: repository.text("scmId")?.to_string(),
        })
    }
}

#[cfg(test)]
mod tests;
