use buildmaster_plugin_api::testing::{form_body, form_post, json_post, request, DialectHarness};
use buildmaster_plugin_api::{Change, ErrorClass, Request};
use serde_json::{json, Value};

use super::Bitbucket;

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

fn form(path: &str, headers: &[(&str, &str)], fields: &[(&str, &str)]) -> Request {
    let mut all = vec![FORM];
    all.extend_from_slice(headers);
    request("POST", path, &all, &form_body(fields))
}

fn push(payload: &Value) -> Request {
    form(
        "/change_hook/bitbucket",
        &[("X-Event-Key", "repo:push")],
        &[("payload", &payload.to_string())],
    )
}

fn payload(scm: &str) -> Value {
    json!({
        "canon_url": "https://bitbucket.example.org",
        "user": "ada",
        "repository": {
            "absolute_url": "/ada/looms/",
            "name": "Looms",
            "owner": "ada",
            "slug": "looms",
            "scm": scm,
            "is_private": false
        },
        "commits": [
            {
                "author": "ada",
                "raw_author": "Ada Lovelace <ada@example.org>",
                "branch": "default",
                "files": [
                    {"file": "weave.py", "type": "modified"},
                    {"file": "docs/punch-cards.txt", "type": "added"}
                ],
                "message": "Weave with punch cards",
                "node": "9f8e7d6c5b4a",
                "raw_node": "9f8e7d6c5b4a39281706f5e4d3c2b1a098765432",
                "parents": ["0a1b2c3d4e5f"],
                "size": -1,
                "timestamp": "2020-02-14 10:15:00",
                "utctimestamp": "2020-02-14 09:15:00+00:00"
            },
            {
                "author": "grace",
                "raw_author": "Grace Hopper <grace@example.org>",
                "branch": "compiler",
                "files": [],
                "message": "Merge the compiler",
                "node": "1234567890ab",
                "raw_node": "1234567890abcdef1234567890abcdef12345678",
                "parents": ["9f8e7d6c5b4a"],
                "size": -1,
                "timestamp": "2020-02-14 10:20:45",
                "utctimestamp": "2020-02-14 09:20:45+00:00"
            }
        ]
    })
}

#[test]
fn each_commit_gives_a_change_on_its_branch() {
    let changes = DialectHarness::<Bitbucket>::new(json!({})).changes(&push(&payload("git")));
    let repository = "https://bitbucket.example.org/ada/looms/";
    let event = |value: Value| match json!({ "event": value }) {
        Value::Object(map) => map,
        _ => unreachable!(),
    };
    assert_eq!(
        changes,
        [
            Change {
                author: Some("Ada Lovelace <ada@example.org>".into()),
                comments: Some("Weave with punch cards".into()),
                files: vec!["weave.py".into(), "docs/punch-cards.txt".into()],
                revision: Some("9f8e7d6c5b4a39281706f5e4d3c2b1a098765432".into()),
                when_timestamp: Some(1_581_671_700),
                branch: Some("default".into()),
                revlink: Some(format!(
                    "{repository}commits/9f8e7d6c5b4a39281706f5e4d3c2b1a098765432"
                )),
                properties: event(json!("repo:push")),
                repository: repository.into(),
                project: String::new(),
                src: Some("git".into()),
                ..Change::default()
            },
            Change {
                author: Some("Grace Hopper <grace@example.org>".into()),
                comments: Some("Merge the compiler".into()),
                files: vec![],
                revision: Some("1234567890abcdef1234567890abcdef12345678".into()),
                when_timestamp: Some(1_581_672_045),
                branch: Some("compiler".into()),
                revlink: Some(format!(
                    "{repository}commits/1234567890abcdef1234567890abcdef12345678"
                )),
                properties: event(json!("repo:push")),
                repository: repository.into(),
                project: String::new(),
                src: Some("git".into()),
                ..Change::default()
            },
        ]
    );
    assert!(changes
        .iter()
        .all(|c| c.category.is_none() && c.codebase.is_none() && c.committer.is_none()));
}

#[test]
fn mercurial_repositories_give_hg_changes() {
    let changes = DialectHarness::<Bitbucket>::new(json!({})).changes(&push(&payload("hg")));
    assert_eq!(changes.len(), 2);
    assert!(changes.iter().all(|c| c.src.as_deref() == Some("hg")));
}

#[test]
fn a_push_without_commits_gives_no_change() {
    let legacy = DialectHarness::<Bitbucket>::new(json!({}));
    for scm in ["git", "hg"] {
        let mut payload = payload(scm);
        payload["commits"] = json!([]);
        assert!(legacy.changes(&push(&payload)).is_empty(), "{scm}");
    }
}

#[test]
fn the_project_argument_names_the_project() {
    let text = payload("git").to_string();
    let query = form(
        "/change_hook/bitbucket?project=looms",
        &[],
        &[("payload", &text)],
    );
    let field = form(
        "/change_hook/bitbucket?project=ignored",
        &[],
        &[("payload", &text), ("project", "weaving")],
    );
    let legacy = DialectHarness::<Bitbucket>::new(json!({}));
    assert!(legacy.changes(&query).iter().all(|c| c.project == "looms"));
    assert!(legacy
        .changes(&field)
        .iter()
        .all(|c| c.project == "weaving"));
}

#[test]
fn without_an_event_header_the_event_property_is_null() {
    let request = form(
        "/change_hook/bitbucket",
        &[],
        &[("payload", &payload("git").to_string())],
    );
    let changes = DialectHarness::<Bitbucket>::new(json!({})).changes(&request);
    assert_eq!(changes[0].properties.get("event"), Some(&Value::Null));
    assert_eq!(changes[0].properties.len(), 1);
}

#[test]
fn a_missing_payload_is_named() {
    let legacy = DialectHarness::<Bitbucket>::new(json!({}));
    let empty = form_post("/change_hook/bitbucket", "");
    let json_body = json_post("/change_hook/bitbucket", &[], &payload("git"));
    for request in [empty, json_body] {
        let message = legacy.refusal(&request, ErrorClass::BadRequest);
        assert!(
            message.starts_with("missing form field 'payload'"),
            "{message}"
        );
    }
}

#[test]
fn a_malformed_payload_is_refused() {
    let legacy = DialectHarness::<Bitbucket>::new(json!({}));
    let request = form(
        "/change_hook/bitbucket",
        &[],
        &[("payload", "{'commits': []}")],
    );
    let message = legacy.refusal(&request, ErrorClass::BadRequest);
    assert!(
        message.starts_with("'payload' is not valid JSON"),
        "{message}"
    );
    let message = legacy.refusal(&push(&json!(null)), ErrorClass::BadRequest);
    assert_eq!(message, "the payload is not a JSON object");
}

#[test]
fn missing_or_mistyped_fields_are_named() {
    let legacy = DialectHarness::<Bitbucket>::new(json!({}));
    type Edit = fn(&mut Value);
    let edits: [(Edit, &str); 8] = [
        (|p| p["canon_url"] = Value::Null, "lacks 'canon_url'"),
        (
            |p| p["repository"]["scm"] = json!(1),
            "'repository.scm' is not a string",
        ),
        (
            |p| p["repository"] = json!({"scm": "git"}),
            "lacks 'repository.absolute_url'",
        ),
        (|p| p["commits"] = json!({}), "'commits' is not a list"),
        (
            |p| p["commits"][1]["files"] = Value::Null,
            "lacks 'commits[1].files'",
        ),
        (
            |p| p["commits"][0]["files"][1] = json!("docs/punch-cards.txt"),
            "'commits[0].files[1]' is not an object",
        ),
        (
            |p| p["commits"][0]["utctimestamp"] = json!("14/02/2020"),
            "'commits[0].utctimestamp' is not an ISO 8601 date",
        ),
        (
            |p| p["commits"][1]["raw_node"] = json!(12345),
            "'commits[1].raw_node' is not a string",
        ),
    ];
    for (edit, named) in edits {
        let mut payload = payload("git");
        edit(&mut payload);
        let message = legacy.refusal(&push(&payload), ErrorClass::BadRequest);
        assert!(message.contains(named), "{named}: {message}");
    }
}

#[test]
fn the_dialect_takes_no_options() {
    let legacy = DialectHarness::<Bitbucket>::new(json!({}));
    assert_eq!(legacy.changes(&push(&payload("git"))).len(), 2);
    let refused = DialectHarness::<Bitbucket>::try_new(json!({"codebase": "x"}));
    assert_eq!(
        refused.err().as_deref(),
        Some("options.codebase: unknown option (it takes no options)")
    );
}
