//! The dialect end to end, through the plugin boundary, with Bitbucket Cloud
//! payloads written for these tests.

use buildmaster_plugin_api::signature::{hmac_hex, Algorithm};
use buildmaster_plugin_api::testing::{json_post, request, DialectHarness};
use buildmaster_plugin_api::{Change, ErrorClass};
use serde_json::{json, Value};

use super::BitbucketCloud;

const API: &str = "https://api.bitbucket.org/2.0/repositories/analytical/engine";
const WEB: &str = "https://bitbucket.org/analytical/engine";
const HEAD: &str = "4f2a9c0d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a39";
const BASE: &str = "0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c";
const HOOK: &str = "/change_hook/bitbucketcloud";

fn repository() -> Value {
    json!({
        "type": "repository",
        "full_name": "analytical/engine",
        "name": "engine",
        "scm": "git",
        "is_private": true,
        "links": {"self": {"href": API}, "html": {"href": WEB}},
        "project": {"type": "project", "key": "AE", "name": "Analytical Engine"}
    })
}

fn actor() -> Value {
    json!({"type": "user", "display_name": "Ada Lovelace", "nickname": "ada", "account_id": "5570:1"})
}

fn state(kind: &str, name: &str, hash: &str) -> Value {
    json!({"type": kind, "name": name, "target": {"type": "commit", "hash": hash}})
}

fn push(changes: Value) -> Value {
    json!({"actor": actor(), "repository": repository(), "push": {"changes": changes}})
}

fn push_one(new: Value, old: Value) -> Value {
    push(json!([{"new": new, "old": old, "created": old.is_null(), "closed": new.is_null()}]))
}

/// A pull request as Bitbucket Cloud sends it.
fn cloud_pr() -> Value {
    json!({
        "actor": actor(),
        "repository": repository(),
        "pullrequest": {
            "id": 42,
            "title": "Punch cards",
            "state": "OPEN",
            "author": {"display_name": "Charles Babbage", "nickname": "charles"},
            "source": {
                "branch": {"name": "feature/cards"},
                "commit": {"hash": HEAD},
                "repository": {"full_name": "analytical/engine"}
            },
            "destination": {"branch": {"name": "main"}, "commit": {"hash": BASE}},
            "links": {
                "self": {"href": format!("{API}/pullrequests/42")},
                "html": {"href": format!("{WEB}/pull-requests/42")}
            },
            "reviewers": [{"nickname": "grace"}]
        }
    })
}

/// A pull request with the Bitbucket Server plug-in's field names.
fn plugin_pr() -> Value {
    json!({
        "actor": actor(),
        "repository": repository(),
        "pullrequest": {
            "id": "7",
            "title": "Mill",
            "link": "https://git.example/pr/7",
            "fromRef": {"branch": {"name": "mill"}, "commit": {"hash": HEAD}},
            "toRef": {"branch": {"name": "trunk"}, "commit": {"hash": BASE}}
        }
    })
}

#[test]
fn a_branch_push_is_one_change() {
    let payload = push_one(state("branch", "main", HEAD), state("branch", "main", BASE));
    let request = json_post(HOOK, &[("X-Event-Key", "repo:push")], &payload);
    let got = DialectHarness::<BitbucketCloud>::new(json!({})).changes(&request);
    assert_eq!(
        got,
        [Change {
            author: Some("Ada Lovelace <ada>".into()),
            comments: Some(format!("Bitbucket Cloud commit {HEAD}")),
            revision: Some(HEAD.into()),
            branch: Some("refs/heads/main".into()),
            category: Some("push".into()),
            revlink: Some(format!("{WEB}/commits/{HEAD}")),
            repository: API.into(),
            project: "Analytical Engine".into(),
            src: Some("git".into()),
            ..Change::default()
        }]
    );
}

#[test]
fn tags_and_deletions_are_changes_too() {
    let cloud = DialectHarness::<BitbucketCloud>::new(json!({}));
    let created_tag = push_one(state("tag", "v1.0", HEAD), Value::Null);
    let got = &cloud.changes(&json_post(
        HOOK,
        &[("X-Event-Key", "repo:push")],
        &created_tag,
    ))[0];
    assert_eq!(got.branch.as_deref(), Some("refs/tags/v1.0"));
    assert_eq!(got.category.as_deref(), Some("push"));

    let deleted_branch = push_one(Value::Null, state("branch", "old-work", BASE));
    let got = &cloud.changes(&json_post(
        HOOK,
        &[("X-Event-Key", "repo:push")],
        &deleted_branch,
    ))[0];
    assert_eq!(got.branch.as_deref(), Some("refs/heads/old-work"));
    assert_eq!(got.category.as_deref(), Some("ref-deleted"));
    assert_eq!(got.revision.as_deref(), Some(BASE));
    assert_eq!(got.comments, Some(format!("Bitbucket Cloud commit {BASE}")));

    let deleted_tag = push_one(Value::Null, state("tag", "v0.9", BASE));
    let got = &cloud.changes(&json_post(
        HOOK,
        &[("X-Event-Key", "repo:push")],
        &deleted_tag,
    ))[0];
    assert_eq!(got.branch.as_deref(), Some("refs/tags/v0.9"));
    assert_eq!(got.category.as_deref(), Some("ref-deleted"));
}

#[test]
fn every_pushed_ref_counts_in_order() {
    let cloud = DialectHarness::<BitbucketCloud>::new(json!({}));
    let mut payload = push(json!([
        {"new": state("branch", "a", HEAD), "old": null},
        {"new": state("named_branch", "default", BASE), "old": null}
    ]));
    payload["repository"]["scm"] = json!("hg");
    payload["repository"]
        .as_object_mut()
        .unwrap()
        .remove("project");
    let got = cloud.changes(&json_post(HOOK, &[("X-Event-Key", "repo:push")], &payload));
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].branch.as_deref(), Some("refs/heads/a"));
    assert_eq!(got[1].branch, None, "only branches and tags name a ref");
    assert_eq!(got[1].revision.as_deref(), Some(BASE));
    assert!(got.iter().all(|c| c.src.as_deref() == Some("hg")));
    assert!(got.iter().all(|c| c.project == "none"));

    let nothing = json_post(HOOK, &[("X-Event-Key", "repo:push")], &push(json!([])));
    assert!(cloud.changes(&nothing).is_empty());
}

#[test]
fn cloud_pull_requests_use_cloud_field_names() {
    let cloud = DialectHarness::<BitbucketCloud>::new(json!({}));
    let url = format!("{WEB}/pull-requests/42");
    let created = json_post(HOOK, &[("X-Event-Key", "pullrequest:created")], &cloud_pr());
    assert_eq!(
        cloud.changes(&created),
        [Change {
            author: Some("Ada Lovelace <ada>".into()),
            comments: Some("Bitbucket Cloud Pull Request #42".into()),
            revision: Some(HEAD.into()),
            branch: Some("refs/pull-requests/42/merge".into()),
            category: Some("pull-created".into()),
            revlink: Some(url.clone()),
            properties: json!({"pullrequesturl": url}).as_object().unwrap().clone(),
            repository: API.into(),
            project: "Analytical Engine".into(),
            src: Some("git".into()),
            ..Change::default()
        }]
    );
    for (event, branch, category) in [
        (
            "pullrequest:updated",
            "refs/pull-requests/42/merge",
            "pull-updated",
        ),
        (
            "pullrequest:rejected",
            "refs/heads/feature/cards",
            "pull-rejected",
        ),
        ("pullrequest:fulfilled", "refs/heads/main", "pull-fulfilled"),
    ] {
        let got = &cloud.changes(&json_post(HOOK, &[("X-Event-Key", event)], &cloud_pr()))[0];
        assert_eq!(got.branch.as_deref(), Some(branch), "{event}");
        assert_eq!(got.category.as_deref(), Some(category), "{event}");
        assert_eq!(got.revision.as_deref(), Some(HEAD), "{event}");
    }
}

#[test]
fn plugin_shaped_pull_requests_are_read_too() {
    let cloud = DialectHarness::<BitbucketCloud>::new(json!({}));
    for (event, branch) in [
        ("pullrequest:created", "refs/pull-requests/7/merge"),
        ("pullrequest:rejected", "refs/heads/mill"),
        ("pullrequest:fulfilled", "refs/heads/trunk"),
    ] {
        let got = &cloud.changes(&json_post(HOOK, &[("X-Event-Key", event)], &plugin_pr()))[0];
        assert_eq!(got.branch.as_deref(), Some(branch), "{event}");
        assert_eq!(got.revision.as_deref(), Some(HEAD));
        assert_eq!(got.revlink.as_deref(), Some("https://git.example/pr/7"));
        assert_eq!(
            got.comments.as_deref(),
            Some("Bitbucket Cloud Pull Request #7")
        );
    }
}

#[test]
fn the_pull_request_author_stands_in_for_a_missing_actor() {
    let mut payload = cloud_pr();
    payload.as_object_mut().unwrap().remove("actor");
    let request = json_post(HOOK, &[("X-Event-Key", "pullrequest:updated")], &payload);
    let got = &DialectHarness::<BitbucketCloud>::new(json!({})).changes(&request)[0];
    assert_eq!(got.author.as_deref(), Some("Charles Babbage <charles>"));
}

#[test]
fn whitelisted_pull_request_fields_become_properties() {
    let cloud = DialectHarness::<BitbucketCloud>::new(
        json!({"bitbucket_property_whitelist": ["bitbucket.source.*", "*.title", "bitbucket.reviewers"]}),
    );
    let created = json_post(HOOK, &[("X-Event-Key", "pullrequest:created")], &cloud_pr());
    let got = &cloud.changes(&created)[0];
    assert_eq!(
        Value::Object(got.properties.clone()),
        json!({
            "pullrequesturl": format!("{WEB}/pull-requests/42"),
            "bitbucket.title": "Punch cards",
            "bitbucket.source.branch.name": "feature/cards",
            "bitbucket.source.commit.hash": HEAD,
            "bitbucket.source.repository.full_name": "analytical/engine",
            "bitbucket.reviewers": [{"nickname": "grace"}]
        })
    );
    // Pushes carry no properties, whatever the whitelist.
    let cloud = DialectHarness::<BitbucketCloud>::new(
        json!({"bitbucket_property_whitelist": ["bitbucket.*"]}),
    );
    let payload = push_one(state("branch", "main", HEAD), Value::Null);
    let pushed = json_post(HOOK, &[("X-Event-Key", "repo:push")], &payload);
    assert!(cloud.changes(&pushed)[0].properties.is_empty());
}

#[test]
fn the_codebase_option_is_set_on_every_change() {
    let cloud = DialectHarness::<BitbucketCloud>::new(json!({"codebase": "engine"}));
    let payload = push_one(state("branch", "main", HEAD), Value::Null);
    let pushed = json_post(HOOK, &[("X-Event-Key", "repo:push")], &payload);
    let created = json_post(HOOK, &[("X-Event-Key", "pullrequest:created")], &cloud_pr());
    assert_eq!(
        cloud.changes(&pushed)[0].codebase.as_deref(),
        Some("engine")
    );
    assert_eq!(
        cloud.changes(&created)[0].codebase.as_deref(),
        Some("engine")
    );
    let plain = DialectHarness::<BitbucketCloud>::new(json!({}));
    assert_eq!(plain.changes(&created)[0].codebase, None);
}

#[test]
fn unhandled_and_missing_events_are_refused() {
    let cloud = DialectHarness::<BitbucketCloud>::new(json!({}));
    for (event, message) in [
        (
            "pullrequest:approved",
            "Unknown event: pullrequest_approved",
        ),
        ("repo:fork", "Unknown event: repo_fork"),
    ] {
        let request = json_post(HOOK, &[("X-Event-Key", event)], &cloud_pr());
        assert_eq!(cloud.refusal(&request, ErrorClass::BadRequest), message);
    }
    let no_event = json_post(HOOK, &[], &cloud_pr());
    assert_eq!(
        cloud.refusal(&no_event, ErrorClass::BadRequest),
        "Header X-Event-Key was not present"
    );
}

#[test]
fn only_json_bodies_are_read() {
    let cloud = DialectHarness::<BitbucketCloud>::new(json!({}));
    let body = push_one(state("branch", "main", HEAD), Value::Null).to_string();
    let with_type = |content_type: &str| {
        request(
            "POST",
            HOOK,
            &[("Content-Type", content_type), ("X-Event-Key", "repo:push")],
            &body,
        )
    };
    let charset = with_type("application/json; charset=utf-8");
    assert_eq!(cloud.changes(&charset).len(), 1);
    let form = with_type("application/x-www-form-urlencoded");
    assert_eq!(
        cloud.refusal(&form, ErrorClass::BadRequest),
        "Unknown content type: application/x-www-form-urlencoded"
    );
    let untyped = request("POST", HOOK, &[("X-Event-Key", "repo:push")], &body);
    cloud.refusal(&untyped, ErrorClass::BadRequest);
}

#[test]
fn malformed_bodies_and_missing_fields_are_named() {
    let cloud = DialectHarness::<BitbucketCloud>::new(json!({}));
    let malformed = request(
        "POST",
        HOOK,
        &[
            ("Content-Type", "application/json"),
            ("X-Event-Key", "repo:push"),
        ],
        "{\"push\": ",
    );
    let message = cloud.refusal(&malformed, ErrorClass::BadRequest);
    assert!(message.starts_with("invalid JSON body"), "{message}");

    let mut no_html = push_one(state("branch", "main", HEAD), Value::Null);
    no_html["repository"]["links"]
        .as_object_mut()
        .unwrap()
        .remove("html");
    let mut no_hash = push_one(state("branch", "main", HEAD), Value::Null);
    no_hash["push"]["changes"][0]["new"]["target"] = json!({});
    let mut bad_id = cloud_pr();
    bad_id["pullrequest"]["id"] = json!("forty-two");
    let mut no_source = cloud_pr();
    no_source["pullrequest"]
        .as_object_mut()
        .unwrap()
        .remove("source");
    let mut no_nickname = cloud_pr();
    no_nickname["actor"]
        .as_object_mut()
        .unwrap()
        .remove("nickname");
    for (event, payload, message) in [
        (
            "repo:push",
            no_html,
            "the payload lacks 'repository.links.html.href'",
        ),
        (
            "repo:push",
            no_hash,
            "the payload lacks 'push.changes[0].new.target.hash'",
        ),
        (
            "repo:push",
            json!({"actor": actor(), "repository": repository()}),
            "the payload lacks 'push.changes'",
        ),
        (
            "pullrequest:created",
            bad_id,
            "'pullrequest.id' is not an integer",
        ),
        (
            "pullrequest:updated",
            no_source,
            "the payload lacks 'pullrequest.source.commit.hash'",
        ),
        (
            "pullrequest:rejected",
            no_nickname,
            "the payload lacks 'actor.nickname'",
        ),
        (
            "pullrequest:created",
            json!({"actor": actor()}),
            "the payload lacks 'pullrequest'",
        ),
    ] {
        let request = json_post(HOOK, &[("X-Event-Key", event)], &payload);
        assert_eq!(cloud.refusal(&request, ErrorClass::BadRequest), message);
    }
}

#[test]
fn a_secret_requires_a_valid_signature() {
    let cloud = DialectHarness::<BitbucketCloud>::new(json!({"secret": "babbage-1837"}));
    let payload = push_one(state("branch", "main", HEAD), Value::Null);
    let body = payload.to_string();
    let signature = format!(
        "sha256={}",
        hmac_hex(Algorithm::Sha256, b"babbage-1837", body.as_bytes())
    );
    let signed = |signature: &str| {
        json_post(
            HOOK,
            &[("X-Event-Key", "repo:push"), ("X-Hub-Signature", signature)],
            &payload,
        )
    };
    assert_eq!(cloud.changes(&signed(&signature)).len(), 1);
    let unsigned = json_post(HOOK, &[("X-Event-Key", "repo:push")], &payload);
    let forged = format!(
        "sha256={}",
        hmac_hex(Algorithm::Sha256, b"guess", body.as_bytes())
    );
    for request in [unsigned, signed(&forged)] {
        let message = cloud.refusal(&request, ErrorClass::Unauthorized);
        assert!(!message.contains("babbage-1837") && !message.contains(&signature[7..]));
    }
}

#[test]
fn bad_options_are_refused_at_start() {
    for (config, message) in [
        (
            json!({"codebase": ["a"]}),
            "options.codebase: expected a string, found a list",
        ),
        (
            json!({"bitbucket_property_whitelist": "bitbucket.*"}),
            "options.bitbucket_property_whitelist: expected a list, found a string",
        ),
        (
            json!({"secret": 5}),
            "options.secret: expected a string or a list of strings, found an integer",
        ),
        (
            json!({"codebase_generator": "x"}),
            "options.codebase_generator: unknown option \
             (known: codebase, bitbucket_property_whitelist, secret)",
        ),
    ] {
        let refused = DialectHarness::<BitbucketCloud>::try_new(config.clone());
        assert_eq!(refused.err().as_deref(), Some(message), "{config}");
    }
}
