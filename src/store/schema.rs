//! Schema and migrations, versioned with `PRAGMA user_version`.
//!
//! Version 0 is an empty file. Each migration runs in one transaction together with the bump of
//! `user_version`, so a crash leaves the database at the old or the new version, never in between.
//! A database newer than this build is refused (no silent downgrade).

use rusqlite::{Connection, TransactionBehavior};

/// The schema version this build writes.
pub const LATEST: u32 = 9;

/// Migration `i` takes the database from version `i` to `i + 1`.
const MIGRATIONS: [&str; LATEST as usize] = [
    // v1: the full store.
    r#"
CREATE TABLE meta(
  name TEXT PRIMARY KEY,
  value TEXT NOT NULL
) STRICT;
CREATE TABLE keys(
  id INTEGER PRIMARY KEY,
  purpose TEXT NOT NULL CHECK (purpose IN ('data', 'index')),
  state TEXT NOT NULL CHECK (state IN ('active', 'retired')),
  kek_id TEXT NOT NULL,
  wrapped BLOB NOT NULL,
  seals INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX keys_one_active ON keys(purpose) WHERE state = 'active';
CREATE TABLE devices(
  id INTEGER PRIMARY KEY,
  uuid TEXT NOT NULL UNIQUE,
  address_hash BLOB NOT NULL UNIQUE,
  allowed INTEGER NOT NULL,
  key_id INTEGER NOT NULL REFERENCES keys(id),
  sealed BLOB NOT NULL,
  created_min INTEGER NOT NULL,
  updated_min INTEGER NOT NULL
) STRICT;
CREATE TABLE cursors(
  device_id INTEGER NOT NULL REFERENCES devices(id),
  name TEXT NOT NULL,
  value INTEGER NOT NULL,
  updated_min INTEGER NOT NULL,
  PRIMARY KEY (device_id, name)
) STRICT;
CREATE TABLE readings(
  id INTEGER PRIMARY KEY,
  uuid TEXT NOT NULL UNIQUE,
  device_id INTEGER NOT NULL REFERENCES devices(id),
  dedup BLOB NOT NULL UNIQUE,
  received_min INTEGER NOT NULL,
  key_id INTEGER NOT NULL REFERENCES keys(id),
  sealed BLOB NOT NULL
) STRICT;
CREATE INDEX readings_key ON readings(key_id);
CREATE TABLE alerts(
  id INTEGER PRIMARY KEY,
  uuid TEXT NOT NULL UNIQUE,
  dedup BLOB NOT NULL UNIQUE,
  created_min INTEGER NOT NULL,
  key_id INTEGER NOT NULL REFERENCES keys(id),
  sealed BLOB NOT NULL
) STRICT;
CREATE TABLE outbox(
  id INTEGER PRIMARY KEY,
  item TEXT NOT NULL CHECK (item IN ('reading', 'alert')),
  item_id INTEGER NOT NULL,
  priority INTEGER NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('pending', 'in_flight', 'acked', 'rejected', 'quarantined')),
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt INTEGER NOT NULL,
  key_id INTEGER REFERENCES keys(id),
  last_error BLOB,
  created_min INTEGER NOT NULL,
  done_at INTEGER,
  UNIQUE (item, item_id)
) STRICT;
CREATE INDEX outbox_ready ON outbox(state, priority, id);
CREATE INDEX outbox_done ON outbox(state, done_at);
CREATE TABLE events(
  id INTEGER PRIMARY KEY,
  at INTEGER NOT NULL,
  kind TEXT NOT NULL,
  detail TEXT NOT NULL
) STRICT;
"#,
    // v2: events get a severity, so security events can be listed and forwarded on their own.
    r#"
ALTER TABLE events ADD COLUMN severity TEXT NOT NULL DEFAULT 'info';
CREATE INDEX events_severity ON events(severity, id);
"#,
    // v3 (uplink): what the Device Information Service and the clock check told the hub about each
    // device (sealed), and per-destination upload state (server logical ids; no PHI).
    r#"
CREATE TABLE device_info(
  id INTEGER PRIMARY KEY,
  uuid TEXT NOT NULL UNIQUE,
  key_id INTEGER NOT NULL REFERENCES keys(id),
  sealed BLOB NOT NULL,
  updated_min INTEGER NOT NULL
) STRICT;
CREATE TABLE uplink_state(
  destination TEXT NOT NULL,
  name TEXT NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY (destination, name)
) STRICT;
"#,
    // v4 (BLE): readings of a multi-user device's other users, held for assignment (sealed; never in
    // the outbox). A row that was discarded or assigned keeps only its dedup hash (key and payload
    // NULL), so the same record downloaded again is recognised and not held a second time.
    r#"
CREATE TABLE held(
  id INTEGER PRIMARY KEY,
  uuid TEXT NOT NULL UNIQUE,
  device_id INTEGER NOT NULL REFERENCES devices(id),
  dedup BLOB NOT NULL UNIQUE,
  state TEXT NOT NULL CHECK (state IN ('held', 'discarded', 'assigned')),
  received_min INTEGER NOT NULL,
  key_id INTEGER REFERENCES keys(id),
  sealed BLOB,
  CHECK ((state = 'held') = (sealed IS NOT NULL AND key_id IS NOT NULL))
) STRICT;
CREATE INDEX held_state ON held(state, id);
"#,
    // v5 (alert limits, issue 18): the clinic's limits version in force, one row replaced in one
    // transaction, so a crash leaves the old version or the new one (sealed: the ServiceRequest as
    // received; plain: its version number and when it was applied).
    r#"
CREATE TABLE alert_limits(
  id INTEGER PRIMARY KEY CHECK (id = 1),
  uuid TEXT NOT NULL UNIQUE,
  version INTEGER NOT NULL CHECK (version >= 1),
  applied_ms INTEGER NOT NULL,
  key_id INTEGER NOT NULL REFERENCES keys(id),
  sealed BLOB NOT NULL
) STRICT;
"#,
    // v6 (issue 20): sealed snapshots of state derived from the readings (the alert engine's), one
    // row per name, rewritten in place. What a snapshot covers (the last reading id it includes) is
    // inside the sealed value; start-up replays only the readings after it.
    r#"
CREATE TABLE snapshots(
  id INTEGER PRIMARY KEY,
  uuid TEXT NOT NULL UNIQUE,
  name TEXT NOT NULL UNIQUE,
  key_id INTEGER NOT NULL REFERENCES keys(id),
  sealed BLOB NOT NULL,
  updated_min INTEGER NOT NULL
) STRICT;
"#,
    // v7 (alert limits, issue 18): a clinic version accepted but not yet in force (its effective
    // time is in the future), one row; it becomes the `alert_limits` row in the transaction that
    // applies it (sealed: the ServiceRequest as received; plain: its version and effective time).
    r#"
CREATE TABLE alert_limits_pending(
  id INTEGER PRIMARY KEY CHECK (id = 1),
  uuid TEXT NOT NULL UNIQUE,
  version INTEGER NOT NULL CHECK (version >= 1),
  effective_ms INTEGER NOT NULL,
  key_id INTEGER NOT NULL REFERENCES keys(id),
  sealed BLOB NOT NULL
) STRICT;
"#,
    // v8 (issue 19, security events upstream): security events aggregated per code and window
    // (`store::security`), at most one open aggregate per code (the partial unique index), each
    // uploaded once through the outbox as an AuditEvent: the outbox gets the item kind
    // 'security' (SQLite cannot alter a CHECK: the table is rebuilt, rows and ids kept). No PHI
    // here: codes and event kinds are fixed vocabularies, counts and times.
    r#"
CREATE TABLE security_reports(
  id INTEGER PRIMARY KEY,
  uuid TEXT NOT NULL UNIQUE,
  code TEXT NOT NULL,
  kinds TEXT NOT NULL,
  count INTEGER NOT NULL CHECK (count >= 1),
  first_at INTEGER NOT NULL,
  last_at INTEGER NOT NULL,
  closes_at INTEGER NOT NULL,
  open INTEGER NOT NULL CHECK (open IN (0, 1))
) STRICT;
CREATE UNIQUE INDEX security_reports_open ON security_reports(code) WHERE open = 1;
CREATE TABLE outbox_v8(
  id INTEGER PRIMARY KEY,
  item TEXT NOT NULL CHECK (item IN ('reading', 'alert', 'security')),
  item_id INTEGER NOT NULL,
  priority INTEGER NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('pending', 'in_flight', 'acked', 'rejected', 'quarantined')),
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt INTEGER NOT NULL,
  key_id INTEGER REFERENCES keys(id),
  last_error BLOB,
  created_min INTEGER NOT NULL,
  done_at INTEGER,
  UNIQUE (item, item_id)
) STRICT;
INSERT INTO outbox_v8(id, item, item_id, priority, state, attempts, next_attempt, key_id, last_error, created_min, done_at)
  SELECT id, item, item_id, priority, state, attempts, next_attempt, key_id, last_error, created_min, done_at FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_v8 RENAME TO outbox;
CREATE INDEX outbox_ready ON outbox(state, priority, id);
CREATE INDEX outbox_done ON outbox(state, done_at);
"#,
    // v9 (issue 20): readings and held rows are deduplicated under `bucket ‖ hash` (22 bytes,
    // `db/dedup.rs`) instead of the hash alone (16 bytes). Rows already stored keep their keys
    // (stable keys are sealed, so they cannot be recomputed); the flag tells lookups to try the
    // old form too. A store created at v9 or later never has it.
    r#"
INSERT INTO meta(name, value)
  SELECT 'dedup_legacy', '1'
  WHERE EXISTS (SELECT 1 FROM readings) OR EXISTS (SELECT 1 FROM held);
"#,
];

/// Errors of the migration step.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The database was written by a newer vitals-hub.
    #[error(
        "database schema version {found} is newer than this vitals-hub supports ({LATEST}); \
         install the newer vitals-hub again (downgrades are not supported)"
    )]
    TooNew { found: u32 },
    /// SQLite refused a migration statement.
    #[error("migration to schema version {to} failed: {source}")]
    Migration {
        to: u32,
        #[source]
        source: rusqlite::Error,
    },
}

/// The database's schema version.
pub fn version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

/// Migrate to [`LATEST`]. Returns the version found.
pub fn migrate(conn: &mut Connection) -> Result<u32, SchemaError> {
    migrate_to(conn, LATEST)
}

/// Migrate to `target` (≤ [`LATEST`]); tests use it to build databases of earlier versions.
pub fn migrate_to(conn: &mut Connection, target: u32) -> Result<u32, SchemaError> {
    let err = |to| move |source| SchemaError::Migration { to, source };
    let found = version(conn).map_err(err(0))?;
    if found > LATEST {
        return Err(SchemaError::TooNew { found });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let from = u32::try_from(i).unwrap_or(u32::MAX);
        let to = from.saturating_add(1);
        if from < found || to > target {
            continue;
        }
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err(to))?;
        tx.execute_batch(sql).map_err(err(to))?;
        tx.pragma_update(None, "user_version", to)
            .map_err(err(to))?;
        tx.commit().map_err(err(to))?;
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_version_migrates_to_latest() {
        for start in 0..=LATEST {
            let mut c = Connection::open_in_memory().unwrap();
            migrate_to(&mut c, start).unwrap();
            assert_eq!(version(&c).unwrap(), start);
            assert_eq!(migrate(&mut c).unwrap(), start);
            assert_eq!(version(&c).unwrap(), LATEST);
            let sev: i64 = c
                .query_row(
                    "SELECT count(*) FROM pragma_table_info('events') WHERE name = 'severity'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(sev, 1);
            let held: i64 = c
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'held'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(held, 1);
            let snapshots: i64 = c
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'snapshots'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(snapshots, 1);
            let pending: i64 = c
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'alert_limits_pending'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(pending, 1);
        }
    }

    #[test]
    fn refuses_newer() {
        let mut c = Connection::open_in_memory().unwrap();
        c.pragma_update(None, "user_version", LATEST + 1).unwrap();
        let e = migrate(&mut c).unwrap_err();
        assert!(e.to_string().contains("newer"));
    }
}
