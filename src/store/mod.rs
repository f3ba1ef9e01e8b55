//! The encrypted store-and-forward store: the only hand-over point between ingest and upload.
//!
//! # Design note
//!
//! **Shape.** One SQLite database `<state_dir>/store.db` (rusqlite, bundled SQLite), one connection,
//! owned by one OS thread (the private `db` module: `db/mod.rs` the connection and its
//! transactions, then one file a concern — `keys`, `devices`, `readings`, `held`, `dedup` (v9 dedup keys), `outbox`,
//! `maintenance`). [`Store`] (in `handle.rs`; this file keeps the errors, the configuration and the
//! records that cross the API) is the async handle: every call is a closure sent over a
//! bounded channel and answered on a oneshot, so nothing blocks the tokio runtime and all writes are
//! serialised without locks. Other processes (`vitals-hub keys rotate`) may open the same file; SQLite's
//! locking plus `busy_timeout` serialises them, and the worker reloads its key cache whenever
//! `PRAGMA data_version` says another connection committed.
//!
//! **Schema** ([`schema`], `PRAGMA user_version`, currently 9):
//!
//! | table | plain columns | sealed (AEAD) columns |
//! |---|---|---|
//! | `keys` | id, purpose (`data`/`index`), state (`active`/`retired`), KEK fingerprint, seal count, created | `wrapped` (the key, sealed by the KEK — not by a data key) |
//! | `devices` | id, uuid, `address_hash` (HMAC), allowed, key id, created/updated minute | `sealed`: address, name, profile, patient binding, serial, bond info |
//! | `cursors` | device id, cursor name, value (e.g. last RACP sequence number), updated minute | — |
//! | `readings` | id, uuid, device id, `dedup` (v9: keyed bucket of device, device month and day ‖ HMAC of the stable key; see `db/dedup.rs`), received minute, key id | `sealed`: the `model::Reading` (value, unit, device time, flags…), exact receive time, stable key, test flag, patient id, a stream window's count/min/max |
//! | `alerts` | id, uuid, `dedup` (HMAC), created minute, key id | `sealed`: alert JSON, stable key, related reading ids |
//! | `outbox` | id, item kind (`reading`/`alert`/`security`, v8) + id, priority, state, attempts, next attempt, created minute, done time, key id | `last_error` (a server's reason may echo PHI) |
//! | `events` | id, time, kind, severity, detail | — (details never carry PHI: ids, counts, table names) |
//! | `meta` | name, value | — |
//! | `device_info` (v3) | id, device uuid, key id, updated minute | `sealed`: [`DeviceInfo`] (system id, manufacturer, model, revisions, clock check, battery, last seen) |
//! | `uplink_state` (v3) | destination, name, value (server logical ids such as `Device/12`, heartbeat times) | — |
//! | `held` (v4) | id, uuid, device id, `dedup` (as for `readings`), state (`held`/`discarded`/`assigned`), received minute, key id | `sealed` (NULL once discarded or assigned): user index, the `model::Reading`, exact receive time, stable key |
//! | `alert_limits` (v5) | one row: uuid, the clinic's limits version in force, when it was applied, key id | `sealed`: the limits `ServiceRequest` as the clinic sent it ([`crate::fhir::limits`]) |
//! | `alert_limits_pending` (v7) | one row: uuid, a clinic limits version accepted but not yet in force, when it takes effect, key id | `sealed`: the limits `ServiceRequest` as the clinic sent it |
//! | `snapshots` (v6) | id, uuid, name (`alerts`), key id, updated minute | `sealed`: the reading id it covers and the state (the alert engine's: open episodes, weights, last reading per device) |
//! | `security_reports` (v8) | id, uuid, code, event kinds, count, first/last event time, window end, open flag ([`security`]) | — (fixed vocabularies, counts and times: no PHI) |
//!
//! What an attacker with the file alone learns (the documented leakage): how many devices, readings and
//! alerts exist, in which upload state, at minute resolution when they arrived, sizes of the sealed
//! payloads, cursor values (record counters), the audit events, and (v9) which readings share a
//! device, a device month and a device day — equality classes of the dedup key's bucket, in keyed
//! pseudo-random order, never the dates. Not values, not kinds or units,
//! not device timestamps, not the patient id, not device addresses or serials.
//!
//! **Encryption** ([`crypto`]). Key hierarchy KEK → data keys + one index key. Every sealed value is
//! `nonce ‖ ciphertext ‖ tag` with ChaCha20-Poly1305 and a random 96-bit nonce; its associated data is
//! `vitals-hub/v1|phi|table|column|row uuid|key id`, so a ciphertext pasted into another row fails to
//! open. That is reported as [`StoreError::Integrity`] naming table, column and row, recorded as a
//! security event, and the outbox entry is quarantined — never skipped silently. Seals are counted per
//! data key, the persisted count an upper bound reserved 4,096 seals at a time in the transaction
//! whose seals pass the previous bound (so a one-reading commit does not rewrite the `keys` page;
//! a crash or another connection resumes at the bound: counts are skipped, never reused); at [`StoreConfig::rotate_after_seals`]
//! (default 2^30, a quarter of the 2^32 random-nonce bound) a new data key becomes active
//! automatically, in its own transaction after the write that reached the budget has committed: a
//! failure there is never that write's error but a `data_key_rotation_failed` event (once per run
//! of failures, shown by `status`) and a retry a minute later. Key material the store owns (KEK
//! bytes, data and index keys, unwrapped keys) sits in `zeroize` buffers, wiped on drop; ring's
//! short-lived key objects are built per operation and not kept (see [`crypto`]). Deduplication and device lookup use HMAC-SHA256 with the index key, never plaintext.
//! Why ChaCha20-Poly1305: the Pi 4's Cortex-A72 has no AES instructions and ring falls back to a
//! constant-time software AES that is several times slower; `vitals-hub bench store` prints both.
//!
//! **Files and modes.** `<state_dir>` (0700 when the store creates it) holds `store.db`, SQLite's
//! `store.db-wal` and `store.db-shm` while a connection is open, `keys/kek` (0600 in 0700, see
//! [`keyfile`]; `keys/kek.new` while a KEK rotation runs) and `store.db.corrupt-<ms>[-wal|-shm]`
//! after a corrupt file was moved aside. Every one is 0600 whatever the umask: the store creates
//! `store.db` 0600 before SQLite opens it, SQLite's unix VFS gives the WAL and SHM the database
//! file's mode, and at open a database, WAL or SHM left wider by an older build (and a file moved
//! aside) is narrowed to 0600. No other file is written (`temp_store=MEMORY`) but
//! `store.db.check-failed` (0600) after a failed integrity check (see Durability).
//!
//! **Durability.** WAL with `synchronous=FULL`: every commit is fsync'd before the call returns; a
//! reading's row, its outbox entry and the device's download cursor commit in one transaction, so a
//! cursor never covers readings that are not on disk. `temp_store=MEMORY` (no temp files),
//! `secure_delete=FAST`, `journal_size_limit` bounds the WAL after checkpoints. On open: `quick_check`
//! (a corrupt file is renamed to `store.db.corrupt-<ms>`, never deleted, and a fresh store starts with
//! an event) — except for the daemon ([`StoreConfig::defer_integrity_check`]): `quick_check` reads
//! every page, so its time grows with the history, and the daemon runs it instead a second after
//! start, beside the running store ([`Store::check_integrity`], a read-only WAL reader of its own).
//! If that check fails, it leaves `store.db.check-failed` (0600, fsync'd), records an
//! `integrity_check_failed` event if the database still takes one, and the daemon ends with an
//! error (systemd restarts it); the next open sees the file and checks at open, as above — a
//! corrupt database is moved aside and a fresh one started, one restart later than a check at
//! open would have. Until then the running daemon keeps serving: a damaged page that a statement
//! reads fails that statement (SQLITE_CORRUPT), as it would on a store checked at open and
//! damaged afterwards. Then migrations, then every `in_flight` outbox entry returns to `pending`. A new database
//! file and a corrupt file's move are followed by an fsync of the directory; the key file is
//! fsync'd with its directory before the first key is wrapped with it. A read-only open
//! ([`StoreConfig::read_only`], for `status` and `export` beside the running daemon) does none of
//! that: it opens SQLite with `SQLITE_OPEN_READ_ONLY`, requires the current schema, and only reads
//! (WAL readers never block the daemon's writer).
//!
//! **Outbox.** `pending → in_flight → acked | rejected` (and `pending ← in_flight` on retry or restart;
//! `quarantined` when an entry cannot become an upload). [`Store::pending`] returns alerts first, then
//! the oldest readings, only entries whose next attempt is due. An entry whose record fails
//! authentication, does not decode or is missing is quarantined by `pending` itself with an
//! `outbox_quarantined` event (and the entries after it are returned); one the uplink cannot build a
//! request from is quarantined through [`Store::quarantine`]. Quarantined rows are kept, never
//! uploaded, never deleted by pruning. Delivery is at-least-once; the uplink's
//! conditional creates make it exactly-once at the clinic.
//!
//! **Capacity.** [`StoreConfig::size_limit`] (default 1 GiB) bounds live pages. At 80 % an event
//! fires; at 100 % appends fail with [`StoreError::Full`] and an event — unsent data is never evicted.
//! Acked data is pruned after [`StoreConfig::retention`]. SQLite's own `max_page_count` sits 10 % above
//! the limit so acks, prunes and events still commit when appends are refused. Budget, measured by
//! `vitals-hub bench store` (≈660 bytes of database per reading including its indexes and outbox
//! entry): 1 GiB holds ≈1.6 million readings — ≈19 days of a 1 Hz heart-rate or SpO2 stream
//! (86 400 readings/day), or decades of spot readings (≈50/day). SD-card wear: batched appends write
//! ≈4.7 KB per reading to the device (WAL frames plus checkpoint), single-reading commits far more;
//! streams should be appended in batches of a few seconds, spot readings one by one (they are rare).
//! Row uuids are UUIDv7 (time-ordered) so their index grows at the right edge. A real disk-full
//! (`SQLITE_FULL`/ENOSPC) fails the one
//! transaction with [`StoreError::DiskFull`] and an event; the store stays up and the next call succeeds
//! once space is back.
//!
//! **Held readings** (v4). A multi-user scale or cuff reading of a user other than the patient's is
//! held, sealed (AAD `…|held|sealed|row uuid|key id`), and never enters the outbox. It is listed
//! by [`Store::held`], dropped by [`Store::discard_held`] or moved into `readings` + `outbox` as the
//! patient's by [`Store::assign_held`] (one transaction, same stable key). Either way the row keeps
//! only its dedup hash, so the same record downloaded again is not held twice; a stable key already
//! in `readings` is not held either.
//!
//! **Invariants.** (1) A call that returned `Ok` committed and fsync'd, and a call that committed
//! returns `Ok` (one exception: [`Store::rotate_kek`] reports a failed rename of the new key file
//! after its commit; the staged file is found and the rename finished at the next load). (2) A stable key is stored at most once. (3) Every reading and alert has exactly one
//! outbox entry. (4) Plaintext PHI never reaches the database, its WAL, temp files or logs at INFO
//! and above. (5) Only the KEK's fingerprint is stored. (6) Every file the store writes is 0600.

pub mod crypto;
mod db;
mod handle;
pub mod keyfile;
pub mod schema;
pub mod security;
mod tag;

use crate::model::{Reading, UtcMillis};
// Plain data that `ble`, `uplink` and the store share lives in `model` (ble imports no store).
pub use crate::model::device::{ClockSample, DeviceInfo, DeviceKey, NewReading, ReadingSummary};
pub use crypto::CryptoError;
pub use handle::{Queued, Store};
pub use keyfile::{KekSource, KeyFileError};
pub use schema::SchemaError;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file or directory of the store could not be created, read or moved.
    #[error("store path {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The KEK could not be found, trusted or created.
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    /// The schema could not be migrated.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// SQLite failed.
    #[error("store database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A sealed value failed authentication: moved from another row, altered, or its key is gone.
    #[error(
        "integrity error: {table}.{column} of row {row} failed authentication (copied from another \
         row, altered, or sealed with a missing key); a security event was recorded"
    )]
    Integrity {
        table: &'static str,
        column: &'static str,
        row: String,
    },
    /// Appends are refused: the store holds its size limit of data. Nothing was evicted.
    #[error(
        "the store is full ({used} of {limit} bytes); the append was refused and nothing was \
         evicted. Space returns as the clinic acknowledges uploads and acked data is pruned, or raise \
         the store size limit"
    )]
    Full { used: u64, limit: u64 },
    /// The file system (or SQLite's page limit) is full; the transaction was rolled back.
    #[error(
        "the disk holding {path} is full; the transaction was rolled back and the store will \
         resume by itself once space is freed"
    )]
    DiskFull { path: PathBuf },
    /// The KEK does not match the one that wrapped this database's keys.
    #[error(
        "the KEK {path} (fingerprint {found}) is not the key that wrapped this database's keys \
         (fingerprint {expected}); restore the right key file for this store"
    )]
    WrongKek {
        path: PathBuf,
        found: String,
        expected: String,
    },
    /// The device is not in the store.
    #[error("unknown device {0}; add it to the allow-list first")]
    UnknownDevice(String),
    /// The crypto layer failed (random generator, key material).
    #[error("crypto: {0}")]
    Crypto(#[from] CryptoError),
    /// A value that opened correctly did not decode (a bug or an incompatible writer).
    #[error("stored record {row} could not be decoded: {reason}")]
    Decode { row: String, reason: String },
    /// The store's worker thread has stopped.
    #[error("the store has been closed")]
    Closed,
    /// A caller passed an argument the store cannot use.
    #[error("invalid store request: {0}")]
    Invalid(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How the store is set up.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Directory holding `store.db` (and `keys/kek` unless a credential is used).
    pub state_dir: PathBuf,
    /// Where the KEK comes from.
    pub kek: KekSource,
    /// Bytes of live database pages at which appends are refused.
    pub size_limit: u64,
    /// How long acked data is kept before [`Store::prune`] removes it, in ms.
    pub retention: i64,
    /// Seals after which a data key is retired for a new one.
    pub rotate_after_seals: u64,
    /// The configured patient's logical id; sealed into every reading, never stored plain.
    pub patient_id: Option<String>,
    /// Override of SQLite's `max_page_count` (tests simulate a full disk with it).
    pub sqlite_max_pages: Option<u32>,
    /// Open an existing store for reading only (`status`, `export` while the daemon runs): SQLite
    /// opened read-only, no directory or KEK created, no migration, in-flight outbox entries left
    /// as they are, no events written. Every write call fails.
    pub read_only: bool,
    /// Return in-flight outbox entries to pending at open (the daemon, after a crash). `false`
    /// for the technician's commands that write while the daemon may be uploading (`pair`,
    /// `unpair`): its in-flight entries are its own.
    pub recover_in_flight: bool,
    /// Leave SQLite's `quick_check` (which reads every page: it grows with the stored history)
    /// out of the open, for [`Store::check_integrity`] to run beside the running store — the
    /// daemon runs it right after READY. Unless a check failed since ([`CHECK_FAILED_MARKER`]
    /// exists): then the open checks, as without this. A file that is not a database is refused
    /// at open either way (its first statement fails).
    pub defer_integrity_check: bool,
    /// How long a security report stays open, counting events of its code, before it is uploaded
    /// ([`security`]); in ms.
    pub security_window_ms: i64,
}

/// The file beside `store.db` that a failed [`Store::check_integrity`] leaves: the next open runs
/// `quick_check` itself and, if it fails again, moves the database aside (removed once a check at
/// open passes or the database was moved).
pub const CHECK_FAILED_MARKER: &str = "store.db.check-failed";

/// The file `vitals-hub wipe` leaves in the state directory after erasing the store: the next open
/// records a `wipe` security event in the new store (so the clinic learns of it) and removes the
/// file. It holds the wipe's time (ms since the epoch) and nothing else.
pub const WIPED_MARKER: &str = "store.db.wiped";

impl StoreConfig {
    /// Defaults for `state_dir`, with the KEK from `$CREDENTIALS_DIRECTORY` or `<state_dir>/keys/kek`.
    pub fn new(state_dir: impl Into<PathBuf>) -> StoreConfig {
        let state_dir = state_dir.into();
        StoreConfig {
            kek: KekSource::from_env(&state_dir),
            state_dir,
            size_limit: 1 << 30,
            retention: 30 * 24 * 3_600_000,
            rotate_after_seals: 1 << 30,
            patient_id: None,
            sqlite_max_pages: None,
            read_only: false,
            recover_in_flight: true,
            defer_integrity_check: false,
            security_window_ms: security::DEFAULT_WINDOW_MS,
        }
    }

    /// The store as the hub's configuration sets it up (the daemon, `sync`, `status`, the
    /// technician's commands): `[hub] state_dir` and `patient_id`, `[store] size_limit_mb` and
    /// `retention_days`; the KEK from `$CREDENTIALS_DIRECTORY` or `<state_dir>/keys/kek`. Chain
    /// [`StoreConfig::read_only`] or set [`StoreConfig::recover_in_flight`] as the caller needs.
    pub fn for_hub(
        state_dir: impl Into<PathBuf>,
        patient_id: &str,
        size_limit_mb: u64,
        retention_days: u32,
    ) -> StoreConfig {
        StoreConfig {
            size_limit: size_limit_mb.saturating_mul(1 << 20),
            retention: i64::from(retention_days) * 86_400_000,
            patient_id: Some(patient_id.to_owned()),
            ..StoreConfig::new(state_dir)
        }
    }

    /// The database file.
    pub fn db_path(&self) -> PathBuf {
        self.state_dir.join("store.db")
    }

    /// The same store, opened for reading only (see [`StoreConfig::read_only`]).
    pub fn read_only(mut self) -> StoreConfig {
        self.read_only = true;
        self
    }
}

/// What the hub knows about an allow-listed device. All of it is sealed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// Bluetooth address, e.g. `C0:26:DA:01:02:03`; looked up by keyed hash.
    pub address: String,
    pub name: Option<String>,
    /// The health profile, e.g. `glucose`.
    pub profile: String,
    /// The patient this device's readings belong to.
    pub patient_binding: Option<String>,
    pub serial: Option<String>,
    /// Bond information as the BLE layer keeps it (opaque here).
    pub bond: Option<String>,
}

/// A device as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub key: DeviceKey,
    pub allowed: bool,
    pub record: DeviceRecord,
}

/// A reading of a multi-user device's other user, to be held for assignment (never uploaded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewHeld {
    /// The device's user index the reading carries (not the patient's).
    pub user_id: u8,
    pub reading: Reading,
    pub received_at: UtcMillis,
    /// As for [`NewReading::stable_key`]; kept when the reading is assigned.
    pub stable_key: String,
}

/// A held reading as stored, opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredHeld {
    /// What [`Store::assign_held`] and [`Store::discard_held`] take.
    pub id: i64,
    pub uuid: String,
    pub device: DeviceKey,
    pub user_id: u8,
    pub reading: Reading,
    pub received_at: UtcMillis,
    pub stable_key: String,
}

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppendOutcome {
    /// The store id of each item, in order; for a duplicate, the id stored before.
    pub ids: Vec<i64>,
    /// How many items were already stored.
    pub duplicates: usize,
}

/// Sealed state derived from the readings (see `db/snapshots.rs`): `state` is the caller's, valid
/// for every reading with an id up to `covers` and none after.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub name: String,
    pub covers: i64,
    pub state: serde_json::Value,
}

/// A reading as stored, opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReading {
    pub id: i64,
    pub uuid: String,
    pub device: DeviceKey,
    pub reading: Reading,
    pub received_at: UtcMillis,
    pub stable_key: String,
    pub test_data: bool,
    pub patient_id: Option<String>,
    /// See [`NewReading::summary`]; `None` for rows written before it existed.
    pub summary: Option<ReadingSummary>,
}

/// An alert as stored, opened.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAlert {
    pub id: i64,
    pub uuid: String,
    pub payload: serde_json::Value,
    pub stable_key: String,
    pub related: Vec<i64>,
}

/// What an outbox entry carries.
#[derive(Debug, Clone, PartialEq)]
pub enum OutboxPayload {
    Reading(StoredReading),
    /// An alert, or a security report (`payload.security_report`, see [`security`]): both go up
    /// as one resource each.
    Alert(StoredAlert),
}

/// Upload state of an outbox entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxState {
    Pending,
    InFlight,
    Acked,
    Rejected,
    /// Its record could not be turned into an upload (failed authentication, did not decode, was
    /// missing, or the uplink could not build a request from it); kept for investigation, never
    /// uploaded.
    Quarantined,
}

impl OutboxState {
    pub fn as_str(&self) -> &'static str {
        match self {
            OutboxState::Pending => "pending",
            OutboxState::InFlight => "in_flight",
            OutboxState::Acked => "acked",
            OutboxState::Rejected => "rejected",
            OutboxState::Quarantined => "quarantined",
        }
    }
}

/// One entry due for upload.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxItem {
    /// The outbox id: what `mark_in_flight`, `ack`, `retry` and `reject` take.
    pub id: i64,
    pub attempts: u32,
    pub payload: OutboxPayload,
}

/// An audit or security event. The detail never holds PHI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub id: i64,
    pub at: UtcMillis,
    pub kind: String,
    /// `info`, `warning`, `error` or `security`.
    pub severity: String,
    pub detail: String,
}

/// The clinic's alert-limits version in force on the hub (schema v5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLimits {
    pub version: u32,
    pub applied_at: UtcMillis,
    /// The limits `ServiceRequest` as the clinic sent it (JSON text).
    pub resource: String,
}

/// A clinic alert-limits version accepted but not yet in force: it takes effect at `effective`
/// (schema v7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingLimits {
    pub version: u32,
    pub effective: UtcMillis,
    /// The limits `ServiceRequest` as the clinic sent it (JSON text).
    pub resource: String,
}

/// Counters for health reporting.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Stats {
    pub pending: u64,
    pub in_flight: u64,
    pub acked: u64,
    pub rejected: u64,
    pub quarantined: u64,
    /// Alerts among pending + in flight.
    pub alerts_waiting: u64,
    /// Coarse (minute) creation time of the oldest entry not yet acked or rejected.
    pub oldest_waiting: Option<UtcMillis>,
    pub bytes_used: u64,
    pub size_limit: u64,
    pub active_key_id: i64,
    pub active_key_seals: u64,
    /// Readings held (until acked and past retention).
    pub readings: u64,
    /// Alerts held.
    pub alerts: u64,
    /// Security reports still collecting events (their window open): outbox entries not yet
    /// due, counted here and not in `pending` or `oldest_waiting` (see [`security`]).
    pub security_open: u64,
}

/// What a data-key rotation did.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct RotationReport {
    pub new_key_id: i64,
    pub rows_reencrypted: u64,
    pub keys_deleted: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn for_hub_takes_the_config_values() {
        let c = StoreConfig::for_hub("/var/lib/vitals-hub", "pat-1", 64, 7);
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/vitals-hub"));
        assert_eq!(c.size_limit, 64 << 20);
        assert_eq!(c.retention, 7 * 86_400_000);
        assert_eq!(c.patient_id.as_deref(), Some("pat-1"));
        assert!(!c.read_only && c.recover_in_flight);
        assert_eq!(c.db_path(), PathBuf::from("/var/lib/vitals-hub/store.db"));
        assert!(StoreConfig::for_hub("/x", "p", u64::MAX, 1).size_limit == u64::MAX);
    }
}
