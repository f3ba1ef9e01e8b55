//! A stored device as the FHIR mapping needs it: shared by ingest (alert references) and the
//! uplink (PhdDevice, timestamps). Pure: the inputs are `model` data.

use super::{DeviceClass, DeviceClock, PhdDeviceInfo};
use crate::model::device::DeviceInfo;

/// A device's identity as the hub keeps it (from its allow-list record).
#[derive(Debug, Clone, Copy)]
pub struct DeviceIdentity<'a> {
    /// The store's device key.
    pub key: &'a str,
    pub address: &'a str,
    pub name: Option<&'a str>,
    pub serial: Option<&'a str>,
    /// The health profile, e.g. `glucose`.
    pub profile: &'a str,
}

/// What the FHIR mapping needs of a device: its identity, Device Information and clock.
pub fn phd_device_info(
    d: DeviceIdentity<'_>,
    info: DeviceInfo,
    utc_offset_minutes: i32,
) -> PhdDeviceInfo {
    let clock = match info.clock {
        Some(s) => match s.set_by_hub_offset_minutes {
            Some(o) => DeviceClock::Synchronized {
                utc_offset_minutes: o,
            },
            None => DeviceClock::Coincident {
                device: s.device,
                hub: s.hub,
            },
        },
        // No clock check recorded: the device's times are read as hub-local (the PHG offset, the
        // best guess), but nobody checked the clock, so it is not claimed synchronised.
        None => DeviceClock::Unchecked { utc_offset_minutes },
    };
    PhdDeviceInfo {
        key: d.key.to_string(),
        system_id: info.system_id.as_deref().and_then(|s| s.parse().ok()),
        bt_mac: d.address.parse().ok(),
        manufacturer: info.manufacturer,
        model: info.model.or(d.name.map(str::to_owned)),
        serial: d.serial.map(str::to_owned),
        firmware: info.firmware,
        hardware: info.hardware,
        software: info.software,
        class: DeviceClass::from_profile(d.profile),
        clock,
    }
}
