//! Blood Pressure Service 0x1810: Blood Pressure Measurement 0x2A35, Intermediate Cuff Pressure
//! 0x2A36 and Blood Pressure Feature 0x2A49.
//!
//! 0x2A35 and 0x2A36 share one layout (`ble-profiles.md` §3): `flags u8 | systolic SFLOAT |
//! diastolic SFLOAT | MAP SFLOAT | [timestamp 7B, bit 1] | [pulse rate SFLOAT, bit 2] | [user id u8,
//! bit 3] | [measurement status u16, bit 4]`; bit 0 is the unit (0 mmHg, 1 kPa), bits 5–7 are RFU and
//! rejected. Every field is kept raw, so a decoded value re-encodes to the bytes it came from.
//!
//! Interpretations:
//! - The mean arterial pressure is omitted from the readings when it is the SFLOAT NaN or the number
//!   0 (any exponent): cheap cuffs send either to mean "not computed". Every other special value
//!   (NRes, ±INF, reserved) in any slot gives a reading with `Value::Special`; systolic 0 is kept.
//! - The pulse rate is always in /min, whatever the pressure unit bit says.
//! - User id 0xFF ("unknown user") is kept raw: readings carry `user_id = Some(255)`.
//! - Measurement-status flags go on every reading of the measurement, the pulse rate included.
//!   Pulse-rate range code 3 is reserved and gives no flag; status bits 6–15 are RFU, kept raw in
//!   `fields` and ignored.
//! - A timestamp with an unknown (0) year, month or day gives readings without a device time.
//! - Intermediate Cuff Pressure: the systolic slot is the current cuff pressure (one `cuff_pressure`
//!   reading flagged `Intermediate`); the diastolic and MAP slots are unused — BLS says NaN, Nordic
//!   sends 0x0000 — so any value is accepted and kept raw in `fields`. A pulse rate in an ICP is kept
//!   in `fields` but gives no reading (the cuff is still inflating).
//!
//! Size: the code is about 490 lines; the file passes 800 only with its table tests, kept
//! beside the fields they check (one profile, one file).

use super::bytes::{bit, check_flags_length, check_length, check_reserved_flags, Reader, Writer};
use super::datetime::DateTime;
use super::error::{DecodeError, EncodeError};
use super::float::SFloat;
use super::names::{Bits, Code};
use super::GattValue;
use crate::model::{Flag, Kind, Reading, Special, Unit, Value};
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

/// BLS flags bit 0: the unit of the three pressure slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum PressureUnit {
    #[serde(rename = "mmHg")]
    MmHg,
    #[serde(rename = "kPa")]
    KPa,
}

impl PressureUnit {
    /// The model (UCUM) unit.
    pub fn unit(&self) -> Unit {
        match self {
            PressureUnit::MmHg => Unit::MmHg,
            PressureUnit::KPa => Unit::KPa,
        }
    }
}

/// Names of the single-bit Measurement Status flags; bits 3–4 are the pulse-rate range field.
pub const STATUS_BITS: [&str; 6] = [
    "body_movement",
    "cuff_too_loose",
    "irregular_pulse",
    "",
    "",
    "improper_measurement_position",
];

/// The two-bit pulse-rate range field of the Measurement Status (bits 3–4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PulseRateRange {
    InRange,
    AboveUpperLimit,
    BelowLowerLimit,
    /// Code 3, which BLS reserves.
    Reserved,
}

/// BLS Measurement Status (u16, flags bit 4), kept raw; bits 6–15 are RFU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MeasurementStatus(pub u16);

impl MeasurementStatus {
    pub fn body_movement(&self) -> bool {
        bit(self.0.into(), 0)
    }

    pub fn cuff_too_loose(&self) -> bool {
        bit(self.0.into(), 1)
    }

    pub fn irregular_pulse(&self) -> bool {
        bit(self.0.into(), 2)
    }

    /// The raw pulse-rate range code, 0..=3.
    pub fn pulse_rate_range_code(&self) -> u8 {
        ((self.0 >> 3) & 0x3) as u8
    }

    pub fn pulse_rate_range(&self) -> PulseRateRange {
        match self.pulse_rate_range_code() {
            0 => PulseRateRange::InRange,
            1 => PulseRateRange::AboveUpperLimit,
            2 => PulseRateRange::BelowLowerLimit,
            _ => PulseRateRange::Reserved,
        }
    }

    pub fn improper_measurement_position(&self) -> bool {
        bit(self.0.into(), 5)
    }

    /// The model flags these status bits mean (RFU bits and range code 3 give none).
    pub fn flags(&self) -> Vec<Flag> {
        let mut out = Vec::new();
        if self.body_movement() {
            out.push(Flag::BodyMovement);
        }
        if self.cuff_too_loose() {
            out.push(Flag::CuffTooLoose);
        }
        if self.irregular_pulse() {
            out.push(Flag::IrregularPulse);
        }
        match self.pulse_rate_range() {
            PulseRateRange::AboveUpperLimit => out.push(Flag::PulseRateAboveRange),
            PulseRateRange::BelowLowerLimit => out.push(Flag::PulseRateBelowRange),
            PulseRateRange::InRange | PulseRateRange::Reserved => {}
        }
        if self.improper_measurement_position() {
            out.push(Flag::ImproperMeasurementPosition);
        }
        out
    }
}

impl Serialize for MeasurementStatus {
    /// `{"raw": 39, "set": ["body_movement", …], "pulse_rate_range": {"code": 0, "name": "in_range"}}`.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Bits 3–4 are a code, not two flags: keep them out of `set`.
        let bits = Bits::new(u32::from(self.0 & !0x0018), 16, &STATUS_BITS);
        let range = Code {
            code: self.pulse_rate_range_code().into(),
            name: match self.pulse_rate_range() {
                PulseRateRange::InRange => Some("in_range"),
                PulseRateRange::AboveUpperLimit => Some("above_upper_limit"),
                PulseRateRange::BelowLowerLimit => Some("below_lower_limit"),
                PulseRateRange::Reserved => None,
            },
        };
        let mut st = s.serialize_struct("MeasurementStatus", 3)?;
        st.serialize_field("raw", &self.0)?;
        st.serialize_field("set", &bits.set)?;
        st.serialize_field("pulse_rate_range", &range)?;
        st.end()
    }
}

/// The wire layout 0x2A35 and 0x2A36 share, with neutral slot names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    unit: PressureUnit,
    slot1: SFloat,
    slot2: SFloat,
    slot3: SFloat,
    timestamp: Option<DateTime>,
    pulse_rate: Option<SFloat>,
    user_id: Option<u8>,
    status: Option<MeasurementStatus>,
}

/// Flags bits 5–7 are RFU.
const RESERVED_FLAGS: u8 = 0xE0;

/// The exact length the flags announce.
fn length_for(flags: u8) -> usize {
    let f = u32::from(flags);
    7 + if bit(f, 1) { DateTime::LEN } else { 0 }
        + if bit(f, 2) { 2 } else { 0 }
        + if bit(f, 3) { 1 } else { 0 }
        + if bit(f, 4) { 2 } else { 0 }
}

impl Layout {
    fn decode(what: &'static str, bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(what, bytes);
        let flags = r.u8().map_err(|_| DecodeError::Empty { what })?;
        check_reserved_flags(what, flags, RESERVED_FLAGS)?;
        check_flags_length(what, flags, length_for(flags), bytes.len())?;
        let f = u32::from(flags);
        let unit = if bit(f, 0) {
            PressureUnit::KPa
        } else {
            PressureUnit::MmHg
        };
        let slot1 = r.sfloat()?;
        let slot2 = r.sfloat()?;
        let slot3 = r.sfloat()?;
        let timestamp = if bit(f, 1) {
            Some(DateTime::read(&mut r)?)
        } else {
            None
        };
        let pulse_rate = if bit(f, 2) { Some(r.sfloat()?) } else { None };
        let user_id = if bit(f, 3) { Some(r.u8()?) } else { None };
        let status = if bit(f, 4) {
            Some(MeasurementStatus(r.u16()?))
        } else {
            None
        };
        r.finish()?;
        Ok(Layout {
            unit,
            slot1,
            slot2,
            slot3,
            timestamp,
            pulse_rate,
            user_id,
            status,
        })
    }

    fn flags(&self) -> u8 {
        let mut flags = 0u8;
        if self.unit == PressureUnit::KPa {
            flags |= 0x01;
        }
        if self.timestamp.is_some() {
            flags |= 0x02;
        }
        if self.pulse_rate.is_some() {
            flags |= 0x04;
        }
        if self.user_id.is_some() {
            flags |= 0x08;
        }
        if self.status.is_some() {
            flags |= 0x10;
        }
        flags
    }

    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(self.flags())
            .sfloat(self.slot1)
            .sfloat(self.slot2)
            .sfloat(self.slot3);
        if let Some(t) = &self.timestamp {
            t.write(&mut w);
        }
        if let Some(p) = self.pulse_rate {
            w.sfloat(p);
        }
        if let Some(u) = self.user_id {
            w.u8(u);
        }
        if let Some(s) = self.status {
            w.u16(s.0);
        }
        w.into_vec()
    }

    /// A reading with the time, user and status flags every reading of this value carries.
    fn reading(&self, kind: Kind, value: SFloat, unit: Unit) -> Reading {
        let mut r = Reading::new(kind, value.value(), unit);
        r.device_time = self.timestamp.and_then(|t| t.to_local());
        r.user_id = self.user_id;
        if let Some(s) = self.status {
            r.flags.extend(s.flags());
        }
        r
    }
}

/// Whether a MAP slot holds a computed value: NaN and the number 0 mean "not computed".
fn map_computed(map: SFloat) -> bool {
    match map.value() {
        Value::Special(Special::Nan) => false,
        Value::Number(d) => d.mantissa != 0,
        Value::Special(_) => true,
    }
}

/// Blood Pressure Measurement 0x2A35.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct BloodPressureMeasurement {
    pub unit: PressureUnit,
    pub systolic: SFloat,
    pub diastolic: SFloat,
    pub mean_arterial_pressure: SFloat,
    /// Flags bit 1.
    pub timestamp: Option<DateTime>,
    /// Flags bit 2, beats per minute.
    pub pulse_rate: Option<SFloat>,
    /// Flags bit 3; 0xFF is "unknown user".
    pub user_id: Option<u8>,
    /// Flags bit 4.
    pub measurement_status: Option<MeasurementStatus>,
}

impl BloodPressureMeasurement {
    pub const WHAT: &'static str = <Self as GattValue>::NAME;

    /// The flags octet this value encodes with.
    pub fn flags(&self) -> u8 {
        self.layout().flags()
    }

    fn layout(&self) -> Layout {
        Layout {
            unit: self.unit,
            slot1: self.systolic,
            slot2: self.diastolic,
            slot3: self.mean_arterial_pressure,
            timestamp: self.timestamp,
            pulse_rate: self.pulse_rate,
            user_id: self.user_id,
            status: self.measurement_status,
        }
    }
}

impl GattValue for BloodPressureMeasurement {
    const UUID: u16 = 0x2A35;
    const NAME: &'static str = "blood-pressure-measurement";

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let l = Layout::decode(Self::WHAT, bytes)?;
        Ok(BloodPressureMeasurement {
            unit: l.unit,
            systolic: l.slot1,
            diastolic: l.slot2,
            mean_arterial_pressure: l.slot3,
            timestamp: l.timestamp,
            pulse_rate: l.pulse_rate,
            user_id: l.user_id,
            measurement_status: l.status,
        })
    }

    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        Ok(self.layout().encode())
    }

    fn readings(&self) -> Vec<Reading> {
        let l = self.layout();
        let unit = self.unit.unit();
        let mut out = vec![
            l.reading(Kind::Systolic, self.systolic, unit),
            l.reading(Kind::Diastolic, self.diastolic, unit),
        ];
        if map_computed(self.mean_arterial_pressure) {
            out.push(l.reading(
                Kind::MeanArterialPressure,
                self.mean_arterial_pressure,
                unit,
            ));
        }
        if let Some(p) = self.pulse_rate {
            out.push(l.reading(Kind::PulseRate, p, Unit::PerMin));
        }
        out
    }
}

/// Intermediate Cuff Pressure 0x2A36: the BPM layout with the current cuff pressure in the
/// systolic slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct IntermediateCuffPressure {
    pub unit: PressureUnit,
    pub cuff_pressure: SFloat,
    /// The diastolic slot, unused in an ICP; kept raw.
    pub unused_diastolic: SFloat,
    /// The MAP slot, unused in an ICP; kept raw.
    pub unused_mean_arterial_pressure: SFloat,
    pub timestamp: Option<DateTime>,
    pub pulse_rate: Option<SFloat>,
    pub user_id: Option<u8>,
    pub measurement_status: Option<MeasurementStatus>,
}

impl IntermediateCuffPressure {
    pub const WHAT: &'static str = <Self as GattValue>::NAME;

    /// The flags octet this value encodes with.
    pub fn flags(&self) -> u8 {
        self.layout().flags()
    }

    fn layout(&self) -> Layout {
        Layout {
            unit: self.unit,
            slot1: self.cuff_pressure,
            slot2: self.unused_diastolic,
            slot3: self.unused_mean_arterial_pressure,
            timestamp: self.timestamp,
            pulse_rate: self.pulse_rate,
            user_id: self.user_id,
            status: self.measurement_status,
        }
    }
}

impl GattValue for IntermediateCuffPressure {
    const UUID: u16 = 0x2A36;
    const NAME: &'static str = "intermediate-cuff-pressure";

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let l = Layout::decode(Self::WHAT, bytes)?;
        Ok(IntermediateCuffPressure {
            unit: l.unit,
            cuff_pressure: l.slot1,
            unused_diastolic: l.slot2,
            unused_mean_arterial_pressure: l.slot3,
            timestamp: l.timestamp,
            pulse_rate: l.pulse_rate,
            user_id: l.user_id,
            measurement_status: l.status,
        })
    }

    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        Ok(self.layout().encode())
    }

    fn readings(&self) -> Vec<Reading> {
        let mut r = self
            .layout()
            .reading(Kind::CuffPressure, self.cuff_pressure, self.unit.unit());
        r.flags.insert(Flag::Intermediate);
        vec![r]
    }
}

/// Names of the Blood Pressure Feature bits (0x2A49).
pub const FEATURE_BITS: [&str; 6] = [
    "body_movement_detection",
    "cuff_fit_detection",
    "irregular_pulse_detection",
    "pulse_rate_range_detection",
    "measurement_position_detection",
    "multiple_bond",
];

/// Blood Pressure Feature 0x2A49 (u16 bit field; bits 6–15 reserved, kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BloodPressureFeature(pub u16);

impl BloodPressureFeature {
    pub fn has(&self, bit_no: u32) -> bool {
        bit(self.0.into(), bit_no)
    }
    pub fn body_movement_detection(&self) -> bool {
        self.has(0)
    }
    pub fn cuff_fit_detection(&self) -> bool {
        self.has(1)
    }
    pub fn irregular_pulse_detection(&self) -> bool {
        self.has(2)
    }
    pub fn pulse_rate_range_detection(&self) -> bool {
        self.has(3)
    }
    pub fn measurement_position_detection(&self) -> bool {
        self.has(4)
    }
    pub fn multiple_bond(&self) -> bool {
        self.has(5)
    }
}

impl Serialize for BloodPressureFeature {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Bits::new(self.0.into(), 16, &FEATURE_BITS).serialize(s)
    }
}

impl GattValue for BloodPressureFeature {
    const UUID: u16 = 0x2A49;
    const NAME: &'static str = "blood-pressure-feature";

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        check_length(Self::NAME, "2", bytes.len() == 2, bytes.len())?;
        Reader::new(Self::NAME, bytes)
            .u16()
            .map(BloodPressureFeature)
    }

    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        Ok(self.0.to_le_bytes().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gatt::testing::{config, date_time, payload, sfloat};
    use crate::model::Decimal;
    use proptest::prelude::*;

    fn unit() -> impl Strategy<Value = PressureUnit> {
        prop_oneof![Just(PressureUnit::MmHg), Just(PressureUnit::KPa)]
    }

    fn bpm() -> impl Strategy<Value = BloodPressureMeasurement> {
        (
            unit(),
            sfloat(),
            sfloat(),
            sfloat(),
            proptest::option::of(date_time()),
            proptest::option::of(sfloat()),
            proptest::option::of(any::<u8>()),
            proptest::option::of(any::<u16>().prop_map(MeasurementStatus)),
        )
            .prop_map(|(unit, sys, dia, map, ts, pulse, user, status)| {
                BloodPressureMeasurement {
                    unit,
                    systolic: sys,
                    diastolic: dia,
                    mean_arterial_pressure: map,
                    timestamp: ts,
                    pulse_rate: pulse,
                    user_id: user,
                    measurement_status: status,
                }
            })
    }

    fn icp() -> impl Strategy<Value = IntermediateCuffPressure> {
        bpm().prop_map(|b| IntermediateCuffPressure {
            unit: b.unit,
            cuff_pressure: b.systolic,
            unused_diastolic: b.diastolic,
            unused_mean_arterial_pressure: b.mean_arterial_pressure,
            timestamp: b.timestamp,
            pulse_rate: b.pulse_rate,
            user_id: b.user_id,
            measurement_status: b.measurement_status,
        })
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn bpm_round_trips(m in bpm()) {
            let bytes = m.encode().unwrap();
            prop_assert_eq!(bytes.len(), length_for(m.flags()));
            let back = BloodPressureMeasurement::decode(&bytes).unwrap();
            prop_assert_eq!(back, m);
            prop_assert_eq!(back.encode().unwrap(), bytes);
        }

        #[test]
        fn icp_round_trips(m in icp()) {
            let bytes = m.encode().unwrap();
            let back = IntermediateCuffPressure::decode(&bytes).unwrap();
            prop_assert_eq!(back, m);
            prop_assert_eq!(back.encode().unwrap(), bytes);
        }

        #[test]
        fn feature_round_trips(raw in any::<u16>()) {
            let f = BloodPressureFeature(raw);
            let bytes = f.encode().unwrap();
            let back = BloodPressureFeature::decode(&bytes).unwrap();
            prop_assert_eq!(back, f);
            prop_assert_eq!(back.encode().unwrap(), bytes);
        }

        /// Arbitrary bytes never panic, and whatever is accepted re-encodes to itself.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..24)) {
            if let Ok(m) = BloodPressureMeasurement::decode(&bytes) {
                prop_assert_eq!(m.encode().unwrap(), bytes.clone());
                let _ = m.readings();
            }
            if let Ok(m) = IntermediateCuffPressure::decode(&bytes) {
                prop_assert_eq!(m.encode().unwrap(), bytes.clone());
                let _ = m.readings();
            }
            if let Ok(f) = BloodPressureFeature::decode(&bytes) {
                prop_assert_eq!(f.encode().unwrap(), bytes);
            }
        }
    }

    #[test]
    fn every_flag_combination_has_its_exact_length() {
        for flags in 0u8..=0x1F {
            let need = length_for(flags);
            let expected_len = 7
                + 7 * usize::from(flags & 0x02 != 0)
                + 2 * usize::from(flags & 0x04 != 0)
                + usize::from(flags & 0x08 != 0)
                + 2 * usize::from(flags & 0x10 != 0);
            assert_eq!(need, expected_len, "flags {flags:#04x}");
            let ok = payload(flags, need);
            let m = BloodPressureMeasurement::decode(&ok).unwrap();
            assert_eq!(m.flags(), flags);
            assert_eq!(m.encode().unwrap(), ok);
            let i = IntermediateCuffPressure::decode(&ok).unwrap();
            assert_eq!(i.encode().unwrap(), ok);
            for bad in [need - 1, need + 1] {
                let e = BloodPressureMeasurement::decode(&payload(flags, bad)).unwrap_err();
                assert_eq!(
                    e,
                    DecodeError::FlagsLength {
                        what: BloodPressureMeasurement::WHAT,
                        flags,
                        need,
                        got: bad
                    }
                );
                let e = IntermediateCuffPressure::decode(&payload(flags, bad)).unwrap_err();
                assert!(
                    matches!(e, DecodeError::FlagsLength { what, .. } if what == IntermediateCuffPressure::WHAT)
                );
            }
        }
    }

    #[test]
    fn flags_length_error_names_the_numbers() {
        let e = BloodPressureMeasurement::decode(&payload(0x1E, 15)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "blood-pressure-measurement: flags 0x1E require 19 bytes, got 15"
        );
        assert_eq!(
            BloodPressureMeasurement::decode(&[]).unwrap_err(),
            DecodeError::Empty {
                what: BloodPressureMeasurement::WHAT
            }
        );
    }

    #[test]
    fn reserved_flag_bits_are_rejected() {
        for rfu in [0x20u8, 0x40, 0x80] {
            for flags in 0u8..=0x1F {
                let f = flags | rfu;
                let p = payload(f, length_for(flags));
                assert_eq!(
                    BloodPressureMeasurement::decode(&p).unwrap_err(),
                    DecodeError::ReservedFlags {
                        what: BloodPressureMeasurement::WHAT,
                        flags: f,
                        reserved: rfu
                    }
                );
                assert!(matches!(
                    IntermediateCuffPressure::decode(&p).unwrap_err(),
                    DecodeError::ReservedFlags { .. }
                ));
            }
        }
    }

    #[test]
    fn bad_timestamp_is_out_of_range() {
        // flags 0x02, timestamp month 13.
        let p = [0x02, 0, 0, 0, 0, 0, 0, 0xE8, 0x07, 13, 1, 0, 0, 0];
        assert!(matches!(
            BloodPressureMeasurement::decode(&p).unwrap_err(),
            DecodeError::OutOfRange { .. }
        ));
    }

    fn num(m: i64, e: i16) -> Value {
        Value::Number(Decimal::new(m, e))
    }

    fn full(map: SFloat) -> BloodPressureMeasurement {
        BloodPressureMeasurement {
            unit: PressureUnit::MmHg,
            systolic: SFloat::from_raw(0x0079),  // 121
            diastolic: SFloat::from_raw(0x0051), // 81
            mean_arterial_pressure: map,
            timestamp: Some(DateTime {
                year: 2024,
                month: 5,
                day: 6,
                hour: 7,
                minute: 8,
                second: 9,
            }),
            pulse_rate: Some(SFloat::from_raw(0x0048)), // 72
            user_id: Some(0xFF),
            // body movement, irregular pulse, range code 1 (above), improper position, RFU bit 9.
            measurement_status: Some(MeasurementStatus(
                0x0001 | 0x0004 | 0x0008 | 0x0020 | 0x0200,
            )),
        }
    }

    #[test]
    fn readings_carry_units_time_user_and_status() {
        let m = full(SFloat::from_raw(0x005F)); // MAP 95
        let rs = m.readings();
        let kinds: Vec<Kind> = rs.iter().map(|r| r.kind).collect();
        assert_eq!(
            kinds,
            [
                Kind::Systolic,
                Kind::Diastolic,
                Kind::MeanArterialPressure,
                Kind::PulseRate
            ]
        );
        assert_eq!(rs[0].value, num(121, 0));
        assert_eq!(rs[1].value, num(81, 0));
        assert_eq!(rs[2].value, num(95, 0));
        assert_eq!(rs[3].value, num(72, 0));
        assert_eq!(rs[0].unit, Unit::MmHg);
        assert_eq!(rs[3].unit, Unit::PerMin);
        let want: std::collections::BTreeSet<Flag> = [
            Flag::BodyMovement,
            Flag::IrregularPulse,
            Flag::PulseRateAboveRange,
            Flag::ImproperMeasurementPosition,
        ]
        .into_iter()
        .collect();
        for r in &rs {
            assert_eq!(r.flags, want, "{:?}", r.kind);
            assert_eq!(r.user_id, Some(0xFF));
            assert_eq!(
                r.device_time.map(|t| t.to_string()).as_deref(),
                Some("2024-05-06T07:08:09")
            );
        }
    }

    #[test]
    fn status_pulse_range_codes() {
        assert_eq!(
            MeasurementStatus(0x0008).flags(),
            [Flag::PulseRateAboveRange]
        );
        assert_eq!(
            MeasurementStatus(0x0010).flags(),
            [Flag::PulseRateBelowRange]
        );
        assert_eq!(
            MeasurementStatus(0x0018).pulse_rate_range(),
            PulseRateRange::Reserved
        );
        assert!(MeasurementStatus(0x0018).flags().is_empty());
        assert!(MeasurementStatus(0xFFC0).flags().is_empty());
        assert_eq!(MeasurementStatus(0x0002).flags(), [Flag::CuffTooLoose]);
        let json = serde_json::to_value(MeasurementStatus(0x0227)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "raw": 0x0227,
                "set": ["body_movement", "cuff_too_loose", "irregular_pulse", "improper_measurement_position", "reserved_bit_9"],
                "pulse_rate_range": {"code": 0, "name": "in_range"}
            })
        );
    }

    #[test]
    fn map_omitted_when_nan_or_zero() {
        for raw in [0x07FF, 0x0000, 0xF000, 0x2000] {
            let kinds: Vec<Kind> = full(SFloat::from_raw(raw))
                .readings()
                .iter()
                .map(|r| r.kind)
                .collect();
            assert!(
                !kinds.contains(&Kind::MeanArterialPressure),
                "MAP {raw:#06x}"
            );
            assert_eq!(kinds.len(), 3);
        }
        // Other specials stay, as special values.
        let rs = full(SFloat::NRES).readings();
        assert_eq!(rs[2].kind, Kind::MeanArterialPressure);
        assert_eq!(rs[2].value, Value::Special(Special::NRes));
    }

    #[test]
    fn kpa_and_specials_and_minimal() {
        // Nordic: 18.9 / 11.0 / 15.9 mmHg (raw SFLOAT with exponent −1 and 0).
        let m =
            BloodPressureMeasurement::decode(&[0x00, 0xBD, 0xF0, 0x0B, 0x00, 0x9F, 0xF0]).unwrap();
        let rs = m.readings();
        assert_eq!(rs.len(), 3);
        assert_eq!(rs[0].value, num(189, -1));
        assert_eq!(rs[1].value, num(11, 0));
        assert_eq!(rs[2].value, num(159, -1));
        assert!(rs
            .iter()
            .all(|r| r.device_time.is_none() && r.user_id.is_none() && r.flags.is_empty()));
        let m =
            BloodPressureMeasurement::decode(&[0x01, 0xFF, 0x07, 0x6F, 0xF0, 0x00, 0x00]).unwrap();
        let rs = m.readings();
        assert_eq!(m.unit, PressureUnit::KPa);
        assert_eq!(rs[0].value, Value::Special(Special::Nan));
        assert_eq!(rs[0].unit, Unit::KPa);
        assert_eq!(rs[1].value, num(111, -1));
        assert_eq!(rs.len(), 2);
    }

    #[test]
    fn unknown_date_gives_no_device_time() {
        let mut m = full(SFloat::NAN);
        m.timestamp = Some(DateTime {
            year: 0,
            month: 4,
            day: 17,
            hour: 20,
            minute: 41,
            second: 59,
        });
        assert!(m.readings().iter().all(|r| r.device_time.is_none()));
    }

    #[test]
    fn icp_gives_one_intermediate_cuff_reading() {
        let bytes = [
            0x1E, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x11, 0x14, 0x29, 0x3B,
            0x3C, 0x00, 0x01, 0x27, 0x00,
        ];
        let m = IntermediateCuffPressure::decode(&bytes).unwrap();
        let rs = m.readings();
        assert_eq!(rs.len(), 1);
        let r = &rs[0];
        assert_eq!(r.kind, Kind::CuffPressure);
        assert_eq!(r.value, num(4, 0));
        assert_eq!(r.unit, Unit::MmHg);
        assert_eq!(r.user_id, Some(1));
        assert!(r.device_time.is_none()); // year 0
        let want: std::collections::BTreeSet<Flag> = [
            Flag::Intermediate,
            Flag::BodyMovement,
            Flag::CuffTooLoose,
            Flag::IrregularPulse,
            Flag::ImproperMeasurementPosition,
        ]
        .into_iter()
        .collect();
        assert_eq!(r.flags, want);
        assert!(!r.is_alertable());
    }

    #[test]
    fn feature_bits_and_length() {
        let f = BloodPressureFeature::decode(&[0x21, 0x80]).unwrap();
        assert!(f.body_movement_detection() && f.multiple_bond());
        assert!(!f.cuff_fit_detection() && !f.irregular_pulse_detection());
        assert!(!f.pulse_rate_range_detection() && !f.measurement_position_detection());
        assert_eq!(
            serde_json::to_value(f).unwrap(),
            serde_json::json!({"raw": 0x8021, "set": ["body_movement_detection", "multiple_bond", "reserved_bit_15"]})
        );
        assert!(BloodPressureFeature::decode(&[0x01]).is_err());
        assert!(BloodPressureFeature::decode(&[0x01, 0, 0]).is_err());
    }
}
