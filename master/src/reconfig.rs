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
use crate::config::{Config, WorkerConfig};
use crate::db::Db;
use crate::plugins::Loader;
use crate::registry::{self, DialectSlot, Registry};
use crate::workers::{LocalWorker, WorkerPool, WorkerSlot};
use crate::www::AppState;
use watch::FileWatch;

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
    fingerprint: String,
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
    fingerprint: String,
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
        let fingerprint = fingerprint(&config, &live.state.registry.load());
        let config = Arc::new(config);
        let (configs, _) = tokio::sync::watch::channel(Arc::clone(&config));
        let mut reconfigurer = Reconfigurer {
            live,
            config,
            fingerprint,
            status,
            configs,
            triggers,
            watch: None,
        };
        reconfigurer.update_watch();
        reconfigurer.record(Status {
            generation: 1,
            result: "started".into(),
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
        let config = &self.config;
        if !config.reload_on_change {
            self.watch = None;
            return;
        }
        let dirs: Vec<PathBuf> = config.plugin_dirs.iter().map(|d| d.path.clone()).collect();
        let existing: Vec<PathBuf> = dirs.iter().filter(|d| d.is_dir()).cloned().collect();
        let same = self
            .watch
            .as_ref()
            .is_some_and(|watch| watch.dirs[1..] == existing[..]);
        if same {
            return;
        }
        match watch::start(&config.file, &dirs, self.triggers.clone()) {
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
        let fingerprint = fingerprint(&config, &registry);
        // Passwords do not show in the fingerprint; their digests compare here.
        if fingerprint == self.fingerprint && config.www.auth == self.config.www.auth {
            return Ok(None);
        }
        let listener = if config.www.listen != self.config.www.listen {
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
            fingerprint,
            registry,
            listener,
            workers,
            builder_ids,
        }))
    }

    /// Applies a prepared configuration; returns what changed.
    async fn apply(&mut self, prepared: Prepared) -> Result<Vec<String>, String> {
        let new = &prepared.config;
        let old = Arc::clone(&self.config);
        let engine = &self.live.engine;
        let scheduler_builders = new
            .builders
            .iter()
            .map(|b| {
                let id = prepared.builder_ids[&b.name];
                (b.name.clone(), (id, b.collapse_requests))
            })
            .collect();
        let schedulers = engine
            .schedulers
            .apply(new.schedulers.clone(), scheduler_builders)
            .await
            .map_err(|e| format!("cannot store the schedulers' new state: {e}"))?;
        let mut changes = vec![dialect_changes(
            &self.live.state.registry.load(),
            &prepared.registry,
        )];
        self.live.state.registry.store(Arc::new(prepared.registry));
        let builders = new
            .builders
            .iter()
            .map(|b| (prepared.builder_ids[&b.name], b.clone()))
            .collect();
        let workers = diff(&old.workers, &new.workers, |w| &w.name);
        let builders = engine.botmaster.apply(builders, Some(prepared.workers));
        changes.push(counts("builders", builders));
        changes.push(counts("workers", workers));
        changes.push(counts("schedulers", schedulers));
        changes.push(counts(
            "change sources",
            diff(&old.change_sources, &new.change_sources, |c| &c.name),
        ));
        if let Some(listener) = prepared.listener {
            let address = self
                .live
                .server
                .replace(listener, self.live.state.clone())
                .map_err(|e| format!("cannot use the new listening socket: {e}"))?;
            tracing::info!("{} listening on http://{address}/", new.title);
            changes.push(format!("listening on {address}"));
        }
        if old.www.auth != new.www.auth {
            changes.push("change_hook_auth changed".into());
        }
        self.config = Arc::clone(new);
        self.fingerprint = prepared.fingerprint;
        self.update_watch();
        self.configs.send_replace(Arc::clone(new));
        Ok(changes)
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

/// Identifies a configuration as it would run: its resolved settings (the
/// dialects' secrets included, so a rotated secret counts as a change; the
/// `change_hook_auth` passwords are compared apart) and the content hashes of
/// its plugin libraries. Only ever compared, never shown.
fn fingerprint(config: &Config, registry: &Registry) -> String {
    // Where a table starts only serves messages: an edit that moves lines
    // without changing a setting is no change.
    let mut settings = config.clone();
    for dialect in &mut settings.www.dialects {
        dialect.location.clear();
    }
    let mut hasher = blake3::Hasher::new();
    hasher.update(format!("{settings:?}").as_bytes());
    let mut hashes: Vec<&str> = registry.libraries.iter().map(|l| l.hash.as_str()).collect();
    hashes.sort_unstable();
    for hash in hashes {
        hasher.update(hash.as_bytes());
    }
    hasher.finalize().to_hex().to_string()
}

/// `dialects +A ~C -R`.
fn dialect_changes(old: &Registry, new: &Registry) -> String {
    // A dialect kept as it was is the very same instance.
    let instance = |slot: &DialectSlot| match slot {
        DialectSlot::Ready(instance) => Some(Arc::as_ptr(instance)),
        _ => None,
    };
    let added = new
        .dialects
        .keys()
        .filter(|k| !old.dialects.contains_key(*k))
        .count();
    let removed = old
        .dialects
        .keys()
        .filter(|k| !new.dialects.contains_key(*k))
        .count();
    let changed = new
        .dialects
        .iter()
        .filter(|(name, slot)| {
            old.dialects
                .get(*name)
                .is_some_and(|before| instance(before) != instance(slot))
        })
        .count();
    counts("dialects", (added, changed, removed))
}

/// How many entries were added, changed and removed, entries being named.
fn diff<T: PartialEq>(old: &[T], new: &[T], name: impl Fn(&T) -> &String) -> (usize, usize, usize) {
    let find = |list: &'_ [T], wanted: &String| list.iter().position(|e| name(e) == wanted);
    let added = new.iter().filter(|e| find(old, name(e)).is_none()).count();
    let removed = old.iter().filter(|e| find(new, name(e)).is_none()).count();
    let changed = new
        .iter()
        .filter(|e| find(old, name(e)).is_some_and(|at| old[at] != **e))
        .count();
    (added, changed, removed)
}

fn counts(what: &str, (added, changed, removed): (usize, usize, usize)) -> String {
    format!("{what} +{added} ~{changed} -{removed}")
}

fn epoch_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
