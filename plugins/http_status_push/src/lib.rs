//! The `http_status_push` reporter (Buildbot's `HttpStatusPush`): every
//! build event it is given becomes one HTTP `POST` to `server_url`.
//!
//! Options:
//! * `server_url` (required): where to post.
//! * `auth`: `{ user = "...", password = "..." }` for HTTP Basic, or
//!   `{ token = "..." }` for `Authorization: Bearer`; the secrets by reference
//!   as everywhere (`{ from_secret = "..." }`).
//! * `headers`: a table of extra headers (values may be secrets too).
//! * `format`: a template (minijinja, Jinja2's syntax) that renders the body
//!   from `build` (Buildbot's build dictionary) and `event` (`started`,
//!   `finished`); the replacement for Buildbot's `format_fn`. Without it the
//!   body is the build dictionary as JSON.
//! * `content_type` (default `application/json`): the body's type.
//! * `verify`: accepted as `true` only; certificates are always checked.

use std::collections::BTreeMap;

use base64::Engine as _;
use buildmaster_plugin_api::options::{only_true, Secret};
use buildmaster_plugin_api::reporter::{Envelope, Event};
use buildmaster_plugin_api::{export_plugin, Host, OutgoingRequest, Reporter, Wants};
use serde::Deserialize;

/// How requests authenticate.
#[derive(Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum Auth {
    Basic { user: String, password: Secret },
    Bearer { token: Secret },
}

/// The reporter's own keys of its `[[reporters]]` table.
#[derive(Deserialize)]
pub struct Options {
    server_url: String,
    #[serde(default)]
    auth: Option<Auth>,
    #[serde(default)]
    headers: BTreeMap<String, Secret>,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default, deserialize_with = "only_true")]
    #[allow(
        dead_code,
        reason = "accepted as true only; certificates are always checked"
    )]
    verify: bool,
}

/// The `http_status_push` reporter.
pub struct HttpStatusPush {
    options: Options,
    /// `Authorization`'s value, when `auth` is set.
    authorization: Option<Secret>,
}

impl Reporter for HttpStatusPush {
    type Options = Options;

    fn new(_name: &str, options: Options) -> Result<Self, String> {
        if !options.server_url.starts_with("http://") && !options.server_url.starts_with("https://")
        {
            return Err("options.server_url: must be an http:// or https:// URL".into());
        }
        if let Some(format) = &options.format {
            minijinja::Environment::new()
                .template_from_str(format)
                .map_err(|e| format!("options.format: {e}"))?;
        }
        let authorization = options.auth.as_ref().map(|auth| match auth {
            Auth::Basic { user, password } => {
                let pair = format!("{user}:{}", password.expose());
                Secret::new(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ))
            }
            Auth::Bearer { token } => Secret::new(format!("Bearer {}", token.expose())),
        });
        Ok(HttpStatusPush {
            options,
            authorization,
        })
    }

    fn wants(&self) -> Wants {
        Wants {
            events: vec![Event::Started, Event::Finished],
            properties: true,
            ..Wants::default()
        }
    }

    fn render(
        &self,
        envelope: &Envelope,
        _host: &Host<'_>,
    ) -> Result<Vec<OutgoingRequest>, String> {
        let build = envelope.build()?;
        let body = match &self.options.format {
            None => build.to_string(),
            Some(format) => minijinja::Environment::new()
                .render_str(
                    format,
                    minijinja::context! { build => build, event => envelope.event.name() },
                )
                .map_err(|e| format!("the format template failed: {e}"))?,
        };
        let content_type = self
            .options
            .content_type
            .as_deref()
            .unwrap_or("application/json");
        let mut request =
            OutgoingRequest::post(&self.options.server_url, content_type, body).idempotency_key(
                format!("build-{}-{}", build["buildid"], envelope.event.name()),
            );
        if let Some(authorization) = &self.authorization {
            request = request.header("Authorization", authorization.expose());
        }
        for (name, value) in &self.options.headers {
            request = request.header(name.as_str(), value.expose());
        }
        Ok(vec![request])
    }
}

export_plugin! {
    name: "http_status_push",
    version: env!("CARGO_PKG_VERSION"),
    reporters: { "http_status_push" => HttpStatusPush },
}

#[cfg(test)]
mod tests {
    use super::*;
    use buildmaster_plugin_api::serde_json::{json, Value};
    use buildmaster_plugin_api::testing::ReporterHarness;

    fn finished() -> Value {
        json!({
            "event": "finished",
            "build": {
                "buildid": 12, "number": 3, "results": 2, "state_string": "failed compile",
                "builder": {"name": "tests", "tags": []},
                "url": "http://ci.example/#/builders/1/builds/3"
            }
        })
    }

    fn header<'a>(request: &'a OutgoingRequest, name: &str) -> Option<&'a str> {
        request
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn without_a_format_the_body_is_the_build_dictionary() {
        let push =
            ReporterHarness::<HttpStatusPush>::new(json!({"server_url": "http://r.example/x"}));
        let requests = push.render(&finished());
        assert_eq!(requests.len(), 1);
        let request = &requests[0];
        assert_eq!(
            (request.method.as_str(), request.url.as_str()),
            ("POST", "http://r.example/x")
        );
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body, finished()["build"]);
        assert_eq!(header(request, "Content-Type"), Some("application/json"));
        assert_eq!(header(request, "Authorization"), None);
        assert_eq!(
            request.idempotency_key.as_deref(),
            Some("build-12-finished")
        );
        assert_eq!(push.wants().events, [Event::Started, Event::Finished]);
        assert!(push.wants().properties);
    }

    #[test]
    fn a_format_renders_the_body_from_the_build_and_the_event() {
        let push = ReporterHarness::<HttpStatusPush>::new(json!({
            "server_url": "http://r.example/x",
            "format": r#"{"text": "{{ build.builder.name }} #{{ build.number }} {{ event }}: {{ build.state_string }}"}"#,
            "headers": {"X-Team": "ci"}
        }));
        let request = &push.render(&finished())[0];
        assert_eq!(
            String::from_utf8_lossy(&request.body),
            r#"{"text": "tests #3 finished: failed compile"}"#
        );
        assert_eq!(header(request, "X-Team"), Some("ci"));
    }

    #[test]
    fn basic_and_bearer_auth() {
        let basic = ReporterHarness::<HttpStatusPush>::new(json!({
            "server_url": "http://r.example/x", "auth": {"user": "ada", "password": "s3cret"}
        }));
        let request = &basic.render(&finished())[0];
        // base64("ada:s3cret")
        assert_eq!(
            header(request, "Authorization"),
            Some("Basic YWRhOnMzY3JldA==")
        );
        let bearer = ReporterHarness::<HttpStatusPush>::new(json!({
            "server_url": "http://r.example/x", "auth": {"token": "t0k"}
        }));
        let request = &bearer.render(&finished())[0];
        assert_eq!(header(request, "Authorization"), Some("Bearer t0k"));
    }

    #[test]
    fn bad_options_are_refused_with_their_key_path() {
        let error = |options: Value| {
            ReporterHarness::<HttpStatusPush>::try_new(options)
                .err()
                .unwrap()
        };
        assert_eq!(error(json!({})), "options: missing field `server_url`");
        assert_eq!(
            error(json!({"server_url": "ftp://x"})),
            "options.server_url: must be an http:// or https:// URL"
        );
        assert!(
            error(json!({"server_url": "http://x", "format": "{{ build."}))
                .starts_with("options.format: ")
        );
        assert!(error(json!({"server_url": "http://x", "verify": false}))
            .starts_with("options.verify: only true"));
        assert!(
            error(json!({"server_url": "http://x", "auth": {"user": "u"}}))
                .starts_with("options.auth")
        );
        assert!(error(json!({"server_url": "http://x", "serverurl": "y"}))
            .starts_with("options.serverurl: unknown option"));
    }
}
