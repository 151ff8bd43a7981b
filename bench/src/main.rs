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

/// One keep-alive HTTP/1.1 connection that posts the same hook again and again.
/// Hand-rolled rather than a full client so that the load generator, which
/// shares the machine's cores with the master, costs as little CPU as possible.
struct Sender {
    stream: tokio::net::TcpStream,
    request: Vec<u8>,
    buffer: Vec<u8>,
}

impl Sender {
    async fn connect(addr: &str) -> Sender {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let request = format!(
            "POST /change_hook/base HTTP/1.1\r\nHost: {addr}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{BODY}",
            BODY.len()
        );
        Sender {
            stream,
            request: request.into_bytes(),
            buffer: Vec::with_capacity(1024),
        }
    }

    /// Sends the hook and returns the status and body of the answer.
    async fn post(&mut self) -> (u16, String) {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(&self.request).await.expect("write");
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

async fn run_level(addr: &str, connections: usize, duration: Duration) -> Level {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let stop = stop.clone();
        let mut sender = Sender::connect(addr).await;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let (status, body) = sender.post().await;
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
    println!("| connections | hooks/s | p50 | p99 | master CPU per hook | hooks stored |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for connections in levels {
        let cpu_before = cpu_time(master.child.id());
        let level = run_level(&master.addr, connections, Duration::from_secs(seconds)).await;
        let cpu = cpu_time(master.child.id()) - cpu_before;
        acknowledged += level.requests as u64;
        let stored = stored_total(&client, &master.addr).await;
        assert_eq!(stored, acknowledged, "every acknowledged hook is stored");
        println!(
            "| {} | {:.0} | {:.2} ms | {:.2} ms | {:.0} µs | {} |",
            level.connections,
            level.requests as f64 / level.seconds,
            level.p50.as_secs_f64() * 1e3,
            level.p99.as_secs_f64() * 1e3,
            cpu.as_secs_f64() * 1e6 / level.requests.max(1) as f64,
            stored
        );
    }
    println!(
        "RSS after the load: {:.1} MiB",
        rss_kib(master.child.id()) as f64 / 1024.0
    );
}
