//! Running a master: open the database, load the plugins, listen, serve until
//! told to stop, then drain.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::api::Engine;
use crate::builds::Botmaster;
use crate::change_sources::ChangeSources;
use crate::config::{BuilderConfig, Config};
use crate::db::Db;
use crate::events::{self, Bus, Event};
use crate::host::HostServices;
use crate::plugins::Loader;
use crate::reconfig::{self, Live, Reconfigurer, SharedStatus, Trigger};
use crate::registry;
use crate::schedulers::Schedulers;
use crate::systemd::Notifier;
use crate::www::{self, AppState};

/// The pid file inside a basedir.
pub const PID_FILE: &str = "buildmaster.pid";

/// How long requests in flight may take to finish after a stop signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The private cache of plugin copies inside a basedir.
pub fn plugin_cache(basedir: &Path) -> PathBuf {
    basedir.join("plugin-cache")
}

/// Removes the pid file when the master ends, however it ends.
struct PidFile(PathBuf);

impl PidFile {
    fn create(basedir: &Path) -> anyhow::Result<PidFile> {
        let path = basedir.join(PID_FILE);
        if let Some(pid) = read_pid(&path) {
            if process_alive(pid) {
                anyhow::bail!(
                    "a master is already running in {} (pid {pid})",
                    basedir.display()
                );
            }
        }
        std::fs::write(&path, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(PidFile(path))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The pid recorded in a pid file, if it holds one.
pub fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether a process with this pid is running. A zombie (exited, not yet reaped
/// by its parent) counts as stopped.
pub fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return false;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    state != Some('Z')
}

/// Forgets expired change-hook delivery ids now and every hour. Expired ids are
/// already ignored when checked; this only keeps the table small.
async fn purge_deliveries(db: Db, window: u64) {
    let mut every_hour = tokio::time::interval(Duration::from_secs(3600));
    loop {
        every_hour.tick().await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        match db.purge_deliveries(now - window as i64).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!("forgot {n} expired delivery id(s)"),
            Err(e) => tracing::warn!("cannot forget expired delivery ids: {e}"),
        }
    }
}

/// The signals a master answers, installed first thing at start-up so that
/// an early `SIGHUP` asks for a reload instead of ending the process.
pub struct Signals {
    terminate: Signal,
    interrupt: Signal,
    hangup: Signal,
}

impl Signals {
    pub fn install() -> anyhow::Result<Signals> {
        Ok(Signals {
            hangup: signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?,
            terminate: signal(SignalKind::terminate())
                .context("cannot install the SIGTERM handler")?,
            interrupt: signal(SignalKind::interrupt())
                .context("cannot install the SIGINT handler")?,
        })
    }
}

/// The HTTP server, which a reconfiguration can move to another address.
pub struct HttpServer {
    address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl HttpServer {
    pub fn spawn(listener: TcpListener, state: AppState) -> std::io::Result<HttpServer> {
        let address = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(www::serve(listener, state, async {
            let _ = stopped.await;
        }));
        Ok(HttpServer {
            address,
            stop: Some(stop),
            task,
        })
    }

    /// Serves on `listener` from now on; the old socket stops accepting and
    /// its requests in flight finish in the background.
    pub fn replace(
        &mut self,
        listener: TcpListener,
        state: AppState,
    ) -> std::io::Result<SocketAddr> {
        let new = HttpServer::spawn(listener, state)?;
        let mut old = std::mem::replace(self, new);
        if let Some(stop) = old.stop.take() {
            let _ = stop.send(());
        }
        Ok(self.address)
    }

    /// Stops accepting and waits (up to [`DRAIN_TIMEOUT`]) for the requests in flight.
    async fn drain(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match tokio::time::timeout(DRAIN_TIMEOUT, self.task).await {
            Ok(_) => tracing::info!("stopped cleanly"),
            Err(_) => {
                tracing::warn!("requests still running after {DRAIN_TIMEOUT:?}; stopping anyway")
            }
        }
    }
}

/// Records the configured builders and workers, finishes builds an earlier
/// run left behind, and starts the workers, builders and schedulers.
async fn start_engine(
    config: &Config,
    db: &Db,
    bus: &Bus,
    status: Arc<SharedStatus>,
) -> anyhow::Result<Engine> {
    let recovered = db
        .recover_interrupted_builds()
        .await
        .context("cannot recover interrupted builds")?;
    if !recovered.builds.is_empty() {
        tracing::warn!(
            "finished {} interrupted build(s) as RETRY; {} build request(s) will be built again",
            recovered.builds.len(),
            recovered.requests.len()
        );
    }
    let (worker_ids, builder_ids) = reconfig::record_engine(db, config)
        .await
        .map_err(anyhow::Error::msg)?;
    let pool = reconfig::worker_pool(&config.basedir, &config.workers, &worker_ids, None)
        .map_err(anyhow::Error::msg)?;
    for worker in pool.iter() {
        bus.send(Event::WorkerConnected {
            name: worker.worker.name().to_owned(),
        });
    }
    let builders: Vec<(i64, BuilderConfig)> = config
        .builders
        .iter()
        .map(|b| (builder_ids[&b.name], b.clone()))
        .collect();
    let scheduler_builders = config
        .builders
        .iter()
        .map(|b| (b.name.clone(), (builder_ids[&b.name], b.collapse_requests)))
        .collect();
    let botmaster = Botmaster::start(db.clone(), bus.clone(), builders, pool);
    let schedulers = Schedulers::start(
        db.clone(),
        bus.clone(),
        config.schedulers.clone(),
        scheduler_builders,
    )
    .await
    .context("cannot start the schedulers")?;
    Ok(Engine {
        db: db.clone(),
        botmaster,
        schedulers,
        reconfig: status,
    })
}

/// Runs the master of `config` in the foreground until SIGTERM or SIGINT,
/// reloading its configuration on SIGHUP and when its files change, and
/// telling `notifier` (systemd) each step.
pub async fn run(config: Config, mut signals: Signals, notifier: Notifier) -> anyhow::Result<()> {
    let _pid_file = PidFile::create(&config.basedir)?;

    let db_path = config.db_path.clone();
    let db = tokio::task::spawn_blocking(move || Db::open(&db_path))
        .await?
        .with_context(|| format!("cannot open the database {}", config.db_path.display()))?;

    let loader = Loader::new(plugin_cache(&config.basedir));
    let (registry, problems) = registry::prepare(&config, &loader, None);
    for problem in &problems {
        tracing::error!("{problem}");
    }
    for library in &registry.libraries {
        tracing::info!(
            "plugin {} {} loaded from {} (dialects: {})",
            library.name,
            library.version,
            library.path.display(),
            library.dialects.join(", ")
        );
    }
    tokio::spawn(purge_deliveries(db.clone(), config.www.delivery_id_window));
    let bus = Bus::new();
    tokio::spawn(events::log_events(db.clone(), bus.subscribe()));
    db.announce_changes_to(bus.clone());
    let status = Arc::new(SharedStatus::default());
    let engine = start_engine(&config, &db, &bus, Arc::clone(&status)).await?;
    let change_sources = ChangeSources::start(&config.change_sources, &db);
    let state = AppState {
        registry: Arc::new(ArcSwap::from_pointee(registry)),
        db,
        host: HostServices::from_current_runtime().with_pollers(change_sources.pollers()),
        engine: engine.clone(),
    };

    let listener = TcpListener::bind(config.www.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.www.listen))?;
    let server = HttpServer::spawn(listener, state.clone())?;
    let address = server.address;
    let title = config.title.clone();

    let (triggers, mut triggered) = mpsc::unbounded_channel();
    let live = Live {
        state,
        engine: engine.clone(),
        loader,
        server,
    };
    let mut reconfigurer = Reconfigurer::new(live, config, Arc::clone(&status), triggers);
    // Announced once the file watch runs: an edit made as soon as the master
    // says it listens is seen.
    tracing::info!("{title} listening on http://{address}/");
    notifier.ready(&format!("listening on http://{address}/"));
    tokio::spawn(follow_change_sources(
        Arc::clone(&change_sources),
        reconfigurer.subscribe(),
    ));
    let signal_name = loop {
        let trigger = tokio::select! {
            _ = signals.terminate.recv() => break "SIGTERM",
            _ = signals.interrupt.recv() => break "SIGINT",
            _ = signals.hangup.recv() => Trigger::Signal,
            Some(trigger) = triggered.recv() => trigger,
        };
        notifier.reloading();
        reconfigurer.reload(trigger).await;
        let outcome = status.get();
        notifier.ready(&format!(
            "generation {} ({})",
            outcome.generation, outcome.result
        ));
    };
    notifier.stopping();
    tracing::info!("{signal_name} received: finishing the requests in flight");
    change_sources.stop().await;
    engine.botmaster.shutdown().await;
    reconfigurer.into_server().drain().await;
    Ok(())
}

/// Applies the change sources of each new configuration: only the sources
/// whose settings changed restart.
async fn follow_change_sources(
    sources: Arc<ChangeSources>,
    mut configs: tokio::sync::watch::Receiver<Arc<Config>>,
) {
    while configs.changed().await.is_ok() {
        let config = Arc::clone(&configs.borrow_and_update());
        sources.apply(&config.change_sources);
    }
}
