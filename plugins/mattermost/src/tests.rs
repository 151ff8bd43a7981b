use buildmaster_plugin_api::testing::{form_post, json_post, request, DialectHarness};
use buildmaster_plugin_api::{Change, LogLevel};
use serde_json::{json, Value};

use super::*;

const HOOK: &str = "/change_hook/mattermost";
const TOKEN: &str = "tok-3141";

fn options() -> Value {
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

/// The slash command posted as a form with [`form`]`(fields)`.
fn slash(fields: &[(&str, Option<&str>)]) -> Request {
    form_post(HOOK, &form(fields))
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

/// Asserts a refusal: an answer (not an error) with status 200 (the only one
/// Mattermost shows), no change, and the text contains `part`.
fn assert_refused(answer: Result<HookOutcome, HookError>, part: &str) {
    let outcome = answer.expect("an answer");
    let (status, text) = reply(&outcome);
    assert_eq!(status, 200, "{text}");
    assert!(outcome.changes.is_empty());
    assert!(text.contains(part), "{text:?} lacks {part:?}");
    assert!(!text.contains(TOKEN));
}

#[test]
fn build_with_repo_and_branch_records_the_change() {
    let mattermost = DialectHarness::<Mattermost>::new(options());
    let outcome = mattermost
        .handle(&slash(&[("text", Some("widget release-2"))]))
        .unwrap();
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
    let mattermost = DialectHarness::<Mattermost>::new(options());
    let change = &mattermost.changes(&slash(&[("text", Some("widget"))]))[0];
    assert_eq!(change.branch.as_deref(), Some("master"));
    assert_eq!(change.revision.as_deref(), Some(""));
    assert_eq!(change.project, "mattermost_build_widget_master");

    let outcome = mattermost
        .handle(&slash(&[(
            "text",
            Some("\t widget  hotfix   9e8d7c  please\n"),
        )]))
        .unwrap();
    let change = &outcome.changes[0];
    assert_eq!(change.branch.as_deref(), Some("hotfix"));
    assert_eq!(change.revision.as_deref(), Some("9e8d7c"));
    assert_eq!(change.project, "mattermost_build_widget_hotfix");
    assert!(reply(&outcome).1.ends_with("at revision 9e8d7c."));
}

#[test]
fn a_get_with_a_query_string_works_too() {
    let path = format!("{HOOK}?{}", form(&[("text", Some("gadget dev"))]));
    let mattermost = DialectHarness::<Mattermost>::new(options());
    let changes = mattermost.changes(&request("GET", &path, &[], ""));
    assert_eq!(changes[0].project, "mattermost_build_gadget_dev");
}

#[test]
fn a_wrong_or_missing_token_is_refused_without_showing_the_token() {
    let mattermost = DialectHarness::<Mattermost>::new(options());
    assert_refused(
        mattermost.handle(&slash(&[("token", Some("tok-3142"))])),
        "Invalid token",
    );
    assert_refused(
        mattermost.handle(&slash(&[("token", Some(""))])),
        "Invalid token",
    );
    assert_refused(
        mattermost.handle(&slash(&[("token", None)])),
        "Invalid token",
    );
    // The token is checked first.
    let outcome = mattermost.handle(&slash(&[
        ("token", Some("x")),
        ("channel_name", Some("random")),
    ]));
    assert_refused(outcome, "Invalid token");
}

/// A slash command as a real Mattermost server posts it: the token in an
/// `Authorization: Token …` header, and (unless `fields` leaves it out) in the form.
fn with_header(authorization: &str, fields: &[(&str, Option<&str>)]) -> Request {
    request(
        "POST",
        HOOK,
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Authorization", authorization),
        ],
        &form(fields),
    )
}

#[test]
fn the_token_may_come_in_the_authorization_header() {
    let mattermost = DialectHarness::<Mattermost>::new(options());
    let header = format!("Token {TOKEN}");
    assert_eq!(mattermost.changes(&with_header(&header, &[])).len(), 1);
    assert_eq!(
        mattermost
            .changes(&with_header(&header, &[("token", None)]))
            .len(),
        1
    );
    let lower = format!("token {TOKEN}");
    assert_eq!(
        mattermost
            .changes(&with_header(&lower, &[("token", None)]))
            .len(),
        1
    );
    // Both present: both must match.
    assert_refused(
        mattermost.handle(&with_header("Token tok-0000", &[])),
        "Invalid token",
    );
    assert_refused(
        mattermost.handle(&with_header(&header, &[("token", Some("tok-0000"))])),
        "Invalid token",
    );
    assert_refused(
        mattermost.handle(&with_header("Token tok-0000", &[("token", None)])),
        "Invalid token",
    );
    // Basic credentials (for change_hook_auth) carry no token.
    let basic = "Basic dXNlcjpwYXNz";
    assert_eq!(mattermost.changes(&with_header(basic, &[])).len(), 1);
    assert_refused(
        mattermost.handle(&with_header(basic, &[("token", None)])),
        "Invalid token",
    );
    assert_refused(
        mattermost.handle(&with_header("Token", &[("token", None)])),
        "Invalid token",
    );
}

#[test]
fn a_repository_that_could_escape_is_refused_with_the_reason() {
    let mattermost = DialectHarness::<Mattermost>::new(options());
    assert_refused(
        mattermost.handle(&slash(&[("text", Some("../../etc master"))])),
        "Repository '../../etc' is not allowed: it must not contain '..'",
    );
    assert_refused(
        mattermost.handle(&slash(&[("text", Some("-oProxyCommand=x"))])),
        "must not start with '-'",
    );
    assert_refused(
        mattermost.handle(&slash(&[("text", Some("/srv/web"))])),
        "must not start with '/'",
    );
    assert_refused(
        mattermost.handle(&slash(&[("text", Some("web\u{1b}[31m"))])),
        "control characters",
    );
}

#[test]
fn only_the_configured_channel_may_run_the_command() {
    let mattermost = DialectHarness::<Mattermost>::new(options());
    let outcome = mattermost.handle(&slash(&[("channel_name", Some("town-square"))]));
    assert_refused(
        outcome,
        "Only channel 'builds' may run this command, not 'town-square'",
    );
    assert_refused(
        mattermost.handle(&slash(&[("channel_name", None)])),
        "Only channel 'builds'",
    );

    let mut any_channel = options();
    any_channel.as_object_mut().unwrap().remove("channel");
    let any_channel = DialectHarness::<Mattermost>::new(any_channel);
    for channel in [Some("town-square"), None] {
        let changes = any_channel.changes(&slash(&[("channel_name", channel)]));
        assert_eq!(changes.len(), 1, "{channel:?}");
    }
}

#[test]
fn a_missing_text_field_or_blank_text_is_refused() {
    let mattermost = DialectHarness::<Mattermost>::new(options());
    assert_refused(
        mattermost.handle(&slash(&[("text", None)])),
        "no 'text' field",
    );
    assert_refused(
        mattermost.handle(&slash(&[("text", Some("  \t "))])),
        "Missing parameters",
    );
    assert_refused(
        mattermost.handle(&slash(&[("text", Some(""))])),
        "usage: /build <repo>",
    );
}

#[test]
fn only_the_build_command_is_accepted_and_it_is_checked_after_the_text() {
    let mattermost = DialectHarness::<Mattermost>::new(options());
    assert_refused(
        mattermost.handle(&slash(&[("command", Some("/deploy"))])),
        "Unknown command '/deploy'",
    );
    assert_refused(
        mattermost.handle(&slash(&[("command", Some("/Build"))])),
        "Unknown command",
    );
    assert_refused(
        mattermost.handle(&slash(&[("command", None)])),
        "no 'command' field",
    );
    let outcome = mattermost.handle(&slash(&[("command", Some("/deploy")), ("text", Some(" "))]));
    assert_refused(outcome, "Missing parameters");
}

#[test]
fn a_body_that_is_not_a_form_is_refused() {
    let json_body = json_post(
        HOOK,
        &[],
        &json!({"token": TOKEN, "command": "/build", "text": "widget"}),
    );
    let mattermost = DialectHarness::<Mattermost>::new(options());
    assert_refused(mattermost.handle(&json_body), "form-encoded");
    let untyped = request("POST", HOOK, &[], &form(&[]));
    assert_refused(mattermost.handle(&untyped), "form-encoded");
}

#[test]
fn a_form_with_undecodable_bytes_is_refused_not_failed() {
    let body = form(&[]).replace(&format!("token={TOKEN}"), "token=%C3%28%FF");
    let mattermost = DialectHarness::<Mattermost>::new(options());
    assert_refused(mattermost.handle(&form_post(HOOK, &body)), "Invalid token");
}

#[test]
fn refusals_are_logged_for_the_operator() {
    let mattermost = DialectHarness::<Mattermost>::new(options());
    mattermost
        .handle(&slash(&[("command", Some("/deploy"))]))
        .unwrap();
    let logs = mattermost.host().logs();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].0, LogLevel::Info);
    assert!(logs[0]
        .1
        .starts_with("slash command refused: Unknown command"));
}

#[test]
fn options_are_checked_when_the_dialect_is_built() {
    for (options, message) in [
        (
            json!({"repo_base_url": ""}),
            "options.token: required: the slash command's token",
        ),
        (
            json!({"token": "", "repo_base_url": ""}),
            "options.token: must not be empty",
        ),
        (
            json!({"token": TOKEN}),
            "options.repo_base_url: required, e.g. \"git@github.com:example/\"",
        ),
        (
            json!({"token": 5, "repo_base_url": ""}),
            "options.token: expected a string or a list of strings, found an integer",
        ),
        (
            json!({"token": TOKEN, "repo_base_url": "", "channel": ["a"]}),
            "options.channel: expected a string, found a list",
        ),
        (
            json!({"token": TOKEN, "repo_base_url": "", "channel": ""}),
            "options.channel: must not be empty (leave it out to allow any)",
        ),
        (
            json!({"token": TOKEN, "repo_base_url": ["x"]}),
            "options.repo_base_url: expected a string, found a list",
        ),
    ] {
        let error = DialectHarness::<Mattermost>::try_new(options.clone()).err();
        assert_eq!(error.as_deref(), Some(message), "{options}");
    }
    let mattermost =
        DialectHarness::<Mattermost>::new(json!({"token": TOKEN, "repo_base_url": ""}));
    assert_eq!(mattermost.changes(&slash(&[]))[0].repository, "widget");
}

#[test]
fn unknown_options_are_refused_without_showing_the_token() {
    let options = json!({"token": TOKEN, "repo_base_url": "", "chanel": TOKEN});
    let error = DialectHarness::<Mattermost>::try_new(options).err();
    assert_eq!(
        error.as_deref(),
        Some("options.chanel: unknown option (known: token, channel, repo_base_url)")
    );
}
