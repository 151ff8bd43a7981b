//! Replays the change-hook conformance corpus (`../shared/conformance`) against
//! the real master and compares status, body and the changes as
//! `/api/v2/changes` returns them, after the project's `overrides.json`.
//!
//! Cases that share a configuration share one master; each case's changes are
//! those with ids above the last one seen before it was sent. GitHub API calls go
//! to a loopback mock that serves the case's `api_mocks` and records what it is
//! asked; the poller cases get `[[change_sources]]` named as their `environment`
//! says, and the polls the dialect requests are read from the master's log.
//! Every mismatch of every case is collected and printed before the test fails.
//!
//! `CONFORMANCE=github,gitlab cargo test --test conformance -- --nocapture`
//! replays only those folders.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use buildmaster_e2e::{workspace_root, Master, MockApi, MockRequest};
use serde_json::{json, Value};

/// The corpus folders this master serves.
const FOLDERS: &[&str] = &[
    "dispatcher",
    "base",
    "github",
    "gitlab",
    "bitbucket",
    "bitbucketcloud",
    "bitbucketserver",
    "gitorious",
    "poller",
    "mattermost",
];

/// The GitHub API endpoint a dialect uses when its configuration names none.
const GITHUB_API: &str = "https://api.github.com";

fn corpus_dir() -> Option<PathBuf> {
    let dir = workspace_root().join("../shared/conformance");
    dir.is_dir().then_some(dir)
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

struct Case {
    name: String,
    request: Value,
    expect: Value,
}

fn load_cases(corpus: &Path) -> Vec<Case> {
    let overrides = read_json(&corpus.join("overrides.json"));
    let wanted = std::env::var("CONFORMANCE").ok();
    let selected = |folder: &str| match &wanted {
        Some(list) => list.split(',').any(|f| f.trim() == folder),
        None => true,
    };
    let mut cases = Vec::new();
    for folder in FOLDERS.iter().filter(|f| selected(f)) {
        let mut names: Vec<String> = std::fs::read_dir(corpus.join(folder))
            .unwrap_or_else(|e| panic!("{folder}: {e}"))
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|f| f.strip_suffix(".request.json").map(str::to_string))
            .collect();
        names.sort();
        for name in names {
            let case = format!("{folder}/{name}");
            let request = read_json(&corpus.join(format!("{case}.request.json")));
            let mut expect = read_json(&corpus.join(format!("{case}.expect.json")));
            if let Some(o) = overrides.get(&case) {
                expect["status"] = o["status"].clone();
                if let Some(changes) = o.get("changes") {
                    expect["changes"] = changes.clone();
                }
                expect["overridden"] = json!(true);
            }
            cases.push(Case {
                name: case,
                request,
                expect,
            });
        }
    }
    cases
}

fn toml_value(value: &Value) -> Option<toml::Value> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64()?),
        },
        Value::String(s) => toml::Value::String(s.clone()),
        Value::Array(items) => toml::Value::Array(items.iter().filter_map(toml_value).collect()),
        Value::Object(map) => toml::Value::Table(
            map.iter()
                .filter_map(|(k, v)| Some((k.clone(), toml_value(v)?)))
                .collect(),
        ),
    })
}

/// The path part of an API base URL (`https://host/api/v3` → `/api/v3`).
fn base_path(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.find('/')
        .map_or("", |i| rest[i..].trim_end_matches('/'))
}

/// The `master.toml` lines for a case: its `change_hook_dialects` (the GitHub
/// API endpoint pointed at `mock`), `change_hook_auth`, and a git change source
/// for each polling source of its `environment`, polling `repository`.
fn config_for(request: &Value, mock: &str, repository: &Path) -> String {
    let mut www = toml::Table::new();
    if let Some(mut dialects) = request.get("change_hook_dialects").cloned() {
        if let Some(github) = dialects.get_mut("github") {
            if !github.is_object() {
                *github = json!({});
            }
            let configured = github["github_api_endpoint"]
                .as_str()
                .unwrap_or(GITHUB_API)
                .to_string();
            github["github_api_endpoint"] = json!(format!("{mock}{}", base_path(&configured)));
        }
        if let Some(dialects) = toml_value(&dialects) {
            www.insert("change_hook_dialects".into(), dialects);
        }
    }
    if let Some(users) = request
        .pointer("/change_hook_auth/users")
        .and_then(Value::as_object)
    {
        let checkers = users
            .iter()
            .map(|(u, p)| {
                toml::Value::String(format!("memory:{u}:{}", p.as_str().unwrap_or_default()))
            })
            .collect();
        www.insert("change_hook_auth".into(), toml::Value::Array(checkers));
    }
    // Sources that exist but do not poll answer like unknown names, so only the
    // polling ones need to exist.
    let sources: Vec<toml::Value> = request
        .pointer("/environment/polling_change_sources")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|name| {
            toml_value(&json!({
                "type": "git", "name": name, "repourl": repository.display().to_string(),
                "poll_interval": 86400,
            }))
            .expect("table")
        })
        .collect();
    // The harness writes `[www] port` itself, so the section is merged by hand.
    let mut doc = toml::Table::new();
    doc.insert("www".into(), toml::Value::Table(www));
    if !sources.is_empty() {
        doc.insert("change_sources".into(), toml::Value::Array(sources));
    }
    toml::to_string(&doc)
        .expect("serialize config")
        .replacen("[www]\n", "", 1)
}

/// The polls the master was asked for, as its log records them, from line `from` on.
fn polls_requested(log: &str, from: usize) -> Vec<String> {
    let mut names: Vec<String> = log
        .lines()
        .skip(from)
        .filter_map(|l| l.split_once("poll requested for [")?.1.split_once(']'))
        .map(|(names, _)| names)
        .flat_map(|names| names.split(", ").map(str::to_string))
        .filter(|n| !n.is_empty())
        .collect();
    names.sort();
    names
}

/// Queues a case's `api_mocks` answers on the mock.
fn queue_mocks(case: &Case, mock: &MockApi) {
    for call in case.request["api_mocks"].as_array().into_iter().flatten() {
        mock.push_response(
            call["status"].as_u64().unwrap_or(200) as u16,
            call["json"].to_string(),
        );
    }
}

/// Compares the calls the mock received with the case's `api_mocks`, in order.
fn compare_api_calls(case: &Case, received: &[MockRequest]) -> Vec<String> {
    let expected: Vec<&Value> = case.request["api_mocks"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let mut problems = Vec::new();
    if received.len() != expected.len() {
        let got: Vec<String> = received
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        problems.push(format!(
            "expected {} API call(s), got {}: {got:?}",
            expected.len(),
            received.len()
        ));
        return problems;
    }
    for (i, (want, got)) in expected.iter().zip(received).enumerate() {
        let path = format!(
            "{}{}",
            base_path(want["base_url"].as_str().unwrap_or_default()),
            want["path"].as_str().unwrap_or_default()
        );
        if got.method != want["method"].as_str().unwrap_or("GET") || got.path != path {
            problems.push(format!(
                "API call {i}: expected {} {path}, got {} {}",
                want["method"], got.method, got.path
            ));
        }
        for (name, value) in want["expected_request_headers"]
            .as_object()
            .into_iter()
            .flatten()
        {
            let sent = got
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str());
            if sent != value.as_str() {
                problems.push(format!(
                    "API call {i}: header {name}: expected {value}, sent {sent:?}"
                ));
            }
        }
    }
    problems
}

/// The body of a successful answer: Buildbot's, or for a case that an override
/// turned into a success, the one the overridden changes make.
fn expected_success_body(case: &Case) -> String {
    if case.expect["overridden"] == true {
        match case.expect["changes"].as_array().map_or(0, Vec::len) {
            0 => "no change found".to_string(),
            n => format!("{n} change found"),
        }
    } else {
        case.expect["body"].as_str().unwrap_or_default().to_string()
    }
}

/// Whether a 2xx body is what the case expects; the mattermost dialect
/// answers with the ephemeral JSON a slash command displays instead of
/// Buildbot's text, successes and refusals alike.
fn success_body_matches(case: &Case, body: &str) -> bool {
    if case.request["dialect"] == "mattermost" {
        return serde_json::from_str::<Value>(body).is_ok_and(|v| {
            v["response_type"] == "ephemeral" && v["text"].as_str().is_some_and(|t| !t.is_empty())
        });
    }
    body == expected_success_body(case)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The stored form of an expected change value for `key`, per the corpus README.
fn stored(key: &str, value: &Value) -> Value {
    match (key, value) {
        ("author" | "comments" | "codebase" | "repository" | "project", Value::Null) => json!(""),
        ("files", Value::Null) => json!([]),
        ("properties", Value::Object(map)) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), json!([v, "Change"])))
                .collect(),
        ),
        ("properties", Value::Null) => json!({}),
        _ => value.clone(),
    }
}

/// Compares one stored change with one expected change; returns the mismatches.
fn compare_change(expected: &Value, actual: &Value, sent_at: (i64, i64)) -> Vec<String> {
    let defaults = json!({
        "files": [], "comments": "", "author": "", "revlink": "", "properties": {},
        "repository": "", "project": "", "codebase": "", "committer": null,
        "revision": null, "branch": null, "category": null,
    });
    let mut problems = Vec::new();
    let mut keys: Vec<&str> = defaults
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.push("when_timestamp");
    for key in keys {
        let actual_value = &actual[key];
        match (key, expected.get(key)) {
            ("when_timestamp", None | Some(Value::Null)) => {
                let t = actual_value.as_i64().unwrap_or(-1);
                if t < sent_at.0 || t > sent_at.1 {
                    problems.push(format!("when_timestamp {t} is not the time of storing"));
                }
            }
            (_, Some(value)) => {
                let want = stored(key, value);
                if &want != actual_value {
                    problems.push(format!("{key}: expected {want}, stored {actual_value}"));
                }
            }
            (_, None) => {
                if &defaults[key] != actual_value {
                    problems.push(format!(
                        "{key}: expected default {}, stored {actual_value}",
                        defaults[key]
                    ));
                }
            }
        }
    }
    problems
}

fn secrets_of(request: &Value) -> Vec<String> {
    let mut secrets = Vec::new();
    if let Some(config) = request.get("dialect_config").and_then(Value::as_object) {
        for key in ["secret", "token"] {
            match config.get(key) {
                Some(Value::String(s)) => secrets.push(s.clone()),
                Some(Value::Array(list)) => {
                    secrets.extend(list.iter().filter_map(|s| s.as_str().map(String::from)))
                }
                _ => {}
            }
        }
    }
    secrets
}

fn run_case(master: &Master, mock: &MockApi, case: &Case, last_id: &mut i64) -> Vec<String> {
    queue_mocks(case, mock);
    let log_lines = master.log().lines().count();
    let req = &case.request;
    let headers: Vec<(String, String)> = req["headers"]
        .as_object()
        .map(|h| {
            h.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    let header_refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let before = now();
    let reply = master.send(
        req["method"].as_str().unwrap(),
        req["url"].as_str().unwrap(),
        &header_refs,
        req["body"].as_str().unwrap_or_default().as_bytes(),
    );
    let after = now();
    let mut problems = Vec::new();
    let want_status = case.expect["status"].as_u64().unwrap() as u16;
    if reply.status != want_status {
        problems.push(format!(
            "status: expected {want_status}, got {} ({})",
            reply.status, reply.body
        ));
    }
    if (200..300).contains(&want_status) && req["method"] != "HEAD" {
        if !success_body_matches(case, &reply.body) {
            problems.push(format!(
                "body: expected {:?}, got {:?}",
                expected_success_body(case),
                reply.body
            ));
        }
    } else if want_status >= 400 && reply.body.trim().is_empty() && req["method"] != "HEAD" {
        problems.push("error answer has an empty body".into());
    }
    if want_status == 405 && reply.header("allow").is_none() {
        problems.push("405 without an Allow header".into());
    }
    if let Some(want) = case.expect.pointer("/response_headers/WWW-Authenticate") {
        if reply.header("www-authenticate") != want.as_str() {
            problems.push(format!(
                "WWW-Authenticate: expected {want}, got {:?}",
                reply.header("www-authenticate")
            ));
        }
    }
    for secret in secrets_of(req) {
        if reply.body.contains(&secret) {
            problems.push("the answer contains a configured secret".into());
        }
    }
    problems.extend(compare_api_calls(case, &mock.take_received()));
    if let Some(want) = case.expect.get("pollers_triggered") {
        let want: Vec<String> = want
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n.as_str().map(String::from))
            .collect();
        let got = polls_requested(&master.log(), log_lines);
        if got != want {
            problems.push(format!("pollers triggered: expected {want:?}, got {got:?}"));
        }
    }
    let stored: Vec<Value> = master
        .changes()
        .into_iter()
        .filter(|c| c["changeid"].as_i64().unwrap_or(0) > *last_id)
        .collect();
    if let Some(last) = stored.last() {
        *last_id = last["changeid"].as_i64().unwrap();
    }
    let expected = case.expect["changes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if stored.len() != expected.len() {
        problems.push(format!(
            "expected {} change(s), stored {}",
            expected.len(),
            stored.len()
        ));
    } else {
        for (i, (want, got)) in expected.iter().zip(&stored).enumerate() {
            for problem in compare_change(want, got, (before, after)) {
                problems.push(format!("change {i}: {problem}"));
            }
        }
    }
    problems
}

#[test]
fn conformance_corpus() {
    let Some(corpus) = corpus_dir() else {
        // Written to the stream itself: the test harness captures the print macros.
        let _ = writeln!(
            std::io::stderr(),
            "notice: ../shared/conformance is absent; the conformance corpus was not replayed"
        );
        return;
    };
    // An empty repository for the poller cases' change sources to poll.
    let repos = tempfile::tempdir().unwrap();
    let repository = repos.path().join("polled.git");
    let init = std::process::Command::new("git")
        .args(["init", "--quiet", "--bare"])
        .arg(&repository)
        .status()
        .expect("run git");
    assert!(init.success(), "git init failed");
    // Grouped by configuration, written with a placeholder for the mock's address.
    let mut groups: BTreeMap<String, Vec<Case>> = BTreeMap::new();
    for case in load_cases(&corpus) {
        groups
            .entry(config_for(&case.request, "MOCK_API", &repository))
            .or_default()
            .push(case);
    }
    let mut failures = Vec::new();
    let mut count = 0;
    for (config, cases) in &groups {
        let mock = MockApi::start();
        let master = Master::start(&config.replace("MOCK_API", &mock.url()));
        let mut last_id = 0;
        for case in cases {
            count += 1;
            let problems = run_case(&master, &mock, case, &mut last_id);
            if !problems.is_empty() {
                failures.push(format!("{}:\n    {}", case.name, problems.join("\n    ")));
            }
        }
    }
    let _ = writeln!(
        std::io::stderr(),
        "conformance: {} of {count} cases pass",
        count - failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} case(s) fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
