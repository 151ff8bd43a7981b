//! What the REST API (and chat) may see of the running master and ask of it.
//!
//! They hold no service. They read a [`View`] that the topology publishes
//! after every change of configuration or state, and they send
//! [`Command`]s, which the topology carries out on the services it owns and
//! answers. The reload record and the tasks' health are read live.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot, watch};

use crate::builds::StopError;
use crate::config::{BuilderConfig, SchedulerConfig};
use crate::db::{AddedBuildset, CancelledRequest, Pruned};
use crate::events::BuildInfo;
use crate::reconfig::{SharedStatus, Status};
use crate::schedulers::ForceError;
use crate::tasks::{Supervisor, TaskReport};

/// The running master as readers see it.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// The master's title, which names it.
    pub name: String,
    /// The configured builders with their ids.
    pub builders: Vec<(i64, Arc<BuilderConfig>)>,
    /// The connected workers: name and id.
    pub workers: Vec<(String, i64)>,
    pub schedulers: Arc<Vec<SchedulerConfig>>,
    /// The configured reporters: name and type.
    pub reporters: Vec<(String, String)>,
    pub shutdown: ShutdownState,
    /// How long a REST read may work before it stops.
    pub rest_timeout: std::time::Duration,
}

/// Where the master is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShutdownState {
    #[default]
    Running,
    /// A clean shutdown: no build starts, the master exits when the
    /// running ones have ended.
    Draining,
    /// The master is stopping now.
    Stopping,
}

/// What a shutdown request asks for (Buildbot's `shutdown` command).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownAction {
    /// Start a clean shutdown.
    Start,
    /// Cancel a clean shutdown under way.
    Cancel,
    /// Only say where it stands.
    Status,
    /// Stop now, as `SIGTERM` does.
    Now,
}

impl ShutdownAction {
    /// Buildbot's words (`start`, `stop`, `check`, `now`) and ours
    /// (`start`, `cancel`, `status`, `now`).
    pub fn parse(word: &str) -> Option<ShutdownAction> {
        Some(match word {
            "start" => ShutdownAction::Start,
            "cancel" | "stop" => ShutdownAction::Cancel,
            "status" | "check" => ShutdownAction::Status,
            "now" => ShutdownAction::Now,
            _ => return None,
        })
    }
}

/// The answer to a shutdown request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ShutdownStatus {
    pub state: ShutdownState,
    pub running_builds: usize,
}

/// What may be asked of a worker (Buildbot's worker control actions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerAction {
    /// Take no new build, and shut the worker down once its builds end.
    Stop,
    /// Shut the worker down now; its running builds are retried.
    Kill,
    /// Take no new build, with a reason.
    Pause(String),
    Unpause,
}

/// A request to the topology, with where to send its answer.
pub enum Command {
    Force {
        scheduler: String,
        /// Only these builders (names or ids); all of the scheduler's when `None`.
        builders: Option<Vec<String>>,
        params: Map<String, Value>,
        reply: oneshot::Sender<Result<AddedBuildset, ControlError>>,
    },
    StopBuild {
        buildid: i64,
        reason: String,
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
    /// Build a build's sources again; `None` when there is no such build.
    Rebuild {
        buildid: i64,
        owner: String,
        reason: String,
        reply: oneshot::Sender<Result<Option<AddedBuildset>, ControlError>>,
    },
    /// Reload the configuration now; the reload's record.
    Reconfig { reply: oneshot::Sender<Status> },
    CancelRequest {
        brid: i64,
        reply: oneshot::Sender<Result<Option<CancelledRequest>, ControlError>>,
    },
    RunningBuilds {
        builderid: Option<i64>,
        reply: oneshot::Sender<Vec<Arc<BuildInfo>>>,
    },
    Shutdown {
        action: ShutdownAction,
        reply: oneshot::Sender<ShutdownStatus>,
    },
    /// A remote worker logged in or out: the view changes.
    WorkersChanged,
    /// An action on a worker, named by name or id.
    ControlWorker {
        worker: String,
        action: WorkerAction,
        reply: oneshot::Sender<Result<String, ControlError>>,
    },
    /// A janitor pass now; `None` when no `[janitor]` is configured.
    RunJanitor {
        reply: oneshot::Sender<Option<Result<Pruned, String>>>,
    },
}

/// Why a command was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Force(#[from] ForceError),
    #[error(transparent)]
    Stop(#[from] StopError),
    /// The database failed; the cause is logged.
    #[error("internal error")]
    Internal,
    #[error("the master is stopping")]
    Stopping,
    #[error("no worker is named '{0}'")]
    NoSuchWorker(String),
    /// The action does not apply to that worker.
    #[error("{0}")]
    Worker(String),
}

/// The reading and commanding end; clones share it.
#[derive(Clone)]
pub struct Control {
    commands: mpsc::Sender<Command>,
    view: watch::Receiver<Arc<View>>,
    status: Arc<SharedStatus>,
    tasks: Supervisor,
}

impl fmt::Debug for Control {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Control").finish_non_exhaustive()
    }
}

impl Control {
    /// The topology's side makes it: it keeps the receiving end of
    /// `commands` and the sending end of `view`.
    pub fn new(
        commands: mpsc::Sender<Command>,
        view: watch::Receiver<Arc<View>>,
        status: Arc<SharedStatus>,
        tasks: Supervisor,
    ) -> Control {
        Control {
            commands,
            view,
            status,
            tasks,
        }
    }

    pub fn view(&self) -> Arc<View> {
        Arc::clone(&self.view.borrow())
    }

    /// How the last reload went.
    pub fn reload_status(&self) -> Status {
        self.status.get()
    }

    /// The master's tasks, and why it is unhealthy if it is.
    pub fn tasks(&self) -> (Vec<TaskReport>, Vec<String>) {
        (self.tasks.reports(), self.tasks.problems())
    }

    async fn ask<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(command(reply)).await.ok()?;
        answer.await.ok()
    }

    /// Asks force scheduler `scheduler` for a build (see [`Command::Force`]).
    pub async fn force(
        &self,
        scheduler: &str,
        builders: Option<Vec<String>>,
        params: Map<String, Value>,
    ) -> Result<AddedBuildset, ControlError> {
        let scheduler = scheduler.to_owned();
        self.ask(|reply| Command::Force {
            scheduler,
            builders,
            params,
            reply,
        })
        .await
        .unwrap_or(Err(ControlError::Stopping))
    }

    /// Asks for a build of build `buildid`'s sources again.
    pub async fn rebuild(
        &self,
        buildid: i64,
        owner: &str,
        reason: &str,
    ) -> Result<Option<AddedBuildset>, ControlError> {
        let (owner, reason) = (owner.to_owned(), reason.to_owned());
        self.ask(|reply| Command::Rebuild {
            buildid,
            owner,
            reason,
            reply,
        })
        .await
        .unwrap_or(Err(ControlError::Stopping))
    }

    /// Reloads the configuration and its plugins, as SIGHUP does; the
    /// reload's record.
    pub async fn reconfig(&self) -> Result<Status, ControlError> {
        self.ask(|reply| Command::Reconfig { reply })
            .await
            .ok_or(ControlError::Stopping)
    }

    /// Stops a running build; `reason` ends up in its state string.
    pub async fn stop_build(&self, buildid: i64, reason: &str) -> Result<(), ControlError> {
        let reason = reason.to_owned();
        self.ask(|reply| Command::StopBuild {
            buildid,
            reason,
            reply,
        })
        .await
        .unwrap_or(Err(ControlError::Stopping))
    }

    /// Stops, kills, pauses or unpauses a worker (by name or id); returns
    /// its name.
    pub async fn control_worker(
        &self,
        worker: &str,
        action: WorkerAction,
    ) -> Result<String, ControlError> {
        let worker = worker.to_owned();
        self.ask(|reply| Command::ControlWorker {
            worker,
            action,
            reply,
        })
        .await
        .unwrap_or(Err(ControlError::Stopping))
    }

    /// Cancels a pending build request; `None` when it was not pending.
    pub async fn cancel_request(
        &self,
        brid: i64,
    ) -> Result<Option<CancelledRequest>, ControlError> {
        self.ask(|reply| Command::CancelRequest { brid, reply })
            .await
            .unwrap_or(Err(ControlError::Stopping))
    }

    /// Runs a janitor pass now and says what it deleted; `None` when no
    /// `[janitor]` is configured.
    pub async fn run_janitor(&self) -> Result<Option<Pruned>, ControlError> {
        match self.ask(|reply| Command::RunJanitor { reply }).await {
            None => Err(ControlError::Stopping),
            Some(None) => Ok(None),
            Some(Some(Ok(pruned))) => Ok(Some(pruned)),
            Some(Some(Err(_))) => Err(ControlError::Internal),
        }
    }

    /// The running builds of one builder, or of the whole master.
    pub async fn running_builds(&self, builderid: Option<i64>) -> Vec<Arc<BuildInfo>> {
        self.ask(|reply| Command::RunningBuilds { builderid, reply })
            .await
            .unwrap_or_default()
    }

    /// Tells the topology that a remote worker logged in or out.
    pub fn workers_changed(&self) {
        let _ = self.commands.try_send(Command::WorkersChanged);
    }

    /// Starts, cancels or reports a clean shutdown, or stops now.
    pub async fn shutdown(&self, action: ShutdownAction) -> ShutdownStatus {
        self.ask(|reply| Command::Shutdown { action, reply })
            .await
            .unwrap_or(ShutdownStatus {
                state: ShutdownState::Stopping,
                running_builds: 0,
            })
    }
}
