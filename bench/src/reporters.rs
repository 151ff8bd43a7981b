//! Reporter delivery: how soon a finished build is heard of, and how fast
//! the outbox drains into slow receivers.
//!
//! Receivers are loopback HTTP servers in this process, answering 200 after
//! a set delay; the master reports to them with `http_status_push`.
//!
//! * Latency: ROUNDS builds one after the other, each of one step that
//!   writes the wall-clock time in nanoseconds to a file as its last act;
//!   the latency is from that time to the report's arrival, so it holds the
//!   step's end, the build's finish, the journal, rendering, the outbox's
//!   commit and the delivery.
//! * Throughput: BUILDS builds queued at once, reported to each of 1, 4 and
//!   16 receivers (one reporter each) that take 100 ms to answer; the rate is
//!   deliveries per second from the first arrival to the last, and every
//!   receiver must get every build exactly once.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use super::{post_hook, start_in, Load, Sender};

/// One request a receiver took: when, and the build it reported.
#[derive(Clone, Copy)]
struct Arrival {
    at: SystemTime,
    buildid: u64,
}

/// A loopback HTTP/1.1 server answering every request 200 after `delay`.
struct Receiver {
    url: String,
    arrivals: Arc<Mutex<Vec<Arrival>>>,
}

impl Receiver {
    async fn start(delay: Duration) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/report", listener.local_addr().expect("addr"));
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&arrivals);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let recorded = Arc::clone(&recorded);
                tokio::spawn(async move {
                    let _ = stream.set_nodelay(true);
                    let mut stream = BufReader::new(stream);
                    while let Some(body) = read_request(&mut stream).await {
                        let at = SystemTime::now();
                        let buildid = super::number_after(&body, "buildid");
                        recorded
                            .lock()
                            .expect("arrivals")
                            .push(Arrival { at, buildid });
                        tokio::time::sleep(delay).await;
                        let answer = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                        if stream.get_mut().write_all(answer.as_bytes()).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Receiver { url, arrivals }
    }

    fn arrivals(&self) -> Vec<Arrival> {
        self.arrivals.lock().expect("arrivals").clone()
    }

    async fn wait_for(&self, count: usize) -> Vec<Arrival> {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let arrivals = self.arrivals();
            if arrivals.len() >= count {
                return arrivals;
            }
            assert!(
                Instant::now() < deadline,
                "{count} reports did not arrive (got {})",
                arrivals.len()
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
}

/// The body of the next request on `stream`, or `None` at its end.
async fn read_request(stream: &mut BufReader<tokio::net::TcpStream>) -> Option<String> {
    let mut length = 0;
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.ok()?;
    Some(String::from_utf8_lossy(&body).into_owned())
}

/// A master with one local worker running `command` for every change on
/// `main`, reporting every finished build to each of `urls`.
fn config(command: &str, urls: &[String]) -> String {
    let mut config = format!(
        "[www]\nport = \"127.0.0.1:0\"\n[www.change_hook_dialects]\nbase = true\n\
         [[workers]]\ntype = \"local\"\nname = \"w\"\nmax_builds = 4\n\
         [[builders]]\nname = \"b\"\nworkernames = [\"w\"]\ncollapse_requests = false\n\
         [[builders.steps]]\ntype = \"shell\"\ncommand = {command}\n\
         [[schedulers]]\ntype = \"single_branch\"\nname = \"main\"\n\
         change_filter = {{ branch = \"main\" }}\nbuilder_names = [\"b\"]\n"
    );
    for (n, url) in urls.iter().enumerate() {
        config.push_str(&format!(
            "[[reporters]]\nname = \"r{n}\"\ntype = \"http_status_push\"\nserver_url = \"{url}\"\n\
             format = '{{\"buildid\":{{{{ build.buildid }}}}}}'\n"
        ));
    }
    config
}

fn epoch(at: SystemTime) -> Duration {
    at.duration_since(UNIX_EPOCH).expect("after 1970")
}

pub async fn run(rounds: usize, builds: usize) {
    latency(rounds).await;
    println!();
    println!("| receivers (100 ms each) | deliveries | deliveries/s | per receiver |");
    println!("|---:|---:|---:|---:|");
    for receivers in [1, 4, 16] {
        throughput(receivers, builds).await;
    }
}

async fn latency(rounds: usize) {
    let receiver = Receiver::start(Duration::ZERO).await;
    let basedir = tempfile::tempdir().expect("basedir");
    let stamp = basedir.path().join("stamp");
    let command = format!(
        "[\"sh\", \"-c\", \"date +%s%N > {}\"]",
        stamp.to_str().expect("a UTF-8 path")
    );
    let master = start_in(
        basedir,
        &config(&command, std::slice::from_ref(&receiver.url)),
    );
    let mut sender = Sender::connect(&master.addr, Load::Base).await;
    let mut latencies = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        post_hook(&mut sender).await;
        let arrival = receiver.wait_for(round).await[round - 1];
        let written = std::fs::read_to_string(&stamp).expect("the step's stamp");
        let finished = Duration::from_nanos(written.trim().parse().expect("nanoseconds"));
        latencies.push(epoch(arrival.at).saturating_sub(finished));
    }
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let p99 = latencies[(rounds * 99).div_ceil(100) - 1];
    println!(
        "last command of a build ended -> its report received ({rounds} builds one after the \
         other): median {:.1} ms, p99 {:.1} ms, min {:.1} ms, max {:.1} ms",
        ms(latencies[rounds / 2]),
        ms(p99),
        ms(latencies[0]),
        ms(latencies[rounds - 1])
    );
}

async fn throughput(receivers: usize, builds: usize) {
    let mut slow = Vec::new();
    for _ in 0..receivers {
        slow.push(Receiver::start(Duration::from_millis(100)).await);
    }
    let urls: Vec<String> = slow.iter().map(|r| r.url.clone()).collect();
    let master = start_in(
        tempfile::tempdir().expect("basedir"),
        &config("[\"true\"]", &urls),
    );
    let mut sender = Sender::connect(&master.addr, Load::Base).await;
    for _ in 0..builds {
        post_hook(&mut sender).await;
    }
    let mut first = None::<SystemTime>;
    let mut last = UNIX_EPOCH;
    for receiver in &slow {
        let arrivals = receiver.wait_for(builds).await;
        let distinct: BTreeSet<u64> = arrivals.iter().map(|a| a.buildid).collect();
        assert_eq!(distinct.len(), builds, "every build reported once");
        for arrival in arrivals {
            first = Some(first.map_or(arrival.at, |f| f.min(arrival.at)));
            last = last.max(arrival.at);
        }
    }
    // Nothing more comes: no delivery was sent twice.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for receiver in &slow {
        assert_eq!(receiver.arrivals().len(), builds, "a report came twice");
    }
    let deliveries = receivers * builds;
    let seconds = last
        .duration_since(first.expect("arrivals"))
        .expect("ordered")
        .as_secs_f64();
    let rate = (deliveries - 1) as f64 / seconds;
    println!(
        "| {receivers} | {deliveries} | {rate:.1} | {:.2} |",
        rate / receivers as f64
    );
}
