//! Load benchmark of a real master on loopback.
//!
//! Starts the `buildmaster` binary that sits beside this one (same target
//! directory) in a temporary basedir, measures its idle memory, then posts
//! `base` change hooks at several concurrency levels for a fixed time each and
//! reports throughput and latency percentiles. Every answer must be
//! `200 1 change found`, and the stored total is checked against the number of
//! acknowledged hooks after each level.
//!
//! ```text
//! cargo build --release --workspace
//! target/release/buildmaster-bench base|github [SECONDS_PER_LEVEL] [CONNECTIONS...]
//! target/release/buildmaster-bench builds [ROUNDS] [QUEUED] [WORKERS]
//! target/release/buildmaster-bench reload [ROUNDS]
//! target/release/buildmaster-bench history [SMALL_CHANGES SMALL_BUILDS LARGE_CHANGES LARGE_BUILDS]
//! target/release/buildmaster-bench reporters [ROUNDS] [BUILDS]
//! target/release/buildmaster-bench metrics [BUILDERS] [ROUNDS]
//! target/release/buildmaster-bench pages [BUILDERS] [HISTORY] [ROUNDS]
//! ```
//!
//! `base` posts one form-encoded change per hook; `github` posts a realistic
//! three-commit push, signed with HMAC-SHA256 and carrying a fresh
//! `X-GitHub-Delivery` id, as GitHub sends it (three changes per hook).
//!
//! `reload` measures reconfiguration: SIGHUP to the new generation being
//! live (`/api/v2/reconfig`), ROUNDS times with a configuration change only
//! and ROUNDS times with a plugin upgrade (a new version of the `base`
//! plugin library each time), the memory each distinct plugin version
//! costs, the latency of hooks posted during a storm of 50 reloads, and
//! ROUNDS saves picked up by the file watch alone.
//!
//! `history` times the REST queries of dashboards against a master with a
//! small and a large history (see [`history`]).
//!
//! `reporters` measures reports: a build's end to its report's arrival, and
//! the outbox's delivery rate into receivers that take 100 ms to answer
//! (see [`reporters`]).
//!
//! `metrics` times a `/metrics` scrape at BUILDERS builders that have each
//! run a build (see [`scrape`]).
//!
//! `pages` times the web UI's builders page and a build page with a
//! 10,000-line log, and weighs them (see [`pages`]).
//!
//! `builds` measures the build engine with a one-step `true` build: the time
//! from posting a hook to the build being complete (ROUNDS hooks one after
//! the other, default 20), then how fast QUEUED builds (default 100) queued
//! at once are completed by WORKERS local workers (default 1).

mod history;
mod pages;
mod reporters;
mod scrape;

use std::io::Read;

use buildmaster_plugin_api::signature::{hmac_hex, Algorithm};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BODY: &str = "author=Ada+Lovelace+%3Cada%40example.org%3E&comments=Fix+the+frobnicator\
                    &branch=main&revision=0b1c2d3e4f5061728394a5b6c7d8e9f001122334\
                    &repository=https%3A%2F%2Fgit.example.org%2Fapp.git&project=app\
                    &files=%5B%22src%2Fmain.c%22%2C%22src%2Ffrob.c%22%5D\
                    &properties=%7B%22ticket%22%3A%2042%7D";

struct Master {
    child: Child,
    addr: String,
    _basedir: tempfile::TempDir,
}

impl Drop for Master {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Which hooks to send.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Load {
    Base,
    GitHub,
}

const GITHUB_SECRET: &str = "bench-secret";

/// Delivery ids are unique across the whole run, so none is a redelivery.
static NEXT_DELIVERY: AtomicU64 = AtomicU64::new(0);

impl Load {
    fn dialect_config(self) -> String {
        match self {
            Load::Base => "base = true\n".into(),
            Load::GitHub => {
                format!("[www.change_hook_dialects.github]\nsecret = \"{GITHUB_SECRET}\"\n")
            }
        }
    }

    /// Changes stored per hook.
    fn changes_per_hook(self) -> u64 {
        match self {
            Load::Base => 1,
            Load::GitHub => 3,
        }
    }

    fn expected_answer(self) -> &'static str {
        match self {
            Load::Base => "1 change found",
            Load::GitHub => "3 change found",
        }
    }
}

/// A GitHub push of three commits, as GitHub's webhook sends it (trimmed of
/// the fields the dialect ignores would make it unrealistically small, so the
/// usual repository and sender objects are kept).
fn github_push() -> String {
    let commit = |n: u32, message: &str, file: &str| {
        format!(
            r#"{{"id":"{n:040x}","tree_id":"{t:040x}","distinct":true,"message":"{message}","timestamp":"2026-11-21T10:0{n}:00+01:00","url":"https://github.com/acme/widget/commit/{n:040x}","author":{{"name":"Ada Lovelace","email":"ada@example.org","username":"ada"}},"committer":{{"name":"GitHub","email":"noreply@github.com","username":"web-flow"}},"added":["src/{file}.rs"],"removed":[],"modified":["README.md","Cargo.toml"]}}"#,
            t = n + 100
        )
    };
    let repository = r#"{"id":123456,"node_id":"R_kgDOA","name":"widget","full_name":"acme/widget","private":false,"owner":{"name":"acme","email":"ops@example.org","login":"acme","id":42,"type":"Organization"},"html_url":"https://github.com/acme/widget","description":"The widget","fork":false,"url":"https://github.com/acme/widget","created_at":1600000000,"updated_at":"2026-11-21T09:00:00Z","pushed_at":1790000000,"git_url":"git://github.com/acme/widget.git","ssh_url":"git@github.com:acme/widget.git","clone_url":"https://github.com/acme/widget.git","homepage":null,"size":2048,"stargazers_count":10,"watchers_count":10,"language":"Rust","forks_count":2,"open_issues_count":1,"default_branch":"main","master_branch":"main"}"#;
    let commits = [
        commit(1, "Add the frobnicator", "frob"),
        commit(2, "Test the frobnicator", "frob_test"),
        commit(3, "Document the frobnicator", "doc"),
    ];
    format!(
        r#"{{"ref":"refs/heads/main","before":"{b:040x}","after":"{a:040x}","repository":{repository},"pusher":{{"name":"ada","email":"ada@example.org"}},"sender":{{"login":"ada","id":7,"type":"User"}},"created":false,"deleted":false,"forced":false,"base_ref":null,"compare":"https://github.com/acme/widget/compare/0000...0003","commits":[{}],"head_commit":{}}}"#,
        commits.join(","),
        commits[2],
        b = 0,
        a = 3
    )
}

fn start_master(load: Load) -> Master {
    start_with_config(&format!(
        "[www]\nport = \"127.0.0.1:0\"\n[www.change_hook_dialects]\n{}",
        load.dialect_config()
    ))
}

fn start_with_config(config: &str) -> Master {
    start_in(tempfile::tempdir().expect("basedir"), config)
}

fn start_in(basedir: tempfile::TempDir, config: &str) -> Master {
    let exe = std::env::current_exe().expect("own path");
    let binary: PathBuf = exe.with_file_name("buildmaster");
    assert!(
        binary.exists(),
        "build the workspace first: {} is missing",
        binary.display()
    );
    std::fs::write(basedir.path().join("master.toml"), config).expect("config");
    let log_path = basedir.path().join("master.log");
    let child = Command::new(&binary)
        .arg("start")
        .arg(basedir.path())
        .env("BUILDMASTER_LOG", "warn,buildmaster=info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("log"))
        .spawn()
        .expect("start buildmaster");
    // Owned from here on, so the master is stopped on every way out.
    let mut master = Master {
        child,
        addr: String::new(),
        _basedir: basedir,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut log = String::new();
        if let Ok(mut f) = std::fs::File::open(&log_path) {
            let _ = f.read_to_string(&mut log);
        }
        if let Some(rest) = log.split(" listening on http://").nth(1) {
            master.addr = rest.split('/').next().unwrap_or_default().to_string();
            return master;
        }
        assert!(Instant::now() < deadline, "master did not start:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `/proc/PID/status` memory figure in KiB (`VmRSS`, `RssAnon`, …).
fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Resident and anonymous memory in KiB.
fn resident(pid: u32) -> (u64, u64) {
    (memory_kib(pid, "VmRSS"), memory_kib(pid, "RssAnon"))
}

/// Resident memory, and the part of it that is the process's own (heap and
/// stacks) rather than shared, clean pages of the executable and libraries.
fn memory(pid: u32) -> String {
    let (rss, anonymous) = resident(pid);
    format!(
        "{:.1} MiB RSS, of which {:.1} MiB anonymous",
        rss as f64 / 1024.0,
        anonymous as f64 / 1024.0
    )
}

/// CPU time (user + system) the process has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // Fields 14 and 15 of /proc/PID/stat (utime, stime), counted after the name.
    let ticks: u64 = fields
        .iter()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}

async fn stored_total(client: &reqwest::Client, addr: &str) -> u64 {
    api_total(client, addr, "changes?limit=1&field=changeid").await
}

/// `meta.total` of the REST query `query` (under `/api/v2/`).
async fn api_total(client: &reqwest::Client, addr: &str, query: &str) -> u64 {
    let text = client
        .get(format!("http://{addr}/api/v2/{query}"))
        .header("Accept", "application/json")
        .send()
        .await
        .expect("api")
        .text()
        .await
        .expect("api body");
    number_after(&text, "total")
}

/// The unsigned number of the first `"key":` in a compact JSON answer.
fn number_after(text: &str, key: &str) -> u64 {
    let marker = format!("\"{key}\":");
    let start = text
        .find(&marker)
        .unwrap_or_else(|| panic!("no {key}: {text}"))
        + marker.len();
    text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not a number: {text}"))
}

struct Level {
    connections: usize,
    requests: usize,
    seconds: f64,
    p50: Duration,
    p99: Duration,
}

/// One keep-alive HTTP/1.1 connection that posts the same hook again and again.
/// Hand-rolled rather than a full client so that the load generator, which
/// shares the machine's cores with the master, costs as little CPU as possible.
struct Sender {
    stream: tokio::net::TcpStream,
    addr: String,
    load: Load,
    body: String,
    buffer: Vec<u8>,
}

impl Sender {
    async fn connect(addr: &str, load: Load) -> Sender {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Sender {
            stream,
            addr: addr.to_string(),
            load,
            body: match load {
                Load::Base => BODY.to_string(),
                Load::GitHub => github_push(),
            },
            buffer: Vec::with_capacity(1024),
        }
    }

    /// The next request's bytes; GitHub hooks each carry their own delivery id.
    fn request(&self) -> Vec<u8> {
        let (path, headers) = match self.load {
            Load::Base => (
                "base",
                "Content-Type: application/x-www-form-urlencoded\r\n".to_string(),
            ),
            Load::GitHub => {
                let signature = hmac_hex(
                    Algorithm::Sha256,
                    GITHUB_SECRET.as_bytes(),
                    self.body.as_bytes(),
                );
                let delivery = format!("bench-{}", NEXT_DELIVERY.fetch_add(1, Ordering::Relaxed));
                (
                    "github",
                    format!(
                        "Content-Type: application/json\r\nX-GitHub-Event: push\r\n\
                         X-GitHub-Delivery: {delivery}\r\nX-Hub-Signature-256: sha256={signature}\r\n"
                    ),
                )
            }
        };
        format!(
            "POST /change_hook/{path} HTTP/1.1\r\nHost: {}\r\n{headers}Content-Length: {}\r\n\r\n{}",
            self.addr,
            self.body.len(),
            self.body
        )
        .into_bytes()
    }

    /// Sends the hook and returns the status and body of the answer.
    async fn post(&mut self) -> (u16, String) {
        use tokio::io::AsyncWriteExt;
        let request = self.request();
        self.stream.write_all(&request).await.expect("write");
        self.buffer.clear();
        loop {
            if let Some(end) = find(&self.buffer, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buffer[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .expect("content-length");
                let total = end + 4 + length;
                while self.buffer.len() < total {
                    self.read_more().await;
                }
                let status = head[9..12].parse().expect("status");
                let body = String::from_utf8_lossy(&self.buffer[end + 4..total]).into_owned();
                return (status, body);
            }
            self.read_more().await;
        }
    }

    async fn read_more(&mut self) {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "the master closed the connection");
        self.buffer.extend_from_slice(&chunk[..n]);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn run_level(addr: &str, load: Load, connections: usize, duration: Duration) -> Level {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let stop = stop.clone();
        let mut sender = Sender::connect(addr, load).await;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let (status, body) = sender.post().await;
                assert!(
                    status == 200 && body == load.expected_answer(),
                    "unexpected answer {status}: {body}"
                );
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("load task"));
    }
    let seconds = started.elapsed().as_secs_f64();
    all.sort();
    let pick = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    Level {
        connections,
        requests: all.len(),
        seconds,
        p50: pick(0.50),
        p99: pick(0.99),
    }
}

/// A master with `workers` local workers and one builder running `true`
/// for every change on `main`, without collapsing requests.
fn build_config(workers: usize) -> String {
    let mut config =
        String::from("[www]\nport = \"127.0.0.1:0\"\n[www.change_hook_dialects]\nbase = true\n");
    let names: Vec<String> = (1..=workers).map(|n| format!("\"w{n}\"")).collect();
    for n in 1..=workers {
        config.push_str(&format!("[[workers]]\ntype = \"local\"\nname = \"w{n}\"\n"));
    }
    config.push_str(&format!(
        "[[builders]]\nname = \"b\"\nworkernames = [{}]\ncollapse_requests = false\n\
         [[builders.steps]]\ntype = \"shell\"\ncommand = [\"true\"]\n\
         [[schedulers]]\ntype = \"single_branch\"\nname = \"main\"\n\
         change_filter = {{ branch = \"main\" }}\nbuilder_names = [\"b\"]\n",
        names.join(", ")
    ));
    config
}

/// Whether build `buildid` is complete, asked the cheapest way the API allows.
async fn build_complete(client: &reqwest::Client, addr: &str, buildid: usize) -> bool {
    let reply = client
        .get(format!(
            "http://{addr}/api/v2/builds/{buildid}?field=complete&field=results"
        ))
        .header("Accept", "application/json")
        .send()
        .await
        .expect("api");
    if reply.status() == 404 {
        return false;
    }
    let text = reply.text().await.expect("api body");
    if text.contains("\"complete\":true") {
        assert!(
            text.contains("\"results\":0"),
            "build {buildid} failed: {text}"
        );
        return true;
    }
    false
}

async fn wait_complete(client: &reqwest::Client, addr: &str, buildid: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !build_complete(client, addr, buildid).await {
        assert!(
            Instant::now() < deadline,
            "build {buildid} did not complete"
        );
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

async fn post_hook(sender: &mut Sender) {
    let (status, body) = sender.post().await;
    assert!(
        status == 200 && body == "1 change found",
        "unexpected answer {status}: {body}"
    );
}

async fn builds_bench(rounds: usize, queued: usize, workers: usize) {
    let master = start_with_config(&build_config(workers));
    let client = reqwest::Client::new();
    let mut sender = Sender::connect(&master.addr, Load::Base).await;
    let mut latencies = Vec::with_capacity(rounds);
    for buildid in 1..=rounds {
        let started = Instant::now();
        post_hook(&mut sender).await;
        wait_complete(&client, &master.addr, buildid).await;
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "hook -> build complete, one `true` step, {rounds} builds one after the other: \
         median {:.1} ms, min {:.1} ms, max {:.1} ms",
        ms(latencies[rounds / 2]),
        ms(latencies[0]),
        ms(latencies[rounds - 1])
    );
    let cpu_before = cpu_time(master.child.id());
    let started = Instant::now();
    for _ in 0..queued {
        post_hook(&mut sender).await;
    }
    let queued_after = started.elapsed();
    wait_complete(&client, &master.addr, rounds + queued).await;
    for buildid in rounds + 1..rounds + queued {
        assert!(build_complete(&client, &master.addr, buildid).await);
    }
    let elapsed = started.elapsed();
    let cpu = cpu_time(master.child.id()) - cpu_before;
    println!(
        "{queued} builds queued in {:.0} ms, all complete after {:.0} ms on {workers} worker(s): \
         {:.0} builds/s, master CPU {:.2} ms per build",
        ms(queued_after),
        ms(elapsed),
        queued as f64 / elapsed.as_secs_f64(),
        ms(cpu) / queued as f64
    );
}

/// The master's current configuration generation.
async fn generation(client: &reqwest::Client, addr: &str) -> u64 {
    let text = client
        .get(format!("http://{addr}/api/v2/reconfig"))
        .header("Accept", "application/json")
        .send()
        .await
        .expect("api")
        .text()
        .await
        .expect("api body");
    number_after(&text, "generation")
}

/// Sends SIGHUP and waits until generation `after + 1` is live.
async fn reload_once(master: &Master, client: &reqwest::Client, after: u64) -> Duration {
    let started = Instant::now();
    // SAFETY: signalling the master this benchmark started.
    unsafe { libc::kill(master.child.id() as i32, libc::SIGHUP) };
    let deadline = started + Duration::from_secs(30);
    while generation(client, &master.addr).await <= after {
        assert!(
            Instant::now() < deadline,
            "generation {} did not come",
            after + 1
        );
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    started.elapsed()
}

fn reload_config(title: &str) -> String {
    watched_config(title, false)
}

fn watched_config(title: &str, watch: bool) -> String {
    format!(
        "[master]\ntitle = \"{title}\"\nplugin_dirs = [\"plugins\"]\nreload_on_change = {watch}\n\
         [www]\nport = \"127.0.0.1:0\"\n[www.change_hook_dialects]\nbase = true\n"
    )
}

/// Writes a file the way `install` does: aside, then renamed into place.
fn install(path: &std::path::Path, content: &[u8]) {
    let temporary = path.with_extension("new");
    std::fs::write(&temporary, content).expect("write");
    std::fs::rename(&temporary, path).expect("rename");
}

/// The next argument as a number, or `default` when there is none.
fn number(args: &mut impl Iterator<Item = String>, default: usize) -> usize {
    args.next()
        .map(|s| s.parse().expect("a number"))
        .unwrap_or(default)
}

/// Median and 99th percentile of `times`.
fn percentiles(mut times: Vec<Duration>) -> (Duration, Duration) {
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

fn summary(mut times: Vec<Duration>) -> String {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "median {:.2} ms, min {:.2} ms, max {:.2} ms",
        ms(times[times.len() / 2]),
        ms(times[0]),
        ms(times[times.len() - 1])
    )
}

async fn reload_bench(rounds: usize) {
    let exe = std::env::current_exe().expect("own path");
    let plugin = std::fs::read(exe.with_file_name("libbuildmaster_dialect_base.so"))
        .expect("the base plugin beside the benchmark: build the workspace first");
    let basedir = tempfile::tempdir().expect("basedir");
    std::fs::create_dir(basedir.path().join("plugins")).expect("plugins dir");
    let library = basedir
        .path()
        .join("plugins/libbuildmaster_dialect_base.so");
    install(&library, &plugin);
    let config_file = basedir.path().join("master.toml");
    install(&config_file, reload_config("t0").as_bytes());
    let master = start_in(basedir, &reload_config("t0"));
    let client = reqwest::Client::new();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut live = generation(&client, &master.addr).await;
    let mut config_only = Vec::with_capacity(rounds);
    for round in 0..rounds {
        install(&config_file, reload_config(&format!("c{round}")).as_bytes());
        config_only.push(reload_once(&master, &client, live).await);
        live += 1;
    }
    println!(
        "SIGHUP -> new configuration live, config change only ({rounds}): {}",
        summary(config_only)
    );
    let before = resident(master.child.id());
    let mut upgrades = Vec::with_capacity(rounds);
    for round in 0..rounds {
        // A distinct library each round: the same code with other trailing bytes.
        let mut version = plugin.clone();
        version.extend_from_slice(format!("version {round}").as_bytes());
        install(&library, &version);
        install(&config_file, reload_config(&format!("p{round}")).as_bytes());
        upgrades.push(reload_once(&master, &client, live).await);
        live += 1;
    }
    println!(
        "SIGHUP -> new configuration live, with a plugin upgrade ({rounds}): {}",
        summary(upgrades)
    );
    let after = resident(master.child.id());
    println!(
        "memory per plugin version loaded: {:.0} KiB RSS, {:.0} KiB anonymous ({} versions)",
        after.0.saturating_sub(before.0) as f64 / rounds as f64,
        after.1.saturating_sub(before.1) as f64 / rounds as f64,
        rounds
    );
    let storm = {
        let addr = master.addr.clone();
        tokio::spawn(async move { run_level(&addr, Load::Base, 4, Duration::from_secs(5)).await })
    };
    let started = Instant::now();
    let mut reloads = 0;
    while started.elapsed() < Duration::from_secs(4) && reloads < 50 {
        install(
            &config_file,
            reload_config(&format!("s{reloads}")).as_bytes(),
        );
        reload_once(&master, &client, live).await;
        live += 1;
        reloads += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let level = storm.await.expect("load");
    println!(
        "hooks during {reloads} reloads (4 connections): {} answered, all 200; p50 {:.2} ms, p99 {:.2} ms",
        level.requests,
        level.p50.as_secs_f64() * 1e3,
        level.p99.as_secs_f64() * 1e3
    );
    // With the file watch on, a save alone reloads.
    install(&config_file, watched_config("w", true).as_bytes());
    reload_once(&master, &client, live).await;
    live += 1;
    let mut saves = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let started = Instant::now();
        install(
            &config_file,
            watched_config(&format!("w{round}"), true).as_bytes(),
        );
        let deadline = started + Duration::from_secs(30);
        while generation(&client, &master.addr).await <= live {
            assert!(
                Instant::now() < deadline,
                "the save was not picked up; the master's log:\n{}",
                std::fs::read_to_string(master._basedir.path().join("master.log"))
                    .unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        saves.push(started.elapsed());
        live += 1;
    }
    println!(
        "save by rename -> new configuration live through the file watch ({rounds}): {}",
        summary(saves)
    );
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let load = match args.next().as_deref() {
        Some("base") => Load::Base,
        Some("github") => Load::GitHub,
        Some("reload") => {
            let rounds = args.next().map_or(20, |s| s.parse().expect("rounds"));
            reload_bench(rounds).await;
            return;
        }
        Some("history") => {
            let small = (number(&mut args, 10_000), number(&mut args, 1_000));
            let large = (number(&mut args, 1_000_000), number(&mut args, 100_000));
            history::run(small, large).await;
            return;
        }
        Some("reporters") => {
            let (rounds, builds) = (number(&mut args, 100), number(&mut args, 100));
            reporters::run(rounds, builds).await;
            return;
        }
        Some("metrics") => {
            let (builders, rounds) = (number(&mut args, 1_000), number(&mut args, 100));
            scrape::run(builders, rounds).await;
            return;
        }
        Some("pages") => {
            let (builders, history, rounds) = (
                number(&mut args, 100),
                number(&mut args, 12),
                number(&mut args, 50),
            );
            pages::run(builders, history, rounds).await;
            return;
        }
        Some("builds") => {
            let (rounds, queued, workers) = (
                number(&mut args, 20),
                number(&mut args, 100),
                number(&mut args, 1),
            );
            builds_bench(rounds, queued, workers).await;
            return;
        }
        other => panic!(
            "usage: buildmaster-bench base|github [SECONDS] [CONNECTIONS...] \
             | builds [ROUNDS] [QUEUED] [WORKERS] | reload [ROUNDS] | reporters [ROUNDS] [BUILDS] \
             | history [SMALL_CHANGES SMALL_BUILDS LARGE_CHANGES LARGE_BUILDS] \
             | metrics [BUILDERS] [ROUNDS] | pages [BUILDERS] [HISTORY] [ROUNDS] (got {other:?})"
        ),
    };
    let seconds: u64 = args
        .next()
        .map(|s| s.parse().expect("seconds"))
        .unwrap_or(10);
    let mut levels: Vec<usize> = args.map(|s| s.parse().expect("connections")).collect();
    if levels.is_empty() {
        levels = vec![1, 16, 64];
    }
    let master = start_master(load);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = memory(master.child.id());
    let client = reqwest::Client::new();
    let mut acknowledged = 0;
    println!("idle after start: {idle}");
    println!(
        "| connections | hooks/s | changes/s | p50 | p99 | master CPU per hook | changes stored |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for connections in levels {
        let cpu_before = cpu_time(master.child.id());
        let level = run_level(
            &master.addr,
            load,
            connections,
            Duration::from_secs(seconds),
        )
        .await;
        let cpu = cpu_time(master.child.id()) - cpu_before;
        acknowledged += level.requests as u64 * load.changes_per_hook();
        let stored = stored_total(&client, &master.addr).await;
        assert_eq!(stored, acknowledged, "every acknowledged change is stored");
        let per_second = level.requests as f64 / level.seconds;
        println!(
            "| {} | {:.0} | {:.0} | {:.2} ms | {:.2} ms | {:.0} µs | {} |",
            level.connections,
            per_second,
            per_second * load.changes_per_hook() as f64,
            level.p50.as_secs_f64() * 1e3,
            level.p99.as_secs_f64() * 1e3,
            cpu.as_secs_f64() * 1e6 / level.requests.max(1) as f64,
            stored
        );
    }
    println!("after the load: {}", memory(master.child.id()));
}
