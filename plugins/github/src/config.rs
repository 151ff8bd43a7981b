//! The dialect's options, checked once when the dialect is built.

use regex::Regex;
use serde_json::{Map, Value};

use crate::glob::Glob;

/// Commit messages that match one of these skip the build (Buildbot's defaults).
const DEFAULT_SKIPS: [&str; 2] = [r"\[ *ci *skip *\]", r"\[ *skip *ci *\]"];

const DEFAULT_API_ENDPOINT: &str = "https://api.github.com";

const KNOWN_OPTIONS: [&str; 10] = [
    "secret",
    "strict",
    "codebase",
    "github_property_whitelist",
    "skips",
    "github_api_endpoint",
    "token",
    "pullrequest_ref",
    "debug",
    "verify",
];

/// The options of one `github` dialect. Deliberately not `Debug`: it holds secrets.
pub struct Config {
    /// Every secret a signature may be made with (several while one is rotated).
    pub secrets: Vec<String>,
    pub codebase: Option<String>,
    pub property_whitelist: Vec<Glob>,
    pub skips: Vec<Regex>,
    /// Without a trailing `/`.
    pub api_endpoint: String,
    pub token: Option<String>,
    pub pullrequest_ref: String,
    /// Log every event and payload received.
    pub debug: bool,
}

impl Config {
    pub fn from_json(options: &Value) -> Result<Config, String> {
        let empty = Map::new();
        let options = match options {
            Value::Object(map) => map,
            Value::Null => &empty,
            _ => return Err("the github dialect's options must be a table".into()),
        };
        if options.contains_key("class") {
            return Err(
                "option 'class' (a replacement handler class) is not supported: write a dialect plugin instead"
                    .into(),
            );
        }
        if let Some(unknown) = options
            .keys()
            .find(|k| !KNOWN_OPTIONS.contains(&k.as_str()))
        {
            return Err(format!(
                "unknown option '{unknown}' (known options: {})",
                KNOWN_OPTIONS.join(", ")
            ));
        }

        let secrets = secrets(options.get("secret"))?;
        let strict = boolean(options, "strict")?.unwrap_or(false);
        if strict && secrets.is_empty() {
            return Err("'strict' is set but no 'secret' is configured".into());
        }
        if boolean(options, "verify")? == Some(false) {
            return Err(
                "'verify = false' is not supported: the master always checks the API's TLS certificate"
                    .into(),
            );
        }
        let skips = match options.get("skips") {
            None => DEFAULT_SKIPS.iter().map(|s| s.to_string()).collect(),
            Some(value) => string_list(value, "skips")?,
        };
        let skips = skips
            .iter()
            .enumerate()
            .map(|(i, pattern)| {
                Regex::new(pattern).map_err(|e| {
                    format!("'skips' entry {i} is not a valid regular expression: {e}")
                })
            })
            .collect::<Result<_, _>>()?;
        let property_whitelist = match options.get("github_property_whitelist") {
            None => Vec::new(),
            Some(value) => string_list(value, "github_property_whitelist")?
                .iter()
                .map(|p| Glob::new(p))
                .collect(),
        };
        let api_endpoint = non_empty_string(options, "github_api_endpoint")?
            .unwrap_or(DEFAULT_API_ENDPOINT)
            .trim_end_matches('/')
            .to_string();
        // An empty token, like none, sends no `Authorization` header.
        let token = string(options, "token")?
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        Ok(Config {
            secrets,
            codebase: string(options, "codebase")?.map(str::to_string),
            property_whitelist,
            skips,
            api_endpoint,
            token,
            pullrequest_ref: non_empty_string(options, "pullrequest_ref")?
                .unwrap_or("merge")
                .to_string(),
            debug: boolean(options, "debug")?.unwrap_or(false),
        })
    }

    /// Whether `message` asks for no build.
    pub fn skips(&self, message: &str) -> bool {
        self.skips.iter().any(|skip| skip.is_match(message))
    }
}

/// `secret` is one string or a list of them; none may be empty. The values are
/// never put into a message.
fn secrets(value: Option<&Value>) -> Result<Vec<String>, String> {
    let secrets = match value {
        None => return Ok(Vec::new()),
        Some(Value::String(secret)) => vec![secret.clone()],
        Some(list @ Value::Array(_)) => string_list(list, "secret")?,
        Some(_) => return Err("'secret' must be a string or a list of strings".into()),
    };
    if secrets.is_empty() || secrets.iter().any(String::is_empty) {
        return Err("'secret' must not be empty".into());
    }
    Ok(secrets)
}

fn string<'a>(options: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, String> {
    match options.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("'{key}' must be a string")),
    }
}

fn non_empty_string<'a>(
    options: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a str>, String> {
    match string(options, key)? {
        Some("") => Err(format!("'{key}' must not be empty")),
        other => Ok(other),
    }
}

fn boolean(options: &Map<String, Value>, key: &str) -> Result<Option<bool>, String> {
    match options.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(format!("'{key}' must be true or false")),
    }
}

fn string_list(value: &Value, key: &str) -> Result<Vec<String>, String> {
    let error = || format!("'{key}' must be a list of strings");
    value
        .as_array()
        .ok_or_else(error)?
        .iter()
        .map(|item| item.as_str().map(str::to_string).ok_or_else(error))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn error(options: Value) -> String {
        match Config::from_json(&options) {
            Ok(_) => panic!("{options} was accepted"),
            Err(e) => e,
        }
    }

    #[test]
    fn defaults() {
        let config = Config::from_json(&json!({})).unwrap();
        assert!(config.secrets.is_empty());
        assert_eq!(config.codebase, None);
        assert!(config.property_whitelist.is_empty());
        assert_eq!(config.api_endpoint, "https://api.github.com");
        assert_eq!(config.token, None);
        assert_eq!(config.pullrequest_ref, "merge");
        assert!(!config.debug);
        assert!(Config::from_json(&Value::Null).is_ok());
    }

    #[test]
    fn default_skip_patterns_allow_spaces_inside_the_brackets() {
        let config = Config::from_json(&json!({})).unwrap();
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
        let config = Config::from_json(&json!({"skips": [r"\[ *bb *skip *\]"]})).unwrap();
        assert!(config.skips("x [ bb skip ]"));
        assert!(!config.skips("x [ci skip]"));
        let config = Config::from_json(&json!({"skips": []})).unwrap();
        assert!(!config.skips("[ci skip]"));
    }

    #[test]
    fn secret_is_a_string_or_a_list() {
        let config = Config::from_json(&json!({"secret": "s1"})).unwrap();
        assert_eq!(config.secrets, ["s1"]);
        let config = Config::from_json(&json!({"secret": ["s1", "s2"], "strict": true})).unwrap();
        assert_eq!(config.secrets, ["s1", "s2"]);
    }

    #[test]
    fn endpoint_loses_its_trailing_slash_and_an_empty_token_is_none() {
        let config = Config::from_json(
            &json!({"github_api_endpoint": "https://ghe.example/api/v3/", "token": ""}),
        )
        .unwrap();
        assert_eq!(config.api_endpoint, "https://ghe.example/api/v3");
        assert_eq!(config.token, None);
    }

    #[test]
    fn bad_options_are_refused_with_a_clear_message() {
        for (options, message) in [
            (
                json!({"strict": true}),
                "'strict' is set but no 'secret' is configured",
            ),
            (
                json!({"strict": "yes", "secret": "s"}),
                "'strict' must be true or false",
            ),
            (
                json!({"secret": 5}),
                "'secret' must be a string or a list of strings",
            ),
            (
                json!({"secret": ["a", 1]}),
                "'secret' must be a list of strings",
            ),
            (json!({"secret": ""}), "'secret' must not be empty"),
            (json!({"secret": []}), "'secret' must not be empty"),
            (json!({"skips": "x"}), "'skips' must be a list of strings"),
            (
                json!({"github_property_whitelist": [1]}),
                "'github_property_whitelist' must be a list of strings",
            ),
            (json!({"codebase": 3}), "'codebase' must be a string"),
            (json!({"token": true}), "'token' must be a string"),
            (
                json!({"pullrequest_ref": ""}),
                "'pullrequest_ref' must not be empty",
            ),
            (
                json!({"github_api_endpoint": ""}),
                "'github_api_endpoint' must not be empty",
            ),
            (json!({"debug": 1}), "'debug' must be true or false"),
            (json!(["x"]), "the github dialect's options must be a table"),
        ] {
            assert_eq!(error(options.clone()), message, "{options}");
        }
        assert!(error(json!({"skips": ["("]}))
            .starts_with("'skips' entry 0 is not a valid regular expression"));
        assert!(error(json!({"verify": false})).starts_with("'verify = false' is not supported"));
        assert!(error(json!({"class": "x"})).starts_with("option 'class'"));
        assert!(error(json!({"secrets": "x"})).starts_with("unknown option 'secrets'"));
        assert!(Config::from_json(&json!({"verify": true, "debug": true})).is_ok());
    }

    #[test]
    fn refusals_never_show_a_secret() {
        let message = error(json!({"secret": ["hunter2", 7]}));
        assert!(!message.contains("hunter2"));
    }
}
