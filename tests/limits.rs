//! The bounds on what one client can make the master do, held by the real
//! binary: the header-read and idle timeouts, the connection cap, the REST
//! deadline, a read stopped when its client hangs up, query parameters
//! refused before anything is read, and a listing with no limit streamed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use buildmaster_e2e::{wait_until, Master};
use serde_json::{json, Value};

fn connect(master: &Master) -> TcpStream {
    let stream = TcpStream::connect(&master.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
}

/// Everything the master sends until it closes the connection, and how long
/// that took.
fn read_until_closed(stream: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the master did not close the connection: {e}"),
        }
    }
    (
        String::from_utf8_lossy(&received).into_owned(),
        started.elapsed(),
    )
}

/// Sends `GET path` on a kept-alive connection and reads one whole reply
/// (headers, then a body of its Content-Length).
fn get_on(stream: &mut TcpStream, path: &str) -> String {
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut received = Vec::new();
    let mut byte = [0u8; 1];
    while !received.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).unwrap(),
            1,
            "connection closed early"
        );
        received.push(byte[0]);
    }
    let head = String::from_utf8(received).unwrap();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .expect("a content-length");
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    head + &String::from_utf8(body).unwrap()
}

#[test]
fn a_client_that_sends_half_its_headers_is_disconnected() {
    let master = Master::start("header_read_timeout = 0.5\nidle_timeout = 30\n");
    let mut slow = connect(&master);
    slow.write_all(b"GET /api/v2 HTTP/1.1\r\nHost: te").unwrap();
    let (received, waited) = read_until_closed(&mut slow);
    assert_eq!(received, "");
    assert!(
        waited >= Duration::from_millis(400),
        "closed after {waited:?}"
    );
    // Everyone else is served meanwhile.
    assert_eq!(master.send("GET", "/api/v2/builders", &[], b"").status, 200);
}

#[test]
fn idle_connections_are_closed_and_busy_ones_are_kept() {
    let master = Master::start("idle_timeout = 0.6\nheader_read_timeout = 30\n");
    // Requests closer together than the timeout keep the connection.
    let mut busy = connect(&master);
    for _ in 0..4 {
        assert!(get_on(&mut busy, "/api/v2").starts_with("HTTP/1.1 200"));
        std::thread::sleep(Duration::from_millis(300));
    }
    let (received, waited) = read_until_closed(&mut busy);
    assert_eq!(received, "");
    assert!(
        waited >= Duration::from_millis(200),
        "closed after {waited:?}"
    );
    // A connection that never sends a byte goes too.
    let mut silent = connect(&master);
    let (received, waited) = read_until_closed(&mut silent);
    assert_eq!(received, "");
    assert!(
        waited >= Duration::from_millis(500),
        "closed after {waited:?}"
    );
}

#[test]
fn connections_above_the_cap_are_answered_503() {
    let master = Master::start("max_connections = 2\n");
    let mut first = connect(&master);
    let mut second = connect(&master);
    for stream in [&mut first, &mut second] {
        assert!(get_on(stream, "/api/v2").starts_with("HTTP/1.1 200"));
    }
    let mut third = connect(&master);
    let (received, _) = read_until_closed(&mut third);
    assert!(received.starts_with("HTTP/1.1 503"), "{received}");
    assert!(received.ends_with(r#"{"error":"too many connections; try again later"}"#));
    assert!(master.log().contains("max_connections"), "{}", master.log());
    // A place freed is a place taken.
    drop(first);
    wait_until("a connection accepted again", || {
        let mut stream = connect(&master);
        write!(
            stream,
            "GET /api/v2/builders HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let (received, _) = read_until_closed(&mut stream);
        received.starts_with("HTTP/1.1 200").then_some(())
    });
    assert!(get_on(&mut second, "/api/v2").starts_with("HTTP/1.1 200"));
}

#[test]
fn query_parameters_are_refused_before_anything_is_read() {
    let master = Master::start("");
    for (query, message) in [
        ("/api/v2/builds?limit=-1", "invalid value '-1' for 'limit'"),
        (
            "/api/v2/changes?offset=10001&limit=1",
            "offset 10001 is larger than 10000",
        ),
        (
            "/api/v2/changes?colour=red",
            "unrecognized query parameter 'colour'",
        ),
    ] {
        let reply = master.send("GET", query, &[], b"");
        assert_eq!(reply.status, 400, "{query}: {}", reply.body);
        assert!(reply.body.contains(message), "{query}: {}", reply.body);
    }
    let reply = master.send("GET", "/api/v2/changes?offset=10000&limit=1", &[], b"");
    assert_eq!(reply.status, 200, "{}", reply.body);
}

#[test]
fn the_open_file_limit_is_raised_and_logged_at_start() {
    let master = Master::start("");
    let log = master.log();
    let line = log
        .lines()
        .find(|line| line.contains("open-file limit"))
        .unwrap_or_else(|| panic!("{log}"));
    // "raised from A to B" or, already at the hard limit, "open-file limit: B".
    let limit: u64 = line
        .rsplit([' ', ':'])
        .next()
        .and_then(|figure| figure.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    let status = std::fs::read_to_string(format!("/proc/{}/limits", master.pid())).unwrap();
    let soft: u64 = status
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|soft| soft.parse().ok())
        .unwrap();
    assert_eq!(limit, soft);
}

/// Posts one GitHub push of `count` commits whose messages are `message`.
fn push(master: &Master, count: usize, message: &str) {
    let commits: Vec<Value> = (0..count)
        .map(|n| {
            json!({
                "id": format!("{n:040x}"),
                "message": message.replace("{n}", &n.to_string()),
                "timestamp": "2026-01-01T00:00:00+00:00",
                "url": format!("https://github.com/org/app/commit/{n:040x}"),
                "author": {"name": "Ada", "email": "ada@example.org"},
                "committer": {"name": "Ada", "email": "ada@example.org"},
                "added": [], "modified": ["src/main.c"], "removed": [],
            })
        })
        .collect();
    let payload = json!({
        "ref": "refs/heads/main",
        "repository": {"html_url": "https://github.com/org/app", "full_name": "org/app"},
        "head_commit": commits.last(),
        "commits": commits,
    });
    let reply = master.send(
        "POST",
        "/change_hook/github",
        &[
            ("Content-Type", "application/json"),
            ("X-GitHub-Event", "push"),
        ],
        payload.to_string().as_bytes(),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
}

/// Changes whose comments are 10 kB of `a`, and a query that makes SQLite
/// compare each against 200 near-misses at every offset: about 10 ms a
/// change, and nothing matches.
fn costly_listing(master: &Master, changes: usize) -> String {
    push(master, changes, &"a".repeat(10_000));
    let needles: Vec<String> = (0..200)
        .map(|n| format!("comments__contains={}b{n:05}", "a".repeat(190)))
        .collect();
    format!("/api/v2/changes?{}", needles.join("&"))
}

#[test]
fn a_listing_with_no_limit_is_streamed_whole() {
    let master = Master::start("[www.change_hook_dialects]\ngithub = true\n");
    push(&master, 400, "commit {n}");
    let reply = master.send("GET", "/api/v2/changes", &[], b"");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("transfer-encoding"), Some("chunked"));
    let listing: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(listing["meta"]["total"], 400);
    let changes = listing["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 400);
    assert_eq!(changes[0]["changeid"], 400);
    assert_eq!(changes[399]["comments"], "commit 0");
}

#[test]
fn a_read_past_rest_timeout_stops_with_503() {
    let master = Master::start("rest_timeout = 0.3\n[www.change_hook_dialects]\ngithub = true\n");
    let path = costly_listing(&master, 150);
    let started = Instant::now();
    let reply = master.send("GET", &path, &[], b"");
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        serde_json::from_str::<Value>(&reply.body).unwrap()["error"],
        "the query took longer than 300ms; narrow it with filters or a limit"
    );
    assert!(master
        .log()
        .contains("stopped reading changes: past rest_timeout"));
    // Cheap reads still answer.
    assert_eq!(
        master
            .send("GET", "/api/v2/changes?limit=1", &[], b"")
            .status,
        200
    );
}

#[test]
fn a_read_stops_when_its_client_hangs_up() {
    let master = Master::start("[www.change_hook_dialects]\ngithub = true\n");
    // Some four seconds of work, were it to run to the end.
    let path = costly_listing(&master, 400);
    let mut stream = connect(&master);
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let hung_up = Instant::now();
    drop(stream);
    wait_until("the read stopped", || {
        master
            .log()
            .contains("stopped reading changes: the client went away")
            .then_some(())
    });
    let stopped_within = hung_up.elapsed();
    assert!(
        stopped_within < Duration::from_secs(1),
        "stopped {stopped_within:?} after the hang-up"
    );
}
