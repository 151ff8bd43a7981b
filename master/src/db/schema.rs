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
];

/// Brings the schema up to date, one transaction per migration, recording each
/// applied migration in `schema_version`.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), Error> {
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
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
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
