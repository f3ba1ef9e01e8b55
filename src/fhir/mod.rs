//! Pure mapping of hub readings to the HL7 PHD IG (STU2, FHIR R4) and parsing of the server's
//! transaction-responses. Values in, JSON values out: no I/O, no clock, no randomness (the caller
//! passes the `urn:uuid` nonce), so every output is reproducible and golden-tested.
//!
//! Layout: [`observation`] maps readings and devices, [`alert`] maps alerts, [`heartbeat`] the hub's
//! status, [`bundle`] assembles them into transaction Bundles (and re-exports the names callers
//! use), [`response`] parses the answers, [`identifier`] and [`codes`] hold the identifiers and
//! code systems.
//!
//! # Mapping decisions
//!
//! - **One Observation per reading**, except blood pressure: the systolic, diastolic and mean
//!   readings of one measurement become one `PhdCompoundNumericObservation` (MDC 150020, LOINC
//!   85354-9) with a component each. Readings belong to one measurement when they share the device,
//!   the device timestamp and the hub's reception instant — the BLE layer stores the readings of one
//!   BLS notification together with one `received_at`, so this key is exact. The grouping is done per
//!   bundle ([`bundle::build`]) over adjacent items; the uplink never splits a group across bundles.
//! - **Identifiers** ([`identifier`]): the IG's conditional-create identifier from the device's
//!   system id (or Bluetooth address), the patient's logical id, the MDC type and the *device*
//!   timestamp (reception time at ms resolution when the device sent none); every entry carries
//!   `request.ifNoneExist` percent-encoded.
//! - **Timestamps**: a device whose clock the hub set (Current Time Service) is `Synchronized` and its
//!   local time is published with its UTC offset. A device whose clock the hub never checked is
//!   `Unchecked`: its local time is read at the hub's offset, and the Observation carries the hub
//!   flag `device_clock_unchecked` (time quality told truthfully, not claimed synchronised). An unsynchronised clock with a coincident pair
//!   (device time, hub time read at one instant) is mapped onto the hub's timeline and a coincident
//!   timestamp Observation (MDC 67975) is added and referenced. No device time: reception time.
//! - **Specials** (NaN, NRes, ±INF, reserved) and an `InvalidMeasurement` status give
//!   `dataAbsentReason` and no value; status flags give `interpretation` (PoCD measurement-status
//!   where one exists, the hub's flag code system always); test or demo data gets `meta.security`
//!   HTEST. Threshold interpretations (L/H/LL/HH) come from the alerts module through
//!   [`ReadingInput::interpretation`].

pub mod alert;
pub mod audit;
pub mod bundle;
pub mod capability;
pub mod codes;
pub mod device_info;
pub mod heartbeat;
pub mod identifier;
pub mod limits;
pub mod observation;
pub mod response;

pub use bundle::{
    build, heartbeat_bundle, reading_identifier, stable_key, BuiltBundle, BundleContext, EntryInfo,
    EntryKind, HubStatus, ReadingInput, MAX_ENTRIES,
};
pub use codes::DeviceClass;
pub use identifier::{
    DeviceIdent, Eui48, Eui64, IdTimestamp, ObservationIdentifier, EPOCH_2000_SECS,
};
pub use response::{parse_operation_outcome, parse_transaction_response, EntryOutcome};

use crate::model::{LocalDateTime, UtcMillis};

/// Errors of the FHIR mapping and response parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FhirError {
    /// A reading kind the hub does not upload (no agreed MDC code).
    #[error("reading kind `{0}` has no PHD IG mapping; it is kept on the hub and not uploaded")]
    Unmapped(String),
    /// The device has neither a system id nor a Bluetooth address to identify it.
    #[error("device {0} has neither a system id nor a Bluetooth address; re-pair it so its address is stored")]
    NoDeviceIdentity(String),
    /// The server's answer is not a transaction-response Bundle the hub can use.
    #[error("the server's transaction-response is unusable: {0}")]
    BadResponse(String),
    /// A time is outside what FHIR or the model can represent.
    #[error("time out of range: {0}")]
    Time(String),
}

/// The hub itself (the PHG).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubInfo {
    /// The hub's network MAC; its EUI-64 (FF-FE inserted) is the PHG system id.
    pub mac: Eui48,
    pub manufacturer: String,
    pub model: String,
    pub software_version: String,
    /// Whether the hub's clock is kept by NTP (systemd-timesyncd: SNTPv4).
    pub ntp: bool,
    /// The hub's UTC offset in minutes, used for device wall-clock times (the "PHG offset").
    pub utc_offset_minutes: i32,
    /// The home's zone: when known, each device wall-clock time and each instant is published
    /// with the offset the zone's rules give at that time (daylight saving), not one fixed offset.
    pub zone: Option<crate::model::Zone>,
}

impl HubInfo {
    /// The UTC offset of an instant: the zone's at that instant, or the fixed one.
    pub fn offset_at(&self, utc: UtcMillis) -> i32 {
        match &self.zone {
            Some(z) => z.offset_minutes_at(utc),
            None => self.utc_offset_minutes,
        }
    }

    /// The UTC offset of a device wall-clock time `t` in the home: the one that puts `t` at the
    /// instant the zone's rules give it (a gap or fold resolved by
    /// [`crate::model::Zone::resolve`]'s rule, so the published time is the stored instant), or
    /// `fixed`.
    pub fn offset_of_local(&self, t: LocalDateTime, fixed: i32) -> i32 {
        match &self.zone {
            Some(z) => {
                let utc = z.resolve(t).utc.as_millis();
                i32::try_from((t.to_epoch_seconds() * 1000 - utc).div_euclid(60_000))
                    .unwrap_or(fixed)
            }
            None => fixed,
        }
    }
}

/// How a medical device's clock relates to the hub's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceClock {
    /// The hub set the device's clock (CTS) or it is otherwise synchronised: its wall-clock times
    /// are local times at this UTC offset.
    Synchronized { utc_offset_minutes: i32 },
    /// The hub never checked the device's clock (no clock sample, e.g. a device without Current
    /// Time): its wall-clock times are read at this UTC offset as the best guess, and every
    /// Observation with a device time says `device-clock-unchecked`, never synchronised.
    Unchecked { utc_offset_minutes: i32 },
    /// Not synchronised: the device's clock read `device` when the hub's read `hub`.
    Coincident {
        device: LocalDateTime,
        hub: UtcMillis,
    },
}

/// A medical device (the PHD), as the store and Device Information Service know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhdDeviceInfo {
    /// The store's device key: groups readings; never emitted.
    pub key: String,
    pub system_id: Option<Eui64>,
    pub bt_mac: Option<Eui48>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub firmware: Option<String>,
    pub hardware: Option<String>,
    pub software: Option<String>,
    pub class: DeviceClass,
    pub clock: DeviceClock,
}

impl PhdDeviceInfo {
    /// The identifier's device part: system id, else Bluetooth address.
    pub fn ident(&self) -> Result<DeviceIdent, FhirError> {
        match (self.system_id, self.bt_mac) {
            (Some(s), _) => Ok(DeviceIdent::SystemId(s)),
            (None, Some(m)) => Ok(DeviceIdent::BtMac(m)),
            (None, None) => Err(FhirError::NoDeviceIdentity(self.key.clone())),
        }
    }
}

/// Threshold interpretation set by the alert rules (v3 ObservationInterpretation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpretation {
    Low,
    High,
    CriticalLow,
    CriticalHigh,
}

impl Interpretation {
    pub fn code(&self) -> (&'static str, &'static str) {
        match self {
            Interpretation::Low => ("L", "Low"),
            Interpretation::High => ("H", "High"),
            Interpretation::CriticalLow => ("LL", "Critical low"),
            Interpretation::CriticalHigh => ("HH", "Critical high"),
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.mmm]±HH:MM` for a UTC instant shown at `offset_minutes`.
pub fn format_instant(
    t: UtcMillis,
    offset_minutes: i32,
    millis: bool,
) -> Result<String, FhirError> {
    let shifted = t.as_millis() + i64::from(offset_minutes) * 60_000;
    let secs = shifted.div_euclid(1000);
    let ms = shifted.rem_euclid(1000);
    let local =
        LocalDateTime::from_epoch_seconds(secs).map_err(|e| FhirError::Time(e.to_string()))?;
    Ok(format!(
        "{}{}{}",
        local_text(&local),
        if millis {
            format!(".{ms:03}")
        } else {
            String::new()
        },
        offset_text(offset_minutes)
    ))
}

/// A device wall-clock time shown with a UTC offset (no conversion).
pub fn format_local(t: &LocalDateTime, offset_minutes: i32) -> String {
    format!("{}{}", local_text(t), offset_text(offset_minutes))
}

fn local_text(t: &LocalDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn offset_text(offset_minutes: i32) -> String {
    let sign = if offset_minutes < 0 { '-' } else { '+' };
    let m = offset_minutes.unsigned_abs();
    format!("{sign}{:02}:{:02}", m / 60, m % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_format_with_offsets() {
        let t = UtcMillis(1_741_940_130_000); // 2025-03-14T08:15:30Z
        assert_eq!(
            format_instant(t, 0, false).unwrap(),
            "2025-03-14T08:15:30+00:00"
        );
        assert_eq!(
            format_instant(t, 60, false).unwrap(),
            "2025-03-14T09:15:30+01:00"
        );
        assert_eq!(
            format_instant(t.plus_millis(7), -330, true).unwrap(),
            "2025-03-14T02:45:30.007-05:30"
        );
    }
}
