//! Bluetooth LE: everything between a medical device in the living room and a decoded reading in
//! the store.
//!
//! **Shape.** [`Hub::run`] scans in windows (`scan_window_ms` on, `scan_pause_ms` off — never without
//! end, which grows BlueZ's memory), sees every device BlueZ knows, and starts one [`session`] per
//! allow-listed, bonded device that is not already in a session, each under the connection budget
//! (a semaphore of `max_connections`). Devices not on the allow-list are counted
//! ([`Hub::ignored`]) and never connected. Every D-Bus operation runs under a timeout
//! (`op_timeout_ms`, `connect_timeout_ms`), a session under `session_timeout_ms`, so one stuck device
//! never stalls the others. The session speaks to the device through the narrow [`link::Link`]
//! trait; btleplug types stay inside this module. A dropped BlueZ (bluetoothd restart) fails the
//! scan window; the next window builds a fresh btleplug manager.
//!
//! **Session** (see [`session`]): connect (retry with backoff; `disconnect()` after a client-side
//! timeout because BlueZ keeps trying) → discover → battery → read the device clock, keep the
//! offset ([`BleEvent::ClockOffset`], the evidence for the coincident-timestamp rule) and write
//! Current Time where the device config allows and the skew exceeds `clock_tolerance_s` →
//! subscribe (before any control point) → the profile transfer:
//! - glucose: RACP "sequence ≥ cursor + 1" (all records without a cursor); success and "no records
//!   found" end it, other response codes are events; contexts joined by sequence number; readings
//!   are committed in batches together with the cursor (the highest sequence number in the batch) in
//!   one store transaction, so a link loss keeps every record that arrived and the next session
//!   resumes after it — the stable key makes a re-sent record a duplicate, never a second row;
//! - blood pressure, thermometer, scale, PLX spot-check: indications until quiet or hang-up;
//! - heart rate, PLX continuous: every raw value goes to the alert hook; the store gets one
//!   reading per kind per `summary_window_ms` window: **the mean** (one decimal), device time = the
//!   window start (hub clock, `utc_offset_minutes`), stable key naming the window; count, min and
//!   max are sealed with it ([`crate::store::ReadingSummary`]) and also travel as
//!   [`BleEvent::Summary`];
//! - CGM: records timed from the Session Start Time; with E2E-CRC in the CGM Feature a record
//!   without a valid CRC is rejected (malformed event); the cursor is the highest time offset.
//!
//! **Stable keys** `v1|<address>|<patient>|<kind>[|seq=<n>][|user=<u>]|t=<device time>` (or the
//! receive time / window when the device sends no time) — deterministic, so re-downloads dedup.
//!
//! **Multi-user devices.** A reading whose user id differs from the device's configured
//! `user_id` is never appended: it is held in the store ([`Store::hold`], sealed, never in the
//! outbox; listed by [`Store::held`], then assigned or discarded) with a
//! [`BleEvent::HeldForAssignment`]; [`Hub::held`] lists what this run held.
//!
//! **Events.** The store has no public way to append an event, so BLE events (malformed payloads
//! naming the device, clock offsets, pairing needed, RACP refusals, summaries) are kept in memory
//! ([`Hub::events`]) and logged without PHI (device by store key or address hash).
//!
//! **Pairing** is not in btleplug: [`pairing::pair`] calls `Device1.Pair()` over zbus with the hub's
//! own `org.bluez.Agent1` (KeyboardDisplay), sets `Trusted`, and records the bond.

pub mod link;
pub mod pairing;
pub mod session;
pub mod tech;

use crate::model::{Clock, Decimal, Kind, Reading, UtcMillis};
use crate::store::{DeviceKey, NewHeld, NewReading, Store};
use btleplug::api::{Central as _, CentralEvent, Manager as _, Peripheral as _, ScanFilter};
use btleplug::platform::{Adapter, Manager, PeripheralId};
use futures::StreamExt;
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch, Semaphore};
use tracing::{debug, info, warn};

pub use link::{BtleLink, Link, LinkError};
pub use session::Outcome;

/// A failing scan loop waits at most this many scan pauses between windows (a power of two).
const MAX_BACKOFF_FACTOR: u64 = 64;

/// The cursor name of the glucose RACP download (last stored sequence number).
pub const CURSOR_GLUCOSE: &str = "gls_sequence";
/// The cursor name of CGM records (last stored time offset, minutes).
pub const CURSOR_CGM: &str = "cgm_time_offset";

/// Per-device settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// Bluetooth address, `AA:BB:CC:DD:EE:FF`.
    pub address: String,
    /// The patient's user index on a multi-user scale or cuff; readings of other users are held.
    #[serde(default)]
    pub user_id: Option<u8>,
    /// Whether the hub may write the device clock (Current Time Service).
    #[serde(default)]
    pub set_clock: bool,
}

/// What the BLE sessions need. Durations in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BleConfig {
    /// Scan for and talk to paired devices (off on a hub used only with simulated devices).
    pub enabled: bool,
    pub scan_window_ms: u64,
    pub scan_pause_ms: u64,
    pub connect_timeout_ms: u64,
    pub op_timeout_ms: u64,
    pub connect_attempts: u32,
    pub backoff_ms: u64,
    /// Concurrent connections (adapters manage a few).
    pub max_connections: usize,
    pub session_timeout_ms: u64,
    /// After a finished session, the device is left alone this long.
    pub cooldown_ms: u64,
    /// After a failed session, wait this long before the next attempt.
    pub retry_after_ms: u64,
    /// Without traffic this long, a spot device is done (or a stream checks its link).
    pub quiet_ms: u64,
    /// RACP: no record for this long → check the link; twice → abort.
    pub racp_idle_ms: u64,
    /// Readings per store transaction during a download.
    pub commit_batch: usize,
    /// Continuous streams: summary window (default 1 minute).
    pub summary_window_ms: i64,
    /// Continuous streams: a session ends after this long (the stream resumes next session).
    pub stream_max_ms: u64,
    /// Device clock skew beyond which the clock is written (where allowed).
    pub clock_tolerance_s: i64,
    /// The hub's zone offset for device wall clocks (the config tree brings real zones later).
    /// Set from `[hub]` by the config (not a key of `[ble]`).
    #[serde(skip)]
    pub utc_offset_minutes: i32,
    /// Set from the `[[device]]` tables by the config (not a key of `[ble]`).
    #[serde(skip)]
    pub devices: Vec<DeviceConfig>,
}

impl Default for BleConfig {
    fn default() -> Self {
        BleConfig {
            enabled: true,
            scan_window_ms: 10_000,
            scan_pause_ms: 5_000,
            connect_timeout_ms: 30_000,
            op_timeout_ms: 10_000,
            connect_attempts: 3,
            backoff_ms: 1_000,
            max_connections: 3,
            session_timeout_ms: 300_000,
            cooldown_ms: 60_000,
            retry_after_ms: 10_000,
            quiet_ms: 5_000,
            racp_idle_ms: 15_000,
            commit_batch: 50,
            summary_window_ms: 60_000,
            stream_max_ms: 600_000,
            clock_tolerance_s: 120,
            utc_offset_minutes: 0,
            devices: Vec::new(),
        }
    }
}

impl BleConfig {
    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }
    pub(crate) fn backoff(&self) -> Duration {
        Self::ms(self.backoff_ms)
    }
    pub(crate) fn quiet(&self) -> Duration {
        Self::ms(self.quiet_ms)
    }
    pub(crate) fn racp_idle(&self) -> Duration {
        Self::ms(self.racp_idle_ms)
    }
    pub(crate) fn stream_max(&self) -> Duration {
        Self::ms(self.stream_max_ms)
    }
    fn device(&self, address: &str) -> DeviceConfig {
        self.devices
            .iter()
            .find(|d| d.address.eq_ignore_ascii_case(address))
            .cloned()
            .unwrap_or_else(|| DeviceConfig {
                address: address.to_string(),
                ..DeviceConfig::default()
            })
    }
}

/// Errors of the BLE layer.
#[derive(Debug, thiserror::Error)]
pub enum BleError {
    /// BlueZ is not reachable on the system bus.
    #[error("BlueZ is not reachable on the system bus ({0}); check that bluetoothd runs and the hub may use D-Bus")]
    Bluez(String),
    /// No Bluetooth adapter.
    #[error("no Bluetooth adapter found; check the adapter is plugged in and powered (`bluetoothctl list`)")]
    NoAdapter,
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// Pairing with the device failed.
    #[error("pairing {address} failed: {detail}; put the device in pairing mode and retry")]
    Pairing { address: String, detail: String },
    /// A D-Bus call failed.
    #[error("D-Bus call {call} for {address} failed: {detail}")]
    Dbus {
        address: String,
        call: &'static str,
        detail: String,
    },
}

/// Something the BLE layer observed, for the audit trail (no PHI besides summary values).
#[derive(Debug, Clone, PartialEq)]
pub enum BleEvent {
    /// A payload did not decode; the session went on with the other records.
    Malformed {
        device: DeviceKey,
        characteristic: u16,
        detail: String,
    },
    /// Device clock minus hub clock at connect; whether the clock was then written.
    ClockOffset {
        device: DeviceKey,
        device_minus_hub_s: i64,
        written: bool,
    },
    /// The device is allow-listed but not bonded: a technician must pair it.
    PairingNeeded { device: DeviceKey },
    /// A reading of another user was held for assignment.
    HeldForAssignment { device: DeviceKey, user_id: u8 },
    /// The meter refused an RACP request with this response code.
    RacpRefused {
        device: DeviceKey,
        response_code: u8,
    },
    /// One stored summary of a continuous stream.
    Summary {
        device: DeviceKey,
        kind: Kind,
        window_start: UtcMillis,
        window_ms: i64,
        count: u64,
        min: Decimal,
        mean: Decimal,
        max: Decimal,
    },
    /// A session ended.
    SessionEnded { device: DeviceKey, outcome: Outcome },
}

/// A reading of a user other than the configured patient, kept out of the patient's data.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldReading {
    pub device: DeviceKey,
    pub user_id: u8,
    pub reading: Reading,
    pub stable_key: String,
    pub received_at: UtcMillis,
}

/// A raw value for the alert rules (every value, summaries or not).
#[derive(Debug, Clone, PartialEq)]
pub struct RawValue {
    pub device: DeviceKey,
    pub reading: Reading,
    /// A value of a continuous stream (heart rate, PLX continuous): the store keeps only the
    /// window's summary, so this raw value is the alert rules' only sight of it.
    pub stream: bool,
}

/// Where a device stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceState {
    InSession,
    /// Finished; left alone until the cooldown passes.
    Done {
        at: UtcMillis,
    },
    /// Failed; retried after `retry_after_ms`.
    Failed {
        at: UtcMillis,
        failures: u32,
    },
    /// Allow-listed but not bonded.
    PairingNeeded,
}

/// Where a session's readings go: the store directly, or the hub's ingest (store, then the alert
/// rules). Implemented by [`Store`] and by `hub::Ingest`.
pub trait ReadingSink: Send + Sync + std::fmt::Debug {
    /// Append readings of one device and optionally its download cursor, durably.
    fn append<'a>(
        &'a self,
        device: &'a DeviceKey,
        items: Vec<NewReading>,
        cursor: Option<(String, i64)>,
    ) -> SinkFuture<'a>;
}

/// The future a [`ReadingSink`] returns.
pub type SinkFuture<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<crate::store::AppendOutcome, String>> + Send + 'a>,
>;

impl ReadingSink for Store {
    fn append<'a>(
        &'a self,
        device: &'a DeviceKey,
        items: Vec<NewReading>,
        cursor: Option<(String, i64)>,
    ) -> SinkFuture<'a> {
        Box::pin(async move {
            Store::append(self, device, items, cursor)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// Events kept in memory for [`Hub::events`], the newest ones (the store's audit log keeps every
/// event but summaries and session ends, and the summary figures are stored with their reading).
/// A continuous stream adds a summary a minute, so an unbounded list would grow for as long as the
/// hub runs.
const EVENTS_KEPT: usize = 10_000;

#[derive(Debug)]
pub(crate) struct Shared {
    pub config: BleConfig,
    pub store: Store,
    pub sink: Arc<dyn ReadingSink>,
    pub clock: Arc<dyn Clock>,
    events: Mutex<Vec<BleEvent>>,
    held: Mutex<Vec<HeldReading>>,
    alerts: Option<mpsc::UnboundedSender<RawValue>>,
}

impl Shared {
    pub fn event(&self, e: BleEvent) {
        self.persist(&e);
        if let Ok(mut v) = self.events.lock() {
            if v.len() >= EVENTS_KEPT {
                v.drain(..EVENTS_KEPT / 10);
            }
            v.push(e);
        }
    }

    /// Record the event in the store's audit log (no values: summaries stay in memory).
    fn persist(&self, e: &BleEvent) {
        let (kind, severity, detail) = match e {
            BleEvent::Malformed { device, characteristic, detail } => (
                "ble_malformed_payload",
                "warning",
                format!("device {device} characteristic 0x{characteristic:04X}: {detail}"),
            ),
            BleEvent::ClockOffset { device, device_minus_hub_s, written } => (
                "ble_clock_offset",
                "info",
                format!("device {device} clock offset {device_minus_hub_s} s; written: {written}"),
            ),
            BleEvent::PairingNeeded { device } => (
                "ble_pairing_needed",
                "error",
                format!("device {device} is allow-listed but not bonded: run `vitals-hub pair`"),
            ),
            BleEvent::HeldForAssignment { device, user_id } => (
                "ble_reading_held",
                "warning",
                format!("device {device}: a reading of user {user_id} (not the patient's) was held"),
            ),
            BleEvent::RacpRefused { device, response_code } => (
                "ble_racp_refused",
                "warning",
                format!("device {device} refused the record request (RACP response 0x{response_code:02X})"),
            ),
            BleEvent::Summary { .. } | BleEvent::SessionEnded { .. } => return,
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let store = self.store.clone();
            rt.spawn(async move {
                let _ = store.append_event(kind, severity, detail).await;
            });
        }
    }
    /// Hold a reading in the store (sealed, not in the outbox); a re-sent one is not held twice.
    pub async fn hold(&self, h: HeldReading) {
        let item = NewHeld {
            user_id: h.user_id,
            reading: h.reading.clone(),
            received_at: h.received_at,
            stable_key: h.stable_key.clone(),
        };
        match self.store.hold(&h.device, item).await {
            Ok((_, true)) => return,
            Ok((id, false)) => {
                debug!(device = %h.device, held = id, "Reading held for assignment.")
            }
            Err(e) => {
                warn!(device = %h.device, error = %e, "Held reading not stored; kept in memory only.")
            }
        }
        self.event(BleEvent::HeldForAssignment {
            device: h.device.clone(),
            user_id: h.user_id,
        });
        if let Ok(mut v) = self.held.lock() {
            v.push(h);
        }
    }
    pub fn alert(&self, device: &DeviceKey, r: &Reading) {
        self.raw(device, r, false);
    }
    /// A raw value of a continuous stream (not stored itself; its window's summary is).
    pub fn alert_stream(&self, device: &DeviceKey, r: &Reading) {
        self.raw(device, r, true);
    }
    fn raw(&self, device: &DeviceKey, r: &Reading, stream: bool) {
        if let Some(tx) = &self.alerts {
            let _ = tx.send(RawValue {
                device: device.clone(),
                reading: r.clone(),
                stream,
            });
        }
    }
}

/// The BLE side of the hub.
#[derive(Debug, Clone)]
pub struct Hub {
    shared: Arc<Shared>,
    budget: Arc<Semaphore>,
    states: Arc<Mutex<HashMap<String, DeviceState>>>,
    ignored: Arc<Mutex<HashSet<String>>>,
    /// Consecutive scan windows that failed (BlueZ or the adapter unusable); 0 when healthy.
    window_failures: Arc<std::sync::atomic::AtomicU32>,
    progress: Option<crate::model::Progress>,
    /// Devices that refused the hub as unbonded although BlueZ lists them as paired: when, and
    /// the bond record then. Not reconnected until the record changes or `cooldown_ms` passes.
    refused: Arc<Mutex<HashMap<String, Refused>>>,
}

/// When a device refused the hub as unbonded, and its bond record at that time.
type Refused = (UtcMillis, Option<String>);

/// A short, non-reversible tag of an address for logs.
pub fn address_tag(address: &str) -> String {
    format!(
        "dev-{:08x}",
        fnv1a(address.to_ascii_uppercase().as_bytes()) >> 32
    )
}

/// FNV-1a, 64 bit: a stable, non-cryptographic hash for tags and made-up addresses.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Hub {
    /// `alerts` receives every raw value (the alerts module subscribes later).
    pub fn new(
        config: BleConfig,
        store: Store,
        clock: Arc<dyn Clock>,
        alerts: Option<mpsc::UnboundedSender<RawValue>>,
    ) -> Hub {
        let budget = Arc::new(Semaphore::new(config.max_connections.max(1)));
        Hub {
            shared: Arc::new(Shared {
                config,
                sink: Arc::new(store.clone()),
                store,
                clock,
                events: Mutex::new(Vec::new()),
                held: Mutex::new(Vec::new()),
                alerts,
            }),
            budget,
            states: Arc::new(Mutex::new(HashMap::new())),
            ignored: Arc::new(Mutex::new(HashSet::new())),
            window_failures: Arc::new(std::sync::atomic::AtomicU32::new(0)),
            progress: None,
            refused: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Beat `progress` at every scan window (the hub's watchdog reads it).
    pub fn with_progress(mut self, progress: crate::model::Progress) -> Hub {
        self.progress = Some(progress);
        self
    }

    /// Whether the last scan window failed: BlueZ unreachable or no adapter.
    pub fn adapter_down(&self) -> bool {
        self.window_failures
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    }

    /// How long a healthy or failing scan loop may take between two beats of its progress.
    pub fn max_beat_gap(&self) -> Duration {
        let c = &self.shared.config;
        Duration::from_millis(
            c.scan_window_ms
                .saturating_add(c.scan_pause_ms.max(1).saturating_mul(MAX_BACKOFF_FACTOR))
                .saturating_add(c.op_timeout_ms.saturating_mul(6)),
        )
    }

    /// Send readings through `sink` (the hub's ingest, so the alert rules see them) instead of
    /// appending to the store directly. Call before `run`.
    pub fn with_sink(mut self, sink: Arc<dyn ReadingSink>) -> Hub {
        // `new` returned the only reference to `shared`; sessions clone it only once `run` starts.
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.sink = sink;
        } else {
            warn!("Reading sink not set: the BLE hub is already running.");
        }
        self
    }

    /// The latest events of this run (at most 10,000).
    pub fn events(&self) -> Vec<BleEvent> {
        self.shared
            .events
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }
    pub fn held(&self) -> Vec<HeldReading> {
        self.shared
            .held
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }
    /// Devices seen that are not on the allow-list (never connected).
    pub fn ignored(&self) -> usize {
        self.ignored.lock().map(|s| s.len()).unwrap_or(0)
    }
    pub fn state(&self, address: &str) -> Option<DeviceState> {
        self.states
            .lock()
            .ok()
            .and_then(|s| s.get(&address.to_ascii_uppercase()).cloned())
    }

    /// Scan in windows and run sessions until `shutdown` turns true.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) -> Result<(), BleError> {
        let mut manager: Option<Manager> = None;
        let mut failures = 0u32;
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            if let Some(p) = &self.progress {
                p.beat();
            }
            match self.window(&mut manager, &mut shutdown).await {
                Ok(()) => {
                    if failures > 0 {
                        info!(failures, "Bluetooth is usable again.");
                    }
                    failures = 0;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    // Said once, then every 64th window: a hub without an adapter must not fill
                    // the journal.
                    if failures == 1 || failures.is_multiple_of(64) {
                        warn!(error = %e, failures, "Scan window failed; BlueZ will be re-acquired.");
                    } else {
                        debug!(error = %e, failures, "Scan window failed.");
                    }
                    manager = None;
                }
            }
            self.window_failures
                .store(failures, std::sync::atomic::Ordering::Relaxed);
            // Failing windows back off (doubling, up to MAX_BACKOFF_FACTOR pauses): nothing polls a
            // missing adapter.
            let factor = 1u64 << failures.min(MAX_BACKOFF_FACTOR.trailing_zeros());
            let pause =
                Duration::from_millis(self.shared.config.scan_pause_ms.saturating_mul(factor));
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    async fn window(
        &self,
        manager: &mut Option<Manager>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), BleError> {
        let op = Duration::from_millis(self.shared.config.op_timeout_ms);
        let err = |e: String| BleError::Bluez(e);
        if manager.is_none() {
            let m = tokio::time::timeout(op, Manager::new())
                .await
                .map_err(|_| err("timeout".into()))?
                .map_err(|e| err(e.to_string()))?;
            *manager = Some(m);
        }
        let Some(m) = manager.as_ref() else {
            return Err(BleError::NoAdapter);
        };
        let adapters = tokio::time::timeout(op, m.adapters())
            .await
            .map_err(|_| err("timeout".into()))?
            .map_err(|e| err(e.to_string()))?;
        let adapter = adapters.into_iter().next().ok_or(BleError::NoAdapter)?;
        let mut events = tokio::time::timeout(op, adapter.events())
            .await
            .map_err(|_| err("timeout".into()))?
            .map_err(|e| err(e.to_string()))?;
        tokio::time::timeout(op, adapter.start_scan(ScanFilter::default()))
            .await
            .map_err(|_| err("timeout".into()))?
            .map_err(|e| err(e.to_string()))?;
        let end =
            tokio::time::Instant::now() + Duration::from_millis(self.shared.config.scan_window_ms);
        let mut seen: HashSet<PeripheralId> = HashSet::new();
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(end) => break,
                _ = shutdown.changed() => break,
                ev = events.next() => match ev {
                    Some(CentralEvent::DeviceDiscovered(id)) | Some(CentralEvent::DeviceUpdated(id)) => {
                        seen.insert(id.clone());
                        self.consider(&adapter, id, shutdown.clone()).await;
                    }
                    Some(_) => {}
                    None => return Err(err("the BlueZ event stream ended".into())),
                },
            }
        }
        // A window that ends re-checks every known device on the next one.
        let _ = tokio::time::timeout(op, adapter.stop_scan()).await;
        drop(events);
        Ok(())
    }

    async fn consider(&self, adapter: &Adapter, id: PeripheralId, shutdown: watch::Receiver<bool>) {
        let op = Duration::from_millis(self.shared.config.op_timeout_ms);
        let Ok(Ok(p)) = tokio::time::timeout(op, adapter.peripheral(&id)).await else {
            return;
        };
        let address = p.address().to_string().to_ascii_uppercase();
        let now = self.shared.clock.now();
        {
            let Ok(states) = self.states.lock() else {
                return;
            };
            match states.get(&address) {
                Some(DeviceState::InSession) => return,
                Some(DeviceState::Done { at })
                    if now.as_millis() - at.as_millis()
                        < i64::try_from(self.shared.config.cooldown_ms).unwrap_or(i64::MAX) =>
                {
                    return
                }
                Some(DeviceState::Failed { at, .. })
                    if now.as_millis() - at.as_millis()
                        < i64::try_from(self.shared.config.retry_after_ms).unwrap_or(i64::MAX) =>
                {
                    return
                }
                _ => {}
            }
        }
        let device = match self.shared.store.device_by_address(&address).await {
            Ok(Some(d)) if d.allowed => d,
            Ok(_) => {
                if let Ok(mut ig) = self.ignored.lock() {
                    if ig.insert(address.clone()) {
                        debug!(device = %address_tag(&address), "Not on the allow-list; ignored.");
                    }
                }
                return;
            }
            Err(e) => {
                warn!(error = %e, "Allow-list lookup failed.");
                return;
            }
        };
        if self.still_refused(&address, device.record.bond.as_ref(), now) {
            return;
        }
        // Bonded? BlueZ knows; btleplug does not say.
        match tokio::time::timeout(op, pairing::is_paired(&address)).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => {
                self.pairing_needed(&address, &device.key);
                return;
            }
            _ => {}
        }
        if let Ok(mut s) = self.states.lock() {
            s.insert(address.clone(), DeviceState::InSession);
        }
        let hub = self.clone();
        let patient = device.record.patient_binding.clone().unwrap_or_default();
        tokio::spawn(async move {
            let cfg = &hub.shared.config;
            let permit = hub.budget.clone().acquire_owned().await;
            let link = BtleLink::new(
                p,
                Duration::from_millis(cfg.op_timeout_ms),
                Duration::from_millis(cfg.connect_timeout_ms),
            );
            hub.session(&link, &device, &address, patient, false, shutdown)
                .await;
            drop(permit);
        });
    }

    /// One session with `device` over `link`, under the session timeout; records its outcome in
    /// the device's state and the event log.
    async fn session<L: Link>(
        &self,
        link: &L,
        device: &crate::store::Device,
        address: &str,
        patient: String,
        test_data: bool,
        mut shutdown: watch::Receiver<bool>,
    ) -> Outcome {
        let tag = device.key.to_string();
        let cfg = &self.shared.config;
        let mut session = session::Session {
            link,
            shared: &self.shared,
            device: device.key.clone(),
            address: address.to_string(),
            tag: tag.clone(),
            patient,
            dev_cfg: cfg.device(address),
            stored: 0,
            test_data,
        };
        // On shutdown the session is dropped between two awaits: a store append already sent
        // still commits whole (readings with their cursor), so nothing is half-stored.
        let stopping = async {
            while !*shutdown.borrow() {
                if shutdown.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        let outcome = tokio::select! {
            r = tokio::time::timeout(Duration::from_millis(cfg.session_timeout_ms), session.run()) => match r {
                Ok(o) => o,
                Err(_) => {
                    let _ = link.disconnect().await;
                    Outcome::Failed("session timed out".into())
                }
            },
            () = stopping => {
                let _ = link.disconnect().await;
                Outcome::Failed("the hub is stopping".into())
            }
        };
        info!(device = %tag, outcome = ?outcome_name(&outcome), "Session ended.");
        let now = self.shared.clock.now();
        let state = match &outcome {
            Outcome::Done { .. } => DeviceState::Done { at: now },
            Outcome::PairingNeeded => DeviceState::PairingNeeded,
            _ => {
                let failures = match self.state(address) {
                    Some(DeviceState::Failed { failures, .. }) => failures + 1,
                    _ => 1,
                };
                DeviceState::Failed { at: now, failures }
            }
        };
        if state == DeviceState::PairingNeeded {
            // BlueZ said paired, the device said not: only a new bond record (or the cooldown)
            // brings it back, or every scan window would reconnect it.
            if let Ok(mut r) = self.refused.lock() {
                r.insert(address.to_string(), (now, device.record.bond.clone()));
            }
            self.pairing_needed(address, &device.key);
        } else if let Ok(mut s) = self.states.lock() {
            s.insert(address.to_string(), state);
        }
        self.shared.event(BleEvent::SessionEnded {
            device: device.key.clone(),
            outcome: outcome.clone(),
        });
        outcome
    }

    /// Run sessions with simulated devices until `shutdown`: one at start (the device's stored
    /// measurements), then one after each new measurement. Each device must be in the store,
    /// allow-listed, under its [`crate::sim::SimDevice::address`].
    pub async fn run_simulated(
        &self,
        devices: Vec<Arc<crate::sim::SimDevice>>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(), BleError> {
        let mut tasks = tokio::task::JoinSet::new();
        for dev in devices {
            let address = dev.address();
            let Some(device) = self.shared.store.device_by_address(&address).await? else {
                warn!(device = %address_tag(&address), "Simulated device not registered; skipped.");
                continue;
            };
            let hub = self.clone();
            let mut shutdown = shutdown.clone();
            tasks.spawn(async move {
                let patient = device.record.patient_binding.clone().unwrap_or_default();
                loop {
                    if *shutdown.borrow() {
                        return;
                    }
                    let link = dev.link();
                    if let Ok(mut s) = hub.states.lock() {
                        s.insert(address.clone(), DeviceState::InSession);
                    }
                    hub.session(
                        &link,
                        &device,
                        &address,
                        patient.clone(),
                        true,
                        shutdown.clone(),
                    )
                    .await;
                    // Sleep until the device has measured again (a little after, so the new
                    // measurement is in its memory).
                    let wait =
                        dev.next_due().as_millis() - hub.shared.clock.now().as_millis() + 200;
                    let wait = Duration::from_millis(u64::try_from(wait.max(200)).unwrap_or(200));
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.changed() => {}
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        Ok(())
    }

    /// Whether a device that refused the hub as unbonded is still to be left alone.
    fn still_refused(&self, address: &str, bond: Option<&String>, now: UtcMillis) -> bool {
        let Ok(mut refused) = self.refused.lock() else {
            return false;
        };
        let Some((at, then)) = refused.get(address) else {
            return false;
        };
        let cooldown = i64::try_from(self.shared.config.cooldown_ms).unwrap_or(i64::MAX);
        if then.as_ref() == bond && now.as_millis() - at.as_millis() < cooldown {
            return true;
        }
        refused.remove(address);
        false
    }

    fn pairing_needed(&self, address: &str, key: &DeviceKey) {
        let first = self
            .states
            .lock()
            .map(|mut s| {
                s.insert(address.to_string(), DeviceState::PairingNeeded)
                    != Some(DeviceState::PairingNeeded)
            })
            .unwrap_or(false);
        if first {
            warn!(device = %key, "Allow-listed device is not bonded; pair it with the hub.");
            self.shared.event(BleEvent::PairingNeeded {
                device: key.clone(),
            });
        }
    }
}

fn outcome_name(o: &Outcome) -> &'static str {
    match o {
        Outcome::Done { .. } => "done",
        Outcome::PairingNeeded => "pairing_needed",
        Outcome::LinkLost { .. } => "link_lost",
        Outcome::Unreachable(_) => "unreachable",
        Outcome::Failed(_) => "failed",
    }
}
