//! Property whitelists (Buildbot's `github_property_whitelist`,
//! `bitbucket_property_whitelist`): the leaves of a payload object whose dotted
//! names match one of a list of [`Glob`] patterns become change properties.
//!
//! ```
//! use buildmaster_plugin_api::properties::PropertyWhitelist;
//! use buildmaster_plugin_api::serde_json::json;
//!
//! let whitelist: PropertyWhitelist = serde_json::from_value(json!(["github.*.ref"])).unwrap();
//! let pull_request = json!({"head": {"ref": "topic", "sha": "abc"}, "number": 7});
//! let properties = whitelist.select("github", &pull_request);
//! assert_eq!(serde_json::Value::Object(properties), json!({"github.head.ref": "topic"}));
//! ```

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::glob::Glob;

/// A list of patterns, written as a list of strings; empty selects nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct PropertyWhitelist(Vec<Glob>);

impl PropertyWhitelist {
    pub fn new(patterns: &[&str]) -> PropertyWhitelist {
        PropertyWhitelist(patterns.iter().map(|p| Glob::new(p)).collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The leaves of object `source` named `<prefix>.<dotted path>` that match
    /// a pattern; none when `source` is not an object. Leaves are strings,
    /// numbers, booleans, nulls and whole arrays; objects are walked into,
    /// never copied.
    pub fn select(&self, prefix: &str, source: &Value) -> Map<String, Value> {
        let mut properties = Map::new();
        if let (Some(source), false) = (source.as_object(), self.0.is_empty()) {
            self.walk(prefix, source, &mut properties);
        }
        properties
    }

    fn walk(&self, base: &str, object: &Map<String, Value>, properties: &mut Map<String, Value>) {
        for (key, value) in object {
            let name = format!("{base}.{key}");
            match value {
                Value::Object(inner) => self.walk(&name, inner, properties),
                leaf if self.0.iter().any(|glob| glob.matches(&name)) => {
                    properties.insert(name, leaf.clone());
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_leaf_with_a_catch_all_pattern() {
        let source = json!({
            "number": 7,
            "draft": false,
            "merged_at": null,
            "labels": [{"name": "bug"}],
            "head": {"sha": "abc", "repo": {"full_name": "o/r"}},
            "empty": {}
        });
        let properties = PropertyWhitelist::new(&["github.*"]).select("github", &source);
        assert_eq!(
            Value::Object(properties),
            json!({
                "github.number": 7,
                "github.draft": false,
                "github.merged_at": null,
                "github.labels": [{"name": "bug"}],
                "github.head.sha": "abc",
                "github.head.repo.full_name": "o/r"
            })
        );
    }

    #[test]
    fn only_matching_leaves_are_copied() {
        let source = json!({"head": {"sha": "abc", "ref": "topic"}, "base": {"ref": "main"}});
        let whitelist = PropertyWhitelist::new(&["bitbucket.*.ref", "bitbucket.nothing"]);
        assert_eq!(
            Value::Object(whitelist.select("bitbucket", &source)),
            json!({"bitbucket.head.ref": "topic", "bitbucket.base.ref": "main"})
        );
        let whole = PropertyWhitelist::new(&["bitbucket.head"]).select("bitbucket", &source);
        assert!(whole.is_empty(), "an object is never copied whole");
    }

    #[test]
    fn no_whitelist_or_no_object_selects_nothing() {
        assert!(PropertyWhitelist::default()
            .select("x", &json!({"a": 1}))
            .is_empty());
        assert!(PropertyWhitelist::new(&["*"])
            .select("x", &json!([1]))
            .is_empty());
    }
}
