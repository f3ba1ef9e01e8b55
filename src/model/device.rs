//! Plain data about devices and the readings handed from a device session to the store: shared by
//! `ble` (which produces it), the daemon's ingest (which hands it on) and the store (which seals
//! it), so that `ble` needs no `store` import. Pure: std and serde only.

use super::{Reading, UtcMillis};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A device's id in the store (a random UUID; no meaning outside this hub).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeviceKey(pub String);

impl fmt::Display for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the BLE layer learnt about a device beyond its allow-list record (Device Information
/// Service, clock check, battery); the uplink builds the PhdDevice and timestamps from it. Sealed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// DIS System ID as an EUI-64, e.g. `00-09-1F-FF-FE-80-1A-2B`.
    pub system_id: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub firmware: Option<String>,
    pub hardware: Option<String>,
    pub software: Option<String>,
    /// The last clock check: the device's clock and the hub's read at one instant.
    pub clock: Option<ClockSample>,
    pub battery_percent: Option<u8>,
    pub last_seen: Option<UtcMillis>,
}

/// A coincident pair of device and hub times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockSample {
    pub device: super::LocalDateTime,
    pub hub: UtcMillis,
    /// The hub set the device's clock (Current Time Service) to local time at this UTC offset.
    pub set_by_hub_offset_minutes: Option<i32>,
}

/// One reading to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReading {
    pub reading: Reading,
    pub received_at: UtcMillis,
    /// The caller's idempotency key (device, patient, type, device time …); deduplicated by HMAC.
    pub stable_key: String,
    pub test_data: bool,
    /// For a continuous stream's window (whose mean is `reading`): how many values, their range.
    pub summary: Option<ReadingSummary>,
}

/// What one stored reading of a continuous stream summarises: the reading's value is the mean of
/// `count` values received in a window of `window_ms`, between `min` and `max`. Sealed with the
/// reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadingSummary {
    pub count: u64,
    pub min: super::Decimal,
    pub max: super::Decimal,
    pub window_ms: i64,
}
