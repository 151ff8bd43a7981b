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
//! One change per commit. Options (`[www.change_hook_dialects.<name>]`; any
//! other key is refused, so a misspelt `token` cannot leave the hook open):
//! * `token`: the value `X-Example-Token` must carry, or a list of values
//!   while one is rotated (compared in constant time); unset: no check.
//! * `project`: the project of every change (default: the repository).
//! * `greeting`: the answer's text, which shows how a dialect replaces the
//!   default `N change found` reply.

use buildmaster_plugin_api::options::Secrets;
use buildmaster_plugin_api::payload::Field;
use buildmaster_plugin_api::serde::Deserialize;
use buildmaster_plugin_api::serde_json::{self, json, Value};
use buildmaster_plugin_api::{
    export_plugin, Change, Dialect, HookError, HookOutcome, Host, Request, Response,
};

/// The options, read by the SDK.
#[derive(Deserialize)]
#[serde(crate = "buildmaster_plugin_api::serde")]
pub struct Options {
    #[serde(default)]
    token: Option<Secrets>,
    #[serde(default)]
    project: Option<String>,
    #[serde(default)]
    greeting: Option<String>,
}

pub struct Example {
    options: Options,
}

impl Dialect for Example {
    type Options = Options;

    fn new(_name: &str, options: Options) -> Result<Self, String> {
        Ok(Example { options })
    }

    fn handle(&self, request: &Request, host: &Host<'_>) -> Result<HookOutcome, HookError> {
        if let Some(tokens) = &self.options.token {
            let given = request.header("X-Example-Token").unwrap_or_default();
            if !tokens.matches(given.as_bytes()) {
                return Err(HookError::forbidden("invalid or missing X-Example-Token"));
            }
        }
        let payload: Value = serde_json::from_slice(&request.body)
            .map_err(|e| HookError::bad_request(format!("the body is not JSON: {e}")))?;
        // Every missing or mistyped field is a 400 that names it.
        let payload = Field::root(&payload)?;
        let repository = payload.text("repository")?;
        let branch = payload
            .opt("branch")?
            .map(|b| b.as_str().map(str::to_string))
            .transpose()?;
        let mut changes = Vec::new();
        for commit in payload.list("commits")? {
            let optional = |key: &str| -> Result<Option<String>, HookError> {
                commit
                    .opt(key)?
                    .map(|v| v.as_str().map(str::to_string))
                    .transpose()
            };
            changes.push(Change {
                author: optional("author")?,
                comments: optional("message")?,
                files: commit
                    .opt("files")?
                    .map(|f| f.strings())
                    .transpose()?
                    .unwrap_or_default(),
                revision: Some(commit.text("id")?.to_string()),
                when_timestamp: commit.opt("timestamp")?.map(|t| t.as_i64()).transpose()?,
                branch: branch.clone(),
                repository: repository.to_string(),
                project: self
                    .options
                    .project
                    .clone()
                    .unwrap_or_else(|| repository.to_string()),
                src: Some("git".into()),
                ..Change::default()
            });
        }
        host.info(&format!(
            "{} commit(s) pushed to {repository}",
            changes.len()
        ));
        let response = self
            .options
            .greeting
            .as_ref()
            .map(|g| Response::json(&json!({"text": g, "changes": changes.len()})));
        Ok(HookOutcome { changes, response })
    }
}

export_plugin! {
    name: "example",
    version: env!("CARGO_PKG_VERSION"),
    dialects: { "example" => Example },
}

#[cfg(test)]
mod tests {
    use super::*;
    use buildmaster_plugin_api::testing::{json_post, DialectHarness};
    use buildmaster_plugin_api::ErrorClass;

    fn push() -> Value {
        json!({"repository": "r", "branch": "main",
               "commits": [{"id": "a1", "author": "Ada", "message": "m", "files": ["f"], "timestamp": 5}]})
    }

    #[test]
    fn one_change_per_commit() {
        let example = DialectHarness::<Example>::new(json!({"token": "t"}));
        let changes = example.changes(&json_post(
            "/change_hook/example",
            &[("X-Example-Token", "t")],
            &push(),
        ));
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].revision.as_deref(), Some("a1"));
        assert_eq!(changes[0].project, "r");
        assert_eq!(changes[0].files, ["f"]);
        assert_eq!(changes[0].when_timestamp, Some(5));
    }

    #[test]
    fn a_wrong_token_is_forbidden_and_either_rotated_token_is_accepted() {
        let example = DialectHarness::<Example>::new(json!({"token": ["old", "new"]}));
        let with = |token: &str| {
            json_post(
                "/change_hook/example",
                &[("X-Example-Token", token)],
                &push(),
            )
        };
        example.refusal(&with("x"), ErrorClass::Forbidden);
        assert_eq!(example.changes(&with("old")).len(), 1);
        assert_eq!(example.changes(&with("new")).len(), 1);
    }

    #[test]
    fn a_missing_field_is_named() {
        let example = DialectHarness::<Example>::new(json!({}));
        let request = json_post(
            "/change_hook/example",
            &[],
            &json!({"repository": "r", "commits": [{}]}),
        );
        assert_eq!(
            example.refusal(&request, ErrorClass::BadRequest),
            "the payload lacks 'commits[0].id'"
        );
    }

    #[test]
    fn a_misspelt_option_is_refused() {
        let error = DialectHarness::<Example>::try_new(json!({"tokn": "t"}))
            .err()
            .unwrap();
        assert_eq!(
            error,
            "options.tokn: unknown option (known: token, project, greeting)"
        );
    }
}
