//! What the master keeps of its history, end to end: a step's long output
//! capped to its start and its tail and streamed back, and the janitor
//! deleting logs, builds and changes past their horizons.

use buildmaster_e2e::Master;
use serde_json::{json, Value};

/// A builder whose one step prints 1 to 100000, built on each change to
/// `main`, with `extra` sections.
fn config(extra: &str) -> String {
    format!(
        r#"
[www.change_hook_dialects]
base = true

[[workers]]
type = "local"
name = "local"

[[builders]]
name = "b"
workernames = ["local"]
[[builders.steps]]
type = "shell"
command = ["seq", "1", "100000"]

[[schedulers]]
type = "single_branch"
name = "main"
change_filter = {{ branch = "main" }}
builder_names = ["b"]

{extra}
"#
    )
}

/// Pushes change `n` to `main` and waits for its build, build `n`; the
/// build's log id.
fn build(master: &Master, n: i64) -> i64 {
    let reply = master.post_form("/change_hook/base", &format!("branch=main&revision=r{n}"));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let build = master.wait_for_build(n);
    assert_eq!(
        (&build["results"], &build["number"]),
        (&json!(0), &json!(n)),
        "{build}"
    );
    let steps = master.get_json(&format!("/api/v2/builds/{n}/steps"));
    let stepid = steps["steps"][0]["stepid"].as_i64().unwrap();
    let logs = master.get_json(&format!("/api/v2/steps/{stepid}/logs"));
    logs["logs"][0]["logid"].as_i64().unwrap()
}

/// Asks for a janitor pass now: the status and the JSON-RPC answer.
fn janitor_run(master: &Master) -> (u16, Value) {
    let reply = master.post_json("/api/v2/janitor", &json!({"id": 1, "method": "run"}));
    (reply.status, serde_json::from_str(&reply.body).unwrap())
}

#[test]
fn a_long_log_keeps_its_start_and_its_tail_and_streams_back() {
    let master = Master::start(&config("[logs]\nmax_size = 50000\nmax_tail_size = 100\n"));
    let logid = build(&master, 1);
    let reply = master.send("GET", &format!("/api/v2/logs/{logid}/raw"), &[], b"");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("transfer-encoding"), Some("chunked"));
    let raw = reply.body;
    let start: String = (1..=1000).map(|n| format!("{n}\n")).collect();
    assert!(raw.contains(&start), "{}", &raw[..300]);
    let marker = raw
        .find("Output exceeded 50000 bytes, remaining output has been truncated\n")
        .expect("the truncation marker");
    let note = raw
        .find("of output were dropped; the last ")
        .expect("what was dropped");
    let tail = raw.find("99999\n100000\n").expect("the tail");
    assert!(marker < note && note < tail, "{}", &raw[marker..]);
    assert!(raw.len() < 51_000, "{} bytes kept", raw.len());
    let log = master.get_json(&format!("/api/v2/logs/{logid}"));
    assert_eq!(log["logs"][0]["complete"], true);

    // A range of lines, as Buildbot's web UI pages a log.
    let contents = master.get_json(&format!("/api/v2/logs/{logid}/contents?offset=10&limit=3"));
    let chunk = &contents["logchunks"][0];
    assert_eq!(
        (chunk["logid"].as_i64(), chunk["firstline"].as_i64()),
        (Some(logid), Some(10))
    );
    assert_eq!(chunk["content"].as_str().unwrap().lines().count(), 3);
    let reply = master.send(
        "GET",
        &format!("/api/v2/logs/{logid}/contents?offset=999999"),
        &[],
        b"",
    );
    assert_eq!(reply.status, 404, "{}", reply.body);
    let reply = master.send(
        "GET",
        &format!("/api/v2/logs/{logid}/contents?lines=3"),
        &[],
        b"",
    );
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (400, r#"{"error":"unrecognized query parameter 'lines'"}"#)
    );
}

#[test]
fn the_janitor_deletes_logs_builds_and_changes_past_their_horizons() {
    // Horizons of about a second.
    let master = Master::start(&config(
        "[janitor]\nlogs_horizon_days = 0.00001\nbuilds_horizon_days = 0.00001\n\
         changes_horizon_days = 0.00001\n",
    ));
    build(&master, 1);
    build(&master, 2);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let (status, answer) = janitor_run(&master);
    assert_eq!(status, 200, "{answer}");
    let pruned = &answer["result"];
    assert_eq!(
        (
            &pruned["logs"],
            &pruned["buildsets"],
            &pruned["builds"],
            &pruned["changes"]
        ),
        (&json!(2), &json!(1), &json!(1), &json!(1)),
        "{answer}"
    );
    assert!(pruned["chunks"].as_u64().unwrap() >= 2, "{answer}");
    // The builder's last build and the newest change stay, so that ids and
    // numbers never repeat; its log is emptied.
    for collection in ["builds", "buildsets", "buildrequests", "changes"] {
        let listing = master.get_json(&format!("/api/v2/{collection}"));
        let objects = listing[collection].as_array().unwrap();
        assert_eq!(objects.len(), 1, "{collection}: {listing}");
    }
    assert_eq!(master.get_json("/api/v2/builds")["builds"][0]["number"], 2);
    let steps = master.get_json("/api/v2/builds/2/steps");
    let stepid = steps["steps"][0]["stepid"].as_i64().unwrap();
    let log = &master.get_json(&format!("/api/v2/steps/{stepid}/logs"))["logs"][0];
    assert_eq!(log["type"], "d");
    let raw = master.send(
        "GET",
        &format!("/api/v2/logs/{}/raw", log["logid"]),
        &[],
        b"",
    );
    assert_eq!((raw.status, raw.body.as_str()), (200, ""));
    assert!(master
        .log()
        .contains("janitor: 2 log(s) emptied, 1 buildset(s) with 1 build(s)"));
    // New history is kept, and numbered on.
    build(&master, 3);
}

#[test]
fn without_a_janitor_nothing_is_deleted() {
    let master = Master::start(&config(""));
    build(&master, 1);
    let (status, answer) = janitor_run(&master);
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        answer["error"]["message"], "no [janitor] is configured",
        "{answer}"
    );
    assert_eq!(master.get_json("/api/v2/builds")["meta"]["total"], 1);
}
