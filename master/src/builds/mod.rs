//! The builders: each takes its pending build requests, oldest first, to a
//! free worker and runs the build there (Buildbot's botmaster).
//!
//! One task per builder waits to be woken (a request was added, a worker was
//! freed) and starts every build it can. Running builds are kept by id so a
//! user can stop one. A reconfiguration ([`Botmaster::apply`]) adds and
//! retires builders and changes their settings in place; a build always
//! finishes with the settings it started with.

mod build;
pub mod interpolate;
mod log;
mod properties;
mod steps;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde_json::Value;
use tokio::sync::{broadcast, watch, Notify};

pub use build::{Progress, StopReason};
pub use properties::Properties;

use crate::config::BuilderConfig;
use crate::db::{BuildsetDetails, Db, Error, PendingRequest};
use crate::events::{BuildInfo, BuilderInfo, BuildsetInfo, Bus, Event};
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
    builderid: i64,
    stop: watch::Sender<Option<StopReason>>,
}

struct Shared {
    db: Db,
    bus: Bus,
    builders: RwLock<BTreeMap<i64, Arc<Builder>>>,
    workers: ArcSwap<WorkerPool>,
    running: Mutex<BTreeMap<i64, RunningBuild>>,
    /// Set at shutdown: no build starts any more.
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
    /// Starts one task per builder. `builders` pairs each configuration with
    /// its database id.
    pub fn start(
        db: Db,
        bus: Bus,
        builders: Vec<(i64, BuilderConfig)>,
        workers: WorkerPool,
    ) -> Botmaster {
        let botmaster = Botmaster {
            shared: Arc::new(Shared {
                db,
                bus,
                builders: RwLock::new(BTreeMap::new()),
                workers: ArcSwap::from_pointee(workers),
                running: Mutex::new(BTreeMap::new()),
                closing: AtomicBool::new(false),
            }),
        };
        botmaster.apply(builders, None);
        tokio::spawn(botmaster.clone().listen(botmaster.shared.bus.subscribe()));
        botmaster
    }

    /// Makes `builders` the configured builders: new ones start, removed ones
    /// retire (their running builds finish), changed ones apply their new
    /// settings to the builds they start from now on. `workers`, when given,
    /// replaces the worker pool; workers that come or go are announced.
    pub fn apply(&self, builders: Vec<(i64, BuilderConfig)>, workers: Option<WorkerPool>) {
        if let Some(workers) = workers {
            let before = self.shared.workers.swap(Arc::new(workers));
            let after = self.shared.workers.load();
            let names = |pool: &WorkerPool| -> Vec<String> {
                pool.iter()
                    .map(|slot| slot.worker.name().to_owned())
                    .collect()
            };
            let (before, after) = (names(&before), names(&after));
            for name in after.iter().filter(|n| !before.contains(n)) {
                self.shared
                    .bus
                    .send(Event::WorkerConnected { name: name.clone() });
            }
            for name in before.into_iter().filter(|n| !after.contains(n)) {
                self.shared.bus.send(Event::WorkerMissing { name });
            }
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
                    let builder = Arc::new(Builder {
                        id,
                        config: ArcSwap::from_pointee(config),
                        wake: Notify::new(),
                        retired: AtomicBool::new(false),
                    });
                    tokio::spawn(self.clone().builder_loop(Arc::clone(&builder)));
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

    fn wake_all(&self) {
        for builder in self.read_builders().values() {
            builder.wake.notify_one();
        }
    }

    /// Wakes builders as requests arrive; after missing events, all of them.
    async fn listen(self, mut events: broadcast::Receiver<Event>) {
        loop {
            match events.recv().await {
                Ok(Event::BuildRequestAdded { builderid, .. }) => self.wake(builderid),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => self.wake_all(),
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    async fn builder_loop(self, builder: Arc<Builder>) {
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
            },
            sourcestamps: details.sourcestamps,
            properties: properties.pairs().clone(),
        };
        let (stop, stop_receiver) = watch::channel(None);
        self.lock_running()
            .insert(started.buildid, RunningBuild { builderid, stop });
        let run = build::Run {
            db: self.shared.db.clone(),
            bus: self.shared.bus.clone(),
            builder: config,
            worker: Arc::clone(&slot.worker),
            info,
            properties,
            stop: stop_receiver,
        };
        let botmaster = self.clone();
        let buildid = started.buildid;
        tokio::spawn(async move {
            if let Err(error) = build::run(run).await {
                tracing::error!("build {buildid}: cannot record the build: {error}");
            }
            botmaster.lock_running().remove(&buildid);
            drop(reservation);
            // The worker is free: any builder waiting for it may start.
            botmaster.wake_all();
        });
        Ok(())
    }

    /// Stops a running build: its command is killed and it finishes CANCELLED.
    pub fn stop_build(&self, buildid: i64, reason: &str) -> Result<(), StopError> {
        let running = self.lock_running();
        let build = running
            .get(&buildid)
            .ok_or(StopError::NotRunning(buildid))?;
        tracing::info!(
            "build {buildid} on builder {} stopped: {reason}",
            build.builderid
        );
        build.stop.send_replace(Some(StopReason::Cancelled));
        Ok(())
    }

    /// Kills every running build's commands and waits (briefly) for the
    /// builds to let go; the next start finishes them as RETRY and builds
    /// their requests again.
    pub async fn shutdown(&self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        for build in self.lock_running().values() {
            build.stop.send_replace(Some(StopReason::Shutdown));
        }
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while !self.lock_running().is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        if drained.is_err() {
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
