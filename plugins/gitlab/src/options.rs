//! The options of `[www.change_hook_dialects.gitlab]`.

use serde_json::Value;

/// The dialect's configuration.
#[derive(Debug, Default)]
pub struct Options {
    /// The value `X-Gitlab-Token` must carry, if any.
    pub secret: Option<String>,
    /// The codebase of every change unless the request names one.
    pub codebase: Option<String>,
}

impl Options {
    /// Reads the options table. `true` (and null) mean "no options", as in
    /// Buildbot; unknown keys are refused so that a misspelt `secret` cannot
    /// silently leave the hook open.
    pub fn from_json(config: &Value) -> Result<Options, String> {
        let table = match config {
            Value::Object(table) => table,
            Value::Null | Value::Bool(true) => return Ok(Options::default()),
            _ => return Err("the gitlab options must be a table".into()),
        };
        let mut options = Options::default();
        for (key, value) in table {
            let Some(text) = value.as_str() else {
                return Err(format!("gitlab option '{key}' must be a string"));
            };
            match key.as_str() {
                "secret" if text.is_empty() => {
                    return Err("gitlab option 'secret' must not be empty".into())
                }
                "secret" => options.secret = Some(text.to_string()),
                "codebase" => options.codebase = Some(text.to_string()),
                _ => {
                    return Err(format!(
                        "unknown gitlab option '{key}' (the options are 'secret' and 'codebase')"
                    ))
                }
            }
        }
        Ok(options)
    }
}
