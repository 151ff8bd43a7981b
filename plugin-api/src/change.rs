//! The Change a dialect produces: Buildbot's `addChange` arguments.

use serde::{Deserialize, Serialize};

/// One change, with the fields of Buildbot's `addChange`.
///
/// Optional fields left `None` are stored as Buildbot stores them: `author` and
/// `comments` as `""`, the others as null. `revlink` starts as `Some("")` (Buildbot's
/// default); set it to `None` to store an explicit null. `when_timestamp` `None`
/// means "now".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub author: Option<String>,
    pub committer: Option<String>,
    pub comments: Option<String>,
    pub files: Vec<String>,
    pub revision: Option<String>,
    /// Epoch seconds.
    pub when_timestamp: Option<i64>,
    pub branch: Option<String>,
    pub category: Option<String>,
    pub revlink: Option<String>,
    /// Plain values; the master stores each as `[value, "Change"]`.
    pub properties: serde_json::Map<String, serde_json::Value>,
    pub repository: String,
    pub project: String,
    /// `None` stores `""`.
    pub codebase: Option<String>,
    /// The version-control kind (`git`, `hg`, …), or `None`.
    pub src: Option<String>,
}

impl Default for Change {
    fn default() -> Self {
        Change {
            author: None,
            committer: None,
            comments: None,
            files: Vec::new(),
            revision: None,
            when_timestamp: None,
            branch: None,
            category: None,
            revlink: Some(String::new()),
            properties: serde_json::Map::new(),
            repository: String::new(),
            project: String::new(),
            codebase: None,
            src: None,
        }
    }
}
