//! The Mattermost slash command as a real Mattermost server sends it: a form
//! with the token in an `Authorization: Token …` header (and the `token`
//! field), on a master whose other hooks need `change_hook_auth`; every reply
//! 200 with Mattermost's JSON, since Mattermost shows the user nothing else;
//! and the whole flow from `/build` to a finished build.

use buildmaster_e2e::{run_cli, wait_until, Basedir, Master, MockApi, Reply};
use serde_json::Value;

const TOKEN: &str = "mm-slash-token";

/// A master with `change_hook_auth`, the mattermost dialect exempt from it, a
/// local worker, and a builder that a scheduler on `mattermost_build_web_*`
/// feeds.
fn config(exempt: bool) -> String {
    format!(
        r#"
[www]
port = "127.0.0.1:0"
change_hook_auth = ["memory:ci:hook-password"]

[www.change_hook_dialects]
base = true

[www.change_hook_dialects.mattermost]
token = "{TOKEN}"
channel = "ci"
repo_base_url = "https://git.example.org/team/"
change_hook_auth = {}

[[workers]]
type = "local"
name = "local"

[[builders]]
name = "web"
workernames = ["local"]

[[builders.steps]]
type = "shell"
name = "show"
command = "echo building %(src::repository)s on %(src::branch)s"

[[schedulers]]
type = "single_branch"
name = "mattermost-web"
builder_names = ["web"]
change_filter = {{ project_re = "mattermost_build_web_", category = "mattermost" }}
"#,
        !exempt
    )
}

/// Posts `/build <text>` in `channel` the way Mattermost's server does
/// (command.go): the slash command's fields as a form, its token in the
/// `Authorization` header; `extra` adds form fields.
fn slash(master: &Master, authorization: &str, channel: &str, text: &str, extra: &str) -> Reply {
    let body = format!(
        "channel_id=7ds1wzp9nfyfxxzp4vhdsyhxwr&channel_name={channel}&command=%2Fbuild\
         &response_url=https%3A%2F%2Fchat.example.org%2Fhooks%2Fcommands%2Fx\
         &team_domain=example&team_id=rdc9bgriktyx9p4kowh3dmgqyc&text={}\
         &trigger_id=dHJpZ2dlcg&user_id=8xk4ajz3bf8uxgbe7dqgnwf4ye&user_name=alice{extra}",
        text.replace(' ', "+")
    );
    master.send(
        "POST",
        "/change_hook/mattermost",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Accept", "application/json"),
            ("Authorization", authorization),
        ],
        body.as_bytes(),
    )
}

/// What Mattermost would show the user: only a 200 reply's JSON text.
fn shown(reply: &Reply) -> String {
    assert_eq!(
        reply.status, 200,
        "Mattermost shows only 200: {}",
        reply.body
    );
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let json: Value = serde_json::from_str(&reply.body).expect("Mattermost's JSON");
    assert_eq!(json["response_type"], "ephemeral");
    json["text"].as_str().expect("a text").to_string()
}

#[test]
fn a_slash_command_runs_a_build_with_change_hook_auth_on_the_other_hooks() {
    let master = Master::start_with(&config(true));
    let token = format!("Token {TOKEN}");
    let text = shown(&slash(&master, &token, "ci", "web main", ""));
    assert_eq!(
        text,
        "Build queued: web on branch main at the latest revision."
    );
    let changes = master.changes();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0]["project"], "mattermost_build_web_main");
    assert_eq!(changes[0]["repository"], "https://git.example.org/team/web");
    let build = master.wait_for_build(1);
    assert_eq!(build["results"], 0, "{build}");
    assert_eq!(build["properties"]["branch"][0], "main");

    // The other hooks still need the Basic credentials.
    let reply = master.post_form("/change_hook/base", "comments=x");
    assert_eq!(reply.status, 401);
    assert_eq!(master.changes().len(), 1);
    let log = master.log();
    assert!(
        log.contains("hook accepted: 1 change(s) stored") && log.contains("dialect=mattermost"),
        "{log}"
    );
    assert!(
        log.contains("hook refused: change_hook_auth credentials missing or wrong"),
        "{log}"
    );
}

#[test]
fn every_refusal_is_a_200_reply_that_says_why_and_stores_nothing() {
    let master = Master::start_with(&config(true));
    let token = format!("Token {TOKEN}");
    for (authorization, channel, text, extra, why) in [
        ("Token wrong", "ci", "web", "", "Invalid token."),
        (&token, "ci", "web", "&token=wrong", "Invalid token."),
        (&token, "ci", "", "", "Missing parameters"),
        (&token, "ci", "../../etc", "", "must not contain '..'"),
        (&token, "ci", "-x", "", "must not start with '-'"),
        (&token, "random", "web", "", "Only channel 'ci'"),
    ] {
        let shown = shown(&slash(&master, authorization, channel, text, extra));
        assert!(shown.contains(why), "{text:?}: {shown}");
        assert!(!shown.contains(TOKEN));
    }
    assert!(master.changes().is_empty());
    // The token field alone (older integrations) is accepted too.
    let reply = master.post_form(
        "/change_hook/mattermost",
        &format!("token={TOKEN}&channel_name=ci&command=%2Fbuild&text=web+dev"),
    );
    assert!(shown(&reply).starts_with("Build queued: web on branch dev"));
}

#[test]
fn without_the_opt_out_change_hook_auth_refuses_mattermost_s_token_header() {
    let master = Master::start_with(&config(false));
    let reply = slash(&master, &format!("Token {TOKEN}"), "ci", "web", "");
    assert_eq!(reply.status, 401);
    assert!(master.changes().is_empty());
}

#[test]
fn the_opt_out_is_refused_on_a_dialect_that_does_not_authenticate() {
    let base = Basedir::new(
        "change_hook_auth = [\"memory:ci:pw\"]\n\
         [www.change_hook_dialects.base]\nchange_hook_auth = false\n\
         [www.change_hook_dialects.mattermost]\nrepo_base_url = \"x\"\nchange_hook_auth = false\n",
    );
    let output = run_cli(&["checkconfig", base.path().to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let file = base.path().join("master.toml");
    assert!(
        stderr.contains(&format!(
            "{}:4:1: change_hook_dialects.base.change_hook_auth = false is only allowed on a dialect that authenticates requests itself",
            file.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{}:6:1: change_hook_dialects.mattermost.change_hook_auth = false needs 'token'",
            file.display()
        )),
        "{stderr}"
    );
}

#[test]
fn the_whole_round_trip_slash_command_in_result_posted_back() {
    let webhook = MockApi::start();
    webhook.push_response(200, "ok".into());
    let reporter = format!(
        "\n[[reporters]]\nname = \"team-chat\"\ntype = \"mattermost\"\n\
         url = \"{}/hooks/xyz\"\nchannel = \"ci\"\nusername = \"buildbot\"\n",
        webhook.url()
    );
    let master = Master::start_with(&(config(true) + &reporter));
    let token = format!("Token {TOKEN}");
    let text = shown(&slash(&master, &token, "ci", "web main 1a2b3c", ""));
    assert_eq!(text, "Build queued: web on branch main at revision 1a2b3c.");
    let posted = wait_until("the result posted back", || {
        webhook.received().into_iter().next()
    });
    assert_eq!(posted.path, "/hooks/xyz");
    assert_eq!(posted.header("Content-Type"), Some("application/json"));
    let message: Value = serde_json::from_slice(&posted.body).unwrap();
    assert_eq!(message["text"], "Build web #1: success");
    assert_eq!(
        (message["channel"].as_str(), message["username"].as_str()),
        (Some("ci"), Some("buildbot"))
    );
    let attachment = &message["attachments"][0];
    assert_eq!(attachment["color"], "#2e7d32");
    assert_eq!(attachment["title"], "web #1: build successful");
    assert!(attachment["title_link"]
        .as_str()
        .unwrap()
        .ends_with("#/builders/1/builds/1"));
    assert_eq!(
        attachment["fields"],
        serde_json::json!([
            {"short": true, "title": "Branch", "value": "main"},
            {"short": true, "title": "Revision", "value": "1a2b3c"}
        ])
    );
}
