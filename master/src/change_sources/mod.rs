//! Polling change sources (`[[change_sources]]`): each runs as one task that
//! polls at launch if asked, then every `poll_interval`, and at once when the
//! `poller` dialect asks through [`Pollers`].
//!
//! A source polls one poll at a time. Requests that arrive while it polls are
//! folded into one more poll right after, since that poll sees everything they
//! could have asked for. A failed poll is logged and changes nothing; the next
//! one retries.

mod git;

use std::borrow::Cow;
use std::sync::{Arc, PoisonError};

use arc_swap::ArcSwap;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::config::GitPollerConfig;
use crate::db::Db;
use crate::host::Pollers;
use git::GitPoller;

/// The running change sources of a master. Dropping it stops them.
pub struct ChangeSources {
    db: Db,
    wakers: Arc<Wakers>,
    running: std::sync::Mutex<Vec<Running>>,
}

struct Running {
    config: GitPollerConfig,
    task: JoinHandle<()>,
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
    /// Starts one task per source, in configuration order. Must be called
    /// within a tokio runtime.
    pub fn start(configs: &[GitPollerConfig], db: &Db) -> Arc<ChangeSources> {
        let sources = ChangeSources {
            db: db.clone(),
            wakers: Arc::new(Wakers::default()),
            running: std::sync::Mutex::new(Vec::new()),
        };
        sources.apply(configs);
        Arc::new(sources)
    }

    /// Makes `configs` the running sources: a source whose settings did not
    /// change keeps running (and its place in a poll); the others stop or
    /// start.
    pub fn apply(&self, configs: &[GitPollerConfig]) {
        let mut running = self.lock();
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
            let poller = GitPoller::new(config.clone());
            let task = tokio::spawn(run(poller, self.db.clone(), Arc::clone(&wake)));
            wakers.push((config.name.clone(), wake));
            running.push(Running {
                config: config.clone(),
                task,
            });
        }
        // What is left was removed or replaced.
        for stale in old {
            stale.task.abort();
        }
        self.wakers.0.store(Arc::new(wakers));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Running>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What plugins see of the sources: their names, and a way to make them poll.
    pub fn pollers(&self) -> Arc<dyn Pollers> {
        Arc::clone(&self.wakers) as Arc<dyn Pollers>
    }

    /// Stops every source and waits until they have stopped. A poll in
    /// progress is abandoned: its git process is killed and nothing of it is
    /// stored unless its single write had already been handed to the database.
    pub async fn stop(&self) {
        let running = std::mem::take(&mut *self.lock());
        for source in &running {
            source.task.abort();
        }
        for source in running {
            let _ = source.task.await;
        }
    }
}

impl Drop for ChangeSources {
    fn drop(&mut self) {
        for source in self.lock().iter() {
            source.task.abort();
        }
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

/// A repository URL fit for logs: the password of `scheme://user:password@…`
/// is masked, and so is a lone user name over HTTP(S), where it is usually a
/// token.
pub fn redact_url(url: &str) -> Cow<'_, str> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Cow::Borrowed(url);
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return Cow::Borrowed(url);
    };
    let path = &rest[authority.len()..];
    let masked = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") => {
            "***".to_string()
        }
        None => return Cow::Borrowed(url),
    };
    Cow::Owned(format!("{scheme}://{masked}@{host}{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_urls_are_masked() {
        for (url, shown) in [
            (
                "https://user:s3cret@example.org/r.git",
                "https://user:***@example.org/r.git",
            ),
            (
                "https://ghp_token@github.com/o/r.git",
                "https://***@github.com/o/r.git",
            ),
            ("ssh://git@example.org/r.git", "ssh://git@example.org/r.git"),
            ("git@example.org:r.git", "git@example.org:r.git"),
            ("file:///srv/git/r.git", "file:///srv/git/r.git"),
            ("https://example.org/a@b", "https://example.org/a@b"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

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
