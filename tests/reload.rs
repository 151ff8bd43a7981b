//! Reconfiguring a running master: the file watch, `buildmaster reconfig`,
//! plugin upgrades, failed reloads that change nothing, reloads under load,
//! the listen address and `change_hook_auth`, and running builds.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use buildmaster_e2e::{fixture, replace_file, run_cli, versioned_v2, wait_until, Basedir, Master};
use serde_json::Value;

const LISTEN: &str = "[www]\nport = \"127.0.0.1:0\"\n";

/// A whole master.toml: loopback on an ephemeral port, then `rest`.
fn config(rest: &str) -> String {
    format!("{LISTEN}{rest}")
}

fn reconfig_cli(master: &Master) -> std::process::Output {
    run_cli(&["reconfig", master.basedir.path().to_str().unwrap()])
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_sighup_during_start_up_does_not_end_the_master() {
    let base = Basedir::new("[www.change_hook_dialects]\nbase = true\n");
    let log = std::fs::File::create(base.path().join("early.log")).unwrap();
    let mut child = std::process::Command::new(buildmaster_e2e::binary())
        .arg("start")
        .arg(base.path())
        .stderr(log)
        .spawn()
        .unwrap();
    // As soon as the master catches SIGHUP (bit 0 of SigCgt), which is
    // before it reads its configuration, loads plugins or listens.
    let status = format!("/proc/{}/status", child.id());
    wait_until("the SIGHUP handler", || {
        let text = std::fs::read_to_string(&status).ok()?;
        let caught = text.lines().find_map(|l| l.strip_prefix("SigCgt:"))?;
        let mask = u64::from_str_radix(caught.trim(), 16).ok()?;
        (mask & 1 == 1).then_some(())
    });
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    let log_path = base.path().join("early.log");
    wait_until("the master to listen", || {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        log.contains(" listening on ").then_some(())
    });
    assert!(child.try_wait().unwrap().is_none(), "still running");
    wait_until("the early SIGHUP's reload", || {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        log.contains("reconfig (SIGHUP)").then_some(())
    });
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}

#[test]
fn editing_master_toml_enables_and_disables_a_dialect_without_a_signal() {
    let base = Basedir::new("[www.change_hook_dialects]\nbase = true\n");
    let master = base.start();
    let ping = || {
        master.send(
            "POST",
            "/change_hook/github",
            &[
                ("X-GitHub-Event", "ping"),
                ("Content-Type", "application/json"),
            ],
            b"{}",
        )
    };
    let reply = ping();
    assert_eq!(reply.status, 400);
    assert!(reply.body.contains("wasn't whitelisted"), "{}", reply.body);
    let with_github = config("[www.change_hook_dialects]\nbase = true\ngithub = true\n");
    replace_file(&master.basedir.path().join("master.toml"), with_github);
    let status = master.wait_for_generation(2);
    assert_eq!(status["result"], "applied");
    assert_eq!(status["trigger"], "file change");
    assert_eq!(status["attempts"], 1, "one save, one reload: {status}");
    let reply = ping();
    assert_eq!(reply.status, 200, "{}", reply.body);
    replace_file(
        &master.basedir.path().join("master.toml"),
        config("[www.change_hook_dialects]\nbase = true\n"),
    );
    master.wait_for_generation(3);
    let reply = ping();
    assert_eq!(reply.status, 400);
    assert!(reply.body.contains("wasn't whitelisted"), "{}", reply.body);
    assert_eq!(
        master.post_form("/change_hook/base", "comments=x").status,
        200
    );
}

#[test]
fn a_save_that_changes_nothing_is_a_no_op_and_reconfig_says_so() {
    let master = Master::start("[www.change_hook_dialects]\nbase = true\n");
    let file = master.basedir.path().join("master.toml");
    // The same settings, with a comment that moves every line down.
    let same = format!("# comment\n{}", std::fs::read_to_string(&file).unwrap());
    replace_file(&file, &same);
    let status = wait_until("the reload of an identical file", || {
        let status = master.reconfig();
        (status["attempts"] == 1).then_some(status)
    });
    assert_eq!(status["result"], "unchanged");
    assert_eq!(status["generation"], 1);
    let output = reconfig_cli(&master);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert_eq!(
        stdout,
        "master.toml is already live in generation 1 (since the master started)\n"
    );
    assert_eq!(master.reconfig()["attempts"], 2);
}

#[test]
fn a_rebuilt_plugin_serves_the_next_requests_while_requests_in_flight_finish_on_the_old() {
    let base = Basedir::new(
        "[master]\nplugin_dirs = [\"plugins\"]\nreload_on_change = false\n\
         [www.change_hook_dialects]\nversioned = true\n",
    );
    base.write(
        "plugins/libfixture_versioned.so",
        std::fs::read(fixture("fixture_versioned")).unwrap(),
    );
    let master = Arc::new(base.start());
    let reply = master.post_form("/change_hook/versioned", "");
    assert_eq!((reply.status, reply.body.as_str()), (200, "answered by v1"));
    let slow = {
        let master = Arc::clone(&master);
        std::thread::spawn(move || master.post_form("/change_hook/versioned?sleep_ms=1500", ""))
    };
    std::thread::sleep(Duration::from_millis(300));
    replace_file(
        &master
            .basedir
            .path()
            .join("plugins/libfixture_versioned.so"),
        std::fs::read(versioned_v2()).unwrap(),
    );
    let output = reconfig_cli(&master);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("dialects +0 ~1 -0"),
        "{}",
        text(&output.stdout)
    );
    let reply = master.post_form("/change_hook/versioned", "");
    assert_eq!((reply.status, reply.body.as_str()), (200, "answered by v2"));
    let slow = slow.join().unwrap();
    assert_eq!(
        (slow.status, slow.body.as_str()),
        (200, "answered by v1"),
        "the request in flight finished on the old version"
    );
    let mut comments: Vec<String> = master
        .changes()
        .iter()
        .map(|c| c["comments"].as_str().unwrap().to_owned())
        .collect();
    comments.sort();
    assert_eq!(comments, ["stored by v1", "stored by v1", "stored by v2"]);
    // Reloading the same library again loads nothing new.
    let output = reconfig_cli(&master);
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("master.toml is already live in generation 2 (applied on SIGHUP"),
        "{stdout}"
    );
}

#[test]
fn a_bad_configuration_leaves_the_old_one_serving_and_says_why() {
    let master = Master::start(
        "[master]\nreload_on_change = false\n[www.change_hook_dialects]\nbase = true\n",
    );
    let file = master.basedir.path().join("master.toml");
    let good = std::fs::read_to_string(&file).unwrap();
    let example = fixture("example_dialect");
    let cases = [
        (format!("{good}[www\n"), "master.toml:7:"),
        (format!("{good}[master2]\n"), "unknown field `master2`"),
        (
            format!(
                "{good}[www.change_hook_dialects.custom]\nplugin = \"missing.so\"\ndialect = \"example\"\n"
            ),
            "missing.so",
        ),
        (
            format!(
                "{good}[www.change_hook_dialects.example]\nplugin = \"{}\"\ntoken = 5\n",
                example.display()
            ),
            "options.token: expected a string or a list of strings",
        ),
        (
            good.replace("[www]", "[db]\ndb_url = \"sqlite:///other.sqlite\"\n[www]"),
            "db_url cannot change while the master runs",
        ),
    ];
    for (attempt, (bad, expected)) in cases.iter().enumerate() {
        replace_file(&file, bad);
        let output = reconfig_cli(&master);
        assert!(!output.status.success(), "{bad}");
        let stderr = text(&output.stderr);
        assert!(stderr.contains(expected), "{expected}: {stderr}");
        assert!(
            stderr.contains("reconfig failed; the running configuration (generation 1) stays"),
            "{stderr}"
        );
        let status = master.reconfig();
        assert_eq!(status["result"], "failed");
        assert_eq!(status["generation"], 1);
        assert_eq!(status["attempts"], attempt as u64 + 1);
        let errors = status["errors"].to_string();
        assert!(errors.contains(expected), "{expected}: {errors}");
        assert_eq!(
            master.post_form("/change_hook/base", "comments=x").status,
            200
        );
    }
    assert!(master.log().contains("reconfig (SIGHUP) failed"));
}

#[test]
fn an_incompatible_plugin_dropped_in_fails_the_reload_until_it_is_removed() {
    let base = Basedir::new(
        "[master]\nplugin_dirs = [\"plugins\", \"@builtin\"]\nreload_on_change = false\n\
         [www.change_hook_dialects]\nbase = true\n",
    );
    std::fs::create_dir(base.path().join("plugins")).unwrap();
    let master = base.start();
    let dropped = master.basedir.path().join("plugins/libold.so");
    replace_file(&dropped, std::fs::read(fixture("fixture_old_api")).unwrap());
    let output = reconfig_cli(&master);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("libold.so"), "{stderr}");
    assert!(stderr.contains("built against plugin API"), "{stderr}");
    assert_eq!(
        master.post_form("/change_hook/base", "comments=x").status,
        200
    );
    std::fs::remove_file(&dropped).unwrap();
    let output = reconfig_cli(&master);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(master.reconfig()["result"], "unchanged");
}

#[test]
fn fifty_reloads_under_steady_load_fail_no_request_and_lose_no_change() {
    let rest = |title: &str, gitorious: bool| {
        config(&format!(
            "[master]\ntitle = \"{title}\"\nreload_on_change = false\n\
             [www.change_hook_dialects]\nbase = true\ngitorious = {gitorious}\n"
        ))
    };
    let base = Basedir::new("");
    base.write("master.toml", rest("a", false));
    let master = Arc::new(base.start());
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicU64::new(0));
    let senders: Vec<_> = (0..4)
        .map(|_| {
            let (master, stop, accepted) = (master.clone(), stop.clone(), accepted.clone());
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let reply = master.post_form("/change_hook/base", "comments=load");
                    if reply.status == 200 && reply.body == "1 change found" {
                        accepted.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failures.push((reply.status, reply.body));
                    }
                }
                failures
            })
        })
        .collect();
    let file = master.basedir.path().join("master.toml");
    for round in 0..50 {
        let title = format!("t{round}");
        replace_file(&file, rest(&title, round % 2 == 0));
        let output = reconfig_cli(&master);
        assert!(output.status.success(), "{}", text(&output.stderr));
    }
    stop.store(true, Ordering::Relaxed);
    let failures: Vec<(u16, String)> = senders
        .into_iter()
        .flat_map(|sender| sender.join().unwrap())
        .collect();
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(master.reconfig()["generation"], 51);
    let stored = master.get_json("/api/v2/changes?limit=1")["meta"]["total"].clone();
    let accepted = accepted.load(Ordering::Relaxed);
    assert!(accepted > 50, "the load ran throughout: {accepted}");
    assert_eq!(
        stored,
        Value::from(accepted),
        "every acknowledged change is stored"
    );
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn the_listen_address_and_change_hook_auth_change_by_reload() {
    let master_toml = |port: u16, auth: &str| {
        format!(
            "[master]\nreload_on_change = false\n[www]\nport = \"127.0.0.1:{port}\"\n{auth}\
             [www.change_hook_dialects]\nbase = true\n"
        )
    };
    let first = free_port();
    let base = Basedir::new("");
    base.write("master.toml", master_toml(first, ""));
    let mut master = base.start();
    assert_eq!(master.addr, format!("127.0.0.1:{first}"));
    let second = free_port();
    let file = master.basedir.path().join("master.toml");
    replace_file(
        &file,
        master_toml(second, "change_hook_auth = [\"memory:ann:pw\"]\n"),
    );
    let output = reconfig_cli(&master);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(stdout.contains("port changed"), "{stdout}");
    assert!(stdout.contains("change_hook_auth changed"), "{stdout}");
    master.follow_new_address();
    assert_eq!(master.addr, format!("127.0.0.1:{second}"));
    wait_until("the old port to close", || {
        std::net::TcpStream::connect(("127.0.0.1", first))
            .is_err()
            .then_some(())
    });
    let reply = master.post_form("/change_hook/base", "comments=x");
    assert_eq!(reply.status, 401);
    let reply = master.send(
        "POST",
        "/change_hook/base",
        &[
            ("Authorization", "Basic YW5uOnB3"),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        b"comments=x",
    );
    assert_eq!(reply.status, 200);
    // Another password for the same user is a change too.
    replace_file(
        &file,
        master_toml(second, "change_hook_auth = [\"memory:ann:other\"]\n"),
    );
    let output = reconfig_cli(&master);
    assert!(text(&output.stdout).contains("change_hook_auth changed"));
    let reply = master.send(
        "POST",
        "/change_hook/base",
        &[("Authorization", "Basic YW5uOnB3")],
        b"",
    );
    assert_eq!(reply.status, 401);
}

#[test]
fn running_builds_finish_as_they_started_when_their_builder_changes() {
    let master_toml = |second_step: &str| {
        config(&format!(
            r#"[master]
reload_on_change = false
[www.change_hook_dialects]
base = true
[[workers]]
type = "local"
name = "w"
[[builders]]
name = "b"
workernames = ["w"]
[[builders.steps]]
type = "shell"
command = "touch started; while [ ! -f go ]; do sleep 0.05; done"
{second_step}
[[schedulers]]
type = "any_branch"
name = "all"
builder_names = ["b"]
"#
        ))
    };
    let base = Basedir::new("");
    base.write("master.toml", master_toml(""));
    let master = base.start();
    assert_eq!(
        master.post_form("/change_hook/base", "branch=x").status,
        200
    );
    let build_dir = master.basedir.path().join("workers/w/b/build");
    wait_until("the build to start", || {
        build_dir.join("started").exists().then_some(())
    });
    replace_file(
        &master.basedir.path().join("master.toml"),
        master_toml("[[builders.steps]]\ntype = \"shell\"\nname = \"added\"\ncommand = \"true\""),
    );
    let output = reconfig_cli(&master);
    assert!(
        text(&output.stdout).contains("builders +0 ~1 -0"),
        "{}",
        text(&output.stdout)
    );
    std::fs::write(build_dir.join("go"), "").unwrap();
    let first = master.wait_for_build(1);
    assert_eq!(first["results"], 0);
    let steps = master.get_json("/api/v2/builds/1/steps")["steps"].clone();
    assert_eq!(
        steps.as_array().unwrap().len(),
        1,
        "the old builder had one step"
    );
    assert_eq!(
        master.post_form("/change_hook/base", "branch=y").status,
        200
    );
    master.wait_for_build(2);
    let steps = master.get_json("/api/v2/builds/2/steps")["steps"].clone();
    assert_eq!(steps[1]["name"], "added");
    // A removed builder finishes its running build and starts no other.
    std::fs::remove_file(build_dir.join("go")).unwrap();
    std::fs::remove_file(build_dir.join("started")).unwrap();
    assert_eq!(
        master.post_form("/change_hook/base", "branch=z").status,
        200
    );
    wait_until("build 3 to start", || {
        build_dir.join("started").exists().then_some(())
    });
    // Waits: the builder's one worker is busy with build 3.
    assert_eq!(
        master.post_form("/change_hook/base", "branch=v").status,
        200
    );
    wait_until("the request for branch v", || {
        let requests = master.get_json("/api/v2/buildrequests?complete=false");
        (requests["meta"]["total"] == 2).then_some(())
    });
    let without_builder =
        config("[master]\nreload_on_change = false\n[www.change_hook_dialects]\nbase = true\n");
    replace_file(&master.basedir.path().join("master.toml"), without_builder);
    let output = reconfig_cli(&master);
    let stdout = text(&output.stdout);
    assert!(stdout.contains("builders +0 ~0 -1"), "{stdout}");
    assert!(stdout.contains("workers +0 ~0 -1"), "{stdout}");
    // Removed by a reload, the worker is gone, not missing.
    wait_until("the removed worker to be announced", || {
        master.log().contains("worker w disconnected").then_some(())
    });
    assert!(!master.log().contains("worker w is missing"));
    std::fs::write(build_dir.join("go"), "").unwrap();
    assert_eq!(master.wait_for_build(3)["results"], 0);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(master.builds().len(), 3, "a removed builder starts nothing");
    let pending = master.get_json("/api/v2/buildrequests?complete=false");
    assert_eq!(
        pending["meta"]["total"], 1,
        "its request waits for it to come back"
    );
}
