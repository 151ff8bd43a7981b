//! Named tasks that never disappear silently.
//!
//! Every long-lived task of the master runs under the [`Supervisor`]. A task
//! that panics, or that ends while it was meant to run until stopped, is
//! logged with its name and started again after a backoff that doubles from
//! [`FIRST_BACKOFF`] to [`MAX_BACKOFF`] (back to the first once a run has
//! lasted [`STABLE`]). A task whose restart could not be correct runs
//! [`Policy::Once`]: its failure is logged and marks the master unhealthy.
//!
//! Each start of a task is an *incarnation* with a number of its own, shown
//! with the task at `/api/v2/reconfig`: a reload that keeps a task keeps its
//! number, one that restarts it gives a new one. [`Supervisor::shutdown`]
//! stops every task and joins it within a bound.

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use serde::Serialize;
use tokio::task::JoinHandle;

/// The wait before the first restart of a failed task.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two restarts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A run that lasted this long resets the backoff.
pub const STABLE: Duration = Duration::from_secs(60);

/// What ending means for a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Runs until stopped: ending is as wrong as panicking; both restart it.
    Forever,
    /// May finish its work and end; a panic restarts it.
    UntilDone,
    /// Cannot be restarted correctly: a panic marks it failed and the master
    /// unhealthy; ending is finishing.
    Once,
}

/// Where a task is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "reason")]
pub enum TaskState {
    Running,
    /// Failed; waiting for its next start.
    Restarting(String),
    /// Failed, and not restarted.
    Failed(String),
}

/// A task as `/api/v2/reconfig` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskReport {
    pub name: String,
    /// Numbers every start of every task, in order.
    pub incarnation: u64,
    /// Epoch seconds of the current incarnation's start.
    pub started_at: i64,
    pub restarts: u32,
    #[serde(flatten)]
    pub state: TaskState,
}

struct Entry {
    report: TaskReport,
    /// The supervising task; taken to join or stop it.
    handle: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    tasks: Mutex<BTreeMap<u64, Entry>>,
    next_key: AtomicU64,
    next_incarnation: AtomicU64,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, key: u64, change: impl FnOnce(&mut TaskReport)) {
        if let Some(entry) = self.lock().get_mut(&key) {
            change(&mut entry.report);
        }
    }

    fn incarnation(&self) -> u64 {
        self.next_incarnation.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// Runs and watches the master's tasks; clones share them.
#[derive(Clone, Default)]
pub struct Supervisor {
    shared: Arc<Shared>,
}

/// One supervised task. Dropping the handle leaves the task running under
/// the supervisor; [`TaskHandle::stop`] ends it.
#[derive(Debug)]
pub struct TaskHandle {
    key: u64,
    incarnation: u64,
    shared: std::sync::Weak<Shared>,
}

impl TaskHandle {
    /// The number of the incarnation the task started with.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Stops the task (at its next `.await`) and waits until it has ended.
    pub async fn stop(self) {
        if let Some(handle) = self.take() {
            handle.abort();
            let _ = handle.await;
        }
    }

    /// Waits for a task that was told to end by other means (a shutdown
    /// signal of its own) to end, for at most `bound`; then stops it.
    pub async fn join(self, bound: Duration) -> bool {
        let Some(mut handle) = self.take() else {
            return true;
        };
        match tokio::time::timeout(bound, &mut handle).await {
            Ok(_) => true,
            Err(_) => {
                handle.abort();
                let _ = handle.await;
                false
            }
        }
    }

    fn take(&self) -> Option<JoinHandle<()>> {
        let shared = self.shared.upgrade()?;
        let entry = shared.lock().remove(&self.key)?;
        entry.handle
    }
}

impl Supervisor {
    pub fn new() -> Supervisor {
        Supervisor::default()
    }

    /// Runs `start()` as task `name` under `policy`; `start` makes each
    /// incarnation's future. Must be called within a tokio runtime.
    pub fn spawn<F, Fut>(&self, name: impl Into<String>, policy: Policy, start: F) -> TaskHandle
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let name = name.into();
        let key = self.shared.next_key.fetch_add(1, Ordering::Relaxed);
        let incarnation = self.shared.incarnation();
        let report = TaskReport {
            name: name.clone(),
            incarnation,
            started_at: crate::clock::now(),
            restarts: 0,
            state: TaskState::Running,
        };
        // Registered before the task can run, so its first report finds it.
        let mut tasks = self.shared.lock();
        let handle = tokio::spawn(supervise(
            Arc::downgrade(&self.shared),
            key,
            name,
            policy,
            start,
        ));
        tasks.insert(
            key,
            Entry {
                report,
                handle: Some(handle),
            },
        );
        TaskHandle {
            key,
            incarnation,
            shared: Arc::downgrade(&self.shared),
        }
    }

    /// Every task, in the order they were spawned.
    pub fn reports(&self) -> Vec<TaskReport> {
        self.shared
            .lock()
            .values()
            .map(|entry| entry.report.clone())
            .collect()
    }

    /// Why the master is unhealthy: one line per task that failed for good.
    pub fn problems(&self) -> Vec<String> {
        self.reports()
            .into_iter()
            .filter_map(|report| match report.state {
                TaskState::Failed(reason) => Some(format!("task {} {reason}", report.name)),
                _ => None,
            })
            .collect()
    }

    /// Stops every task still running and joins them all within `bound`.
    /// Returns the names of those that did not end in time.
    pub async fn shutdown(&self, bound: Duration) -> Vec<String> {
        let entries: Vec<(String, JoinHandle<()>)> = std::mem::take(&mut *self.shared.lock())
            .into_values()
            .filter_map(|entry| Some((entry.report.name, entry.handle?)))
            .collect();
        let deadline = tokio::time::Instant::now() + bound;
        let mut stuck = Vec::new();
        for (_, handle) in &entries {
            handle.abort();
        }
        for (name, handle) in entries {
            if tokio::time::timeout_at(deadline, handle).await.is_err() {
                stuck.push(name);
            }
        }
        stuck
    }
}

/// The supervising loop of one task.
async fn supervise<F, Fut>(
    shared: std::sync::Weak<Shared>,
    key: u64,
    name: String,
    policy: Policy,
    start: F,
) where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut backoff = FIRST_BACKOFF;
    loop {
        let began = Instant::now();
        let reason = match AssertUnwindSafe(start()).catch_unwind().await {
            Ok(()) if policy != Policy::Forever => {
                if let Some(shared) = shared.upgrade() {
                    shared.lock().remove(&key);
                }
                return;
            }
            Ok(()) => "ended unexpectedly".to_string(),
            Err(panic) => format!("panicked: {}", panic_message(&*panic)),
        };
        let Some(shared_now) = shared.upgrade() else {
            return;
        };
        if policy == Policy::Once {
            tracing::error!(
                "task {name} {reason}; it cannot be restarted, so the master is unhealthy"
            );
            shared_now.update(key, |report| report.state = TaskState::Failed(reason));
            return;
        }
        if began.elapsed() >= STABLE {
            backoff = FIRST_BACKOFF;
        }
        tracing::error!("task {name} {reason}; restarting it in {backoff:?}");
        shared_now.update(key, |report| {
            report.state = TaskState::Restarting(reason);
        });
        drop(shared_now);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
        let Some(shared_now) = shared.upgrade() else {
            return;
        };
        let incarnation = shared_now.incarnation();
        shared_now.update(key, |report| {
            report.incarnation = incarnation;
            report.started_at = crate::clock::now();
            report.restarts += 1;
            report.state = TaskState::Running;
        });
    }
}

/// The message a panic was raised with, when it is text.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "(no message)".to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;

    /// Waits (in paused time) until `probe` holds.
    async fn until(mut probe: impl FnMut() -> bool) {
        for _ in 0..10_000 {
            if probe() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("condition never held");
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_task_is_restarted_with_a_growing_backoff() {
        let supervisor = Supervisor::new();
        let runs = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&runs);
        let handle = supervisor.spawn("flaky", Policy::Forever, move || {
            let run = counted.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if run <= 3 {
                    panic!("run {run} fails");
                }
                std::future::pending::<()>().await
            }
        });
        let first = handle.incarnation();
        let started = tokio::time::Instant::now();
        until(|| runs.load(Ordering::SeqCst) == 4).await;
        // 100 + 200 + 400 ms of backoff before the fourth run.
        assert!(started.elapsed() >= Duration::from_millis(700));
        let report = &supervisor.reports()[0];
        assert_eq!(report.name, "flaky");
        assert_eq!(report.restarts, 3);
        assert_eq!(report.state, TaskState::Running);
        assert!(report.incarnation > first);
        assert!(supervisor.problems().is_empty());
        handle.stop().await;
        assert!(supervisor.reports().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_forever_task_that_returns_is_restarted_and_an_until_done_one_is_not() {
        let supervisor = Supervisor::new();
        let runs = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&runs);
        supervisor.spawn("loop", Policy::Forever, move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async {}
        });
        until(|| runs.load(Ordering::SeqCst) >= 3).await;
        let done = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&done);
        supervisor.spawn("job", Policy::UntilDone, move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async {}
        });
        until(|| supervisor.reports().len() == 1).await;
        assert_eq!(done.load(Ordering::SeqCst), 1);
        assert_eq!(supervisor.reports()[0].name, "loop");
    }

    #[tokio::test(start_paused = true)]
    async fn a_once_task_that_fails_makes_the_master_unhealthy() {
        let supervisor = Supervisor::new();
        supervisor.spawn("listener", Policy::Once, || async { panic!("socket gone") });
        until(|| !supervisor.problems().is_empty()).await;
        assert_eq!(
            supervisor.problems(),
            ["task listener panicked: socket gone"]
        );
        assert_eq!(
            supervisor.reports()[0].state,
            TaskState::Failed("panicked: socket gone".into())
        );
    }

    #[tokio::test]
    async fn shutdown_joins_every_task_within_the_bound() {
        let supervisor = Supervisor::new();
        for name in ["a", "b", "c"] {
            supervisor.spawn(name, Policy::Forever, std::future::pending::<()>);
        }
        let stuck = supervisor.shutdown(Duration::from_secs(1)).await;
        assert!(stuck.is_empty(), "{stuck:?}");
        assert!(supervisor.reports().is_empty());
    }

    #[tokio::test]
    async fn join_waits_for_a_task_told_to_end_and_stops_one_that_does_not() {
        let supervisor = Supervisor::new();
        let (tell, told) = tokio::sync::oneshot::channel::<()>();
        let told = Arc::new(tokio::sync::Mutex::new(Some(told)));
        let handle = supervisor.spawn("graceful", Policy::Once, move || {
            let told = Arc::clone(&told);
            async move {
                if let Some(told) = told.lock().await.take() {
                    let _ = told.await;
                }
            }
        });
        tell.send(()).unwrap();
        assert!(handle.join(Duration::from_secs(5)).await);
        let stubborn = supervisor.spawn("stubborn", Policy::Once, std::future::pending::<()>);
        assert!(!stubborn.join(Duration::from_millis(50)).await);
        assert!(supervisor.reports().is_empty());
    }
}
