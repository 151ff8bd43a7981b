//! What the master counts and times, for `/metrics` in the Prometheus text
//! format (version 0.0.4).
//!
//! Counters and histograms are kept here, process-wide, by the code that
//! sees the events (hooks, plugin calls, builds, reloads, deliveries,
//! Telegram calls). Gauges of state (queue depth, workers connected,
//! outbox backlog, generation) are read when `/metrics` is scraped, and
//! handed to [`render`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

/// Label names and values, in order.
pub type Labels = Vec<(&'static str, String)>;

/// Every metric: its name, type and help text.
const FAMILIES: &[(&str, &str, &str)] = &[
    (
        "buildmaster_hook_requests_total",
        "counter",
        "Change hook requests, by dialect and HTTP status.",
    ),
    (
        "buildmaster_hook_signature_failures_total",
        "counter",
        "Change hook requests a dialect refused for a wrong secret, token or signature.",
    ),
    (
        "buildmaster_hook_deliveries_not_kept_total",
        "counter",
        "Change hook deliveries the inspector dropped, its writes being too far behind.",
    ),
    (
        "buildmaster_plugin_call_seconds",
        "histogram",
        "Time spent in plugin calls, by plugin library and call.",
    ),
    (
        "buildmaster_plugin_panics_total",
        "counter",
        "Plugin calls that panicked, by plugin library.",
    ),
    (
        "buildmaster_reloads_total",
        "counter",
        "Configuration reloads, by outcome (applied, unchanged, failed).",
    ),
    (
        "buildmaster_config_generation",
        "gauge",
        "The generation of the running configuration.",
    ),
    (
        "buildmaster_builds_total",
        "counter",
        "Finished builds, by builder and result.",
    ),
    (
        "buildmaster_build_duration_seconds",
        "histogram",
        "Durations of finished builds, by builder.",
    ),
    (
        "buildmaster_build_requests_pending",
        "gauge",
        "Build requests waiting for a worker, by builder.",
    ),
    (
        "buildmaster_workers_connected",
        "gauge",
        "Workers that can take builds now (local ones always can).",
    ),
    (
        "buildmaster_reporter_deliveries_pending",
        "gauge",
        "Reporter requests stored and not yet delivered, by reporter.",
    ),
    (
        "buildmaster_reporter_delivery_failures_total",
        "counter",
        "Failed delivery attempts, by reporter.",
    ),
    (
        "buildmaster_reporter_dead_letters_total",
        "counter",
        "Deliveries given up after their last attempt, by reporter.",
    ),
    (
        "buildmaster_telegram_api_calls_total",
        "counter",
        "Telegram Bot API calls, by method.",
    ),
    (
        "buildmaster_telegram_api_errors_total",
        "counter",
        "Telegram Bot API calls that failed, by method.",
    ),
];

/// Bucket bounds, in seconds, of plugin calls (fast) and builds (slow).
const CALL_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];
const BUILD_BUCKETS: &[f64] = &[
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 3600.0, 7200.0,
];

#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    /// Per bucket, not cumulative; the last is +Inf.
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    fn observe(&mut self, value: f64) {
        let bucket = self
            .bounds
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(self.bounds.len());
        self.counts[bucket] += 1;
        self.sum += value;
    }
}

#[derive(Default)]
struct Store {
    counters: BTreeMap<(&'static str, Labels), u64>,
    histograms: BTreeMap<(&'static str, Labels), Histogram>,
}

fn store() -> &'static Mutex<Store> {
    static STORE: OnceLock<Mutex<Store>> = OnceLock::new();
    STORE.get_or_init(Mutex::default)
}

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

/// Adds one to counter `name` with `pairs`.
pub fn count(name: &'static str, pairs: &[(&'static str, &str)]) {
    let mut store = store().lock().unwrap_or_else(|e| e.into_inner());
    *store.counters.entry((name, labels(pairs))).or_default() += 1;
}

fn observe(name: &'static str, pairs: &[(&'static str, &str)], bounds: &'static [f64], value: f64) {
    let mut store = store().lock().unwrap_or_else(|e| e.into_inner());
    store
        .histograms
        .entry((name, labels(pairs)))
        .or_insert_with(|| Histogram::new(bounds))
        .observe(value);
}

/// A plugin call took `seconds`; `panicked` when it panicked.
pub fn plugin_call(plugin: &str, call: &'static str, seconds: f64, panicked: bool) {
    let pairs = [("plugin", plugin), ("call", call)];
    observe(
        "buildmaster_plugin_call_seconds",
        &pairs,
        CALL_BUCKETS,
        seconds,
    );
    if panicked {
        count("buildmaster_plugin_panics_total", &[("plugin", plugin)]);
    }
}

/// A build of `builder` finished with `result` after `seconds`.
pub fn build_finished(builder: &str, result: &str, seconds: f64) {
    count(
        "buildmaster_builds_total",
        &[("builder", builder), ("result", result)],
    );
    observe(
        "buildmaster_build_duration_seconds",
        &[("builder", builder)],
        BUILD_BUCKETS,
        seconds,
    );
}

/// A value read at scrape time.
#[derive(Debug, Clone, PartialEq)]
pub struct Gauge {
    pub name: &'static str,
    pub labels: Labels,
    pub value: f64,
}

/// Escapes a label value as the text format wants.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn label_text(labels: &Labels, extra: Option<(&str, String)>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn number(value: f64) -> String {
    if value.is_infinite() {
        "+Inf".to_owned()
    } else {
        format!("{value}")
    }
}

/// Every family, with what was counted and `gauges`, in the text format.
pub fn render(gauges: &[Gauge]) -> String {
    let (counters, histograms) = {
        let store = store().lock().unwrap_or_else(|e| e.into_inner());
        (store.counters.clone(), store.histograms.clone())
    };
    let mut out = String::with_capacity(16 * 1024);
    for (name, kind, help) in FAMILIES {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        match *kind {
            "counter" => {
                for ((_, labels), value) in counters.iter().filter(|((n, _), _)| n == name) {
                    let _ = writeln!(out, "{name}{} {value}", label_text(labels, None));
                }
            }
            "histogram" => {
                let mine = histograms.iter().filter(|((n, _), _)| n == name);
                for ((_, labels), histogram) in mine {
                    let mut cumulative = 0;
                    let bounds = histogram.bounds.iter().copied().chain([f64::INFINITY]);
                    for (bound, count) in bounds.zip(&histogram.counts) {
                        cumulative += count;
                        let le = Some(("le", number(bound)));
                        let _ =
                            writeln!(out, "{name}_bucket{} {cumulative}", label_text(labels, le));
                    }
                    let text = label_text(labels, None);
                    let _ = writeln!(out, "{name}_sum{text} {}", histogram.sum);
                    let _ = writeln!(out, "{name}_count{text} {cumulative}");
                }
            }
            _ => {
                for gauge in gauges.iter().filter(|g| g.name == *name) {
                    let _ = writeln!(
                        out,
                        "{name}{} {}",
                        label_text(&gauge.labels, None),
                        number(gauge.value)
                    );
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_histograms_and_gauges_render_in_the_text_format() {
        count(
            "buildmaster_hook_requests_total",
            &[("dialect", "test\"x"), ("status", "200")],
        );
        count(
            "buildmaster_hook_requests_total",
            &[("dialect", "test\"x"), ("status", "200")],
        );
        plugin_call("libtest_metrics", "handle", 0.0002, true);
        plugin_call("libtest_metrics", "handle", 5.0, false);
        let gauges = [Gauge {
            name: "buildmaster_config_generation",
            labels: Vec::new(),
            value: 3.0,
        }];
        let text = render(&gauges);
        assert!(text.contains("# TYPE buildmaster_hook_requests_total counter\n"));
        assert!(
            text.contains(
                "buildmaster_hook_requests_total{dialect=\"test\\\"x\",status=\"200\"} 2\n"
            ),
            "{text}"
        );
        let bucket =
            "buildmaster_plugin_call_seconds_bucket{plugin=\"libtest_metrics\",call=\"handle\"";
        assert!(
            text.contains(&format!("{bucket},le=\"0.00025\"}} 1\n")),
            "{text}"
        );
        assert!(text.contains(&format!("{bucket},le=\"1\"}} 1\n")), "{text}");
        assert!(
            text.contains(&format!("{bucket},le=\"+Inf\"}} 2\n")),
            "{text}"
        );
        assert!(text.contains(
            "buildmaster_plugin_call_seconds_count{plugin=\"libtest_metrics\",call=\"handle\"} 2\n"
        ));
        assert!(text.contains("buildmaster_plugin_panics_total{plugin=\"libtest_metrics\"} 1\n"));
        assert!(text.contains("buildmaster_config_generation 3\n"));
        // Every family says what it is, even before anything is counted.
        for (name, kind, _) in FAMILIES {
            assert!(text.contains(&format!("# TYPE {name} {kind}\n")), "{name}");
        }
    }
}
