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
//! target/release/buildmaster-bench [SECONDS_PER_LEVEL] [CONNECTIONS...]
//! ```

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
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

fn start_master() -> Master {
    let exe = std::env::current_exe().expect("own path");
    let binary: PathBuf = exe.with_file_name("buildmaster");
    assert!(
        binary.exists(),
        "build the workspace first: {} is missing",
        binary.display()
    );
    let basedir = tempfile::tempdir().expect("basedir");
    let config = "[www]\nport = \"127.0.0.1:0\"\n[www.change_hook_dialects]\nbase = true\n";
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

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

async fn stored_total(client: &reqwest::Client, addr: &str) -> u64 {
    let text = client
        .get(format!(
            "http://{addr}/api/v2/changes?limit=1&field=changeid"
        ))
        .header("Accept", "application/json")
        .send()
        .await
        .expect("api")
        .text()
        .await
        .expect("api body");
    let marker = "\"total\":";
    let start = text.find(marker).expect("meta.total") + marker.len();
    text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .expect("total")
}

struct Level {
    connections: usize,
    requests: usize,
    seconds: f64,
    p50: Duration,
    p99: Duration,
}

async fn run_level(addr: &str, connections: usize, duration: Duration) -> Level {
    let url = format!("http://{addr}/change_hook/base");
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let url = url.clone();
        let stop = stop.clone();
        // One client per task: one keep-alive connection per simulated sender.
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()
            .expect("client");
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let response = client
                    .post(&url)
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body(BODY)
                    .send()
                    .await
                    .expect("hook request");
                let status = response.status();
                let body = response.text().await.expect("hook body");
                assert!(
                    status == 200 && body == "1 change found",
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

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args
        .next()
        .map(|s| s.parse().expect("seconds"))
        .unwrap_or(10);
    let mut levels: Vec<usize> = args.map(|s| s.parse().expect("connections")).collect();
    if levels.is_empty() {
        levels = vec![1, 16, 64];
    }
    let master = start_master();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_kib(master.child.id());
    let client = reqwest::Client::new();
    let mut acknowledged = 0;
    println!("idle RSS after start: {:.1} MiB", idle as f64 / 1024.0);
    println!("| connections | hooks/s | p50 | p99 | hooks stored |");
    println!("|---:|---:|---:|---:|---:|");
    for connections in levels {
        let level = run_level(&master.addr, connections, Duration::from_secs(seconds)).await;
        acknowledged += level.requests as u64;
        let stored = stored_total(&client, &master.addr).await;
        assert_eq!(stored, acknowledged, "every acknowledged hook is stored");
        println!(
            "| {} | {:.0} | {:.2} ms | {:.2} ms | {} |",
            level.connections,
            level.requests as f64 / level.seconds,
            level.p50.as_secs_f64() * 1e3,
            level.p99.as_secs_f64() * 1e3,
            stored
        );
    }
    println!(
        "RSS after the load: {:.1} MiB",
        rss_kib(master.child.id()) as f64 / 1024.0
    );
}
