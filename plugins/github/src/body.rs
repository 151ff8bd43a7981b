//! The webhook's body: the JSON payload, sent as JSON or in a form field.

use buildmaster_plugin_api::{payload, HookError, Request};
use serde_json::Value;

/// The payload of `request`: the JSON body, or the JSON in the `payload` field
/// of a form-encoded one. Media-type parameters (`; charset=utf-8`) are accepted.
pub fn decode(request: &Request) -> Result<Value, HookError> {
    match request.media_type().as_deref() {
        Some("application/json") => serde_json::from_slice(&request.body).map_err(|e| {
            HookError::bad_request(format!("the payload is not valid JSON: {e}"))
        }),
        Some("application/x-www-form-urlencoded") => payload::from_form(&request.args()),
        other => Err(HookError::bad_request(format!(
            "Unknown content type: {} (expected application/json or application/x-www-form-urlencoded)",
            other.unwrap_or("none")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use buildmaster_plugin_api::testing::{form_post, request};
    use serde_json::json;

    fn with_type(content_type: &str, body: &str) -> Request {
        request(
            "POST",
            "/change_hook/github",
            &[("Content-Type", content_type)],
            body,
        )
    }

    #[test]
    fn json_body_with_or_without_parameters() {
        for content_type in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
        ] {
            let value = decode(&with_type(content_type, r#"{"a": 1}"#)).unwrap();
            assert_eq!(value, json!({"a": 1}), "{content_type}");
        }
    }

    #[test]
    fn form_body_carries_the_payload_field() {
        let value = decode(&form_post(
            "/change_hook/github",
            "payload=%7B%22a%22%3A2%7D",
        ))
        .unwrap();
        assert_eq!(value, json!({"a": 2}));
        let err = decode(&form_post("/change_hook/github", "other=1")).unwrap_err();
        assert_eq!(err.message, "missing form field 'payload'");
    }

    #[test]
    fn other_content_types_and_bad_json_are_refused() {
        let err = decode(&with_type("application/x-useful", "{}")).unwrap_err();
        assert!(err
            .message
            .starts_with("Unknown content type: application/x-useful"));
        let err = decode(&request("POST", "/change_hook/github", &[], "{}")).unwrap_err();
        assert!(err.message.starts_with("Unknown content type: none"));
        for body in ["", "{", "nope"] {
            let err = decode(&with_type("application/json", body)).unwrap_err();
            assert!(
                err.message.starts_with("the payload is not valid JSON"),
                "{body}"
            );
        }
    }
}
