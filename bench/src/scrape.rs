//! `buildmaster-bench metrics`: the time of a `/metrics` scrape on a master
//! with BUILDERS builders (default 1,000), each of which has run a build, so
//! that every per-builder series (builds by result, the duration histogram,
//! the queue depth) is there.
//!
//! One change hook makes a request for every builder (an `any_branch`
//! scheduler on all of them); eight local workers build them. Then the
//! scrape is timed ROUNDS times (default 100).

use std::time::{Duration, Instant};

use crate::{percentiles, start_with_config};

pub(crate) fn config(builders: usize) -> String {
    let mut text = String::from(
        "[master]\nreload_on_change = false\n[www]\nport = \"127.0.0.1:0\"\n\
         [www.change_hook_dialects]\nbase = true\n",
    );
    let workers: Vec<String> = (1..=8).map(|n| format!("\"w{n}\"")).collect();
    for n in 1..=8 {
        text.push_str(&format!("[[workers]]\ntype = \"local\"\nname = \"w{n}\"\n"));
    }
    let mut names = Vec::new();
    for builder in 1..=builders {
        names.push(format!("\"b{builder}\""));
        text.push_str(&format!(
            "[[builders]]\nname = \"b{builder}\"\nworkernames = [{}]\n\
             [[builders.steps]]\ntype = \"shell\"\ncommand = [\"true\"]\n",
            workers.join(", ")
        ));
    }
    text.push_str(&format!(
        "[[schedulers]]\ntype = \"any_branch\"\nname = \"all\"\nbuilder_names = [{}]\n",
        names.join(", ")
    ));
    text
}

pub async fn run(builders: usize, rounds: usize) {
    let master = start_with_config(&config(builders));
    let client = reqwest::Client::new();
    let base = format!("http://{}", master.addr);
    let hook = client
        .post(format!("{base}/change_hook/base"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("branch=main&revision=1&repository=r&author=Ada&comments=c")
        .send()
        .await
        .expect("the hook");
    assert_eq!(hook.status(), 200);
    let started = Instant::now();
    loop {
        let text = client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("a scrape")
            .text()
            .await
            .expect("its text");
        let built = text
            .lines()
            .filter(|l| l.starts_with("buildmaster_builds_total{"))
            .count();
        if built >= builders {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "only {built} builders built in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "{builders} builders built once each in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut times = Vec::with_capacity(rounds);
    let mut size = 0;
    let mut series = 0;
    for _ in 0..rounds {
        let started = Instant::now();
        let response = client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("a scrape");
        assert_eq!(response.status(), 200);
        let text = response.text().await.expect("its text");
        times.push(started.elapsed());
        size = text.len();
        series = text.lines().filter(|l| !l.starts_with('#')).count();
    }
    let (median, p99) = percentiles(times);
    println!(
        "/metrics at {builders} builders: {series} series, {:.0} KiB; scrape median {:.2} ms, p99 {:.2} ms ({rounds} scrapes)",
        size as f64 / 1024.0,
        median.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
}
