//! The dialect's options, checked once when the dialect is built.

use buildmaster_plugin_api::options::Secrets;
use serde::de::{Deserializer, Error as _};
use serde::Deserialize;

/// `[www.change_hook_dialects.mattermost]` as written; [`Options::check`]
/// requires what must be there, saying what to set.
#[derive(Deserialize)]
pub struct RawOptions {
    #[serde(default)]
    token: Option<Secrets>,
    #[serde(default, deserialize_with = "channel")]
    channel: Option<String>,
    #[serde(default)]
    repo_base_url: Option<String>,
}

/// The dialect's options, checked.
pub(crate) struct Options {
    /// The slash command's token (or several while one is rotated); every
    /// request must carry one of them.
    pub token: Secrets,
    /// The only channel allowed to run the command; any channel when unset.
    pub channel: Option<String>,
    /// Prefixed to the repository word to form the change's repository.
    pub repo_base_url: String,
}

impl Options {
    pub fn check(raw: RawOptions) -> Result<Options, String> {
        Ok(Options {
            token: raw
                .token
                .ok_or("options.token: required: the slash command's token")?,
            channel: raw.channel,
            repo_base_url: raw
                .repo_base_url
                .ok_or("options.repo_base_url: required, e.g. \"git@github.com:example/\"")?,
        })
    }
}

fn channel<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    match String::deserialize(deserializer)? {
        channel if channel.is_empty() => Err(D::Error::custom(
            "must not be empty (leave it out to allow any)",
        )),
        channel => Ok(Some(channel)),
    }
}
