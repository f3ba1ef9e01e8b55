//! Simulated peripherals: a [`Link`] that behaves like a health device — GATT table, Device
//! Information, battery, a clock, and the profile's transfer (RACP for the glucose meter, stored
//! measurement indications for cuffs, oximeters, scales and thermometers, a notification stream
//! for heart rate) — sending bytes built with the `gatt` encoders. A session runs against it exactly
//! as against a real device: the same decode → store → alert → upload path. Sessions mark its
//! readings as test data, so the clinic sees them as such (`meta.security` HTEST).
//!
//! **Deterministic across restarts.** Measurement `k` (k = 1, 2, …) of a simulated device is taken
//! at `anchor + k × interval`, where the anchor is fixed when the device is first seen and kept in
//! the store; its value is a function of `k` alone. So a hub killed and restarted meets the same
//! device memory, and records it already stored are recognised by their stable keys — which is what
//! lets the crash tests count every reading exactly once.

use crate::ble::link::{Link, LinkError, Notifications};
use crate::gatt::bp::{BloodPressureMeasurement, PressureUnit};
use crate::gatt::datetime::{CurrentTime, DateTime};
use crate::gatt::dis::{BatteryLevel, FirmwareRevision, ManufacturerName, ModelNumber};
use crate::gatt::glucose::{Concentration, ConcentrationUnit, GlucoseContext, GlucoseMeasurement};
use crate::gatt::hr::HeartRateMeasurement;
use crate::gatt::plx::SpotCheckMeasurement;
use crate::gatt::racp::{op, response, FilterValue, Operator, RacpMessage, RequestOp};
use crate::gatt::thermo::{TemperatureMeasurement, TemperatureUnit};
use crate::gatt::weight::{MeasurementSystem, WeightMeasurement};
use crate::gatt::{Float, GattValue, SFloat};
use crate::model::{Clock, Decimal, LocalDateTime, UtcMillis};
use serde::Deserialize;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// What a simulated device measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// Glucose meter (GLS): records kept in the meter, fetched through RACP.
    Glucose,
    /// Blood-pressure cuff (BLS): stored measurements indicated, then it hangs up.
    BloodPressure,
    /// Pulse oximeter, spot-check (PLXS).
    PulseOximeter,
    /// Weight scale (WSS).
    Scale,
    /// Health thermometer (HTS).
    Thermometer,
    /// Heart-rate sensor (HRS): a notification stream, stored as summaries.
    HeartRate,
}

impl Profile {
    pub fn name(&self) -> &'static str {
        match self {
            Profile::Glucose => "glucose",
            Profile::BloodPressure => "blood-pressure",
            Profile::PulseOximeter => "pulse-oximeter",
            Profile::Scale => "scale",
            Profile::Thermometer => "thermometer",
            Profile::HeartRate => "heart-rate",
        }
    }
    /// The primary value's unit, as configured in `values`.
    pub fn unit_text(&self) -> &'static str {
        match self {
            Profile::Glucose => "mg/dL",
            Profile::BloodPressure => "systolic mmHg",
            Profile::PulseOximeter => "SpO2 %",
            Profile::Scale => "kg",
            Profile::Thermometer => "°C",
            Profile::HeartRate => "beats/min",
        }
    }
    fn range(&self) -> (f64, f64) {
        match self {
            Profile::Glucose => (10.0, 600.0),
            Profile::BloodPressure => (60.0, 260.0),
            Profile::PulseOximeter => (50.0, 100.0),
            Profile::Scale => (2.0, 300.0),
            Profile::Thermometer => (30.0, 43.0),
            Profile::HeartRate => (20.0, 250.0),
        }
    }
    pub fn range_text(&self) -> String {
        let (lo, hi) = self.range();
        format!("{lo}..={hi}")
    }
    /// Whether `v` is a value this device could send.
    pub fn accepts(&self, v: f64) -> bool {
        let (lo, hi) = self.range();
        v.is_finite() && (lo..=hi).contains(&v)
    }
    /// The normal-range centre and half-width of the `normal` pattern, and the step of `rising`.
    fn normal(&self) -> (f64, f64, f64) {
        match self {
            Profile::Glucose => (115.0, 25.0, 8.0),
            Profile::BloodPressure => (124.0, 10.0, 3.0),
            Profile::PulseOximeter => (97.0, 2.0, -0.5),
            Profile::Scale => (72.0, 0.4, 0.3),
            Profile::Thermometer => (36.8, 0.3, 0.1),
            Profile::HeartRate => (72.0, 10.0, 2.0),
        }
    }
    /// Decimal places the device reports.
    fn places(&self) -> i16 {
        match self {
            Profile::Scale | Profile::Thermometer => 1,
            _ => 0,
        }
    }
    /// The store's profile name.
    pub fn store_profile(&self) -> &'static str {
        self.name()
    }
}

/// How values move when `values` is not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Pattern {
    /// Within the normal range, varying from reading to reading.
    #[default]
    Normal,
    /// Climbing by a step every reading (a weight gain, a glucose excursion).
    Rising,
}

/// A simulated device as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    pub name: String,
    pub profile: Profile,
    /// Seconds between measurements (and between the hub's sessions with it).
    pub interval_secs: u64,
    pub pattern: Pattern,
    /// Values cycled through (primary value in [`Profile::unit_text`]); overrides `pattern`.
    pub values: Vec<f64>,
    /// The user index a multi-user cuff or scale sends.
    pub user_id: Option<u8>,
    /// Measurements already in the device's memory when it is first seen.
    pub stored_records: u16,
}

/// The most records a simulated meter keeps (older ones are overwritten, as in a real meter).
const MEMORY: u64 = 500;
/// Spot devices indicate at most this many stored measurements per session.
const SPOT_BATCH: u64 = 20;

/// A simulated device: configuration, anchor, and what it has already sent.
#[derive(Debug)]
pub struct SimDevice {
    pub cfg: SimConfig,
    /// The instant of measurement 0.
    anchor: UtcMillis,
    utc_offset_minutes: i32,
    clock: Arc<dyn Clock>,
    /// Spot devices: the last measurement index indicated.
    sent: Mutex<u64>,
}

/// A short, stable, locally administered address for a simulated device's name.
pub fn sim_address(name: &str) -> String {
    let b = fnv1a(name.as_bytes()).to_be_bytes();
    // 0x5A: a locally administered unicast prefix, and never a real vendor's.
    format!(
        "5A:{:02X}:{:02X}:{:02X}:{:02X}:{:02X}",
        b[0], b[1], b[2], b[3], b[4]
    )
}

/// FNV-1a, 64 bit: a stable, non-cryptographic hash for made-up addresses.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn mix(name: &str, k: u64) -> u64 {
    let mut h: u64 = 0x9E37_79B9_7F4A_7C15 ^ k.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^ (h >> 31)
}

impl SimDevice {
    /// `anchor` is the instant of measurement 0 (kept by the caller across restarts).
    pub fn new(
        cfg: SimConfig,
        anchor: UtcMillis,
        utc_offset_minutes: i32,
        clock: Arc<dyn Clock>,
    ) -> SimDevice {
        SimDevice {
            cfg,
            anchor,
            utc_offset_minutes,
            clock,
            sent: Mutex::new(0),
        }
    }

    /// A fresh anchor for a device first seen at `now`: its memory already holds
    /// `stored_records` measurements.
    pub fn first_anchor(cfg: &SimConfig, now: UtcMillis) -> UtcMillis {
        UtcMillis(now.as_millis() - i64::from(cfg.stored_records) * self::interval_ms(cfg))
    }

    pub fn address(&self) -> String {
        sim_address(&self.cfg.name)
    }

    fn interval_ms(&self) -> i64 {
        interval_ms(&self.cfg)
    }

    /// The index of the latest measurement taken by now (0: none yet).
    pub fn latest(&self) -> u64 {
        let elapsed = self.clock.now().as_millis() - self.anchor.as_millis();
        u64::try_from(elapsed.div_euclid(self.interval_ms().max(1))).unwrap_or(0)
    }

    /// When the next measurement is taken.
    pub fn next_due(&self) -> UtcMillis {
        let k = i64::try_from(self.latest()).unwrap_or(i64::MAX - 1) + 1;
        UtcMillis(
            self.anchor
                .as_millis()
                .saturating_add(k.saturating_mul(self.interval_ms())),
        )
    }

    /// The device-local wall clock at measurement `k`.
    fn local_time_of(&self, k: u64) -> Option<LocalDateTime> {
        let at =
            self.anchor.as_millis() + i64::try_from(k).ok()?.checked_mul(self.interval_ms())?;
        LocalDateTime::from_epoch_seconds(
            at.div_euclid(1000) + i64::from(self.utc_offset_minutes) * 60,
        )
        .ok()
    }

    fn now_local(&self) -> Option<LocalDateTime> {
        LocalDateTime::from_epoch_seconds(
            self.clock.now().as_millis().div_euclid(1000) + i64::from(self.utc_offset_minutes) * 60,
        )
        .ok()
    }

    /// The primary value of measurement `k`, rounded to the device's resolution.
    pub fn value_of(&self, k: u64) -> Decimal {
        let p = self.cfg.profile;
        let v = if self.cfg.values.is_empty() {
            let (centre, half, step) = p.normal();
            let jitter = (mix(&self.cfg.name, k) % 2001) as f64 / 1000.0 - 1.0;
            match self.cfg.pattern {
                Pattern::Normal => centre + half * jitter,
                Pattern::Rising => centre + step * k as f64 + half * 0.1 * jitter,
            }
        } else {
            let i = usize::try_from(k.saturating_sub(1)).unwrap_or(0) % self.cfg.values.len();
            self.cfg.values.get(i).copied().unwrap_or(0.0)
        };
        let (lo, hi) = p.range();
        let v = v.clamp(lo, hi);
        let scale = 10f64.powi(i32::from(p.places()));
        Decimal::new((v * scale).round() as i64, -p.places())
    }

    /// The GATT value of measurement `k` (the profile's measurement characteristic).
    fn measurement(&self, k: u64) -> Result<(u16, Vec<u8>), String> {
        let t = self
            .local_time_of(k)
            .ok_or("measurement time out of range")?;
        let v = self.value_of(k);
        let sf = |d: Decimal| SFloat::from_decimal(d).map_err(|e| e.to_string());
        let bytes = match self.cfg.profile {
            Profile::Glucose => GlucoseMeasurement {
                sequence_number: (k % 65_536) as u16,
                base_time: DateTime::from_local(t),
                time_offset_min: None,
                concentration: Some(Concentration {
                    // mg/dL = 10^-5 kg/L.
                    value: sf(Decimal::new(v.mantissa, v.exponent - 5))?,
                    unit: ConcentrationUnit::KgPerL,
                    sample_type: 1,
                    sample_location: 1,
                }),
                sensor_status: None,
                // Like real meters, each record is followed by its context (the meal).
                context_follows: true,
            }
            .encode(),
            Profile::BloodPressure => {
                let sys = v.mantissa;
                let dia = (sys * 65 + 50) / 100;
                let map = dia + (sys - dia) / 3;
                BloodPressureMeasurement {
                    unit: PressureUnit::MmHg,
                    systolic: sf(Decimal::new(sys, 0))?,
                    diastolic: sf(Decimal::new(dia, 0))?,
                    mean_arterial_pressure: sf(Decimal::new(map, 0))?,
                    timestamp: Some(DateTime::from_local(t)),
                    pulse_rate: Some(sf(Decimal::new(
                        64 + (mix(&self.cfg.name, k) % 16) as i64,
                        0,
                    ))?),
                    user_id: self.cfg.user_id,
                    measurement_status: None,
                }
                .encode()
            }
            Profile::PulseOximeter => SpotCheckMeasurement {
                spo2_pct: sf(v)?,
                pulse_rate_per_min: sf(Decimal::new(66 + (mix(&self.cfg.name, k) % 14) as i64, 0))?,
                timestamp: Some(DateTime::from_local(t)),
                measurement_status: None,
                device_sensor_status: None,
                pulse_amplitude_index_pct: None,
                device_clock_not_set: false,
            }
            .encode(),
            Profile::Scale => {
                // 0.005 kg resolution: raw = kg × 200.
                let raw = (v.to_f64() * 200.0).round();
                WeightMeasurement {
                    system: MeasurementSystem::Si,
                    weight_raw: u16::try_from(raw as i64).map_err(|e| e.to_string())?,
                    timestamp: Some(DateTime::from_local(t)),
                    user_id: self.cfg.user_id,
                    bmi_height: None,
                }
                .encode()
            }
            Profile::Thermometer => TemperatureMeasurement {
                temperature: Float::from_decimal(v).map_err(|e| e.to_string())?,
                unit: TemperatureUnit::Celsius,
                timestamp: Some(DateTime::from_local(t)),
                temperature_type: None,
            }
            .encode(),
            Profile::HeartRate => HeartRateMeasurement {
                heart_rate: u16::try_from(v.mantissa).unwrap_or(0),
                heart_rate_u16: false,
                sensor_contact: 3,
                energy_expended_kj: None,
                rr_intervals: Vec::new(),
            }
            .encode(),
        };
        Ok((self.measurement_uuid(), bytes.map_err(|e| e.to_string())?))
    }

    /// Measurement `k` as the device sends it: a glucose record with its context record
    /// (same sequence number; meal preprandial, postprandial or fasting in turn).
    fn record(&self, k: u64) -> Vec<(u16, Vec<u8>)> {
        let Ok(m) = self.measurement(k) else {
            return Vec::new();
        };
        let mut out = vec![m];
        if self.cfg.profile == Profile::Glucose {
            let ctx = GlucoseContext {
                sequence_number: (k % 65_536) as u16,
                extended_flags: None,
                carbohydrate: None,
                meal: Some((k % 3) as u8 + 1),
                tester_health: None,
                exercise: None,
                medication: None,
                hba1c_pct: None,
            };
            if let Ok(b) = ctx.encode() {
                out.push((0x2A34, b));
            }
        }
        out
    }

    fn measurement_uuid(&self) -> u16 {
        match self.cfg.profile {
            Profile::Glucose => 0x2A18,
            Profile::BloodPressure => 0x2A35,
            Profile::PulseOximeter => 0x2A5E,
            Profile::Scale => 0x2A9D,
            Profile::Thermometer => 0x2A1C,
            Profile::HeartRate => 0x2A37,
        }
    }

    fn characteristics(&self) -> &'static [u16] {
        match self.cfg.profile {
            Profile::Glucose => &[0x2A18, 0x2A34, 0x2A51, 0x2A52],
            Profile::BloodPressure => &[0x2A35, 0x2A49],
            Profile::PulseOximeter => &[0x2A5E, 0x2A60],
            Profile::Scale => &[0x2A9D, 0x2A9E],
            Profile::Thermometer => &[0x2A1C],
            Profile::HeartRate => &[0x2A37],
        }
    }

    fn model(&self) -> &'static str {
        match self.cfg.profile {
            Profile::Glucose => "SIM-GLU-1",
            Profile::BloodPressure => "SIM-BPM-1",
            Profile::PulseOximeter => "SIM-PLX-1",
            Profile::Scale => "SIM-WSC-1",
            Profile::Thermometer => "SIM-THM-1",
            Profile::HeartRate => "SIM-HRM-1",
        }
    }

    /// A link for one session with this device.
    pub fn link(self: &Arc<Self>) -> SimLink {
        let (tx, rx) = mpsc::channel(1024);
        SimLink {
            dev: self.clone(),
            tx: Mutex::new(Some(tx)),
            rx: Mutex::new(Some(rx)),
        }
    }
}

fn interval_ms(cfg: &SimConfig) -> i64 {
    i64::try_from(cfg.interval_secs.max(1))
        .unwrap_or(86_400)
        .saturating_mul(1000)
}

/// A characteristic's value: (UUID, bytes).
type Value = (u16, Vec<u8>);
type ValueSender = mpsc::Sender<Value>;

/// One session's link to a [`SimDevice`]. Dropping its sender ends the value stream, which the
/// session sees as the device hanging up.
#[derive(Debug)]
pub struct SimLink {
    dev: Arc<SimDevice>,
    tx: Mutex<Option<ValueSender>>,
    rx: Mutex<Option<mpsc::Receiver<Value>>>,
}

const RACP: u16 = 0x2A52;
const CURRENT_TIME: u16 = 0x2A2B;

impl SimLink {
    fn sender(&self) -> Option<ValueSender> {
        self.tx.lock().ok().and_then(|t| t.clone())
    }
    fn hang_up(&self) {
        if let Ok(mut t) = self.tx.lock() {
            *t = None;
        }
    }
    async fn send(&self, values: Vec<(u16, Vec<u8>)>) -> Result<(), LinkError> {
        let tx = self.sender().ok_or(LinkError::NotConnected)?;
        for v in values {
            tx.send(v).await.map_err(|_| LinkError::NotConnected)?;
        }
        Ok(())
    }

    /// RACP: "report stored records" (all, or ≥ n), "number of records", abort.
    fn racp(&self, data: &[u8]) -> Vec<(u16, Vec<u8>)> {
        let resp = |req: u8, code: u8| {
            RacpMessage::Response {
                request_op_code: req,
                response_code: code,
            }
            .encode()
            .map(|b| (RACP, b))
            .ok()
        };
        let latest = self.dev.latest();
        let oldest = latest.saturating_sub(MEMORY - 1).max(1);
        let from = |operator: Operator, filter: &Option<crate::gatt::racp::Filter>| match operator {
            Operator::AllRecords => Some(oldest),
            Operator::GreaterThanOrEqual => match filter.as_ref().and_then(|f| f.values.first()) {
                // The sequence number is the low 16 bits of k: find the k it names in memory.
                Some(FilterValue::U16(n)) => Some(
                    (oldest..=latest)
                        .find(|k| k % 65_536 >= u64::from(*n))
                        .unwrap_or(latest + 1),
                ),
                _ => None,
            },
            _ => None,
        };
        let mut out = Vec::new();
        match RacpMessage::decode(data) {
            Ok(RacpMessage::Request {
                op: RequestOp::ReportStoredRecords,
                operator,
                filter,
            }) => match from(operator, &filter) {
                Some(first) => {
                    for k in first..=latest {
                        out.extend(self.dev.record(k));
                    }
                    let code = if first > latest {
                        response::NO_RECORDS_FOUND
                    } else {
                        response::SUCCESS
                    };
                    out.extend(resp(op::REPORT_STORED_RECORDS, code));
                }
                None => out.extend(resp(
                    op::REPORT_STORED_RECORDS,
                    response::OPERATOR_NOT_SUPPORTED,
                )),
            },
            Ok(RacpMessage::Request {
                op: RequestOp::ReportNumberOfStoredRecords,
                operator,
                filter,
            }) => {
                let n = from(operator, &filter).map_or(0, |f| (latest + 1).saturating_sub(f));
                if let Ok(b) =
                    RacpMessage::NumberOfRecords(u16::try_from(n).unwrap_or(u16::MAX)).encode()
                {
                    out.push((RACP, b));
                }
            }
            Ok(RacpMessage::Abort) => out.extend(resp(op::ABORT, response::SUCCESS)),
            Ok(_) => out.extend(resp(
                data.first().copied().unwrap_or(0),
                response::OP_CODE_NOT_SUPPORTED,
            )),
            Err(_) => out.extend(resp(
                data.first().copied().unwrap_or(0),
                response::INVALID_OPERATOR,
            )),
        }
        out
    }

    /// Spot devices: the measurements taken since the last session (at most [`SPOT_BATCH`]).
    fn spot_values(&self) -> Vec<(u16, Vec<u8>)> {
        let latest = self.dev.latest();
        let Ok(mut sent) = self.dev.sent.lock() else {
            return Vec::new();
        };
        let first = (*sent + 1)
            .max(latest.saturating_sub(SPOT_BATCH - 1))
            .max(1);
        let out = (first..=latest)
            .filter_map(|k| self.dev.measurement(k).ok())
            .collect();
        *sent = latest;
        out
    }
}

impl Link for SimLink {
    async fn connect(&self) -> Result<(), LinkError> {
        Ok(())
    }
    fn has(&self, ch: u16) -> bool {
        matches!(ch, 0x2A19 | 0x2A24 | 0x2A26 | 0x2A29 | CURRENT_TIME)
            || self.dev.characteristics().contains(&ch)
    }
    fn writable(&self, ch: u16) -> bool {
        ch == RACP || ch == CURRENT_TIME
    }
    async fn read(&self, ch: u16) -> Result<Vec<u8>, LinkError> {
        let r = match ch {
            0x2A29 => ManufacturerName {
                value: "vitals-hub simulator".into(),
            }
            .encode(),
            0x2A24 => ModelNumber {
                value: self.dev.model().into(),
            }
            .encode(),
            0x2A26 => FirmwareRevision {
                value: env!("CARGO_PKG_VERSION").into(),
            }
            .encode(),
            0x2A19 => BatteryLevel {
                percent: 100u8.saturating_sub((self.dev.latest() / 50).min(90) as u8),
            }
            .encode(),
            CURRENT_TIME => {
                let now = self
                    .dev
                    .now_local()
                    .ok_or(LinkError::Other("clock".into()))?;
                CurrentTime::for_clock_write(now).encode()
            }
            0x2A51 => Ok(vec![0x00, 0x00]),
            // Features: nothing optional supported.
            0x2A49 | 0x2A60 => Ok(vec![0x00, 0x00]),
            0x2A9E => Ok(vec![0x00; 4]),
            c => return Err(LinkError::Missing(c)),
        };
        r.map_err(|e| LinkError::Other(e.to_string()))
    }
    async fn write(&self, ch: u16, data: &[u8]) -> Result<(), LinkError> {
        match ch {
            RACP => {
                let answers = self.racp(data);
                self.send(answers).await
            }
            // The simulated clock is the hub's own: a write changes nothing.
            CURRENT_TIME => Ok(()),
            c => Err(LinkError::Other(format!("0x{c:04X} is not writable"))),
        }
    }
    async fn subscribe(&self, ch: u16) -> Result<(), LinkError> {
        if ch != self.dev.measurement_uuid() || self.dev.cfg.profile == Profile::Glucose {
            return Ok(());
        }
        if self.dev.cfg.profile == Profile::HeartRate {
            // A short burst, one value a second, then the strap is out of range again.
            let Some(tx) = self.sender() else {
                return Err(LinkError::NotConnected);
            };
            self.hang_up();
            let dev = self.dev.clone();
            tokio::spawn(async move {
                let k = dev.latest().max(1);
                for i in 0..5u64 {
                    if let Ok(m) = dev.measurement(k * 5 + i) {
                        if tx.send(m).await.is_err() {
                            return;
                        }
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            });
            return Ok(());
        }
        let values = self.spot_values();
        self.send(values).await?;
        // Many cuffs send and hang up.
        self.hang_up();
        Ok(())
    }
    async fn notifications(&self) -> Result<Notifications, LinkError> {
        let rx = self
            .rx
            .lock()
            .ok()
            .and_then(|mut r| r.take())
            .ok_or(LinkError::Other("notifications already taken".into()))?;
        Ok(Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|v| (v, rx))
        })))
    }
    async fn is_connected(&self) -> Result<bool, LinkError> {
        Ok(self.sender().is_some())
    }
    async fn disconnect(&self) -> Result<(), LinkError> {
        self.hang_up();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )]
    use super::*;
    use crate::gatt;
    use crate::model::ManualClock;

    fn dev(profile: Profile, values: Vec<f64>) -> (Arc<SimDevice>, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(UtcMillis(1_790_000_000_000)));
        let cfg = SimConfig {
            name: "sim".into(),
            profile,
            interval_secs: 60,
            pattern: Pattern::Normal,
            values,
            user_id: None,
            stored_records: 5,
        };
        let anchor = SimDevice::first_anchor(&cfg, clock.now());
        (
            Arc::new(SimDevice::new(cfg, anchor, 60, clock.clone())),
            clock,
        )
    }

    #[test]
    fn every_profile_sends_bytes_the_decoder_accepts_with_the_configured_value() {
        for p in [
            Profile::Glucose,
            Profile::BloodPressure,
            Profile::PulseOximeter,
            Profile::Scale,
            Profile::Thermometer,
            Profile::HeartRate,
        ] {
            let v = p.normal().0;
            let (d, _) = dev(p, vec![v]);
            assert_eq!(d.latest(), 5);
            let (uuid, bytes) = d.measurement(3).unwrap();
            let ch = gatt::Characteristic::from_uuid(uuid).unwrap();
            let decoded = gatt::decode(ch, &bytes).unwrap();
            let r = decoded.readings();
            assert!(!r.is_empty(), "{p:?}");
            let first = r[0].value.number().unwrap();
            assert!((first.to_f64() - v).abs() < 0.6, "{p:?}: {first:?} vs {v}");
        }
    }

    #[test]
    fn measurements_are_a_function_of_their_index() {
        let (a, _) = dev(Profile::Glucose, vec![]);
        let (b, _) = dev(Profile::Glucose, vec![]);
        for k in 1..50 {
            assert_eq!(a.measurement(k).unwrap(), b.measurement(k).unwrap());
            assert!(Profile::Glucose.accepts(a.value_of(k).to_f64()));
        }
    }

    #[tokio::test]
    async fn racp_reports_from_a_sequence_number_and_no_records_past_the_end() {
        let (d, clock) = dev(Profile::Glucose, vec![]);
        let link = d.link();
        let mut notes = link.notifications().await.unwrap();
        link.write(
            RACP,
            &RacpMessage::report_from_sequence(4).encode().unwrap(),
        )
        .await
        .unwrap();
        use futures::StreamExt;
        let mut seqs = Vec::new();
        loop {
            let (ch, b) = notes.next().await.unwrap();
            if ch == RACP {
                assert_eq!(b, vec![0x06, 0x00, 0x01, 0x01]);
                break;
            }
            if ch == 0x2A34 {
                // Each record's context follows it, with its sequence number.
                let ctx = GlucoseContext::decode(&b).unwrap();
                assert_eq!(seqs.last(), Some(&ctx.sequence_number));
                assert!(ctx.meal.is_some());
                continue;
            }
            let m = GlucoseMeasurement::decode(&b).unwrap();
            assert!(m.context_follows);
            seqs.push(m.sequence_number);
        }
        assert_eq!(seqs, vec![4, 5]);
        clock.advance(60_000);
        link.write(
            RACP,
            &RacpMessage::report_from_sequence(7).encode().unwrap(),
        )
        .await
        .unwrap();
        let (ch, b) = notes.next().await.unwrap();
        assert_eq!((ch, b), (RACP, vec![0x06, 0x00, 0x01, 0x06]));
    }
}
