//! `/auth/login`, `/auth/logout` and `/auth/user`: the login form and the
//! session cookie of the UI, and who the caller is.

use std::collections::HashMap;

use warp::http::{header, HeaderMap, HeaderValue, StatusCode};
use warp::Reply;

use super::auth::{self, Identity, Proof, COOKIE, SESSION_LIFETIME};
use super::ui::login_page;
use super::{AppState, ClientAddress};

/// Where to go after logging in: a path of this site, else `/`.
fn local_path(next: Option<&String>) -> String {
    match next {
        // Browsers drop tabs and newlines from a URL, so `/\t/host` would
        // be `//host`: no control character, no space, no backslash.
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path
                    .chars()
                    .any(|c| c.is_control() || c.is_whitespace() || c == '\\') =>
        {
            path.clone()
        }
        _ => "/".to_owned(),
    }
}

fn html(status: StatusCode, body: String) -> warp::reply::Response {
    warp::reply::with_status(warp::reply::html(body), status).into_response()
}

/// A 303 to `location`, setting or clearing the session cookie.
fn see_other(location: &str, cookie: Option<String>) -> warp::reply::Response {
    let mut reply = warp::reply::with_status("", StatusCode::SEE_OTHER).into_response();
    let headers = reply.headers_mut();
    if let Ok(location) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, location);
    }
    if let Some(Ok(cookie)) = cookie.as_deref().map(HeaderValue::from_str) {
        headers.insert(header::SET_COOKIE, cookie);
    }
    reply
}

/// The cookie's attributes; `Secure` when the master is reached over HTTPS.
fn cookie_value(state: &AppState, value: &str, max_age: u64) -> String {
    let secure = if state.registry.load().buildbot_url.starts_with("https:") {
        "; Secure"
    } else {
        ""
    };
    format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}")
}

/// `GET /auth/login`
pub async fn form(query: HashMap<String, String>, state: AppState) -> warp::reply::Response {
    let registry = state.registry.load();
    if registry.users.is_none() {
        return html(
            StatusCode::NOT_FOUND,
            login_page(
                &registry.title,
                "/",
                Some("This master has no users: [www.auth] is not set."),
                false,
            ),
        );
    }
    html(
        StatusCode::OK,
        login_page(&registry.title, &local_path(query.get("next")), None, true),
    )
}

/// Whether a browser's request comes from a page of this site: its
/// `Origin`, when it sends one, names the host it was sent to, or the
/// master's external address (`buildbot_url`, behind a proxy that rewrites
/// `Host`).
fn same_origin(headers: &HeaderMap, buildbot_url: &str) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Some((_, origin_host)) = origin.to_str().ok().and_then(|o| o.split_once("://")) else {
        return false;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let external = buildbot_url
        .split_once("://")
        .map(|(_, rest)| rest.split('/').next().unwrap_or_default());
    [host, external]
        .into_iter()
        .flatten()
        .any(|known| !known.is_empty() && known.eq_ignore_ascii_case(origin_host))
}

/// `POST /auth/login`: a session for the right user name and password.
/// Another site's form is refused: it could log a browser in as someone
/// else.
pub async fn submit(
    form: HashMap<String, String>,
    headers: HeaderMap,
    client: Option<ClientAddress>,
    state: AppState,
) -> warp::reply::Response {
    let registry = state.registry.load_full();
    if !same_origin(&headers, &registry.buildbot_url) {
        return super::text(
            StatusCode::FORBIDDEN,
            "a login must come from this site's own login page\n",
        );
    }
    let next = local_path(form.get("next"));
    let Some(users) = registry.users.clone() else {
        return html(
            StatusCode::NOT_FOUND,
            login_page(
                &registry.title,
                &next,
                Some("This master has no users."),
                false,
            ),
        );
    };
    let user = form.get("username").cloned().unwrap_or_default();
    let password = form.get("password").cloned().unwrap_or_default();
    let name = user.clone();
    let valid = tokio::task::spawn_blocking(move || users.check_password(&name, &password))
        .await
        .unwrap_or(false);
    let from = client.map_or_else(|| "?".to_owned(), |c| c.0.to_string());
    if !valid {
        tracing::warn!("login refused for user {user:?} from {from}: wrong user name or password");
        return html(
            StatusCode::UNAUTHORIZED,
            login_page(
                &registry.title,
                &next,
                Some("Wrong user name or password."),
                true,
            ),
        );
    }
    tracing::info!("user {user:?} logged in from {from}");
    let token = state.sessions.open(&user);
    see_other(
        &next,
        Some(cookie_value(&state, &token, SESSION_LIFETIME.as_secs())),
    )
}

/// `POST /auth/logout`: ends the session; its CSRF token is required.
pub async fn logout(
    form: HashMap<String, String>,
    headers: HeaderMap,
    state: AppState,
) -> warp::reply::Response {
    let registry = state.registry.load_full();
    if let Ok(identity) = auth::identify(&registry, &state.sessions, &headers).await {
        let given = headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .or(form.get("csrf").map(String::as_str));
        if let Identity::User {
            proof: Proof::Session { token, .. },
            ..
        } = &identity
        {
            if !auth::csrf_ok(&identity, given) {
                return super::text(StatusCode::FORBIDDEN, "missing or wrong CSRF token\n");
            }
            state.sessions.close(token);
            return see_other("/", Some(cookie_value(&state, "", 0)));
        }
    }
    // No session came with the request (another site's form does not
    // carry the cookie): nothing to end, and the cookie is left alone.
    see_other("/", None)
}

/// `GET /auth/user`: the caller, their groups and roles, and the CSRF token
/// their session needs.
pub async fn user(headers: HeaderMap, state: AppState) -> warp::reply::Response {
    let registry = state.registry.load_full();
    let identity = match auth::identify(&registry, &state.sessions, &headers).await {
        Ok(identity) => identity,
        Err(why) => return super::text(StatusCode::UNAUTHORIZED, format!("{why}\n")),
    };
    let csrf = match &identity {
        Identity::User {
            proof: Proof::Session { csrf, .. },
            ..
        } => Some(csrf.clone()),
        _ => None,
    };
    let authority = auth::Authority {
        identity,
        users: registry.users.clone(),
        authz: registry.authz.clone(),
    };
    let (groups, roles) = authority.roles();
    let body = serde_json::json!({
        "user": authority.identity.user(),
        "groups": groups,
        "roles": roles,
        "csrf": csrf,
        "auth": registry.users.is_some(),
    });
    warp::reply::json(&body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_a_login() {
        assert_eq!(local_path(Some(&"/builders/1".to_owned())), "/builders/1");
        assert_eq!(local_path(Some(&"//evil.example".to_owned())), "/");
        assert_eq!(local_path(Some(&"https://evil.example".to_owned())), "/");
        assert_eq!(local_path(Some(&"/\\evil".to_owned())), "/");
        assert_eq!(local_path(Some(&"/\t/evil.example".to_owned())), "/");
        assert_eq!(local_path(Some(&"/\n/evil.example".to_owned())), "/");
        assert_eq!(local_path(Some(&"/ /evil.example".to_owned())), "/");
        assert_eq!(local_path(None), "/");
    }

    #[test]
    fn a_login_from_another_site_is_told_apart() {
        let headers = |origin: Option<&'static str>| {
            let mut map = HeaderMap::new();
            map.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8010"));
            if let Some(origin) = origin {
                map.insert(header::ORIGIN, HeaderValue::from_static(origin));
            }
            map
        };
        let url = "https://ci.example/";
        assert!(same_origin(&headers(None), url));
        assert!(same_origin(&headers(Some("http://127.0.0.1:8010")), url));
        assert!(same_origin(&headers(Some("https://CI.example")), url));
        assert!(!same_origin(&headers(Some("https://evil.example")), url));
        assert!(!same_origin(&headers(Some("null")), url));
        assert!(!same_origin(&headers(Some("https://evil.example")), ""));
    }

    #[test]
    fn the_form_escapes_what_it_shows() {
        let page = login_page("CI <x>", "/a\"b", Some("<bad>"), true);
        assert!(page.contains("Log in to CI &lt;x&gt;"), "{page}");
        assert!(page.contains("value=\"&#x2f;a&quot;b\""), "{page}");
        assert!(page.contains("&lt;bad&gt;"), "{page}");
        assert!(page.contains("href=\"/ui/ui.css?v="), "{page}");
    }
}
