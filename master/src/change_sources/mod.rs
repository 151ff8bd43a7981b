//! Polling change sources (`[[change_sources]]`): each runs as one task that
//! polls at launch if asked, then every `poll_interval`, and at once when the
//! `poller` dialect asks through [`Pollers`].
//!
//! A source polls one poll at a time. Requests that arrive while it polls are
//! folded into one more poll right after, since that poll sees everything they
//! could have asked for. A failed poll is logged and changes nothing; the next
//! one retries.

mod git;

use std::sync::Arc;

use arc_swap::ArcSwap;

use tokio::sync::Notify;
use tokio::time::{Instant, MissedTickBehavior};

use crate::config::{redact_url, GitPollerConfig};
use crate::db::Db;
use crate::host::Pollers;
use crate::tasks::{Policy, Supervisor, TaskHandle};
use git::GitPoller;

/// The running change sources of a master.
pub struct ChangeSources {
    db: Db,
    supervisor: Supervisor,
    wakers: Arc<Wakers>,
    running: tokio::sync::Mutex<Vec<Running>>,
}

struct Running {
    config: GitPollerConfig,
    task: TaskHandle,
}

/// Each source's name and the signal that makes it poll now; replaced whole
/// when the sources change.
#[derive(Default)]
struct Wakers(ArcSwap<Vec<(String, Arc<Notify>)>>);

impl Pollers for Wakers {
    fn names(&self) -> Vec<String> {
        self.0.load().iter().map(|(name, _)| name.clone()).collect()
    }

    fn force(&self, names: &[String]) {
        for (name, wake) in self.0.load().iter() {
            if names.contains(name) {
                // Stores one permit if the task is busy: repeated requests
                // during a poll make a single poll after it.
                wake.notify_one();
            }
        }
    }
}

impl ChangeSources {
    /// No source yet; [`ChangeSources::apply`] starts them.
    pub fn new(db: Db, supervisor: Supervisor) -> ChangeSources {
        ChangeSources {
            db,
            supervisor,
            wakers: Arc::new(Wakers::default()),
            running: tokio::sync::Mutex::new(Vec::new()),
        }
    }

    /// Makes `configs` the running sources: a source whose settings did not
    /// change keeps running (and its place in a poll); the others stop or
    /// start.
    pub async fn apply(&self, configs: &[GitPollerConfig]) {
        let mut running = self.running.lock().await;
        let mut old: Vec<Running> = std::mem::take(&mut *running);
        let mut wakers = Vec::with_capacity(configs.len());
        for config in configs {
            if let Some(at) = old.iter().position(|r| &r.config == config) {
                let kept = old.swap_remove(at);
                let wake = self
                    .wakers
                    .0
                    .load()
                    .iter()
                    .find(|(name, _)| *name == config.name)
                    .map(|(_, wake)| Arc::clone(wake))
                    .unwrap_or_default();
                wakers.push((config.name.clone(), wake));
                running.push(kept);
                continue;
            }
            tracing::info!(
                "change source '{}' polls {} every {} s",
                config.name,
                redact_url(&config.repourl),
                config.poll_interval.as_secs()
            );
            let wake = Arc::new(Notify::new());
            let (db, awoken, source) = (self.db.clone(), Arc::clone(&wake), config.clone());
            let task = self.supervisor.spawn(
                format!("change source '{}'", config.name),
                Policy::Forever,
                move || {
                    run(
                        GitPoller::new(source.clone()),
                        db.clone(),
                        Arc::clone(&awoken),
                    )
                },
            );
            wakers.push((config.name.clone(), wake));
            running.push(Running {
                config: config.clone(),
                task,
            });
        }
        self.wakers.0.store(Arc::new(wakers));
        // What is left was removed or replaced. A poll in progress is
        // abandoned: its git process is killed and nothing of it is stored
        // unless its single write had already been handed to the database.
        for stale in old {
            stale.task.stop().await;
        }
    }

    /// What plugins see of the sources: their names, and a way to make them poll.
    pub fn pollers(&self) -> Arc<dyn Pollers> {
        Arc::clone(&self.wakers) as Arc<dyn Pollers>
    }

    /// Stops every source and waits until they have stopped.
    pub async fn stop(&self) {
        self.apply(&[]).await;
    }
}

/// One source's life: wait for the next tick or a request, poll, repeat.
async fn run(poller: GitPoller, db: Db, wake: Arc<Notify>) {
    let config = poller.config();
    let every = config.poll_interval;
    let first = if config.poll_at_launch {
        Instant::now()
    } else {
        Instant::now() + every
    };
    let mut ticks = tokio::time::interval_at(first, every);
    // A poll longer than the interval delays the next one instead of
    // triggering a burst of catch-up polls.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = wake.notified() => {}
        }
        if let Err(error) = poller.poll(&db).await {
            tracing::error!("change source '{}' cannot poll: {error}", config.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `notify` holds a permit; takes it.
    async fn has_permit(notify: &Notify) -> bool {
        tokio::time::timeout(std::time::Duration::ZERO, notify.notified())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn forcing_wakes_only_the_named_sources_once() {
        let wakers = Wakers(ArcSwap::from_pointee(vec![
            ("a".into(), Arc::new(Notify::new())),
            ("b".into(), Arc::new(Notify::new())),
        ]));
        assert_eq!(wakers.names(), ["a", "b"]);
        wakers.force(&["b".into(), "unknown".into()]);
        wakers.force(&["b".into()]);
        let list = wakers.0.load();
        assert!(!has_permit(&list[0].1).await);
        assert!(has_permit(&list[1].1).await, "a forced source polls");
        assert!(
            !has_permit(&list[1].1).await,
            "two requests while busy make one more poll"
        );
    }
}
