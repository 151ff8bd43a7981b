//! One build: its steps in order, Buildbot's rules for what a step's result
//! does to the build, and the records and events of it all.

use std::sync::Arc;

use tokio::sync::watch;

use super::properties::Properties;
use super::steps::{self, StepContext};
use crate::config::{BuilderConfig, LogSettings, StepConfig};
use crate::db::{Db, Error};
use crate::events::{BuildInfo, Bus, Event, StepInfo};
use crate::results::{worst, Results};
use crate::workers::Worker;

/// Why a build is asked to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// A user stopped it, saying why: the build finishes CANCELLED, its state
    /// string ending with `(stopped: <reason>)`.
    Cancelled(String),
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
    /// The master's base directory.
    pub master_dir: Arc<std::path::Path>,
    pub info: BuildInfo,
    pub properties: Properties,
    pub logs: LogSettings,
    pub stop: watch::Receiver<Option<StopReason>>,
}

/// Runs the steps and finishes the build. Returns without finishing it when
/// the master shuts down meanwhile.
pub async fn run(mut run: Run) -> Result<(), Error> {
    let mut info = Arc::new(run.info.clone());
    run.bus.send(Event::BuildStarted(Arc::clone(&info)));
    let mut progress = Progress::default();
    let mut stopped: Option<String> = None;
    for (index, step) in run.builder.steps.iter().enumerate() {
        // Steps see a plain "stop now" flag, raised by a stop request made
        // while they run; `always_run` steps still run after a stop.
        let (kill, killed) = watch::channel(false);
        let mut watcher = run.stop.clone();
        watcher.borrow_and_update();
        if *run.stop.borrow() == Some(StopReason::Shutdown) {
            return Ok(());
        }
        info = run.notice_stop(info, &mut stopped, &mut progress).await?;
        if progress.terminate && !step.always_run {
            continue;
        }
        let forward = tokio::spawn(async move {
            if watcher.changed().await.is_ok() {
                let _ = kill.send(true);
            }
        });
        let summary = steps::running_summary(step, &run.properties);
        info = run.state(&info, summary.clone()).await?;
        let number = index as i64 + 1;
        let added = run
            .db
            .add_step(
                info.buildid,
                number,
                step.name.clone(),
                summary.clone(),
                steps::log_names(step),
            )
            .await?;
        let mut step_info = StepInfo {
            stepid: added.stepid,
            buildid: info.buildid,
            number,
            name: step.name.clone(),
            started_at: added.started_at,
            complete_at: None,
            results: None,
            state_string: summary,
        };
        run.bus.send(Event::StepStarted {
            build: Arc::clone(&info),
            step: step_info.clone(),
        });
        let context = StepContext {
            db: &run.db,
            worker: Arc::clone(&run.worker),
            builder: &run.builder.name,
            master_dir: &run.master_dir,
            properties: &mut run.properties,
            logs: run.logs,
            stop: killed.clone(),
        };
        let outcome = steps::run(step, context, &added.logids).await;
        forward.abort();
        let outcome = outcome?;
        if *run.stop.borrow() == Some(StopReason::Shutdown) {
            return Ok(());
        }
        let complete_at = run
            .db
            .finish_step(added.stepid, outcome.results, outcome.summary.clone())
            .await?;
        progress.step_done(step, outcome.results);
        step_info.complete_at = Some(complete_at);
        step_info.results = Some(outcome.results);
        step_info.state_string = outcome.summary;
        run.bus.send(Event::StepFinished {
            build: Arc::clone(&info),
            step: step_info,
        });
    }
    info = run.notice_stop(info, &mut stopped, &mut progress).await?;
    let summary = match &stopped {
        Some(reason) => format!("{} (stopped: {reason})", progress.summary()),
        None => progress.summary(),
    };
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
    let mut done = (*info).clone();
    done.complete_at = Some(finished.complete_at);
    done.results = Some(progress.results);
    done.state_string = summary;
    done.properties = run.properties.pairs().clone();
    count_finished(&done);
    run.bus.send(Event::BuildFinished(Arc::new(done)));
    if let Some((bsid, results)) = finished.buildset_complete {
        run.bus.send(Event::BuildsetComplete {
            bsid,
            results,
            complete_at: finished.complete_at,
        });
    }
    Ok(())
}

/// Counts a finished build for `/metrics`.
pub fn count_finished(build: &BuildInfo) {
    let results = build.results.unwrap_or(Results::Exception);
    let took = build.complete_at.unwrap_or(build.started_at) - build.started_at;
    crate::metrics::build_finished(
        &build.builder.name,
        &results.to_string(),
        took.max(0) as f64,
    );
}

impl Run {
    /// When a stop was asked and not yet noticed: the build terminates
    /// CANCELLED, and its state string says why.
    async fn notice_stop(
        &self,
        info: Arc<BuildInfo>,
        stopped: &mut Option<String>,
        progress: &mut Progress,
    ) -> Result<Arc<BuildInfo>, Error> {
        let asked = self.stop.borrow().clone();
        let (Some(StopReason::Cancelled(reason)), None) = (asked, stopped.as_ref()) else {
            return Ok(info);
        };
        progress.terminate = true;
        progress.results = worst(progress.results, Results::Cancelled);
        let info = self.state(&info, format!("stopped: {reason}")).await?;
        *stopped = Some(reason);
        Ok(info)
    }

    /// Records and announces a new state string of the build.
    async fn state(
        &self,
        info: &Arc<BuildInfo>,
        state_string: String,
    ) -> Result<Arc<BuildInfo>, Error> {
        self.db
            .update_build(info.buildid, state_string.clone(), None)
            .await?;
        let mut updated = (**info).clone();
        updated.state_string = state_string;
        let updated = Arc::new(updated);
        self.bus
            .send(Event::BuildStateChanged(Arc::clone(&updated)));
        Ok(updated)
    }
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
