//! `/metrics` end to end: hooks, signature failures, plugin calls, builds,
//! queue depth, workers, reloads, the outbox and Telegram calls, in the
//! Prometheus text format, behind a bearer token.

use buildmaster_e2e::{wait_until, FakeTelegram, Master};

const TOKEN: &str = "scrape-token-0123456789";

/// The value of the sample `line` names (name and labels), if there is one.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
}

#[test]
fn metrics_count_what_the_master_does() {
    let telegram = FakeTelegram::start("metricsbot");
    // A port nothing listens on: the reporter's delivery fails and waits.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}/report", closed.local_addr().unwrap());
    drop(closed);
    let master = Master::start(&format!(
        r#"metrics_token = "{TOKEN}"
[master]
reload_on_change = false
[www.change_hook_dialects]
base = true
github = {{ secret = "gh-secret" }}
[[workers]]
type = "local"
name = "w"
[[builders]]
name = "b"
workernames = ["w"]
[[builders.steps]]
type = "shell"
command = "true"
[[builders]]
name = "idle"
workernames = ["w"]
[[builders.steps]]
type = "shell"
command = "true"
[[schedulers]]
type = "any_branch"
name = "all"
builder_names = ["b"]
[[reporters]]
name = "r"
type = "http_status_push"
server_url = "{dead_url}"
max_attempts = 100
[telegram]
bot_token = "12345:secret"
api_url = "{}"
poll_timeout = 1
"#,
        telegram.url()
    ));
    let hook = master.post_form(
        "/change_hook/base",
        "branch=main&revision=1&repository=r&author=Ada&comments=c",
    );
    assert_eq!(hook.status, 200);
    let forged = master.send(
        "POST",
        "/change_hook/github",
        &[
            ("Content-Type", "application/json"),
            ("X-GitHub-Event", "push"),
            ("X-Hub-Signature-256", "sha256=00"),
        ],
        b"{}",
    );
    assert_eq!(forged.status, 400);
    assert_eq!(master.post_form("/change_hook/nosuch", "").status, 400);
    assert_eq!(master.wait_for_build(1)["results"], 0);
    let reload = master.post_json(
        "/api/v2/masters/1",
        &serde_json::json!({"jsonrpc": "2.0", "method": "reconfig", "id": 1}),
    );
    assert_eq!(reload.status, 200, "{}", reload.body);

    let refused = master.send("GET", "/metrics", &[], b"");
    assert_eq!(refused.status, 401);
    let auth = format!("Bearer {TOKEN}");
    let text = wait_until("a failed delivery and Telegram calls", || {
        let reply = master.send("GET", "/metrics", &[("Authorization", &auth)], b"");
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        let text = reply.body;
        let failed = sample(
            &text,
            "buildmaster_reporter_delivery_failures_total{reporter=\"r\"}",
        );
        let polled = sample(
            &text,
            "buildmaster_telegram_api_calls_total{method=\"getUpdates\"}",
        );
        (failed.is_some() && polled.is_some()).then_some(text)
    });
    let expect = |series: &str, value: f64| {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    };
    expect(
        "buildmaster_hook_requests_total{dialect=\"base\",status=\"200\"}",
        1.0,
    );
    expect(
        "buildmaster_hook_requests_total{dialect=\"github\",status=\"400\"}",
        1.0,
    );
    expect(
        "buildmaster_hook_requests_total{dialect=\"(unknown)\",status=\"400\"}",
        1.0,
    );
    expect(
        "buildmaster_hook_signature_failures_total{dialect=\"github\"}",
        1.0,
    );
    expect(
        "buildmaster_builds_total{builder=\"b\",result=\"success\"}",
        1.0,
    );
    expect(
        "buildmaster_build_duration_seconds_count{builder=\"b\"}",
        1.0,
    );
    expect("buildmaster_build_requests_pending{builder=\"b\"}", 0.0);
    expect("buildmaster_build_requests_pending{builder=\"idle\"}", 0.0);
    expect("buildmaster_workers_connected", 1.0);
    expect("buildmaster_reloads_total{result=\"unchanged\"}", 1.0);
    expect("buildmaster_config_generation", 1.0);
    expect(
        "buildmaster_reporter_deliveries_pending{reporter=\"r\"}",
        1.0,
    );
    let handled: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("buildmaster_plugin_call_seconds_count{") && l.contains("call=\"handle\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(handled, 2.0, "base and github were called:\n{text}");
    assert!(
        text.contains("call=\"render\""),
        "the reporter rendered:\n{text}"
    );
    assert!(sample(
        &text,
        "buildmaster_telegram_api_calls_total{method=\"setMyCommands\"}"
    )
    .is_some());
    assert!(!text.contains(TOKEN) && !text.contains("gh-secret"));
}
