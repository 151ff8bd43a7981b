//! Schedulers: they turn changes, timers and users' requests into buildsets.
//!
//! One task reads new changes from the database (woken by `ChangeAdded`
//! events, and at start for whatever arrived while the master was down), asks
//! each change-driven scheduler whether it wants them, and writes what they
//! decided — buildsets, changes waiting for a tree-stable timer, the last
//! change seen — in one transaction. Timers live in memory; the changes they
//! wait for are stored, so a restart re-arms them. Nightly schedulers keep
//! their next run time in the database and catch up once on a missed run.
//!
//! A reconfiguration ([`Schedulers::apply`]) leaves unchanged schedulers
//! alone, forgets removed ones, re-checks the waiting changes of a changed
//! one against its new filter, and starts new ones: from their stored state
//! when they have one (the first configuration applied after a start), else
//! after the newest change.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::{broadcast, Mutex, Notify};
use tokio::time::Instant;

use crate::changes::Change;
use crate::config::change_filter::FilterSubject;
use crate::config::{Nightly, SchedulerConfig, SchedulerKind};
use crate::db::{AddedBuildset, Db, Error, NewBuildset, SchedulerWrite, StampSpec};
use crate::events::{Bus, Event};
use crate::tasks::{Policy, Supervisor, TaskHandle};

/// How many changes one pass reads at a time.
const PAGE: u64 = 500;

/// Where scheduler properties come from, as Buildbot says.
const PROPERTY_SOURCE: &str = "Scheduler";

/// A timer key: the scheduler and, for `any_branch`, the branch, repository,
/// project and codebase it waits on.
type TimerKey = (String, Option<(Option<String>, String, String, String)>);

/// Why a force request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForceError {
    #[error("no force scheduler is named '{0}'")]
    NoSuchScheduler(String),
    #[error("builder {0} is not one of this scheduler's builders")]
    NotItsBuilder(String),
    #[error("builderNames lists no builder")]
    NoBuilder,
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
    #[error("cannot store the buildset: {0}")]
    Storage(String),
}

/// The configured schedulers and the builders they may name.
struct SchedulerSet {
    schedulers: Arc<Vec<SchedulerConfig>>,
    /// Builder name → (id, collapse_requests).
    builders: BTreeMap<String, (i64, bool)>,
}

impl SchedulerSet {
    fn find(&self, name: &str) -> Option<&SchedulerConfig> {
        self.schedulers.iter().find(|s| s.name == name)
    }

    /// The schedulers that look at changes.
    fn change_driven(&self) -> Vec<SchedulerConfig> {
        self.schedulers
            .iter()
            .filter(|s| is_change_driven(s))
            .cloned()
            .collect()
    }
}

struct Shared {
    db: Db,
    bus: Bus,
    supervisor: Supervisor,
    set: RwLock<Arc<SchedulerSet>>,
    /// The task of each nightly scheduler, by name.
    nightly: std::sync::Mutex<BTreeMap<String, TaskHandle>>,
    /// The last change each change-driven scheduler has seen, as stored, so
    /// a pass over new changes needs no read of the schedulers' state.
    cursors: std::sync::Mutex<BTreeMap<String, i64>>,
    /// Tree-stable timers: when each fires.
    timers: Mutex<BTreeMap<TimerKey, Instant>>,
    timers_changed: Notify,
    /// Asks for a pass over the changes: new schedulers may have missed some.
    rescan: Notify,
    /// Serializes passes over the changes with timer firings, so a change is
    /// never both classified and built by two passes.
    writing: Mutex<()>,
}

/// The running schedulers; clones share them.
#[derive(Clone)]
pub struct Schedulers {
    shared: Arc<Shared>,
}

impl Schedulers {
    /// Schedulers with no scheduler configured yet, and their tasks: one
    /// follows new changes, one fires tree-stable timers.
    /// [`Schedulers::apply`] gives them their configuration.
    pub fn new(db: Db, bus: Bus, supervisor: Supervisor) -> Schedulers {
        let this = Schedulers {
            shared: Arc::new(Shared {
                db,
                bus,
                supervisor: supervisor.clone(),
                set: RwLock::new(Arc::new(SchedulerSet {
                    schedulers: Arc::new(Vec::new()),
                    builders: BTreeMap::new(),
                })),
                nightly: std::sync::Mutex::new(BTreeMap::new()),
                cursors: std::sync::Mutex::new(BTreeMap::new()),
                timers: Mutex::new(BTreeMap::new()),
                timers_changed: Notify::new(),
                rescan: Notify::new(),
                writing: Mutex::new(()),
            }),
        };
        let changes = this.clone();
        supervisor.spawn("schedulers: changes", Policy::Forever, move || {
            let this = changes.clone();
            let events = this.shared.bus.subscribe();
            this.follow_changes(events)
        });
        let timers = this.clone();
        supervisor.spawn("schedulers: timers", Policy::Forever, move || {
            timers.clone().run_timers()
        });
        this
    }

    fn set(&self) -> Arc<SchedulerSet> {
        Arc::clone(
            &self
                .shared
                .set
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    pub fn configs(&self) -> Arc<Vec<SchedulerConfig>> {
        Arc::clone(&self.set().schedulers)
    }

    fn spawn_nightly(&self, scheduler: &SchedulerConfig) {
        if let SchedulerKind::Nightly(nightly) = &scheduler.kind {
            let (this, name, nightly) = (self.clone(), scheduler.name.clone(), nightly.clone());
            let task = self.shared.supervisor.spawn(
                format!("nightly scheduler '{name}'"),
                // Ends by itself if its timetable never matches.
                Policy::UntilDone,
                move || this.clone().run_nightly(name.clone(), nightly.clone()),
            );
            self.lock_nightly().insert(scheduler.name.clone(), task);
        }
    }

    async fn stop_nightly(&self, name: &str) {
        let task = self.lock_nightly().remove(name);
        if let Some(task) = task {
            task.stop().await;
        }
    }

    fn lock_nightly(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, TaskHandle>> {
        self.shared
            .nightly
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The last change each change-driven scheduler has seen, as stored.
    fn cursors(&self) -> BTreeMap<String, i64> {
        self.lock_cursors().clone()
    }

    fn lock_cursors(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, i64>> {
        self.shared
            .cursors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Offers new changes to the schedulers as they are stored, and every
    /// change not seen yet when asked to rescan (after a configuration
    /// brought schedulers, and when this task starts).
    async fn follow_changes(self, mut events: broadcast::Receiver<Event>) {
        self.process_changes_logged().await;
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Ok(Event::ChangeAdded { .. }) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        self.process_changes_logged().await
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                () = self.shared.rescan.notified() => self.process_changes_logged().await,
            }
        }
    }

    async fn process_changes_logged(&self) {
        while let Err(error) = self.process_changes().await {
            tracing::error!("schedulers cannot process new changes: {error}");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Offers every change no scheduler has seen yet to the change-driven
    /// schedulers, a page at a time.
    async fn process_changes(&self) -> Result<(), Error> {
        let _writing = self.shared.writing.lock().await;
        let db = &self.shared.db;
        let set = self.set();
        let schedulers = set.change_driven();
        if schedulers.is_empty() {
            return Ok(());
        }
        let mut cursors = self.cursors();
        loop {
            let from = schedulers
                .iter()
                .filter_map(|s| cursors.get(&s.name).copied())
                .min()
                .unwrap_or(0);
            let page = db.changes_after(from, PAGE).await?;
            let Some(last) = page.last().map(|c| c.changeid) else {
                return Ok(());
            };
            let mut write = SchedulerWrite::default();
            let mut timers = Vec::new();
            for scheduler in &schedulers {
                let cursor = cursors.get(&scheduler.name).copied().unwrap_or(last);
                for change in page.iter().filter(|c| c.changeid > cursor) {
                    self.offer(&set, scheduler, change, &mut write, &mut timers);
                }
                cursors.insert(scheduler.name.clone(), last.max(cursor));
                write.state.push((
                    scheduler.name.clone(),
                    "last_changeid".into(),
                    Value::from(last.max(cursor)),
                ));
            }
            let added = db.scheduler_write(write).await?;
            self.announce(&added);
            *self.lock_cursors() = cursors.clone();
            let mut armed = self.shared.timers.lock().await;
            for (key, delay) in timers {
                armed.insert(key, Instant::now() + delay);
            }
            drop(armed);
            self.shared.timers_changed.notify_one();
        }
    }

    /// What a scheduler does with one change it has not seen.
    fn offer(
        &self,
        set: &SchedulerSet,
        scheduler: &SchedulerConfig,
        change: &Change,
        write: &mut SchedulerWrite,
        timers: &mut Vec<(TimerKey, Duration)>,
    ) {
        let subject = FilterSubject {
            project: &change.project,
            branch: change.branch.as_deref(),
            repository: &change.repository,
            category: change.category.as_deref(),
            codebase: &change.codebase,
        };
        let (filter, delay) = match &scheduler.kind {
            SchedulerKind::SingleBranch {
                filter,
                tree_stable_timer,
            }
            | SchedulerKind::AnyBranch {
                filter,
                tree_stable_timer,
            } => (filter, *tree_stable_timer),
            SchedulerKind::Nightly(nightly) => (&nightly.filter, None),
            SchedulerKind::Force(_) => return,
        };
        let mut decide = |accepted: bool, reason: String| {
            tracing::debug!(scheduler = %scheduler.name, change = change.changeid, "{reason}");
            // Kept for the webhook inspector, which shows only what came
            // by a change hook.
            if change.correlation.is_some() {
                write
                    .decisions
                    .push((change.changeid, scheduler.name.clone(), accepted, reason));
            }
        };
        if let Some(refusal) = filter.refusal(&subject) {
            decide(false, format!("change filtered out: {refusal}"));
            return;
        }
        let waits = delay.is_some() || matches!(scheduler.kind, SchedulerKind::Nightly(_));
        match delay {
            Some(delay) => decide(
                true,
                format!(
                    "change accepted; waiting for the tree-stable timer ({}s)",
                    delay.as_secs()
                ),
            ),
            None if waits => decide(
                true,
                "change accepted; waiting for the next nightly run".to_owned(),
            ),
            None => decide(
                true,
                format!(
                    "change accepted; building {}",
                    scheduler.builder_names.join(", ")
                ),
            ),
        }
        if waits {
            write
                .classify
                .push((scheduler.name.clone(), change.changeid));
            if let Some(delay) = delay {
                let key = timer_key(
                    scheduler,
                    change.branch.clone(),
                    change.repository.clone(),
                    change.project.clone(),
                    change.codebase.clone(),
                );
                timers.push((key, delay));
            }
        } else {
            tracing::info!(
                correlation = %change.correlation.as_deref().unwrap_or("-"),
                "scheduler {} requests builds of change {} on {}",
                scheduler.name,
                change.changeid,
                scheduler.builder_names.join(", ")
            );
            write.buildsets.push(buildset_for_changes(
                set,
                scheduler,
                std::slice::from_ref(change),
            ));
        }
    }

    /// Buildbot's rebuild of build `buildid`: its buildset's source stamps
    /// and properties again, for its builder; `None` when there is no such
    /// build.
    pub async fn rebuild(
        &self,
        buildid: i64,
        owner: &str,
        reason: &str,
    ) -> Result<Option<AddedBuildset>, ForceError> {
        let reason = format!("The web-page 'rebuild' button was pressed by '{owner}': {reason}");
        let added = self
            .shared
            .db
            .rebuild(buildid, reason)
            .await
            .map_err(|e| ForceError::Storage(e.to_string()))?;
        if let Some(added) = &added {
            self.announce(std::slice::from_ref(added));
        }
        Ok(added)
    }

    /// Publishes the build requests of newly stored buildsets, and the
    /// buildsets that collapsing their older requests completed.
    fn announce(&self, added: &[AddedBuildset]) {
        for buildset in added {
            for (&builderid, &brid) in &buildset.requests {
                self.shared.bus.send(Event::BuildRequestAdded {
                    brid,
                    bsid: buildset.bsid,
                    builderid,
                });
            }
            for &(bsid, results) in &buildset.completed {
                self.shared.bus.send(Event::BuildsetComplete {
                    bsid,
                    results,
                    complete_at: buildset.submitted_at,
                });
            }
        }
    }

    /// Fires tree-stable timers as they come due.
    async fn run_timers(self) {
        loop {
            let next = self.shared.timers.lock().await.values().min().copied();
            let woken = self.shared.timers_changed.notified();
            match next {
                Some(when) if when <= Instant::now() => {
                    if let Err(error) = self.fire_due_timers().await {
                        tracing::error!("schedulers cannot fire a tree-stable timer: {error}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                Some(when) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(when) => {}
                        _ = woken => {}
                    }
                }
                None => woken.await,
            }
        }
    }

    /// Builds the waiting changes of every timer that is due.
    async fn fire_due_timers(&self) -> Result<(), Error> {
        let _writing = self.shared.writing.lock().await;
        let now = Instant::now();
        let due: Vec<TimerKey> = self
            .shared
            .timers
            .lock()
            .await
            .iter()
            .filter(|(_, when)| **when <= now)
            .map(|(key, _)| key.clone())
            .collect();
        let set = self.set();
        for key in due {
            let Some(scheduler) = set.find(&key.0) else {
                self.shared.timers.lock().await.remove(&key);
                continue;
            };
            let waiting = self.shared.db.classified_changes(&scheduler.name).await?;
            let ids: Vec<i64> = waiting
                .into_iter()
                .filter(|change| {
                    timer_key(
                        scheduler,
                        change.branch.clone(),
                        change.repository.clone(),
                        change.project.clone(),
                        change.codebase.clone(),
                    ) == key
                })
                .map(|change| change.changeid)
                .collect();
            let mut write = SchedulerWrite::default();
            if !ids.is_empty() {
                let changes = self.shared.db.changes_by_id(ids.clone()).await?;
                write
                    .buildsets
                    .push(buildset_for_changes(&set, scheduler, &changes));
                write.unclassify = ids.iter().map(|&id| (scheduler.name.clone(), id)).collect();
            }
            let added = self.shared.db.scheduler_write(write).await?;
            self.announce(&added);
            self.shared.timers.lock().await.remove(&key);
        }
        Ok(())
    }

    /// Runs a nightly scheduler: sleeps until its next time, builds, and
    /// records when it ran and when it runs next.
    async fn run_nightly(self, name: String, nightly: Nightly) {
        loop {
            let next = match self.next_nightly(&name, &nightly).await {
                Ok(Some(next)) => next,
                Ok(None) => {
                    tracing::warn!("nightly scheduler {name}: its timetable never matches");
                    return;
                }
                Err(error) => {
                    tracing::error!("nightly scheduler {name}: {error}");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
            };
            let wait = next.saturating_sub(crate::clock::now()).max(0) as u64;
            tokio::time::sleep(Duration::from_secs(wait)).await;
            if let Err(error) = self.fire_nightly(&name, &nightly, next).await {
                tracing::error!("nightly scheduler {name}: cannot start its builds: {error}");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }

    /// The stored next run (which may be in the past after downtime: it runs
    /// once at start, as Buildbot's timed schedulers do), or the timetable's
    /// next time, stored.
    async fn next_nightly(&self, name: &str, nightly: &Nightly) -> Result<Option<i64>, Error> {
        let state = self.shared.db.scheduler_state(name).await?;
        if let Some(next) = state.get("next_build").and_then(Value::as_i64) {
            return Ok(Some(next));
        }
        let Some(next) = nightly.timetable.next_after(crate::clock::now()) else {
            return Ok(None);
        };
        let mut write = SchedulerWrite::default();
        write
            .state
            .push((name.to_owned(), "next_build".into(), Value::from(next)));
        self.shared.db.scheduler_write(write).await?;
        Ok(Some(next))
    }

    async fn fire_nightly(&self, name: &str, nightly: &Nightly, due: i64) -> Result<(), Error> {
        let _writing = self.shared.writing.lock().await;
        let set = self.set();
        let Some(scheduler) = set.find(name) else {
            return Ok(());
        };
        let mut write = SchedulerWrite::default();
        let waiting = self.shared.db.classified_changes(&scheduler.name).await?;
        if nightly.only_if_changed {
            if !waiting.is_empty() {
                let ids: Vec<i64> = waiting.iter().map(|c| c.changeid).collect();
                let changes = self.shared.db.changes_by_id(ids.clone()).await?;
                write
                    .buildsets
                    .push(buildset_for_changes(&set, scheduler, &changes));
                write.unclassify = ids.iter().map(|&id| (scheduler.name.clone(), id)).collect();
            }
        } else {
            let stamp = StampSpec::New {
                branch: nightly.branch.clone(),
                revision: None,
                repository: nightly.repository.clone(),
                project: nightly.project.clone(),
                codebase: nightly.codebase.clone(),
            };
            let reason = format!(
                "The Nightly scheduler named '{}' triggered this build",
                scheduler.name
            );
            write.buildsets.push(new_buildset(
                &set,
                scheduler,
                reason,
                Map::new(),
                vec![stamp],
                None,
            ));
        }
        let next = nightly.timetable.next_after(due.max(crate::clock::now()));
        write.state.push((
            scheduler.name.clone(),
            "last_build".into(),
            Value::from(due),
        ));
        write.state.push((
            scheduler.name.clone(),
            "next_build".into(),
            next.map_or(Value::Null, Value::from),
        ));
        let added = self.shared.db.scheduler_write(write).await?;
        self.announce(&added);
        Ok(())
    }

    /// Makes `schedulers` the configured schedulers (see the module comment).
    /// `builders` maps each builder's name to its id and `collapse_requests`.
    pub async fn apply(
        &self,
        schedulers: Vec<SchedulerConfig>,
        builders: BTreeMap<String, (i64, bool)>,
    ) -> Result<(), Error> {
        let _writing = self.shared.writing.lock().await;
        let db = &self.shared.db;
        let old = self.set();
        let new = Arc::new(SchedulerSet {
            schedulers: Arc::new(schedulers),
            builders,
        });
        // Worked on aside and installed only once the state is stored.
        let mut timers = self.shared.timers.lock().await.clone();
        let mut cursors = self.cursors();
        let mut write = SchedulerWrite::default();
        let mut restart = Vec::new();
        let last = db.last_changeid().await?;
        for scheduler in old.schedulers.iter() {
            match new.find(&scheduler.name) {
                Some(same) if same.source == scheduler.source => {}
                Some(replacement) => {
                    restart.push(replacement.name.clone());
                    if matches!(replacement.kind, SchedulerKind::Nightly(_)) {
                        // The next run comes from the new timetable.
                        write.state.push((
                            replacement.name.clone(),
                            "next_build".into(),
                            Value::Null,
                        ));
                    }
                    self.recheck_waiting(&new, scheduler, replacement, &mut timers, &mut write)
                        .await?;
                }
                None => {
                    restart.push(scheduler.name.clone());
                    timers.retain(|key, _| key.0 != scheduler.name);
                    cursors.remove(&scheduler.name);
                    write.forget.push(scheduler.name.clone());
                }
            }
        }
        for scheduler in new.schedulers.iter() {
            let added = old.find(&scheduler.name).is_none();
            if added {
                restart.push(scheduler.name.clone());
                // Changes it waited for before a restart wait again, anew.
                if let Some(delay) = tree_stable_timer(scheduler) {
                    for change in db.classified_changes(&scheduler.name).await? {
                        let key = timer_key(
                            scheduler,
                            change.branch,
                            change.repository,
                            change.project,
                            change.codebase,
                        );
                        timers.insert(key, Instant::now() + delay);
                    }
                }
            }
            if !is_change_driven(scheduler) {
                cursors.remove(&scheduler.name);
            } else if !cursors.contains_key(&scheduler.name) {
                // It goes on from the last change it saw, stored; one that
                // never saw any starts after the newest.
                let stored = db.scheduler_state(&scheduler.name).await?;
                let cursor = match stored.get("last_changeid").and_then(Value::as_i64) {
                    Some(cursor) => cursor,
                    None => {
                        write.state.push((
                            scheduler.name.clone(),
                            "last_changeid".into(),
                            Value::from(last),
                        ));
                        last
                    }
                };
                cursors.insert(scheduler.name.clone(), cursor);
            }
        }
        let stored = db.scheduler_write(write).await?;
        self.announce(&stored);
        *self
            .shared
            .set
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::clone(&new);
        *self.shared.timers.lock().await = timers;
        *self.lock_cursors() = cursors;
        for name in restart {
            self.stop_nightly(&name).await;
            if let Some(scheduler) = new.find(&name) {
                self.spawn_nightly(scheduler);
            }
        }
        self.shared.timers_changed.notify_one();
        self.shared.rescan.notify_one();
        Ok(())
    }

    /// Keeps the waiting changes of a changed scheduler that its new filter
    /// still accepts, with their timers; builds them now if it has no timer
    /// any more; forgets them if it no longer waits for changes at all.
    async fn recheck_waiting(
        &self,
        set: &SchedulerSet,
        old: &SchedulerConfig,
        new: &SchedulerConfig,
        timers: &mut BTreeMap<TimerKey, Instant>,
        write: &mut SchedulerWrite,
    ) -> Result<(), Error> {
        let previous: BTreeMap<TimerKey, Instant> = timers
            .iter()
            .filter(|(key, _)| key.0 == old.name)
            .map(|(key, when)| (key.clone(), *when))
            .collect();
        timers.retain(|key, _| key.0 != old.name);
        let waiting = self.shared.db.classified_changes(&old.name).await?;
        if waiting.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = waiting.iter().map(|c| c.changeid).collect();
        let changes = self.shared.db.changes_by_id(ids.clone()).await?;
        let filter = match &new.kind {
            SchedulerKind::SingleBranch { filter, .. }
            | SchedulerKind::AnyBranch { filter, .. } => Some(filter),
            SchedulerKind::Nightly(nightly) if nightly.only_if_changed => Some(&nightly.filter),
            _ => None,
        };
        let mut kept = Vec::new();
        for change in changes {
            let accepted = filter.is_some_and(|filter| {
                filter.matches(&FilterSubject {
                    project: &change.project,
                    branch: change.branch.as_deref(),
                    repository: &change.repository,
                    category: change.category.as_deref(),
                    codebase: &change.codebase,
                })
            });
            if accepted {
                kept.push(change);
            } else {
                write.unclassify.push((old.name.clone(), change.changeid));
            }
        }
        let delay = tree_stable_timer(new);
        let nightly = matches!(new.kind, SchedulerKind::Nightly(_));
        if delay.is_none() && !nightly && !kept.is_empty() {
            for change in &kept {
                write.unclassify.push((old.name.clone(), change.changeid));
            }
            write.buildsets.push(buildset_for_changes(set, new, &kept));
            return Ok(());
        }
        if let Some(delay) = delay {
            for change in &kept {
                let key = timer_key(
                    new,
                    change.branch.clone(),
                    change.repository.clone(),
                    change.project.clone(),
                    change.codebase.clone(),
                );
                let when = previous
                    .get(&key)
                    .copied()
                    .unwrap_or_else(|| Instant::now() + delay);
                timers.insert(key, when);
            }
        }
        Ok(())
    }

    /// Submits a forced build through the force scheduler `name`, for one of
    /// its builders or all of them. Returns the buildset id and the build
    /// request id of each builder.
    pub async fn force(
        &self,
        name: &str,
        builders: Option<&[String]>,
        submitted: &Map<String, Value>,
    ) -> Result<AddedBuildset, ForceError> {
        let set = self.set();
        let scheduler = set
            .schedulers
            .iter()
            .find(|s| s.name == name && matches!(s.kind, SchedulerKind::Force(_)))
            .ok_or_else(|| ForceError::NoSuchScheduler(name.to_owned()))?;
        let SchedulerKind::Force(form) = &scheduler.kind else {
            return Err(ForceError::NoSuchScheduler(name.to_owned()));
        };
        let only_builders = match builders {
            None => None,
            Some([]) => return Err(ForceError::NoBuilder),
            Some(wanted) => {
                let ids = wanted
                    .iter()
                    .map(|wanted| {
                        scheduler
                            .builder_names
                            .iter()
                            .filter_map(|n| set.builders.get(n).map(|b| (n, b.0)))
                            .find(|(n, id)| *n == wanted || id.to_string() == *wanted)
                            .map(|(_, id)| id)
                            .ok_or_else(|| ForceError::NotItsBuilder(wanted.to_owned()))
                    })
                    .collect::<Result<Vec<i64>, _>>()?;
                Some(ids)
            }
        };
        let forced = form.validate(submitted).map_err(ForceError::Invalid)?;
        let reason = format!(
            "A build was forced by '{}': {}",
            forced.owner, forced.reason
        );
        let stamp = StampSpec::New {
            branch: forced.branch,
            revision: forced.revision,
            repository: forced.repository,
            project: forced.project,
            codebase: String::new(),
        };
        let buildset = new_buildset(
            &set,
            scheduler,
            reason,
            forced.properties,
            vec![stamp],
            only_builders.as_deref(),
        );
        let mut write = SchedulerWrite::default();
        write.buildsets.push(buildset);
        let added = self
            .shared
            .db
            .scheduler_write(write)
            .await
            .map_err(|e| ForceError::Storage(e.to_string()))?;
        self.announce(&added);
        added
            .into_iter()
            .next()
            .ok_or_else(|| ForceError::Storage("no buildset was stored".into()))
    }
}

/// A buildset of changes: for each codebase, the newest change's source
/// stamp; the changes' properties and the scheduler's.
fn buildset_for_changes(
    set: &SchedulerSet,
    scheduler: &SchedulerConfig,
    changes: &[Change],
) -> NewBuildset {
    let mut stamps: BTreeMap<&str, &Change> = BTreeMap::new();
    let mut properties = Map::new();
    for change in changes {
        let newest = stamps.entry(&change.codebase).or_insert(change);
        if change.changeid > newest.changeid {
            *newest = change;
        }
        properties.extend(change.properties.clone());
    }
    let sourcestamps = stamps
        .values()
        .map(|change| StampSpec::Existing(change.sourcestamp.ssid))
        .collect();
    let class = match scheduler.kind {
        SchedulerKind::SingleBranch { .. } => "SingleBranchScheduler",
        SchedulerKind::AnyBranch { .. } => "AnyBranchScheduler",
        SchedulerKind::Nightly(_) => "Nightly",
        SchedulerKind::Force(_) => "ForceScheduler",
    };
    let reason = format!(
        "The {class} scheduler named '{}' triggered this build",
        scheduler.name
    );
    new_buildset(set, scheduler, reason, properties, sourcestamps, None)
}

fn new_buildset(
    set: &SchedulerSet,
    scheduler: &SchedulerConfig,
    reason: String,
    mut properties: Map<String, Value>,
    sourcestamps: Vec<StampSpec>,
    only_builders: Option<&[i64]>,
) -> NewBuildset {
    for (name, value) in &scheduler.properties {
        properties.insert(name.clone(), pair(value.clone(), PROPERTY_SOURCE));
    }
    properties.insert(
        "scheduler".into(),
        pair(Value::from(scheduler.name.clone()), PROPERTY_SOURCE),
    );
    let builders = scheduler
        .builder_names
        .iter()
        .filter_map(|name| set.builders.get(name).copied())
        .filter(|(id, _)| only_builders.is_none_or(|only| only.contains(id)))
        .collect();
    NewBuildset {
        reason,
        scheduler: scheduler.name.clone(),
        external_idstring: None,
        properties,
        sourcestamps,
        builders,
        priority: 0,
    }
}

fn is_change_driven(scheduler: &SchedulerConfig) -> bool {
    match &scheduler.kind {
        SchedulerKind::SingleBranch { .. } | SchedulerKind::AnyBranch { .. } => true,
        SchedulerKind::Nightly(nightly) => nightly.only_if_changed,
        SchedulerKind::Force(_) => false,
    }
}

fn tree_stable_timer(scheduler: &SchedulerConfig) -> Option<Duration> {
    match &scheduler.kind {
        SchedulerKind::SingleBranch {
            tree_stable_timer, ..
        }
        | SchedulerKind::AnyBranch {
            tree_stable_timer, ..
        } => *tree_stable_timer,
        _ => None,
    }
}

/// `single_branch` has one timer; `any_branch` one per branch, repository,
/// project and codebase, as Buildbot's schedulers have.
fn timer_key(
    scheduler: &SchedulerConfig,
    branch: Option<String>,
    repository: String,
    project: String,
    codebase: String,
) -> TimerKey {
    match scheduler.kind {
        SchedulerKind::AnyBranch { .. } => (
            scheduler.name.clone(),
            Some((branch, repository, project, codebase)),
        ),
        _ => (scheduler.name.clone(), None),
    }
}

fn pair(value: Value, source: &str) -> Value {
    Value::Array(vec![value, Value::from(source)])
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::changes::NewChange;
    use crate::config::Config;
    use serde_json::json;

    /// A database with builder `b`, and schedulers from `toml`.
    /// Schedulers with their first configuration, as a master starts them.
    pub(super) async fn start(
        db: Db,
        bus: Bus,
        schedulers: Vec<SchedulerConfig>,
        builders: BTreeMap<String, (i64, bool)>,
    ) -> Schedulers {
        let started = Schedulers::new(db, bus, Supervisor::new());
        started.apply(schedulers, builders).await.unwrap();
        started
    }

    async fn setup(
        toml: &str,
    ) -> (
        tempfile::TempDir,
        Db,
        Bus,
        Vec<SchedulerConfig>,
        BTreeMap<String, (i64, bool)>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("state.sqlite")).unwrap();
        let bus = Bus::new();
        db.announce_changes_to(bus.clone());
        let text = format!(
            "[[workers]]\ntype = \"local\"\nname = \"w\"\n\
             [[builders]]\nname = \"b\"\nworkernames = [\"w\"]\n{toml}"
        );
        let config = Config::parse(Path::new("m.toml"), &text).unwrap();
        let ids = db
            .sync_builders(vec![("b".into(), None, vec![])])
            .await
            .unwrap();
        let builders = [("b".to_owned(), (ids["b"], false))].into();
        (dir, db, bus, config.schedulers, builders)
    }

    async fn add_change(db: &Db, branch: &str, revision: &str) {
        let change: NewChange =
            serde_json::from_value(json!({"branch": branch, "revision": revision})).unwrap();
        db.add_changes(vec![change]).await.unwrap();
    }

    async fn buildsets(db: &Db) -> Vec<Value> {
        crate::db::rest::all(db, &crate::db::BUILDSETS).await
    }

    /// Waits (up to 10 s) for `count` buildsets.
    async fn wait_for_buildsets(db: &Db, count: usize) -> Vec<Value> {
        for _ in 0..500 {
            let found = buildsets(db).await;
            if found.len() >= count {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "expected {count} buildsets, found {:?}",
            buildsets(db).await
        );
    }

    #[tokio::test]
    async fn any_branch_keeps_one_timer_per_branch_and_builds_the_newest_change() {
        let (_dir, db, bus, schedulers, builders) = setup(
            "[[schedulers]]\ntype = \"any_branch\"\nname = \"all\"\nbuilder_names = [\"b\"]\n\
             tree_stable_timer = 1\nchange_filter = { branch_re = \"(main|dev)$\" }\n",
        )
        .await;
        start(db.clone(), bus, schedulers, builders).await;
        add_change(&db, "main", "m1").await;
        add_change(&db, "dev", "d1").await;
        add_change(&db, "main", "m2").await;
        add_change(&db, "feature", "f1").await;
        let found = wait_for_buildsets(&db, 2).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(buildsets(&db).await.len(), 2, "{found:?}");
        let mut revisions: Vec<&str> = found
            .iter()
            .map(|bs| bs["sourcestamps"][0]["revision"].as_str().unwrap())
            .collect();
        revisions.sort();
        assert_eq!(revisions, ["d1", "m2"]);
        assert_eq!(
            found[0]["reason"],
            "The AnyBranchScheduler scheduler named 'all' triggered this build"
        );
        assert!(db.classified_changes("all").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_new_scheduler_does_not_build_changes_older_than_itself() {
        let (_dir, db, bus, schedulers, builders) = setup(
            "[[schedulers]]\ntype = \"single_branch\"\nname = \"main\"\nbuilder_names = [\"b\"]\n\
             change_filter = { branch = \"main\" }\n",
        )
        .await;
        add_change(&db, "main", "old").await;
        start(db.clone(), bus, schedulers, builders).await;
        add_change(&db, "main", "new").await;
        let found = wait_for_buildsets(&db, 1).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            crate::db::rest::all(&db, &crate::db::BUILDSETS).await.len(),
            1
        );
        assert_eq!(found[0]["sourcestamps"][0]["revision"], "new");
        let state = db.scheduler_state("main").await.unwrap();
        assert_eq!(state["last_changeid"], 2);
    }

    #[tokio::test]
    async fn a_nightly_run_missed_while_the_master_was_down_runs_once_at_start() {
        let (_dir, db, bus, schedulers, builders) = setup(
            "[[schedulers]]\ntype = \"nightly\"\nname = \"n\"\nbuilder_names = [\"b\"]\n\
             hour = 3\nbranch = \"main\"\nrepository = \"repo\"\n",
        )
        .await;
        let missed = crate::clock::now() - 3600;
        let write = SchedulerWrite {
            state: vec![("n".into(), "next_build".into(), Value::from(missed))],
            ..SchedulerWrite::default()
        };
        db.scheduler_write(write).await.unwrap();
        start(db.clone(), bus, schedulers, builders).await;
        let found = wait_for_buildsets(&db, 1).await;
        assert_eq!(
            found[0]["reason"],
            "The Nightly scheduler named 'n' triggered this build"
        );
        assert_eq!(found[0]["sourcestamps"][0]["branch"], "main");
        assert_eq!(found[0]["sourcestamps"][0]["repository"], "repo");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let state = db.scheduler_state("n").await.unwrap();
        assert_eq!(state["last_build"], missed);
        assert!(state["next_build"].as_i64().unwrap() > crate::clock::now());
        assert_eq!(
            crate::db::rest::all(&db, &crate::db::BUILDSETS).await.len(),
            1,
            "one catch-up run, not one per missed day"
        );
    }

    #[tokio::test]
    async fn a_nightly_run_with_only_if_changed_builds_only_after_changes() {
        let (_dir, db, bus, schedulers, builders) = setup(
            "[[schedulers]]\ntype = \"nightly\"\nname = \"n\"\nbuilder_names = [\"b\"]\n\
             only_if_changed = true\nchange_filter = { branch = \"main\" }\n",
        )
        .await;
        let write = SchedulerWrite {
            state: vec![(
                "n".into(),
                "next_build".into(),
                Value::from(crate::clock::now() - 10),
            )],
            ..SchedulerWrite::default()
        };
        db.scheduler_write(write).await.unwrap();
        let schedulers = start(db.clone(), bus, schedulers, builders).await;
        // The catch-up run finds no change and builds nothing.
        for _ in 0..100 {
            let state = db.scheduler_state("n").await.unwrap();
            if state.contains_key("last_build") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(crate::db::rest::all(&db, &crate::db::BUILDSETS)
            .await
            .is_empty());
        add_change(&db, "main", "m1").await;
        add_change(&db, "dev", "d1").await;
        for _ in 0..100 {
            if !db.classified_changes("n").await.unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let waiting: Vec<i64> = db
            .classified_changes("n")
            .await
            .unwrap()
            .iter()
            .map(|c| c.changeid)
            .collect();
        assert_eq!(waiting, [1], "only the change that passes the filter waits");
        let nightly = match &schedulers.configs()[0].kind {
            SchedulerKind::Nightly(nightly) => nightly.clone(),
            _ => unreachable!(),
        };
        schedulers
            .fire_nightly("n", &nightly, crate::clock::now())
            .await
            .unwrap();
        let found = crate::db::rest::all(&db, &crate::db::BUILDSETS).await;
        assert_eq!(found.len(), 1);
        assert_eq!(found[0]["sourcestamps"][0]["revision"], "m1");
        assert!(db.classified_changes("n").await.unwrap().is_empty());
    }
}

#[cfg(test)]
mod reconfiguration_tests {
    use std::path::Path;

    use super::tests::start;
    use super::*;
    use crate::changes::NewChange;
    use crate::config::Config;
    use serde_json::json;

    fn schedulers_of(toml: &str) -> Vec<SchedulerConfig> {
        let text = format!(
            "[[workers]]\ntype = \"local\"\nname = \"w\"\n\
             [[builders]]\nname = \"b\"\nworkernames = [\"w\"]\n{toml}"
        );
        Config::parse(Path::new("m.toml"), &text)
            .unwrap()
            .schedulers
    }

    fn main_scheduler(filter: &str, timer: &str) -> String {
        format!(
            "[[schedulers]]\ntype = \"single_branch\"\nname = \"main\"\nbuilder_names = [\"b\"]\n\
             change_filter = {filter}\n{timer}\n"
        )
    }

    async fn waiting(db: &Db) -> Vec<String> {
        let ids: Vec<i64> = db
            .classified_changes("main")
            .await
            .unwrap()
            .iter()
            .map(|c| c.changeid)
            .collect();
        let changes = db.changes_by_id(ids.clone()).await.unwrap();
        changes.iter().filter_map(|c| c.branch.clone()).collect()
    }

    #[tokio::test]
    async fn a_changed_filter_keeps_only_the_waiting_changes_it_still_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("state.sqlite")).unwrap();
        let bus = Bus::new();
        db.announce_changes_to(bus.clone());
        let ids = db
            .sync_builders(vec![("b".into(), None, vec![])])
            .await
            .unwrap();
        let builders: BTreeMap<String, (i64, bool)> = [("b".to_owned(), (ids["b"], false))].into();
        let wide = main_scheduler(
            "{ branch = [\"main\", \"dev\"] }",
            "tree_stable_timer = 600",
        );
        let schedulers = start(db.clone(), bus, schedulers_of(&wide), builders.clone()).await;
        for branch in ["main", "dev"] {
            let change: NewChange = serde_json::from_value(json!({"branch": branch})).unwrap();
            db.add_changes(vec![change]).await.unwrap();
        }
        for _ in 0..250 {
            if waiting(&db).await.len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(waiting(&db).await, ["main", "dev"]);

        // Unchanged: nothing moves.
        schedulers
            .apply(schedulers_of(&wide), builders.clone())
            .await
            .unwrap();
        assert_eq!(waiting(&db).await, ["main", "dev"]);

        // A narrower filter drops what it no longer accepts; the timer stays.
        let narrow = main_scheduler("{ branch = \"main\" }", "tree_stable_timer = 600");
        schedulers
            .apply(schedulers_of(&narrow), builders.clone())
            .await
            .unwrap();
        assert_eq!(waiting(&db).await, ["main"]);
        assert_eq!(schedulers.shared.timers.lock().await.len(), 1);
        assert!(crate::db::rest::all(&db, &crate::db::BUILDSETS)
            .await
            .is_empty());

        // Without a timer there is nothing to wait for: it builds now.
        let immediate = main_scheduler("{ branch = \"main\" }", "");
        schedulers
            .apply(schedulers_of(&immediate), builders.clone())
            .await
            .unwrap();
        assert!(waiting(&db).await.is_empty());
        assert!(schedulers.shared.timers.lock().await.is_empty());
        let buildsets = crate::db::rest::all(&db, &crate::db::BUILDSETS).await;
        assert_eq!(buildsets.len(), 1);

        // Turned into a force scheduler, it stops looking at changes, and a
        // pass over new ones neither waits for it nor builds for it.
        let force = "[[schedulers]]\ntype = \"force\"\nname = \"main\"\nbuilder_names = [\"b\"]\n";
        schedulers
            .apply(schedulers_of(force), builders.clone())
            .await
            .unwrap();
        let change: NewChange = serde_json::from_value(json!({"branch": "main"})).unwrap();
        db.add_changes(vec![change]).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), schedulers.process_changes())
            .await
            .expect("the pass ends")
            .unwrap();
        assert_eq!(
            crate::db::rest::all(&db, &crate::db::BUILDSETS).await.len(),
            1
        );

        // Removed: its state is forgotten, so it would start afresh.
        schedulers.apply(Vec::new(), builders).await.unwrap();
        assert!(db.scheduler_state("main").await.unwrap().is_empty());
    }
}
