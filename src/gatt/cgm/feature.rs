//! CGM Feature 0x2AA8.

#[allow(unused_imports)]
use super::*;

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
