//! The one shape of a service, and the services of the build engine.
//!
//! A service is built empty when the master starts. Every configuration,
//! the first one included, reaches it in two steps: [`Service::prepare`]
//! builds and checks what the configuration needs without touching what
//! runs (any error there fails the whole reload, and nothing changes), then
//! [`Service::apply`] puts it in place. [`Service::stop`] ends the service
//! and joins its tasks; tasks it started under the supervisor are also
//! joined by the supervisor's own shutdown.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::builds::Botmaster;
use crate::change_sources::ChangeSources;
use crate::config::{
    BuilderConfig, Config, ConfigDiff, GitPollerConfig, LogSettings, SchedulerConfig, WorkerConfig,
};
use crate::registry::Registry;
use crate::schedulers::Schedulers;
use crate::workers::remote::{Link, RemoteWorker};
use crate::workers::{LocalWorker, WorkerPool, WorkerSlot};

/// What every service is prepared from.
pub struct Next<'a> {
    pub config: &'a Arc<Config>,
    pub diff: &'a ConfigDiff,
    /// The dialects and plugins the configuration gets.
    pub registry: &'a Registry,
    /// Worker and builder ids by name, as recorded in the database.
    pub worker_ids: &'a BTreeMap<String, i64>,
    pub builder_ids: &'a BTreeMap<String, i64>,
}

/// A long-lived part of the master (see the module comment).
pub trait Service {
    /// What a configuration needs of the service, built to one side.
    type Prepared: Send;

    /// Builds and checks what `next` needs; nothing that runs changes.
    fn prepare(
        &self,
        next: &Next<'_>,
    ) -> impl Future<Output = Result<Self::Prepared, Vec<String>>> + Send;

    /// Puts a prepared configuration in place.
    fn apply(
        &mut self,
        prepared: Self::Prepared,
    ) -> impl Future<Output = Result<(), String>> + Send;

    /// Ends the service and joins its tasks.
    fn stop(&mut self) -> impl Future<Output = ()> + Send;
}

/// The builders and the workers they run on.
impl Service for Botmaster {
    type Prepared = (Vec<(i64, BuilderConfig)>, WorkerPool, LogSettings);

    async fn prepare(&self, next: &Next<'_>) -> Result<Self::Prepared, Vec<String>> {
        let builders = next
            .config
            .builders
            .iter()
            .map(|b| (next.builder_ids[&b.name], b.clone()))
            .collect();
        let basedir = next.config.basedir.clone();
        let workers = next.config.workers.clone();
        let ids = next.worker_ids.clone();
        let current = self.workers();
        let pauses = self
            .stored_pauses()
            .await
            .map_err(|e| vec![format!("cannot read the paused workers: {e}")])?;
        // Makes the workers' directories: file-system work, off the async workers.
        let pool = tokio::task::spawn_blocking(move || {
            worker_pool(&basedir, &workers, &ids, &pauses, &current)
        })
        .await
        .map_err(|e| vec![format!("cannot prepare the workers: {e}")])?
        .map_err(|e| vec![e])?;
        Ok((builders, pool, next.config.logs))
    }

    async fn apply(&mut self, (builders, workers, logs): Self::Prepared) -> Result<(), String> {
        Botmaster::apply(self, builders, workers, logs);
        Ok(())
    }

    async fn stop(&mut self) {
        self.shutdown().await;
    }
}

/// The workers of a configuration, keeping the slot (and so the count of
/// running builds) of every worker that was already there; a new one is
/// paused when `pauses` (the database) says so.
fn worker_pool(
    basedir: &Path,
    workers: &[WorkerConfig],
    ids: &BTreeMap<String, i64>,
    pauses: &BTreeMap<String, String>,
    current: &WorkerPool,
) -> Result<WorkerPool, String> {
    let mut slots = Vec::with_capacity(workers.len());
    for worker in workers {
        let remote = worker.remote.is_some();
        // A worker that stays of the same kind keeps its slot (its running
        // builds, its connection).
        if let Some(slot) = current
            .get(&worker.name)
            .filter(|slot| slot.link.is_some() == remote)
        {
            slot.update(worker.max_builds, worker.properties.clone());
            slots.push(Arc::clone(slot));
            continue;
        }
        let id = ids[&worker.name];
        let slot = if remote {
            let link = Arc::new(Link::default());
            let worker_handle = RemoteWorker::new(worker.name.clone(), Arc::clone(&link));
            WorkerSlot::new(
                id,
                Arc::new(worker_handle),
                worker.max_builds,
                worker.properties.clone(),
            )
            .with_link(link)
        } else {
            let dir = worker_dir(basedir, &worker.name)?;
            let local = LocalWorker::new(worker.name.clone(), dir);
            WorkerSlot::new(
                id,
                Arc::new(local),
                worker.max_builds,
                worker.properties.clone(),
            )
        };
        slot.set_paused(pauses.get(&worker.name).cloned());
        slots.push(Arc::new(slot));
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

/// The schedulers. Their new state is stored when they are applied, the one
/// step of a reload that can still fail after preparation: the topology
/// applies them first, so that a failure there changes nothing else.
impl Service for Schedulers {
    type Prepared = (Vec<SchedulerConfig>, BTreeMap<String, (i64, bool)>);

    async fn prepare(&self, next: &Next<'_>) -> Result<Self::Prepared, Vec<String>> {
        let builders = next
            .config
            .builders
            .iter()
            .map(|b| {
                (
                    b.name.clone(),
                    (next.builder_ids[&b.name], b.collapse_requests),
                )
            })
            .collect();
        Ok((next.config.schedulers.clone(), builders))
    }

    async fn apply(&mut self, (schedulers, builders): Self::Prepared) -> Result<(), String> {
        Schedulers::apply(self, schedulers, builders)
            .await
            .map_err(|e| format!("cannot store the schedulers' new state: {e}"))
    }

    async fn stop(&mut self) {
        // Their tasks end with the supervisor's shutdown; their state is stored.
    }
}

/// The polling change sources.
impl Service for Arc<ChangeSources> {
    type Prepared = Vec<GitPollerConfig>;

    async fn prepare(&self, next: &Next<'_>) -> Result<Self::Prepared, Vec<String>> {
        Ok(next.config.change_sources.clone())
    }

    async fn apply(&mut self, sources: Self::Prepared) -> Result<(), String> {
        ChangeSources::apply(self, &sources).await;
        Ok(())
    }

    async fn stop(&mut self) {
        ChangeSources::stop(self).await;
    }
}
