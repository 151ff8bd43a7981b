//! The dialect as the master runs it: requests in, changes or errors out.

use buildmaster_plugin_api::signature::{hmac_hex, Algorithm};
use buildmaster_plugin_api::testing::{form_body, request, run_dialect, TestHost};
use buildmaster_plugin_api::{
    Change, ErrorClass, HookError, HookOutcome, HttpRequest, HttpResponse, LogLevel, Request,
};
use serde_json::{json, Value};

use crate::GitHub;

const TOKEN: &str = "ghp-test-token-0001";

fn run(config: Value, request: &Request) -> Result<Vec<Change>, HookError> {
    run_on(config, request, &TestHost::default())
}

fn run_on(config: Value, request: &Request, host: &TestHost) -> Result<Vec<Change>, HookError> {
    run_dialect::<GitHub>(&config, request, host).map(|outcome: HookOutcome| outcome.changes)
}

fn refused(config: Value, request: &Request) -> HookError {
    let error = run(config, request).unwrap_err();
    assert_eq!(error.class, ErrorClass::BadRequest, "{}", error.message);
    error
}

fn hook(event: &str, content_type: &str, body: &str, extra: &[(&str, &str)]) -> Request {
    let mut headers = vec![("X-GitHub-Event", event), ("Content-Type", content_type)];
    headers.extend_from_slice(extra);
    request("POST", "/change_hook/github", &headers, body)
}

fn json_hook(event: &str, payload: &Value) -> Request {
    hook(event, "application/json", &payload.to_string(), &[])
}

fn form_hook(event: &str, payload: &Value) -> Request {
    let body = form_body(&[("payload", &payload.to_string())]);
    hook(event, "application/x-www-form-urlencoded", &body, &[])
}

fn set(payload: &mut Value, pointer: &str, value: Value) {
    *payload.pointer_mut(pointer).unwrap() = value;
}

mod pull_request;
mod push;
mod requests;
