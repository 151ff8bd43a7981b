//! Push and tag-push events: one change per new commit.

use buildmaster_plugin_api::payload::{truthy, Field};
use buildmaster_plugin_api::{Change, HookError};

use crate::Delivery;

pub fn changes(payload: &Field<'_>, delivery: &Delivery<'_>) -> Result<Vec<Change>, HookError> {
    let refname = payload.text("ref")?;
    let repository = payload.get("repository")?;
    let project = repository.text("name")?;
    // The SSH-style clone URL (`git@host:group/project.git`), as Buildbot uses.
    let url = repository.text("url")?;
    let branch = match refname
        .strip_prefix("refs/heads/")
        .or_else(|| refname.strip_prefix("refs/tags/"))
    {
        Some(name) if !name.is_empty() => name,
        _ => return Ok(Vec::new()),
    };
    // GitLab's own payloads lack `deleted` (a deleted branch comes with no
    // commits), but senders imitating GitHub's set it.
    if payload.value().get("deleted").is_some_and(truthy) {
        return Ok(Vec::new());
    }
    let mut changes = Vec::new();
    for commit in payload.list("commits")? {
        // A commit already on another branch of the repository is not new.
        if !commit.value().get("distinct").is_none_or(truthy) {
            continue;
        }
        let author = commit.get("author")?;
        let mut files = Vec::new();
        for kind in ["added", "modified", "removed"] {
            if let Some(list) = commit.opt(kind)? {
                files.extend(list.strings()?);
            }
        }
        changes.push(Change {
            author: Some(format!(
                "{} <{}>",
                author.text("name")?,
                author.text("email")?
            )),
            comments: Some(commit.text("message")?.to_string()),
            files,
            revision: Some(commit.text("id")?.to_string()),
            when_timestamp: Some(commit.get("timestamp")?.as_timestamp()?),
            branch: Some(branch.to_string()),
            revlink: Some(commit.text("url")?.to_string()),
            repository: url.to_string(),
            project: project.to_string(),
            ..delivery.change()
        });
    }
    Ok(changes)
}
