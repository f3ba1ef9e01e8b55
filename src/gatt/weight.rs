//! Weight Scale Service 0x181D: Weight Measurement 0x2A9D and Weight Scale Feature 0x2A9E.
//!
//! 0x2A9D (`ble-profiles.md` §7): `flags u8 | weight u16 | [timestamp 7B, bit 1] | [user id u8,
//! bit 2] | [BMI u16, height u16, bit 3]`; bit 0 is the measurement system (0 SI, 1 imperial), bits
//! 4–7 are RFU and rejected. The raw integers are kept; readings scale them exactly:
//! weight raw × 0.005 kg or raw × 0.01 lb, height raw × 0.001 m or raw × 0.1 in, BMI raw × 0.1 kg/m2.
//!
//! Interpretations:
//! - Weight 0xFFFF is "measurement unsuccessful" (in either system): the weight reading is
//!   `Value::Special(Nan)` flagged `MeasurementUnsuccessful`, and the BMI reading of the same
//!   measurement, derived from that failed weight, carries the flag too. Height (a user attribute) is
//!   not flagged. BMI and height have no special values; 0xFFFF there is an ordinary number.
//! - The raw unit is fixed; the feature resolution only says how many digits are meaningful, so the
//!   readings are not rounded to it.
//! - User id 0xFF ("unknown user") is kept raw: readings carry `user_id = Some(255)`.
//! - A timestamp with an unknown (0) year, month or day gives readings without a device time.
//! - Weight Scale Feature resolution codes past the table (weight 8..=15, height 4..=7) are reserved:
//!   they decode, are kept raw, and read as [`Resolution::Reserved`]. Bits 10–31 are reserved and
//!   kept.

use super::bytes::{bit, check_flags_length, check_length, check_reserved_flags, Reader, Writer};
use super::datetime::DateTime;
use super::error::{DecodeError, EncodeError};
use super::names::Bits;
use super::GattValue;
use crate::model::{Decimal, Flag, Kind, Reading, Special, Unit, Value};
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

/// WSS flags bit 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MeasurementSystem {
    /// kg and m.
    Si,
    /// lb and in.
    Imperial,
}

/// BMI and height (flags bit 3), raw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BmiHeight {
    /// 0.1 kg/m2.
    pub bmi_raw: u16,
    /// 0.001 m or 0.1 in.
    pub height_raw: u16,
}

/// Weight Measurement 0x2A9D.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WeightMeasurement {
    pub system: MeasurementSystem,
    /// 0.005 kg or 0.01 lb; 0xFFFF = measurement unsuccessful.
    pub weight_raw: u16,
    /// Flags bit 1.
    pub timestamp: Option<DateTime>,
    /// Flags bit 2; 0xFF is "unknown user".
    pub user_id: Option<u8>,
    /// Flags bit 3.
    pub bmi_height: Option<BmiHeight>,
}

/// Flags bits 4–7 are RFU.
const RESERVED_FLAGS: u8 = 0xF0;

/// The exact length the flags announce.
fn length_for(flags: u8) -> usize {
    let f = u32::from(flags);
    3 + if bit(f, 1) { DateTime::LEN } else { 0 }
        + if bit(f, 2) { 1 } else { 0 }
        + if bit(f, 3) { 4 } else { 0 }
}

impl WeightMeasurement {
    pub const WHAT: &'static str = <Self as GattValue>::NAME;
    /// The weight value that means "measurement unsuccessful".
    pub const UNSUCCESSFUL: u16 = 0xFFFF;

    /// The flags octet this value encodes with.
    pub fn flags(&self) -> u8 {
        let mut flags = 0u8;
        if self.system == MeasurementSystem::Imperial {
            flags |= 0x01;
        }
        if self.timestamp.is_some() {
            flags |= 0x02;
        }
        if self.user_id.is_some() {
            flags |= 0x04;
        }
        if self.bmi_height.is_some() {
            flags |= 0x08;
        }
        flags
    }

    pub fn is_unsuccessful(&self) -> bool {
        self.weight_raw == Self::UNSUCCESSFUL
    }

    /// The weight in [`Self::weight_unit`], exactly; `None` when the measurement was unsuccessful.
    pub fn weight(&self) -> Option<Decimal> {
        if self.is_unsuccessful() {
            return None;
        }
        let raw = i64::from(self.weight_raw);
        Some(match self.system {
            MeasurementSystem::Si => Decimal::new(raw * 5, -3),
            MeasurementSystem::Imperial => Decimal::new(raw, -2),
        })
    }

    pub fn weight_unit(&self) -> Unit {
        match self.system {
            MeasurementSystem::Si => Unit::Kg,
            MeasurementSystem::Imperial => Unit::Lb,
        }
    }

    /// BMI in kg/m2, exactly.
    pub fn bmi(&self) -> Option<Decimal> {
        self.bmi_height.map(|b| Decimal::new(b.bmi_raw.into(), -1))
    }

    /// Height in [`Self::height_unit`], exactly.
    pub fn height(&self) -> Option<Decimal> {
        self.bmi_height.map(|b| match self.system {
            MeasurementSystem::Si => Decimal::new(b.height_raw.into(), -3),
            MeasurementSystem::Imperial => Decimal::new(b.height_raw.into(), -1),
        })
    }

    pub fn height_unit(&self) -> Unit {
        match self.system {
            MeasurementSystem::Si => Unit::Metre,
            MeasurementSystem::Imperial => Unit::Inch,
        }
    }

    fn reading(&self, kind: Kind, value: Value, unit: Unit) -> Reading {
        let mut r = Reading::new(kind, value, unit);
        r.device_time = self.timestamp.and_then(|t| t.to_local());
        r.user_id = self.user_id;
        r
    }
}

/// A decimal as a JSON number in `fields`.
fn num(d: Option<Decimal>) -> Option<f64> {
    d.map(Decimal::to_f64)
}

impl Serialize for WeightMeasurement {
    /// Raw fields, plus the scaled values and their units for reading by eye.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("WeightMeasurement", 11)?;
        st.serialize_field("system", &self.system)?;
        st.serialize_field("weight_raw", &self.weight_raw)?;
        match self.weight() {
            Some(w) => st.serialize_field("weight", &w.to_f64())?,
            None => st.serialize_field("weight", "unsuccessful")?,
        }
        st.serialize_field("weight_unit", &self.weight_unit())?;
        st.serialize_field("timestamp", &self.timestamp)?;
        st.serialize_field("user_id", &self.user_id)?;
        st.serialize_field("bmi_raw", &self.bmi_height.map(|b| b.bmi_raw))?;
        st.serialize_field("bmi", &num(self.bmi()))?;
        st.serialize_field("height_raw", &self.bmi_height.map(|b| b.height_raw))?;
        st.serialize_field("height", &num(self.height()))?;
        st.serialize_field("height_unit", &self.height_unit())?;
        st.end()
    }
}

impl GattValue for WeightMeasurement {
    const UUID: u16 = 0x2A9D;
    const NAME: &'static str = "weight-measurement";

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let what = Self::WHAT;
        let mut r = Reader::new(what, bytes);
        let flags = r.u8().map_err(|_| DecodeError::Empty { what })?;
        check_reserved_flags(what, flags, RESERVED_FLAGS)?;
        check_flags_length(what, flags, length_for(flags), bytes.len())?;
        let f = u32::from(flags);
        let weight_raw = r.u16()?;
        let timestamp = if bit(f, 1) {
            Some(DateTime::read(&mut r)?)
        } else {
            None
        };
        let user_id = if bit(f, 2) { Some(r.u8()?) } else { None };
        let bmi_height = if bit(f, 3) {
            Some(BmiHeight {
                bmi_raw: r.u16()?,
                height_raw: r.u16()?,
            })
        } else {
            None
        };
        r.finish()?;
        Ok(WeightMeasurement {
            system: if bit(f, 0) {
                MeasurementSystem::Imperial
            } else {
                MeasurementSystem::Si
            },
            weight_raw,
            timestamp,
            user_id,
            bmi_height,
        })
    }

    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut w = Writer::new();
        w.u8(self.flags()).u16(self.weight_raw);
        if let Some(t) = &self.timestamp {
            t.write(&mut w);
        }
        if let Some(u) = self.user_id {
            w.u8(u);
        }
        if let Some(b) = self.bmi_height {
            w.u16(b.bmi_raw).u16(b.height_raw);
        }
        Ok(w.into_vec())
    }

    fn readings(&self) -> Vec<Reading> {
        let failed = self.is_unsuccessful();
        let weight = match self.weight() {
            Some(d) => Value::Number(d),
            None => Value::Special(Special::Nan),
        };
        let mut w = self.reading(Kind::BodyWeight, weight, self.weight_unit());
        if failed {
            w.flags.insert(Flag::MeasurementUnsuccessful);
        }
        let mut out = vec![w];
        if let (Some(bmi), Some(height)) = (self.bmi(), self.height()) {
            let mut b = self.reading(Kind::Bmi, Value::Number(bmi), Unit::KgPerM2);
            if failed {
                b.flags.insert(Flag::MeasurementUnsuccessful);
            }
            out.push(b);
            out.push(self.reading(Kind::Height, Value::Number(height), self.height_unit()));
        }
        out
    }
}

/// A resolution code of the Weight Scale Feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resolution {
    /// Code 0.
    NotSpecified,
    /// The step in SI (kg or m) and imperial (lb or in) units.
    Step { si: Decimal, imperial: Decimal },
    /// A code the spec reserves, kept raw.
    Reserved(u8),
}

/// One table row: the (SI, imperial) steps, each as (mantissa, exponent).
type Step = ((i64, i16), (i64, i16));

/// Weight resolution codes 1..=7: (kg, lb).
const WEIGHT_STEPS: [Step; 7] = [
    ((5, -1), (1, 0)),
    ((2, -1), (5, -1)),
    ((1, -1), (2, -1)),
    ((5, -2), (1, -1)),
    ((2, -2), (5, -2)),
    ((1, -2), (2, -2)),
    ((5, -3), (1, -2)),
];

/// Height resolution codes 1..=3: (m, in).
const HEIGHT_STEPS: [Step; 3] = [((1, -2), (1, 0)), ((5, -3), (5, -1)), ((1, -3), (1, -1))];

fn resolution(code: u8, table: &[Step]) -> Resolution {
    if code == 0 {
        return Resolution::NotSpecified;
    }
    match table.get(usize::from(code) - 1) {
        Some(((sm, se), (im, ie))) => Resolution::Step {
            si: Decimal::new(*sm, *se),
            imperial: Decimal::new(*im, *ie),
        },
        None => Resolution::Reserved(code),
    }
}

/// Names of the single-bit Weight Scale Feature flags; bits 3–9 are the resolution codes.
pub const FEATURE_BITS: [&str; 3] = [
    "timestamp_supported",
    "multiple_users_supported",
    "bmi_supported",
];

/// Weight Scale Feature 0x2A9E (u32, kept raw; bits 10–31 reserved).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WeightScaleFeature(pub u32);

impl WeightScaleFeature {
    pub fn timestamp_supported(&self) -> bool {
        bit(self.0, 0)
    }

    pub fn multiple_users_supported(&self) -> bool {
        bit(self.0, 1)
    }

    pub fn bmi_supported(&self) -> bool {
        bit(self.0, 2)
    }

    /// Bits 3–6, 0..=15 (8..=15 reserved).
    pub fn weight_resolution_code(&self) -> u8 {
        ((self.0 >> 3) & 0x0F) as u8
    }

    /// Bits 7–9, 0..=7 (4..=7 reserved).
    pub fn height_resolution_code(&self) -> u8 {
        ((self.0 >> 7) & 0x07) as u8
    }

    /// Weight resolution: `si` in kg, `imperial` in lb.
    pub fn weight_resolution(&self) -> Resolution {
        resolution(self.weight_resolution_code(), &WEIGHT_STEPS)
    }

    /// Height resolution: `si` in m, `imperial` in in.
    pub fn height_resolution(&self) -> Resolution {
        resolution(self.height_resolution_code(), &HEIGHT_STEPS)
    }
}

/// `{"code": 3, "name": "specified", "si": 0.1, "imperial": 0.2}`; `name` is `not_specified` for
/// code 0 and null for reserved codes.
struct ResolutionField(u8, Resolution);

impl Serialize for ResolutionField {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (name, si, imperial) = match self.1 {
            Resolution::NotSpecified => (Some("not_specified"), None, None),
            Resolution::Step { si, imperial } => (Some("specified"), Some(si), Some(imperial)),
            Resolution::Reserved(_) => (None, None, None),
        };
        let mut st = s.serialize_struct("Resolution", 4)?;
        st.serialize_field("code", &self.0)?;
        st.serialize_field("name", &name)?;
        st.serialize_field("si", &num(si))?;
        st.serialize_field("imperial", &num(imperial))?;
        st.end()
    }
}

impl Serialize for WeightScaleFeature {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // The resolution codes are fields, not flags: keep them out of `set`.
        let bits = Bits::new(self.0 & !0x0000_03F8, 32, &FEATURE_BITS);
        let mut st = s.serialize_struct("WeightScaleFeature", 4)?;
        st.serialize_field("raw", &self.0)?;
        st.serialize_field("set", &bits.set)?;
        st.serialize_field(
            "weight_resolution",
            &ResolutionField(self.weight_resolution_code(), self.weight_resolution()),
        )?;
        st.serialize_field(
            "height_resolution",
            &ResolutionField(self.height_resolution_code(), self.height_resolution()),
        )?;
        st.end()
    }
}

impl GattValue for WeightScaleFeature {
    const UUID: u16 = 0x2A9E;
    const NAME: &'static str = "weight-scale-feature";

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        check_length(Self::NAME, "4", bytes.len() == 4, bytes.len())?;
        Reader::new(Self::NAME, bytes).u32().map(WeightScaleFeature)
    }

    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        Ok(self.0.to_le_bytes().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gatt::testing::{config, date_time, payload};
    use proptest::prelude::*;

    fn measurement() -> impl Strategy<Value = WeightMeasurement> {
        (
            any::<bool>(),
            any::<u16>(),
            proptest::option::of(date_time()),
            proptest::option::of(any::<u8>()),
            proptest::option::of((any::<u16>(), any::<u16>())),
        )
            .prop_map(|(imperial, w, ts, user, bh)| WeightMeasurement {
                system: if imperial {
                    MeasurementSystem::Imperial
                } else {
                    MeasurementSystem::Si
                },
                weight_raw: w,
                timestamp: ts,
                user_id: user,
                bmi_height: bh.map(|(bmi_raw, height_raw)| BmiHeight {
                    bmi_raw,
                    height_raw,
                }),
            })
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn measurement_round_trips(m in measurement()) {
            let bytes = m.encode().unwrap();
            prop_assert_eq!(bytes.len(), length_for(m.flags()));
            let back = WeightMeasurement::decode(&bytes).unwrap();
            prop_assert_eq!(back, m);
            prop_assert_eq!(back.encode().unwrap(), bytes);
        }

        #[test]
        fn feature_round_trips(raw in any::<u32>()) {
            let f = WeightScaleFeature(raw);
            let bytes = f.encode().unwrap();
            let back = WeightScaleFeature::decode(&bytes).unwrap();
            prop_assert_eq!(back, f);
            prop_assert_eq!(back.encode().unwrap(), bytes);
            let _ = serde_json::to_value(back).unwrap();
        }

        /// Arbitrary bytes never panic, and whatever is accepted re-encodes to itself.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..20)) {
            if let Ok(m) = WeightMeasurement::decode(&bytes) {
                prop_assert_eq!(m.encode().unwrap(), bytes.clone());
                let _ = m.readings();
            }
            if let Ok(f) = WeightScaleFeature::decode(&bytes) {
                prop_assert_eq!(f.encode().unwrap(), bytes);
            }
        }
    }

    #[test]
    fn every_flag_combination_has_its_exact_length() {
        for flags in 0u8..=0x0F {
            let need = 3
                + 7 * usize::from(flags & 0x02 != 0)
                + usize::from(flags & 0x04 != 0)
                + 4 * usize::from(flags & 0x08 != 0);
            assert_eq!(length_for(flags), need);
            let ok = payload(flags, need);
            let m = WeightMeasurement::decode(&ok).unwrap();
            assert_eq!(m.flags(), flags);
            assert_eq!(m.encode().unwrap(), ok);
            for bad in [need - 1, need + 1] {
                assert_eq!(
                    WeightMeasurement::decode(&payload(flags, bad)).unwrap_err(),
                    DecodeError::FlagsLength {
                        what: WeightMeasurement::WHAT,
                        flags,
                        need,
                        got: bad
                    }
                );
            }
        }
        assert_eq!(
            WeightMeasurement::decode(&[0x0E, 0xA4, 0x38])
                .unwrap_err()
                .to_string(),
            "weight-measurement: flags 0x0E require 15 bytes, got 3"
        );
        assert!(matches!(
            WeightMeasurement::decode(&[]).unwrap_err(),
            DecodeError::Empty { .. }
        ));
    }

    #[test]
    fn reserved_flag_bits_are_rejected() {
        for rfu in (4..8).map(|b| 1u8 << b) {
            for flags in 0u8..=0x0F {
                assert_eq!(
                    WeightMeasurement::decode(&payload(flags | rfu, length_for(flags)))
                        .unwrap_err(),
                    DecodeError::ReservedFlags {
                        what: WeightMeasurement::WHAT,
                        flags: flags | rfu,
                        reserved: rfu
                    }
                );
            }
        }
    }

    fn n(m: i64, e: i16) -> Value {
        Value::Number(Decimal::new(m, e))
    }

    #[test]
    fn si_readings_scale_exactly() {
        // 72.5 kg (14500 × 0.005), timestamp, user 0xFF, BMI 23.7, height 1.750 m.
        let bytes = [
            0x0E, 0xA4, 0x38, 0xE8, 0x07, 0x01, 0x02, 0x03, 0x04, 0x05, 0xFF, 0xED, 0x00, 0xD6,
            0x06,
        ];
        let m = WeightMeasurement::decode(&bytes).unwrap();
        let rs = m.readings();
        let kinds: Vec<Kind> = rs.iter().map(|r| r.kind).collect();
        assert_eq!(kinds, [Kind::BodyWeight, Kind::Bmi, Kind::Height]);
        assert_eq!(rs[0].value, n(72500, -3));
        assert_eq!(rs[0].value.number().unwrap().to_string(), "72.500");
        assert_eq!(rs[0].unit, Unit::Kg);
        assert_eq!(rs[1].value, n(237, -1));
        assert_eq!(rs[1].unit, Unit::KgPerM2);
        assert_eq!(rs[2].value, n(1750, -3));
        assert_eq!(rs[2].unit, Unit::Metre);
        for r in &rs {
            assert_eq!(r.user_id, Some(0xFF));
            assert_eq!(
                r.device_time.map(|t| t.to_string()).as_deref(),
                Some("2024-01-02T03:04:05")
            );
            assert!(r.flags.is_empty());
        }
    }

    #[test]
    fn imperial_readings_scale_exactly() {
        // 150.00 lb, BMI 24.0, height 68.9 in.
        let m = WeightMeasurement::decode(&[0x09, 0x98, 0x3A, 0xF0, 0x00, 0xB1, 0x02]).unwrap();
        let rs = m.readings();
        assert_eq!(rs[0].value, n(15000, -2));
        assert_eq!(rs[0].unit, Unit::Lb);
        assert_eq!(rs[1].value, n(240, -1));
        assert_eq!(rs[1].unit, Unit::KgPerM2);
        assert_eq!(rs[2].value, n(689, -1));
        assert_eq!(rs[2].unit, Unit::Inch);
        assert!(rs
            .iter()
            .all(|r| r.device_time.is_none() && r.user_id.is_none()));
    }

    #[test]
    fn unsuccessful_weight_is_flagged_nan() {
        for flags in [0x00u8, 0x01] {
            let m = WeightMeasurement::decode(&[flags, 0xFF, 0xFF]).unwrap();
            assert!(m.is_unsuccessful());
            assert_eq!(m.weight(), None);
            let rs = m.readings();
            assert_eq!(rs.len(), 1);
            assert_eq!(rs[0].kind, Kind::BodyWeight);
            assert_eq!(rs[0].value, Value::Special(Special::Nan));
            assert!(rs[0].flags.contains(&Flag::MeasurementUnsuccessful));
            assert!(!rs[0].is_alertable());
        }
        let m = WeightMeasurement::decode(&[0x08, 0xFF, 0xFF, 0xF0, 0x00, 0xD6, 0x06]).unwrap();
        let rs = m.readings();
        assert!(rs[1].flags.contains(&Flag::MeasurementUnsuccessful));
        assert!(rs[2].flags.is_empty());
        assert_eq!(
            serde_json::to_value(m).unwrap()["weight"],
            serde_json::json!("unsuccessful")
        );
        // 0xFFFE is the largest real weight: 327.670 kg.
        let m = WeightMeasurement::decode(&[0x00, 0xFE, 0xFF]).unwrap();
        assert_eq!(m.weight(), Some(Decimal::new(327_670, -3)));
    }

    #[test]
    fn feature_accessors_and_resolutions() {
        // timestamp + BMI, weight code 7 (0.005 kg / 0.01 lb), height code 3 (0.001 m / 0.1 in).
        let raw = 0x01 | 0x04 | (7 << 3) | (3 << 7);
        let f = WeightScaleFeature::decode(&u32::to_le_bytes(raw)).unwrap();
        assert!(f.timestamp_supported() && f.bmi_supported() && !f.multiple_users_supported());
        assert_eq!(
            f.weight_resolution(),
            Resolution::Step {
                si: Decimal::new(5, -3),
                imperial: Decimal::new(1, -2)
            }
        );
        assert_eq!(
            f.height_resolution(),
            Resolution::Step {
                si: Decimal::new(1, -3),
                imperial: Decimal::new(1, -1)
            }
        );
        let want_weight = [
            "0.5/1",
            "0.2/0.5",
            "0.1/0.2",
            "0.05/0.1",
            "0.02/0.05",
            "0.01/0.02",
            "0.005/0.01",
        ];
        for (code, want) in (1u32..=7).zip(want_weight) {
            match WeightScaleFeature(code << 3).weight_resolution() {
                Resolution::Step { si, imperial } => {
                    assert_eq!(format!("{si}/{imperial}"), want)
                }
                other => panic!("weight code {code}: {other:?}"),
            }
        }
        for (code, want) in (1u32..=3).zip(["0.01/1", "0.005/0.5", "0.001/0.1"]) {
            match WeightScaleFeature(code << 7).height_resolution() {
                Resolution::Step { si, imperial } => {
                    assert_eq!(format!("{si}/{imperial}"), want)
                }
                other => panic!("height code {code}: {other:?}"),
            }
        }
        assert_eq!(
            WeightScaleFeature(0).weight_resolution(),
            Resolution::NotSpecified
        );
        assert_eq!(
            WeightScaleFeature(0).height_resolution(),
            Resolution::NotSpecified
        );
        for code in 8u32..=15 {
            let f = WeightScaleFeature(code << 3);
            assert_eq!(f.weight_resolution(), Resolution::Reserved(code as u8));
        }
        for code in 4u32..=7 {
            let f = WeightScaleFeature(code << 7);
            assert_eq!(f.height_resolution(), Resolution::Reserved(code as u8));
        }
        let json =
            serde_json::to_value(WeightScaleFeature(0x8000_0002 | (9 << 3) | (1 << 7))).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "raw": 0x8000_0002u32 | (9 << 3) | (1 << 7),
                "set": ["multiple_users_supported", "reserved_bit_31"],
                "weight_resolution": {"code": 9, "name": null, "si": null, "imperial": null},
                "height_resolution": {"code": 1, "name": "specified", "si": 0.01, "imperial": 1.0}
            })
        );
        assert!(WeightScaleFeature::decode(&[0, 0, 0]).is_err());
        assert!(WeightScaleFeature::decode(&[0, 0, 0, 0, 0]).is_err());
    }
}
