//! The `bitbucket` dialect: Bitbucket's legacy "POST service" (Git and Mercurial
//! repositories).
//!
//! Bitbucket posts a form whose field `payload` holds the push as JSON. Each
//! commit gives one change on its own branch, with the files it touched; the
//! version-control kind of the changes is the repository's `scm` (`git` or `hg`).
//! The `X-Event-Key` header, if any, becomes the `event` property (null without
//! it), and the `project` argument (query or form) the project of every change.
//!
//! The dialect takes no options. For Bitbucket Cloud's webhooks use
//! `bitbucketcloud`.

use buildmaster_plugin_api::options::NoOptions;
use buildmaster_plugin_api::payload::{self, Field};
use buildmaster_plugin_api::{Change, Dialect, HookError, HookOutcome, Host, Request};

/// The `bitbucket` dialect.
pub struct Bitbucket;

impl Dialect for Bitbucket {
    type Options = NoOptions;

    fn new(_name: &str, _options: NoOptions) -> Result<Self, String> {
        Ok(Bitbucket)
    }

    fn handle(&self, request: &Request, _host: &Host<'_>) -> Result<HookOutcome, HookError> {
        let args = request.args();
        let payload = payload::from_form(&args)?;
        let delivery = Delivery {
            project: args.first("project").unwrap_or_default(),
            event: request.header("X-Event-Key"),
        };
        Ok(changes(&Field::root(&payload)?, &delivery)?.into())
    }
}

/// What the request itself contributes to every change.
struct Delivery<'a> {
    project: &'a str,
    event: Option<&'a str>,
}

fn changes(payload: &Field<'_>, delivery: &Delivery<'_>) -> Result<Vec<Change>, HookError> {
    let repository = payload.get("repository")?;
    // `absolute_url` is a path with a trailing slash: `/owner/slug/`.
    let url = format!(
        "{}{}",
        payload.text("canon_url")?,
        repository.text("absolute_url")?
    );
    let scm = repository.text("scm")?;
    let mut changes = Vec::new();
    for commit in payload.list("commits")? {
        let revision = commit.text("raw_node")?;
        let files = commit
            .list("files")?
            .iter()
            .map(|file| Ok(file.text("file")?.to_string()))
            .collect::<Result<_, HookError>>()?;
        let mut properties = serde_json::Map::new();
        properties.insert("event".into(), delivery.event.into());
        changes.push(Change {
            author: Some(commit.text("raw_author")?.to_string()),
            comments: Some(commit.text("message")?.to_string()),
            files,
            revision: Some(revision.to_string()),
            when_timestamp: Some(commit.get("utctimestamp")?.as_timestamp()?),
            branch: Some(commit.text("branch")?.to_string()),
            revlink: Some(format!("{url}commits/{revision}")),
            properties,
            repository: url.clone(),
            project: delivery.project.to_string(),
            src: Some(scm.to_string()),
            ..Change::default()
        });
    }
    Ok(changes)
}

#[cfg(test)]
#[path = "legacy_tests.rs"]
mod tests;
