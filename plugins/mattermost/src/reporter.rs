//! The `mattermost` reporter: finished builds posted to a Mattermost
//! incoming webhook, as a line of text and an attachment coloured by the
//! result, with the build link, branch and revision, and for a failure the
//! failing step and the blamelist.
//!
//! Options:
//! - `url` (required): the incoming webhook's URL (a secret: it is the key).
//! - `channel`, `username`, `icon_url`: override the webhook's defaults.
//! - `text`: a template (minijinja, Jinja2's syntax) for the message's line,
//!   from `build` and `event`; default `Build <builder> #<number>: <result>`.

use buildmaster_plugin_api::options::Secret;
use buildmaster_plugin_api::reporter::{Envelope, Event};
use buildmaster_plugin_api::{Host, OutgoingRequest, Reporter, Wants};
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// `[[reporters]]` with `type = "mattermost"`: its own keys.
#[derive(Deserialize)]
pub struct ReporterOptions {
    url: Secret,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    icon_url: Option<String>,
    #[serde(default)]
    text: Option<String>,
}

/// The `mattermost` reporter.
pub struct MattermostReporter {
    options: ReporterOptions,
}

/// Buildbot's result codes: name and attachment colour.
const RESULTS: [(&str, &str); 7] = [
    ("success", "#2e7d32"),
    ("warnings", "#f9a825"),
    ("failure", "#c62828"),
    ("skipped", "#9e9e9e"),
    ("exception", "#6a1b9a"),
    ("retry", "#9e9e9e"),
    ("cancelled", "#9e9e9e"),
];

impl Reporter for MattermostReporter {
    type Options = ReporterOptions;

    fn new(_name: &str, options: ReporterOptions) -> Result<Self, String> {
        let url = options.url.expose();
        if !url.starts_with("http://") && !url.starts_with("https://") {
            return Err("options.url: must be an http:// or https:// URL".into());
        }
        if let Some(text) = &options.text {
            minijinja::Environment::new()
                .template_from_str(text)
                .map_err(|e| format!("options.text: {e}"))?;
        }
        Ok(MattermostReporter { options })
    }

    fn wants(&self) -> Wants {
        Wants {
            events: vec![Event::Finished],
            steps: true,
            ..Wants::default()
        }
    }

    fn render(
        &self,
        envelope: &Envelope,
        _host: &Host<'_>,
    ) -> Result<Vec<OutgoingRequest>, String> {
        let build = envelope.build()?;
        let builder = build["builder"]["name"].as_str().unwrap_or("?");
        let (result, color) = build["results"]
            .as_u64()
            .and_then(|code| RESULTS.get(code as usize).copied())
            .unwrap_or(("unknown", "#9e9e9e"));
        let text = match &self.options.text {
            Some(template) => minijinja::Environment::new()
                .render_str(
                    template,
                    minijinja::context! { build => build, event => envelope.event.name() },
                )
                .map_err(|e| format!("the text template failed: {e}"))?,
            None => format!("Build {builder} #{}: {result}", build["number"]),
        };
        let url = build["url"].as_str().unwrap_or_default();
        let stamp = &build["buildset"]["sourcestamps"][0];
        let mut fields = vec![
            field("Branch", stamp["branch"].as_str().unwrap_or("")),
            field(
                "Revision",
                &stamp["revision"]
                    .as_str()
                    .unwrap_or("")
                    .chars()
                    .take(12)
                    .collect::<String>(),
            ),
        ];
        if result == "failure" {
            let failing = build["steps"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|step| step["results"] == 2)
                .and_then(|step| step["name"].as_str());
            if let Some(step) = failing {
                fields.push(field("Failing step", step));
            }
            let blamelist: Vec<&str> = build["blamelist"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if !blamelist.is_empty() {
                fields.push(field("Blamelist", &blamelist.join(", ")));
            }
        }
        let mut message = Map::new();
        message.insert("text".into(), json!(text));
        for (key, value) in [
            ("channel", &self.options.channel),
            ("username", &self.options.username),
            ("icon_url", &self.options.icon_url),
        ] {
            if let Some(value) = value {
                message.insert(key.into(), json!(value));
            }
        }
        message.insert(
            "attachments".into(),
            json!([{
                "fallback": text,
                "color": color,
                "title": format!("{builder} #{}: {}", build["number"], build["state_string"].as_str().unwrap_or(result)),
                "title_link": url,
                "fields": fields,
            }]),
        );
        Ok(vec![OutgoingRequest::post_json(
            self.options.url.expose(),
            &Value::Object(message),
        )
        .idempotency_key(format!(
            "build-{}-{}",
            build["buildid"],
            envelope.event.name()
        ))])
    }
}

fn field(title: &str, value: &str) -> Value {
    json!({"short": true, "title": title, "value": value})
}

#[cfg(test)]
mod tests {
    use super::*;
    use buildmaster_plugin_api::testing::ReporterHarness;

    const HOOK: &str = "https://chat.example/hooks/xyz";

    fn finished(results: u64) -> Value {
        json!({"event": "finished", "build": {
            "buildid": 5, "number": 9, "results": results,
            "state_string": if results == 0 { "build successful" } else { "failed compile" },
            "builder": {"name": "app"},
            "url": "http://ci/#/builders/1/builds/9",
            "buildset": {"sourcestamps": [{"branch": "main", "revision": "0123456789abcdef"}]},
            "blamelist": ["Ada", "Bob"],
            "steps": [
                {"name": "checkout", "results": 0},
                {"name": "compile", "results": if results == 0 { 0 } else { 2 }}
            ]
        }})
    }

    fn message(options: Value, results: u64) -> Value {
        let reporter = ReporterHarness::<MattermostReporter>::new(options);
        let requests = reporter.render(&finished(results));
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].url, HOOK);
        serde_json::from_slice(&requests[0].body).unwrap()
    }

    #[test]
    fn a_success_is_green_with_branch_and_revision() {
        let sent = message(json!({"url": HOOK}), 0);
        assert_eq!(sent["text"], "Build app #9: success");
        let attachment = &sent["attachments"][0];
        assert_eq!(attachment["color"], "#2e7d32");
        assert_eq!(attachment["title"], "app #9: build successful");
        assert_eq!(attachment["title_link"], "http://ci/#/builders/1/builds/9");
        assert_eq!(
            attachment["fields"],
            json!([
                {"short": true, "title": "Branch", "value": "main"},
                {"short": true, "title": "Revision", "value": "0123456789ab"}
            ])
        );
        assert!(sent.get("channel").is_none());
    }

    #[test]
    fn a_failure_names_the_failing_step_and_the_blamelist() {
        let sent = message(
            json!({"url": HOOK, "channel": "ci", "username": "buildbot", "icon_url": "http://i/x.png"}),
            2,
        );
        assert_eq!(sent["text"], "Build app #9: failure");
        assert_eq!(
            (sent["channel"].as_str(), sent["username"].as_str()),
            (Some("ci"), Some("buildbot"))
        );
        assert_eq!(sent["icon_url"], "http://i/x.png");
        let attachment = &sent["attachments"][0];
        assert_eq!(attachment["color"], "#c62828");
        assert_eq!(
            attachment["fields"][2],
            json!({"short": true, "title": "Failing step", "value": "compile"})
        );
        assert_eq!(
            attachment["fields"][3],
            json!({"short": true, "title": "Blamelist", "value": "Ada, Bob"})
        );
    }

    #[test]
    fn a_template_replaces_the_text() {
        let sent = message(
            json!({"url": HOOK, "text": "{{ build.builder.name }} is {{ 'green' if build.results == 0 else 'red' }}"}),
            2,
        );
        assert_eq!(sent["text"], "app is red");
        assert_eq!(sent["attachments"][0]["fallback"], "app is red");
    }

    #[test]
    fn options_are_checked() {
        let error = |options: Value| {
            ReporterHarness::<MattermostReporter>::try_new(options)
                .err()
                .unwrap()
        };
        assert_eq!(error(json!({})), "options: missing field `url`");
        assert_eq!(
            error(json!({"url": "hooks/x"})),
            "options.url: must be an http:// or https:// URL"
        );
        assert!(error(json!({"url": HOOK, "text": "{{"})).starts_with("options.text: "));
        assert!(error(json!({"url": HOOK, "chanel": "x"}))
            .starts_with("options.chanel: unknown option"));
        let wants = ReporterHarness::<MattermostReporter>::new(json!({"url": HOOK})).wants();
        assert_eq!(wants.events, [Event::Finished]);
        assert!(wants.steps);
    }
}
