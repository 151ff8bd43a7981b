use buildmaster_plugin_api::testing::{form_post, request, run_dialect, TestHost};
use buildmaster_plugin_api::ErrorClass;
use serde_json::{json, Value};

use super::*;

const SOURCES: &[&str] = &["docs-git", "app-hg", "app-svn"];

/// Runs a `GET` with `query` against a master with [`SOURCES`]; returns the
/// outcome and the sources polled.
fn get(config: Value, query: &str) -> (Result<HookOutcome, HookError>, Vec<String>) {
    run(
        config,
        &request("GET", &format!("/change_hook/poller{query}"), &[], ""),
    )
}

fn run(config: Value, request: &Request) -> (Result<HookOutcome, HookError>, Vec<String>) {
    let host = TestHost::with_polling_sources(SOURCES);
    let outcome = run_dialect::<Poller>(&config, request, &host);
    (outcome, host.polled())
}

/// Asserts a 400 with `message` and that nothing polled.
fn assert_refused((outcome, polled): (Result<HookOutcome, HookError>, Vec<String>), message: &str) {
    let err = outcome.unwrap_err();
    assert_eq!(err.class, ErrorClass::BadRequest);
    assert_eq!(err.message, message);
    assert!(polled.is_empty(), "{polled:?}");
}

#[test]
fn without_a_poller_argument_every_source_polls_and_no_change_is_made() {
    for config in [json!({}), json!(true)] {
        let (outcome, polled) = get(config, "");
        assert_eq!(outcome.unwrap(), HookOutcome::default());
        assert_eq!(polled, SOURCES);
    }
}

#[test]
fn named_pollers_poll_once_each() {
    let (outcome, polled) = get(json!({}), "?poller=app-hg");
    assert!(outcome.unwrap().changes.is_empty());
    assert_eq!(polled, ["app-hg"]);
    let (_, polled) = get(json!({}), "?poller=app-svn&poller=docs-git&poller=app-svn");
    assert_eq!(polled, ["docs-git", "app-svn"]);
}

#[test]
fn pollers_may_be_named_in_a_form_whose_fields_replace_the_query() {
    let body = "poller=app-svn&poller=app-hg";
    let (_, polled) = run(json!({}), &form_post("/change_hook/poller", body));
    assert_eq!(polled, ["app-hg", "app-svn"]);
    let (_, polled) = run(
        json!({}),
        &form_post("/change_hook/poller?poller=nope", body),
    );
    assert_eq!(polled, ["app-hg", "app-svn"]);
}

#[test]
fn an_unknown_name_polls_nothing() {
    assert_refused(
        get(json!({}), "?poller=gone"),
        "Could not find pollers: gone",
    );
    assert_refused(
        get(
            json!({}),
            "?poller=docs-git&poller=gone&poller=old&poller=gone",
        ),
        "Could not find pollers: gone,old",
    );
    assert_refused(get(json!({}), "?poller="), "Could not find pollers: ");
    // Names are matched exactly.
    assert_refused(
        get(json!({}), "?poller=Docs-git"),
        "Could not find pollers: Docs-git",
    );
}

#[test]
fn a_source_that_does_not_poll_is_not_found() {
    let host = TestHost::with_polling_sources(&["docs-git"]);
    let err = run_dialect::<Poller>(
        &json!({}),
        &request("GET", "/change_hook/poller?poller=plain-source", &[], ""),
        &host,
    )
    .unwrap_err();
    assert_eq!(err.message, "Could not find pollers: plain-source");
    assert!(host.polled().is_empty());
}

#[test]
fn allowed_restricts_which_sources_may_poll() {
    let config = json!({"allowed": ["app-svn", "retired"]});
    let (outcome, polled) = get(config.clone(), "");
    assert!(outcome.is_ok());
    assert_eq!(polled, ["app-svn"]);
    let (outcome, polled) = get(config.clone(), "?poller=app-svn");
    assert!(outcome.is_ok());
    assert_eq!(polled, ["app-svn"]);
    assert_refused(
        get(config.clone(), "?poller=app-hg"),
        "Could not find pollers: app-hg",
    );
    // Allowed but not a polling source of the master.
    assert_refused(
        get(config, "?poller=retired"),
        "Could not find pollers: retired",
    );
}

#[test]
fn an_empty_allow_list_allows_nothing() {
    let (outcome, polled) = get(json!({"allowed": []}), "");
    assert!(outcome.is_ok());
    assert!(polled.is_empty());
    assert_refused(
        get(json!({"allowed": []}), "?poller=docs-git"),
        "Could not find pollers: docs-git",
    );
}

#[test]
fn a_master_without_pollers_answers_no_change() {
    let host = TestHost::default();
    let outcome = run_dialect::<Poller>(
        &json!({}),
        &request("GET", "/change_hook/poller", &[], ""),
        &host,
    );
    assert_eq!(outcome.unwrap(), HookOutcome::default());
    assert!(host.polled().is_empty());
}

#[test]
fn options_of_the_wrong_shape_are_refused() {
    for (config, message) in [
        (
            json!({"allowed": "docs-git"}),
            "option 'allowed' must be a list of change source names",
        ),
        (
            json!({"allowed": ["docs-git", 3]}),
            "option 'allowed' must be a list of change source names",
        ),
        (
            json!({"allow": ["docs-git"]}),
            "unknown option 'allow' (known: allowed)",
        ),
        (json!(["docs-git"]), "the poller options must be a table"),
    ] {
        let (outcome, polled) = get(config.clone(), "");
        let err = outcome.unwrap_err();
        assert_eq!(err.class, ErrorClass::Internal, "{config}");
        assert_eq!(err.message, message);
        assert!(polled.is_empty());
    }
}
