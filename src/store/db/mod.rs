//! The store's one connection and everything done on it; runs on the store's own thread.
//!
//! This file owns the connection's life and the transaction core: opening (directory, KEK, the
//! corrupt-file move-aside, migrations, in-flight recovery), the read-only open, SQLite's page
//! limit, queued events, and [`Db::write`]. The rest of `Db` lives beside it, one concern a file:
//! `keys` (key ring, sealing, data-key and KEK rotation), `devices` (allow-list, cursors, device
//! info), `readings` (appends of readings and alerts, reading back), `held` (other users'
//! readings), `snapshots` (sealed derived state), `outbox` (upload states, per-destination uplink state), `maintenance` (capacity,
//! retention, events, stats).
//!
//! Every write is `BEGIN IMMEDIATE … COMMIT` on this connection. Inside the transaction the key cache
//! is refreshed if another connection committed (`PRAGMA data_version`), rows are sealed with the
//! active data key, the seal counter and queued events are written, and only then is it committed.
//! Guarantee: a call that returned `Ok` committed and fsync'd.

mod dedup;
mod devices;
mod held;
mod keys;
mod limits;
mod maintenance;
mod outbox;
mod readings;
mod security;
mod snapshots;

use super::crypto::{self, DataKey, IndexKey, Kek};
use super::keyfile;
use super::schema;
use super::{Result, StoreConfig, StoreError};
use crate::model::{Clock, UtcMillis};
use ring::rand::SystemRandom;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::{debug, error, info, warn};

/// A `data_version` no connection reports: the key ring is reloaded at its next use.
const KEYS_STALE: i64 = i64::MIN;

/// Priority of outbox entries: lower goes first.
const PRIORITY_ALERT: i64 = 0;
const PRIORITY_READING: i64 = 1;
/// Security reports go after the patient's data (`store::security`).
const PRIORITY_SECURITY: i64 = 2;

/// The most bytes of an event's detail (longer ones are cut, `…` marks the cut).
pub const MAX_EVENT_DETAIL: usize = 1024;

/// The most events the store holds (the oldest go first): with [`MAX_EVENT_DETAIL`] a fixed budget
/// of about 11 MiB, so nothing that raises events (a failing server) can crowd out readings.
pub const EVENTS_BUDGET: i64 = 10_000;

/// The most bytes of an outbox entry's (sealed) last error: a server's reason is kept to this.
pub const MAX_LAST_ERROR: usize = 1024;

/// `text` cut to at most `max` bytes at a character boundary.
pub(crate) fn bounded(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", text.get(..end).unwrap_or(""))
}

/// An event waiting to be written (it is written in the next transaction that commits).
#[derive(Debug, Clone)]
struct QueuedEvent {
    at: UtcMillis,
    kind: &'static str,
    severity: &'static str,
    detail: String,
}

/// Seal counts are reserved in blocks of this many: `keys.seals` of the active key is an upper
/// bound of the seals made with it, raised by a block (in the transaction whose seals need it)
/// only when the seals counted in memory would pass it. A transaction that seals within the
/// reservation writes no `keys` row (one page a commit, the only one a one-reading append wrote
/// that a plaintext store would not). A crash, a restart or another connection's write makes
/// the counting resume at the persisted bound: counts are skipped (rotation comes up to one block
/// per restart early, 1/262,144 of the default budget each), never reused or under-counted.
pub(crate) const SEAL_RESERVATION: u64 = 4096;

#[derive(Debug, Default)]
struct KeyRing {
    data: HashMap<i64, DataKey>,
    active: Option<i64>,
    /// Seals made with the active key, counted from the persisted bound it was loaded with.
    active_seals: u64,
    /// The active key's persisted `seals` (the reservation): `active_seals` stays at or below it
    /// at every commit.
    active_reserved: u64,
    index: Option<IndexKey>,
    /// The last dedup bucket computed with `index` (`dedup.rs`); dropped with the ring.
    bucket_cache: Option<dedup::BucketCache>,
}

impl KeyRing {
    /// The reservation a commit needs after `tx_seals` more seals: `None` while the persisted one
    /// still covers them, otherwise the new bound (a whole block past the count).
    /// The block is [`SEAL_RESERVATION`], or 1/64 of a small rotation budget (tests use budgets of
    /// a few seals: a restart must not jump past them).
    fn reservation_for(&self, tx_seals: u64, budget: u64) -> Option<u64> {
        let needed = self.active_seals.saturating_add(tx_seals);
        let block = SEAL_RESERVATION.min(budget / 64).max(1);
        (needed > self.active_reserved).then(|| needed.saturating_add(block))
    }
}

#[derive(Debug)]
pub(crate) struct Db {
    conn: Connection,
    path: PathBuf,
    cfg: StoreConfig,
    clock: Arc<dyn Clock>,
    rng: SystemRandom,
    /// Nonces and row identifiers' random bits ([`crypto::PublicRandom`]); keys come from `rng`.
    public_random: crypto::PublicRandom,
    kek: Kek,
    keys: KeyRing,
    data_version: i64,
    tx_seals: u64,
    queued: Vec<QueuedEvent>,
    capacity_warned: bool,
    full_reported: bool,
    disk_full_reported: bool,
    auto_rotation: AutoRotation,
    page_size: u64,
    /// Whether `meta.dedup_legacy` is set (read once, see `dedup.rs`); `None` until read.
    dedup_legacy: Option<bool>,
}

/// The state of automatic data-key rotation, which runs after a write has committed.
#[derive(Debug, Default)]
struct AutoRotation {
    /// A rotation is under way (its own transaction must not start another).
    running: bool,
    /// After a failure: not tried again before this time.
    retry_at: Option<UtcMillis>,
    /// The failure was recorded as an event (once per run of failures).
    failure_reported: bool,
}

fn is_code(e: &rusqlite::Error, code: ErrorCode) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == code)
}

fn is_corruption(e: &rusqlite::Error) -> bool {
    is_code(e, ErrorCode::DatabaseCorrupt) || is_code(e, ErrorCode::NotADatabase)
}

/// A UUIDv7: 48-bit millisecond time, then random bits. Time-ordered, so the `uuid` unique index is
/// appended to at its right edge instead of being rewritten at random pages (SD-card wear, WAL size).
/// The minute-coarse time is plain anyway; the millisecond part leaks little more. The random bits
/// come from the store's pool of public random bytes ([`crypto::PublicRandom`]); `uuid` lays out the version, variant and text.
fn new_uuid(rng: &mut crypto::PublicRandom, now: UtcMillis) -> Result<String> {
    let mut b = [0u8; 10];
    rng.fill(&mut b)?;
    let ms = u64::try_from(now.as_millis()).unwrap_or(0);
    Ok(uuid::Builder::from_unix_timestamp_millis(ms, &b)
        .into_uuid()
        .hyphenated()
        .to_string())
}

/// The database's companion files: SQLite's WAL and shared-memory index.
const COMPANIONS: [&str; 3] = ["", "-wal", "-shm"];

/// Owner-only (0600) whatever the umask: leave `path` with mode 0600 if it exists and is wider.
fn narrow_mode(path: &Path) -> Result<()> {
    let io = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o077 != 0 => {
            fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io)
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(e)),
    }
}

/// Before SQLite opens `path`: create the database file 0600 if it is missing, and narrow it and
/// its WAL/SHM to 0600 if an older build left them wider. SQLite's unix VFS creates the WAL and
/// SHM with the database file's mode (whatever the umask), so they are 0600 as well.
fn own_files(path: &Path) -> Result<()> {
    if !path.exists() {
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|source| StoreError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        keyfile::sync_parent(path)?;
    }
    for ext in COMPANIONS {
        let mut p = path.as_os_str().to_owned();
        p.push(ext);
        narrow_mode(Path::new(&p))?;
    }
    Ok(())
}

/// `PRAGMA quick_check`'s findings, joined: `"ok"` when sound.
fn quick_check(conn: &Connection) -> rusqlite::Result<String> {
    let mut st = conn.prepare("PRAGMA quick_check")?;
    let rows = st.query_map([], |r| r.get::<_, String>(0))?;
    let mut found = Vec::new();
    for r in rows.take(100) {
        found.push(r?);
    }
    Ok(found.join("; "))
}

/// The marker file of a failed check beside `path` (see [`super::CHECK_FAILED_MARKER`]).
fn check_marker(path: &Path) -> PathBuf {
    path.with_file_name(super::CHECK_FAILED_MARKER)
}

/// [`super::Store::check_integrity`]'s work, on a read-only connection of its own: `None` when
/// sound, else the findings, after writing the marker file (0600, fsync'd with its directory).
pub(super) fn quick_check_aside(path: &Path) -> Result<Option<String>> {
    let found = (|| {
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        quick_check(&conn)
    })();
    let findings = match found {
        Ok(s) if s == "ok" => return Ok(None),
        Ok(s) => s,
        Err(e) if is_corruption(&e) => e.to_string(),
        Err(e) => return Err(e.into()),
    };
    let marker = check_marker(path);
    let io = |source| StoreError::Io {
        path: marker.clone(),
        source,
    };
    {
        use std::io::Write;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&marker)
            .map_err(io)?;
        f.write_all(b"quick_check failed; the next open checks the database and moves it aside if it fails again\n")
            .map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    keyfile::sync_parent(&marker)?;
    error!(path = %path.display(), "Store integrity check failed: the next start checks the database and moves it aside if it is corrupt.");
    Ok(Some(findings))
}

/// Open and configure a connection; an error here may mean corruption. `check`: run
/// `quick_check` (every page read) before anything else.
fn open_conn(path: &Path, check: bool) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // Room for every statement the store caches (rusqlite's default is 16; more than that are
    // prepared on the write paths, and an evicted one is compiled again at its next use).
    conn.set_prepared_statement_cache_capacity(64);
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
    if !check {
        return Ok(conn);
    }
    let check = quick_check(&conn)?;
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
    for ext in COMPANIONS {
        let from = aside(ext);
        if from.exists() {
            let mut to = target.as_os_str().to_owned();
            to.push(ext);
            let to = PathBuf::from(to);
            fs::rename(&from, &to).map_err(|source| StoreError::Io {
                path: from.clone(),
                source,
            })?;
            narrow_mode(&to)?;
        }
    }
    keyfile::sync_parent(path)?;
    Ok(target)
}

impl Db {
    /// Open an existing store for reading only: nothing on disk is created, migrated or reset.
    pub(super) fn open_read_only(cfg: StoreConfig, clock: Arc<dyn Clock>) -> Result<Db> {
        let path = cfg.db_path();
        if !path.exists() {
            return Err(StoreError::Invalid(format!(
                "there is no store at {}; check the state directory in the config (the daemon \
                 creates the store when it first runs)",
                path.display()
            )));
        }
        let kek = Kek::new(&*keyfile::read_checked(cfg.kek.path())?)?;
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
            public_random: crypto::PublicRandom::default(),
            kek,
            keys: KeyRing::default(),
            data_version: 0,
            tx_seals: 0,
            queued: Vec::new(),
            capacity_warned: false,
            full_reported: false,
            disk_full_reported: false,
            auto_rotation: AutoRotation::default(),
            page_size: u64::try_from(page_size).unwrap_or(4096),
            dedup_legacy: None,
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
        let wiped = dir.join(super::WIPED_MARKER);
        if wiped.is_file() {
            let at = fs::read_to_string(&wiped).unwrap_or_default();
            let at = at.trim().parse::<i64>().ok().filter(|ms| *ms > 0);
            queued.push(QueuedEvent {
                at: now,
                kind: "wipe",
                severity: "security",
                detail: match at {
                    Some(ms) => format!(
                        "the hub's store was erased by `vitals-hub wipe` at {}; this store is new",
                        UtcMillis(ms)
                    ),
                    None => {
                        "the hub's store was erased by `vitals-hub wipe`; this store is new".into()
                    }
                },
            });
        }
        let t0 = std::time::Instant::now();
        own_files(&path)?;
        let marker = check_marker(&path);
        let marked = marker.exists();
        let check = !cfg.defer_integrity_check || marked;
        let conn = match open_conn(&path, check) {
            Ok(c) => {
                if marked {
                    // Checked at this open and sound (the earlier failure was not the file's).
                    fs::remove_file(&marker).map_err(|source| StoreError::Io {
                        path: marker.clone(),
                        source,
                    })?;
                    queued.push(QueuedEvent {
                        at: now,
                        kind: "integrity_check_passed",
                        severity: "info",
                        detail: "quick_check at open passed after a failed check".into(),
                    });
                }
                c
            }
            Err(e) if is_corruption(&e) => {
                let moved = move_aside(&path, now)?;
                if marked {
                    let _ = fs::remove_file(&marker);
                }
                error!(path = %path.display(), moved_to = %moved.display(), "Store database is corrupt; moved it aside and started a fresh one.");
                queued.push(QueuedEvent {
                    at: now,
                    kind: "corrupt_database_moved",
                    severity: "error",
                    detail: format!("{e}; moved to {}", moved.display()),
                });
                own_files(&path)?;
                open_conn(&path, true)?
            }
            Err(e) => return Err(e.into()),
        };
        let mut conn = conn;
        debug!(
            ms = t0.elapsed().as_millis() as u64,
            "Store: connection open and checked."
        );
        let found = schema::migrate(&mut conn)?;
        debug!(
            ms = t0.elapsed().as_millis() as u64,
            "Store: schema migrated."
        );
        let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let page_size = u64::try_from(page_size).unwrap_or(4096);
        let mut db = Db {
            conn,
            path,
            cfg,
            clock,
            rng,
            public_random: crypto::PublicRandom::default(),
            kek,
            keys: KeyRing::default(),
            data_version: 0,
            tx_seals: 0,
            queued,
            capacity_warned: false,
            full_reported: false,
            disk_full_reported: false,
            auto_rotation: AutoRotation::default(),
            page_size,
            dedup_legacy: None,
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
        debug!(
            ms = t0.elapsed().as_millis() as u64,
            "Store: keys loaded, in-flight entries recovered."
        );
        if wiped.is_file() {
            // Recorded (committed above): the next open must not record it again.
            if let Err(e) = fs::remove_file(&wiped) {
                warn!(path = %wiped.display(), error = %e, "Could not remove the wipe marker; the wipe may be recorded again at the next open.");
            }
        }
        info!(path = %db.path.display(), schema = schema::LATEST, "Store opened.");
        Ok(db)
    }

    pub(super) fn apply_page_limit(&mut self) -> Result<()> {
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

    pub(super) fn queue(&mut self, kind: &'static str, severity: &'static str, detail: String) {
        self.queued.push(QueuedEvent {
            at: self.clock.now(),
            kind,
            severity,
            detail: bounded(detail, MAX_EVENT_DETAIL),
        });
    }

    /// Run `f` in a write transaction; commit; map a full disk to [`StoreError::DiskFull`].
    ///
    /// `Ok` means committed and fsync'd; `Err` means rolled back. Nothing after the COMMIT can turn
    /// a committed write into an error: what runs afterwards (the automatic data-key rotation)
    /// reports its failures as events and retries later.
    pub(super) fn write<T>(&mut self, f: impl FnOnce(&mut Db) -> Result<T>) -> Result<T> {
        let r = self.write_inner(f);
        match r {
            Ok(t) => {
                if self.disk_full_reported {
                    self.disk_full_reported = false;
                    info!("Disk space is back; the store resumed.");
                    self.queue("disk_full_cleared", "info", "writes succeed again".into());
                }
                self.maybe_auto_rotate();
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

    pub(super) fn write_inner<T>(&mut self, f: impl FnOnce(&mut Db) -> Result<T>) -> Result<T> {
        if self.cfg.read_only {
            return Err(StoreError::Invalid(
                "the store was opened read-only (status, export); writes go through the daemon"
                    .into(),
            ));
        }
        self.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        self.tx_seals = 0;
        let mut reserved = None;
        let body = (|| {
            self.refresh_keys()?;
            let t = f(self)?;
            if let (Some(active), Some(bound)) = (
                self.keys.active,
                self.keys
                    .reservation_for(self.tx_seals, self.cfg.rotate_after_seals),
            ) {
                // MAX: never lower what another connection reserved.
                self.conn
                    .prepare_cached("UPDATE keys SET seals = max(seals, ?1) WHERE id = ?2")?
                    .execute(params![i64::try_from(bound).unwrap_or(i64::MAX), active])?;
                reserved = Some(bound);
            }
            for ev in &self.queued {
                self.conn.execute(
                    "INSERT INTO events(at, kind, severity, detail) VALUES (?1, ?2, ?3, ?4)",
                    params![ev.at.as_millis(), ev.kind, ev.severity, ev.detail],
                )?;
            }
            // Security events count into their report in the same transaction (exactly once).
            let counted: Vec<(&'static str, &'static str, UtcMillis)> = self
                .queued
                .iter()
                .map(|e| (e.kind, e.severity, e.at))
                .collect();
            for (kind, severity, at) in counted {
                self.count_security_event(kind, severity, at)?;
            }
            if !self.queued.is_empty() {
                // The events' fixed budget: the newest EVENTS_BUDGET rows, whatever writes them.
                self.conn.execute(
                    "DELETE FROM events WHERE id <= (SELECT max(id) FROM events) - ?1",
                    [EVENTS_BUDGET],
                )?;
            }
            self.conn.prepare_cached("COMMIT")?.execute([])?;
            Ok(t)
        })();
        match body {
            Ok(t) => {
                self.queued.clear();
                self.keys.active_seals = self.keys.active_seals.saturating_add(self.tx_seals);
                if let Some(bound) = reserved {
                    self.keys.active_reserved = self.keys.active_reserved.max(bound);
                }
                self.tx_seals = 0;
                // Committed: a failure from here on is not the write's. Unknown data version =
                // reload the key ring before its next use.
                self.data_version = self
                    .conn
                    .prepare_cached("PRAGMA data_version")
                    .and_then(|mut s| s.query_row([], |r| r.get(0)))
                    .unwrap_or(KEYS_STALE);
                Ok(t)
            }
            Err(e) => {
                self.tx_seals = 0;
                // The transaction may have added a key to the in-memory ring (a rotation whose
                // COMMIT failed): reload it from the database before it seals anything.
                self.data_version = KEYS_STALE;
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
    pub(super) fn flush_events(&mut self) {
        // A read-only handle keeps its events in memory (`events` still returns them).
        if self.queued.is_empty() || self.cfg.read_only {
            return;
        }
        if let Err(e) = self.write(|_| Ok(())) {
            warn!(error = %e, events = self.queued.len(), "Events could not be written yet; kept in memory.");
        }
    }

    pub(super) fn decode<T: for<'de> Deserialize<'de>>(row: &str, bytes: &[u8]) -> Result<T> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Decode {
            row: row.to_owned(),
            reason: e.to_string(),
        })
    }

    pub(super) fn json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
        serde_json::to_vec(v).map_err(|e| StoreError::Invalid(e.to_string()))
    }
}

#[cfg(test)]
mod seal_reservation_tests {
    use super::*;
    use crate::model::SystemClock;

    fn persisted(db: &Db) -> u64 {
        let n: i64 = db
            .conn
            .query_row(
                "SELECT seals FROM keys WHERE purpose = 'data' AND state = 'active'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        u64::try_from(n).unwrap()
    }

    fn seal_n(db: &mut Db, n: usize) {
        db.write(|db| {
            for _ in 0..n {
                db.seal("readings", "sealed", "row", b"value")?;
            }
            Ok(())
        })
        .unwrap();
    }

    /// The persisted seal count is a bound reserved a block at a time: it covers every seal made
    /// at every commit (so a crash right after any commit can only skip counts), the `keys` row
    /// is written once per block instead of once per transaction, and a second connection (another
    /// process, or the same store reopened after a SIGKILL) resumes counting at the bound, so the
    /// seals of both never add up to more than it.
    #[test]
    fn seal_counts_are_reserved_in_blocks_and_never_undercounted() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = StoreConfig::new(dir.path());
        cfg.kek = crate::store::KekSource::resolve(dir.path(), None);
        let mut a = Db::open(cfg.clone(), Arc::new(SystemClock)).unwrap();
        let block = SEAL_RESERVATION;
        let mut made = a.keys.active_seals;
        let mut bounds = vec![persisted(&a)];
        let txs = (2 * block as usize) / 7 + 3;
        for _ in 0..txs {
            seal_n(&mut a, 7);
            made += 7;
            let p = persisted(&a);
            assert!(p >= made, "persisted {p} < {made} seals made");
            assert_eq!(a.keys.active_seals, made);
            if bounds.last() != Some(&p) {
                bounds.push(p);
            }
        }
        // ~2 blocks of seals in ~585 transactions: 3 reservations, not 585 updates.
        assert!(bounds.len() <= 4, "{bounds:?} for {txs} transactions");

        // Reopened as after a crash: counting resumes at the bound, never below the seals made.
        let mut b = Db::open(cfg.clone(), Arc::new(SystemClock)).unwrap();
        assert!(b.keys.active_seals >= made);
        let mut total = made;
        for round in 0..200 {
            let (db, n) = if round % 2 == 0 {
                (&mut a, 3)
            } else {
                (&mut b, 5)
            };
            seal_n(db, n);
            total += n as u64;
            let p = persisted(db);
            assert!(p >= total, "persisted {p} < {total} seals made by both");
        }
        // A failed transaction's seals are rolled back with its rows; the ring reloads.
        let before = persisted(&a);
        let r: Result<()> = a.write(|db| {
            db.seal("readings", "sealed", "row", b"value")?;
            Err(StoreError::Invalid("test".into()))
        });
        assert!(r.is_err());
        assert_eq!(persisted(&a), before);
        seal_n(&mut a, 1);
        assert!(persisted(&a) > total);
    }
}

#[cfg(test)]
mod event_budget_tests {
    use super::*;
    use crate::model::SystemClock;

    #[test]
    fn events_keep_a_fixed_budget_and_a_bounded_detail() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = StoreConfig::new(dir.path());
        cfg.kek = crate::store::KekSource::resolve(dir.path(), None);
        let mut db = Db::open(cfg, Arc::new(SystemClock)).unwrap();
        for _ in 0..(EVENTS_BUDGET + 50) {
            db.queue("test_event", "warning", "x".repeat(10_000));
        }
        db.write(|_| Ok(())).unwrap();
        let n: i64 = db
            .conn
            .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, EVENTS_BUDGET);
        let longest: i64 = db
            .conn
            .query_row("SELECT max(length(detail)) FROM events", [], |r| r.get(0))
            .unwrap();
        assert!(longest as usize <= MAX_EVENT_DETAIL, "{longest}");
    }
}
