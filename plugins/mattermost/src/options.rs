//! The dialect's options, checked once when the dialect is built.

use serde_json::Value;

const KNOWN: [&str; 3] = ["token", "channel", "repo_base_url"];

/// `[www.change_hook_dialects.mattermost]`.
pub(crate) struct Options {
    /// The slash command's token; every request must carry it.
    pub token: String,
    /// The only channel allowed to run the command; any channel when unset.
    pub channel: Option<String>,
    /// Prefixed to the repository word to form the change's repository.
    pub repo_base_url: String,
}

impl Options {
    pub fn from_json(config: &Value) -> Result<Options, String> {
        let empty = serde_json::Map::new();
        let table = match config {
            Value::Object(table) => table,
            // `mattermost = true`: enabled without options, refused below.
            Value::Null | Value::Bool(true) => &empty,
            _ => return Err("the mattermost options must be a table".into()),
        };
        if let Some(unknown) = table.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(format!(
                "unknown option '{unknown}' (known: {})",
                KNOWN.join(", ")
            ));
        }
        let token = string(table, "token")?
            .filter(|t| !t.is_empty())
            .ok_or("option 'token' is required: the slash command's token")?;
        let channel = match string(table, "channel")? {
            Some(channel) if channel.is_empty() => {
                return Err("option 'channel' must not be empty (leave it out to allow any)".into())
            }
            channel => channel,
        };
        let repo_base_url = string(table, "repo_base_url")?
            .ok_or("option 'repo_base_url' is required, e.g. \"git@github.com:example/\"")?;
        Ok(Options {
            token,
            channel,
            repo_base_url,
        })
    }
}

/// The option `key` as a string, if given. The message never shows the value: it
/// may be the token.
fn string(table: &serde_json::Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match table.get(key) {
        None => Ok(None),
        Some(Value::String(value)) => Ok(Some(value.clone())),
        Some(_) => Err(format!("option '{key}' must be a string")),
    }
}
