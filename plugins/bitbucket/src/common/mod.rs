//! What the `bitbucketcloud` and `bitbucketserver` dialects share: their options,
//! the checks every request goes through (signature, content type, JSON body,
//! event header), the reading of `push.changes` and of the pull-request events.

use buildmaster_plugin_api::options::Secrets;
use buildmaster_plugin_api::payload::Field;
use buildmaster_plugin_api::properties::PropertyWhitelist;
use buildmaster_plugin_api::signature::{verify_any, Algorithm};
use buildmaster_plugin_api::{HookError, Request};
use serde::Deserialize;
use serde_json::Value;

/// The dialect options, all optional.
#[derive(Debug, Default, Deserialize)]
pub struct Options {
    /// Set on every change when configured.
    #[serde(default)]
    pub codebase: Option<String>,
    /// Globs selecting the `bitbucket.*` pull-request properties.
    #[serde(default, rename = "bitbucket_property_whitelist")]
    pub property_whitelist: PropertyWhitelist,
    /// When set, requests must carry `X-Hub-Signature: sha256=<HMAC of the
    /// body>` made with one of these.
    #[serde(default)]
    secret: Option<Secrets>,
}

/// How a product words two request errors (as Buildbot words them).
pub struct Wording {
    /// The answer when `X-Event-Key` is absent.
    pub missing_event: &'static str,
    /// Whether an unknown content type is shown in quotes.
    pub quote_content_type: bool,
}

/// A checked request: its `X-Event-Key` and its JSON object body.
#[derive(Debug)]
pub struct Event {
    pub key: String,
    pub payload: Value,
}

/// Checks the signature (when a secret is configured), the content type and the
/// body, then reads the event header, in that order.
pub fn read_event(
    request: &Request,
    options: &Options,
    wording: &Wording,
) -> Result<Event, HookError> {
    if let Some(secrets) = &options.secret {
        verify_signature(request, secrets)?;
    }
    let content_type = request.header("Content-Type").ok_or_else(|| {
        HookError::bad_request("missing Content-Type header (expected application/json)")
    })?;
    // Media-type parameters such as `charset=utf-8` are fine.
    if request.media_type().as_deref() != Some("application/json") {
        return Err(HookError::bad_request(if wording.quote_content_type {
            format!("Unknown content type: '{content_type}'")
        } else {
            format!("Unknown content type: {content_type}")
        }));
    }
    let payload: Value = serde_json::from_slice(&request.body)
        .map_err(|e| HookError::bad_request(format!("invalid JSON body: {e}")))?;
    if !payload.is_object() {
        return Err(HookError::bad_request("the JSON body is not an object"));
    }
    let key = request
        .header("X-Event-Key")
        .ok_or_else(|| HookError::bad_request(wording.missing_event))?;
    Ok(Event {
        key: key.to_string(),
        payload,
    })
}

/// Both products send `X-Hub-Signature: sha256=<hex HMAC-SHA256 of the body>`
/// once a secret is set on the webhook.
fn verify_signature(request: &Request, secrets: &Secrets) -> Result<(), HookError> {
    let header = request.header("X-Hub-Signature").ok_or_else(|| {
        HookError::unauthorized(
            "missing X-Hub-Signature header: this hook requires signed requests",
        )
    })?;
    let signature = header.trim().strip_prefix("sha256=").ok_or_else(|| {
        HookError::unauthorized("X-Hub-Signature must be 'sha256=' and the hex HMAC of the body")
    })?;
    if verify_any(Algorithm::Sha256, secrets, &request.body, signature) {
        Ok(())
    } else {
        Err(HookError::unauthorized(
            "X-Hub-Signature does not match the request body",
        ))
    }
}

/// The answer to an event the dialect does not handle.
pub fn unknown_event(key: &str) -> HookError {
    HookError::bad_request(format!("Unknown event: {}", key.replace(':', "_")))
}

/// One entry of `push.changes`.
#[derive(Debug)]
pub struct PushedRef {
    pub revision: String,
    /// `refs/heads/<name>` or `refs/tags/<name>`; `None` for other kinds of ref.
    pub branch: Option<String>,
    /// `push`, or `ref-deleted` when the ref is gone (`new` is null).
    pub category: &'static str,
}

/// Reads `push.changes`: a deleted ref is described by its `old` state.
pub fn pushed_refs(payload: &Field) -> Result<Vec<PushedRef>, HookError> {
    payload
        .list("push.changes")?
        .iter()
        .map(|change| {
            let (state, category) = match change.opt("new")? {
                Some(new) => (new, "push"),
                None => (change.get("old")?, "ref-deleted"),
            };
            let branch = match state.text("type")? {
                "branch" => Some(format!("refs/heads/{}", state.text("name")?)),
                "tag" => Some(format!("refs/tags/{}", state.text("name")?)),
                _ => None,
            };
            Ok(PushedRef {
                revision: state.text("target.hash")?.to_string(),
                branch,
                category,
            })
        })
        .collect()
}

/// The `id` of a pull request: a JSON integer, or a string of digits as the
/// Server plug-in sends it.
pub fn pull_request_id(pull_request: &Field) -> Result<i64, HookError> {
    let id = pull_request.get("id")?;
    match id.value() {
        Value::String(digits) => digits.trim().parse().map_err(|_| id.invalid("an integer")),
        _ => id.as_i64(),
    }
}

/// The pull-request events both products handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullRequestAction {
    Created,
    Updated,
    Fulfilled,
    Rejected,
}

impl PullRequestAction {
    pub fn from_event(key: &str) -> Option<PullRequestAction> {
        match key {
            "pullrequest:created" => Some(PullRequestAction::Created),
            "pullrequest:updated" => Some(PullRequestAction::Updated),
            "pullrequest:fulfilled" => Some(PullRequestAction::Fulfilled),
            "pullrequest:rejected" => Some(PullRequestAction::Rejected),
            _ => None,
        }
    }

    pub fn category(self) -> &'static str {
        match self {
            PullRequestAction::Created => "pull-created",
            PullRequestAction::Updated => "pull-updated",
            PullRequestAction::Fulfilled => "pull-fulfilled",
            PullRequestAction::Rejected => "pull-rejected",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use buildmaster_plugin_api::signature::hmac_hex;
    use buildmaster_plugin_api::testing::request;
    use buildmaster_plugin_api::ErrorClass;
    use serde_json::json;

    const WORDING: Wording = Wording {
        missing_event: "no event",
        quote_content_type: true,
    };

    fn options(config: Value) -> Options {
        buildmaster_plugin_api::options::parse(&config).unwrap()
    }

    #[test]
    fn options_are_typed_and_known() {
        let parsed = options(json!({
            "codebase": "cb",
            "bitbucket_property_whitelist": ["bitbucket.*"],
            "secret": "s"
        }));
        assert_eq!(parsed.codebase.as_deref(), Some("cb"));
        assert_eq!(
            parsed.property_whitelist,
            PropertyWhitelist::new(&["bitbucket.*"])
        );
        assert_eq!(parsed.secret.map(|s| s.len()), Some(1));
        let parsed = options(json!({}));
        assert!(parsed.codebase.is_none() && parsed.secret.is_none());
        for (config, message) in [
            (
                json!({"codebase": 1}),
                "options.codebase: expected a string, found an integer",
            ),
            (
                json!({"bitbucket_property_whitelist": "bitbucket.*"}),
                "options.bitbucket_property_whitelist: expected a list, found a string",
            ),
            (
                json!({"bitbucket_property_whitelist": [1]}),
                "options.bitbucket_property_whitelist[0]: expected a string, found an integer",
            ),
            (json!({"secret": ""}), "options.secret: must not be empty"),
            (
                json!({"secrets": "x"}),
                "options.secrets: unknown option (known: codebase, bitbucket_property_whitelist, secret)",
            ),
        ] {
            let error = buildmaster_plugin_api::options::parse::<Options>(&config).err();
            assert_eq!(error.as_deref(), Some(message));
        }
    }

    fn json_post(headers: &[(&str, &str)], body: &str) -> Request {
        request("POST", "/change_hook/x", headers, body)
    }

    #[test]
    fn request_checks_come_in_order() {
        let none = Options::default();
        let ok = json_post(
            &[
                ("Content-Type", "application/json; charset=UTF-8"),
                ("X-Event-Key", "a:b"),
            ],
            "{}",
        );
        let event = read_event(&ok, &none, &WORDING).unwrap();
        assert_eq!((event.key.as_str(), event.payload), ("a:b", json!({})));

        for (headers, body, message) in [
            (
                vec![("X-Event-Key", "a")],
                "{}",
                "missing Content-Type header",
            ),
            (
                vec![("Content-Type", "text/plain"), ("X-Event-Key", "a")],
                "{}",
                "Unknown content type: 'text/plain'",
            ),
            (
                vec![("Content-Type", "application/json")],
                "{",
                "invalid JSON body: ",
            ),
            (
                vec![("Content-Type", "application/json")],
                "[1]",
                "the JSON body is not an object",
            ),
            (vec![("Content-Type", "application/json")], "{}", "no event"),
        ] {
            let err = read_event(&json_post(&headers, body), &none, &WORDING).unwrap_err();
            assert_eq!(err.class, ErrorClass::BadRequest);
            assert!(err.message.starts_with(message), "{}", err.message);
        }
    }

    #[test]
    fn a_configured_secret_requires_a_matching_signature() {
        let secret = options(json!({"secret": "hunter2"}));
        let body = r#"{"k": 1}"#;
        let good = format!(
            "sha256={}",
            hmac_hex(Algorithm::Sha256, b"hunter2", body.as_bytes())
        );
        let with = |signature: Option<&str>, body: &str| {
            let mut headers = vec![("Content-Type", "application/json"), ("X-Event-Key", "e")];
            headers.extend(signature.map(|s| ("X-Hub-Signature", s)));
            read_event(&json_post(&headers, body), &secret, &WORDING)
        };
        assert!(with(Some(&good), body).is_ok());
        assert!(with(
            Some(&good.to_uppercase().replace("SHA256=", "sha256=")),
            body
        )
        .is_ok());
        let sha1 = format!(
            "sha1={}",
            hmac_hex(Algorithm::Sha1, b"hunter2", body.as_bytes())
        );
        for (signature, body, message) in [
            (None, body, "missing X-Hub-Signature header"),
            (
                Some(good.as_str()),
                r#"{"k": 2}"#,
                "X-Hub-Signature does not match",
            ),
            (Some("sha256=00"), body, "X-Hub-Signature does not match"),
            (
                Some(sha1.as_str()),
                body,
                "X-Hub-Signature must be 'sha256='",
            ),
        ] {
            let err = with(signature, body).unwrap_err();
            assert_eq!(err.class, ErrorClass::Unauthorized);
            assert!(err.message.starts_with(message), "{}", err.message);
            assert!(!err.message.contains("hunter2"));
            assert!(!err.message.contains(&good[7..]));
        }
        // Without a secret the header is not looked at.
        let unsigned = json_post(
            &[("Content-Type", "application/json"), ("X-Event-Key", "e")],
            body,
        );
        assert!(read_event(&unsigned, &Options::default(), &WORDING).is_ok());
        // While a secret is rotated, either signs.
        let rotating = options(json!({"secret": ["old", "hunter2"]}));
        let headers = [
            ("Content-Type", "application/json"),
            ("X-Event-Key", "e"),
            ("X-Hub-Signature", good.as_str()),
        ];
        assert!(read_event(&json_post(&headers, body), &rotating, &WORDING).is_ok());
    }

    #[test]
    fn pushed_refs_cover_branches_tags_and_deletions() {
        let payload = json!({"push": {"changes": [
            {"new": {"type": "branch", "name": "main", "target": {"hash": "a1"}}, "old": null},
            {"new": {"type": "tag", "name": "v1", "target": {"hash": "b2"}}},
            {"new": null, "old": {"type": "branch", "name": "gone", "target": {"hash": "c3"}}},
            {"new": {"type": "named_branch", "name": "default", "target": {"hash": "d4"}}}
        ]}});
        let refs = pushed_refs(&Field::root(&payload).unwrap()).unwrap();
        let summary: Vec<_> = refs
            .iter()
            .map(|r| (r.revision.as_str(), r.branch.as_deref(), r.category))
            .collect();
        assert_eq!(
            summary,
            [
                ("a1", Some("refs/heads/main"), "push"),
                ("b2", Some("refs/tags/v1"), "push"),
                ("c3", Some("refs/heads/gone"), "ref-deleted"),
                ("d4", None, "push"),
            ]
        );
        let neither = json!({"push": {"changes": [{"new": null, "old": null}]}});
        assert_eq!(
            pushed_refs(&Field::root(&neither).unwrap())
                .unwrap_err()
                .message,
            "the payload lacks 'push.changes[0].old'"
        );
    }

    #[test]
    fn pull_request_ids_come_as_numbers_or_digit_strings() {
        for (id, number) in [(json!(21), 21), (json!(" 7 "), 7)] {
            let pr = json!({ "id": id });
            let pr = Field::root(&pr).unwrap();
            assert_eq!(pull_request_id(&pr).unwrap(), number);
        }
        for id in [json!("x"), json!(1.5), json!(true)] {
            let pr = json!({ "id": id });
            let err = pull_request_id(&Field::root(&pr).unwrap()).unwrap_err();
            assert_eq!(err.message, "'id' is not an integer");
        }
    }

    #[test]
    fn unknown_events_are_named_as_buildbot_names_them() {
        assert_eq!(
            unknown_event("invented:event").message,
            "Unknown event: invented_event"
        );
        assert_eq!(PullRequestAction::from_event("pullrequest:approved"), None);
        assert_eq!(
            PullRequestAction::from_event("pullrequest:fulfilled").map(PullRequestAction::category),
            Some("pull-fulfilled")
        );
    }
}
