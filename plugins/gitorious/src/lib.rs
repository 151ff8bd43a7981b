//! The `gitorious` dialect: Gitorious's web hook.
//!
//! Gitorious posts a form whose field `payload` holds the push as JSON. Each
//! commit gives one change on the pushed branch (Gitorious sends the bare branch
//! name as `ref`); Gitorious sends no file lists, so changes have none. A push
//! whose `after` is all zeros deleted the branch and gives no change.
//!
//! The dialect takes no options.

use buildmaster_plugin_api::options::NoOptions;
use buildmaster_plugin_api::payload::{self, Field};
use buildmaster_plugin_api::{
    export_plugin, Change, Dialect, HookError, HookOutcome, Host, Request,
};

/// The `gitorious` dialect.
pub struct Gitorious;

impl Dialect for Gitorious {
    type Options = NoOptions;

    fn new(_name: &str, _options: NoOptions) -> Result<Self, String> {
        Ok(Gitorious)
    }

    fn handle(&self, request: &Request, _host: &Host<'_>) -> Result<HookOutcome, HookError> {
        let payload = payload::from_form(&request.args())?;
        Ok(changes(&Field::root(&payload)?)?.into())
    }
}

fn changes(payload: &Field<'_>) -> Result<Vec<Change>, HookError> {
    let repository = payload.get("repository")?.text("url")?;
    let project = payload.get("project")?.text("name")?;
    let branch = payload.text("ref")?;
    if payload.text("after")?.bytes().all(|b| b == b'0') {
        return Ok(Vec::new());
    }
    let mut changes = Vec::new();
    for commit in payload.list("commits")? {
        let author = commit.get("author")?;
        changes.push(Change {
            author: Some(format!(
                "{} <{}>",
                author.text("name")?,
                author.text("email")?
            )),
            comments: Some(commit.text("message")?.to_string()),
            revision: Some(commit.text("id")?.to_string()),
            when_timestamp: Some(commit.get("timestamp")?.as_timestamp()?),
            branch: Some(branch.to_string()),
            revlink: Some(commit.text("url")?.to_string()),
            repository: repository.to_string(),
            project: project.to_string(),
            src: Some("git".into()),
            ..Change::default()
        });
    }
    Ok(changes)
}

export_plugin! {
    name: "gitorious",
    version: env!("CARGO_PKG_VERSION"),
    dialects: { "gitorious" => Gitorious },
}

#[cfg(test)]
mod tests;
