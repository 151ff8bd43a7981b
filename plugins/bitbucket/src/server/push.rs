//! `repo:refs_changed`: one change per pushed, created or deleted ref.

use buildmaster_plugin_api::payload::Field;
use buildmaster_plugin_api::{Change, HookError};

use super::Origin;
use crate::common::{self, Options};

pub fn changes(payload: &Field, options: &Options) -> Result<Vec<Change>, HookError> {
    // Bitbucket Server's built-in webhooks send `changes[]` with `ref` and
    // `toHash`; this dialect reads the plug-in's `push.changes[]`.
    if payload.opt("push")?.is_none() && payload.opt("changes")?.is_some() {
        return Err(HookError::bad_request(
            "the payload lacks 'push.changes': Bitbucket Server's built-in webhook payload is \
             not supported, only the bitbucket-webhooks plug-in's",
        ));
    }
    let origin = Origin::of(payload)?;
    // The repository URL normally ends in `/`; a link without `browse` does not.
    let separator = if origin.repository.ends_with('/') {
        ""
    } else {
        "/"
    };
    Ok(common::pushed_refs(payload)?
        .into_iter()
        .map(|pushed| Change {
            author: Some(origin.author.clone()),
            comments: Some(format!("Bitbucket Server commit {}", pushed.revision)),
            revlink: Some(format!(
                "{}{separator}commits/{}",
                origin.repository, pushed.revision
            )),
            revision: Some(pushed.revision),
            branch: pushed.branch,
            category: Some(pushed.category.to_string()),
            repository: origin.repository.clone(),
            project: origin.project.clone(),
            codebase: options.codebase.clone(),
            src: Some(origin.src.clone()),
            ..Change::default()
        })
        .collect())
}
