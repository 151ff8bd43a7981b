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
use super::{BuilderConfig, ConfigError, SourceMap};
use crate::schedulers::change_filter::{ChangeFilter, ChangeFilterConfig};
use crate::schedulers::cron::{CronField, Timetable};
use crate::schedulers::force::{ForceForm, RawFixed, RawParameter};

/// A validated scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub name: String,
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
    let mut built: Vec<(SchedulerConfig, Range<usize>)> = Vec::new();
    for entry in raw {
        let span = entry.span();
        let scheduler = match scheduler(entry.into_inner(), builders) {
            Ok(scheduler) => scheduler,
            Err(messages) => {
                errors.extend(messages.into_iter().map(|m| map.error(span.clone(), m)));
                continue;
            }
        };
        if let Some((_, first)) = built.iter().find(|(s, _)| s.name == scheduler.name) {
            let message = format!(
                "scheduler name '{}' is already used at {}",
                scheduler.name,
                map.locate(first.start)
            );
            errors.push(map.error(span, message));
            continue;
        }
        built.push((scheduler, span));
    }
    built.into_iter().map(|(scheduler, _)| scheduler).collect()
}

fn scheduler(
    mut table: toml::Table,
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
