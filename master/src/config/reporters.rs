//! `[[reporters]]`: who hears about builds, and which builds they hear about.
//!
//! Each table names a reporter (`name`), the kind a plugin offers (`type`),
//! Buildbot's message-generator options (which builds, which results, what
//! the build dictionary holds) and the delivery's `max_attempts` and `debug`;
//! every other key is the reporter's own option, handed to its plugin.

use std::fmt;

use crate::config::PluginRef;
use crate::results::Results;

/// How many times a delivery is tried before it is dead-lettered, unless
/// `max_attempts` says otherwise.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;

/// One `[[reporters]]` table, resolved.
#[derive(Clone)]
pub struct ReporterConfig {
    pub name: String,
    /// The reporter kind inside the plugin (`type`).
    pub kind: String,
    /// `plugin = ...`: a library file or a plugin name; `None` means any
    /// plugin that offers `kind`.
    pub plugin: Option<PluginRef>,
    pub generator: Generator,
    pub max_attempts: u32,
    /// Log each attempt's request and answer.
    pub debug: bool,
    /// The reporter's own options, secrets resolved.
    pub options: serde_json::Value,
    /// A digest of `options`, which tells whether they changed without
    /// comparing (or ever showing) the secrets they hold.
    pub options_digest: [u8; 32],
    /// Where the table starts, for messages.
    pub location: String,
}

impl ReporterConfig {
    /// Whether `other` asks for the same reporter with the same settings.
    pub fn same_settings(&self, other: &ReporterConfig) -> bool {
        self.kind == other.kind
            && self.plugin == other.plugin
            && self.generator == other.generator
            && self.max_attempts == other.max_attempts
            && self.debug == other.debug
            && self.options_digest == other.options_digest
    }
}

/// Leaves the options out: they may hold resolved secrets.
impl fmt::Debug for ReporterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReporterConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("plugin", &self.plugin)
            .field("generator", &self.generator)
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// Buildbot's message generator: which builds a reporter hears about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generator {
    /// Builder names; every builder when `None`.
    pub builders: Option<Vec<String>>,
    /// A build whose builder has one of these tags; any when `None`.
    pub tags: Option<Vec<String>>,
    /// The scheduler that made the build's buildset; any when `None`.
    pub schedulers: Option<Vec<String>>,
    /// A build with a source stamp on one of these branches; any when `None`.
    pub branches: Option<Vec<String>>,
    /// Which finished builds are reported.
    pub modes: Vec<Mode>,
    pub want_properties: bool,
    pub want_steps: bool,
    pub want_logs: bool,
    pub want_previous_build: bool,
    /// Report a build's start too.
    pub report_started: bool,
}

impl Default for Generator {
    fn default() -> Generator {
        Generator {
            builders: None,
            tags: None,
            schedulers: None,
            branches: None,
            modes: vec![Mode::Failing, Mode::Passing, Mode::Warnings],
            want_properties: true,
            want_steps: false,
            want_logs: false,
            want_previous_build: false,
            report_started: false,
        }
    }
}

/// Buildbot's `mode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Failing, passing, warnings, exception and cancelled builds.
    All,
    Failing,
    Passing,
    Warnings,
    Exception,
    Cancelled,
    /// A failure after a build that did not fail.
    Problem,
    /// A result that differs from the previous build's.
    Change,
}

impl Mode {
    const NAMES: [(&'static str, Mode); 8] = [
        ("all", Mode::All),
        ("failing", Mode::Failing),
        ("passing", Mode::Passing),
        ("warnings", Mode::Warnings),
        ("exception", Mode::Exception),
        ("cancelled", Mode::Cancelled),
        ("problem", Mode::Problem),
        ("change", Mode::Change),
    ];

    fn parse(name: &str) -> Option<Mode> {
        Mode::NAMES
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, mode)| *mode)
    }

    /// Whether a build with `results`, after a previous build of the same
    /// builder with `previous` (if any), is reported in this mode.
    pub fn wants(self, results: Results, previous: Option<Results>) -> bool {
        match self {
            Mode::All => matches!(
                results,
                Results::Success
                    | Results::Warnings
                    | Results::Failure
                    | Results::Exception
                    | Results::Cancelled
            ),
            Mode::Failing => results == Results::Failure,
            Mode::Passing => results == Results::Success,
            Mode::Warnings => results == Results::Warnings,
            Mode::Exception => results == Results::Exception,
            Mode::Cancelled => results == Results::Cancelled,
            Mode::Problem => results == Results::Failure && previous != Some(Results::Failure),
            Mode::Change => previous.is_some_and(|previous| previous != results),
        }
    }

    /// Whether this mode needs the previous build's result.
    pub fn needs_previous(self) -> bool {
        matches!(self, Mode::Problem | Mode::Change)
    }
}

/// Reads the generator's keys out of `table` (leaving the reporter's own);
/// each problem is one message naming the key.
pub fn generator(table: &mut toml::Table) -> Result<Generator, Vec<String>> {
    let mut errors = Vec::new();
    let mut generator = Generator::default();
    for (key, slot) in [
        ("builders", &mut generator.builders),
        ("tags", &mut generator.tags),
        ("schedulers", &mut generator.schedulers),
        ("branches", &mut generator.branches),
    ] {
        match table.remove(key) {
            None => {}
            Some(value) => match strings(&value) {
                Some(list) => *slot = Some(list),
                None => errors.push(format!("{key} must be a list of strings")),
            },
        }
    }
    match table.remove("mode") {
        None => {}
        Some(value) => {
            let names = match &value {
                toml::Value::String(name) => Some(vec![name.clone()]),
                other => strings(other),
            };
            match names {
                None => errors.push("mode must be a mode name or a list of them".into()),
                Some(names) => {
                    let mut modes = Vec::new();
                    for name in names {
                        match Mode::parse(&name) {
                            Some(mode) => modes.push(mode),
                            None => errors.push(format!(
                                "mode '{name}' is not one of: {}",
                                Mode::NAMES.map(|(n, _)| n).join(", ")
                            )),
                        }
                    }
                    generator.modes = modes;
                }
            }
        }
    }
    for (key, slot) in [
        ("want_properties", &mut generator.want_properties),
        ("want_steps", &mut generator.want_steps),
        ("want_logs", &mut generator.want_logs),
        ("want_previous_build", &mut generator.want_previous_build),
        ("report_started", &mut generator.report_started),
    ] {
        match table.remove(key) {
            None => {}
            Some(toml::Value::Boolean(value)) => *slot = value,
            Some(_) => errors.push(format!("{key} must be true or false")),
        }
    }
    if errors.is_empty() {
        Ok(generator)
    } else {
        Err(errors)
    }
}

fn strings(value: &toml::Value) -> Option<Vec<String>> {
    value
        .as_array()?
        .iter()
        .map(|item| item.as_str().map(str::to_string))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    #[test]
    fn generator_keys_are_read_and_the_rest_left_for_the_plugin() {
        let mut options = table(
            "builders = [\"a\"]\ntags = [\"t\"]\nmode = \"problem\"\nreport_started = true\n\
             want_steps = true\nserver_url = \"http://x\"",
        );
        let generator = generator(&mut options).unwrap();
        assert_eq!(generator.builders, Some(vec!["a".to_string()]));
        assert_eq!(generator.tags, Some(vec!["t".to_string()]));
        assert_eq!(generator.modes, [Mode::Problem]);
        assert!(generator.report_started && generator.want_steps && generator.want_properties);
        assert_eq!(options.keys().collect::<Vec<_>>(), ["server_url"]);
        let default = super::generator(&mut toml::Table::new()).unwrap();
        assert_eq!(
            default.modes,
            [Mode::Failing, Mode::Passing, Mode::Warnings]
        );
    }

    #[test]
    fn bad_generator_keys_are_each_named() {
        let errors = generator(&mut table(
            "builders = \"a\"\nmode = [\"failing\", \"sometimes\"]\nwant_logs = 1",
        ))
        .unwrap_err();
        assert_eq!(
            errors,
            [
                "builders must be a list of strings",
                "mode 'sometimes' is not one of: all, failing, passing, warnings, exception, cancelled, problem, change",
                "want_logs must be true or false",
            ]
        );
    }

    #[test]
    fn modes_follow_buildbot() {
        use Results::*;
        assert!(Mode::All.wants(Cancelled, None) && !Mode::All.wants(Skipped, None));
        assert!(Mode::Failing.wants(Failure, Some(Failure)));
        assert!(Mode::Problem.wants(Failure, Some(Success)) && Mode::Problem.wants(Failure, None));
        assert!(!Mode::Problem.wants(Failure, Some(Failure)));
        assert!(Mode::Change.wants(Success, Some(Failure)));
        assert!(!Mode::Change.wants(Success, Some(Success)) && !Mode::Change.wants(Success, None));
        assert!(Mode::Exception.wants(Exception, None) && !Mode::Passing.wants(Warnings, None));
    }
}
