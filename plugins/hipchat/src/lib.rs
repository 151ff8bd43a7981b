//! The `hipchat` reporter (Buildbot's `HipchatStatusPush`, Hipchat API v2, for
//! the API-compatible servers that remain): a build's start and finish sent
//! as a message to users and a notification to rooms.
//!
//! Options:
//! * `auth_token` (required): sent as the `auth_token` query parameter.
//! * `endpoint` (default `https://api.hipchat.com`).
//! * `builder_room_map`, `builder_user_map`: builder name → room id or name,
//!   and → user id or email. A builder in both maps gets both.
//! * `message`: a template (minijinja) from `build`, `event` and `result`
//!   (the result's name); defaults `Buildbot started build <builder> here:
//!   <url>` and `Buildbot finished build <builder> with result <result> here:
//!   <url>`. An empty message sends nothing.
//! * `extra_params`: a table added to the JSON sent (e.g. `color`, `notify`);
//!   string values are templates as `message` is.
//! * `recipients`: a template rendering `{"rooms": [...], "users": [...]}`,
//!   which replaces the two maps (Buildbot's `getRecipientList`).
//!
//! Requests: `POST <endpoint>/v2/user/<id_or_email>/message` and `POST
//! <endpoint>/v2/room/<room>/notification`, body `{"message": ..., <extra
//! params>}`. Nothing is sent without a recipient. Buildbot reports starts
//! too: set `report_started = true` on the reporter.

use std::collections::BTreeMap;

use buildmaster_plugin_api::options::Secret;
use buildmaster_plugin_api::reporter::{Envelope, Event};
use buildmaster_plugin_api::{export_plugin, Host, OutgoingRequest, Reporter, Wants};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The reporter's own keys of its `[[reporters]]` table.
#[derive(Deserialize)]
pub struct Options {
    auth_token: Secret,
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    builder_room_map: BTreeMap<String, String>,
    #[serde(default)]
    builder_user_map: BTreeMap<String, String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    extra_params: Map<String, Value>,
    #[serde(default)]
    recipients: Option<String>,
}

/// The `hipchat` reporter.
pub struct Hipchat {
    options: Options,
    /// Without a trailing `/`.
    endpoint: String,
}

/// Buildbot's result names, by code.
const RESULTS: [&str; 7] = [
    "success",
    "warnings",
    "failure",
    "skipped",
    "exception",
    "retry",
    "cancelled",
];

/// Who gets a message.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Recipients {
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    users: Vec<String>,
}

impl Reporter for Hipchat {
    type Options = Options;

    fn new(_name: &str, options: Options) -> Result<Self, String> {
        let endpoint = options
            .endpoint
            .as_deref()
            .unwrap_or("https://api.hipchat.com")
            .trim_end_matches('/')
            .to_string();
        if !endpoint.starts_with("http://") && !endpoint.starts_with("https://") {
            return Err("options.endpoint: must be an http:// or https:// URL".into());
        }
        let environment = minijinja::Environment::new();
        for (key, template) in [
            ("message", &options.message),
            ("recipients", &options.recipients),
        ] {
            if let Some(template) = template {
                environment
                    .template_from_str(template)
                    .map_err(|e| format!("options.{key}: {e}"))?;
            }
        }
        for (key, value) in &options.extra_params {
            if let Value::String(template) = value {
                environment
                    .template_from_str(template)
                    .map_err(|e| format!("options.extra_params.{key}: {e}"))?;
            }
        }
        Ok(Hipchat { options, endpoint })
    }

    fn wants(&self) -> Wants {
        Wants {
            events: vec![Event::Started, Event::Finished],
            ..Wants::default()
        }
    }

    fn render(
        &self,
        envelope: &Envelope,
        _host: &Host<'_>,
    ) -> Result<Vec<OutgoingRequest>, String> {
        let build = envelope.build()?;
        let builder = build["builder"]["name"].as_str().unwrap_or_default();
        let result = build["results"]
            .as_u64()
            .and_then(|code| RESULTS.get(code as usize).copied())
            .unwrap_or("");
        let environment = minijinja::Environment::new();
        let render = |template: &str| {
            environment
                .render_str(
                    template,
                    minijinja::context! { build => build, event => envelope.event.name(), result => result },
                )
                .map_err(|e| format!("a template failed: {e}"))
        };
        let recipients = match &self.options.recipients {
            Some(template) => serde_json::from_str::<Recipients>(&render(template)?)
                .map_err(|e| format!("the recipients template did not give {{\"rooms\": [..], \"users\": [..]}}: {e}"))?,
            None => Recipients {
                rooms: self.options.builder_room_map.get(builder).cloned().into_iter().collect(),
                users: self.options.builder_user_map.get(builder).cloned().into_iter().collect(),
            },
        };
        let url = build["url"].as_str().unwrap_or_default();
        let message = match &self.options.message {
            Some(template) => render(template)?,
            None if envelope.event == Event::Started => {
                format!("Buildbot started build {builder} here: {url}")
            }
            None => format!("Buildbot finished build {builder} with result {result} here: {url}"),
        };
        if message.is_empty() {
            return Ok(Vec::new());
        }
        let mut body = Map::new();
        body.insert("message".into(), Value::String(message));
        for (key, value) in &self.options.extra_params {
            let value = match value {
                Value::String(template) => Value::String(render(template)?),
                other => other.clone(),
            };
            body.insert(key.clone(), value);
        }
        let body = Value::Object(body);
        let token = self.options.auth_token.expose();
        let targets = recipients
            .users
            .iter()
            .map(|user| format!("user/{}/message", segment(user)))
            .chain(
                recipients
                    .rooms
                    .iter()
                    .map(|room| format!("room/{}/notification", segment(room))),
            );
        Ok(targets
            .map(|target| {
                OutgoingRequest::post_json(
                    &format!(
                        "{}/v2/{target}?auth_token={}",
                        self.endpoint,
                        segment(token)
                    ),
                    &body,
                )
                .idempotency_key(format!(
                    "build-{}-{}-{target}",
                    build["buildid"],
                    envelope.event.name()
                ))
            })
            .collect())
    }
}

/// `text` as one URL path segment or query value: every byte but the
/// unreserved ones percent-encoded.
fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

export_plugin! {
    name: "hipchat",
    version: env!("CARGO_PKG_VERSION"),
    reporters: { "hipchat" => Hipchat },
}

#[cfg(test)]
mod tests {
    use super::*;
    use buildmaster_plugin_api::serde_json::json;
    use buildmaster_plugin_api::testing::ReporterHarness;

    fn event(event: &str, builder: &str) -> Value {
        json!({"event": event, "build": {
            "buildid": 3, "number": 8, "results": if event == "finished" { json!(2) } else { Value::Null },
            "builder": {"name": builder}, "url": "http://ci/#/builders/2/builds/8"
        }})
    }

    fn options(extra: Value) -> Value {
        let mut options = json!({
            "auth_token": "s3cret", "endpoint": "http://hip.example/",
            "builder_room_map": {"app": "Dev Room"},
            "builder_user_map": {"app": "ada@example.org", "docs": "bob@example.org"}
        });
        options
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        options
    }

    fn sent(options: Value, envelope: Value) -> Vec<(String, Value)> {
        ReporterHarness::<Hipchat>::new(options)
            .render(&envelope)
            .into_iter()
            .map(|r| (r.url, serde_json::from_slice(&r.body).unwrap()))
            .collect()
    }

    #[test]
    fn a_builder_in_both_maps_gets_a_user_message_and_a_room_notification() {
        let requests = sent(options(json!({})), event("finished", "app"));
        let message =
            "Buildbot finished build app with result failure here: http://ci/#/builders/2/builds/8";
        assert_eq!(
            requests,
            [
                (
                    "http://hip.example/v2/user/ada%40example.org/message?auth_token=s3cret"
                        .to_string(),
                    json!({"message": message})
                ),
                (
                    "http://hip.example/v2/room/Dev%20Room/notification?auth_token=s3cret"
                        .to_string(),
                    json!({"message": message})
                ),
            ]
        );
        let started = sent(options(json!({})), event("started", "docs"));
        assert_eq!(
            started,
            [(
                "http://hip.example/v2/user/bob%40example.org/message?auth_token=s3cret"
                    .to_string(),
                json!({"message": "Buildbot started build docs here: http://ci/#/builders/2/builds/8"})
            )]
        );
    }

    #[test]
    fn no_recipient_or_an_empty_message_sends_nothing() {
        assert!(sent(options(json!({})), event("finished", "other")).is_empty());
        assert!(sent(options(json!({"message": ""})), event("finished", "app")).is_empty());
    }

    #[test]
    fn message_extra_params_and_recipients_are_templates() {
        let requests = sent(
            options(json!({
                "message": "{{ build.builder.name }}: {{ result or 'started' }}",
                "extra_params": {"color": "{{ 'red' if result == 'failure' else 'green' }}", "notify": true},
                "recipients": "{\"rooms\": [\"{{ build.builder.name }}-room\"]}"
            })),
            event("finished", "app"),
        );
        assert_eq!(
            requests,
            [(
                "http://hip.example/v2/room/app-room/notification?auth_token=s3cret".to_string(),
                json!({"message": "app: failure", "color": "red", "notify": true})
            )]
        );
    }

    #[test]
    fn options_are_checked() {
        let error = |options: Value| ReporterHarness::<Hipchat>::try_new(options).err().unwrap();
        assert_eq!(error(json!({})), "options: missing field `auth_token`");
        assert!(error(options(json!({"message": "{{"}))).starts_with("options.message: "));
        assert!(error(options(json!({"extra_params": {"color": "{%"}})))
            .starts_with("options.extra_params.color: "));
        assert!(
            error(options(json!({"endpoint": "hip.example"}))).starts_with("options.endpoint: ")
        );
        let wants = ReporterHarness::<Hipchat>::new(options(json!({}))).wants();
        assert_eq!(wants.events, [Event::Started, Event::Finished]);
    }
}
