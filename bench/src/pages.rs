//! `buildmaster-bench pages`: the web UI's heaviest pages, as a browser
//! fetches them. A master with BUILDERS builders (default 100) that have
//! each built HISTORY times (default 12, as many boxes as the builders page
//! shows), and one build whose log has 10,000 lines. Each page is fetched
//! ROUNDS times (default 50) one after the other: time to first byte (the
//! answer's headers), time to the last byte, and the page's weight.

use std::time::{Duration, Instant};

use crate::{api_total, number_after, percentiles, scrape, start_with_config, Master};

/// The lines of the long log.
const LONG_LOG_LINES: usize = 10_000;

fn config(builders: usize) -> String {
    let mut text = scrape::config(builders);
    text.push_str(&format!(
        "[[builders]]\nname = \"long\"\nworkernames = [\"w1\"]\n\
         [[builders.steps]]\ntype = \"shell\"\nname = \"compile\"\n\
         command = [\"seq\", \"-f\", \"cc -O2 -Wall -c -o build/out.o src/module%g.c\", \"{LONG_LOG_LINES}\"]\n\
         [[schedulers]]\ntype = \"force\"\nname = \"long\"\nbuilder_names = [\"long\"]\n"
    ));
    text
}

/// Waits until `count` builds have finished: the count of finished builds
/// (an estimate past a few thousand) is reached and no request waits or
/// runs (that count is exact when small).
async fn wait_for_builds(client: &reqwest::Client, addr: &str, count: u64) {
    let started = Instant::now();
    let finished = "builds?complete=true&limit=1&field=buildid";
    let open = "buildrequests?complete=false&limit=1&field=buildrequestid";
    while api_total(client, addr, finished).await < count || api_total(client, addr, open).await > 0
    {
        assert!(
            started.elapsed() < Duration::from_secs(1200),
            "{count} builds not finished in 20 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One page fetched `rounds` times: first byte p50/p99, last byte p50/p99,
/// bytes.
async fn time_page(
    client: &reqwest::Client,
    url: &str,
    rounds: usize,
) -> (Duration, Duration, Duration, Duration, usize) {
    let (mut first, mut last, mut size) = (Vec::new(), Vec::new(), 0);
    for _ in 0..rounds {
        let started = Instant::now();
        let response = client.get(url).send().await.expect("the page");
        first.push(started.elapsed());
        assert_eq!(response.status(), 200, "{url}");
        size = response.bytes().await.expect("its body").len();
        last.push(started.elapsed());
    }
    let (first_p50, first_p99) = percentiles(first);
    let (last_p50, last_p99) = percentiles(last);
    (first_p50, first_p99, last_p50, last_p99, size)
}

pub async fn run(builders: usize, history: usize, rounds: usize) {
    let master: Master = start_with_config(&config(builders));
    let client = reqwest::Client::new();
    let base = format!("http://{}", master.addr);
    let started = Instant::now();
    for push in 1..=history {
        let hook = client
            .post(format!("{base}/change_hook/base"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(format!(
                "branch=main&revision={push}&repository=r&author=Ada&comments=c"
            ))
            .send()
            .await
            .expect("the hook");
        assert_eq!(hook.status(), 200);
        // One push at a time: requests of one builder would be collapsed.
        wait_for_builds(&client, &master.addr, (push * builders) as u64).await;
    }
    let forced = client
        .post(format!("{base}/api/v2/forceschedulers/long"))
        .header("Content-Type", "application/json")
        .body(r#"{"jsonrpc":"2.0","method":"force","id":1}"#)
        .send()
        .await
        .expect("the force");
    assert_eq!(forced.status(), 200);
    wait_for_builds(&client, &master.addr, (history * builders + 1) as u64).await;
    println!(
        "{} builds of {builders} builders and one of {LONG_LOG_LINES} log lines in {:.1} s",
        history * builders + 1,
        started.elapsed().as_secs_f64()
    );
    let long = (history * builders + 1) as u64;
    let logs = client
        .get(format!("{base}/api/v2/builds/{long}/steps"))
        .header("Accept", "application/json")
        .send()
        .await
        .expect("the steps")
        .text()
        .await
        .expect("their text");
    let stepid = number_after(&logs, "stepid");
    let logs = client
        .get(format!("{base}/api/v2/steps/{stepid}/logs"))
        .header("Accept", "application/json")
        .send()
        .await
        .expect("the logs")
        .text()
        .await
        .expect("their text");
    let logid = number_after(&logs, "logid");
    let lines = number_after(&logs, "num_lines") as usize;
    assert!(lines > LONG_LOG_LINES, "the long log has {lines} lines");

    println!("| page | first byte p50 | p99 | last byte p50 | p99 | weight |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, path) in [
        (
            format!("builders (`/`, {builders} builders)"),
            "/".to_owned(),
        ),
        (
            format!("build, {LONG_LOG_LINES}-line log (last 1,000 shown)"),
            format!("/builds/{long}"),
        ),
        (
            format!("build, {LONG_LOG_LINES}-line log, all lines (`?full=`)"),
            format!("/builds/{long}?full={logid}"),
        ),
        ("script (`/ui/ui.js`)".to_owned(), "/ui/ui.js".to_owned()),
        (
            "style sheet (`/ui/ui.css`)".to_owned(),
            "/ui/ui.css".to_owned(),
        ),
    ] {
        let (first_p50, first_p99, last_p50, last_p99, size) =
            time_page(&client, &format!("{base}{path}"), rounds).await;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "| {name} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.1} KiB |",
            ms(first_p50),
            ms(first_p99),
            ms(last_p50),
            ms(last_p99),
            size as f64 / 1024.0
        );
    }
}
