//! The build engine end to end: hooks and forced builds start real builds on a
//! local worker, whose steps run as processes; results, logs, stops, timers
//! and restarts as the REST API shows them.

use buildmaster_e2e::{git, wait_until, Basedir, Master};
use serde_json::{json, Value};

/// A local worker and builder `b` with `steps`, a single_branch scheduler on
/// `main` (with `scheduler_extra`) and a force scheduler with `force_extra`.
fn config(steps: &str, scheduler_extra: &str, force_extra: &str) -> String {
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
{steps}

[[schedulers]]
type = "single_branch"
name = "main"
change_filter = {{ branch = "main" }}
builder_names = ["b"]
{scheduler_extra}

[[schedulers]]
type = "force"
name = "force"
builder_names = ["b"]
{force_extra}
"#
    )
}

fn shell(command: &str, extra: &str) -> String {
    format!("[[builders.steps]]\ntype = \"shell\"\ncommand = {command}\n{extra}\n")
}

fn hook(master: &Master, branch: &str, revision: &str) {
    let reply = master.post_form(
        "/change_hook/base",
        &format!("branch={branch}&revision={revision}&repository=repo&comments=c"),
    );
    assert_eq!((reply.status, reply.body.as_str()), (200, "1 change found"));
}

fn steps(master: &Master, buildid: i64) -> Vec<Value> {
    let json = master.get_json(&format!("/api/v2/builds/{buildid}/steps"));
    json["steps"].as_array().cloned().unwrap_or_default()
}

/// The raw text of a step's first log.
fn log_text(master: &Master, stepid: i64) -> String {
    let logs = master.get_json(&format!("/api/v2/steps/{stepid}/logs"));
    let logid = logs["logs"][0]["logid"].as_i64().expect("a log");
    master
        .send("GET", &format!("/api/v2/logs/{logid}/raw"), &[], b"")
        .body
}

fn property(build: &Value, name: &str) -> Value {
    build["properties"][name][0].clone()
}

#[test]
fn a_hook_on_the_watched_branch_runs_the_build_and_another_branch_runs_nothing() {
    let master = Master::start(&config(
        &shell(
            r#"["sh", "-c", "echo building %(prop:branch)s at %(src::revision)s; echo warn >&2"]"#,
            "",
        ),
        "",
        "",
    ));
    hook(&master, "feature", "f1");
    hook(&master, "main", "abc123");
    let build = master.wait_for_build(1);
    assert_eq!(build["results"], 0, "{build}");
    assert_eq!(build["state_string"], "build successful");
    assert_eq!(property(&build, "revision"), "abc123");
    assert_eq!(property(&build, "scheduler"), "main");
    assert_eq!(property(&build, "workername"), "local");
    let steps = steps(&master, 1);
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0]["results"], 0);
    assert_eq!(steps[0]["state_string"], "'sh -c ...'");
    let text = log_text(&master, steps[0]["stepid"].as_i64().unwrap());
    assert!(text.contains("\nbuilding main at abc123\n"), "{text}");
    assert!(text.contains("\nwarn\n"), "{text}");
    assert!(text.contains("program finished with exit code 0"), "{text}");
    // The change on `feature` started nothing, even after a while.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(master.builds().len(), 1);
    let requests = master.get_json("/api/v2/buildrequests");
    assert_eq!(requests["meta"]["total"], 1);
    assert_eq!(requests["buildrequests"][0]["complete"], true);
    wait_until("the finish in the log", || {
        master
            .log()
            .contains("build b #1 finished: success")
            .then_some(())
    });
}

#[test]
fn a_failing_step_fails_the_build_and_halt_on_failure_stops_it() {
    let steps_config = [
        shell(r#""exit 3""#, "name = \"first\""),
        shell(r#""echo still here""#, "name = \"second\""),
        shell(r#""exit 1""#, "name = \"halting\"\nhalt_on_failure = true"),
        shell(r#""echo never""#, "name = \"skipped\""),
        shell(r#""echo cleanup""#, "name = \"cleanup\"\nalways_run = true"),
    ]
    .concat();
    let master = Master::start(&config(&steps_config, "", ""));
    hook(&master, "main", "r1");
    let build = master.wait_for_build(1);
    assert_eq!(build["results"], 2, "{build}");
    assert_eq!(build["state_string"], "failed first halting");
    // Logged once the finish is announced, just after it is stored.
    wait_until("the finish in the log", || {
        master
            .log()
            .contains("build b #1 finished: failure (failed first halting)")
            .then_some(())
    });
    let steps = steps(&master, 1);
    let names: Vec<&str> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["first", "second", "halting", "cleanup"]);
    let results: Vec<i64> = steps
        .iter()
        .map(|s| s["results"].as_i64().unwrap())
        .collect();
    assert_eq!(results, [2, 0, 2, 0]);
    assert_eq!(steps[0]["state_string"], "'exit 3' (failure)");
    let text = log_text(&master, steps[0]["stepid"].as_i64().unwrap());
    assert!(text.contains("program finished with exit code 3"), "{text}");
}

#[test]
fn a_hung_step_hits_its_timeout() {
    let master = Master::start(&config(&shell(r#"["sleep", "60"]"#, "timeout = 1"), "", ""));
    hook(&master, "main", "r1");
    let build = master.wait_for_build(1);
    assert_eq!(build["results"], 2, "{build}");
    let steps = steps(&master, 1);
    let text = log_text(&master, steps[0]["stepid"].as_i64().unwrap());
    assert!(
        text.contains("command timed out: 1 seconds without output"),
        "{text}"
    );
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[test]
fn stop_cancels_a_running_build_and_kills_its_processes() {
    let master = Master::start(&config(
        &shell(
            r#""sleep 300 & echo $! > child.pid; wait""#,
            "[[builders.steps]]\ntype = \"shell\"\ncommand = \"echo not after a stop\"",
        ),
        "",
        "",
    ));
    hook(&master, "main", "r1");
    let pid_file = master
        .basedir
        .path()
        .join("workers/local/b/build/child.pid");
    let pid: i32 = wait_until("the step to start its child", || {
        std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok()
    });
    assert!(alive(pid));
    let reply = master.post_json(
        "/api/v2/builds/1",
        &json!({"jsonrpc": "2.0", "method": "stop", "params": {"reason": "enough"}, "id": 7}),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let answer: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(answer, json!({"jsonrpc": "2.0", "result": null, "id": 7}));
    let build = master.wait_for_build(1);
    assert_eq!(build["results"], 6, "{build}");
    // The reason is kept on the build, as Buildbot shows it.
    assert_eq!(build["state_string"], "cancelled (stopped: enough)");
    assert_eq!(steps(&master, 1).len(), 1, "no step runs after a stop");
    wait_until("the step's child to die", || (!alive(pid)).then_some(()));
    // Stopping it again is an error.
    let reply = master.post_json(
        "/api/v2/builds/1",
        &json!({"jsonrpc": "2.0", "method": "stop", "params": {}, "id": 8}),
    );
    assert_eq!(reply.status, 400);
    assert!(
        reply.body.contains("build 1 is not running"),
        "{}",
        reply.body
    );
}

#[test]
fn a_tree_stable_timer_coalesces_quick_changes_into_one_build() {
    let master = Master::start(&config(
        &shell(r#""echo %(prop:revision)s""#, ""),
        "tree_stable_timer = 1",
        "",
    ));
    for revision in ["r1", "r2", "r3"] {
        hook(&master, "main", revision);
    }
    let build = master.wait_for_build(1);
    assert_eq!(property(&build, "revision"), "r3");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(master.builds().len(), 1, "one build for three changes");
    let buildsets = master.get_json("/api/v2/buildsets");
    assert_eq!(buildsets["meta"]["total"], 1);
    assert_eq!(
        buildsets["buildsets"][0]["reason"],
        "The SingleBranchScheduler scheduler named 'main' triggered this build"
    );
}

#[test]
fn pending_tree_stable_changes_survive_a_restart() {
    let base = Basedir::new(&config(
        &shell(r#""echo %(prop:revision)s""#, ""),
        "tree_stable_timer = 2",
        "",
    ));
    let master = base.start();
    hook(&master, "main", "r1");
    let (base, status) = master.stop();
    assert!(status.success());
    let master = base.start();
    let build = master.wait_for_build(1);
    assert_eq!(property(&build, "revision"), "r1");
}

#[test]
fn a_paused_worker_stays_paused_across_a_restart_and_the_api_filters_on_it() {
    let base = Basedir::new(&config(&shell(r#""true""#, ""), "", ""));
    let master = base.start();
    let pause = master.post_json(
        "/api/v2/workers/local",
        &json!({"jsonrpc": "2.0", "method": "pause", "params": {"reason": "disk full"}, "id": 1}),
    );
    assert_eq!(pause.status, 200, "{}", pause.body);
    let paused = master.get_json("/api/v2/workers?paused=true");
    assert_eq!(paused["workers"][0]["name"], "local", "{paused}");
    assert_eq!(paused["workers"][0]["pause_reason"], "disk full");
    assert_eq!(
        master.get_json("/api/v2/workers?paused=false")["meta"]["total"],
        0
    );

    let (base, status) = master.stop();
    assert!(status.success());
    let master = base.start();
    let shown = master.get_json("/api/v2/workers/local")["workers"][0].clone();
    assert_eq!(
        (shown["paused"].clone(), shown["pause_reason"].clone()),
        (json!(true), json!("disk full"))
    );
    hook(&master, "main", "r1");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(master.builds().is_empty(), "a paused worker takes no build");
    let unpause = master.post_json(
        "/api/v2/workers/local",
        &json!({"jsonrpc": "2.0", "method": "unpause", "id": 1}),
    );
    assert_eq!(unpause.status, 200, "{}", unpause.body);
    assert_eq!(master.wait_for_build(1)["results"], 0);
    let shown = master.get_json("/api/v2/workers/local")["workers"][0].clone();
    assert_eq!(
        (shown["paused"].clone(), shown["pause_reason"].clone()),
        (json!(false), Value::Null)
    );
}

const FORCE_PARAMETERS: &str = r#"
[schedulers.branch]
default = "main"
[[schedulers.properties]]
type = "int"
name = "jobs"
default = 1
[[schedulers.properties]]
type = "choice"
name = "target"
choices = ["debug", "release"]
[[schedulers.properties]]
type = "string"
name = "ticket"
required = true
regex = "^T-[0-9]+$"
"#;

#[test]
fn a_forced_build_carries_its_parameters_as_properties() {
    let master = Master::start(&config(
        &shell(r#""echo %(prop:target)s -j%(prop:jobs)s""#, ""),
        "",
        FORCE_PARAMETERS,
    ));
    let reply = master.post_json(
        "/api/v2/forceschedulers/force",
        &json!({"jsonrpc": "2.0", "method": "force", "id": 1, "params": {
            "builderid": "1", "username": "ann", "reason": "check it",
            "jobs": "4", "target": "release", "ticket": "T-12"}}),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let answer: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(answer["result"], json!([1, {"1": 1}]));
    let build = master.wait_for_build(1);
    assert_eq!(build["results"], 0, "{build}");
    assert_eq!(property(&build, "jobs"), 4);
    assert_eq!(property(&build, "target"), "release");
    assert_eq!(property(&build, "ticket"), "T-12");
    assert_eq!(property(&build, "owner"), "ann");
    assert_eq!(property(&build, "branch"), "main");
    assert_eq!(build["properties"]["jobs"][1], "Force Build Form");
    let text = log_text(&master, steps(&master, 1)[0]["stepid"].as_i64().unwrap());
    assert!(text.contains("\nrelease -j4\n"), "{text}");
    let buildset = master.get_json("/api/v2/buildsets/1");
    assert_eq!(
        buildset["buildsets"][0]["reason"],
        "A build was forced by 'ann': check it"
    );
}

#[test]
fn invalid_force_parameters_are_refused_and_build_nothing() {
    let master = Master::start(&config(&shell(r#""true""#, ""), "", FORCE_PARAMETERS));
    let reply = master.post_json(
        "/api/v2/forceschedulers/force",
        &json!({"jsonrpc": "2.0", "method": "force", "id": 2, "params": {
            "jobs": "many", "target": "fast", "ticket": "nope"}}),
    );
    assert_eq!(reply.status, 400, "{}", reply.body);
    let answer: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(answer["id"], 2);
    assert_eq!(answer["error"]["code"], -32602);
    let message = answer["error"]["message"].as_str().unwrap();
    for expected in [
        "'jobs': 'many' is not an integer",
        "'target': invalid choice 'fast'",
        "ticket: 'nope' does not match pattern",
    ] {
        assert!(message.contains(expected), "{message}");
    }
    let missing = master.post_json(
        "/api/v2/forceschedulers/force",
        &json!({"jsonrpc": "2.0", "method": "force", "id": 3, "params": {}}),
    );
    assert_eq!(missing.status, 400);
    assert!(
        missing.body.contains("'ticket' needs to be specified"),
        "{}",
        missing.body
    );
    let unknown = master.post_json(
        "/api/v2/forceschedulers/nope",
        &json!({"jsonrpc": "2.0", "method": "force", "id": 4, "params": {}}),
    );
    assert_eq!(unknown.status, 404);
    let not_json = master.send("POST", "/api/v2/forceschedulers/force", &[], b"{");
    assert_eq!(not_json.status, 400);
    assert_eq!(master.get_json("/api/v2/buildsets")["meta"]["total"], 0);
    assert!(master.builds().is_empty());
}

#[test]
fn at_debug_level_schedulers_log_what_they_do_with_each_change() {
    let master = Basedir::new(&config(&shell(r#""true""#, ""), "", ""))
        .start_logging("info,buildmaster::schedulers=debug");
    hook(&master, "dev", "d1");
    hook(&master, "main", "m1");
    master.wait_for_build(1);
    let log = wait_until("both decisions", || {
        let log = master.log();
        (log.contains("change=1") && log.contains("change=2")).then_some(log)
    });
    let decision = |change: &str| {
        log.lines()
            .find(|l| l.contains(change) && l.contains("scheduler=main"))
            .unwrap_or_else(|| panic!("no decision on {change}:\n{log}"))
            .to_string()
    };
    assert!(
        decision("change=1").contains("DEBUG change filtered out: branch 'dev' is not main"),
        "{log}"
    );
    assert!(
        decision("change=2").contains("DEBUG change accepted; building b"),
        "{log}"
    );
    // The force scheduler does not look at changes.
    assert!(!log.contains("scheduler=force"), "{log}");
}

#[test]
fn json_rpc_needs_the_json_content_type_and_force_takes_builder_names() {
    let master = Master::start(
        r#"
[[workers]]
type = "local"
name = "local"

[[builders]]
name = "b"
workernames = ["local"]
[[builders.steps]]
type = "shell"
command = "true"

[[builders]]
name = "c"
workernames = ["local"]
[[builders.steps]]
type = "shell"
command = "true"

[[schedulers]]
type = "force"
name = "force"
builder_names = ["b", "c"]
"#,
    );
    let call = |id: i64, params: Value| json!({"jsonrpc": "2.0", "method": "force", "id": id, "params": params});
    // What a cross-site form or fetch without preflight can send is refused.
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let reply = master.send(
            "POST",
            "/api/v2/forceschedulers/force",
            &[("Content-Type", content_type)],
            call(1, json!({})).to_string().as_bytes(),
        );
        assert_eq!(reply.status, 400, "{content_type}");
        let answer: Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(answer["error"]["code"], -32600, "{content_type}");
        assert_eq!(
            answer["error"]["message"],
            "Invalid content-type (use application/json)"
        );
    }
    let stop = master.send(
        "POST",
        "/api/v2/builds/1",
        &[("Content-Type", "text/plain")],
        br#"{"jsonrpc": "2.0", "method": "stop", "id": 1}"#,
    );
    assert_eq!(stop.status, 400);
    assert_eq!(master.get_json("/api/v2/buildsets")["meta"]["total"], 0);

    // Buildbot's builderNames: a subset of the scheduler's builders.
    let reply = master.send(
        "POST",
        "/api/v2/forceschedulers/force",
        &[("Content-Type", "application/json; charset=utf-8")],
        call(2, json!({"builderNames": ["c"]}))
            .to_string()
            .as_bytes(),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let answer: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(answer["result"], json!([1, {"2": 1}]));
    for (params, message) in [
        (
            json!({"builderNames": ["b", "x"]}),
            "builder x is not one of this scheduler's builders",
        ),
        (json!({"builderNames": []}), "builderNames lists no builder"),
        (
            json!({"builderNames": "b"}),
            "builderNames must be a list of builder names",
        ),
    ] {
        let reply = master.post_json("/api/v2/forceschedulers/force", &call(3, params.clone()));
        assert_eq!(reply.status, 400, "{params}");
        let answer: Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(answer["error"]["code"], -32602, "{params}");
        assert_eq!(answer["error"]["message"], message, "{params}");
    }
    let both = master.post_json(
        "/api/v2/forceschedulers/force",
        &call(4, json!({"builderNames": ["b", "c"]})),
    );
    let answer: Value = serde_json::from_str(&both.body).unwrap();
    assert_eq!(answer["result"], json!([2, {"1": 2, "2": 3}]));
    master.wait_for_build(1);
}

#[test]
fn a_git_step_checks_out_the_pushed_revision() {
    let repo = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "--quiet", "-b", "main"]);
    std::fs::write(repo.path().join("version"), "one\n").unwrap();
    git(repo.path(), &["add", "version"]);
    git(repo.path(), &["commit", "--quiet", "-m", "one"]);
    let first = git(repo.path(), &["rev-parse", "HEAD"]);
    std::fs::write(repo.path().join("version"), "two\n").unwrap();
    git(repo.path(), &["commit", "--quiet", "-am", "two"]);
    let steps_config = format!(
        "[[builders.steps]]\ntype = \"git\"\nmode = \"full\"\nmethod = \"clobber\"\n{}",
        shell(r#""cat version""#, "")
    );
    let master = Master::start(&config(&steps_config, "", ""));
    let reply = master.post_form(
        "/change_hook/base",
        &format!(
            "branch=main&revision={first}&repository={}",
            repo.path().display()
        ),
    );
    assert_eq!(reply.status, 200);
    let build = master.wait_for_build(1);
    assert_eq!(build["results"], 0, "{build}");
    assert_eq!(property(&build, "got_revision"), first.as_str());
    let steps = steps(&master, 1);
    assert_eq!(steps[0]["name"], "git");
    let text = log_text(&master, steps[1]["stepid"].as_i64().unwrap());
    assert!(text.contains("\none\n"), "the first commit's file: {text}");
}

#[test]
fn a_build_interrupted_by_a_restart_is_retried() {
    let base = Basedir::new(&config(
        &shell(
            r#""if [ -f started ]; then echo second run; else touch started; sleep 300; fi""#,
            "",
        ),
        "",
        "",
    ));
    let master = base.start();
    hook(&master, "main", "r1");
    let marker = master.basedir.path().join("workers/local/b/build/started");
    wait_until("the first run to start", || marker.exists().then_some(()));
    let (base, status) = master.stop();
    assert!(status.success());
    let master = base.start();
    let first = master.wait_for_build(1);
    assert_eq!(first["results"], 5, "RETRY: {first}");
    let second = master.wait_for_build(2);
    assert_eq!(second["results"], 0, "{second}");
    wait_until("the second build's log line", || {
        master
            .log()
            .contains("build b #2 finished: success (build successful, was retry)")
            .then_some(())
    });
    assert_eq!(second["buildrequestid"], first["buildrequestid"]);
    let request = master.get_json("/api/v2/buildrequests/1");
    assert_eq!(request["buildrequests"][0]["complete"], true);
    assert_eq!(request["buildrequests"][0]["results"], 0);
    assert!(master
        .log()
        .contains("finished 1 interrupted build(s) as RETRY"));
}

#[test]
fn rest_collections_answer_with_buildbot_shapes_and_query_options() {
    let master = Master::start(&config(&shell(r#""true""#, ""), "", ""));
    // One after the other: a second request still pending would collapse the first.
    hook(&master, "main", "r1");
    master.wait_for_build(1);
    hook(&master, "main", "r2");
    master.wait_for_build(2);
    let builders = master.get_json("/api/v2/builders");
    assert_eq!(builders["builders"][0]["name"], "b");
    let by_name = master.get_json("/api/v2/builders/b/builds?order=-number&field=number");
    assert_eq!(
        by_name,
        json!({"builds": [{"number": 2}, {"number": 1}], "meta": {"total": 2}})
    );
    let one = master.get_json("/api/v2/builds?number=2&field=buildid");
    assert_eq!(one["builds"], json!([{"buildid": 2}]));
    let workers = master.get_json("/api/v2/workers");
    assert_eq!(workers["workers"][0]["name"], "local");
    assert_eq!(
        workers["workers"][0]["configured_on"],
        json!([{"builderid": 1, "masterid": 1}])
    );
    let schedulers = master.get_json("/api/v2/schedulers");
    assert_eq!(schedulers["meta"]["total"], 2);
    let force = master.get_json("/api/v2/forceschedulers/force");
    assert_eq!(force["forceschedulers"][0]["builder_names"], json!(["b"]));
    for (path, status) in [
        ("/api/v2/builds?nope=1", 400),
        ("/api/v2/builds/x", 400),
        ("/api/v2/builds/99", 404),
        ("/api/v2/builders/nope/builds", 404),
        ("/api/v2/logs/99/contents", 404),
    ] {
        let reply = master.send("GET", path, &[], b"");
        assert_eq!(reply.status, status, "{path}: {}", reply.body);
        assert!(reply.body.contains("\"error\""), "{path}: {}", reply.body);
    }
}
