//! The dialect end to end, through the plugin boundary, with payloads in the
//! webhook plug-in's shape written for these tests.

use buildmaster_plugin_api::signature::{hmac_hex, Algorithm};
use buildmaster_plugin_api::testing::{json_post, request, DialectHarness};
use buildmaster_plugin_api::{Change, ErrorClass};
use serde_json::{json, Value};

use super::BitbucketServer;

const REPO: &str = "https://git.example.org/projects/OPS/repos/deploy/";
const HEAD: &str = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d";
const BASE: &str = "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b";
const HOOK: &str = "/change_hook/bitbucketserver";

fn repository() -> Value {
    json!({
        "scmId": "git",
        "slug": "deploy",
        "project": {"key": "OPS", "name": "Operations"},
        "links": {"self": [{"href": format!("{REPO}browse")}]},
        "public": false,
        "fullName": "OPS/deploy"
    })
}

fn actor() -> Value {
    json!({"username": "grace", "displayName": "Grace Hopper"})
}

fn state(kind: &str, name: &str, hash: &str) -> Value {
    json!({"type": kind, "name": name, "target": {"type": "commit", "hash": hash}})
}

fn push_one(new: Value, old: Value) -> Value {
    json!({
        "actor": actor(),
        "repository": repository(),
        "push": {"changes": [{"new": new, "old": old, "created": old.is_null(), "closed": new.is_null()}]}
    })
}

fn branch_push() -> Value {
    push_one(
        state("branch", "release", HEAD),
        state("branch", "release", BASE),
    )
}

fn pull_request() -> Value {
    json!({
        "actor": actor(),
        "repository": repository(),
        "pullrequest": {
            "id": "12",
            "title": "Compile it",
            "link": "https://git.example.org/projects/OPS/repos/deploy/pull-requests/12",
            "authorLogin": "grace",
            "fromRef": {
                "branch": {"name": "compiler", "rawNode": HEAD},
                "commit": {"hash": HEAD, "message": null},
                "repository": {"links": {"self": [{"href": format!("{REPO}browse")}]}}
            },
            "toRef": {"branch": {"name": "master", "rawNode": BASE}, "commit": {"hash": BASE}}
        }
    })
}

#[test]
fn a_branch_push_is_one_change_under_either_event_name() {
    let server = DialectHarness::<BitbucketServer>::new(json!({}));
    let expected = Change {
        author: Some("Grace Hopper <grace>".into()),
        comments: Some(format!("Bitbucket Server commit {HEAD}")),
        revision: Some(HEAD.into()),
        branch: Some("refs/heads/release".into()),
        category: Some("push".into()),
        revlink: Some(format!("{REPO}commits/{HEAD}")),
        repository: REPO.into(),
        project: "Operations".into(),
        src: Some("git".into()),
        ..Change::default()
    };
    for event in ["repo:refs_changed", "repo:push"] {
        let request = json_post(HOOK, &[("X-Event-Key", event)], &branch_push());
        assert_eq!(
            server.changes(&request),
            std::slice::from_ref(&expected),
            "{event}"
        );
    }
}

#[test]
fn tags_and_deletions_are_changes_too() {
    let server = DialectHarness::<BitbucketServer>::new(json!({}));
    for (new, old, branch, category, revision) in [
        (
            state("tag", "2.0", HEAD),
            Value::Null,
            "refs/tags/2.0",
            "push",
            HEAD,
        ),
        (
            Value::Null,
            state("branch", "hotfix", BASE),
            "refs/heads/hotfix",
            "ref-deleted",
            BASE,
        ),
        (
            Value::Null,
            state("tag", "1.9", BASE),
            "refs/tags/1.9",
            "ref-deleted",
            BASE,
        ),
    ] {
        let payload = push_one(new, old);
        let request = json_post(HOOK, &[("X-Event-Key", "repo:refs_changed")], &payload);
        let got = &server.changes(&request)[0];
        assert_eq!(got.branch.as_deref(), Some(branch));
        assert_eq!(got.category.as_deref(), Some(category));
        assert_eq!(got.revision.as_deref(), Some(revision));
        assert_eq!(got.revlink, Some(format!("{REPO}commits/{revision}")));
    }
}

#[test]
fn the_repository_url_loses_only_a_trailing_browse() {
    let mut payload = branch_push();
    payload["repository"]["links"]["self"] =
        json!([{"href": "https://git.example.org/projects/OPS/repos/webserve"}, {"href": "x"}]);
    let request = json_post(HOOK, &[("X-Event-Key", "repo:refs_changed")], &payload);
    let got = &DialectHarness::<BitbucketServer>::new(json!({})).changes(&request)[0];
    assert_eq!(
        got.repository,
        "https://git.example.org/projects/OPS/repos/webserve"
    );
    assert_eq!(
        got.revlink,
        Some(format!(
            "https://git.example.org/projects/OPS/repos/webserve/commits/{HEAD}"
        ))
    );
}

#[test]
fn pull_request_events_map_to_branches_and_categories() {
    let server = DialectHarness::<BitbucketServer>::new(json!({}));
    let url = "https://git.example.org/projects/OPS/repos/deploy/pull-requests/12";
    let created = json_post(
        HOOK,
        &[("X-Event-Key", "pullrequest:created")],
        &pull_request(),
    );
    assert_eq!(
        server.changes(&created),
        [Change {
            author: Some("Grace Hopper <grace>".into()),
            comments: Some("Bitbucket Server Pull Request #12".into()),
            revision: Some(HEAD.into()),
            branch: Some("refs/pull-requests/12/merge".into()),
            category: Some("pull-created".into()),
            revlink: Some(url.into()),
            properties: json!({"pullrequesturl": url}).as_object().unwrap().clone(),
            repository: REPO.into(),
            project: "Operations".into(),
            src: Some("git".into()),
            ..Change::default()
        }]
    );
    for (event, branch, category) in [
        (
            "pullrequest:updated",
            "refs/pull-requests/12/merge",
            "pull-updated",
        ),
        (
            "pullrequest:rejected",
            "refs/heads/compiler",
            "pull-rejected",
        ),
        (
            "pullrequest:fulfilled",
            "refs/heads/master",
            "pull-fulfilled",
        ),
    ] {
        let request = json_post(HOOK, &[("X-Event-Key", event)], &pull_request());
        let got = &server.changes(&request)[0];
        assert_eq!(got.branch.as_deref(), Some(branch), "{event}");
        assert_eq!(got.category.as_deref(), Some(category), "{event}");
    }
}

#[test]
fn whitelisted_pull_request_fields_become_properties() {
    let server = DialectHarness::<BitbucketServer>::new(
        json!({"bitbucket_property_whitelist": ["bitbucket.fromRef.*", "bitbucket.i?"]}),
    );
    let updated = json_post(
        HOOK,
        &[("X-Event-Key", "pullrequest:updated")],
        &pull_request(),
    );
    let got = &server.changes(&updated)[0];
    assert_eq!(
        Value::Object(got.properties.clone()),
        json!({
            "pullrequesturl": "https://git.example.org/projects/OPS/repos/deploy/pull-requests/12",
            "bitbucket.id": "12",
            "bitbucket.fromRef.branch.name": "compiler",
            "bitbucket.fromRef.branch.rawNode": HEAD,
            "bitbucket.fromRef.commit.hash": HEAD,
            "bitbucket.fromRef.commit.message": null,
            "bitbucket.fromRef.repository.links.self": [{"href": format!("{REPO}browse")}]
        })
    );
}

#[test]
fn the_codebase_option_is_set_on_every_change() {
    let server = DialectHarness::<BitbucketServer>::new(json!({"codebase": "deploy"}));
    let pushed = json_post(
        HOOK,
        &[("X-Event-Key", "repo:refs_changed")],
        &branch_push(),
    );
    let fulfilled = json_post(
        HOOK,
        &[("X-Event-Key", "pullrequest:fulfilled")],
        &pull_request(),
    );
    assert_eq!(
        server.changes(&pushed)[0].codebase.as_deref(),
        Some("deploy")
    );
    assert_eq!(
        server.changes(&fulfilled)[0].codebase.as_deref(),
        Some("deploy")
    );
    let plain = DialectHarness::<BitbucketServer>::new(json!({}));
    assert_eq!(plain.changes(&pushed)[0].codebase, None);
}

#[test]
fn unhandled_and_missing_events_are_refused() {
    let server = DialectHarness::<BitbucketServer>::new(json!({}));
    let opened = json_post(HOOK, &[("X-Event-Key", "pr:opened")], &pull_request());
    assert_eq!(
        server.refusal(&opened, ErrorClass::BadRequest),
        "Unknown event: pr_opened"
    );
    let no_event = json_post(HOOK, &[], &branch_push());
    assert_eq!(
        server.refusal(&no_event, ErrorClass::BadRequest),
        "Header X-Event-Key is not present"
    );
}

#[test]
fn only_json_bodies_are_read() {
    let server = DialectHarness::<BitbucketServer>::new(json!({}));
    let body = branch_push().to_string();
    let with_type = |content_type: &str| {
        request(
            "POST",
            HOOK,
            &[
                ("Content-Type", content_type),
                ("X-Event-Key", "repo:refs_changed"),
            ],
            &body,
        )
    };
    let charset = with_type("application/json;charset=UTF-8");
    assert_eq!(server.changes(&charset).len(), 1);
    assert_eq!(
        server.refusal(&with_type("text/xml"), ErrorClass::BadRequest),
        "Unknown content type: 'text/xml'"
    );
}

#[test]
fn malformed_bodies_and_missing_fields_are_named() {
    let server = DialectHarness::<BitbucketServer>::new(json!({}));
    let malformed = request(
        "POST",
        HOOK,
        &[
            ("Content-Type", "application/json"),
            ("X-Event-Key", "repo:refs_changed"),
        ],
        "\u{feff}{}",
    );
    let message = server.refusal(&malformed, ErrorClass::BadRequest);
    assert!(message.starts_with("invalid JSON body"), "{message}");

    // Bitbucket Server's own payload, without the plug-in.
    let native = json!({
        "eventKey": "repo:refs_changed",
        "actor": {"name": "grace", "displayName": "Grace Hopper"},
        "repository": {"slug": "deploy", "scmId": "git", "project": {"key": "OPS", "name": "Operations"}},
        "changes": [{"ref": {"id": "refs/heads/master", "type": "BRANCH"}, "toHash": HEAD, "type": "UPDATE"}]
    });
    let mut no_links = branch_push();
    no_links["repository"]["links"]["self"] = json!([]);
    let mut no_project = branch_push();
    no_project["repository"]
        .as_object_mut()
        .unwrap()
        .remove("project");
    let mut no_to_branch = pull_request();
    no_to_branch["pullrequest"]["toRef"]
        .as_object_mut()
        .unwrap()
        .remove("branch");
    let mut no_username = pull_request();
    no_username["actor"] = json!({"name": "grace", "displayName": "Grace Hopper"});
    let mut bad_id = pull_request();
    bad_id["pullrequest"]["id"] = json!({"n": 12});
    for (event, payload, message) in [
        (
            "repo:refs_changed",
            native,
            "the payload lacks 'push.changes': Bitbucket Server's built-in webhook payload is \
             not supported, only the bitbucket-webhooks plug-in's",
        ),
        (
            "repo:refs_changed",
            no_links,
            "'repository.links.self' is an empty list",
        ),
        (
            "repo:push",
            no_project,
            "the payload lacks 'repository.project.name'",
        ),
        (
            "pullrequest:fulfilled",
            no_to_branch,
            "the payload lacks 'pullrequest.toRef.branch.name'",
        ),
        (
            "pullrequest:updated",
            no_username,
            "the payload lacks 'actor.username'",
        ),
        (
            "pullrequest:created",
            bad_id,
            "'pullrequest.id' is not an integer",
        ),
    ] {
        let request = json_post(HOOK, &[("X-Event-Key", event)], &payload);
        assert_eq!(server.refusal(&request, ErrorClass::BadRequest), message);
    }
}

#[test]
fn a_secret_requires_a_valid_signature() {
    let server = DialectHarness::<BitbucketServer>::new(json!({"secret": "cobol-1959"}));
    let body = pull_request().to_string();
    let signature = format!(
        "sha256={}",
        hmac_hex(Algorithm::Sha256, b"cobol-1959", body.as_bytes())
    );
    let signed = |signature: &str| {
        json_post(
            HOOK,
            &[
                ("X-Event-Key", "pullrequest:created"),
                ("X-Hub-Signature", signature),
            ],
            &pull_request(),
        )
    };
    assert_eq!(server.changes(&signed(&signature)).len(), 1);
    let unsigned = json_post(
        HOOK,
        &[("X-Event-Key", "pullrequest:created")],
        &pull_request(),
    );
    let wrong = signature.replace("sha256=", "sha256=0");
    for request in [unsigned, signed(&wrong)] {
        let message = server.refusal(&request, ErrorClass::Unauthorized);
        assert!(!message.contains("cobol-1959") && !message.contains(&signature[7..]));
    }
}

#[test]
fn bad_options_are_refused_at_start() {
    for (config, message) in [
        (
            json!({"codebase": 3}),
            "options.codebase: expected a string, found an integer",
        ),
        (
            json!({"bitbucket_property_whitelist": [true]}),
            "options.bitbucket_property_whitelist[0]: expected a string, found a boolean",
        ),
        (json!({"secret": ""}), "options.secret: must not be empty"),
        (
            json!({"property_whitelist": []}),
            "options.property_whitelist: unknown option \
             (known: codebase, bitbucket_property_whitelist, secret)",
        ),
    ] {
        let refused = DialectHarness::<BitbucketServer>::try_new(config.clone());
        assert_eq!(refused.err().as_deref(), Some(message), "{config}");
    }
}
