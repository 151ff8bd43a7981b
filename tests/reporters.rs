//! Reporters end to end: builds on a local worker reported by the real
//! `http_status_push` plugin to a loopback receiver, through the outbox.

use std::sync::Arc;
use std::time::Duration;

use buildmaster_e2e::{
    fixture, replace_file, run_cli, versioned_v2, wait_until, Basedir, Master, MockApi, MockRequest,
};
use serde_json::{json, Value};

/// A local builder `b` whose build runs `command` for every change on any
/// branch, and `reporters` (TOML `[[reporters]]` tables).
fn config(command: &str, reporters: &str) -> String {
    format!(
        r#"
[master]
buildbot_url = "http://ci.example/"
reload_on_change = false

[www.change_hook_dialects]
base = true

[[workers]]
type = "local"
name = "local"

[[builders]]
name = "b"
workernames = ["local"]
tags = ["fast"]

[[builders.steps]]
type = "shell"
name = "compile"
command = {command}

[[schedulers]]
type = "any_branch"
name = "all"
builder_names = ["b"]

{reporters}
"#
    )
}

fn hook(master: &Master, revision: &str, author: &str) {
    let reply = master.post_form(
        "/change_hook/base",
        &format!("branch=main&revision={revision}&repository=repo&author={author}&comments=c"),
    );
    assert_eq!((reply.status, reply.body.as_str()), (200, "1 change found"));
}

/// Waits until `receiver` got `count` requests.
fn received(receiver: &MockApi, count: usize) -> Vec<MockRequest> {
    wait_until(&format!("{count} report(s)"), || {
        let got = receiver.received();
        (got.len() >= count).then_some(got)
    })
}

fn json_body(request: &MockRequest) -> Value {
    serde_json::from_slice(&request.body).unwrap()
}

#[test]
fn a_finished_build_is_posted_with_its_dictionary_and_with_a_template() {
    let receiver = MockApi::start();
    receiver.push_response(200, "{}".into());
    receiver.push_response(201, "{\"ok\": true}".into());
    let url = receiver.url();
    let master = Master::start(&config(
        r#"["sh", "-c", "echo compiled fine"]"#,
        &format!(
            r#"
[[reporters]]
name = "plain"
type = "http_status_push"
server_url = "{url}/plain"
auth = {{ token = "t0k3n" }}
want_logs = true

[[reporters]]
name = "templated"
type = "http_status_push"
server_url = "{url}/templated?key=s3cr3t"
headers = {{ X-Key = "h3ad3r" }}
debug = true
format = '{{"text": "{{{{ build.builder.name }}}} #{{{{ build.number }}}} {{{{ event }}}}: {{{{ build.state_string }}}} by {{{{ build.blamelist | join(", ") }}}}"}}'
"#
        ),
    ));
    hook(&master, "1a2b", "Ada");
    let got = received(&receiver, 2);
    let plain = got
        .iter()
        .find(|r| r.path == "/plain")
        .expect("plain report");
    assert_eq!(plain.method, "POST");
    assert_eq!(plain.header("Authorization"), Some("Bearer t0k3n"));
    assert_eq!(plain.header("Content-Type"), Some("application/json"));
    assert!(plain
        .header("Idempotency-Key")
        .is_some_and(|k| k.starts_with("build-")));
    let build = json_body(plain);
    assert_eq!(build["builder"]["name"], "b");
    assert_eq!(build["builder"]["tags"], json!(["fast"]));
    assert_eq!(build["results"], 0);
    assert_eq!(build["complete"], true);
    assert_eq!(build["blamelist"], json!(["Ada"]));
    assert_eq!(build["buildset"]["sourcestamps"][0]["revision"], "1a2b");
    assert_eq!(build["url"], "http://ci.example/#/builders/1/builds/1");
    assert_eq!(build["steps"][0]["name"], "compile");
    let log = &build["steps"][0]["logs"][0];
    assert_eq!(log["name"], "stdio");
    assert!(
        log["content"].as_str().unwrap().contains("compiled fine"),
        "{log}"
    );
    assert!(build.get("prev_build").is_none());
    let templated = got
        .iter()
        .find(|r| r.path.starts_with("/templated?"))
        .expect("templated report");
    assert_eq!(
        json_body(templated),
        json!({"text": "b #1 finished: build successful by Ada"})
    );
    // Only finished builds, by default: nothing more arrives.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(receiver.received().len(), 2);
    // `debug` logs the request and the answer, secrets left out.
    let log = master.log();
    let request = log
        .lines()
        .find(|l| l.contains("reporter 'templated': delivery") && l.contains("attempt 1: POST"))
        .expect("the request logged");
    assert!(
        request.contains(&format!(
            "POST {url}/templated?… (headers: Content-Type, X-Key;"
        )) && request.contains("b #1 finished"),
        "{request}"
    );
    assert!(log
        .lines()
        .any(|l| l.contains("reporter 'templated': delivery")
            && (l.contains("answered 200: {}") || l.contains("answered 201: {\"ok\": true}"))));
    assert!(!log.contains("s3cr3t") && !log.contains("h3ad3r"));
    assert!(
        !log.lines()
            .any(|l| l.contains("reporter 'plain'") && l.contains("attempt 1: POST")),
        "no debug for 'plain'"
    );
}

#[test]
fn modes_filters_and_report_started_choose_what_is_sent() {
    let receiver = MockApi::start();
    for _ in 0..20 {
        receiver.push_response(200, "{}".into());
    }
    let url = receiver.url();
    let reporter = |name: &str, extra: &str| {
        format!(
            "[[reporters]]\nname = \"{name}\"\ntype = \"http_status_push\"\n\
             server_url = \"{url}/{name}\"\nformat = \"{{{{ event }}}} {{{{ build.results }}}}\"\n{extra}\n"
        )
    };
    let reporters = [
        reporter("failing", "mode = \"failing\""),
        reporter("problem", "mode = \"problem\""),
        reporter("change", "mode = \"change\""),
        reporter("started", "mode = \"all\"\nreport_started = true"),
        reporter("other_builder", "builders = [\"nope\"]"),
        reporter("tagged", "tags = [\"fast\"]\nbranches = [\"main\"]"),
    ]
    .concat();
    // The build fails when the change's revision starts with "bad".
    let command = r#"["sh", "-c", "case %(src::revision)s in bad*) exit 1;; esac"]"#;
    let base = Basedir::new(&config(command, &reporters));
    let master = base.start();
    let builds = |count: usize| {
        wait_until(&format!("{count} finished build(s)"), || {
            let builds = master.builds();
            (builds.len() == count && builds.iter().all(|b| b["complete"] == true))
                .then_some(builds)
        })
    };
    hook(&master, "bad1", "Ada");
    builds(1);
    hook(&master, "bad2", "Ada");
    builds(2);
    hook(&master, "good3", "Bob");
    let all = builds(3);
    assert_eq!(
        all.iter().map(|b| b["results"].clone()).collect::<Vec<_>>(),
        [json!(2), json!(2), json!(0)],
        "the builds did not go as planned"
    );
    // Reports for build 3 have arrived once "tagged" has its third.
    wait_until("every report", || {
        let count = receiver
            .received()
            .iter()
            .filter(|r| r.path == "/tagged")
            .count();
        (count == 3).then_some(())
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    let bodies = |path: &str| -> Vec<String> {
        receiver
            .received()
            .iter()
            .filter(|r| r.path == path)
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .collect()
    };
    assert_eq!(bodies("/failing"), ["finished 2", "finished 2"]);
    // A failure after no build, not after a failure.
    assert_eq!(bodies("/problem"), ["finished 2"]);
    // Failure → failure is no change; failure → success is.
    assert_eq!(bodies("/change"), ["finished 0"]);
    // A running build's `results` is null, which the template writes `None`.
    assert_eq!(
        bodies("/started"),
        [
            "started None",
            "finished 2",
            "started None",
            "finished 2",
            "started None",
            "finished 0"
        ]
    );
    assert!(bodies("/other_builder").is_empty());
    assert_eq!(
        bodies("/tagged"),
        ["finished 2", "finished 2", "finished 0"]
    );
}

#[test]
fn reporter_errors_reach_checkconfig_with_their_table() {
    let base = Basedir::new(
        "[[reporters]]\nname = \"r\"\ntype = \"http_status_push\"\nserver_url = 5\n\
         [[reporters]]\nname = \"r\"\ntype = \"http_status_push\"\nserver_url = \"http://x\"\n\
         [[reporters]]\nname = \"n\"\ntype = \"nothing_offers_this\"\n\
         [[reporters]]\nname = \"m\"\ntype = \"http_status_push\"\nmode = \"sometimes\"\n",
    );
    let out = run_cli(&["checkconfig", base.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "master.toml:7:1: reporter name 'r' is already used at",
        "master.toml:14:1: reporter 'm': mode 'sometimes' is not one of:",
    ] {
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }
    // Once the file parses, the plugins' own checks.
    let base = Basedir::new(
        "[[reporters]]\nname = \"r\"\ntype = \"http_status_push\"\nserver_url = 5\n\
         [[reporters]]\nname = \"n\"\ntype = \"nothing_offers_this\"\n",
    );
    let out = run_cli(&["checkconfig", base.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "master.toml:3:1: reporter 'r' (plugin http_status_push): options.server_url: expected a string, found an integer",
        "master.toml:7:1: reporter 'n': no plugin offers the reporter type 'nothing_offers_this'",
    ] {
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }
}

/// A loopback port with nothing listening on it (for now).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn numbered_reporter(port: u16) -> String {
    format!(
        "[[reporters]]\nname = \"r\"\ntype = \"http_status_push\"\n\
         server_url = \"http://127.0.0.1:{port}/hook\"\nformat = \"{{{{ build.number }}}}\"\n"
    )
}

fn numbers(requests: &[MockRequest]) -> Vec<String> {
    requests
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect()
}

#[test]
fn an_outage_delays_reports_without_losing_reordering_or_repeating_them() {
    let port = free_port();
    let master = Master::start(&config(r#"["true"]"#, &numbered_reporter(port)));
    // One after the other: two pending requests would make one build.
    for (revision, count) in [("1", 1), ("2", 2)] {
        hook(&master, revision, "Ada");
        wait_until("the build to finish", || {
            let builds = master.builds();
            (builds.len() == count && builds.iter().all(|b| b["complete"] == true)).then_some(())
        });
    }
    // The receiver was down (connection refused) for the first attempt.
    wait_until("a refused attempt", || {
        master.log().contains("failed (").then_some(())
    });
    let receiver = MockApi::start_at(&format!("127.0.0.1:{port}"));
    receiver.push_response_with(503, &[("Retry-After", "1")], "{}".into());
    receiver.push_response(200, "{}".into());
    receiver.push_response(200, "{}".into());
    let got = received(&receiver, 3);
    // The 503 for build 1, its retry, then build 2: in order, each delivered once.
    assert_eq!(numbers(&got), ["1", "1", "2"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(receiver.received().len(), 3);
}

#[test]
fn reports_pending_at_a_crash_are_delivered_after_the_restart() {
    let port = free_port();
    let master = Master::start(&config(r#"["true"]"#, &numbered_reporter(port)));
    hook(&master, "1", "Ada");
    wait_until("a refused attempt", || {
        master.log().contains("failed (").then_some(())
    });
    let base = master.kill();
    let receiver = MockApi::start_at(&format!("127.0.0.1:{port}"));
    receiver.push_response(200, "{}".into());
    let master = base.start();
    let got = received(&receiver, 1);
    assert_eq!(numbers(&got), ["1"]);
    // Delivered once: not again, and not rendered anew after the restart.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(receiver.received().len(), 1);
    drop(master);
}

#[test]
fn a_final_refusal_is_dead_lettered_and_later_reports_go_on() {
    let receiver = MockApi::start();
    receiver.push_response(404, "{}".into());
    receiver.push_response(200, "{}".into());
    let master = Master::start(&config(
        r#"["true"]"#,
        &numbered_reporter(receiver.addr.port()),
    ));
    hook(&master, "1", "Ada");
    received(&receiver, 1);
    hook(&master, "2", "Ada");
    let got = received(&receiver, 2);
    assert_eq!(numbers(&got), ["1", "2"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(receiver.received().len(), 2, "a 404 is not tried again");
    assert!(master.log().contains("refused (HTTP 404); not tried again"));

    // The API shows the counts and the deliveries, and retries the dead one.
    let reporters = master.get_json("/api/v2/reporters");
    assert_eq!(
        reporters["reporters"],
        json!([{"name": "r", "type": "http_status_push", "pending": 0, "delivered": 1,
                "failed": 1, "dropped": 0}])
    );
    let deliveries = master.get_json("/api/v2/reporters/r/deliveries");
    let states: Vec<(Value, Value, Value)> = deliveries["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["state"].clone(),
                d["last_status"].clone(),
                d["buildid"].clone(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            (json!("delivered"), json!(200), json!(2)),
            (json!("dead"), json!(404), json!(1))
        ]
    );
    let dead = deliveries["deliveries"][1]["deliveryid"].as_i64().unwrap();
    receiver.push_response(200, "{}".into());
    let retry = master.post_json(
        &format!("/api/v2/reporters/r/deliveries/{dead}"),
        &json!({"id": 1, "jsonrpc": "2.0", "method": "retry", "params": {}}),
    );
    assert_eq!(retry.status, 200, "{}", retry.body);
    assert_eq!(numbers(&received(&receiver, 3)), ["1", "2", "1"]);
    let again = master.post_json(
        &format!("/api/v2/reporters/r/deliveries/{dead}"),
        &json!({"id": 2, "jsonrpc": "2.0", "method": "retry", "params": {}}),
    );
    assert!(
        again.body.contains("has no dead-lettered delivery"),
        "{}",
        again.body
    );
    let unknown = master.send("GET", "/api/v2/reporters/nobody/deliveries", &[], b"");
    assert_eq!(unknown.status, 404, "{}", unknown.body);
}

#[test]
fn a_reload_adds_and_removes_reporters_and_drops_a_removed_ones_pending_reports() {
    let port = free_port();
    let receiver = MockApi::start();
    receiver.push_response(200, "{}".into());
    let with = |reporters: &str| config(r#"["true"]"#, reporters);
    let master = Master::start(&with(&numbered_reporter(port)));
    hook(&master, "1", "Ada");
    wait_until("a refused attempt", || {
        master.log().contains("failed (").then_some(())
    });
    // "r" goes (its pending report with it); "added" comes.
    let added = format!(
        "[[reporters]]\nname = \"added\"\ntype = \"http_status_push\"\n\
         server_url = \"{}/added\"\nformat = \"{{{{ build.number }}}}\"\n",
        receiver.url()
    );
    // As Master::start wrote it: the same listen address first.
    let file = format!("[www]\nport = \"127.0.0.1:0\"\n{}", with(&added));
    std::fs::write(master.basedir.path().join("master.toml"), file).unwrap();
    let output = run_cli(&["reconfig", master.basedir.path().to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("reporters +1 ~0 -1 (+added, -r)"),
        "{stdout}"
    );
    wait_until("the dropped report", || {
        master
            .log()
            .contains("reporter 'r' is no longer configured: its delivery")
            .then_some(())
    });
    hook(&master, "2", "Ada");
    assert_eq!(numbers(&received(&receiver, 1)), ["2"]);
}

#[test]
fn hipchat_messages_users_and_notifies_rooms_without_showing_its_token() {
    let server = MockApi::start();
    for _ in 0..4 {
        server.push_response(204, String::new());
    }
    let master = Master::start(&config(
        r#"["true"]"#,
        &format!(
            "[[reporters]]\nname = \"hip\"\ntype = \"hipchat\"\nauth_token = \"hc-t0k3n\"\n\
             endpoint = \"{}\"\nreport_started = true\n\
             builder_room_map = {{ b = \"Dev Room\" }}\nbuilder_user_map = {{ b = \"ada@example.org\" }}\n",
            server.url()
        ),
    ));
    hook(&master, "1a", "Ada");
    let got = received(&server, 4);
    let sent: Vec<(String, Value)> = got.iter().map(|r| (r.path.clone(), json_body(r))).collect();
    let url = "http://ci.example/#/builders/1/builds/1";
    let started = json!({"message": format!("Buildbot started build b here: {url}")});
    let finished =
        json!({"message": format!("Buildbot finished build b with result success here: {url}")});
    assert_eq!(
        sent,
        [
            (
                "/v2/user/ada%40example.org/message?auth_token=hc-t0k3n".to_string(),
                started.clone()
            ),
            (
                "/v2/room/Dev%20Room/notification?auth_token=hc-t0k3n".to_string(),
                started
            ),
            (
                "/v2/user/ada%40example.org/message?auth_token=hc-t0k3n".to_string(),
                finished.clone()
            ),
            (
                "/v2/room/Dev%20Room/notification?auth_token=hc-t0k3n".to_string(),
                finished
            ),
        ]
    );
    let deliveries = master
        .get_json("/api/v2/reporters/hip/deliveries")
        .to_string();
    assert!(!deliveries.contains("hc-t0k3n"), "{deliveries}");
    assert!(!master.log().contains("hc-t0k3n"));
}

#[test]
fn a_reporter_plugin_replaced_during_a_burst_of_builds_loses_and_repeats_nothing() {
    let receiver = MockApi::start();
    for _ in 0..100 {
        receiver.push_response(200, "{}".into());
    }
    let reporter = format!(
        "[[reporters]]\nname = \"v\"\ntype = \"versioned\"\n\
         plugin = \"plugins/libfixture_versioned.so\"\nurl = \"{}/v\"\n",
        receiver.url()
    );
    let base = Basedir::new(&config(r#"["true"]"#, &reporter));
    let library = base.path().join("plugins/libfixture_versioned.so");
    let v2 = std::fs::read(versioned_v2()).unwrap();
    base.write(
        "plugins/libfixture_versioned.so",
        std::fs::read(fixture("fixture_versioned")).unwrap(),
    );
    let master = Arc::new(base.start());
    // One build reported by the first version for sure, then the burst.
    hook(&master, "0", "Ada");
    received(&receiver, 1);
    let sender = {
        let master = Arc::clone(&master);
        std::thread::spawn(move || {
            for i in 1..=12 {
                hook(&master, &i.to_string(), "Ada");
                std::thread::sleep(Duration::from_millis(30));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(120));
    replace_file(&library, v2);
    let output = run_cli(&["reconfig", master.basedir.path().to_str().unwrap()]);
    assert!(output.status.success(), "{output:?}");
    sender.join().unwrap();
    // And one change surely after the reload.
    hook(&master, "13", "Ada");
    // Every change built (pending requests may have been collapsed).
    let builds = wait_until("the burst's builds to finish", || {
        let builds = master.builds();
        let done = builds.iter().all(|b| b["complete"] == true);
        let last_built = builds
            .iter()
            .any(|b| b["properties"]["revision"][0] == "13");
        (done && last_built && builds.len() == receiver.received().len()).then_some(builds)
    });
    std::thread::sleep(Duration::from_millis(500));
    let reports: Vec<Value> = receiver.received().iter().map(json_body).collect();
    assert_eq!(reports.len(), builds.len(), "one report per build");
    let mut reported: Vec<i64> = reports
        .iter()
        .map(|r| r["buildid"].as_i64().unwrap())
        .collect();
    reported.sort();
    let mut built: Vec<i64> = builds
        .iter()
        .map(|b| b["buildid"].as_i64().unwrap())
        .collect();
    built.sort();
    assert_eq!(reported, built, "each build reported once");
    let versions: Vec<&str> = reports
        .iter()
        .map(|r| r["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions.first(), Some(&"v1"));
    assert_eq!(versions.last(), Some(&"v2"), "{versions:?}");
}

#[test]
fn a_completed_buildset_is_reported_once_after_its_builds() {
    let receiver = MockApi::start();
    for _ in 0..4 {
        receiver.push_response(200, "{}".into());
    }
    let config = format!(
        r#"
[master]
reload_on_change = false

[www.change_hook_dialects]
base = true

[[workers]]
type = "local"
name = "local"
max_builds = 2

[[builders]]
name = "passes"
workernames = ["local"]
[[builders.steps]]
type = "shell"
name = "ok"
command = ["true"]

[[builders]]
name = "fails"
workernames = ["local"]
[[builders.steps]]
type = "shell"
name = "broken"
command = ["sh", "-c", "sleep 0.3; false"]

[[schedulers]]
type = "any_branch"
name = "all"
builder_names = ["passes", "fails"]

[[reporters]]
name = "v"
type = "versioned"
plugin = "plugins/libfixture_versioned.so"
url = "{}/v"
buildsets = true
"#,
        receiver.url()
    );
    let base = Basedir::new(&config);
    base.write(
        "plugins/libfixture_versioned.so",
        std::fs::read(fixture("fixture_versioned")).unwrap(),
    );
    let master = base.start();
    hook(&master, "1", "Ada");
    let reports: Vec<Value> = received(&receiver, 3).iter().map(json_body).collect();
    let mut buildids: Vec<i64> = master
        .builds()
        .iter()
        .map(|b| b["buildid"].as_i64().unwrap())
        .collect();
    buildids.sort();
    assert_eq!(buildids.len(), 2);
    // Both finishes, then the buildset, with the worst result (failure).
    assert!(
        reports[..2].iter().all(|r| r["buildid"].is_i64()),
        "{reports:?}"
    );
    assert_eq!(
        reports[2],
        json!({"version": "v1", "bsid": 1, "results": 2, "buildids": buildids})
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        receiver.received().len(),
        3,
        "the buildset is reported once"
    );
}

#[test]
fn a_panicking_or_failing_reporter_loses_only_its_own_event() {
    let receiver = MockApi::start();
    for _ in 0..6 {
        receiver.push_response(200, "{}".into());
    }
    let url = receiver.url();
    let base = Basedir::new(&config(
        r#"["true"]"#,
        &format!(
            r#"
[[reporters]]
name = "shaky"
type = "panicky_reporter"
plugin = "plugins/libfixture_panicking.so"
url = "{url}/shaky"

[[reporters]]
name = "steady"
type = "http_status_push"
server_url = "{url}/steady"
format = '{{"number": {{{{ build.number }}}}}}'
"#
        ),
    ));
    base.write(
        "plugins/libfixture_panicking.so",
        std::fs::read(fixture("fixture_panicking")).unwrap(),
    );
    let master = base.start();
    for revision in ["1", "2", "3"] {
        hook(&master, revision, "Ada");
        wait_until("the build to finish", || {
            let builds = master.builds();
            (builds.len() == revision.parse::<usize>().unwrap()
                && builds.iter().all(|b| b["complete"] == true))
            .then_some(())
        });
    }
    let got = received(&receiver, 4);
    let paths_and_numbers: Vec<(String, i64)> = got
        .iter()
        .map(|r| (r.path.clone(), json_body(r)["number"].as_i64().unwrap()))
        .collect();
    let steady: Vec<i64> = paths_and_numbers
        .iter()
        .filter(|(p, _)| p == "/steady")
        .map(|(_, n)| *n)
        .collect();
    let shaky: Vec<i64> = paths_and_numbers
        .iter()
        .filter(|(p, _)| p == "/shaky")
        .map(|(_, n)| *n)
        .collect();
    assert_eq!(
        steady,
        vec![1, 2, 3],
        "the other reporter reports every build"
    );
    assert_eq!(
        shaky,
        vec![3],
        "the panicking reporter goes on after its failures"
    );
    let log = master.log();
    assert!(
        log.lines().any(|l| l.contains("panicky")
            && l.contains("reporter 'shaky' cannot render build")
            && l.contains("panic")),
        "{log}"
    );
    assert!(log
        .lines()
        .any(|l| l.contains("reporter 'shaky' cannot render build")
            && l.contains("this reporter fails on build 2")));
    // The master still serves.
    hook(&master, "4", "Ada");
}
