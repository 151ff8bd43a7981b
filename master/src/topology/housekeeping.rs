//! Housekeeping: one log line per build and per worker event, and
//! forgetting change-hook delivery ids once they are too old to matter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use super::service::{Next, Service};
use crate::db::Db;
use crate::events::{Bus, Event};
use crate::results::Results;
use crate::tasks::{Policy, Supervisor};

/// The housekeeping tasks, and the settings they follow.
pub struct Housekeeping {
    /// `[www] delivery_id_window`, in seconds.
    window: Arc<AtomicU64>,
    db: Db,
}

/// What a configuration asks of housekeeping.
pub struct Settings {
    /// `[www] delivery_id_window`, in seconds.
    window: u64,
    /// The configured dialects, and how many deliveries of each the
    /// inspector keeps.
    dialects: Vec<String>,
    kept: usize,
}

impl Housekeeping {
    /// Starts the tasks with the first configuration's `window`: the purge
    /// runs at once, and must not take the window for 0 (forgetting every
    /// delivery id) before that configuration is applied.
    pub fn start(db: &Db, bus: &Bus, supervisor: &Supervisor, window: u64) -> Housekeeping {
        let window = Arc::new(AtomicU64::new(window));
        let (logged, events) = (db.clone(), bus.clone());
        supervisor.spawn("event log", Policy::Forever, move || {
            log_events(logged.clone(), events.subscribe())
        });
        let (purged, kept) = (db.clone(), Arc::clone(&window));
        supervisor.spawn("delivery id purge", Policy::Forever, move || {
            purge_deliveries(purged.clone(), Arc::clone(&kept))
        });
        Housekeeping {
            window,
            db: db.clone(),
        }
    }
}

impl Service for Housekeeping {
    type Prepared = Settings;

    async fn prepare(&self, next: &Next<'_>) -> Result<Settings, Vec<String>> {
        let www = &next.config.www;
        Ok(Settings {
            window: www.delivery_id_window,
            dialects: www.dialects.iter().map(|d| d.name.clone()).collect(),
            kept: www.hook_deliveries_kept,
        })
    }

    async fn apply(&mut self, settings: Settings) -> Result<(), String> {
        self.window.store(settings.window, Ordering::Relaxed);
        // The inspector keeps no more than asked now, and nothing of a
        // dialect gone (its copies may hold signatures and tokens).
        match self
            .db
            .prune_hook_deliveries(settings.dialects, settings.kept)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!("the webhook inspector let {n} kept delivery(ies) go"),
            Err(e) => tracing::warn!("cannot prune the webhook inspector's deliveries: {e}"),
        }
        Ok(())
    }

    async fn stop(&mut self) {}
}

/// Forgets expired change-hook delivery ids now and every hour. Expired ids
/// are already ignored when checked; this only keeps the table small.
async fn purge_deliveries(db: Db, window: Arc<AtomicU64>) {
    let mut every_hour = tokio::time::interval(Duration::from_secs(3600));
    loop {
        every_hour.tick().await;
        let before = crate::clock::now() - window.load(Ordering::Relaxed) as i64;
        match db.purge_deliveries(before).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!("forgot {n} expired delivery id(s)"),
            Err(e) => tracing::warn!("cannot forget expired delivery ids: {e}"),
        }
    }
}

/// Logs one line per build started and finished (saying when a builder's
/// result changed from its previous build), and per worker coming and going.
async fn log_events(db: Db, mut events: broadcast::Receiver<Event>) {
    loop {
        match events.recv().await {
            Ok(Event::BuildStarted(build)) => tracing::info!(
                correlation = %build.correlation(),
                "build {} #{} started on worker {} (build {})",
                build.builder.name,
                build.number,
                build.worker,
                build.buildid
            ),
            Ok(Event::BuildFinished(build)) => {
                let results = build.results.map_or("unknown", Results::name);
                let previous = db
                    .previous_build(build.builder.builderid, build.number)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|previous| previous["results"].as_i64())
                    .and_then(Results::from_code);
                let change = match previous {
                    Some(previous) if previous.name() != results => {
                        format!(", was {previous}")
                    }
                    _ => String::new(),
                };
                tracing::info!(
                    correlation = %build.correlation(),
                    "build {} #{} finished: {results} ({}{change})",
                    build.builder.name,
                    build.number,
                    build.state_string
                )
            }
            Ok(Event::WorkerConnected(worker)) => {
                tracing::info!("worker {} connected", worker.name)
            }
            Ok(Event::WorkerDisconnected(worker)) => {
                tracing::info!("worker {} disconnected", worker.name)
            }
            Ok(Event::WorkerMissing(worker)) => tracing::warn!("worker {} is missing", worker.name),
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!("the event log missed {missed} events")
            }
            // The bus outlives this task; it never closes while the master runs.
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Delivery;

    #[tokio::test]
    async fn the_first_purge_keeps_the_delivery_ids_within_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("state.sqlite")).unwrap();
        let delivery = Delivery {
            dialect: "github".into(),
            id: "72d3162e".into(),
            not_before: 0,
        };
        db.add_delivered_changes(Vec::new(), delivery.clone())
            .await
            .unwrap();
        // Recorded a second ago at least.
        std::thread::sleep(Duration::from_millis(1100));
        let supervisor = Supervisor::new();
        let _housekeeping = Housekeeping::start(&db, &Bus::new(), &supervisor, 3600);
        // The purge runs as soon as it starts.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(db.delivery_seen(delivery).await.unwrap());
        supervisor.shutdown(Duration::from_secs(1)).await;
    }
}
