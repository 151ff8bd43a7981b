//! The dialect's options, checked once when the dialect is built.

use buildmaster_plugin_api::options::Secrets;
use serde::de::{Deserializer, Error as _};
use serde::Deserialize;

/// `[www.change_hook_dialects.mattermost]`.
#[derive(Deserialize)]
pub struct Options {
    /// The slash command's token (or several while one is rotated); every
    /// request must carry one of them.
    pub(crate) token: Secrets,
    /// The only channel allowed to run the command; any channel when unset.
    #[serde(default, deserialize_with = "channel")]
    pub(crate) channel: Option<String>,
    /// Prefixed to the repository word to form the change's repository, e.g.
    /// `"git@github.com:example/"`.
    pub(crate) repo_base_url: String,
}

fn channel<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    match String::deserialize(deserializer)? {
        channel if channel.is_empty() => Err(D::Error::custom(
            "must not be empty (leave it out to allow any)",
        )),
        channel => Ok(Some(channel)),
    }
}
