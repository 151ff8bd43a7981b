//! The running master: it owns every service, builds each configuration to
//! one side and swaps it in, answers commands, and stops and joins it all.
//!
//! [`run`] opens the database and the event bus, builds every service empty
//! and then applies the first configuration the same way a reload applies a
//! new one ([`Topology::prepare`], then [`Topology::apply`]): the first start
//! is a reload from nothing. Then it waits for signals, reload triggers and
//! commands until told to stop.
//!
//! A reload reads master.toml, loads its plugins and constructs its dialects
//! (off the async workers), compares it with the running configuration
//! component by component ([`ConfigDiff`]), records the workers and builders,
//! and prepares every service to one side. Any error there leaves everything
//! as it was. Only then is it applied, schedulers first (their new state is
//! stored, the one step that can still fail), then the HTTP service (one
//! atomic swap of the dialects; a new socket when the address changed), the
//! builders and workers, the change sources and housekeeping.
//!
//! Stopping goes in the order that loses nothing: the HTTP server stops
//! accepting and drains, the change sources stop, running builds are killed
//! (the next start finishes them as RETRY and builds them again), and the
//! supervisor joins every remaining task within [`JOIN_BOUND`].

mod housekeeping;
mod http;
mod retention;
mod service;
mod signals;
mod worker_listener;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use tokio::sync::{mpsc, watch};

pub use signals::Signals;

use crate::api::Engine;
use crate::builds::Botmaster;
use crate::change_sources::ChangeSources;
use crate::config::{Config, ConfigDiff, Difference, Setting};
use crate::control::{
    Command, Control, ControlError, ShutdownAction, ShutdownState, ShutdownStatus, View,
    WorkerAction,
};
use crate::db::Db;
use crate::events::{Bus, Event};
use crate::host::HostServices;
use crate::pidfile::PidFile;
use crate::plugins::{self, Loader, Offer};
use crate::reconfig::watch::{self as file_watch, FileWatch, WatchSpec};
use crate::reconfig::{ReloadResult, SharedStatus, Status, Trigger};
use crate::registry::{self, Registry};
use crate::reporters;
use crate::schedulers::Schedulers;
use crate::systemd::Notifier;
use crate::tasks::Supervisor;
use crate::telegram::TelegramBot;
use crate::workers::WorkerPool;
use crate::www::AppState;
use housekeeping::Housekeeping;
use http::Http;
use retention::Retention;
use service::{Next, Service};
use signals::Asked;
use worker_listener::{Login, Logins, WorkerListener};

/// How long the last tasks may take to end at shutdown.
pub const JOIN_BOUND: Duration = Duration::from_secs(5);

/// How many commands may wait for the topology.
const COMMAND_QUEUE: usize = 64;

/// Runs the master of `config` until it is told to stop: by `SIGTERM` or
/// `SIGINT`, by the end of a clean shutdown, or by a `shutdown now` command.
/// Reloads on `SIGHUP` and when its files change, and tells `notifier`
/// (systemd) each step.
pub async fn run(config: Config, mut signals: Signals, notifier: Notifier) -> anyhow::Result<()> {
    let _pid_file = PidFile::create(&config.basedir)?;
    crate::descriptors::raise_and_log();
    let (mut topology, mut inbox) = Topology::start(config).await?;
    // Said once the file watch runs: an edit made as soon as the master
    // says it listens is seen.
    let address = topology.http.address();
    if let Some(address) = address {
        tracing::info!("{} listening on http://{address}/", topology.config.title);
        notifier.ready(&format!("listening on http://{address}/"));
    }
    let reason = loop {
        let draining = topology.shutdown == ShutdownState::Draining;
        tokio::select! {
            asked = signals.next() => match asked {
                Asked::Stop(signal) => break format!("{signal} received"),
                Asked::Reload => topology.reload(Trigger::Signal, &notifier).await,
                Asked::CleanShutdown => {
                    topology.shut_down(ShutdownAction::Start);
                }
            },
            Some(trigger) = inbox.triggers.recv() => topology.reload(trigger, &notifier).await,
            Some(command) = inbox.commands.recv() => match command {
                // In order with the other reloads.
                Command::Reconfig { reply } => {
                    topology.reload(Trigger::Api, &notifier).await;
                    let _ = reply.send(topology.status.get());
                }
                command => {
                    if let Some(reason) = topology.command(command) {
                        break reason;
                    }
                }
            },
            () = topology.botmaster.idle(), if draining => {
                break "clean shutdown: the last running build ended".to_string();
            }
        }
    };
    notifier.stopping();
    tracing::info!("{reason}: stopping");
    topology.stop().await;
    Ok(())
}

/// What reaches the main loop besides signals.
struct Inbox {
    commands: mpsc::Receiver<Command>,
    triggers: mpsc::UnboundedReceiver<Trigger>,
}

/// Every running service, and what they share.
struct Topology {
    /// The configuration that runs.
    config: Arc<Config>,
    db: Db,
    bus: Bus,
    loader: Arc<Loader>,
    supervisor: Supervisor,
    status: Arc<SharedStatus>,
    view: watch::Sender<Arc<View>>,
    http: Http,
    botmaster: Botmaster,
    schedulers: Schedulers,
    change_sources: Arc<ChangeSources>,
    housekeeping: Housekeeping,
    retention: Retention,
    telegram: TelegramBot,
    workers: WorkerListener,
    /// Where the file watch sends its triggers.
    triggers: mpsc::UnboundedSender<Trigger>,
    /// The file watch, when the configuration asks for one.
    watch: Option<FileWatch>,
    shutdown: ShutdownState,
}

/// A configuration built to one side, ready to be applied.
struct Prepared {
    config: Arc<Config>,
    diff: ConfigDiff,
    http: <Http as Service>::Prepared,
    botmaster: <Botmaster as Service>::Prepared,
    schedulers: <Schedulers as Service>::Prepared,
    change_sources: <Arc<ChangeSources> as Service>::Prepared,
    housekeeping: <Housekeeping as Service>::Prepared,
    retention: <Retention as Service>::Prepared,
}

impl Topology {
    /// Opens the database, finishes the builds an earlier run left, builds
    /// every service empty and applies `config` to them.
    async fn start(config: Config) -> anyhow::Result<(Topology, Inbox)> {
        for warning in config.warnings() {
            tracing::warn!("{warning}");
        }
        let db_path = config.db_path.clone();
        let db = tokio::task::spawn_blocking(move || Db::open(&db_path))
            .await?
            .with_context(|| format!("cannot open the database {}", config.db_path.display()))?;
        let bus = Bus::new();
        db.announce_changes_to(bus.clone());
        let supervisor = Supervisor::new();
        let housekeeping =
            Housekeeping::start(&db, &bus, &supervisor, config.www.delivery_id_window);
        let retention = Retention::start(&db, &supervisor, config.logs);
        recover_interrupted_builds(&db, &bus).await?;

        let botmaster =
            Botmaster::new(db.clone(), bus.clone(), supervisor.clone(), &config.basedir);
        let schedulers = Schedulers::new(db.clone(), bus.clone(), supervisor.clone());
        let change_sources = Arc::new(ChangeSources::new(db.clone(), supervisor.clone()));
        let status = Arc::new(SharedStatus::default());
        let (commands, commands_received) = mpsc::channel(COMMAND_QUEUE);
        let (view, view_received) = watch::channel(Arc::new(View::default()));
        let control = Control::new(
            commands,
            view_received,
            Arc::clone(&status),
            supervisor.clone(),
        );
        let telegram =
            TelegramBot::new(db.clone(), bus.clone(), control.clone(), supervisor.clone());
        let workers =
            WorkerListener::new(db.clone(), bus.clone(), control.clone(), supervisor.clone());
        // Wakes the report delivery when the API retries a delivery.
        let outbox = Arc::new(tokio::sync::Notify::new());
        let state = AppState {
            registry: Arc::new(ArcSwap::from_pointee(Registry::default())),
            db: db.clone(),
            host: HostServices::from_current_runtime().with_pollers(change_sources.pollers()),
            telegram: telegram.webhook(),
            sessions: Arc::default(),
            engine: Engine {
                db: db.clone(),
                control,
                outbox: Arc::clone(&outbox),
            },
        };
        let (live_registry, host) = (Arc::clone(&state.registry), state.host.clone());
        let outbox_wake = Arc::clone(&outbox);
        let (triggers, triggers_received) = mpsc::unbounded_channel();
        let loader = Arc::new(Loader::new(plugins::cache_dir(&config.basedir)));
        let mut topology = Topology {
            config: Arc::new(config),
            db,
            bus,
            loader,
            supervisor: supervisor.clone(),
            status,
            view,
            http: Http::new(state, supervisor),
            botmaster,
            schedulers,
            change_sources,
            housekeeping,
            retention,
            telegram,
            workers,
            triggers,
            watch: None,
            shutdown: ShutdownState::Running,
        };
        let first = Arc::clone(&topology.config);
        let prepared = topology
            .prepare(first, None)
            .await
            .map_err(|errors| anyhow::anyhow!("{}", errors.join("\n")))?
            .expect("a first configuration always differs from nothing");
        topology.apply(prepared).await.map_err(anyhow::Error::msg)?;
        // Once the first registry is live, so that no build event is offered
        // to a master without its reporters.
        reporters::start(
            &topology.db,
            &topology.bus,
            live_registry,
            host,
            outbox_wake,
            &topology.supervisor,
        );
        let basedir = topology.config.basedir.clone();
        topology
            .status
            .record(&basedir, Status::started(crate::clock::now()));
        let inbox = Inbox {
            commands: commands_received,
            triggers: triggers_received,
        };
        Ok((topology, inbox))
    }

    /// Reads master.toml again and applies it if it is valid and different;
    /// records and logs the outcome.
    async fn reload(&mut self, trigger: Trigger, notifier: &Notifier) {
        notifier.reloading();
        let attempt = self.status.get().attempt(trigger, crate::clock::now());
        let outcome = match Config::load(&self.config.file) {
            Err(errors) => Err(errors.iter().map(ToString::to_string).collect()),
            Ok(config) => {
                for warning in config.warnings() {
                    tracing::warn!("{warning}");
                }
                let previous = Arc::clone(&self.config);
                match self.prepare(Arc::new(config), Some(&previous)).await {
                    Err(errors) => Err(errors),
                    Ok(None) => Ok(None),
                    Ok(Some(prepared)) => {
                        let diff = prepared.diff.clone();
                        self.apply(prepared)
                            .await
                            .map(|()| Some(diff))
                            .map_err(|e| vec![e])
                    }
                }
            }
        };
        let status = match outcome {
            Err(errors) => attempt.failed(errors),
            Ok(None) => attempt.unchanged(),
            Ok(Some(diff)) => attempt.applied(diff),
        };
        let described = status.describe(crate::clock::now());
        let line = match described.strip_prefix("reconfig ") {
            Some(outcome) => format!("reconfig ({trigger}) {outcome}"),
            None => format!("reconfig ({trigger}): {described}"),
        };
        match status.result {
            ReloadResult::Failed => tracing::error!("{line}"),
            _ => tracing::info!("{line}"),
        }
        crate::metrics::count(
            "buildmaster_reloads_total",
            &[("result", &status.result.to_string())],
        );
        notifier.ready(&format!(
            "generation {} ({})",
            status.generation, status.result
        ));
        let basedir = self.config.basedir.clone();
        self.status.record(&basedir, status);
    }

    /// Builds `config` to one side: `None` when it would run exactly as
    /// `previous` does. With no previous configuration (the start), a
    /// library that cannot be used is logged and served around; on reload
    /// it fails the reload, as `checkconfig` would.
    async fn prepare(
        &self,
        config: Arc<Config>,
        previous: Option<&Config>,
    ) -> Result<Option<Prepared>, Vec<String>> {
        if let Some(previous) = previous {
            if config.db_path != previous.db_path {
                return Err(vec![format!(
                    "{}: db_url cannot change while the master runs (it is {}); restart the master to use another database",
                    config.file.display(),
                    previous.db_path.display()
                )]);
            }
        }
        let current = self.http.registry();
        let registry = {
            let (config, loader, current) = (
                Arc::clone(&config),
                Arc::clone(&self.loader),
                Arc::clone(&current),
            );
            // Copying, hashing and loading libraries, and constructing
            // dialects, is blocking work.
            tokio::task::spawn_blocking(move || registry::prepare(&config, &loader, Some(&current)))
                .await
                .map_err(|e| vec![format!("cannot load the plugins: {e}")])?
        };
        let (registry, problems) = registry;
        if !problems.is_empty() {
            if previous.is_some() {
                return Err(problems.iter().map(ToString::to_string).collect());
            }
            for problem in &problems {
                tracing::error!("{problem}");
            }
        }
        if previous.is_none() {
            for library in &registry.libraries {
                tracing::info!(
                    "plugin {} {} (plugin API {}, SDK {}) loaded from {} (dialects: {})",
                    library.name,
                    library.version,
                    library.abi_version,
                    library.sdk_version.as_deref().unwrap_or("before 1.1"),
                    library.path.display(),
                    library.dialects.join(", ")
                );
            }
            for offer in &registry.offers {
                if let Offer::Described { path, metadata } = offer {
                    if !registry.libraries.iter().any(|l| l.path == *path) {
                        tracing::info!(
                            "plugin {} {} available in {} (dialects: {}; reporters: {}); mapped when used",
                            metadata.name,
                            metadata.version,
                            path.display(),
                            none_if_empty(&metadata.dialects),
                            none_if_empty(&metadata.reporters)
                        );
                    }
                }
            }
        }
        let mut diff = match previous {
            Some(previous) => ConfigDiff::between(previous, &config),
            None => ConfigDiff::from_nothing(&config),
        };
        diff.plugins = library_difference(&current, &registry);
        for dialect in &config.www.dialects {
            if current.dialect_library(&dialect.name) != registry.dialect_library(&dialect.name) {
                diff.dialects.mark_changed(&dialect.name);
            }
        }
        if previous.is_some() && diff.is_empty() {
            return Ok(None);
        }
        let connected: Vec<String> = self
            .botmaster
            .workers()
            .iter()
            .filter(|slot| slot.link.is_some() && slot.worker.connected())
            .map(|slot| slot.worker.name().to_owned())
            .collect();
        let (worker_ids, builder_ids) = record_engine(&self.db, &config, connected)
            .await
            .map_err(|e| vec![e])?;
        let next = Next {
            config: &config,
            diff: &diff,
            registry: &registry,
            worker_ids: &worker_ids,
            builder_ids: &builder_ids,
        };
        let http = Service::prepare(&self.http, &next).await?;
        let botmaster = Service::prepare(&self.botmaster, &next).await?;
        let schedulers = Service::prepare(&self.schedulers, &next).await?;
        let change_sources = Service::prepare(&self.change_sources, &next).await?;
        let housekeeping = Service::prepare(&self.housekeeping, &next).await?;
        let retention = Service::prepare(&self.retention, &next).await?;
        Ok(Some(Prepared {
            config,
            diff,
            http,
            botmaster,
            schedulers,
            change_sources,
            housekeeping,
            retention,
        }))
    }

    /// Applies a prepared configuration (see the module comment for the order).
    async fn apply(&mut self, prepared: Prepared) -> Result<(), String> {
        Service::apply(&mut self.schedulers, prepared.schedulers).await?;
        let address = self.http.address();
        Service::apply(&mut self.http, prepared.http).await?;
        Service::apply(&mut self.botmaster, prepared.botmaster).await?;
        Service::apply(&mut self.change_sources, prepared.change_sources).await?;
        Service::apply(&mut self.housekeeping, prepared.housekeeping).await?;
        Service::apply(&mut self.retention, prepared.retention).await?;
        self.workers
            .apply(
                prepared.config.worker_listen,
                logins(&prepared.config, &self.botmaster.workers()),
            )
            .await?;
        self.telegram
            .apply(
                prepared.config.telegram.clone(),
                Arc::clone(&prepared.config),
            )
            .await?;
        let moved = address.is_some() && prepared.diff.changed(Setting::ListenAddress);
        self.config = prepared.config;
        if let (true, Some(address)) = (moved, self.http.address()) {
            tracing::info!("{} listening on http://{address}/", self.config.title);
        }
        self.update_watch();
        self.publish();
        Ok(())
    }

    /// Starts, stops or moves the file watch to match the configuration.
    /// The new watch starts before the old one stops, so no change between
    /// them goes unseen.
    fn update_watch(&mut self) {
        if !self.config.reload_on_change {
            self.watch = None;
            return;
        }
        let spec = WatchSpec::of(&self.config);
        let unchanged = self
            .watch
            .as_ref()
            .is_some_and(|watch| watch.spec == spec && watch.dirs == spec.existing_dirs());
        if unchanged {
            return;
        }
        match file_watch::start(spec, self.triggers.clone(), &self.supervisor) {
            Ok(watch) => self.watch = Some(watch),
            Err(error) => {
                tracing::warn!("cannot watch the configuration for changes: {error}");
                self.watch = None;
            }
        }
    }

    /// Publishes what readers see of the running master.
    fn publish(&self) {
        let workers = self
            .botmaster
            .workers()
            .iter()
            .filter(|slot| slot.worker.connected())
            .map(|slot| (slot.worker.name().to_owned(), slot.id))
            .collect();
        self.view.send_replace(Arc::new(View {
            name: self.config.title.clone(),
            builders: self.botmaster.builders(),
            workers,
            schedulers: self.schedulers.configs(),
            reporters: self
                .config
                .reporters
                .iter()
                .map(|r| (r.name.clone(), r.kind.clone()))
                .collect(),
            shutdown: self.shutdown,
            rest_timeout: self.config.www.limits.rest_timeout,
        }));
    }

    /// Carries out an operator's action on a worker.
    fn control_worker(&self, worker: &str, action: WorkerAction) -> Result<String, ControlError> {
        let pool = self.botmaster.workers();
        let slot = pool
            .iter()
            .find(|slot| slot.worker.name() == worker || slot.id.to_string() == worker)
            .ok_or_else(|| ControlError::NoSuchWorker(worker.to_owned()))?;
        let name = slot.worker.name().to_owned();
        let remote = || {
            slot.link.clone().ok_or_else(|| {
                ControlError::Worker(format!(
                    "worker '{name}' is local: it runs inside the master and cannot be shut down"
                ))
            })
        };
        match action {
            WorkerAction::Pause(reason) => {
                tracing::info!("worker {name} paused: {reason}");
                slot.set_paused(Some(reason));
            }
            WorkerAction::Unpause => {
                tracing::info!("worker {name} unpaused");
                slot.set_paused(None);
                self.botmaster.wake_all();
            }
            WorkerAction::Stop => {
                let link = remote()?;
                if link.connection().is_none() {
                    return Err(ControlError::Worker(format!(
                        "worker '{name}' is not connected"
                    )));
                }
                tracing::info!("worker {name} shuts down once its builds end");
                link.begin_shutdown();
                let slot = Arc::clone(slot);
                let named = name.clone();
                tokio::spawn(async move {
                    while slot.load() > 0 {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    shut_down_worker(&named, &link).await;
                });
            }
            WorkerAction::Kill => {
                let link = remote()?;
                if link.connection().is_none() {
                    return Err(ControlError::Worker(format!(
                        "worker '{name}' is not connected"
                    )));
                }
                link.begin_shutdown();
                let named = name.clone();
                tokio::spawn(async move { shut_down_worker(&named, &link).await });
            }
        }
        Ok(name)
    }

    /// Carries out a command: a shutdown here, in order with reloads; the
    /// others in a task of their own, so that none holds up the main loop.
    /// Returns why the master must stop, when it must.
    fn command(&mut self, command: Command) -> Option<String> {
        match command {
            Command::WorkersChanged => {
                self.publish();
                None
            }
            Command::ControlWorker {
                worker,
                action,
                reply,
            } => {
                let _ = reply.send(self.control_worker(&worker, action));
                self.publish();
                None
            }
            Command::Shutdown { action, reply } => {
                let status = self.shut_down(action);
                let _ = reply.send(status);
                (action == ShutdownAction::Now).then(|| "shutdown now asked".to_string())
            }
            Command::Force {
                scheduler,
                builders,
                params,
                reply,
            } => {
                let schedulers = self.schedulers.clone();
                tokio::spawn(async move {
                    let added = schedulers
                        .force(&scheduler, builders.as_deref(), &params)
                        .await
                        .map_err(ControlError::from);
                    let _ = reply.send(added);
                });
                None
            }
            Command::Rebuild {
                buildid,
                owner,
                reason,
                reply,
            } => {
                let schedulers = self.schedulers.clone();
                tokio::spawn(async move {
                    let added = schedulers
                        .rebuild(buildid, &owner, &reason)
                        .await
                        .map_err(ControlError::from);
                    let _ = reply.send(added);
                });
                None
            }
            Command::Reconfig { reply } => {
                // The main loop takes it; never here.
                let _ = reply.send(self.status.get());
                None
            }
            Command::StopBuild {
                buildid,
                reason,
                reply,
            } => {
                let stopped = self
                    .botmaster
                    .stop_build(buildid, &reason)
                    .map_err(ControlError::from);
                let _ = reply.send(stopped);
                None
            }
            Command::CancelRequest { brid, reply } => {
                let (db, bus) = (self.db.clone(), self.bus.clone());
                tokio::spawn(async move {
                    let _ = reply.send(cancel_request(&db, &bus, brid).await);
                });
                None
            }
            Command::RunJanitor { reply } => {
                let pass = self.retention.run_now();
                tokio::spawn(async move {
                    let _ = reply.send(pass.await);
                });
                None
            }
            Command::RunningBuilds { builderid, reply } => {
                let _ = reply.send(self.botmaster.running_builds(builderid));
                None
            }
        }
    }

    /// Starts or cancels a clean shutdown, or says where it stands.
    fn shut_down(&mut self, action: ShutdownAction) -> ShutdownStatus {
        let running = self.botmaster.running_builds(None).len();
        match (action, self.shutdown) {
            (ShutdownAction::Start, ShutdownState::Running) => {
                tracing::info!(
                    "clean shutdown started: no build starts; the master stops when its {running} running build(s) end"
                );
                self.botmaster.drain();
                self.shutdown = ShutdownState::Draining;
            }
            (ShutdownAction::Cancel, ShutdownState::Draining) => {
                tracing::info!("clean shutdown cancelled: builds start again");
                self.botmaster.resume();
                self.shutdown = ShutdownState::Running;
            }
            (ShutdownAction::Now, _) => self.shutdown = ShutdownState::Stopping,
            _ => {}
        }
        self.publish();
        ShutdownStatus {
            state: self.shutdown,
            running_builds: running,
        }
    }

    /// Stops every service in order and joins every task.
    async fn stop(mut self) {
        let running = self.supervisor.reports().len();
        self.shutdown = ShutdownState::Stopping;
        self.publish();
        self.watch = None;
        Service::stop(&mut self.http).await;
        Service::stop(&mut self.change_sources).await;
        Service::stop(&mut self.botmaster).await;
        Service::stop(&mut self.schedulers).await;
        Service::stop(&mut self.housekeeping).await;
        Service::stop(&mut self.retention).await;
        self.telegram.stop().await;
        self.workers.stop().await;
        let stuck = self.supervisor.shutdown(JOIN_BOUND).await;
        if stuck.is_empty() {
            tracing::info!("stopped cleanly: all {running} task(s) ended");
        } else {
            tracing::warn!(
                "stopped; {} task(s) did not end within {JOIN_BOUND:?}: {}",
                stuck.len(),
                stuck.join(", ")
            );
        }
    }
}

/// The remote workers of `config` with their passwords and the links of
/// their slots in `pool`.
fn logins(config: &Config, pool: &WorkerPool) -> Logins {
    config
        .workers
        .iter()
        .filter_map(|worker| {
            let settings = worker.remote.as_ref()?;
            let slot = pool.get(&worker.name)?;
            Some((
                worker.name.clone(),
                Login {
                    workerid: slot.id,
                    password: settings.password.clone(),
                    link: Arc::clone(slot.link.as_ref()?),
                    keepalive_interval: settings.keepalive_interval,
                    missing_timeout: settings.missing_timeout,
                    builders: config
                        .builders
                        .iter()
                        .filter(|builder| builder.workernames.contains(&worker.name))
                        .map(|builder| builder.name.clone())
                        .collect(),
                },
            ))
        })
        .collect()
}

/// Asks a remote worker to shut down (its process ends) and closes its
/// connection.
async fn shut_down_worker(name: &str, link: &crate::workers::remote::Link) {
    let Some(connection) = link.connection() else {
        return;
    };
    tracing::info!("asking worker {name} to shut down");
    // The worker may close before it answers.
    let _ = connection
        .request("shutdown", vec![], Duration::from_secs(30))
        .await;
    connection.close();
}

/// Finishes as RETRY the builds an earlier run left running (after a stop
/// or a crash) and announces their end like any other; their requests are
/// built again.
async fn recover_interrupted_builds(db: &Db, bus: &Bus) -> anyhow::Result<()> {
    let recovered = db
        .recover_interrupted_builds()
        .await
        .context("cannot recover interrupted builds")?;
    if recovered.builds.is_empty() {
        return Ok(());
    }
    tracing::warn!(
        "finished {} interrupted build(s) as RETRY; {} build request(s) will be built again",
        recovered.builds.len(),
        recovered.requests.len()
    );
    for buildid in recovered.builds {
        if let Some(build) = db.build_info(buildid).await.ok().flatten() {
            bus.send(Event::BuildFinished(Arc::new(build)));
        }
    }
    Ok(())
}

/// Cancels a pending build request and announces it.
async fn cancel_request(
    db: &Db,
    bus: &Bus,
    brid: i64,
) -> Result<Option<crate::db::CancelledRequest>, ControlError> {
    let cancelled = db.cancel_request(brid).await.map_err(|error| {
        tracing::error!("cannot cancel build request {brid}: {error}");
        ControlError::Internal
    })?;
    if let Some(cancelled) = &cancelled {
        bus.send(Event::BuildRequestCancelled {
            brid,
            bsid: cancelled.bsid,
            builderid: cancelled.builderid,
        });
        if let Some((bsid, results)) = cancelled.buildset_complete {
            bus.send(Event::BuildsetComplete {
                bsid,
                results,
                complete_at: cancelled.at,
            });
        }
    }
    Ok(cancelled)
}

/// Gives every configured worker and builder its database row (they keep
/// their ids across restarts and reloads) and returns the ids by name.
async fn record_engine(
    db: &Db,
    config: &Config,
    connected_remote: Vec<String>,
) -> Result<(BTreeMap<String, i64>, BTreeMap<String, i64>), String> {
    // A remote worker's info is what it says at its login.
    let workers = config
        .workers
        .iter()
        .map(|w| {
            let info = w
                .remote
                .is_none()
                .then(|| serde_json::Value::Object(w.properties.clone()));
            (w.name.clone(), info)
        })
        .collect();
    let worker_ids = db
        .sync_worker_kinds(workers, connected_remote)
        .await
        .map_err(|e| format!("cannot record the workers: {e}"))?;
    let builders = config
        .builders
        .iter()
        .map(|b| (b.name.clone(), b.description.clone(), b.tags.clone()))
        .collect();
    let builder_ids = db
        .sync_builders(builders)
        .await
        .map_err(|e| format!("cannot record the builders: {e}"))?;
    Ok((worker_ids, builder_ids))
}

/// `a, b`, or `none`.
fn none_if_empty(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// The plugin libraries a new registry loads, changes (new content at the
/// same path) or no longer has, by file.
fn library_difference(old: &Registry, new: &Registry) -> Difference {
    let files = |registry: &Registry| -> Vec<(String, String)> {
        registry
            .libraries
            .iter()
            .map(|l| (l.path.display().to_string(), l.hash.clone()))
            .collect()
    };
    Difference::of(
        &files(old),
        &files(new),
        |(path, _)| path,
        |a, b| a.1 == b.1,
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use serde_json::{Map, Value};

    use super::*;
    use crate::db::{NewBuildset, SchedulerWrite, StampSpec};
    use crate::results::Results;
    use crate::tasks::{Policy, TaskState};

    /// A topology started on a master.toml of `text` (loopback, no plugin).
    async fn started(dir: &std::path::Path, text: &str) -> (Topology, Inbox) {
        let file = dir.join("master.toml");
        let text = format!(
            "[master]\nplugin_dirs = []\nreload_on_change = false\n[www]\nport = \"127.0.0.1:0\"\n{text}"
        );
        std::fs::write(&file, text).unwrap();
        Topology::start(Config::load(&file).unwrap()).await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_master_started_on_a_previous_release_database_converts_its_logs() {
        let dir = tempfile::tempdir().unwrap();
        let text = crate::db::logs::previous_release(&dir.path().join("state.sqlite"), 120);
        let (topology, _inbox) = started(dir.path(), "").await;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while topology.db.unconverted_log_chunks().await.unwrap() > 0 {
            assert!(std::time::Instant::now() < deadline, "not converted");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(crate::db::logs::whole(&topology.db, 1).await, text);
        let url = format!(
            "http://{}/api/v2/logs/1/raw",
            topology.http.address().unwrap()
        );
        let raw = reqwest::get(url).await.unwrap().text().await.unwrap();
        let stripped: String = text
            .lines()
            .map(|line| format!("{}\n", &line[1..]))
            .collect();
        assert_eq!(raw, stripped);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_task_that_panics_is_restarted_while_the_master_serves() {
        let dir = tempfile::tempdir().unwrap();
        let (topology, _inbox) = started(dir.path(), "").await;
        let url = format!("http://{}", topology.http.address().unwrap());
        let runs = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&runs);
        topology
            .supervisor
            .spawn("flaky", Policy::Forever, move || {
                let run = counted.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    if run <= 2 {
                        panic!("flaky run {run}");
                    }
                    std::future::pending::<()>().await
                }
            });
        let client = reqwest::Client::new();
        while runs.load(Ordering::SeqCst) < 3 {
            let changes = client
                .get(format!("{url}/api/v2/changes"))
                .send()
                .await
                .unwrap();
            assert_eq!(changes.status(), 200);
            let hook = client
                .post(format!("{url}/change_hook/base"))
                .send()
                .await
                .unwrap();
            assert_eq!(hook.status(), 400, "answered, not failed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let body = client
            .get(format!("{url}/api/v2/reconfig"))
            .header("Accept", "application/json")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let status: Value = serde_json::from_str(&body).unwrap();
        let tasks = status["reconfig"]["tasks"].as_array().unwrap();
        let flaky = tasks.iter().find(|t| t["name"] == "flaky").unwrap();
        assert_eq!(flaky["restarts"], 2, "{flaky}");
        assert_eq!(flaky["state"], "running");
        assert_eq!(status["reconfig"]["healthy"], true);
        let report = topology
            .supervisor
            .reports()
            .into_iter()
            .find(|r| r.name == "flaky")
            .unwrap();
        assert_eq!(report.state, TaskState::Running);
        topology.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commands_reach_the_services_through_the_main_loop() {
        let dir = tempfile::tempdir().unwrap();
        let (mut topology, mut inbox) = started(
            dir.path(),
            "[[workers]]\ntype = 'local'\nname = 'w'\n\
             [[builders]]\nname = 'b'\nworkernames = ['w']\n\
             [[builders.steps]]\ntype = 'shell'\ncommand = 'sleep 30'\n\
             [[schedulers]]\ntype = 'force'\nname = 'force'\nbuilder_names = ['b']\n",
        )
        .await;
        let control = topology.http.control();
        let asking = tokio::spawn(async move {
            assert!(control.running_builds(None).await.is_empty());
            let added = control.force("force", None, Map::new()).await.unwrap();
            let builderid = *added.requests.keys().next().unwrap();
            let running = loop {
                let running = control.running_builds(Some(builderid)).await;
                if !running.is_empty() {
                    break running;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            assert_eq!(
                control.force("nope", None, Map::new()).await,
                Err(ControlError::Force(
                    crate::schedulers::ForceError::NoSuchScheduler("nope".into())
                ))
            );
            control
                .stop_build(running[0].buildid, "enough")
                .await
                .unwrap();
            let status = control.shutdown(ShutdownAction::Status).await;
            assert_eq!(status.state, ShutdownState::Running);
            control.shutdown(ShutdownAction::Now).await
        });
        // The main loop's part.
        let stop = loop {
            let command = inbox.commands.recv().await.unwrap();
            if let Some(reason) = topology.command(command) {
                break reason;
            }
        };
        assert_eq!(stop, "shutdown now asked");
        assert_eq!(asking.await.unwrap().state, ShutdownState::Stopping);
        topology.stop().await;
    }

    #[tokio::test]
    async fn a_build_interrupted_by_a_restart_announces_its_retry() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("state.sqlite")).unwrap();
        let builder = db
            .sync_builders(vec![("b".into(), None, vec![])])
            .await
            .unwrap()["b"];
        let worker = db
            .sync_workers(vec![("w".into(), Value::Object(Map::new()))])
            .await
            .unwrap()["w"];
        let write = SchedulerWrite {
            buildsets: vec![NewBuildset {
                reason: "r".into(),
                scheduler: "s".into(),
                external_idstring: None,
                properties: Map::new(),
                sourcestamps: vec![StampSpec::New {
                    branch: Some("main".into()),
                    revision: None,
                    repository: String::new(),
                    project: String::new(),
                    codebase: String::new(),
                }],
                builders: vec![(builder, false)],
                priority: 0,
            }],
            ..SchedulerWrite::default()
        };
        let added = db.scheduler_write(write).await.unwrap().remove(0);
        let started = db
            .claim_and_start_build(added.requests[&builder], builder, worker, Map::new())
            .await
            .unwrap()
            .unwrap();
        // The master stopped here. At the next start:
        let bus = Bus::new();
        let mut events = bus.subscribe();
        recover_interrupted_builds(&db, &bus).await.unwrap();
        let Ok(Event::BuildFinished(build)) = events.try_recv() else {
            panic!("the RETRY build's finish is announced");
        };
        assert_eq!(build.buildid, started.buildid);
        assert_eq!(build.results, Some(Results::Retry));
        assert_eq!(build.state_string, "interrupted by master restart");
        assert_eq!(build.builder.name, "b");
        assert!(build.complete_at.is_some());
    }
}
