//! Workers: where steps run, behind one boundary.
//!
//! A builder never touches processes or files itself: it asks a [`Worker`] to
//! run a command in one of its builder directories, to remove a directory or
//! to say whether a path exists, the way Buildbot's remote commands do. The
//! `local` kind runs commands as child processes of the master; a remote kind
//! implements the same trait over a connection. [`WorkerPool`] tracks which
//! workers are busy.

pub mod files;
mod local;
pub mod process;
pub mod remote;
pub mod transfer;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::future::BoxFuture;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, watch};

pub use files::PathKind;
pub use local::LocalWorker;
pub use process::{Ending, Finished, Stream};
pub use transfer::FileTransfer;

/// A command for a worker: a path relative to a builder's directory on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellCommand {
    pub builder: String,
    /// Relative to the builder's directory; never absolute, never with `..`.
    pub workdir: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, Option<String>)>,
    pub timeout: Option<std::time::Duration>,
    pub max_time: Option<std::time::Duration>,
}

/// What a builder may ask of a worker.
pub trait Worker: Send + Sync {
    fn name(&self) -> &str;

    /// Whether builds can start on it now (a remote worker must be logged in).
    fn connected(&self) -> bool {
        true
    }

    /// The builder's directory as the worker sees it (Buildbot's `builddir`).
    fn builder_dir(&self, builder: &str) -> String;

    /// Runs a command, streaming its output; `stop` becoming true kills it.
    fn run(
        &self,
        command: ShellCommand,
        output: mpsc::Sender<(Stream, String)>,
        stop: watch::Receiver<bool>,
    ) -> BoxFuture<'static, io::Result<Finished>>;

    /// Removes a directory (relative to the builder's directory) and
    /// everything in it; a missing directory is fine.
    fn remove_dir(&self, builder: &str, dir: &str) -> BoxFuture<'static, io::Result<()>>;

    /// Makes a directory (relative to the builder's directory) and its
    /// parents; an existing one is fine.
    fn make_dir(&self, builder: &str, dir: &str) -> BoxFuture<'static, io::Result<()>>;

    /// What a path (relative to the builder's directory) is, `None` when
    /// nothing is there.
    fn stat(&self, builder: &str, path: &str) -> BoxFuture<'static, io::Result<Option<PathKind>>>;

    /// The paths matching a shell pattern (relative to the builder's
    /// directory), relative to the builder's directory, sorted.
    fn glob(&self, builder: &str, pattern: &str) -> BoxFuture<'static, io::Result<Vec<String>>>;

    /// The names in a directory (relative to the builder's directory),
    /// sorted.
    fn list_dir(&self, builder: &str, dir: &str) -> BoxFuture<'static, io::Result<Vec<String>>>;

    /// Copies a file of the worker to the master; the bytes copied.
    fn upload(&self, transfer: FileTransfer) -> BoxFuture<'static, io::Result<u64>>;

    /// Copies a file of the master to the worker; the bytes copied.
    fn download(&self, transfer: FileTransfer) -> BoxFuture<'static, io::Result<u64>>;
}

/// Whether a relative path stays inside the directory it is relative to.
pub fn is_contained(path: &str) -> bool {
    !path.starts_with('/') && !path.split('/').any(|part| part == "..")
}

/// A worker with its limits and what it is doing.
pub struct WorkerSlot {
    pub id: i64,
    pub worker: Arc<dyn Worker>,
    /// A remote worker's connection, as the listener sets it.
    pub link: Option<Arc<remote::Link>>,
    state: Mutex<SlotState>,
}

struct SlotState {
    max_builds: Option<usize>,
    /// Name → value, given to builds with source "Worker".
    properties: Map<String, Value>,
    /// The builders with a build running on this worker. Like Buildbot, a
    /// builder runs at most one build at a time on one worker.
    busy: BTreeSet<String>,
    /// Paused by an operator (with the reason given): no build starts.
    paused: Option<String>,
}

/// Every configured worker, by name. A reconfiguration builds a new pool
/// that keeps the slots of unchanged workers, so their running builds stay
/// counted.
#[derive(Default)]
pub struct WorkerPool {
    slots: BTreeMap<String, Arc<WorkerSlot>>,
}

/// A worker reserved for one build; dropping it frees the worker.
pub struct Reservation {
    pub slot: Arc<WorkerSlot>,
    builder: String,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.slot.lock().busy.remove(&self.builder);
    }
}

impl WorkerSlot {
    pub fn new(
        id: i64,
        worker: Arc<dyn Worker>,
        max_builds: Option<usize>,
        properties: Map<String, Value>,
    ) -> WorkerSlot {
        WorkerSlot {
            id,
            worker,
            link: None,
            state: Mutex::new(SlotState {
                max_builds,
                properties,
                busy: BTreeSet::new(),
                paused: None,
            }),
        }
    }

    /// The slot of a remote worker reached through `link`.
    pub fn with_link(mut self, link: Arc<remote::Link>) -> WorkerSlot {
        self.link = Some(link);
        self
    }

    /// The state is valid even if a holder panicked.
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn properties(&self) -> Map<String, Value> {
        self.lock().properties.clone()
    }

    /// Pauses the worker (`Some` with the reason, possibly empty) or lets
    /// it take builds again (`None`); running builds go on either way.
    pub fn set_paused(&self, reason: Option<String>) {
        self.lock().paused = reason;
    }

    /// How many builds run on it.
    pub fn load(&self) -> usize {
        self.lock().busy.len()
    }

    /// Whether it is being shut down once its builds end.
    pub fn shutting_down(&self) -> bool {
        self.link.as_ref().is_some_and(|link| link.shutting_down())
    }

    /// Applies new settings; running builds are not affected.
    pub fn update(&self, max_builds: Option<usize>, properties: Map<String, Value>) {
        let mut state = self.lock();
        state.max_builds = max_builds;
        state.properties = properties;
    }
}

impl WorkerPool {
    pub fn new(slots: impl IntoIterator<Item = Arc<WorkerSlot>>) -> WorkerPool {
        WorkerPool {
            slots: slots
                .into_iter()
                .map(|slot| (slot.worker.name().to_owned(), slot))
                .collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<WorkerSlot>> {
        self.slots.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<WorkerSlot>> {
        self.slots.values()
    }

    /// Reserves, among `names`, the connected worker with room for a build
    /// of `builder` that runs the fewest builds (the first of them on a tie).
    pub fn reserve(&self, names: &[String], builder: &str) -> Option<Reservation> {
        // One slot locked at a time: loads are read, then the least busy
        // slot is checked again as it is taken.
        let mut candidates: Vec<(usize, usize, &Arc<WorkerSlot>)> = names
            .iter()
            .enumerate()
            .filter_map(|(order, name)| {
                let slot = self.slots.get(name)?;
                let open = slot.worker.connected() && !slot.shutting_down();
                let state = slot.lock();
                (open && state.paused.is_none()).then(|| (state.busy.len(), order, slot))
            })
            .collect();
        candidates.sort_by_key(|(load, order, _)| (*load, *order));
        candidates.into_iter().find_map(|(_, _, slot)| {
            let mut state = slot.lock();
            let full = state.max_builds.is_some_and(|max| state.busy.len() >= max);
            if full || state.busy.contains(builder) {
                return None;
            }
            state.busy.insert(builder.to_owned());
            drop(state);
            Some(Reservation {
                slot: Arc::clone(slot),
                builder: builder.to_owned(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(max_builds: Option<usize>) -> (tempfile::TempDir, WorkerPool) {
        let dir = tempfile::tempdir().unwrap();
        let worker = LocalWorker::new("w".into(), dir.path().join("w"));
        let slot = WorkerSlot::new(1, Arc::new(worker), max_builds, Map::new());
        (dir, WorkerPool::new([Arc::new(slot)]))
    }

    #[test]
    fn one_build_per_builder_per_worker_within_max_builds() {
        let (_dir, pool) = pool(Some(2));
        let names = ["w".to_owned()];
        let a = pool.reserve(&names, "a").expect("room for builder a");
        assert!(pool.reserve(&names, "a").is_none(), "a is already building");
        let b = pool.reserve(&names, "b").expect("room for builder b");
        assert!(pool.reserve(&names, "c").is_none(), "max_builds reached");
        drop(a);
        assert!(pool.reserve(&names, "c").is_some());
        drop(b);
        // A reconfiguration may lower the limit; running builds keep going.
        let c = pool.reserve(&names, "c").unwrap();
        pool.get("w").unwrap().update(Some(1), Map::new());
        assert!(pool.reserve(&names, "d").is_none());
        drop(c);
        assert!(pool.reserve(&names, "d").is_some());
    }

    #[test]
    fn a_paused_worker_takes_no_new_build_until_unpaused() {
        let (_dir, pool) = pool(None);
        let names = ["w".to_owned()];
        let running = pool.reserve(&names, "a").unwrap();
        pool.get("w").unwrap().set_paused(Some("disk full".into()));
        assert!(pool.reserve(&names, "b").is_none());
        assert_eq!(
            pool.get("w").unwrap().load(),
            1,
            "the running build goes on"
        );
        drop(running);
        pool.get("w").unwrap().set_paused(None);
        assert!(pool.reserve(&names, "b").is_some());
    }

    #[test]
    fn unknown_workers_are_never_reserved() {
        let (_dir, pool) = pool(None);
        assert!(pool.reserve(&["nope".to_owned()], "a").is_none());
    }

    #[test]
    fn containment_refuses_absolute_paths_and_parent_references() {
        assert!(is_contained("build"));
        assert!(is_contained("a/b"));
        assert!(!is_contained("/etc"));
        assert!(!is_contained("../x"));
        assert!(!is_contained("a/../../x"));
    }
}
