//! Remote workers end to end: a real `buildbot-worker` (from PyPI, created
//! with `--protocol=msgpack_experimental_v7`) and our native worker
//! (`buildmaster worker`) connect to the real master on loopback and run
//! its builds.
//!
//! `.ci/run` installs `buildbot-worker` in a virtual environment and names it
//! in `BUILDBOT_WORKER`. Elsewhere the tests look for
//! `target/buildbot-worker-venv/bin/buildbot-worker`, then the `PATH`; without
//! it the tests that need it skip with a notice, unless `CI` is set.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use buildmaster_e2e::{wait_until, workspace_root, Master};

/// The `buildbot-worker` to run, if there is one.
fn buildbot_worker() -> Option<PathBuf> {
    let found = std::env::var_os("BUILDBOT_WORKER")
        .map(PathBuf::from)
        .or_else(|| {
            let venv = workspace_root().join("target/buildbot-worker-venv/bin/buildbot-worker");
            venv.exists().then_some(venv)
        })
        .or_else(|| {
            Command::new("buildbot-worker")
                .arg("--version")
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|_| PathBuf::from("buildbot-worker"))
        });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "buildbot-worker is missing: .ci/run installs it"
        );
        eprintln!("notice: buildbot-worker is not installed; skipping the remote worker tests");
    }
    found
}

/// A `buildbot-worker` process, stopped on drop.
struct BuildbotWorker {
    child: Child,
}

impl BuildbotWorker {
    /// Creates a worker in `dir` for master port `port` and starts it in the
    /// foreground.
    fn start(program: &Path, dir: &Path, port: u16, name: &str, password: &str) -> BuildbotWorker {
        let created = Command::new(program)
            .args([
                "create-worker",
                "--protocol=msgpack_experimental_v7",
                "--keepalive=1",
            ])
            .arg(dir)
            .arg(format!("127.0.0.1:{port}"))
            .args([name, password])
            .output()
            .expect("run buildbot-worker create-worker");
        assert!(created.status.success(), "{created:?}");
        let child = Command::new(program)
            .args(["start", "--nodaemon"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start buildbot-worker");
        BuildbotWorker { child }
    }
}

impl Drop for BuildbotWorker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The script of [`config`]'s step.
const HELLO: &str =
    "echo hello from $(pwd); echo oops >&2; case %(src::revision)s in slow) sleep 60; echo woke;; esac";

fn config(port: u16) -> String {
    format!(
        r#"
[master]
reload_on_change = false

[www.change_hook_dialects]
base = true

[protocols.msgpack_experimental_v7]
port = "tcp:{port}:interface=127.0.0.1"

[[workers]]
type = "remote"
name = "rw1"
password = "s3cret-pass"
keepalive_interval = 1

[[builders]]
name = "b"
workernames = ["rw1"]

[[builders.steps]]
type = "shell"
name = "hello"
command = ["sh", "-c", "{HELLO}"]

[[schedulers]]
type = "any_branch"
name = "all"
builder_names = ["b"]
"#
    )
}

/// [`config`] with a second remote worker `name` for the builder, whose
/// step runs `script` instead.
fn two_workers(port: u16, name: &str, password: &str, script: &str) -> String {
    config(port)
        .replace(
            "workernames = [\"rw1\"]",
            &format!("workernames = [\"rw1\", \"{name}\"]\ncollapse_requests = false"),
        )
        .replace(HELLO, script)
        + &format!(
            "\n[[workers]]\ntype = \"remote\"\nname = \"{name}\"\npassword = \"{password}\"\n"
        )
}

/// Waits until `count` workers are connected.
fn wait_for_logins(master: &Master, count: usize) {
    wait_until("the workers to log in", || {
        let workers = master.get_json("/api/v2/workers")["workers"].clone();
        let connected = workers
            .as_array()?
            .iter()
            .filter(|w| w["connected_to"] != serde_json::json!([]))
            .count();
        (connected == count).then_some(())
    });
}

/// A change on `main` at `revision`, posted to the `base` hook.
fn push(master: &Master, revision: &str) {
    let reply = master.post_form(
        "/change_hook/base",
        &format!("branch=main&revision={revision}&repository=r&author=Ada&comments=c"),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
}

/// Waits until worker 1 is connected; it as `/api/v2/workers` shows it.
fn logged_in(master: &Master) -> serde_json::Value {
    wait_until("the worker to log in", || {
        let shown = worker(master);
        (shown["connected_to"] == serde_json::json!([{"masterid": 1}])).then_some(shown)
    })
}

/// The worker as `/api/v2/workers` shows it.
fn worker(master: &Master) -> serde_json::Value {
    master.get_json("/api/v2/workers/1")["workers"][0].clone()
}

#[test]
fn a_buildbot_worker_logs_in_runs_a_build_and_is_seen_leaving() {
    let Some(program) = buildbot_worker() else {
        return;
    };
    let port = free_port();
    let master = Master::start(&config(port));
    let place = tempfile::tempdir().unwrap();
    let dir = place.path().join("worker");
    // A change before any worker is there: its build waits for one.
    push(&master, "1");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(master.builds().is_empty(), "no build without a worker");
    let worker_process = BuildbotWorker::start(&program, &dir, port, "rw1", "s3cret-pass");

    let shown = logged_in(&master);
    let info = &shown["workerinfo"];
    assert_eq!(info["version"], "4.3.0", "{info}");
    assert!(info["numcpus"].as_i64().unwrap() >= 1);
    assert_eq!(info["basedir"], dir.display().to_string());
    assert!(
        info.get("environ").is_none(),
        "its environment stays private"
    );
    assert!(master
        .log()
        .contains("worker rw1 logged in from 127.0.0.1:"));
    let build = master.wait_for_build(1);
    assert_eq!(build["results"], 0, "{build}");
    let log = master.get_json("/api/v2/logs/1/contents");
    let content = log["logchunks"][0]["content"].as_str().unwrap();
    assert!(
        content.contains(&format!("ohello from {}/b/build\n", dir.display())),
        "{content}"
    );
    assert!(content.contains("eoops\n"), "{content}");

    // A stop interrupts the command on the worker.
    push(&master, "slow");
    // Its output reaches the log while the step still runs.
    let raw_log = || {
        let steps = master.get_json("/api/v2/builds/2/steps");
        let stepid = steps["steps"][0]["stepid"].as_i64()?;
        let logs = master.get_json(&format!("/api/v2/steps/{stepid}/logs"));
        let logid = logs["logs"][0]["logid"].as_i64()?;
        Some(
            master
                .send("GET", &format!("/api/v2/logs/{logid}/raw"), &[], b"")
                .body,
        )
    };
    wait_until("the running step's output in its log", || {
        let running = master.get_json("/api/v2/builds/2/steps")["steps"][0]["complete"] == false;
        raw_log().filter(|raw| running && raw.contains("hello from"))
    });
    let reply = master.post_json(
        "/api/v2/builds/2",
        &serde_json::json!({"jsonrpc": "2.0", "method": "stop", "params": {"reason": "enough"}, "id": 1}),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let build = master.wait_for_build(2);
    assert_eq!(build["results"], 6, "{build}");
    let raw = raw_log().unwrap();
    assert!(
        !raw.lines().any(|line| line == "woke"),
        "the command was killed in its sleep: {raw}"
    );

    // The worker goes: the master sees it leave.
    drop(worker_process);
    wait_until("the worker to be seen leaving", || {
        (worker(&master)["connected_to"] == serde_json::json!([])).then_some(())
    });
    assert!(master.log().contains("worker rw1 disconnected"));
}

#[test]
fn a_wrong_password_or_name_is_refused_and_logged() {
    let Some(program) = buildbot_worker() else {
        return;
    };
    let port = free_port();
    let master = Master::start(&config(port));
    let place = tempfile::tempdir().unwrap();
    let wrong = BuildbotWorker::start(&program, &place.path().join("a"), port, "rw1", "nope");
    let stranger = BuildbotWorker::start(&program, &place.path().join("b"), port, "who", "x");
    wait_until("both refusals", || {
        let log = master.log();
        (log.contains("refused: wrong password (name \"rw1\")")
            && log.contains("refused: unknown worker name (name \"who\")"))
        .then_some(())
    });
    let log = master.log();
    assert!(
        !log.contains("s3cret-pass") && !log.contains("nope"),
        "{log}"
    );
    assert_eq!(worker(&master)["connected_to"], serde_json::json!([]));
    drop((wrong, stranger));
}

#[test]
fn a_worker_that_stays_away_is_missing_and_then_back_in_the_telegram_chats() {
    let Some(program) = buildbot_worker() else {
        return;
    };
    let fake = buildmaster_e2e::FakeTelegram::start("testbot");
    let receiver = buildmaster_e2e::MockApi::start();
    for _ in 0..4 {
        receiver.push_response(200, "{}".into());
    }
    let port = free_port();
    let text = config(port).replace(
        "keepalive_interval = 1\n",
        "keepalive_interval = 1\nmissing_timeout = 1\nnotify_on_missing = [\"ops@example.org\"]\n",
    ) + &format!(
        "\n[telegram]\nbot_token = \"12345:secret\"\napi_url = \"{}\"\npoll_timeout = 1\n\
         retry_delay = 1\nchat_ids = [-123456]\nnotify_events = [\"worker\"]\n\
         [[reporters]]\nname = \"w\"\ntype = \"versioned\"\n\
         plugin = \"plugins/libfixture_versioned.so\"\nurl = \"{}/w\"\nworkers = true\n",
        fake.url(),
        receiver.url()
    );
    let base = buildmaster_e2e::Basedir::new(&text);
    base.write(
        "plugins/libfixture_versioned.so",
        std::fs::read(buildmaster_e2e::fixture("fixture_versioned")).unwrap(),
    );
    let master = base.start();
    let place = tempfile::tempdir().unwrap();
    let dir = place.path().join("worker");
    // Not there within its missing_timeout after the start: missing.
    let missing = fake.wait_texts(-123456, 1);
    assert!(
        missing[0].starts_with("Worker <code>rw1</code> is missing. It was seen last on 20"),
        "{}",
        missing[0]
    );
    let worker_process = BuildbotWorker::start(&program, &dir, port, "rw1", "s3cret-pass");
    assert_eq!(
        fake.wait_texts(-123456, 2)[1],
        "Worker <code>rw1</code> is back online."
    );
    // Gone again, and missing again after its timeout.
    drop(worker_process);
    let texts = fake.wait_texts(-123456, 3);
    assert!(texts[2].contains("is missing"), "{}", texts[2]);
    assert!(master.log().contains("worker rw1 is missing"));
    // The reporters that want worker events got them too.
    let reports: Vec<serde_json::Value> = wait_until("three worker reports", || {
        let got = receiver.received();
        (got.len() >= 3).then_some(got)
    })
    .iter()
    .map(|r| serde_json::from_slice(&r.body).unwrap())
    .collect();
    let events: Vec<&str> = reports
        .iter()
        .map(|r| r["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        ["worker_missing", "worker_connected", "worker_missing"]
    );
    assert_eq!(reports[0]["worker"], "rw1");
    assert_eq!(reports[0]["notify"], serde_json::json!(["ops@example.org"]));
}

#[test]
fn a_build_whose_worker_dies_is_retried_on_another_and_the_worker_comes_back() {
    let Some(program) = buildbot_worker() else {
        return;
    };
    let port = free_port();
    let text = two_workers(
        port,
        "rw2",
        "other-pass",
        "case %(worker:workername)s in rw1) sleep 60;; esac; echo ran on %(worker:workername)s",
    );
    let master = Master::start(&text);
    let place = tempfile::tempdir().unwrap();
    let first = BuildbotWorker::start(
        &program,
        &place.path().join("w1"),
        port,
        "rw1",
        "s3cret-pass",
    );
    let second = BuildbotWorker::start(
        &program,
        &place.path().join("w2"),
        port,
        "rw2",
        "other-pass",
    );
    wait_for_logins(&master, 2);
    push(&master, "1");
    wait_until("the build to run on rw1", || {
        let steps = master.get_json("/api/v2/builds/1/steps");
        (steps["steps"][0]["complete"] == false).then_some(())
    });
    // kill -9 of the worker mid-build.
    drop(first);
    let retried = master.wait_for_build(1);
    assert_eq!(retried["results"], 5, "RETRY: {retried}");
    let raw = master.send("GET", "/api/v2/logs/1/raw", &[], b"");
    assert!(
        raw.body
            .contains("the worker disconnected: the build will be retried"),
        "{}",
        raw.body
    );
    let rerun = master.wait_for_build(2);
    assert_eq!(rerun["results"], 0, "{rerun}");
    assert_eq!(rerun["buildrequestid"], retried["buildrequestid"]);
    assert_eq!(rerun["properties"]["workername"][0], "rw2", "{rerun}");
    let request = master.get_json(&format!(
        "/api/v2/buildrequests/{}",
        rerun["buildrequestid"]
    ));
    assert_eq!(request["buildrequests"][0]["complete"], true);
    assert_eq!(request["buildrequests"][0]["results"], 0);
    // rw1 comes back.
    let _first = BuildbotWorker::start(
        &program,
        &place.path().join("w1b"),
        port,
        "rw1",
        "s3cret-pass",
    );
    wait_until("rw1 to be back", || {
        (master.get_json("/api/v2/workers/1")["workers"][0]["connected_to"]
            == serde_json::json!([{"masterid": 1}]))
        .then_some(())
    });
    drop(second);
}

/// Logs in as `name` over the worker protocol, answers the login's three
/// questions, and then falls silent with the connection open, as a worker
/// whose host froze.
fn silent_worker(
    port: u16,
    name: &str,
    password: &str,
) -> tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>> {
    use base64::Engine as _;
    use tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://127.0.0.1:{port}/")
        .into_client_request()
        .unwrap();
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("{name}:{password}"));
    request.headers_mut().insert(
        "Authorization",
        format!("Basic {credentials}").parse().unwrap(),
    );
    let (mut socket, _) = tungstenite::connect(request).expect("log in");
    for _ in 0..3 {
        let tungstenite::Message::Binary(bytes) = socket.read().unwrap() else {
            panic!("a binary message");
        };
        let asked = rmpv::decode::read_value(&mut &bytes[..]).unwrap();
        let field = |key: &str| {
            asked
                .as_map()
                .unwrap()
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        let result = if field("op").as_str() == Some("get_worker_info") {
            rmpv::Value::Map(vec![
                ("basedir".into(), "/nonexistent/silent".into()),
                ("version".into(), "silent".into()),
            ])
        } else {
            rmpv::Value::Nil
        };
        let answer = rmpv::Value::Map(vec![
            ("op".into(), "response".into()),
            ("seq_number".into(), field("seq_number")),
            ("result".into(), result),
        ]);
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, &answer).unwrap();
        socket
            .send(tungstenite::Message::Binary(out.into()))
            .unwrap();
    }
    socket
}

#[test]
fn a_new_login_takes_over_from_a_connection_that_no_longer_answers() {
    let Some(program) = buildbot_worker() else {
        return;
    };
    let port = free_port();
    // A long keepalive: only the new login can find the old connection dead.
    let master =
        Master::start(&config(port).replace("keepalive_interval = 1", "keepalive_interval = 3600"));
    let _frozen = silent_worker(port, "rw1", "s3cret-pass");
    wait_until("the silent worker to be in", || {
        (worker(&master)["workerinfo"]["version"] == "silent").then_some(())
    });
    let place = tempfile::tempdir().unwrap();
    let _real = BuildbotWorker::start(
        &program,
        &place.path().join("w"),
        port,
        "rw1",
        "s3cret-pass",
    );
    wait_until("the real worker to take over", || {
        let shown = worker(&master);
        (shown["workerinfo"]["version"] == "4.3.0"
            && shown["connected_to"] == serde_json::json!([{"masterid": 1}]))
        .then_some(())
    });
    assert!(master
        .log()
        .contains("worker rw1: its old connection does not answer; the new one takes over"));
}

/// Steps that move files, check out git and touch the file system, all
/// run on a buildbot-worker.
fn transfer_config(port: u16, repo: &Path) -> String {
    config(port).replace(
        r#"[[builders.steps]]
type = "shell"
name = "hello""#,
        &format!(
            r#"[[builders.steps]]
type = "git"
repourl = "{}"

[[builders.steps]]
type = "file_download"
mastersrc = "files/config.txt"
workerdest = "conf/config.txt"
mode = 0o600

[[builders.steps]]
type = "shell"
command = "cat conf/config.txt version; mkdir -p out; echo artifact > out/a.txt; echo 1 > out/1.log; echo 2 > out/2.log"

[[builders.steps]]
type = "file_upload"
workersrc = "out/a.txt"
masterdest = "uploads/a-%(prop:buildnumber)s.txt"
keepstamp = true

[[builders.steps]]
type = "multiple_file_upload"
workersrcs = ["out/*.log"]
glob = true
masterdest = "uploads/logs"

[[builders.steps]]
type = "make_directory"
dir = "build/made/deep"

[[builders.steps]]
type = "file_exists"
file = "build/out/a.txt"

[[builders.steps]]
type = "remove_directory"
dir = "build/made"

[[builders.steps]]
type = "file_upload"
name = "too big"
workersrc = "out/a.txt"
masterdest = "uploads/too-big.txt"
maxsize = 3
halt_on_failure = true

[[builders.steps]]
type = "shell"
name = "hello""#,
            repo.display()
        ),
    )
}

/// A git repository with one commit on `main`; its revision.
fn repository(dir: &Path) -> String {
    buildmaster_e2e::git(dir, &["init", "--quiet", "-b", "main"]);
    std::fs::write(dir.join("version"), "v1 from git\n").unwrap();
    buildmaster_e2e::git(dir, &["add", "version"]);
    buildmaster_e2e::git(dir, &["commit", "--quiet", "-m", "one"]);
    buildmaster_e2e::git(dir, &["rev-parse", "HEAD"])
}

/// Checks what [`transfer_config`]'s first build did, the worker's
/// directory being `worker_dir`.
fn check_transfers(master: &Master, worker_dir: &Path, revision: &str) {
    let build = master.wait_for_build(1);
    assert_eq!(build["results"], 2, "the too-big upload fails: {build}");
    let steps = master.get_json("/api/v2/builds/1/steps")["steps"].clone();
    let stdio = |step: &serde_json::Value| {
        let logs = master.get_json(&format!("/api/v2/steps/{}/logs", step["stepid"]));
        let logid = logs["logs"][0]["logid"].as_i64().unwrap();
        master
            .send("GET", &format!("/api/v2/logs/{logid}/raw"), &[], b"")
            .body
    };
    let results: Vec<(String, i64)> = steps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["results"].as_i64().unwrap(),
            )
        })
        .collect();
    let expected = [
        ("git", 0),
        ("download", 0),
        ("shell", 0),
        ("upload", 0),
        ("upload_1", 0),
        ("MakeDirectory", 0),
        ("FileExists", 0),
        ("RemoveDirectory", 0),
        ("too big", 2),
    ];
    let expected: Vec<(String, i64)> = expected
        .iter()
        .map(|(n, r)| ((*n).to_owned(), *r))
        .collect();
    let last = steps.as_array().unwrap().last().unwrap();
    assert_eq!(results, expected, "the last step's log: {}", stdio(last));
    let build = master.get_json("/api/v2/builds/1?property=got_revision");
    assert_eq!(
        build["builds"][0]["properties"]["got_revision"][0], revision,
        "{build}"
    );
    let uploads = master.basedir.path().join("uploads");
    assert_eq!(
        std::fs::read_to_string(uploads.join("a-1.txt")).unwrap(),
        "artifact\n"
    );
    let mut logs: Vec<String> = std::fs::read_dir(uploads.join("logs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    logs.sort();
    assert_eq!(logs, ["1.log", "2.log"]);
    assert!(
        !uploads.join("too-big.txt").exists(),
        "a refused upload leaves nothing"
    );
    let build_dir = worker_dir.join("b/build");
    let downloaded = build_dir.join("conf/config.txt");
    assert_eq!(
        std::fs::read_to_string(&downloaded).unwrap(),
        "from the master\n"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&downloaded).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(!build_dir.join("made").exists(), "removed by its step");
    let modified = |path: &Path| std::fs::metadata(path).unwrap().modified().unwrap();
    let (kept, original) = (
        modified(&uploads.join("a-1.txt")),
        modified(&build_dir.join("out/a.txt")),
    );
    let apart = kept
        .duration_since(original)
        .unwrap_or_else(|e| e.duration());
    assert!(apart.as_secs() < 1, "keepstamp: {kept:?} vs {original:?}");
    let shell = stdio(&steps[2]);
    assert!(shell.contains("from the master\nv1 from git\n"), "{shell}");
    let too_big = stdio(&steps[8]);
    assert!(
        too_big.contains("maxsize (3 bytes)") || too_big.contains("Maximum filesize"),
        "{too_big}"
    );
}

#[test]
fn a_buildbot_worker_transfers_files_checks_out_git_and_runs_file_commands() {
    let Some(program) = buildbot_worker() else {
        return;
    };
    let repo = tempfile::tempdir().unwrap();
    let revision = repository(repo.path());
    let port = free_port();
    let base = buildmaster_e2e::Basedir::new(&transfer_config(port, repo.path()));
    base.write("files/config.txt", "from the master\n");
    let master = base.start();
    let place = tempfile::tempdir().unwrap();
    let dir = place.path().join("worker");
    let _worker = BuildbotWorker::start(&program, &dir, port, "rw1", "s3cret-pass");
    push(&master, "");
    check_transfers(&master, &dir, &revision);
}

#[test]
fn an_operator_pauses_a_worker_and_shuts_it_down_from_the_api() {
    let Some(program) = buildbot_worker() else {
        return;
    };
    let port = free_port();
    let master = Master::start(&config(port));
    let place = tempfile::tempdir().unwrap();
    let mut worker_process = BuildbotWorker::start(
        &program,
        &place.path().join("w"),
        port,
        "rw1",
        "s3cret-pass",
    );
    logged_in(&master);
    let call = |method: &str, params: serde_json::Value| {
        master.post_json(
            "/api/v2/workers/rw1",
            &serde_json::json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}),
        )
    };
    let reply = call("pause", serde_json::json!({"reason": "disk full"}));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let shown = worker(&master);
    assert_eq!(
        (shown["paused"].clone(), shown["pause_reason"].clone()),
        (true.into(), "disk full".into())
    );
    push(&master, "1");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(master.builds().is_empty(), "a paused worker takes no build");
    assert_eq!(call("unpause", serde_json::json!({})).status, 200);
    assert_eq!(master.wait_for_build(1)["results"], 0);
    assert_eq!(worker(&master)["paused"], false);

    // A local worker cannot be shut down; an unknown one is not found.
    let reply = master.post_json(
        "/api/v2/workers/nobody",
        &serde_json::json!({"jsonrpc": "2.0", "method": "stop", "id": 1}),
    );
    assert_eq!(reply.status, 404, "{}", reply.body);

    // A graceful shutdown: the worker process ends.
    assert_eq!(call("stop", serde_json::json!({})).status, 200);
    assert_eq!(worker(&master)["graceful"], true);
    let status = wait_until("the worker process to end", || {
        worker_process.child.try_wait().unwrap()
    });
    assert!(status.success(), "{status:?}");
    wait_until("the worker to be seen leaving", || {
        (worker(&master)["connected_to"] == serde_json::json!([])).then_some(())
    });
    assert!(master.log().contains("asking worker rw1 to shut down"));
}

/// A `buildmaster worker` process, stopped on drop.
struct NativeWorker {
    child: Child,
    log: PathBuf,
}

impl NativeWorker {
    /// Creates a worker directory with `buildmaster worker create` and
    /// starts it.
    fn start(dir: &Path, port: u16, name: &str, password: &str) -> NativeWorker {
        let secret = dir.with_extension("password");
        std::fs::write(&secret, format!("{password}\n")).unwrap();
        let created = buildmaster_e2e::run_cli(&[
            "worker",
            "create",
            dir.to_str().unwrap(),
            "--master",
            &format!("127.0.0.1:{port}"),
            "--name",
            name,
            "--password-file",
            secret.to_str().unwrap(),
        ]);
        assert!(created.status.success(), "{created:?}");
        NativeWorker::run(dir)
    }

    /// Starts the worker of an existing directory.
    fn run(dir: &Path) -> NativeWorker {
        let log = dir.with_extension("log");
        let child = Command::new(buildmaster_e2e::binary())
            .args(["worker", "start"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start buildmaster worker");
        NativeWorker { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NativeWorker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_native_worker_transfers_files_checks_out_git_and_runs_file_commands() {
    let repo = tempfile::tempdir().unwrap();
    let revision = repository(repo.path());
    let port = free_port();
    let base = buildmaster_e2e::Basedir::new(&transfer_config(port, repo.path()));
    base.write("files/config.txt", "from the master\n");
    let master = base.start();
    let place = tempfile::tempdir().unwrap();
    let dir = place.path().join("worker");
    let native = NativeWorker::start(&dir, port, "rw1", "s3cret-pass");
    let shown = logged_in(&master);
    assert!(
        shown["workerinfo"]["version"]
            .as_str()
            .unwrap()
            .starts_with("buildmaster "),
        "{shown}"
    );
    assert_eq!(shown["workerinfo"]["basedir"], dir.display().to_string());
    assert!(
        dir.join("b").is_dir(),
        "the builder's directory is made at login"
    );
    push(&master, "");
    check_transfers(&master, &dir, &revision);
    assert!(
        native.log().contains("the master says: attached"),
        "{}",
        native.log()
    );
}

/// A builder whose step starts a child in the background and waits.
fn sleeper_config(port: u16) -> String {
    config(port).replace(
        &format!("command = [\"sh\", \"-c\", \"{HELLO}\"]"),
        "command = \"echo started; sleep 300 & echo $! > child.pid; wait\"",
    )
}

/// Whether process `pid` is alive.
fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Waits for the pid the running [`sleeper_config`] step wrote.
fn sleeper_pid(worker_dir: &Path) -> i32 {
    wait_until("the step's child to start", || {
        std::fs::read_to_string(worker_dir.join("b/build/child.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    })
}

#[test]
fn a_native_worker_streams_logs_is_interrupted_and_shut_down_gracefully() {
    let port = free_port();
    let master = Master::start(&sleeper_config(port));
    let place = tempfile::tempdir().unwrap();
    let dir = place.path().join("worker");
    let mut native = NativeWorker::start(&dir, port, "rw1", "s3cret-pass");
    push(&master, "1");
    let child = sleeper_pid(&dir);
    // The output is in the log while the step still runs.
    wait_until("the log to show the output", || {
        let raw = master.send("GET", "/api/v2/logs/1/raw", &[], b"").body;
        raw.contains("started").then_some(())
    });
    assert_eq!(
        master.get_json("/api/v2/builds/1")["builds"][0]["complete"],
        false
    );
    let reply = master.post_json(
        "/api/v2/builds/1",
        &serde_json::json!({"jsonrpc": "2.0", "method": "stop", "params": {"reason": "enough"}, "id": 1}),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(master.wait_for_build(1)["results"], 6);
    wait_until("the whole process group to be killed", || {
        (!alive(child)).then_some(())
    });

    // A graceful shutdown ends the worker process.
    let reply = master.post_json(
        "/api/v2/workers/rw1",
        &serde_json::json!({"jsonrpc": "2.0", "method": "stop", "id": 1}),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let status = wait_until("the worker to shut down", || {
        native.child.try_wait().unwrap()
    });
    assert!(status.success(), "{status:?}: {}", native.log());
    assert!(native
        .log()
        .contains("the master asked this worker to shut down"));
}

#[test]
fn a_native_worker_stopped_mid_build_kills_its_command_and_the_build_is_retried() {
    let port = free_port();
    let master = Master::start(&sleeper_config(port));
    let place = tempfile::tempdir().unwrap();
    let dir = place.path().join("worker");
    let mut native = NativeWorker::start(&dir, port, "rw1", "s3cret-pass");
    push(&master, "1");
    let child = sleeper_pid(&dir);
    let status = buildmaster_e2e::terminate(&mut native.child);
    assert!(status.success(), "{status:?}");
    wait_until("the command's group to die with the worker", || {
        (!alive(child)).then_some(())
    });
    assert_eq!(master.wait_for_build(1)["results"], 5, "RETRY");
    // Started again, it logs in and the request is built again.
    let _again = NativeWorker::run(&dir);
    wait_until("the request's second build to start", || {
        (master.builds().len() == 2).then_some(())
    });
}

#[test]
fn a_native_worker_reconnects_when_its_master_comes_back() {
    let port = free_port();
    let master = Master::start(&config(port));
    let place = tempfile::tempdir().unwrap();
    let native = NativeWorker::start(&place.path().join("worker"), port, "rw1", "s3cret-pass");
    logged_in(&master);
    let base = master.kill();
    wait_until("the worker to see the master go", || {
        native.log().contains("reconnecting in").then_some(())
    });
    let master = base.start();
    wait_until("the worker to log in again", || {
        (worker(&master)["connected_to"] == serde_json::json!([{"masterid": 1}])).then_some(())
    });
    push(&master, "1");
    assert_eq!(master.wait_for_build(1)["results"], 0);
}

#[test]
fn builds_spread_over_a_native_and_a_buildbot_worker() {
    let Some(program) = buildbot_worker() else {
        return;
    };
    let port = free_port();
    let text = two_workers(
        port,
        "nw",
        "native-pass",
        "sleep 2; echo ran on %(worker:workername)s",
    );
    let master = Master::start(&text);
    let place = tempfile::tempdir().unwrap();
    let _python = BuildbotWorker::start(
        &program,
        &place.path().join("py"),
        port,
        "rw1",
        "s3cret-pass",
    );
    let _native = NativeWorker::start(&place.path().join("native"), port, "nw", "native-pass");
    wait_for_logins(&master, 2);
    for revision in ["1", "2"] {
        push(&master, revision);
    }
    let mut names: Vec<String> = [1, 2]
        .iter()
        .map(|id| {
            let build = master.wait_for_build(*id);
            assert_eq!(build["results"], 0, "{build}");
            build["properties"]["workername"][0]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    names.sort();
    assert_eq!(names, ["nw", "rw1"], "one build on each, at once");
}

#[test]
fn a_peer_of_another_protocol_version_is_refused_on_both_sides() {
    // A worker naming another protocol: the master answers 400 and says why.
    let port = free_port();
    let master = Master::start(&config(port));
    use tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://127.0.0.1:{port}/")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "msgpack_experimental_v8".parse().unwrap(),
    );
    let Err(tungstenite::Error::Http(answer)) = tungstenite::connect(request) else {
        panic!("the handshake must be refused");
    };
    assert_eq!(answer.status(), 400);
    let body = String::from_utf8_lossy(answer.body().as_deref().unwrap_or_default()).into_owned();
    assert_eq!(
        body.trim(),
        "this master speaks msgpack_experimental_v7, not msgpack_experimental_v8"
    );
    wait_until("the refusal in the master's log", || {
        master
            .log()
            .contains(
                "the worker speaks msgpack_experimental_v8, this master msgpack_experimental_v7",
            )
            .then_some(())
    });

    // A master answering with another protocol: the native worker stops
    // and says why.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let fake_port = listener.local_addr().unwrap().port();
    let fake = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        #[allow(
            clippy::result_large_err,
            reason = "the handshake callback's signature is tungstenite's"
        )]
        let choose_v8 =
            |_: &tungstenite::handshake::server::Request,
             mut response: tungstenite::handshake::server::Response| {
                response.headers_mut().insert(
                    "Sec-WebSocket-Protocol",
                    "msgpack_experimental_v8".parse().unwrap(),
                );
                Ok(response)
            };
        let _ = tungstenite::accept_hdr(stream, choose_v8);
    });
    let place = tempfile::tempdir().unwrap();
    let mut native = NativeWorker::start(&place.path().join("worker"), fake_port, "rw1", "p");
    let status = wait_until("the worker to stop", || native.child.try_wait().unwrap());
    assert!(!status.success());
    assert!(
        native
            .log()
            .contains("does not speak msgpack_experimental_v7: it chose another protocol"),
        "{}",
        native.log()
    );
    fake.join().unwrap();
}

/// Steps that show a shell step's semantics: a no-output timeout, a total
/// time limit, the environment, and argv words given as they are.
fn semantics_config(port: u16) -> String {
    config(port).replace(
        &format!("[[builders.steps]]\ntype = \"shell\"\nname = \"hello\"\ncommand = [\"sh\", \"-c\", \"{HELLO}\"]"),
        r#"[[builders.steps]]
type = "shell"
name = "quiet"
command = "sleep 30"
timeout = 1

[[builders.steps]]
type = "shell"
name = "long"
command = "while true; do echo tick; sleep 0.2; done"
max_time = 1

[[builders.steps]]
type = "shell"
name = "env"
command = ["sh", "-c", "echo \"$GREETING\" \"$1\"", "sh", "two words; $HOME"]
env = { GREETING = "hi %(prop:workername)s" }"#,
    )
}

/// Checks what [`semantics_config`]'s first build did.
fn check_semantics(master: &Master) {
    let build = master.wait_for_build(1);
    assert_eq!(build["results"], 2, "{build}");
    let steps = master.get_json("/api/v2/builds/1/steps")["steps"].clone();
    let raw = |index: usize| {
        let stepid = &steps[index]["stepid"];
        let logs = master.get_json(&format!("/api/v2/steps/{stepid}/logs"));
        let logid = logs["logs"][0]["logid"].as_i64().unwrap();
        master
            .send("GET", &format!("/api/v2/logs/{logid}/raw"), &[], b"")
            .body
    };
    let results: Vec<i64> = (0..3)
        .map(|i| steps[i]["results"].as_i64().unwrap())
        .collect();
    assert_eq!(results, [2, 2, 0]);
    assert!(
        raw(0).contains("command timed out: 1 seconds without output"),
        "{}",
        raw(0)
    );
    assert!(
        raw(1).contains("command timed out: 1 seconds elapsed"),
        "{}",
        raw(1)
    );
    assert!(raw(1).contains("tick"), "{}", raw(1));
    assert!(raw(2).contains("\nhi rw1 two words; $HOME\n"), "{}", raw(2));
}

#[test]
fn shell_steps_keep_their_semantics_on_a_buildbot_worker() {
    let Some(program) = buildbot_worker() else {
        return;
    };
    let port = free_port();
    let master = Master::start(&semantics_config(port));
    let place = tempfile::tempdir().unwrap();
    let _worker = BuildbotWorker::start(
        &program,
        &place.path().join("w"),
        port,
        "rw1",
        "s3cret-pass",
    );
    push(&master, "1");
    check_semantics(&master);
}

#[test]
fn shell_steps_keep_their_semantics_on_a_native_worker() {
    let port = free_port();
    let master = Master::start(&semantics_config(port));
    let place = tempfile::tempdir().unwrap();
    let _worker = NativeWorker::start(&place.path().join("w"), port, "rw1", "s3cret-pass");
    push(&master, "1");
    check_semantics(&master);
}
