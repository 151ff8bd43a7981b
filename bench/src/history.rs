//! `buildmaster-bench history`: the REST queries of dashboards, the web UI
//! and chat commands against a master with a long history.
//!
//! The database is created by the master's own code (`Db::open`, so its
//! schema and migrations), then filled directly with SQL in one transaction
//! per table, with rows in the shape the master writes: each change with its
//! own source stamp, two files and a property; each build with its buildset,
//! build request, two steps, and a log of two lines per step. Builds cycle
//! over ten builders and two workers; all but the last two are complete.
//! Then the real master starts on it and each query is timed over 50
//! requests; the master's resident memory is read after start and after the
//! queries. At the large size, a 200 MiB log is first written through the
//! master's own writer, and after the queries four clients list every build
//! while a small request is timed, then four clients read the whole log at
//! once, with the master's RSS sampled throughout.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection};

use crate::{percentiles, resident, start_in, Master};

/// The queries timed, as the issue that set the aim lists them.
pub const QUERIES: &[&str] = &[
    "/api/v2/builds?limit=10&order=-buildid",
    "/api/v2/builds?complete=false",
    "/api/v2/builders/1/builds?limit=10",
    "/api/v2/buildsets?limit=10",
    "/api/v2/buildrequests?limit=10",
    "/api/v2/changes?limit=10&branch=br3",
    "/api/v2/changes?limit=10&author=nobody",
    "/api/v2/changes?limit=10&order=-changeid",
];

const BUILDERS: usize = 10;
const REQUESTS_PER_QUERY: usize = 50;
/// Epoch seconds of the first change; one change a minute after it.
const START: i64 = 1_700_000_000;

/// The master.toml of the benchmark master: the workers and builders the
/// database names, so that they keep their ids.
fn config() -> String {
    let mut text = String::from(
        "[master]\nreload_on_change = false\n[www]\nport = \"127.0.0.1:0\"\n\
         [[workers]]\ntype = \"local\"\nname = \"w1\"\n[[workers]]\ntype = \"local\"\nname = \"w2\"\n",
    );
    for builder in 1..=BUILDERS {
        text.push_str(&format!(
            "[[builders]]\nname = \"b{builder}\"\nworkernames = [\"w1\", \"w2\"]\n\
             [[builders.steps]]\ntype = \"shell\"\ncommand = \"true\"\n"
        ));
    }
    text
}

/// Fills a fresh database at `path` with `changes` changes and `builds` builds.
fn populate(path: &Path, changes: usize, builds: usize) -> rusqlite::Result<()> {
    // The master's schema, then closed: its writer must not run alongside.
    drop(buildmaster::db::Db::open(path).expect("the master opens the database"));
    let mut conn = Connection::open(path)?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    let tx = conn.transaction()?;
    {
        let mut stamp = tx.prepare(
            "INSERT INTO sourcestamps (id, ss_hash, branch, revision, repository, codebase,
                 project, created_at) VALUES (?1, ?2, ?3, ?4, ?5, '', ?6, ?7)",
        )?;
        let mut change = tx.prepare(
            "INSERT INTO changes (changeid, author, committer, comments, branch, revision,
                 revlink, when_timestamp, category, repository, codebase, project,
                 sourcestampid, parent_changeid)
             VALUES (?1, ?2, ?2, ?3, ?4, ?5, '', ?6, NULL, ?7, '', ?8, ?1, ?9)",
        )?;
        let mut file = tx.prepare(
            "INSERT INTO change_files (changeid, position, filename) VALUES (?1, ?2, ?3)",
        )?;
        let mut property = tx.prepare(
            "INSERT INTO change_properties (changeid, property_name, property_value)
             VALUES (?1, 'ticket', ?2)",
        )?;
        for id in 1..=changes as i64 {
            let branch = format!("br{}", id % 10);
            let revision = format!("{:040x}", id * 2_654_435_761);
            let repository = format!("https://git.example.org/repo{}.git", id % 3);
            let project = format!("p{}", id % 5);
            let when = START + id * 60;
            stamp.execute(params![
                id,
                format!("bench-{id}"),
                branch,
                revision,
                repository,
                project,
                when
            ])?;
            // The change before it on the same branch, repository and project.
            let parent = (id > 30).then_some(id - 30);
            change.execute(params![
                id,
                format!("Dev {} <dev{}@example.org>", id % 100, id % 100),
                format!("Change {id}\n\nWith a body."),
                branch,
                revision,
                when,
                repository,
                project,
                parent
            ])?;
            file.execute(params![id, 0, format!("src/module{}.c", id % 50)])?;
            file.execute(params![id, 1, "README"])?;
            property.execute(params![id, format!("[{}, \"Change\"]", id % 1000)])?;
        }
    }
    {
        for worker in 1..=2 {
            tx.execute(
                "INSERT INTO workers (id, name, info) VALUES (?1, ?2, '{}')",
                params![worker, format!("w{worker}")],
            )?;
        }
        for builder in 1..=BUILDERS as i64 {
            tx.execute(
                "INSERT INTO builders (id, name, description, tags) VALUES (?1, ?2, NULL, '[]')",
                params![builder, format!("b{builder}")],
            )?;
        }
        let mut buildset = tx.prepare(
            "INSERT INTO buildsets (id, external_idstring, reason, scheduler, submitted_at,
                 complete, complete_at, results, properties)
             VALUES (?1, NULL, 'The SingleBranchScheduler scheduler named ''main'' triggered this build',
                 'main', ?2, ?3, ?4, ?5, '{\"scheduler\": [\"main\", \"Scheduler\"]}')",
        )?;
        let mut buildset_stamp = tx.prepare(
            "INSERT INTO buildset_sourcestamps (buildsetid, sourcestampid) VALUES (?1, ?2)",
        )?;
        let mut request = tx.prepare(
            "INSERT INTO buildrequests (id, buildsetid, builderid, priority, submitted_at,
                 claimed_at, complete, complete_at, results)
             VALUES (?1, ?1, ?2, 0, ?3, ?3, ?4, ?5, ?6)",
        )?;
        let mut build = tx.prepare(
            "INSERT INTO builds (id, number, builderid, buildrequestid, workerid, started_at,
                 complete_at, state_string, results, properties)
             VALUES (?1, ?2, ?3, ?1, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        let mut step = tx.prepare(
            "INSERT INTO steps (id, buildid, number, name, started_at, complete_at,
                 state_string, results)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        let mut log = tx.prepare(
            "INSERT INTO logs (id, stepid, name, slug, type, complete, num_lines)
             VALUES (?1, ?1, 'stdio', 'stdio', 's', 1, 2)",
        )?;
        let mut chunk = tx.prepare(
            "INSERT INTO logchunks (logid, first_line, last_line, content, compressed)
             VALUES (?1, 0, 1, ?2, 0)",
        )?;
        for id in 1..=builds as i64 {
            let builder = (id - 1) % BUILDERS as i64 + 1;
            let number = (id - 1) / BUILDERS as i64 + 1;
            let complete = id <= builds as i64 - 2;
            let started = START + id * 600;
            let finished = complete.then_some(started + 120);
            let results = complete.then_some(if id % 7 == 0 { 2 } else { 0 });
            let stamp = (id % changes.max(1) as i64) + 1;
            buildset.execute(params![id, started - 5, complete, finished, results])?;
            buildset_stamp.execute(params![id, stamp])?;
            request.execute(params![
                id,
                builder,
                started - 5,
                complete,
                finished,
                results
            ])?;
            let state = if complete {
                "build successful"
            } else {
                "'make check'"
            };
            build.execute(params![
                id,
                number,
                builder,
                (id % 2) + 1,
                started,
                finished,
                state,
                results,
                format!(
                    "{{\"branch\": [\"br{}\", \"Build\"], \"buildnumber\": [{number}, \"Build\"]}}",
                    stamp % 10
                )
            ])?;
            for number in 1..=2 {
                let stepid = (id - 1) * 2 + number;
                step.execute(params![
                    stepid,
                    id,
                    number,
                    if number == 1 { "git" } else { "make check" },
                    started,
                    finished,
                    "done",
                    results
                ])?;
                log.execute(params![stepid])?;
                chunk.execute(params![stepid, "hmake check\nook\n"])?;
            }
        }
    }
    tx.commit()
}

async fn time_query(client: &reqwest::Client, master: &Master, path: &str) -> (Duration, Duration) {
    let url = format!("http://{}{path}", master.addr);
    let mut times = Vec::with_capacity(REQUESTS_PER_QUERY);
    for _ in 0..REQUESTS_PER_QUERY {
        let started = Instant::now();
        let response = client
            .get(&url)
            .header("Accept", "application/json")
            .send()
            .await
            .expect("the master answers");
        let status = response.status();
        let body = response.bytes().await.expect("a body");
        times.push(started.elapsed());
        assert!(status.is_success(), "{path}: {status} {body:?}");
    }
    percentiles(times)
}

/// One size of history: its timings and the master's memory.
struct Measured {
    timings: Vec<(Duration, Duration)>,
    rss_start: u64,
    rss_after: u64,
    populate: Duration,
    load: Option<UnderLoad>,
}

/// The large history only: what whole listings and a long log cost.
struct UnderLoad {
    /// A small request's median and p99 while four clients list every build.
    small_request: (Duration, Duration),
    listings: Duration,
    listing_bytes: usize,
    listing_peak_rss: u64,
    log_bytes: u64,
    log_stored: u64,
    log_reads: Duration,
    log_peak_rss: u64,
    rss_after: u64,
}

/// Lines of a long build log, as a compiler prints them.
const LOG_MIB: usize = 200;

/// Appends a log of [`LOG_MIB`] MiB to log 1 through the master's own
/// writer (64 KiB chunks, compressed as by default); returns the bytes of
/// output and the bytes stored.
async fn write_long_log(path: &Path) -> (u64, u64) {
    let db = buildmaster::db::Db::open(path).expect("the master opens the database");
    let settings = buildmaster::config::LogSettings::default();
    let mut written = 0u64;
    let mut line = 0u64;
    while written < (LOG_MIB * 1024 * 1024) as u64 {
        let mut chunk = String::with_capacity(64 * 1024 + 200);
        let mut lines = 0;
        while chunk.len() < 64 * 1024 {
            line += 1;
            let module = line % 997;
            chunk.push_str(&format!(
                "o[{line:>8}] cc -c -O2 -Wall -Isrc src/module_{module}.c -o build/module_{module}.o\n"
            ));
            lines += 1;
        }
        written += chunk.len() as u64;
        db.append_log(1, chunk, lines, false, settings)
            .await
            .expect("a chunk stored");
    }
    drop(db);
    let conn = Connection::open(path).expect("the database");
    let stored: i64 = conn
        .query_row(
            "SELECT SUM(length(content)) FROM logchunks WHERE logid = 1",
            [],
            |row| row.get(0),
        )
        .expect("the stored size");
    (written, stored as u64)
}

/// Runs `clients` GETs of `path` at once to the end of their bodies while
/// sampling the master's RSS; the time they took, the bytes of one answer,
/// and the peak RSS (KiB).
async fn concurrent_reads(
    client: &reqwest::Client,
    (addr, pid): (&str, u32),
    path: &str,
    clients: usize,
) -> (Duration, usize, u64) {
    let url = format!("http://{addr}{path}");
    let started = Instant::now();
    let mut reads = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (client, url) = (client.clone(), url.clone());
        reads.spawn(async move {
            let mut response = client.get(&url).send().await.expect("an answer");
            assert!(response.status().is_success(), "{url}");
            let mut bytes = 0;
            while let Some(chunk) = response.chunk().await.expect("a chunk") {
                bytes += chunk.len();
            }
            bytes
        });
    }
    let mut peak = 0;
    let mut bytes = 0;
    while !reads.is_empty() {
        peak = peak.max(resident(pid).0);
        tokio::select! {
            done = reads.join_next() => bytes = done.expect("a read").expect("it ran"),
            () = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
    }
    (started.elapsed(), bytes, peak)
}

/// The large history's extra measurements: a small request while four
/// clients list all builds, then four clients reading the long log.
async fn under_load(master: &Master, log: (u64, u64)) -> UnderLoad {
    let client = reqwest::Client::new();
    let pid = master.child.id();
    let listing = {
        let (client, addr) = (client.clone(), master.addr.clone());
        tokio::spawn(
            async move { concurrent_reads(&client, (&addr, pid), "/api/v2/builds", 4).await },
        )
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let small_request = time_query(&client, master, "/api/v2/builders").await;
    let (listings, listing_bytes, listing_peak_rss) = listing.await.expect("the listings");
    let (log_reads, _, log_peak_rss) =
        concurrent_reads(&client, (&master.addr, pid), "/api/v2/logs/1/raw", 4).await;
    UnderLoad {
        small_request,
        listings,
        listing_bytes,
        listing_peak_rss,
        log_bytes: log.0,
        log_stored: log.1,
        log_reads,
        log_peak_rss,
        rss_after: resident(master.child.id()).0,
    }
}

async fn measure(changes: usize, builds: usize, extras: bool) -> Measured {
    let basedir = tempfile::tempdir().expect("basedir");
    let started = Instant::now();
    let path = basedir.path().join("state.sqlite");
    populate(&path, changes, builds).expect("populate");
    let populate = started.elapsed();
    let log = if extras {
        Some(write_long_log(&path).await)
    } else {
        None
    };
    let master = start_in(basedir, &config());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_start = resident(master.child.id()).0;
    let client = reqwest::Client::new();
    let mut timings = Vec::new();
    for query in QUERIES {
        timings.push(time_query(&client, &master, query).await);
    }
    let rss_after = resident(master.child.id()).0;
    let load = match log {
        Some(log) => Some(under_load(&master, log).await),
        None => None,
    };
    Measured {
        timings,
        rss_start,
        rss_after,
        populate,
        load,
    }
}

fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1e3)
}

/// Runs the queries at a small and a large history and prints the table.
pub async fn run(small: (usize, usize), large: (usize, usize)) {
    let few = measure(small.0, small.1, false).await;
    let many = measure(large.0, large.1, true).await;
    println!(
        "history: {} changes / {} builds (filled in {:.1} s) and {} changes / {} builds (filled in {:.1} s)",
        small.0,
        small.1,
        few.populate.as_secs_f64(),
        large.0,
        large.1,
        many.populate.as_secs_f64()
    );
    println!("| request | median (large) | p99 (large) | median (small) | p99 (small) |");
    println!("|---|---:|---:|---:|---:|");
    for (index, query) in QUERIES.iter().enumerate() {
        let (large_median, large_p99) = many.timings[index];
        let (small_median, small_p99) = few.timings[index];
        println!(
            "| `GET {query}` | {} | {} | {} | {} |",
            ms(large_median),
            ms(large_p99),
            ms(small_median),
            ms(small_p99)
        );
    }
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "RSS small: {:.1} MiB after start, {:.1} MiB after the queries; large: {:.1} MiB after start, {:.1} MiB after the queries",
        mib(few.rss_start),
        mib(few.rss_after),
        mib(many.rss_start),
        mib(many.rss_after)
    );
    if let Some(load) = many.load {
        println!(
            "while 4 clients listed all {} builds ({:.1} MiB each, {:.1} s): GET /api/v2/builders \
             median {}, p99 {}; peak RSS {:.1} MiB",
            large.1,
            load.listing_bytes as f64 / 1048576.0,
            load.listings.as_secs_f64(),
            ms(load.small_request.0),
            ms(load.small_request.1),
            mib(load.listing_peak_rss)
        );
        println!(
            "a log of {:.0} MiB stored in {:.1} MiB; 4 clients read it whole at once in {:.1} s; \
             peak RSS {:.1} MiB; RSS after all: {:.1} MiB",
            load.log_bytes as f64 / 1048576.0,
            load.log_stored as f64 / 1048576.0,
            load.log_reads.as_secs_f64(),
            mib(load.log_peak_rss),
            mib(load.rss_after)
        );
    }
}
