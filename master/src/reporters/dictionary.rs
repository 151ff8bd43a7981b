//! Buildbot's build dictionary, as a reporter receives it.

use buildmaster_plugin_api::Wants;
use serde_json::{json, Value};

use crate::config::Generator;
use crate::db::ReportParts;
use crate::events::BuildInfo;

/// The build page on the master, as Buildbot links it.
pub fn build_url(buildbot_url: &str, build: &BuildInfo) -> String {
    format!(
        "{}/#/builders/{}/builds/{}",
        buildbot_url.trim_end_matches('/'),
        build.builder.builderid,
        build.number
    )
}

/// The dictionary of `build`: its own fields, `builder`, `buildset` with its
/// `sourcestamps`, `url`, `blamelist`, and what was wanted of `properties`,
/// `steps` and `prev_build` (`null` when there is none).
pub fn build_dictionary(
    build: &BuildInfo,
    buildbot_url: &str,
    parts: &ReportParts,
    wants: &Wants,
    previous: Option<&Value>,
) -> Value {
    let mut dictionary = build.to_json();
    let sourcestamps = dictionary["sourcestamps"].clone();
    dictionary["buildset"]["sourcestamps"] = sourcestamps;
    dictionary["url"] = json!(build_url(buildbot_url, build));
    dictionary["masterid"] = json!(1);
    dictionary["blamelist"] = json!(parts.blamelist);
    if !wants.properties {
        dictionary["properties"] = json!({});
    }
    if wants.steps {
        dictionary["steps"] = Value::Array(parts.steps.clone());
    }
    if wants.previous_build {
        dictionary["prev_build"] = previous.cloned().unwrap_or(Value::Null);
    }
    dictionary
}

/// Whether `generator`'s filters (builders, tags, schedulers, branches) let
/// `build` through; the result mode is checked apart.
pub fn passes_filters(generator: &Generator, build: &BuildInfo) -> bool {
    let any = |list: &Option<Vec<String>>, test: &dyn Fn(&String) -> bool| {
        list.as_ref().is_none_or(|list| list.iter().any(test))
    };
    any(&generator.builders, &|name| *name == build.builder.name)
        && any(&generator.tags, &|tag| build.builder.tags.contains(tag))
        && any(&generator.schedulers, &|s| *s == build.buildset.scheduler)
        && any(&generator.branches, &|branch| {
            build
                .sourcestamps
                .iter()
                .any(|ss| ss.branch.as_deref() == Some(branch.as_str()))
        })
}
