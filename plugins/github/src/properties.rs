//! `github_property_whitelist`: copies chosen leaves of a payload into change
//! properties named `github.<dotted path>`.

use serde_json::{Map, Value};

use crate::glob::Glob;

/// The leaves of object `source` whose dotted names (`github.head.sha`) match
/// one of `whitelist`; none when `source` is not an object. Leaves are strings,
/// numbers, booleans, nulls and whole arrays; objects are walked into, never
/// copied.
pub fn whitelisted(source: &Value, whitelist: &[Glob]) -> Map<String, Value> {
    let mut properties = Map::new();
    if let (Some(source), false) = (source.as_object(), whitelist.is_empty()) {
        for (key, value) in source {
            walk(&format!("github.{key}"), value, whitelist, &mut properties);
        }
    }
    properties
}

fn walk(name: &str, value: &Value, whitelist: &[Glob], properties: &mut Map<String, Value>) {
    match value {
        Value::Object(fields) => {
            for (key, field) in fields {
                walk(&format!("{name}.{key}"), field, whitelist, properties);
            }
        }
        leaf => {
            if whitelist.iter().any(|glob| glob.matches(name)) {
                properties.insert(name.to_string(), leaf.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn globs(patterns: &[&str]) -> Vec<Glob> {
        patterns.iter().map(|p| Glob::new(p)).collect()
    }

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
        let properties = whitelisted(&source, &globs(&["github.*"]));
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
        let properties = whitelisted(&source, &globs(&["github.*.ref", "github.nothing"]));
        assert_eq!(
            Value::Object(properties),
            json!({"github.head.ref": "topic", "github.base.ref": "main"})
        );
        let properties = whitelisted(&source, &globs(&["github.head"]));
        assert!(properties.is_empty(), "an object is never copied whole");
    }

    #[test]
    fn no_whitelist_copies_nothing() {
        assert!(whitelisted(&json!({"a": 1}), &[]).is_empty());
    }
}
