//! `[logs]` and `[janitor]`: how much of a step's output is kept and how it
//! is stored (Buildbot's `logMaxSize`, `logMaxTailSize`,
//! `logCompressionMethod`, `logCompressionLimit`), and how long history is
//! kept (its `JanitorConfigurator`).

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::cron::{CronField, Timetable};
use super::{positive_number, ConfigError, SourceMap};

/// `[logs]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogs {
    pub max_size: Option<Spanned<i64>>,
    pub max_tail_size: Option<Spanned<i64>>,
    pub compression: Option<Spanned<String>>,
    pub compression_limit: Option<Spanned<i64>>,
}

/// `[janitor]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJanitor {
    pub logs_horizon_days: Option<Spanned<toml::Value>>,
    pub builds_horizon_days: Option<Spanned<toml::Value>>,
    pub changes_horizon_days: Option<Spanned<toml::Value>>,
    pub minute: Option<CronField>,
    pub hour: Option<CronField>,
    pub day_of_month: Option<CronField>,
    pub month: Option<CronField>,
    pub day_of_week: Option<CronField>,
}

/// How a step's log is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSettings {
    /// Bytes kept from the start of a log; the rest is dropped, but for its tail.
    pub max_size: u64,
    /// Bytes kept from the end of a log that passed `max_size`.
    pub max_tail_size: u64,
    pub compression: LogCompression,
    /// Chunks smaller than this are stored as they are.
    pub compression_limit: usize,
}

/// How log chunks are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogCompression {
    Raw,
    /// zlib (Buildbot's `gz`).
    Gz,
}

impl Default for LogSettings {
    fn default() -> LogSettings {
        LogSettings {
            max_size: 50 * 1024 * 1024,
            max_tail_size: 64 * 1024,
            compression: LogCompression::Gz,
            compression_limit: 4096,
        }
    }
}

/// What the janitor deletes, and when it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct JanitorConfig {
    /// Log contents of steps that started longer ago are deleted.
    pub logs_horizon: Option<Duration>,
    /// Buildsets (with their requests, builds, steps and logs) completed
    /// longer ago are deleted.
    pub builds_horizon: Option<Duration>,
    /// Changes stored longer ago are deleted.
    pub changes_horizon: Option<Duration>,
    pub timetable: Timetable,
}

/// Resolves `[logs]`; errors go to `errors`, and defaults stand in.
pub fn logs(map: &SourceMap, raw: RawLogs, errors: &mut Vec<ConfigError>) -> LogSettings {
    let defaults = LogSettings::default();
    let mut size = |key: &str, value: Option<Spanned<i64>>, default: u64, least: i64| match value {
        None => default,
        Some(value) if *value.get_ref() >= least => *value.get_ref() as u64,
        Some(value) => {
            let message = match least {
                0 => format!("{key} must be a number of bytes (0 or more)"),
                _ => format!("{key} must be a positive number of bytes"),
            };
            errors.push(map.error(value.span(), message));
            default
        }
    };
    let max_size = size("max_size", raw.max_size, defaults.max_size, 1);
    let max_tail_size = size(
        "max_tail_size",
        raw.max_tail_size,
        defaults.max_tail_size,
        0,
    );
    let compression_limit = size(
        "compression_limit",
        raw.compression_limit,
        defaults.compression_limit as u64,
        0,
    ) as usize;
    let compression = match raw.compression {
        None => defaults.compression,
        Some(method) => match method.get_ref().as_str() {
            "gz" => LogCompression::Gz,
            "raw" => LogCompression::Raw,
            other => {
                let message = format!("compression must be \"gz\" or \"raw\", not \"{other}\"");
                errors.push(map.error(method.span(), message));
                defaults.compression
            }
        },
    };
    LogSettings {
        max_size,
        max_tail_size,
        compression,
        compression_limit,
    }
}

/// Resolves `[janitor]`, which must name at least one horizon.
pub fn janitor(
    map: &SourceMap,
    raw: Option<Spanned<RawJanitor>>,
    errors: &mut Vec<ConfigError>,
) -> Option<JanitorConfig> {
    let raw = raw?;
    let span = raw.span();
    let raw = raw.into_inner();
    let mut days = |key: &str, value: Option<Spanned<toml::Value>>| {
        let value = value?;
        match positive_number(value.get_ref()) {
            Some(days) => Some(Duration::from_secs_f64(days * 86_400.0)),
            None => {
                let message = format!("{key} must be a positive number of days");
                errors.push(map.error(value.span(), message));
                None
            }
        }
    };
    let logs_horizon = days("logs_horizon_days", raw.logs_horizon_days);
    let builds_horizon = days("builds_horizon_days", raw.builds_horizon_days);
    let changes_horizon = days("changes_horizon_days", raw.changes_horizon_days);
    // Buildbot's janitor runs at midnight unless told otherwise.
    let midnight = CronField::One(0);
    let timetable = Timetable::new(
        raw.minute.as_ref(),
        Some(raw.hour.as_ref().unwrap_or(&midnight)),
        raw.day_of_month.as_ref(),
        raw.month.as_ref(),
        raw.day_of_week.as_ref(),
    );
    let timetable = match timetable {
        Ok(timetable) => timetable,
        Err(message) => {
            errors.push(map.error(span, format!("[janitor]: {message}")));
            return None;
        }
    };
    if logs_horizon.is_none() && builds_horizon.is_none() && changes_horizon.is_none() {
        errors.push(map.error(
            span,
            "[janitor] needs logs_horizon_days, builds_horizon_days or changes_horizon_days",
        ));
        return None;
    }
    Some(JanitorConfig {
        logs_horizon,
        builds_horizon,
        changes_horizon,
        timetable,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{errors, parse};
    use super::*;

    #[test]
    fn logs_default_to_fifty_mebibytes_compressed() {
        let config = parse("").unwrap();
        assert_eq!(config.logs, LogSettings::default());
        assert_eq!(config.logs.max_size, 52_428_800);
        assert!(config.janitor.is_none());
        let config = parse(
            "[logs]\nmax_size = 1000\nmax_tail_size = 0\ncompression = \"raw\"\n\
             compression_limit = 10\n",
        )
        .unwrap();
        assert_eq!(
            config.logs,
            LogSettings {
                max_size: 1000,
                max_tail_size: 0,
                compression: LogCompression::Raw,
                compression_limit: 10,
            }
        );
    }

    #[test]
    fn bad_log_settings_name_the_line() {
        assert_eq!(
            errors("[logs]\nmax_size = 0\ncompression = \"zstd\"\nmax_tail_size = -1\n"),
            [
                "base/master.toml:2:12: max_size must be a positive number of bytes",
                "base/master.toml:4:17: max_tail_size must be a number of bytes (0 or more)",
                "base/master.toml:3:15: compression must be \"gz\" or \"raw\", not \"zstd\"",
            ]
        );
        assert_eq!(
            errors("[logs]\nmax_sise = 1\n")[0],
            "base/master.toml:2:1: unknown field `max_sise`, expected one of `max_size`, \
             `max_tail_size`, `compression`, `compression_limit`"
        );
    }

    #[test]
    fn the_janitor_runs_at_midnight_with_its_horizons() {
        let config =
            parse("[janitor]\nlogs_horizon_days = 30\nchanges_horizon_days = 0.5\n").unwrap();
        let janitor = config.janitor.unwrap();
        assert_eq!(janitor.logs_horizon, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(janitor.builds_horizon, None);
        assert_eq!(janitor.changes_horizon, Some(Duration::from_secs(43_200)));
        let midnight = CronField::One(0);
        assert_eq!(
            janitor.timetable,
            Timetable::new(None, Some(&midnight), None, None, None).unwrap()
        );
        let config =
            parse("[janitor]\nbuilds_horizon_days = 7\nhour = 3\nday_of_week = 6\n").unwrap();
        let janitor = config.janitor.unwrap();
        let (three, sunday) = (CronField::One(3), CronField::One(6));
        assert_eq!(
            janitor.timetable,
            Timetable::new(None, Some(&three), None, None, Some(&sunday)).unwrap()
        );
    }

    #[test]
    fn a_janitor_without_horizon_or_with_bad_values_is_refused() {
        assert_eq!(
            errors("[janitor]\nhour = 3\n"),
            [
                "base/master.toml:1:1: [janitor] needs logs_horizon_days, builds_horizon_days \
              or changes_horizon_days"
            ]
        );
        assert_eq!(
            errors("[janitor]\nlogs_horizon_days = 0\nhour = 24\n"),
            [
                "base/master.toml:2:21: logs_horizon_days must be a positive number of days",
                "base/master.toml:1:1: [janitor]: hour: 24 is out of range 0-23",
            ]
        );
    }
}
