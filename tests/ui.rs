//! The web UI over HTTP: the pages render what the master holds, the force
//! form follows the scheduler's typed parameters, and a running build's log
//! reaches the page over Server-Sent Events as it is written.

use std::io::{BufRead, BufReader};
use std::time::Duration;

use buildmaster_e2e::{wait_until, Master};

const CONFIG: &str = r#"
[master]
title = "Acme CI"
reload_on_change = false
[www.change_hook_dialects]
base = true
[[workers]]
type = "local"
name = "w"
[[builders]]
name = "app"
workernames = ["w"]
tags = ["linux"]
[[builders.steps]]
type = "shell"
name = "compile"
command = "echo first line; case %(prop:revision:-)s in slow) sleep 2;; esac; echo second line >&2"
[[builders]]
name = "docs"
workernames = ["w"]
tags = ["docs"]
[[builders.steps]]
type = "shell"
command = "true"
[[schedulers]]
type = "any_branch"
name = "all"
builder_names = ["app"]
[[schedulers]]
type = "force"
name = "manual"
builder_names = ["app"]
[[schedulers.properties]]
type = "choice"
name = "flavour"
choices = ["debug", "release"]
default = "release"
"#;

/// A master with one builder, `long`, whose one step runs `command` (a
/// TOML value) for every change.
fn builder_running(command: &str) -> String {
    format!(
        r#"
[master]
reload_on_change = false
[www.change_hook_dialects]
base = true
[[workers]]
type = "local"
name = "w"
[[builders]]
name = "long"
workernames = ["w"]
[[builders.steps]]
type = "shell"
command = {command}
[[schedulers]]
type = "any_branch"
name = "all"
builder_names = ["long"]
"#
    )
}

fn hook(master: &Master, revision: &str) {
    let reply = master.post_form(
        "/change_hook/base",
        &format!(
            "branch=main&revision={revision}&repository=r&author=Ada&comments=Fix+the+frobnicator"
        ),
    );
    assert_eq!(reply.status, 200);
}

fn page(master: &Master, path: &str) -> String {
    let reply = master.send("GET", path, &[], b"");
    assert_eq!(reply.status, 200, "{path}: {}", reply.body);
    assert!(reply
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    reply.body
}

#[test]
fn the_pages_show_builders_builds_changes_workers_hooks_and_status() {
    let master = Master::start(CONFIG);
    hook(&master, "1a2b");
    assert_eq!(master.wait_for_build(1)["results"], 0);

    let builders = page(&master, "/");
    assert!(
        builders.contains("<title>Builders · Acme CI</title>"),
        "{builders}"
    );
    assert!(
        builders.contains(r#"<a class="box success" href="/builds/1""#),
        "{builders}"
    );
    assert!(builders.contains(">docs</a>") && builders.contains("no build yet"));
    let docs_only = page(&master, "/?tag=docs");
    assert!(
        docs_only.contains(">docs</a>") && !docs_only.contains(">app</a>"),
        "{docs_only}"
    );

    let builder = page(&master, "/builders/1");
    assert!(builder.contains(r#"data-path="/api/v2/forceschedulers/manual""#));
    assert!(
        builder.contains("<option selected>release</option>")
            && builder.contains("<option>debug</option>"),
        "{builder}"
    );

    let build = page(&master, "/builds/1");
    assert!(build.contains(r#"data-complete="true""#), "{build}");
    assert!(build.contains("<strong>compile</strong>"), "{build}");
    assert!(
        build.contains(r#"<span class="o">first line</span>"#),
        "{build}"
    );
    assert!(
        build.contains(r#"<span class="e">second line</span>"#),
        "{build}"
    );

    let changes = page(&master, "/changes");
    assert!(
        changes.contains("Fix the frobnicator")
            && changes.contains(r#"href="/builds/1">app #1</a>"#),
        "{changes}"
    );
    let workers = page(&master, "/workers");
    assert!(
        workers.contains("<td>w</td>") && workers.contains("connected"),
        "{workers}"
    );
    let hooks = wait_until("the delivery on the hooks page", || {
        let hooks = page(&master, "/hooks");
        hooks.contains("1 change found").then_some(hooks)
    });
    assert!(
        hooks.contains("all: change accepted; building app"),
        "{hooks}"
    );
    let status = page(&master, "/status");
    assert!(
        status.contains("buildmaster_dialect_base") || status.contains("base"),
        "{status}"
    );

    let css = master.send("GET", "/ui/ui.css", &[], b"");
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    assert!(css.body.contains("prefers-color-scheme: dark"));
    assert_eq!(master.send("GET", "/builds/999", &[], b"").status, 404);
}

#[test]
fn a_running_builds_log_is_streamed_as_server_sent_events() {
    let master = Master::start(CONFIG);
    hook(&master, "slow");
    // The step has written its header (two lines) and first line, and sleeps.
    let logid = wait_until("the first line stored", || {
        let logs = master.get_json("/api/v2/steps/1/logs");
        let log = logs["logs"].as_array()?.first()?.clone();
        (log["num_lines"].as_i64()? >= 3).then(|| log["logid"].as_i64().unwrap())
    });
    let lines = master.get_json(&format!("/api/v2/logs/{logid}"))["logs"][0]["num_lines"]
        .as_i64()
        .unwrap();
    let response = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
        .get(master.url(&format!("/ui/events/builds/1?logs={logid}:{lines}")))
        .send()
        .unwrap();
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut events = Vec::new();
    let mut current = String::new();
    for line in BufReader::new(response).lines() {
        let line = line.unwrap();
        if line.is_empty() {
            events.push(std::mem::take(&mut current));
            if events.last().is_some_and(|e| e.contains("event:done")) {
                break;
            }
        } else {
            current.push_str(&line.replace(": ", ":"));
            current.push('\n');
        }
    }
    let log = events
        .iter()
        .find(|e| e.contains("event:log"))
        .unwrap_or_else(|| panic!("no log event in {events:#?}"));
    assert!(log.contains("second line"), "{log}");
    assert!(
        !log.contains("first line"),
        "only what the page did not have: {log}"
    );
    assert!(events.last().unwrap().contains("event:done"));
}

#[test]
fn a_long_log_shows_its_tail_with_a_link_to_every_line() {
    let master = Master::start(&builder_running(r#"["seq", "-f", "line %g", "2500"]"#));
    hook(&master, "1a2b");
    assert_eq!(master.wait_for_build(1)["results"], 0);
    let logid = master.get_json("/api/v2/steps/1/logs")["logs"][0]["logid"]
        .as_i64()
        .unwrap();
    let total = master.get_json(&format!("/api/v2/logs/{logid}"))["logs"][0]["num_lines"]
        .as_u64()
        .unwrap();
    let hidden = total - 1000;

    let tail = page(&master, "/builds/1");
    assert!(
        tail.contains(&format!("{hidden} earlier lines not shown"))
            && tail.contains(&format!(
                r#"href="?full={logid}#log-{logid}">show all {total}</a>"#
            )),
        "{tail}"
    );
    assert!(tail.contains(r#"<span class="o">line 2500</span>"#));
    // The last thousand lines are the command's last lines and its footer.
    assert!(tail.contains(r#"<span class="o">line 1510</span>"#));
    assert!(!tail.contains(r#"<span class="o">line 1490</span>"#));
    assert!(tail.contains(&format!(r#"data-lines="{total}""#)));

    let all = page(&master, &format!("/builds/1?full={logid}"));
    assert!(all.contains(r#"<span class="o">line 1</span>"#));
    assert!(all.contains(r#"<span class="o">line 2500</span>"#));
    assert!(!all.contains("earlier lines not shown"));
}

#[test]
fn an_open_build_page_neither_holds_a_stopping_master_nor_follows_a_missing_build() {
    let master = Master::start(&builder_running(r#""echo started; sleep 60""#));
    assert_eq!(
        master.send("GET", "/ui/events/builds/999", &[], b"").status,
        404
    );
    hook(&master, "1a2b");
    // As the page has it: the step's log with its lines so far.
    let (logid, lines) = wait_until("the first line stored", || {
        let logs = master.get_json("/api/v2/steps/1/logs");
        let log = logs["logs"].as_array()?.first()?.clone();
        let lines = log["num_lines"].as_i64()?;
        (lines >= 3).then(|| (log["logid"].as_i64().unwrap(), lines))
    });
    let response = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
        .get(master.url(&format!("/ui/events/builds/1?logs={logid}:{lines}")))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    // The page keeps its stream open while the master stops: the stream
    // ends with the server, before the build is interrupted (no `done`).
    let reader = std::thread::spawn(move || {
        BufReader::new(response)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let (basedir, status) = master.stop();
    assert!(status.success(), "{status:?}");
    let stream = reader.join().expect("the stream ended");
    assert!(
        !stream.iter().any(|line| line.starts_with("event:")),
        "{stream:?}"
    );
    let log = std::fs::read_to_string(basedir.path().join("test-master.log")).unwrap();
    assert!(log.contains("every request in flight finished"), "{log}");
    assert!(!log.contains("requests still running"), "{log}");
}
