//! The schema, as an ordered list of migrations.
//!
//! The SQL sticks to what SQLite and PostgreSQL both accept: integer epoch
//! timestamps, JSON kept as text, and ids assigned by the single writer rather
//! than by an engine-specific auto-increment.

use rusqlite::Connection;

use super::Error;

/// Migration `n` (counting from 1) brings the schema from version `n - 1` to `n`.
/// Append new migrations; never edit one that has shipped.
const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE sourcestamps (
    id INTEGER NOT NULL PRIMARY KEY,
    ss_hash TEXT NOT NULL UNIQUE,
    branch TEXT,
    revision TEXT,
    repository TEXT NOT NULL,
    codebase TEXT NOT NULL,
    project TEXT NOT NULL,
    patchid INTEGER,
    created_at BIGINT NOT NULL
);

CREATE TABLE changes (
    changeid INTEGER NOT NULL PRIMARY KEY,
    author TEXT NOT NULL,
    committer TEXT,
    comments TEXT NOT NULL,
    branch TEXT,
    revision TEXT,
    revlink TEXT,
    when_timestamp BIGINT NOT NULL,
    category TEXT,
    repository TEXT NOT NULL,
    codebase TEXT NOT NULL,
    project TEXT NOT NULL,
    sourcestampid INTEGER NOT NULL REFERENCES sourcestamps (id),
    parent_changeid INTEGER REFERENCES changes (changeid)
);
-- The parent look-up: newest change with the same branch, repository, project and codebase.
CREATE INDEX changes_lineage ON changes (branch, repository, project, codebase, changeid);
CREATE INDEX changes_sourcestampid ON changes (sourcestampid);
CREATE INDEX changes_when_timestamp ON changes (when_timestamp);
CREATE INDEX changes_revision ON changes (revision);
CREATE INDEX changes_author ON changes (author);

-- `position` keeps the files in the order the change listed them.
CREATE TABLE change_files (
    changeid INTEGER NOT NULL REFERENCES changes (changeid),
    position INTEGER NOT NULL,
    filename TEXT NOT NULL,
    PRIMARY KEY (changeid, position)
);

-- `property_value` is the JSON text of `[value, source]`.
CREATE TABLE change_properties (
    changeid INTEGER NOT NULL REFERENCES changes (changeid),
    property_name TEXT NOT NULL CHECK (property_name <> ''),
    property_value TEXT NOT NULL,
    PRIMARY KEY (changeid, property_name)
);
",
    r"
-- Delivery ids of accepted change-hook requests (X-GitHub-Delivery, …), so a
-- redelivery is answered without storing its changes again.
CREATE TABLE delivery_ids (
    dialect TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (dialect, delivery_id)
);
CREATE INDEX delivery_ids_received_at ON delivery_ids (received_at);
",
    r"
-- The last revision a polling change source has seen on each branch it follows,
-- stored with the changes it found, so a restart neither repeats nor loses any.
CREATE TABLE change_source_revisions (
    source TEXT NOT NULL,
    branch TEXT NOT NULL,
    revision TEXT NOT NULL,
    PRIMARY KEY (source, branch)
);
",
    r"
-- Every stored change updates every index on `changes`; these three served only
-- REST filters, which scan instead. The writer spent half the master's CPU.
DROP INDEX changes_when_timestamp;
DROP INDEX changes_revision;
DROP INDEX changes_author;
",
    r"
-- The build engine: what is built (builders, on workers), what was asked for
-- (buildsets of build requests on source stamps), what ran (builds, their
-- steps and the logs of each step), and the schedulers' own state.
CREATE TABLE builders (
    id INTEGER NOT NULL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT,
    tags TEXT NOT NULL
);

CREATE TABLE workers (
    id INTEGER NOT NULL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    info TEXT NOT NULL
);

-- `properties` is the JSON text of {name: [value, source]}.
CREATE TABLE buildsets (
    id INTEGER NOT NULL PRIMARY KEY,
    external_idstring TEXT,
    reason TEXT NOT NULL,
    scheduler TEXT NOT NULL,
    submitted_at BIGINT NOT NULL,
    complete INTEGER NOT NULL,
    complete_at BIGINT,
    results INTEGER,
    properties TEXT NOT NULL
);

CREATE TABLE buildset_sourcestamps (
    buildsetid INTEGER NOT NULL REFERENCES buildsets (id),
    sourcestampid INTEGER NOT NULL REFERENCES sourcestamps (id),
    PRIMARY KEY (buildsetid, sourcestampid)
);

CREATE TABLE buildrequests (
    id INTEGER NOT NULL PRIMARY KEY,
    buildsetid INTEGER NOT NULL REFERENCES buildsets (id),
    builderid INTEGER NOT NULL REFERENCES builders (id),
    priority INTEGER NOT NULL,
    submitted_at BIGINT NOT NULL,
    claimed_at BIGINT,
    complete INTEGER NOT NULL,
    complete_at BIGINT,
    results INTEGER
);
CREATE INDEX buildrequests_builder ON buildrequests (builderid, complete);
CREATE INDEX buildrequests_buildsetid ON buildrequests (buildsetid);

CREATE TABLE builds (
    id INTEGER NOT NULL PRIMARY KEY,
    number INTEGER NOT NULL,
    builderid INTEGER NOT NULL REFERENCES builders (id),
    buildrequestid INTEGER NOT NULL REFERENCES buildrequests (id),
    workerid INTEGER NOT NULL REFERENCES workers (id),
    started_at BIGINT NOT NULL,
    complete_at BIGINT,
    state_string TEXT NOT NULL,
    results INTEGER,
    properties TEXT NOT NULL,
    UNIQUE (builderid, number)
);
CREATE INDEX builds_buildrequestid ON builds (buildrequestid);
CREATE INDEX builds_incomplete ON builds (complete_at);

CREATE TABLE steps (
    id INTEGER NOT NULL PRIMARY KEY,
    buildid INTEGER NOT NULL REFERENCES builds (id),
    number INTEGER NOT NULL,
    name TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    complete_at BIGINT,
    state_string TEXT NOT NULL,
    results INTEGER,
    UNIQUE (buildid, number)
);

-- `type` is Buildbot's: 's' for a stream of lines each prefixed by its channel
-- ('o' stdout, 'e' stderr, 'h' header).
CREATE TABLE logs (
    id INTEGER NOT NULL PRIMARY KEY,
    stepid INTEGER NOT NULL REFERENCES steps (id),
    name TEXT NOT NULL,
    slug TEXT NOT NULL,
    type TEXT NOT NULL,
    complete INTEGER NOT NULL,
    num_lines INTEGER NOT NULL,
    UNIQUE (stepid, slug)
);

CREATE TABLE logchunks (
    logid INTEGER NOT NULL REFERENCES logs (id),
    first_line INTEGER NOT NULL,
    last_line INTEGER NOT NULL,
    content TEXT NOT NULL,
    PRIMARY KEY (logid, first_line)
);

-- Changes a scheduler has accepted and will build when its timer fires.
CREATE TABLE scheduler_changes (
    scheduler TEXT NOT NULL,
    changeid INTEGER NOT NULL REFERENCES changes (changeid),
    PRIMARY KEY (scheduler, changeid)
);

-- A scheduler's own state (last change seen, last run…) as JSON values.
CREATE TABLE scheduler_state (
    scheduler TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (scheduler, name)
);
",
    // 6: the build journal that durable consumers (notifications) follow,
    // written in the transaction that starts or finishes the build, and the
    // place each consumer has reached.
    r"
CREATE TABLE build_events (
    eventid INTEGER NOT NULL PRIMARY KEY,
    buildid INTEGER NOT NULL REFERENCES builds (id),
    kind TEXT NOT NULL CHECK (kind IN ('started', 'finished')),
    at BIGINT NOT NULL
);

CREATE TABLE consumer_cursors (
    consumer TEXT NOT NULL PRIMARY KEY,
    eventid INTEGER NOT NULL
);
",
    // 7: indexes for the REST queries dashboards, the web UI and chat make,
    // so that their cost does not grow with the history: the newest changes
    // of a branch, project, repository or author; a builder's builds; the
    // incomplete requests and buildsets (incomplete builds use
    // builds_incomplete). Each costs the change-hook writer a little.
    r"
CREATE INDEX changes_branch ON changes (branch, changeid);
CREATE INDEX changes_project ON changes (project, changeid);
CREATE INDEX changes_repository ON changes (repository, changeid);
CREATE INDEX changes_author ON changes (author, changeid);
CREATE INDEX builds_builder ON builds (builderid, id);
CREATE INDEX buildrequests_complete ON buildrequests (complete, id);
CREATE INDEX buildsets_complete ON buildsets (complete, id);
",
    // 8: the number of rows of each REST collection, kept by triggers, so
    // that the total of an unfiltered listing is read, not counted.
    r"
CREATE TABLE row_counts (
    name TEXT NOT NULL PRIMARY KEY,
    count INTEGER NOT NULL
);
INSERT INTO row_counts SELECT 'builders', COUNT(*) FROM builders;
INSERT INTO row_counts SELECT 'workers', COUNT(*) FROM workers;
INSERT INTO row_counts SELECT 'changes', COUNT(*) FROM changes;
INSERT INTO row_counts SELECT 'buildsets', COUNT(*) FROM buildsets;
INSERT INTO row_counts SELECT 'buildrequests', COUNT(*) FROM buildrequests;
INSERT INTO row_counts SELECT 'builds', COUNT(*) FROM builds;
INSERT INTO row_counts SELECT 'steps', COUNT(*) FROM steps;
INSERT INTO row_counts SELECT 'logs', COUNT(*) FROM logs;
CREATE TRIGGER builders_counted AFTER INSERT ON builders BEGIN
    UPDATE row_counts SET count = count + 1 WHERE name = 'builders';
END;
CREATE TRIGGER builders_uncounted AFTER DELETE ON builders BEGIN
    UPDATE row_counts SET count = count - 1 WHERE name = 'builders';
END;
CREATE TRIGGER workers_counted AFTER INSERT ON workers BEGIN
    UPDATE row_counts SET count = count + 1 WHERE name = 'workers';
END;
CREATE TRIGGER workers_uncounted AFTER DELETE ON workers BEGIN
    UPDATE row_counts SET count = count - 1 WHERE name = 'workers';
END;
CREATE TRIGGER changes_counted AFTER INSERT ON changes BEGIN
    UPDATE row_counts SET count = count + 1 WHERE name = 'changes';
END;
CREATE TRIGGER changes_uncounted AFTER DELETE ON changes BEGIN
    UPDATE row_counts SET count = count - 1 WHERE name = 'changes';
END;
CREATE TRIGGER buildsets_counted AFTER INSERT ON buildsets BEGIN
    UPDATE row_counts SET count = count + 1 WHERE name = 'buildsets';
END;
CREATE TRIGGER buildsets_uncounted AFTER DELETE ON buildsets BEGIN
    UPDATE row_counts SET count = count - 1 WHERE name = 'buildsets';
END;
CREATE TRIGGER buildrequests_counted AFTER INSERT ON buildrequests BEGIN
    UPDATE row_counts SET count = count + 1 WHERE name = 'buildrequests';
END;
CREATE TRIGGER buildrequests_uncounted AFTER DELETE ON buildrequests BEGIN
    UPDATE row_counts SET count = count - 1 WHERE name = 'buildrequests';
END;
CREATE TRIGGER builds_counted AFTER INSERT ON builds BEGIN
    UPDATE row_counts SET count = count + 1 WHERE name = 'builds';
END;
CREATE TRIGGER builds_uncounted AFTER DELETE ON builds BEGIN
    UPDATE row_counts SET count = count - 1 WHERE name = 'builds';
END;
CREATE TRIGGER steps_counted AFTER INSERT ON steps BEGIN
    UPDATE row_counts SET count = count + 1 WHERE name = 'steps';
END;
CREATE TRIGGER steps_uncounted AFTER DELETE ON steps BEGIN
    UPDATE row_counts SET count = count - 1 WHERE name = 'steps';
END;
CREATE TRIGGER logs_counted AFTER INSERT ON logs BEGIN
    UPDATE row_counts SET count = count + 1 WHERE name = 'logs';
END;
CREATE TRIGGER logs_uncounted AFTER DELETE ON logs BEGIN
    UPDATE row_counts SET count = count - 1 WHERE name = 'logs';
END;
",
    // 9: compressed log chunks, and what the janitor deletes by. Chunks
    // written before have a NULL `compressed` until the conversion that
    // runs after start (in batches, resumable) has looked at them; the
    // partial index finds those that are left.
    r"
ALTER TABLE logchunks ADD COLUMN compressed INTEGER;
CREATE INDEX logchunks_unconverted ON logchunks (logid, first_line) WHERE compressed IS NULL;
CREATE INDEX logs_kept ON logs (stepid) WHERE type != 'd';
CREATE INDEX buildsets_complete_at ON buildsets (complete_at);
CREATE INDEX buildset_sourcestamps_sourcestampid ON buildset_sourcestamps (sourcestampid);
CREATE INDEX build_events_buildid ON build_events (buildid);
",
    // 10: the reporters' outbox. `state`: pending, delivered, dead (no more
    // attempts) or dropped (its reporter was removed).
    r"
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY,
    reporter TEXT NOT NULL,
    idempotency_key TEXT,
    destination TEXT NOT NULL,
    method TEXT NOT NULL,
    url TEXT NOT NULL,
    headers TEXT NOT NULL,
    body BLOB NOT NULL,
    timeout_ms INTEGER,
    buildid INTEGER NOT NULL,
    event TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_status INTEGER,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    completed_at BIGINT
);
CREATE UNIQUE INDEX outbox_once ON outbox (reporter, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX outbox_pending ON outbox (destination, id) WHERE state = 'pending';
",
    // 11: the chat bot's state, keyed by the bot's numeric id: the events
    // each chat is notified of, and the payloads of buttons too long for
    // Telegram's 64-byte callback data.
    r"
CREATE TABLE chat_subscriptions (
    bot INTEGER NOT NULL,
    chat_id INTEGER NOT NULL,
    events TEXT NOT NULL,
    PRIMARY KEY (bot, chat_id)
);
CREATE TABLE chat_buttons (
    id INTEGER PRIMARY KEY,
    bot INTEGER NOT NULL,
    payload TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX chat_buttons_payload ON chat_buttons (bot, payload);
",
    // 12: the next Telegram update each bot asks for, so that an update
    // taken before a restart is not handled again after it.
    r"
CREATE TABLE chat_offsets (
    bot INTEGER NOT NULL PRIMARY KEY,
    next_update INTEGER NOT NULL
);
",
    // 13: whether each worker is connected: a configured local one always,
    // a remote one while it is logged in.
    r"
ALTER TABLE workers ADD COLUMN connected INTEGER NOT NULL DEFAULT 0;
",
    // 14: the workers each chat was told are missing, so that it hears of
    // their return, across restarts.
    r"
CREATE TABLE chat_missing_workers (
    bot INTEGER NOT NULL,
    chat_id INTEGER NOT NULL,
    workerid INTEGER NOT NULL,
    PRIMARY KEY (bot, chat_id, workerid)
);
",
    // 15: how many logins under each worker's name were refused.
    r"
ALTER TABLE workers ADD COLUMN refused_logins INTEGER NOT NULL DEFAULT 0;
",
    // 16: the webhook inspector. The last deliveries of each dialect as they
    // came (the copy a replay sends again) with what came of them; what each
    // scheduler decided of each change; the correlation id a change carries
    // from its delivery.
    r"
CREATE TABLE hook_deliveries (
    id INTEGER PRIMARY KEY,
    dialect TEXT NOT NULL,
    received_at REAL NOT NULL,
    correlation TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    headers TEXT NOT NULL,
    body BLOB NOT NULL,
    status INTEGER NOT NULL,
    verdict TEXT NOT NULL,
    changeids TEXT NOT NULL,
    replay_of INTEGER
);
CREATE INDEX hook_deliveries_dialect ON hook_deliveries (dialect, id);
CREATE TABLE change_decisions (
    changeid INTEGER NOT NULL,
    scheduler TEXT NOT NULL,
    accepted INTEGER NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (changeid, scheduler)
);
ALTER TABLE changes ADD COLUMN correlation TEXT;
",
    // 17: what operators set on a worker (Buildbot's `paused`,
    // `pause_reason` and `graceful`); a pause outlasts a restart.
    r"
ALTER TABLE workers ADD COLUMN paused INTEGER NOT NULL DEFAULT 0;
ALTER TABLE workers ADD COLUMN pause_reason TEXT;
ALTER TABLE workers ADD COLUMN graceful INTEGER NOT NULL DEFAULT 0;
",
];

/// Brings the schema up to date, one transaction per migration, recording each
/// applied migration in `schema_version`.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), Error> {
    migrate_to(conn, MIGRATIONS.len())
}

/// Applies the migrations up to version `target`, as a release that knew
/// only those did.
pub(super) fn migrate_to(conn: &mut Connection, target: usize) -> Result<(), Error> {
    let failed = |version| move |source| Error::Migrate { version, source };
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version INTEGER NOT NULL PRIMARY KEY,
             applied_at BIGINT NOT NULL
         )",
    )
    .map_err(failed(0))?;
    let current: usize = conn
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version",
            [],
            |row| row.get(0),
        )
        .map_err(failed(0))?;
    if current > MIGRATIONS.len() {
        return Err(Error::TooNew {
            found: current,
            known: MIGRATIONS.len(),
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().take(target).skip(current) {
        let version = index + 1;
        let tx = conn.transaction().map_err(failed(version))?;
        tx.execute_batch(sql).map_err(failed(version))?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (?1, ?2)",
            (version, super::now()),
        )
        .map_err(failed(version))?;
        tx.commit().map_err(failed(version))?;
    }
    Ok(())
}
