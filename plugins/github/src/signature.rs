//! Webhook signatures: `X-Hub-Signature-256: sha256=<hex>` (preferred) or the
//! legacy `X-Hub-Signature: sha1=<hex>`, an HMAC of the raw body under the
//! webhook secret. Messages never show a secret or a signature.

use buildmaster_plugin_api::options::Secrets;
use buildmaster_plugin_api::signature::{verify_any, Algorithm};
use buildmaster_plugin_api::{HookError, Request};

/// The signature headers in order of preference, with the algorithm each carries.
const HEADERS: [(&str, &str, Algorithm); 2] = [
    ("X-Hub-Signature-256", "sha256", Algorithm::Sha256),
    ("X-Hub-Signature", "sha1", Algorithm::Sha1),
];

/// Accepts `request` when it is signed with one of `secrets` (any of them, so a
/// secret can be rotated without downtime). An unsigned request is refused.
pub fn verify(request: &Request, secrets: &Secrets) -> Result<(), HookError> {
    let Some((header, value, expected_name, algorithm)) =
        HEADERS.iter().find_map(|&(header, name, algorithm)| {
            request
                .header(header)
                .map(|value| (header, value, name, algorithm))
        })
    else {
        return Err(HookError::bad_request(
            "Request has no required signature (X-Hub-Signature-256)",
        ));
    };
    let parts: Vec<&str> = value.split('=').collect();
    let [name, digest] = parts.as_slice() else {
        return Err(HookError::bad_request(format!(
            "Wrong signature format in {header}: expected '{expected_name}=<hex digest>'"
        )));
    };
    if *name != expected_name {
        return Err(HookError::bad_request(format!(
            "Unknown hash type in {header}: expected '{expected_name}'"
        )));
    }
    let body = request.body.as_slice();
    if verify_any(algorithm, secrets, body, digest) {
        Ok(())
    } else {
        Err(HookError::bad_request(format!(
            "Hash mismatch: {header} matches no configured secret"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use buildmaster_plugin_api::options::Secret;
    use buildmaster_plugin_api::signature::hmac_hex;
    use buildmaster_plugin_api::testing::request;

    const BODY: &str = r#"{"zen": "Anything added dilutes everything else."}"#;

    fn signed(headers: &[(&str, &str)]) -> Request {
        let mut all = vec![("Content-Type", "application/json")];
        all.extend_from_slice(headers);
        request("POST", "/change_hook/github", &all, BODY)
    }

    fn sha256(secret: &str) -> String {
        format!(
            "sha256={}",
            hmac_hex(Algorithm::Sha256, secret.as_bytes(), BODY.as_bytes())
        )
    }

    fn sha1(secret: &str) -> String {
        format!(
            "sha1={}",
            hmac_hex(Algorithm::Sha1, secret.as_bytes(), BODY.as_bytes())
        )
    }

    fn secrets(list: &[&str]) -> Secrets {
        Secrets::new(list.iter().map(|s| Secret::new(*s)).collect())
    }

    #[test]
    fn either_header_with_the_right_secret_is_accepted() {
        let only = secrets(&["s3cret"]);
        assert!(verify(
            &signed(&[("X-Hub-Signature-256", &sha256("s3cret"))]),
            &only
        )
        .is_ok());
        assert!(verify(&signed(&[("X-Hub-Signature", &sha1("s3cret"))]), &only).is_ok());
        let upper = sha256("s3cret")
            .to_uppercase()
            .replacen("SHA256", "sha256", 1);
        assert!(verify(&signed(&[("x-hub-signature-256", &upper)]), &only).is_ok());
    }

    #[test]
    fn sha256_is_preferred_over_sha1() {
        let only = secrets(&["s3cret"]);
        let good_256_bad_1 = signed(&[
            ("X-Hub-Signature", &sha1("wrong")),
            ("X-Hub-Signature-256", &sha256("s3cret")),
        ]);
        assert!(verify(&good_256_bad_1, &only).is_ok());
        let bad_256_good_1 = signed(&[
            ("X-Hub-Signature", &sha1("s3cret")),
            ("X-Hub-Signature-256", &sha256("wrong")),
        ]);
        let err = verify(&bad_256_good_1, &only).unwrap_err();
        assert_eq!(
            err.message,
            "Hash mismatch: X-Hub-Signature-256 matches no configured secret"
        );
    }

    #[test]
    fn any_of_several_secrets_is_accepted() {
        let rotating = secrets(&["old", "new"]);
        assert!(verify(
            &signed(&[("X-Hub-Signature-256", &sha256("old"))]),
            &rotating
        )
        .is_ok());
        assert!(verify(
            &signed(&[("X-Hub-Signature-256", &sha256("new"))]),
            &rotating
        )
        .is_ok());
        assert!(verify(
            &signed(&[("X-Hub-Signature-256", &sha256("other"))]),
            &rotating
        )
        .is_err());
    }

    #[test]
    fn refusals_and_their_messages() {
        let only = secrets(&["s3cret"]);
        let unsigned = verify(&signed(&[]), &only).unwrap_err();
        assert!(unsigned
            .message
            .starts_with("Request has no required signature"));
        for (header, value, message) in [
            (
                "X-Hub-Signature",
                "hash=value=something",
                "Wrong signature format in X-Hub-Signature: expected 'sha1=<hex digest>'",
            ),
            (
                "X-Hub-Signature-256",
                "deadbeef",
                "Wrong signature format in X-Hub-Signature-256: expected 'sha256=<hex digest>'",
            ),
            (
                "X-Hub-Signature",
                "blah=abc",
                "Unknown hash type in X-Hub-Signature: expected 'sha1'",
            ),
            (
                "X-Hub-Signature-256",
                "sha1=abc",
                "Unknown hash type in X-Hub-Signature-256: expected 'sha256'",
            ),
            (
                "X-Hub-Signature",
                "sha1=",
                "Hash mismatch: X-Hub-Signature matches no configured secret",
            ),
        ] {
            let err = verify(&signed(&[(header, value)]), &only).unwrap_err();
            assert_eq!(err.message, message, "{header}: {value}");
            assert_eq!(err.class, buildmaster_plugin_api::ErrorClass::BadRequest);
        }
    }

    #[test]
    fn a_mismatch_shows_neither_the_secret_nor_the_expected_signature() {
        let err = verify(
            &signed(&[("X-Hub-Signature-256", &sha256("wrong"))]),
            &secrets(&["s3cret"]),
        )
        .unwrap_err();
        let expected = sha256("s3cret");
        let digest = expected.trim_start_matches("sha256=");
        assert!(!err.message.contains("s3cret"));
        assert!(!err.message.contains(digest));
    }
}
