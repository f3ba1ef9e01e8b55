//! One device's session: connect (retry with backoff) → discover → Device Information and battery →
//! device clock (read, offset kept, written where allowed) → subscribe → the profile's transfer →
//! disconnect. Generic over [`Link`] so the state machine does not know btleplug.
//!
//! Size: over 800 lines because each profile's transfer (RACP download with contexts and restarts,
//! stored indications, streams, CGM with its session start and cadence) is a step of this one
//! session state machine and shares its commit, clock and event handling.

use super::link::{Link, LinkError, Notifications};
use super::port::{Batch, Cursor, PortError};
use super::{BleEvent, DeviceConfig, HeldReading, Shared};
use crate::gatt::cgm::{self, SessionStartTime};
use crate::gatt::datetime::CurrentTime;
use crate::gatt::glucose::{GlucoseContext, GlucoseMeasurement};
use crate::gatt::racp::{op, response, RacpMessage};
use crate::gatt::{self, GattValue};
use crate::model::device::{ClockSample, DeviceInfo, DeviceKey, NewReading, ReadingSummary};
use crate::model::{Decimal, Kind, LocalDateTime, Reading, UtcMillis, Value};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::time::Duration;
use tracing::{debug, info, warn};

/// Where a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The transfer finished; `stored` new readings.
    Done { stored: usize },
    /// The device needs bonding before it will talk (pairing-needed state).
    PairingNeeded,
    /// The link went down before the transfer finished; what arrived was stored.
    LinkLost { stored: usize },
    /// Could not connect or discover.
    Unreachable(LinkError),
    /// Another failure (protocol, or the hand-over: a commit that failed ends the session, and
    /// the device keeps what it did not hand over).
    Failed(String),
}

/// Why a transfer stopped early.
#[derive(Debug)]
enum Stop {
    Link(LinkError),
    /// The port failed: nothing of that batch was stored, the cursor did not move.
    Port(PortError),
}

impl From<LinkError> for Stop {
    fn from(e: LinkError) -> Stop {
        Stop::Link(e)
    }
}

impl From<PortError> for Stop {
    fn from(e: PortError) -> Stop {
        Stop::Port(e)
    }
}

/// The health profile a device's GATT database shows, by the name the store and config use.
pub fn profile_of<L: Link>(link: &L) -> Option<&'static str> {
    if link.has(RACP) && link.has(GLUCOSE_MEAS) {
        Some("glucose")
    } else if link.has(CGM_MEAS) {
        Some("cgm")
    } else if link.has(BP_MEAS) {
        Some("blood-pressure")
    } else if link.has(PLX_SPOT) || link.has(PLX_CONT) {
        Some("pulse-oximeter")
    } else if link.has(WEIGHT_MEAS) {
        Some("scale")
    } else if link.has(TEMP_MEAS) {
        Some("thermometer")
    } else if link.has(HR_MEAS) {
        Some("heart-rate")
    } else {
        None
    }
}

pub(crate) struct Session<'a, L: Link> {
    pub link: &'a L,
    pub shared: &'a Shared,
    pub device: DeviceKey,
    pub address: String,
    pub tag: String,
    pub patient: String,
    pub dev_cfg: DeviceConfig,
    pub stored: usize,
    /// Readings of this session are test data (a simulated device).
    pub test_data: bool,
    /// When the session times out; a CGM's records move it on.
    pub deadline: Deadline,
    /// The device's quirk (`gatt::quirks`), found from its Device Information at connect.
    pub quirk: Option<&'static crate::gatt::quirks::Quirk>,
}

/// A session's deadline, moved on by progress (a CGM's records) and watched by the hub.
#[derive(Debug, Clone)]
pub struct Deadline(std::sync::Arc<std::sync::Mutex<tokio::time::Instant>>);

impl Deadline {
    pub fn after(d: Duration) -> Deadline {
        Deadline(std::sync::Arc::new(std::sync::Mutex::new(
            tokio::time::Instant::now() + d,
        )))
    }
    /// Not before `d` from now.
    pub fn extend(&self, d: Duration) {
        if let Ok(mut t) = self.0.lock() {
            *t = (*t).max(tokio::time::Instant::now() + d);
        }
    }
    pub fn at(&self) -> tokio::time::Instant {
        self.0
            .lock()
            .map(|t| *t)
            .unwrap_or_else(|_| tokio::time::Instant::now())
    }
    /// Resolves once the deadline has passed (re-checked after every extension).
    pub async fn passed(&self) {
        loop {
            let t = self.at();
            if tokio::time::Instant::now() >= t {
                return;
            }
            tokio::time::sleep_until(t).await;
        }
    }
}

/// GLS, BPS, HTS, WSS, PLXS, HRS, CGMS service → characteristic used to tell profiles apart.
const GLUCOSE_MEAS: u16 = 0x2A18;
const GLUCOSE_CTX: u16 = 0x2A34;
const RACP: u16 = 0x2A52;
const BP_MEAS: u16 = 0x2A35;
const TEMP_MEAS: u16 = 0x2A1C;
const WEIGHT_MEAS: u16 = 0x2A9D;
const PLX_SPOT: u16 = 0x2A5E;
const PLX_CONT: u16 = 0x2A5F;
const HR_MEAS: u16 = 0x2A37;
const CGM_MEAS: u16 = 0x2AA7;
const CGM_FEATURE: u16 = 0x2AA8;
const CGM_SST: u16 = 0x2AAA;
const CGM_STATUS: u16 = 0x2AA9;
const CGM_RACP: u16 = 0x2AAC;
const BATTERY: u16 = 0x2A19;
const CURRENT_TIME: u16 = 0x2A2B;
const LOCAL_TIME_INFO: u16 = 0x2A0F;
const SERIAL: u16 = 0x2A25;

impl<L: Link> Session<'_, L> {
    pub async fn run(&mut self) -> Outcome {
        if let Err(e) = self.connect().await {
            return Outcome::Unreachable(e);
        }
        let out = self.after_connect().await;
        let _ = self.link.disconnect().await;
        out
    }

    /// A visit's session (pairing): connect, read Device Information, battery and the clock (set
    /// it where allowed), tell the profile; no transfer.
    pub async fn identify(&mut self) -> Result<Option<&'static str>, LinkError> {
        self.connect().await?;
        let read = async {
            self.read_info().await?;
            self.clock().await
        };
        if let Err(e) = read.await {
            let _ = self.link.disconnect().await;
            return Err(LinkError::Other(e.to_string()));
        }
        let profile = profile_of(self.link);
        let _ = self.link.disconnect().await;
        Ok(profile)
    }

    async fn connect(&mut self) -> Result<(), LinkError> {
        let cfg = &self.shared.config;
        // Connect with retry and backoff.
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match self.link.connect().await {
                Ok(()) => break,
                Err(e) => {
                    warn!(device = %self.tag, attempt, error = %e, "Connect failed.");
                    if attempt >= cfg.connect_attempts {
                        return Err(e);
                    }
                    let backoff = cfg
                        .backoff()
                        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
                    tokio::time::sleep(backoff).await;
                }
            }
        }
        info!(device = %self.tag, "Connected.");
        Ok(())
    }

    async fn after_connect(&mut self) -> Outcome {
        let battery = match self.read_info().await {
            Ok(b) => b,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        if let Err(e) = self.clock().await {
            return Outcome::Failed(e.to_string());
        }
        let notes = match self.link.notifications().await {
            Ok(n) => n,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        let r = if self.link.has(RACP) && self.link.has(GLUCOSE_MEAS) {
            self.glucose(notes).await
        } else if self.link.has(CGM_MEAS) {
            self.cgm(notes).await
        } else if self.link.has(HR_MEAS) || self.link.has(PLX_CONT) {
            self.continuous(notes).await
        } else {
            let chars: Vec<u16> = [BP_MEAS, TEMP_MEAS, WEIGHT_MEAS, PLX_SPOT]
                .into_iter()
                .filter(|c| self.link.has(*c))
                .collect();
            if chars.is_empty() {
                return Outcome::Failed("no supported health profile".into());
            }
            self.spot(notes, &chars).await
        };
        if !matches!(
            r,
            Err(Stop::Link(LinkError::NotPaired)) | Err(Stop::Port(_))
        ) {
            // Stored only once the device has shown it is bonded: an unbonded link is not
            // authenticated, so nothing it says becomes a reading.
            if let Some((readings, key_t)) = battery {
                if let Err(e) = self.store_readings(readings, &key_t, None).await {
                    return Outcome::Failed(e.to_string());
                }
            }
        }
        match r {
            Ok(done) => done,
            Err(Stop::Link(LinkError::NotPaired)) => Outcome::PairingNeeded,
            Err(Stop::Link(LinkError::NotConnected)) => Outcome::LinkLost {
                stored: self.stored,
            },
            Err(Stop::Link(e)) => Outcome::Failed(e.to_string()),
            Err(Stop::Port(e)) => {
                warn!(device = %self.tag, error = %e, "Hand-over failed; the session ends and the device keeps its records.");
                Outcome::Failed(e.to_string())
            }
        }
    }

    /// Read a Device Information string characteristic, if the device has it.
    async fn dis_string<T: GattValue>(&mut self, value: fn(T) -> String) -> Option<String> {
        if !self.link.has(T::UUID) {
            return None;
        }
        let bytes = self.link.read(T::UUID).await.ok()?;
        match T::decode(&bytes) {
            Ok(v) => Some(value(v)).filter(|s| !s.is_empty()),
            Err(e) => {
                self.malformed(T::UUID, &e.to_string()).await;
                None
            }
        }
    }

    /// Merge what this session learned into the store's device information (for the FHIR
    /// PhdDevice, the heartbeat's last-seen and battery, and the coincident-timestamp rule).
    async fn update_info(&self, f: impl FnOnce(&mut DeviceInfo)) -> Result<(), PortError> {
        let mut info = self
            .shared
            .port
            .device_info(&self.device)
            .await?
            .unwrap_or_default();
        f(&mut info);
        self.shared.port.set_device_info(&self.device, info).await
    }

    /// Returns the battery readings (and their key time), stored after the transfer.
    async fn read_info(&mut self) -> Result<Option<(Vec<Reading>, String)>, PortError> {
        use gatt::dis::{
            FirmwareRevision, HardwareRevision, ManufacturerName, ModelNumber, SoftwareRevision,
            SystemId,
        };
        if self.link.has(SERIAL) {
            if let Ok(v) = self.link.read(SERIAL).await {
                debug!(device = %self.tag, bytes = v.len(), "Read the serial number.");
            }
        }
        let manufacturer = self.dis_string(|v: ManufacturerName| v.value).await;
        let model = self.dis_string(|v: ModelNumber| v.value).await;
        let firmware = self.dis_string(|v: FirmwareRevision| v.value).await;
        let hardware = self.dis_string(|v: HardwareRevision| v.value).await;
        let software = self.dis_string(|v: SoftwareRevision| v.value).await;
        let system_id = self.dis_string(|v: SystemId| v.eui64_text()).await;
        let mut battery = None;
        let mut battery_readings = None;
        if self.link.has(BATTERY) {
            match self.link.read(BATTERY).await {
                Ok(v) => match gatt::dis::BatteryLevel::decode(&v) {
                    Ok(b) => {
                        battery = Some(b.percent);
                        let now = self.shared.clock.now();
                        let readings = b.readings();
                        // One battery reading per minute at most: the key is the minute.
                        let key_t = format!("rx={}", now.floor_minute().as_millis());
                        battery_readings = Some((readings, key_t));
                    }
                    Err(e) => self.malformed(BATTERY, &e.to_string()).await,
                },
                Err(e) => debug!(device = %self.tag, error = %e, "Battery read failed."),
            }
        }
        self.quirk = crate::gatt::quirks::for_device(manufacturer.as_deref(), model.as_deref());
        if let Some(q) = self.quirk {
            info!(device = %self.tag, quirk = q.name, "Device quirk applies.");
        }
        let now = self.shared.clock.now();
        self.update_info(|i| {
            i.manufacturer = manufacturer.or(i.manufacturer.take());
            i.model = model.or(i.model.take());
            i.firmware = firmware.or(i.firmware.take());
            i.hardware = hardware.or(i.hardware.take());
            i.software = software.or(i.software.take());
            i.system_id = system_id.or(i.system_id.take());
            i.battery_percent = battery.or(i.battery_percent);
            i.last_seen = Some(now);
        })
        .await?;
        Ok(battery_readings)
    }

    /// Hub wall-clock now, in the configured zone (its rules at this instant: after a change of
    /// offset the next session writes the new local time).
    fn hub_local(&self) -> Option<LocalDateTime> {
        self.shared.config.zone.local_at(self.shared.clock.now())
    }

    async fn clock(&mut self) -> Result<(), PortError> {
        if !self.link.has(CURRENT_TIME) {
            return Ok(());
        }
        let Ok(v) = self.link.read(CURRENT_TIME).await else {
            return Ok(());
        };
        let ct = match CurrentTime::decode(&v) {
            Ok(c) => c,
            Err(e) => {
                self.malformed(CURRENT_TIME, &e.to_string()).await;
                return Ok(());
            }
        };
        let (Some(dev), Some(hub)) = (ct.date_time.to_local(), self.hub_local()) else {
            return Ok(());
        };
        let offset_s = dev.to_epoch_seconds() - hub.to_epoch_seconds();
        let mut written = false;
        if self.dev_cfg.set_clock
            && offset_s.abs() > self.shared.config.clock_tolerance_s
            && self.link.writable(CURRENT_TIME)
        {
            if let Ok(bytes) = CurrentTime::for_clock_write(hub).encode() {
                written = self.link.write(CURRENT_TIME, &bytes).await.is_ok();
            }
            // With the Local Time Information where the device has it (zone and DST now).
            if written && self.link.writable(LOCAL_TIME_INFO) {
                let (time_zone, dst_offset) = self.zone_fields();
                let lti = crate::gatt::datetime::LocalTimeInformation {
                    time_zone,
                    dst_offset,
                };
                if let Ok(bytes) = lti.encode() {
                    let _ = self.link.write(LOCAL_TIME_INFO, &bytes).await;
                }
            }
        }
        self.shared
            .event(BleEvent::ClockOffset {
                device: self.device.clone(),
                device_minus_hub_s: offset_s,
                written,
            })
            .await;
        // The coincident pair is the evidence for the IG's timestamp rules; after a write the
        // device runs on hub-local time at the configured offset.
        let sample = ClockSample {
            device: dev,
            hub: self.shared.clock.now(),
            set_by_hub_offset_minutes: written.then(|| {
                self.shared
                    .config
                    .zone
                    .offset_minutes_at(self.shared.clock.now())
            }),
        };
        self.update_info(|i| i.clock = Some(sample)).await
    }

    /// A value that did not decode: skipped, reported rate-limited per device.
    async fn malformed(&self, ch: u16, detail: &str) {
        self.shared.malformed(&self.device, ch, detail).await;
    }

    fn stable_key(&self, r: &Reading, when: &str) -> String {
        let mut k = format!("v1|{}|{}|{}", self.address, self.patient, r.kind);
        if let Some(s) = r.sequence {
            k.push_str(&format!("|seq={s}"));
        }
        if let Some(u) = r.user_id {
            k.push_str(&format!("|user={u}"));
        }
        match &r.device_time {
            Some(t) => k.push_str(&format!("|t={t}")),
            None => k.push_str(&format!("|{when}")),
        }
        k
    }

    /// Commit readings with the cursor they cover (readings of another user are held for
    /// assignment, not committed). An error ends the session: nothing of it was stored.
    async fn store_readings(
        &mut self,
        readings: Vec<Reading>,
        when: &str,
        cursor: Option<Cursor>,
    ) -> Result<(), PortError> {
        let now = self.shared.clock.now();
        let mut items = Vec::new();
        for mut r in readings {
            self.shared.config.zone.mark_time_quality(&mut r);
            let key = self.stable_key(&r, when);
            match (r.user_id, self.dev_cfg.user_id) {
                (Some(u), Some(mine)) if u != mine => {
                    self.shared
                        .hold(HeldReading {
                            device: self.device.clone(),
                            user_id: u,
                            reading: r,
                            stable_key: key,
                            received_at: now,
                        })
                        .await?;
                    continue;
                }
                _ => {}
            }
            items.push(NewReading {
                reading: r,
                received_at: now,
                stable_key: key,
                test_data: self.test_data,
                summary: None,
            });
        }
        self.commit(items, cursor).await
    }

    async fn commit(
        &mut self,
        readings: Vec<NewReading>,
        cursor: Option<Cursor>,
    ) -> Result<(), PortError> {
        if readings.is_empty() && cursor.is_none() {
            return Ok(());
        }
        let c = self
            .shared
            .port
            .commit(&self.device, Batch { readings, cursor })
            .await?;
        self.stored += c.new;
        Ok(())
    }

    async fn next(
        &self,
        notes: &mut Notifications,
        idle: Duration,
    ) -> Result<Option<(u16, Vec<u8>)>, LinkError> {
        match tokio::time::timeout(idle, notes.next()).await {
            Ok(Some(n)) => Ok(Some(n)),
            Ok(None) => Err(LinkError::NotConnected),
            Err(_) => {
                // Quiet: is the link still there?
                if self.link.is_connected().await.unwrap_or(false) {
                    Ok(None)
                } else {
                    Err(LinkError::NotConnected)
                }
            }
        }
    }

    /// As [`Self::next`] over `total`, checking the link every quiet period (a link that went
    /// down is noticed within one quiet period, not at the end of a sensor's long cadence).
    async fn next_within(
        &self,
        notes: &mut Notifications,
        total: Duration,
    ) -> Result<Option<(u16, Vec<u8>)>, LinkError> {
        let slice = self.shared.config.quiet().max(Duration::from_millis(1));
        let end = tokio::time::Instant::now() + total;
        loop {
            let left = end.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            if let Some(n) = self.next(notes, slice.min(left)).await? {
                return Ok(Some(n));
            }
        }
    }

    // ---------------------------------------------------------------------------------------
    // Glucose (GLS + RACP).
    //
    // The cursor is the sequence number of the newest record stored, newest in GLS's 16-bit
    // serial order (RFC 1982: `a` is newer than `b` when `(a − b) mod 2^16` is in 1..2^15), so a
    // meter whose numbers run past 65,535 to 0 is followed, never saturated. A record counts for
    // the cursor only once it is in the batch being committed: a measurement that waits for its
    // context record (flag bit 4) is in no batch and under no cursor until the context (or the
    // next measurement, or the meter's end of transfer) arrives; a session that ends between the
    // two (link loss, timeout, a failed commit, a crash) leaves the meter to send both again.
    //
    // A meter whose numbers went back (battery change, factory reset) answers "no records found"
    // for cursor + 1. The hub then asks how many records it holds at or after the cursor and in
    // all: none at or after the cursor but some in all means the meter restarted its numbering;
    // the hub says so (`MeterRestarted`) and reads the meter in full. Records already stored come
    // again with the same identity (sequence number and device time in the stable key) and are
    // dropped as duplicates by the store.

    async fn glucose(&mut self, mut notes: Notifications) -> Result<Outcome, Stop> {
        let cursor = self
            .shared
            .port
            .cursor(&self.device, super::CURSOR_GLUCOSE)
            .await?
            .and_then(|c| u16::try_from(c).ok());
        // Subscribe before writing the control point (else ATT 0xFD).
        self.link.subscribe(GLUCOSE_MEAS).await?;
        if self.link.has(GLUCOSE_CTX) {
            self.link.subscribe(GLUCOSE_CTX).await?;
        }
        self.link.subscribe(RACP).await?;
        let request = match cursor {
            // After 65,535 comes 0: "≥ 0" is every record; those stored before are duplicates.
            Some(c) => RacpMessage::report_from_sequence(c.wrapping_add(1)),
            None => RacpMessage::report_all(),
        };
        let mut run = GlucoseRun {
            cursor,
            ..GlucoseRun::default()
        };
        let code = self.glucose_round(&mut notes, request, &mut run).await?;
        if let (response::NO_RECORDS_FOUND, Some(c)) = (code, cursor) {
            let from_cursor = self
                .racp_count(&mut notes, RacpMessage::count_from_sequence(c))
                .await?;
            if from_cursor == Some(0) {
                let all = self
                    .racp_count(&mut notes, RacpMessage::count_all())
                    .await?;
                if let Some(n) = all.filter(|n| *n > 0) {
                    warn!(device = %self.tag, records = n, "The meter's sequence numbers went back (restarted); reading it in full.");
                    self.shared
                        .event(BleEvent::MeterRestarted {
                            device: self.device.clone(),
                            cursor: c,
                            records: n,
                        })
                        .await;
                    let mut again = GlucoseRun::default();
                    self.glucose_round(&mut notes, RacpMessage::report_all(), &mut again)
                        .await?;
                }
            }
        }
        Ok(Outcome::Done {
            stored: self.stored,
        })
    }

    /// Write a "report number of stored records" request and wait for the count.
    async fn racp_count(
        &mut self,
        notes: &mut Notifications,
        request: RacpMessage,
    ) -> Result<Option<u16>, Stop> {
        let bytes = request
            .encode()
            .map_err(|e| LinkError::Other(e.to_string()))?;
        self.link.write(RACP, &bytes).await?;
        let idle = self.shared.config.racp_idle();
        for _ in 0..2 {
            loop {
                match self.next(notes, idle).await? {
                    None => break,
                    Some((RACP, v)) => match RacpMessage::decode(&v) {
                        Ok(RacpMessage::NumberOfRecords(n)) => return Ok(Some(n)),
                        // Not supported (or refused): the meter cannot tell.
                        Ok(RacpMessage::Response { .. }) => return Ok(None),
                        Ok(_) => {}
                        Err(e) => self.malformed(RACP, &e.to_string()).await,
                    },
                    Some(_) => {}
                }
            }
        }
        Ok(None)
    }

    /// One RACP report procedure: write `request`, store what arrives with the cursor it covers,
    /// return the meter's response code (success or no records found; any other ends the
    /// session).
    async fn glucose_round(
        &mut self,
        notes: &mut Notifications,
        request: RacpMessage,
        run: &mut GlucoseRun,
    ) -> Result<u8, Stop> {
        let cfg = &self.shared.config;
        let idle = cfg.racp_idle();
        let commit_batch = cfg.commit_batch;
        let bytes = request
            .encode()
            .map_err(|e| LinkError::Other(e.to_string()))?;
        self.link.write(RACP, &bytes).await?;
        let mut pending: Option<GlucoseMeasurement> = None;
        let mut idle_rounds = 0u32;
        let result: Result<u8, Stop> = loop {
            let n = match self.next(notes, idle).await {
                Ok(Some(n)) => n,
                Ok(None) => {
                    idle_rounds += 1;
                    if idle_rounds >= 2 {
                        // 2 × idle without traffic: abort the procedure, keep what arrived.
                        if let Ok(b) = RacpMessage::abort().encode() {
                            let _ = self.link.write(RACP, &b).await;
                        }
                        break Err(Stop::Link(LinkError::Timeout {
                            op: "RACP transfer",
                            after: idle * 2,
                        }));
                    }
                    continue;
                }
                Err(e) => break Err(e.into()),
            };
            idle_rounds = 0;
            match n.0 {
                GLUCOSE_MEAS => {
                    if let Some(p) = pending.take() {
                        // The context never came: the measurement goes alone.
                        run.add(&p, None);
                    }
                    match GlucoseMeasurement::decode(&n.1) {
                        Ok(m) if m.context_follows && self.link.has(GLUCOSE_CTX) => {
                            pending = Some(m)
                        }
                        Ok(m) => run.add(&m, None),
                        Err(e) => self.malformed(GLUCOSE_MEAS, &e.to_string()).await,
                    }
                    if run.batch.len() >= commit_batch {
                        // A failed commit ends the session here: the cursor stays before this
                        // batch, and the next session asks for these records again.
                        if let Err(e) = self.commit_glucose(run).await {
                            break Err(e.into());
                        }
                    }
                }
                GLUCOSE_CTX => match GlucoseContext::decode(&n.1) {
                    Ok(ctx) => {
                        if let Some(p) = pending.take() {
                            run.add(&p, Some(&ctx));
                        }
                    }
                    Err(e) => self.malformed(GLUCOSE_CTX, &e.to_string()).await,
                },
                RACP => match RacpMessage::decode(&n.1) {
                    Ok(RacpMessage::Response {
                        request_op_code,
                        response_code,
                    }) if request_op_code == op::REPORT_STORED_RECORDS => match response_code {
                        response::SUCCESS | response::NO_RECORDS_FOUND => {
                            // The transfer is complete: a context promised but not sent will
                            // not come.
                            if let Some(p) = pending.take() {
                                run.add(&p, None);
                            }
                            break Ok(response_code);
                        }
                        code => {
                            let name = gatt::racp::response_name(code).unwrap_or("reserved");
                            warn!(device = %self.tag, code, name, "RACP request refused.");
                            self.shared
                                .event(BleEvent::RacpRefused {
                                    device: self.device.clone(),
                                    response_code: code,
                                })
                                .await;
                            break Err(Stop::Link(LinkError::Other(format!(
                                "RACP response {name}"
                            ))));
                        }
                    },
                    Ok(_) => {}
                    Err(e) => self.malformed(RACP, &e.to_string()).await,
                },
                _ => {}
            }
        };
        if let Err(Stop::Port(e)) = result {
            // Nothing after a failed commit is handed over.
            return Err(Stop::Port(e));
        }
        // A measurement still waiting for its context (`pending`) is not stored and not under
        // the cursor: the next session asks for it (and its context) again.
        self.commit_glucose(run).await?;
        result
    }

    async fn commit_glucose(&mut self, run: &mut GlucoseRun) -> Result<(), PortError> {
        let readings = std::mem::take(&mut run.batch);
        let covered = run.batch_cursor.take();
        let cursor = covered.map(|m| Cursor {
            name: super::CURSOR_GLUCOSE,
            value: i64::from(m),
        });
        self.store_readings(readings, "rx", cursor).await?;
        if covered.is_some() {
            run.cursor = covered;
        }
        Ok(())
    }

    // ---------------------------------------------------------------------------------------
    // Spot measurements: indications until quiet or hang-up.

    async fn spot(&mut self, mut notes: Notifications, chars: &[u16]) -> Result<Outcome, Stop> {
        for c in chars {
            self.link.subscribe(*c).await?;
        }
        let quiet = self.shared.config.quiet();
        loop {
            match self.next(&mut notes, quiet).await {
                Ok(Some((ch, bytes))) => {
                    let Some(kind) = gatt::Characteristic::from_uuid(ch) else {
                        continue;
                    };
                    if !chars.contains(&ch) {
                        continue;
                    }
                    let bytes = match self.quirk {
                        Some(q) => q.apply(ch, &bytes).into_owned(),
                        None => bytes,
                    };
                    match gatt::decode(kind, &bytes) {
                        Ok(d) => {
                            let rx = format!("rx={}", self.shared.clock.now().as_millis());
                            self.store_readings(d.readings(), &rx, None).await?;
                        }
                        Err(e) => self.malformed(ch, &e.to_string()).await,
                    }
                }
                Ok(None) => {
                    return Ok(Outcome::Done {
                        stored: self.stored,
                    })
                }
                // Many cuffs send and hang up: that ends the transfer normally.
                Err(LinkError::NotConnected) => {
                    return Ok(Outcome::Done {
                        stored: self.stored,
                    })
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    // ---------------------------------------------------------------------------------------
    // Continuous streams (HR, PLX continuous): windowed summaries; raw values to the alert hook.

    async fn continuous(&mut self, mut notes: Notifications) -> Result<Outcome, Stop> {
        let chars: Vec<u16> = [HR_MEAS, PLX_CONT]
            .into_iter()
            .filter(|c| self.link.has(*c))
            .collect();
        for c in &chars {
            self.link.subscribe(*c).await?;
        }
        let window = self.shared.config.summary_window_ms.max(1);
        let deadline = tokio::time::Instant::now() + self.shared.config.stream_max();
        let mut acc: BTreeMap<Kind, Acc> = BTreeMap::new();
        let mut window_start: Option<i64> = None;
        let quiet = self.shared.config.quiet();
        let ended = loop {
            if tokio::time::Instant::now() >= deadline {
                break Ok(());
            }
            match self.next(&mut notes, quiet).await {
                Ok(Some((ch, bytes))) => {
                    let Some(kind) = gatt::Characteristic::from_uuid(ch) else {
                        continue;
                    };
                    if !chars.contains(&ch) {
                        continue;
                    }
                    let now = self.shared.clock.now().as_millis();
                    let start = now - now.rem_euclid(window);
                    if let Some(ws) = window_start {
                        if ws != start {
                            if let Err(e) = self.flush_summaries(&mut acc, ws, window).await {
                                break Err(Stop::Port(e));
                            }
                        }
                    }
                    window_start = Some(start);
                    match gatt::decode(kind, &bytes) {
                        Ok(d) => {
                            for r in d.readings() {
                                // Every raw value passes through the alert hook.
                                self.shared.alert_stream(&self.device, &r);
                                if let Some(v) = r.value.number() {
                                    acc.entry(r.kind)
                                        .or_insert_with(|| Acc::new(r.clone()))
                                        .add(v);
                                }
                            }
                        }
                        Err(e) => self.malformed(ch, &e.to_string()).await,
                    }
                }
                Ok(None) => {}
                Err(LinkError::NotConnected) => break Ok(()),
                Err(e) => break Err(e.into()),
            }
        };
        if let Err(Stop::Port(e)) = ended {
            return Err(Stop::Port(e));
        }
        if let Some(ws) = window_start {
            self.flush_summaries(&mut acc, ws, window).await?;
        }
        ended.map(|()| Outcome::Done {
            stored: self.stored,
        })
    }

    async fn flush_summaries(
        &mut self,
        acc: &mut BTreeMap<Kind, Acc>,
        start_ms: i64,
        window: i64,
    ) -> Result<(), PortError> {
        let start_local = self.shared.config.zone.local_at(UtcMillis(start_ms));
        let mut out = Vec::new();
        for (kind, a) in std::mem::take(acc) {
            let Some(mean) = a.mean() else { continue };
            let mut r = a.template;
            r.value = Value::Number(mean);
            r.device_time = start_local;
            r.flags.clear();
            let summary = ReadingSummary {
                count: a.count,
                min: a.min,
                max: a.max,
                window_ms: window,
            };
            self.shared
                .event(BleEvent::Summary {
                    device: self.device.clone(),
                    kind,
                    window_start: UtcMillis(start_ms),
                    window_ms: window,
                    count: a.count,
                    min: a.min,
                    mean,
                    max: a.max,
                })
                .await;
            out.push((r, summary));
        }
        let when = format!("summary={start_ms}+{window}");
        // Summaries are keyed by their window and skip the per-value alert hook (their raw values
        // went through it).
        let now = self.shared.clock.now();
        let items: Vec<NewReading> = out
            .into_iter()
            .map(|(mut r, summary)| {
                r.sequence = None;
                let stable_key =
                    format!("v1|{}|{}|{}|{}", self.address, self.patient, r.kind, when);
                NewReading {
                    reading: r,
                    received_at: now,
                    stable_key,
                    test_data: self.test_data,
                    summary: Some(summary),
                }
            })
            .collect();
        self.commit(items, None).await
    }

    // ---------------------------------------------------------------------------------------
    // CGM: records with time offsets from the session start; E2E-CRC checked by the codec.
    //
    // A CGM is a long-lived connection: the sensor notifies a record every 1–5 minutes, so the
    // session waits for the sensor's own cadence (twice the interval between its records' time
    // offsets, plus 30 s; 5 minutes until two records have shown it), never the spot devices'
    // quiet time, and each record moves the session's deadline on. When the sensor has no Session
    // Start Time, the hub writes it (the collector's job in CGMS): its local wall clock minus the
    // CGM Status time offset when the sensor has that characteristic, then reads back what the
    // sensor kept. The cursor is kept per sensor session: its value is `(session start in epoch
    // minutes) << 16 | time offset`, so a new sensor session (a new start) never compares its
    // offsets with the old one's. Each record's identity is its device time (start + offset) when
    // the start is known; records whose start is unknown never share a key (the offset, and the
    // session's connect time, tell them apart). When the sensor has a RACP (0x2AAC) the session
    // first asks it for every record newer than the stored cursor of this sensor session (time
    // offset ≥ cursor + 1, filter type 0x01), so what the sensor measured while the link was down
    // is back-filled; the cursor moves only once that back-fill has answered.

    async fn cgm(&mut self, mut notes: Notifications) -> Result<Outcome, Stop> {
        let e2e = match self.link.read(CGM_FEATURE).await {
            Ok(v) => cgm::CgmFeature::decode(&v)
                .map(|f| f.e2e_crc_supported())
                .unwrap_or(false),
            Err(_) => false,
        };
        let mut start = self.cgm_session_start().await;
        if start.and_then(|s| s.start.to_local()).is_none() && self.link.writable(CGM_SST) {
            self.write_session_start(e2e).await;
            start = self.cgm_session_start().await;
        }
        let start_local = start.and_then(|s| s.start.to_local());
        let session_id = start_local.map_or(0, |t| t.to_epoch_seconds().div_euclid(60));
        let identity = match start_local {
            Some(t) => format!("sst={t}"),
            None => format!(
                "sst=unknown@{}",
                self.shared.clock.now().floor_minute().as_millis()
            ),
        };
        let stored = self
            .shared
            .port
            .cursor(&self.device, super::CURSOR_CGM)
            .await?;
        // A cursor of another sensor session (or of the old plain-offset form) does not apply.
        let mut cursor: Option<u16> = stored
            .filter(|c| c >> 16 == session_id && start_local.is_some())
            .and_then(|c| u16::try_from(c & 0xFFFF).ok());
        self.link.subscribe(CGM_MEAS).await?;
        // Back-fill through the CGM's RACP: every record of this sensor session newer than the
        // last stored one (all of them when none is stored), so a gap while the link was down is
        // filled. Until the sensor answers, live records are stored but the cursor stays: it
        // moves to the highest offset seen only once the back-fill has answered, so it is never
        // past a record still to come.
        let mut backfill = false;
        let mut seen_max: Option<u16> = None;
        if self.link.has(CGM_RACP) && start_local.is_some() {
            self.link.subscribe(CGM_RACP).await?;
            let request = match cursor {
                Some(c) if c == u16::MAX => None,
                Some(c) => Some(RacpMessage::report_from_time_offset(c + 1)),
                None => Some(RacpMessage::report_all()),
            };
            if let Some(Ok(bytes)) = request.map(|r| r.encode()) {
                self.link.write(CGM_RACP, &bytes).await?;
                backfill = true;
            }
        }
        let mut last_offset: Option<u16> = None;
        let mut cadence_min: Option<u16> = None;
        loop {
            // A back-fill the sensor leaves unanswered for the RACP idle time is given up.
            let wait = if backfill {
                self.shared.config.racp_idle()
            } else {
                cgm_quiet(cadence_min, self.shared.config.quiet())
            };
            match self.next_within(&mut notes, wait).await {
                Ok(None) if backfill => {
                    backfill = false;
                    warn!(device = %self.tag, "The CGM did not answer the RACP back-fill.");
                }
                Ok(Some((CGM_RACP, bytes))) => {
                    self.deadline.extend(wait);
                    match RacpMessage::decode(&bytes) {
                        Ok(RacpMessage::Response {
                            request_op_code: op::REPORT_STORED_RECORDS,
                            response_code,
                        }) if backfill => {
                            backfill = false;
                            if response_code != response::SUCCESS
                                && response_code != response::NO_RECORDS_FOUND
                            {
                                let name =
                                    gatt::racp::response_name(response_code).unwrap_or("reserved");
                                warn!(device = %self.tag, code = response_code, name, "CGM RACP back-fill refused.");
                                self.shared
                                    .event(BleEvent::RacpRefused {
                                        device: self.device.clone(),
                                        response_code,
                                    })
                                    .await;
                            }
                            // Everything up to the highest offset seen is stored now.
                            let newer = seen_max.filter(|m| cursor.is_none_or(|c| *m > c));
                            if let Some(m) = newer {
                                let cur = Cursor {
                                    name: super::CURSOR_CGM,
                                    value: (session_id << 16) | i64::from(m),
                                };
                                self.store_keyed(Vec::new(), Some(cur)).await?;
                                cursor = Some(m);
                            }
                        }
                        Ok(_) => {}
                        Err(e) => self.malformed(CGM_RACP, &e.to_string()).await,
                    }
                }
                Ok(Some((CGM_MEAS, bytes))) => {
                    self.deadline.extend(wait);
                    let mut items = Vec::new();
                    let mut max: Option<u16> = None;
                    for rec in cgm::decode_records(&bytes) {
                        match rec {
                            Ok(r) if e2e && !r.e2e_crc => {
                                self.malformed(
                                    CGM_MEAS,
                                    "record without the E2E-CRC the CGM Feature promises",
                                )
                                .await
                            }
                            Ok(r) => {
                                let off = r.time_offset_min;
                                if let Some(prev) = last_offset.filter(|p| off > *p) {
                                    cadence_min = Some(off - prev);
                                }
                                last_offset = Some(off);
                                if cursor.is_some_and(|c| off <= c) {
                                    continue;
                                }
                                max = Some(max.map_or(off, |m| m.max(off)));
                                let mut reading = r.reading(start.as_ref());
                                // Without a start the offset is the record's only identity: it
                                // goes into the reading (and so into its upstream identifier,
                                // which would otherwise be the batch's one reception time).
                                if reading.device_time.is_none() {
                                    reading.sequence = Some(off);
                                }
                                // With a known start the device time (start + offset) is the
                                // identity, keyed as before this change (no duplicate after an
                                // upgrade); without one, the offset and the session tell
                                // records apart.
                                let key = if reading.device_time.is_some() {
                                    self.stable_key(&reading, "rx")
                                } else {
                                    format!(
                                        "v1|{}|{}|{}|{identity}|offset={off}",
                                        self.address,
                                        self.patient,
                                        Kind::CgmGlucose
                                    )
                                };
                                items.push((reading, key));
                            }
                            Err(e) => self.malformed(CGM_MEAS, &e.to_string()).await,
                        }
                    }
                    if let Some(m) = max {
                        seen_max = Some(seen_max.map_or(m, |s| s.max(m)));
                    }
                    // While the back-fill runs, what arrives is stored without the cursor.
                    let max = max.filter(|_| !backfill);
                    let cur = max.map(|m| Cursor {
                        name: super::CURSOR_CGM,
                        value: (session_id << 16) | i64::from(m),
                    });
                    self.store_keyed(items, cur).await?;
                    if max.is_some() {
                        cursor = max;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(LinkError::NotConnected) => {
                    return Ok(Outcome::Done {
                        stored: self.stored,
                    })
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn cgm_session_start(&mut self) -> Option<SessionStartTime> {
        match self.link.read(CGM_SST).await {
            Ok(v) => match SessionStartTime::decode(&v) {
                Ok(s) => Some(s),
                Err(e) => {
                    self.malformed(CGM_SST, &e.to_string()).await;
                    None
                }
            },
            Err(_) => None,
        }
    }

    /// Write the Session Start Time: hub local time minus the sensor's current time offset (CGM
    /// Status), with the zone and DST of the hub's zone at that instant.
    async fn write_session_start(&mut self, e2e: bool) {
        let Some(now) = self.hub_local() else { return };
        let mut offset_min = 0i64;
        if self.link.has(CGM_STATUS) {
            if let Ok(v) = self.link.read(CGM_STATUS).await {
                match cgm::CgmStatus::decode(&v) {
                    Ok(st) => offset_min = i64::from(st.time_offset_min),
                    Err(e) => self.malformed(CGM_STATUS, &e.to_string()).await,
                }
            }
        }
        let Ok(at) = now.add_minutes(-offset_min) else {
            return;
        };
        let (tz, dst) = self.zone_fields();
        let sst = SessionStartTime::new(at, tz, dst, e2e);
        match sst.encode() {
            Ok(bytes) => match self.link.write(CGM_SST, &bytes).await {
                Ok(()) => info!(device = %self.tag, "Wrote the CGM Session Start Time."),
                Err(e) => {
                    warn!(device = %self.tag, error = %e, "Writing the CGM Session Start Time failed.")
                }
            },
            Err(e) => {
                warn!(device = %self.tag, error = %e, "CGM Session Start Time not encodable.")
            }
        }
    }

    /// Time Zone (15-minute units, standard time) and DST Offset of the hub's zone now (it was
    /// the start-up offset with DST 0, wrong after a change while the hub runs).
    fn zone_fields(
        &self,
    ) -> (
        crate::gatt::datetime::TimeZone,
        crate::gatt::datetime::DstOffset,
    ) {
        let (tz, dst) = self.shared.config.zone.gatt_fields(self.shared.clock.now());
        (
            crate::gatt::datetime::TimeZone(tz),
            crate::gatt::datetime::DstOffset(dst),
        )
    }

    /// Commit readings with their own stable keys (and the cursor they cover).
    async fn store_keyed(
        &mut self,
        readings: Vec<(Reading, String)>,
        cursor: Option<Cursor>,
    ) -> Result<(), PortError> {
        let now = self.shared.clock.now();
        let items = readings
            .into_iter()
            .map(|(mut reading, stable_key)| {
                self.shared.config.zone.mark_time_quality(&mut reading);
                (reading, stable_key)
            })
            .map(|(reading, stable_key)| NewReading {
                reading,
                received_at: now,
                stable_key,
                test_data: self.test_data,
                summary: None,
            })
            .collect();
        self.commit(items, cursor).await
    }
}

/// How long a CGM may stay silent: twice its cadence plus 30 s (5 minutes until known), never
/// less than the configured quiet time.
fn cgm_quiet(cadence_min: Option<u16>, quiet: Duration) -> Duration {
    let cadence = Duration::from_secs(u64::from(cadence_min.unwrap_or(5).max(1)) * 60);
    (cadence * 2 + Duration::from_secs(30)).max(quiet)
}

/// A glucose download's state: the batch being built and the cursor it will carry.
#[derive(Debug, Default)]
struct GlucoseRun {
    /// The cursor committed so far (the stored one at the start; `None` reads in full).
    cursor: Option<u16>,
    batch: Vec<Reading>,
    /// The cursor covering `batch` and everything before it; `None` while the batch adds none.
    batch_cursor: Option<u16>,
}

impl GlucoseRun {
    /// A measurement (with its context) joins the batch and the cursor that covers it.
    fn add(&mut self, m: &GlucoseMeasurement, ctx: Option<&GlucoseContext>) {
        let ctx = ctx.filter(|c| c.sequence_number == m.sequence_number);
        self.batch.extend(m.readings_with_context(ctx));
        let base = self.batch_cursor.or(self.cursor);
        self.batch_cursor = Some(match base {
            Some(c) if !sequence_newer(m.sequence_number, c) => c,
            _ => m.sequence_number,
        });
    }
}

/// GLS sequence numbers in 16-bit serial order (RFC 1982): `a` is newer than `b`.
pub(crate) fn sequence_newer(a: u16, b: u16) -> bool {
    let d = a.wrapping_sub(b);
    d != 0 && d < 0x8000
}

struct Acc {
    template: Reading,
    count: u64,
    sum: f64,
    min: Decimal,
    max: Decimal,
}

impl Acc {
    fn new(template: Reading) -> Acc {
        let v = template.value.number().unwrap_or(Decimal::new(0, 0));
        Acc {
            template,
            count: 0,
            sum: 0.0,
            min: v,
            max: v,
        }
    }
    fn add(&mut self, v: Decimal) {
        self.count += 1;
        self.sum += v.to_f64();
        if v.cmp_value(&self.min).is_lt() {
            self.min = v;
        }
        if v.cmp_value(&self.max).is_gt() {
            self.max = v;
        }
    }
    /// The mean to one decimal place.
    fn mean(&self) -> Option<Decimal> {
        if self.count == 0 {
            return None;
        }
        let m = self.sum / self.count as f64;
        Some(Decimal::new((m * 10.0).round() as i64, -1).normalized())
    }
}
