//! `repo:push`: one change per pushed, created or deleted ref.

use buildmaster_plugin_api::payload::Field;
use buildmaster_plugin_api::{Change, HookError};

use crate::common::{self, Options};

pub fn changes(payload: &Field, options: &Options) -> Result<Vec<Change>, HookError> {
    let repository = payload.get("repository")?;
    let project = super::project(&repository)?;
    let api_url = repository.text("links.self.href")?;
    let web_url = repository.text("links.html.href")?;
    let author = super::author(&payload.get("actor")?)?;
    let src = repository.text("scm")?;
    Ok(common::pushed_refs(payload)?
        .into_iter()
        .map(|pushed| Change {
            author: Some(author.clone()),
            comments: Some(format!("Bitbucket Cloud commit {}", pushed.revision)),
            revlink: Some(format!("{web_url}/commits/{}", pushed.revision)),
            revision: Some(pushed.revision),
            branch: pushed.branch,
            category: Some(pushed.category.to_string()),
            repository: api_url.to_string(),
            project: project.clone(),
            codebase: options.codebase.clone(),
            src: Some(src.to_string()),
            ..Change::default()
        })
        .collect())
}
