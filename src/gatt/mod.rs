//! Pure codecs for the Bluetooth SIG health profiles: bytes in, typed values or typed errors out, and
//! encoders for everything the hub writes and the simulators send.
//!
//! Every characteristic the hub understands is one type implementing [`GattValue`]; the
//! [`Characteristic`] registry maps 16-bit UUIDs and names to them, and [`decode`] gives a
//! [`Decoded`] value whose [`Decoded::readings`] are the `model` readings it carries.
//!
//! Rules every codec follows:
//! - Little-endian, bounds-checked reads; nothing panics on any input.
//! - A payload whose length does not match its flags, a flags field with reserved bits set (the
//!   layout after it is then unknown), or a field out of its range is an error that names the
//!   characteristic and the problem. Reserved bits inside status bit fields are kept and ignored.
//! - Raw fields are kept as received (SFLOAT bits, unscaled units, type nibbles), so a decoded value
//!   re-encodes to the same bytes; conversion to model units happens in `readings()` only.
//!
//! This module imports nothing but `model`, serde (for the `fields` view) and thiserror.

pub mod bp;
pub mod bytes;
pub mod cgm;
pub mod crc;
pub mod datetime;
pub mod dis;
pub mod error;
pub mod float;
pub mod glucose;
pub mod hr;
pub mod names;
pub mod plx;
pub mod quirks;
pub mod racp;
pub mod thermo;
pub mod weight;

pub use error::{DecodeError, EncodeError};
pub use float::{Float, SFloat};

use crate::model::Reading;
use serde::Serialize;
use std::fmt;

/// One characteristic's value type.
pub trait GattValue: Sized + Serialize {
    /// The 16-bit SIG UUID.
    const UUID: u16;
    /// The name `vitals-hub decode` accepts and prints (kebab-case).
    const NAME: &'static str;
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError>;
    fn encode(&self) -> Result<Vec<u8>, EncodeError>;
    /// The model readings this value carries (most control and feature values carry none).
    fn readings(&self) -> Vec<Reading> {
        Vec::new()
    }
}

macro_rules! registry {
    ($($variant:ident => $ty:ty),* $(,)?) => {
        /// Every characteristic the codecs know.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Characteristic {
            $($variant),*
        }

        impl Characteristic {
            pub const ALL: &'static [Characteristic] = &[$(Characteristic::$variant),*];

            pub fn uuid(&self) -> u16 {
                match self {
                    $(Characteristic::$variant => <$ty as GattValue>::UUID),*
                }
            }

            pub fn name(&self) -> &'static str {
                match self {
                    $(Characteristic::$variant => <$ty as GattValue>::NAME),*
                }
            }
        }

        /// A decoded value of any known characteristic.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Decoded {
            $($variant($ty)),*
        }

        /// Decode `bytes` as a value of `ch`.
        pub fn decode(ch: Characteristic, bytes: &[u8]) -> Result<Decoded, DecodeError> {
            match ch {
                $(Characteristic::$variant => <$ty as GattValue>::decode(bytes).map(Decoded::$variant)),*
            }
        }

        impl Decoded {
            pub fn characteristic(&self) -> Characteristic {
                match self {
                    $(Decoded::$variant(_) => Characteristic::$variant),*
                }
            }

            pub fn readings(&self) -> Vec<Reading> {
                match self {
                    $(Decoded::$variant(v) => v.readings()),*
                }
            }

            pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
                match self {
                    $(Decoded::$variant(v) => v.encode()),*
                }
            }
        }

        impl Serialize for Decoded {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self {
                    $(Decoded::$variant(v) => v.serialize(s)),*
                }
            }
        }
    };
}

registry! {
    DateTime => datetime::DateTime,
    CurrentTime => datetime::CurrentTime,
    LocalTimeInformation => datetime::LocalTimeInformation,
    BatteryLevel => dis::BatteryLevel,
    SystemId => dis::SystemId,
    ModelNumber => dis::ModelNumber,
    SerialNumber => dis::SerialNumber,
    FirmwareRevision => dis::FirmwareRevision,
    HardwareRevision => dis::HardwareRevision,
    SoftwareRevision => dis::SoftwareRevision,
    ManufacturerName => dis::ManufacturerName,
    RegulatoryCertificationDataList => dis::RegulatoryCertificationDataList,
    PnpId => dis::PnpId,
    GlucoseMeasurement => glucose::GlucoseMeasurement,
    GlucoseContext => glucose::GlucoseContext,
    GlucoseFeature => glucose::GlucoseFeature,
    RecordAccessControlPoint => racp::RacpMessage,
    BloodPressureMeasurement => bp::BloodPressureMeasurement,
    IntermediateCuffPressure => bp::IntermediateCuffPressure,
    BloodPressureFeature => bp::BloodPressureFeature,
    HeartRateMeasurement => hr::HeartRateMeasurement,
    BodySensorLocation => hr::BodySensorLocation,
    PlxSpotCheck => plx::SpotCheckMeasurement,
    PlxContinuous => plx::ContinuousMeasurement,
    PlxFeatures => plx::PlxFeatures,
    TemperatureMeasurement => thermo::TemperatureMeasurement,
    TemperatureType => thermo::TemperatureType,
    IntermediateTemperature => thermo::IntermediateTemperature,
    WeightMeasurement => weight::WeightMeasurement,
    WeightScaleFeature => weight::WeightScaleFeature,
    CgmMeasurement => cgm::CgmMeasurement,
    CgmFeature => cgm::CgmFeature,
    CgmStatus => cgm::CgmStatus,
    CgmSessionStartTime => cgm::SessionStartTime,
    CgmSessionRunTime => cgm::SessionRunTime,
    CgmSpecificOpsControlPoint => cgm::SocpMessage,
}

impl Characteristic {
    /// `0x2A18`-style text.
    pub fn uuid_text(&self) -> String {
        format!("0x{:04X}", self.uuid())
    }

    pub fn from_uuid(uuid: u16) -> Option<Characteristic> {
        Characteristic::ALL
            .iter()
            .copied()
            .find(|c| c.uuid() == uuid)
    }
}

impl fmt::Display for Characteristic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why text does not name a characteristic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{given}` is not a characteristic the hub decodes; give a 16-bit UUID such as 2A18 or a name such as glucose-measurement (`vitals-hub decode --list` shows all)")]
pub struct UnknownCharacteristic {
    pub given: String,
}

impl std::str::FromStr for Characteristic {
    type Err = UnknownCharacteristic;

    /// Accepts `2A18`, `0x2A18`, `2a18`, or a name (`glucose-measurement`; `_` and case ignored).
    fn from_str(s: &str) -> Result<Self, UnknownCharacteristic> {
        let t = s.trim();
        let hex = t
            .strip_prefix("0x")
            .or_else(|| t.strip_prefix("0X"))
            .unwrap_or(t);
        if hex.len() == 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            if let Some(c) = u16::from_str_radix(hex, 16)
                .ok()
                .and_then(Characteristic::from_uuid)
            {
                return Ok(c);
            }
        }
        let norm = t.to_ascii_lowercase().replace('_', "-");
        Characteristic::ALL
            .iter()
            .copied()
            .find(|c| c.name() == norm)
            .ok_or_else(|| UnknownCharacteristic {
                given: s.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_and_names_are_unique_and_parse() {
        for (i, a) in Characteristic::ALL.iter().enumerate() {
            for b in &Characteristic::ALL[i + 1..] {
                assert_ne!(a.uuid(), b.uuid(), "{a} and {b}");
                assert_ne!(a.name(), b.name());
            }
            assert_eq!(a.name().parse::<Characteristic>().unwrap(), *a);
            assert_eq!(a.uuid_text().parse::<Characteristic>().unwrap(), *a);
            assert_eq!(
                format!("{:04x}", a.uuid())
                    .parse::<Characteristic>()
                    .unwrap(),
                *a
            );
        }
        assert!("2A99".parse::<Characteristic>().is_err());
    }
}

/// Shared proptest strategies for the codec round-trip tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::datetime::DateTime;
    use super::{Float, SFloat};
    use crate::model::days_in_month;
    use proptest::prelude::*;

    /// At least 10,000 cases per property, as CI requires.
    pub fn config() -> ProptestConfig {
        ProptestConfig::with_cases(10_000)
    }

    /// A zero-filled value of `len` bytes whose first byte (the flags) is `flags`.
    pub fn payload(flags: u8, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        if let Some(first) = v.first_mut() {
            *first = flags;
        }
        v
    }

    /// Any SFLOAT bit pattern (every pattern is a valid encoding).
    pub fn sfloat() -> impl Strategy<Value = SFloat> {
        any::<u16>().prop_map(SFloat::from_raw)
    }

    /// Any FLOAT bit pattern.
    pub fn float() -> impl Strategy<Value = Float> {
        any::<u32>().prop_map(Float::from_raw)
    }

    /// A Date Time field that decodes: a valid date, or any field set to 0 ("unknown").
    pub fn date_time() -> impl Strategy<Value = DateTime> {
        (
            prop_oneof![Just(0u16), 1582u16..=9999],
            0u8..=12,
            0u8..=31,
            0u8..=23,
            0u8..=59,
            0u8..=59,
        )
            .prop_map(|(year, month, day, hour, minute, second)| {
                let day = if year != 0 && month != 0 {
                    day.min(days_in_month(year.into(), month))
                } else {
                    day
                };
                DateTime {
                    year,
                    month,
                    day,
                    hour,
                    minute,
                    second,
                }
            })
    }
}
