//! Bluetooth LE: everything between a medical device in the living room and a decoded reading
//! handed to ingest through the [`Port`] (which `ble` defines and the daemon implements; `ble`
//! imports neither the store nor the uplink).
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
//!   window start (hub clock, local time in `[hub] timezone`), stable key naming the window; count, min and
//!   max are sealed with it ([`crate::model::device::ReadingSummary`]) and also travel as
//!   [`BleEvent::Summary`];
//! - CGM: records timed from the Session Start Time; with E2E-CRC in the CGM Feature a record
//!   without a valid CRC is rejected (malformed event); the cursor is the highest time offset.
//!
//! **Stable keys** `v1|<address>|<patient>|<kind>[|seq=<n>][|user=<u>]|t=<device time>` (or the
//! receive time / window when the device sends no time) — deterministic, so re-downloads dedup.
//!
//! **Multi-user devices.** A reading whose user id differs from the device's configured
//! `user_id` is never appended: it is held ([`Port::hold`]: sealed in the store, never in the
//! outbox, then assigned or discarded) with a [`BleEvent::HeldForAssignment`]; [`Hub::held`] lists
//! the newest [`HELD_KEPT`] this run held.
//!
//! **Hand-over.** Every call on the [`Port`] returns a `Result`; a session whose commit fails ends
//! there and the device keeps its records (see [`port`]). Bounded on the way: events and held
//! readings in memory ([`EVENTS_KEPT`], [`HELD_KEPT`], oldest dropped), the ignored addresses
//! ([`IGNORED_KEPT`], least recently seen dropped), malformed values (one event per device per
//! [`MALFORMED_WINDOW_MS`] with a count), stream values (the port's bounded queue, newest dropped).
//!
//! **Events** (malformed payloads naming the device, clock offsets, pairing needed, RACP refusals,
//! summaries) are kept in memory ([`Hub::events`]), appended to the store's audit log through the
//! port, and logged without PHI (device by store key or keyed address tag, [`AddressTags`]).
//!
//! **Pairing** is not in btleplug: [`pairing::pair`] calls `Device1.Pair()` over zbus with the hub's
//! own `org.bluez.Agent1` (KeyboardDisplay), sets `Trusted`, and records the bond.
//!
//! Size: about 950 lines of code (the rest is tests): the scan loop, the allow-list gate, the
//! session bookkeeping and the audit of BLE events all work on the one `Hub` state; the settings
//! are in `config`, the port in `port`, each session in `session`.

pub mod adapter;
mod config;
pub mod link;
pub mod pairing;
pub mod port;
pub mod session;
pub mod tag;
pub mod tech;

use crate::model::device::DeviceKey;
use crate::model::{Clock, Decimal, Kind, Reading, UtcMillis};
use btleplug::api::{Central as _, CentralEvent, Peripheral as _, ScanFilter};
use btleplug::platform::{Adapter, Manager, Peripheral, PeripheralId};
use futures::StreamExt;
use hashlink::LruCache;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tracing::{debug, info, warn};

pub use config::{BleConfig, DeviceConfig};
pub use link::{BtleLink, Link, LinkError};
pub use port::{
    AuditEvent, Batch, Committed, Cursor, KnownDevice, Port, PortError, PortFuture, Registration,
    Registry,
};
pub use session::Outcome;
pub use tag::AddressTags;

/// A failing scan loop waits at most this many scan pauses between windows (a power of two).
const MAX_BACKOFF_FACTOR: u64 = 64;

/// The cursor name of the glucose RACP download (last stored sequence number).
pub const CURSOR_GLUCOSE: &str = "gls_sequence";
/// The cursor name of CGM records (last stored time offset, minutes).
pub const CURSOR_CGM: &str = "cgm_time_offset";

/// Errors of the BLE layer.
#[derive(Debug, thiserror::Error)]
pub enum BleError {
    /// BlueZ is not reachable on the system bus.
    #[error("BlueZ is not reachable on the system bus ({0}); check that bluetoothd runs and the hub may use D-Bus")]
    Bluez(String),
    /// No Bluetooth adapter.
    #[error("no Bluetooth adapter found; check the adapter is plugged in and powered (`bluetoothctl list`)")]
    NoAdapter,
    /// The hand-over to ingest and the store failed.
    #[error("{0}")]
    Port(#[from] PortError),
    /// The configured adapter is not there.
    #[error("Bluetooth adapter {0} not found; check `[ble] adapter` in the config against `bluetoothctl list`, or leave it out to use the first adapter")]
    AdapterMissing(String),
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
    /// At most one per device per [`MALFORMED_WINDOW_MS`]: the first one of the window (`count`
    /// 1, with its detail), then, when the window ends, how many more there were.
    Malformed {
        device: DeviceKey,
        characteristic: u16,
        detail: String,
        count: u64,
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
    /// A device not on the allow-list advertised the name of `device`, a paired device (its
    /// address and the name are not kept: the detail names the paired device's store id only).
    /// Once per address while it is remembered as ignored ([`IGNORED_KEPT`]).
    SpoofAttempt { device: DeviceKey },
    /// `device` was paired (the store holds its bond) but BlueZ reports no bond for its address:
    /// the bond was lost or someone else answers at that address. Recorded beside
    /// [`BleEvent::PairingNeeded`], once per pairing-needed state.
    UnbondedConnection { device: DeviceKey },
    /// A glucose meter's sequence numbers went back (battery change, factory reset): it has
    /// `records` records but none at or after the stored `cursor`. It was read in full; records
    /// stored before were dropped as duplicates by their identity.
    MeterRestarted {
        device: DeviceKey,
        cursor: u16,
        records: u16,
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

/// Events kept in memory for [`Hub::events`], the newest ones (the store's audit log keeps every
/// event but summaries and session ends, and the summary figures are stored with their reading).
/// A continuous stream adds a summary a minute, so an unbounded list would grow for as long as the
/// hub runs. When full, the oldest tenth is dropped.
const EVENTS_KEPT: usize = 10_000;

/// Held readings kept in memory for [`Hub::held`] (each is in the store as well). When full, the
/// oldest is dropped.
pub const HELD_KEPT: usize = 1_000;

/// Addresses remembered as not allow-listed, so a busy room (phones rotate private addresses every
/// few minutes) costs no store lookup per advertisement. Least recently seen evicted when full.
pub const IGNORED_KEPT: usize = 1_024;

/// Malformed values are counted per device over this window: the first one of a window is logged
/// (WARN) and stored as an event at once, the rest become one event with their count when the
/// window or the session ends — a babbling device can flood neither the journal nor the SD card.
pub const MALFORMED_WINDOW_MS: i64 = 60_000;

/// Malformed values of one device in the current window.
#[derive(Debug, Clone)]
struct Tally {
    since: UtcMillis,
    /// Counted after the first (which was reported at once).
    more: u64,
    characteristic: u16,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub config: BleConfig,
    pub port: Arc<dyn Port>,
    pub clock: Arc<dyn Clock>,
    pub tags: AddressTags,
    events: Mutex<VecDeque<BleEvent>>,
    held: Mutex<VecDeque<HeldReading>>,
    malformed: Mutex<HashMap<DeviceKey, Tally>>,
}

impl Shared {
    /// Keep the event in memory and append it to the store's audit log (awaited: no detached
    /// task per event). A failed audit append is logged, never a reason to end a session.
    pub async fn event(&self, e: BleEvent) {
        if let Some(a) = audit(&e) {
            if let Err(err) = self.port.events(vec![a]).await {
                warn!(error = %err, "BLE event not stored.");
            }
        }
        self.remember(e);
    }

    fn remember(&self, e: BleEvent) {
        if let Ok(mut v) = self.events.lock() {
            if v.len() >= EVENTS_KEPT {
                v.drain(..EVENTS_KEPT / 10);
            }
            v.push_back(e);
        }
    }

    /// A value from `device` did not decode: rate-limited per device (see [`MALFORMED_WINDOW_MS`]).
    pub async fn malformed(&self, device: &DeviceKey, characteristic: u16, detail: &str) {
        let now = self.clock.now();
        let (first, flushed) = {
            let Ok(mut t) = self.malformed.lock() else {
                return;
            };
            let mut flushed = None;
            if let Some(cur) = t.get(device) {
                if now.as_millis() - cur.since.as_millis() >= MALFORMED_WINDOW_MS {
                    flushed = t.remove(device);
                }
            }
            match t.get_mut(device) {
                Some(cur) => {
                    cur.more += 1;
                    (false, flushed)
                }
                None => {
                    t.insert(
                        device.clone(),
                        Tally {
                            since: now,
                            more: 0,
                            characteristic,
                        },
                    );
                    (true, flushed)
                }
            }
        };
        if let Some(f) = flushed {
            self.report_more(device, f).await;
        }
        if first {
            warn!(device = %device, characteristic = %format!("0x{characteristic:04X}"), "Malformed value; skipped (more from this device in the next minute are counted, not logged).");
            self.event(BleEvent::Malformed {
                device: device.clone(),
                characteristic,
                detail: detail.to_string(),
                count: 1,
            })
            .await;
        } else {
            debug!(device = %device, characteristic = %format!("0x{characteristic:04X}"), "Malformed value; counted.");
        }
    }

    /// The session with `device` ended: report the malformed values counted but not yet reported.
    pub async fn flush_malformed(&self, device: &DeviceKey) {
        let t = self
            .malformed
            .lock()
            .ok()
            .and_then(|mut t| t.remove(device));
        if let Some(t) = t {
            self.report_more(device, t).await;
        }
    }

    async fn report_more(&self, device: &DeviceKey, t: Tally) {
        if t.more == 0 {
            return;
        }
        warn!(device = %device, count = t.more, "More malformed values were skipped.");
        self.event(BleEvent::Malformed {
            device: device.clone(),
            characteristic: t.characteristic,
            detail: "further malformed values in the same window".into(),
            count: t.more,
        })
        .await;
    }

    /// Hold a reading (sealed in the store, not uploaded); a re-sent one is not held twice. A
    /// failed hold is the session's failure, like a failed commit: the device keeps the record.
    pub async fn hold(&self, h: HeldReading) -> Result<(), PortError> {
        let device = h.device.clone();
        let user_id = h.user_id;
        if !self.port.hold(h.clone()).await? {
            return Ok(());
        }
        debug!(device = %device, "Reading held for assignment.");
        self.event(BleEvent::HeldForAssignment { device, user_id })
            .await;
        if let Ok(mut v) = self.held.lock() {
            if v.len() >= HELD_KEPT {
                v.pop_front();
            }
            v.push_back(h);
        }
        Ok(())
    }

    /// A raw value of a continuous stream (not stored itself; its window's summary is) for the
    /// alert rules. The port's queue is bounded; a dropped value is counted there.
    pub fn alert_stream(&self, device: &DeviceKey, r: &Reading) {
        let v = RawValue {
            device: device.clone(),
            reading: r.clone(),
            stream: true,
        };
        if let Err(e) = self.port.stream_value(v) {
            debug!(device = %device, error = %e, "Stream value not handed to the alert rules.");
        }
    }
}

/// The audit-log form of an event (none for summaries and session ends: the figures are stored
/// with their reading, and sessions are many).
fn audit(e: &BleEvent) -> Option<AuditEvent> {
    let (kind, severity, detail) = match e {
        BleEvent::Malformed {
            device,
            characteristic,
            detail,
            count,
        } => (
            "ble_malformed_payload",
            "warning",
            if *count == 1 {
                format!("device {device} characteristic 0x{characteristic:04X}: {detail}")
            } else {
                format!(
                    "device {device}: {count} more malformed values skipped within {} s",
                    MALFORMED_WINDOW_MS / 1000
                )
            },
        ),
        BleEvent::ClockOffset {
            device,
            device_minus_hub_s,
            written,
        } => (
            "ble_clock_offset",
            "info",
            format!("device {device} clock offset {device_minus_hub_s} s; written: {written}"),
        ),
        BleEvent::PairingNeeded { device } => (
            "ble_pairing_needed",
            "error",
            format!("device {device} is allow-listed but not bonded: run `vitals-hub pair`"),
        ),
        BleEvent::SpoofAttempt { device } => (
            "ble_spoof_attempt",
            "security",
            format!("a device not on the allow-list advertised the name of paired device {device}"),
        ),
        BleEvent::UnbondedConnection { device } => (
            "ble_unbonded_connection",
            "security",
            format!("device {device} was paired, but BlueZ reports no bond for its address"),
        ),
        BleEvent::HeldForAssignment { device, user_id } => (
            "ble_reading_held",
            "warning",
            format!("device {device}: a reading of user {user_id} (not the patient's) was held"),
        ),
        BleEvent::RacpRefused {
            device,
            response_code,
        } => (
            "ble_racp_refused",
            "warning",
            format!(
                "device {device} refused the record request (RACP response 0x{response_code:02X})"
            ),
        ),
        BleEvent::MeterRestarted {
            device,
            cursor,
            records,
        } => (
            "ble_meter_restarted",
            "warning",
            format!(
                "device {device}: sequence numbers went back (cursor {cursor}, {records} records on the meter); read in full, duplicates dropped"
            ),
        ),
        BleEvent::Summary { .. } | BleEvent::SessionEnded { .. } => return None,
    };
    Some(AuditEvent {
        kind,
        severity,
        detail,
    })
}

/// The BLE side of the hub.
#[derive(Debug, Clone)]
pub struct Hub {
    shared: Arc<Shared>,
    budget: Arc<Semaphore>,
    states: Arc<Mutex<HashMap<String, DeviceState>>>,
    /// Not allow-listed: address → when the store said so. Bounded ([`IGNORED_KEPT`]) and
    /// consulted before the store; an entry older than `cooldown_ms` is looked up again (the
    /// technician may have paired the device since).
    ignored: Arc<Mutex<LruCache<String, UtcMillis>>>,
    /// Consecutive scan windows that failed (BlueZ or the adapter unusable); 0 when healthy.
    window_failures: Arc<std::sync::atomic::AtomicU32>,
    progress: Option<crate::model::Progress>,
    /// Devices that refused the hub as unbonded although BlueZ lists them as paired: when, and
    /// the bond record then. Not reconnected until the record changes or `cooldown_ms` passes.
    refused: Arc<Mutex<HashMap<String, Refused>>>,
}

/// When a device refused the hub as unbonded, and its bond record at that time.
type Refused = (UtcMillis, Option<String>);

impl Hub {
    /// Sessions hand everything over through `port`; logs name devices by `tags`.
    pub fn new(
        config: BleConfig,
        port: Arc<dyn Port>,
        clock: Arc<dyn Clock>,
        tags: AddressTags,
    ) -> Hub {
        let budget = Arc::new(Semaphore::new(config.max_connections.max(1)));
        Hub {
            shared: Arc::new(Shared {
                config,
                port,
                clock,
                tags,
                events: Mutex::new(VecDeque::new()),
                held: Mutex::new(VecDeque::new()),
                malformed: Mutex::new(HashMap::new()),
            }),
            budget,
            states: Arc::new(Mutex::new(HashMap::new())),
            ignored: Arc::new(Mutex::new(LruCache::new(IGNORED_KEPT))),
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

    /// The latest events of this run (at most 10,000).
    pub fn events(&self) -> Vec<BleEvent> {
        self.shared
            .events
            .lock()
            .map(|v| v.iter().cloned().collect())
            .unwrap_or_default()
    }
    /// Readings held in this run, the newest [`HELD_KEPT`] (all are in the store).
    pub fn held(&self) -> Vec<HeldReading> {
        self.shared
            .held
            .lock()
            .map(|v| v.iter().cloned().collect())
            .unwrap_or_default()
    }
    /// How `address` appears in logs: a keyed tag, not reversible without the store's key.
    pub fn tag(&self, address: &str) -> String {
        self.shared.tags.tag(address)
    }
    /// Devices seen lately that are not on the allow-list (never connected; at most
    /// [`IGNORED_KEPT`]).
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
        // The adapter is chosen again every window: one plugged in later, or BlueZ restarted.
        let name = adapter::name(self.shared.config.adapter.as_deref(), op).await?;
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
        let adapter = adapter::find(m, &name, op).await?;
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
                        self.consider(&adapter, &name, id, shutdown.clone()).await;
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

    async fn consider(
        &self,
        adapter: &Adapter,
        adapter_name: &str,
        id: PeripheralId,
        shutdown: watch::Receiver<bool>,
    ) {
        let op = Duration::from_millis(self.shared.config.op_timeout_ms);
        let Ok(Ok(p)) = tokio::time::timeout(op, adapter.peripheral(&id)).await else {
            return;
        };
        let address = p.address().to_string().to_ascii_uppercase();
        let now = self.shared.clock.now();
        let device = match self.admit(&address, now).await {
            Ok(d) => d,
            Err(Some(newly_ignored)) => {
                self.check_spoof(&p, &newly_ignored).await;
                return;
            }
            Err(None) => return,
        };
        if self.still_refused(&address, device.bond.as_ref(), now) {
            return;
        }
        // Bonded? BlueZ knows; btleplug does not say. An error or no answer is "not known":
        // never a reason to read (the next window asks again).
        let answer = tokio::time::timeout(op, pairing::is_paired(adapter_name, &address))
            .await
            .ok();
        match bond_state(answer) {
            BondState::Paired => {}
            BondState::NotPaired => {
                self.pairing_needed(&address, &device).await;
                return;
            }
            BondState::Unknown => {
                debug!(device = %device.key, "Bond state not known; not read this window.");
                return;
            }
        }
        if let Ok(mut s) = self.states.lock() {
            s.insert(address.clone(), DeviceState::InSession);
        }
        let hub = self.clone();
        let patient = device.patient.clone().unwrap_or_default();
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

    /// A device just found not to be on the allow-list (`not_allowed`: its allow-list entry, if
    /// the hub knows it unallowed): if it advertises the name of a paired device, that is a spoof
    /// attempt. Asked once per address while it is remembered as ignored, so a busy room costs
    /// one properties read and one lookup per new address.
    async fn check_spoof(&self, p: &Peripheral, not_allowed: &NotAllowed) {
        let op = Duration::from_millis(self.shared.config.op_timeout_ms);
        let Ok(Ok(Some(props))) = tokio::time::timeout(op, p.properties()).await else {
            return;
        };
        let Some(name) = props.local_name.filter(|n| !n.is_empty()) else {
            return;
        };
        match self.shared.port.paired_named(&name).await {
            Ok(Some(paired)) if Some(&paired.key) != not_allowed.0.as_ref() => {
                warn!(device = %paired.key, "A device not on the allow-list advertises the name of a paired device.");
                self.shared
                    .event(BleEvent::SpoofAttempt { device: paired.key })
                    .await;
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "Paired-name lookup failed."),
        }
    }

    /// Whether `address` is to be talked to now: not in a session, not cooling down, not known
    /// as ignored (checked before the store), and allow-listed (the port's lookup). `Err(Some)`:
    /// found not allow-listed just now (first time, or again after the cooldown).
    async fn admit(
        &self,
        address: &str,
        now: UtcMillis,
    ) -> Result<KnownDevice, Option<NotAllowed>> {
        let cfg = &self.shared.config;
        let cooldown = i64::try_from(cfg.cooldown_ms).unwrap_or(i64::MAX);
        {
            let states = self.states.lock().map_err(|_| None)?;
            match states.get(address) {
                Some(DeviceState::InSession) => return Err(None),
                Some(DeviceState::Done { at }) if now.as_millis() - at.as_millis() < cooldown => {
                    return Err(None)
                }
                Some(DeviceState::Failed { at, .. })
                    if now.as_millis() - at.as_millis()
                        < i64::try_from(cfg.retry_after_ms).unwrap_or(i64::MAX) =>
                {
                    return Err(None)
                }
                _ => {}
            }
        }
        {
            let mut ig = self.ignored.lock().map_err(|_| None)?;
            match ig.get(address) {
                Some(at) if now.as_millis() - at.as_millis() < cooldown => return Err(None),
                Some(_) => {
                    ig.remove(address);
                }
                None => {}
            }
        }
        match self.shared.port.device(address).await {
            Ok(Some(d)) if d.allowed => Ok(d),
            Ok(known) => {
                if let Ok(mut ig) = self.ignored.lock() {
                    if ig.insert(address.to_string(), now).is_none() {
                        debug!(device = %self.tag(address), "Not on the allow-list; ignored.");
                    }
                }
                Err(Some(NotAllowed(known.map(|d| d.key))))
            }
            Err(e) => {
                warn!(error = %e, "Allow-list lookup failed.");
                Err(None)
            }
        }
    }

    /// One session with `device` over `link`, under the session timeout; records its outcome in
    /// the device's state and the event log.
    async fn session<L: Link>(
        &self,
        link: &L,
        device: &KnownDevice,
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
            dev_cfg: cfg.device(device, address),
            stored: 0,
            test_data,
            deadline: session::Deadline::after(Duration::from_millis(cfg.session_timeout_ms)),
            quirk: None,
        };
        let deadline = session.deadline.clone();
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
            o = session.run() => o,
            () = deadline.passed() => {
                let _ = link.disconnect().await;
                Outcome::Failed("session timed out".into())
            }
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
                r.insert(address.to_string(), (now, device.bond.clone()));
            }
            self.pairing_needed(address, device).await;
        } else if let Ok(mut s) = self.states.lock() {
            s.insert(address.to_string(), state);
        }
        self.shared.flush_malformed(&device.key).await;
        self.shared
            .event(BleEvent::SessionEnded {
                device: device.key.clone(),
                outcome: outcome.clone(),
            })
            .await;
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
            let Some(device) = self.shared.port.device(&address).await? else {
                warn!(device = %self.tag(&address), "Simulated device not registered; skipped.");
                continue;
            };
            let hub = self.clone();
            let mut shutdown = shutdown.clone();
            tasks.spawn(async move {
                let patient = device.patient.clone().unwrap_or_default();
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

    async fn pairing_needed(&self, address: &str, device: &KnownDevice) {
        let key = &device.key;
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
            self.shared
                .event(BleEvent::PairingNeeded {
                    device: key.clone(),
                })
                .await;
            if device.bond.is_some() {
                // Paired with the hub, yet BlueZ has no bond for the address: a security event.
                warn!(device = %key, "A paired device's address has no bond in BlueZ.");
                self.shared
                    .event(BleEvent::UnbondedConnection {
                        device: key.clone(),
                    })
                    .await;
            }
        }
    }
}

/// A device found not to be on the allow-list: its key when the hub knows it (registered, not
/// allowed), so its own name is not taken for a spoof.
#[derive(Debug)]
struct NotAllowed(Option<DeviceKey>);

/// What BlueZ's answer to "paired?" means for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BondState {
    Paired,
    NotPaired,
    /// An error or no answer (`None`): not known — never a reason to read; asked again next
    /// window.
    Unknown,
}

fn bond_state(answer: Option<Result<bool, BleError>>) -> BondState {
    match answer {
        Some(Ok(true)) => BondState::Paired,
        Some(Ok(false)) => BondState::NotPaired,
        Some(Err(_)) | None => BondState::Unknown,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::device::DeviceInfo;
    use crate::model::{ManualClock, Unit, Value};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A port in memory: `allowed` addresses are allow-listed; calls are counted.
    #[derive(Debug, Default)]
    struct MemPort {
        allowed: Vec<String>,
        lookups: AtomicUsize,
        events: Mutex<Vec<AuditEvent>>,
        held: Mutex<HashSet<String>>,
    }

    #[test]
    fn device_settings_are_found_by_pairing_name_before_an_old_address() {
        let cfg = BleConfig {
            devices: vec![
                DeviceConfig {
                    name: "meter".into(),
                    legacy_address: None,
                    user_id: Some(2),
                    set_clock: true,
                },
                DeviceConfig {
                    name: "old-scale".into(),
                    legacy_address: Some("C0:26:DA:00:00:09".into()),
                    user_id: Some(3),
                    set_clock: false,
                },
            ],
            ..BleConfig::default()
        };
        let known = |name: Option<&str>| KnownDevice {
            key: DeviceKey("k".into()),
            name: name.map(str::to_owned),
            allowed: true,
            patient: None,
            bond: None,
        };
        // By the name given at pairing, whatever the address.
        let d = cfg.device(&known(Some("meter")), "AA:BB:CC:DD:EE:FF");
        assert_eq!((d.user_id, d.set_clock), (Some(2), true));
        // An older config's address still finds its entry (case-insensitive).
        let d = cfg.device(&known(None), "c0:26:da:00:00:09");
        assert_eq!(d.user_id, Some(3));
        // Neither: defaults, under the pairing name.
        let d = cfg.device(&known(Some("thermo")), "AA:BB:CC:DD:EE:01");
        assert_eq!(
            (d.name.as_str(), d.user_id, d.set_clock),
            ("thermo", None, false)
        );
    }

    impl Port for MemPort {
        fn device<'a>(&'a self, address: &'a str) -> PortFuture<'a, Option<KnownDevice>> {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            let d = self
                .allowed
                .iter()
                .any(|a| a == address)
                .then(|| KnownDevice {
                    key: DeviceKey(format!("k-{address}")),
                    name: None,
                    allowed: true,
                    patient: Some("p".into()),
                    bond: None,
                });
            Box::pin(async move { Ok(d) })
        }
        fn cursor<'a>(&'a self, _: &'a DeviceKey, _: &'a str) -> PortFuture<'a, Option<i64>> {
            Box::pin(async { Ok(None) })
        }
        fn commit<'a>(&'a self, _: &'a DeviceKey, b: Batch) -> PortFuture<'a, Committed> {
            Box::pin(async move {
                Ok(Committed {
                    new: b.readings.len(),
                    duplicates: 0,
                })
            })
        }
        fn device_info<'a>(&'a self, _: &'a DeviceKey) -> PortFuture<'a, Option<DeviceInfo>> {
            Box::pin(async { Ok(None) })
        }
        fn set_device_info<'a>(&'a self, _: &'a DeviceKey, _: DeviceInfo) -> PortFuture<'a, ()> {
            Box::pin(async { Ok(()) })
        }
        fn hold<'a>(&'a self, h: HeldReading) -> PortFuture<'a, bool> {
            let new = self.held.lock().unwrap().insert(h.stable_key);
            Box::pin(async move { Ok(new) })
        }
        fn events<'a>(&'a self, e: Vec<AuditEvent>) -> PortFuture<'a, ()> {
            self.events.lock().unwrap().extend(e);
            Box::pin(async { Ok(()) })
        }
        fn stream_value(&self, _: RawValue) -> Result<(), PortError> {
            Ok(())
        }
    }

    fn hub(port: Arc<MemPort>, clock: Arc<ManualClock>) -> Hub {
        Hub::new(
            BleConfig::default(),
            port,
            clock,
            AddressTags::new(&[7u8; 32]),
        )
    }

    #[tokio::test]
    async fn ignored_addresses_are_bounded_and_checked_before_the_store() {
        let port = Arc::new(MemPort::default());
        let clock = Arc::new(ManualClock::new(UtcMillis(1_000_000)));
        let h = hub(port.clone(), clock.clone());
        // One phone advertising many times: one lookup, not one per advertisement.
        for _ in 0..50 {
            assert!(h.admit("AA:00:00:00:00:01", clock.now()).await.is_err());
        }
        assert_eq!(port.lookups.load(Ordering::SeqCst), 1);
        // Rotating private addresses: the set stays bounded.
        for i in 0..(IGNORED_KEPT + 500) {
            let a = format!("7A:00:00:00:{:02X}:{:02X}", i / 256, i % 256);
            let _ = h.admit(&a, clock.now()).await;
        }
        assert_eq!(h.ignored(), IGNORED_KEPT);
        // After the cooldown an ignored address is asked again (it may have been paired since).
        clock.advance(i64::try_from(BleConfig::default().cooldown_ms).unwrap() + 1);
        let before = port.lookups.load(Ordering::SeqCst);
        let _ = h.admit("AA:00:00:00:00:01", clock.now()).await;
        assert_eq!(port.lookups.load(Ordering::SeqCst), before + 1);
    }

    #[tokio::test]
    async fn malformed_values_are_one_event_with_a_count_per_window() {
        let port = Arc::new(MemPort::default());
        let clock = Arc::new(ManualClock::new(UtcMillis(1_000_000)));
        let h = hub(port.clone(), clock.clone());
        let dev = DeviceKey("k".into());
        for _ in 0..500 {
            h.shared.malformed(&dev, 0x2A18, "short").await;
        }
        // The first at once; the other 499 counted.
        assert_eq!(port.events.lock().unwrap().len(), 1);
        clock.advance(MALFORMED_WINDOW_MS);
        h.shared.malformed(&dev, 0x2A18, "short").await;
        let ev = port.events.lock().unwrap().clone();
        assert_eq!(ev.len(), 3, "{ev:?}");
        assert!(ev[1].detail.contains("499 more"), "{ev:?}");
        h.shared.flush_malformed(&dev).await;
        assert_eq!(
            port.events.lock().unwrap().len(),
            3,
            "nothing more to report"
        );
        let counts: Vec<u64> = h
            .events()
            .iter()
            .filter_map(|e| match e {
                BleEvent::Malformed { count, .. } => Some(*count),
                _ => None,
            })
            .collect();
        assert_eq!(counts, vec![1, 499, 1]);
    }

    #[tokio::test]
    async fn held_readings_in_memory_are_bounded() {
        let port = Arc::new(MemPort::default());
        let clock = Arc::new(ManualClock::new(UtcMillis(1_000_000)));
        let h = hub(port, clock);
        for i in 0..(HELD_KEPT + 100) {
            let r = Reading::new(
                Kind::BodyWeight,
                Value::Number(Decimal::new(700, -1)),
                Unit::Kg,
            );
            h.shared
                .hold(HeldReading {
                    device: DeviceKey("k".into()),
                    user_id: 2,
                    reading: r,
                    stable_key: format!("key-{i}"),
                    received_at: UtcMillis(0),
                })
                .await
                .unwrap();
        }
        let held = h.held();
        assert_eq!(held.len(), HELD_KEPT);
        assert_eq!(held[0].stable_key, "key-100", "the oldest are dropped");
    }

    #[test]
    fn an_is_paired_error_is_not_known_never_paired() {
        assert_eq!(bond_state(Some(Ok(true))), BondState::Paired);
        assert_eq!(bond_state(Some(Ok(false))), BondState::NotPaired);
        let err = BleError::Dbus {
            address: "x".into(),
            call: "Get(Device1.Paired)",
            detail: "timeout".into(),
        };
        assert_eq!(bond_state(Some(Err(err))), BondState::Unknown);
        assert_eq!(bond_state(None), BondState::Unknown);
    }
}
