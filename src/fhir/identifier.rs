//! The PHD IG conditional-create identifier, and the encodings around it.
//!
//! `value = device-patient-type-timestamp[-duration][-supplementalCodes...]` (PHD IG
//! "The Observation Identifier"): the device's 16-hex system id (12-hex Bluetooth address when it has
//! none), the patient's logical id, the MDC type in decimal, and the **device-reported** timestamp as
//! seconds since 2000-01-01T00:00:00 at the device's resolution. Other modules (the store's stable
//! key, the alerts) build it through [`ObservationIdentifier`] so every copy agrees.

use super::codes::OBS_IDENTIFIER_SYSTEM;
use crate::model::{LocalDateTime, UtcMillis};
use std::fmt;

/// Seconds from 1970-01-01 to 2000-01-01 (the 11073 / IG epoch).
pub const EPOCH_2000_SECS: i64 = 946_684_800;

/// An EUI-64 (PHD system id, or the hub's id derived from its MAC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Eui64(pub [u8; 8]);

/// An EUI-48 (Bluetooth or Ethernet MAC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Eui48(pub [u8; 6]);

/// Why an address or id text could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Not N hex bytes separated by `:` or `-` (or none).
    #[error("`{text}` is not a {what}: expected {bytes} hex bytes such as {example}")]
    Syntax {
        text: String,
        what: &'static str,
        bytes: usize,
        example: &'static str,
    },
}

fn parse_hex_bytes<const N: usize>(
    text: &str,
    what: &'static str,
    example: &'static str,
) -> Result<[u8; N], IdError> {
    let err = || IdError::Syntax {
        text: text.to_owned(),
        what,
        bytes: N,
        example,
    };
    let digits: String = text.chars().filter(|c| *c != ':' && *c != '-').collect();
    if digits.len() != N * 2 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(err());
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(&digits, &mut out).map_err(|_| err())?;
    Ok(out)
}

fn dashed(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join("-")
}

fn compact(bytes: &[u8]) -> String {
    hex::encode_upper(bytes)
}

impl Eui64 {
    /// The EUI-64 of an EUI-48 by inserting `FF-FE` after the OUI (IEEE "EUI-48 to EUI-64"; the
    /// PHD IG's PHG example `DC-A6-32-FF-FE-12-34-56`).
    pub fn from_eui48(mac: Eui48) -> Eui64 {
        let [a, b, c, d, e, f] = mac.0;
        Eui64([a, b, c, 0xFF, 0xFE, d, e, f])
    }
    /// `00-09-1F-FF-FE-80-1A-2B` (the Device.identifier form).
    pub fn dashed(&self) -> String {
        dashed(&self.0)
    }
    /// `00091FFFFE801A2B` (the observation-identifier form).
    pub fn compact(&self) -> String {
        compact(&self.0)
    }
}

impl std::str::FromStr for Eui64 {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        parse_hex_bytes::<8>(s, "EUI-64", "00-09-1F-FF-FE-80-1A-2B").map(Eui64)
    }
}

impl Eui48 {
    pub fn dashed(&self) -> String {
        dashed(&self.0)
    }
    pub fn compact(&self) -> String {
        compact(&self.0)
    }
}

impl std::str::FromStr for Eui48 {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        parse_hex_bytes::<6>(s, "MAC address", "C0:26:DA:01:02:03").map(Eui48)
    }
}

/// The device part of the identifier: the system id when known, else the Bluetooth address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceIdent {
    SystemId(Eui64),
    BtMac(Eui48),
}

impl fmt::Display for DeviceIdent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceIdent::SystemId(e) => f.write_str(&e.compact()),
            DeviceIdent::BtMac(m) => f.write_str(&m.compact()),
        }
    }
}

/// The PHD-reported timestamp as the identifier encodes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdTimestamp {
    /// The device's own wall-clock time, second resolution (BLE Date Time).
    Device(LocalDateTime),
    /// No device timestamp: the hub's reception time, millisecond resolution.
    Reception(UtcMillis),
}

impl IdTimestamp {
    /// Seconds since 2000-01-01 at the source's resolution: `795255330`, `690897360.567`.
    pub fn encode(&self) -> String {
        match self {
            IdTimestamp::Device(t) => (t.to_epoch_seconds() - EPOCH_2000_SECS).to_string(),
            IdTimestamp::Reception(ms) => {
                let total = ms.as_millis() - EPOCH_2000_SECS * 1000;
                let secs = total.div_euclid(1000);
                let frac = total.rem_euclid(1000);
                format!("{secs}.{frac:03}")
            }
        }
    }
}

/// `device-patient-type-timestamp[-supplemental...]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObservationIdentifier {
    pub device: DeviceIdent,
    /// The patient's logical id as provisioned (`Patient/<id>` → `<id>`).
    pub patient: String,
    pub mdc_type: u32,
    pub timestamp: IdTimestamp,
    /// Measurement duration in seconds, when the device reported one.
    pub duration: Option<String>,
    pub supplemental: Vec<u32>,
    /// The device's record number, only for a reading without a device time (whose timestamp is
    /// the reception time, shared by every record of one notification): `-r<n>` after the
    /// timestamp, so records the store keeps apart never share an identifier.
    pub record: Option<u16>,
}

impl ObservationIdentifier {
    pub fn new(
        device: DeviceIdent,
        patient: &str,
        mdc_type: u32,
        timestamp: IdTimestamp,
    ) -> ObservationIdentifier {
        ObservationIdentifier {
            device,
            patient: patient.to_owned(),
            mdc_type,
            timestamp,
            duration: None,
            supplemental: Vec::new(),
            record: None,
        }
    }

    /// The identifier value.
    pub fn value(&self) -> String {
        let mut s = format!(
            "{}-{}-{}-{}",
            self.device,
            self.patient,
            self.mdc_type,
            self.timestamp.encode()
        );
        if let Some(r) = self.record {
            s.push_str(&format!("-r{r}"));
        }
        if let Some(d) = &self.duration {
            s.push_str("..");
            s.push_str(d);
        }
        for c in &self.supplemental {
            s.push('-');
            s.push_str(&c.to_string());
        }
        s
    }

    /// `request.ifNoneExist` for this identifier (percent-encoded, see [`if_none_exist`]).
    pub fn if_none_exist(&self) -> String {
        if_none_exist(OBS_IDENTIFIER_SYSTEM, &self.value())
    }
}

/// `identifier=<system>|<value>` as a query string: every character outside the URL "unreserved"
/// set and `:`/`/` is percent-encoded — in particular `+` (`%2B`, or a server reads a space) and `|`
/// (`%7C`). Servers decode it as a query, so this is what they compare.
pub fn if_none_exist(system: &str, value: &str) -> String {
    format!(
        "identifier={}%7C{}",
        percent_encode(system),
        percent_encode(value)
    )
}

/// What [`percent_encode`] escapes: everything but the URL "unreserved" set and `:`/`/`.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b':')
    .remove(b'/');

/// Percent-encode for a query parameter value, keeping `:` and `/` readable.
pub fn percent_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, QUERY_VALUE).to_string()
}

/// Decode `%XX` escapes (and `+` as a space, as HTML forms and most servers do).
pub fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ig_example_identifier() {
        let dev: Eui64 = "00-09-1F-FF-FE-80-1A-2B".parse().unwrap();
        // 2025-03-14T08:15:30 → 795255330 s since 2000 (the fhir-phd.md example).
        let t = LocalDateTime::new(2025, 3, 14, 8, 15, 30).unwrap();
        let id = ObservationIdentifier::new(
            DeviceIdent::SystemId(dev),
            "RPM-000123",
            150020,
            IdTimestamp::Device(t),
        );
        assert_eq!(id.value(), "00091FFFFE801A2B-RPM-000123-150020-795255330");
        assert_eq!(
            id.if_none_exist(),
            "identifier=http://hl7.org/fhir/uv/phd/StructureDefinition/PhdBaseObservation%7C00091FFFFE801A2B-RPM-000123-150020-795255330"
        );
    }

    #[test]
    fn eui48_to_eui64_inserts_fffe() {
        let mac: Eui48 = "DC:A6:32:12:34:56".parse().unwrap();
        assert_eq!(Eui64::from_eui48(mac).dashed(), "DC-A6-32-FF-FE-12-34-56");
        assert_eq!(mac.compact(), "DCA632123456");
        assert!("DC:A6:32".parse::<Eui48>().is_err());
    }

    #[test]
    fn reception_time_keeps_millis_and_plus_is_encoded() {
        let ts = IdTimestamp::Reception(UtcMillis((EPOCH_2000_SECS + 690_897_360) * 1000 + 567));
        assert_eq!(ts.encode(), "690897360.567");
        assert_eq!(percent_encode("a+b|c d"), "a%2Bb%7Cc%20d");
        assert_eq!(percent_decode("a%2Bb%7Cc+d"), "a+b|c d");
    }
}
