//! The `push` event: one change per pushed commit of a branch or tag.

use buildmaster_plugin_api::payload::{truthy, Field};
use buildmaster_plugin_api::{Change, HookError};
use serde_json::json;

use crate::config::Config;

pub fn changes(payload: &Field<'_>, config: &Config) -> Result<Vec<Change>, HookError> {
    let repository = payload.get("repository")?;
    let repository_url = repository.text("html_url")?;
    let project = repository.text("full_name")?;
    let reference = payload.text("ref")?;

    let (branch, category) = if let Some(tag) = non_empty_suffix(reference, "refs/tags/") {
        (tag, Some("tag"))
    } else if let Some(branch) = non_empty_suffix(reference, "refs/heads/") {
        (branch, None)
    } else {
        return Ok(Vec::new());
    };
    if payload.value().get("deleted").is_some_and(truthy) {
        return Ok(Vec::new());
    }

    // A null head commit has no message to skip on; it is only needed below
    // when the push created the branch or tag.
    let head_commit = payload.opt("head_commit")?;
    if let Some(head) = &head_commit {
        let message = head.opt("message")?.map(|m| m.as_str()).transpose()?;
        if config.skips(message.unwrap_or_default()) {
            return Ok(Vec::new());
        }
    }

    let listed = payload.list("commits")?;
    // A new branch or tag lists only the commits new to the repository, often
    // none: what is built is its head commit.
    let commits = match head_commit {
        Some(head) if payload.value().get("created").is_some_and(truthy) => vec![head],
        _ => listed,
    };

    let properties = config.property_whitelist.select("github", payload.value());
    commits
        .iter()
        .map(|commit| {
            let mut change = Change {
                author: Some(person(commit, "author")?),
                committer: Some(person(commit, "committer")?),
                comments: Some(commit.text("message")?.to_string()),
                files: files(commit)?,
                revision: Some(commit.text("id")?.to_string()),
                when_timestamp: Some(commit.get("timestamp")?.as_timestamp()?),
                branch: Some(branch.to_string()),
                category: category.map(str::to_string),
                revlink: Some(commit.text("url")?.to_string()),
                repository: repository_url.to_string(),
                project: project.to_string(),
                codebase: config.codebase.clone(),
                src: Some("git".into()),
                ..Change::default()
            };
            let distinct = commit
                .opt("distinct")?
                .map_or(json!(true), |d| d.value().clone());
            change.properties.insert("github_distinct".into(), distinct);
            change.properties.insert("event".into(), json!("push"));
            change.properties.extend(properties.clone());
            Ok(change)
        })
        .collect()
}

/// The name after `prefix`, when there is one.
fn non_empty_suffix<'a>(reference: &'a str, prefix: &str) -> Option<&'a str> {
    reference
        .strip_prefix(prefix)
        .filter(|name| !name.is_empty())
}

/// `Name <email>` of the commit's `author` or `committer`.
fn person(commit: &Field<'_>, role: &str) -> Result<String, HookError> {
    let who = commit.get(role)?;
    Ok(format!("{} <{}>", who.text("name")?, who.text("email")?))
}

/// The added, then modified, then removed paths.
fn files(commit: &Field<'_>) -> Result<Vec<String>, HookError> {
    let mut files = Vec::new();
    for kind in ["added", "modified", "removed"] {
        if let Some(list) = commit.opt(kind)? {
            files.extend(list.strings()?);
        }
    }
    Ok(files)
}
