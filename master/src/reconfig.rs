//! Reconfiguring a running master: `SIGHUP`, `buildmaster reconfig`, or a
//! change to master.toml or a plugin library all ask for one reload.
//!
//! A reload is a transaction. [`Reconfigurer::reload`] first builds everything
//! to one side — the parsed configuration, the plugins it needs (a changed
//! library loads under its new content hash), every dialect instance, the
//! workers' directories, a new listening socket when the address changed —
//! and fails without touching anything live if any of it fails. Only then
//! does it apply the differences: schedulers (whose stored state is the one
//! step that can still fail, so it goes first), the plugin registry (one
//! atomic swap: requests in flight finish on the instances they started
//! with), builders and workers, and the listener. Long-lived services that
//! only need to know about a new configuration follow the `watch` channel
//! of [`Reconfigurer::subscribe`] and restart only when their own settings
//! changed; that is how the change sources apply theirs.
//!
//! Every attempt is recorded in a [`Status`]: at `/api/v2/reconfig` and in
//! `<basedir>/reconfig.json`, which `buildmaster reconfig` reads.

pub mod watch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc::UnboundedSender;

use crate::api::Engine;
use crate::config::{Config, ConfigDiff, Difference, Setting, WorkerConfig};
use crate::db::Db;
use crate::plugins::Loader;
use crate::registry::{self, Registry};
use crate::workers::{LocalWorker, WorkerPool, WorkerSlot};
use crate::www::AppState;
use watch::{FileWatch, WatchSpec};

/// The status file inside a basedir.
pub const STATUS_FILE: &str = "reconfig.json";

/// What asked for a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// `SIGHUP`, which `buildmaster reconfig` sends.
    Signal,
    /// master.toml or a plugin library changed on disk.
    FileChange,
}

impl Trigger {
    fn name(self) -> &'static str {
        match self {
            Trigger::Signal => "SIGHUP",
            Trigger::FileChange => "file change",
        }
    }
}

/// The outcome of the last reload attempt and the live generation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Counts applied configurations; the one the master started with is 1.
    pub generation: u64,
    /// Counts reload attempts, whatever their outcome.
    pub attempts: u64,
    /// `started`, `applied`, `unchanged` or `failed`.
    pub result: String,
    pub trigger: Option<String>,
    /// Epoch seconds of the last attempt.
    pub last_attempt_at: Option<i64>,
    /// What the last applied reload changed, e.g. `builders +1 ~0 -0`.
    pub changes: Vec<String>,
    /// Why the last attempt failed: one entry per problem, with file and line.
    pub errors: Vec<String>,
    /// The last attempt that applied a configuration (the start counts), so
    /// that a later attempt finding nothing new can say since when it runs.
    pub last_applied: Option<Applied>,
}

/// A configuration that was applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub generation: u64,
    /// `start`, `SIGHUP` or `file change`.
    pub trigger: String,
    /// Epoch seconds.
    pub at: i64,
    pub changes: Vec<String>,
}

impl Status {
    /// The status recorded in a basedir, if any.
    pub fn read(basedir: &Path) -> Option<Status> {
        let text = std::fs::read_to_string(basedir.join(STATUS_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// Shared between the reloader, which writes it, and the REST API.
#[derive(Debug, Default)]
pub struct SharedStatus(Mutex<Status>);

impl SharedStatus {
    pub fn get(&self) -> Status {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, status: Status) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = status;
    }
}

/// What a reload must be able to replace.
pub struct Live {
    pub state: AppState,
    pub engine: Engine,
    pub loader: Loader,
    /// Where the HTTP server listens; the reloader swaps it when the address
    /// changes.
    pub server: crate::server::HttpServer,
}

/// Applies new configurations to a running master.
pub struct Reconfigurer {
    live: Live,
    config: Arc<Config>,
    status: Arc<SharedStatus>,
    configs: tokio::sync::watch::Sender<Arc<Config>>,
    /// Where the file watch sends its triggers.
    triggers: UnboundedSender<Trigger>,
    /// The file watch, when the configuration asks for one.
    watch: Option<FileWatch>,
}

/// A configuration built to one side, ready to be applied.
struct Prepared {
    config: Arc<Config>,
    /// What it changes; never empty.
    diff: ConfigDiff,
    registry: Registry,
    listener: Option<TcpListener>,
    workers: WorkerPool,
    builder_ids: BTreeMap<String, i64>,
}

impl Reconfigurer {
    pub fn new(
        live: Live,
        config: Config,
        status: Arc<SharedStatus>,
        triggers: UnboundedSender<Trigger>,
    ) -> Reconfigurer {
        let config = Arc::new(config);
        let (configs, _) = tokio::sync::watch::channel(Arc::clone(&config));
        let mut reconfigurer = Reconfigurer {
            live,
            config,
            status,
            configs,
            triggers,
            watch: None,
        };
        reconfigurer.update_watch();
        reconfigurer.record(Status {
            generation: 1,
            result: "started".into(),
            last_applied: Some(Applied {
                generation: 1,
                trigger: "start".into(),
                at: epoch_now(),
                changes: Vec::new(),
            }),
            ..Status::default()
        });
        reconfigurer
    }

    /// A receiver of every configuration applied from now on: long-lived
    /// services wait on it and apply their own settings when they changed.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<Config>> {
        self.configs.subscribe()
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
        match watch::start(spec, self.triggers.clone()) {
            Ok(watch) => self.watch = Some(watch),
            Err(error) => {
                tracing::warn!("cannot watch the configuration for changes: {error}");
                self.watch = None;
            }
        }
    }

    /// The HTTP server, for the final drain at shutdown.
    pub fn into_server(self) -> crate::server::HttpServer {
        self.live.server
    }

    /// Reads master.toml again and applies it if it is valid and different.
    pub async fn reload(&mut self, trigger: Trigger) {
        let previous = self.status.get();
        let mut status = Status {
            generation: previous.generation,
            attempts: previous.attempts + 1,
            trigger: Some(trigger.name().into()),
            last_attempt_at: Some(epoch_now()),
            last_applied: previous.last_applied,
            ..Status::default()
        };
        match self.prepare().await {
            Err(errors) => {
                tracing::error!(
                    "reconfig ({}) failed; the running configuration stays (generation {}):\n  {}",
                    trigger.name(),
                    status.generation,
                    errors.join("\n  ")
                );
                status.result = "failed".into();
                status.errors = errors;
            }
            Ok(None) => {
                tracing::info!(
                    "reconfig ({}): configuration unchanged (generation {})",
                    trigger.name(),
                    status.generation
                );
                status.result = "unchanged".into();
            }
            Ok(Some(prepared)) => match self.apply(prepared).await {
                Ok(changes) => {
                    status.generation += 1;
                    status.result = "applied".into();
                    tracing::info!(
                        "reconfig ({}) applied, generation {}: {}",
                        trigger.name(),
                        status.generation,
                        changes.join(", ")
                    );
                    status.last_applied = Some(Applied {
                        generation: status.generation,
                        trigger: trigger.name().into(),
                        at: status.last_attempt_at.unwrap_or_default(),
                        changes: changes.clone(),
                    });
                    status.changes = changes;
                }
                Err(error) => {
                    tracing::error!(
                        "reconfig ({}) failed; the running configuration stays (generation {}):\n  {error}",
                        trigger.name(),
                        status.generation
                    );
                    status.result = "failed".into();
                    status.errors = vec![error];
                }
            },
        }
        self.record(status);
    }

    fn record(&self, status: Status) {
        let basedir = &self.config.basedir;
        let text = serde_json::to_string_pretty(&status).unwrap_or_default();
        // Written aside and renamed, so a reader never sees half a file.
        let temporary = basedir.join(format!(".{STATUS_FILE}.tmp"));
        let written = std::fs::write(&temporary, text)
            .and_then(|()| std::fs::rename(&temporary, basedir.join(STATUS_FILE)));
        if let Err(error) = written {
            tracing::warn!("cannot record the reconfig status in {STATUS_FILE}: {error}");
        }
        self.status.set(status);
    }

    /// Builds the new configuration to one side. `None` when it is the one
    /// running (same resolved settings, same plugin libraries).
    async fn prepare(&mut self) -> Result<Option<Prepared>, Vec<String>> {
        let config = Config::load(&self.config.file)
            .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>())?;
        if config.db_path != self.config.db_path {
            return Err(vec![format!(
                "{}: db_url cannot change while the master runs (it is {}); restart the master to use another database",
                config.file.display(),
                self.config.db_path.display()
            )]);
        }
        let current = self.live.state.registry.load_full();
        let (registry, problems) = registry::prepare(&config, &self.live.loader, Some(&current));
        if !problems.is_empty() {
            return Err(problems.iter().map(ToString::to_string).collect());
        }
        let mut diff = ConfigDiff::between(&self.config, &config);
        diff.plugins = library_difference(&current, &registry);
        for dialect in &config.www.dialects {
            if current.dialect_library(&dialect.name) != registry.dialect_library(&dialect.name) {
                diff.dialects.mark_changed(&dialect.name);
            }
        }
        if diff.is_empty() {
            return Ok(None);
        }
        let listener = if diff.changed(Setting::ListenAddress) {
            let listener = TcpListener::bind(config.www.listen)
                .await
                .map_err(|e| vec![format!("cannot listen on {}: {e}", config.www.listen)])?;
            Some(listener)
        } else {
            None
        };
        let engine = &self.live.engine;
        let (worker_ids, builder_ids) = record_engine(&engine.db, &config)
            .await
            .map_err(|e| vec![e])?;
        let workers = worker_pool(
            &config.basedir,
            &config.workers,
            &worker_ids,
            Some(&engine.botmaster.workers()),
        )
        .map_err(|e| vec![e])?;
        Ok(Some(Prepared {
            config: Arc::new(config),
            diff,
            registry,
            listener,
            workers,
            builder_ids,
        }))
    }

    /// Applies a prepared configuration; returns what changed.
    async fn apply(&mut self, prepared: Prepared) -> Result<Vec<String>, String> {
        let new = &prepared.config;
        let engine = &self.live.engine;
        let scheduler_builders = new
            .builders
            .iter()
            .map(|b| {
                let id = prepared.builder_ids[&b.name];
                (b.name.clone(), (id, b.collapse_requests))
            })
            .collect();
        engine
            .schedulers
            .apply(new.schedulers.clone(), scheduler_builders)
            .await
            .map_err(|e| format!("cannot store the schedulers' new state: {e}"))?;
        self.live.state.registry.store(Arc::new(prepared.registry));
        let builders = new
            .builders
            .iter()
            .map(|b| (prepared.builder_ids[&b.name], b.clone()))
            .collect();
        engine.botmaster.apply(builders, Some(prepared.workers));
        if let Some(listener) = prepared.listener {
            let address = self
                .live
                .server
                .replace(listener, self.live.state.clone())
                .map_err(|e| format!("cannot use the new listening socket: {e}"))?;
            tracing::info!("{} listening on http://{address}/", new.title);
        }
        self.config = Arc::clone(new);
        self.update_watch();
        self.configs.send_replace(Arc::clone(new));
        Ok(prepared.diff.summary())
    }
}

/// Gives every configured worker and builder its database row (they keep
/// their ids across restarts and reloads) and returns the ids by name.
pub async fn record_engine(
    db: &Db,
    config: &Config,
) -> Result<(BTreeMap<String, i64>, BTreeMap<String, i64>), String> {
    let workers = config
        .workers
        .iter()
        .map(|w| (w.name.clone(), Value::Object(w.properties.clone())))
        .collect();
    let worker_ids = db
        .sync_workers(workers)
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

/// The workers of a configuration, keeping the slot (and so the count of
/// running builds) of every worker that was already there.
pub fn worker_pool(
    basedir: &Path,
    workers: &[WorkerConfig],
    ids: &BTreeMap<String, i64>,
    current: Option<&WorkerPool>,
) -> Result<WorkerPool, String> {
    let mut slots = Vec::with_capacity(workers.len());
    for worker in workers {
        if let Some(slot) = current.and_then(|pool| pool.get(&worker.name)) {
            slot.update(worker.max_builds, worker.properties.clone());
            slots.push(Arc::clone(slot));
            continue;
        }
        let dir = worker_dir(basedir, &worker.name)?;
        let local = LocalWorker::new(worker.name.clone(), dir);
        slots.push(Arc::new(WorkerSlot::new(
            ids[&worker.name],
            Arc::new(local),
            worker.max_builds,
            worker.properties.clone(),
        )));
    }
    Ok(WorkerPool::new(slots))
}

/// `<basedir>/workers/<name>`, created, as an absolute path so that logs and
/// the `builddir` property say where it is.
fn worker_dir(basedir: &Path, name: &str) -> Result<PathBuf, String> {
    let dir = basedir.join("workers").join(name);
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::canonicalize(&dir))
        .map_err(|e| format!("worker {name}: cannot create {}: {e}", dir.display()))
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

fn epoch_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
