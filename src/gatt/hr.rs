//! Heart Rate Service 0x180D: Heart Rate Measurement 0x2A37 and Body Sensor Location 0x2A38.
//!
//! 0x2A37 (`ble-profiles.md` §4): `flags u8 | heart rate u8 or u16 (bit 0) | [energy expended u16 kJ,
//! bit 3] | [RR-interval u16 × n, bit 4]`; bits 1–2 are the sensor-contact status, bits 5–7 RFU and
//! rejected. RR intervals are in 1/1024 s, oldest first.
//!
//! Interpretations:
//! - With bit 4 set the bytes after the fixed fields are RR intervals: at least one, and a whole
//!   number of 2-byte values. Fewer than 2 RR bytes is a flags-length error (one interval is the
//!   minimum, so the error names that length); a longer odd remainder is a malformed-value error.
//!   The MTU, not the codec, bounds the count.
//! - The heart-rate format bit is kept (`heart_rate_u16`), so a u16 value below 256 re-encodes as
//!   u16; encoding an 8-bit value above 255 is an error.
//! - The sensor-contact field is kept as its raw 2-bit code: 0 and 1 both mean "not supported", and
//!   keeping the code makes re-encoding exact.
//! - Contact code 2 (supported, no skin contact) puts `NoSkinContact` on the heart-rate and every
//!   RR-interval reading: both come from the contact-dependent signal. The energy-expended reading is
//!   a running total and is not flagged.
//! - Energy expended saturates at 0xFFFF until reset (0x2A39); it is still reported as 65535 kJ.
//! - RR intervals become milliseconds exactly: raw × 1000/1024 = raw × 0.9765625 ms.
//! - Body Sensor Location codes above 6 are reserved: kept raw, no name, no failure.

use super::bytes::{bit, check_flags_length, check_length, check_reserved_flags, Reader, Writer};
use super::error::{DecodeError, EncodeError};
use super::names::Code;
use super::GattValue;
use crate::model::{Decimal, Flag, Kind, Reading, Unit, Value};
use serde::{Serialize, Serializer};

/// What the sensor-contact bits (flags bits 1–2) say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SensorContact {
    /// Codes 0 and 1.
    NotSupported,
    /// Code 2: the strap can detect contact and has none.
    SupportedNotDetected,
    /// Code 3.
    SupportedDetected,
}

impl SensorContact {
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 | 1 => Some(SensorContact::NotSupported),
            2 => Some(SensorContact::SupportedNotDetected),
            3 => Some(SensorContact::SupportedDetected),
            _ => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            SensorContact::NotSupported => "not_supported",
            SensorContact::SupportedNotDetected => "supported_not_detected",
            SensorContact::SupportedDetected => "supported_detected",
        }
    }
}

fn ser_contact<S: Serializer>(v: &u8, s: S) -> Result<S::Ok, S::Error> {
    Code {
        code: (*v).into(),
        name: SensorContact::from_code(*v).map(|c| c.name()),
    }
    .serialize(s)
}

/// Heart Rate Measurement 0x2A37.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct HeartRateMeasurement {
    /// Beats per minute.
    pub heart_rate: u16,
    /// Flags bit 0: the value was sent as u16.
    pub heart_rate_u16: bool,
    /// Flags bits 1–2, the raw code 0..=3.
    #[serde(serialize_with = "ser_contact")]
    pub sensor_contact: u8,
    /// Flags bit 3, kilojoules since the last reset.
    pub energy_expended_kj: Option<u16>,
    /// Flags bit 4 (set exactly when this is non-empty), 1/1024 s each, oldest first.
    #[serde(rename = "rr_intervals_1_1024s")]
    pub rr_intervals: Vec<u16>,
}

/// Flags bits 5–7 are RFU.
const RESERVED_FLAGS: u8 = 0xE0;

/// The length of everything before the RR intervals.
fn fixed_length(flags: u8) -> usize {
    let f = u32::from(flags);
    1 + if bit(f, 0) { 2 } else { 1 } + if bit(f, 3) { 2 } else { 0 }
}

impl HeartRateMeasurement {
    pub const WHAT: &'static str = <Self as GattValue>::NAME;

    pub fn contact(&self) -> Option<SensorContact> {
        SensorContact::from_code(self.sensor_contact)
    }

    /// The flags octet this value encodes with.
    pub fn flags(&self) -> u8 {
        let mut flags = (self.sensor_contact & 0x03) << 1;
        if self.heart_rate_u16 {
            flags |= 0x01;
        }
        if self.energy_expended_kj.is_some() {
            flags |= 0x08;
        }
        if !self.rr_intervals.is_empty() {
            flags |= 0x10;
        }
        flags
    }

    /// An RR interval in exact milliseconds: raw × 1000/1024 = raw × 9765625 × 10⁻⁷.
    pub fn rr_ms(raw: u16) -> Decimal {
        Decimal::new(i64::from(raw) * 9_765_625, -7)
    }
}

impl GattValue for HeartRateMeasurement {
    const UUID: u16 = 0x2A37;
    const NAME: &'static str = "heart-rate-measurement";

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let what = Self::WHAT;
        let mut r = Reader::new(what, bytes);
        let flags = r.u8().map_err(|_| DecodeError::Empty { what })?;
        check_reserved_flags(what, flags, RESERVED_FLAGS)?;
        let f = u32::from(flags);
        let fixed = fixed_length(flags);
        if bit(f, 4) {
            // At least one RR interval must follow.
            if bytes.len() < fixed + 2 {
                return Err(DecodeError::FlagsLength {
                    what,
                    flags,
                    need: fixed + 2,
                    got: bytes.len(),
                });
            }
            let rr_bytes = bytes.len().saturating_sub(fixed);
            if !rr_bytes.is_multiple_of(2) {
                return Err(DecodeError::malformed(
                    what,
                    format!(
                        "flags 0x{flags:02X}: {rr_bytes} bytes of RR-Intervals after byte {fixed}; \
                         each interval is 2 bytes"
                    ),
                ));
            }
        } else {
            check_flags_length(what, flags, fixed, bytes.len())?;
        }
        let heart_rate_u16 = bit(f, 0);
        let heart_rate = if heart_rate_u16 {
            r.u16()?
        } else {
            r.u8()?.into()
        };
        let energy_expended_kj = if bit(f, 3) { Some(r.u16()?) } else { None };
        let mut rr_intervals = Vec::with_capacity(r.remaining() / 2);
        while r.remaining() > 0 {
            rr_intervals.push(r.u16()?);
        }
        r.finish()?;
        Ok(HeartRateMeasurement {
            heart_rate,
            heart_rate_u16,
            sensor_contact: ((flags >> 1) & 0x03),
            energy_expended_kj,
            rr_intervals,
        })
    }

    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let what = Self::WHAT;
        if self.sensor_contact > 3 {
            return Err(EncodeError::Unrepresentable {
                what,
                detail: format!(
                    "sensor contact code {} does not fit the 2-bit field",
                    self.sensor_contact
                ),
            });
        }
        let mut w = Writer::new();
        w.u8(self.flags());
        if self.heart_rate_u16 {
            w.u16(self.heart_rate);
        } else {
            let hr = u8::try_from(self.heart_rate).map_err(|_| EncodeError::Unrepresentable {
                what,
                detail: format!(
                    "heart rate {} does not fit the 8-bit format; use the 16-bit format",
                    self.heart_rate
                ),
            })?;
            w.u8(hr);
        }
        if let Some(e) = self.energy_expended_kj {
            w.u16(e);
        }
        for rr in &self.rr_intervals {
            w.u16(*rr);
        }
        Ok(w.into_vec())
    }

    fn readings(&self) -> Vec<Reading> {
        let no_contact = self.contact() == Some(SensorContact::SupportedNotDetected);
        let flagged = |mut r: Reading| {
            if no_contact {
                r.flags.insert(Flag::NoSkinContact);
            }
            r
        };
        let mut out = vec![flagged(Reading::new(
            Kind::HeartRate,
            Value::Number(Decimal::new(self.heart_rate.into(), 0)),
            Unit::PerMin,
        ))];
        if let Some(e) = self.energy_expended_kj {
            out.push(Reading::new(
                Kind::EnergyExpended,
                Value::Number(Decimal::new(e.into(), 0)),
                Unit::KJ,
            ));
        }
        out.extend(self.rr_intervals.iter().map(|rr| {
            flagged(Reading::new(
                Kind::RrInterval,
                Value::Number(Self::rr_ms(*rr)),
                Unit::Ms,
            ))
        }));
        out
    }
}

/// Body Sensor Location 0x2A38 (u8; 0..=6 defined, others reserved and kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BodySensorLocation(pub u8);

impl BodySensorLocation {
    /// The spec's name of the code, `None` for reserved codes.
    pub fn name(&self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "other",
            1 => "chest",
            2 => "wrist",
            3 => "finger",
            4 => "hand",
            5 => "ear_lobe",
            6 => "foot",
            _ => return None,
        })
    }
}

impl Serialize for BodySensorLocation {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Code {
            code: self.0.into(),
            name: self.name(),
        }
        .serialize(s)
    }
}

impl GattValue for BodySensorLocation {
    const UUID: u16 = 0x2A38;
    const NAME: &'static str = "body-sensor-location";

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        check_length(Self::NAME, "1", bytes.len() == 1, bytes.len())?;
        Reader::new(Self::NAME, bytes).u8().map(BodySensorLocation)
    }

    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        Ok(vec![self.0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gatt::testing::config;
    use proptest::prelude::*;

    fn hrm() -> impl Strategy<Value = HeartRateMeasurement> {
        (
            any::<bool>(),
            any::<u16>(),
            0u8..=3,
            proptest::option::of(any::<u16>()),
            proptest::collection::vec(any::<u16>(), 0..=10),
        )
            .prop_map(|(wide, hr, contact, energy, rr)| HeartRateMeasurement {
                heart_rate: if wide { hr } else { hr & 0xFF },
                heart_rate_u16: wide,
                sensor_contact: contact,
                energy_expended_kj: energy,
                rr_intervals: rr,
            })
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn hrm_round_trips(m in hrm()) {
            let bytes = m.encode().unwrap();
            let back = HeartRateMeasurement::decode(&bytes).unwrap();
            prop_assert_eq!(&back, &m);
            prop_assert_eq!(back.encode().unwrap(), bytes);
        }

        #[test]
        fn location_round_trips(raw in any::<u8>()) {
            let l = BodySensorLocation(raw);
            let bytes = l.encode().unwrap();
            let back = BodySensorLocation::decode(&bytes).unwrap();
            prop_assert_eq!(back, l);
            prop_assert_eq!(back.encode().unwrap(), bytes);
        }

        /// Arbitrary bytes never panic, and whatever is accepted re-encodes to itself.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..24)) {
            if let Ok(m) = HeartRateMeasurement::decode(&bytes) {
                prop_assert_eq!(m.encode().unwrap(), bytes.clone());
                let _ = m.readings();
            }
            if let Ok(l) = BodySensorLocation::decode(&bytes) {
                prop_assert_eq!(l.encode().unwrap(), bytes);
            }
        }
    }

    fn payload(flags: u8, len: usize) -> Vec<u8> {
        let mut v = vec![0x3Cu8; len];
        v[0] = flags;
        v
    }

    #[test]
    fn every_flag_combination_has_its_exact_length() {
        for flags in 0u8..=0x1F {
            let fixed =
                1 + if flags & 0x01 != 0 { 2 } else { 1 } + if flags & 0x08 != 0 { 2 } else { 0 };
            assert_eq!(fixed_length(flags), fixed);
            if flags & 0x10 == 0 {
                let ok = payload(flags, fixed);
                let m = HeartRateMeasurement::decode(&ok).unwrap();
                assert_eq!(m.encode().unwrap(), ok, "flags {flags:#04x}");
                assert!(m.rr_intervals.is_empty());
                for bad in [fixed - 1, fixed + 1] {
                    assert_eq!(
                        HeartRateMeasurement::decode(&payload(flags, bad)).unwrap_err(),
                        DecodeError::FlagsLength {
                            what: HeartRateMeasurement::WHAT,
                            flags,
                            need: fixed,
                            got: bad
                        }
                    );
                }
            } else {
                for n in 1..=3 {
                    let ok = payload(flags, fixed + 2 * n);
                    let m = HeartRateMeasurement::decode(&ok).unwrap();
                    assert_eq!(m.rr_intervals.len(), n);
                    assert_eq!(m.encode().unwrap(), ok, "flags {flags:#04x}");
                }
                // One byte short or long of a whole interval count.
                for bad in [fixed + 3, fixed + 5] {
                    let e = HeartRateMeasurement::decode(&payload(flags, bad)).unwrap_err();
                    assert!(
                        matches!(e, DecodeError::Malformed { .. }),
                        "flags {flags:#04x} len {bad}: {e}"
                    );
                }
                // Less than one whole interval, or the fixed part truncated.
                for bad in [fixed + 1, fixed, fixed - 1] {
                    assert_eq!(
                        HeartRateMeasurement::decode(&payload(flags, bad)).unwrap_err(),
                        DecodeError::FlagsLength {
                            what: HeartRateMeasurement::WHAT,
                            flags,
                            need: fixed + 2,
                            got: bad
                        }
                    );
                }
            }
        }
    }

    #[test]
    fn error_texts() {
        assert_eq!(
            HeartRateMeasurement::decode(&[0x09, 0x3C, 0x00, 0x01])
                .unwrap_err()
                .to_string(),
            "heart-rate-measurement: flags 0x09 require 5 bytes, got 4"
        );
        assert_eq!(
            HeartRateMeasurement::decode(&[0x19, 0x3C, 0x00, 0x01, 0x00])
                .unwrap_err()
                .to_string(),
            "heart-rate-measurement: flags 0x19 require 7 bytes, got 5"
        );
        assert_eq!(
            HeartRateMeasurement::decode(&[0x10, 0x3C])
                .unwrap_err()
                .to_string(),
            "heart-rate-measurement: flags 0x10 require 4 bytes, got 2"
        );
        assert_eq!(
            HeartRateMeasurement::decode(&[0x10, 0x3C, 0x11, 0x04, 0x05])
                .unwrap_err()
                .to_string(),
            "heart-rate-measurement: flags 0x10: 3 bytes of RR-Intervals after byte 2; each interval is 2 bytes"
        );
        assert_eq!(
            HeartRateMeasurement::decode(&[]).unwrap_err(),
            DecodeError::Empty {
                what: HeartRateMeasurement::WHAT
            }
        );
    }

    #[test]
    fn reserved_flag_bits_are_rejected() {
        for rfu in [0x20u8, 0x40, 0x80] {
            for flags in 0u8..=0x1F {
                let len = fixed_length(flags) + if flags & 0x10 != 0 { 2 } else { 0 };
                assert_eq!(
                    HeartRateMeasurement::decode(&payload(flags | rfu, len)).unwrap_err(),
                    DecodeError::ReservedFlags {
                        what: HeartRateMeasurement::WHAT,
                        flags: flags | rfu,
                        reserved: rfu
                    }
                );
            }
        }
    }

    #[test]
    fn format_bit_and_contact_code_are_kept() {
        // u16 format carrying 60: stays u16.
        let m = HeartRateMeasurement::decode(&[0x01, 0x3C, 0x00]).unwrap();
        assert!(m.heart_rate_u16);
        assert_eq!(m.encode().unwrap(), [0x01, 0x3C, 0x00]);
        let m = HeartRateMeasurement::decode(&[0x01, 0x2C, 0x01]).unwrap();
        assert_eq!(m.heart_rate, 300);
        // Contact code 1 means "not supported" and re-encodes as 1.
        let m = HeartRateMeasurement::decode(&[0x02, 0x50]).unwrap();
        assert_eq!(m.sensor_contact, 1);
        assert_eq!(m.contact(), Some(SensorContact::NotSupported));
        assert_eq!(m.encode().unwrap(), [0x02, 0x50]);
    }

    #[test]
    fn encode_rejects_what_has_no_wire_form() {
        let mut m = HeartRateMeasurement {
            heart_rate: 256,
            heart_rate_u16: false,
            sensor_contact: 0,
            energy_expended_kj: None,
            rr_intervals: Vec::new(),
        };
        assert!(m.encode().is_err());
        m.heart_rate_u16 = true;
        assert_eq!(m.encode().unwrap(), [0x01, 0x00, 0x01]);
        m.sensor_contact = 4;
        assert!(m.encode().is_err());
    }

    #[test]
    fn readings_and_exact_rr_ms() {
        // Polar H7: 60 bpm, contact detected, RR 1041/1024 s.
        let m = HeartRateMeasurement::decode(&[0x16, 0x3C, 0x11, 0x04]).unwrap();
        assert_eq!(m.contact(), Some(SensorContact::SupportedDetected));
        let rs = m.readings();
        assert_eq!(rs.len(), 2);
        assert_eq!(rs[0].kind, Kind::HeartRate);
        assert_eq!(rs[0].value, Value::Number(Decimal::new(60, 0)));
        assert_eq!(rs[0].unit, Unit::PerMin);
        assert!(rs[0].flags.is_empty());
        assert_eq!(rs[1].kind, Kind::RrInterval);
        assert_eq!(rs[1].unit, Unit::Ms);
        assert_eq!(
            rs[1].value,
            Value::Number(Decimal::new(1041 * 9_765_625, -7))
        );
        assert_eq!(rs[1].value.number().unwrap().to_string(), "1016.6015625");
        assert_eq!(
            HeartRateMeasurement::rr_ms(1024).to_string(),
            "1000.0000000"
        );
        assert_eq!(HeartRateMeasurement::rr_ms(33).to_f64(), 32.2265625);
        assert_eq!(HeartRateMeasurement::rr_ms(0xFFFF).to_f64(), 63999.0234375);

        // Supported but no contact; energy and two RR values.
        let m = HeartRateMeasurement::decode(&[0x1C, 0x55, 0x32, 0x00, 0x21, 0x00, 0x00, 0x04])
            .unwrap();
        let rs = m.readings();
        let kinds: Vec<Kind> = rs.iter().map(|r| r.kind).collect();
        assert_eq!(
            kinds,
            [
                Kind::HeartRate,
                Kind::EnergyExpended,
                Kind::RrInterval,
                Kind::RrInterval
            ]
        );
        assert!(rs[0].flags.contains(&Flag::NoSkinContact));
        assert!(!rs[0].is_alertable());
        assert!(rs[1].flags.is_empty());
        assert_eq!(rs[1].value, Value::Number(Decimal::new(50, 0)));
        assert_eq!(rs[1].unit, Unit::KJ);
        assert!(rs[2].flags.contains(&Flag::NoSkinContact));
        assert_eq!(rs[3].value, Value::Number(Decimal::new(10_000_000_000, -7)));
    }

    #[test]
    fn location_names() {
        assert_eq!(BodySensorLocation(1).name(), Some("chest"));
        assert_eq!(BodySensorLocation(5).name(), Some("ear_lobe"));
        assert_eq!(BodySensorLocation(7).name(), None);
        assert_eq!(
            serde_json::to_value(BodySensorLocation(200)).unwrap(),
            serde_json::json!({"code": 200, "name": null})
        );
        assert!(BodySensorLocation::decode(&[]).is_err());
        assert!(BodySensorLocation::decode(&[1, 2]).is_err());
    }
}
