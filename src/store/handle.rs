//! [`Store`], the async handle: every call is a closure sent over a bounded channel to the store's
//! own OS thread, which owns the one connection (`db`), and answered on a oneshot. Nothing here
//! blocks the tokio runtime (a caller polls for its answer briefly, yielding, before it sleeps:
//! [`Queued::wait`]); calls are served one at a time in the order sent, so writes are
//! serialised without locks. This file owns the public call surface and its argument plumbing;
//! what each call guarantees is done, and documented, in `db/`.

use super::db;
use super::{
    AppendOutcome, Device, DeviceInfo, DeviceKey, DeviceRecord, Event, NewHeld, NewReading,
    OutboxItem, Result, RotationReport, Snapshot, Stats, StoreConfig, StoreError, StoredHeld,
    StoredReading,
};
use crate::model::{Clock, UtcMillis};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

type Job = Box<dyn FnOnce(&mut db::Db) + Send>;

/// A call sent to the store's worker whose result has not been asked for yet
/// ([`Store::ack_queued`]).
pub struct Queued<T>(oneshot::Receiver<Result<T>>);

impl<T> Queued<T> {
    /// The call's result, once the worker has run it (its commit durable when `Ok`).
    ///
    /// For the first [`CALLER_SPIN`] the answer is polled between yields to the runtime (other
    /// tasks run in between; the thread does not sleep), and only then awaited: most calls are
    /// answered within that, and a caller that sleeps costs a wake-up through the runtime's
    /// driver (an eventfd write and an `epoll_wait` return, tens of microseconds on a virtual or
    /// idle CPU), which was most of a single append's time (issue 20).
    pub async fn wait(mut self) -> Result<T> {
        if spinning() {
            let start = Instant::now();
            loop {
                match self.0.try_recv() {
                    Ok(result) => return result,
                    Err(oneshot::error::TryRecvError::Closed) => return Err(StoreError::Closed),
                    Err(oneshot::error::TryRecvError::Empty) => {}
                }
                if start.elapsed() >= CALLER_SPIN {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        self.0.await.map_err(|_| StoreError::Closed)?
    }
}

/// How long a caller polls for its answer before it sleeps until woken ([`Queued::wait`]). A
/// commit on this machine's class of disk takes 0.1–0.3 ms; on a Pi's SD card several ms, where
/// the poll is given up after this and costs at most this much CPU per call (a few calls a
/// minute on an idle hub).
const CALLER_SPIN: Duration = Duration::from_micros(300);

/// How long the worker keeps polling for the next call after serving one before it sleeps
/// ([`next_job`]): a caller that sends its next call at once (a drain, a batch of appends, the
/// uplink's ack then read) finds it awake instead of waking it with a futex.
const WORKER_SPIN: Duration = Duration::from_micros(100);

/// Polling only pays where the worker and the caller run on different CPUs at once; on one CPU it
/// would only delay the worker.
fn spinning() -> bool {
    static MANY: OnceLock<bool> = OnceLock::new();
    *MANY.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() > 1))
}

/// The worker's next call, polled for [`WORKER_SPIN`] before sleeping on the channel; `None` once
/// every handle is gone and the queue is empty.
fn next_job(rx: &mut mpsc::Receiver<Job>) -> Option<Job> {
    if spinning() {
        let start = Instant::now();
        loop {
            match rx.try_recv() {
                Ok(job) => return Some(job),
                Err(mpsc::error::TryRecvError::Disconnected) => return None,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            if start.elapsed() >= WORKER_SPIN {
                break;
            }
            for _ in 0..32 {
                std::hint::spin_loop();
            }
        }
    }
    rx.blocking_recv()
}

impl<T> std::fmt::Debug for Queued<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Queued")
    }
}

/// The async handle to the store. Cheap to clone; the worker stops when the last handle is dropped.
#[derive(Debug, Clone)]
pub struct Store {
    tx: mpsc::Sender<Job>,
    done: Arc<tokio::sync::Mutex<Option<oneshot::Receiver<()>>>>,
    path: PathBuf,
    clock: Arc<dyn Clock>,
}

impl Store {
    /// Open (or create) the store, on its own thread.
    pub async fn open(config: StoreConfig, clock: Arc<dyn Clock>) -> Result<Store> {
        let path = config.db_path();
        let store_clock = clock.clone();
        let (tx, mut rx) = mpsc::channel::<Job>(256);
        let (ready_tx, ready_rx) = oneshot::channel::<Result<()>>();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("vitals-store".into())
            .spawn(move || {
                match db::Db::open(config, clock) {
                    Ok(mut db) => {
                        let _ = ready_tx.send(Ok(()));
                        while let Some(job) = next_job(&mut rx) {
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
            clock: store_clock,
        })
    }

    /// The clock the store stamps its rows with.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(super) async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut db::Db) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.call_queued(f).await?.wait().await
    }

    /// Send a call to the worker now and return at once: the store runs it before every call sent
    /// after this returns (calls are served in the order sent); [`Queued::wait`] gives its result.
    /// A queued call runs even when its [`Queued`] is dropped (the worker serves every call it
    /// was sent before it stops).
    async fn call_queued<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut db::Db) -> Result<T> + Send + 'static,
    ) -> Result<Queued<T>> {
        let (otx, orx) = oneshot::channel();
        self.tx
            .send(Box::new(move |db| {
                let _ = otx.send(f(db));
            }))
            .await
            .map_err(|_| StoreError::Closed)?;
        Ok(Queued(orx))
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
        self.call(move |db| db.append(&device, &items, cursor.as_ref(), None))
            .await
    }

    /// [`Store::append`], writing `snapshot` in the same transaction (no commit of its own).
    pub async fn append_with_snapshot(
        &self,
        device: &DeviceKey,
        items: Vec<NewReading>,
        cursor: Option<(String, i64)>,
        snapshot: Snapshot,
    ) -> Result<AppendOutcome> {
        let device = device.clone();
        self.call(move |db| db.append(&device, &items, cursor.as_ref(), Some(&snapshot)))
            .await
    }

    /// Write (or replace) a snapshot in a transaction of its own.
    pub async fn put_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        self.call(move |db| db.put_snapshot(&snapshot)).await
    }

    /// The snapshot named `name`, opened; `None` if there is none. A snapshot that fails to open
    /// is an integrity error (recorded as a security event).
    pub async fn snapshot(&self, name: &str) -> Result<Option<Snapshot>> {
        let name = name.to_owned();
        self.call(move |db| db.snapshot(&name)).await
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

    /// Up to `batch` entries due at `now`: alerts first, then oldest first; payloads opened. An
    /// entry whose record cannot be opened, decoded or found is quarantined with an event instead
    /// of returned (this poll returns fewer entries; the ones after it flow); `Err` only when the
    /// database itself fails.
    pub async fn pending(&self, batch: usize, now: UtcMillis) -> Result<Vec<OutboxItem>> {
        self.call(move |db| db.pending(batch, now)).await
    }

    /// [`Store::pending`] without the entries in `exclude`, which are skipped before their records
    /// are opened (the uplink reads the next batch while the entries of this one and the last are
    /// still pending).
    pub async fn pending_excluding(
        &self,
        batch: usize,
        now: UtcMillis,
        exclude: std::collections::HashSet<i64>,
    ) -> Result<Vec<OutboxItem>> {
        self.call(move |db| db.pending_excluding(batch, now, &exclude))
            .await
    }

    /// Pending → in flight (counts an attempt). Returns how many moved.
    pub async fn mark_in_flight(&self, ids: Vec<i64>) -> Result<usize> {
        self.call(move |db| db.mark_in_flight(&ids)).await
    }

    /// Pending or in flight → acked. Returns how many moved.
    pub async fn ack(&self, ids: Vec<i64>) -> Result<usize> {
        self.call(move |db| db.ack(&ids)).await
    }

    /// [`Store::ack`], queued: returns once the store has the call, before it is committed. The
    /// commit (durable when [`Queued::wait`] returns `Ok`) comes before any call sent later; the
    /// uplink overlaps it with the next bundle's POST.
    pub async fn ack_queued(&self, ids: Vec<i64>) -> Result<Queued<usize>> {
        self.call_queued(move |db| db.ack(&ids)).await
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

    /// Rejected entries → pending, due `now` (`vitals-hub sync --rejected`). Returns how many.
    pub async fn requeue_rejected(&self, now: UtcMillis) -> Result<usize> {
        self.call(move |db| db.requeue_rejected(now)).await
    }

    /// Entries acked at or after `since` and still held → pending, due `now` (`vitals-hub sync
    /// --resend --since`). Returns how many.
    pub async fn requeue_acked_since(&self, since: UtcMillis, now: UtcMillis) -> Result<usize> {
        self.call(move |db| db.requeue_acked_since(since, now))
            .await
    }

    /// Forget the server ids of the hub and devices kept for `destination`.
    pub async fn forget_uplink_refs(&self, destination: &str) -> Result<usize> {
        let d = destination.to_owned();
        self.call(move |db| db.forget_uplink_refs(&d)).await
    }

    /// The newest server reason kept (sealed) with a waiting or rejected entry, unsealed: for the
    /// technician's terminal only (it may echo PHI).
    pub async fn latest_error(&self) -> Result<Option<String>> {
        self.call(|db| db.latest_error()).await
    }

    pub async fn reject(&self, ids: Vec<i64>, reason: &str) -> Result<usize> {
        let reason = reason.to_owned();
        self.call(move |db| db.reject(&ids, &reason)).await
    }

    /// Pending or in flight → quarantined: entries the caller cannot turn into a request (kept for
    /// investigation, never uploaded or retried), with an `outbox_quarantined` event naming the
    /// entry ids. `reason` is sealed into the entry's last error (it may echo a value); the event
    /// never holds it. Returns how many moved. [`Store::pending`] quarantines by itself the entries
    /// whose record fails authentication, does not decode or is missing.
    pub async fn quarantine(&self, ids: Vec<i64>, reason: &str) -> Result<usize> {
        let reason = reason.to_owned();
        self.call(move |db| db.quarantine(&ids, &reason)).await
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

    /// Every security report (aggregated security events, `store::security`), oldest first, with
    /// its outbox state (`pending`, `in_flight`, `acked`, …).
    pub async fn security_reports(
        &self,
    ) -> Result<Vec<(crate::store::security::SecurityReport, String)>> {
        self.call(|db| db.security_reports()).await
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
    /// SQLite's `quick_check` on a second, read-only connection, beside the store's own (a WAL
    /// reader: appends go on meanwhile). `Ok(None)`: the database is sound. `Ok(Some(findings))`:
    /// it is not — the [`super::CHECK_FAILED_MARKER`] file was written (0600, fsync'd), so the next
    /// open checks again and moves a corrupt database aside, as an open with the check does; the
    /// caller should stop (the daemon ends with an error and systemd restarts it).
    pub async fn check_integrity(&self) -> Result<Option<String>> {
        let path = self.path.clone();
        let found = tokio::task::spawn_blocking(move || db::quick_check_aside(&path))
            .await
            .map_err(|_| StoreError::Closed)??;
        if let Some(findings) = &found {
            let detail = format!(
                "quick_check beside the running store: {}",
                findings.chars().take(400).collect::<String>()
            );
            // Best effort: the database may not take the event; the marker file carries it over.
            let _ = self
                .append_event("integrity_check_failed", "error", detail)
                .await;
        }
        Ok(found)
    }

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

    /// The clinic's alert-limits version in force, if one was ever applied.
    pub async fn alert_limits(&self) -> Result<Option<crate::store::StoredLimits>> {
        self.call(|db| db.alert_limits()).await
    }

    /// Make `version` (the limits `ServiceRequest` text) the one in force: one transaction with its
    /// security event; a version not newer than the stored one is refused.
    pub async fn set_alert_limits(
        &self,
        version: u32,
        resource: String,
        applied_at: UtcMillis,
    ) -> Result<()> {
        self.call(move |db| db.set_alert_limits(version, &resource, applied_at))
            .await
    }

    /// The clinic version accepted but not yet in force, if any.
    pub async fn pending_alert_limits(&self) -> Result<Option<crate::store::PendingLimits>> {
        self.call(|db| db.pending_alert_limits()).await
    }

    /// Keep `version` (the limits `ServiceRequest` text) until it takes effect at `effective`:
    /// replaces any pending version, one transaction with its security event. A version not newer
    /// than the one in force is refused. Applying it is [`Store::set_alert_limits`], which removes
    /// it from pending in the same transaction.
    pub async fn set_pending_alert_limits(
        &self,
        version: u32,
        resource: String,
        effective: UtcMillis,
    ) -> Result<()> {
        self.call(move |db| db.set_pending_alert_limits(version, &resource, effective))
            .await
    }

    /// New KEK: re-wrap every key and replace the key file atomically. Returns the new fingerprint.
    pub async fn rotate_kek(&self) -> Result<String> {
        self.call(|db| db.rotate_kek()).await
    }
}
