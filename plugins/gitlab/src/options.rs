//! The options of `[www.change_hook_dialects.gitlab]`.

use buildmaster_plugin_api::options::Secrets;
use serde::Deserialize;

/// The dialect's configuration.
#[derive(Debug, Default, Deserialize)]
pub struct Options {
    /// The values `X-Gitlab-Token` may carry (several while one is rotated), if any.
    #[serde(default)]
    pub secret: Option<Secrets>,
    /// The codebase of every change unless the request names one.
    #[serde(default)]
    pub codebase: Option<String>,
}
