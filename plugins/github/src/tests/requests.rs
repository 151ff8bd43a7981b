//! What every request goes through: the event, the content type, signatures.

use super::push::push;
use super::*;

#[test]
fn ping_and_workflow_run_give_no_change() {
    let ping = json!({"zen": "Design for failure.", "hook_id": 7});
    assert!(run(json!({}), &json_hook("ping", &ping))
        .unwrap()
        .is_empty());
    assert!(run(json!({}), &form_hook("ping", &ping))
        .unwrap()
        .is_empty());
    assert!(run(json!({}), &json_hook("workflow_run", &json!({})))
        .unwrap()
        .is_empty());
}

#[test]
fn unknown_or_missing_events_are_refused() {
    let error = refused(json!({}), &json_hook("issues", &json!({})));
    assert_eq!(error.message, "Unknown event: issues");
    let no_event = request(
        "POST",
        "/change_hook/github",
        &[("Content-Type", "application/json")],
        "{}",
    );
    assert!(refused(json!({}), &no_event)
        .message
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
        let config = json!({"secret": "open sesame", "strict": strict});
        assert_eq!(
            run(config.clone(), &signed("open sesame", Algorithm::Sha256))
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            run(config, &signed("open sesame", Algorithm::Sha1))
                .unwrap()
                .len(),
            2
        );
    }
}

#[test]
fn a_list_of_secrets_lets_a_secret_be_rotated() {
    let config = json!({"secret": ["old secret", "new secret"]});
    assert_eq!(
        run(config.clone(), &signed("old secret", Algorithm::Sha256))
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        run(config.clone(), &signed("new secret", Algorithm::Sha1))
            .unwrap()
            .len(),
        2
    );
    refused(config, &signed("other secret", Algorithm::Sha256));
}

#[test]
fn with_a_secret_unsigned_and_badly_signed_requests_are_refused() {
    let unsigned = json_hook("push", &push("refs/heads/main"));
    for strict in [true, false] {
        let config = json!({"secret": "open sesame", "strict": strict});
        let error = refused(config.clone(), &unsigned);
        assert!(error
            .message
            .starts_with("Request has no required signature"));
        let error = refused(config, &signed("guess", Algorithm::Sha256));
        assert!(error.message.starts_with("Hash mismatch"));
        assert!(!error.message.contains("open sesame"));
    }
}

#[test]
fn the_signature_is_checked_before_the_payload_is_read() {
    let config = json!({"secret": "open sesame"});
    let garbage = hook(
        "push",
        "text/plain",
        "not json",
        &[("X-Hub-Signature-256", "sha256=00")],
    );
    assert!(refused(config, &garbage)
        .message
        .starts_with("Hash mismatch"));
}

#[test]
fn without_a_secret_signatures_are_not_checked() {
    let request = signed("anything", Algorithm::Sha256);
    assert_eq!(run(json!({}), &request).unwrap().len(), 2);
}

#[test]
fn strict_without_a_secret_is_a_configuration_error() {
    let error = run(json!({"strict": true}), &json_hook("ping", &json!({}))).unwrap_err();
    assert_eq!(
        error.message,
        "'strict' is set but no 'secret' is configured"
    );
}
