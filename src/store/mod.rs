//! The encrypted store-and-forward store: the only hand-over point between ingest and upload.
//!
//! # Design note
//!
//! **Shape.** One SQLite database `<state_dir>/store.db` (rusqlite, bundled SQLite), one connection,
//! owned by one OS thread (the private `db` module). [`Store`] is the async handle: every call is a closure sent over a
//! bounded channel and answered on a oneshot, so nothing blocks the tokio runtime and all writes are
//! serialised without locks. Other processes (`vitals-hub keys rotate`) may open the same file; SQLite's
//! locking plus `busy_timeout` serialises them, and the worker reloads its key cache whenever
//! `PRAGMA data_version` says another connection committed.
//!
//! **Schema** ([`schema`], `PRAGMA user_version`, currently 4):
//!
//! | table | plain columns | sealed (AEAD) columns |
//! |---|---|---|
//! | `keys` | id, purpose (`data`/`index`), state (`active`/`retired`), KEK fingerprint, seal count, created | `wrapped` (the key, sealed by the KEK — not by a data key) |
//! | `devices` | id, uuid, `address_hash` (HMAC), allowed, key id, created/updated minute | `sealed`: address, name, profile, patient binding, serial, bond info |
//! | `cursors` | device id, cursor name, value (e.g. last RACP sequence number), updated minute | — |
//! | `readings` | id, uuid, device id, `dedup` (HMAC of the stable key), received minute, key id | `sealed`: the `model::Reading` (value, unit, device time, flags…), exact receive time, stable key, test flag, patient id, a stream window's count/min/max |
//! | `alerts` | id, uuid, `dedup` (HMAC), created minute, key id | `sealed`: alert JSON, stable key, related reading ids |
//! | `outbox` | id, item kind + id, priority, state, attempts, next attempt, created minute, done time, key id | `last_error` (a server's reason may echo PHI) |
//! | `events` | id, time, kind, severity, detail | — (details never carry PHI: ids, counts, table names) |
//! | `meta` | name, value | — |
//! | `device_info` (v3) | id, device uuid, key id, updated minute | `sealed`: [`DeviceInfo`] (system id, manufacturer, model, revisions, clock check, battery, last seen) |
//! | `uplink_state` (v3) | destination, name, value (server logical ids such as `Device/12`, heartbeat times) | — |
//! | `held` (v4) | id, uuid, device id, `dedup` (HMAC of the stable key), state (`held`/`discarded`/`assigned`), received minute, key id | `sealed` (NULL once discarded or assigned): user index, the `model::Reading`, exact receive time, stable key |
//!
//! What an attacker with the file alone learns (the documented leakage): how many devices, readings and
//! alerts exist, in which upload state, at minute resolution when they arrived, sizes of the sealed
//! payloads, cursor values (record counters), and the audit events. Not values, not kinds or units,
//! not device timestamps, not the patient id, not device addresses or serials.
//!
//! **Encryption** ([`crypto`]). Key hierarchy KEK → data keys + one index key. Every sealed value is
//! `nonce ‖ ciphertext ‖ tag` with ChaCha20-Poly1305 and a random 96-bit nonce; its associated data is
//! `vitals-hub/v1|phi|table|column|row uuid|key id`, so a ciphertext pasted into another row fails to
//! open. That is reported as [`StoreError::Integrity`] naming table, column and row, recorded as a
//! security event, and the outbox entry is quarantined — never skipped silently. Seals are counted per
//! data key in the same transaction as the rows they sealed; at [`StoreConfig::rotate_after_seals`]
//! (default 2^30, a quarter of the 2^32 random-nonce bound) a new data key becomes active
//! automatically. Deduplication and device lookup use HMAC-SHA256 with the index key, never plaintext.
//! Why ChaCha20-Poly1305: the Pi 4's Cortex-A72 has no AES instructions and ring falls back to a
//! constant-time software AES that is several times slower; `vitals-hub bench store` prints both.
//!
//! **Durability.** WAL with `synchronous=FULL`: every commit is fsync'd before the call returns; a
//! reading's row, its outbox entry and the device's download cursor commit in one transaction, so a
//! cursor never covers readings that are not on disk. `temp_store=MEMORY` (no temp files),
//! `secure_delete=FAST`, `journal_size_limit` bounds the WAL after checkpoints. On open: `quick_check`
//! (a corrupt file is renamed to `store.db.corrupt-<ms>`, never deleted, and a fresh store starts with
//! an event), migrations, then every `in_flight` outbox entry returns to `pending`. A read-only open
//! ([`StoreConfig::read_only`], for `status` and `export` beside the running daemon) does none of
//! that: it opens SQLite with `SQLITE_OPEN_READ_ONLY`, requires the current schema, and only reads
//! (WAL readers never block the daemon's writer).
//!
//! **Outbox.** `pending → in_flight → acked | rejected` (and `pending ← in_flight` on retry or restart;
//! `quarantined` when a row fails authentication). [`Store::pending`] returns alerts first, then the
//! oldest readings, only entries whose next attempt is due. Delivery is at-least-once; the uplink's
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
//! **Invariants.** (1) A call that returned `Ok` committed and fsync'd. (2) A stable key is stored
//! at most once. (3) Every reading and alert has exactly one outbox entry. (4) Plaintext PHI never reaches
//! the database, its WAL, temp files or logs at INFO and above. (5) Only the KEK's fingerprint is stored.

pub mod crypto;
mod db;
pub mod keyfile;
pub mod schema;
mod tag;

use crate::model::{Clock, Reading, UtcMillis};
// Plain data that `ble`, `uplink` and the store share lives in `model` (ble imports no store).
pub use crate::model::device::{ClockSample, DeviceInfo, DeviceKey, NewReading, ReadingSummary};
pub use crypto::CryptoError;
pub use keyfile::{KekSource, KeyFileError};
pub use schema::SchemaError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

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
}

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
    /// Its record failed authentication; kept for investigation, never uploaded.
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
}

/// What a data-key rotation did.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct RotationReport {
    pub new_key_id: i64,
    pub rows_reencrypted: u64,
    pub keys_deleted: u64,
}

type Job = Box<dyn FnOnce(&mut db::Db) + Send>;

/// The async handle to the store. Cheap to clone; the worker stops when the last handle is dropped.
#[derive(Debug, Clone)]
pub struct Store {
    tx: mpsc::Sender<Job>,
    done: Arc<tokio::sync::Mutex<Option<oneshot::Receiver<()>>>>,
    path: PathBuf,
}

impl Store {
    /// Open (or create) the store, on its own thread.
    pub async fn open(config: StoreConfig, clock: Arc<dyn Clock>) -> Result<Store> {
        let path = config.db_path();
        let (tx, mut rx) = mpsc::channel::<Job>(256);
        let (ready_tx, ready_rx) = oneshot::channel::<Result<()>>();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("vitals-store".into())
            .spawn(move || {
                match db::Db::open(config, clock) {
                    Ok(mut db) => {
                        let _ = ready_tx.send(Ok(()));
                        while let Some(job) = rx.blocking_recv() {
                            job(&mut db);
                        }
                        drop(db);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
                let _ = done_tx.send(());
            })
            .map_err(|source| StoreError::Io {
                path: path.clone(),
                source,
            })?;
        ready_rx.await.map_err(|_| StoreError::Closed)??;
        Ok(Store {
            tx,
            done: Arc::new(tokio::sync::Mutex::new(Some(done_rx))),
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut db::Db) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (otx, orx) = oneshot::channel();
        self.tx
            .send(Box::new(move |db| {
                let _ = otx.send(f(db));
            }))
            .await
            .map_err(|_| StoreError::Closed)?;
        orx.await.map_err(|_| StoreError::Closed)?
    }

    /// Close: wait until the worker has finished every queued call and closed the database.
    /// Other clones of this handle must be dropped first, or this waits for them.
    pub async fn close(self) {
        let done = self.done.lock().await.take();
        drop(self.tx);
        if let Some(done) = done {
            let _ = done.await;
        }
    }

    /// Add a device to the allow-list, or update what is known about it (matched by address).
    pub async fn upsert_device(&self, record: DeviceRecord, allowed: bool) -> Result<DeviceKey> {
        self.call(move |db| db.upsert_device(&record, allowed))
            .await
    }

    /// Per device: how many of its readings the clinic acknowledged, and when the last was.
    pub async fn acked_by_device(
        &self,
    ) -> Result<std::collections::HashMap<DeviceKey, (u64, Option<UtcMillis>)>> {
        let rows = self.call(|db| db.acked_by_device()).await?;
        Ok(rows
            .into_iter()
            .map(|(k, n, t)| (DeviceKey(k), (n, t.map(UtcMillis))))
            .collect())
    }

    /// When each device's latest stored reading arrived (minute resolution; plain in the file).
    pub async fn last_received(&self) -> Result<std::collections::HashMap<DeviceKey, UtcMillis>> {
        let rows = self.call(|db| db.last_received()).await?;
        Ok(rows.into_iter().map(|(k, t)| (DeviceKey(k), t)).collect())
    }

    /// The device with this Bluetooth address.
    pub async fn device_by_address(&self, address: &str) -> Result<Option<Device>> {
        let address = address.to_owned();
        self.call(move |db| db.device_by_address(&address)).await
    }

    /// Every device.
    pub async fn devices(&self) -> Result<Vec<Device>> {
        self.call(|db| db.devices()).await
    }

    /// A device's download cursor.
    pub async fn cursor(&self, device: &DeviceKey, name: &str) -> Result<Option<i64>> {
        let (device, name) = (device.clone(), name.to_owned());
        self.call(move |db| db.cursor(&device, &name)).await
    }

    /// Append readings from one device, and optionally move its download cursor, in one committed
    /// transaction. Returns after the commit is on disk.
    pub async fn append(
        &self,
        device: &DeviceKey,
        items: Vec<NewReading>,
        cursor: Option<(String, i64)>,
    ) -> Result<AppendOutcome> {
        let device = device.clone();
        self.call(move |db| db.append(&device, &items, cursor.as_ref()))
            .await
    }

    /// Append an alert; it is uploaded ahead of readings. Returns its id and whether it was a duplicate.
    pub async fn append_alert(
        &self,
        payload: serde_json::Value,
        stable_key: &str,
        related: Vec<i64>,
    ) -> Result<(i64, bool)> {
        let key = stable_key.to_owned();
        self.call(move |db| db.append_alert(&payload, &key, &related))
            .await
    }

    /// Up to `batch` entries due at `now`: alerts first, then oldest first; payloads opened.
    pub async fn pending(&self, batch: usize, now: UtcMillis) -> Result<Vec<OutboxItem>> {
        self.call(move |db| db.pending(batch, now)).await
    }

    /// Pending → in flight (counts an attempt). Returns how many moved.
    pub async fn mark_in_flight(&self, ids: Vec<i64>) -> Result<usize> {
        self.call(move |db| db.mark_in_flight(&ids)).await
    }

    /// Pending or in flight → acked. Returns how many moved.
    pub async fn ack(&self, ids: Vec<i64>) -> Result<usize> {
        self.call(move |db| db.ack(&ids)).await
    }

    /// Back to pending with the error and the time of the next attempt.
    pub async fn retry(
        &self,
        ids: Vec<i64>,
        error: &str,
        next_attempt: UtcMillis,
    ) -> Result<usize> {
        let error = error.to_owned();
        self.call(move |db| db.retry(&ids, &error, next_attempt))
            .await
    }

    /// Pending or in flight → rejected (kept, never retried).
    /// Make every pending entry due now, whatever its backoff (`vitals-hub sync --now`).
    pub async fn due_now(&self, now: UtcMillis) -> Result<usize> {
        self.call(move |db| db.due_now(now)).await
    }

    pub async fn reject(&self, ids: Vec<i64>, reason: &str) -> Result<usize> {
        let reason = reason.to_owned();
        self.call(move |db| db.reject(&ids, &reason)).await
    }

    /// Hold a reading of another user of a multi-user device: sealed, never in the outbox. Returns
    /// its id and whether the stable key was seen before (held, discarded or assigned already, or
    /// stored as a reading), in which case nothing was written.
    pub async fn hold(&self, device: &DeviceKey, item: NewHeld) -> Result<(i64, bool)> {
        let device = device.clone();
        self.call(move |db| db.hold(&device, &item)).await
    }

    /// Up to `limit` held readings, oldest first, opened.
    pub async fn held(&self, limit: usize) -> Result<Vec<StoredHeld>> {
        self.call(move |db| db.held(limit)).await
    }

    /// Drop a held reading (it was not the patient's). Its dedup hash stays, so the device sending
    /// it again does not bring it back. Returns whether a held reading was discarded.
    pub async fn discard_held(&self, id: i64) -> Result<bool> {
        self.call(move |db| db.discard_held(id)).await
    }

    /// Move a held reading into the patient's readings and the outbox, with its stable key, in one
    /// transaction. Returns the reading's id; [`StoreError::Invalid`] if `id` is not held.
    pub async fn assign_held(&self, id: i64) -> Result<i64> {
        self.call(move |db| db.assign_held(id)).await
    }

    /// Readings with id > `after`, oldest first, opened.
    pub async fn readings(&self, after: i64, limit: usize) -> Result<Vec<StoredReading>> {
        self.call(move |db| db.readings(after, limit)).await
    }

    /// The latest events, newest first.
    pub async fn events(&self, limit: usize) -> Result<Vec<Event>> {
        self.call(move |db| db.events(limit)).await
    }

    pub async fn stats(&self) -> Result<Stats> {
        self.call(|db| db.stats()).await
    }

    /// Remove acked data older than the retention period, in short transactions. Returns rows removed.
    pub async fn prune(&self, now: UtcMillis) -> Result<u64> {
        let mut total = 0u64;
        loop {
            let n = self.call(move |db| db.prune_batch(now, 500)).await?;
            total += n;
            if n == 0 {
                return Ok(total);
            }
        }
    }

    /// `PRAGMA integrity_check`: `"ok"` or SQLite's findings.
    pub async fn integrity_check(&self) -> Result<String> {
        self.call(|db| db.integrity_check()).await
    }

    /// Change the size limit and SQLite's page limit at run time (tests; a config reload).
    pub async fn set_limits(&self, size_limit: u64, sqlite_max_pages: Option<u32>) -> Result<()> {
        self.call(move |db| db.set_limits(size_limit, sqlite_max_pages))
            .await
    }

    /// New data key; re-encrypt every row in batches of `batch` (each its own short transaction, so
    /// appends interleave); delete keys no row uses any more.
    pub async fn rotate_data_key(&self, batch: usize) -> Result<RotationReport> {
        let new_key_id = self.call(|db| db.begin_data_key_rotation()).await?;
        let mut rows = 0u64;
        loop {
            let n = self
                .call(move |db| db.reencrypt_batch(batch.max(1)))
                .await?;
            if n == 0 {
                break;
            }
            rows += n;
            tokio::task::yield_now().await;
        }
        let keys_deleted = self.call(|db| db.delete_unused_keys()).await?;
        Ok(RotationReport {
            new_key_id,
            rows_reencrypted: rows,
            keys_deleted,
        })
    }

    /// Record what is known about a device (DIS, clock check, battery); replaces the previous info.
    pub async fn set_device_info(&self, device: &DeviceKey, info: DeviceInfo) -> Result<()> {
        let device = device.clone();
        self.call(move |db| db.set_device_info(&device, &info))
            .await
    }

    /// What is known about a device beyond its record, if anything.
    pub async fn device_info(&self, device: &DeviceKey) -> Result<Option<DeviceInfo>> {
        let device = device.clone();
        self.call(move |db| db.device_info(&device)).await
    }

    /// Per-destination upload state (e.g. `device:<key>` → `Device/12`); never PHI.
    pub async fn uplink_state(&self, destination: &str, name: &str) -> Result<Option<String>> {
        let (d, n) = (destination.to_owned(), name.to_owned());
        self.call(move |db| db.uplink_state(&d, &n)).await
    }

    /// Set per-destination upload state.
    pub async fn set_uplink_state(&self, destination: &str, name: &str, value: &str) -> Result<()> {
        let (d, n, v) = (destination.to_owned(), name.to_owned(), value.to_owned());
        self.call(move |db| db.set_uplink_state(&d, &n, &v)).await
    }

    /// Record an audit event (the uplink's TLS and delivery events). `detail` must not hold PHI.
    pub async fn append_event(
        &self,
        kind: &'static str,
        severity: &'static str,
        detail: String,
    ) -> Result<()> {
        self.call(move |db| db.append_event(kind, severity, detail))
            .await
    }

    /// New KEK: re-wrap every key and replace the key file atomically. Returns the new fingerprint.
    pub async fn rotate_kek(&self) -> Result<String> {
        self.call(|db| db.rotate_kek()).await
    }
}
