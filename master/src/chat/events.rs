//! Which finished builds each notification event announces (Buildbot's
//! chat `notify_events`; the names are in [`crate::config::telegram`]).

use std::collections::BTreeSet;

use crate::config::telegram::transition;
pub use crate::config::telegram::{is_event, EVENTS};
use crate::results::Results;

/// Where a result stands from best to worst (skipped, success, warnings,
/// failure, cancelled, exception); retry stands nowhere.
fn rank(results: Results) -> Option<u8> {
    Some(match results {
        Results::Skipped => 0,
        Results::Success => 1,
        Results::Warnings => 2,
        Results::Failure => 3,
        Results::Cancelled => 4,
        Results::Exception => 5,
        Results::Retry => return None,
    })
}

/// Whether a chat with `events` hears of a build that finished with
/// `results`, after the builder's previous build ended with `previous`.
pub fn announces_finished(
    events: &BTreeSet<String>,
    results: Results,
    previous: Option<Results>,
) -> bool {
    if events.contains("finished") || events.contains(results.name()) {
        return true;
    }
    let (Some(now), Some(previous)) = (rank(results), previous) else {
        return false;
    };
    let Some(before) = rank(previous) else {
        return false;
    };
    let passing = |r: Results| matches!(r, Results::Success | Results::Warnings);
    let failing = |r: Results| matches!(r, Results::Failure | Results::Exception);
    events.iter().any(|event| match event.as_str() {
        "better" => now < before,
        "worse" => now > before,
        "problem" => passing(previous) && failing(results),
        "recovery" => failing(previous) && passing(results),
        other => transition(other) == Some((previous, results)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use Results::*;

    fn set(events: &[&str]) -> BTreeSet<String> {
        events.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn names_and_transitions_are_events() {
        assert!(
            is_event("worker") && is_event("failureToSuccess") && is_event("successToWarnings")
        );
        assert!(!is_event("bogus") && !is_event("failureTo") && !is_event("skippedToSuccess"));
    }

    #[test]
    fn transitions_notify_exactly_as_upstream_observed() {
        let fires = |event: &str, previous: Results, now: Results| {
            announces_finished(&set(&[event]), now, Some(previous))
        };
        assert!(fires("problem", Success, Failure) && fires("problem", Warnings, Failure));
        assert!(!fires("problem", Failure, Exception));
        assert!(fires("recovery", Failure, Success));
        for (before, after) in [
            (Success, Failure),
            (Success, Warnings),
            (Warnings, Failure),
            (Failure, Exception),
            (Failure, Cancelled),
            (Success, Cancelled),
        ] {
            assert!(fires("worse", before, after), "{before:?} -> {after:?}");
        }
        for (before, after) in [
            (Failure, Success),
            (Warnings, Success),
            (Exception, Failure),
            (Cancelled, Failure),
            (Cancelled, Success),
        ] {
            assert!(fires("better", before, after), "{before:?} -> {after:?}");
        }
        assert!(fires("cancelled", Success, Cancelled));
        assert!(fires("failureToSuccess", Failure, Success));
        assert!(!fires("worse", Retry, Failure) && !fires("worse", Success, Retry));
        assert!(
            !announces_finished(&set(&["worse"]), Failure, None),
            "first build"
        );
        assert!(announces_finished(&set(&["finished"]), Retry, None));
    }
}
