//! The operator tools in `contrib/`: the repository hook posting pushed commits
//! (a real git bare repository's post-receive, a real Mercurial repository's
//! changegroup) and the systemd unit (its ExecStart, ExecReload and stop, with
//! the `Type=notify` messages systemd would receive).

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use buildmaster_e2e::{binary, send, wait_until, workspace_root, Basedir, Master};
use serde_json::Value;

fn hook_script() -> PathBuf {
    workspace_root().join("contrib/buildmaster_vcs_hook.py")
}

/// Runs a command in `dir` with a fixed identity and no user configuration;
/// panics with its output unless it succeeds.
fn run(dir: &Path, program: &str, args: &[&str]) -> Output {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Ada")
        .env("GIT_AUTHOR_EMAIL", "ada@example.org")
        .env("GIT_COMMITTER_NAME", "Cy")
        .env("GIT_COMMITTER_EMAIL", "cy@example.org")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .env("HGUSER", "Ada <ada@example.org>")
        .env("HGRCPATH", "")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn commit(dir: &Path, file: &str, message: &str) {
    std::fs::write(dir.join(file), message).unwrap();
    run(dir, "git", &["add", file]);
    run(dir, "git", &["commit", "-q", "-m", message]);
}

fn head(dir: &Path, rev: &str) -> String {
    let output = run(dir, "git", &["rev-parse", rev]);
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn files(change: &Value) -> Vec<&str> {
    change["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect()
}

#[test]
fn the_git_post_receive_hook_posts_each_pushed_commit() {
    let master = Master::start("[www.change_hook_dialects]\nbase = true\n");
    let root = tempfile::tempdir().unwrap();
    let bare = root.path().join("app.git");
    run(
        root.path(),
        "git",
        &["init", "-q", "--bare", "-b", "main", "app.git"],
    );
    let hook = bare.join("hooks/post-receive");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nexec python3 {} git --project app\n",
            hook_script().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // The master's address comes from the repository's configuration.
    let url = format!("http://{}", master.addr);
    run(&bare, "git", &["config", "buildmaster.master", &url]);

    let work = root.path().join("work");
    run(
        root.path(),
        "git",
        &["clone", "-q", bare.to_str().unwrap(), "work"],
    );
    commit(&work, "a.c", "Add a");
    commit(&work, "b.c", "Add b\n\nWith a body.");
    run(&work, "git", &["push", "-q", "origin", "main"]);
    let changes = master.changes();
    assert_eq!(changes.len(), 2, "{changes:?}");
    let first = &changes[0];
    assert_eq!(first["revision"], head(&work, "main~1"));
    assert_eq!(first["comments"], "Add a");
    assert_eq!(first["author"], "Ada <ada@example.org>");
    assert_eq!(first["committer"], "Cy <cy@example.org>");
    assert_eq!(first["branch"], "main");
    assert_eq!(first["project"], "app");
    assert_eq!(
        first["repository"],
        bare.canonicalize().unwrap().to_str().unwrap()
    );
    assert_eq!(files(first), ["a.c"]);
    assert_eq!(changes[1]["comments"], "Add b\n\nWith a body.");
    assert_eq!(changes[1]["revision"], head(&work, "main"));

    // A new branch brings only the commits no other branch has; a tag, its commit.
    run(&work, "git", &["checkout", "-q", "-b", "feature"]);
    commit(&work, "c.c", "Add c");
    run(&work, "git", &["tag", "v1", "main"]);
    run(&work, "git", &["push", "-q", "origin", "feature", "v1"]);
    let changes = master.changes();
    assert_eq!(changes.len(), 4, "{changes:?}");
    let pushed: Vec<(&str, &str)> = changes[2..]
        .iter()
        .map(|c| {
            (
                c["branch"].as_str().unwrap(),
                c["revision"].as_str().unwrap(),
            )
        })
        .collect();
    let (feature, main) = (head(&work, "feature"), head(&work, "main"));
    assert!(
        pushed.contains(&("feature", feature.as_str())),
        "{pushed:?}"
    );
    assert!(pushed.contains(&("v1", main.as_str())), "{pushed:?}");

    // A deleted branch gives nothing; a master that cannot be reached is
    // reported to the pusher.
    run(&work, "git", &["push", "-q", "origin", ":feature"]);
    assert_eq!(master.changes().len(), 4);
    run(
        &bare,
        "git",
        &["config", "buildmaster.master", "http://127.0.0.1:9"],
    );
    run(&work, "git", &["checkout", "-q", "main"]);
    commit(&work, "d.c", "Add d");
    let output = run(&work, "git", &["push", "origin", "main"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("buildmaster: change")
            && stderr.contains("was not sent to http://127.0.0.1:9"),
        "{stderr}"
    );
}

#[test]
fn the_mercurial_changegroup_hook_posts_each_pushed_changeset() {
    if Command::new("hg").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "hg (Mercurial) is missing; .ci/run installs it"
        );
        eprintln!("notice: hg (Mercurial) is not installed; the Mercurial hook was not tested");
        return;
    }
    let master = Master::start(
        "change_hook_auth = [\"memory:hg:pw\"]\n[www.change_hook_dialects]\nbase = true\n",
    );
    let root = tempfile::tempdir().unwrap();
    let server = root.path().join("server");
    run(root.path(), "hg", &["init", "server"]);
    std::fs::write(
        server.join(".hg/hgrc"),
        format!(
            "[hooks]\nchangegroup.buildmaster = python3 {} hg --auth hg:pw --repository https://hg.example.org/app\n\
             [buildmaster]\nmaster = http://{}\n",
            hook_script().display(),
            master.addr
        ),
    )
    .unwrap();
    let work = root.path().join("work");
    run(root.path(), "hg", &["clone", "-q", "server", "work"]);
    std::fs::write(work.join("a.c"), "a").unwrap();
    run(&work, "hg", &["add", "-q", "a.c"]);
    run(&work, "hg", &["commit", "-q", "-m", "Add a"]);
    run(&work, "hg", &["branch", "-q", "dev"]);
    std::fs::write(work.join("b.c"), "b").unwrap();
    run(&work, "hg", &["add", "-q", "b.c"]);
    run(&work, "hg", &["commit", "-q", "-m", "Add b on dev"]);
    run(&work, "hg", &["push", "-q", "--new-branch"]);
    let changes = master.changes();
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!(changes[0]["branch"], "default");
    assert_eq!(changes[0]["comments"], "Add a");
    assert_eq!(changes[0]["author"], "Ada <ada@example.org>");
    assert_eq!(changes[0]["repository"], "https://hg.example.org/app");
    assert_eq!(files(&changes[0]), ["a.c"]);
    assert_eq!(changes[1]["branch"], "dev");
    let tip = run(&work, "hg", &["log", "-r", "tip", "-T", "{node}"]);
    assert_eq!(
        changes[1]["revision"],
        String::from_utf8_lossy(&tip.stdout).as_ref()
    );
}

/// The value of `key=` in the `[Service]` section of a unit file.
fn unit_value<'a>(unit: &'a str, key: &str) -> &'a str {
    unit.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("the unit has no {key}="))
}

/// The next notification sent to `socket`, split into its `KEY=VALUE` lines.
fn notification(socket: &UnixDatagram) -> Vec<String> {
    let mut buffer = [0; 1024];
    let n = socket
        .recv(&mut buffer)
        .expect("a notification within the timeout");
    String::from_utf8_lossy(&buffer[..n])
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_systemd_unit_starts_reloads_and_stops_the_master_with_notifications() {
    let unit = std::fs::read_to_string(workspace_root().join("contrib/buildmaster.service"))
        .expect("contrib/buildmaster.service");
    assert_eq!(unit_value(&unit, "Type"), "notify");
    // The unit's paths, pointed at this build and a fresh basedir whose one
    // step checks that the processes of builds do not inherit the socket.
    let base = Basedir::new(
        "[[workers]]\ntype = \"local\"\nname = \"local\"\n\
         [[builders]]\nname = \"env\"\nworkernames = [\"local\"]\n\
         [[builders.steps]]\ntype = \"shell\"\ncommand = 'test -z \"$NOTIFY_SOCKET\"'\n\
         [[schedulers]]\ntype = \"force\"\nname = \"force\"\nbuilder_names = [\"env\"]\n",
    );
    let basedir = base.path().to_str().unwrap();
    let installed = |line: &str| {
        line.replace("/usr/local/bin/buildmaster", binary().to_str().unwrap())
            .replace("/var/lib/buildmaster", basedir)
    };
    let start = installed(unit_value(&unit, "ExecStart"));
    let words: Vec<&str> = start.split_whitespace().collect();
    let socket_path = base.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let log = std::fs::File::create(base.path().join("unit.log")).unwrap();
    let mut child = Command::new(words[0])
        .args(&words[1..])
        .env("NOTIFY_SOCKET", &socket_path)
        .stderr(log)
        .spawn()
        .unwrap();
    let pid = child.id().to_string();

    let ready = notification(&socket);
    assert_eq!(ready[0], "READY=1");
    let url = ready[1]
        .strip_prefix("STATUS=listening on ")
        .unwrap_or_else(|| panic!("{ready:?}"))
        .trim_end_matches('/')
        .to_string();
    assert_eq!(ready[2], format!("MAINPID={pid}"));
    let force = br#"{"jsonrpc": "2.0", "method": "force", "id": 1, "params": {}}"#;
    let reply = send(
        &format!("{url}/api/v2/forceschedulers/force"),
        "POST",
        &[("Content-Type", "application/json")],
        force,
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let build = wait_until("the forced build", || {
        let reply = send(
            &format!("{url}/api/v2/builds/1"),
            "GET",
            &[("Accept", "application/json")],
            b"",
        );
        let json: Value = serde_json::from_str(&reply.body).ok()?;
        let build = json["builds"][0].clone();
        (build["complete"] == true).then_some(build)
    });
    assert_eq!(build["results"], 0, "the step saw NOTIFY_SOCKET: {build}");

    let reload = installed(unit_value(&unit, "ExecReload")).replace("$MAINPID", &pid);
    let words: Vec<&str> = reload.split_whitespace().collect();
    assert!(Command::new(words[0])
        .args(&words[1..])
        .status()
        .unwrap()
        .success());
    let reloading = notification(&socket);
    assert_eq!(reloading[0], "RELOADING=1");
    assert!(reloading[1].starts_with("MONOTONIC_USEC="), "{reloading:?}");
    let ready = notification(&socket);
    assert_eq!(ready[..2], ["READY=1", "STATUS=generation 1 (unchanged)"]);

    // systemd stops a unit with SIGTERM.
    // SAFETY: signalling the master this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(notification(&socket)[0], "STOPPING=1");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    wait_until("the unit's log", || {
        std::fs::read_to_string(base.path().join("unit.log"))
            .ok()
            .filter(|log| log.contains("stopped cleanly"))
    });
}
