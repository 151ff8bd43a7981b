//! The two GitHub REST API look-ups a pull request needs, made through the host.

use buildmaster_plugin_api::{HookError, Host};
use serde_json::Value;

use crate::config::Config;

/// A client for one repository, `owner/name`.
pub struct Api<'a, 'h> {
    config: &'a Config,
    host: &'a Host<'h>,
    /// `/repos/<owner>/<name>`, percent-encoded.
    repo_path: String,
}

impl<'a, 'h> Api<'a, 'h> {
    /// `None` when `full_name` is not an `owner/name` pair.
    pub fn new(config: &'a Config, host: &'a Host<'h>, full_name: &str) -> Option<Api<'a, 'h>> {
        let segments: Vec<&str> = full_name.split('/').collect();
        let [owner, name] = segments.as_slice() else {
            return None;
        };
        if [owner, name].iter().any(|s| matches!(**s, "" | "." | "..")) {
            return None;
        }
        Some(Api {
            config,
            host,
            repo_path: format!("/repos/{}/{}", encode(owner), encode(name)),
        })
    }

    /// The message of commit `sha`, or `None` when the API does not give it.
    pub fn commit_message(&self, sha: &str) -> Result<Option<String>, HookError> {
        let commit = self.get(&format!("/commits/{}", encode(sha)))?;
        Ok(commit
            .as_ref()
            .and_then(|c| c.pointer("/commit/message"))
            .and_then(Value::as_str)
            .map(str::to_string))
    }

    /// The paths a pull request touches (a renamed file gives its new and its old
    /// path), from the first page of the API's answer; `[]` when it gives none.
    pub fn pull_request_files(&self, number: i64) -> Result<Vec<String>, HookError> {
        let Some(entries) = self.get(&format!("/pulls/{number}/files"))? else {
            return Ok(Vec::new());
        };
        let Some(entries) = entries.as_array() else {
            self.host
                .warn("GitHub API: the pull request's file list is not a list");
            return Ok(Vec::new());
        };
        let mut files = Vec::new();
        for entry in entries {
            for key in ["filename", "previous_filename"] {
                if let Some(path) = entry.get(key).and_then(Value::as_str) {
                    files.push(path.to_string());
                }
            }
        }
        Ok(files)
    }

    /// `GET <endpoint>/repos/<owner>/<name><path>`: the JSON of a 2xx answer, or
    /// `None` (logged) for an error status or a body that is not JSON. A request
    /// that fails outright is the master's failure (500), so the sender retries.
    fn get(&self, path: &str) -> Result<Option<Value>, HookError> {
        let url = format!("{}{}{path}", self.config.api_endpoint, self.repo_path);
        let authorization = self.config.token.as_ref().map(|t| format!("token {t}"));
        let mut headers = vec![("User-Agent", "Buildbot")];
        if let Some(authorization) = &authorization {
            headers.push(("Authorization", authorization));
        }
        let response = self
            .host
            .http_get(&url, &headers)
            .map_err(|reason| HookError::internal(format!("GET {url} failed: {reason}")))?;
        if !(200..300).contains(&response.status) {
            self.host.warn(&format!(
                "GitHub API: GET {url} answered {}",
                response.status
            ));
            return Ok(None);
        }
        match response.json() {
            Ok(value) => Ok(Some(value)),
            Err(e) => {
                self.host.warn(&format!("GitHub API: GET {url}: {e}"));
                Ok(None)
            }
        }
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so that a
/// payload value stays one path segment.
fn encode(segment: &str) -> String {
    let mut encoded = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::encode;

    #[test]
    fn encoding_keeps_names_and_escapes_the_rest() {
        assert_eq!(encode("buildbot-www_2.x~"), "buildbot-www_2.x~");
        assert_eq!(encode("a/b?c#d e"), "a%2Fb%3Fc%23d%20e");
        assert_eq!(encode("é"), "%C3%A9");
    }
}
