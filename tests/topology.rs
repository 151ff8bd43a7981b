//! The running master as a set of services: a reload keeps the tasks of
//! what it does not change, shutdown joins every task, and a clean shutdown
//! (`buildmaster stop --clean`, SIGUSR1, JSON-RPC `shutdown`) lets running
//! builds finish and starts no new one.

use std::process::Command;
use std::time::Duration;

use buildmaster_e2e::{binary, replace_file, wait_until, Basedir, Master};
use serde_json::{json, Value};

const LISTEN: &str = "[www]\nport = \"127.0.0.1:0\"\n";

/// The incarnation of each task, by name.
fn tasks(master: &Master) -> Vec<(String, u64)> {
    master.reconfig()["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_owned(),
                t["incarnation"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn incarnation(tasks: &[(String, u64)], name: &str) -> u64 {
    tasks
        .iter()
        .find(|(n, _)| n.starts_with(name))
        .unwrap_or_else(|| panic!("no task {name}: {tasks:?}"))
        .1
}

#[test]
fn a_reload_keeps_the_tasks_of_what_it_does_not_change() {
    let master_toml = |b_hour: u32, step: &str| {
        format!(
            "[master]\nreload_on_change = false\n{LISTEN}\
             [www.change_hook_dialects]\nbase = true\n\
             [[workers]]\ntype = \"local\"\nname = \"w\"\n\
             [[builders]]\nname = \"app\"\nworkernames = [\"w\"]\n\
             [[builders.steps]]\ntype = \"shell\"\ncommand = \"{step}\"\n\
             [[schedulers]]\ntype = \"nightly\"\nname = \"a\"\nbuilder_names = [\"app\"]\nhour = 3\n\
             [[schedulers]]\ntype = \"nightly\"\nname = \"b\"\nbuilder_names = [\"app\"]\nhour = {b_hour}\n"
        )
    };
    let master = Master::start_with(&master_toml(4, "true"));
    let before = tasks(&master);
    assert_eq!(master.reconfig()["healthy"], true);
    for name in [
        "http server on",
        "schedulers: changes",
        "schedulers: timers",
        "nightly scheduler 'a'",
        "nightly scheduler 'b'",
        "builder 'app'",
        "botmaster requests",
        "event log",
    ] {
        incarnation(&before, name);
    }
    let file = master.basedir.path().join("master.toml");
    replace_file(&file, master_toml(5, "echo changed"));
    // SAFETY: signalling the master this test started.
    unsafe { libc::kill(master.pid() as i32, libc::SIGHUP) };
    let status = master.wait_for_generation(2);
    assert_eq!(
        status["changes"],
        json!(["builders +0 ~1 -0 (~app)", "schedulers +0 ~1 -0 (~b)"])
    );
    let after = tasks(&master);
    // Untouched services keep their very tasks; a changed builder applies
    // its settings in place; only the changed nightly scheduler restarts.
    for name in [
        "http server on",
        "schedulers: changes",
        "schedulers: timers",
        "nightly scheduler 'a'",
        "builder 'app'",
        "botmaster requests",
        "event log",
    ] {
        assert_eq!(
            incarnation(&before, name),
            incarnation(&after, name),
            "{name}"
        );
    }
    assert!(
        incarnation(&after, "nightly scheduler 'b'")
            > incarnation(&before, "nightly scheduler 'b'")
    );
    // The typed difference is there too, by component.
    assert_eq!(status["diff"]["schedulers"]["changed"], json!(["b"]));
}

#[test]
fn sigterm_joins_every_task() {
    let master = Master::start(
        "[www.change_hook_dialects]\nbase = true\n[[workers]]\ntype = \"local\"\nname = \"w\"\n",
    );
    let running = tasks(&master).len();
    assert!(running >= 5, "{running}");
    let (base, status) = master.stop();
    assert!(status.success(), "{status}");
    let log = std::fs::read_to_string(base.path().join("test-master.log")).unwrap();
    assert!(
        log.contains(&format!("stopped cleanly: all {running} task(s) ended")),
        "{log}"
    );
}

/// A master whose one builder waits for a file `go` in its build directory,
/// with a force scheduler.
fn waiting_master() -> Master {
    Master::start(
        r#"
[[workers]]
type = "local"
name = "w"

[[builders]]
name = "app"
workernames = ["w"]

[[builders.steps]]
type = "shell"
command = "touch started; while [ ! -f go ]; do sleep 0.05; done"

[[schedulers]]
type = "force"
name = "force"
builder_names = ["app"]
"#,
    )
}

fn force(master: &Master) {
    let reply = master.post_json(
        "/api/v2/forceschedulers/force",
        &json!({"jsonrpc": "2.0", "method": "force", "id": 1, "params": {}}),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
}

fn shutdown(master: &Master, action: &str) -> Value {
    let reply = master.post_json(
        "/api/v2/masters/1",
        &json!({"jsonrpc": "2.0", "method": "shutdown", "id": 1, "params": {"action": action}}),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    serde_json::from_str::<Value>(&reply.body).unwrap()["result"].clone()
}

#[test]
fn stop_clean_waits_for_the_running_build_starts_nothing_new_and_exits_0() {
    let master = waiting_master();
    let build_dir = master.basedir.path().join("workers/w/app/build");
    force(&master);
    wait_until("the build to start", || {
        build_dir.join("started").exists().then_some(())
    });
    force(&master);
    let basedir = master.basedir.path().to_owned();
    let stopping = std::thread::spawn(move || {
        Command::new(binary())
            .arg("stop")
            .arg("--clean")
            .arg(basedir)
            .output()
            .expect("run buildmaster stop --clean")
    });
    wait_until("the clean shutdown", || {
        master
            .log()
            .contains("clean shutdown started")
            .then_some(())
    });
    let masters = master.get_json("/api/v2/masters");
    assert_eq!(
        masters["masters"][0]["shutdown"],
        json!({"state": "draining", "running_builds": 1})
    );
    // The running builds, of the builder and of the master.
    let running = master.get_json("/api/v2/builders/app/builds?complete=false");
    assert_eq!(running["meta"]["total"], 1);
    assert_eq!(
        master.get_json("/api/v2/builds?complete=false")["meta"]["total"],
        1
    );
    // The running build goes on; the pending request does not start.
    std::thread::sleep(Duration::from_millis(500));
    assert!(!stopping.is_finished(), "stop --clean waits");
    assert_eq!(master.builds().len(), 1);
    std::fs::write(build_dir.join("go"), "").unwrap();
    let output = stopping.join().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("clean shutdown started"), "{stdout}");
    assert!(stdout.contains("stopped"), "{stdout}");
    let (base, status) = master.stop();
    assert!(status.success());
    // Nothing was lost: the pending request is built after a restart.
    let master = base.start();
    let build = master.wait_for_build(2);
    assert_eq!(build["results"], 0);
    assert_eq!(master.wait_for_build(1)["results"], 0);
}

#[test]
fn a_clean_shutdown_can_be_cancelled_and_builds_start_again() {
    let master = waiting_master();
    let build_dir = master.basedir.path().join("workers/w/app/build");
    assert_eq!(
        shutdown(&master, "check"),
        json!({"state": "running", "running_builds": 0})
    );
    force(&master);
    wait_until("the build to start", || {
        build_dir.join("started").exists().then_some(())
    });
    assert_eq!(
        shutdown(&master, "start"),
        json!({"state": "draining", "running_builds": 1})
    );
    force(&master);
    std::fs::write(build_dir.join("go"), "").unwrap();
    // The master would stop once the build ends; cancel first.
    assert_eq!(shutdown(&master, "cancel")["state"], "running");
    assert_eq!(master.wait_for_build(1)["results"], 0);
    assert_eq!(master.wait_for_build(2)["results"], 0, "builds start again");
    let reply = master.post_json(
        "/api/v2/masters/1",
        &json!({"jsonrpc": "2.0", "method": "shutdown", "id": 2, "params": {"action": "later"}}),
    );
    assert_eq!(reply.status, 400);
    assert!(reply.body.contains("invalid shutdown action 'later'"));
}

#[test]
fn a_clean_shutdown_with_nothing_running_stops_at_once_and_so_does_shutdown_now() {
    let base = Basedir::new("");
    let master = base.start();
    let pid = master.pid() as i32;
    // SAFETY: signalling the master this test started.
    unsafe { libc::kill(pid, libc::SIGUSR1) };
    let (_, status) = master.stop();
    assert!(status.success());

    let master = Master::start("");
    let answer = shutdown(&master, "now");
    assert_eq!(answer["state"], "stopping");
    wait_until("the master to exit", || {
        master.log().contains("stopped cleanly").then_some(())
    });
}
