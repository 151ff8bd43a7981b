//! Reading a webhook's JSON payload so that a missing or mistyped field is the
//! sender's error (400) and the message names it, from the root:
//! `the payload lacks 'commits[1].timestamp'`, `'repository.name' is not a string`.
//!
//! A [`Field`] is a value of the payload together with its path. The paths the
//! look-ups take may go down several objects at once, joined by dots
//! (`"links.html.href"`). A null counts as missing, except for
//! [`Field::nullable`]. [`from_form`] decodes the payload of a form-encoded
//! webhook, and [`truthy`] tests optional flags the way Buildbot does.
//!
//! ```
//! use buildmaster_plugin_api::payload::Field;
//! use buildmaster_plugin_api::serde_json::json;
//!
//! let payload = json!({
//!     "repository": {"name": "widgets", "links": {"html": {"href": "https://example.org/widgets"}}},
//!     "commits": [
//!         {"id": "3a4b5c6d", "timestamp": "2021-03-04T10:20:30+01:00", "added": ["README"]},
//!         {"id": 7}
//!     ]
//! });
//! let root = Field::root(&payload)?;
//! assert_eq!(root.text("repository.links.html.href")?, "https://example.org/widgets");
//! let commits = root.list("commits")?;
//! assert_eq!(commits[0].get("timestamp")?.as_timestamp()?, 1_614_849_630);
//! assert_eq!(commits[0].get("added")?.strings()?, ["README"]);
//! assert!(commits[0].opt("removed")?.is_none());
//!
//! assert_eq!(commits[1].text("id").unwrap_err().message, "'commits[1].id' is not a string");
//! assert_eq!(commits[1].text("url").unwrap_err().message, "the payload lacks 'commits[1].url'");
//! # Ok::<(), buildmaster_plugin_api::HookError>(())
//! ```

use serde_json::Value;

use crate::{timestamp, Args, HookError};

/// A value of the payload and its path from the root (`commits[1].author`).
#[derive(Debug, Clone)]
pub struct Field<'a> {
    value: &'a Value,
    /// Empty for the root.
    path: String,
}

impl<'a> Field<'a> {
    /// The whole payload, which must be a JSON object.
    pub fn root(payload: &'a Value) -> Result<Field<'a>, HookError> {
        let root = Field {
            value: payload,
            path: String::new(),
        };
        if payload.is_object() {
            Ok(root)
        } else {
            Err(root.invalid("a JSON object"))
        }
    }

    /// The value itself, for what the typed readers do not cover.
    pub fn value(&self) -> &'a Value {
        self.value
    }

    /// The value at `path`, which must be present and not null.
    pub fn get(&self, path: &str) -> Result<Field<'a>, HookError> {
        self.opt(path)?.ok_or_else(|| self.lacks(path))
    }

    /// The value at `path`, or `None` when it, or an object on the way to it, is
    /// absent or null. A value on the way that is not an object is an error.
    pub fn opt(&self, path: &str) -> Result<Option<Field<'a>>, HookError> {
        Ok(self.lookup(path)?.filter(|field| !field.value.is_null()))
    }

    /// The value at `path`, which must be present but may be null (`None`): the
    /// fields that Buildbot reads as `payload[key]`, where a missing key fails and
    /// a null one goes through.
    pub fn nullable(&self, path: &str) -> Result<Option<Field<'a>>, HookError> {
        let field = self.lookup(path)?.ok_or_else(|| self.lacks(path))?;
        Ok((!field.value.is_null()).then_some(field))
    }

    /// The string at `path`.
    pub fn text(&self, path: &str) -> Result<&'a str, HookError> {
        self.get(path)?.as_str()
    }

    /// The elements of the list at `path`.
    pub fn list(&self, path: &str) -> Result<Vec<Field<'a>>, HookError> {
        self.get(path)?.items()
    }

    /// A string.
    pub fn as_str(&self) -> Result<&'a str, HookError> {
        self.value.as_str().ok_or_else(|| self.invalid("a string"))
    }

    /// A JSON integer that fits an `i64`.
    pub fn as_i64(&self) -> Result<i64, HookError> {
        self.value
            .as_i64()
            .ok_or_else(|| self.invalid("an integer"))
    }

    /// A string, or a number as JSON writes it: for ids that some senders quote
    /// and others do not.
    pub fn to_text(&self) -> Result<String, HookError> {
        match self.value {
            Value::String(text) => Ok(text.clone()),
            Value::Number(number) => Ok(number.to_string()),
            _ => Err(self.invalid("a number or a string")),
        }
    }

    /// A date and time as [`timestamp::parse`] reads it, in epoch seconds.
    pub fn as_timestamp(&self) -> Result<i64, HookError> {
        timestamp::parse(self.as_str()?)
            .map_err(|e| HookError::bad_request(format!("{} is {e}", self.name())))
    }

    /// The elements of a list, each with its index in its path.
    pub fn items(&self) -> Result<Vec<Field<'a>>, HookError> {
        let items = self
            .value
            .as_array()
            .ok_or_else(|| self.invalid("a list"))?;
        Ok(items
            .iter()
            .enumerate()
            .map(|(i, value)| Field {
                value,
                path: format!("{}[{i}]", self.path),
            })
            .collect())
    }

    /// A list of strings, such as the files of a commit.
    pub fn strings(&self) -> Result<Vec<String>, HookError> {
        self.items()?
            .iter()
            .map(|item| item.as_str().map(str::to_string))
            .collect()
    }

    /// The sender's error for a value that is not what `expected` describes:
    /// `'<path>' is not <expected>`.
    pub fn invalid(&self, expected: &str) -> HookError {
        HookError::bad_request(format!("{} is not {expected}", self.name()))
    }

    /// The value at the dotted `path`, which may be null; `None` when a member on
    /// the way is absent, or null before the last one.
    fn lookup(&self, path: &str) -> Result<Option<Field<'a>>, HookError> {
        let (key, rest) = match path.split_once('.') {
            Some((key, rest)) => (key, Some(rest)),
            None => (path, None),
        };
        let object = self
            .value
            .as_object()
            .ok_or_else(|| self.invalid("an object"))?;
        let Some(value) = object.get(key) else {
            return Ok(None);
        };
        let member = Field {
            value,
            path: self.path_to(key),
        };
        match rest {
            None => Ok(Some(member)),
            Some(_) if value.is_null() => Ok(None),
            Some(rest) => member.lookup(rest),
        }
    }

    fn lacks(&self, path: &str) -> HookError {
        HookError::bad_request(format!("the payload lacks '{}'", self.path_to(path)))
    }

    fn path_to(&self, path: &str) -> String {
        if self.path.is_empty() {
            path.to_string()
        } else {
            format!("{}.{path}", self.path)
        }
    }

    /// How messages name this value.
    fn name(&self) -> String {
        if self.path.is_empty() {
            "the payload".to_string()
        } else {
            format!("'{}'", self.path)
        }
    }
}

/// Python's truth value (`null`, `false`, `0`, `""`, `[]` and `{}` are false), as
/// Buildbot's hooks test optional flags such as `deleted`.
pub fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(members) => !members.is_empty(),
    }
}

/// The JSON document in the form field `payload`, where Gitorious, Bitbucket's
/// POST service and GitHub's form-encoded webhooks put it.
pub fn from_form(args: &Args) -> Result<Value, HookError> {
    let text = args
        .first("payload")
        .ok_or_else(|| HookError::bad_request("missing form field 'payload'"))?;
    serde_json::from_str(text)
        .map_err(|e| HookError::bad_request(format!("'payload' is not valid JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{form_body, form_post};
    use crate::ErrorClass;
    use serde_json::json;

    fn message(result: Result<impl std::fmt::Debug, HookError>) -> String {
        let error = result.unwrap_err();
        assert_eq!(error.class, ErrorClass::BadRequest, "{}", error.message);
        error.message
    }

    #[test]
    fn the_root_must_be_an_object() {
        assert!(Field::root(&json!({})).is_ok());
        for payload in [json!([1]), json!("x"), json!(null)] {
            assert_eq!(
                message(Field::root(&payload)),
                "the payload is not a JSON object"
            );
        }
    }

    #[test]
    fn paths_name_the_field_at_fault() {
        let payload = json!({"a": {"b": [1, {"c": null}], "s": "x"}, "n": null});
        let root = Field::root(&payload).unwrap();
        let list = root.list("a.b").unwrap();
        assert_eq!(message(list[0].as_str()), "'a.b[0]' is not a string");
        assert_eq!(message(list[1].get("c")), "the payload lacks 'a.b[1].c'");
        assert_eq!(message(list[0].get("c")), "'a.b[0]' is not an object");
        assert_eq!(message(root.get("n")), "the payload lacks 'n'");
        assert_eq!(message(root.list("a")), "'a' is not a list");
        assert_eq!(message(root.text("a.s.t")), "'a.s' is not an object");
        assert_eq!(message(root.as_str()), "the payload is not a string");
    }

    #[test]
    fn a_missing_or_null_object_on_the_way_names_the_whole_path() {
        let payload = json!({"a": {"n": null}});
        let root = Field::root(&payload).unwrap();
        assert_eq!(message(root.text("a.b.c")), "the payload lacks 'a.b.c'");
        assert_eq!(message(root.text("a.n.c")), "the payload lacks 'a.n.c'");
        assert_eq!(message(root.text("x.y")), "the payload lacks 'x.y'");
        assert!(root.opt("a.n.c").unwrap().is_none());
        let a = root.get("a").unwrap();
        assert_eq!(message(a.text("b.c")), "the payload lacks 'a.b.c'");
    }

    #[test]
    fn optional_and_nullable_members() {
        let payload = json!({"s": "x", "n": null, "o": {"k": 1}});
        let root = Field::root(&payload).unwrap();
        assert_eq!(root.opt("s").unwrap().unwrap().as_str().unwrap(), "x");
        assert!(root.opt("n").unwrap().is_none());
        assert!(root.opt("absent").unwrap().is_none());
        assert_eq!(root.opt("o.k").unwrap().unwrap().as_i64().unwrap(), 1);
        assert_eq!(message(root.opt("s.k")), "'s' is not an object");

        assert!(root.nullable("n").unwrap().is_none());
        assert!(root.nullable("s").unwrap().is_some());
        assert_eq!(
            message(root.nullable("absent")),
            "the payload lacks 'absent'"
        );
        assert_eq!(
            message(root.nullable("o.absent")),
            "the payload lacks 'o.absent'"
        );
    }

    #[test]
    fn typed_readers() {
        let payload = json!({
            "i": 21, "big": u64::MAX, "f": 1.5, "s": "42", "b": true,
            "when": "2014-10-10T00:09:50Z", "bad_when": "yesterday",
            "files": ["a", "b"], "mixed": ["a", 2]
        });
        let root = Field::root(&payload).unwrap();
        let get = |path| root.get(path).unwrap();
        assert_eq!(get("i").as_i64().unwrap(), 21);
        for path in ["big", "f", "s"] {
            assert_eq!(
                message(get(path).as_i64()),
                format!("'{path}' is not an integer")
            );
        }
        assert_eq!(get("i").to_text().unwrap(), "21");
        assert_eq!(get("s").to_text().unwrap(), "42");
        assert_eq!(
            message(get("b").to_text()),
            "'b' is not a number or a string"
        );
        assert_eq!(get("when").as_timestamp().unwrap(), 1_412_899_790);
        assert_eq!(
            message(get("bad_when").as_timestamp()),
            "'bad_when' is not an ISO 8601 date and time"
        );
        assert_eq!(message(get("i").as_timestamp()), "'i' is not a string");
        assert_eq!(get("files").strings().unwrap(), ["a", "b"]);
        assert_eq!(
            message(get("mixed").strings()),
            "'mixed[1]' is not a string"
        );
        assert_eq!(message(get("s").strings()), "'s' is not a list");
        assert_eq!(
            get("s").invalid("an owner/name pair").message,
            "'s' is not an owner/name pair"
        );
    }

    #[test]
    fn truthiness_is_pythons() {
        for value in [
            json!(true),
            json!(1),
            json!(-0.5),
            json!("x"),
            json!([0]),
            json!({"a": 0}),
        ] {
            assert!(truthy(&value), "{value}");
        }
        for value in [
            json!(null),
            json!(false),
            json!(0),
            json!(0.0),
            json!(""),
            json!([]),
            json!({}),
        ] {
            assert!(!truthy(&value), "{value}");
        }
    }

    #[test]
    fn the_form_field_payload_holds_json() {
        let body = form_body(&[("payload", r#"{"a": 2}"#)]);
        let args = form_post("/change_hook/x", &body).args();
        assert_eq!(from_form(&args).unwrap(), json!({"a": 2}));
        let args = form_post("/change_hook/x", "other=1").args();
        assert_eq!(message(from_form(&args)), "missing form field 'payload'");
        let args = form_post("/change_hook/x", "payload=%7B").args();
        assert!(message(from_form(&args)).starts_with("'payload' is not valid JSON: "));
    }
}
