//! The `buildmaster` command line: create-master, checkconfig, start/stop with
//! the pid file, sendchange, --version.

use std::time::{Duration, Instant};

use buildmaster_e2e::{binary, replace_file, run_cli, wait_until, Basedir};

#[test]
fn version_is_printed() {
    let out = run_cli(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("buildmaster {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn create_master_writes_a_configuration_that_checks() {
    let dir = tempfile::tempdir().unwrap();
    let basedir = dir.path().join("master");
    let out = run_cli(&["create-master", basedir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(basedir.join("master.toml").is_file() && basedir.join("plugins").is_dir());
    let out = run_cli(&["checkconfig", basedir.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("dialects: base") && stdout.contains("Config file is good!"),
        "{stdout}"
    );
    assert!(
        !basedir.join("plugin-cache").exists(),
        "checkconfig leaves the basedir alone"
    );
    std::fs::write(basedir.join("master.toml"), "# mine\n").unwrap();
    let again = run_cli(&["create-master", basedir.to_str().unwrap()]);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("exists already"));
    assert_eq!(
        std::fs::read_to_string(basedir.join("master.toml")).unwrap(),
        "# mine\n"
    );
}

#[test]
fn the_master_create_master_writes_builds_a_change_it_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_cli(&["create-master", dir.path().to_str().unwrap()]);
    assert!(out.status.success());
    let file = dir.path().join("master.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("port = \"127.0.0.1:8010\""), "{text}");
    std::fs::write(&file, text.replace("127.0.0.1:8010", "127.0.0.1:0")).unwrap();
    let master = Basedir { dir }.start();
    // Every built-in plugin is available.
    for plugin in ["base", "github", "gitlab", "mattermost"] {
        assert!(
            master.log().contains(&format!("plugin {plugin} ")),
            "{plugin}: {}",
            master.log()
        );
    }
    let out = run_cli(&[
        "sendchange",
        "--master",
        &master.addr,
        "--who",
        "Ada <ada@example.org>",
        "--branch",
        "main",
        "--revision",
        "1a2b3c",
        "--comments",
        "Fix the build",
        "src/main.c",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let build = master.wait_for_build(1);
    assert_eq!(build["results"], 0, "{build}");
    assert_eq!(build["state_string"], "build successful");
    let log = master.get_json("/api/v2/builds/1/steps")["steps"][0]["stepid"]
        .as_i64()
        .map(|step| {
            master.get_json(&format!("/api/v2/steps/{step}/logs"))["logs"][0]["logid"]
                .as_i64()
                .unwrap()
        })
        .map(|log| {
            master
                .send("GET", &format!("/api/v2/logs/{log}/raw"), &[], b"")
                .body
        })
        .unwrap();
    assert!(
        log.contains("building branch main at revision 1a2b3c\n"),
        "{log}"
    );
    // And on demand.
    let reply = master.post_json(
        "/api/v2/forceschedulers/force",
        &serde_json::json!({"jsonrpc": "2.0", "method": "force", "id": 1, "params": {}}),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(master.wait_for_build(2)["results"], 0);
}

#[test]
fn a_missing_plugin_directory_is_a_warning_for_checkconfig_start_and_reload() {
    let config = |www: &str| {
        format!(
            "[master]\nplugin_dirs = [\"plugins\", \"@builtin\"]\n\
             [www]\nport = \"127.0.0.1:0\"\n{www}[www.change_hook_dialects]\nbase = true\n"
        )
    };
    let base = Basedir::with_file(&config(""));
    let out = run_cli(&["checkconfig", base.path().to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let warning = format!(
        "plugin directory {} does not exist",
        base.path().join("plugins").display()
    );
    assert!(
        stderr.contains("WARN") && stderr.contains(&warning),
        "{stderr}"
    );
    let master = base.start();
    assert!(master.log().contains(&warning), "{}", master.log());
    assert_eq!(
        master.post_form("/change_hook/base", "comments=x").status,
        200
    );
    replace_file(
        &master.basedir.path().join("master.toml"),
        config("max_body_size = 5000\n"),
    );
    let status = master.wait_for_generation(2);
    assert_eq!(status["result"], "applied", "{status}");
    wait_until("the reload's warning", || {
        (master.log().matches(&warning).count() == 2).then_some(())
    });
}

#[test]
fn checkconfig_names_file_and_line_of_every_error() {
    let base = Basedir::new("max_body_size = -1\n[db]\ndb_ur = 'x'\n");
    let out = run_cli(&[
        "checkconfig",
        base.path().join("master.toml").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("master.toml:5:1: unknown field `db_ur`"),
        "{stderr}"
    );
    // A syntax-valid file with a bad value: the value's line.
    let base = Basedir::new("max_body_size = -1\n");
    let out = run_cli(&["checkconfig", base.path().to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("master.toml:3:17: max_body_size must be a positive"),
        "{stderr}"
    );
    // start refuses the same file with a non-zero exit.
    let out = run_cli(&["start", base.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("master.toml:3:17"));
}

#[test]
fn start_writes_a_pid_file_and_stop_ends_the_master() {
    let base = Basedir::new("[www.change_hook_dialects]\nbase = true\n");
    let dir = base.path().to_path_buf();
    let master = base.start();
    let pid_file = dir.join("buildmaster.pid");
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        master.pid().to_string()
    );

    let second = std::process::Command::new(binary())
        .arg("start")
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&second.stderr).contains("already running"));

    let out = run_cli(&["stop", dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while pid_file.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!pid_file.exists(), "the pid file is removed on exit");
    assert!(master.log().contains("SIGTERM received"));
    let out = run_cli(&["stop", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "nothing left to stop");
}

#[test]
fn sendchange_posts_to_the_base_dialect() {
    let base = Basedir::new(
        "change_hook_auth = ['memory:ci:pw']\n[www.change_hook_dialects]\nbase = true\n",
    );
    let master = base.start();
    let out = run_cli(&[
        "sendchange",
        "--master",
        &master.addr,
        "--auth",
        "ci:pw",
        "--who",
        "Ada <ada@example.org>",
        "--branch",
        "main",
        "--revision",
        "abc123",
        "--repository",
        "https://git.example.org/app.git",
        "--project",
        "app",
        "--comments",
        "Fix the build",
        "--property",
        "ticket:42",
        "--when",
        "1700000000",
        "src/a.c",
        "src/b.c",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 change found"));
    let change = &master.changes()[0];
    assert_eq!(change["author"], "Ada <ada@example.org>");
    assert_eq!(change["branch"], "main");
    assert_eq!(change["revision"], "abc123");
    assert_eq!(change["project"], "app");
    assert_eq!(change["comments"], "Fix the build");
    assert_eq!(change["files"], serde_json::json!(["src/a.c", "src/b.c"]));
    assert_eq!(
        change["properties"]["ticket"],
        serde_json::json!(["42", "Change"])
    );
    assert_eq!(change["when_timestamp"], 1700000000);

    let out = run_cli(&["sendchange", "--master", &master.addr, "--comments", "x"]);
    assert_eq!(out.status.code(), Some(1), "without credentials");
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}

#[test]
fn start_daemon_detaches_and_logs_to_the_basedir() {
    let base = Basedir::new("[www.change_hook_dialects]\nbase = true\n");
    let dir = base.path().to_str().unwrap().to_string();
    let out = run_cli(&["start", "--daemon", &dir]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let address = stdout
        .split("listening on http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("{stdout}"))
        .to_string();
    let reply = buildmaster_e2e::send(
        &format!("http://{address}/change_hook/base?comments=daemon"),
        "GET",
        &[],
        b"",
    );
    assert_eq!((reply.status, reply.body.as_str()), (200, "1 change found"));
    let out = run_cli(&["stop", &dir]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = std::fs::read_to_string(base.path().join("buildmaster.log")).unwrap();
    assert!(log.contains("SIGTERM received"), "{log}");

    let broken = Basedir::new("bogus = 1\n");
    let out = run_cli(&["start", "--daemon", broken.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("master.toml:3:1: unknown field `bogus`"));
}
