//! A real browser for the end-to-end tests: Debian's headless Chromium,
//! driven through `chromedriver` over the W3C WebDriver protocol (JSON over
//! HTTP, on a loopback port the driver picks).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The key under which WebDriver names an element.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long an element or a condition is waited for.
const PATIENCE: Duration = Duration::from_secs(30);

/// A headless Chromium with one WebDriver session; both end on drop.
pub struct Browser {
    driver: Child,
    session: String,
    http: reqwest::blocking::Client,
}

/// An element of the current page.
pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
}

/// `name` from `PATH`, or the path an environment variable gives.
fn program(variable: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(variable) {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

impl Browser {
    /// Starts the driver and a browser window of `width`×`height`. Without
    /// Chromium or its driver the test is skipped with a notice, unless it
    /// runs in CI (`CI` set), where their absence is a failure.
    pub fn start(width: u32, height: u32) -> Option<Browser> {
        let chromium = program("CHROMIUM", &["chromium", "chromium-browser"]);
        let driver = program("CHROMEDRIVER", &["chromedriver"]);
        let (Some(chromium), Some(driver)) = (chromium, driver) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "chromium and chromedriver are needed in CI (.ci/run installs them)"
            );
            eprintln!("notice: chromium or chromedriver not found; browser test skipped");
            return None;
        };
        Some(Browser::launch(&chromium, &driver, width, height))
    }

    fn launch(chromium: &Path, driver: &Path, width: u32, height: u32) -> Browser {
        let mut child = Command::new(driver)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver.display()));
        // "ChromeDriver was started successfully on port 46005."
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let port = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|line| {
                let (_, port) = line.split_once("successfully on port ")?;
                port.trim_end_matches('.').parse::<u16>().ok()
            })
            .unwrap_or_else(|| {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} did not say which port it listens on", driver.display())
            });
        // Keep reading so the driver never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    format!("--window-size={width},{height}"),
                ],
            },
        }}});
        let mut browser = Browser {
            driver: child,
            session: String::new(),
            http,
        };
        let answer = browser
            .request("POST", &format!("{base}/session"), Some(capabilities))
            .unwrap_or_else(|e| panic!("{e}"));
        browser.session = format!(
            "{base}/session/{}",
            answer["sessionId"].as_str().expect("a session id")
        );
        browser.command(
            "POST",
            "timeouts",
            json!({"implicit": 0, "pageLoad": 60_000}),
        );
        browser
    }

    fn request(&self, method: &str, url: &str, body: Option<Value>) -> Result<Value, String> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body.to_string());
        }
        let response = request
            .send()
            .unwrap_or_else(|e| panic!("WebDriver {url}: {e}"));
        let status = response.status();
        let answer: Value = serde_json::from_str(&response.text().unwrap_or_default())
            .expect("WebDriver answers JSON");
        if status.is_success() {
            Ok(answer["value"].clone())
        } else {
            Err(format!(
                "WebDriver {url}: {status} {}",
                answer["value"]["message"]
            ))
        }
    }

    /// A command of the session: `path` under `/session/<id>/`.
    fn try_command(&self, method: &str, path: &str, body: Value) -> Result<Value, String> {
        let body = (method == "POST").then_some(body);
        self.request(method, &format!("{}/{path}", self.session), body)
    }

    fn command(&self, method: &str, path: &str, body: Value) -> Value {
        self.try_command(method, path, body)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Loads `url` and waits for it.
    pub fn open(&self, url: &str) {
        self.command("POST", "url", json!({"url": url}));
    }

    /// The address of the page shown.
    pub fn url(&self) -> String {
        self.command("GET", "url", Value::Null)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs `script` in the page (a function body; `arguments` are `args`).
    pub fn script(&self, script: &str, args: Value) -> Value {
        self.command(
            "POST",
            "execute/sync",
            json!({"script": script, "args": args}),
        )
    }

    /// The first element matching CSS `selector`, waiting for it to appear.
    pub fn find(&self, selector: &str) -> Element<'_> {
        self.wait(&format!("an element {selector}"), || {
            // A page being replaced answers with an error: not there yet.
            let found = self
                .try_command(
                    "POST",
                    "elements",
                    json!({"using": "css selector", "value": selector}),
                )
                .ok()?;
            let id = found.as_array()?.first()?[ELEMENT].as_str()?.to_owned();
            Some(Element { browser: self, id })
        })
    }

    /// Waits until `probe` gives a value, polling every 100 ms.
    pub fn wait<T>(&self, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(value) = probe() {
                return value;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "timed out waiting for {what} on {}",
                self.url()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs a Chrome DevTools command (`Emulation.…` and the like).
    pub fn devtools(&self, command: &str, params: Value) -> Value {
        self.command(
            "POST",
            "goog/cdp/execute",
            json!({"cmd": command, "params": params}),
        )
    }

    /// Waits until the text of `selector` contains `text`; returns the text.
    pub fn wait_for_text(&self, selector: &str, text: &str) -> String {
        self.wait(&format!("{text:?} in {selector}"), || {
            let shown = self
                .try_command(
                    "POST",
                    "execute/sync",
                    json!({
                        "script": "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
                        "args": [selector],
                    }),
                )
                .ok()?;
            shown
                .as_str()
                .filter(|shown| shown.contains(text))
                .map(str::to_owned)
        })
    }

    /// A PNG of the window, written to `path`.
    pub fn screenshot(&self, path: &Path) {
        use base64::Engine;
        let png = self.command("GET", "screenshot", Value::Null);
        let png = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("a base64 PNG"))
            .expect("valid base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }
}

impl Element<'_> {
    fn path(&self, action: &str) -> String {
        format!("element/{}/{action}", self.id)
    }

    pub fn click(&self) {
        self.browser.command("POST", &self.path("click"), json!({}));
    }

    /// Replaces the field's value with `text`, as typed.
    pub fn type_text(&self, text: &str) {
        self.browser.command("POST", &self.path("clear"), json!({}));
        self.browser
            .command("POST", &self.path("value"), json!({"text": text}));
    }

    /// The text shown (rendered, as the user sees it).
    pub fn text(&self) -> String {
        self.browser
            .command("GET", &self.path("text"), Value::Null)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session closes the browser; the driver alone would
        // leave it running.
        if !self.session.is_empty() {
            let _ = self.http.delete(&self.session).send();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
