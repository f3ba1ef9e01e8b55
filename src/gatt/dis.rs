//! Device Information Service 0x180A (strings, System ID 0x2A23, IEEE 11073-20601 Regulatory
//! Certification Data List 0x2A2A, PnP ID 0x2A50) and Battery Level 0x2A19.
//!
//! Interpretations:
//! - DIS strings are UTF-8 and not NUL-terminated; trailing NULs and spaces are trimmed anyway
//!   (devices pad). Invalid UTF-8 is an error, not replaced.
//! - The Regulatory Certification Data List is MDER-encoded (big-endian). The raw bytes are always
//!   kept; the entry list is parsed when it is well-formed and left `null` when not — it is
//!   informational and must never make device setup fail.

use super::bytes::{check_length, Reader, Writer};
use super::error::{DecodeError, EncodeError};
use super::GattValue;
use crate::model::{Decimal, Kind, Reading, Unit, Value};
use serde::Serialize;

/// Battery Level 0x2A19: percent, 0..=100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct BatteryLevel {
    pub percent: u8,
}

impl GattValue for BatteryLevel {
    const UUID: u16 = 0x2A19;
    const NAME: &'static str = "battery-level";

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        check_length(Self::NAME, "1", bytes.len() == 1, bytes.len())?;
        let percent = Reader::new(Self::NAME, bytes).u8()?;
        if percent > 100 {
            return Err(DecodeError::OutOfRange {
                what: Self::NAME,
                field: "battery level",
                value: percent.into(),
                allowed: "0..=100 %",
            });
        }
        Ok(BatteryLevel { percent })
    }

    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        Ok(vec![self.percent])
    }

    fn readings(&self) -> Vec<Reading> {
        vec![Reading::new(
            Kind::BatteryLevel,
            Value::Number(Decimal::new(self.percent.into(), 0)),
            Unit::Percent,
        )]
    }
}

fn decode_string(what: &'static str, bytes: &[u8]) -> Result<String, DecodeError> {
    let s = std::str::from_utf8(bytes)
        .map_err(|e| DecodeError::malformed(what, format!("not UTF-8 ({e})")))?;
    Ok(s.trim_end_matches(['\0', ' ']).to_string())
}

macro_rules! dis_string {
    ($(#[$doc:meta])* $name:ident, $uuid:expr, $kebab:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
        pub struct $name {
            pub value: String,
        }

        impl GattValue for $name {
            const UUID: u16 = $uuid;
            const NAME: &'static str = $kebab;

            fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
                Ok($name { value: decode_string(Self::NAME, bytes)? })
            }

            fn encode(&self) -> Result<Vec<u8>, EncodeError> {
                Ok(self.value.as_bytes().to_vec())
            }
        }
    };
}

dis_string!(/// Manufacturer Name String 0x2A29.
    ManufacturerName, 0x2A29, "manufacturer-name");
dis_string!(/// Model Number String 0x2A24.
    ModelNumber, 0x2A24, "model-number");
dis_string!(/// Serial Number String 0x2A25 (PHI-adjacent: stored encrypted).
    SerialNumber, 0x2A25, "serial-number");
dis_string!(/// Hardware Revision String 0x2A27.
    HardwareRevision, 0x2A27, "hardware-revision");
dis_string!(/// Firmware Revision String 0x2A26.
    FirmwareRevision, 0x2A26, "firmware-revision");
dis_string!(/// Software Revision String 0x2A28.
    SoftwareRevision, 0x2A28, "software-revision");

/// System ID 0x2A23: a 40-bit manufacturer-defined identifier then a 24-bit OUI, both LE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct SystemId {
    pub manufacturer_identifier: u64,
    pub oui: u32,
}

impl SystemId {
    /// The EUI-64 (OUI first, most significant byte first), as the PHD IG's SYSID identifier
    /// spells it: `12-34-56-88-77-66-55-44`.
    pub fn eui64(&self) -> [u8; 8] {
        let v = (u64::from(self.oui) << 40) | (self.manufacturer_identifier & 0xFF_FFFF_FFFF);
        v.to_be_bytes()
    }

    pub fn eui64_text(&self) -> String {
        self.eui64()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join("-")
    }
}

impl GattValue for SystemId {
    const UUID: u16 = 0x2A23;
    const NAME: &'static str = "system-id";

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        check_length(Self::NAME, "8", bytes.len() == 8, bytes.len())?;
        let mut r = Reader::new(Self::NAME, bytes);
        let lo = r.u32()?;
        let hi = r.u8()?;
        let oui = r.u24()?;
        Ok(SystemId {
            manufacturer_identifier: (u64::from(hi) << 32) | u64::from(lo),
            oui,
        })
    }

    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        if self.manufacturer_identifier > 0xFF_FFFF_FFFF || self.oui > 0xFF_FFFF {
            return Err(EncodeError::Unrepresentable {
                what: Self::NAME,
                detail: "manufacturer identifier is 40 bits and OUI 24 bits".into(),
            });
        }
        let mut w = Writer::new();
        w.u32(self.manufacturer_identifier as u32)
            .u8((self.manufacturer_identifier >> 32) as u8)
            .u24(self.oui);
        Ok(w.into_vec())
    }
}

/// One entry of the regulatory list: authorizing body, its structure type, and its data.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct RegulatoryEntry {
    pub auth_body: u8,
    pub auth_body_struc_type: u8,
    pub data_hex: String,
}

/// IEEE 11073-20601 Regulatory Certification Data List 0x2A2A: raw bytes, and the entries when the
/// MDER structure (`count u16 BE, length u16 BE, entries`) parses.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct RegulatoryCertificationDataList {
    #[serde(serialize_with = "ser_hex")]
    pub raw: Vec<u8>,
    pub entries: Option<Vec<RegulatoryEntry>>,
}

fn ser_hex<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(v))
}

fn parse_mder_list(b: &[u8]) -> Option<Vec<RegulatoryEntry>> {
    let be16 = |i: usize| -> Option<usize> {
        Some(usize::from(u16::from_be_bytes([
            *b.get(i)?,
            *b.get(i + 1)?,
        ])))
    };
    let count = be16(0)?;
    let length = be16(2)?;
    if length != b.len().checked_sub(4)? {
        return None;
    }
    let mut pos = 4;
    let mut out = Vec::new();
    for _ in 0..count {
        let auth_body = *b.get(pos)?;
        let auth_body_struc_type = *b.get(pos + 1)?;
        let len = be16(pos + 2)?;
        let data = b.get(pos + 4..pos + 4 + len)?;
        out.push(RegulatoryEntry {
            auth_body,
            auth_body_struc_type,
            data_hex: hex::encode(data),
        });
        pos += 4 + len;
    }
    (pos == b.len()).then_some(out)
}

impl GattValue for RegulatoryCertificationDataList {
    const UUID: u16 = 0x2A2A;
    const NAME: &'static str = "regulatory-certification-data-list";

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(RegulatoryCertificationDataList {
            raw: bytes.to_vec(),
            entries: parse_mder_list(bytes),
        })
    }

    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        Ok(self.raw.clone())
    }
}

/// PnP ID 0x2A50.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct PnpId {
    /// 1 = Bluetooth SIG assigned, 2 = USB Implementer's Forum assigned.
    pub vendor_id_source: u8,
    pub vendor_id: u16,
    pub product_id: u16,
    pub product_version: u16,
}

impl GattValue for PnpId {
    const UUID: u16 = 0x2A50;
    const NAME: &'static str = "pnp-id";

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        check_length(Self::NAME, "7", bytes.len() == 7, bytes.len())?;
        let mut r = Reader::new(Self::NAME, bytes);
        let vendor_id_source = r.u8()?;
        if !(1..=2).contains(&vendor_id_source) {
            return Err(DecodeError::OutOfRange {
                what: Self::NAME,
                field: "vendor ID source",
                value: vendor_id_source.into(),
                allowed: "1 (Bluetooth SIG) or 2 (USB-IF)",
            });
        }
        Ok(PnpId {
            vendor_id_source,
            vendor_id: r.u16()?,
            product_id: r.u16()?,
            product_version: r.u16()?,
        })
    }

    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut w = Writer::new();
        w.u8(self.vendor_id_source)
            .u16(self.vendor_id)
            .u16(self.product_id)
            .u16(self.product_version);
        Ok(w.into_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gatt::testing::config;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn battery_round_trips(p in 0u8..=100) {
            let v = BatteryLevel { percent: p };
            prop_assert_eq!(BatteryLevel::decode(&v.encode().unwrap()).unwrap(), v);
        }

        #[test]
        fn strings_round_trip(s in "[^\u{0} ]{0,8}( [^\u{0} ]{1,8}){0,3}") {
            let v = ModelNumber { value: s };
            prop_assert_eq!(ModelNumber::decode(&v.encode().unwrap()).unwrap(), v);
        }

        #[test]
        fn system_id_round_trips(m in 0u64..=0xFF_FFFF_FFFF, oui in 0u32..=0xFF_FFFF) {
            let v = SystemId { manufacturer_identifier: m, oui };
            prop_assert_eq!(SystemId::decode(&v.encode().unwrap()).unwrap(), v);
        }

        #[test]
        fn regulatory_list_round_trips(raw in proptest::collection::vec(any::<u8>(), 0..40)) {
            let v = RegulatoryCertificationDataList::decode(&raw).unwrap();
            prop_assert_eq!(v.encode().unwrap(), raw);
        }

        #[test]
        fn pnp_id_round_trips(src in 1u8..=2, vendor in any::<u16>(), product in any::<u16>(), version in any::<u16>()) {
            let v = PnpId { vendor_id_source: src, vendor_id: vendor, product_id: product, product_version: version };
            prop_assert_eq!(PnpId::decode(&v.encode().unwrap()).unwrap(), v);
        }
    }

    #[test]
    fn system_id_as_eui64() {
        let s = SystemId::decode(&[0x44, 0x55, 0x66, 0x77, 0x88, 0x56, 0x34, 0x12]).unwrap();
        assert_eq!(s.manufacturer_identifier, 586_118_747_460);
        assert_eq!(s.oui, 0x123456);
        assert_eq!(s.eui64_text(), "12-34-56-88-77-66-55-44");
    }

    #[test]
    fn regulatory_list_parses_when_well_formed() {
        let b = [0x00, 0x01, 0x00, 0x06, 0x01, 0x02, 0x00, 0x02, 0xAA, 0xBB];
        let v = RegulatoryCertificationDataList::decode(&b).unwrap();
        assert_eq!(v.entries.unwrap()[0].data_hex, "aabb");
        let v = RegulatoryCertificationDataList::decode(&b[..9]).unwrap();
        assert!(v.entries.is_none());
    }

    #[test]
    fn strings_trim_padding_and_reject_bad_utf8() {
        assert_eq!(ModelNumber::decode(b"UA-651\0\0 ").unwrap().value, "UA-651");
        assert!(ManufacturerName::decode(&[0xff, 0xfe]).is_err());
    }
}
