//! The web UI in a real browser (headless Chromium over WebDriver) against
//! the real binary: a forbidden action refused when logged out, logging in,
//! forcing a build with a parameter, its log growing live, stopping it; and
//! the pages on a phone's width and in dark mode.
//!
//! The screenshots in the README are taken here: they are written to
//! `target/screenshots/` (or `$BUILDMASTER_SCREENSHOTS`).

use std::path::PathBuf;

use buildmaster_e2e::{wait_until, workspace_root, Basedir, Browser, Master};
use serde_json::json;

const CONFIG: &str = r#"
[master]
title = "Acme CI"
reload_on_change = false

[www.auth]
type = "htpasswd"
file = "users.htpasswd"

[www.change_hook_dialects]
base = true

[[workers]]
type = "local"
name = "w"
max_builds = 4

[[builders]]
name = "app"
workernames = ["w"]
tags = ["linux"]
[[builders.steps]]
type = "shell"
name = "compile"
command = "echo \"message: %(prop:message)s\"; for i in $(seq 1 600); do echo tick $i; sleep 0.2; done"

[[builders]]
name = "docs"
workernames = ["w"]
tags = ["docs"]
[[builders.steps]]
type = "shell"
name = "render"
command = "echo rendering"

[[builders]]
name = "lint"
workernames = ["w"]
tags = ["linux"]
[[builders.steps]]
type = "shell"
name = "check"
command = "case %(prop:revision)s in bad*) echo 'src/main.rs:3: unused import' >&2; exit 1;; esac"

[[schedulers]]
type = "any_branch"
name = "pushes"
builder_names = ["docs", "lint"]

[[schedulers]]
type = "force"
name = "manual"
builder_names = ["app"]
[[schedulers.properties]]
type = "string"
name = "message"
label = "Message"
default = ""
"#;

/// A master with user alice (password `alice-pass`), whose control actions
/// need a logged-in user, and three pushes built by `docs` and `lint` (the
/// second fails `lint`).
fn start() -> Master {
    let base = Basedir::new(CONFIG);
    let hash = bcrypt::hash("alice-pass", 4).unwrap();
    base.write("users.htpasswd", format!("alice:{hash}\n"));
    let master = base.start();
    for (push, revision) in ["a1f3", "bad2", "c9e4"].iter().enumerate() {
        let pushed = master.post_form(
            "/change_hook/base",
            &format!(
                "branch=main&revision={revision}&repository=acme&author=Ada&comments=Push+{push}"
            ),
        );
        assert_eq!(pushed.status, 200, "{}", pushed.body);
        let builds = 2 * (push as i64 + 1);
        master.wait_for_build(builds - 1);
        master.wait_for_build(builds);
    }
    master
}

fn screenshot_path(name: &str) -> PathBuf {
    std::env::var_os("BUILDMASTER_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/screenshots"))
        .join(name)
}

/// The builds of `app`, from the API.
fn app_builds(master: &Master) -> Vec<serde_json::Value> {
    master.get_json("/api/v2/builders/app/builds?property=message")["builds"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn force_a_build_watch_its_log_live_and_stop_it() {
    let Some(browser) = Browser::start(1200, 800) else {
        return;
    };
    let master = start();

    // From the builders page to the builder's; logged out, the force form
    // is there, but the master refuses it.
    let app = app_builderid(&master);
    browser.open(&master.url("/"));
    browser.find(&format!("a[href='/builders/{app}']")).click();
    browser.wait_for_text("main h1", "app");
    browser
        .find("form.rpc input[name=message]")
        .type_text("nobody");
    browser.find("form.rpc button[type=submit]").click();
    let refused = browser.wait_for_text("#message", "Refused");
    assert!(refused.contains("log in"), "{refused}");
    assert!(master.get_json("/api/v2/buildrequests")["buildrequests"]
        .as_array()
        .unwrap()
        .iter()
        .all(|request| request["builderid"] != json!(app)));

    // Log in from the header's link, and come back to the builder.
    browser.find("header .who a").click();
    browser
        .find("form.login input[name=username]")
        .type_text("alice");
    browser
        .find("form.login input[name=password]")
        .type_text("alice-pass");
    browser.find("form.login button[type=submit]").click();
    browser.wait_for_text("header .who", "alice");
    assert!(
        browser.url().ends_with(&format!("/builders/{app}")),
        "{}",
        browser.url()
    );

    // Force with a parameter; the page follows the request to its build.
    browser
        .find("form.rpc input[name=message]")
        .type_text("hello from a browser");
    browser.find("form.rpc button[type=submit]").click();
    browser.wait("the build page", || {
        browser.url().contains("/builds/").then_some(())
    });
    browser.wait_for_text("pre.log", "message: hello from a browser");
    let build = app_builds(&master).pop().expect("the forced build");
    assert_eq!(build["properties"]["message"][0], "hello from a browser");

    // The log grows on the same page: no reload (the marker stays).
    browser.wait_for_text("pre.log", "tick 2");
    browser.script("window.sameDocument = true;", json!([]));
    browser.wait_for_text("pre.log", "tick 12");
    assert_eq!(
        browser.script("return window.sameDocument === true;", json!([])),
        true
    );
    browser.screenshot(&screenshot_path("build.png"));

    // Stop it: the build ends cancelled, and the page says so.
    browser.find("button.rpc-button[data-method=stop]").click();
    browser.wait_for_text("#result", "cancelled");
    browser.find("#build[data-complete=true]");
    // A finished build's page stays put: it follows nothing.
    browser.script("window.sameDocument = true;", json!([]));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(
        browser.script("return window.sameDocument === true;", json!([])),
        true
    );
    let stopped = wait_until("the build finished", || {
        app_builds(&master).pop().filter(|b| b["complete"] == true)
    });
    assert_eq!(stopped["results"], 6, "{stopped}");

    // The builders page, with the three builders' results.
    browser.open(&master.url("/"));
    browser.find("a.box.cancelled");
    browser.find("a.box.failure");
    browser.find("a.box.success");
    browser.screenshot(&screenshot_path("builders.png"));
}

/// The id of builder `app`.
fn app_builderid(master: &Master) -> i64 {
    master.get_json("/api/v2/builders/app")["builders"][0]["builderid"]
        .as_i64()
        .unwrap()
}

#[test]
fn the_pages_fit_a_phone_and_follow_dark_mode() {
    let Some(browser) = Browser::start(800, 844) else {
        return;
    };
    let master = start();
    // A phone's screen: narrower than a desktop window may be.
    browser.devtools(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": true}),
    );
    for path in [
        "/",
        "/builders/1",
        "/builds/1",
        "/changes",
        "/workers",
        "/hooks",
        "/status",
    ] {
        browser.open(&master.url(path));
        browser.find("main h1");
        let overflow = browser.script(
            "return document.documentElement.scrollWidth - window.innerWidth;",
            json!([]),
        );
        assert!(
            overflow.as_i64().unwrap() <= 0,
            "{path} is {overflow} px wider than a phone"
        );
    }

    let background = || {
        browser.script(
            "return getComputedStyle(document.body).backgroundColor;",
            json!([]),
        )
    };
    browser.open(&master.url("/"));
    assert_eq!(background(), "rgb(255, 255, 255)");
    browser.devtools(
        "Emulation.setEmulatedMedia",
        json!({"features": [{"name": "prefers-color-scheme", "value": "dark"}]}),
    );
    assert_eq!(background(), "rgb(21, 24, 28)");
    browser.screenshot(&screenshot_path("builders-phone-dark.png"));
}
