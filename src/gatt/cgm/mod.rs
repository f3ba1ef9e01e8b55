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

mod feature;
mod measurement;
mod session;
mod socp;

pub use feature::*;
pub use measurement::*;
pub use session::*;
pub use socp::*;

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

#[cfg(test)]
mod tests;
