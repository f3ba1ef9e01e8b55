//! The store's one connection and everything done on it; runs on the store's own thread.
//!
//! Every write is `BEGIN IMMEDIATE … COMMIT` on this connection. Inside the transaction the key cache
//! is refreshed if another connection committed (`PRAGMA data_version`), rows are sealed with the
//! active data key, the seal counter and queued events are written, and only then is it committed.

use super::crypto::{self, DataKey, IndexKey, Kek, Place};
use super::keyfile::{self, KekSource};
use super::schema;
use super::{
    AppendOutcome, Device, DeviceInfo, DeviceKey, DeviceRecord, Event, NewHeld, NewReading,
    OutboxItem, OutboxPayload, ReadingSummary, Result, Stats, StoreConfig, StoreError, StoredAlert,
    StoredHeld, StoredReading,
};
use crate::model::{Clock, Reading, UtcMillis};
use ring::rand::{SecureRandom, SystemRandom};
use rusqlite::{params, Connection, ErrorCode, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::{error, info, warn};

/// Priority of outbox entries: lower goes first.
const PRIORITY_ALERT: i64 = 0;
const PRIORITY_READING: i64 = 1;
/// Events kept by pruning.
const EVENTS_KEPT: i64 = 10_000;

#[derive(Serialize, Deserialize)]
struct ReadingEnvelope {
    reading: Reading,
    received_at: UtcMillis,
    stable_key: String,
    test_data: bool,
    patient_id: Option<String>,
    /// Absent in rows written before summaries were stored; omitted when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    summary: Option<ReadingSummary>,
}

/// The sealed payload of a `held` row.
#[derive(Serialize, Deserialize)]
struct HeldEnvelope {
    user_id: u8,
    reading: Reading,
    received_at: UtcMillis,
    stable_key: String,
}

#[derive(Serialize, Deserialize)]
struct AlertEnvelope {
    payload: serde_json::Value,
    stable_key: String,
    related: Vec<i64>,
}

/// An event waiting to be written (it is written in the next transaction that commits).
#[derive(Debug, Clone)]
struct QueuedEvent {
    at: UtcMillis,
    kind: &'static str,
    severity: &'static str,
    detail: String,
}

#[derive(Debug, Default)]
struct KeyRing {
    data: HashMap<i64, DataKey>,
    active: Option<i64>,
    active_seals: u64,
    index: Option<IndexKey>,
}

#[derive(Debug)]
pub(crate) struct Db {
    conn: Connection,
    path: PathBuf,
    cfg: StoreConfig,
    clock: Arc<dyn Clock>,
    rng: SystemRandom,
    kek: Kek,
    keys: KeyRing,
    data_version: i64,
    tx_seals: u64,
    queued: Vec<QueuedEvent>,
    capacity_warned: bool,
    full_reported: bool,
    disk_full_reported: bool,
    page_size: u64,
}

fn is_code(e: &rusqlite::Error, code: ErrorCode) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == code)
}

fn is_corruption(e: &rusqlite::Error) -> bool {
    is_code(e, ErrorCode::DatabaseCorrupt) || is_code(e, ErrorCode::NotADatabase)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A UUIDv7: 48-bit millisecond time, then random bits. Time-ordered, so the `uuid` unique index is
/// appended to at its right edge instead of being rewritten at random pages (SD-card wear, WAL size).
/// The minute-coarse time is plain anyway; the millisecond part leaks little more.
fn new_uuid(rng: &dyn SecureRandom, now: UtcMillis) -> Result<String> {
    let mut b = [0u8; 16];
    rng.fill(&mut b)
        .map_err(|_| StoreError::Crypto(crypto::CryptoError::Random))?;
    let ms = u64::try_from(now.as_millis()).unwrap_or(0).to_be_bytes();
    for (dst, src) in b.iter_mut().zip(ms.iter().skip(2)) {
        *dst = *src;
    }
    if let Some(v) = b.get_mut(6) {
        *v = (*v & 0x0f) | 0x70;
    }
    if let Some(v) = b.get_mut(8) {
        *v = (*v & 0x3f) | 0x80;
    }
    let h = hex(&b);
    let part = |a: usize, z: usize| h.get(a..z).unwrap_or_default().to_owned();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        part(0, 8),
        part(8, 12),
        part(12, 16),
        part(16, 20),
        part(20, 32)
    ))
}

/// Open and configure a connection; an error here may mean corruption.
fn open_conn(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        warn!(mode = %mode, "SQLite did not switch to WAL.");
    }
    conn.execute_batch(
        "PRAGMA synchronous=FULL;
         PRAGMA foreign_keys=ON;
         PRAGMA temp_store=MEMORY;
         PRAGMA secure_delete=FAST;
         PRAGMA journal_size_limit=67108864;",
    )?;
    let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if check != "ok" {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            Some(format!("quick_check: {check}")),
        ));
    }
    Ok(conn)
}

/// Rename the database and its WAL/SHM aside as `<name>.corrupt-<ms>`; returns the new db path.
fn move_aside(path: &Path, now: UtcMillis) -> Result<PathBuf> {
    let aside = |suffix: &str| {
        let mut s = path.as_os_str().to_owned();
        s.push(suffix);
        PathBuf::from(s)
    };
    let target = aside(&format!(".corrupt-{}", now.as_millis()));
    for ext in ["", "-wal", "-shm"] {
        let from = aside(ext);
        if from.exists() {
            let mut to = target.as_os_str().to_owned();
            to.push(ext);
            fs::rename(&from, PathBuf::from(to)).map_err(|source| StoreError::Io {
                path: from.clone(),
                source,
            })?;
        }
    }
    keyfile::sync_parent(path)?;
    Ok(target)
}

impl Db {
    /// Open an existing store for reading only: nothing on disk is created, migrated or reset.
    fn open_read_only(cfg: StoreConfig, clock: Arc<dyn Clock>) -> Result<Db> {
        let path = cfg.db_path();
        if !path.exists() {
            return Err(StoreError::Invalid(format!(
                "there is no store at {}; check the state directory in the config (the daemon \
                 creates the store when it first runs)",
                path.display()
            )));
        }
        let kek = Kek::new(&keyfile::read_checked(cfg.kek.path())?)?;
        let conn = Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let found = schema::version(&conn)?;
        if found != schema::LATEST {
            return Err(StoreError::Invalid(format!(
                "the store {} has schema {found} and this binary reads schema {}; run the daemon \
                 of this version once (it migrates the store) or use the matching vitals-hub",
                path.display(),
                schema::LATEST
            )));
        }
        let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let mut db = Db {
            conn,
            path,
            cfg,
            clock,
            rng: SystemRandom::new(),
            kek,
            keys: KeyRing::default(),
            data_version: 0,
            tx_seals: 0,
            queued: Vec::new(),
            capacity_warned: false,
            full_reported: false,
            disk_full_reported: false,
            page_size: u64::try_from(page_size).unwrap_or(4096),
        };
        db.load_keys()?;
        db.data_version = db.conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
        Ok(db)
    }

    pub(crate) fn open(cfg: StoreConfig, clock: Arc<dyn Clock>) -> Result<Db> {
        if cfg.read_only {
            return Db::open_read_only(cfg, clock);
        }
        let dir = &cfg.state_dir;
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| StoreError::Io {
                    path: dir.clone(),
                    source,
                })?;
        }
        let rng = SystemRandom::new();
        let (kek_bytes, kek_created) = keyfile::load_or_create(&cfg.kek, &rng)?;
        let kek = Kek::new(&kek_bytes)?;
        let path = cfg.db_path();
        let now = clock.now();
        let mut queued = Vec::new();
        if kek_created {
            queued.push(QueuedEvent {
                at: now,
                kind: "kek_created",
                severity: "security",
                detail: format!("new KEK {} ({})", kek.id(), cfg.kek.path().display()),
            });
        }
        let conn = match open_conn(&path) {
            Ok(c) => c,
            Err(e) if is_corruption(&e) => {
                let moved = move_aside(&path, now)?;
                error!(path = %path.display(), moved_to = %moved.display(), "Store database is corrupt; moved it aside and started a fresh one.");
                queued.push(QueuedEvent {
                    at: now,
                    kind: "corrupt_database_moved",
                    severity: "error",
                    detail: format!("{e}; moved to {}", moved.display()),
                });
                open_conn(&path)?
            }
            Err(e) => return Err(e.into()),
        };
        let mut conn = conn;
        let found = schema::migrate(&mut conn)?;
        let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let page_size = u64::try_from(page_size).unwrap_or(4096);
        let mut db = Db {
            conn,
            path,
            cfg,
            clock,
            rng,
            kek,
            keys: KeyRing::default(),
            data_version: 0,
            tx_seals: 0,
            queued,
            capacity_warned: false,
            full_reported: false,
            disk_full_reported: false,
            page_size,
        };
        db.apply_page_limit()?;
        db.write(|db| {
            db.load_keys()?;
            if db.keys.index.is_none() {
                db.create_key("index")?;
            }
            if db.keys.active.is_none() {
                db.create_key("data")?;
            }
            db.load_keys()?;
            let n = if db.cfg.recover_in_flight {
                db.conn.execute(
                    "UPDATE outbox SET state = 'pending' WHERE state = 'in_flight'",
                    [],
                )?
            } else {
                0
            };
            if n > 0 {
                db.queue(
                    "inflight_recovered",
                    "info",
                    format!("{n} in-flight entries returned to pending"),
                );
            }
            db.queue(
                "store_opened",
                "info",
                format!("schema {found} -> {}", schema::LATEST),
            );
            Ok(())
        })?;
        db.data_version = db.conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
        info!(path = %db.path.display(), schema = schema::LATEST, "Store opened.");
        Ok(db)
    }

    fn apply_page_limit(&mut self) -> Result<()> {
        let pages = match self.cfg.sqlite_max_pages {
            Some(p) => u64::from(p),
            None => (self.cfg.size_limit / self.page_size.max(1)).saturating_mul(11) / 10 + 64,
        };
        self.conn
            .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
            .optional()?;
        Ok(())
    }

    pub(crate) fn set_limits(&mut self, size_limit: u64, max_pages: Option<u32>) -> Result<()> {
        self.cfg.size_limit = size_limit;
        self.cfg.sqlite_max_pages = max_pages;
        self.apply_page_limit()
    }

    fn queue(&mut self, kind: &'static str, severity: &'static str, detail: String) {
        self.queued.push(QueuedEvent {
            at: self.clock.now(),
            kind,
            severity,
            detail,
        });
    }

    // ---- transactions

    /// Run `f` in a write transaction; commit; map a full disk to [`StoreError::DiskFull`].
    fn write<T>(&mut self, f: impl FnOnce(&mut Db) -> Result<T>) -> Result<T> {
        let r = self.write_inner(f);
        match r {
            Ok(t) => {
                if self.disk_full_reported {
                    self.disk_full_reported = false;
                    info!("Disk space is back; the store resumed.");
                    self.queue("disk_full_cleared", "info", "writes succeed again".into());
                }
                Ok(t)
            }
            Err(StoreError::Sqlite(e)) if is_code(&e, ErrorCode::DiskFull) => {
                if !self.disk_full_reported {
                    self.disk_full_reported = true;
                    error!(path = %self.path.display(), "Disk full: a store transaction was rolled back.");
                    self.queue(
                        "disk_full",
                        "error",
                        "SQLITE_FULL: a transaction was rolled back".into(),
                    );
                }
                Err(StoreError::DiskFull {
                    path: self.path.clone(),
                })
            }
            Err(e) => Err(e),
        }
    }

    fn write_inner<T>(&mut self, f: impl FnOnce(&mut Db) -> Result<T>) -> Result<T> {
        if self.cfg.read_only {
            return Err(StoreError::Invalid(
                "the store was opened read-only (status, export); writes go through the daemon"
                    .into(),
            ));
        }
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        self.tx_seals = 0;
        let body = (|| {
            self.refresh_keys()?;
            let t = f(self)?;
            if self.tx_seals > 0 {
                if let Some(active) = self.keys.active {
                    self.conn.execute(
                        "UPDATE keys SET seals = seals + ?1 WHERE id = ?2",
                        params![i64::try_from(self.tx_seals).unwrap_or(i64::MAX), active],
                    )?;
                }
            }
            for ev in &self.queued {
                self.conn.execute(
                    "INSERT INTO events(at, kind, severity, detail) VALUES (?1, ?2, ?3, ?4)",
                    params![ev.at.as_millis(), ev.kind, ev.severity, ev.detail],
                )?;
            }
            self.conn.execute_batch("COMMIT")?;
            Ok(t)
        })();
        match body {
            Ok(t) => {
                self.queued.clear();
                self.keys.active_seals = self.keys.active_seals.saturating_add(self.tx_seals);
                self.tx_seals = 0;
                self.data_version = self
                    .conn
                    .query_row("PRAGMA data_version", [], |r| r.get(0))?;
                self.maybe_auto_rotate()?;
                Ok(t)
            }
            Err(e) => {
                self.tx_seals = 0;
                if !self.conn.is_autocommit() {
                    if let Err(re) = self.conn.execute_batch("ROLLBACK") {
                        warn!(error = %re, "Rollback failed.");
                    }
                }
                Err(e)
            }
        }
    }

    /// Write queued events now (after a read path queued a security event).
    fn flush_events(&mut self) {
        // A read-only handle keeps its events in memory (`events` still returns them).
        if self.queued.is_empty() || self.cfg.read_only {
            return;
        }
        if let Err(e) = self.write(|_| Ok(())) {
            warn!(error = %e, events = self.queued.len(), "Events could not be written yet; kept in memory.");
        }
    }

    fn maybe_auto_rotate(&mut self) -> Result<()> {
        if self.keys.active_seals >= self.cfg.rotate_after_seals {
            let old = self.keys.active;
            let new = self.begin_data_key_rotation()?;
            info!(old_key = ?old, new_key = new, "Data key reached its seal budget; rotated.");
        }
        Ok(())
    }

    // ---- keys

    fn refresh_keys(&mut self) -> Result<()> {
        let v: i64 = self
            .conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))?;
        if v != self.data_version || self.keys.active.is_none() {
            self.load_keys()?;
            self.data_version = v;
        }
        Ok(())
    }

    /// A KEK file rotated by another process, or staged by a rotation that crashed before its rename.
    fn find_kek(&mut self, expected: &str) -> Result<()> {
        if self.kek.id() == expected {
            return Ok(());
        }
        if let KekSource::File(p) = &self.cfg.kek {
            let staged = keyfile::staged_path(p);
            if staged.exists() {
                let k = Kek::new(&keyfile::read_checked(&staged)?)?;
                if k.id() == expected {
                    keyfile::commit_staged(p)?;
                    info!(kek = %k.id(), "Finished an interrupted KEK rotation.");
                    self.kek = k;
                    return Ok(());
                }
            }
        }
        let k = Kek::new(&keyfile::read_checked(self.cfg.kek.path())?)?;
        if k.id() == expected {
            self.kek = k;
            return Ok(());
        }
        Err(StoreError::WrongKek {
            path: self.cfg.kek.path().to_path_buf(),
            found: self.kek.id().to_owned(),
            expected: expected.to_owned(),
        })
    }

    fn load_keys(&mut self) -> Result<()> {
        let rows: Vec<(i64, String, String, String, Vec<u8>, i64)> = {
            let mut st = self
                .conn
                .prepare("SELECT id, purpose, state, kek_id, wrapped, seals FROM keys")?;
            let it = st.query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })?;
            it.collect::<rusqlite::Result<_>>()?
        };
        let mut ring = KeyRing::default();
        for (id, purpose, state, kek_id, wrapped, seals) in rows {
            self.find_kek(&kek_id)?;
            let bytes = self
                .kek
                .unwrap_key(&purpose, id, &wrapped)
                .map_err(|_| self.integrity("keys", "wrapped", &id.to_string()))?;
            if purpose == "index" {
                ring.index = Some(IndexKey::new(&bytes));
            } else {
                ring.data.insert(id, DataKey::new(id, &bytes)?);
                if state == "active" {
                    ring.active = Some(id);
                    ring.active_seals = u64::try_from(seals).unwrap_or(0);
                }
            }
        }
        self.keys = ring;
        Ok(())
    }

    /// Create a key inside the current transaction; a data key becomes the active one.
    fn create_key(&mut self, purpose: &'static str) -> Result<i64> {
        let id: i64 =
            self.conn
                .query_row("SELECT coalesce(max(id), 0) + 1 FROM keys", [], |r| {
                    r.get(0)
                })?;
        let bytes = crypto::random_key(&self.rng)?;
        let wrapped = self.kek.wrap(&self.rng, purpose, id, &bytes)?;
        self.conn.execute(
            "INSERT INTO keys(id, purpose, state, kek_id, wrapped, seals, created_at) VALUES (?1, ?2, 'active', ?3, ?4, 0, ?5)",
            params![id, purpose, self.kek.id(), wrapped, self.clock.now().as_millis()],
        )?;
        if purpose == "data" {
            self.keys.data.insert(id, DataKey::new(id, &bytes)?);
            self.keys.active = Some(id);
            self.keys.active_seals = 0;
        } else {
            self.keys.index = Some(IndexKey::new(&bytes));
        }
        Ok(id)
    }

    fn active_key(&self) -> Result<&DataKey> {
        self.keys
            .active
            .and_then(|id| self.keys.data.get(&id))
            .ok_or_else(|| StoreError::Invalid("no active data key (store not opened)".into()))
    }

    pub(super) fn index(&self) -> Result<&IndexKey> {
        self.keys
            .index
            .as_ref()
            .ok_or_else(|| StoreError::Invalid("no index key (store not opened)".into()))
    }

    fn seal(
        &mut self,
        table: &'static str,
        column: &'static str,
        row: &str,
        plain: &[u8],
    ) -> Result<(i64, Vec<u8>)> {
        let key = self.active_key()?;
        let sealed = key.seal(&self.rng, &Place { table, column, row }, plain)?;
        let id = key.id();
        self.tx_seals += 1;
        Ok((id, sealed))
    }

    /// The error for a value that failed to open; records a security event.
    fn integrity(&mut self, table: &'static str, column: &'static str, row: &str) -> StoreError {
        error!(table, column, row, "Sealed value failed authentication.");
        self.queue(
            "integrity_failure",
            "security",
            format!("{table}.{column} of row {row} failed authentication"),
        );
        StoreError::Integrity {
            table,
            column,
            row: row.to_owned(),
        }
    }

    fn open_value(
        &mut self,
        table: &'static str,
        column: &'static str,
        row: &str,
        key_id: i64,
        sealed: &[u8],
    ) -> Result<Vec<u8>> {
        let opened = self
            .keys
            .data
            .get(&key_id)
            .and_then(|k| k.open(&Place { table, column, row }, sealed).ok());
        match opened {
            Some(p) => Ok(p),
            None => Err(self.integrity(table, column, row)),
        }
    }

    fn decode<T: for<'de> Deserialize<'de>>(row: &str, bytes: &[u8]) -> Result<T> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Decode {
            row: row.to_owned(),
            reason: e.to_string(),
        })
    }

    fn json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
        serde_json::to_vec(v).map_err(|e| StoreError::Invalid(e.to_string()))
    }

    // ---- devices

    fn address_hash(&self, address: &str) -> Result<Vec<u8>> {
        Ok(self.index()?.hash(
            "device-address",
            address.trim().to_ascii_uppercase().as_bytes(),
        ))
    }

    pub(crate) fn upsert_device(
        &mut self,
        record: &DeviceRecord,
        allowed: bool,
    ) -> Result<DeviceKey> {
        self.write(|db| {
            let hash = db.address_hash(&record.address)?;
            let now = db.clock.now().floor_minute().as_millis();
            let existing: Option<String> = db
                .conn
                .query_row("SELECT uuid FROM devices WHERE address_hash = ?1", [&hash], |r| r.get(0))
                .optional()?;
            let plain = Db::json(record)?;
            let uuid = match existing {
                Some(u) => u,
                None => new_uuid(&db.rng, db.clock.now())?,
            };
            let (key_id, sealed) = db.seal("devices", "sealed", &uuid, &plain)?;
            db.conn.execute(
                "INSERT INTO devices(uuid, address_hash, allowed, key_id, sealed, created_min, updated_min)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
                 ON CONFLICT(address_hash) DO UPDATE SET allowed = excluded.allowed,
                   key_id = excluded.key_id, sealed = excluded.sealed, updated_min = excluded.updated_min",
                params![uuid, hash, allowed, key_id, sealed, now],
            )?;
            Ok(DeviceKey(uuid))
        })
    }

    fn device_rows(&mut self, filter: Option<Vec<u8>>) -> Result<Vec<Device>> {
        self.refresh_keys()?;
        let rows: Vec<(String, bool, i64, Vec<u8>)> = {
            let sql = if filter.is_some() {
                "SELECT uuid, allowed, key_id, sealed FROM devices WHERE address_hash = ?1"
            } else {
                "SELECT uuid, allowed, key_id, sealed FROM devices ORDER BY id"
            };
            let mut st = self.conn.prepare(sql)?;
            let map = |r: &rusqlite::Row<'_>| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?));
            let it = match &filter {
                Some(h) => st.query_map([h], map)?,
                None => st.query_map([], map)?,
            };
            it.collect::<rusqlite::Result<_>>()?
        };
        let mut out = Vec::with_capacity(rows.len());
        for (uuid, allowed, key_id, sealed) in rows {
            let plain = self.open_value("devices", "sealed", &uuid, key_id, &sealed);
            let plain = match plain {
                Ok(p) => p,
                Err(e) => {
                    self.flush_events();
                    return Err(e);
                }
            };
            out.push(Device {
                record: Db::decode(&uuid, &plain)?,
                key: DeviceKey(uuid),
                allowed,
            });
        }
        Ok(out)
    }

    pub(crate) fn device_by_address(&mut self, address: &str) -> Result<Option<Device>> {
        self.refresh_keys()?;
        let h = self.address_hash(address)?;
        Ok(self.device_rows(Some(h))?.into_iter().next())
    }

    /// Per device (by uuid): readings the clinic acknowledged, and when the last one was.
    pub(crate) fn acked_by_device(&mut self) -> Result<Vec<(String, u64, Option<i64>)>> {
        let mut st = self.conn.prepare(
            "SELECT d.uuid, count(*), max(o.done_at) FROM outbox o
               JOIN readings r ON o.item = 'reading' AND o.item_id = r.id
               JOIN devices d ON d.id = r.device_id
              WHERE o.state = 'acked' GROUP BY d.uuid",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                r.get::<_, Option<i64>>(2)?,
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Per device (by uuid): when its latest stored reading arrived, to the minute.
    pub(crate) fn last_received(&mut self) -> Result<Vec<(String, UtcMillis)>> {
        let mut st = self.conn.prepare(
            "SELECT d.uuid, max(r.received_min) FROM readings r JOIN devices d ON d.id = r.device_id GROUP BY d.uuid",
        )?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, UtcMillis(r.get(1)?))))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub(crate) fn devices(&mut self) -> Result<Vec<Device>> {
        self.device_rows(None)
    }

    fn device_id(&self, device: &DeviceKey) -> Result<i64> {
        self.conn
            .query_row("SELECT id FROM devices WHERE uuid = ?1", [&device.0], |r| {
                r.get(0)
            })
            .optional()?
            .ok_or_else(|| StoreError::UnknownDevice(device.0.clone()))
    }

    pub(crate) fn cursor(&mut self, device: &DeviceKey, name: &str) -> Result<Option<i64>> {
        let id = self.device_id(device)?;
        Ok(self
            .conn
            .query_row(
                "SELECT value FROM cursors WHERE device_id = ?1 AND name = ?2",
                params![id, name],
                |r| r.get(0),
            )
            .optional()?)
    }

    // ---- capacity

    pub(crate) fn used_bytes(&self) -> Result<u64> {
        let (pages, free): (i64, i64) = self.conn.query_row(
            "SELECT (SELECT page_count FROM pragma_page_count()), (SELECT freelist_count FROM pragma_freelist_count())",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(u64::try_from(pages.saturating_sub(free)).unwrap_or(0) * self.page_size)
    }

    fn check_capacity(&mut self) -> Result<()> {
        let used = self.used_bytes()?;
        let limit = self.cfg.size_limit;
        if used >= limit {
            if !self.full_reported {
                self.full_reported = true;
                error!(
                    used,
                    limit, "Store full: appends are refused until uploads are acknowledged."
                );
                self.queue(
                    "store_full",
                    "error",
                    format!("{used} of {limit} bytes used; appends refused"),
                );
                self.flush_events();
            }
            return Err(StoreError::Full { used, limit });
        }
        self.full_reported = false;
        Ok(())
    }

    fn after_append_capacity(&mut self) -> Result<()> {
        let used = self.used_bytes()?;
        let limit = self.cfg.size_limit.max(1);
        let pct = used.saturating_mul(100) / limit;
        if pct >= 80 && !self.capacity_warned {
            self.capacity_warned = true;
            warn!(used, limit, "Store is 80 % full.");
            self.queue(
                "capacity_warning",
                "warning",
                format!("{pct} % of {limit} bytes used"),
            );
            self.flush_events();
        } else if pct < 70 {
            self.capacity_warned = false;
        }
        Ok(())
    }

    // ---- appends

    pub(crate) fn append(
        &mut self,
        device: &DeviceKey,
        items: &[NewReading],
        cursor: Option<&(String, i64)>,
    ) -> Result<AppendOutcome> {
        self.check_capacity()?;
        let patient = self.cfg.patient_id.clone();
        let out = self.write(|db| {
            let device_id = db.device_id(device)?;
            let mut out = AppendOutcome::default();
            for item in items {
                let dedup = db.index()?.hash("reading", item.stable_key.as_bytes());
                let existing: Option<i64> = db
                    .conn
                    .prepare_cached("SELECT id FROM readings WHERE dedup = ?1")?
                    .query_row([&dedup], |r| r.get(0))
                    .optional()?;
                if let Some(id) = existing {
                    out.ids.push(id);
                    out.duplicates += 1;
                    continue;
                }
                let env = ReadingEnvelope {
                    reading: item.reading.clone(),
                    received_at: item.received_at,
                    stable_key: item.stable_key.clone(),
                    test_data: item.test_data,
                    patient_id: patient.clone(),
                    summary: item.summary,
                };
                out.ids.push(db.insert_reading(device_id, &dedup, &env)?);
            }
            if let Some((name, value)) = cursor {
                db.conn.execute(
                    "INSERT INTO cursors(device_id, name, value, updated_min) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(device_id, name) DO UPDATE SET value = excluded.value, updated_min = excluded.updated_min",
                    params![device_id, name, value, db.clock.now().floor_minute().as_millis()],
                )?;
            }
            Ok(out)
        })?;
        self.after_append_capacity()?;
        Ok(out)
    }

    /// Insert a reading row and its outbox entry inside the current transaction.
    fn insert_reading(
        &mut self,
        device_id: i64,
        dedup: &[u8],
        env: &ReadingEnvelope,
    ) -> Result<i64> {
        let uuid = new_uuid(&self.rng, self.clock.now())?;
        let (key_id, sealed) = self.seal("readings", "sealed", &uuid, &Db::json(env)?)?;
        let coarse = env.received_at.floor_minute().as_millis();
        self.conn
            .prepare_cached(
                "INSERT INTO readings(uuid, device_id, dedup, received_min, key_id, sealed) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![uuid, device_id, dedup, coarse, key_id, sealed])?;
        let id = self.conn.last_insert_rowid();
        self.conn
            .prepare_cached(
                "INSERT INTO outbox(item, item_id, priority, state, next_attempt, created_min) VALUES ('reading', ?1, ?2, 'pending', ?3, ?4)",
            )?
            .execute(params![id, PRIORITY_READING, i64::MIN, coarse])?;
        Ok(id)
    }

    // ---- held for assignment (schema v4)

    pub(crate) fn hold(&mut self, device: &DeviceKey, item: &NewHeld) -> Result<(i64, bool)> {
        self.check_capacity()?;
        self.write(|db| {
            let device_id = db.device_id(device)?;
            let dedup = db.index()?.hash("held", item.stable_key.as_bytes());
            let existing: Option<i64> = db
                .conn
                .query_row("SELECT id FROM held WHERE dedup = ?1", [&dedup], |r| {
                    r.get(0)
                })
                .optional()?;
            if let Some(id) = existing {
                return Ok((id, true));
            }
            // Already the patient's (assigned before, or stored under this key): not held again.
            let as_reading = db.index()?.hash("reading", item.stable_key.as_bytes());
            let stored: Option<i64> = db
                .conn
                .query_row(
                    "SELECT id FROM readings WHERE dedup = ?1",
                    [&as_reading],
                    |r| r.get(0),
                )
                .optional()?;
            if stored.is_some() {
                return Ok((0, true));
            }
            let uuid = new_uuid(&db.rng, db.clock.now())?;
            let env = HeldEnvelope {
                user_id: item.user_id,
                reading: item.reading.clone(),
                received_at: item.received_at,
                stable_key: item.stable_key.clone(),
            };
            let (key_id, sealed) = db.seal("held", "sealed", &uuid, &Db::json(&env)?)?;
            db.conn.execute(
                "INSERT INTO held(uuid, device_id, dedup, state, received_min, key_id, sealed)
                 VALUES (?1, ?2, ?3, 'held', ?4, ?5, ?6)",
                params![
                    uuid,
                    device_id,
                    dedup,
                    item.received_at.floor_minute().as_millis(),
                    key_id,
                    sealed
                ],
            )?;
            Ok((db.conn.last_insert_rowid(), false))
        })
    }

    fn load_held(&mut self, id: i64) -> Result<(StoredHeld, i64)> {
        let (uuid, device, device_id, key_id, sealed): (String, String, i64, i64, Vec<u8>) = self
            .conn
            .query_row(
                "SELECT h.uuid, d.uuid, h.device_id, h.key_id, h.sealed FROM held h
                 JOIN devices d ON d.id = h.device_id WHERE h.id = ?1 AND h.state = 'held'",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?
            .ok_or_else(|| StoreError::Invalid(format!("no held reading {id}")))?;
        let plain = self.open_value("held", "sealed", &uuid, key_id, &sealed)?;
        let env: HeldEnvelope = Db::decode(&uuid, &plain)?;
        Ok((
            StoredHeld {
                id,
                uuid,
                device: DeviceKey(device),
                user_id: env.user_id,
                reading: env.reading,
                received_at: env.received_at,
                stable_key: env.stable_key,
            },
            device_id,
        ))
    }

    pub(crate) fn held(&mut self, limit: usize) -> Result<Vec<StoredHeld>> {
        self.refresh_keys()?;
        let ids: Vec<i64> = {
            let mut st = self
                .conn
                .prepare("SELECT id FROM held WHERE state = 'held' ORDER BY id LIMIT ?1")?;
            let it = st.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| r.get(0))?;
            it.collect::<rusqlite::Result<_>>()?
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match self.load_held(id) {
                Ok((h, _)) => out.push(h),
                Err(e) => {
                    self.flush_events();
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    /// Keep only the dedup hash of a held row.
    fn retire_held(&mut self, id: i64, state: &'static str) -> Result<usize> {
        Ok(self.conn.execute(
            "UPDATE held SET state = ?1, key_id = NULL, sealed = NULL WHERE id = ?2 AND state = 'held'",
            params![state, id],
        )?)
    }

    pub(crate) fn discard_held(&mut self, id: i64) -> Result<bool> {
        let n = self.write(|db| {
            let n = db.retire_held(id, "discarded")?;
            if n > 0 {
                db.queue(
                    "held_discarded",
                    "info",
                    format!("held reading {id} discarded"),
                );
            }
            Ok(n)
        })?;
        Ok(n > 0)
    }

    pub(crate) fn assign_held(&mut self, id: i64) -> Result<i64> {
        self.check_capacity()?;
        let patient = self.cfg.patient_id.clone();
        let r = self.write(|db| {
            let (h, device_id) = db.load_held(id)?;
            let dedup = db.index()?.hash("reading", h.stable_key.as_bytes());
            let existing: Option<i64> = db
                .conn
                .query_row("SELECT id FROM readings WHERE dedup = ?1", [&dedup], |r| {
                    r.get(0)
                })
                .optional()?;
            let reading_id = match existing {
                Some(rid) => rid,
                None => {
                    let env = ReadingEnvelope {
                        reading: h.reading,
                        received_at: h.received_at,
                        stable_key: h.stable_key,
                        test_data: false,
                        patient_id: patient,
                        summary: None,
                    };
                    db.insert_reading(device_id, &dedup, &env)?
                }
            };
            db.retire_held(id, "assigned")?;
            db.queue(
                "held_assigned",
                "info",
                format!("held reading {id} assigned to the patient as reading {reading_id}"),
            );
            Ok(reading_id)
        });
        if matches!(r, Err(StoreError::Integrity { .. })) {
            self.flush_events();
        }
        r
    }

    pub(crate) fn append_alert(
        &mut self,
        payload: &serde_json::Value,
        stable_key: &str,
        related: &[i64],
    ) -> Result<(i64, bool)> {
        self.check_capacity()?;
        self.write(|db| {
            let dedup = db.index()?.hash("alert", stable_key.as_bytes());
            let existing: Option<i64> = db
                .conn
                .query_row("SELECT id FROM alerts WHERE dedup = ?1", [&dedup], |r| r.get(0))
                .optional()?;
            if let Some(id) = existing {
                return Ok((id, true));
            }
            let uuid = new_uuid(&db.rng, db.clock.now())?;
            let env = AlertEnvelope {
                payload: payload.clone(),
                stable_key: stable_key.to_owned(),
                related: related.to_vec(),
            };
            let (key_id, sealed) = db.seal("alerts", "sealed", &uuid, &Db::json(&env)?)?;
            let now = db.clock.now().floor_minute().as_millis();
            db.conn.execute(
                "INSERT INTO alerts(uuid, dedup, created_min, key_id, sealed) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![uuid, dedup, now, key_id, sealed],
            )?;
            let id = db.conn.last_insert_rowid();
            db.conn.execute(
                "INSERT INTO outbox(item, item_id, priority, state, next_attempt, created_min) VALUES ('alert', ?1, ?2, 'pending', ?3, ?4)",
                params![id, PRIORITY_ALERT, i64::MIN, now],
            )?;
            Ok((id, false))
        })
    }

    // ---- reading back

    fn load_reading(&mut self, id: i64) -> Result<StoredReading> {
        let (uuid, device, key_id, sealed): (String, String, i64, Vec<u8>) = self
            .conn
            .prepare_cached(
                "SELECT r.uuid, d.uuid, r.key_id, r.sealed FROM readings r JOIN devices d ON d.id = r.device_id WHERE r.id = ?1",
            )?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        let plain = self.open_value("readings", "sealed", &uuid, key_id, &sealed)?;
        let env: ReadingEnvelope = Db::decode(&uuid, &plain)?;
        Ok(StoredReading {
            id,
            uuid,
            device: DeviceKey(device),
            reading: env.reading,
            received_at: env.received_at,
            stable_key: env.stable_key,
            test_data: env.test_data,
            patient_id: env.patient_id,
            summary: env.summary,
        })
    }

    fn load_alert(&mut self, id: i64) -> Result<StoredAlert> {
        let (uuid, key_id, sealed): (String, i64, Vec<u8>) = self.conn.query_row(
            "SELECT uuid, key_id, sealed FROM alerts WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let plain = self.open_value("alerts", "sealed", &uuid, key_id, &sealed)?;
        let env: AlertEnvelope = Db::decode(&uuid, &plain)?;
        Ok(StoredAlert {
            id,
            uuid,
            payload: env.payload,
            stable_key: env.stable_key,
            related: env.related,
        })
    }

    pub(crate) fn readings(&mut self, after: i64, limit: usize) -> Result<Vec<StoredReading>> {
        self.refresh_keys()?;
        let ids: Vec<i64> = {
            let mut st = self
                .conn
                .prepare("SELECT id FROM readings WHERE id > ?1 ORDER BY id LIMIT ?2")?;
            let it = st.query_map(
                params![after, i64::try_from(limit).unwrap_or(i64::MAX)],
                |r| r.get(0),
            )?;
            it.collect::<rusqlite::Result<_>>()?
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match self.load_reading(id) {
                Ok(r) => out.push(r),
                Err(e) => {
                    self.flush_events();
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    // ---- outbox

    pub(crate) fn pending(&mut self, batch: usize, now: UtcMillis) -> Result<Vec<OutboxItem>> {
        self.refresh_keys()?;
        let rows: Vec<(i64, String, i64, u32)> = {
            let mut st = self.conn.prepare_cached(
                "SELECT id, item, item_id, attempts FROM outbox
                 WHERE state = 'pending' AND next_attempt <= ?1 ORDER BY priority, id LIMIT ?2",
            )?;
            let it = st.query_map(
                params![now.as_millis(), i64::try_from(batch).unwrap_or(i64::MAX)],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?;
            it.collect::<rusqlite::Result<_>>()?
        };
        let mut out = Vec::with_capacity(rows.len());
        for (id, item, item_id, attempts) in rows {
            let payload = if item == "alert" {
                self.load_alert(item_id).map(OutboxPayload::Alert)
            } else {
                self.load_reading(item_id).map(OutboxPayload::Reading)
            };
            match payload {
                Ok(payload) => out.push(OutboxItem {
                    id,
                    attempts,
                    payload,
                }),
                Err(e) => {
                    if matches!(e, StoreError::Integrity { .. }) {
                        // Quarantine so the queue moves on; the error and the event name the row.
                        let q = self.write(|db| {
                            db.conn.execute(
                                "UPDATE outbox SET state = 'quarantined' WHERE id = ?1",
                                [id],
                            )?;
                            Ok(())
                        });
                        if let Err(qe) = q {
                            warn!(outbox = id, error = %qe, "Could not quarantine an outbox entry.");
                        }
                    }
                    self.flush_events();
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    fn update_each(
        &mut self,
        sql: &str,
        ids: &[i64],
        extra: &dyn Fn(&mut Db, i64) -> Result<Vec<rusqlite::types::Value>>,
    ) -> Result<usize> {
        let sql = sql.to_owned();
        self.write(|db| {
            let mut n = 0;
            for &id in ids {
                let mut vals = extra(db, id)?;
                vals.push(rusqlite::types::Value::Integer(id));
                n += db
                    .conn
                    .prepare_cached(&sql)?
                    .execute(rusqlite::params_from_iter(vals))?;
            }
            Ok(n)
        })
    }

    pub(crate) fn mark_in_flight(&mut self, ids: &[i64]) -> Result<usize> {
        self.update_each(
            "UPDATE outbox SET state = 'in_flight', attempts = attempts + 1 WHERE id = ?1 AND state = 'pending'",
            ids,
            &|_, _| Ok(vec![]),
        )
    }

    pub(crate) fn ack(&mut self, ids: &[i64]) -> Result<usize> {
        let now = self.clock.now().as_millis();
        self.update_each(
            "UPDATE outbox SET state = 'acked', done_at = ?1 WHERE id = ?2 AND state IN ('pending', 'in_flight')",
            ids,
            &move |_, _| Ok(vec![now.into()]),
        )
    }

    fn sealed_error(db: &mut Db, id: i64, text: &str) -> Result<Vec<rusqlite::types::Value>> {
        let (key_id, sealed) = db.seal("outbox", "last_error", &id.to_string(), text.as_bytes())?;
        Ok(vec![key_id.into(), sealed.into()])
    }

    /// Every pending entry due now (a technician's `sync --now` after an outage).
    pub(crate) fn due_now(&mut self, now: UtcMillis) -> Result<usize> {
        self.write(|db| {
            Ok(db.conn.execute(
                "UPDATE outbox SET next_attempt = ?1 WHERE state = 'pending' AND next_attempt > ?1",
                [now.as_millis()],
            )?)
        })
    }

    pub(crate) fn retry(&mut self, ids: &[i64], error: &str, next: UtcMillis) -> Result<usize> {
        self.update_each(
            "UPDATE outbox SET state = 'pending', next_attempt = ?1, key_id = ?2, last_error = ?3
             WHERE id = ?4 AND state IN ('pending', 'in_flight')",
            ids,
            &|db, id| {
                let mut v = vec![next.as_millis().into()];
                v.extend(Db::sealed_error(db, id, error)?);
                Ok(v)
            },
        )
    }

    pub(crate) fn reject(&mut self, ids: &[i64], reason: &str) -> Result<usize> {
        let now = self.clock.now().as_millis();
        let n = self.update_each(
            "UPDATE outbox SET state = 'rejected', done_at = ?1, key_id = ?2, last_error = ?3
             WHERE id = ?4 AND state IN ('pending', 'in_flight')",
            ids,
            &|db, id| {
                let mut v = vec![now.into()];
                v.extend(Db::sealed_error(db, id, reason)?);
                Ok(v)
            },
        )?;
        if n > 0 {
            warn!(
                entries = n,
                "Outbox entries rejected by the clinic; kept for review."
            );
            self.queue(
                "rejected",
                "warning",
                format!("{n} outbox entries rejected"),
            );
            self.flush_events();
        }
        Ok(n)
    }

    // ---- maintenance

    pub(crate) fn prune_batch(&mut self, now: UtcMillis, limit: i64) -> Result<u64> {
        let cutoff = now.plus_millis(-self.cfg.retention).as_millis();
        self.write(|db| {
            let ids: Vec<(i64, String, i64)> = {
                let mut st = db.conn.prepare(
                    "SELECT id, item, item_id FROM outbox WHERE state = 'acked' AND done_at < ?1 LIMIT ?2",
                )?;
                let it = st.query_map(params![cutoff, limit], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                it.collect::<rusqlite::Result<_>>()?
            };
            for (id, item, item_id) in &ids {
                let table = if item == "alert" { "alerts" } else { "readings" };
                db.conn
                    .execute(&format!("DELETE FROM {table} WHERE id = ?1"), [item_id])?;
                db.conn.execute("DELETE FROM outbox WHERE id = ?1", [id])?;
            }
            db.conn.execute(
                "DELETE FROM events WHERE id <= (SELECT max(id) FROM events) - ?1",
                [EVENTS_KEPT],
            )?;
            Ok(ids.len() as u64)
        })
    }

    pub(crate) fn events(&mut self, limit: usize) -> Result<Vec<Event>> {
        let mut out: Vec<Event> = self
            .queued
            .iter()
            .rev()
            .map(|e| Event {
                id: 0,
                at: e.at,
                kind: e.kind.to_owned(),
                severity: e.severity.to_owned(),
                detail: e.detail.clone(),
            })
            .collect();
        let mut st = self.conn.prepare(
            "SELECT id, at, kind, severity, detail FROM events ORDER BY id DESC LIMIT ?1",
        )?;
        let it = st.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
            Ok(Event {
                id: r.get(0)?,
                at: UtcMillis(r.get(1)?),
                kind: r.get(2)?,
                severity: r.get(3)?,
                detail: r.get(4)?,
            })
        })?;
        for e in it {
            out.push(e?);
        }
        out.truncate(limit);
        Ok(out)
    }

    pub(crate) fn stats(&mut self) -> Result<Stats> {
        let mut s = Stats {
            bytes_used: self.used_bytes()?,
            size_limit: self.cfg.size_limit,
            active_key_id: self.keys.active.unwrap_or(0),
            active_key_seals: self.keys.active_seals,
            ..Stats::default()
        };
        let mut st = self
            .conn
            .prepare("SELECT state, count(*) FROM outbox GROUP BY state")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (state, n) = row?;
            let n = u64::try_from(n).unwrap_or(0);
            match state.as_str() {
                "pending" => s.pending = n,
                "in_flight" => s.in_flight = n,
                "acked" => s.acked = n,
                "rejected" => s.rejected = n,
                _ => s.quarantined = n,
            }
        }
        let (alerts, oldest): (i64, Option<i64>) = self.conn.query_row(
            "SELECT count(*) FILTER (WHERE item = 'alert'), min(created_min) FROM outbox WHERE state IN ('pending', 'in_flight')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        s.alerts_waiting = u64::try_from(alerts).unwrap_or(0);
        s.oldest_waiting = oldest.map(UtcMillis);
        let (readings, alerts_stored): (i64, i64) = self.conn.query_row(
            "SELECT (SELECT count(*) FROM readings), (SELECT count(*) FROM alerts)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        s.readings = u64::try_from(readings).unwrap_or(0);
        s.alerts = u64::try_from(alerts_stored).unwrap_or(0);
        Ok(s)
    }

    pub(crate) fn integrity_check(&mut self) -> Result<String> {
        let mut st = self.conn.prepare("PRAGMA integrity_check")?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        let lines: Vec<String> = rows.collect::<rusqlite::Result<_>>()?;
        Ok(lines.join("\n"))
    }

    // ---- rotation

    pub(crate) fn begin_data_key_rotation(&mut self) -> Result<i64> {
        let new = self.write(|db| {
            db.conn.execute(
                "UPDATE keys SET state = 'retired' WHERE purpose = 'data' AND state = 'active'",
                [],
            )?;
            let id = db.create_key("data")?;
            db.queue(
                "data_key_rotated",
                "security",
                format!("data key {id} is active"),
            );
            Ok(id)
        })?;
        Ok(new)
    }

    /// Re-seal up to `limit` rows that are not under the active key; one short transaction.
    pub(crate) fn reencrypt_batch(&mut self, limit: usize) -> Result<u64> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.write(|db| {
            let active = db.active_key()?.id();
            let mut done = 0u64;
            for (table, row_col) in [
                ("readings", "uuid"),
                ("alerts", "uuid"),
                ("devices", "uuid"),
                ("device_info", "uuid"),
                ("held", "uuid"),
            ] {
                let rows: Vec<(i64, String, i64, Vec<u8>)> = {
                    let mut st = db.conn.prepare(&format!(
                        "SELECT id, {row_col}, key_id, sealed FROM {table} WHERE key_id != ?1 LIMIT ?2"
                    ))?;
                    let it = st.query_map(params![active, limit], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
                    it.collect::<rusqlite::Result<_>>()?
                };
                for (id, row, key_id, sealed) in rows {
                    let plain = db.open_value(table, "sealed", &row, key_id, &sealed)?;
                    let (new_id, resealed) = db.seal(table, "sealed", &row, &plain)?;
                    db.conn.execute(
                        &format!("UPDATE {table} SET key_id = ?1, sealed = ?2 WHERE id = ?3"),
                        params![new_id, resealed, id],
                    )?;
                    done += 1;
                }
            }
            let rows: Vec<(i64, i64, Vec<u8>)> = {
                let mut st = db.conn.prepare(
                    "SELECT id, key_id, last_error FROM outbox WHERE last_error IS NOT NULL AND key_id != ?1 LIMIT ?2",
                )?;
                let it = st.query_map(params![active, limit], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                it.collect::<rusqlite::Result<_>>()?
            };
            for (id, key_id, sealed) in rows {
                let row = id.to_string();
                let plain = db.open_value("outbox", "last_error", &row, key_id, &sealed)?;
                let (new_id, resealed) = db.seal("outbox", "last_error", &row, &plain)?;
                db.conn.execute(
                    "UPDATE outbox SET key_id = ?1, last_error = ?2 WHERE id = ?3",
                    params![new_id, resealed, id],
                )?;
                done += 1;
            }
            Ok(done)
        })
    }

    pub(crate) fn delete_unused_keys(&mut self) -> Result<u64> {
        self.write(|db| {
            let n = db.conn.execute(
                "DELETE FROM keys WHERE purpose = 'data' AND state = 'retired' AND id NOT IN (
                   SELECT key_id FROM readings UNION SELECT key_id FROM alerts
                   UNION SELECT key_id FROM devices UNION SELECT key_id FROM device_info
                   UNION SELECT key_id FROM held WHERE key_id IS NOT NULL
                   UNION SELECT key_id FROM outbox WHERE key_id IS NOT NULL)",
                [],
            )?;
            if n > 0 {
                db.queue(
                    "data_keys_deleted",
                    "security",
                    format!("{n} retired data keys deleted"),
                );
            }
            Ok(n as u64)
        })
    }

    // ---- uplink additions (schema v3)

    pub(crate) fn set_device_info(&mut self, device: &DeviceKey, info: &DeviceInfo) -> Result<()> {
        self.device_id(device)?;
        let plain = Db::json(info)?;
        let now = self.clock.now().floor_minute().as_millis();
        self.write(|db| {
            // The AAD binds the device's uuid and this table: it cannot be pasted onto another device.
            let (key_id, sealed) = db.seal("device_info", "sealed", &device.0, &plain)?;
            db.conn.execute(
                "INSERT INTO device_info(uuid, key_id, sealed, updated_min) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(uuid) DO UPDATE SET key_id = excluded.key_id, sealed = excluded.sealed,
                 updated_min = excluded.updated_min",
                params![device.0, key_id, sealed, now],
            )?;
            Ok(())
        })
    }

    pub(crate) fn device_info(&mut self, device: &DeviceKey) -> Result<Option<DeviceInfo>> {
        self.refresh_keys()?;
        let row: Option<(i64, Vec<u8>)> = self
            .conn
            .query_row(
                "SELECT key_id, sealed FROM device_info WHERE uuid = ?1",
                [&device.0],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((key_id, sealed)) = row else {
            return Ok(None);
        };
        match self.open_value("device_info", "sealed", &device.0, key_id, &sealed) {
            Ok(p) => Ok(Some(Db::decode(&device.0, &p)?)),
            Err(e) => {
                self.flush_events();
                Err(e)
            }
        }
    }

    pub(crate) fn uplink_state(&mut self, destination: &str, name: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT value FROM uplink_state WHERE destination = ?1 AND name = ?2",
                params![destination, name],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub(crate) fn set_uplink_state(
        &mut self,
        destination: &str,
        name: &str,
        value: &str,
    ) -> Result<()> {
        self.write(|db| {
            db.conn.execute(
                "INSERT INTO uplink_state(destination, name, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT(destination, name) DO UPDATE SET value = excluded.value",
                params![destination, name, value],
            )?;
            Ok(())
        })
    }

    pub(crate) fn append_event(
        &mut self,
        kind: &'static str,
        severity: &'static str,
        detail: String,
    ) -> Result<()> {
        self.queue(kind, severity, detail);
        self.write(|_| Ok(()))
    }

    pub(crate) fn rotate_kek(&mut self) -> Result<String> {
        let path = match &self.cfg.kek {
            KekSource::File(p) => p.clone(),
            KekSource::Credential(p) => {
                return Err(keyfile::KeyFileError::ReadOnlyCredential { path: p.clone() }.into())
            }
        };
        let staged = keyfile::staged_path(&path);
        if staged.exists() {
            fs::remove_file(&staged).map_err(|source| StoreError::Io {
                path: staged.clone(),
                source,
            })?;
        }
        let bytes = keyfile::random_key(&self.rng)?;
        keyfile::write_new(&staged, &bytes)?;
        let new = Kek::new(&bytes)?;
        let new_id = new.id().to_owned();
        self.write(|db| {
            let rows: Vec<(i64, String, Vec<u8>)> = {
                let mut st = db.conn.prepare("SELECT id, purpose, wrapped FROM keys")?;
                let it = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                it.collect::<rusqlite::Result<_>>()?
            };
            for (id, purpose, wrapped) in rows {
                let key = db
                    .kek
                    .unwrap_key(&purpose, id, &wrapped)
                    .map_err(|_| db.integrity("keys", "wrapped", &id.to_string()))?;
                let rewrapped = new.wrap(&db.rng, &purpose, id, &key)?;
                db.conn.execute(
                    "UPDATE keys SET kek_id = ?1, wrapped = ?2 WHERE id = ?3",
                    params![new.id(), rewrapped, id],
                )?;
            }
            db.queue(
                "kek_rotated",
                "security",
                format!("KEK {} replaced by {}", db.kek.id(), new.id()),
            );
            Ok(())
        })?;
        // The database now needs the new KEK; a crash before this rename is finished at next open.
        keyfile::commit_staged(&path)?;
        self.kek = new;
        info!(kek = %new_id, "KEK rotated.");
        Ok(new_id)
    }
}
