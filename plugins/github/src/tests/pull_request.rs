//! `pull_request` events and their API look-ups.

use super::*;

fn pull_request(action: &str) -> Value {
    json!({
        "action": action,
        "number": 42,
        "pull_request": {
            "number": 42,
            "state": "open",
            "title": "Faster launches",
            "body": "Cuts the countdown in half.",
            "commits": 1,
            "created_at": "2022-05-06T07:08:09Z",
            "updated_at": "2022-05-07T00:00:00Z",
            "merged_at": null,
            "head": {"ref": "fast", "sha": "feedface01", "repo": {"full_name": "ada/rocket"}},
            "base": {"ref": "main", "sha": "0ddba11", "repo": {"full_name": "acme/rocket"}},
            "_links": {"html": {"href": "https://github.com/acme/rocket/pull/42"}},
            "labels": []
        },
        "repository": {"full_name": "acme/rocket", "html_url": "https://github.com/acme/rocket"},
        "sender": {"login": "ada"}
    })
}

fn answer(status: u16, body: Value) -> Result<HttpResponse, String> {
    Ok(HttpResponse {
        status,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: body.to_string().into_bytes(),
    })
}

fn commit_answer(message: &str) -> Result<HttpResponse, String> {
    answer(
        200,
        json!({"sha": "feedface01", "commit": {"message": message}}),
    )
}

fn files_answer() -> Result<HttpResponse, String> {
    answer(
        200,
        json!([
            {"filename": "src/countdown.rs", "status": "modified"},
            {"filename": "docs/launch.md", "previous_filename": "docs/start.md", "status": "renamed"}
        ]),
    )
}

fn headers(request: &HttpRequest) -> Vec<(&str, &str)> {
    request
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect()
}

#[test]
fn an_opened_pull_request_gives_one_change() {
    let host = TestHost::default();
    host.respond(commit_answer("Halve the countdown"));
    host.respond(files_answer());
    let github = DialectHarness::<GitHub>::new(json!({})).with_host(host);
    let changes = github.changes(&json_hook("pull_request", &pull_request("opened")));
    assert_eq!(changes.len(), 1);
    let change = &changes[0];
    assert_eq!(change.author.as_deref(), Some("ada"));
    assert_eq!(change.committer, None);
    assert_eq!(
        change.comments.as_deref(),
        Some("GitHub Pull Request #42 (1 commit)\nFaster launches\nCuts the countdown in half.")
    );
    assert_eq!(
        change.files,
        ["src/countdown.rs", "docs/launch.md", "docs/start.md"]
    );
    assert_eq!(change.revision.as_deref(), Some("feedface01"));
    assert_eq!(change.when_timestamp, Some(1_651_820_889));
    assert_eq!(change.branch.as_deref(), Some("refs/pull/42/merge"));
    assert_eq!(change.category.as_deref(), Some("pull"));
    assert_eq!(
        change.revlink.as_deref(),
        Some("https://github.com/acme/rocket/pull/42")
    );
    assert_eq!(change.repository, "https://github.com/acme/rocket");
    assert_eq!(change.project, "acme/rocket");
    assert_eq!(change.codebase, None);
    assert_eq!(change.src.as_deref(), Some("git"));
    assert_eq!(
        Value::Object(change.properties.clone()),
        json!({
            "pullrequesturl": "https://github.com/acme/rocket/pull/42",
            "event": "pull_request",
            "basename": "main"
        })
    );

    let calls = github.host().requests();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].method, "GET");
    assert_eq!(
        calls[0].url,
        "https://api.github.com/repos/acme/rocket/commits/feedface01"
    );
    assert_eq!(
        calls[1].url,
        "https://api.github.com/repos/acme/rocket/pulls/42/files"
    );
    for call in &calls {
        assert_eq!(
            headers(call),
            [("User-Agent", "Buildbot")],
            "no token, no Authorization"
        );
    }
}

#[test]
fn reopened_and_synchronize_build_too() {
    for action in ["reopened", "synchronize"] {
        let host = TestHost::default();
        host.respond(commit_answer("x"));
        host.respond(files_answer());
        let changes = DialectHarness::<GitHub>::new(json!({}))
            .with_host(host)
            .changes(&form_hook("pull_request", &pull_request(action)));
        assert_eq!(changes.len(), 1, "{action}");
        assert_eq!(
            changes[0].when_timestamp,
            Some(1_651_820_889),
            "creation time, even for updates"
        );
    }
}

#[test]
fn token_endpoint_ref_and_codebase_options() {
    let host = TestHost::default();
    host.respond(commit_answer("x"));
    host.respond(files_answer());
    let config = json!({
        "token": TOKEN,
        "github_api_endpoint": "https://ghe.example.com/api/v3/",
        "pullrequest_ref": "head",
        "codebase": "rocket"
    });
    let github = DialectHarness::<GitHub>::new(config).with_host(host);
    let changes = github.changes(&json_hook("pull_request", &pull_request("opened")));
    assert_eq!(changes[0].branch.as_deref(), Some("refs/pull/42/head"));
    assert_eq!(changes[0].codebase.as_deref(), Some("rocket"));
    let calls = github.host().requests();
    assert_eq!(
        calls[0].url,
        "https://ghe.example.com/api/v3/repos/acme/rocket/commits/feedface01"
    );
    assert_eq!(
        calls[1].url,
        "https://ghe.example.com/api/v3/repos/acme/rocket/pulls/42/files"
    );
    let authorization = format!("token {TOKEN}");
    for call in &calls {
        assert_eq!(
            headers(call),
            [
                ("User-Agent", "Buildbot"),
                ("Authorization", authorization.as_str())
            ]
        );
    }
}

#[test]
fn other_actions_look_up_the_head_commit_and_give_nothing() {
    let mut no_action = pull_request("opened");
    no_action.as_object_mut().unwrap().remove("action");
    let payloads = ["closed", "edited", "labeled", "assigned"]
        .map(pull_request)
        .into_iter()
        .chain([no_action]);
    for payload in payloads {
        let host = TestHost::default();
        host.respond(commit_answer("x"));
        let github = DialectHarness::<GitHub>::new(json!({})).with_host(host);
        let changes = github.changes(&json_hook("pull_request", &payload));
        assert!(changes.is_empty(), "{}", payload["action"]);
        assert_eq!(github.host().requests().len(), 1, "only the commit look-up");
    }
}

#[test]
fn a_skip_pattern_in_the_head_commit_skips_the_pull_request() {
    for message in ["Halve it [ci skip]", "[skip ci]"] {
        let host = TestHost::default();
        host.respond(commit_answer(message));
        let github = DialectHarness::<GitHub>::new(json!({})).with_host(host);
        let changes = github.changes(&json_hook("pull_request", &pull_request("opened")));
        assert!(changes.is_empty(), "{message}");
        assert_eq!(github.host().requests().len(), 1, "no file look-up");
    }
}

#[test]
fn api_errors_give_a_change_without_files() {
    let host = TestHost::default();
    host.respond(answer(404, json!({"message": "Not Found"})));
    host.respond(answer(401, json!({"message": "Bad credentials"})));
    let github = DialectHarness::<GitHub>::new(json!({"token": TOKEN})).with_host(host);
    let changes = github.changes(&json_hook("pull_request", &pull_request("opened")));
    assert_eq!(changes.len(), 1);
    assert!(changes[0].files.is_empty());
    assert_eq!(github.host().requests().len(), 2);
    let warnings: Vec<_> = github
        .host()
        .logs()
        .into_iter()
        .filter(|(l, _)| *l == LogLevel::Warn)
        .collect();
    assert_eq!(warnings.len(), 2);
    assert!(warnings.iter().all(|(_, line)| !line.contains(TOKEN)));
}

#[test]
fn unusable_api_answers_count_as_no_answer() {
    let host = TestHost::default();
    host.respond(Ok(HttpResponse {
        status: 200,
        headers: vec![],
        body: b"<html>".to_vec(),
    }));
    host.respond(answer(200, json!({"files": "not a list"})));
    let changes = DialectHarness::<GitHub>::new(json!({}))
        .with_host(host)
        .changes(&json_hook("pull_request", &pull_request("opened")));
    assert_eq!(changes.len(), 1);
    assert!(changes[0].files.is_empty());
}

#[test]
fn an_unreachable_api_is_an_internal_error_that_hides_the_token() {
    let host = TestHost::default();
    host.respond(Err("connection refused".into()));
    let error = DialectHarness::<GitHub>::new(json!({"token": TOKEN}))
        .with_host(host)
        .refusal(
            &json_hook("pull_request", &pull_request("opened")),
            ErrorClass::Internal,
        );
    assert!(error.contains("connection refused"));
    assert!(!error.contains(TOKEN));
}

#[test]
fn comments_pluralise_and_spell_out_a_missing_description() {
    let host = TestHost::default();
    host.respond(commit_answer("x"));
    host.respond(files_answer());
    let mut payload = pull_request("opened");
    set(&mut payload, "/pull_request/commits", json!(3));
    set(&mut payload, "/pull_request/body", Value::Null);
    let changes = DialectHarness::<GitHub>::new(json!({}))
        .with_host(host)
        .changes(&json_hook("pull_request", &payload));
    assert_eq!(
        changes[0].comments.as_deref(),
        Some("GitHub Pull Request #42 (3 commits)\nFaster launches\nNone")
    );
}

#[test]
fn whitelisted_pull_request_leaves_become_properties() {
    let host = TestHost::default();
    host.respond(commit_answer("x"));
    host.respond(files_answer());
    let config = json!({"github_property_whitelist": ["github.*"]});
    let changes = DialectHarness::<GitHub>::new(config)
        .with_host(host)
        .changes(&json_hook("pull_request", &pull_request("opened")));
    let properties = &changes[0].properties;
    assert_eq!(properties["github.number"], json!(42));
    assert_eq!(properties["github.head.sha"], json!("feedface01"));
    assert_eq!(
        properties["github.base.repo.full_name"],
        json!("acme/rocket")
    );
    assert_eq!(properties["github.merged_at"], Value::Null);
    assert_eq!(properties["github.labels"], json!([]));
    assert_eq!(properties["basename"], json!("main"));
    // Only the pull_request object is walked, not the whole payload.
    assert!(!properties.contains_key("github.sender.login"));
    assert!(!properties.contains_key("github.pull_request.number"));
}

#[test]
fn missing_pull_request_fields_are_named_before_any_api_call() {
    for (pointer, message) in [
        ("/number", "the payload lacks 'number'"),
        (
            "/pull_request/head/sha",
            "the payload lacks 'pull_request.head.sha'",
        ),
        (
            "/pull_request/_links/html",
            "the payload lacks 'pull_request._links.html'",
        ),
        (
            "/pull_request/title",
            "the payload lacks 'pull_request.title'",
        ),
        (
            "/repository/full_name",
            "the payload lacks 'repository.full_name'",
        ),
    ] {
        let mut payload = pull_request("opened");
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let parent = if parent.is_empty() {
            &mut payload
        } else {
            payload.pointer_mut(parent).unwrap()
        };
        parent.as_object_mut().unwrap().remove(key);
        let github = DialectHarness::<GitHub>::new(json!({}));
        let error = github.refusal(&json_hook("pull_request", &payload), ErrorClass::BadRequest);
        assert_eq!(error, message);
        assert!(github.host().requests().is_empty(), "{pointer}");
    }
    let mut payload = pull_request("opened");
    set(
        &mut payload,
        "/repository/full_name",
        json!("acme/../../user"),
    );
    let github = DialectHarness::<GitHub>::new(json!({}));
    let error = github.refusal(&json_hook("pull_request", &payload), ErrorClass::BadRequest);
    assert_eq!(error, "'repository.full_name' is not an owner/name pair");
    assert!(github.host().requests().is_empty());
}

#[test]
fn fields_needed_only_for_the_change_are_checked_for_built_actions() {
    let mut payload = pull_request("opened");
    payload.as_object_mut().unwrap().remove("sender");
    let host = TestHost::default();
    host.respond(commit_answer("x"));
    let error = DialectHarness::<GitHub>::new(json!({}))
        .with_host(host)
        .handle(&json_hook("pull_request", &payload))
        .unwrap_err();
    assert_eq!(error.message, "the payload lacks 'sender'");

    set(&mut payload, "/action", json!("closed"));
    let host = TestHost::default();
    host.respond(commit_answer("x"));
    assert!(DialectHarness::<GitHub>::new(json!({}))
        .with_host(host)
        .changes(&json_hook("pull_request", &payload))
        .is_empty());
}

#[test]
fn path_values_from_the_payload_stay_one_segment() {
    let host = TestHost::default();
    host.respond(commit_answer("x"));
    let mut payload = pull_request("closed");
    set(
        &mut payload,
        "/pull_request/head/sha",
        json!("../../user?x=1"),
    );
    let github = DialectHarness::<GitHub>::new(json!({})).with_host(host);
    github.changes(&json_hook("pull_request", &payload));
    assert_eq!(
        github.host().requests()[0].url,
        "https://api.github.com/repos/acme/rocket/commits/..%2F..%2Fuser%3Fx%3D1"
    );
}

#[test]
fn debug_logs_the_event() {
    let github = DialectHarness::<GitHub>::new(json!({"debug": true}));
    github.changes(&json_hook("ping", &json!({"zen": "Keep it simple."})));
    let logs = github.host().logs();
    assert_eq!(logs.len(), 1);
    assert!(logs[0].1.starts_with("X-GitHub-Event: ping, payload: "));
    let quiet = DialectHarness::<GitHub>::new(json!({}));
    quiet.changes(&json_hook("ping", &json!({})));
    assert!(quiet.host().logs().is_empty());
}
