//! `push` events.

use super::*;

fn commit(id: &str, message: &str, timestamp: &str) -> Value {
    json!({
        "id": id,
        "message": message,
        "timestamp": timestamp,
        "url": format!("https://github.com/acme/rocket/commit/{id}"),
        "author": {"name": "Ada Lovelace", "email": "ada@example.org", "username": "ada"},
        "committer": {"name": "Grace Hopper", "email": "grace@example.org"},
        "distinct": true,
        "added": ["new.rs"],
        "modified": ["lib.rs", "main.rs"],
        "removed": ["old.rs"]
    })
}

/// A push of two commits to `reference`; the second one is the head.
pub(super) fn push(reference: &str) -> Value {
    let first = commit("1111aaaa", "Add the engine", "2021-03-04T10:00:00+01:00");
    let mut second = commit("2222bbbb", "Fuel the engine", "2021-03-04T09:30:00Z");
    for kind in ["added", "removed", "distinct"] {
        second.as_object_mut().unwrap().remove(kind);
    }
    json!({
        "ref": reference,
        "before": "0000cccc",
        "after": "2222bbbb",
        "created": false,
        "deleted": false,
        "repository": {
            "name": "rocket",
            "full_name": "acme/rocket",
            "html_url": "https://github.com/acme/rocket",
            "owner": {"login": "acme"}
        },
        "commits": [first, second.clone()],
        "head_commit": second
    })
}

#[test]
fn push_to_a_branch_gives_a_change_per_commit() {
    let changes = DialectHarness::<GitHub>::new(json!({}))
        .changes(&json_hook("push", &push("refs/heads/main")));
    assert_eq!(changes.len(), 2);
    let first = &changes[0];
    assert_eq!(
        first.author.as_deref(),
        Some("Ada Lovelace <ada@example.org>")
    );
    assert_eq!(
        first.committer.as_deref(),
        Some("Grace Hopper <grace@example.org>")
    );
    assert_eq!(first.comments.as_deref(), Some("Add the engine"));
    assert_eq!(first.files, ["new.rs", "lib.rs", "main.rs", "old.rs"]);
    assert_eq!(first.revision.as_deref(), Some("1111aaaa"));
    assert_eq!(first.when_timestamp, Some(1_614_848_400));
    assert_eq!(first.branch.as_deref(), Some("main"));
    assert_eq!(first.category, None);
    assert_eq!(
        first.revlink.as_deref(),
        Some("https://github.com/acme/rocket/commit/1111aaaa")
    );
    assert_eq!(first.repository, "https://github.com/acme/rocket");
    assert_eq!(first.project, "acme/rocket");
    assert_eq!(first.codebase, None);
    assert_eq!(first.src.as_deref(), Some("git"));
    assert_eq!(
        Value::Object(first.properties.clone()),
        json!({"github_distinct": true, "event": "push"})
    );
    let second = &changes[1];
    assert_eq!(second.revision.as_deref(), Some("2222bbbb"));
    assert_eq!(second.files, ["lib.rs", "main.rs"]);
    assert_eq!(second.when_timestamp, Some(1_614_850_200));
    assert_eq!(
        second.properties.get("github_distinct"),
        Some(&json!(true)),
        "distinct defaults to true"
    );
}

#[test]
fn push_to_a_tag_or_a_slashed_branch_name() {
    let github = DialectHarness::<GitHub>::new(json!({}));
    let changes = github.changes(&json_hook("push", &push("refs/tags/v1.2.0")));
    assert_eq!(changes.len(), 2);
    assert!(changes
        .iter()
        .all(|c| c.category.as_deref() == Some("tag") && c.branch.as_deref() == Some("v1.2.0")));
    let changes = github.changes(&json_hook("push", &push("refs/heads/feature/fast")));
    assert_eq!(changes[0].branch.as_deref(), Some("feature/fast"));
    assert_eq!(changes[0].category, None);
}

#[test]
fn a_created_branch_or_tag_builds_its_head_commit_only() {
    let github = DialectHarness::<GitHub>::new(json!({}));
    let mut payload = push("refs/tags/v2.0.0");
    set(&mut payload, "/created", json!(true));
    set(&mut payload, "/commits", json!([]));
    let changes = github.changes(&json_hook("push", &payload));
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].revision.as_deref(), Some("2222bbbb"));
    assert_eq!(changes[0].category.as_deref(), Some("tag"));

    let mut payload = push("refs/heads/new");
    set(&mut payload, "/created", json!(true));
    assert_eq!(github.changes(&json_hook("push", &payload)).len(), 1);
}

#[test]
fn deletions_other_refs_and_empty_pushes_give_nothing() {
    let github = DialectHarness::<GitHub>::new(json!({}));
    let mut deleted = push("refs/heads/gone");
    set(&mut deleted, "/deleted", json!(true));
    set(&mut deleted, "/commits", json!([]));
    set(&mut deleted, "/head_commit", Value::Null);
    let mut deleted_tag = deleted.clone();
    set(&mut deleted_tag, "/ref", json!("refs/tags/v0.1"));
    let mut empty = push("refs/heads/main");
    set(&mut empty, "/commits", json!([]));
    set(&mut empty, "/head_commit", json!({}));
    for payload in [
        deleted,
        deleted_tag,
        empty,
        push("refs/notes/commits"),
        push("refs/heads/"),
        push("main"),
    ] {
        let changes = github.changes(&json_hook("push", &payload));
        assert!(changes.is_empty(), "{}", payload["ref"]);
    }
}

#[test]
fn default_skip_patterns_in_the_head_commit_skip_the_push() {
    let github = DialectHarness::<GitHub>::new(json!({}));
    for message in ["Fuel [ci skip]", "[skip ci] Fuel", "Fuel [  ci  skip ]"] {
        let mut payload = push("refs/heads/main");
        set(&mut payload, "/head_commit/message", json!(message));
        assert!(
            github.changes(&json_hook("push", &payload)).is_empty(),
            "{message}"
        );
    }
    // Only the head commit counts.
    let mut payload = push("refs/heads/main");
    set(&mut payload, "/commits/0/message", json!("Add [ci skip]"));
    assert_eq!(github.changes(&json_hook("push", &payload)).len(), 2);
}

#[test]
fn custom_skips_replace_the_default_patterns() {
    let github = DialectHarness::<GitHub>::new(json!({"skips": [r"\[ *bb *skip *\]"]}));
    let mut payload = push("refs/heads/main");
    set(
        &mut payload,
        "/head_commit/message",
        json!("Fuel [ bb skip ]"),
    );
    assert!(github.changes(&json_hook("push", &payload)).is_empty());
    set(
        &mut payload,
        "/head_commit/message",
        json!("Fuel [ci skip]"),
    );
    assert_eq!(github.changes(&json_hook("push", &payload)).len(), 2);
}

#[test]
fn whitelisted_payload_leaves_become_properties() {
    let config = json!({"github_property_whitelist": ["github.ref", "github.repository.*", "github.commits"]});
    let payload = push("refs/heads/main");
    let changes = DialectHarness::<GitHub>::new(config).changes(&json_hook("push", &payload));
    let properties = &changes[1].properties;
    assert_eq!(properties["github.ref"], json!("refs/heads/main"));
    assert_eq!(
        properties["github.repository.full_name"],
        json!("acme/rocket")
    );
    assert_eq!(properties["github.repository.owner.login"], json!("acme"));
    assert_eq!(properties["github.commits"], payload["commits"]);
    assert_eq!(properties["event"], json!("push"));
    assert!(!properties.contains_key("github.before"));
    assert!(!properties.contains_key("github.repository.owner"));
}

#[test]
fn codebase_and_distinct_are_recorded() {
    let mut payload = push("refs/heads/main");
    set(&mut payload, "/commits/0/distinct", json!(false));
    let changes = DialectHarness::<GitHub>::new(json!({"codebase": "engine"}))
        .changes(&json_hook("push", &payload));
    assert!(changes
        .iter()
        .all(|c| c.codebase.as_deref() == Some("engine")));
    assert_eq!(changes[0].properties["github_distinct"], json!(false));
}

#[test]
fn a_form_encoded_push_is_read_like_a_json_one() {
    let github = DialectHarness::<GitHub>::new(json!({}));
    let payload = push("refs/heads/main");
    let from_form = github.changes(&form_hook("push", &payload));
    assert_eq!(from_form, github.changes(&json_hook("push", &payload)));
    assert_eq!(from_form.len(), 2);
}

#[test]
fn json_with_a_charset_is_accepted_other_content_types_are_not() {
    let github = DialectHarness::<GitHub>::new(json!({}));
    let body = push("refs/heads/main").to_string();
    let charset = hook("push", "application/json; charset=utf-8", &body, &[]);
    assert_eq!(github.changes(&charset).len(), 2);
    let error = github.refusal(
        &hook("push", "text/plain", &body, &[]),
        ErrorClass::BadRequest,
    );
    assert!(error.starts_with("Unknown content type: text/plain"));
    let no_type = request(
        "POST",
        "/change_hook/github",
        &[("X-GitHub-Event", "push")],
        &body,
    );
    assert!(github
        .refusal(&no_type, ErrorClass::BadRequest)
        .starts_with("Unknown content type: none"));
}

#[test]
fn malformed_bodies_are_refused() {
    let github = DialectHarness::<GitHub>::new(json!({}));
    for body in ["", "{\"ref\": ", "[1, 2]", "\"push\""] {
        let error = github.refusal(
            &hook("push", "application/json", body, &[]),
            ErrorClass::BadRequest,
        );
        assert!(!error.is_empty(), "{body}");
    }
    let form = hook("push", "application/x-www-form-urlencoded", "other=1", &[]);
    assert_eq!(
        github.refusal(&form, ErrorClass::BadRequest),
        "missing form field 'payload'"
    );
}

#[test]
fn missing_or_mistyped_push_fields_are_named() {
    let cases: [(&str, Option<Value>, &str); 8] = [
        ("/repository", None, "the payload lacks 'repository'"),
        ("/ref", None, "the payload lacks 'ref'"),
        ("/commits", None, "the payload lacks 'commits'"),
        (
            "/commits/1/author",
            None,
            "the payload lacks 'commits[1].author'",
        ),
        (
            "/commits/0/author/email",
            None,
            "the payload lacks 'commits[0].author.email'",
        ),
        (
            "/commits/0/timestamp",
            Some(json!("last tuesday")),
            "'commits[0].timestamp' is not an ISO 8601 date and time",
        ),
        (
            "/commits/0/modified",
            Some(json!("lib.rs")),
            "'commits[0].modified' is not a list",
        ),
        (
            "/head_commit",
            Some(json!("2222bbbb")),
            "'head_commit' is not an object",
        ),
    ];
    let github = DialectHarness::<GitHub>::new(json!({}));
    for (pointer, replacement, message) in cases {
        let mut payload = push("refs/heads/main");
        match replacement {
            Some(value) => set(&mut payload, pointer, value),
            None => {
                let (parent, key) = pointer.rsplit_once('/').unwrap();
                let parent = if parent.is_empty() {
                    &mut payload
                } else {
                    payload.pointer_mut(parent).unwrap()
                };
                match parent {
                    Value::Object(map) => {
                        map.remove(key);
                    }
                    other => panic!("{other}"),
                }
            }
        }
        assert_eq!(
            github.refusal(&json_hook("push", &payload), ErrorClass::BadRequest),
            message,
            "{pointer}"
        );
    }
}
