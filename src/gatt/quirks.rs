//! Device quirks as data: real devices that break the spec, keyed by their Device Information
//! (Manufacturer Name 0x2A29, Model Number 0x2A24), each with the public capture it came from
//! (`fixtures/quirks/<name>.json`). A quirk rewrites the device's bytes into the conformant
//! encoding, then the ordinary codec decodes them.
//!
//! **A quirk never changes how a conformant device decodes.** Each rewrite fires only on the
//! marker of the non-conformance (for the BM85: the reserved flag bit 6, with the user-id flag
//! clear and the exact length the quirky layout has); a value without it passes through as it
//! came, so a fixed firmware, or another device that happens to match the key, decodes exactly
//! as without the quirk.

use std::borrow::Cow;

/// One device's quirk.
#[derive(Debug)]
pub struct Quirk {
    /// `vendor-model`, lower case.
    pub name: &'static str,
    /// Matched case-insensitively as a substring of the Manufacturer Name.
    pub manufacturer: &'static str,
    /// Matched case-insensitively, spaces and dashes ignored, as a substring of the Model Number.
    pub model: &'static str,
    /// What the device does wrong.
    pub summary: &'static str,
    /// The public capture (repository and file) the quirk was built from.
    pub source: &'static str,
    /// The capture in this repository.
    pub fixture: &'static str,
    rewrite: fn(u16, &[u8]) -> Option<Vec<u8>>,
}

/// Every known quirk.
pub const QUIRKS: &[Quirk] = &[Quirk {
    name: "beurer-bm85",
    manufacturer: "beurer",
    model: "bm85",
    summary:
        "Blood Pressure Measurement: flags bit 6 (reserved) set, a user-id byte present though \
              its flag is clear, pulse rate and measurement status big-endian, MAP 0",
    source:
        "derdilla/blood-pressure-monitor-fl: app/test/features/bluetooth/logic/characteristics/\
             ble_measurement_data_test.dart (\"Recorded from a Beurer BM85\")",
    fixture: "fixtures/quirks/beurer-bm85.json",
    rewrite: beurer_bm85,
}];

impl Quirk {
    /// The bytes the ordinary codec should see: rewritten when this value shows the quirk,
    /// else unchanged.
    pub fn apply<'a>(&self, characteristic: u16, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        match (self.rewrite)(characteristic, bytes) {
            Some(v) => Cow::Owned(v),
            None => Cow::Borrowed(bytes),
        }
    }

    fn matches(&self, manufacturer: &str, model: &str) -> bool {
        let norm = |s: &str| {
            s.chars()
                .filter(|c| !matches!(c, ' ' | '-' | '_'))
                .collect::<String>()
                .to_lowercase()
        };
        manufacturer.to_lowercase().contains(self.manufacturer) && norm(model).contains(self.model)
    }
}

/// The quirk named `name`.
pub fn by_name(name: &str) -> Option<&'static Quirk> {
    QUIRKS.iter().find(|q| q.name == name)
}

/// The quirk of a device with this Device Information, if any.
pub fn for_device(manufacturer: Option<&str>, model: Option<&str>) -> Option<&'static Quirk> {
    let (Some(mf), Some(m)) = (manufacturer, model) else {
        return None;
    };
    QUIRKS.iter().find(|q| q.matches(mf, m))
}

/// Beurer BM85, 0x2A35: `flags (bit 6 set, bit 3 clear) | sys | dia | MAP | [time 7] |
/// [pulse BE] | user id | [status BE]` → the conformant layout with flag bit 3 set, bit 6 clear,
/// pulse and status little-endian.
fn beurer_bm85(characteristic: u16, bytes: &[u8]) -> Option<Vec<u8>> {
    if characteristic != 0x2A35 {
        return None;
    }
    let flags = *bytes.first()?;
    if flags & 0x40 == 0 || flags & 0x08 != 0 {
        return None;
    }
    let time = flags & 0x02 != 0;
    let pulse = flags & 0x04 != 0;
    let status = flags & 0x10 != 0;
    let len =
        7 + if time { 7 } else { 0 } + if pulse { 2 } else { 0 } + 1 + if status { 2 } else { 0 };
    if bytes.len() != len {
        return None;
    }
    let mut out = bytes.to_vec();
    *out.first_mut()? = (flags & !0x40) | 0x08;
    let mut at = 7 + if time { 7 } else { 0 };
    if pulse {
        out.get_mut(at..at + 2)?.swap(0, 1);
        at += 2;
    }
    at += 1; // the user id
    if status {
        out.get_mut(at..at + 2)?.swap(0, 1);
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::gatt::bp::BloodPressureMeasurement;
    use crate::gatt::GattValue;

    fn fixture() -> serde_json::Value {
        let text = include_str!("../../fixtures/quirks/beurer-bm85.json");
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn bm85_captures_decode_with_the_quirk_and_are_refused_without() {
        let q = by_name("beurer-bm85").unwrap();
        for c in fixture()["captures"].as_array().unwrap() {
            let bytes = hex::decode(c["hex"].as_str().unwrap()).unwrap();
            assert!(
                BloodPressureMeasurement::decode(&bytes).is_err(),
                "refused as sent"
            );
            let m = BloodPressureMeasurement::decode(&q.apply(0x2A35, &bytes)).unwrap();
            let e = &c["expected"];
            let num = |v: crate::gatt::SFloat| v.value().number().unwrap().to_f64();
            assert_eq!(num(m.systolic), e["systolic"].as_f64().unwrap());
            assert_eq!(num(m.diastolic), e["diastolic"].as_f64().unwrap());
            assert_eq!(num(m.pulse_rate.unwrap()), e["pulse"].as_f64().unwrap());
            assert_eq!(
                u64::from(m.user_id.unwrap()),
                e["user_id"].as_u64().unwrap()
            );
            assert_eq!(
                m.timestamp.unwrap().to_local().unwrap().to_string(),
                e["timestamp"].as_str().unwrap()
            );
            let kinds: Vec<_> = m.readings().iter().map(|r| r.kind).collect();
            assert!(
                !kinds.contains(&crate::model::Kind::MeanArterialPressure),
                "MAP 0 is not a value"
            );
        }
    }

    #[test]
    fn a_conformant_value_is_never_changed() {
        let q = by_name("beurer-bm85").unwrap();
        // Nordic's conformant BPM (flags 0x1E: time, pulse, user id, status), and one per flag mix.
        for hex in [
            "1e7900510063000000000000000000000000",
            "16790051006300e0070101000000f0bd0000",
            "00790051006300",
            "4e790051006300e0070101000000f0bd010000",
        ] {
            let bytes = hex::decode(hex).unwrap();
            assert_eq!(&*q.apply(0x2A35, &bytes), &bytes[..], "{hex}");
        }
        // Other characteristics are never touched.
        let bytes = hex::decode("566a0047000000ea07080b121f00003f000000").unwrap();
        assert_eq!(&*q.apply(0x2A36, &bytes), &bytes[..]);
    }

    #[test]
    fn keyed_by_device_information() {
        assert_eq!(
            for_device(Some("Beurer GmbH"), Some("BM 85")).map(|q| q.name),
            Some("beurer-bm85")
        );
        assert!(for_device(Some("Beurer"), Some("BM59")).is_none());
        assert!(for_device(Some("Omron"), Some("BM85")).is_none());
        assert!(for_device(None, Some("BM85")).is_none());
        for q in QUIRKS {
            assert_eq!(q.name, q.name.to_lowercase());
            assert!(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(q.fixture)
                .exists());
        }
    }
}
