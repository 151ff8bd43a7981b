use buildmaster_plugin_api::testing::{form_post, request, DialectHarness, TestHost};
use buildmaster_plugin_api::ErrorClass;
use serde_json::{json, Value};

use super::*;

const SOURCES: &[&str] = &["docs-git", "app-hg", "app-svn"];

/// The dialect with `options`, on a master with the polling sources [`SOURCES`].
fn with_sources(options: Value) -> DialectHarness<Poller> {
    DialectHarness::new(options).with_host(TestHost::with_polling_sources(SOURCES))
}

/// A `GET` of the hook with `query` (`""` or `"?…"`).
fn get(query: &str) -> Request {
    request("GET", &format!("/change_hook/poller{query}"), &[], "")
}

#[test]
fn without_a_poller_argument_every_source_polls_and_no_change_is_made() {
    let poller = with_sources(json!({}));
    assert_eq!(poller.handle(&get("")).unwrap(), HookOutcome::default());
    assert_eq!(poller.host().polled(), SOURCES);
}

#[test]
fn named_pollers_poll_once_each() {
    let one = with_sources(json!({}));
    assert!(one.changes(&get("?poller=app-hg")).is_empty());
    assert_eq!(one.host().polled(), ["app-hg"]);
    let several = with_sources(json!({}));
    several.changes(&get("?poller=app-svn&poller=docs-git&poller=app-svn"));
    assert_eq!(several.host().polled(), ["docs-git", "app-svn"]);
}

#[test]
fn pollers_may_be_named_in_a_form_whose_fields_replace_the_query() {
    let body = "poller=app-svn&poller=app-hg";
    let form = with_sources(json!({}));
    form.changes(&form_post("/change_hook/poller", body));
    assert_eq!(form.host().polled(), ["app-hg", "app-svn"]);
    let both = with_sources(json!({}));
    both.changes(&form_post("/change_hook/poller?poller=nope", body));
    assert_eq!(both.host().polled(), ["app-hg", "app-svn"]);
}

#[test]
fn an_unknown_name_polls_nothing() {
    let poller = with_sources(json!({}));
    for (query, message) in [
        ("?poller=gone", "Could not find pollers: gone"),
        (
            "?poller=docs-git&poller=gone&poller=old&poller=gone",
            "Could not find pollers: gone,old",
        ),
        ("?poller=", "Could not find pollers: "),
        // Names are matched exactly.
        ("?poller=Docs-git", "Could not find pollers: Docs-git"),
    ] {
        assert_eq!(poller.refusal(&get(query), ErrorClass::BadRequest), message);
        assert!(poller.host().polled().is_empty(), "{query}");
    }
}

#[test]
fn a_source_that_does_not_poll_is_not_found() {
    let poller = DialectHarness::<Poller>::new(json!({}))
        .with_host(TestHost::with_polling_sources(&["docs-git"]));
    let message = poller.refusal(&get("?poller=plain-source"), ErrorClass::BadRequest);
    assert_eq!(message, "Could not find pollers: plain-source");
    assert!(poller.host().polled().is_empty());
}

#[test]
fn allowed_restricts_which_sources_may_poll() {
    let options = json!({"allowed": ["app-svn", "retired"]});
    for query in ["", "?poller=app-svn"] {
        let poller = with_sources(options.clone());
        assert!(poller.handle(&get(query)).is_ok(), "{query}");
        assert_eq!(poller.host().polled(), ["app-svn"], "{query}");
    }
    let poller = with_sources(options);
    for (query, message) in [
        ("?poller=app-hg", "Could not find pollers: app-hg"),
        // Allowed but not a polling source of the master.
        ("?poller=retired", "Could not find pollers: retired"),
    ] {
        assert_eq!(poller.refusal(&get(query), ErrorClass::BadRequest), message);
        assert!(poller.host().polled().is_empty(), "{query}");
    }
}

#[test]
fn an_empty_allow_list_allows_nothing() {
    let poller = with_sources(json!({"allowed": []}));
    assert!(poller.handle(&get("")).is_ok());
    assert!(poller.host().polled().is_empty());
    let message = poller.refusal(&get("?poller=docs-git"), ErrorClass::BadRequest);
    assert_eq!(message, "Could not find pollers: docs-git");
    assert!(poller.host().polled().is_empty());
}

#[test]
fn a_master_without_pollers_answers_no_change() {
    let poller = DialectHarness::<Poller>::new(json!({}));
    assert_eq!(poller.handle(&get("")).unwrap(), HookOutcome::default());
    assert!(poller.host().polled().is_empty());
}

#[test]
fn options_of_the_wrong_shape_are_refused() {
    for (options, message) in [
        (
            json!({"allowed": "docs-git"}),
            "options.allowed: expected a list, found a string",
        ),
        (
            json!({"allowed": ["docs-git", 3]}),
            "options.allowed[1]: expected a string, found an integer",
        ),
    ] {
        let error = DialectHarness::<Poller>::try_new(options.clone()).err();
        assert_eq!(error.as_deref(), Some(message), "{options}");
    }
}

#[test]
fn unknown_options_are_refused() {
    let error = DialectHarness::<Poller>::try_new(json!({"allow": ["docs-git"]})).err();
    assert_eq!(
        error.as_deref(),
        Some("options.allow: unknown option (known: allowed)")
    );
}
