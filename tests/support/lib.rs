//! Support for the end-to-end tests: build the workspace, start the real
//! `buildmaster` binary in a fresh basedir on an ephemeral loopback port, talk to
//! it over HTTP, read its log.

mod browser;
mod telegram;

pub use browser::{Browser, Element};
pub use telegram::{FakeTelegram, TelegramCall, CHANNEL_ID};

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a master may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The root of this workspace.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn run_cargo_build(args: &[&str], what: &str) {
    let output = cargo()
        .args(["build", "--quiet"])
        .args(args)
        .current_dir(workspace_root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo to build {what}: {e}"));
    assert!(
        output.status.success(),
        "building {what} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The directory holding the `buildmaster` binary and the built-in plugins,
/// built once per test process so the tests always run the current code.
pub fn build_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        run_cargo_build(&["--workspace", "--lib", "--bins"], "the workspace");
        target_dir().join("debug")
    })
}

/// The `buildmaster` binary.
pub fn binary() -> PathBuf {
    build_dir().join("buildmaster")
}

/// Builds the test fixture plugins (`tests/plugins`) and the contrib example
/// dialect into `target/fixtures`; returns the directory holding the `.so` files.
pub fn fixtures_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let target = target_dir().join("fixtures");
        let target_arg = target.to_string_lossy().into_owned();
        for manifest in [
            "tests/plugins/Cargo.toml",
            "tests/plugins/abi-1-0/Cargo.toml",
            "contrib/example-dialect/Cargo.toml",
        ] {
            run_cargo_build(
                &[
                    "--manifest-path",
                    manifest,
                    "--workspace",
                    "--lib",
                    "--target-dir",
                    &target_arg,
                ],
                manifest,
            );
        }
        target.join("debug")
    })
}

/// Runs `cargo ARGS` in `dir`, a crate outside this workspace, with the
/// fixtures' target directory (so that it reuses their compiled dependencies);
/// returns the directory its debug build goes to.
pub fn cargo_in(dir: &Path, args: &[&str]) -> PathBuf {
    fixtures_dir();
    let target = target_dir().join("fixtures");
    let output = cargo()
        .args(args)
        .arg("--quiet")
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo in {}: {e}", dir.display()));
    assert!(
        output.status.success(),
        "cargo {args:?} in {} failed:\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    target.join("debug")
}

/// The second version of `libfixture_versioned.so`, built with its `v2`
/// feature into `target/fixtures-v2`: same plugin, different answers.
pub fn versioned_v2() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        fixtures_dir();
        let target = target_dir().join("fixtures-v2");
        run_cargo_build(
            &[
                "--manifest-path",
                "tests/plugins/Cargo.toml",
                "-p",
                "fixture-versioned",
                "--features",
                "v2",
                "--target-dir",
                &target.to_string_lossy(),
            ],
            "fixture-versioned v2",
        );
        target.join("debug/libfixture_versioned.so")
    })
}

/// The path of fixture library `name` (e.g. `fixture_panicking`).
pub fn fixture(name: &str) -> PathBuf {
    fixtures_dir().join(format!("lib{name}.so"))
}

/// A running master in a temporary basedir. Stopped (SIGTERM, then SIGKILL) on drop.
pub struct Master {
    pub basedir: tempfile::TempDir,
    pub addr: String,
    child: Option<Child>,
    log_path: PathBuf,
}

/// A basedir with a configuration, before the master is started.
pub struct Basedir {
    pub dir: tempfile::TempDir,
}

impl Basedir {
    /// A basedir whose `master.toml` is `[www] port = "127.0.0.1:0"` followed by `extra`.
    pub fn new(extra: &str) -> Basedir {
        Basedir::with_file(&format!("[www]\nport = \"127.0.0.1:0\"\n{extra}"))
    }

    /// A basedir whose `master.toml` is `config`, which must listen somewhere.
    pub fn with_file(config: &str) -> Basedir {
        let dir = tempfile::tempdir().expect("temporary basedir");
        std::fs::write(dir.path().join("master.toml"), config).expect("write master.toml");
        Basedir { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Replaces a file inside the basedir the way editors and `install` do:
    /// written beside it, then renamed over it.
    pub fn replace(&self, name: &str, content: impl AsRef<[u8]>) {
        replace_file(&self.dir.path().join(name), content);
    }

    /// Writes a file inside the basedir.
    pub fn write(&self, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent");
        }
        std::fs::write(&path, content).expect("write file");
        path
    }

    /// Starts the master and waits until it listens.
    pub fn start(self) -> Master {
        self.start_logging("info")
    }

    /// Starts the master with `BUILDMASTER_LOG` set to `filter`.
    pub fn start_logging(self, filter: &str) -> Master {
        self.start_with_env(&[("BUILDMASTER_LOG", filter)])
    }

    /// Starts the master with these environment variables set.
    pub fn start_with_env(self, vars: &[(&str, &str)]) -> Master {
        let log_path = self.dir.path().join("test-master.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = Command::new(binary())
            .arg("start")
            .arg(self.dir.path())
            .env("BUILDMASTER_LOG", "info")
            .envs(vars.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn buildmaster");
        let mut master = Master {
            basedir: self.dir,
            addr: String::new(),
            child: Some(child),
            log_path,
        };
        master.addr = master.wait_for_address();
        master
    }
}

impl Master {
    /// Starts a master with `extra` appended to a loopback-only configuration.
    pub fn start(extra: &str) -> Master {
        Basedir::new(extra).start()
    }

    /// Starts a master whose whole `master.toml` is `config`.
    pub fn start_with(config: &str) -> Master {
        Basedir::with_file(config).start()
    }

    fn wait_for_address(&mut self) -> String {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let log = self.log();
            if let Some(rest) = log.split(" listening on http://").nth(1) {
                return rest.split('/').next().unwrap_or_default().to_string();
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("buildmaster exited with {status} before listening:\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "buildmaster did not start listening:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the master logs that it listens on another address (after
    /// a reconfiguration), and talks to that one from now on.
    pub fn follow_new_address(&mut self) {
        let old = self.addr.clone();
        self.addr = wait_until("a new listening address", || {
            let log = self.log();
            let last = log.rsplit(" listening on http://").next()?;
            let addr = last.split('/').next()?.to_string();
            (log.contains(" listening on http://") && addr != old).then_some(addr)
        });
    }

    /// Everything the master has logged so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(&self.log_path) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    /// `http://ADDR` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The master's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or_default()
    }

    /// Sends SIGTERM, waits for the exit status, and hands back the basedir so
    /// the master can be started again on it.
    /// Kills the master with SIGKILL, as a crash would, and returns its basedir.
    pub fn kill(mut self) -> Basedir {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
        let dir = std::mem::replace(
            &mut self.basedir,
            tempfile::tempdir().expect("temporary dir"),
        );
        Basedir { dir }
    }

    pub fn stop(mut self) -> (Basedir, std::process::ExitStatus) {
        let mut child = self.child.take().expect("running");
        let status = terminate(&mut child);
        let dir = std::mem::replace(
            &mut self.basedir,
            tempfile::tempdir().expect("temporary dir"),
        );
        (Basedir { dir }, status)
    }

    /// `POST /change_hook/<dialect>` with a form body.
    pub fn post_form(&self, path: &str, body: &str) -> Reply {
        self.send(
            "POST",
            path,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            body.as_bytes(),
        )
    }

    /// GETs a path and parses the JSON answer.
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let reply = self.send("GET", path, &[("Accept", "application/json")], b"");
        assert_eq!(reply.status, 200, "GET {path}: {}", reply.body);
        serde_json::from_str(&reply.body)
            .unwrap_or_else(|e| panic!("GET {path}: {e}: {}", reply.body))
    }

    /// Every stored change, oldest first, as `/api/v2/changes` returns them.
    pub fn changes(&self) -> Vec<serde_json::Value> {
        let json = self.get_json("/api/v2/changes?order=changeid");
        json["changes"].as_array().cloned().unwrap_or_default()
    }

    /// POSTs a JSON body (the REST API's JSON-RPC calls).
    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> Reply {
        self.send(
            "POST",
            path,
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
    }

    /// The outcome of the last reconfiguration (`/api/v2/reconfig`).
    pub fn reconfig(&self) -> serde_json::Value {
        self.get_json("/api/v2/reconfig")["reconfig"].clone()
    }

    /// Waits until the master runs configuration generation `generation`.
    pub fn wait_for_generation(&self, generation: u64) -> serde_json::Value {
        wait_until(&format!("generation {generation}"), || {
            let status = self.reconfig();
            (status["generation"].as_u64() >= Some(generation)).then_some(status)
        })
    }

    /// Every build, oldest first, with all its properties.
    pub fn builds(&self) -> Vec<serde_json::Value> {
        let json = self.get_json("/api/v2/builds?property=*");
        json["builds"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until build `buildid` is complete and returns it.
    pub fn wait_for_build(&self, buildid: i64) -> serde_json::Value {
        wait_until(&format!("build {buildid} to complete"), || {
            let build = self
                .builds()
                .into_iter()
                .find(|b| b["buildid"] == buildid)?;
            (build["complete"] == true).then_some(build)
        })
    }

    /// Sends one request and returns status, headers and body.
    pub fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        send(&self.url(path), method, headers, body)
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
        }
    }
}

/// Sends SIGTERM and waits for the exit (SIGKILL after 15 s).
pub fn terminate(child: &mut Child) -> std::process::ExitStatus {
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return child.wait().expect("wait for killed master");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes `content` beside `path` and renames it over `path`.
pub fn replace_file(path: &Path, content: impl AsRef<[u8]>) {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".new");
    std::fs::write(&temporary, content).expect("write the new file");
    std::fs::rename(&temporary, path).expect("rename it into place");
}

/// Polls `probe` every 20 ms until it returns something, for at most 30 s.
pub fn wait_until<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn client() -> &'static reqwest::blocking::Client {
    static CLIENT: OnceLock<reqwest::blocking::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            // Tests look at redirects themselves.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("HTTP client")
    })
}

/// Sends one request to `url`.
pub fn send(url: &str, method: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = client().request(method.clone(), url).body(body.to_vec());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request
        .send()
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response.text().unwrap_or_default();
    Reply {
        status,
        headers,
        body,
    }
}

/// The `X-Hub-Signature-256` value GitHub sends for `body` signed with `secret`.
pub fn github_signature(secret: &str, body: &[u8]) -> String {
    use hmac::{Mac, SimpleHmac};
    let mut mac =
        SimpleHmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Runs `buildmaster ARGS…` to completion.
pub fn run_cli(args: &[&str]) -> std::process::Output {
    Command::new(binary())
        .args(args)
        .output()
        .expect("run buildmaster")
}

/// A request the [`MockApi`] received.
#[derive(Debug, Clone)]
pub struct MockRequest {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl MockRequest {
    /// The value of header `name` (any case), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A queued answer: status, extra headers, body.
type MockResponse = (u16, Vec<(String, String)>, String);

#[derive(Default)]
struct MockState {
    responses: std::collections::VecDeque<MockResponse>,
    received: Vec<MockRequest>,
}

/// A loopback HTTP server standing in for a provider's API (GitHub's): it answers
/// queued responses in order and records every request. A request with nothing
/// queued gets 599 and is recorded, so an unexpected call shows up in
/// [`MockApi::take_received`].
pub struct MockApi {
    pub addr: std::net::SocketAddr,
    state: std::sync::Arc<std::sync::Mutex<MockState>>,
}

impl MockApi {
    pub fn start() -> MockApi {
        MockApi::start_at("127.0.0.1:0")
    }

    /// A mock listening on `addr`, e.g. a port a test kept free until now.
    pub fn start_at(addr: &str) -> MockApi {
        let listener = std::net::TcpListener::bind(addr).expect("bind mock API");
        let addr = listener.local_addr().expect("mock address");
        let state = std::sync::Arc::new(std::sync::Mutex::new(MockState::default()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                serve_mock(stream, &shared);
            }
        });
        MockApi { addr, state }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues the answer to the next request.
    pub fn push_response(&self, status: u16, body: String) {
        self.push_response_with(status, &[], body);
    }

    /// Queues the answer to the next request, with extra headers.
    pub fn push_response_with(&self, status: u16, headers: &[(&str, &str)], body: String) {
        let headers = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        self.state
            .lock()
            .expect("mock state")
            .responses
            .push_back((status, headers, body));
    }

    /// The requests received so far, without forgetting them.
    pub fn received(&self) -> Vec<MockRequest> {
        self.state.lock().expect("mock state").received.clone()
    }

    /// The requests received since the last call, and forgets any answer left.
    pub fn take_received(&self) -> Vec<MockRequest> {
        let mut state = self.state.lock().expect("mock state");
        state.responses.clear();
        std::mem::take(&mut state.received)
    }
}

/// A request as a loopback fake reads it.
pub(crate) struct HttpRequest {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Reads one HTTP/1.1 request (with a `Content-Length` body) from `reader`;
/// `None` at the end of the stream.
pub(crate) fn read_request(reader: &mut impl std::io::BufRead) -> Option<HttpRequest> {
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return None;
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim_end().is_empty() {
            break;
        }
        if let Some((name, value)) = line.trim_end().split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
            headers.push((name.to_string(), value.trim().to_string()));
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(HttpRequest {
        method,
        path,
        headers,
        body,
    })
}

fn serve_mock(mut stream: std::net::TcpStream, state: &std::sync::Mutex<MockState>) {
    use std::io::{BufReader, Write};
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let Some(HttpRequest {
        method,
        path,
        headers,
        body,
    }) = read_request(&mut reader)
    else {
        return;
    };
    let (status, extra, body) = {
        let mut state = state.lock().expect("mock state");
        state.received.push(MockRequest {
            method,
            path,
            headers,
            body,
        });
        state.responses.pop_front().unwrap_or((
            599,
            Vec::new(),
            "{\"message\": \"unexpected request\"}".to_string(),
        ))
    };
    let extra: String = extra
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let response = format!(
        "HTTP/1.1 {status} Mock\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
}

/// Runs git in `dir` as a test author and committer; its output, trimmed.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.org")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.org")
        .output()
        .unwrap_or_else(|e| panic!("cannot run git {args:?}: {e}"));
    assert!(
        output.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}
