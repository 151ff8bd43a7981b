use buildmaster_plugin_api::testing::{form_body, form_post, json_post, request, DialectHarness};
use buildmaster_plugin_api::{Change, ErrorClass, Request};
use serde_json::{json, Value};

use crate::Gitorious;

/// The form Gitorious posts: `payload` holds the push as JSON.
fn form(payload: &str) -> Request {
    form_post(
        "/change_hook/gitorious",
        &form_body(&[("payload", payload)]),
    )
}

fn push_payload() -> Value {
    json!({
        "before": "1111111111111111111111111111111111111111",
        "after": "2222222222222222222222222222222222222222",
        "ref": "feature/shelves",
        "pushed_by": "ada",
        "pushed_at": "2023-06-01T08:05:00+02:00",
        "project": {"name": "library", "description": "Shelving software"},
        "repository": {
            "name": "mainline",
            "url": "https://gitorious.example.org/library/mainline",
            "owner": {"name": "ada"}
        },
        "commits": [
            {
                "id": "2222222222222222222222222222222222222222",
                "message": "Sort the shelves by colour",
                "timestamp": "2023-06-01T08:00:00+02:00",
                "url": "https://gitorious.example.org/library/mainline/commit/2222222",
                "author": {"name": "Ada Lovelace", "email": "ada@example.org"}
            },
            {
                "id": "3333333333333333333333333333333333333333",
                "message": "Fix the colour order",
                "timestamp": "2023-06-01T08:03:20+02:00",
                "url": "https://gitorious.example.org/library/mainline/commit/3333333",
                "author": {"name": "Grace Hopper", "email": "grace@example.org"}
            }
        ]
    })
}

#[test]
fn each_commit_gives_a_change() {
    let gitorious = DialectHarness::<Gitorious>::new(json!({}));
    let changes = gitorious.changes(&form(&push_payload().to_string()));
    let expected = |author: &str, comments: &str, revision: &str, when: i64, link: &str| Change {
        author: Some(author.into()),
        comments: Some(comments.into()),
        revision: Some(revision.into()),
        when_timestamp: Some(when),
        branch: Some("feature/shelves".into()),
        revlink: Some(format!(
            "https://gitorious.example.org/library/mainline/commit/{link}"
        )),
        repository: "https://gitorious.example.org/library/mainline".into(),
        project: "library".into(),
        src: Some("git".into()),
        ..Change::default()
    };
    assert_eq!(
        changes,
        [
            expected(
                "Ada Lovelace <ada@example.org>",
                "Sort the shelves by colour",
                "2222222222222222222222222222222222222222",
                1_685_599_200,
                "2222222"
            ),
            expected(
                "Grace Hopper <grace@example.org>",
                "Fix the colour order",
                "3333333333333333333333333333333333333333",
                1_685_599_400,
                "3333333"
            ),
        ]
    );
    // Buildbot's gitorious hook sets none of these.
    assert!(changes.iter().all(|c| c.category.is_none()
        && c.properties.is_empty()
        && c.codebase.is_none()
        && c.committer.is_none()
        && c.files.is_empty()));
}

#[test]
fn a_deleted_branch_gives_no_change() {
    let gitorious = DialectHarness::<Gitorious>::new(json!({}));
    let mut payload = push_payload();
    payload["after"] = json!("0000000000000000000000000000000000000000");
    assert!(gitorious.changes(&form(&payload.to_string())).is_empty());
}

#[test]
fn a_push_without_commits_gives_no_change() {
    let gitorious = DialectHarness::<Gitorious>::new(json!({}));
    let mut payload = push_payload();
    payload["commits"] = json!([]);
    assert!(gitorious.changes(&form(&payload.to_string())).is_empty());
}

#[test]
fn a_missing_payload_is_named() {
    let gitorious = DialectHarness::<Gitorious>::new(json!({}));
    let empty = request("POST", "/change_hook/gitorious", &[], "");
    let json_body = json_post("/change_hook/gitorious", &[], &push_payload());
    let other_field = form_post("/change_hook/gitorious", "data=%7B%7D");
    for request in [empty, json_body, other_field] {
        let message = gitorious.refusal(&request, ErrorClass::BadRequest);
        assert!(message.contains("'payload'"), "{message}");
    }
}

#[test]
fn a_malformed_payload_is_refused() {
    let gitorious = DialectHarness::<Gitorious>::new(json!({}));
    let message = gitorious.refusal(&form("{\"after\": "), ErrorClass::BadRequest);
    assert!(
        message.starts_with("'payload' is not valid JSON"),
        "{message}"
    );
    let message = gitorious.refusal(
        &form(&json!(["not", "an", "object"]).to_string()),
        ErrorClass::BadRequest,
    );
    assert_eq!(message, "the payload is not a JSON object");
}

#[test]
fn missing_or_mistyped_fields_are_named() {
    let gitorious = DialectHarness::<Gitorious>::new(json!({}));
    type Edit = fn(&mut Value);
    let edits: [(Edit, &str); 7] = [
        (|p| p["repository"] = json!({}), "lacks 'repository.url'"),
        (|p| p["project"] = Value::Null, "lacks 'project'"),
        (|p| p["after"] = json!(0), "'after' is not a string"),
        (|p| p["commits"] = json!("none"), "'commits' is not a list"),
        (
            |p| p["commits"][1]["author"] = json!({"name": "Grace"}),
            "lacks 'commits[1].author.email'",
        ),
        (
            |p| p["commits"][0]["timestamp"] = json!("01/06/2023"),
            "'commits[0].timestamp' is not an ISO 8601 date",
        ),
        (
            |p| p["commits"][0]["message"] = json!(["x"]),
            "'commits[0].message' is not a string",
        ),
    ];
    for (edit, named) in edits {
        let mut payload = push_payload();
        edit(&mut payload);
        let message = gitorious.refusal(&form(&payload.to_string()), ErrorClass::BadRequest);
        assert!(message.contains(named), "{named}: {message}");
    }
}

#[test]
fn the_dialect_takes_no_options() {
    let gitorious = DialectHarness::<Gitorious>::new(json!({}));
    let request = form(&push_payload().to_string());
    assert_eq!(gitorious.changes(&request).len(), 2);
    let error = DialectHarness::<Gitorious>::try_new(json!({"project": "x"})).err();
    assert_eq!(
        error.as_deref(),
        Some("options.project: unknown option (it takes no options)")
    );
}

#[test]
fn a_mistyped_option_names_its_key() {
    // With no options to mistype, a value of any type is named as an unknown key.
    let error = DialectHarness::<Gitorious>::try_new(json!({"codebase": 3})).err();
    assert_eq!(
        error.as_deref(),
        Some("options.codebase: unknown option (it takes no options)")
    );
}
