//! The `pull_request` event: one change for an opened, reopened or updated
//! (`synchronize`) pull request, on `refs/pull/<number>/<pullrequest_ref>`.

use buildmaster_plugin_api::payload::Field;
use buildmaster_plugin_api::{Change, HookError, Host};
use serde_json::{json, Value};

use crate::api::Api;
use crate::config::Config;

/// The actions that build; every other one (`closed`, `edited`, …) gives nothing.
const BUILT_ACTIONS: [&str; 3] = ["opened", "reopened", "synchronize"];

pub fn changes(
    payload: &Field<'_>,
    config: &Config,
    host: &Host<'_>,
) -> Result<Vec<Change>, HookError> {
    let number = payload.get("number")?.as_i64()?;
    let pull = payload.get("pull_request")?;
    let base = pull.get("base")?;
    let base_ref = base.text("ref")?;
    let commits = pull.get("commits")?.as_i64()?;
    let title = pull.nullable("title")?.map(|t| t.as_str()).transpose()?;
    let body = pull.nullable("body")?.map(|b| b.as_str()).transpose()?;
    let head_sha = pull.get("head")?.text("sha")?;
    let link = pull.get("_links.html")?.text("href")?;
    let repository = payload.get("repository")?;
    let full_name = repository.get("full_name")?;
    let api = Api::new(config, host, full_name.as_str()?)
        .ok_or_else(|| full_name.invalid("an owner/name pair"))?;

    // Buildbot looks the head commit up before it filters on the action, so
    // ignored actions make this call too.
    if let Some(message) = api.commit_message(head_sha)? {
        if config.skips(&message) {
            return Ok(Vec::new());
        }
    }
    let action = payload.value().get("action").and_then(Value::as_str);
    if !action.is_some_and(|a| BUILT_ACTIONS.contains(&a)) {
        return Ok(Vec::new());
    }

    let created_at = pull.get("created_at")?.as_timestamp()?;
    let repository_url = repository.text("html_url")?;
    let project = base.get("repo")?.text("full_name")?;
    let author = payload.get("sender")?.text("login")?;
    let files = api.pull_request_files(number)?;

    let plural = if commits == 1 { "" } else { "s" };
    // A missing title or description reads `None`, as in Buildbot.
    let comments = format!(
        "GitHub Pull Request #{number} ({commits} commit{plural})\n{}\n{}",
        title.unwrap_or("None"),
        body.unwrap_or("None")
    );
    let mut change = Change {
        author: Some(author.to_string()),
        comments: Some(comments),
        files,
        revision: Some(head_sha.to_string()),
        // The pull request's creation time, even for an update.
        when_timestamp: Some(created_at),
        branch: Some(format!("refs/pull/{number}/{}", config.pullrequest_ref)),
        category: Some("pull".into()),
        revlink: Some(link.to_string()),
        repository: repository_url.to_string(),
        project: project.to_string(),
        codebase: config.codebase.clone(),
        src: Some("git".into()),
        ..Change::default()
    };
    change
        .properties
        .insert("pullrequesturl".into(), json!(link));
    change
        .properties
        .insert("event".into(), json!("pull_request"));
    change.properties.insert("basename".into(), json!(base_ref));
    change
        .properties
        .extend(config.property_whitelist.select("github", pull.value()));
    Ok(vec![change])
}
