//! Merge-request events, and comments (notes) on merge requests: one change for
//! the merge request's last commit, on its target branch.

use buildmaster_plugin_api::payload::Field;
use buildmaster_plugin_api::{Change, HookError};
use serde_json::Value;

use crate::Delivery;

/// A merge request that was opened, reopened or given new commits.
pub fn changes(payload: &Field<'_>, delivery: &Delivery<'_>) -> Result<Vec<Change>, HookError> {
    let attributes = payload.get("object_attributes")?;
    if matches!(attributes.text("state")?, "closed" | "merged" | "approved") {
        return Ok(Vec::new());
    }
    // An update carries `oldrev` only when commits were pushed; other updates
    // (title, description, labels, …) need no build.
    let new_code = match attributes.text("action")? {
        "open" | "reopen" => true,
        "update" => attributes.value().get("oldrev").is_some(),
        _ => false,
    };
    if !new_code {
        return Ok(Vec::new());
    }
    Ok(vec![change(&attributes, delivery)?])
}

/// A comment: only those on a merge request give a change.
pub fn note_changes(
    payload: &Field<'_>,
    delivery: &Delivery<'_>,
) -> Result<Vec<Change>, HookError> {
    let attributes = payload.get("object_attributes")?;
    let Some(merge_request) = payload.opt("merge_request")? else {
        return Ok(Vec::new());
    };
    let note = attributes.get("note")?.value().clone();
    let mut change = change(&merge_request, delivery)?;
    change.properties.insert("comments".into(), note);
    Ok(vec![change])
}

fn change(merge_request: &Field<'_>, delivery: &Delivery<'_>) -> Result<Change, HookError> {
    let commit = merge_request.get("last_commit")?;
    let author = commit.get("author")?;
    let source = merge_request.get("source")?;
    let target = merge_request.get("target")?;
    let description = match merge_request.opt("description")? {
        Some(description) => description.as_str()?,
        None => "",
    };
    let mut change = Change {
        author: Some(format!(
            "{} <{}>",
            author.text("name")?,
            author.text("email")?
        )),
        comments: Some(format!(
            "MR#{}: {}\n\n{description}",
            merge_request.get("iid")?.to_text()?,
            merge_request.text("title")?,
        )),
        revision: Some(commit.text("id")?.to_string()),
        when_timestamp: Some(commit.get("timestamp")?.as_timestamp()?),
        branch: Some(merge_request.text("target_branch")?.to_string()),
        revlink: Some(merge_request.text("url")?.to_string()),
        repository: target.text("git_http_url")?.to_string(),
        project: target.text("name")?.to_string(),
        ..delivery.change()
    };
    let raw = |field: &Field<'_>, key: &str| -> Result<Value, HookError> {
        Ok(field.get(key)?.value().clone())
    };
    for (name, value) in [
        ("source_branch", raw(merge_request, "source_branch")?),
        (
            "source_project_id",
            raw(merge_request, "source_project_id")?,
        ),
        ("source_repository", raw(&source, "git_http_url")?),
        ("source_git_ssh_url", raw(&source, "git_ssh_url")?),
        ("target_branch", raw(merge_request, "target_branch")?),
        (
            "target_project_id",
            raw(merge_request, "target_project_id")?,
        ),
        ("target_repository", raw(&target, "git_http_url")?),
        ("target_git_ssh_url", raw(&target, "git_ssh_url")?),
    ] {
        change.properties.insert(name.into(), value);
    }
    Ok(change)
}
