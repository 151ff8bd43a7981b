use buildmaster_plugin_api::testing::{json_post, request, DialectHarness};
use buildmaster_plugin_api::{Change, ErrorClass};
use serde_json::{json, Value};

use crate::GitLab;

const HOOK: &str = "/change_hook/gitlab";
const REPO_SSH: &str = "git@gitlab.example.org:tools/widgets.git";
const REPO_HTTP: &str = "https://gitlab.example.org/tools/widgets.git";
const FORK_HTTP: &str = "https://gitlab.example.org/ada/widgets.git";
const FORK_SSH: &str = "git@gitlab.example.org:ada/widgets.git";

fn push_payload() -> Value {
    json!({
        "object_kind": "push",
        "before": "5d1ee2f2b4a1f4c1c2b6a3e0f8e5d7c6b9a81234",
        "after": "8e0b9c3f1a2d4e5f60718293a4b5c6d7e8f90abc",
        "ref": "refs/heads/main",
        "user_name": "Ada Lovelace",
        "repository": {"name": "widgets", "url": REPO_SSH, "git_http_url": REPO_HTTP},
        "commits": [
            {
                "id": "3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d",
                "message": "Add the frobnicator\n\nIt frobs.",
                "timestamp": "2021-03-04T10:20:30+01:00",
                "url": "https://gitlab.example.org/tools/widgets/-/commit/3a4b5c6d",
                "author": {"name": "Ada Lovelace", "email": "ada@example.org"},
                "added": ["src/frob.rs"],
                "modified": ["Cargo.toml", "src/lib.rs"],
                "removed": ["src/old.rs"]
            },
            {
                "id": "8e0b9c3f1a2d4e5f60718293a4b5c6d7e8f90abc",
                "message": "Fix a typo",
                "timestamp": "2021-03-04T11:00:00Z",
                "url": "https://gitlab.example.org/tools/widgets/-/commit/8e0b9c3f",
                "author": {"name": "Grace Hopper", "email": "grace@example.org"}
            }
        ],
        "total_commits_count": 2
    })
}

fn project(http: &str, ssh: &str, id: u64) -> Value {
    json!({"id": id, "name": "widgets", "git_http_url": http, "git_ssh_url": ssh})
}

fn merge_request_attributes() -> Value {
    json!({
        "iid": 42,
        "title": "Frobnicate faster",
        "description": "Halves the frobbing time.",
        "state": "opened",
        "action": "open",
        "url": "https://gitlab.example.org/tools/widgets/-/merge_requests/42",
        "source_branch": "fast-frob",
        "source_project_id": 77,
        "target_branch": "main",
        "target_project_id": 12,
        "source": project(FORK_HTTP, FORK_SSH, 77),
        "target": project(REPO_HTTP, REPO_SSH, 12),
        "last_commit": {
            "id": "c0ffee0000000000000000000000000000000042",
            "message": "Frobnicate faster",
            "timestamp": "2022-11-08T16:45:12-05:00",
            "url": "https://gitlab.example.org/ada/widgets/-/commit/c0ffee00",
            "author": {"name": "Ada Lovelace", "email": "ada@example.org"}
        }
    })
}

fn merge_request_payload(changes: &[(&str, Value)]) -> Value {
    let mut attributes = merge_request_attributes();
    for (key, value) in changes {
        attributes[*key] = value.clone();
    }
    json!({"object_kind": "merge_request", "object_attributes": attributes})
}

fn note_payload() -> Value {
    let mut merge_request = merge_request_attributes();
    if let Some(attributes) = merge_request.as_object_mut() {
        attributes.remove("action");
    }
    json!({
        "object_kind": "note",
        "object_attributes": {"id": 9001, "note": "Looks good, rebuild please", "noteable_type": "MergeRequest"},
        "merge_request": merge_request
    })
}

fn properties(value: Value) -> serde_json::Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => panic!("not an object"),
    }
}

#[test]
fn push_gives_one_change_per_commit() {
    let gitlab = DialectHarness::<GitLab>::new(json!({}));
    let changes = gitlab.changes(&json_post(HOOK, &[], &push_payload()));
    assert_eq!(
        changes,
        [
            Change {
                author: Some("Ada Lovelace <ada@example.org>".into()),
                comments: Some("Add the frobnicator\n\nIt frobs.".into()),
                files: vec![
                    "src/frob.rs".into(),
                    "Cargo.toml".into(),
                    "src/lib.rs".into(),
                    "src/old.rs".into()
                ],
                revision: Some("3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d".into()),
                when_timestamp: Some(1_614_849_630),
                branch: Some("main".into()),
                category: Some("push".into()),
                revlink: Some("https://gitlab.example.org/tools/widgets/-/commit/3a4b5c6d".into()),
                properties: properties(json!({"event": "push"})),
                repository: REPO_SSH.into(),
                project: "widgets".into(),
                codebase: None,
                src: Some("git".into()),
                committer: None,
            },
            Change {
                author: Some("Grace Hopper <grace@example.org>".into()),
                comments: Some("Fix a typo".into()),
                files: vec![],
                revision: Some("8e0b9c3f1a2d4e5f60718293a4b5c6d7e8f90abc".into()),
                when_timestamp: Some(1_614_855_600),
                branch: Some("main".into()),
                category: Some("push".into()),
                revlink: Some("https://gitlab.example.org/tools/widgets/-/commit/8e0b9c3f".into()),
                properties: properties(json!({"event": "push"})),
                repository: REPO_SSH.into(),
                project: "widgets".into(),
                codebase: None,
                src: Some("git".into()),
                committer: None,
            }
        ]
    );
}

#[test]
fn the_event_header_names_the_event_when_the_payload_does_not() {
    let gitlab = DialectHarness::<GitLab>::new(json!({}));
    let mut payload = push_payload();
    payload.as_object_mut().unwrap().remove("object_kind");
    let request = json_post(HOOK, &[("X-Gitlab-Event", "Push Hook")], &payload);
    let changes = gitlab.changes(&request);
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[0].category.as_deref(), Some("Push Hook"));
    assert_eq!(changes[0].properties["event"], json!("Push Hook"));

    // Without either, nothing is recognised.
    let request = json_post(HOOK, &[], &payload);
    assert!(gitlab.changes(&request).is_empty());
}

#[test]
fn object_kind_wins_over_the_header() {
    let gitlab = DialectHarness::<GitLab>::new(json!({}));
    let request = json_post(
        HOOK,
        &[("X-Gitlab-Event", "Merge Request Hook")],
        &push_payload(),
    );
    let changes = gitlab.changes(&request);
    assert_eq!(changes[0].category.as_deref(), Some("push"));
}

#[test]
fn tag_push_uses_the_tag_name_as_branch() {
    let gitlab = DialectHarness::<GitLab>::new(json!({}));
    let mut payload = push_payload();
    payload["object_kind"] = json!("tag_push");
    payload["ref"] = json!("refs/tags/v2.1.0");
    let changes = gitlab.changes(&json_post(HOOK, &[], &payload));
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[1].branch.as_deref(), Some("v2.1.0"));
    assert_eq!(changes[1].category.as_deref(), Some("tag_push"));
    assert_eq!(changes[1].properties["event"], json!("tag_push"));
}

#[test]
fn branch_deletion_gives_no_change() {
    let gitlab = DialectHarness::<GitLab>::new(json!({}));
    let mut payload = push_payload();
    payload["after"] = json!("0000000000000000000000000000000000000000");
    payload["commits"] = json!([]);
    payload["total_commits_count"] = json!(0);
    assert!(gitlab.changes(&json_post(HOOK, &[], &payload)).is_empty());

    let mut payload = push_payload();
    payload["deleted"] = json!(true);
    assert!(gitlab.changes(&json_post(HOOK, &[], &payload)).is_empty());
    payload["deleted"] = json!(false);
    assert_eq!(gitlab.changes(&json_post(HOOK, &[], &payload)).len(), 2);
}

#[test]
fn refs_other_than_branches_and_tags_are_ignored() {
    let gitlab = DialectHarness::<GitLab>::new(json!({}));
    for refname in ["refs/merge-requests/4/head", "refs/heads/", "main"] {
        let mut payload = push_payload();
        payload["ref"] = json!(refname);
        assert!(
            gitlab.changes(&json_post(HOOK, &[], &payload)).is_empty(),
            "{refname}"
        );
    }
}

#[test]
fn commits_that_are_not_distinct_are_skipped() {
    let gitlab = DialectHarness::<GitLab>::new(json!({}));
    let mut payload = push_payload();
    payload["commits"][0]["distinct"] = json!(false);
    payload["commits"][1]["distinct"] = json!(true);
    let changes = gitlab.changes(&json_post(HOOK, &[], &payload));
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].comments.as_deref(), Some("Fix a typo"));
}

#[test]
fn codebase_comes_from_the_query_then_the_option() {
    let gitlab = DialectHarness::<GitLab>::new(json!({}));
    let payload = push_payload();
    let query = json_post("/change_hook/gitlab?codebase=frontend", &[], &payload);
    let plain = json_post(HOOK, &[], &payload);
    let with_option = DialectHarness::<GitLab>::new(json!({"codebase": "backend"}));

    let changes = gitlab.changes(&query);
    assert!(changes
        .iter()
        .all(|c| c.codebase.as_deref() == Some("frontend")));
    let changes = with_option.changes(&plain);
    assert!(changes
        .iter()
        .all(|c| c.codebase.as_deref() == Some("backend")));
    let changes = with_option.changes(&query);
    assert!(changes
        .iter()
        .all(|c| c.codebase.as_deref() == Some("frontend")));
}

#[test]
fn the_project_query_argument_is_ignored() {
    let gitlab = DialectHarness::<GitLab>::new(json!({}));
    let request = json_post("/change_hook/gitlab?project=other", &[], &push_payload());
    let changes = gitlab.changes(&request);
    assert!(changes.iter().all(|c| c.project == "widgets"));
}

#[test]
fn the_content_type_does_not_matter() {
    let gitlab = DialectHarness::<GitLab>::new(json!({}));
    let request = request(
        "POST",
        "/change_hook/gitlab",
        &[("Content-Type", "text/plain")],
        &push_payload().to_string(),
    );
    assert_eq!(gitlab.changes(&request).len(), 2);
}

#[test]
fn merge_request_opened_gives_a_change_for_its_last_commit() {
    let gitlab = DialectHarness::<GitLab>::new(json!({}));
    let request = json_post(
        "/change_hook/gitlab?codebase=widgets",
        &[("X-Gitlab-Event", "Merge Request Hook")],
        &merge_request_payload(&[]),
    );
    let changes = gitlab.changes(&request);
    assert_eq!(
        changes,
        [Change {
            author: Some("Ada Lovelace <ada@example.org>".into()),
            comments: Some("MR#42: Frobnicate faster\n\nHalves the frobbing time.".into()),
            files: vec![],
            revision: Some("c0ffee0000000000000000000000000000000042".into()),
            when_timestamp: Some(1_667_943_912),
            branch: Some("main".into()),
            category: Some("merge_request".into()),
            revlink: Some("https://gitlab.example.org/tools/widgets/-/merge_requests/42".into()),
            properties: properties(json!({
                "source_branch": "fast-frob",
                "source_project_id": 77,
                "source_repository": FORK_HTTP,
                "source_git_ssh_url": FORK_SSH,
                "target_branch": "main",
                "target_project_id": 12,
                "target_repository": REPO_HTTP,
                "target_git_ssh_url": REPO_SSH,
                "event": "merge_request"
            })),
            repository: REPO_HTTP.into(),
            project: "widgets".into(),
            codebase: Some("widgets".into()),
            src: Some("git".into()),
            committer: None,
        }]
    );
}

#[test]
fn merge_request_reopened_or_given_new_commits_gives_a_change() {
    let gitlab = DialectHarness::<GitLab>::new(json!({}));
    let reopened = merge_request_payload(&[("action", json!("reopen"))]);
    assert_eq!(gitlab.changes(&json_post(HOOK, &[], &reopened)).len(), 1);
    let pushed = merge_request_payload(&[
        ("action", json!("update")),
        ("oldrev", json!("c0ffee0000000000000000000000000000000041")),
    ]);
    assert_eq!(gitlab.changes(&json_post(HOOK, &[], &pushed)).len(), 1);
}

#[test]
fn other_merge_request_actions_are_ignored() {
    let gitlab = DialectHarness::<GitLab>::new(json!({}));
    for (key, value) in [
        ("action", "update"),
        ("action", "approved"),
        ("action", "close"),
        ("action", "merge"),
        ("state", "closed"),
        ("state", "merged"),
        ("state", "approved"),
    ] {
        let payload = merge_request_payload(&[(key, json!(value))]);
        assert!(
            gitlab.changes(&json_post(HOOK, &[], &payload)).is_empty(),
            "{key} {value}"
        );
    }
}

#[test]
fn ignored_merge_requests_need_none_of_the_change_fields() {
    let gitlab = DialectHarness::<GitLab>::new(json!({}));
    let payload = json!({
        "object_kind": "merge_request",
        "object_attributes": {"state": "merged", "action": "merge"}
    });
    assert!(gitlab.changes(&json_post(HOOK, &[], &payload)).is_empty());
}

#[test]
fn a_merge_request_without_description_has_an_empty_one() {
    let gitlab = DialectHarness::<GitLab>::new(json!({}));
    let payload = merge_request_payload(&[("description", Value::Null)]);
    let changes = gitlab.changes(&json_post(HOOK, &[], &payload));
    assert_eq!(
        changes[0].comments.as_deref(),
        Some("MR#42: Frobnicate faster\n\n")
    );
}

#[test]
fn a_note_on_a_merge_request_gives_a_change() {
    let gitlab = DialectHarness::<GitLab>::new(json!({}));
    let changes = gitlab.changes(&json_post(HOOK, &[], &note_payload()));
    assert_eq!(changes.len(), 1);
    let change = &changes[0];
    assert_eq!(change.category.as_deref(), Some("note"));
    assert_eq!(change.branch.as_deref(), Some("main"));
    assert_eq!(
        change.revision.as_deref(),
        Some("c0ffee0000000000000000000000000000000042")
    );
    assert_eq!(
        change.comments.as_deref(),
        Some("MR#42: Frobnicate faster\n\nHalves the frobbing time.")
    );
    assert_eq!(change.properties["event"], json!("note"));
    assert_eq!(
        change.properties["comments"],
        json!("Looks good, rebuild please")
    );
    assert_eq!(change.properties["source_repository"], json!(FORK_HTTP));
    assert_eq!(change.properties.len(), 10);
}

#[test]
fn other_notes_are_ignored() {
    let gitlab = DialectHarness::<GitLab>::new(json!({}));
    let payload = json!({
        "object_kind": "note",
        "object_attributes": {"id": 7, "note": "nice commit", "noteable_type": "Commit"},
        "commit": {"id": "3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d"}
    });
    assert!(gitlab.changes(&json_post(HOOK, &[], &payload)).is_empty());
}

#[test]
fn unknown_events_give_no_change() {
    let gitlab = DialectHarness::<GitLab>::new(json!({}));
    let pipeline = json!({"object_kind": "pipeline", "object_attributes": {"id": 3}});
    assert!(gitlab.changes(&json_post(HOOK, &[], &pipeline)).is_empty());
    let header_only = json_post(
        HOOK,
        &[("X-Gitlab-Event", "Tag Push Hook")],
        &json!({"ref": "refs/tags/v1"}),
    );
    assert!(gitlab.changes(&header_only).is_empty());
}

#[test]
fn the_token_must_match_the_secret() {
    let gitlab = DialectHarness::<GitLab>::new(json!({"secret": "s3cr3t-t0ken"}));
    let good = json_post(HOOK, &[("X-Gitlab-Token", "s3cr3t-t0ken")], &push_payload());
    assert_eq!(gitlab.changes(&good).len(), 2);

    for token in [Some("s3cr3t-t0kem"), Some(""), Some("s3cr3t-t0ken "), None] {
        let headers: Vec<_> = token.map(|t| ("X-Gitlab-Token", t)).into_iter().collect();
        let request = json_post(HOOK, &headers, &push_payload());
        let message = gitlab.refusal(&request, ErrorClass::BadRequest);
        assert!(message.starts_with("Invalid secret"), "{message}");
        assert!(!message.contains("s3cr3t"), "{message}");
    }
}

#[test]
fn the_token_is_checked_before_the_body_is_read() {
    let request = request(
        "POST",
        "/change_hook/gitlab",
        &[("X-Gitlab-Token", "wrong")],
        "not json",
    );
    let gitlab = DialectHarness::<GitLab>::new(json!({"secret": "right"}));
    let message = gitlab.refusal(&request, ErrorClass::BadRequest);
    assert!(message.starts_with("Invalid secret"), "{message}");
}

#[test]
fn without_a_secret_a_token_is_not_needed() {
    let request = json_post(HOOK, &[("X-Gitlab-Token", "anything")], &push_payload());
    let gitlab = DialectHarness::<GitLab>::new(json!({}));
    assert_eq!(gitlab.changes(&request).len(), 2);
}

#[test]
fn a_body_that_is_not_a_json_object_is_refused() {
    let gitlab = DialectHarness::<GitLab>::new(json!({}));
    for body in ["", "{\"object_kind\": ", "[1, 2]", "\"push\""] {
        let request = request("POST", "/change_hook/gitlab", &[], body);
        let message = gitlab.refusal(&request, ErrorClass::BadRequest);
        assert!(
            message.starts_with("Error loading JSON") || message.contains("not a JSON object"),
            "{body}: {message}"
        );
    }
    let mut invalid_utf8 = json_post(HOOK, &[], &json!({}));
    invalid_utf8.body = b"{\"object_kind\": \"push\xff\"}".to_vec();
    let message = gitlab.refusal(&invalid_utf8, ErrorClass::BadRequest);
    assert!(message.starts_with("Error loading JSON"), "{message}");
}

/// Asserts that `payload` is refused with a message naming `named`.
fn assert_names(payload: &Value, named: &str) {
    let gitlab = DialectHarness::<GitLab>::new(json!({}));
    let message = gitlab.refusal(&json_post(HOOK, &[], payload), ErrorClass::BadRequest);
    assert!(message.contains(named), "{payload}: {message}");
}

#[test]
fn missing_or_mistyped_push_fields_are_named() {
    for (payload, named) in [
        (json!({"object_kind": "push"}), "lacks 'ref'"),
        (
            json!({"object_kind": "push", "ref": "refs/heads/x", "repository": {"name": "w"}}),
            "lacks 'repository.url'",
        ),
        (
            json!({"object_kind": "push", "ref": "refs/heads/x", "repository": "w"}),
            "'repository' is not an object",
        ),
        (
            json!({"object_kind": "push", "ref": "refs/heads/x",
                   "repository": {"name": "w", "url": "u"}}),
            "lacks 'commits'",
        ),
        (
            json!({"object_kind": "push", "ref": "refs/heads/x",
                   "repository": {"name": "w", "url": "u"}, "commits": {}}),
            "'commits' is not a list",
        ),
    ] {
        assert_names(&payload, named);
    }
}

#[test]
fn missing_or_mistyped_commit_fields_are_named() {
    type Edit = fn(&mut Value);
    let edits: [(Edit, &str); 5] = [
        (
            |p| p["commits"][1]["timestamp"] = Value::Null,
            "lacks 'commits[1].timestamp'",
        ),
        (
            |p| p["commits"][1]["timestamp"] = json!("last Tuesday"),
            "'commits[1].timestamp' is not an ISO 8601 date",
        ),
        (
            |p| p["commits"][0]["author"] = json!({"name": "Ada"}),
            "lacks 'commits[0].author.email'",
        ),
        (
            |p| p["commits"][0]["modified"] = json!([1]),
            "'commits[0].modified[0]' is not a string",
        ),
        (
            |p| p["commits"][0]["id"] = json!(12),
            "'commits[0].id' is not a string",
        ),
    ];
    for (edit, named) in edits {
        let mut payload = push_payload();
        edit(&mut payload);
        assert_names(&payload, named);
    }
}

#[test]
fn missing_or_mistyped_merge_request_fields_are_named() {
    for key in ["last_commit", "target", "source_project_id", "iid", "title"] {
        let mut payload = merge_request_payload(&[]);
        payload["object_attributes"]
            .as_object_mut()
            .unwrap()
            .remove(key);
        assert_names(&payload, &format!("lacks 'object_attributes.{key}'"));
    }
    let payload = merge_request_payload(&[("iid", json!([42]))]);
    assert_names(&payload, "'object_attributes.iid' is not a number");
    let payload = json!({"object_kind": "merge_request", "object_attributes": {"state": "opened"}});
    assert_names(&payload, "lacks 'object_attributes.action'");
    assert_names(
        &json!({"object_kind": "merge_request"}),
        "lacks 'object_attributes'",
    );
}

#[test]
fn missing_note_fields_are_named() {
    let payload =
        json!({"object_kind": "note", "object_attributes": {"note": "x"}, "merge_request": {}});
    assert_names(&payload, "lacks 'merge_request.last_commit'");
    let mut payload = note_payload();
    payload["object_attributes"] = json!({"id": 1});
    assert_names(&payload, "lacks 'object_attributes.note'");
}

#[test]
fn options_are_checked() {
    for (options, message) in [
        (
            json!({"secret": 5}),
            "options.secret: expected a string or a list of strings, found an integer",
        ),
        (json!({"secret": ""}), "options.secret: must not be empty"),
        (
            json!({"secret": []}),
            "options.secret: must not be an empty list",
        ),
        (
            json!({"secret": ["old", ""]}),
            "options.secret[1]: must not be empty",
        ),
        (
            json!({"codebase": ["a"]}),
            "options.codebase: expected a string, found a list",
        ),
    ] {
        let error = DialectHarness::<GitLab>::try_new(options.clone()).err();
        assert_eq!(error.as_deref(), Some(message), "{options}");
    }
}

#[test]
fn unknown_options_are_refused() {
    let error = DialectHarness::<GitLab>::try_new(json!({"secert": "x"})).err();
    assert_eq!(
        error.as_deref(),
        Some("options.secert: unknown option (known: secret, codebase)")
    );
}
