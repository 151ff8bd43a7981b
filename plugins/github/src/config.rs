//! The dialect's options, checked once when the dialect is built.

use buildmaster_plugin_api::options::{only_true, Secrets};
use buildmaster_plugin_api::properties::PropertyWhitelist;
use regex::Regex;
use serde::de::{Deserializer, Error as _};
use serde::Deserialize;

/// Commit messages that match one of these skip the build (Buildbot's defaults).
const DEFAULT_SKIPS: [&str; 2] = [r"\[ *ci *skip *\]", r"\[ *skip *ci *\]"];

const DEFAULT_API_ENDPOINT: &str = "https://api.github.com";

/// `[www.change_hook_dialects.github]`, as written.
#[derive(Deserialize)]
pub struct Options {
    #[serde(default)]
    secret: Option<Secrets>,
    #[serde(default)]
    strict: bool,
    #[serde(default)]
    codebase: Option<String>,
    #[serde(default)]
    github_property_whitelist: PropertyWhitelist,
    #[serde(default)]
    skips: Option<Vec<String>>,
    #[serde(default, deserialize_with = "non_empty")]
    github_api_endpoint: Option<String>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default, deserialize_with = "non_empty")]
    pullrequest_ref: Option<String>,
    #[serde(default)]
    debug: bool,
    #[serde(default, deserialize_with = "only_true")]
    #[allow(
        dead_code,
        reason = "accepted as true only; certificates are always checked"
    )]
    verify: bool,
    #[serde(default, deserialize_with = "no_class")]
    #[allow(dead_code, reason = "always refused")]
    class: (),
}

fn non_empty<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    match String::deserialize(deserializer)? {
        value if value.is_empty() => Err(D::Error::custom("must not be empty")),
        value => Ok(Some(value)),
    }
}

fn no_class<'de, D: Deserializer<'de>>(_: D) -> Result<(), D::Error> {
    Err(D::Error::custom(
        "a replacement handler class is not supported: write a dialect plugin instead",
    ))
}

/// The options of one `github` dialect, checked. Deliberately not `Debug`.
pub struct Config {
    /// Every secret a signature may be made with (several while one is rotated).
    pub secrets: Option<Secrets>,
    pub codebase: Option<String>,
    pub property_whitelist: PropertyWhitelist,
    pub skips: Vec<Regex>,
    /// Without a trailing `/`.
    pub api_endpoint: String,
    pub token: Option<String>,
    pub pullrequest_ref: String,
    /// Log every event and payload received.
    pub debug: bool,
}

impl Config {
    pub fn new(options: Options) -> Result<Config, String> {
        if options.strict && options.secret.is_none() {
            return Err("options.strict: set, but no 'secret' is configured".into());
        }
        let skips = match options.skips {
            None => DEFAULT_SKIPS.iter().map(|s| s.to_string()).collect(),
            Some(skips) => skips,
        };
        let skips = skips
            .iter()
            .enumerate()
            .map(|(i, pattern)| {
                Regex::new(pattern)
                    .map_err(|e| format!("options.skips[{i}]: not a valid regular expression: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Config {
            secrets: options.secret,
            codebase: options.codebase,
            property_whitelist: options.github_property_whitelist,
            skips,
            api_endpoint: options
                .github_api_endpoint
                .as_deref()
                .unwrap_or(DEFAULT_API_ENDPOINT)
                .trim_end_matches('/')
                .to_string(),
            // An empty token, like none, sends no `Authorization` header.
            token: options.token.filter(|t| !t.is_empty()),
            pullrequest_ref: options.pullrequest_ref.unwrap_or_else(|| "merge".into()),
            debug: options.debug,
        })
    }

    /// Whether `message` asks for no build.
    pub fn skips(&self, message: &str) -> bool {
        self.skips.iter().any(|skip| skip.is_match(message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn config(options: Value) -> Result<Config, String> {
        Config::new(buildmaster_plugin_api::options::parse(&options)?)
    }

    fn error(options: Value) -> String {
        match config(options.clone()) {
            Ok(_) => panic!("{options} was accepted"),
            Err(e) => e,
        }
    }

    #[test]
    fn defaults() {
        let config = config(json!({})).unwrap();
        assert!(config.secrets.is_none());
        assert_eq!(config.codebase, None);
        assert!(config.property_whitelist.is_empty());
        assert_eq!(config.api_endpoint, "https://api.github.com");
        assert_eq!(config.token, None);
        assert_eq!(config.pullrequest_ref, "merge");
        assert!(!config.debug);
    }

    #[test]
    fn default_skip_patterns_allow_spaces_inside_the_brackets() {
        let config = config(json!({})).unwrap();
        for message in [
            "fix [ci skip]",
            "[skip ci] docs",
            "x [  ci   skip ] y",
            "[ skip ci ]",
        ] {
            assert!(config.skips(message), "{message}");
        }
        for message in ["fix", "[ci-skip]", "ci skip", "[CI SKIP]", "[bb skip]"] {
            assert!(!config.skips(message), "{message}");
        }
    }

    #[test]
    fn custom_skips_replace_the_defaults() {
        let custom = config(json!({"skips": [r"\[ *bb *skip *\]"]})).unwrap();
        assert!(custom.skips("x [ bb skip ]"));
        assert!(!custom.skips("x [ci skip]"));
        let none = config(json!({"skips": []})).unwrap();
        assert!(!none.skips("[ci skip]"));
    }

    #[test]
    fn secret_is_a_string_or_a_list() {
        let one = config(json!({"secret": "s1"})).unwrap();
        assert_eq!(one.secrets.unwrap().len(), 1);
        let two = config(json!({"secret": ["s1", "s2"], "strict": true})).unwrap();
        assert_eq!(two.secrets.unwrap().len(), 2);
    }

    #[test]
    fn endpoint_loses_its_trailing_slash_and_an_empty_token_is_none() {
        let config =
            config(json!({"github_api_endpoint": "https://ghe.example/api/v3/", "token": ""}))
                .unwrap();
        assert_eq!(config.api_endpoint, "https://ghe.example/api/v3");
        assert_eq!(config.token, None);
    }

    #[test]
    fn bad_options_are_refused_with_their_key_path() {
        for (options, message) in [
            (
                json!({"strict": true}),
                "options.strict: set, but no 'secret' is configured",
            ),
            (
                json!({"strict": "yes", "secret": "s"}),
                "options.strict: expected a boolean, found a string",
            ),
            (
                json!({"secret": 5}),
                "options.secret: expected a string or a list of strings, found an integer",
            ),
            (
                json!({"secret": ["a", 1]}),
                "options.secret[1]: expected a string, found an integer",
            ),
            (json!({"secret": ""}), "options.secret: must not be empty"),
            (
                json!({"secret": []}),
                "options.secret: must not be an empty list",
            ),
            (
                json!({"skips": "x"}),
                "options.skips: expected a list, found a string",
            ),
            (
                json!({"github_property_whitelist": [1]}),
                "options.github_property_whitelist[0]: expected a string, found an integer",
            ),
            (
                json!({"codebase": 3}),
                "options.codebase: expected a string, found an integer",
            ),
            (
                json!({"token": true}),
                "options.token: expected a string, found a boolean",
            ),
            (
                json!({"pullrequest_ref": ""}),
                "options.pullrequest_ref: must not be empty",
            ),
            (
                json!({"github_api_endpoint": ""}),
                "options.github_api_endpoint: must not be empty",
            ),
            (
                json!({"debug": 1}),
                "options.debug: expected a boolean, found an integer",
            ),
        ] {
            assert_eq!(error(options.clone()), message, "{options}");
        }
        assert!(error(json!({"skips": ["("]}))
            .starts_with("options.skips[0]: not a valid regular expression"));
        assert!(error(json!({"verify": false})).starts_with("options.verify: only true"));
        assert!(error(json!({"class": "x"})).starts_with("options.class: a replacement handler"));
        assert!(error(json!({"secrets": "x"}))
            .starts_with("options.secrets: unknown option (known: secret, strict,"));
        assert!(config(json!({"verify": true, "debug": true})).is_ok());
    }

    #[test]
    fn refusals_never_show_a_secret() {
        let message = error(json!({"secret": ["hunter2", 7]}));
        assert!(!message.contains("hunter2"));
        let message = error(json!({"debug": "hunter2"}));
        assert!(!message.contains("hunter2"));
    }
}
