//! The Change data model: what a dialect submits, what the database stores, and
//! how the REST API shows a stored change.

use serde::{Deserialize, Deserializer};
use serde_json::{json, Map, Value};

/// The source every property of a change is recorded with, as in Buildbot.
pub const PROPERTY_SOURCE: &str = "Change";

/// A change as a dialect submits it: the keyword arguments of Buildbot's `addChange`.
///
/// Deserializing applies `addChange`'s defaults, so a dialect may leave keys out:
/// `author`, `comments`, `repository`, `project` and `codebase` absent or null
/// become `""`, `files` and `properties` become empty, and `revlink` becomes `""`
/// when absent but stays null when the dialect passed null explicitly. Unknown
/// keys, including `src` (which Buildbot does not store on the change), are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct NewChange {
    #[serde(default, deserialize_with = "null_as_default")]
    pub author: String,
    #[serde(default)]
    pub committer: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub comments: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub files: Vec<String>,
    #[serde(default)]
    pub revision: Option<String>,
    /// Epoch seconds; `None` means the time the change is stored.
    #[serde(default)]
    pub when_timestamp: Option<i64>,
    #[serde(default)]
    pub branch: Option<String>,
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default = "absent_revlink")]
    pub revlink: Option<String>,
    /// Plain values; each is stored as the pair `[value, "Change"]`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub properties: Map<String, Value>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub repository: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub project: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub codebase: String,
    /// The id that follows its delivery into the logs; never from a plugin.
    #[serde(skip)]
    pub correlation: Option<String>,
}

/// Reads an explicit null as the type's default, like an absent key.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// `addChange` defaults `revlink` to `""`; only an explicit null stores null.
fn absent_revlink() -> Option<String> {
    Some(String::new())
}

/// A change as stored, with the ids the database gave it.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub changeid: i64,
    pub author: String,
    pub committer: Option<String>,
    pub comments: String,
    pub files: Vec<String>,
    pub revision: Option<String>,
    pub when_timestamp: i64,
    pub branch: Option<String>,
    pub category: Option<String>,
    pub revlink: Option<String>,
    /// Name → `[value, source]`, as stored.
    pub properties: Map<String, Value>,
    pub repository: String,
    pub project: String,
    pub codebase: String,
    /// The newest earlier change on the same branch, repository, project and codebase.
    pub parent_changeid: Option<i64>,
    pub sourcestamp: SourceStamp,
    /// The id of the delivery that brought it, for the logs.
    pub correlation: Option<String>,
}

/// A source stamp: what to build, one per distinct (revision, branch,
/// repository, codebase, project). Changes point at one; buildsets hold one
/// per codebase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceStamp {
    pub ssid: i64,
    pub branch: Option<String>,
    pub revision: Option<String>,
    pub repository: String,
    pub codebase: String,
    pub project: String,
    pub created_at: i64,
}

impl SourceStamp {
    /// The source stamp in Buildbot's REST shape.
    pub fn to_rest(&self) -> Value {
        json!({
            "ssid": self.ssid,
            "branch": self.branch,
            "revision": self.revision,
            "project": self.project,
            "repository": self.repository,
            "codebase": self.codebase,
            "created_at": self.created_at,
            "patch": null,
        })
    }
}

/// The fields of the REST change object, in the order Buildbot documents them.
pub const FIELDS: [&str; 16] = [
    "changeid",
    "author",
    "committer",
    "comments",
    "files",
    "revision",
    "when_timestamp",
    "branch",
    "category",
    "revlink",
    "properties",
    "repository",
    "project",
    "codebase",
    "parent_changeids",
    "sourcestamp",
];

impl Change {
    /// The change as Buildbot's REST API shows it; every field is present.
    pub fn to_rest(&self) -> Value {
        json!({
            "changeid": self.changeid,
            "author": self.author,
            "committer": self.committer,
            "comments": self.comments,
            "files": self.files,
            "revision": self.revision,
            "when_timestamp": self.when_timestamp,
            "branch": self.branch,
            "category": self.category,
            "revlink": self.revlink,
            "properties": self.properties,
            "repository": self.repository,
            "project": self.project,
            "codebase": self.codebase,
            "parent_changeids": self.parent_changeid.into_iter().collect::<Vec<_>>(),
            "sourcestamp": self.sourcestamp.to_rest(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: Value) -> NewChange {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn absent_keys_take_add_change_defaults() {
        let change = parse(json!({"src": "git", "unknown": 1}));
        assert_eq!(change.author, "");
        assert_eq!(change.comments, "");
        assert!(change.files.is_empty());
        assert!(change.properties.is_empty());
        assert_eq!(change.revlink.as_deref(), Some(""));
        assert_eq!(change.when_timestamp, None);
        assert_eq!(
            (&*change.repository, &*change.project, &*change.codebase),
            ("", "", "")
        );
        assert_eq!(
            (
                change.committer,
                change.revision,
                change.branch,
                change.category
            ),
            (None, None, None, None)
        );
    }

    #[test]
    fn explicit_nulls_differ_from_absent_keys_only_for_revlink() {
        let change = parse(json!({
            "author": null, "comments": null, "files": null, "properties": null,
            "revlink": null, "repository": null, "project": null, "codebase": null,
            "when_timestamp": null,
        }));
        assert_eq!(change.revlink, None);
        assert_eq!(change.author, "");
        assert_eq!(change.codebase, "");
        assert!(change.files.is_empty() && change.properties.is_empty());
    }

    #[test]
    fn rest_object_has_every_field_and_wraps_properties() {
        let change = Change {
            changeid: 7,
            author: "me".into(),
            committer: None,
            comments: "fix".into(),
            files: vec!["a.c".into()],
            revision: Some("abc".into()),
            when_timestamp: 1_700_000_000,
            branch: Some("main".into()),
            category: None,
            revlink: None,
            properties: Map::from_iter([("size".to_string(), json!([2, PROPERTY_SOURCE]))]),
            repository: "repo".into(),
            project: "proj".into(),
            codebase: String::new(),
            parent_changeid: Some(3),
            sourcestamp: SourceStamp {
                ssid: 5,
                branch: Some("main".into()),
                revision: Some("abc".into()),
                repository: "repo".into(),
                codebase: String::new(),
                project: "proj".into(),
                created_at: 1_700_000_001,
            },
            correlation: None,
        };
        let rest = change.to_rest();
        let keys: Vec<&str> = rest
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = FIELDS.to_vec();
        expected.sort_unstable();
        assert_eq!(keys, expected);
        assert_eq!(rest["properties"], json!({"size": [2, "Change"]}));
        assert_eq!(rest["parent_changeids"], json!([3]));
        assert_eq!(rest["revlink"], Value::Null);
        assert_eq!(
            rest["sourcestamp"],
            json!({"ssid": 5, "branch": "main", "revision": "abc", "project": "proj",
                   "repository": "repo", "codebase": "", "created_at": 1_700_000_001,
                   "patch": null})
        );
    }
}
