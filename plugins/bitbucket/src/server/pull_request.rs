//! `pullrequest:*`: one change per event.

use buildmaster_plugin_api::payload::Field;
use buildmaster_plugin_api::{Change, HookError};
use serde_json::Value;

use super::Origin;
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
        PullRequestAction::Rejected => format!("refs/heads/{}", pr.text("fromRef.branch.name")?),
        PullRequestAction::Fulfilled => format!("refs/heads/{}", pr.text("toRef.branch.name")?),
    };
    let revision = pr.text("fromRef.commit.hash")?;
    let link = pr.text("link")?;
    let origin = Origin::of(payload)?;

    let mut properties = serde_json::Map::new();
    properties.insert("pullrequesturl".into(), Value::from(link));
    properties.extend(options.property_whitelist.select("bitbucket", pr.value()));
    Ok(Change {
        author: Some(origin.author),
        comments: Some(format!("Bitbucket Server Pull Request #{number}")),
        revision: Some(revision.to_string()),
        branch: Some(branch),
        category: Some(action.category().to_string()),
        revlink: Some(link.to_string()),
        properties,
        repository: origin.repository,
        project: origin.project,
        codebase: options.codebase.clone(),
        src: Some(origin.src),
        ..Change::default()
    })
}
