//! The builders: each takes its pending build requests, oldest first, to a
//! free worker and runs the build there (Buildbot's botmaster).
//!
//! One task per builder waits to be woken (a request was added, a worker was
//! freed) and starts every build it can. Running builds are kept by id so a
//! user can stop one. A reconfiguration ([`Botmaster::apply`]) adds and
//! retires builders and changes their settings in place; a build always
//! finishes with the settings it started with. The first configuration is
//! applied the same way, to a botmaster with no builder and no worker.
//!
//! A clean shutdown ([`Botmaster::drain`]) lets running builds finish and
//! starts no new one; [`Botmaster::idle`] says when the last one ended.

mod build;
mod log;
mod properties;
mod steps;

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::FutureExt;
use serde_json::Value;
use tokio::sync::{broadcast, watch, Notify};
use tokio::task::JoinHandle;

pub use build::{Progress, StopReason};
pub use properties::Properties;

use crate::config::{BuilderConfig, LogSettings};
use crate::db::{BuildsetDetails, Db, Error, PendingRequest};
use crate::events::{BuildInfo, BuilderInfo, BuildsetInfo, Bus, Event, WorkerEvent};
use crate::results::Results;
use crate::tasks::{Policy, Supervisor};
use crate::workers::{Reservation, WorkerPool};

/// How long shutdown waits for running builds to let go of their processes.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A builder as the botmaster runs it.
struct Builder {
    id: i64,
    config: ArcSwap<BuilderConfig>,
    wake: Notify,
    /// Set when a reconfiguration removes the builder: its task ends, its
    /// running builds finish, its pending requests wait for it to return.
    retired: AtomicBool,
}

struct RunningBuild {
    info: Arc<BuildInfo>,
    stop: watch::Sender<Option<StopReason>>,
    /// The task running it, joined at shutdown.
    task: Option<JoinHandle<()>>,
}

struct Shared {
    db: Db,
    /// The master's base directory, where relative master paths of steps start.
    master_dir: Arc<std::path::Path>,
    bus: Bus,
    supervisor: Supervisor,
    builders: RwLock<BTreeMap<i64, Arc<Builder>>>,
    workers: ArcSwap<WorkerPool>,
    /// How the logs of builds started from now on are kept.
    logs: ArcSwap<LogSettings>,
    running: Mutex<BTreeMap<i64, RunningBuild>>,
    /// How many builds run; tells a clean shutdown when the last one ends.
    count: watch::Sender<usize>,
    /// Set by a clean shutdown, and at shutdown: no build starts any more.
    closing: AtomicBool,
}

/// Runs the builders; clones share them.
#[derive(Clone)]
pub struct Botmaster {
    shared: Arc<Shared>,
}

/// Why a stop request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StopError {
    #[error("build {0} is not running")]
    NotRunning(i64),
}

impl Botmaster {
    /// A botmaster with no builder and no worker, listening for build
    /// requests; [`Botmaster::apply`] gives it its configuration.
    pub fn new(
        db: Db,
        bus: Bus,
        supervisor: Supervisor,
        master_dir: &std::path::Path,
    ) -> Botmaster {
        let botmaster = Botmaster {
            shared: Arc::new(Shared {
                db,
                master_dir: Arc::from(master_dir),
                bus,
                supervisor: supervisor.clone(),
                builders: RwLock::new(BTreeMap::new()),
                workers: ArcSwap::from_pointee(WorkerPool::default()),
                logs: ArcSwap::from_pointee(LogSettings::default()),
                running: Mutex::new(BTreeMap::new()),
                count: watch::Sender::new(0),
                closing: AtomicBool::new(false),
            }),
        };
        let listener = botmaster.clone();
        supervisor.spawn("botmaster requests", Policy::Forever, move || {
            let botmaster = listener.clone();
            let events = botmaster.shared.bus.subscribe();
            async move {
                // Requests added while this task was not listening.
                botmaster.wake_all();
                botmaster.listen(events).await
            }
        });
        botmaster
    }

    /// Makes `builders` the configured builders: new ones start, removed ones
    /// retire (their running builds finish), changed ones apply their new
    /// settings to the builds they start from now on. `workers` replaces the
    /// worker pool; workers that come or go are announced. Builds started
    /// from now on keep their logs as `logs` says.
    pub fn apply(
        &self,
        builders: Vec<(i64, BuilderConfig)>,
        workers: WorkerPool,
        logs: LogSettings,
    ) {
        self.shared.logs.store(Arc::new(logs));
        let before = self.shared.workers.swap(Arc::new(workers));
        let after = self.shared.workers.load();
        let now = crate::clock::now();
        let event = |slot: &crate::workers::WorkerSlot| WorkerEvent {
            workerid: slot.id,
            name: slot.worker.name().to_owned(),
            at: now,
        };
        // Remote workers are announced by their logins and logouts.
        for slot in after
            .iter()
            .filter(|s| before.get(s.worker.name()).is_none() && s.link.is_none())
        {
            self.shared.bus.send(Event::WorkerConnected(event(slot)));
        }
        for slot in before
            .iter()
            .filter(|s| after.get(s.worker.name()).is_none() && s.link.is_none())
        {
            self.shared.bus.send(Event::WorkerDisconnected(event(slot)));
        }
        let mut current = self.write_builders();
        let wanted: BTreeMap<i64, BuilderConfig> = builders.into_iter().collect();
        current.retain(|id, builder| {
            if wanted.contains_key(id) {
                return true;
            }
            builder.retired.store(true, Ordering::SeqCst);
            builder.wake.notify_one();
            false
        });
        for (id, config) in wanted {
            match current.get(&id) {
                Some(builder) if **builder.config.load() == config => {}
                Some(builder) => builder.config.store(Arc::new(config)),
                None => {
                    let name = config.name.clone();
                    let builder = Arc::new(Builder {
                        id,
                        config: ArcSwap::from_pointee(config),
                        wake: Notify::new(),
                        retired: AtomicBool::new(false),
                    });
                    let (botmaster, looped) = (self.clone(), Arc::clone(&builder));
                    // Ends by itself once the builder retires.
                    self.shared.supervisor.spawn(
                        format!("builder '{name}'"),
                        Policy::UntilDone,
                        move || botmaster.clone().builder_loop(Arc::clone(&looped)),
                    );
                    current.insert(id, builder);
                }
            }
        }
        drop(current);
        // Pending requests may now find a builder or a worker.
        self.wake_all();
    }

    fn wake(&self, builderid: i64) {
        if let Some(builder) = self.read_builders().get(&builderid) {
            builder.wake.notify_one();
        }
    }

    /// Lets every builder look for work again (a worker became free).
    pub fn wake_all(&self) {
        for builder in self.read_builders().values() {
            builder.wake.notify_one();
        }
    }

    /// Wakes builders as requests arrive; after missing events, all of them.
    async fn listen(self, mut events: broadcast::Receiver<Event>) {
        loop {
            match events.recv().await {
                Ok(Event::BuildRequestAdded { builderid, .. }) => self.wake(builderid),
                // Requests may have been waiting for this worker.
                Ok(Event::WorkerConnected(_)) => self.wake_all(),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => self.wake_all(),
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    async fn builder_loop(self, builder: Arc<Builder>) {
        // A restarted loop may have missed a wake-up.
        builder.wake.notify_one();
        loop {
            builder.wake.notified().await;
            if builder.retired.load(Ordering::SeqCst) {
                return;
            }
            if let Err(error) = self.start_builds(&builder).await {
                tracing::error!(
                    "builder {}: cannot start builds: {error}",
                    builder.config.load().name
                );
                // Try again later rather than spinning on a failing database.
                tokio::time::sleep(Duration::from_secs(1)).await;
                builder.wake.notify_one();
            }
        }
    }

    /// Starts a build for every pending request that finds a free worker.
    async fn start_builds(&self, builder: &Builder) -> Result<(), Error> {
        let db = &self.shared.db;
        for request in db.pending_requests(builder.id).await? {
            if self.shared.closing.load(Ordering::SeqCst) || builder.retired.load(Ordering::SeqCst)
            {
                return Ok(());
            }
            let config = builder.config.load_full();
            let Some(reservation) = self
                .shared
                .workers
                .load()
                .reserve(&config.workernames, &config.name)
            else {
                return Ok(());
            };
            let Some(details) = db.buildset_details(request.buildsetid).await? else {
                continue;
            };
            self.start_build(builder.id, config, request, details, reservation)
                .await?;
        }
        Ok(())
    }

    async fn start_build(
        &self,
        builderid: i64,
        config: Arc<BuilderConfig>,
        request: PendingRequest,
        details: BuildsetDetails,
        reservation: Reservation,
    ) -> Result<(), Error> {
        let slot = Arc::clone(&reservation.slot);
        let workername = slot.worker.name().to_owned();
        let mut properties = Properties::new(details.sourcestamps.clone(), workername.clone());
        properties.update(&details.properties);
        for (name, value) in &config.properties {
            properties.set(name, value.clone(), "Builder");
        }
        properties.set("buildername", Value::from(config.name.clone()), "Builder");
        if let Some(stamp) = details.sourcestamps.first() {
            properties.set("branch", Value::from(stamp.branch.clone()), "Build");
            properties.set("revision", Value::from(stamp.revision.clone()), "Build");
            properties.set("repository", Value::from(stamp.repository.clone()), "Build");
            properties.set("project", Value::from(stamp.project.clone()), "Build");
            properties.set("codebase", Value::from(stamp.codebase.clone()), "Build");
        }
        properties.set("workername", Value::from(workername.clone()), "Worker");
        for (name, value) in &slot.properties() {
            properties.set(name, value.clone(), "Worker");
        }
        let builddir = slot.worker.builder_dir(&config.name);
        properties.set("builddir", Value::from(builddir), "Worker");
        let Some(started) = self
            .shared
            .db
            .claim_and_start_build(request.brid, builderid, slot.id, properties.pairs().clone())
            .await?
        else {
            return Ok(());
        };
        properties.set("buildnumber", Value::from(started.number), "Build");
        let info = BuildInfo {
            buildid: started.buildid,
            number: started.number,
            buildrequestid: request.brid,
            started_at: started.started_at,
            complete_at: None,
            results: None,
            state_string: "starting".into(),
            builder: BuilderInfo {
                builderid,
                name: config.name.clone(),
                description: config.description.clone(),
                tags: config.tags.clone(),
            },
            worker: workername,
            workerid: slot.id,
            buildset: BuildsetInfo {
                bsid: details.bsid,
                reason: details.reason,
                scheduler: details.scheduler,
                external_idstring: details.external_idstring,
                submitted_at: details.submitted_at,
                correlation: details.correlation,
            },
            sourcestamps: details.sourcestamps,
            properties: properties.pairs().clone(),
        };
        let info = Arc::new(info);
        let (stop, stop_receiver) = watch::channel(None);
        let run = build::Run {
            db: self.shared.db.clone(),
            bus: self.shared.bus.clone(),
            builder: config,
            worker: Arc::clone(&slot.worker),
            master_dir: Arc::clone(&self.shared.master_dir),
            info: (*info).clone(),
            properties,
            logs: **self.shared.logs.load(),
            stop: stop_receiver,
        };
        let botmaster = self.clone();
        let buildid = started.buildid;
        // Registered before the task starts, so that it finds itself to remove.
        let mut running = self.lock_running();
        running.insert(
            buildid,
            RunningBuild {
                info: Arc::clone(&info),
                stop,
                task: None,
            },
        );
        let task = tokio::spawn(async move {
            let outcome = AssertUnwindSafe(build::run(run)).catch_unwind().await;
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::error!("build {buildid}: cannot record the build: {error}")
                }
                Err(_) => botmaster.finish_after_panic(&info).await,
            }
            botmaster.lock_running().remove(&buildid);
            botmaster.shared.count.send_modify(|count| *count -= 1);
            drop(reservation);
            // The worker is free: any builder waiting for it may start.
            botmaster.wake_all();
        });
        if let Some(build) = running.get_mut(&buildid) {
            build.task = Some(task);
        }
        drop(running);
        self.shared.count.send_modify(|count| *count += 1);
        Ok(())
    }

    /// A build whose task panicked (a bug, logged with the panic) finishes
    /// EXCEPTION, so that it does not look as if it still ran.
    async fn finish_after_panic(&self, info: &BuildInfo) {
        tracing::error!(
            "build {} of builder {}: its task panicked; it finishes EXCEPTION",
            info.buildid,
            info.builder.name
        );
        let finished = self
            .shared
            .db
            .finish_build(
                info.buildid,
                info.buildrequestid,
                Results::Exception,
                "exception (internal error)".into(),
                info.properties.clone(),
            )
            .await;
        match finished {
            Ok(finished) => {
                let mut done = info.clone();
                done.complete_at = Some(finished.complete_at);
                done.results = Some(Results::Exception);
                done.state_string = "exception (internal error)".into();
                build::count_finished(&done);
                self.shared.bus.send(Event::BuildFinished(Arc::new(done)));
                if let Some((bsid, results)) = finished.buildset_complete {
                    self.shared.bus.send(Event::BuildsetComplete {
                        bsid,
                        results,
                        complete_at: finished.complete_at,
                    });
                }
            }
            Err(error) => tracing::error!("build {}: cannot record its end: {error}", info.buildid),
        }
    }

    /// Stops a running build: its command is killed and it finishes
    /// CANCELLED, `reason` in its state string.
    pub fn stop_build(&self, buildid: i64, reason: &str) -> Result<(), StopError> {
        let running = self.lock_running();
        let build = running
            .get(&buildid)
            .ok_or(StopError::NotRunning(buildid))?;
        tracing::info!(
            "build {buildid} on builder {} stopped: {reason}",
            build.info.builder.name
        );
        build
            .stop
            .send_replace(Some(StopReason::Cancelled(reason.to_owned())));
        Ok(())
    }

    /// The running builds, of one builder or of all, oldest first.
    pub fn running_builds(&self, builderid: Option<i64>) -> Vec<Arc<BuildInfo>> {
        self.lock_running()
            .values()
            .filter(|build| builderid.is_none_or(|id| build.info.builder.builderid == id))
            .map(|build| Arc::clone(&build.info))
            .collect()
    }

    /// Starts no new build from now on; running builds go on (a clean
    /// shutdown's first half).
    pub fn drain(&self) {
        self.shared.closing.store(true, Ordering::SeqCst);
    }

    /// Starts builds again after [`Botmaster::drain`].
    pub fn resume(&self) {
        self.shared.closing.store(false, Ordering::SeqCst);
        self.wake_all();
    }

    /// Waits until no build runs.
    pub async fn idle(&self) {
        let mut count = self.shared.count.subscribe();
        let _ = count.wait_for(|running| *running == 0).await;
    }

    /// Kills every running build's commands and waits (at most
    /// [`SHUTDOWN_GRACE`]) for the builds to let go; the next start finishes
    /// them as RETRY and builds their requests again.
    pub async fn shutdown(&self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        let tasks: Vec<JoinHandle<()>> = self
            .lock_running()
            .values_mut()
            .filter_map(|build| {
                build.stop.send_replace(Some(StopReason::Shutdown));
                build.task.take()
            })
            .collect();
        let joined = tokio::time::timeout(SHUTDOWN_GRACE, async {
            for task in tasks {
                let _ = task.await;
            }
        })
        .await;
        if joined.is_err() {
            tracing::warn!("some builds did not stop within {SHUTDOWN_GRACE:?}");
        }
    }

    /// The builder ids with their configurations.
    pub fn builders(&self) -> Vec<(i64, Arc<BuilderConfig>)> {
        self.read_builders()
            .values()
            .map(|builder| (builder.id, builder.config.load_full()))
            .collect()
    }

    pub fn workers(&self) -> Arc<WorkerPool> {
        self.shared.workers.load_full()
    }

    /// The paused workers as the database has them, by name, with the
    /// reason given: a worker new to the pool (at start) starts paused.
    pub async fn stored_pauses(&self) -> Result<BTreeMap<String, String>, crate::db::Error> {
        self.shared.db.worker_pauses().await
    }

    fn read_builders(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<i64, Arc<Builder>>> {
        self.shared
            .builders
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write_builders(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<i64, Arc<Builder>>> {
        self.shared
            .builders
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, BTreeMap<i64, RunningBuild>> {
        self.shared
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests;
