//! Pulse Oximeter Service 0x1822 (PLXS): PLX Spot-Check Measurement 0x2A5E, PLX Continuous
//! Measurement 0x2A5F and PLX Features 0x2A60. Stored spot-checks are fetched with the Record Access
//! Control Point in [`super::racp`].
//!
//! Guarantees: a value decodes only when its length is exactly what its flags (or, for the
//! features, its supported-features bits) say; reserved flag bits are an error; every SFLOAT is kept
//! as its raw bits, so a decoded value re-encodes to the bytes it came from.
//!
//! Interpretations (see `ble-profiles.md` §5):
//! - SFLOAT is decoded per IEEE 11073-20601 (signed 4-bit exponent, no bias). `62 80` is 98e−8, not
//!   98 %: the biased-exponent reading of one public library is a known trap (§14.1).
//! - Reserved bits of the Measurement Status (0–4) and of the Device and Sensor Status (16–23) are
//!   kept raw and ignored. Device and Sensor Status bit 0 ("extended display update ongoing") is a
//!   display hint and gives no reading flag.
//! - Spot-check flag bit 4 ("device clock is not set") has no field. The timestamp is still given as
//!   the reading's device time, and every reading carries [`Flag::DeviceClockNotSet`] so that the
//!   consumer knows the time cannot be trusted.
//! - Readings carry the "normal" SpO2 and pulse rate only; the continuous fast/slow values and the
//!   pulse amplitude index stay in `fields`.
//! - The PLX Features support fields are present exactly when supported-features bits 0/1 are set;
//!   the other supported-features bits (8–15 reserved) are kept raw.
//!
//! Size: the code is about 500 lines; the file passes 800 only with its table tests, kept
//! beside the fields they check (one profile, one file).

use super::bytes::{bit, check_flags_length, check_length, check_reserved_flags, Reader, Writer};
use super::datetime::DateTime;
use super::error::{DecodeError, EncodeError};
use super::float::SFloat;
use super::names::Bits;
use super::GattValue;
use crate::model::{Flag, Kind, Reading, Unit};
use serde::Serialize;
use std::collections::BTreeSet;

/// Names of the PLX Measurement Status bits (u16; bits 0–4 reserved).
pub const MEASUREMENT_STATUS_BITS: [&str; 16] = [
    "",
    "",
    "",
    "",
    "",
    "measurement_ongoing",
    "early_estimated_data",
    "validated_data",
    "fully_qualified_data",
    "data_from_measurement_storage",
    "data_for_demonstration",
    "data_for_testing",
    "calibration_ongoing",
    "measurement_unavailable",
    "questionable_measurement_detected",
    "invalid_measurement_detected",
];

/// Reading flags of Measurement Status bits 5..=15 (index 0 is bit 5).
const MEASUREMENT_STATUS_FLAGS: [Flag; 11] = [
    Flag::MeasurementOngoing,
    Flag::EarlyEstimate,
    Flag::ValidatedData,
    Flag::FullyQualifiedData,
    Flag::FromMeasurementStorage,
    Flag::DemonstrationData,
    Flag::TestingData,
    Flag::CalibrationOngoing,
    Flag::MeasurementUnavailable,
    Flag::QuestionableMeasurement,
    Flag::InvalidMeasurement,
];

/// Names of the PLX Device and Sensor Status bits (u24; bits 16–23 reserved).
pub const DEVICE_SENSOR_STATUS_BITS: [&str; 16] = [
    "extended_display_update_ongoing",
    "equipment_malfunction_detected",
    "signal_processing_irregularity_detected",
    "inadequate_signal_detected",
    "poor_signal_detected",
    "low_perfusion_detected",
    "erratic_signal_detected",
    "nonpulsatile_signal_detected",
    "questionable_pulse_detected",
    "signal_analysis_ongoing",
    "sensor_interference_detected",
    "sensor_unconnected_to_user",
    "unknown_sensor_connected",
    "sensor_displaced",
    "sensor_malfunctioning",
    "sensor_disconnected",
];

/// Reading flags of Device and Sensor Status bits 1..=15 (index 0 is bit 1).
const DEVICE_SENSOR_STATUS_FLAGS: [Flag; 15] = [
    Flag::EquipmentMalfunction,
    Flag::SignalProcessingIrregularity,
    Flag::InadequateSignal,
    Flag::PoorSignal,
    Flag::LowPerfusion,
    Flag::ErraticSignal,
    Flag::NonpulsatileSignal,
    Flag::QuestionablePulse,
    Flag::SignalAnalysisOngoing,
    Flag::SensorInterference,
    Flag::SensorUnconnectedToUser,
    Flag::UnknownSensor,
    Flag::SensorDisplaced,
    Flag::SensorMalfunctioning,
    Flag::SensorDisconnected,
];

/// Names of the PLX Features supported-features bits (u16; bits 8–15 reserved).
pub const FEATURE_BITS: [&str; 8] = [
    "measurement_status_support",
    "device_and_sensor_status_support",
    "spot_check_measurement_storage",
    "spot_check_timestamp",
    "spo2pr_fast",
    "spo2pr_slow",
    "pulse_amplitude_index",
    "multiple_bonds",
];

/// The largest value of a 24-bit field.
const U24_MAX: u32 = 0x00FF_FFFF;

fn ser_meas_status<S: serde::Serializer>(v: &Option<u16>, s: S) -> Result<S::Ok, S::Error> {
    v.map(|raw| Bits::new(raw.into(), 16, &MEASUREMENT_STATUS_BITS))
        .serialize(s)
}

fn ser_dev_status<S: serde::Serializer>(v: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
    v.map(|raw| Bits::new(raw, 24, &DEVICE_SENSOR_STATUS_BITS))
        .serialize(s)
}

fn ser_features<S: serde::Serializer>(v: &u16, s: S) -> Result<S::Ok, S::Error> {
    Bits::new((*v).into(), 16, &FEATURE_BITS).serialize(s)
}

/// The reading flags of the two status fields.
fn status_flags(measurement: Option<u16>, device_sensor: Option<u32>) -> BTreeSet<Flag> {
    let mut flags = BTreeSet::new();
    if let Some(m) = measurement {
        for (i, f) in (5u32..).zip(MEASUREMENT_STATUS_FLAGS.iter()) {
            if bit(m.into(), i) {
                flags.insert(*f);
            }
        }
    }
    if let Some(d) = device_sensor {
        for (i, f) in (1u32..).zip(DEVICE_SENSOR_STATUS_FLAGS.iter()) {
            if bit(d, i) {
                flags.insert(*f);
            }
        }
    }
    flags
}

/// The SpO2 and pulse-rate readings of one measurement.
fn spo2_pr_readings(
    spo2: SFloat,
    pulse_rate: SFloat,
    device_time: Option<crate::model::LocalDateTime>,
    flags: &BTreeSet<Flag>,
) -> Vec<Reading> {
    [
        (Kind::Spo2, spo2, Unit::Percent),
        (Kind::PulseRate, pulse_rate, Unit::PerMin),
    ]
    .into_iter()
    .map(|(kind, v, unit)| {
        let mut r = Reading::new(kind, v.value(), unit);
        r.device_time = device_time;
        r.flags = flags.clone();
        r
    })
    .collect()
}

fn check_u24(what: &'static str, field: &str, v: Option<u32>) -> Result<(), EncodeError> {
    match v {
        Some(x) if x > U24_MAX => Err(EncodeError::Unrepresentable {
            what,
            detail: format!("{field} 0x{x:X} does not fit its 24-bit field"),
        }),
        _ => Ok(()),
    }
}

/// PLX Spot-Check Measurement 0x2A5E.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct SpotCheckMeasurement {
    /// SpO2, percent.
    pub spo2_pct: SFloat,
    /// Pulse rate, beats per minute.
    pub pulse_rate_per_min: SFloat,
    /// Flag bit 0: the device's wall clock at the measurement.
    pub timestamp: Option<DateTime>,
    /// Flag bit 1.
    #[serde(serialize_with = "ser_meas_status")]
    pub measurement_status: Option<u16>,
    /// Flag bit 2 (24 bits).
    #[serde(serialize_with = "ser_dev_status")]
    pub device_sensor_status: Option<u32>,
    /// Flag bit 3, percent.
    pub pulse_amplitude_index_pct: Option<SFloat>,
    /// Flag bit 4: the device clock is not set; its timestamp cannot be trusted.
    pub device_clock_not_set: bool,
}

impl SpotCheckMeasurement {
    pub const WHAT: &'static str = <Self as GattValue>::NAME;
}

impl GattValue for SpotCheckMeasurement {
    const UUID: u16 = 0x2A5E;
    const NAME: &'static str = "plx-spot-check-measurement";

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(Self::WHAT, bytes);
        let flags = r
            .u8()
            .map_err(|_| DecodeError::Empty { what: Self::WHAT })?;
        // PLXS 0x2A5E flags: bits 5..7 reserved.
        check_reserved_flags(Self::WHAT, flags, 0xE0)?;
        let f = u32::from(flags);
        let need = 5
            + if bit(f, 0) { DateTime::LEN } else { 0 }
            + if bit(f, 1) { 2 } else { 0 }
            + if bit(f, 2) { 3 } else { 0 }
            + if bit(f, 3) { 2 } else { 0 };
        check_flags_length(Self::WHAT, flags, need, bytes.len())?;
        let spo2_pct = r.sfloat()?;
        let pulse_rate_per_min = r.sfloat()?;
        let timestamp = if bit(f, 0) {
            Some(DateTime::read(&mut r)?)
        } else {
            None
        };
        let measurement_status = if bit(f, 1) { Some(r.u16()?) } else { None };
        let device_sensor_status = if bit(f, 2) { Some(r.u24()?) } else { None };
        let pulse_amplitude_index_pct = if bit(f, 3) { Some(r.sfloat()?) } else { None };
        r.finish()?;
        Ok(SpotCheckMeasurement {
            spo2_pct,
            pulse_rate_per_min,
            timestamp,
            measurement_status,
            device_sensor_status,
            pulse_amplitude_index_pct,
            device_clock_not_set: bit(f, 4),
        })
    }

    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        check_u24(
            Self::WHAT,
            "device and sensor status",
            self.device_sensor_status,
        )?;
        let mut flags = 0u8;
        if self.timestamp.is_some() {
            flags |= 0x01;
        }
        if self.measurement_status.is_some() {
            flags |= 0x02;
        }
        if self.device_sensor_status.is_some() {
            flags |= 0x04;
        }
        if self.pulse_amplitude_index_pct.is_some() {
            flags |= 0x08;
        }
        if self.device_clock_not_set {
            flags |= 0x10;
        }
        let mut w = Writer::new();
        w.u8(flags)
            .sfloat(self.spo2_pct)
            .sfloat(self.pulse_rate_per_min);
        if let Some(t) = &self.timestamp {
            t.write(&mut w);
        }
        if let Some(m) = self.measurement_status {
            w.u16(m);
        }
        if let Some(d) = self.device_sensor_status {
            w.u24(d);
        }
        if let Some(p) = self.pulse_amplitude_index_pct {
            w.sfloat(p);
        }
        Ok(w.into_vec())
    }

    fn readings(&self) -> Vec<Reading> {
        let mut flags = status_flags(self.measurement_status, self.device_sensor_status);
        if self.device_clock_not_set {
            flags.insert(Flag::DeviceClockNotSet);
        }
        let device_time = self.timestamp.and_then(|t| t.to_local());
        spo2_pr_readings(self.spo2_pct, self.pulse_rate_per_min, device_time, &flags)
    }
}

/// An SpO2 / pulse-rate pair (the fast and slow responding values of 0x2A5F).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Spo2Pr {
    pub spo2_pct: SFloat,
    pub pulse_rate_per_min: SFloat,
}

/// PLX Continuous Measurement 0x2A5F.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct ContinuousMeasurement {
    /// SpO2PR-Normal: SpO2, percent.
    pub spo2_pct: SFloat,
    /// SpO2PR-Normal: pulse rate, beats per minute.
    pub pulse_rate_per_min: SFloat,
    /// Flag bit 0: SpO2PR-Fast.
    pub fast: Option<Spo2Pr>,
    /// Flag bit 1: SpO2PR-Slow.
    pub slow: Option<Spo2Pr>,
    /// Flag bit 2.
    #[serde(serialize_with = "ser_meas_status")]
    pub measurement_status: Option<u16>,
    /// Flag bit 3 (24 bits).
    #[serde(serialize_with = "ser_dev_status")]
    pub device_sensor_status: Option<u32>,
    /// Flag bit 4, percent.
    pub pulse_amplitude_index_pct: Option<SFloat>,
}

impl ContinuousMeasurement {
    pub const WHAT: &'static str = <Self as GattValue>::NAME;
}

impl GattValue for ContinuousMeasurement {
    const UUID: u16 = 0x2A5F;
    const NAME: &'static str = "plx-continuous-measurement";

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(Self::WHAT, bytes);
        let flags = r
            .u8()
            .map_err(|_| DecodeError::Empty { what: Self::WHAT })?;
        // PLXS 0x2A5F flags: bits 5..7 reserved.
        check_reserved_flags(Self::WHAT, flags, 0xE0)?;
        let f = u32::from(flags);
        let need = 5
            + if bit(f, 0) { 4 } else { 0 }
            + if bit(f, 1) { 4 } else { 0 }
            + if bit(f, 2) { 2 } else { 0 }
            + if bit(f, 3) { 3 } else { 0 }
            + if bit(f, 4) { 2 } else { 0 };
        check_flags_length(Self::WHAT, flags, need, bytes.len())?;
        let spo2_pct = r.sfloat()?;
        let pulse_rate_per_min = r.sfloat()?;
        let mut pair = |present: bool| -> Result<Option<Spo2Pr>, DecodeError> {
            Ok(if present {
                Some(Spo2Pr {
                    spo2_pct: r.sfloat()?,
                    pulse_rate_per_min: r.sfloat()?,
                })
            } else {
                None
            })
        };
        let fast = pair(bit(f, 0))?;
        let slow = pair(bit(f, 1))?;
        let measurement_status = if bit(f, 2) { Some(r.u16()?) } else { None };
        let device_sensor_status = if bit(f, 3) { Some(r.u24()?) } else { None };
        let pulse_amplitude_index_pct = if bit(f, 4) { Some(r.sfloat()?) } else { None };
        r.finish()?;
        Ok(ContinuousMeasurement {
            spo2_pct,
            pulse_rate_per_min,
            fast,
            slow,
            measurement_status,
            device_sensor_status,
            pulse_amplitude_index_pct,
        })
    }

    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        check_u24(
            Self::WHAT,
            "device and sensor status",
            self.device_sensor_status,
        )?;
        let mut flags = 0u8;
        if self.fast.is_some() {
            flags |= 0x01;
        }
        if self.slow.is_some() {
            flags |= 0x02;
        }
        if self.measurement_status.is_some() {
            flags |= 0x04;
        }
        if self.device_sensor_status.is_some() {
            flags |= 0x08;
        }
        if self.pulse_amplitude_index_pct.is_some() {
            flags |= 0x10;
        }
        let mut w = Writer::new();
        w.u8(flags)
            .sfloat(self.spo2_pct)
            .sfloat(self.pulse_rate_per_min);
        for p in [&self.fast, &self.slow].into_iter().flatten() {
            w.sfloat(p.spo2_pct).sfloat(p.pulse_rate_per_min);
        }
        if let Some(m) = self.measurement_status {
            w.u16(m);
        }
        if let Some(d) = self.device_sensor_status {
            w.u24(d);
        }
        if let Some(p) = self.pulse_amplitude_index_pct {
            w.sfloat(p);
        }
        Ok(w.into_vec())
    }

    fn readings(&self) -> Vec<Reading> {
        let flags = status_flags(self.measurement_status, self.device_sensor_status);
        spo2_pr_readings(self.spo2_pct, self.pulse_rate_per_min, None, &flags)
    }
}

/// PLX Features 0x2A60.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct PlxFeatures {
    /// Supported features bit field; bits 8–15 reserved, kept raw. Bits 0 and 1 must agree with
    /// the presence of the two support fields.
    #[serde(serialize_with = "ser_features")]
    pub supported_features: u16,
    /// Present when supported-features bit 0 is set: which Measurement Status bits the device uses.
    #[serde(serialize_with = "ser_meas_status")]
    pub measurement_status_support: Option<u16>,
    /// Present when supported-features bit 1 is set: which Device and Sensor Status bits it uses.
    #[serde(serialize_with = "ser_dev_status")]
    pub device_sensor_status_support: Option<u32>,
}

impl PlxFeatures {
    pub const WHAT: &'static str = <Self as GattValue>::NAME;

    /// Whether supported-features bit `n` is set.
    pub fn has(&self, n: u32) -> bool {
        bit(self.supported_features.into(), n)
    }
}

impl GattValue for PlxFeatures {
    const UUID: u16 = 0x2A60;
    const NAME: &'static str = "plx-features";

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(Self::WHAT, bytes);
        check_length(Self::WHAT, "at least 2", bytes.len() >= 2, bytes.len())?;
        let supported_features = r.u16()?;
        let s = u32::from(supported_features);
        let (need, need_text) = match (bit(s, 0), bit(s, 1)) {
            (false, false) => (2, "2 (supported features bits 0 and 1 clear)"),
            (true, false) => (4, "4 (supported features bit 0 set)"),
            (false, true) => (5, "5 (supported features bit 1 set)"),
            (true, true) => (7, "7 (supported features bits 0 and 1 set)"),
        };
        check_length(Self::WHAT, need_text, bytes.len() == need, bytes.len())?;
        let measurement_status_support = if bit(s, 0) { Some(r.u16()?) } else { None };
        let device_sensor_status_support = if bit(s, 1) { Some(r.u24()?) } else { None };
        r.finish()?;
        Ok(PlxFeatures {
            supported_features,
            measurement_status_support,
            device_sensor_status_support,
        })
    }

    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let s = u32::from(self.supported_features);
        if bit(s, 0) != self.measurement_status_support.is_some()
            || bit(s, 1) != self.device_sensor_status_support.is_some()
        {
            return Err(EncodeError::Unrepresentable {
                what: Self::WHAT,
                detail: "supported features bits 0/1 must match the presence of the measurement \
                         status and device and sensor status support fields"
                    .into(),
            });
        }
        check_u24(
            Self::WHAT,
            "device and sensor status support",
            self.device_sensor_status_support,
        )?;
        let mut w = Writer::new();
        w.u16(self.supported_features);
        if let Some(m) = self.measurement_status_support {
            w.u16(m);
        }
        if let Some(d) = self.device_sensor_status_support {
            w.u24(d);
        }
        Ok(w.into_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gatt::testing::{config, date_time, sfloat};
    use crate::model::{Decimal, LocalDateTime, Special, Value};
    use proptest::prelude::*;

    /// A valid Date Time on the wire: 2024-03-01 08:30:00.
    const TS: [u8; 7] = [0xe8, 0x07, 3, 1, 8, 30, 0];

    /// A payload for `flags` whose every optional field is present as the flags say.
    fn spot_bytes(flags: u8) -> Vec<u8> {
        let mut b = vec![flags, 0x62, 0x00, 0x48, 0x00];
        if flags & 0x01 != 0 {
            b.extend_from_slice(&TS);
        }
        if flags & 0x02 != 0 {
            b.extend_from_slice(&[0x20, 0x00]);
        }
        if flags & 0x04 != 0 {
            b.extend_from_slice(&[0x20, 0x00, 0x00]);
        }
        if flags & 0x08 != 0 {
            b.extend_from_slice(&[0x0a, 0xf0]);
        }
        b
    }

    fn continuous_bytes(flags: u8) -> Vec<u8> {
        let mut b = vec![flags, 0x62, 0x00, 0x48, 0x00];
        for (bitv, field) in [
            (0x01, &[0x61u8, 0x00, 0x47, 0x00][..]),
            (0x02, &[0x60, 0x00, 0x46, 0x00][..]),
            (0x04, &[0x00, 0x01][..]),
            (0x08, &[0x02, 0x00, 0x00][..]),
            (0x10, &[0x0a, 0xf0][..]),
        ] {
            if flags & bitv != 0 {
                b.extend_from_slice(field);
            }
        }
        b
    }

    fn assert_length_table<T: GattValue + std::fmt::Debug>(flags: u8, b: &[u8]) {
        let v = T::decode(b).unwrap_or_else(|e| panic!("flags {flags:#04x}: {e}"));
        assert_eq!(v.encode().unwrap(), b, "flags {flags:#04x}");
        let short = &b[..b.len() - 1];
        assert!(
            matches!(T::decode(short), Err(DecodeError::FlagsLength { .. })),
            "flags {flags:#04x} one byte short"
        );
        let mut long = b.to_vec();
        long.push(0);
        assert!(
            matches!(T::decode(&long), Err(DecodeError::FlagsLength { .. })),
            "flags {flags:#04x} one byte long"
        );
    }

    #[test]
    fn spot_check_every_flag_combination_has_its_length() {
        for flags in 0u8..=0x1F {
            assert_length_table::<SpotCheckMeasurement>(flags, &spot_bytes(flags));
        }
    }

    #[test]
    fn continuous_every_flag_combination_has_its_length() {
        for flags in 0u8..=0x1F {
            assert_length_table::<ContinuousMeasurement>(flags, &continuous_bytes(flags));
        }
    }

    #[test]
    fn reserved_flag_bits_are_rejected() {
        for rfu in [0x20u8, 0x40, 0x80] {
            for base in [0u8, 0x1F] {
                let e = SpotCheckMeasurement::decode(&spot_bytes(base | rfu)).unwrap_err();
                assert!(
                    matches!(e, DecodeError::ReservedFlags { reserved, .. } if reserved == rfu),
                    "{e}"
                );
                let e = ContinuousMeasurement::decode(&continuous_bytes(base | rfu)).unwrap_err();
                assert!(
                    matches!(e, DecodeError::ReservedFlags { reserved, .. } if reserved == rfu),
                    "{e}"
                );
            }
        }
        assert!(matches!(
            SpotCheckMeasurement::decode(&[]),
            Err(DecodeError::Empty { .. })
        ));
        assert!(matches!(
            ContinuousMeasurement::decode(&[]),
            Err(DecodeError::Empty { .. })
        ));
    }

    #[test]
    fn features_support_fields_follow_bits_0_and_1() {
        for low in 0u16..=3 {
            // Reserved high bits and the other feature bits are kept raw.
            let s = 0xA5F0 | low;
            let mut b = s.to_le_bytes().to_vec();
            if low & 1 != 0 {
                b.extend_from_slice(&[0xe0, 0xff]);
            }
            if low & 2 != 0 {
                b.extend_from_slice(&[0xfe, 0xff, 0x00]);
            }
            let f = PlxFeatures::decode(&b).unwrap();
            assert_eq!(f.supported_features, s);
            assert_eq!(f.measurement_status_support.is_some(), low & 1 != 0);
            assert_eq!(f.device_sensor_status_support.is_some(), low & 2 != 0);
            assert_eq!(f.encode().unwrap(), b);
            assert!(PlxFeatures::decode(&b[..b.len() - 1]).is_err());
            let mut long = b.clone();
            long.push(0);
            assert!(PlxFeatures::decode(&long).is_err());
        }
        assert!(PlxFeatures::decode(&[]).is_err());
        assert!(PlxFeatures::decode(&[0x00]).is_err());
        let inconsistent = PlxFeatures {
            supported_features: 0x0001,
            measurement_status_support: None,
            device_sensor_status_support: None,
        };
        assert!(inconsistent.encode().is_err());
    }

    #[test]
    fn biased_exponent_trap_decodes_per_spec() {
        let m = SpotCheckMeasurement::decode(&[0x00, 0x62, 0x80, 0x48, 0x80]).unwrap();
        assert_eq!(m.spo2_pct.value(), Value::Number(Decimal::new(98, -8)));
        assert_eq!(
            m.pulse_rate_per_min.value(),
            Value::Number(Decimal::new(72, -8))
        );
    }

    #[test]
    fn spot_check_readings_carry_units_time_and_flags() {
        // Timestamp, measurement status, device & sensor status, clock not set.
        let b = [
            0x17, 0x62, 0x00, 0x48, 0x00, 0xe8, 0x07, 3, 1, 8, 30, 0, // SpO2 98, PR 72, time
            0x1f, 0xc0, // measurement status: bits 0-4 (RFU), 14, 15
            0x23, 0x80, 0xff, // device status: bits 0, 1, 5, 15, RFU 16-23
        ];
        let m = SpotCheckMeasurement::decode(&b).unwrap();
        let r = m.readings();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].kind, Kind::Spo2);
        assert_eq!(r[0].unit, Unit::Percent);
        assert_eq!(r[0].value, Value::Number(Decimal::new(98, 0)));
        assert_eq!(r[1].kind, Kind::PulseRate);
        assert_eq!(r[1].unit, Unit::PerMin);
        assert_eq!(r[1].value, Value::Number(Decimal::new(72, 0)));
        let t = LocalDateTime::new(2024, 3, 1, 8, 30, 0).unwrap();
        let want: BTreeSet<Flag> = [
            Flag::QuestionableMeasurement,
            Flag::InvalidMeasurement,
            Flag::EquipmentMalfunction,
            Flag::LowPerfusion,
            Flag::SensorDisconnected,
            Flag::DeviceClockNotSet,
        ]
        .into_iter()
        .collect();
        for x in &r {
            assert_eq!(x.device_time, Some(t));
            assert_eq!(x.flags, want);
            assert!(!x.is_alertable());
        }
        assert_eq!(m.encode().unwrap(), b);
    }

    #[test]
    fn every_status_bit_maps_to_its_flag() {
        let expect_meas = MEASUREMENT_STATUS_FLAGS;
        for (i, f) in (5u32..).zip(expect_meas) {
            let set = status_flags(Some(1 << i), None);
            assert_eq!(set, [f].into_iter().collect(), "measurement status bit {i}");
        }
        for i in 0..5 {
            assert!(status_flags(Some(1 << i), None).is_empty());
        }
        for (i, f) in (1u32..).zip(DEVICE_SENSOR_STATUS_FLAGS) {
            let set = status_flags(None, Some(1 << i));
            assert_eq!(set, [f].into_iter().collect(), "device status bit {i}");
        }
        assert!(status_flags(None, Some(0x00FF_0001)).is_empty());
    }

    #[test]
    fn continuous_readings_use_normal_values_only() {
        let b = continuous_bytes(0x1F);
        let m = ContinuousMeasurement::decode(&b).unwrap();
        let r = m.readings();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].value, Value::Number(Decimal::new(98, 0)));
        assert_eq!(r[1].value, Value::Number(Decimal::new(72, 0)));
        assert_eq!(r[0].device_time, None);
        // Measurement status 0x0100 = fully qualified; device status bit 1 = equipment malfunction.
        assert_eq!(
            r[0].flags,
            [Flag::FullyQualifiedData, Flag::EquipmentMalfunction]
                .into_iter()
                .collect()
        );
        let nan = ContinuousMeasurement::decode(&[0x00, 0xff, 0x07, 0xff, 0x07]).unwrap();
        assert!(nan
            .readings()
            .iter()
            .all(|x| x.value == Value::Special(Special::Nan)));
    }

    #[test]
    fn fields_view_names_status_bits() {
        let m = SpotCheckMeasurement::decode(&spot_bytes(0x06)).unwrap();
        let j = serde_json::to_value(m).unwrap();
        assert_eq!(j["spo2_pct"], 98.0);
        assert_eq!(j["measurement_status"]["set"][0], "measurement_ongoing");
        assert_eq!(
            j["device_sensor_status"]["set"][0],
            "low_perfusion_detected"
        );
    }

    fn u24() -> impl Strategy<Value = u32> {
        0u32..=U24_MAX
    }

    fn spo2pr() -> impl Strategy<Value = Spo2Pr> {
        (sfloat(), sfloat()).prop_map(|(spo2_pct, pulse_rate_per_min)| Spo2Pr {
            spo2_pct,
            pulse_rate_per_min,
        })
    }

    fn spot_check() -> impl Strategy<Value = SpotCheckMeasurement> {
        (
            sfloat(),
            sfloat(),
            proptest::option::of(date_time()),
            proptest::option::of(any::<u16>()),
            proptest::option::of(u24()),
            proptest::option::of(sfloat()),
            any::<bool>(),
        )
            .prop_map(|(s, p, t, m, d, pai, clock)| SpotCheckMeasurement {
                spo2_pct: s,
                pulse_rate_per_min: p,
                timestamp: t,
                measurement_status: m,
                device_sensor_status: d,
                pulse_amplitude_index_pct: pai,
                device_clock_not_set: clock,
            })
    }

    fn continuous() -> impl Strategy<Value = ContinuousMeasurement> {
        (
            sfloat(),
            sfloat(),
            proptest::option::of(spo2pr()),
            proptest::option::of(spo2pr()),
            proptest::option::of(any::<u16>()),
            proptest::option::of(u24()),
            proptest::option::of(sfloat()),
        )
            .prop_map(|(s, p, fast, slow, m, d, pai)| ContinuousMeasurement {
                spo2_pct: s,
                pulse_rate_per_min: p,
                fast,
                slow,
                measurement_status: m,
                device_sensor_status: d,
                pulse_amplitude_index_pct: pai,
            })
    }

    fn features() -> impl Strategy<Value = PlxFeatures> {
        (
            any::<u16>(),
            proptest::option::of(any::<u16>()),
            proptest::option::of(u24()),
        )
            .prop_map(|(s, m, d)| PlxFeatures {
                supported_features: (s & !0x3)
                    | u16::from(m.is_some())
                    | (u16::from(d.is_some()) << 1),
                measurement_status_support: m,
                device_sensor_status_support: d,
            })
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn spot_check_round_trips(x in spot_check()) {
            let b = x.encode().unwrap();
            prop_assert_eq!(SpotCheckMeasurement::decode(&b).unwrap(), x);
        }

        #[test]
        fn continuous_round_trips(x in continuous()) {
            let b = x.encode().unwrap();
            prop_assert_eq!(ContinuousMeasurement::decode(&b).unwrap(), x);
        }

        #[test]
        fn features_round_trip(x in features()) {
            let b = x.encode().unwrap();
            prop_assert_eq!(PlxFeatures::decode(&b).unwrap(), x);
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..24)) {
            let _ = SpotCheckMeasurement::decode(&b);
            let _ = ContinuousMeasurement::decode(&b);
            let _ = PlxFeatures::decode(&b);
        }
    }
}
