//! The events of a build on the bus, in order: a two-step build, and a
//! stopped one.

use std::path::Path;
use std::time::Duration;

use serde_json::Map;
use tokio::sync::broadcast;

use super::*;
use crate::config::Config;
use crate::db::{NewBuildset, SchedulerWrite, StampSpec};
use crate::workers::{LocalWorker, WorkerSlot};

/// A botmaster with one local worker and builder `b` with `steps`, and a
/// subscription to the bus taken before anything happens.
async fn botmaster(
    dir: &Path,
    steps: &str,
) -> (Db, Bus, Botmaster, i64, broadcast::Receiver<Event>) {
    let text = format!(
        "[[workers]]\ntype = 'local'\nname = 'w'\n\
         [[builders]]\nname = 'b'\nworkernames = ['w']\n{steps}"
    );
    let config = Config::parse(&dir.join("master.toml"), &text).unwrap();
    let db = Db::open(&dir.join("state.sqlite")).unwrap();
    let bus = Bus::new();
    let events = bus.subscribe();
    let workerid = db
        .sync_workers(vec![("w".into(), serde_json::Value::Object(Map::new()))])
        .await
        .unwrap()["w"];
    let builderid = db
        .sync_builders(vec![("b".into(), None, vec![])])
        .await
        .unwrap()["b"];
    let worker = LocalWorker::new("w".into(), dir.join("workers/w"));
    let pool = WorkerPool::new([Arc::new(WorkerSlot::new(
        workerid,
        Arc::new(worker),
        None,
        Map::new(),
    ))]);
    let botmaster = Botmaster::new(db.clone(), bus.clone(), Supervisor::new(), dir);
    botmaster.apply(
        vec![(builderid, config.builders[0].clone())],
        pool,
        config.logs,
    );
    (db, bus, botmaster, builderid, events)
}

/// Asks for one build of `builder`, as a scheduler would.
async fn request(db: &Db, bus: &Bus, builder: i64) {
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
    bus.send(Event::BuildRequestAdded {
        brid: added.requests[&builder],
        bsid: added.bsid,
        builderid: builder,
    });
}

/// The events up to the buildset's completion, each as a line; `on` runs
/// on each event first (to stop the build at the right moment).
async fn sequence(
    events: &mut broadcast::Receiver<Event>,
    mut on: impl FnMut(&Event),
) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(20), events.recv())
            .await
            .expect("the build goes on")
            .expect("no event missed");
        on(&event);
        let name = |results: Option<Results>| results.map_or("-", Results::name);
        let line = match &event {
            Event::BuildRequestAdded { .. } => "request added".to_string(),
            Event::BuildStarted(build) => format!("build {} started", build.number),
            Event::BuildStateChanged(build) => format!("state: {}", build.state_string),
            Event::StepStarted { step, .. } => format!("step {} started", step.name),
            Event::StepFinished { step, .. } => {
                format!("step {} finished: {}", step.name, name(step.results))
            }
            Event::BuildFinished(build) => format!(
                "build {} finished: {} ({})",
                build.number,
                name(build.results),
                build.state_string
            ),
            Event::BuildsetComplete { results, .. } => {
                lines.push(format!("buildset complete: {}", results.name()));
                return lines;
            }
            Event::WorkerConnected(worker) => format!("worker {} connected", worker.name),
            other => format!("{other:?}"),
        };
        lines.push(line);
    }
}

#[tokio::test]
async fn a_two_step_build_announces_each_step_and_its_buildset() {
    let dir = tempfile::tempdir().unwrap();
    let steps = "[[builders.steps]]\ntype = 'shell'\nname = 'compile'\ncommand = 'true'\n\
                 [[builders.steps]]\ntype = 'shell'\nname = 'test'\ncommand = 'exit 1'\n";
    let (db, bus, _botmaster, builder, mut events) = botmaster(dir.path(), steps).await;
    request(&db, &bus, builder).await;
    let lines = sequence(&mut events, |_| {}).await;
    assert_eq!(
        lines,
        [
            "worker w connected",
            "request added",
            "build 1 started",
            "state: 'true'",
            "step compile started",
            "step compile finished: success",
            "state: 'exit 1'",
            "step test started",
            "step test finished: failure",
            "build 1 finished: failure (failed test)",
            "buildset complete: failure",
        ]
    );
}

#[tokio::test]
async fn a_stopped_build_says_why_and_ends_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let steps = "[[builders.steps]]\ntype = 'shell'\nname = 'wait'\ncommand = 'sleep 30'\n\
                 [[builders.steps]]\ntype = 'shell'\nname = 'after'\ncommand = 'true'\n";
    let (db, bus, botmaster, builder, mut events) = botmaster(dir.path(), steps).await;
    request(&db, &bus, builder).await;
    let lines = sequence(&mut events, |event| {
        if let Event::StepStarted { build, .. } = event {
            // The running builds, of the builder and of the master.
            let running = botmaster.running_builds(Some(builder));
            assert_eq!(running.len(), 1);
            assert_eq!(running[0].buildid, build.buildid);
            assert_eq!(botmaster.running_builds(None).len(), 1);
            assert!(botmaster.running_builds(Some(builder + 1)).is_empty());
            botmaster.stop_build(build.buildid, "superseded").unwrap();
        }
    })
    .await;
    assert_eq!(
        lines,
        [
            "worker w connected",
            "request added",
            "build 1 started",
            "state: 'sleep 30'",
            "step wait started",
            "step wait finished: cancelled",
            "state: stopped: superseded",
            "build 1 finished: cancelled (cancelled (stopped: superseded))",
            "buildset complete: cancelled",
        ]
    );
    let stored = db.build_info(1).await.unwrap().unwrap();
    assert_eq!(stored.state_string, "cancelled (stopped: superseded)");
    assert!(botmaster.running_builds(None).is_empty());
}
