//! `[www.auth]` and `[www.authz]` end to end: who may force, stop, cancel,
//! rebuild, reconfigure and shut down, by HTTP Basic, bearer token or the
//! UI's session cookie (with its CSRF token).

use buildmaster_e2e::{run_cli, Basedir, Master, Reply};
use serde_json::{json, Value};

const CONFIG: &str = r#"
[master]
reload_on_change = false

[www.auth]
type = "htpasswd"
file = "users.htpasswd"
tokens = [{ user = "ci-bot", token = "ci-bot-token-0123456789" }]
groups = { dev = ["bob"], ops = ["alice"] }

[www.authz]
roles = { admins = { groups = ["ops"] }, developers = { groups = ["dev"], users = ["ci-bot"] } }

[[www.authz.rules]]
actions = ["force", "rebuild"]
builders = ["app*"]
roles = ["developers", "admins"]

[[www.authz.rules]]
actions = ["*"]
roles = ["admins"]

[[workers]]
type = "local"
name = "w"

[[builders]]
name = "app"
workernames = ["w"]
[[builders.steps]]
type = "shell"
command = "echo building %(prop:branch)s"

[[builders]]
name = "docs"
workernames = ["w"]
[[builders.steps]]
type = "shell"
command = "true"

[[schedulers]]
type = "force"
name = "force"
builder_names = ["app", "docs"]
"#;

fn start() -> Master {
    let base = Basedir::new(CONFIG);
    let users: String = [("alice", "alice-pass"), ("bob", "bob-pass")]
        .iter()
        .map(|(user, password)| format!("{user}:{}\n", bcrypt::hash(password, 4).unwrap()))
        .collect();
    base.write("users.htpasswd", users);
    base.start()
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

/// A JSON-RPC call with extra headers.
fn call(
    master: &Master,
    path: &str,
    method: &str,
    params: Value,
    headers: &[(&str, &str)],
) -> Reply {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    let body = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1});
    master.send("POST", path, &all, body.to_string().as_bytes())
}

fn error_message(reply: &Reply) -> String {
    let body: Value = serde_json::from_str(&reply.body).unwrap_or(Value::Null);
    body["error"]["message"]
        .as_str()
        .unwrap_or(&reply.body)
        .to_owned()
}

#[test]
fn control_actions_follow_the_rules_for_each_way_of_logging_in() {
    let master = start();
    let force = |builders: &[&str], headers: &[(&str, &str)]| {
        call(
            &master,
            "/api/v2/forceschedulers/force",
            "force",
            json!({"builderNames": builders, "branch": "main", "username": "mallory"}),
            headers,
        )
    };
    let anonymous = force(&["app"], &[]);
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    assert_eq!(
        error_message(&anonymous),
        "log in to force on builder 'app'"
    );
    let wrong = force(&["app"], &[("Authorization", &basic("bob", "nope"))]);
    assert_eq!(
        (wrong.status, wrong.body.trim()),
        (401, "wrong user name or password")
    );
    let bob = basic("bob", "bob-pass");
    let forced = force(&["app"], &[("Authorization", &bob)]);
    assert_eq!(forced.status, 200, "{}", forced.body);
    assert_eq!(master.wait_for_build(1)["results"], 0);
    let docs = force(&["docs"], &[("Authorization", &bob)]);
    assert_eq!(docs.status, 403);
    assert_eq!(
        error_message(&docs),
        "user 'bob' may not force on builder 'docs'"
    );
    // By id, docs is still docs.
    let docs_id = master.get_json("/api/v2/builders/docs")["builders"][0]["builderid"].to_string();
    let by_id = force(&[&docs_id], &[("Authorization", &bob)]);
    assert_eq!(by_id.status, 403, "{}", by_id.body);
    assert_eq!(
        error_message(&by_id),
        "user 'bob' may not force on builder 'docs'"
    );
    assert!(master.builds().len() == 1, "nothing was forced on docs");
    // A logged-in user forces as themselves, whatever the form says.
    let owner = master.get_json("/api/v2/builds/1?property=owner");
    assert_eq!(
        owner["builds"][0]["properties"]["owner"][0], "bob",
        "{owner}"
    );
    let stop = call(
        &master,
        "/api/v2/builds/1",
        "stop",
        json!({}),
        &[("Authorization", &bob)],
    );
    assert_eq!(
        (stop.status, error_message(&stop)),
        (403, "user 'bob' may not stop on builder 'app'".into())
    );
    let alice = basic("alice", "alice-pass");
    let stop = call(
        &master,
        "/api/v2/builds/1",
        "stop",
        json!({}),
        &[("Authorization", &alice)],
    );
    assert_eq!(
        error_message(&stop),
        "build 1 is not running",
        "allowed, but over"
    );

    // A bearer token rebuilds: the same sources and properties again.
    let rebuilt = call(
        &master,
        "/api/v2/builds/1",
        "rebuild",
        json!({"reason": "flaky"}),
        &[("Authorization", "Bearer ci-bot-token-0123456789")],
    );
    assert_eq!(rebuilt.status, 200, "{}", rebuilt.body);
    let again = master.wait_for_build(2);
    assert_eq!(again["results"], 0);
    let first = master.get_json("/api/v2/builds/1?property=branch");
    let second = master.get_json("/api/v2/builds/2?property=branch");
    assert_eq!(
        first["builds"][0]["properties"]["branch"],
        second["builds"][0]["properties"]["branch"]
    );
    let buildset = master.get_json("/api/v2/buildsets/2")["buildsets"][0].clone();
    assert_eq!(
        buildset["reason"],
        "The web-page 'rebuild' button was pressed by 'ci-bot': flaky"
    );
    let bad_token = call(
        &master,
        "/api/v2/builds/1",
        "rebuild",
        json!({}),
        &[("Authorization", "Bearer nope")],
    );
    assert_eq!(bad_token.status, 401);

    // Admins only: shutdown and reconfig.
    let shutdown = call(
        &master,
        "/api/v2/masters/1",
        "shutdown",
        json!({"action": "status"}),
        &[("Authorization", &bob)],
    );
    assert_eq!(
        (shutdown.status, error_message(&shutdown)),
        (403, "user 'bob' may not shutdown".into())
    );
    let reconfig = call(
        &master,
        "/api/v2/masters/1",
        "reconfig",
        json!({}),
        &[("Authorization", &alice)],
    );
    assert_eq!(reconfig.status, 200, "{}", reconfig.body);
    let status: Value = serde_json::from_str(&reconfig.body).unwrap();
    assert_eq!(status["result"]["trigger"], "API", "{status}");
    assert!(!master.log().contains("alice-pass") && !master.log().contains("ci-bot-token"));
}

/// The session cookie of a login by form.
fn log_in(master: &Master, user: &str, password: &str) -> Reply {
    let body = format!("username={user}&password={password}&next=/builders");
    master.send(
        "POST",
        "/auth/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        body.as_bytes(),
    )
}

#[test]
fn a_session_from_the_login_form_needs_its_csrf_token() {
    let master = start();
    let refused = log_in(&master, "bob", "wrong");
    assert_eq!(refused.status, 401);
    assert!(refused.body.contains("Wrong user name or password."));
    assert!(master.log().contains("login refused for user \"bob\""));

    let in_ = log_in(&master, "bob", "bob-pass");
    assert_eq!(in_.status, 303, "{}", in_.body);
    assert_eq!(in_.header("location"), Some("/builders"));
    let set_cookie = in_.header("set-cookie").unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let me = master.send("GET", "/auth/user", &[("Cookie", &cookie)], b"");
    let me: Value = serde_json::from_str(&me.body).unwrap();
    assert_eq!(me["user"], "bob");
    assert_eq!(me["roles"], json!(["developers"]));
    let csrf = me["csrf"].as_str().unwrap().to_owned();

    let params = json!({"builderNames": ["app"]});
    let without = call(
        &master,
        "/api/v2/forceschedulers/force",
        "force",
        params.clone(),
        &[("Cookie", &cookie)],
    );
    assert_eq!(without.status, 403, "the cookie alone is not enough");
    let with = call(
        &master,
        "/api/v2/forceschedulers/force",
        "force",
        params.clone(),
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
    );
    assert_eq!(with.status, 200, "{}", with.body);

    // Another site's form posts to /auth/logout without the cookie: the
    // session and its cookie are left alone.
    let forged = master.send(
        "POST",
        "/auth/logout",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"",
    );
    assert_eq!(forged.status, 303);
    assert_eq!(forged.header("set-cookie"), None);

    let out = master.send(
        "POST",
        "/auth/logout",
        &[
            ("Cookie", &cookie),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        format!("csrf={csrf}").as_bytes(),
    );
    assert_eq!(out.status, 303);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    let after = call(
        &master,
        "/api/v2/forceschedulers/force",
        "force",
        params,
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
    );
    assert_eq!(after.status, 401, "the session is over");
    // Another site's login form is refused.
    let cross_site = master.send(
        "POST",
        "/auth/login",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Origin", "https://evil.example"),
        ],
        b"username=bob&password=bob-pass",
    );
    assert_eq!(cross_site.status, 403, "{}", cross_site.body);
    assert_eq!(cross_site.header("set-cookie"), None);
    // Off-site `next` is ignored.
    let body = "username=bob&password=bob-pass&next=//evil.example/";
    let redirected = master.send(
        "POST",
        "/auth/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        body.as_bytes(),
    );
    assert_eq!(redirected.header("location"), Some("/"));
}

#[test]
fn checkconfig_warns_of_open_control_and_refuses_rules_without_users() {
    let open = Basedir::with_file("[www]\nport = \"0.0.0.0:0\"\n");
    let out = run_cli(&["checkconfig", open.path().to_str().unwrap()]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning:") && stderr.contains("[www.auth] is not set"),
        "{stderr}"
    );
    let local = Basedir::new("");
    let out = run_cli(&["checkconfig", local.path().to_str().unwrap()]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning:"));
    let rules = Basedir::new("[www.authz]\nroles = { admins = { users = [\"a\"] } }\n");
    let out = run_cli(&["checkconfig", rules.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("[www.authz] needs [www.auth]"), "{stderr}");
}
