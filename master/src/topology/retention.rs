//! Retention: the conversion of log chunks an earlier release stored, and
//! the janitor, which deletes history past its horizons on its timetable
//! (or when asked, as Buildbot's `force-janitor` does).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Mutex};

use super::service::{Next, Service};
use crate::config::{JanitorConfig, LogSettings};
use crate::db::{Db, Pruned};
use crate::tasks::{Policy, Supervisor};

/// The janitor and the chunk conversion.
pub struct Retention {
    db: Db,
    janitor: watch::Sender<Option<JanitorConfig>>,
    /// One pass at a time, scheduled or asked for.
    pass: Arc<Mutex<()>>,
}

impl Retention {
    /// Starts the janitor's task (idle until a configuration gives it a
    /// `[janitor]`) and, when chunks of an earlier release are left, their
    /// conversion with the first configuration's `[logs]`.
    pub fn start(db: &Db, supervisor: &Supervisor, logs: LogSettings) -> Retention {
        let (janitor, config) = watch::channel(None);
        let pass = Arc::new(Mutex::new(()));
        let converted = db.clone();
        supervisor.spawn("log chunk conversion", Policy::UntilDone, move || {
            convert_chunks(converted.clone(), logs)
        });
        let (swept, passes) = (db.clone(), Arc::clone(&pass));
        supervisor.spawn("janitor", Policy::Forever, move || {
            run_janitor(swept.clone(), config.clone(), Arc::clone(&passes))
        });
        Retention {
            db: db.clone(),
            janitor,
            pass,
        }
    }

    /// A janitor pass to run now, on the configuration of this moment;
    /// it resolves to `None` when no `[janitor]` is configured.
    pub fn run_now(&self) -> impl Future<Output = Option<Result<Pruned, String>>> + 'static {
        let config = self.janitor.borrow().clone();
        let (db, pass) = (self.db.clone(), Arc::clone(&self.pass));
        async move { Some(sweep(&db, &config?, &pass).await) }
    }
}

impl Service for Retention {
    type Prepared = Option<JanitorConfig>;

    async fn prepare(&self, next: &Next<'_>) -> Result<Self::Prepared, Vec<String>> {
        Ok(next.config.janitor.clone())
    }

    async fn apply(&mut self, janitor: Self::Prepared) -> Result<(), String> {
        self.janitor.send_if_modified(|current| {
            let changed = *current != janitor;
            *current = janitor;
            changed
        });
        Ok(())
    }

    async fn stop(&mut self) {}
}

/// Converts the chunks stored before compression, a batch at a time.
async fn convert_chunks(db: Db, settings: LogSettings) {
    let left = match db.unconverted_log_chunks().await {
        Ok(0) => return,
        Ok(left) => left,
        Err(error) => {
            tracing::warn!("cannot count the log chunks left to convert: {error}");
            return;
        }
    };
    tracing::info!("converting {left} log chunk(s) of an earlier release to the stored format");
    let started = Instant::now();
    let mut converted = 0;
    loop {
        match db.convert_log_chunks(settings).await {
            Ok(0) => break,
            Ok(n) => converted += n,
            Err(error) => {
                // Picked up again at the next start.
                tracing::warn!("log chunk conversion stopped after {converted}: {error}");
                return;
            }
        }
    }
    tracing::info!(
        "converted {converted} log chunk(s) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Waits for each time the timetable names, then sweeps.
async fn run_janitor(
    db: Db,
    mut config: watch::Receiver<Option<JanitorConfig>>,
    pass: Arc<Mutex<()>>,
) {
    loop {
        let current = config.borrow_and_update().clone();
        let next = current.as_ref().and_then(|janitor| {
            let now = crate::clock::now();
            let at = janitor.timetable.next_after(now)?;
            Some(Duration::from_secs((at - now).max(0) as u64))
        });
        let (Some(janitor), Some(wait)) = (current, next) else {
            if config.changed().await.is_err() {
                return std::future::pending().await;
            }
            continue;
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {
                // Logged by the pass; a failed pass is tried again next time.
                let _ = sweep(&db, &janitor, &pass).await;
            }
            changed = config.changed() => {
                if changed.is_err() {
                    return std::future::pending().await;
                }
            }
        }
    }
}

/// One janitor pass over the horizons of `config`, logged in one line.
async fn sweep(db: &Db, config: &JanitorConfig, pass: &Mutex<()>) -> Result<Pruned, String> {
    let _one_at_a_time = pass.lock().await;
    let started = Instant::now();
    let now = crate::clock::now();
    let before = |horizon: Duration| now - horizon.as_secs() as i64;
    let mut pruned = Pruned::default();
    let result = async {
        if let Some(horizon) = config.logs_horizon {
            db.prune_log_contents(before(horizon), &mut pruned).await?;
        }
        if let Some(horizon) = config.builds_horizon {
            db.prune_buildsets(before(horizon), &mut pruned).await?;
        }
        if let Some(horizon) = config.changes_horizon {
            db.prune_changes(before(horizon), &mut pruned).await?;
        }
        Ok::<_, crate::db::Error>(())
    }
    .await;
    let summary = format!(
        "{} log(s) emptied, {} buildset(s) with {} build(s) and {} change(s) deleted, \
         {} log chunk(s) in all, in {:.1} s",
        pruned.logs,
        pruned.buildsets,
        pruned.builds,
        pruned.changes,
        pruned.chunks,
        started.elapsed().as_secs_f64()
    );
    match result {
        Ok(()) => {
            tracing::info!("janitor: {summary}");
            Ok(pruned)
        }
        Err(error) => {
            tracing::warn!("janitor stopped: {error} (so far: {summary})");
            Err(error.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changes::NewChange;
    use crate::config::cron::{CronField, Timetable};

    #[tokio::test(start_paused = true)]
    async fn the_janitor_sweeps_at_the_times_of_its_timetable() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("state.sqlite")).unwrap();
        let change = || serde_json::from_value::<NewChange>(serde_json::json!({})).unwrap();
        db.add_changes(vec![change(), change(), change()])
            .await
            .unwrap();
        // Stored a second ago at least: past a horizon of 0 seconds.
        std::thread::sleep(Duration::from_millis(1100));
        let supervisor = Supervisor::new();
        let mut retention = Retention::start(&db, &supervisor, LogSettings::default());
        let every_minute = CronField::Any("*".into());
        let janitor = JanitorConfig {
            logs_horizon: None,
            builds_horizon: None,
            changes_horizon: Some(Duration::ZERO),
            timetable: Timetable::new(Some(&every_minute), None, None, None, None).unwrap(),
        };
        Service::apply(&mut retention, Some(janitor)).await.unwrap();
        // Paused, the clock jumps to the next minute once the janitor waits.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while crate::db::rest::all(&db, &crate::db::CHANGES).await.len() > 1 {
            assert!(std::time::Instant::now() < deadline, "no sweep");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // The newest change stays.
        let left = crate::db::rest::all(&db, &crate::db::CHANGES).await;
        assert_eq!(left[0]["changeid"], 3);
        supervisor.shutdown(Duration::from_secs(1)).await;
    }
}
