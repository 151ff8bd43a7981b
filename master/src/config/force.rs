//! The force scheduler's parameters, as Buildbot's `ForceScheduler` has them:
//! what master.toml declares, and the validation of what a user submits.
//!
//! The fixed parameters are `reason`, `username` and the default codebase's
//! `branch`, `revision`, `repository` and `project`; `properties` adds custom
//! ones of type string, text, int, boolean or choice. A submission is checked
//! as a whole and every invalid field is reported at once.

use std::collections::BTreeMap;

use regex::Regex;
use serde::Deserialize;
use serde_json::{Map, Value};

/// Where Buildbot says forced properties come from.
pub const PROPERTY_SOURCE: &str = "Force Build Form";

/// `reason = { ... }`, `branch = { ... }` and the other fixed parameters.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFixed {
    label: Option<String>,
    default: Option<String>,
    #[serde(default)]
    required: bool,
    regex: Option<String>,
    /// Shown but not editable: submissions cannot change the default.
    #[serde(default)]
    fixed: bool,
}

/// One of `[[schedulers.properties]]` of a force scheduler.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawParameter {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    label: Option<String>,
    default: Option<toml::Value>,
    #[serde(default)]
    required: bool,
    regex: Option<String>,
    choices: Option<Vec<String>>,
    strict: Option<bool>,
    #[serde(default)]
    multiple: bool,
}

/// A parameter's type and its own constraints.
#[derive(Debug, Clone)]
pub enum Kind {
    /// One line (`string`) or several (`text`), optionally matching a pattern.
    Text {
        regex: Option<Regex>,
    },
    Int,
    Boolean,
    /// One of `choices` (any value when not strict), or a list of them.
    Choice {
        choices: Vec<String>,
        strict: bool,
        multiple: bool,
    },
}

#[derive(Debug, Clone)]
pub struct Parameter {
    pub name: String,
    pub label: String,
    pub kind: Kind,
    pub default: Value,
    pub required: bool,
    /// Submissions cannot change a fixed parameter.
    pub fixed: bool,
}

/// The validated form of a force scheduler.
#[derive(Debug, Clone)]
pub struct ForceForm {
    pub reason: Parameter,
    pub username: Parameter,
    /// branch, revision, repository, project (of the default codebase).
    pub codebase: Vec<Parameter>,
    /// The custom parameters, which become build properties.
    pub properties: Vec<Parameter>,
}

/// What a valid submission asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Forced {
    pub reason: String,
    pub owner: String,
    pub branch: Option<String>,
    pub revision: Option<String>,
    pub repository: String,
    pub project: String,
    /// Name → `[value, "Force Build Form"]`, including `reason` and `owner`.
    pub properties: Map<String, Value>,
}

/// The names the fixed parameters take; custom properties may not reuse them.
const FIXED: [&str; 6] = [
    "reason",
    "username",
    "branch",
    "revision",
    "repository",
    "project",
];

impl ForceForm {
    /// Builds the form from master.toml's declarations; errors name the parameter.
    pub fn new(
        fixed: BTreeMap<String, RawFixed>,
        properties: Vec<RawParameter>,
    ) -> Result<ForceForm, Vec<String>> {
        let mut errors = Vec::new();
        let mut fixed = fixed;
        let mut take = |name: &str, default: &str| {
            let raw = fixed.remove(name).unwrap_or_default();
            text_parameter(name, raw, default).unwrap_or_else(|error| {
                errors.push(error);
                plain(name, default)
            })
        };
        let reason = take("reason", "force build");
        let username = take("username", "");
        let codebase = ["branch", "revision", "repository", "project"]
            .map(|name| take(name, ""))
            .to_vec();
        let mut custom: Vec<Parameter> = Vec::new();
        for raw in properties {
            let name = raw.name.clone();
            if FIXED.contains(&name.as_str()) || custom.iter().any(|p| p.name == name) {
                errors.push(format!("parameter '{name}' is declared twice"));
                continue;
            }
            match custom_parameter(raw) {
                Ok(parameter) => custom.push(parameter),
                Err(error) => errors.push(error),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(ForceForm {
            reason,
            username,
            codebase,
            properties: custom,
        })
    }

    /// Every parameter, fixed ones first, for listing the form.
    pub fn parameters(&self) -> impl Iterator<Item = &Parameter> {
        [&self.reason, &self.username]
            .into_iter()
            .chain(&self.codebase)
            .chain(&self.properties)
    }

    /// Validates a submission (`name → value`, strings as a web form sends
    /// them, or JSON values). Every mistake is reported, one line each.
    pub fn validate(&self, submitted: &Map<String, Value>) -> Result<Forced, Vec<String>> {
        let mut errors = Vec::new();
        let mut value_of = |parameter: &Parameter| match parameter.accept(submitted) {
            Ok(value) => value,
            Err(error) => {
                errors.push(error);
                Value::Null
            }
        };
        let reason = text(value_of(&self.reason));
        let owner = text(value_of(&self.username));
        let [branch, revision, repository, project] =
            [0, 1, 2, 3].map(|i| text(value_of(&self.codebase[i])));
        let mut properties = Map::new();
        for parameter in &self.properties {
            let value = value_of(parameter);
            properties.insert(parameter.name.clone(), pair(value));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let owner = if owner.is_empty() {
            "anonymous".to_owned()
        } else {
            owner
        };
        properties.insert("reason".into(), pair(Value::from(reason.clone())));
        properties.insert("owner".into(), pair(Value::from(owner.clone())));
        let non_empty = |value: String| (!value.is_empty()).then_some(value);
        Ok(Forced {
            reason,
            owner,
            branch: non_empty(branch),
            revision: non_empty(revision),
            repository,
            project,
            properties,
        })
    }
}

impl Parameter {
    /// The submitted value, converted to the parameter's type, or its default.
    fn accept(&self, submitted: &Map<String, Value>) -> Result<Value, String> {
        let given = submitted
            .get(&self.name)
            .filter(|value| !self.fixed && !is_blank(value));
        let Some(given) = given else {
            if self.required && is_blank(&self.default) {
                return Err(format!("'{}' needs to be specified", self.label));
            }
            return Ok(self.default.clone());
        };
        match &self.kind {
            Kind::Text { regex } => {
                let value =
                    scalar_text(given).ok_or_else(|| format!("'{}' must be text", self.label))?;
                if let Some(regex) = regex {
                    if !regex.is_match(&value) {
                        return Err(format!(
                            "{}: '{value}' does not match pattern '{}'",
                            self.label,
                            regex.as_str()
                        ));
                    }
                }
                Ok(Value::from(value))
            }
            Kind::Int => match given {
                Value::Number(n) if n.is_i64() => Ok(given.clone()),
                Value::String(text) => text
                    .trim()
                    .parse::<i64>()
                    .map(Value::from)
                    .map_err(|_| format!("'{}': '{text}' is not an integer", self.label)),
                other => Err(format!("'{}': {other} is not an integer", self.label)),
            },
            Kind::Boolean => match given {
                Value::Bool(_) => Ok(given.clone()),
                Value::String(text) => match text.trim().to_ascii_lowercase().as_str() {
                    "true" | "1" | "on" | "yes" => Ok(Value::Bool(true)),
                    "false" | "0" | "off" | "no" => Ok(Value::Bool(false)),
                    _ => Err(format!("'{}': '{text}' is not a boolean", self.label)),
                },
                other => Err(format!("'{}': {other} is not a boolean", self.label)),
            },
            Kind::Choice {
                choices,
                strict,
                multiple,
            } => {
                let values: Vec<String> = match given {
                    Value::Array(items) if *multiple => items
                        .iter()
                        .map(|item| scalar_text(item).unwrap_or_else(|| item.to_string()))
                        .collect(),
                    other => vec![scalar_text(other).unwrap_or_else(|| other.to_string())],
                };
                if *strict {
                    if let Some(bad) = values.iter().find(|v| !choices.contains(v)) {
                        return Err(format!(
                            "'{}': invalid choice '{bad}'; choices are {}",
                            self.label,
                            choices.join(", ")
                        ));
                    }
                }
                Ok(if *multiple {
                    Value::from(values)
                } else {
                    Value::from(values.into_iter().next().unwrap_or_default())
                })
            }
        }
    }

    /// The type name master.toml uses.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Text { .. } => "text",
            Kind::Int => "int",
            Kind::Boolean => "bool",
            Kind::Choice { .. } => "list",
        }
    }
}

fn plain(name: &str, default: &str) -> Parameter {
    Parameter {
        name: name.to_owned(),
        label: name.to_owned(),
        kind: Kind::Text { regex: None },
        default: Value::from(default),
        required: false,
        fixed: false,
    }
}

fn text_parameter(name: &str, raw: RawFixed, default: &str) -> Result<Parameter, String> {
    Ok(Parameter {
        name: name.to_owned(),
        label: raw.label.unwrap_or_else(|| name.to_owned()),
        kind: Kind::Text {
            regex: raw.regex.as_deref().map(|r| pattern(name, r)).transpose()?,
        },
        default: Value::from(raw.default.unwrap_or_else(|| default.to_owned())),
        required: raw.required,
        fixed: raw.fixed,
    })
}

fn custom_parameter(raw: RawParameter) -> Result<Parameter, String> {
    let name = raw.name;
    if name.is_empty() {
        return Err("a parameter needs a name".into());
    }
    let only = |key: &str, allowed: bool| {
        if allowed {
            Ok(())
        } else {
            Err(format!(
                "parameter '{name}': {key} does not apply to type '{}'",
                raw.kind
            ))
        }
    };
    let is_text = matches!(raw.kind.as_str(), "string" | "text");
    let is_choice = raw.kind == "choice";
    if raw.regex.is_some() {
        only("regex", is_text)?;
    }
    if raw.choices.is_some() || raw.strict.is_some() || raw.multiple {
        only("choices, strict and multiple", is_choice)?;
    }
    let kind = match raw.kind.as_str() {
        "string" | "text" => Kind::Text {
            regex: raw.regex.as_deref().map(|r| pattern(&name, r)).transpose()?,
        },
        "int" => Kind::Int,
        "boolean" => Kind::Boolean,
        "choice" => {
            let choices = raw.choices.unwrap_or_default();
            if choices.is_empty() {
                return Err(format!("parameter '{name}': a choice needs choices"));
            }
            Kind::Choice {
                choices,
                strict: raw.strict.unwrap_or(true),
                multiple: raw.multiple,
            }
        }
        other => {
            return Err(format!(
                "parameter '{name}': unknown type '{other}' (expected string, text, int, boolean or choice)"
            ))
        }
    };
    let default = match (raw.default, &kind) {
        (None, Kind::Int) => Value::from(0),
        (None, Kind::Boolean) => Value::Bool(false),
        (
            None,
            Kind::Choice {
                choices, multiple, ..
            },
        ) if !*multiple => Value::from(choices[0].clone()),
        (None, Kind::Choice { .. }) => Value::Array(Vec::new()),
        (None, Kind::Text { .. }) => Value::from(""),
        (Some(toml::Value::String(text)), Kind::Text { .. } | Kind::Choice { .. }) => {
            Value::from(text)
        }
        (Some(toml::Value::Integer(n)), Kind::Int) => Value::from(n),
        (Some(toml::Value::Boolean(b)), Kind::Boolean) => Value::Bool(b),
        (Some(toml::Value::Array(items)), Kind::Choice { multiple: true, .. }) => Value::Array(
            items
                .into_iter()
                .map(|item| Value::from(item.as_str().unwrap_or_default()))
                .collect(),
        ),
        (Some(other), _) => {
            return Err(format!(
                "parameter '{name}': a {} default does not suit type '{}'",
                other.type_str(),
                raw.kind
            ))
        }
    };
    Ok(Parameter {
        label: raw.label.unwrap_or_else(|| name.clone()),
        name,
        kind,
        default,
        required: raw.required,
        fixed: false,
    })
}

fn pattern(name: &str, regex: &str) -> Result<Regex, String> {
    Regex::new(regex).map_err(|e| {
        let reason = e.to_string();
        let reason = reason.lines().last().unwrap_or_default().trim().to_owned();
        format!("parameter '{name}': invalid regular expression '{regex}': {reason}")
    })
}

fn is_blank(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(text) => text.is_empty(),
        _ => false,
    }
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn text(value: Value) -> String {
    scalar_text(&value).unwrap_or_default()
}

fn pair(value: Value) -> Value {
    Value::Array(vec![value, Value::from(PROPERTY_SOURCE)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn form(toml_text: &str) -> Result<ForceForm, Vec<String>> {
        #[derive(Deserialize)]
        struct Declared {
            #[serde(default)]
            fixed: BTreeMap<String, RawFixed>,
            #[serde(default)]
            properties: Vec<RawParameter>,
        }
        let declared: Declared = toml::from_str(toml_text).unwrap();
        ForceForm::new(declared.fixed, declared.properties)
    }

    fn submit(form: &ForceForm, values: Value) -> Result<Forced, Vec<String>> {
        form.validate(values.as_object().unwrap())
    }

    const FORM: &str = r#"
        [fixed.branch]
        default = "main"
        required = true
        [fixed.reason]
        regex = "^[a-z ]+$"
        [[properties]]
        type = "string"
        name = "pull_url"
        regex = "^https://"
        [[properties]]
        type = "int"
        name = "jobs"
        default = 2
        [[properties]]
        type = "boolean"
        name = "clean"
        [[properties]]
        type = "choice"
        name = "target"
        choices = ["debug", "release"]
        [[properties]]
        type = "string"
        name = "ticket"
        required = true
    "#;

    #[test]
    fn a_valid_submission_becomes_typed_properties_with_defaults() {
        let form = form(FORM).unwrap();
        let forced = submit(
            &form,
            json!({"reason": "nightly check", "username": "ann", "jobs": "8",
                   "clean": "on", "ticket": "T-1", "revision": "abc"}),
        )
        .unwrap();
        assert_eq!(forced.reason, "nightly check");
        assert_eq!(forced.owner, "ann");
        assert_eq!(forced.branch.as_deref(), Some("main"));
        assert_eq!(forced.revision.as_deref(), Some("abc"));
        let props = Value::Object(forced.properties);
        assert_eq!(props["jobs"], json!([8, PROPERTY_SOURCE]));
        assert_eq!(props["clean"], json!([true, PROPERTY_SOURCE]));
        assert_eq!(props["target"], json!(["debug", PROPERTY_SOURCE]));
        assert_eq!(props["pull_url"], json!(["", PROPERTY_SOURCE]));
        assert_eq!(props["owner"], json!(["ann", PROPERTY_SOURCE]));
        assert_eq!(props["reason"], json!(["nightly check", PROPERTY_SOURCE]));
    }

    #[test]
    fn every_invalid_field_is_reported() {
        let form = form(FORM).unwrap();
        let errors = submit(
            &form,
            json!({"reason": "Bad!", "jobs": "many", "clean": "maybe",
                   "target": "fast", "pull_url": "http://x"}),
        )
        .unwrap_err();
        assert_eq!(
            errors,
            [
                "reason: 'Bad!' does not match pattern '^[a-z ]+$'",
                "pull_url: 'http://x' does not match pattern '^https://'",
                "'jobs': 'many' is not an integer",
                "'clean': 'maybe' is not a boolean",
                "'target': invalid choice 'fast'; choices are debug, release",
                "'ticket' needs to be specified",
            ]
        );
    }

    #[test]
    fn owner_defaults_to_anonymous_and_fixed_parameters_ignore_submissions() {
        let form = form("[fixed.branch]\ndefault = \"main\"\nfixed = true\n").unwrap();
        let forced = submit(&form, json!({"branch": "evil"})).unwrap();
        assert_eq!(forced.owner, "anonymous");
        assert_eq!(forced.branch.as_deref(), Some("main"));
        assert_eq!(forced.reason, "force build");
        assert_eq!(forced.revision, None);
    }

    #[test]
    fn declaration_mistakes_are_reported_by_parameter() {
        let errors = form(
            r#"
            [[properties]]
            type = "float"
            name = "x"
            [[properties]]
            type = "int"
            name = "y"
            default = "three"
            [[properties]]
            type = "string"
            name = "branch"
            [[properties]]
            type = "choice"
            name = "z"
            [[properties]]
            type = "int"
            name = "w"
            regex = "1"
            "#,
        )
        .unwrap_err();
        assert_eq!(
            errors,
            [
                "parameter 'x': unknown type 'float' (expected string, text, int, boolean or choice)",
                "parameter 'y': a string default does not suit type 'int'",
                "parameter 'branch' is declared twice",
                "parameter 'z': a choice needs choices",
                "parameter 'w': regex does not apply to type 'int'",
            ]
        );
    }

    #[test]
    fn multiple_choices_take_lists() {
        let form = form(
            "[[properties]]\ntype = \"choice\"\nname = \"os\"\nchoices = [\"a\", \"b\"]\nmultiple = true\n",
        )
        .unwrap();
        let forced = submit(&form, json!({"os": ["a", "b"]})).unwrap();
        assert_eq!(
            forced.properties["os"],
            json!([["a", "b"], PROPERTY_SOURCE])
        );
        assert!(submit(&form, json!({"os": ["a", "c"]})).is_err());
    }
}
