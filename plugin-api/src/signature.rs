//! Webhook signatures: HMAC as GitHub and Bitbucket send it, compared in
//! constant time. Enabled by the `signatures` feature.
//!
//! ```
//! use buildmaster_plugin_api::options::{Secret, Secrets};
//! use buildmaster_plugin_api::signature::{hmac_hex, verify_any, verify_hmac_hex, Algorithm};
//! let body = br#"{"zen": "Keep it logically awesome."}"#;
//! let signature = hmac_hex(Algorithm::Sha256, b"s3cret", body);
//! assert!(verify_hmac_hex(Algorithm::Sha256, b"s3cret", body, &signature));
//! assert!(!verify_hmac_hex(Algorithm::Sha256, b"other", body, &signature));
//! // While a secret is rotated, both the old and the new one sign.
//! let live = Secrets::new(vec![Secret::new("old"), Secret::new("s3cret")]);
//! assert!(verify_any(Algorithm::Sha256, &live, body, &signature));
//! ```

use hmac::{Hmac, Mac};
use subtle::ConstantTimeEq;

use crate::options::Secrets;

/// The hash an HMAC signature is made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
}

impl Algorithm {
    /// `sha1` / `sha256`, as the `X-Hub-Signature` prefixes write them.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        match name {
            "sha1" => Some(Algorithm::Sha1),
            "sha256" => Some(Algorithm::Sha256),
            _ => None,
        }
    }
}

fn mac(algorithm: Algorithm, key: &[u8], body: &[u8]) -> Vec<u8> {
    match algorithm {
        Algorithm::Sha1 => {
            let mut mac =
                Hmac::<sha1::Sha1>::new_from_slice(key).expect("HMAC takes any key length");
            mac.update(body);
            mac.finalize().into_bytes().to_vec()
        }
        Algorithm::Sha256 => {
            let mut mac =
                Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key length");
            mac.update(body);
            mac.finalize().into_bytes().to_vec()
        }
    }
}

/// The lower-case hex HMAC of `body` under `key`.
pub fn hmac_hex(algorithm: Algorithm, key: &[u8], body: &[u8]) -> String {
    mac(algorithm, key, body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `signature_hex` (either case) is the HMAC of `body` under `key`. The
/// comparison takes the same time wherever the first difference is.
pub fn verify_hmac_hex(algorithm: Algorithm, key: &[u8], body: &[u8], signature_hex: &str) -> bool {
    let expected = hmac_hex(algorithm, key, body);
    expected
        .as_bytes()
        .ct_eq(signature_hex.to_ascii_lowercase().as_bytes())
        .into()
}

/// Whether `signature_hex` is the HMAC of `body` under any of `secrets`. Every
/// secret is tried, so the time taken does not tell which one matched.
pub fn verify_any(
    algorithm: Algorithm,
    secrets: &Secrets,
    body: &[u8],
    signature_hex: &str,
) -> bool {
    secrets.iter().fold(false, |found, secret| {
        verify_hmac_hex(algorithm, secret.expose().as_bytes(), body, signature_hex) | found
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        // RFC 4231 test case 2 and its SHA-1 counterpart (RFC 2202 test case 2).
        let body = b"what do ya want for nothing?";
        assert_eq!(
            hmac_hex(Algorithm::Sha256, b"Jefe", body),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hmac_hex(Algorithm::Sha1, b"Jefe", body),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
    }

    #[test]
    fn verification_accepts_upper_case_and_refuses_anything_else() {
        let sig = hmac_hex(Algorithm::Sha1, b"k", b"body");
        assert!(verify_hmac_hex(
            Algorithm::Sha1,
            b"k",
            b"body",
            &sig.to_uppercase()
        ));
        assert!(!verify_hmac_hex(Algorithm::Sha1, b"k", b"body!", &sig));
        assert!(!verify_hmac_hex(Algorithm::Sha256, b"k", b"body", &sig));
        assert!(!verify_hmac_hex(Algorithm::Sha1, b"k", b"body", ""));
        assert_eq!(Algorithm::from_name("md5"), None);
    }
}
