//! `change_hook_auth`: the users allowed to post change hooks, and the check
//! of an HTTP Basic `Authorization` header against them.
//!
//! Checkers are given as Buildbot (Twisted `strcred`) writes them:
//! `file:PATH`, a file of `user:password` lines, where the password may also be
//! a bcrypt hash as `htpasswd -B` writes it; or `memory:USER:PASSWORD[:USER:PASSWORD…]`.
//! Plain passwords are kept only as SHA-256 digests and compared in constant time.

use std::path::Path;

use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[derive(Clone, PartialEq, Eq)]
enum Secret {
    Sha256([u8; 32]),
    Bcrypt(String),
}

/// The accepted users and how to check their passwords. Equality compares
/// the stored digests, to tell whether a new configuration changed them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    users: Vec<(String, Secret)>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.users.iter().map(|(u, _)| u.as_str()).collect();
        f.debug_struct("Credentials")
            .field("users", &names)
            .finish()
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn secret_of(password: &str) -> Secret {
    if ["$2a$", "$2b$", "$2y$"]
        .iter()
        .any(|p| password.starts_with(p))
    {
        Secret::Bcrypt(password.to_string())
    } else {
        Secret::Sha256(digest(password.as_bytes()))
    }
}

impl Credentials {
    /// Adds the users of one checker spec; `basedir` anchors relative file paths.
    /// The error is one line naming the file (and line) at fault.
    pub fn add_checker(&mut self, spec: &str, basedir: &Path) -> Result<(), String> {
        if let Some(path) = spec.strip_prefix("file:") {
            let path = basedir.join(path);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read password file {}: {e}", path.display()))?;
            for (number, line) in text.lines().enumerate() {
                let line = line.trim_end_matches('\r');
                if line.trim().is_empty() || line.starts_with('#') {
                    continue;
                }
                let (user, password) = line.split_once(':').ok_or_else(|| {
                    format!("{}:{}: expected user:password", path.display(), number + 1)
                })?;
                if password.starts_with("$apr1$") || password.starts_with("{SHA}") {
                    return Err(format!(
                        "{}:{}: only plain and bcrypt passwords are supported (htpasswd -B)",
                        path.display(),
                        number + 1
                    ));
                }
                self.users.push((user.to_string(), secret_of(password)));
            }
            Ok(())
        } else if let Some(rest) = spec.strip_prefix("memory:") {
            let parts: Vec<&str> = rest.split(':').collect();
            if !parts.len().is_multiple_of(2) || parts.iter().any(|p| p.is_empty()) {
                return Err("memory: checker takes USER:PASSWORD pairs".into());
            }
            for pair in parts.chunks(2) {
                self.users.push((pair[0].to_string(), secret_of(pair[1])));
            }
            Ok(())
        } else {
            let kind = spec.split(':').next().unwrap_or_default();
            Err(format!(
                "unsupported change_hook_auth checker '{kind}': use file:PATH or memory:USER:PASSWORD"
            ))
        }
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether an `Authorization` header value carries valid Basic credentials.
    /// Runs bcrypt when a user has a bcrypt hash, so call it off the async workers.
    pub fn check(&self, authorization: Option<&str>) -> bool {
        authorization
            .and_then(parse_basic)
            .is_some_and(|(user, password)| self.check_pair(&user, &password))
    }

    /// Whether `password` is `user`'s; slow like [`Credentials::check`].
    pub fn check_pair(&self, user: &str, password: &str) -> bool {
        let given = digest(password.as_bytes());
        // Every entry is examined so the time taken does not tell which user exists.
        let mut ok = false;
        let mut hashed = false;
        for (name, secret) in &self.users {
            let name_matches: bool = digest(name.as_bytes())
                .ct_eq(&digest(user.as_bytes()))
                .into();
            let password_matches = match secret {
                Secret::Sha256(expected) => expected.ct_eq(&given).into(),
                Secret::Bcrypt(hash) if name_matches => {
                    hashed = true;
                    bcrypt::verify(password, hash).unwrap_or(false)
                }
                Secret::Bcrypt(_) => false,
            };
            ok |= name_matches & password_matches;
        }
        // An unknown user costs one bcrypt too, like a known one.
        if !hashed {
            if let Some(hash) = self.users.iter().find_map(|(_, secret)| match secret {
                Secret::Bcrypt(hash) => Some(hash),
                Secret::Sha256(_) => None,
            }) {
                let _ = bcrypt::verify(password, hash);
            }
        }
        ok
    }

    /// Whether `user` is one of the users.
    pub fn has_user(&self, user: &str) -> bool {
        self.users.iter().any(|(name, _)| name == user)
    }

    /// Whether checking a password may be slow (bcrypt).
    pub fn is_slow(&self) -> bool {
        self.users
            .iter()
            .any(|(_, s)| matches!(s, Secret::Bcrypt(_)))
    }
}

/// `Basic base64(user:password)` → (user, password). The scheme is matched
/// case-insensitively, as Twisted does.
pub fn parse_basic(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user_pass: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        )
    }

    #[test]
    fn plain_and_bcrypt_passwords_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let hash = bcrypt::hash("b-pass", 4).unwrap();
        std::fs::write(
            dir.path().join("p"),
            format!("# users\nalice:a-pass\n\nbob:{hash}\n"),
        )
        .unwrap();
        let mut creds = Credentials::default();
        creds.add_checker("file:p", dir.path()).unwrap();
        assert!(creds.check(Some(&basic("alice:a-pass"))));
        assert!(creds.check(Some(&basic("bob:b-pass"))));
        assert!(creds.is_slow());
        for wrong in [
            "alice:b-pass",
            "bob:a-pass",
            "carol:a-pass",
            "alice:",
            "alice",
        ] {
            assert!(!creds.check(Some(&basic(wrong))), "{wrong}");
        }
    }

    #[test]
    fn malformed_headers_are_refused() {
        let mut creds = Credentials::default();
        creds
            .add_checker("memory:user:password", Path::new("."))
            .unwrap();
        assert!(creds.check(Some("basic dXNlcjpwYXNzd29yZA==")));
        for header in [
            None,
            Some("Bearer abc"),
            Some("Basic !!!"),
            Some("Basic"),
            Some(""),
        ] {
            assert!(!creds.check(header), "{header:?}");
        }
    }

    #[test]
    fn bad_checkers_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p"), "alice\n").unwrap();
        std::fs::write(dir.path().join("q"), "alice:$apr1$x$y\n").unwrap();
        let mut creds = Credentials::default();
        let err = creds.add_checker("file:p", dir.path()).unwrap_err();
        assert!(err.ends_with("p:1: expected user:password"), "{err}");
        let err = creds.add_checker("file:q", dir.path()).unwrap_err();
        assert!(err.contains("only plain and bcrypt"), "{err}");
        assert!(creds
            .add_checker("unix:", dir.path())
            .unwrap_err()
            .contains("unsupported"));
        assert!(creds.add_checker("memory:a", dir.path()).is_err());
    }
}
