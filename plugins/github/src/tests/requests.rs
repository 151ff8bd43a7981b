//! What every request goes through: the event, the content type, signatures.

use super::push::push;
use super::*;

#[test]
fn ping_and_workflow_run_give_no_change() {
    let github = DialectHarness::<GitHub>::new(json!({}));
    let ping = json!({"zen": "Design for failure.", "hook_id": 7});
    assert!(github.changes(&json_hook("ping", &ping)).is_empty());
    assert!(github.changes(&form_hook("ping", &ping)).is_empty());
    assert!(github
        .changes(&json_hook("workflow_run", &json!({})))
        .is_empty());
}

#[test]
fn unknown_or_missing_events_are_refused() {
    let github = DialectHarness::<GitHub>::new(json!({}));
    let error = github.refusal(&json_hook("issues", &json!({})), ErrorClass::BadRequest);
    assert_eq!(error, "Unknown event: issues");
    let no_event = request(
        "POST",
        "/change_hook/github",
        &[("Content-Type", "application/json")],
        "{}",
    );
    assert!(github
        .refusal(&no_event, ErrorClass::BadRequest)
        .contains("X-GitHub-Event"));
}

// Signatures.

fn signed(secret: &str, algorithm: Algorithm) -> Request {
    let body = push("refs/heads/main").to_string();
    let (header, prefix) = match algorithm {
        Algorithm::Sha256 => ("X-Hub-Signature-256", "sha256"),
        Algorithm::Sha1 => ("X-Hub-Signature", "sha1"),
    };
    let signature = format!(
        "{prefix}={}",
        hmac_hex(algorithm, secret.as_bytes(), body.as_bytes())
    );
    hook("push", "application/json", &body, &[(header, &signature)])
}

#[test]
fn signed_requests_are_accepted() {
    for strict in [true, false] {
        let github =
            DialectHarness::<GitHub>::new(json!({"secret": "open sesame", "strict": strict}));
        assert_eq!(
            github
                .changes(&signed("open sesame", Algorithm::Sha256))
                .len(),
            2
        );
        assert_eq!(
            github
                .changes(&signed("open sesame", Algorithm::Sha1))
                .len(),
            2
        );
    }
}

#[test]
fn a_list_of_secrets_lets_a_secret_be_rotated() {
    let github = DialectHarness::<GitHub>::new(json!({"secret": ["old secret", "new secret"]}));
    assert_eq!(
        github
            .changes(&signed("old secret", Algorithm::Sha256))
            .len(),
        2
    );
    assert_eq!(
        github.changes(&signed("new secret", Algorithm::Sha1)).len(),
        2
    );
    github.refusal(
        &signed("other secret", Algorithm::Sha256),
        ErrorClass::BadRequest,
    );
}

#[test]
fn with_a_secret_unsigned_and_badly_signed_requests_are_refused() {
    let unsigned = json_hook("push", &push("refs/heads/main"));
    for strict in [true, false] {
        let github =
            DialectHarness::<GitHub>::new(json!({"secret": "open sesame", "strict": strict}));
        let error = github.refusal(&unsigned, ErrorClass::BadRequest);
        assert!(error.starts_with("Request has no required signature"));
        let error = github.refusal(&signed("guess", Algorithm::Sha256), ErrorClass::BadRequest);
        assert!(error.starts_with("Hash mismatch"));
        assert!(!error.contains("open sesame"));
    }
}

#[test]
fn the_signature_is_checked_before_the_payload_is_read() {
    let github = DialectHarness::<GitHub>::new(json!({"secret": "open sesame"}));
    let garbage = hook(
        "push",
        "text/plain",
        "not json",
        &[("X-Hub-Signature-256", "sha256=00")],
    );
    assert!(github
        .refusal(&garbage, ErrorClass::BadRequest)
        .starts_with("Hash mismatch"));
}

#[test]
fn without_a_secret_signatures_are_not_checked() {
    let request = signed("anything", Algorithm::Sha256);
    let github = DialectHarness::<GitHub>::new(json!({}));
    assert_eq!(github.changes(&request).len(), 2);
}

#[test]
fn strict_without_a_secret_is_a_configuration_error() {
    let error = DialectHarness::<GitHub>::try_new(json!({"strict": true})).err();
    assert_eq!(
        error.as_deref(),
        Some("options.strict: set, but no 'secret' is configured")
    );
}
