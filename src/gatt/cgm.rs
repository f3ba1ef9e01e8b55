//! Continuous Glucose Monitoring Service 0x181F (CGMS): CGM Measurement 0x2AA7, CGM Feature 0x2AA8,
//! CGM Status 0x2AA9, CGM Session Start Time 0x2AAA, CGM Session Run Time 0x2AAB and the CGM
//! Specific Ops Control Point 0x2AAC. Stored records are fetched with the Record Access Control
//! Point in [`super::racp`].
//!
//! Guarantees: a value decodes only when its length is exactly what its flags or op code allow;
//! reserved flag bits are an error; an E2E-CRC that is present is always checked (a mismatch is
//! [`DecodeError::Crc`], never silently accepted); raw fields are kept, so a decoded value
//! re-encodes to the bytes it came from, its CRC recomputed by `encode`.
//!
//! Interpretations (see `ble-profiles.md` §1 and §8):
//! - **Annunciation octet order.** CGM Measurement flags bit 7 (Status), bit 6 (Cal/Temp) and bit 5
//!   (Warning) announce up to three octets; on the wire they are read in the order **Status,
//!   Cal/Temp, Warning** — the order of the GSS field list (and of the 24-bit CGM Status, byte 0
//!   Status, byte 1 Cal/Temp, byte 2 Warning). The sources disagree: Nordic's Android parser names
//!   the first present octet "warning" and the nRF5 SDK struct lists warning first, but their test
//!   vector has all three octets present and so cannot tell the orders apart, while the GSS-derived
//!   parsers read 0x80, 0x40, 0x20 in that order. We follow GSS, the normative text, and keep the
//!   three octets separately in `fields` so a device that proves otherwise is visible. To be
//!   confirmed against a real sensor.
//! - **E2E-CRC presence.** In a CGM Measurement record the CRC is present exactly when the size
//!   is 2 more than the flags require (size = 6 + optional fields, or that + 2); any other size is
//!   an error. (The size alone cannot tell "6 + CRC" from "6 + trend" if a flags bit flips in
//!   transit; callers that know CGM Feature bit 12 can reject records whose CRC presence
//!   disagrees with it.) In CGM Status, Session Start Time, Session Run Time and SOCP the layout is fixed, so
//!   exactly 2 extra bytes are the CRC; any other length is an error. In CGM Feature the CRC field
//!   is always present: it is checked only when feature bit 12 (E2E-CRC supported) is set;
//!   otherwise the spec says it is 0xFFFF, and whatever it holds is kept raw, not checked.
//! - The CRC is CRC-16/MCRF4XX over every preceding byte of the value (for a measurement record:
//!   of that record, its size byte included), appended little-endian. It is verified before any
//!   field is range-checked, so a corrupted value is reported as a CRC error.
//! - One bad record does not lose the others of a notification: [`decode_records`] splits by the
//!   size bytes and reports each record on its own (it stops at the first size error, after which
//!   record boundaries are unknown). [`GattValue::decode`] fails on the first bad record.
//! - Record readings are `cgm_glucose` in mg/dL. [`GattValue::readings`] gives no device time, as a
//!   record carries only minutes since session start; [`CgmMeasurement::readings_with_session`]
//!   adds the time offset to a complete Session Start Time, giving the sensor's local wall clock.
//!   The start's time zone and DST offset are not applied (device time is the device's wall clock
//!   everywhere in the hub). The specimen is left unset: it is known only from the CGM Feature.
//! - Warning octet bits 0–5 are the sensor's own patient alerts (its configured levels, not ours):
//!   kept in `fields`, no reading flag. Bits 6/7 ("result lower/higher than the device can
//!   process") mean the value is a clamp, flagged so no threshold alert fires on it.
//! - Cal/Temp bit 6 is named "calibration_pending" in `fields` after newer GSS versions; it gives
//!   no reading flag. Reserved annunciation and feature bits are kept raw and ignored.
//! - The Session Start Time zone is in 15-minute units (raw 8 = +120 min), not minutes.
//! - SOCP operands have a fixed length per op code; unknown op codes are out of range. The
//!   request op code and response code of a Response Code (op 28) are kept raw (named in `fields`
//!   when defined), as are the communication interval (0 = off, 0xFF = fastest) and calibration
//!   status bits.

use super::bytes::{bit, check_length, check_reserved_flags, Reader, Writer};
use super::crc::{append_crc, crc16_mcrf4xx};
use super::datetime::{DateTime, DstOffset, TimeZone};
use super::error::{DecodeError, EncodeError};
use super::float::SFloat;
use super::glucose::{location_name, sample_location, specimen, type_name};
use super::names::{Bits, Code};
use super::GattValue;
use crate::model::{
    Decimal, Flag, GlucoseSpecimen, Kind, LocalDateTime, Reading, SampleLocation, Unit,
};
use serde::ser::SerializeStruct;
use serde::Serialize;
use std::collections::BTreeSet;

// ------------------------------------------------------------------------------------------------
// Shared pieces: annunciation octets and the E2E-CRC.

/// Names of the Sensor Status Annunciation "Status" octet bits.
pub const STATUS_OCTET_BITS: [&str; 6] = [
    "session_stopped",
    "device_battery_low",
    "sensor_type_incorrect",
    "sensor_malfunction",
    "device_specific_alert",
    "general_device_fault",
];

/// Names of the "Cal/Temp" octet bits (bit 6 from newer GSS versions).
pub const CAL_TEMP_OCTET_BITS: [&str; 7] = [
    "time_synchronization_required",
    "calibration_not_allowed",
    "calibration_recommended",
    "calibration_required",
    "sensor_temperature_too_high",
    "sensor_temperature_too_low",
    "calibration_pending",
];

/// Names of the "Warning" octet bits.
pub const WARNING_OCTET_BITS: [&str; 8] = [
    "result_lower_than_patient_low_level",
    "result_higher_than_patient_high_level",
    "result_lower_than_hypo_level",
    "result_higher_than_hyper_level",
    "rate_of_decrease_exceeded",
    "rate_of_increase_exceeded",
    "result_lower_than_device_can_process",
    "result_higher_than_device_can_process",
];

const STATUS_OCTET_FLAGS: [Flag; 6] = [
    Flag::CgmSessionStopped,
    Flag::DeviceBatteryLow,
    Flag::CgmSensorTypeIncorrect,
    Flag::SensorMalfunction,
    Flag::CgmDeviceSpecificAlert,
    Flag::GeneralDeviceFault,
];

const CAL_TEMP_OCTET_FLAGS: [Flag; 6] = [
    Flag::CgmTimeSyncRequired,
    Flag::CgmCalibrationNotAllowed,
    Flag::CgmCalibrationRecommended,
    Flag::CgmCalibrationRequired,
    Flag::SensorTemperatureTooHigh,
    Flag::SensorTemperatureTooLow,
];

/// The reading flags of the three annunciation octets (absent octets give none).
pub fn annunciation_flags(
    status: Option<u8>,
    cal_temp: Option<u8>,
    warning: Option<u8>,
) -> BTreeSet<Flag> {
    let mut flags = BTreeSet::new();
    let mut add = |octet: Option<u8>, table: &[Flag]| {
        if let Some(o) = octet {
            for (i, f) in (0u32..).zip(table.iter()) {
                if bit(o.into(), i) {
                    flags.insert(*f);
                }
            }
        }
    };
    add(status, &STATUS_OCTET_FLAGS);
    add(cal_temp, &CAL_TEMP_OCTET_FLAGS);
    if let Some(w) = warning {
        if bit(w.into(), 6) {
            flags.insert(Flag::ResultBelowDeviceRange);
        }
        if bit(w.into(), 7) {
            flags.insert(Flag::ResultAboveDeviceRange);
        }
    }
    flags
}

fn status_bits(raw: u8) -> Bits {
    Bits::new(raw.into(), 8, &STATUS_OCTET_BITS)
}
fn cal_temp_bits(raw: u8) -> Bits {
    Bits::new(raw.into(), 8, &CAL_TEMP_OCTET_BITS)
}
fn warning_bits(raw: u8) -> Bits {
    Bits::new(raw.into(), 8, &WARNING_OCTET_BITS)
}

fn ser_opt_status<S: serde::Serializer>(v: &Option<u8>, s: S) -> Result<S::Ok, S::Error> {
    v.map(status_bits).serialize(s)
}
fn ser_opt_cal_temp<S: serde::Serializer>(v: &Option<u8>, s: S) -> Result<S::Ok, S::Error> {
    v.map(cal_temp_bits).serialize(s)
}
fn ser_opt_warning<S: serde::Serializer>(v: &Option<u8>, s: S) -> Result<S::Ok, S::Error> {
    v.map(warning_bits).serialize(s)
}
fn ser_status<S: serde::Serializer>(v: &u8, s: S) -> Result<S::Ok, S::Error> {
    status_bits(*v).serialize(s)
}
fn ser_cal_temp<S: serde::Serializer>(v: &u8, s: S) -> Result<S::Ok, S::Error> {
    cal_temp_bits(*v).serialize(s)
}
fn ser_warning<S: serde::Serializer>(v: &u8, s: S) -> Result<S::Ok, S::Error> {
    warning_bits(*v).serialize(s)
}

fn type_code(t: u8) -> Code {
    Code {
        code: t.into(),
        name: type_name(t),
    }
}
fn location_code(l: u8) -> Code {
    Code {
        code: l.into(),
        name: location_name(l),
    }
}

/// The first `body_len` bytes of `bytes`, after checking the E2E-CRC that follows them when the
/// value is 2 bytes longer. The caller has checked that the length is `body_len` or `body_len + 2`.
fn checked_body<'a>(
    what: &'static str,
    bytes: &'a [u8],
    body_len: usize,
) -> Result<&'a [u8], DecodeError> {
    let mut r = Reader::new(what, bytes);
    let body = r.take(body_len)?;
    if r.remaining() > 0 {
        let received = r.u16()?;
        let computed = crc16_mcrf4xx(body);
        if received != computed {
            return Err(DecodeError::Crc {
                what,
                received,
                computed,
            });
        }
    }
    r.finish()?;
    Ok(body)
}

/// The finished value, with its E2E-CRC appended when asked.
fn finish(w: Writer, with_crc: bool) -> Vec<u8> {
    let mut v = w.into_vec();
    if with_crc {
        append_crc(&mut v);
    }
    v
}

fn nibbles(what: &'static str, sample_type: u8, location: u8) -> Result<u8, EncodeError> {
    if sample_type > 0x0F || location > 0x0F {
        return Err(EncodeError::Unrepresentable {
            what,
            detail: "type and sample location are 4-bit fields".into(),
        });
    }
    Ok((location << 4) | sample_type)
}

// ------------------------------------------------------------------------------------------------
// CGM Measurement 0x2AA7.

/// One CGM Measurement record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct CgmRecord {
    /// CGM Glucose Concentration, mg/dL.
    pub glucose_mg_dl: SFloat,
    /// Minutes since the session start.
    pub time_offset_min: u16,
    /// Flag bit 7: Sensor Status Annunciation, Status octet.
    #[serde(serialize_with = "ser_opt_status")]
    pub status_octet: Option<u8>,
    /// Flag bit 6: Cal/Temp octet.
    #[serde(serialize_with = "ser_opt_cal_temp")]
    pub cal_temp_octet: Option<u8>,
    /// Flag bit 5: Warning octet.
    #[serde(serialize_with = "ser_opt_warning")]
    pub warning_octet: Option<u8>,
    /// Flag bit 0: CGM Trend Information, mg/dL/min.
    pub trend_mg_dl_min: Option<SFloat>,
    /// Flag bit 1: CGM Quality, percent.
    pub quality_pct: Option<SFloat>,
    /// The record carries an E2E-CRC (checked on decode, computed by encode).
    pub e2e_crc: bool,
}

impl CgmRecord {
    /// Size of the record without its E2E-CRC, from its optional fields.
    fn size_without_crc(flags: u8) -> usize {
        let f = u32::from(flags);
        6 + [(7, 1), (6, 1), (5, 1), (0, 2), (1, 2)]
            .iter()
            .map(|&(b, n)| if bit(f, b) { n } else { 0 })
            .sum::<usize>()
    }

    fn flags(&self) -> u8 {
        let mut flags = 0u8;
        if self.trend_mg_dl_min.is_some() {
            flags |= 0x01;
        }
        if self.quality_pct.is_some() {
            flags |= 0x02;
        }
        if self.warning_octet.is_some() {
            flags |= 0x20;
        }
        if self.cal_temp_octet.is_some() {
            flags |= 0x40;
        }
        if self.status_octet.is_some() {
            flags |= 0x80;
        }
        flags
    }

    /// Decode one record: `rec` is exactly the `size` bytes its size byte announced.
    fn decode_one(rec: &[u8], offset: usize) -> Result<Self, DecodeError> {
        let what = CgmMeasurement::WHAT;
        let mut r = Reader::new(what, rec);
        let size = r.u8()?;
        let flags = r.u8()?;
        // CGMS 0x2AA7 flags: bits 2..4 reserved.
        check_reserved_flags(what, flags, 0x1C)?;
        let need = Self::size_without_crc(flags);
        let size = usize::from(size);
        if size != need && size != need + 2 {
            return Err(DecodeError::malformed(
                what,
                format!(
                    "record at byte {offset}: size {size} does not match flags 0x{flags:02X} \
                     (they require {need}, or {} with E2E-CRC)",
                    need + 2
                ),
            ));
        }
        let body = checked_body(what, rec, need)?;
        let mut r = Reader::new(what, body);
        r.take(2)?; // size and flags, read above
        let glucose_mg_dl = r.sfloat()?;
        let time_offset_min = r.u16()?;
        let f = u32::from(flags);
        // GSS order: Status, Cal/Temp, Warning (see the module note).
        let status_octet = if bit(f, 7) { Some(r.u8()?) } else { None };
        let cal_temp_octet = if bit(f, 6) { Some(r.u8()?) } else { None };
        let warning_octet = if bit(f, 5) { Some(r.u8()?) } else { None };
        let trend_mg_dl_min = if bit(f, 0) { Some(r.sfloat()?) } else { None };
        let quality_pct = if bit(f, 1) { Some(r.sfloat()?) } else { None };
        r.finish()?;
        Ok(CgmRecord {
            glucose_mg_dl,
            time_offset_min,
            status_octet,
            cal_temp_octet,
            warning_octet,
            trend_mg_dl_min,
            quality_pct,
            e2e_crc: size == need + 2,
        })
    }

    fn write(&self, out: &mut Vec<u8>) {
        let flags = self.flags();
        let size = Self::size_without_crc(flags) + if self.e2e_crc { 2 } else { 0 };
        let mut w = Writer::new();
        // At most 17 bytes, so the size always fits its octet.
        w.u8(size as u8)
            .u8(flags)
            .sfloat(self.glucose_mg_dl)
            .u16(self.time_offset_min);
        for o in [self.status_octet, self.cal_temp_octet, self.warning_octet]
            .into_iter()
            .flatten()
        {
            w.u8(o);
        }
        for v in [self.trend_mg_dl_min, self.quality_pct]
            .into_iter()
            .flatten()
        {
            w.sfloat(v);
        }
        out.extend_from_slice(&finish(w, self.e2e_crc));
    }

    /// The reading flags of the record's annunciation octets.
    pub fn reading_flags(&self) -> BTreeSet<Flag> {
        annunciation_flags(self.status_octet, self.cal_temp_octet, self.warning_octet)
    }

    /// The record's `cgm_glucose` reading; with a complete session start, its device time is the
    /// start plus the time offset.
    pub fn reading(&self, start: Option<&SessionStartTime>) -> Reading {
        let mut r = Reading::new(Kind::CgmGlucose, self.glucose_mg_dl.value(), Unit::MgPerDl);
        r.device_time = start
            .and_then(|s| s.start.to_local())
            .and_then(|t| t.add_minutes(self.time_offset_min.into()).ok());
        r.flags = self.reading_flags();
        r
    }
}

/// Split a CGM Measurement notification into its records, each decoded on its own: a record with
/// bad flags or a bad CRC is an `Err` among the good ones. A size byte below 6 or running past the
/// end is the last entry, as later record boundaries are then unknown. An empty payload gives a
/// single [`DecodeError::Empty`].
pub fn decode_records(bytes: &[u8]) -> Vec<Result<CgmRecord, DecodeError>> {
    let what = CgmMeasurement::WHAT;
    if bytes.is_empty() {
        return vec![Err(DecodeError::Empty { what })];
    }
    let mut out = Vec::new();
    let mut r = Reader::new(what, bytes);
    while let Some(&size) = r.rest().first() {
        let offset = r.position();
        if size < 6 {
            out.push(Err(DecodeError::malformed(
                what,
                format!("record at byte {offset}: size {size} is below the 6-byte minimum"),
            )));
            break;
        }
        match r.take(size.into()) {
            Ok(rec) => out.push(CgmRecord::decode_one(rec, offset)),
            Err(_) => {
                out.push(Err(DecodeError::malformed(
                    what,
                    format!(
                        "record at byte {offset}: size {size} runs past the end of the {}-byte value",
                        bytes.len()
                    ),
                )));
                break;
            }
        }
    }
    out
}

/// CGM Measurement 0x2AA7: one or more records.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct CgmMeasurement {
    pub records: Vec<CgmRecord>,
}

impl CgmMeasurement {
    pub const WHAT: &'static str = <Self as GattValue>::NAME;

    /// One `cgm_glucose` reading per record, timed from the session start when it is complete.
    pub fn readings_with_session(&self, start: Option<&SessionStartTime>) -> Vec<Reading> {
        self.records.iter().map(|r| r.reading(start)).collect()
    }
}

impl GattValue for CgmMeasurement {
    const UUID: u16 = 0x2AA7;
    const NAME: &'static str = "cgm-measurement";

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let records = decode_records(bytes)
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CgmMeasurement { records })
    }

    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        if self.records.is_empty() {
            return Err(EncodeError::Unrepresentable {
                what: Self::WHAT,
                detail: "a CGM Measurement carries at least one record".into(),
            });
        }
        let mut out = Vec::new();
        for rec in &self.records {
            rec.write(&mut out);
        }
        Ok(out)
    }

    fn readings(&self) -> Vec<Reading> {
        self.readings_with_session(None)
    }
}

// ------------------------------------------------------------------------------------------------
// CGM Feature 0x2AA8.

/// Names of the CGM Feature bits (u24; bits 17–23 reserved).
pub const FEATURE_BITS: [&str; 17] = [
    "calibration_supported",
    "patient_high_low_alerts_supported",
    "hypo_alerts_supported",
    "hyper_alerts_supported",
    "rate_of_increase_decrease_alerts_supported",
    "device_specific_alert_supported",
    "sensor_malfunction_detection_supported",
    "sensor_temperature_high_low_detection_supported",
    "sensor_result_high_low_detection_supported",
    "low_battery_detection_supported",
    "sensor_type_error_detection_supported",
    "general_device_fault_supported",
    "e2e_crc_supported",
    "multiple_bond_supported",
    "multiple_sessions_supported",
    "cgm_trend_information_supported",
    "cgm_quality_supported",
];

/// CGM Feature bit 12: the sensor protects its values (and requires our writes) with an E2E-CRC.
pub const FEATURE_E2E_CRC: u32 = 12;

fn ser_features<S: serde::Serializer>(v: &u32, s: S) -> Result<S::Ok, S::Error> {
    Bits::new(*v, 24, &FEATURE_BITS).serialize(s)
}
fn ser_type<S: serde::Serializer>(v: &u8, s: S) -> Result<S::Ok, S::Error> {
    type_code(*v).serialize(s)
}
fn ser_location<S: serde::Serializer>(v: &u8, s: S) -> Result<S::Ok, S::Error> {
    location_code(*v).serialize(s)
}

/// CGM Feature 0x2AA8: `features u24 | type/location u8 | E2E-CRC u16` (the CRC field is always
/// present).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct CgmFeature {
    /// Feature bits (24 bits; reserved bits kept).
    #[serde(serialize_with = "ser_features")]
    pub features: u32,
    /// Type nibble (low nibble of the octet).
    #[serde(serialize_with = "ser_type")]
    pub sample_type: u8,
    /// Sample Location nibble (high nibble).
    #[serde(serialize_with = "ser_location")]
    pub sample_location: u8,
    /// The CRC field as received when feature bit 12 is clear (0xFFFF per spec, kept raw and not
    /// checked). `None` when bit 12 is set: the CRC was checked and `encode` computes it.
    pub unchecked_crc_field: Option<u16>,
}

impl CgmFeature {
    pub const WHAT: &'static str = <Self as GattValue>::NAME;

    /// A feature value as a sensor sends it: the CRC computed when bit 12 is set, else 0xFFFF.
    pub fn new(features: u32, sample_type: u8, sample_location: u8) -> Self {
        CgmFeature {
            features,
            sample_type,
            sample_location,
            unchecked_crc_field: (!bit(features, FEATURE_E2E_CRC)).then_some(0xFFFF),
        }
    }

    /// Whether feature bit `n` is set.
    pub fn has(&self, n: u32) -> bool {
        bit(self.features, n)
    }

    /// Whether the sensor uses E2E-CRC: the hub's SOCP and Session Start Time writes must carry one.
    pub fn e2e_crc_supported(&self) -> bool {
        self.has(FEATURE_E2E_CRC)
    }

    pub fn specimen(&self) -> Option<GlucoseSpecimen> {
        specimen(self.sample_type)
    }

    pub fn location(&self) -> Option<SampleLocation> {
        sample_location(self.sample_location)
    }
}

impl GattValue for CgmFeature {
    const UUID: u16 = 0x2AA8;
    const NAME: &'static str = "cgm-feature";

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let what = Self::WHAT;
        check_length(what, "6", bytes.len() == 6, bytes.len())?;
        let mut r = Reader::new(what, bytes);
        let features = r.u24()?;
        let tl = r.u8()?;
        let unchecked_crc_field = if bit(features, FEATURE_E2E_CRC) {
            checked_body(what, bytes, 4)?;
            r.u16()?;
            None
        } else {
            Some(r.u16()?)
        };
        r.finish()?;
        Ok(CgmFeature {
            features,
            sample_type: tl & 0x0F,
            sample_location: tl >> 4,
            unchecked_crc_field,
        })
    }

    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        if self.features > 0x00FF_FFFF {
            return Err(EncodeError::Unrepresentable {
                what: Self::WHAT,
                detail: format!("features 0x{:X} do not fit 24 bits", self.features),
            });
        }
        let mut w = Writer::new();
        w.u24(self.features)
            .u8(nibbles(Self::WHAT, self.sample_type, self.sample_location)?);
        Ok(if self.e2e_crc_supported() {
            finish(w, true)
        } else {
            w.u16(self.unchecked_crc_field.unwrap_or(0xFFFF));
            w.into_vec()
        })
    }
}

// ------------------------------------------------------------------------------------------------
// CGM Status 0x2AA9.

/// CGM Status 0x2AA9: `time offset u16 | status u24 | [E2E-CRC]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct CgmStatus {
    /// Minutes since the session start.
    pub time_offset_min: u16,
    /// Status byte 0.
    #[serde(serialize_with = "ser_status")]
    pub status_octet: u8,
    /// Status byte 1.
    #[serde(serialize_with = "ser_cal_temp")]
    pub cal_temp_octet: u8,
    /// Status byte 2.
    #[serde(serialize_with = "ser_warning")]
    pub warning_octet: u8,
    pub e2e_crc: bool,
}

impl CgmStatus {
    pub const WHAT: &'static str = <Self as GattValue>::NAME;

    /// The 24-bit status as on the wire (byte 0 Status, byte 1 Cal/Temp, byte 2 Warning).
    pub fn status_u24(&self) -> u32 {
        u32::from_le_bytes([
            self.status_octet,
            self.cal_temp_octet,
            self.warning_octet,
            0,
        ])
    }

    /// The reading flags the status octets map to.
    pub fn flags(&self) -> BTreeSet<Flag> {
        annunciation_flags(
            Some(self.status_octet),
            Some(self.cal_temp_octet),
            Some(self.warning_octet),
        )
    }
}

impl GattValue for CgmStatus {
    const UUID: u16 = 0x2AA9;
    const NAME: &'static str = "cgm-status";

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let what = Self::WHAT;
        let n = bytes.len();
        check_length(what, "5, or 7 with E2E-CRC", n == 5 || n == 7, n)?;
        let body = checked_body(what, bytes, 5)?;
        let mut r = Reader::new(what, body);
        let time_offset_min = r.u16()?;
        let status_octet = r.u8()?;
        let cal_temp_octet = r.u8()?;
        let warning_octet = r.u8()?;
        r.finish()?;
        Ok(CgmStatus {
            time_offset_min,
            status_octet,
            cal_temp_octet,
            warning_octet,
            e2e_crc: n == 7,
        })
    }

    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut w = Writer::new();
        w.u16(self.time_offset_min)
            .u8(self.status_octet)
            .u8(self.cal_temp_octet)
            .u8(self.warning_octet);
        Ok(finish(w, self.e2e_crc))
    }
}

// ------------------------------------------------------------------------------------------------
// CGM Session Start Time 0x2AAA.

/// CGM Session Start Time 0x2AAA: `Date Time | time zone s8 | DST offset u8 | [E2E-CRC]`. The hub
/// writes it after Start Session; record times are this wall clock plus their time offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionStartTime {
    /// The sensor's local wall clock at the session start (fields may be 0 = unknown).
    pub start: DateTime,
    /// 15-minute units.
    pub time_zone: TimeZone,
    pub dst_offset: DstOffset,
    pub e2e_crc: bool,
}

impl Serialize for SessionStartTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("SessionStartTime", 6)?;
        st.serialize_field("start", &self.start)?;
        st.serialize_field("time_zone_raw", &self.time_zone.0)?;
        st.serialize_field("time_zone_min", &self.time_zone.minutes())?;
        st.serialize_field("dst_raw", &self.dst_offset.0)?;
        st.serialize_field("dst_min", &self.dst_offset.minutes())?;
        st.serialize_field("e2e_crc", &self.e2e_crc)?;
        st.end()
    }
}

impl SessionStartTime {
    pub const WHAT: &'static str = <Self as GattValue>::NAME;

    /// The value the hub writes after starting a session: the local wall clock, zone and DST,
    /// with an E2E-CRC when the sensor supports it.
    pub fn new(
        start: LocalDateTime,
        time_zone: TimeZone,
        dst_offset: DstOffset,
        with_crc: bool,
    ) -> Self {
        SessionStartTime {
            start: DateTime::from_local(start),
            time_zone,
            dst_offset,
            e2e_crc: with_crc,
        }
    }
}

impl GattValue for SessionStartTime {
    const UUID: u16 = 0x2AAA;
    const NAME: &'static str = "cgm-session-start-time";

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let what = Self::WHAT;
        let n = bytes.len();
        check_length(what, "9, or 11 with E2E-CRC", n == 9 || n == 11, n)?;
        let body = checked_body(what, bytes, 9)?;
        let mut r = Reader::new(what, body);
        let start = DateTime::read(&mut r)?;
        let time_zone = TimeZone::read(&mut r)?;
        let dst_offset = DstOffset::read(&mut r)?;
        r.finish()?;
        Ok(SessionStartTime {
            start,
            time_zone,
            dst_offset,
            e2e_crc: n == 11,
        })
    }

    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let tz = self.time_zone.0;
        if tz != -128 && !(-48..=56).contains(&tz) {
            return Err(EncodeError::Unrepresentable {
                what: Self::WHAT,
                detail: format!(
                    "time zone {tz} is outside -48..=56 (15-minute units) and not -128"
                ),
            });
        }
        if !matches!(self.dst_offset.0, 0 | 2 | 4 | 8 | 255) {
            return Err(EncodeError::Unrepresentable {
                what: Self::WHAT,
                detail: format!("DST offset {} is not 0, 2, 4, 8 or 255", self.dst_offset.0),
            });
        }
        let mut w = Writer::new();
        self.start.write(&mut w);
        w.i8(tz).u8(self.dst_offset.0);
        Ok(finish(w, self.e2e_crc))
    }
}

// ------------------------------------------------------------------------------------------------
// CGM Session Run Time 0x2AAB.

/// CGM Session Run Time 0x2AAB: the expected run time of the session, `u16 hours | [E2E-CRC]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct SessionRunTime {
    pub run_time_h: u16,
    pub e2e_crc: bool,
}

impl SessionRunTime {
    pub const WHAT: &'static str = <Self as GattValue>::NAME;
}

impl GattValue for SessionRunTime {
    const UUID: u16 = 0x2AAB;
    const NAME: &'static str = "cgm-session-run-time";

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let what = Self::WHAT;
        let n = bytes.len();
        check_length(what, "2, or 4 with E2E-CRC", n == 2 || n == 4, n)?;
        let body = checked_body(what, bytes, 2)?;
        let run_time_h = Reader::new(what, body).u16()?;
        Ok(SessionRunTime {
            run_time_h,
            e2e_crc: n == 4,
        })
    }

    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut w = Writer::new();
        w.u16(self.run_time_h);
        Ok(finish(w, self.e2e_crc))
    }
}

// ------------------------------------------------------------------------------------------------
// CGM Specific Ops Control Point 0x2AAC.

/// SOCP op codes.
pub mod op {
    pub const SET_COMMUNICATION_INTERVAL: u8 = 1;
    pub const GET_COMMUNICATION_INTERVAL: u8 = 2;
    pub const COMMUNICATION_INTERVAL_RESPONSE: u8 = 3;
    pub const SET_CALIBRATION_VALUE: u8 = 4;
    pub const GET_CALIBRATION_VALUE: u8 = 5;
    pub const CALIBRATION_VALUE_RESPONSE: u8 = 6;
    /// 7..=24: set / get / response for each alert level, in [`super::AlertLevel`] order.
    pub const FIRST_ALERT_LEVEL: u8 = 7;
    pub const LAST_ALERT_LEVEL: u8 = 24;
    pub const RESET_DEVICE_SPECIFIC_ALERT: u8 = 25;
    pub const START_SESSION: u8 = 26;
    pub const STOP_SESSION: u8 = 27;
    pub const RESPONSE_CODE: u8 = 28;
}

/// SOCP response codes (operand of op code 28).
pub mod response {
    pub const SUCCESS: u8 = 1;
    pub const OP_CODE_NOT_SUPPORTED: u8 = 2;
    pub const INVALID_OPERAND: u8 = 3;
    pub const PROCEDURE_NOT_COMPLETED: u8 = 4;
    pub const PARAMETER_OUT_OF_RANGE: u8 = 5;
}

pub fn response_name(code: u8) -> Option<&'static str> {
    Some(match code {
        1 => "success",
        2 => "op_code_not_supported",
        3 => "invalid_operand",
        4 => "procedure_not_completed",
        5 => "parameter_out_of_range",
        _ => return None,
    })
}

/// The alert levels a sensor keeps, in op-code order (each takes three op codes from 7 on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertLevel {
    PatientHigh,
    PatientLow,
    Hypo,
    Hyper,
    RateOfDecrease,
    RateOfIncrease,
}

impl AlertLevel {
    pub const ALL: [AlertLevel; 6] = [
        AlertLevel::PatientHigh,
        AlertLevel::PatientLow,
        AlertLevel::Hypo,
        AlertLevel::Hyper,
        AlertLevel::RateOfDecrease,
        AlertLevel::RateOfIncrease,
    ];

    /// The op code of "set" (get is +1, response +2).
    pub fn set_op_code(&self) -> u8 {
        op::FIRST_ALERT_LEVEL
            + 3 * match self {
                AlertLevel::PatientHigh => 0,
                AlertLevel::PatientLow => 1,
                AlertLevel::Hypo => 2,
                AlertLevel::Hyper => 3,
                AlertLevel::RateOfDecrease => 4,
                AlertLevel::RateOfIncrease => 5,
            }
    }

    /// The unit of the level: mg/dL, or mg/dL/min for the rate alerts.
    pub fn unit(&self) -> &'static str {
        match self {
            AlertLevel::RateOfDecrease | AlertLevel::RateOfIncrease => "mg/dL/min",
            _ => "mg/dL",
        }
    }

    /// `(level, 0 set / 1 get / 2 response)` for op codes 7..=24.
    fn from_op_code(code: u8) -> Option<(AlertLevel, u8)> {
        let i = code.checked_sub(op::FIRST_ALERT_LEVEL)?;
        let level = AlertLevel::ALL.get(usize::from(i / 3)).copied()?;
        Some((level, i % 3))
    }
}

/// Names of the calibration status bits.
pub const CALIBRATION_STATUS_BITS: [&str; 3] = [
    "calibration_data_rejected",
    "calibration_data_out_of_range",
    "calibration_process_pending",
];

/// A CGM calibration record (operand of op codes 4 and 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CalibrationRecord {
    /// Calibration glucose concentration, mg/dL.
    pub glucose_mg_dl: SFloat,
    /// Minutes since session start.
    pub calibration_time_min: u16,
    /// Type nibble (low nibble).
    pub sample_type: u8,
    /// Sample Location nibble (high nibble).
    pub sample_location: u8,
    /// Minutes since session start.
    pub next_calibration_time_min: u16,
    pub record_number: u16,
    /// Bits 0 rejected, 1 out of range, 2 process pending; others reserved, kept.
    pub status: u8,
}

impl CalibrationRecord {
    const LEN: usize = 10;

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let glucose_mg_dl = r.sfloat()?;
        let calibration_time_min = r.u16()?;
        let tl = r.u8()?;
        Ok(CalibrationRecord {
            glucose_mg_dl,
            calibration_time_min,
            sample_type: tl & 0x0F,
            sample_location: tl >> 4,
            next_calibration_time_min: r.u16()?,
            record_number: r.u16()?,
            status: r.u8()?,
        })
    }

    fn write(&self, w: &mut Writer) -> Result<(), EncodeError> {
        let tl = nibbles(SocpMessage::WHAT, self.sample_type, self.sample_location)?;
        w.sfloat(self.glucose_mg_dl)
            .u16(self.calibration_time_min)
            .u8(tl)
            .u16(self.next_calibration_time_min)
            .u16(self.record_number)
            .u8(self.status);
        Ok(())
    }
}

impl Serialize for CalibrationRecord {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("CalibrationRecord", 7)?;
        st.serialize_field("glucose_mg_dl", &self.glucose_mg_dl)?;
        st.serialize_field("calibration_time_min", &self.calibration_time_min)?;
        st.serialize_field("type", &type_code(self.sample_type))?;
        st.serialize_field("sample_location", &location_code(self.sample_location))?;
        st.serialize_field("next_calibration_time_min", &self.next_calibration_time_min)?;
        st.serialize_field("record_number", &self.record_number)?;
        st.serialize_field(
            "status",
            &Bits::new(self.status.into(), 8, &CALIBRATION_STATUS_BITS),
        )?;
        st.end()
    }
}

/// A SOCP operation with its operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SocpOp {
    /// Op 1: minutes (0 = off, 0xFF = fastest).
    SetCommunicationInterval(u8),
    /// Op 2.
    GetCommunicationInterval,
    /// Op 3: minutes.
    CommunicationIntervalResponse(u8),
    /// Op 4.
    SetCalibrationValue(CalibrationRecord),
    /// Op 5: calibration record number.
    GetCalibrationValue(u16),
    /// Op 6.
    CalibrationValueResponse(CalibrationRecord),
    /// Ops 7, 10, 13, 16, 19, 22.
    SetAlertLevel(AlertLevel, SFloat),
    /// Ops 8, 11, 14, 17, 20, 23.
    GetAlertLevel(AlertLevel),
    /// Ops 9, 12, 15, 18, 21, 24.
    AlertLevelResponse(AlertLevel, SFloat),
    /// Op 25.
    ResetDeviceSpecificAlert,
    /// Op 26.
    StartSession,
    /// Op 27.
    StopSession,
    /// Op 28: the outcome of a request (both kept raw).
    Response {
        request_op_code: u8,
        response_code: u8,
    },
}

impl SocpOp {
    pub fn op_code(&self) -> u8 {
        match self {
            SocpOp::SetCommunicationInterval(_) => op::SET_COMMUNICATION_INTERVAL,
            SocpOp::GetCommunicationInterval => op::GET_COMMUNICATION_INTERVAL,
            SocpOp::CommunicationIntervalResponse(_) => op::COMMUNICATION_INTERVAL_RESPONSE,
            SocpOp::SetCalibrationValue(_) => op::SET_CALIBRATION_VALUE,
            SocpOp::GetCalibrationValue(_) => op::GET_CALIBRATION_VALUE,
            SocpOp::CalibrationValueResponse(_) => op::CALIBRATION_VALUE_RESPONSE,
            SocpOp::SetAlertLevel(l, _) => l.set_op_code(),
            SocpOp::GetAlertLevel(l) => l.set_op_code() + 1,
            SocpOp::AlertLevelResponse(l, _) => l.set_op_code() + 2,
            SocpOp::ResetDeviceSpecificAlert => op::RESET_DEVICE_SPECIFIC_ALERT,
            SocpOp::StartSession => op::START_SESSION,
            SocpOp::StopSession => op::STOP_SESSION,
            SocpOp::Response { .. } => op::RESPONSE_CODE,
        }
    }
}

/// The operand length of a known op code and the lengths to print when a value does not match.
fn operand_len(code: u8) -> Option<(usize, &'static str)> {
    const NONE: (usize, &str) = (0, "1, or 3 with E2E-CRC, for this op code");
    const ONE: (usize, &str) = (1, "2, or 4 with E2E-CRC, for this op code");
    const TWO: (usize, &str) = (2, "3, or 5 with E2E-CRC, for this op code");
    const CAL: (usize, &str) = (
        CalibrationRecord::LEN,
        "11, or 13 with E2E-CRC, for this op code",
    );
    Some(match code {
        op::SET_COMMUNICATION_INTERVAL | op::COMMUNICATION_INTERVAL_RESPONSE => ONE,
        op::GET_COMMUNICATION_INTERVAL => NONE,
        op::SET_CALIBRATION_VALUE | op::CALIBRATION_VALUE_RESPONSE => CAL,
        op::GET_CALIBRATION_VALUE => TWO,
        op::FIRST_ALERT_LEVEL..=op::LAST_ALERT_LEVEL => match AlertLevel::from_op_code(code)?.1 {
            1 => NONE,
            _ => TWO,
        },
        op::RESET_DEVICE_SPECIFIC_ALERT | op::START_SESSION | op::STOP_SESSION => NONE,
        op::RESPONSE_CODE => TWO,
        _ => return None,
    })
}

/// The spec name of a SOCP op code.
pub fn op_name(code: u8) -> Option<&'static str> {
    Some(match code {
        op::SET_COMMUNICATION_INTERVAL => "set_cgm_communication_interval",
        op::GET_COMMUNICATION_INTERVAL => "get_cgm_communication_interval",
        op::COMMUNICATION_INTERVAL_RESPONSE => "cgm_communication_interval_response",
        op::SET_CALIBRATION_VALUE => "set_glucose_calibration_value",
        op::GET_CALIBRATION_VALUE => "get_glucose_calibration_value",
        op::CALIBRATION_VALUE_RESPONSE => "glucose_calibration_value_response",
        7 => "set_patient_high_alert_level",
        8 => "get_patient_high_alert_level",
        9 => "patient_high_alert_level_response",
        10 => "set_patient_low_alert_level",
        11 => "get_patient_low_alert_level",
        12 => "patient_low_alert_level_response",
        13 => "set_hypo_alert_level",
        14 => "get_hypo_alert_level",
        15 => "hypo_alert_level_response",
        16 => "set_hyper_alert_level",
        17 => "get_hyper_alert_level",
        18 => "hyper_alert_level_response",
        19 => "set_rate_of_decrease_alert_level",
        20 => "get_rate_of_decrease_alert_level",
        21 => "rate_of_decrease_alert_level_response",
        22 => "set_rate_of_increase_alert_level",
        23 => "get_rate_of_increase_alert_level",
        24 => "rate_of_increase_alert_level_response",
        op::RESET_DEVICE_SPECIFIC_ALERT => "reset_device_specific_alert",
        op::START_SESSION => "start_session",
        op::STOP_SESSION => "stop_session",
        op::RESPONSE_CODE => "response_code",
        _ => return None,
    })
}

/// CGM Specific Ops Control Point 0x2AAC, either direction: `op code | operand | [E2E-CRC]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SocpMessage {
    pub op: SocpOp,
    /// The value carries an E2E-CRC (checked on decode, computed by encode). Writes to a sensor
    /// with CGM Feature bit 12 set must carry one.
    pub e2e_crc: bool,
}

impl Serialize for SocpMessage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("SocpMessage", 5)?;
        let code = self.op.op_code();
        st.serialize_field(
            "op_code",
            &Code {
                code: code.into(),
                name: op_name(code),
            },
        )?;
        match &self.op {
            SocpOp::SetCommunicationInterval(m) | SocpOp::CommunicationIntervalResponse(m) => {
                st.serialize_field("communication_interval_min", m)?;
            }
            SocpOp::SetCalibrationValue(c) | SocpOp::CalibrationValueResponse(c) => {
                st.serialize_field("calibration", c)?;
            }
            SocpOp::GetCalibrationValue(n) => st.serialize_field("record_number", n)?,
            SocpOp::SetAlertLevel(l, v) | SocpOp::AlertLevelResponse(l, v) => {
                st.serialize_field("alert", l)?;
                st.serialize_field("level", v)?;
                st.serialize_field("unit", l.unit())?;
            }
            SocpOp::GetAlertLevel(l) => st.serialize_field("alert", l)?,
            SocpOp::Response {
                request_op_code,
                response_code,
            } => {
                st.serialize_field(
                    "request_op_code",
                    &Code {
                        code: (*request_op_code).into(),
                        name: op_name(*request_op_code),
                    },
                )?;
                st.serialize_field(
                    "response_code",
                    &Code {
                        code: (*response_code).into(),
                        name: response_name(*response_code),
                    },
                )?;
            }
            SocpOp::GetCommunicationInterval
            | SocpOp::ResetDeviceSpecificAlert
            | SocpOp::StartSession
            | SocpOp::StopSession => {}
        }
        st.serialize_field("e2e_crc", &self.e2e_crc)?;
        st.end()
    }
}

impl SocpMessage {
    pub const WHAT: &'static str = <Self as GattValue>::NAME;

    pub fn new(op: SocpOp, with_crc: bool) -> Self {
        SocpMessage {
            op,
            e2e_crc: with_crc,
        }
    }

    /// `1a`: start a session (then write the Session Start Time).
    pub fn start_session(with_crc: bool) -> Self {
        Self::new(SocpOp::StartSession, with_crc)
    }

    /// `1b`: stop the session.
    pub fn stop_session(with_crc: bool) -> Self {
        Self::new(SocpOp::StopSession, with_crc)
    }

    /// `01 <min>`: set the communication interval.
    pub fn set_communication_interval(minutes: u8, with_crc: bool) -> Self {
        Self::new(SocpOp::SetCommunicationInterval(minutes), with_crc)
    }

    /// `02`: ask for the communication interval.
    pub fn get_communication_interval(with_crc: bool) -> Self {
        Self::new(SocpOp::GetCommunicationInterval, with_crc)
    }

    /// `04 <record>`: send a calibration value.
    pub fn set_calibration_value(record: CalibrationRecord, with_crc: bool) -> Self {
        Self::new(SocpOp::SetCalibrationValue(record), with_crc)
    }

    /// `05 <n>`: ask for calibration record `n` (0xFFFF = the last one).
    pub fn get_calibration_value(record_number: u16, with_crc: bool) -> Self {
        Self::new(SocpOp::GetCalibrationValue(record_number), with_crc)
    }

    /// Set an alert level (mg/dL, or mg/dL/min for the rate alerts); fails when the value has no
    /// exact SFLOAT encoding.
    pub fn set_alert_level(
        level: AlertLevel,
        value: Decimal,
        with_crc: bool,
    ) -> Result<Self, EncodeError> {
        Ok(Self::new(
            SocpOp::SetAlertLevel(level, SFloat::from_decimal(value)?),
            with_crc,
        ))
    }

    /// Ask for an alert level.
    pub fn get_alert_level(level: AlertLevel, with_crc: bool) -> Self {
        Self::new(SocpOp::GetAlertLevel(level), with_crc)
    }

    /// `19`: reset the device specific alert.
    pub fn reset_device_specific_alert(with_crc: bool) -> Self {
        Self::new(SocpOp::ResetDeviceSpecificAlert, with_crc)
    }
}

impl GattValue for SocpMessage {
    const UUID: u16 = 0x2AAC;
    const NAME: &'static str = "cgm-specific-ops-control-point";

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let what = Self::WHAT;
        let code = *bytes.first().ok_or(DecodeError::Empty { what })?;
        let (len, need) = operand_len(code).ok_or(DecodeError::OutOfRange {
            what,
            field: "op code",
            value: code.into(),
            allowed: "1..=28",
        })?;
        let n = bytes.len();
        check_length(what, need, n == 1 + len || n == 3 + len, n)?;
        let body = checked_body(what, bytes, 1 + len)?;
        let mut r = Reader::new(what, body);
        r.u8()?;
        let op = match code {
            op::SET_COMMUNICATION_INTERVAL => SocpOp::SetCommunicationInterval(r.u8()?),
            op::GET_COMMUNICATION_INTERVAL => SocpOp::GetCommunicationInterval,
            op::COMMUNICATION_INTERVAL_RESPONSE => SocpOp::CommunicationIntervalResponse(r.u8()?),
            op::SET_CALIBRATION_VALUE => {
                SocpOp::SetCalibrationValue(CalibrationRecord::read(&mut r)?)
            }
            op::GET_CALIBRATION_VALUE => SocpOp::GetCalibrationValue(r.u16()?),
            op::CALIBRATION_VALUE_RESPONSE => {
                SocpOp::CalibrationValueResponse(CalibrationRecord::read(&mut r)?)
            }
            op::RESET_DEVICE_SPECIFIC_ALERT => SocpOp::ResetDeviceSpecificAlert,
            op::START_SESSION => SocpOp::StartSession,
            op::STOP_SESSION => SocpOp::StopSession,
            op::RESPONSE_CODE => SocpOp::Response {
                request_op_code: r.u8()?,
                response_code: r.u8()?,
            },
            _ => match AlertLevel::from_op_code(code) {
                Some((level, 0)) => SocpOp::SetAlertLevel(level, r.sfloat()?),
                Some((level, 1)) => SocpOp::GetAlertLevel(level),
                Some((level, _)) => SocpOp::AlertLevelResponse(level, r.sfloat()?),
                // operand_len accepted only known op codes.
                None => {
                    return Err(DecodeError::OutOfRange {
                        what,
                        field: "op code",
                        value: code.into(),
                        allowed: "1..=28",
                    })
                }
            },
        };
        r.finish()?;
        Ok(SocpMessage {
            op,
            e2e_crc: n == 3 + len,
        })
    }

    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut w = Writer::new();
        w.u8(self.op.op_code());
        match &self.op {
            SocpOp::SetCommunicationInterval(m) | SocpOp::CommunicationIntervalResponse(m) => {
                w.u8(*m);
            }
            SocpOp::SetCalibrationValue(c) | SocpOp::CalibrationValueResponse(c) => {
                c.write(&mut w)?;
            }
            SocpOp::GetCalibrationValue(n) => {
                w.u16(*n);
            }
            SocpOp::SetAlertLevel(_, v) | SocpOp::AlertLevelResponse(_, v) => {
                w.sfloat(*v);
            }
            SocpOp::Response {
                request_op_code,
                response_code,
            } => {
                w.u8(*request_op_code).u8(*response_code);
            }
            SocpOp::GetCommunicationInterval
            | SocpOp::GetAlertLevel(_)
            | SocpOp::ResetDeviceSpecificAlert
            | SocpOp::StartSession
            | SocpOp::StopSession => {}
        }
        Ok(finish(w, self.e2e_crc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gatt::testing::{config, date_time, sfloat};
    use crate::model::{Special, Value};
    use proptest::prelude::*;

    fn crc(mut b: Vec<u8>) -> Vec<u8> {
        append_crc(&mut b);
        b
    }

    fn num(m: i64, e: i16) -> Value {
        Value::Number(Decimal::new(m, e))
    }

    /// A record for `flags` built by hand (not by the encoder), with a CRC when asked.
    fn record_bytes(flags: u8, with_crc: bool) -> Vec<u8> {
        let mut b = vec![0, flags, 0x0c, 0x10, 0x06, 0x00];
        if flags & 0x80 != 0 {
            b.push(0x02);
        }
        if flags & 0x40 != 0 {
            b.push(0x14);
        }
        if flags & 0x20 != 0 {
            b.push(0xc0);
        }
        if flags & 0x01 != 0 {
            b.extend_from_slice(&[0x02, 0xf0]);
        }
        if flags & 0x02 != 0 {
            b.extend_from_slice(&[0xe5, 0xf3]);
        }
        b[0] = (b.len() + if with_crc { 2 } else { 0 }) as u8;
        if with_crc {
            append_crc(&mut b);
        }
        b
    }

    /// Every combination of the defined flag bits 0, 1, 5, 6, 7.
    fn allowed_flags() -> impl Iterator<Item = u8> {
        (0u8..32).map(|i| (i & 0x03) | ((i & 0x1C) << 3))
    }

    #[test]
    fn record_every_flag_combination_with_and_without_crc() {
        for flags in allowed_flags() {
            for with_crc in [false, true] {
                let b = record_bytes(flags, with_crc);
                let want = 6
                    + (flags & 0xE0).count_ones() as usize
                    + 2 * (flags & 0x03).count_ones() as usize
                    + if with_crc { 2 } else { 0 };
                assert_eq!(b.len(), want);
                let m = CgmMeasurement::decode(&b)
                    .unwrap_or_else(|e| panic!("flags {flags:#04x} crc {with_crc}: {e}"));
                let rec = m.records[0];
                assert_eq!(rec.e2e_crc, with_crc);
                assert_eq!(rec.glucose_mg_dl.value(), num(12, 1));
                assert_eq!(rec.time_offset_min, 6);
                assert_eq!(rec.status_octet, (flags & 0x80 != 0).then_some(0x02));
                assert_eq!(rec.cal_temp_octet, (flags & 0x40 != 0).then_some(0x14));
                assert_eq!(rec.warning_octet, (flags & 0x20 != 0).then_some(0xc0));
                assert_eq!(rec.trend_mg_dl_min.is_some(), flags & 0x01 != 0);
                assert_eq!(rec.quality_pct.is_some(), flags & 0x02 != 0);
                assert_eq!(m.encode().unwrap(), b);

                // The payload one byte short or long.
                assert!(CgmMeasurement::decode(&b[..b.len() - 1]).is_err());
                let mut long = b.clone();
                long.push(0);
                assert!(CgmMeasurement::decode(&long).is_err());
                // The size byte one off either way.
                for size in [b[0] - 1, b[0] + 1] {
                    let mut bad = b.clone();
                    bad[0] = size;
                    assert!(
                        CgmMeasurement::decode(&bad).is_err(),
                        "flags {flags:#04x} crc {with_crc} size {size}"
                    );
                }
            }
        }
    }

    #[test]
    fn record_sizes_other_than_allowed_are_rejected() {
        // Flags 0: sizes 6 and 8 (CRC) only; 7 is neither.
        let mut b = vec![7, 0x00, 0x0c, 0x10, 0x06, 0x00, 0x00];
        assert!(matches!(
            CgmMeasurement::decode(&b),
            Err(DecodeError::Malformed { .. })
        ));
        b[0] = 5;
        assert!(CgmMeasurement::decode(&b[..5]).is_err());
        for size in 0u8..6 {
            assert!(CgmMeasurement::decode(&[size, 0, 0, 0, 0, 0]).is_err());
        }
        assert!(matches!(
            CgmMeasurement::decode(&[]),
            Err(DecodeError::Empty { .. })
        ));
        assert!(CgmMeasurement { records: vec![] }.encode().is_err());
    }

    #[test]
    fn record_reserved_flag_bits_are_rejected() {
        for rfu in [0x04u8, 0x08, 0x10] {
            let mut b = vec![6, rfu, 0x0c, 0x10, 0x06, 0x00];
            let e = CgmMeasurement::decode(&b).unwrap_err();
            assert!(
                matches!(e, DecodeError::ReservedFlags { reserved, .. } if reserved == rfu),
                "{e}"
            );
            b[1] |= 0xE3;
            assert!(CgmMeasurement::decode(&b).is_err());
        }
    }

    #[test]
    fn octets_are_status_cal_temp_warning_on_the_wire() {
        let b = [
            0x0f, 0xe3, 0xd2, 0xe4, 0x05, 0x00, 0x02, 0x14, 0xff, 0x02, 0xf0, 0xe5, 0xf3, 0x8e,
            0x3f,
        ];
        let m = CgmMeasurement::decode(&b).unwrap();
        let r = m.records[0];
        assert_eq!(r.status_octet, Some(0x02));
        assert_eq!(r.cal_temp_octet, Some(0x14));
        assert_eq!(r.warning_octet, Some(0xff));
        assert_eq!(r.glucose_mg_dl.value(), num(1234, -2));
        assert_eq!(r.trend_mg_dl_min, Some(SFloat::from_raw(0xf002)));
        assert_eq!(r.quality_pct.map(|q| q.value()), Some(num(997, -1)));
        assert!(r.e2e_crc);
        // Only the status octet present: it is the first byte after the time offset.
        let only_status = CgmMeasurement::decode(&[7, 0x80, 0x0c, 0x10, 0, 0, 0x01]).unwrap();
        assert_eq!(only_status.records[0].status_octet, Some(0x01));
        let only_warning = CgmMeasurement::decode(&[7, 0x20, 0x0c, 0x10, 0, 0, 0x80]).unwrap();
        assert_eq!(only_warning.records[0].warning_octet, Some(0x80));
        assert!(only_warning.readings()[0]
            .flags
            .contains(&Flag::ResultAboveDeviceRange));
    }

    #[test]
    fn record_crc_mismatch_is_a_crc_error() {
        let e =
            CgmMeasurement::decode(&[0x08, 0x00, 0x0c, 0x10, 0x06, 0x00, 0x58, 0x6f]).unwrap_err();
        assert_eq!(
            e,
            DecodeError::Crc {
                what: "cgm-measurement",
                received: 0x6f58,
                computed: 0x6f59
            }
        );
        assert_eq!(
            e.to_string(),
            "cgm-measurement: E2E-CRC mismatch (field 0x6F58, computed 0x6F59)"
        );
        for flags in allowed_flags() {
            let b = record_bytes(flags, true);
            for i in 0..b.len() {
                let mut bad = b.clone();
                bad[i] ^= 0x01;
                let e = CgmMeasurement::decode(&bad);
                // Past the size and flags bytes the structure is unchanged: a CRC error.
                if i >= 2 {
                    assert!(matches!(e, Err(DecodeError::Crc { .. })), "byte {i}: {e:?}");
                }
            }
        }
    }

    #[test]
    fn a_flipped_flags_bit_can_turn_the_crc_into_a_field() {
        // Size 8 with flags 0x00 is "6 + CRC"; flags 0x01 makes the same size "6 + trend" with
        // no CRC. The format cannot tell these apart, so such a corruption decodes as a
        // different record. This is why the hub should check CGM Feature bit 12 against the
        // records it gets.
        for flags in allowed_flags() {
            let b = record_bytes(flags, true);
            for i in 0..2 {
                let mut bad = b.clone();
                bad[i] ^= 0x01;
                if let Ok(m) = CgmMeasurement::decode(&bad) {
                    assert_ne!(m.encode().unwrap(), b);
                    assert!(
                        m.records.iter().all(|r| !r.e2e_crc),
                        "flags {flags:#04x} byte {i}"
                    );
                }
            }
        }
    }

    #[test]
    fn decode_records_keeps_good_records_around_a_bad_one() {
        let good = record_bytes(0x83, true);
        let mut bad = record_bytes(0x00, true);
        bad[3] ^= 0x40;
        let mut b = good.clone();
        b.extend_from_slice(&bad);
        b.extend_from_slice(&record_bytes(0x00, false));
        let rs = decode_records(&b);
        assert_eq!(rs.len(), 3);
        assert!(rs[0].is_ok());
        assert!(matches!(rs[1], Err(DecodeError::Crc { .. })));
        assert!(rs[2].is_ok());
        assert!(matches!(
            CgmMeasurement::decode(&b),
            Err(DecodeError::Crc { .. })
        ));
        // A reserved-flags record is skipped by its size, too.
        let mut b = vec![6, 0x04, 0, 0, 0, 0];
        b.extend_from_slice(&good);
        let rs = decode_records(&b);
        assert!(matches!(rs[0], Err(DecodeError::ReservedFlags { .. })));
        assert!(rs[1].is_ok());
        // A size error ends the split: boundaries after it are unknown.
        let mut b = good.clone();
        b.extend_from_slice(&[3, 0, 0]);
        b.extend_from_slice(&good);
        let rs = decode_records(&b);
        assert_eq!(rs.len(), 2);
        assert!(rs[0].is_ok());
        assert!(rs[1].is_err());
        let mut b = good.clone();
        b.extend_from_slice(&[20, 0, 0, 0, 0, 0]);
        let rs = decode_records(&b);
        assert_eq!(rs.len(), 2);
        assert!(rs[1].is_err());
        assert!(matches!(
            decode_records(&[]).as_slice(),
            [Err(DecodeError::Empty { .. })]
        ));
    }

    fn start(y: u16, mo: u8, d: u8, h: u8, mi: u8) -> SessionStartTime {
        SessionStartTime {
            start: DateTime {
                year: y,
                month: mo,
                day: d,
                hour: h,
                minute: mi,
                second: 0,
            },
            time_zone: TimeZone(4),
            dst_offset: DstOffset(4),
            e2e_crc: false,
        }
    }

    #[test]
    fn readings_are_timed_from_the_session_start() {
        let rec = |offset: u16| CgmRecord {
            glucose_mg_dl: SFloat::from_raw(0x100c),
            time_offset_min: offset,
            status_octet: None,
            cal_temp_octet: None,
            warning_octet: None,
            trend_mg_dl_min: None,
            quality_pct: None,
            e2e_crc: false,
        };
        let m = CgmMeasurement {
            records: vec![rec(5), rec(15), rec(60 * 24 * 2 + 1)],
        };
        let s = start(2024, 12, 31, 23, 50);
        let r = m.readings_with_session(Some(&s));
        assert_eq!(r.len(), 3);
        for x in &r {
            assert_eq!(x.kind, Kind::CgmGlucose);
            assert_eq!(x.unit, Unit::MgPerDl);
            assert_eq!(x.value, num(12, 1));
            assert_eq!(x.specimen, None);
            assert!(x.flags.is_empty());
        }
        let t = |y, mo, d, h, mi| Some(LocalDateTime::new(y, mo, d, h, mi, 0).unwrap());
        assert_eq!(r[0].device_time, t(2024, 12, 31, 23, 55));
        // Crossing midnight (and the year); the time zone is not applied.
        assert_eq!(r[1].device_time, t(2025, 1, 1, 0, 5));
        assert_eq!(r[2].device_time, t(2025, 1, 2, 23, 51));
        // Leap day.
        let r = m.readings_with_session(Some(&start(2024, 2, 28, 23, 55)));
        assert_eq!(r[0].device_time, t(2024, 2, 29, 0, 0));
        // No session, or an unknown start: no device time.
        assert!(m.readings().iter().all(|x| x.device_time.is_none()));
        let unknown = start(0, 4, 24, 13, 8);
        assert!(m
            .readings_with_session(Some(&unknown))
            .iter()
            .all(|x| x.device_time.is_none()));
    }

    #[test]
    fn annunciation_bits_map_to_flags() {
        for (i, f) in STATUS_OCTET_FLAGS.iter().enumerate() {
            let set = annunciation_flags(Some(1 << i), None, None);
            assert_eq!(set, [*f].into_iter().collect(), "status bit {i}");
        }
        for (i, f) in CAL_TEMP_OCTET_FLAGS.iter().enumerate() {
            let set = annunciation_flags(None, Some(1 << i), None);
            assert_eq!(set, [*f].into_iter().collect(), "cal/temp bit {i}");
        }
        assert!(annunciation_flags(Some(0xC0), Some(0xC0), Some(0x3F)).is_empty());
        assert_eq!(
            annunciation_flags(None, None, Some(0x40)),
            [Flag::ResultBelowDeviceRange].into_iter().collect()
        );
        assert_eq!(
            annunciation_flags(None, None, Some(0x80)),
            [Flag::ResultAboveDeviceRange].into_iter().collect()
        );
        // The fixture record: battery low; calibration recommended, temperature too high; both
        // device-range bits (and the patient alerts, which give no flag).
        let m = CgmMeasurement::decode(&[
            0x0f, 0xe3, 0xd2, 0xe4, 0x05, 0x00, 0x02, 0x14, 0xff, 0x02, 0xf0, 0xe5, 0xf3, 0x8e,
            0x3f,
        ])
        .unwrap();
        let r = &m.readings()[0];
        assert_eq!(
            r.flags,
            [
                Flag::DeviceBatteryLow,
                Flag::CgmCalibrationRecommended,
                Flag::SensorTemperatureTooHigh,
                Flag::ResultBelowDeviceRange,
                Flag::ResultAboveDeviceRange,
            ]
            .into_iter()
            .collect()
        );
        assert!(!r.is_alertable());
        let status = CgmStatus::decode(&[5, 0, 0x01, 0x08, 0x00]).unwrap();
        assert_eq!(
            status.flags(),
            [Flag::CgmSessionStopped, Flag::CgmCalibrationRequired]
                .into_iter()
                .collect()
        );
    }

    #[test]
    fn feature_crc_checked_only_when_supported() {
        let b = [0x6e, 0x9e, 0x01, 0x16, 0x8a, 0xc1];
        let f = CgmFeature::decode(&b).unwrap();
        assert!(f.e2e_crc_supported());
        assert_eq!(f.unchecked_crc_field, None);
        assert_eq!((f.sample_type, f.sample_location), (6, 1));
        assert_eq!(f.encode().unwrap(), b);
        for i in 0..b.len() {
            let mut bad = b;
            bad[i] ^= 0x01;
            // Flipping bit 0 of byte 1 leaves bit 12 set; the CRC no longer matches.
            assert!(
                matches!(CgmFeature::decode(&bad), Err(DecodeError::Crc { .. })),
                "byte {i}"
            );
        }
        // Unsupported: 0xFFFF, or anything else, kept raw.
        for field in [0xFFFFu16, 0x1234] {
            let mut b = vec![0x01, 0x00, 0x00, 0x59];
            b.extend_from_slice(&field.to_le_bytes());
            let f = CgmFeature::decode(&b).unwrap();
            assert!(!f.e2e_crc_supported());
            assert_eq!(f.unchecked_crc_field, Some(field));
            assert_eq!(f.specimen(), Some(GlucoseSpecimen::InterstitialFluid));
            assert_eq!(f.location(), Some(SampleLocation::SubcutaneousTissue));
            assert_eq!(f.encode().unwrap(), b);
        }
        assert_eq!(
            CgmFeature::new(0x1000, 9, 5).encode().unwrap(),
            crc(vec![0x00, 0x10, 0x00, 0x59])
        );
        assert_eq!(
            CgmFeature::new(0x0001, 9, 5).encode().unwrap(),
            [0x01, 0x00, 0x00, 0x59, 0xff, 0xff]
        );
        for n in [0usize, 5, 7, 8] {
            assert!(matches!(
                CgmFeature::decode(&vec![0; n]),
                Err(DecodeError::Length { .. })
            ));
        }
    }

    /// `body` decodes, and with a CRC; lengths around both fail; any flipped byte with a CRC is a
    /// CRC error.
    /// The first `layout` bytes decide the layout (the SOCP op code): flipping them may give
    /// another error than a CRC mismatch.
    fn crc_length_table<T: GattValue + std::fmt::Debug + PartialEq>(body: &[u8], layout: usize) {
        let plain = T::decode(body).unwrap();
        assert_eq!(plain.encode().unwrap(), body);
        let with = crc(body.to_vec());
        let checked = T::decode(&with).unwrap();
        assert_eq!(checked.encode().unwrap(), with);
        assert_ne!(plain, checked);
        for n in [body.len() - 1, body.len() + 1, body.len() + 3] {
            let mut b = with.clone();
            b.resize(n, 0);
            assert!(
                matches!(
                    T::decode(&b),
                    Err(DecodeError::Length { .. } | DecodeError::Empty { .. })
                ),
                "{} bytes",
                n
            );
        }
        for i in 0..with.len() {
            let mut bad = with.clone();
            bad[i] ^= 0x80;
            let e = T::decode(&bad);
            if i < layout {
                assert!(e.is_err(), "byte {i}");
            } else {
                assert!(matches!(e, Err(DecodeError::Crc { .. })), "byte {i}: {e:?}");
            }
        }
    }

    #[test]
    fn status_lengths_and_crc() {
        crc_length_table::<CgmStatus>(&[0x05, 0x00, 0x3f, 0x3f, 0xff], 0);
        let s = CgmStatus::decode(&[0x05, 0x00, 0x3f, 0x3f, 0xff, 0xa7, 0xe0]).unwrap();
        assert_eq!(s.status_u24(), 0xff3f3f);
        assert!(s.e2e_crc);
    }

    #[test]
    fn session_start_time_lengths_crc_and_ranges() {
        let body = [0xe2, 0x07, 0x04, 0x18, 0x0d, 0x08, 0x18, 0x08, 0x04];
        crc_length_table::<SessionStartTime>(&body, 0);
        let s = SessionStartTime::decode(&crc(body.to_vec())).unwrap();
        assert_eq!(s.time_zone.minutes(), Some(120));
        assert_eq!(s.dst_offset.minutes(), Some(60));
        // Year 0 (unknown) is allowed.
        assert!(SessionStartTime::decode(&[0, 0, 4, 24, 13, 8, 24, 8, 2]).is_ok());
        // Out-of-range zone and DST, and a bad date.
        for bad in [
            [0xe2, 0x07, 4, 24, 13, 8, 24, 57, 0],
            [0xe2, 0x07, 4, 24, 13, 8, 24, 0x80 | 0x40, 0],
            [0xe2, 0x07, 4, 24, 13, 8, 24, 8, 3],
            [0xe2, 0x07, 13, 24, 13, 8, 24, 8, 0],
        ] {
            assert!(matches!(
                SessionStartTime::decode(&bad),
                Err(DecodeError::OutOfRange { .. })
            ));
        }
        let t = LocalDateTime::new(2024, 6, 1, 9, 0, 0).unwrap();
        let w = SessionStartTime::new(t, TimeZone(4), DstOffset(4), true);
        let b = w.encode().unwrap();
        assert_eq!(b.len(), 11);
        assert_eq!(SessionStartTime::decode(&b).unwrap(), w);
        let mut bad = w;
        bad.time_zone = TimeZone(60);
        assert!(bad.encode().is_err());
        bad = w;
        bad.dst_offset = DstOffset(1);
        assert!(bad.encode().is_err());
        let j = serde_json::to_value(s).unwrap();
        assert_eq!(j["time_zone_min"], 120);
        assert_eq!(j["dst_min"], 60);
    }

    #[test]
    fn session_run_time_lengths_and_crc() {
        crc_length_table::<SessionRunTime>(&[0x02, 0x00], 0);
        assert_eq!(
            SessionRunTime::decode(&[0x02, 0x00, 0x08, 0xc3]).unwrap(),
            SessionRunTime {
                run_time_h: 2,
                e2e_crc: true
            }
        );
    }

    #[test]
    fn socp_every_op_code_has_its_length() {
        for code in 1u8..=28 {
            let (len, _) = operand_len(code).unwrap();
            let mut body = vec![code];
            // A calibration record with valid nibbles; anything goes for the other operands.
            body.extend((0..len).map(|i| 0x11 * (i as u8 + 1)));
            let m = SocpMessage::decode(&body).unwrap_or_else(|e| panic!("op {code}: {e}"));
            assert_eq!(m.op.op_code(), code);
            assert!(op_name(code).is_some());
            crc_length_table::<SocpMessage>(&body, 1);
        }
        for code in [0u8, 29, 0x80, 0xff] {
            assert!(matches!(
                SocpMessage::decode(&[code]),
                Err(DecodeError::OutOfRange { .. })
            ));
        }
        assert!(matches!(
            SocpMessage::decode(&[]),
            Err(DecodeError::Empty { .. })
        ));
    }

    #[test]
    fn socp_alert_op_codes_and_fixture_values() {
        for level in AlertLevel::ALL {
            let base = level.set_op_code();
            assert_eq!(AlertLevel::from_op_code(base), Some((level, 0)));
            assert_eq!(AlertLevel::from_op_code(base + 1), Some((level, 1)));
            assert_eq!(AlertLevel::from_op_code(base + 2), Some((level, 2)));
        }
        assert_eq!(AlertLevel::RateOfIncrease.set_op_code(), 22);
        let m = SocpMessage::decode(&[0x0c, 0x0b, 0xc0, 0x34, 0xbe]).unwrap();
        assert_eq!(
            m.op,
            SocpOp::AlertLevelResponse(AlertLevel::PatientLow, SFloat::from_raw(0xc00b))
        );
        assert!(m.e2e_crc);
        let m = SocpMessage::decode(&[
            0x06, 0x01, 0x20, 0x0a, 0x00, 0x32, 0x14, 0x00, 0x01, 0x00, 0x04,
        ])
        .unwrap();
        let SocpOp::CalibrationValueResponse(c) = m.op else {
            panic!("{m:?}")
        };
        assert_eq!(c.glucose_mg_dl.value(), num(1, 2));
        assert_eq!((c.sample_type, c.sample_location), (2, 3));
        assert_eq!(c.status, 0x04);
        let j = serde_json::to_value(m).unwrap();
        assert_eq!(
            j["calibration"]["status"]["set"][0],
            "calibration_process_pending"
        );
        let j = serde_json::to_value(SocpMessage::decode(&[0x1c, 0x02, 0x01]).unwrap()).unwrap();
        assert_eq!(j["response_code"]["name"], "success");
        assert_eq!(
            j["request_op_code"]["name"],
            "get_cgm_communication_interval"
        );
    }

    #[test]
    fn hub_writes_have_the_documented_bytes() {
        assert_eq!(SocpMessage::start_session(false).encode().unwrap(), [0x1a]);
        assert_eq!(
            SocpMessage::start_session(true).encode().unwrap(),
            crc(vec![0x1a])
        );
        assert_eq!(SocpMessage::stop_session(false).encode().unwrap(), [0x1b]);
        assert_eq!(
            SocpMessage::set_communication_interval(5, true)
                .encode()
                .unwrap(),
            crc(vec![0x01, 0x05])
        );
        assert_eq!(
            SocpMessage::get_communication_interval(false)
                .encode()
                .unwrap(),
            [0x02]
        );
        assert_eq!(
            SocpMessage::get_calibration_value(0xFFFF, false)
                .encode()
                .unwrap(),
            [0x05, 0xff, 0xff]
        );
        assert_eq!(
            SocpMessage::set_alert_level(AlertLevel::Hypo, Decimal::new(70, 0), false)
                .unwrap()
                .encode()
                .unwrap(),
            // 70 is sent as 7e1.
            [0x0d, 0x07, 0x10]
        );
        // 2047 has no exact SFLOAT that is not a special value.
        assert!(
            SocpMessage::set_alert_level(AlertLevel::Hyper, Decimal::new(2047, 0), false).is_err()
        );
        assert_eq!(
            SocpMessage::get_alert_level(AlertLevel::RateOfDecrease, false)
                .encode()
                .unwrap(),
            [0x14]
        );
        assert_eq!(
            SocpMessage::reset_device_specific_alert(false)
                .encode()
                .unwrap(),
            [0x19]
        );
        let cal = CalibrationRecord {
            glucose_mg_dl: SFloat::from_raw(0x2001),
            calibration_time_min: 10,
            sample_type: 2,
            sample_location: 3,
            next_calibration_time_min: 20,
            record_number: 1,
            status: 0,
        };
        assert_eq!(
            SocpMessage::set_calibration_value(cal, false)
                .encode()
                .unwrap(),
            [0x04, 0x01, 0x20, 0x0a, 0x00, 0x32, 0x14, 0x00, 0x01, 0x00, 0x00]
        );
        let mut bad = cal;
        bad.sample_type = 0x10;
        assert!(SocpMessage::set_calibration_value(bad, false)
            .encode()
            .is_err());
        assert_eq!(
            SFloat::from_raw(0x07ff).value(),
            Value::Special(Special::Nan)
        );
    }

    // --- property tests

    fn record() -> impl Strategy<Value = CgmRecord> {
        (
            sfloat(),
            any::<u16>(),
            proptest::option::of(any::<u8>()),
            proptest::option::of(any::<u8>()),
            proptest::option::of(any::<u8>()),
            proptest::option::of(sfloat()),
            proptest::option::of(sfloat()),
            any::<bool>(),
        )
            .prop_map(|(g, t, s, c, w, tr, q, e2e_crc)| CgmRecord {
                glucose_mg_dl: g,
                time_offset_min: t,
                status_octet: s,
                cal_temp_octet: c,
                warning_octet: w,
                trend_mg_dl_min: tr,
                quality_pct: q,
                e2e_crc,
            })
    }

    fn feature() -> impl Strategy<Value = CgmFeature> {
        (0u32..=0x00FF_FFFF, 0u8..16, 0u8..16, any::<u16>()).prop_map(|(f, t, l, raw)| CgmFeature {
            features: f,
            sample_type: t,
            sample_location: l,
            unchecked_crc_field: (!bit(f, FEATURE_E2E_CRC)).then_some(raw),
        })
    }

    fn status() -> impl Strategy<Value = CgmStatus> {
        (any::<u16>(), any::<[u8; 3]>(), any::<bool>()).prop_map(|(t, [s, c, w], e2e_crc)| {
            CgmStatus {
                time_offset_min: t,
                status_octet: s,
                cal_temp_octet: c,
                warning_octet: w,
                e2e_crc,
            }
        })
    }

    fn session_start() -> impl Strategy<Value = SessionStartTime> {
        (
            date_time(),
            prop_oneof![Just(-128i8), -48i8..=56],
            prop::sample::select(vec![0u8, 2, 4, 8, 255]),
            any::<bool>(),
        )
            .prop_map(|(start, tz, dst, e2e_crc)| SessionStartTime {
                start,
                time_zone: TimeZone(tz),
                dst_offset: DstOffset(dst),
                e2e_crc,
            })
    }

    fn calibration() -> impl Strategy<Value = CalibrationRecord> {
        (
            sfloat(),
            any::<u16>(),
            0u8..16,
            0u8..16,
            any::<u16>(),
            any::<u16>(),
            any::<u8>(),
        )
            .prop_map(|(g, t, ty, loc, next, n, status)| CalibrationRecord {
                glucose_mg_dl: g,
                calibration_time_min: t,
                sample_type: ty,
                sample_location: loc,
                next_calibration_time_min: next,
                record_number: n,
                status,
            })
    }

    fn socp_op() -> impl Strategy<Value = SocpOp> {
        let level = prop::sample::select(AlertLevel::ALL.to_vec());
        prop_oneof![
            any::<u8>().prop_map(SocpOp::SetCommunicationInterval),
            Just(SocpOp::GetCommunicationInterval),
            any::<u8>().prop_map(SocpOp::CommunicationIntervalResponse),
            calibration().prop_map(SocpOp::SetCalibrationValue),
            any::<u16>().prop_map(SocpOp::GetCalibrationValue),
            calibration().prop_map(SocpOp::CalibrationValueResponse),
            (level.clone(), sfloat()).prop_map(|(l, v)| SocpOp::SetAlertLevel(l, v)),
            level.clone().prop_map(SocpOp::GetAlertLevel),
            (level, sfloat()).prop_map(|(l, v)| SocpOp::AlertLevelResponse(l, v)),
            Just(SocpOp::ResetDeviceSpecificAlert),
            Just(SocpOp::StartSession),
            Just(SocpOp::StopSession),
            (any::<u8>(), any::<u8>()).prop_map(|(q, c)| SocpOp::Response {
                request_op_code: q,
                response_code: c
            }),
        ]
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn measurement_round_trips(records in proptest::collection::vec(record(), 1..6)) {
            let x = CgmMeasurement { records };
            let b = x.encode().unwrap();
            prop_assert_eq!(CgmMeasurement::decode(&b).unwrap(), x.clone());
            let split = decode_records(&b);
            prop_assert_eq!(split.len(), x.records.len());
            prop_assert_eq!(x.readings().len(), x.records.len());
        }

        #[test]
        fn feature_round_trips(x in feature()) {
            prop_assert_eq!(CgmFeature::decode(&x.encode().unwrap()).unwrap(), x);
        }

        #[test]
        fn status_round_trips(x in status()) {
            prop_assert_eq!(CgmStatus::decode(&x.encode().unwrap()).unwrap(), x);
        }

        #[test]
        fn session_start_round_trips(x in session_start()) {
            prop_assert_eq!(SessionStartTime::decode(&x.encode().unwrap()).unwrap(), x);
        }

        #[test]
        fn session_run_time_round_trips(h in any::<u16>(), e2e_crc in any::<bool>()) {
            let x = SessionRunTime { run_time_h: h, e2e_crc };
            prop_assert_eq!(SessionRunTime::decode(&x.encode().unwrap()).unwrap(), x);
        }

        #[test]
        fn socp_round_trips(op in socp_op(), e2e_crc in any::<bool>()) {
            let x = SocpMessage { op, e2e_crc };
            prop_assert_eq!(SocpMessage::decode(&x.encode().unwrap()).unwrap(), x);
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = CgmMeasurement::decode(&b);
            let _ = decode_records(&b);
            let _ = CgmFeature::decode(&b);
            let _ = CgmStatus::decode(&b);
            let _ = SessionStartTime::decode(&b);
            let _ = SessionRunTime::decode(&b);
            let _ = SocpMessage::decode(&b);
        }
    }
}
