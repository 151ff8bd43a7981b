//! `[[schedulers]]`: the raw tables and the validated schedulers.
//!
//! Each entry is read in two steps: `type`, `name`, `builder_names` and
//! `properties` are common; the remaining keys must be the kind's own, read
//! with unknown keys refused.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};
use toml::Spanned;

use super::builders::table_to_json;
use super::change_filter::{ChangeFilter, ChangeFilterConfig};
use super::cron::{CronField, Timetable};
use super::force::{ForceForm, RawFixed, RawParameter};
use super::{BuilderConfig, ConfigError, SourceMap};

/// A validated scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub name: String,
    /// The entry as written (normalized), which tells a changed scheduler
    /// from an unchanged one on a reconfiguration.
    pub source: String,
    pub builder_names: Vec<String>,
    /// Name → value; buildsets get them with source "Scheduler".
    pub properties: Map<String, Value>,
    pub kind: SchedulerKind,
}

#[derive(Debug, Clone)]
pub enum SchedulerKind {
    /// Builds changes that pass the filter; with a tree-stable timer, waits for
    /// quiet and builds the last change of the lot.
    SingleBranch {
        filter: ChangeFilter,
        tree_stable_timer: Option<Duration>,
    },
    /// The same with one timer per branch (and repository, project, codebase).
    AnyBranch {
        filter: ChangeFilter,
        tree_stable_timer: Option<Duration>,
    },
    Force(ForceForm),
    Nightly(Nightly),
}

#[derive(Debug, Clone)]
pub struct Nightly {
    pub timetable: Timetable,
    /// Build only when a change passed the filter since the last build.
    pub only_if_changed: bool,
    pub filter: ChangeFilter,
    /// What to build when no change says: the default codebase on this branch.
    pub branch: Option<String>,
    pub repository: String,
    pub project: String,
    pub codebase: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommon {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    builder_names: Vec<String>,
    #[serde(default)]
    properties: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBranchScheduler {
    change_filter: Option<ChangeFilterConfig>,
    tree_stable_timer: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNightly {
    minute: Option<CronField>,
    hour: Option<CronField>,
    day_of_month: Option<CronField>,
    month: Option<CronField>,
    day_of_week: Option<CronField>,
    #[serde(default)]
    only_if_changed: bool,
    change_filter: Option<ChangeFilterConfig>,
    branch: Option<String>,
    #[serde(default)]
    repository: String,
    #[serde(default)]
    project: String,
    #[serde(default)]
    codebase: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForce {
    reason: Option<RawFixed>,
    username: Option<RawFixed>,
    branch: Option<RawFixed>,
    revision: Option<RawFixed>,
    repository: Option<RawFixed>,
    project: Option<RawFixed>,
}

const COMMON_KEYS: [&str; 4] = ["type", "name", "builder_names", "properties"];

/// Builds every scheduler, reporting mistakes into `errors`.
pub(super) fn schedulers(
    map: &SourceMap,
    raw: Vec<Spanned<toml::Table>>,
    builders: &[BuilderConfig],
    errors: &mut Vec<ConfigError>,
) -> Vec<SchedulerConfig> {
    let mut built: Vec<SchedulerConfig> = Vec::new();
    // Every name seen, valid or not, so a duplicate is reported either way.
    let mut seen: Vec<(String, Range<usize>)> = Vec::new();
    for entry in raw {
        let span = entry.span();
        let table = entry.into_inner();
        if let Some(toml::Value::String(name)) = table.get("name") {
            if let Some((_, first)) = seen.iter().find(|(seen, _)| seen == name) {
                let message = format!(
                    "scheduler name '{name}' is already used at {}",
                    map.locate(first.start)
                );
                errors.push(map.error(span, message));
                continue;
            }
            seen.push((name.clone(), span.clone()));
        }
        let source = toml::to_string(&table).unwrap_or_default();
        let scheduler = match scheduler(table, source, builders) {
            Ok(scheduler) => scheduler,
            Err(messages) => {
                errors.extend(messages.into_iter().map(|m| map.error(span.clone(), m)));
                continue;
            }
        };
        built.push(scheduler);
    }
    built
}

fn scheduler(
    mut table: toml::Table,
    source: String,
    builders: &[BuilderConfig],
) -> Result<SchedulerConfig, Vec<String>> {
    let mut common = toml::Table::new();
    for key in COMMON_KEYS {
        if let Some(value) = table.remove(key) {
            common.insert(key.to_owned(), value);
        }
    }
    let common: RawCommon = read(common, "scheduler").map_err(|e| vec![e])?;
    let name = common.name;
    let prefix = |message: String| format!("scheduler '{name}': {message}");
    let mut errors: Vec<String> = common
        .builder_names
        .iter()
        .filter(|wanted| !builders.iter().any(|b| &b.name == *wanted))
        .map(|unknown| prefix(format!("no builder is named '{unknown}'")))
        .collect();
    if common.builder_names.is_empty() {
        errors.push(prefix("builder_names is empty".into()));
    }
    let kind = common.kind.clone();
    let is_force = kind == "force";
    // A force scheduler's `properties` are its parameters; elsewhere they are values.
    let (properties, parameters) = match common.properties {
        None => (Map::new(), Vec::new()),
        Some(toml::Value::Table(table)) if !is_force => (table_to_json(table), Vec::new()),
        Some(list @ toml::Value::Array(_)) if is_force => {
            let parameters: Result<Vec<RawParameter>, _> = list.try_into();
            match parameters {
                Ok(parameters) => (Map::new(), parameters),
                Err(e) => return Err(vec![prefix(e.message().trim_end().to_owned())]),
            }
        }
        Some(_) if is_force => {
            errors.push(prefix("properties must be a list of parameters".into()));
            (Map::new(), Vec::new())
        }
        Some(_) => {
            errors.push(prefix("properties must be a table of values".into()));
            (Map::new(), Vec::new())
        }
    };
    let kind = match kind.as_str() {
        "single_branch" | "any_branch" => {
            let raw: RawBranchScheduler = read(table, &kind).map_err(|e| vec![prefix(e)])?;
            let filter = match raw.change_filter {
                Some(config) => ChangeFilter::new(&config).map_err(|e| vec![prefix(e)])?,
                None if kind == "any_branch" => ChangeFilter::any(),
                None => {
                    return Err(vec![prefix(
                        "single_branch needs a change_filter (any_branch builds every branch)"
                            .into(),
                    )])
                }
            };
            let tree_stable_timer = match raw.tree_stable_timer {
                None | Some(0) => None,
                Some(n) if n > 0 => Some(Duration::from_secs(n as u64)),
                Some(_) => {
                    return Err(vec![prefix(
                        "tree_stable_timer must be a number of seconds".into(),
                    )])
                }
            };
            if kind == "single_branch" {
                SchedulerKind::SingleBranch {
                    filter,
                    tree_stable_timer,
                }
            } else {
                SchedulerKind::AnyBranch {
                    filter,
                    tree_stable_timer,
                }
            }
        }
        "nightly" => {
            let raw: RawNightly = read(table, &kind).map_err(|e| vec![prefix(e)])?;
            let timetable = Timetable::new(
                raw.minute.as_ref(),
                raw.hour.as_ref(),
                raw.day_of_month.as_ref(),
                raw.month.as_ref(),
                raw.day_of_week.as_ref(),
            )
            .map_err(|e| vec![prefix(e)])?;
            let filter = match &raw.change_filter {
                Some(config) => ChangeFilter::new(config).map_err(|e| vec![prefix(e)])?,
                None => ChangeFilter::any(),
            };
            SchedulerKind::Nightly(Nightly {
                timetable,
                only_if_changed: raw.only_if_changed,
                filter,
                branch: raw.branch,
                repository: raw.repository,
                project: raw.project,
                codebase: raw.codebase,
            })
        }
        "force" => {
            let raw: RawForce = read(table, &kind).map_err(|e| vec![prefix(e)])?;
            let fixed: BTreeMap<String, RawFixed> = [
                ("reason", raw.reason),
                ("username", raw.username),
                ("branch", raw.branch),
                ("revision", raw.revision),
                ("repository", raw.repository),
                ("project", raw.project),
            ]
            .into_iter()
            .filter_map(|(name, spec)| spec.map(|spec| (name.to_owned(), spec)))
            .collect();
            match ForceForm::new(fixed, parameters) {
                Ok(form) => SchedulerKind::Force(form),
                Err(messages) => {
                    errors.extend(messages.into_iter().map(prefix));
                    return Err(errors);
                }
            }
        }
        other => {
            return Err(vec![prefix(format!(
                "unknown scheduler type '{other}' (expected single_branch, any_branch, force or nightly)"
            ))])
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(SchedulerConfig {
        name,
        source,
        builder_names: common.builder_names,
        properties,
        kind,
    })
}

/// Reads a table into `T`, naming `what` in errors.
fn read<T: serde::de::DeserializeOwned>(table: toml::Table, what: &str) -> Result<T, String> {
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| format!("{what}: {}", e.message().trim_end()))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::Config;
    use super::*;

    fn parse(text: &str) -> Result<Config, Vec<String>> {
        let text = format!(
            "[[workers]]\ntype = \"local\"\nname = \"w\"\n\
             [[builders]]\nname = \"b\"\nworkernames = [\"w\"]\n{text}"
        );
        Config::parse(Path::new("m.toml"), &text)
            .map_err(|errors| errors.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn every_scheduler_type() {
        let config = parse(
            r#"
[[schedulers]]
type = "single_branch"
name = "main"
builder_names = ["b"]
change_filter = { branch = "main", project_re = "^lib" }
tree_stable_timer = 30
properties = { owner = "ci" }
[[schedulers]]
type = "any_branch"
name = "all"
builder_names = ["b"]
[[schedulers]]
type = "nightly"
name = "nightly"
builder_names = ["b"]
hour = 3
day_of_week = [0, 2]
only_if_changed = true
branch = "main"
[[schedulers]]
type = "force"
name = "force"
builder_names = ["b"]
reason = { default = "because", required = true }
[[schedulers.properties]]
type = "boolean"
name = "clean"
"#,
        )
        .unwrap();
        let kinds: Vec<&str> = config
            .schedulers
            .iter()
            .map(|s| match s.kind {
                SchedulerKind::SingleBranch { .. } => "single",
                SchedulerKind::AnyBranch { .. } => "any",
                SchedulerKind::Nightly(_) => "nightly",
                SchedulerKind::Force(_) => "force",
            })
            .collect();
        assert_eq!(kinds, ["single", "any", "nightly", "force"]);
        let SchedulerKind::SingleBranch {
            tree_stable_timer, ..
        } = &config.schedulers[0].kind
        else {
            panic!("single_branch");
        };
        assert_eq!(*tree_stable_timer, Some(Duration::from_secs(30)));
        assert_eq!(config.schedulers[0].properties["owner"], "ci");
        let SchedulerKind::Force(form) = &config.schedulers[3].kind else {
            panic!("force");
        };
        assert_eq!(form.properties[0].name, "clean");
        assert!(form.reason.required);
    }

    #[test]
    fn scheduler_mistakes_are_located_and_named() {
        let errors = parse(
            r#"
[[schedulers]]
type = "single_branch"
name = "main"
builder_names = ["b", "ghost"]
change_filter = { branch_re = "(" }
[[schedulers]]
type = "single_branch"
name = "nofilter"
builder_names = ["b"]
[[schedulers]]
type = "nightly"
name = "n"
builder_names = ["b"]
hour = 25
[[schedulers]]
type = "weekly"
name = "w"
builder_names = ["b"]
[[schedulers]]
type = "any_branch"
name = "t"
builder_names = ["b"]
treeStableTimer = 3
[[schedulers]]
type = "any_branch"
name = "n"
builder_names = ["b"]
"#,
        )
        .unwrap_err();
        let expected = [
            "m.toml:8:1: scheduler 'main': branch_re: invalid regular expression '('",
            "m.toml:13:1: scheduler 'nofilter': single_branch needs a change_filter",
            "m.toml:17:1: scheduler 'n': hour: 25 is out of range 0-23",
            "m.toml:22:1: scheduler 'w': unknown scheduler type 'weekly'",
            "m.toml:26:1: scheduler 't': any_branch: unknown field `treeStableTimer`",
            "m.toml:31:1: scheduler name 'n' is already used at m.toml:17:1",
        ];
        assert_eq!(errors.len(), expected.len(), "{errors:#?}");
        for (error, expected) in errors.iter().zip(expected) {
            assert!(
                error.starts_with(expected),
                "{error}\n  expected {expected}"
            );
        }
    }
}
