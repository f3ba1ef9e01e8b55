//! The daemon: `vitals-hub run`.
//!
//! [`Daemon::start`] opens the store (state directory 0700), opens ingest (which rebuilds the
//! alert state from the stored readings), registers the configured simulated devices, and spawns
//! the tasks, all under one shutdown signal:
//!
//! | task | does | beats its [`Progress`] |
//! |---|---|---|
//! | `ble` | scan windows, sessions with paired devices (when `[ble] enabled`) | every scan window |
//! | `simulated` | sessions with simulated devices, one per measurement | every session |
//! | `uplink` | outbox → FHIR bundles → clinic, heartbeat; woken by ingest after each append | every loop |
//! | `schedules` | missed-measurement rules, once a minute | every tick |
//!
//! The store is the one hand-over point between ingest and upload (nothing is acknowledged to a
//! device before its transaction commits), so the tasks share no queue that could lose data: the
//! bounded queues are the store's own job channel (senders wait), the alert-hook queue (full: the
//! event is recorded as not handed over), the stream-value queue to the alert rules
//! ([`super::port::STREAM_QUEUE`]; full: the newest value is dropped and counted, its window's
//! summary is still stored), and the wake-up signal.
//!
//! [`run`] adds systemd: `READY=1` once the store is open and the tasks run; `WATCHDOG=1` at half
//! the watchdog interval, but only while [`Daemon::check`] passes — the store answers, no task has
//! ended, and every task beat within its bound — so a stuck task stops the pings and systemd
//! restarts the hub. A task that ends by itself ends `run` with an error (exit non-zero: restart).
//! On shutdown it sends `STOPPING=1`, ends the sessions (each disconnects), lets the uplink finish
//! its request, and closes the store after every queued transaction.

use super::ingest::{Ingest, IngestConfig, IngestError};
use super::port::HubPort;
use crate::alerts::DeviceStatus;
use crate::ble::{self, DeviceState};
use crate::config::{Config, DeviceEntry};
use crate::model::{Clock, Progress, UtcMillis};
use crate::sim::{SimConfig, SimDevice};
use crate::store::{DeviceRecord, Store, StoreConfig, StoreError};
use crate::uplink::sync::{Uplink, UplinkStatus};
use crate::uplink::{TimeSync, UplinkError};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

/// Errors that stop the daemon. Each names the problem and the fix.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("state directory {path}: {detail}; check that it exists, belongs to the hub's user and has mode 0700")]
    StateDir { path: String, detail: String },
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("ingest: {0}")]
    Ingest(#[from] IngestError),
    #[error("uplink: {0}")]
    Uplink(#[from] UplinkError),
    #[error("task `{0}` ended unexpectedly; the hub stops so that systemd restarts it")]
    TaskEnded(&'static str),
    /// Another daemon holds the state directory's lock (or the lock file is unusable).
    #[error("state directory lock: {0}")]
    Lock(String),
}

/// What the caller may choose besides the config (tests, the demo).
#[derive(Debug, Clone)]
pub struct Options {
    pub clock: Arc<dyn Clock>,
    /// Replaces the clock-synchronisation check `[uplink] require_clock_sync` implies.
    pub time_sync: Option<Arc<dyn TimeSync>>,
    /// How often the schedules are checked.
    pub tick: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            clock: Arc::new(crate::model::SystemClock),
            time_sync: None,
            tick: Duration::from_secs(60),
        }
    }
}

/// The uplink-state namespace the daemon keeps its own values in.
const STATE_NS: &str = "hub";

/// The running hub.
#[derive(Debug)]
pub struct Daemon {
    store: Store,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<&'static str>,
    beats: Vec<(&'static str, Progress, Duration)>,
    uplink_status: Arc<Mutex<UplinkStatus>>,
    ble: ble::Hub,
    /// Kept for the alert state snapshot written at a clean stop.
    ingest: Arc<Ingest>,
    stopping: bool,
    /// `<state_dir>/hub.lock`, held while the daemon runs (`wipe` refuses while it is held).
    _lock: std::fs::File,
}

/// Create the state directory (0700) if missing and check it is usable.
pub fn prepare_state_dir(dir: &Path) -> Result<(), RunError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let err = |detail: String| RunError::StateDir {
        path: dir.display().to_string(),
        detail,
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| err(format!("cannot create it: {e}")))?;
    }
    let meta = std::fs::metadata(dir).map_err(|e| err(e.to_string()))?;
    if !meta.is_dir() {
        return Err(err("it is not a directory".into()));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        // Tighten rather than refuse: the store holds PHI.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| {
            err(format!(
                "it is readable by others and cannot be restricted: {e}"
            ))
        })?;
        warn!("The state directory was readable by others; its mode is now 0700.");
    }
    Ok(())
}

impl Daemon {
    /// Open everything and start the tasks.
    pub async fn start(cfg: &Config, opts: Options) -> Result<Daemon, RunError> {
        // Each step's time to here, at DEBUG (`VITALS_HUB_LOG=vitals_hub::daemon=debug`): the
        // path to READY must not grow with the stored history (issue 20).
        let t0 = std::time::Instant::now();
        let step = |what: &'static str| {
            debug!(
                step = what,
                ms = t0.elapsed().as_millis() as u64,
                "Start-up step done."
            )
        };
        let state_dir = cfg.state_dir();
        prepare_state_dir(&state_dir)?;
        let lock = crate::tech::wipe::hold_lock(&state_dir)
            .map_err(|e| RunError::Lock(e.to_string()))?
            .ok_or_else(|| {
                RunError::Lock(format!(
                    "another vitals-hub daemon already runs on {}; stop it first",
                    state_dir.display()
                ))
            })?;
        for w in cfg.warnings() {
            warn!("{w}");
        }
        let mut sc = StoreConfig::new(&state_dir);
        sc.size_limit = cfg.store.size_limit_mb.saturating_mul(1 << 20);
        sc.retention = i64::from(cfg.store.retention_days) * 86_400_000;
        sc.patient_id = Some(cfg.hub.patient_id.clone());
        // quick_check reads every page: it runs beside the running store after READY (below).
        sc.defer_integrity_check = true;
        let store = Store::open(sc, opts.clock.clone()).await?;
        step("store opened");
        note_software_version(&store).await;
        note_config_digest(&store, &cfg.digest).await;
        // The alert rules in force: the clinic's last accepted version, else hub.toml's [alerts].
        // A version that was waiting for its effective time while the hub was off applies now.
        crate::uplink::limits::apply_due_at_start(&store, opts.clock.now()).await?;
        let limits = crate::uplink::limits::in_force(&store, &cfg.alerts).await?;
        let pending_limits = crate::uplink::limits::pending(&store, &cfg.alerts).await?;
        info!(source = %limits.source, "Alert limits in force.");
        step("alert limits");
        // The uplink is built before anything runs: a bad certificate or CA is a start error.
        let time_sync: Arc<dyn TimeSync> = match &opts.time_sync {
            Some(t) => t.clone(),
            None => cfg.uplink.time_sync(),
        };
        let hub_info = crate::uplink::hub_info(&cfg.uplink)?;
        let uplink_progress = Progress::new();
        let wake = Arc::new(Notify::new());
        let uplink = Uplink::new(
            cfg.uplink.clone(),
            store.clone(),
            opts.clock.clone(),
            time_sync,
            hub_info,
        )?
        .with_alert_rules(limits.rules.clone())
        .with_progress(uplink_progress.clone())
        .with_wake(wake.clone())
        .with_health_mark(cfg.state_dir());
        record_update_outcome(&store).await;
        // The uplink's own alerts (a lasting refusal) go to the same local hook as the patient's.
        let uplink = match cfg.alerts.local_command.clone() {
            Some(command) => {
                let (tx, rx) = tokio::sync::mpsc::channel(super::hook::NOTICE_QUEUE);
                let timeout =
                    Duration::from_secs(u64::from(cfg.alerts.local_command_timeout_seconds.max(1)));
                tokio::spawn(super::hook::notice_task(
                    store.clone(),
                    command,
                    timeout,
                    rx,
                ));
                uplink.with_notices(tx)
            }
            None => uplink,
        };
        let uplink_status = uplink.status_handle();
        step("uplink built");

        let ingest = Arc::new(
            Ingest::open(
                store.clone(),
                IngestConfig {
                    rules: limits.rules.clone(),
                    patient_id: cfg.hub.patient_id.clone(),
                    utc_offset_minutes: cfg.hub.utc_offset_minutes,
                    zone: cfg.ble.zone.clone(),
                },
            )
            .await?
            .with_wake(wake)
            .with_stream_values(),
        );
        step("alert state (snapshot + replay)");
        ingest.set_pending_rules(pending_limits.clone()).await;
        let uplink = uplink.with_limits(
            crate::uplink::limits::Applier::new(
                store.clone(),
                Some(ingest.clone()),
                cfg.alerts.clone(),
                cfg.hub.patient_id.clone(),
                limits,
            )
            .with_pending(pending_limits, opts.clock.now()),
        );
        // Raw values of continuous streams: to the alert rules through a bounded queue (spot
        // readings reach them through ingest when stored). See `port` for what happens when full.
        let (port, mut raw_rx) = HubPort::new(store.clone())
            .with_ingest(ingest.clone())
            .with_stream_queue(super::port::STREAM_QUEUE);
        let tags = ble::AddressTags::new(&store.address_tag_key().await?);
        step("address tag key");

        // Simulated devices: registered (allow-listed, bound to the patient) and anchored.
        let mut sims = Vec::new();
        for d in &cfg.devices {
            if let DeviceEntry::Simulated(s) = d {
                sims.push(Arc::new(
                    register_sim(&store, cfg, s, opts.clock.clone()).await?,
                ));
            }
        }
        let first_start = first_start(&store, opts.clock.now()).await?;
        step("simulated devices, first start");

        let ble_progress = Progress::new();
        let ble = ble::Hub::new(cfg.ble.clone(), Arc::new(port), opts.clock.clone(), tags)
            .with_progress(ble_progress.clone());
        let (shutdown, rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut beats = Vec::new();

        {
            let ingest = ingest.clone();
            let clock = opts.clock.clone();
            let mut rx = rx.clone();
            tasks.spawn(async move {
                loop {
                    let v = tokio::select! {
                        v = raw_rx.recv() => v,
                        _ = rx.changed() => None,
                    };
                    let Some(v) = v else { break };
                    if !v.stream {
                        continue;
                    }
                    if let Err(e) = ingest
                        .observe_stream(&v.device, &v.reading, clock.now())
                        .await
                    {
                        warn!(error = %e, "A stream value could not be evaluated.");
                    }
                }
                "stream alerts"
            });
        }
        if cfg.ble.enabled {
            let b = ble.clone();
            let rx = rx.clone();
            tasks.spawn(async move {
                if let Err(e) = b.run(rx).await {
                    error!(error = %e, "Bluetooth task failed.");
                }
                "ble"
            });
            beats.push(("ble", ble_progress, ble.max_beat_gap()));
        }
        if !sims.is_empty() {
            let b = ble.clone();
            let rx = rx.clone();
            tasks.spawn(async move {
                if let Err(e) = b.run_simulated(sims, rx).await {
                    error!(error = %e, "Simulated devices failed.");
                }
                "simulated"
            });
        }
        {
            let rx = rx.clone();
            tasks.spawn(async move {
                uplink.run(rx).await;
                "uplink"
            });
            // The longest an uplink loop may take: backoff cap + a request + a heartbeat + the
            // clock-sync question to timedate1 (answered or given up within its own timeout).
            let bound = Duration::from_millis(
                cfg.uplink
                    .retry_cap_ms
                    .max(cfg.uplink.poll_interval_ms)
                    .saturating_add(cfg.uplink.request_timeout_ms.saturating_mul(4))
                    .saturating_add(cfg.uplink.connect_timeout_ms.saturating_mul(4)),
            ) + crate::uplink::TIMEDATE1_TIMEOUT;
            beats.push(("uplink", uplink_progress, bound));
        }
        {
            let tick_progress = Progress::new();
            beats.push(("schedules", tick_progress.clone(), opts.tick * 4));
            let names = device_names(cfg);
            let (ingest, store, ble, clock) = (
                ingest.clone(),
                store.clone(),
                ble.clone(),
                opts.clock.clone(),
            );
            let mut rx = rx.clone();
            let every = opts.tick;
            let has_schedules = !cfg.alerts.schedules.is_empty();
            tasks.spawn(async move {
                // The wall clock against the monotonic one at the last tick: a step between two
                // ticks beyond CLOCK_JUMP_BOUND_MS is a `clock_jump` (one event per step; the
                // security report aggregates a flood of them).
                let mut last = (clock.now(), std::time::Instant::now());
                loop {
                    tick_progress.beat();
                    let now = (clock.now(), std::time::Instant::now());
                    if let Some(step) = clock_step(
                        now.0 .0.saturating_sub(last.0 .0),
                        now.1.saturating_duration_since(last.1),
                    ) {
                        warn!(step_s = step / 1000, "The hub's clock stepped (recorded as a security event).");
                        let detail = format!(
                            "the wall clock stepped {step:+} ms against the monotonic clock between two checks"
                        );
                        if let Err(e) = store.append_event("clock_jump", "security", detail).await {
                            warn!(error = %e, "Could not record the clock step.");
                        }
                    }
                    last = now;
                    if has_schedules {
                        let addresses = device_addresses(&names, &store).await;
                        let status = statuses(&addresses, &store, &ingest, &ble, first_start).await;
                        if let Err(e) = ingest.tick(clock.now(), &status, ble.adapter_down()).await
                        {
                            warn!(error = %e, "Schedule check failed.");
                        }
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {}
                        _ = rx.changed() => {}
                    }
                    if *rx.borrow() {
                        return "schedules";
                    }
                }
            });
        }
        {
            // The store's integrity check, left out of the open (it grows with the history): a
            // second after start, on a read-only connection of its own. If it fails, this task
            // ends and with it the daemon (an error exit; systemd restarts it), and the next open
            // checks and moves a corrupt database aside — what an open with the check does.
            let store = store.clone();
            let mut rx = rx.clone();
            tasks.spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = rx.changed() => {}
                }
                if !*rx.borrow() {
                    // A stop does not wait for the check (the next start runs it again).
                    let found = tokio::select! {
                        f = store.check_integrity() => Some(f),
                        _ = rx.changed() => None,
                    };
                    match found {
                        Some(Ok(None)) => debug!("Store integrity check passed."),
                        Some(Ok(Some(_))) => return "store integrity check (failed; the next start checks the database at open)",
                        Some(Err(e)) => warn!(error = %e, "The store integrity check could not run; the next start runs it again."),
                        None => {}
                    }
                }
                while !*rx.borrow() {
                    if rx.changed().await.is_err() {
                        break;
                    }
                }
                "store integrity check"
            });
        }
        step("tasks spawned");
        info!(
            devices = cfg.devices.len(),
            bluetooth = cfg.ble.enabled,
            "Hub started."
        );
        Ok(Daemon {
            _lock: lock,
            store,
            shutdown,
            tasks,
            beats,
            uplink_status,
            ble,
            ingest,
            stopping: false,
        })
    }

    /// The store (the demo's live summary reads its counts).
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn uplink_status(&self) -> UplinkStatus {
        self.uplink_status
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Whether the BLE side sees an adapter.
    pub fn adapter_down(&self) -> bool {
        self.ble.adapter_down()
    }

    /// The watchdog's check: the store answers within 10 s and every task beat within its bound.
    pub async fn check(&self) -> Result<(), String> {
        match tokio::time::timeout(
            Duration::from_secs(10),
            self.store.uplink_state(STATE_NS, "first_start"),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("store: {e}")),
            Err(_) => return Err("the store did not answer within 10 s".into()),
        }
        for (name, p, bound) in &self.beats {
            let gap = p.since_last();
            if gap > *bound {
                return Err(format!(
                    "task `{name}` made no progress for {} s",
                    gap.as_secs()
                ));
            }
        }
        Ok(())
    }

    /// A task that ended (when not stopping) — the daemon's failure.
    pub async fn ended(&mut self) -> &'static str {
        match self.tasks.join_next().await {
            Some(Ok(name)) => name,
            Some(Err(_)) => "a task (panicked)",
            None => std::future::pending().await,
        }
    }

    /// Stop: end the tasks (within `grace`, then abort), close the store after every queued
    /// transaction.
    pub async fn stop(mut self, grace: Duration) {
        self.stopping = true;
        let _ = self.shutdown.send(true);
        let joined = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if joined.is_err() {
            warn!("Tasks did not end within the grace period; aborting them.");
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
        }
        let Daemon {
            store, ble, ingest, ..
        } = self;
        drop(ble);
        // The next start replays nothing of what this run evaluated.
        if let Err(e) = ingest.save_snapshot().await {
            warn!(error = %e, "The alert state snapshot could not be written at stop; the next start replays more.");
        }
        drop(ingest);
        if tokio::time::timeout(Duration::from_secs(5), store.close())
            .await
            .is_err()
        {
            warn!("The store did not close within 5 s (every transaction was already durable).");
        }
        info!("Hub stopped.");
    }
}

/// Register a simulated device in the store and give it its anchor (kept across restarts).
async fn register_sim(
    store: &Store,
    cfg: &Config,
    s: &SimConfig,
    clock: Arc<dyn Clock>,
) -> Result<SimDevice, RunError> {
    let address = crate::sim::sim_address(&s.name);
    store
        .upsert_device(
            DeviceRecord {
                address: address.clone(),
                name: Some(s.name.clone()),
                profile: s.profile.store_profile().to_string(),
                patient_binding: Some(cfg.hub.patient_id.clone()),
                serial: Some(format!("SIM-{}", s.name)),
                bond: Some("simulated".into()),
            },
            true,
        )
        .await?;
    let key = format!("sim_anchor/{}", s.name);
    let anchor = match store
        .uplink_state(STATE_NS, &key)
        .await?
        .and_then(|v| v.parse::<i64>().ok())
    {
        Some(a) => UtcMillis(a),
        None => {
            let a = SimDevice::first_anchor(s, clock.now());
            store
                .set_uplink_state(STATE_NS, &key, &a.as_millis().to_string())
                .await?;
            a
        }
    };
    Ok(SimDevice::new(
        s.clone(),
        anchor,
        cfg.hub.utc_offset_minutes,
        clock,
    ))
}

/// When this hub first started (a device never seen counts as enrolled then).
async fn first_start(store: &Store, now: UtcMillis) -> Result<UtcMillis, RunError> {
    if let Some(v) = store
        .uplink_state(STATE_NS, "first_start")
        .await?
        .and_then(|v| v.parse::<i64>().ok())
    {
        return Ok(UtcMillis(v));
    }
    store
        .set_uplink_state(STATE_NS, "first_start", &now.as_millis().to_string())
        .await?;
    Ok(now)
}

/// How each configured device is found: by the name given at pairing (or, from an older config,
/// its address), or, for a simulated device, its made-up address.
#[derive(Debug, Clone)]
enum Named {
    Paired { legacy_address: Option<String> },
    Simulated(String),
}

fn device_names(cfg: &Config) -> BTreeMap<String, Named> {
    cfg.devices
        .iter()
        .map(|d| match d {
            DeviceEntry::Ble { name, config } => (
                name.clone(),
                Named::Paired {
                    legacy_address: config.legacy_address.clone(),
                },
            ),
            DeviceEntry::Simulated(s) => (
                s.name.clone(),
                Named::Simulated(crate::sim::sim_address(&s.name)),
            ),
        })
        .collect()
}

/// Device name → Bluetooth address, the paired devices' addresses read from the store (sealed
/// there since pairing; the config names devices only). Asked each tick, so a device paired while
/// the daemon runs is found. A configured device not paired (yet) has no address: the schedule
/// rules count it as never seen since enrolment.
async fn device_addresses(
    names: &BTreeMap<String, Named>,
    store: &Store,
) -> BTreeMap<String, String> {
    let paired = store.devices().await.unwrap_or_default();
    let mut out = BTreeMap::new();
    for (name, how) in names {
        let address = match how {
            Named::Simulated(a) => Some(a.clone()),
            Named::Paired { legacy_address } => paired
                .iter()
                .find(|d| d.record.name.as_deref() == Some(name.as_str()))
                .map(|d| d.record.address.clone())
                .or_else(|| legacy_address.clone()),
        };
        out.insert(name.clone(), address.unwrap_or_default());
    }
    out
}

/// What the schedule rules need to know of each named device.
async fn statuses(
    names: &BTreeMap<String, String>,
    store: &Store,
    ingest: &Ingest,
    ble: &ble::Hub,
    enrolled: UtcMillis,
) -> BTreeMap<String, DeviceStatus> {
    let mut out = BTreeMap::new();
    for (name, address) in names {
        let mut st = DeviceStatus {
            last_seen: Some(enrolled),
            ..DeviceStatus::default()
        };
        if let Ok(Some(d)) = store.device_by_address(address).await {
            st.last_reading = ingest.last_reading(&d.key).await;
            if let Ok(Some(info)) = store.device_info(&d.key).await {
                st.last_seen = info.last_seen.or(st.last_seen);
                st.last_battery_pct = info.battery_percent;
            }
        }
        st.pairing_failing = ble.state(address) == Some(DeviceState::PairingNeeded);
        out.insert(name.clone(), st);
    }
    out
}

/// The last update's outcome (`vitals-hub update-check`), into the store's events once: they go
/// upstream. The line names versions and times only.
async fn record_update_outcome(store: &Store) {
    let dir = crate::tech::update::update_dir();
    let Some(line) = crate::tech::update::last_outcome(&dir) else {
        return;
    };
    const KEY: &str = "update_outcome_recorded";
    if store
        .uplink_state("local", KEY)
        .await
        .ok()
        .flatten()
        .as_deref()
        == Some(line.as_str())
    {
        return;
    }
    let severity = crate::tech::update::outcome_severity(&line);
    if severity == "info" {
        info!(outcome = %line, "Software update checked.");
    } else {
        warn!(outcome = %line, "Software update rolled back.");
    }
    if let Err(e) = store.append_event("update", severity, line.clone()).await {
        warn!(error = %e, "Could not record the update's outcome.");
        return;
    }
    let _ = store.set_uplink_state("local", KEY, &line).await;
}

/// Send a systemd notification (nothing outside systemd).
fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!(error = %e, "systemd notification failed.");
    }
}

/// Run until `shutdown` turns true (SIGTERM/SIGINT in the binary): READY, watchdog, clean stop.
pub async fn run(
    cfg: Config,
    opts: Options,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), RunError> {
    let mut daemon = Daemon::start(&cfg, opts).await?;
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("running"),
    ]);
    let watchdog = sd_notify::watchdog_enabled();
    // Without a systemd watchdog the check still runs (and is logged), once a minute.
    let every = watchdog.map_or(Duration::from_secs(60), |d| d / 2);
    let mut failing_since: Option<tokio::time::Instant> = None;
    let result = loop {
        tokio::select! {
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    break Ok(());
                }
            }
            name = daemon.ended() => {
                error!(task = name, "A task ended unexpectedly.");
                break Err(RunError::TaskEnded(name));
            }
            _ = tokio::time::sleep(every) => {
                match daemon.check().await {
                    Ok(()) => {
                        if failing_since.take().is_some() {
                            info!("Watchdog check passes again.");
                        }
                        if watchdog.is_some() {
                            notify(&[sd_notify::NotifyState::Watchdog]);
                        }
                    }
                    Err(why) => {
                        if failing_since.is_none() {
                            error!(reason = %why, "Watchdog check failed: no keep-alive sent.");
                            failing_since = Some(tokio::time::Instant::now());
                            notify(&[sd_notify::NotifyState::Status("watchdog check failing")]);
                        }
                    }
                }
            }
        }
    };
    notify(&[sd_notify::NotifyState::Stopping]);
    daemon.stop(Duration::from_secs(8)).await;
    result
}

/// Record a change of the running software version since the last start (a security event the
/// clinic receives as an AuditEvent, issue 19): the version last run is kept in the store's
/// per-destination state under `hub`/`software_version`. A failure is logged, never fatal.
async fn note_software_version(store: &Store) {
    let now = env!("CARGO_PKG_VERSION");
    let before = match store.uplink_state("hub", "software_version").await {
        Ok(v) => v,
        Err(e) => {
            warn!(error = %e, "Could not read the last software version.");
            return;
        }
    };
    if before.as_deref() == Some(now) {
        return;
    }
    let detail = match &before {
        Some(b) => format!("software version {b} -> {now}"),
        None => format!("software version {now} (first start)"),
    };
    if let Err(e) = store
        .append_event("software_version_changed", "info", detail)
        .await
    {
        warn!(error = %e, "Could not record the software version change.");
        return;
    }
    if let Err(e) = store.set_uplink_state("hub", "software_version", now).await {
        warn!(error = %e, "Could not record the software version.");
    }
}

/// A step of the wall clock larger than this between two ticks of the schedules task (measured
/// against the monotonic clock) is recorded as `clock_jump`. A tick is a minute; scheduling jitter
/// is milliseconds, so only a real step (NTP's first sync, a hand-set clock, an RTC fault) passes.
pub const CLOCK_JUMP_BOUND_MS: i64 = 60_000;

/// How far the wall clock stepped between two observations, when beyond [`CLOCK_JUMP_BOUND_MS`]:
/// the wall clock's elapsed time minus the monotonic clock's, in ms (negative: stepped back).
pub fn clock_step(wall_elapsed_ms: i64, monotonic: Duration) -> Option<i64> {
    let mono = i64::try_from(monotonic.as_millis()).unwrap_or(i64::MAX);
    let step = wall_elapsed_ms.saturating_sub(mono);
    (step.saturating_abs() > CLOCK_JUMP_BOUND_MS).then_some(step)
}

/// Record a change of hub.toml since the daemon last ran (`config_changed`, a security event the
/// clinic receives as an AuditEvent, issue 19): the SHA-256 of the file last run with is kept in
/// the store's per-destination state under `hub`/`config_sha256`, never the text (it names the
/// patient). The first start records the digest only. A failure is logged, never fatal.
async fn note_config_digest(store: &Store, digest: &str) {
    let before = match store.uplink_state(STATE_NS, "config_sha256").await {
        Ok(v) => v,
        Err(e) => {
            warn!(error = %e, "Could not read the last configuration's digest.");
            return;
        }
    };
    if before.as_deref() == Some(digest) {
        return;
    }
    if let Some(b) = &before {
        // Digest prefixes only: enough to tell versions apart in `tech status`, nothing of the text.
        let short = |d: &str| d.get(..12).unwrap_or(d).to_string();
        let detail = format!(
            "hub.toml changed since the last start (sha-256 {} -> {})",
            short(b),
            short(digest)
        );
        if let Err(e) = store
            .append_event("config_changed", "security", detail)
            .await
        {
            warn!(error = %e, "Could not record the configuration change.");
            return;
        }
        warn!("hub.toml differs from the configuration the hub last ran with (recorded as a security event).");
    }
    if let Err(e) = store
        .set_uplink_state(STATE_NS, "config_sha256", digest)
        .await
    {
        warn!(error = %e, "Could not record the configuration's digest.");
    }
}

#[cfg(test)]
mod clock_step_tests {
    use super::{clock_step, CLOCK_JUMP_BOUND_MS};
    use std::time::Duration;

    #[test]
    fn only_a_step_beyond_the_bound_counts_either_way() {
        let m = Duration::from_secs(60);
        assert_eq!(clock_step(60_000, m), None);
        assert_eq!(clock_step(60_000 + CLOCK_JUMP_BOUND_MS, m), None);
        assert_eq!(clock_step(60_001 + CLOCK_JUMP_BOUND_MS, m), Some(60_001));
        assert_eq!(clock_step(-3_600_000, m), Some(-3_660_000));
        assert_eq!(clock_step(i64::MIN, Duration::MAX), Some(i64::MIN));
    }
}

#[cfg(test)]
mod software_version_tests {
    #![allow(clippy::unwrap_used)]
    use super::note_software_version;
    use crate::model::SystemClock;
    use crate::store::{KekSource, Store, StoreConfig};
    use std::sync::Arc;

    #[tokio::test]
    async fn a_new_software_version_is_recorded_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = StoreConfig::new(dir.path());
        c.kek = KekSource::resolve(dir.path(), None);
        let store = Store::open(c, Arc::new(SystemClock)).await.unwrap();
        note_software_version(&store).await;
        note_software_version(&store).await;
        let changes = store
            .events(100)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == "software_version_changed")
            .count();
        assert_eq!(changes, 1, "the same version again is no change");
        // A different version last run: recorded again.
        store
            .set_uplink_state("hub", "software_version", "0.0.1")
            .await
            .unwrap();
        note_software_version(&store).await;
        let events = store.events(100).await.unwrap();
        assert!(events.iter().any(|e| e.kind == "software_version_changed"
            && e.detail.starts_with("software version 0.0.1 -> ")));
        let reports = store.security_reports().await.unwrap();
        let v: Vec<_> = reports
            .iter()
            .filter(|(r, _)| r.code == "software-version")
            .collect();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].0.count, 2);
        store.close().await;
    }
}
