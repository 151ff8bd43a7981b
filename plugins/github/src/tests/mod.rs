//! The dialect as the master runs it: requests in, changes or errors out,
//! through the SDK's [`DialectHarness`].

use buildmaster_plugin_api::signature::{hmac_hex, Algorithm};
use buildmaster_plugin_api::testing::{form_body, json_post, request, DialectHarness, TestHost};
use buildmaster_plugin_api::{ErrorClass, HttpRequest, HttpResponse, LogLevel, Request};
use serde_json::{json, Value};

use crate::GitHub;

const TOKEN: &str = "ghp-test-token-0001";

fn hook(event: &str, content_type: &str, body: &str, extra: &[(&str, &str)]) -> Request {
    let mut headers = vec![("X-GitHub-Event", event), ("Content-Type", content_type)];
    headers.extend_from_slice(extra);
    request("POST", "/change_hook/github", &headers, body)
}

fn json_hook(event: &str, payload: &Value) -> Request {
    json_post("/change_hook/github", &[("X-GitHub-Event", event)], payload)
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
