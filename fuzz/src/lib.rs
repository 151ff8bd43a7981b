//! Mutation fuzzing of the built-in dialects.
//!
//! Each target is a dialect with a configuration and a few realistic seed
//! requests. Every execution takes a seed, applies a handful of random mutations
//! (to the body's bytes, to its JSON or form structure, to the headers and the
//! query), re-signs the body where the configuration has a secret so the dialect
//! gets past its signature check, and calls the dialect through the real plugin
//! boundary ([`testing::run_dialect`]). A panic comes back from the boundary as
//! an internal error whose message starts with `plugin panicked`: that is a
//! finding. So is an accepted change the master could not store (a property
//! with an empty name): the sender would get a 500 where a 400 was due.
//! Internal errors of other kinds are counted too (a malformed payload should
//! be a 400), but they are not crashes.
//!
//! The generator is deterministic for a given seed, so a finding can be replayed.
//!
//! Each dialect is fuzzed by its own binary (`src/bin/<dialect>.rs`) and smoke
//! test (`tests/<dialect>.rs`): every plugin library exports the same root-module
//! symbol, so two plugin crates cannot be linked into one executable.

mod mutate;
mod targets;

use std::time::{Duration, Instant};

use buildmaster_plugin_api::testing::{self, TestHost};
use buildmaster_plugin_api::{Change, Dialect, ErrorClass, Request};

pub use mutate::Rng;
pub use targets::{target, Target};

/// What one fuzzing run found.
#[derive(Debug, Default)]
pub struct Report {
    pub executions: u64,
    /// Requests answered with success.
    pub accepted: u64,
    /// Requests refused with 4xx.
    pub refused: u64,
    /// Internal errors that were not panics.
    pub internal: u64,
    /// The panics and unstorable changes, with the request that caused each.
    pub findings: Vec<(String, Request)>,
}

/// How long a run lasts.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    Executions(u64),
    Time(Duration),
}

/// Runs dialect `D` on mutations of `seeds` until the budget is spent.
pub fn fuzz<D: Dialect>(target: &Target, budget: Budget, seed: u64) -> Report {
    let mut rng = Rng::new(seed);
    let mut report = Report::default();
    let started = Instant::now();
    let done = |report: &Report| match budget {
        Budget::Executions(n) => report.executions >= n,
        Budget::Time(limit) => started.elapsed() >= limit,
    };
    while !done(&report) {
        let seed_request = &target.seeds[rng.below(target.seeds.len())];
        let mut request = seed_request.clone();
        for _ in 0..=rng.below(4) {
            mutate::request(&mut rng, &mut request, target.events);
        }
        if let Some(sign) = target.sign {
            sign(&mut request);
        }
        let host = TestHost::with_polling_sources(&["example", "other"]);
        report.executions += 1;
        match testing::run_dialect::<D>(&target.config, &request, &host) {
            // A dialect may refuse with its own response: an error status, or
            // (mattermost's JSON, which must be 200 to be shown) a reply and
            // no change.
            Ok(outcome)
                if outcome
                    .response
                    .as_ref()
                    .is_some_and(|r| r.status >= 400 || outcome.changes.is_empty()) =>
            {
                report.refused += 1
            }
            Ok(outcome) => match unstorable(&outcome.changes) {
                Some(why) => report.findings.push((why, request)),
                None => report.accepted += 1,
            },
            Err(e) if e.class != ErrorClass::Internal => report.refused += 1,
            Err(e) if e.message.starts_with("plugin panicked") => {
                report.findings.push((e.message, request))
            }
            Err(_) => report.internal += 1,
        }
    }
    report
}

/// Why the master's store would refuse one of `changes`, if it would.
fn unstorable(changes: &[Change]) -> Option<String> {
    changes
        .iter()
        .any(|change| change.properties.contains_key(""))
        .then(|| "accepted a change with a property named ''".to_string())
}

/// `buildmaster-fuzz-<dialect> [SECONDS]`: fuzzes dialect `D` (target `name`)
/// for SECONDS (default 60), prints one Markdown table row, and fails on a panic,
/// printing the first input that caused one.
pub fn main<D: Dialect>(name: &str) -> std::process::ExitCode {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(60);
    let target = target(name).expect("a known target");
    // Panics are the findings: keep the plugin's panic messages off the terminal.
    std::panic::set_hook(Box::new(|_| {}));
    let started = Instant::now();
    let report = fuzz::<D>(&target, Budget::Time(Duration::from_secs(seconds)), 0x5eed);
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "| {name} | {elapsed:.0} | {} | {:.0} | {} | {} | {} | {} |",
        report.executions,
        report.executions as f64 / elapsed,
        report.accepted,
        report.refused,
        report.internal,
        report.findings.len()
    );
    match report.findings.first() {
        Some((message, request)) => {
            eprintln!("{name}: {message}\n  request: {request:?}");
            std::process::ExitCode::FAILURE
        }
        None => std::process::ExitCode::SUCCESS,
    }
}

/// The smoke test of dialect `D`: a short deterministic run that must not panic.
pub fn smoke<D: Dialect>(name: &str) {
    std::panic::set_hook(Box::new(|_| {}));
    let target = target(name).expect("a known target");
    let report = fuzz::<D>(&target, Budget::Executions(1500), 42);
    let _ = std::panic::take_hook();
    assert_eq!(report.executions, 1500);
    assert!(
        report.accepted + report.refused > 0,
        "{name}: every request failed"
    );
    let findings: Vec<String> = report
        .findings
        .iter()
        .take(3)
        .map(|(message, request)| format!("{message}\n  {request:?}"))
        .collect();
    assert!(
        findings.is_empty(),
        "{name} panicked:\n{}",
        findings.join("\n")
    );
}
