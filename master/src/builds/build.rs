//! One build: its steps in order, Buildbot's rules for what a step's result
//! does to the build, and the records and events of it all.

use std::sync::Arc;

use tokio::sync::watch;

use super::properties::Properties;
use super::steps::{self, StepContext};
use crate::config::{BuilderConfig, StepConfig};
use crate::db::{Db, Error};
use crate::events::{BuildInfo, Bus, Event, StepInfo};
use crate::results::{worst, Results};
use crate::workers::Worker;

/// Why a build is asked to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// A user stopped it (the reason is logged where it was asked): the
    /// build finishes CANCELLED.
    Cancelled,
    /// The master is shutting down: the build is left for the next start to
    /// finish as RETRY and build again.
    Shutdown,
}

/// The state of the steps so far (Buildbot's `Build.results` and `terminate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub results: Results,
    /// Only `always_run` steps run from now on.
    pub terminate: bool,
    /// The steps that made the build fail, for its summary.
    pub failed: Vec<String>,
}

impl Default for Progress {
    fn default() -> Progress {
        Progress {
            results: Results::Success,
            terminate: false,
            failed: Vec::new(),
        }
    }
}

impl Progress {
    /// Applies a finished step, as Buildbot's `Build.stepDone` does.
    pub fn step_done(&mut self, step: &StepConfig, results: Results) {
        let overall = match results {
            Results::Failure => {
                if step.halt_on_failure {
                    self.terminate = true;
                }
                if step.flunk_on_failure {
                    Results::Failure
                } else if step.warn_on_failure {
                    Results::Warnings
                } else {
                    Results::Success
                }
            }
            Results::Warnings => {
                if step.flunk_on_warnings {
                    Results::Failure
                } else if step.warn_on_warnings {
                    Results::Warnings
                } else {
                    Results::Success
                }
            }
            Results::Exception | Results::Retry | Results::Cancelled => {
                self.terminate = true;
                results
            }
            Results::Success | Results::Skipped => results,
        };
        if results == Results::Skipped {
            return;
        }
        if matches!(
            overall,
            Results::Failure | Results::Exception | Results::Cancelled
        ) {
            self.failed.push(step.name.clone());
        }
        self.results = worst(self.results, overall);
    }

    /// The build's `state_string` once it is over.
    pub fn summary(&self) -> String {
        match self.results {
            Results::Success => "build successful".to_owned(),
            Results::Warnings => "build successful (warnings)".to_owned(),
            Results::Skipped => "build skipped".to_owned(),
            Results::Retry => "retry".to_owned(),
            Results::Cancelled => "cancelled".to_owned(),
            Results::Failure | Results::Exception => {
                let verb = if self.results == Results::Failure {
                    "failed"
                } else {
                    "exception"
                };
                format!("{verb} {}", self.failed.join(" "))
            }
        }
    }
}

/// Everything a build runs with.
pub struct Run {
    pub db: Db,
    pub bus: Bus,
    pub builder: Arc<BuilderConfig>,
    pub worker: Arc<dyn Worker>,
    pub info: BuildInfo,
    pub properties: Properties,
    pub stop: watch::Receiver<Option<StopReason>>,
}

/// Runs the steps and finishes the build. Returns without finishing it when
/// the master shuts down meanwhile.
pub async fn run(mut run: Run) -> Result<(), Error> {
    let info = Arc::new(run.info.clone());
    run.bus.send(Event::BuildStarted(Arc::clone(&info)));
    let mut progress = Progress::default();
    let mut stopped = false;
    for (index, step) in run.builder.steps.iter().enumerate() {
        // Steps see a plain "stop now" flag, raised by a stop request made
        // while they run; `always_run` steps still run after a stop.
        let (kill, killed) = watch::channel(false);
        let mut watcher = run.stop.clone();
        let reason = watcher.borrow_and_update().clone();
        match reason {
            Some(StopReason::Shutdown) => return Ok(()),
            Some(StopReason::Cancelled) if !stopped => {
                stopped = true;
                progress.terminate = true;
                progress.results = worst(progress.results, Results::Cancelled);
            }
            _ => {}
        }
        if progress.terminate && !step.always_run {
            continue;
        }
        let forward = tokio::spawn(async move {
            if watcher.changed().await.is_ok() {
                let _ = kill.send(true);
            }
        });
        let summary = steps::running_summary(step, &run.properties);
        run.db
            .update_build(info.buildid, summary.clone(), None)
            .await?;
        let (stepid, logs) = run
            .db
            .add_step(
                info.buildid,
                index as i64 + 1,
                step.name.clone(),
                summary,
                steps::log_names(step),
            )
            .await?;
        let context = StepContext {
            db: &run.db,
            worker: Arc::clone(&run.worker),
            builder: &run.builder.name,
            properties: &mut run.properties,
            stop: killed.clone(),
        };
        let outcome = steps::run(step, context, &logs).await;
        forward.abort();
        let outcome = outcome?;
        if *run.stop.borrow() == Some(StopReason::Shutdown) {
            return Ok(());
        }
        stopped |= outcome.results == Results::Cancelled;
        run.db
            .finish_step(stepid, outcome.results, outcome.summary.clone())
            .await?;
        progress.step_done(step, outcome.results);
        run.bus.send(Event::StepFinished {
            build: Arc::clone(&info),
            step: StepInfo {
                stepid,
                number: index as i64 + 1,
                name: step.name.clone(),
                results: outcome.results,
                state_string: outcome.summary,
            },
        });
    }
    if *run.stop.borrow() == Some(StopReason::Cancelled) {
        progress.results = worst(progress.results, Results::Cancelled);
    }
    let summary = progress.summary();
    let finished = run
        .db
        .finish_build(
            info.buildid,
            info.buildrequestid,
            progress.results,
            summary.clone(),
            run.properties.pairs().clone(),
        )
        .await?;
    let mut done = run.info;
    done.complete_at = Some(finished.complete_at);
    done.results = Some(progress.results);
    done.state_string = summary;
    done.properties = run.properties.pairs().clone();
    run.bus.send(Event::BuildFinished(Arc::new(done)));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StepKind;
    use serde_json::Value;

    fn step(name: &str) -> StepConfig {
        StepConfig {
            name: name.into(),
            description: None,
            description_done: None,
            halt_on_failure: false,
            flunk_on_failure: true,
            warn_on_failure: false,
            flunk_on_warnings: false,
            warn_on_warnings: true,
            always_run: false,
            kind: StepKind::SetProperty {
                property: "x".into(),
                value: Value::Null,
            },
        }
    }

    #[test]
    fn failures_flunk_warn_or_pass_as_the_step_says() {
        let mut progress = Progress::default();
        progress.step_done(&step("a"), Results::Success);
        assert_eq!(progress.results, Results::Success);
        let warn_only = StepConfig {
            flunk_on_failure: false,
            warn_on_failure: true,
            ..step("lint")
        };
        progress.step_done(&warn_only, Results::Failure);
        assert_eq!(progress.results, Results::Warnings);
        assert!(!progress.terminate);
        let ignored = StepConfig {
            flunk_on_failure: false,
            ..step("optional")
        };
        progress.step_done(&ignored, Results::Failure);
        assert_eq!(progress.results, Results::Warnings);
        progress.step_done(&step("test"), Results::Failure);
        assert_eq!(progress.results, Results::Failure);
        assert!(!progress.terminate, "only halt_on_failure stops the build");
        assert_eq!(progress.summary(), "failed test");
    }

    #[test]
    fn halt_on_failure_and_exceptions_terminate() {
        let mut progress = Progress::default();
        let halting = StepConfig {
            halt_on_failure: true,
            ..step("compile")
        };
        progress.step_done(&halting, Results::Failure);
        assert!(progress.terminate);
        let mut progress = Progress::default();
        progress.step_done(&step("x"), Results::Exception);
        assert!(progress.terminate);
        assert_eq!(progress.results, Results::Exception);
        assert_eq!(progress.summary(), "exception x");
    }

    #[test]
    fn warnings_follow_warn_and_flunk_on_warnings_and_skips_change_nothing() {
        let mut progress = Progress::default();
        progress.step_done(&step("a"), Results::Skipped);
        assert_eq!(progress.results, Results::Success);
        let quiet = StepConfig {
            warn_on_warnings: false,
            ..step("quiet")
        };
        progress.step_done(&quiet, Results::Warnings);
        assert_eq!(progress.results, Results::Success);
        progress.step_done(&step("b"), Results::Warnings);
        assert_eq!(progress.results, Results::Warnings);
        assert_eq!(progress.summary(), "build successful (warnings)");
        let strict = StepConfig {
            flunk_on_warnings: true,
            ..step("strict")
        };
        progress.step_done(&strict, Results::Warnings);
        assert_eq!(progress.results, Results::Failure);
    }
}
