use buildmaster_plugin_api::testing::{form_post, request, run_dialect, TestHost};
use buildmaster_plugin_api::{Change, ErrorClass, LogLevel};
use serde_json::{json, Value};

use super::*;

const TOKEN: &str = "tok-3141";

fn config() -> Value {
    json!({"token": TOKEN, "channel": "builds", "repo_base_url": "https://git.example.net/team/"})
}

/// A slash-command form as Mattermost posts it, with `fields` replacing or adding
/// to the defaults (a `None` value leaves the field out).
fn form(fields: &[(&str, Option<&str>)]) -> String {
    let mut all: Vec<(&str, Option<&str>)> = vec![
        ("token", Some(TOKEN)),
        ("team_id", Some("t1")),
        ("channel_id", Some("c1")),
        ("channel_name", Some("builds")),
        ("user_name", Some("grace")),
        ("command", Some("/build")),
        ("text", Some("widget")),
        (
            "response_url",
            Some("https://chat.example.net/hooks/commands/x"),
        ),
    ];
    for (name, value) in fields {
        match all.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = *value,
            None => all.push((name, *value)),
        }
    }
    all.iter()
        .filter_map(|(n, v)| Some(format!("{n}={}", encode(v.as_ref()?))))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            b' ' => "+".to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn run_with(config: &Value, request: &Request) -> (HookOutcome, TestHost) {
    let host = TestHost::default();
    let outcome = run_dialect::<Mattermost>(config, request, &host).expect("an answer");
    (outcome, host)
}

fn post(fields: &[(&str, Option<&str>)]) -> HookOutcome {
    run_with(
        &config(),
        &form_post("/change_hook/mattermost", &form(fields)),
    )
    .0
}

/// The status and the displayed text of a reply, after checking its JSON shape.
fn reply(outcome: &HookOutcome) -> (u16, String) {
    let response = outcome.response.as_ref().expect("a JSON reply");
    assert_eq!(response.content_type, "application/json");
    let body: Value = serde_json::from_slice(&response.body).expect("JSON body");
    assert_eq!(body["response_type"], "ephemeral");
    let text = body["text"].as_str().expect("a text").to_string();
    (response.status, text)
}

/// Asserts a refusal: status 200 (the only one Mattermost shows), no change,
/// and the text contains `part`.
fn assert_refused(outcome: &HookOutcome, part: &str) {
    let (status, text) = reply(outcome);
    assert_eq!(status, 200, "{text}");
    assert!(outcome.changes.is_empty());
    assert!(text.contains(part), "{text:?} lacks {part:?}");
    assert!(!text.contains(TOKEN));
}

#[test]
fn build_with_repo_and_branch_records_the_change() {
    let outcome = post(&[("text", Some("widget release-2"))]);
    assert_eq!(
        outcome.changes,
        vec![Change {
            author: Some("buildbot".into()),
            comments: Some("Build from mattermost".into()),
            revision: Some(String::new()),
            branch: Some("release-2".into()),
            category: Some("mattermost".into()),
            repository: "https://git.example.net/team/widget".into(),
            project: "mattermost_build_widget_release-2".into(),
            ..Change::default()
        }]
    );
    let change = &outcome.changes[0];
    assert_eq!(change.revlink.as_deref(), Some(""));
    assert!(change.files.is_empty() && change.properties.is_empty());
    assert_eq!((change.src.as_deref(), change.when_timestamp), (None, None));
    assert_eq!(
        reply(&outcome),
        (
            200,
            "Build queued: widget on branch release-2 at the latest revision.".into()
        )
    );
}

#[test]
fn branch_defaults_to_master_and_extra_words_are_ignored() {
    let change = &post(&[("text", Some("widget"))]).changes[0];
    assert_eq!(change.branch.as_deref(), Some("master"));
    assert_eq!(change.revision.as_deref(), Some(""));
    assert_eq!(change.project, "mattermost_build_widget_master");

    let outcome = post(&[("text", Some("\t widget  hotfix   9e8d7c  please\n"))]);
    let change = &outcome.changes[0];
    assert_eq!(change.branch.as_deref(), Some("hotfix"));
    assert_eq!(change.revision.as_deref(), Some("9e8d7c"));
    assert_eq!(change.project, "mattermost_build_widget_hotfix");
    assert!(reply(&outcome).1.ends_with("at revision 9e8d7c."));
}

#[test]
fn a_get_with_a_query_string_works_too() {
    let path = format!(
        "/change_hook/mattermost?{}",
        form(&[("text", Some("gadget dev"))])
    );
    let (outcome, _) = run_with(&config(), &request("GET", &path, &[], ""));
    assert_eq!(outcome.changes[0].project, "mattermost_build_gadget_dev");
}

#[test]
fn a_wrong_or_missing_token_is_refused_without_showing_the_token() {
    assert_refused(&post(&[("token", Some("tok-3142"))]), "Invalid token");
    assert_refused(&post(&[("token", Some(""))]), "Invalid token");
    assert_refused(&post(&[("token", None)]), "Invalid token");
    // The token is checked first.
    let outcome = post(&[("token", Some("x")), ("channel_name", Some("random"))]);
    assert_refused(&outcome, "Invalid token");
}

/// A slash command as a real Mattermost server posts it: the token in an
/// `Authorization: Token …` header, and (unless `fields` leaves it out) in the form.
fn post_with_header(authorization: &str, fields: &[(&str, Option<&str>)]) -> HookOutcome {
    let request = request(
        "POST",
        "/change_hook/mattermost",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Authorization", authorization),
        ],
        &form(fields),
    );
    run_with(&config(), &request).0
}

#[test]
fn the_token_may_come_in_the_authorization_header() {
    let header = format!("Token {TOKEN}");
    assert_eq!(post_with_header(&header, &[]).changes.len(), 1);
    assert_eq!(
        post_with_header(&header, &[("token", None)]).changes.len(),
        1
    );
    let lower = format!("token {TOKEN}");
    assert_eq!(
        post_with_header(&lower, &[("token", None)]).changes.len(),
        1
    );
    // Both present: both must match.
    assert_refused(&post_with_header("Token tok-0000", &[]), "Invalid token");
    assert_refused(
        &post_with_header(&header, &[("token", Some("tok-0000"))]),
        "Invalid token",
    );
    assert_refused(
        &post_with_header("Token tok-0000", &[("token", None)]),
        "Invalid token",
    );
    // Basic credentials (for change_hook_auth) carry no token.
    let basic = "Basic dXNlcjpwYXNz";
    assert_eq!(post_with_header(basic, &[]).changes.len(), 1);
    assert_refused(
        &post_with_header(basic, &[("token", None)]),
        "Invalid token",
    );
    assert_refused(
        &post_with_header("Token", &[("token", None)]),
        "Invalid token",
    );
}

#[test]
fn a_repository_that_could_escape_is_refused_with_the_reason() {
    assert_refused(
        &post(&[("text", Some("../../etc master"))]),
        "Repository '../../etc' is not allowed: it must not contain '..'",
    );
    assert_refused(
        &post(&[("text", Some("-oProxyCommand=x"))]),
        "must not start with '-'",
    );
    assert_refused(
        &post(&[("text", Some("/srv/web"))]),
        "must not start with '/'",
    );
    assert_refused(
        &post(&[("text", Some("web\u{1b}[31m"))]),
        "control characters",
    );
}

#[test]
fn only_the_configured_channel_may_run_the_command() {
    let outcome = post(&[("channel_name", Some("town-square"))]);
    assert_refused(
        &outcome,
        "Only channel 'builds' may run this command, not 'town-square'",
    );
    assert_refused(&post(&[("channel_name", None)]), "Only channel 'builds'");

    let mut any_channel = config();
    any_channel.as_object_mut().unwrap().remove("channel");
    for channel in [Some("town-square"), None] {
        let body = form(&[("channel_name", channel)]);
        let (outcome, _) = run_with(&any_channel, &form_post("/change_hook/mattermost", &body));
        assert_eq!(outcome.changes.len(), 1, "{channel:?}");
    }
}

#[test]
fn a_missing_text_field_or_blank_text_is_refused() {
    assert_refused(&post(&[("text", None)]), "no 'text' field");
    assert_refused(&post(&[("text", Some("  \t "))]), "Missing parameters");
    assert_refused(&post(&[("text", Some(""))]), "usage: /build <repo>");
}

#[test]
fn only_the_build_command_is_accepted_and_it_is_checked_after_the_text() {
    assert_refused(
        &post(&[("command", Some("/deploy"))]),
        "Unknown command '/deploy'",
    );
    assert_refused(&post(&[("command", Some("/Build"))]), "Unknown command");
    assert_refused(&post(&[("command", None)]), "no 'command' field");
    let outcome = post(&[("command", Some("/deploy")), ("text", Some(" "))]);
    assert_refused(&outcome, "Missing parameters");
}

#[test]
fn a_body_that_is_not_a_form_is_refused() {
    let json_body = request(
        "POST",
        "/change_hook/mattermost",
        &[("Content-Type", "application/json")],
        r#"{"token": "tok-3141", "command": "/build", "text": "widget"}"#,
    );
    let (outcome, _) = run_with(&config(), &json_body);
    assert_refused(&outcome, "form-encoded");
    let untyped = request("POST", "/change_hook/mattermost", &[], &form(&[]));
    assert_refused(&run_with(&config(), &untyped).0, "form-encoded");
}

#[test]
fn a_form_with_undecodable_bytes_is_refused_not_failed() {
    let body = form(&[]).replace(&format!("token={TOKEN}"), "token=%C3%28%FF");
    let outcome = run_with(&config(), &form_post("/change_hook/mattermost", &body)).0;
    assert_refused(&outcome, "Invalid token");
}

#[test]
fn refusals_are_logged_for_the_operator() {
    let body = form(&[("command", Some("/deploy"))]);
    let (_, host) = run_with(&config(), &form_post("/change_hook/mattermost", &body));
    let logs = host.logs();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].0, LogLevel::Info);
    assert!(logs[0]
        .1
        .starts_with("slash command refused: Unknown command"));
}

#[test]
fn options_are_checked_when_the_dialect_is_built() {
    let build = |config: Value| {
        run_dialect::<Mattermost>(
            &config,
            &form_post("/change_hook/mattermost", &form(&[])),
            &TestHost::default(),
        )
    };
    for (config, message) in [
        (json!({"repo_base_url": ""}), "option 'token' is required"),
        (
            json!({"token": "", "repo_base_url": ""}),
            "option 'token' is required",
        ),
        (json!(true), "option 'token' is required"),
        (
            json!({"token": TOKEN}),
            "option 'repo_base_url' is required",
        ),
        (
            json!({"token": 5, "repo_base_url": ""}),
            "option 'token' must be a string",
        ),
        (
            json!({"token": TOKEN, "repo_base_url": "", "channel": ["a"]}),
            "option 'channel' must be a string",
        ),
        (
            json!({"token": TOKEN, "repo_base_url": "", "channel": ""}),
            "option 'channel' must not be empty",
        ),
        (
            json!({"token": TOKEN, "repo_base_url": ["x"]}),
            "option 'repo_base_url' must be a string",
        ),
        (
            json!({"token": TOKEN, "repo_base_url": "", "chanel": "a"}),
            "unknown option 'chanel'",
        ),
        (json!("options"), "must be a table"),
    ] {
        let err = build(config.clone()).unwrap_err();
        assert_eq!(err.class, ErrorClass::Internal, "{config}");
        assert!(err.message.contains(message), "{config}: {}", err.message);
        assert!(!err.message.contains(TOKEN));
    }
    let outcome = build(json!({"token": TOKEN, "repo_base_url": ""})).unwrap();
    assert_eq!(outcome.changes[0].repository, "widget");
}
