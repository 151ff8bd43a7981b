//! Typed plugin options.
//!
//! A dialect or reporter names its options type ([`Dialect::Options`](crate::Dialect::Options));
//! the SDK reads the plugin's `master.toml` table into it before the plugin
//! sees anything. A key the type does not know is refused, so a misspelt
//! `secret` cannot silently leave a hook open, and every error names the key
//! path from `options`:
//!
//! ```
//! use buildmaster_plugin_api::options::{self, Secrets};
//! use buildmaster_plugin_api::serde_json::json;
//!
//! #[derive(serde::Deserialize)]
//! struct Options {
//!     #[serde(default)]
//!     secret: Option<Secrets>,
//!     #[serde(default)]
//!     strict: bool,
//! }
//!
//! let parsed: Options = options::parse(&json!({"secret": ["old", "new"]})).unwrap();
//! assert_eq!(parsed.secret.unwrap().len(), 2);
//! assert_eq!(
//!     options::parse::<Options>(&json!({"secret": 5})).err().unwrap(),
//!     "options.secret: expected a string or a list of strings, found an integer"
//! );
//! assert_eq!(
//!     options::parse::<Options>(&json!({"secrets": "x"})).err().unwrap(),
//!     "options.secrets: unknown option (known: secret, strict)"
//! );
//! ```
//!
//! Values the operator wrote as `{ from_secret = "..." }` or `{ from_env = "..." }`
//! arrive resolved: the plugin sees the secret itself. Keep secrets in
//! [`Secret`] / [`Secrets`], whose `Debug` never shows them and whose
//! comparisons take constant time. Messages never quote a value, so a secret
//! put under the wrong key cannot reach a log either.

use std::fmt;

use serde::de::{self, DeserializeOwned, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use subtle::ConstantTimeEq;

/// Reads `value` (the plugin's options table as JSON; `null` counts as an empty
/// table) into `T`. Unknown keys are refused; the error is one line starting
/// with the key path, e.g. `options.skips[1]: expected a string, found an integer`.
pub fn parse<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T, String> {
    let empty = serde_json::Value::Object(serde_json::Map::new());
    let value = if value.is_null() { &empty } else { value };
    let mut unknown = Vec::new();
    let parsed = {
        // serde_ignored writes `?` for the inside of an `Option`.
        let mut note =
            |path: serde_ignored::Path<'_>| unknown.push(path.to_string().replace("?.", ""));
        let deserializer = serde_ignored::Deserializer::new(value, &mut note);
        serde_path_to_error::deserialize::<_, T>(deserializer)
    };
    if let Some(first) = unknown.first() {
        let hint = match known_keys::<T>() {
            _ if first.contains(['.', '[']) => String::new(),
            Some(known) if known.is_empty() => " (it takes no options)".to_string(),
            Some(known) => format!(" (known: {})", known.join(", ")),
            None => String::new(),
        };
        return Err(format!("options.{first}: unknown option{hint}"));
    }
    parsed.map_err(|error| {
        let path = error.path().to_string();
        let message = describe(&error.into_inner().to_string());
        if path == "." {
            format!("options: {message}")
        } else {
            format!("options.{path}: {message}")
        }
    })
}

/// Rewrites serde's messages so that they never quote the value that was
/// given (it may be a secret under the wrong key): `invalid type: string
/// "hunter2", expected a boolean` becomes `expected a boolean, found a
/// string`, and `unknown variant \`x\`, expected one of ...` keeps only what
/// was expected. The expectation is what follows the last `, expected `, so a
/// value that contains those words cannot show through.
fn describe(message: &str) -> String {
    let expected = |rest: &str| {
        rest.rsplit_once(", expected ")
            .map(|(given, expected)| (given.to_string(), expected.replace("a sequence", "a list")))
    };
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some((given, expected)) = message.strip_prefix(prefix).and_then(expected) {
            return format!("expected {expected}, found {}", kind(&given));
        }
    }
    if let Some((_, expected)) = message.strip_prefix("unknown variant ").and_then(expected) {
        return format!("expected {expected}");
    }
    message.to_string()
}

/// What serde's `Unexpected` names, without the value.
fn kind(unexpected: &str) -> &'static str {
    match unexpected.split_whitespace().next().unwrap_or_default() {
        "string" => "a string",
        "integer" => "an integer",
        "floating" => "a number",
        "boolean" => "a boolean",
        "map" => "a table",
        "sequence" => "a list",
        "unit" | "null" => "nothing",
        _ => "another value",
    }
}

/// The field names of a struct `T`, as serde's derive declares them; `None`
/// for anything else. Read with a deserializer that answers only that question.
fn known_keys<T: DeserializeOwned>() -> Option<Vec<&'static str>> {
    struct Fields(Option<Vec<&'static str>>);
    #[derive(Debug)]
    struct Stop;
    impl fmt::Display for Stop {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("stop")
        }
    }
    impl std::error::Error for Stop {}
    impl de::Error for Stop {
        fn custom<M: fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    impl<'de> Deserializer<'de> for &mut Fields {
        type Error = Stop;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0 = Some(fields.to_vec());
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields = Fields(None);
    let _ = T::deserialize(&mut fields);
    fields.0
}

/// The options of a dialect or reporter that takes none: any key is refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct NoOptions {}

/// A secret option value: not empty, never shown by `Debug`, compared in
/// constant time.
#[derive(Clone, Eq)]
pub struct Secret(String);

impl PartialEq for Secret {
    fn eq(&self, other: &Secret) -> bool {
        self.matches(other.0.as_bytes())
    }
}

impl Secret {
    /// Wraps a value (for tests and for plugins that build one themselves).
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, to sign or send with.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` is this secret, in time that does not depend on
    /// where they differ.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(candidate).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Secret, D::Error> {
        let value = String::deserialize(deserializer)?;
        if value.is_empty() {
            return Err(de::Error::custom("must not be empty"));
        }
        Ok(Secret(value))
    }
}

/// One secret or several live at once (while one is rotated): written as a
/// string or a list of strings, never empty.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Secrets(Vec<Secret>);

impl Secrets {
    pub fn new(secrets: Vec<Secret>) -> Secrets {
        Secrets(secrets)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Secret> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `candidate` is any of the secrets; every one is compared, in
    /// constant time, so the time taken tells nothing about which matched.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        self.0
            .iter()
            .fold(false, |found, secret| secret.matches(candidate) | found)
    }
}

impl<'de> Deserialize<'de> for Secrets {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Secrets, D::Error> {
        struct OneOrMany;
        impl<'de> Visitor<'de> for OneOrMany {
            type Value = Vec<Secret>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Vec<Secret>, E> {
                if value.is_empty() {
                    return Err(E::custom("must not be empty"));
                }
                Ok(vec![Secret(value.to_string())])
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Secret>, A::Error> {
                let mut secrets = Vec::new();
                while let Some(secret) = seq.next_element::<Secret>()? {
                    secrets.push(secret);
                }
                if secrets.is_empty() {
                    return Err(de::Error::custom("must not be an empty list"));
                }
                Ok(secrets)
            }
        }
        deserializer.deserialize_any(OneOrMany).map(Secrets)
    }
}

/// Reads `true`, `false` or a missing key as `false`, but refuses anything
/// else; for options that Buildbot accepts only as booleans. Use with
/// `#[serde(default)]` on a `bool` field directly: this exists for fields that
/// must be `true` when given, like `verify`.
pub fn only_true<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    if bool::deserialize(deserializer)? {
        Ok(true)
    } else {
        Err(de::Error::custom(
            "only true is supported: the master always checks TLS certificates",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    struct Options {
        #[serde(default)]
        secret: Option<Secrets>,
        #[serde(default)]
        skips: Vec<String>,
        #[serde(default)]
        nested: Option<Nested>,
        #[serde(default)]
        strict: bool,
    }

    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    struct Nested {
        url: String,
    }

    fn error(value: serde_json::Value) -> String {
        parse::<Options>(&value).unwrap_err()
    }

    #[test]
    fn errors_name_the_key_path() {
        assert_eq!(
            error(json!({"secret": 5})),
            "options.secret: expected a string or a list of strings, found an integer"
        );
        assert_eq!(
            error(json!({"skips": ["a", 1]})),
            "options.skips[1]: expected a string, found an integer"
        );
        assert_eq!(
            error(json!({"nested": {}})),
            "options.nested: missing field `url`"
        );
        assert_eq!(
            error(json!({"strict": "yes"})),
            "options.strict: expected a boolean, found a string"
        );
        assert_eq!(
            error(json!("x")),
            "options: expected struct Options, found a string"
        );
    }

    #[test]
    fn unknown_keys_are_refused_at_any_depth() {
        assert_eq!(
            error(json!({"secrets": "x"})),
            "options.secrets: unknown option (known: secret, skips, nested, strict)"
        );
        assert_eq!(
            error(json!({"nested": {"url": "u", "urll": "v"}})),
            "options.nested.urll: unknown option"
        );
    }

    #[test]
    fn an_unknown_enum_value_is_not_echoed() {
        #[derive(Deserialize, Debug)]
        #[serde(rename_all = "lowercase")]
        #[allow(dead_code)]
        enum Mode {
            All,
            Failing,
        }
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct WithMode {
            mode: Mode,
        }
        assert_eq!(
            parse::<WithMode>(&json!({"mode": "hunter2"})).unwrap_err(),
            "options.mode: expected `all` or `failing`"
        );
    }

    #[test]
    fn no_options_refuses_every_key() {
        assert!(parse::<NoOptions>(&json!({})).is_ok());
        assert!(parse::<NoOptions>(&serde_json::Value::Null).is_ok());
        assert_eq!(
            parse::<NoOptions>(&json!({"project": "x"})).unwrap_err(),
            "options.project: unknown option (it takes no options)"
        );
    }

    #[test]
    fn secrets_are_one_or_many_never_empty_and_never_shown() {
        let one: Options = parse(&json!({"secret": "s"})).unwrap();
        assert_eq!(one.secret.unwrap().len(), 1);
        let null: Options = parse(&serde_json::Value::Null).unwrap();
        assert!(null.secret.is_none());
        assert_eq!(
            error(json!({"secret": ""})),
            "options.secret: must not be empty"
        );
        assert_eq!(
            error(json!({"secret": []})),
            "options.secret: must not be an empty list"
        );
        assert_eq!(
            error(json!({"secret": ["a", ""]})),
            "options.secret[1]: must not be empty"
        );
        let message = error(json!({"strict": "hunter2"}));
        assert!(!message.contains("hunter2"), "{message}");
        let message = error(json!({"strict": "a, expected hunter2"}));
        assert_eq!(
            message,
            "options.strict: expected a boolean, found a string"
        );
        let secrets: Options = parse(&json!({"secret": ["hunter2", "other"]})).unwrap();
        let secrets = secrets.secret.unwrap();
        assert!(!format!("{secrets:?}").contains("hunter2"));
        assert!(secrets.matches(b"other"));
        assert!(secrets.matches(b"hunter2"));
        assert!(!secrets.matches(b"hunter"));
    }
}
