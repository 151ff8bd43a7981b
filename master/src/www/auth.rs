//! Who is calling: a session cookie from the login form (the UI), HTTP
//! Basic or a bearer token (the API), or nobody; and whether they may take
//! a control action under `[www.authz]`.
//!
//! Sessions live in memory, keyed by the SHA-256 of their token, for seven
//! days; a restart logs everybody out. A state-changing request made with
//! a session must carry the session's CSRF token in `X-CSRF-Token` (or the
//! form field `csrf`): the cookie alone, which a browser sends on any
//! site's behalf, is not enough.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use warp::http::HeaderMap;

use crate::api::Permit;
use crate::config::{Action, Authz, Caller, WwwAuth};
use crate::registry::Registry;

/// The session cookie's name.
pub const COOKIE: &str = "buildmaster_session";

/// How long a session lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// How many sessions one user may have open at once.
const SESSIONS_PER_USER: usize = 16;

/// The logged-in sessions.
#[derive(Default)]
pub struct Sessions {
    by_digest: Mutex<HashMap<[u8; 32], Session>>,
}

#[derive(Clone)]
struct Session {
    user: String,
    csrf: String,
    expires: Instant,
}

/// `N` fresh random bytes, as hex.
pub(super) fn random_hex<const N: usize>() -> String {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the system's random source");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh session or CSRF token.
fn token() -> String {
    random_hex::<32>()
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Sessions {
    /// Opens a session for `user`: its token (the cookie's value).
    pub fn open(&self, user: &str) -> String {
        let token = token();
        let now = Instant::now();
        let mut sessions = self.by_digest.lock().expect("sessions");
        sessions.retain(|_, session| session.expires > now);
        // Logging in again and again keeps a bounded number of sessions:
        // the user's oldest ones go first.
        let mut own: Vec<([u8; 32], Instant)> = sessions
            .iter()
            .filter(|(_, session)| session.user == user)
            .map(|(key, session)| (*key, session.expires))
            .collect();
        if own.len() >= SESSIONS_PER_USER {
            own.sort_by_key(|(_, expires)| *expires);
            for (key, _) in &own[..=own.len() - SESSIONS_PER_USER] {
                sessions.remove(key);
            }
        }
        sessions.insert(
            digest(&token),
            Session {
                user: user.to_owned(),
                csrf: self::token(),
                expires: now + SESSION_LIFETIME,
            },
        );
        token
    }

    fn find(&self, token: &str) -> Option<Session> {
        let sessions = self.by_digest.lock().expect("sessions");
        sessions
            .get(&digest(token))
            .filter(|session| session.expires > Instant::now())
            .cloned()
    }

    pub fn close(&self, token: &str) {
        self.by_digest
            .lock()
            .expect("sessions")
            .remove(&digest(token));
    }
}

/// How a caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof {
    /// The session cookie; its CSRF token.
    Session {
        token: String,
        csrf: String,
    },
    Basic,
    Bearer,
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Anonymous,
    User { name: String, proof: Proof },
}

impl Identity {
    pub fn user(&self) -> Option<&str> {
        match self {
            Identity::User { name, .. } => Some(name),
            Identity::Anonymous => None,
        }
    }
}

/// The value of cookie `name` in a request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(warp::http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Finds out who is calling. Credentials that are given but wrong are an
/// error (401 and why); no credentials at all is [`Identity::Anonymous`].
pub async fn identify(
    registry: &Registry,
    sessions: &Sessions,
    headers: &HeaderMap,
) -> Result<Identity, String> {
    let Some(users) = registry.users.clone() else {
        return Ok(Identity::Anonymous);
    };
    let authorization = headers
        .get(warp::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    if let Some(value) = authorization {
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            return match users.user_of_token(rest.trim()) {
                Some(name) => Ok(Identity::User {
                    name,
                    proof: Proof::Bearer,
                }),
                None => Err("the bearer token is not valid".into()),
            };
        }
        let (user, password) = crate::config::parse_basic(value)
            .ok_or("the Authorization header is neither Basic nor Bearer")?;
        let checking = Arc::clone(&users);
        let name = user.clone();
        // bcrypt is slow on purpose: off the async workers.
        let valid = tokio::task::spawn_blocking(move || checking.check_password(&name, &password))
            .await
            .unwrap_or(false);
        return if valid {
            Ok(Identity::User {
                name: user,
                proof: Proof::Basic,
            })
        } else {
            Err("wrong user name or password".into())
        };
    }
    let session = cookie(headers, COOKIE).and_then(|token| Some((token, sessions.find(token)?)));
    Ok(match session {
        // A user a reload removed is logged out.
        Some((token, session)) if users.knows(&session.user) => Identity::User {
            name: session.user,
            proof: Proof::Session {
                token: token.to_owned(),
                csrf: session.csrf,
            },
        },
        _ => Identity::Anonymous,
    })
}

/// Whether a state-changing request made with a session carries its CSRF
/// token; requests authenticated otherwise need none.
pub fn csrf_ok(identity: &Identity, given: Option<&str>) -> bool {
    match identity {
        Identity::User {
            proof: Proof::Session { csrf, .. },
            ..
        } => given.is_some_and(|given| bool::from(given.as_bytes().ct_eq(csrf.as_bytes()))),
        _ => true,
    }
}

/// A caller and the rules that apply to them, for the JSON-RPC actions.
pub struct Authority {
    pub identity: Identity,
    pub users: Option<Arc<WwwAuth>>,
    pub authz: Arc<Authz>,
}

impl Authority {
    /// The caller's groups and roles, for `/auth/user`.
    pub fn roles(&self) -> (Vec<String>, Vec<String>) {
        let (Some(users), Some(user)) = (&self.users, self.identity.user()) else {
            return (Vec::new(), Vec::new());
        };
        let groups = users.groups_of(user).to_vec();
        let roles = self
            .authz
            .roles_of(Caller {
                user,
                groups: &groups,
            })
            .into_iter()
            .map(str::to_owned)
            .collect();
        (groups, roles)
    }
}

impl Permit for Authority {
    fn check(&self, action: Action, builder: Option<&str>) -> Result<(), (u16, String)> {
        // Without [www.auth], every action is open, as in Buildbot.
        let Some(users) = &self.users else {
            return Ok(());
        };
        let what = match builder {
            Some(builder) => format!("{} on builder '{builder}'", action.name()),
            None => action.name().to_owned(),
        };
        let Some(user) = self.identity.user() else {
            return Err((401, format!("log in to {what}")));
        };
        let caller = Caller {
            user,
            groups: users.groups_of(user),
        };
        if self.authz.allows(Some(caller), action, builder) {
            Ok(())
        } else {
            Err((403, format!("user '{user}' may not {what}")))
        }
    }

    fn user(&self) -> Option<String> {
        self.identity.user().map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_keeps_a_bounded_number_of_sessions_the_newest() {
        let sessions = Sessions::default();
        let first = sessions.open("ann");
        let other = sessions.open("bob");
        let mut last = String::new();
        for _ in 0..SESSIONS_PER_USER {
            last = sessions.open("ann");
        }
        assert!(sessions.find(&first).is_none(), "the oldest went");
        assert!(sessions.find(&last).is_some());
        assert!(sessions.find(&other).is_some(), "another user's stays");
        let count = sessions.by_digest.lock().unwrap().len();
        assert_eq!(count, SESSIONS_PER_USER + 1);
    }

    #[test]
    fn sessions_are_found_by_their_token_until_closed() {
        let sessions = Sessions::default();
        let token = sessions.open("alice");
        assert_eq!(token.len(), 64);
        let session = sessions.find(&token).unwrap();
        assert_eq!(session.user, "alice");
        assert_ne!(session.csrf, token);
        assert!(sessions.find(&super::token()).is_none());
        sessions.close(&token);
        assert!(sessions.find(&token).is_none());
    }

    #[test]
    fn cookies_are_read_among_others_and_csrf_is_checked() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "cookie",
            "theme=dark; buildmaster_session=abc; x=y".parse().unwrap(),
        );
        assert_eq!(cookie(&headers, COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, "nope"), None);
        let session = Identity::User {
            name: "a".into(),
            proof: Proof::Session {
                token: "t".into(),
                csrf: "c5rf".into(),
            },
        };
        assert!(csrf_ok(&session, Some("c5rf")));
        assert!(!csrf_ok(&session, Some("other")));
        assert!(!csrf_ok(&session, None));
        let basic = Identity::User {
            name: "a".into(),
            proof: Proof::Basic,
        };
        assert!(csrf_ok(&basic, None));
    }
}
