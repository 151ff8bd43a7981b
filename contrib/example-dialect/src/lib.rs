//! An example change-hook dialect: a minimal JSON push notification.
//!
//! ```text
//! POST /change_hook/example
//! X-Example-Token: <token>
//! Content-Type: application/json
//!
//! {"repository": "https://git.example.org/app.git", "branch": "main",
//!  "commits": [{"id": "1a2b…", "author": "Ada <ada@example.org>",
//!               "message": "Fix it", "files": ["src/main.c"], "timestamp": 1700000000}]}
//! ```
//!
//! One change per commit. Options (`[www.change_hook_dialects.<name>]`):
//! `token` (required header value, compared in constant time; unset: no check),
//! `project` (default: the repository), `greeting` (the answer's text, which
//! shows how a dialect replaces the default `N change found` reply).

use buildmaster_plugin_api::serde_json::{self, Value};
use buildmaster_plugin_api::{
    export_plugin, Change, Dialect, HookError, HookOutcome, Host, Request, Response,
};

pub struct Example {
    token: Option<String>,
    project: Option<String>,
    greeting: Option<String>,
}

fn option(config: &Value, key: &str) -> Result<Option<String>, String> {
    match config.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("'{key}' must be a string")),
    }
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Dialect for Example {
    fn new(_name: &str, config: &Value) -> Result<Self, String> {
        Ok(Example {
            token: option(config, "token")?,
            project: option(config, "project")?,
            greeting: option(config, "greeting")?,
        })
    }

    fn handle(&self, request: &Request, host: &Host<'_>) -> Result<HookOutcome, HookError> {
        if let Some(token) = &self.token {
            let given = request.header("x-example-token").unwrap_or_default();
            if !same(given.as_bytes(), token.as_bytes()) {
                return Err(HookError::forbidden("invalid or missing X-Example-Token"));
            }
        }
        let payload: Value = serde_json::from_slice(&request.body)
            .map_err(|e| HookError::bad_request(format!("body is not JSON: {e}")))?;
        let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
        let repository = text(&payload, "repository")
            .ok_or_else(|| HookError::bad_request("payload lacks 'repository'"))?;
        let branch = text(&payload, "branch");
        let commits = payload
            .get("commits")
            .and_then(Value::as_array)
            .ok_or_else(|| HookError::bad_request("payload lacks 'commits'"))?;
        let mut changes = Vec::new();
        for (i, commit) in commits.iter().enumerate() {
            let revision = text(commit, "id")
                .ok_or_else(|| HookError::bad_request(format!("commits[{i}] lacks 'id'")))?;
            changes.push(Change {
                author: text(commit, "author"),
                comments: text(commit, "message"),
                files: commit
                    .get("files")
                    .and_then(Value::as_array)
                    .map(|f| {
                        f.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
                revision: Some(revision),
                when_timestamp: commit.get("timestamp").and_then(Value::as_i64),
                branch: branch.clone(),
                repository: repository.clone(),
                project: self.project.clone().unwrap_or_else(|| repository.clone()),
                src: Some("git".into()),
                ..Change::default()
            });
        }
        host.info(&format!(
            "{} commit(s) pushed to {repository}",
            changes.len()
        ));
        let response = self
            .greeting
            .as_ref()
            .map(|g| Response::json(&serde_json::json!({"text": g, "changes": changes.len()})));
        Ok(HookOutcome { changes, response })
    }
}

export_plugin! {
    name: "example",
    version: env!("CARGO_PKG_VERSION"),
    dialects: { "example" => Example },
    reporters: {},
}

#[cfg(test)]
mod tests {
    use super::*;
    use buildmaster_plugin_api::testing::{request, run_dialect, TestHost};
    use buildmaster_plugin_api::ErrorClass;
    use serde_json::json;

    const PUSH: &str = r#"{"repository": "r", "branch": "main",
        "commits": [{"id": "a1", "author": "Ada", "message": "m", "files": ["f"], "timestamp": 5}]}"#;

    #[test]
    fn one_change_per_commit() {
        let req = request(
            "POST",
            "/change_hook/example",
            &[("X-Example-Token", "t")],
            PUSH,
        );
        let out =
            run_dialect::<Example>(&json!({"token": "t"}), &req, &TestHost::default()).unwrap();
        assert_eq!(out.changes.len(), 1);
        assert_eq!(out.changes[0].revision.as_deref(), Some("a1"));
        assert_eq!(out.changes[0].project, "r");
        assert!(out.response.is_none());
    }

    #[test]
    fn a_wrong_token_is_forbidden() {
        let req = request(
            "POST",
            "/change_hook/example",
            &[("X-Example-Token", "x")],
            PUSH,
        );
        let err =
            run_dialect::<Example>(&json!({"token": "t"}), &req, &TestHost::default()).unwrap_err();
        assert_eq!(err.class, ErrorClass::Forbidden);
    }
}
