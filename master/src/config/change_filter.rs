//! Buildbot's ChangeFilter: which changes a scheduler looks at.
//!
//! Every key given in the configuration is one criterion and all of them must
//! hold. A plain key lists values the change's field must equal; a `_re` key
//! lists patterns one of which must match at the start of the field, as
//! Python's `re.match` does.

use regex::Regex;
use serde::Deserialize;

/// `change_filter = { ... }` as written in master.toml (a TOML table, read with serde).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeFilterConfig {
    pub project: Option<OneOrMany>,
    pub project_re: Option<OneOrMany>,
    pub branch: Option<OneOrMany>,
    pub branch_re: Option<OneOrMany>,
    pub repository: Option<OneOrMany>,
    pub repository_re: Option<OneOrMany>,
    pub category: Option<OneOrMany>,
    pub category_re: Option<OneOrMany>,
    pub codebase: Option<OneOrMany>,
    pub codebase_re: Option<OneOrMany>,
}

/// A string or a list of strings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn as_slice(&self) -> &[String] {
        match self {
            OneOrMany::One(value) => std::slice::from_ref(value),
            OneOrMany::Many(values) => values,
        }
    }
}

/// The attributes of a change a filter looks at.
#[derive(Debug, Clone, Copy)]
pub struct FilterSubject<'a> {
    pub project: &'a str,
    pub branch: Option<&'a str>,
    pub repository: &'a str,
    pub category: Option<&'a str>,
    pub codebase: &'a str,
}

/// A compiled filter.
#[derive(Debug, Clone)]
pub struct ChangeFilter {
    criteria: Vec<Criterion>,
}

/// One key of the configuration: a field and what it must satisfy.
#[derive(Debug, Clone)]
struct Criterion {
    field: Field,
    test: Test,
}

#[derive(Debug, Clone, Copy)]
enum Field {
    Project,
    Branch,
    Repository,
    Category,
    Codebase,
}

#[derive(Debug, Clone)]
enum Test {
    /// The field equals one of these.
    Values(Vec<String>),
    /// One of these, anchored at the start, matches the field.
    Patterns(Vec<Regex>),
}

impl ChangeFilter {
    /// Compiles the regular expressions; an error names the key and the pattern, e.g.
    /// "branch_re: invalid regular expression '(': <regex crate's reason, one line>".
    pub fn new(config: &ChangeFilterConfig) -> Result<ChangeFilter, String> {
        let keys = [
            (Field::Project, &config.project, &config.project_re),
            (Field::Branch, &config.branch, &config.branch_re),
            (Field::Repository, &config.repository, &config.repository_re),
            (Field::Category, &config.category, &config.category_re),
            (Field::Codebase, &config.codebase, &config.codebase_re),
        ];
        let mut criteria = Vec::new();
        for (field, values, patterns) in keys {
            if let Some(values) = values {
                let test = Test::Values(values.as_slice().to_vec());
                criteria.push(Criterion { field, test });
            }
            if let Some(patterns) = patterns {
                let test = Test::Patterns(compile_patterns(field, patterns.as_slice())?);
                criteria.push(Criterion { field, test });
            }
        }
        Ok(ChangeFilter { criteria })
    }

    /// A filter that accepts every change (what an empty config gives too).
    pub fn any() -> ChangeFilter {
        ChangeFilter {
            criteria: Vec::new(),
        }
    }

    /// Whether the change satisfies every criterion of the filter.
    pub fn matches(&self, change: &FilterSubject<'_>) -> bool {
        self.criteria
            .iter()
            .all(|criterion| criterion.test.accepts(criterion.field.of(change)))
    }

    /// Why the filter refuses the change, naming the first criterion it
    /// fails, e.g. `branch 'dev' is not main`; `None` when it accepts it.
    pub fn refusal(&self, change: &FilterSubject<'_>) -> Option<String> {
        let criterion = self
            .criteria
            .iter()
            .find(|criterion| !criterion.test.accepts(criterion.field.of(change)))?;
        let field = criterion.field.name();
        let Some(value) = criterion.field.of(change) else {
            return Some(format!("the change has no {field}"));
        };
        Some(match &criterion.test {
            Test::Values(values) => format!("{field} '{value}' is not {}", values.join(" or ")),
            Test::Patterns(patterns) => {
                let patterns: Vec<&str> = patterns.iter().map(as_written).collect();
                format!(
                    "{field} '{value}' does not match {field}_re {}",
                    patterns.join(" or ")
                )
            }
        })
    }
}

impl Field {
    fn name(self) -> &'static str {
        match self {
            Field::Project => "project",
            Field::Branch => "branch",
            Field::Repository => "repository",
            Field::Category => "category",
            Field::Codebase => "codebase",
        }
    }

    fn of<'a>(self, change: &FilterSubject<'a>) -> Option<&'a str> {
        match self {
            Field::Project => Some(change.project),
            Field::Branch => change.branch,
            Field::Repository => Some(change.repository),
            Field::Category => change.category,
            Field::Codebase => Some(change.codebase),
        }
    }
}

impl Test {
    /// An absent field satisfies no test: it equals no value and matches no pattern.
    fn accepts(&self, value: Option<&str>) -> bool {
        let Some(value) = value else {
            return false;
        };
        match self {
            Test::Values(values) => values.iter().any(|candidate| candidate == value),
            Test::Patterns(patterns) => patterns.iter().any(|pattern| pattern.is_match(value)),
        }
    }
}

fn compile_patterns(field: Field, patterns: &[String]) -> Result<Vec<Regex>, String> {
    patterns
        .iter()
        .map(|pattern| {
            compile_anchored(pattern).map_err(|reason| {
                format!(
                    "{}_re: invalid regular expression '{pattern}': {reason}",
                    field.name()
                )
            })
        })
        .collect()
}

/// A pattern as the configuration wrote it, without the anchoring group.
fn as_written(regex: &Regex) -> &str {
    let anchored = regex.as_str();
    anchored
        .strip_prefix("^(?:")
        .and_then(|pattern| pattern.strip_suffix(')'))
        .unwrap_or(anchored)
}

/// Compiles `pattern` to match only at the start of the text.
///
/// The pattern is first compiled on its own, so that a pattern such as `a)|(b`
/// is refused rather than turning the anchoring group inside out.
fn compile_anchored(pattern: &str) -> Result<Regex, String> {
    Regex::new(pattern)
        .and_then(|_| Regex::new(&format!("^(?:{pattern})")))
        .map_err(|error| one_line_reason(&error))
}

/// The regex crate reports a syntax error over several lines (the pattern, a
/// caret, then `error: <reason>`); only the reason is kept.
fn one_line_reason(error: &regex::Error) -> String {
    let text = error.to_string();
    let reason = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("error: "))
        .map(str::to_owned);
    reason.unwrap_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn subject<'a>(branch: Option<&'a str>, category: Option<&'a str>) -> FilterSubject<'a> {
        FilterSubject {
            project: "libfoo",
            branch,
            repository: "https://example.org/foo.git",
            category,
            codebase: "foo",
        }
    }

    fn main_change() -> FilterSubject<'static> {
        subject(Some("main"), Some("feature"))
    }

    fn filter(config: serde_json::Value) -> ChangeFilter {
        let config: ChangeFilterConfig = serde_json::from_value(config).expect("valid config");
        ChangeFilter::new(&config).expect("valid filter")
    }

    fn error(config: serde_json::Value) -> String {
        let config: ChangeFilterConfig = serde_json::from_value(config).expect("valid config");
        ChangeFilter::new(&config).expect_err("invalid filter")
    }

    #[test]
    fn any_and_empty_config_accept_everything() {
        let bare = subject(None, None);
        assert!(ChangeFilter::any().matches(&main_change()));
        assert!(ChangeFilter::any().matches(&bare));
        let empty = ChangeFilter::new(&ChangeFilterConfig::default()).expect("empty config");
        assert!(empty.matches(&main_change()));
        assert!(empty.matches(&bare));
    }

    #[test]
    fn a_refusal_names_the_first_criterion_that_fails() {
        let change = main_change();
        let both = filter(json!({"project": "libfoo", "branch": ["dev", "release"]}));
        assert_eq!(
            both.refusal(&change).as_deref(),
            Some("branch 'main' is not dev or release")
        );
        let pattern = filter(json!({"branch_re": "rel(ease)?/"}));
        assert_eq!(
            pattern.refusal(&change).as_deref(),
            Some("branch 'main' does not match branch_re rel(ease)?/")
        );
        let bare = subject(None, None);
        assert_eq!(
            filter(json!({"category": "x"})).refusal(&bare).as_deref(),
            Some("the change has no category")
        );
        assert_eq!(filter(json!({"branch": "main"})).refusal(&change), None);
    }

    #[test]
    fn each_value_key_compares_its_own_field() {
        let change = main_change();
        let cases = [
            ("project", "libfoo"),
            ("branch", "main"),
            ("repository", "https://example.org/foo.git"),
            ("category", "feature"),
            ("codebase", "foo"),
        ];
        for (key, value) in cases {
            assert!(filter(json!({ key: value })).matches(&change), "{key}");
            assert!(!filter(json!({ key: "other" })).matches(&change), "{key}");
        }
    }

    #[test]
    fn each_pattern_key_matches_its_own_field() {
        let change = main_change();
        let cases = [
            ("project_re", "lib"),
            ("branch_re", "ma"),
            ("repository_re", "https://"),
            ("category_re", "feat"),
            ("codebase_re", "f.o"),
        ];
        for (key, pattern) in cases {
            assert!(filter(json!({ key: pattern })).matches(&change), "{key}");
            assert!(!filter(json!({ key: "zzz" })).matches(&change), "{key}");
        }
    }

    #[test]
    fn a_value_must_equal_the_whole_field() {
        assert!(!filter(json!({"branch": "mai"})).matches(&main_change()));
        assert!(!filter(json!({"branch": "main2"})).matches(&main_change()));
    }

    #[test]
    fn a_list_of_values_matches_any_of_them() {
        let f = filter(json!({"branch": ["main", "dev"]}));
        assert!(f.matches(&subject(Some("main"), None)));
        assert!(f.matches(&subject(Some("dev"), None)));
        assert!(!f.matches(&subject(Some("release"), None)));
    }

    #[test]
    fn an_empty_list_matches_nothing() {
        assert!(!filter(json!({"branch": []})).matches(&main_change()));
        assert!(!filter(json!({"branch_re": []})).matches(&main_change()));
    }

    #[test]
    fn a_list_of_patterns_matches_when_one_does() {
        let f = filter(json!({"branch_re": ["rel", "hotfix/"]}));
        assert!(f.matches(&subject(Some("release-1.0"), None)));
        assert!(f.matches(&subject(Some("hotfix/crash"), None)));
        assert!(!f.matches(&subject(Some("main"), None)));
    }

    #[test]
    fn patterns_are_anchored_at_the_start_only() {
        let f = filter(json!({"branch_re": "rel"}));
        assert!(f.matches(&subject(Some("release"), None)));
        assert!(!f.matches(&subject(Some("prerelease"), None)));
        let alternation = filter(json!({"branch_re": "a|rel"}));
        assert!(!alternation.matches(&subject(Some("prerelease"), None)));
        assert!(alternation.matches(&subject(Some("release"), None)));
        let whole = filter(json!({"branch_re": "rel$"}));
        assert!(!whole.matches(&subject(Some("release"), None)));
        assert!(whole.matches(&subject(Some("rel"), None)));
    }

    #[test]
    fn absent_branch_or_category_matches_no_value_or_pattern() {
        let bare = subject(None, None);
        for config in [
            json!({"branch": ""}),
            json!({"branch_re": ""}),
            json!({"branch_re": ".*"}),
            json!({"category": ""}),
            json!({"category_re": ".*"}),
        ] {
            assert!(!filter(config.clone()).matches(&bare), "{config}");
            assert!(
                filter(config.clone()).matches(&subject(Some(""), Some(""))),
                "{config}"
            );
        }
    }

    #[test]
    fn every_key_must_hold() {
        let f = filter(json!({"project_re": "^lib", "branch": ["main", "dev"]}));
        assert!(f.matches(&main_change()));
        assert!(!f.matches(&subject(Some("release"), None)));
        let other_project = FilterSubject {
            project: "app",
            ..main_change()
        };
        assert!(!f.matches(&other_project));
    }

    #[test]
    fn value_and_pattern_of_one_field_must_both_hold() {
        let f = filter(json!({"branch": ["main", "release-2"], "branch_re": "release"}));
        assert!(f.matches(&subject(Some("release-2"), None)));
        assert!(!f.matches(&subject(Some("main"), None)));
        assert!(!f.matches(&subject(Some("release-3"), None)));
    }

    #[test]
    fn an_invalid_pattern_is_named_with_its_key() {
        assert_eq!(
            error(json!({"branch_re": "("})),
            "branch_re: invalid regular expression '(': unclosed group"
        );
        let message = error(json!({"codebase_re": ["ok", "a[z"]}));
        assert!(
            message.starts_with("codebase_re: invalid regular expression 'a[z': "),
            "{message}"
        );
        assert!(!message.contains('\n'), "{message}");
    }

    #[test]
    fn a_pattern_cannot_escape_its_anchor() {
        let message = error(json!({"project_re": "a)|(b"}));
        assert!(
            message.starts_with("project_re: invalid regular expression 'a)|(b': "),
            "{message}"
        );
    }

    #[test]
    fn deserializes_strings_and_lists() {
        let config: ChangeFilterConfig =
            serde_json::from_value(json!({"branch": ["main", "dev"], "project_re": "^lib"}))
                .expect("valid config");
        assert_eq!(
            config,
            ChangeFilterConfig {
                branch: Some(OneOrMany::Many(vec!["main".into(), "dev".into()])),
                project_re: Some(OneOrMany::One("^lib".into())),
                ..ChangeFilterConfig::default()
            }
        );
    }

    #[test]
    fn deserializing_refuses_unknown_keys_and_wrong_types() {
        let unknown = serde_json::from_value::<ChangeFilterConfig>(json!({"branches": "main"}))
            .expect_err("unknown key");
        assert!(unknown.to_string().contains("branches"), "{unknown}");
        assert!(serde_json::from_value::<ChangeFilterConfig>(json!({"branch": 3})).is_err());
        assert!(serde_json::from_value::<ChangeFilterConfig>(json!({"branch": [1]})).is_err());
    }
}
