//! `pullrequest:*`: one change per event.
//!
//! Bitbucket Cloud names the branches `source` / `destination` and the web page
//! `links.html.href`; payloads shaped like the Bitbucket Server plug-in's use
//! `fromRef` / `toRef` / `link`. Both are read, the plug-in names first.

use buildmaster_plugin_api::payload::Field;
use buildmaster_plugin_api::{Change, HookError};
use serde_json::Value;

use crate::common::{self, Options, PullRequestAction};

pub fn change(
    payload: &Field,
    action: PullRequestAction,
    options: &Options,
) -> Result<Change, HookError> {
    let pr = payload.get("pullrequest")?;
    let number = common::pull_request_id(&pr)?;
    let branch = match action {
        PullRequestAction::Created | PullRequestAction::Updated => {
            format!("refs/pull-requests/{number}/merge")
        }
        PullRequestAction::Rejected => {
            format!(
                "refs/heads/{}",
                either(&pr, "fromRef", "source", "branch.name")?
            )
        }
        PullRequestAction::Fulfilled => {
            format!(
                "refs/heads/{}",
                either(&pr, "toRef", "destination", "branch.name")?
            )
        }
    };
    let revision = either(&pr, "fromRef", "source", "commit.hash")?;
    let link = match pr.opt("link")? {
        Some(link) => link.as_str()?,
        None => pr.text("links.html.href")?,
    };
    // The actor is who triggered the event; Buildbot credits the change to them.
    let person = match (payload.opt("actor")?, pr.opt("author")?) {
        (Some(actor), _) | (None, Some(actor)) => actor,
        (None, None) => payload.get("actor")?,
    };
    let repository = payload.get("repository")?;

    let mut properties = serde_json::Map::new();
    properties.insert("pullrequesturl".into(), Value::from(link));
    properties.extend(options.property_whitelist.select("bitbucket", pr.value()));
    Ok(Change {
        author: Some(super::author(&person)?),
        comments: Some(format!("Bitbucket Cloud Pull Request #{number}")),
        revision: Some(revision.to_string()),
        branch: Some(branch),
        category: Some(action.category().to_string()),
        revlink: Some(link.to_string()),
        properties,
        repository: repository.text("links.self.href")?.to_string(),
        project: super::project(&repository)?,
        codebase: options.codebase.clone(),
        src: Some(repository.text("scm")?.to_string()),
        ..Change::default()
    })
}

/// The string at `<plugin>.<path>`, or else at `<cloud>.<path>`; an error names
/// the Bitbucket Cloud field.
fn either<'a>(pr: &Field<'a>, plugin: &str, cloud: &str, path: &str) -> Result<&'a str, HookError> {
    match pr.opt(plugin)? {
        Some(side) => side.text(path),
        None => pr.text(&format!("{cloud}.{path}")),
    }
}
