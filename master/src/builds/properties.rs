//! A build's properties and what its templates can see.

use serde_json::{Map, Value};

use crate::changes::SourceStamp;
use crate::config::interpolate::Lookup;

/// The properties of a running build, each with the source that set it, and
/// the source stamps and worker that templates may refer to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Properties {
    /// Name → `[value, source]`, the shape the database and REST API use.
    values: Map<String, Value>,
    pub sourcestamps: Vec<SourceStamp>,
    pub workername: String,
}

impl Properties {
    pub fn new(sourcestamps: Vec<SourceStamp>, workername: String) -> Properties {
        Properties {
            values: Map::new(),
            sourcestamps,
            workername,
        }
    }

    /// Sets a property; a later setting wins, as in Buildbot.
    pub fn set(&mut self, name: &str, value: Value, source: &str) {
        self.values.insert(
            name.to_owned(),
            Value::Array(vec![value, Value::from(source)]),
        );
    }

    /// Adds stored `[value, source]` pairs, skipping anything else.
    pub fn update(&mut self, pairs: &Map<String, Value>) {
        for (name, pair) in pairs {
            if matches!(pair, Value::Array(items) if items.len() == 2) {
                self.values.insert(name.clone(), pair.clone());
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        match self.values.get(name) {
            Some(Value::Array(items)) => items.first(),
            _ => None,
        }
    }

    /// Name → `[value, source]`.
    pub fn pairs(&self) -> &Map<String, Value> {
        &self.values
    }
}

impl Lookup for Properties {
    fn property(&self, name: &str) -> Option<Value> {
        self.get(name).cloned()
    }

    fn source(&self, codebase: &str, attribute: &str) -> Option<String> {
        let stamp = self.sourcestamps.iter().find(|s| s.codebase == codebase)?;
        match attribute {
            "branch" => stamp.branch.clone(),
            "revision" => stamp.revision.clone(),
            "repository" => Some(stamp.repository.clone()),
            "project" => Some(stamp.project.clone()),
            "codebase" => Some(stamp.codebase.clone()),
            _ => None,
        }
    }

    fn worker(&self, key: &str) -> Option<String> {
        (key == "workername").then(|| self.workername.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::interpolate::Template;
    use serde_json::json;

    #[test]
    fn templates_see_properties_sources_and_the_worker() {
        let stamp = SourceStamp {
            ssid: 1,
            branch: Some("main".into()),
            revision: Some("abc".into()),
            repository: "repo".into(),
            project: "p".into(),
            codebase: String::new(),
            created_at: 0,
        };
        let mut props = Properties::new(vec![stamp], "w1".into());
        props.set("x", json!(1), "Builder");
        props.update(json!({"x": [2, "Change"], "bad": 3}).as_object().unwrap());
        let render = |text: &str| Template::parse(text).unwrap().render(&props);
        assert_eq!(
            render("%(prop:x)s %(src::branch)s@%(src::revision)s on %(worker:workername)s"),
            "2 main@abc on w1"
        );
        assert_eq!(props.get("bad"), None);
        assert_eq!(props.pairs()["x"], json!([2, "Change"]));
    }
}
