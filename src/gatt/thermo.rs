//! Health Thermometer Service 0x1809: Temperature Measurement 0x2A1C, Temperature Type 0x2A1D and
//! Intermediate Temperature 0x2A1E.
//!
//! 0x2A1C and 0x2A1E share one layout (`ble-profiles.md` §6): `flags u8 | temperature FLOAT (32-bit) |
//! [timestamp 7B, bit 1] | [temperature type u8, bit 2]`; bit 0 is the unit (0 °C, 1 °F), bits 3–7
//! are RFU and rejected. The FLOAT is kept raw, so a decoded value re-encodes to its bytes.
//!
//! Interpretations:
//! - A special FLOAT (NaN, NRes, ±INF, reserved) gives a reading with `Value::Special`.
//! - Temperature-type codes outside 1..=9 (in 0x2A1C or 0x2A1D) are reserved: kept raw, no name, no
//!   body site, never an error.
//! - HTS lets a sensor give the type either per measurement or once in 0x2A1D: the measurement's own
//!   type wins; [`TemperatureMeasurement::readings_with_type`] fills the body site from a 0x2A1D value
//!   read separately when the measurement has none.
//! - A timestamp with an unknown (0) year, month or day gives a reading without a device time.
//! - Intermediate Temperature readings carry `Flag::Intermediate` (the value is still settling).

use super::bytes::{bit, check_flags_length, check_length, check_reserved_flags, Reader, Writer};
use super::datetime::DateTime;
use super::error::{DecodeError, EncodeError};
use super::float::Float;
use super::names::Code;
use super::GattValue;
use crate::model::{BodySite, Flag, Kind, Reading, Unit};
use serde::{Serialize, Serializer};

/// HTS flags bit 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum TemperatureUnit {
    #[serde(rename = "C")]
    Celsius,
    #[serde(rename = "F")]
    Fahrenheit,
}

impl TemperatureUnit {
    /// The model (UCUM) unit.
    pub fn unit(&self) -> Unit {
        match self {
            TemperatureUnit::Celsius => Unit::Cel,
            TemperatureUnit::Fahrenheit => Unit::DegF,
        }
    }
}

/// A Temperature Type code (0x2A1D, and the optional field of 0x2A1C/0x2A1E), kept raw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TemperatureType(pub u8);

impl TemperatureType {
    /// The `fields` name of the code, `None` for reserved codes.
    pub fn name(&self) -> Option<&'static str> {
        Some(match self.0 {
            1 => "armpit",
            2 => "body",
            3 => "ear",
            4 => "finger",
            5 => "gastro_intestinal_tract",
            6 => "mouth",
            7 => "rectum",
            8 => "toe",
            9 => "tympanum",
            _ => return None,
        })
    }

    /// The description the SIG assigns to the code.
    pub fn description(&self) -> Option<&'static str> {
        Some(match self.0 {
            1 => "Armpit",
            2 => "Body (general)",
            3 => "Ear (usually ear lobe)",
            4 => "Finger",
            5 => "Gastro-intestinal Tract",
            6 => "Mouth",
            7 => "Rectum",
            8 => "Toe",
            9 => "Tympanum (ear drum)",
            _ => return None,
        })
    }

    pub fn body_site(&self) -> Option<BodySite> {
        use BodySite::*;
        Some(match self.0 {
            1 => Armpit,
            2 => Body,
            3 => Ear,
            4 => Finger,
            5 => GastroIntestinalTract,
            6 => Mouth,
            7 => Rectum,
            8 => Toe,
            9 => Tympanum,
            _ => return None,
        })
    }
}

impl Serialize for TemperatureType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Code {
            code: self.0.into(),
            name: self.name(),
        }
        .serialize(s)
    }
}

impl GattValue for TemperatureType {
    const UUID: u16 = 0x2A1D;
    const NAME: &'static str = "temperature-type";

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        check_length(Self::NAME, "1", bytes.len() == 1, bytes.len())?;
        Reader::new(Self::NAME, bytes).u8().map(TemperatureType)
    }

    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        Ok(vec![self.0])
    }
}

/// Temperature Measurement 0x2A1C (and, wrapped, Intermediate Temperature 0x2A1E).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct TemperatureMeasurement {
    pub temperature: Float,
    pub unit: TemperatureUnit,
    /// Flags bit 1.
    pub timestamp: Option<DateTime>,
    /// Flags bit 2.
    pub temperature_type: Option<TemperatureType>,
}

/// Flags bits 3–7 are RFU.
const RESERVED_FLAGS: u8 = 0xF8;

/// The exact length the flags announce.
fn length_for(flags: u8) -> usize {
    let f = u32::from(flags);
    5 + if bit(f, 1) { DateTime::LEN } else { 0 } + if bit(f, 2) { 1 } else { 0 }
}

impl TemperatureMeasurement {
    pub const WHAT: &'static str = <Self as GattValue>::NAME;

    /// The flags octet this value encodes with.
    pub fn flags(&self) -> u8 {
        let mut flags = 0u8;
        if self.unit == TemperatureUnit::Fahrenheit {
            flags |= 0x01;
        }
        if self.timestamp.is_some() {
            flags |= 0x02;
        }
        if self.temperature_type.is_some() {
            flags |= 0x04;
        }
        flags
    }

    fn decode_as(what: &'static str, bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(what, bytes);
        let flags = r.u8().map_err(|_| DecodeError::Empty { what })?;
        check_reserved_flags(what, flags, RESERVED_FLAGS)?;
        check_flags_length(what, flags, length_for(flags), bytes.len())?;
        let f = u32::from(flags);
        let temperature = r.float()?;
        let timestamp = if bit(f, 1) {
            Some(DateTime::read(&mut r)?)
        } else {
            None
        };
        let temperature_type = if bit(f, 2) {
            Some(TemperatureType(r.u8()?))
        } else {
            None
        };
        r.finish()?;
        Ok(TemperatureMeasurement {
            temperature,
            unit: if bit(f, 0) {
                TemperatureUnit::Fahrenheit
            } else {
                TemperatureUnit::Celsius
            },
            timestamp,
            temperature_type,
        })
    }

    fn encode_raw(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(self.flags()).float(self.temperature);
        if let Some(t) = &self.timestamp {
            t.write(&mut w);
        }
        if let Some(t) = self.temperature_type {
            w.u8(t.0);
        }
        w.into_vec()
    }

    /// The reading, with the body site from a separately read 0x2A1D value when the measurement
    /// carries no type of its own.
    pub fn readings_with_type(&self, static_type: Option<&TemperatureType>) -> Vec<Reading> {
        let mut r = Reading::new(
            Kind::BodyTemperature,
            self.temperature.value(),
            self.unit.unit(),
        );
        r.device_time = self.timestamp.and_then(|t| t.to_local());
        r.body_site = self
            .temperature_type
            .as_ref()
            .or(static_type)
            .and_then(TemperatureType::body_site);
        vec![r]
    }
}

impl GattValue for TemperatureMeasurement {
    const UUID: u16 = 0x2A1C;
    const NAME: &'static str = "temperature-measurement";

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Self::decode_as(Self::WHAT, bytes)
    }

    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        Ok(self.encode_raw())
    }

    fn readings(&self) -> Vec<Reading> {
        self.readings_with_type(None)
    }
}

/// Intermediate Temperature 0x2A1E: the 0x2A1C layout, sent while the value settles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct IntermediateTemperature(pub TemperatureMeasurement);

impl IntermediateTemperature {
    pub const WHAT: &'static str = <Self as GattValue>::NAME;

    /// As [`TemperatureMeasurement::readings_with_type`], flagged `Intermediate`.
    pub fn readings_with_type(&self, static_type: Option<&TemperatureType>) -> Vec<Reading> {
        let mut rs = self.0.readings_with_type(static_type);
        for r in &mut rs {
            r.flags.insert(Flag::Intermediate);
        }
        rs
    }
}

impl GattValue for IntermediateTemperature {
    const UUID: u16 = 0x2A1E;
    const NAME: &'static str = "intermediate-temperature";

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        TemperatureMeasurement::decode_as(Self::WHAT, bytes).map(IntermediateTemperature)
    }

    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        Ok(self.0.encode_raw())
    }

    fn readings(&self) -> Vec<Reading> {
        self.readings_with_type(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gatt::testing::{config, date_time, float, payload};
    use crate::model::{Decimal, Special, Value};
    use proptest::prelude::*;

    fn measurement() -> impl Strategy<Value = TemperatureMeasurement> {
        (
            float(),
            any::<bool>(),
            proptest::option::of(date_time()),
            proptest::option::of(any::<u8>().prop_map(TemperatureType)),
        )
            .prop_map(|(t, f, ts, ty)| TemperatureMeasurement {
                temperature: t,
                unit: if f {
                    TemperatureUnit::Fahrenheit
                } else {
                    TemperatureUnit::Celsius
                },
                timestamp: ts,
                temperature_type: ty,
            })
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn measurement_round_trips(m in measurement()) {
            let bytes = m.encode().unwrap();
            prop_assert_eq!(bytes.len(), length_for(m.flags()));
            let back = TemperatureMeasurement::decode(&bytes).unwrap();
            prop_assert_eq!(back, m);
            prop_assert_eq!(back.encode().unwrap(), bytes);
        }

        #[test]
        fn intermediate_round_trips(m in measurement().prop_map(IntermediateTemperature)) {
            let bytes = m.encode().unwrap();
            let back = IntermediateTemperature::decode(&bytes).unwrap();
            prop_assert_eq!(back, m);
            prop_assert_eq!(back.encode().unwrap(), bytes);
        }

        #[test]
        fn type_round_trips(raw in any::<u8>()) {
            let t = TemperatureType(raw);
            let bytes = t.encode().unwrap();
            let back = TemperatureType::decode(&bytes).unwrap();
            prop_assert_eq!(back, t);
            prop_assert_eq!(back.encode().unwrap(), bytes);
        }

        /// Arbitrary bytes never panic, and whatever is accepted re-encodes to itself.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            if let Ok(m) = TemperatureMeasurement::decode(&bytes) {
                prop_assert_eq!(m.encode().unwrap(), bytes.clone());
                let _ = m.readings();
            }
            if let Ok(m) = IntermediateTemperature::decode(&bytes) {
                prop_assert_eq!(m.encode().unwrap(), bytes.clone());
            }
            if let Ok(t) = TemperatureType::decode(&bytes) {
                prop_assert_eq!(t.encode().unwrap(), bytes);
            }
        }
    }

    #[test]
    fn every_flag_combination_has_its_exact_length() {
        for flags in 0u8..=0x07 {
            let need = 5 + 7 * usize::from(flags & 0x02 != 0) + usize::from(flags & 0x04 != 0);
            assert_eq!(length_for(flags), need);
            let ok = payload(flags, need);
            let m = TemperatureMeasurement::decode(&ok).unwrap();
            assert_eq!(m.flags(), flags);
            assert_eq!(m.encode().unwrap(), ok);
            let i = IntermediateTemperature::decode(&ok).unwrap();
            assert_eq!(i.encode().unwrap(), ok);
            for bad in [need - 1, need + 1] {
                assert_eq!(
                    TemperatureMeasurement::decode(&payload(flags, bad)).unwrap_err(),
                    DecodeError::FlagsLength {
                        what: TemperatureMeasurement::WHAT,
                        flags,
                        need,
                        got: bad
                    }
                );
                assert_eq!(
                    IntermediateTemperature::decode(&payload(flags, bad)).unwrap_err(),
                    DecodeError::FlagsLength {
                        what: IntermediateTemperature::WHAT,
                        flags,
                        need,
                        got: bad
                    }
                );
            }
        }
        assert_eq!(
            TemperatureMeasurement::decode(&[0x06, 0, 0, 0, 0])
                .unwrap_err()
                .to_string(),
            "temperature-measurement: flags 0x06 require 13 bytes, got 5"
        );
        assert!(matches!(
            TemperatureMeasurement::decode(&[]).unwrap_err(),
            DecodeError::Empty { .. }
        ));
    }

    #[test]
    fn reserved_flag_bits_are_rejected() {
        for rfu in (3..8).map(|b| 1u8 << b) {
            for flags in 0u8..=0x07 {
                let p = payload(flags | rfu, length_for(flags));
                assert_eq!(
                    TemperatureMeasurement::decode(&p).unwrap_err(),
                    DecodeError::ReservedFlags {
                        what: TemperatureMeasurement::WHAT,
                        flags: flags | rfu,
                        reserved: rfu
                    }
                );
                assert!(matches!(
                    IntermediateTemperature::decode(&p).unwrap_err(),
                    DecodeError::ReservedFlags { .. }
                ));
            }
        }
    }

    #[test]
    fn readings_units_sites_time() {
        // Nordic: 37.60 °C, timestamp, type 2 (body).
        let bytes = [
            0x06, 0xB0, 0x0E, 0x00, 0xFE, 0xE8, 0x07, 0x02, 0x1D, 0x17, 0x3B, 0x00, 0x02,
        ];
        let m = TemperatureMeasurement::decode(&bytes).unwrap();
        let rs = m.readings();
        assert_eq!(rs.len(), 1);
        let r = &rs[0];
        assert_eq!(r.kind, Kind::BodyTemperature);
        assert_eq!(r.value, Value::Number(Decimal::new(3760, -2)));
        assert_eq!(r.unit, Unit::Cel);
        assert_eq!(r.body_site, Some(BodySite::Body));
        assert_eq!(
            r.device_time.map(|t| t.to_string()).as_deref(),
            Some("2024-02-29T23:59:00")
        );
        assert!(r.flags.is_empty());

        let i = IntermediateTemperature::decode(&bytes).unwrap();
        assert!(i.readings()[0].flags.contains(&Flag::Intermediate));
        assert!(!i.readings()[0].is_alertable());

        // 98.6 °F, no type: body site from a static 0x2A1D value, if given.
        let m = TemperatureMeasurement::decode(&[0x01, 0xDA, 0x03, 0x00, 0xFF]).unwrap();
        let r = &m.readings()[0];
        assert_eq!(r.unit, Unit::DegF);
        assert_eq!(r.value, Value::Number(Decimal::new(986, -1)));
        assert_eq!(r.body_site, None);
        let r = &m.readings_with_type(Some(&TemperatureType(6)))[0];
        assert_eq!(r.body_site, Some(BodySite::Mouth));

        // NaN stays special; reserved type gives no site.
        let m = TemperatureMeasurement::decode(&[0x04, 0xFF, 0xFF, 0x7F, 0x00, 0x0A]).unwrap();
        let r = &m.readings_with_type(Some(&TemperatureType(1)))[0];
        assert_eq!(r.value, Value::Special(Special::Nan));
        assert_eq!(r.body_site, None);
    }

    #[test]
    fn every_type_code_maps() {
        let sites = [
            BodySite::Armpit,
            BodySite::Body,
            BodySite::Ear,
            BodySite::Finger,
            BodySite::GastroIntestinalTract,
            BodySite::Mouth,
            BodySite::Rectum,
            BodySite::Toe,
            BodySite::Tympanum,
        ];
        for (i, site) in sites.iter().enumerate() {
            let t = TemperatureType(i as u8 + 1);
            assert_eq!(t.body_site(), Some(*site));
            assert!(t.name().is_some() && t.description().is_some());
        }
        for code in [0u8, 10, 255] {
            let t = TemperatureType::decode(&[code]).unwrap();
            assert_eq!(t.body_site(), None);
            assert_eq!(
                serde_json::to_value(t).unwrap(),
                serde_json::json!({"code": code, "name": null})
            );
        }
        assert_eq!(
            TemperatureType(3).description(),
            Some("Ear (usually ear lobe)")
        );
        assert!(TemperatureType::decode(&[]).is_err());
        assert!(TemperatureType::decode(&[1, 1]).is_err());
    }
}
