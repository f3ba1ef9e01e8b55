//! The one way out of `ble`: the [`Port`] a session hands everything over through, and the
//! technician's [`Registry`] on top of it. `ble` defines them; the daemon implements them
//! (`crate::daemon::port::HubPort`, over ingest and the store), so `ble` imports neither the store
//! nor the uplink.
//!
//! **Fallible, and a failed commit ends the session.** Every call returns a `Result`. A session
//! whose [`Port::commit`] fails ends there (`Outcome::Failed`): the device keeps its records and
//! the next session asks for them again from the stored cursor, so a cursor never moves past a
//! record that is not stored (readings and their cursor commit in one transaction).
//!
//! **Bounded.** [`Port::stream_value`] never waits: the daemon's queue to the alert rules is
//! bounded and drops the newest value when full (counted, and said in the log); every other call
//! awaits the store's own bounded job queue (back-pressure on the session, nothing dropped).

use super::{HeldReading, RawValue};
use crate::model::device::{DeviceInfo, DeviceKey, NewReading};
use std::future::Future;
use std::pin::Pin;

/// What a port call returns.
pub type PortFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, PortError>> + Send + 'a>>;

/// Why a port call failed. The detail names no PHI (store errors name tables and ids).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// The store (or ingest) refused or failed; nothing of this call was stored.
    #[error("not stored: {0}")]
    Store(String),
    /// A bounded queue was full and the value was dropped (counted by the port).
    #[error("the {0} queue is full; the value was dropped")]
    Full(&'static str),
}

/// A device's download cursor (e.g. the last RACP sequence number stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub name: &'static str,
    pub value: i64,
}

/// Readings of one device and the cursor they cover, committed together or not at all.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Batch {
    pub readings: Vec<NewReading>,
    pub cursor: Option<Cursor>,
}

/// What a commit stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Committed {
    /// Readings new to the store.
    pub new: usize,
    /// Readings stored before (a re-sent record).
    pub duplicates: usize,
}

/// An allow-list entry as `ble` needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownDevice {
    pub key: DeviceKey,
    /// The name given at pairing, which the config's `[[device]]` settings refer to.
    pub name: Option<String>,
    pub allowed: bool,
    /// The patient its readings belong to.
    pub patient: Option<String>,
    /// The bond record (`BondInfo::as_record`), opaque but compared: a new one means a new bond.
    pub bond: Option<String>,
}

/// An audit event for the store's log: no values, no patient ids, no addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub kind: &'static str,
    pub severity: &'static str,
    pub detail: String,
}

/// A device the technician pairs, as registered on the allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub address: String,
    /// The name alert schedules and the config refer to it by.
    pub name: Option<String>,
    pub profile: String,
    pub patient: Option<String>,
    pub bond: Option<String>,
}

/// Everything a session hands over, and the reads it needs.
pub trait Port: Send + Sync + std::fmt::Debug {
    /// The allow-list entry of `address` (upper case), if the hub knows it.
    fn device<'a>(&'a self, address: &'a str) -> PortFuture<'a, Option<KnownDevice>>;
    /// The allow-listed device that was paired (a bond record is stored) under the name `name`,
    /// if any: a device *not* on the allow-list advertising this name is a spoof attempt
    /// (`ble_spoof_attempt`). A port without names (a test double) knows none.
    fn paired_named<'a>(&'a self, name: &'a str) -> PortFuture<'a, Option<KnownDevice>> {
        let _ = name;
        Box::pin(async { Ok(None) })
    }
    /// The device's download cursor `name`.
    fn cursor<'a>(&'a self, device: &'a DeviceKey, name: &'a str) -> PortFuture<'a, Option<i64>>;
    /// Store readings and their cursor durably, in one transaction; then the alert rules see the
    /// new ones. `Err`: nothing of the batch was stored and the cursor did not move.
    fn commit<'a>(&'a self, device: &'a DeviceKey, batch: Batch) -> PortFuture<'a, Committed>;
    /// The device information stored so far.
    fn device_info<'a>(&'a self, device: &'a DeviceKey) -> PortFuture<'a, Option<DeviceInfo>>;
    /// Replace the device information.
    fn set_device_info<'a>(&'a self, device: &'a DeviceKey, info: DeviceInfo)
        -> PortFuture<'a, ()>;
    /// Hold a reading of another user for assignment; `true` when it was not held before.
    fn hold<'a>(&'a self, held: HeldReading) -> PortFuture<'a, bool>;
    /// Append audit events (one transaction).
    fn events<'a>(&'a self, events: Vec<AuditEvent>) -> PortFuture<'a, ()>;
    /// One raw value of a continuous stream for the alert rules. Never waits: when the bounded
    /// queue is full the value is dropped and `Err(PortError::Full)` says so.
    fn stream_value(&self, value: RawValue) -> Result<(), PortError>;
}

/// What the technician's radio operations also need: putting devices on and off the allow-list.
pub trait Registry: Port {
    /// Put a device on the store's device list (allowed or not yet); returns its key.
    fn register<'a>(&'a self, device: Registration, allowed: bool) -> PortFuture<'a, DeviceKey>;
    /// Set the bond record of a known device (and, with `allowed`, its allow-list state).
    /// Returns whether the device was known.
    fn set_bond<'a>(
        &'a self,
        address: &'a str,
        bond: Option<String>,
        allowed: Option<bool>,
    ) -> PortFuture<'a, bool>;
}
