//! The webhook inspector end to end: what each delivery became (its
//! changes, each scheduler's decision with the filter that refused it, the
//! build requests and builds), secrets redacted, and a replay of a signed
//! GitHub delivery from the master's own copy.

use buildmaster_e2e::{github_signature, run_cli, wait_until, Master};
use serde_json::{json, Value};

const CONFIG: &str = r#"
[master]
reload_on_change = false
[www.change_hook_dialects]
base = true
github = { secret = "gh-secret" }
[[workers]]
type = "local"
name = "w"
[[builders]]
name = "app"
workernames = ["w"]
[[builders.steps]]
type = "shell"
command = "true"
[[builders]]
name = "docs"
workernames = ["w"]
[[builders.steps]]
type = "shell"
command = "true"
[[schedulers]]
type = "single_branch"
name = "main"
change_filter = { branch = "main" }
builder_names = ["app"]
[[schedulers]]
type = "any_branch"
name = "releases"
change_filter = { branch_re = "release/.*" }
builder_names = ["docs"]
"#;

fn deliveries(master: &Master, query: &str) -> Vec<Value> {
    master.get_json(&format!("/api/v2/hooks/deliveries{query}"))["deliveries"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn a_delivery_shows_its_changes_the_schedulers_decisions_and_the_builds() {
    let master = Master::start(CONFIG);
    let reply = master.post_form(
        "/change_hook/base",
        "branch=main&revision=1a2b&repository=r&author=Ada&comments=c",
    );
    assert_eq!(reply.status, 200);
    assert_eq!(master.wait_for_build(1)["results"], 0);
    let refused = master.send("PUT", "/change_hook/base", &[], b"");
    assert_eq!(refused.status, 405);

    // Kept beside the answer: the inspector may lag a moment behind.
    let kept = wait_until("both deliveries kept", || {
        let kept = deliveries(&master, "?dialect=base");
        (kept.len() == 2).then_some(kept)
    });
    assert_eq!(kept[0]["status"], 405, "newest first");
    assert!(kept[0]["verdict"].as_str().unwrap().contains("not allowed"));
    let delivery = &kept[1];
    assert_eq!(delivery["status"], 200);
    assert_eq!(delivery["verdict"], "1 change found");
    assert!(delivery["body"].as_str().unwrap().contains("revision=1a2b"));
    let correlation = delivery["correlation"].as_str().unwrap();
    assert_eq!(correlation.len(), 16);
    assert!(
        master.log().contains(&format!("correlation={correlation}")),
        "the hook's log line carries it"
    );
    let change = &delivery["changes"][0];
    assert_eq!(change["revision"], "1a2b");
    assert_eq!(
        change["schedulers"],
        json!([
            {"scheduler": "main", "accepted": true, "reason": "change accepted; building app"},
            {"scheduler": "releases", "accepted": false,
             "reason": "change filtered out: branch 'main' does not match branch_re release/.*"}
        ])
    );
    let request = &change["buildrequests"][0];
    assert_eq!(request["builder"], "app");
    assert_eq!(request["builds"][0]["buildid"], 1);
    assert_eq!(request["builds"][0]["results"], 0);
    let one = master.get_json(&format!(
        "/api/v2/hooks/deliveries/{}",
        delivery["deliveryid"]
    ));
    assert_eq!(one["deliveries"][0]["deliveryid"], delivery["deliveryid"]);
    let missing = master.send("GET", "/api/v2/hooks/deliveries/999", &[], b"");
    assert_eq!(missing.status, 404);
}

/// A GitHub push of one commit on `main`.
const PUSH: &str = r#"{
  "ref": "refs/heads/main", "before": "0000000000000000000000000000000000000000",
  "after": "9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c",
  "repository": {"name": "app", "full_name": "org/app", "html_url": "https://github.com/org/app",
                 "clone_url": "https://github.com/org/app.git", "owner": {"login": "org"}},
  "pusher": {"name": "ada", "email": "ada@example.org"},
  "commits": [{"id": "9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c", "distinct": true,
               "message": "Fix the frobnicator", "timestamp": "2026-12-01T10:00:00+00:00",
               "url": "https://github.com/org/app/commit/9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c",
               "author": {"name": "Ada", "email": "ada@example.org"},
               "committer": {"name": "Ada", "email": "ada@example.org"},
               "added": [], "removed": [], "modified": ["frob.c"]}]
}"#;

#[test]
fn a_signed_delivery_is_replayed_from_the_masters_copy() {
    let master = Master::start(CONFIG);
    let signature = github_signature("gh-secret", PUSH.as_bytes());
    let headers = [
        ("Content-Type", "application/json"),
        ("X-GitHub-Event", "push"),
        ("X-GitHub-Delivery", "d-1"),
        ("X-Hub-Signature-256", signature.as_str()),
    ];
    let reply = master.send("POST", "/change_hook/github", &headers, PUSH.as_bytes());
    assert_eq!((reply.status, reply.body.as_str()), (200, "1 change found"));
    let kept = wait_until("the delivery kept", || {
        let kept = deliveries(&master, "?dialect=github");
        (!kept.is_empty()).then_some(kept)
    });
    let shown: Vec<Value> = kept[0]["headers"].as_array().unwrap().clone();
    assert!(
        shown.contains(&json!(["x-hub-signature-256", "<redacted>"])),
        "{shown:?}"
    );
    assert!(!kept[0].to_string().contains(&signature));
    let id = kept[0]["deliveryid"].as_i64().unwrap();

    let out = run_cli(&["replay", &id.to_string(), "--master", &master.addr]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains(&format!("delivery {id} replayed as delivery "))
            && stdout.contains("200 1 change found"),
        "the same delivery id is not taken for a duplicate: {stdout}"
    );
    let kept = wait_until("the replayed delivery kept", || {
        let kept = deliveries(&master, "?dialect=github");
        (kept.len() == 2).then_some(kept)
    });
    assert_eq!(kept[0]["replay_of"], id);
    assert_eq!(
        kept[0]["changes"][0]["revision"],
        "9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c"
    );
    assert_eq!(master.changes().len(), 2);
    let unknown = run_cli(&["replay", "999", "--master", &master.addr]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no delivery 999 is kept"));
}

#[test]
fn one_correlation_id_follows_a_delivery_to_its_build_and_report_in_json_logs() {
    let receiver = buildmaster_e2e::MockApi::start();
    receiver.push_response(200, "{}".into());
    receiver.push_response(200, "{}".into());
    let base = buildmaster_e2e::Basedir::new(&format!(
        "{CONFIG}[[reporters]]\nname = \"r\"\ntype = \"http_status_push\"\nserver_url = \"{}/r\"\n",
        receiver.url()
    ));
    let master = base.start_with_env(&[("BUILDMASTER_LOG_FORMAT", "json")]);
    let reply = master.post_form(
        "/change_hook/base",
        "branch=main&revision=1a2b&repository=r&author=Ada&comments=c",
    );
    assert_eq!(reply.status, 200);
    master.wait_for_build(1);
    let correlation = wait_until("the delivery kept", || {
        let kept = deliveries(&master, "?dialect=base");
        Some(kept.first()?["correlation"].as_str()?.to_owned())
    });
    let lines: Vec<Value> = wait_until("the report's log line", || {
        let lines: Vec<Value> = master
            .log()
            .lines()
            .map(|line| serde_json::from_str(line).expect("every log line is JSON"))
            .collect();
        let reported = lines.iter().any(|l| {
            l["fields"]["message"]
                .as_str()
                .unwrap_or_default()
                .starts_with("reporter 'r'")
                && l["fields"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("(finished)")
        });
        reported.then_some(lines)
    });
    let carrying: Vec<&str> = lines
        .iter()
        .filter(|l| l["fields"]["correlation"] == correlation.as_str())
        .filter_map(|l| l["fields"]["message"].as_str())
        .collect();
    let expected = [
        "hook accepted: 1 change(s) stored",
        "scheduler main requests builds of change 1 on app",
        "build app #1 started",
        "build app #1 finished: success",
        "reporter 'r': 1 request(s) queued for build 1 (finished)",
    ];
    for line in expected {
        assert!(
            carrying.iter().any(|message| message.starts_with(line)),
            "no line '{line}' with correlation {correlation}: {carrying:#?}"
        );
    }
}

#[test]
fn a_delivery_refused_by_change_hook_auth_is_not_replayed_and_query_secrets_are_hidden() {
    use base64::Engine;
    let master = Master::start(&format!(
        "change_hook_auth = [\"memory:hook:hook-pass\"]\n{CONFIG}"
    ));
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let body = b"branch=main&revision=1a2b&repository=r&author=Ada&comments=c";
    let refused = master.send("POST", "/change_hook/base?token=q-secret", &form, body);
    assert_eq!(refused.status, 401, "{}", refused.body);
    let kept = wait_until("the refused delivery kept", || {
        let kept = deliveries(&master, "?dialect=base");
        (!kept.is_empty()).then_some(kept)
    });
    assert_eq!(
        kept[0]["path"], "/change_hook/base?token=%3Credacted%3E",
        "{}",
        kept[0]
    );
    let id = kept[0]["deliveryid"].as_i64().unwrap();
    let out = run_cli(&["replay", &id.to_string(), "--master", &master.addr]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("delivery {id} was refused by change_hook_auth")),
        "{out:?}"
    );
    assert!(
        master.changes().is_empty(),
        "a refused delivery stays refused"
    );

    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("hook:hook-pass")
    );
    let with_credentials = [form[0], ("Authorization", basic.as_str())];
    let accepted = master.send("POST", "/change_hook/base", &with_credentials, body);
    assert_eq!(accepted.status, 200, "{}", accepted.body);
    // Deliveries are recorded after the answer: wait for the second one.
    let refused_id = id;
    let id = wait_until("the accepted delivery kept", || {
        deliveries(&master, "?dialect=base")
            .iter()
            .filter_map(|d| d["deliveryid"].as_i64())
            .find(|&id| id != refused_id)
    });
    let out = run_cli(&["replay", &id.to_string(), "--master", &master.addr]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("200 1 change found"),
        "{out:?}"
    );
    assert_eq!(master.changes().len(), 2);
}
