//! The `base` dialect: one change from the request's form fields or query
//! parameters, as `buildbot sendchange`-style clients post them.
//!
//! Fields: `author` (falling back to `who`), `committer`, `comments`, `files` (a JSON
//! list), `revision`, `when_timestamp` (falling back to `when`; seconds, fractions
//! dropped), `branch`, `category`, `revlink`, `properties` (a JSON object),
//! `repository`, `project`, `codebase`. A JSON body is not read.

use buildmaster_plugin_api::options::NoOptions;
use buildmaster_plugin_api::{
    export_plugin, Args, Change, Dialect, HookError, HookOutcome, Host, Request,
};

/// The `base` dialect; it takes no options.
pub struct Base;

impl Dialect for Base {
    type Options = NoOptions;

    fn new(_name: &str, _options: NoOptions) -> Result<Self, String> {
        Ok(Base)
    }

    fn handle(&self, request: &Request, _host: &Host<'_>) -> Result<HookOutcome, HookError> {
        Ok(vec![change_from_args(&request.args())?].into())
    }
}

fn text(args: &Args, name: &str) -> Option<String> {
    args.first(name).map(str::to_string)
}

fn change_from_args(args: &Args) -> Result<Change, HookError> {
    let author = match args.first("author") {
        Some(author) if !author.is_empty() => Some(author.to_string()),
        _ => text(args, "who"),
    };
    let when = args.first("when_timestamp").or_else(|| args.first("when"));
    Ok(Change {
        author,
        committer: text(args, "committer"),
        comments: text(args, "comments"),
        files: files(args.first("files"))?,
        revision: text(args, "revision"),
        when_timestamp: when.map(timestamp).transpose()?,
        branch: text(args, "branch"),
        category: text(args, "category"),
        revlink: text(args, "revlink"),
        properties: properties(args.first("properties"))?,
        repository: text(args, "repository").unwrap_or_default(),
        project: text(args, "project").unwrap_or_default(),
        codebase: text(args, "codebase"),
        src: None,
    })
}

fn json(field: &str, value: &str) -> Result<serde_json::Value, HookError> {
    serde_json::from_str(value)
        .map_err(|e| HookError::bad_request(format!("'{field}' is not valid JSON: {e}")))
}

fn files(value: Option<&str>) -> Result<Vec<String>, HookError> {
    match value {
        None | Some("") => Ok(Vec::new()),
        Some(value) => serde_json::from_value(json("files", value)?)
            .map_err(|_| HookError::bad_request("'files' must be a JSON list of strings")),
    }
}

fn properties(
    value: Option<&str>,
) -> Result<serde_json::Map<String, serde_json::Value>, HookError> {
    match value {
        None | Some("") => Ok(serde_json::Map::new()),
        Some(value) => match json("properties", value)? {
            serde_json::Value::Object(map) if map.contains_key("") => Err(HookError::bad_request(
                "'properties' names a property with an empty name",
            )),
            serde_json::Value::Object(map) => Ok(map),
            _ => Err(HookError::bad_request("'properties' must be a JSON object")),
        },
    }
}

/// Seconds since the epoch, given as an integer or a decimal number.
fn timestamp(value: &str) -> Result<i64, HookError> {
    match value.trim().parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds.abs() < 1e17 => Ok(seconds.trunc() as i64),
        _ => Err(HookError::bad_request(format!(
            "could not convert string to float: '{value}'"
        ))),
    }
}

export_plugin! {
    name: "base",
    version: env!("CARGO_PKG_VERSION"),
    dialects: { "base" => Base },
}

#[cfg(test)]
mod tests {
    use super::*;
    use buildmaster_plugin_api::testing::{form_post, json_post, request, DialectHarness};
    use buildmaster_plugin_api::ErrorClass;
    use serde_json::json;

    #[test]
    fn every_field_is_read_from_the_form() {
        let base = DialectHarness::<Base>::new(json!({}));
        let body = "author=me&committer=you&comments=Fix+it&files=%5B%22a.c%22%2C%22b.c%22%5D\
                    &revision=abc&when_timestamp=1500000000.9&branch=main&category=bug\
                    &revlink=http%3A%2F%2Fx%2Fabc&properties=%7B%22n%22%3A2%7D\
                    &repository=repo&project=proj&codebase=cb";
        let change = &base.changes(&form_post("/change_hook/base", body))[0];
        assert_eq!(change.author.as_deref(), Some("me"));
        assert_eq!(change.committer.as_deref(), Some("you"));
        assert_eq!(change.comments.as_deref(), Some("Fix it"));
        assert_eq!(change.files, ["a.c", "b.c"]);
        assert_eq!(change.revision.as_deref(), Some("abc"));
        assert_eq!(change.when_timestamp, Some(1_500_000_000));
        assert_eq!(change.branch.as_deref(), Some("main"));
        assert_eq!(change.category.as_deref(), Some("bug"));
        assert_eq!(change.revlink.as_deref(), Some("http://x/abc"));
        assert_eq!(change.properties.get("n"), Some(&json!(2)));
        assert_eq!(
            (change.repository.as_str(), change.project.as_str()),
            ("repo", "proj")
        );
        assert_eq!(change.codebase.as_deref(), Some("cb"));
        assert_eq!(change.src, None);
    }

    #[test]
    fn absent_fields_are_null_or_empty() {
        let base = DialectHarness::<Base>::new(json!({}));
        let change = &base.changes(&form_post("/change_hook/base", "comments=only"))[0];
        assert_eq!(change.author, None);
        assert_eq!(change.revlink, None);
        assert_eq!(change.when_timestamp, None);
        assert!(change.files.is_empty() && change.properties.is_empty());
        assert_eq!(
            (change.repository.as_str(), change.project.as_str()),
            ("", "")
        );
        assert_eq!(change.codebase, None);
    }

    #[test]
    fn who_and_when_are_fallbacks() {
        let base = DialectHarness::<Base>::new(json!({}));
        let body = "author=&who=old&when=12.5";
        let change = &base.changes(&form_post("/change_hook/base", body))[0];
        assert_eq!(change.author.as_deref(), Some("old"));
        assert_eq!(change.when_timestamp, Some(12));
        let body = "when_timestamp=7&when=9";
        let change = &base.changes(&form_post("/change_hook/base", body))[0];
        assert_eq!(change.when_timestamp, Some(7));
    }

    #[test]
    fn query_arguments_work_for_get_and_a_json_body_is_ignored() {
        let base = DialectHarness::<Base>::new(json!({}));
        let get = request("GET", "/change_hook/base?comments=q&branch=b", &[], "");
        assert_eq!(base.changes(&get)[0].branch.as_deref(), Some("b"));
        let json_body = json_post("/change_hook/base", &[], &json!({"comments": "x"}));
        assert_eq!(base.changes(&json_body)[0].comments, None);
    }

    #[test]
    fn malformed_values_are_the_senders_fault() {
        let base = DialectHarness::<Base>::new(json!({}));
        for (body, message) in [
            ("files=not+json", "'files' is not valid JSON"),
            ("files=%7B%7D", "'files' must be a JSON list of strings"),
            ("properties=%5B1%5D", "'properties' must be a JSON object"),
            (
                "properties=%7B%22%22%3A1%7D",
                "'properties' names a property with an empty name",
            ),
            (
                "when_timestamp=yesterday",
                "could not convert string to float: 'yesterday'",
            ),
            ("when=", "could not convert string to float: ''"),
            ("when=inf", "could not convert string to float: 'inf'"),
        ] {
            let refusal = base.refusal(
                &form_post("/change_hook/base", body),
                ErrorClass::BadRequest,
            );
            assert!(refusal.starts_with(message), "{body}: {refusal}");
        }
    }

    #[test]
    fn the_dialect_takes_no_options() {
        let error = DialectHarness::<Base>::try_new(json!({"project": "x"})).err();
        assert_eq!(
            error.as_deref(),
            Some("options.project: unknown option (it takes no options)")
        );
    }

    #[test]
    fn a_mistyped_option_names_its_key() {
        // With no options to mistype, a value of any type is named as an unknown key.
        let error = DialectHarness::<Base>::try_new(json!({"codebase": ["a"]})).err();
        assert_eq!(
            error.as_deref(),
            Some("options.codebase: unknown option (it takes no options)")
        );
    }
}
