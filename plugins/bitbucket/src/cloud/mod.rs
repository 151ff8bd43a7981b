//! The `bitbucketcloud` dialect: changes from Bitbucket Cloud webhooks
//! (`POST /change_hook/bitbucketcloud`, JSON body, event in `X-Event-Key`).
//!
//! * `repo:push`: one change per entry of `push.changes`, category `push`, or
//!   `ref-deleted` when the branch or tag was deleted (the change then describes
//!   the deleted ref). The branch is `refs/heads/<name>` or `refs/tags/<name>`.
//! * `pullrequest:created` / `:updated`: one change on
//!   `refs/pull-requests/<id>/merge`; `pullrequest:rejected`: on the source branch;
//!   `pullrequest:fulfilled`: on the destination branch. Categories `pull-created`,
//!   `pull-updated`, `pull-rejected`, `pull-fulfilled`. Both Bitbucket Cloud's own
//!   field names (`source`, `destination`, `links.html.href`) and the older
//!   `fromRef` / `toRef` / `link` names are read.
//! * Any other event is refused with 400.
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
    missing_event: "Header X-Event-Key was not present",
    quote_content_type: false,
};

/// The `bitbucketcloud` dialect.
pub struct BitbucketCloud {
    options: Options,
}

impl Dialect for BitbucketCloud {
    type Options = Options;

    fn new(_name: &str, options: Options) -> Result<Self, String> {
        Ok(BitbucketCloud { options })
    }

    fn handle(&self, request: &Request, _host: &Host<'_>) -> Result<HookOutcome, HookError> {
        let event = common::read_event(request, &self.options, &WORDING)?;
        let payload = Field::root(&event.payload)?;
        let changes = match event.key.as_str() {
            "repo:push" => push::changes(&payload, &self.options)?,
            key => match PullRequestAction::from_event(key) {
                Some(action) => vec![pull_request::change(&payload, action, &self.options)?],
                None => return Err(common::unknown_event(key)),
            },
        };
        Ok(changes.into())
    }
}

/// `<display_name> <<nickname>>` of an actor or pull-request author.
fn author(person: &Field) -> Result<String, HookError> {
    Ok(format!(
        "{} <{}>",
        person.text("display_name")?,
        person.text("nickname")?
    ))
}

/// `repository.project.name`, or `none` for a repository outside any project.
fn project(repository: &Field) -> Result<String, HookError> {
    Ok(match repository.opt("project")? {
        Some(project) => project.text("name")?.to_string(),
        None => "none".to_string(),
    })
}

#[cfg(test)]
mod tests;
