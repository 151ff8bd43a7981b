//! The `buildmaster` command line: create-master, checkconfig, start/stop with
//! the pid file, sendchange, --version.

use std::time::{Duration, Instant};

use buildmaster_e2e::{binary, run_cli, Basedir};

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
