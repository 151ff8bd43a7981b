//! Durable consumers of build events: the ones that must not miss a build's
//! start or finish (the notification outbox, chat notifications).
//!
//! The event bus is fast but forgetful: a subscriber that falls behind, or
//! that was not running, loses events. A durable consumer does not take its
//! events from the bus. It reads the database's build journal, which records
//! every build started and finished in the same transaction as the build
//! itself, from a cursor stored under its name; the bus only tells it when to
//! look again. Delivery is at least once: the cursor is stored after a batch
//! is handled, so a consumer stopped in the middle of a batch sees that batch
//! again, and must tolerate a repeat (by the build id and kind).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;

use crate::db::{Db, JournalEntry, JournalKind};
use crate::events::{BuildInfo, Bus, Event};

/// How many journal entries are read at a time.
const BATCH: u64 = 100;

/// How long a consumer waits before trying again after a failure, and at
/// most between two looks at the journal.
const RETRY: Duration = Duration::from_secs(5);

/// One build event, as a durable consumer gets it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub entry: JournalEntry,
    /// The build as it is now in the database (for a `Started` entry read
    /// late, it may already be complete).
    pub build: Arc<BuildInfo>,
}

/// Something that handles every build event once or more.
pub trait Consumer: Send {
    /// Names its cursor in the database; must stay the same across restarts.
    fn name(&self) -> &str;

    /// How many entries it handles before its place is stored: after a
    /// crash, at most this many are handled again.
    fn batch(&self) -> u64 {
        BATCH
    }

    /// Handles one event. An error stops the batch; the event is delivered
    /// again after [`RETRY`].
    fn handle(&mut self, delivery: Delivery) -> impl Future<Output = Result<(), String>> + Send;
}

/// Feeds `consumer` every journal entry after its stored cursor, then every
/// new one, until the task is stopped.
pub async fn follow<C: Consumer>(db: Db, bus: Bus, mut consumer: C) {
    // Subscribed before the first read, so no wake-up falls between the two.
    let mut events = bus.subscribe();
    let mut cursor = loop {
        match db.consumer_cursor(consumer.name()).await {
            Ok(cursor) => break cursor,
            Err(error) => {
                tracing::error!(
                    "{}: cannot read its place in the journal: {error}",
                    consumer.name()
                );
                tokio::time::sleep(RETRY).await;
            }
        }
    };
    loop {
        let read = catch_up(&db, &mut consumer, &mut cursor).await;
        match read {
            Ok(true) => continue,
            Ok(false) => wait_for_builds(&mut events).await,
            Err(error) => {
                tracing::error!("{}: {error}; trying again in {RETRY:?}", consumer.name());
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Handles one batch after `cursor` and stores the new cursor. True when
/// the batch was full (more may follow at once).
async fn catch_up<C: Consumer>(
    db: &Db,
    consumer: &mut C,
    cursor: &mut i64,
) -> Result<bool, String> {
    let batch = consumer.batch().max(1);
    let entries = db
        .journal_after(*cursor, batch)
        .await
        .map_err(|e| format!("cannot read the journal: {e}"))?;
    let full = entries.len() as u64 == batch;
    let mut handled = None;
    let mut outcome = Ok(());
    for entry in entries {
        let build = match db.build_info(entry.buildid).await {
            Ok(Some(build)) => Arc::new(build),
            Ok(None) => {
                // A build that was removed since: nothing to say about it.
                handled = Some(entry.eventid);
                continue;
            }
            Err(e) => {
                outcome = Err(format!("cannot read build {}: {e}", entry.buildid));
                break;
            }
        };
        if let Err(e) = consumer.handle(Delivery { entry, build }).await {
            outcome = Err(format!(
                "cannot handle build {} {}: {e}",
                entry.buildid,
                kind(entry.kind)
            ));
            break;
        }
        handled = Some(entry.eventid);
    }
    if let Some(eventid) = handled {
        db.save_consumer_cursor(consumer.name(), eventid)
            .await
            .map_err(|e| format!("cannot store its place in the journal: {e}"))?;
        *cursor = eventid;
    }
    outcome.map(|()| full)
}

fn kind(kind: JournalKind) -> &'static str {
    match kind {
        JournalKind::Started => "start",
        JournalKind::Finished => "finish",
    }
}

/// Waits until a build starts or finishes, the bus says events were missed,
/// or [`RETRY`] passes (a safety net: the journal is the truth).
async fn wait_for_builds(events: &mut tokio::sync::broadcast::Receiver<Event>) {
    let _ = tokio::time::timeout(RETRY, async {
        loop {
            match events.recv().await {
                Ok(Event::BuildStarted(_) | Event::BuildFinished(_)) => return,
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => return,
                Err(RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use serde_json::Map;
    use tokio::sync::mpsc;

    use super::*;
    use crate::db::{NewBuildset, SchedulerWrite, StampSpec};
    use crate::results::Results;

    /// Records what it gets.
    struct Recorder {
        name: String,
        deliveries: mpsc::UnboundedSender<(i64, JournalKind, Option<Results>)>,
    }

    impl Consumer for Recorder {
        fn name(&self) -> &str {
            &self.name
        }

        async fn handle(&mut self, delivery: Delivery) -> Result<(), String> {
            let _ = self.deliveries.send((
                delivery.build.buildid,
                delivery.entry.kind,
                delivery.build.results,
            ));
            Ok(())
        }
    }

    /// Runs `count` builds from request to finish, as the botmaster records
    /// them, announcing their start and finish on `bus`.
    async fn run_builds(db: &Db, bus: &Bus, builder: i64, worker: i64, count: usize) {
        for _ in 0..count {
            let write = SchedulerWrite {
                buildsets: vec![NewBuildset {
                    reason: "r".into(),
                    scheduler: "s".into(),
                    external_idstring: None,
                    properties: Map::new(),
                    sourcestamps: vec![StampSpec::New {
                        branch: Some("main".into()),
                        revision: None,
                        repository: String::new(),
                        project: String::new(),
                        codebase: String::new(),
                    }],
                    builders: vec![(builder, false)],
                    priority: 0,
                }],
                ..SchedulerWrite::default()
            };
            let added = db.scheduler_write(write).await.unwrap().remove(0);
            let brid = added.requests[&builder];
            let started = db
                .claim_and_start_build(brid, builder, worker, Map::new())
                .await
                .unwrap()
                .unwrap();
            let info = Arc::new(db.build_info(started.buildid).await.unwrap().unwrap());
            bus.send(Event::BuildStarted(Arc::clone(&info)));
            db.finish_build(
                started.buildid,
                brid,
                Results::Success,
                "ok".into(),
                Map::new(),
            )
            .await
            .unwrap();
            bus.send(Event::BuildFinished(info));
        }
    }

    /// Takes `count` deliveries, then checks none follows for a moment.
    async fn take(
        received: &mut mpsc::UnboundedReceiver<(i64, JournalKind, Option<Results>)>,
        count: usize,
    ) -> Vec<(i64, JournalKind, Option<Results>)> {
        let mut got = Vec::new();
        while got.len() < count {
            let next = tokio::time::timeout(Duration::from_secs(10), received.recv())
                .await
                .expect("a delivery within 10 s")
                .expect("the consumer runs");
            got.push(next);
        }
        let extra = tokio::time::timeout(Duration::from_millis(200), received.recv()).await;
        assert!(extra.is_err(), "one delivery too many: {extra:?}");
        got
    }

    #[tokio::test]
    async fn a_consumer_that_was_down_while_100_builds_finished_catches_up_with_all_100() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("state.sqlite")).unwrap();
        let bus = Bus::new();
        let builder = db
            .sync_builders(vec![("b".into(), None, vec![])])
            .await
            .unwrap()["b"];
        let worker = db
            .sync_workers(vec![("w".into(), serde_json::Value::Object(Map::new()))])
            .await
            .unwrap()["w"];
        // First seen: the consumer starts at the end of the journal.
        assert_eq!(db.consumer_cursor("notifier").await.unwrap(), 0);

        run_builds(&db, &bus, builder, worker, 100).await;
        let (deliveries, mut received) = mpsc::unbounded_channel();
        let consumer = Recorder {
            name: "notifier".into(),
            deliveries: deliveries.clone(),
        };
        let task = tokio::spawn(follow(db.clone(), bus.clone(), consumer));
        let got = take(&mut received, 200).await;
        // Every build, started then finished, in order.
        for (index, pair) in got.chunks(2).enumerate() {
            let buildid = index as i64 + 1;
            assert_eq!(pair[0].0, buildid);
            assert_eq!(pair[0].1, JournalKind::Started);
            assert_eq!(
                pair[1],
                (buildid, JournalKind::Finished, Some(Results::Success))
            );
        }

        // Running, it follows new builds as they come.
        run_builds(&db, &bus, builder, worker, 3).await;
        let got = take(&mut received, 6).await;
        assert_eq!(got[5].0, 103);

        // Stopped and started again, it goes on from its stored place.
        task.abort();
        let _ = task.await;
        run_builds(&db, &bus, builder, worker, 2).await;
        let consumer = Recorder {
            name: "notifier".into(),
            deliveries,
        };
        let task = tokio::spawn(follow(db.clone(), bus.clone(), consumer));
        let got = take(&mut received, 4).await;
        let builds: Vec<i64> = got.iter().map(|(id, _, _)| *id).collect();
        assert_eq!(builds, [104, 104, 105, 105]);
        task.abort();
    }
}
