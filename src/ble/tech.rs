//! What the technician does with the radio on a visit: see which health devices are near
//! ([`scan`]), pair one and put it on the allow-list bound to the patient ([`Hub::pair_device`]),
//! and take one off again ([`unpair`]). A device of a family member is never read without the
//! pairing step: the daemon connects only to allow-listed, bonded devices.

use super::link::{short_uuid, BtleLink};
use super::pairing::{self, BondInfo, PasskeySource};
use super::session::Session;
use super::{BleError, DeviceConfig, Hub};
use crate::store::{DeviceRecord, Store};
use btleplug::api::{Central as _, Manager as _, Peripheral as _, ScanFilter};
use btleplug::platform::{Adapter, Manager, Peripheral};
use std::time::Duration;

/// Health services the hub reads, by the profile name the store and the config use.
pub const SUPPORTED: &[(u16, &str)] = &[
    (0x1808, "glucose"),
    (0x181F, "cgm"),
    (0x1810, "blood-pressure"),
    (0x1822, "pulse-oximeter"),
    (0x181D, "scale"),
    (0x1809, "thermometer"),
    (0x180D, "heart-rate"),
];

/// Health and fitness services a device may advertise that the hub does not read.
const UNSUPPORTED: &[(u16, &str)] = &[
    (0x183A, "insulin delivery"),
    (0x181B, "body composition"),
    (0x1826, "fitness machine"),
    (0x183E, "physical activity monitor"),
    (0x1816, "cycling speed and cadence"),
    (0x1818, "cycling power"),
    (0x1814, "running speed and cadence"),
    (0x181C, "user data"),
    (0x1830, "continuous glucose (vendor)"),
];

/// A device seen in a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub address: String,
    pub name: Option<String>,
    pub rssi: Option<i16>,
    /// Supported profiles it advertises.
    pub profiles: Vec<&'static str>,
    /// Health services it advertises that the hub does not read.
    pub unsupported: Vec<&'static str>,
    /// Bonded with this hub's BlueZ.
    pub paired: bool,
    /// On the hub's allow-list.
    pub allow_listed: bool,
}

impl Seen {
    /// A health device at all (supported or not).
    pub fn is_health(&self) -> bool {
        !self.profiles.is_empty() || !self.unsupported.is_empty()
    }
}

fn bluez(e: impl std::fmt::Display) -> BleError {
    BleError::Bluez(e.to_string())
}

async fn adapter(op: Duration) -> Result<Adapter, BleError> {
    let m = tokio::time::timeout(op, Manager::new())
        .await
        .map_err(|_| bluez("timeout"))?
        .map_err(bluez)?;
    let adapters = tokio::time::timeout(op, m.adapters())
        .await
        .map_err(|_| bluez("timeout"))?
        .map_err(bluez)?;
    adapters.into_iter().next().ok_or(BleError::NoAdapter)
}

/// Scan for `window` and list what was seen, nearest first.
pub async fn scan(window: Duration, store: Option<&Store>) -> Result<Vec<Seen>, BleError> {
    let op = Duration::from_secs(10);
    let adapter = adapter(op).await?;
    tokio::time::timeout(op, adapter.start_scan(ScanFilter::default()))
        .await
        .map_err(|_| bluez("timeout starting the scan"))?
        .map_err(bluez)?;
    tokio::time::sleep(window).await;
    let peripherals = tokio::time::timeout(op, adapter.peripherals())
        .await
        .map_err(|_| bluez("timeout"))?
        .map_err(bluez)?;
    let _ = tokio::time::timeout(op, adapter.stop_scan()).await;
    let mut out = Vec::new();
    for p in peripherals {
        let Ok(Ok(Some(props))) = tokio::time::timeout(op, p.properties()).await else {
            continue;
        };
        let address = props.address.to_string().to_ascii_uppercase();
        let shorts: Vec<u16> = props
            .services
            .iter()
            .filter_map(|u| short_uuid(*u))
            .collect();
        let profiles = SUPPORTED
            .iter()
            .filter(|(u, _)| shorts.contains(u))
            .map(|(_, n)| *n)
            .collect();
        let unsupported = UNSUPPORTED
            .iter()
            .filter(|(u, _)| shorts.contains(u))
            .map(|(_, n)| *n)
            .collect();
        let paired = tokio::time::timeout(op, pairing::is_paired(&address))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false);
        let allow_listed = match store {
            Some(s) => s
                .device_by_address(&address)
                .await
                .ok()
                .flatten()
                .is_some_and(|d| d.allowed),
            None => false,
        };
        out.push(Seen {
            address,
            name: props.local_name,
            rssi: props.rssi,
            profiles,
            unsupported,
            paired,
            allow_listed,
        });
    }
    out.sort_by_key(|s| std::cmp::Reverse(s.rssi.unwrap_or(i16::MIN)));
    Ok(out)
}

/// Find the device with `address`, scanning up to `within`.
async fn find(address: &str, within: Duration) -> Result<Peripheral, BleError> {
    let op = Duration::from_secs(10);
    let adapter = adapter(op).await?;
    let _ = tokio::time::timeout(op, adapter.start_scan(ScanFilter::default())).await;
    let end = tokio::time::Instant::now() + within;
    let found = loop {
        let ps = tokio::time::timeout(op, adapter.peripherals())
            .await
            .map_err(|_| bluez("timeout"))?
            .map_err(bluez)?;
        if let Some(p) = ps
            .into_iter()
            .find(|p| p.address().to_string().eq_ignore_ascii_case(address))
        {
            break Some(p);
        }
        if tokio::time::Instant::now() >= end {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let _ = tokio::time::timeout(op, adapter.stop_scan()).await;
    found.ok_or_else(|| BleError::Pairing {
        address: address.to_string(),
        detail: format!(
            "the device was not seen within {} s (is it on, near, and advertising?)",
            within.as_secs()
        ),
    })
}

/// What [`Hub::pair_device`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paired {
    pub address: String,
    pub bond: BondInfo,
    pub profile: &'static str,
    pub clock_offset_s: Option<i64>,
    pub clock_written: bool,
}

impl Hub {
    /// Pair `address` through BlueZ with the hub's agent, read its Device Information, battery and
    /// profile, set its clock where `set_clock` (and the device) allows, and put it on the
    /// allow-list bound to `patient` under `name` (the name alert schedules refer to).
    pub async fn pair_device(
        &self,
        address: &str,
        name: &str,
        patient: &str,
        set_clock: bool,
        passkey: PasskeySource,
    ) -> Result<Paired, BleError> {
        let address = address.to_ascii_uppercase();
        let cfg = &self.shared.config;
        let peripheral = find(&address, Duration::from_secs(20)).await?;
        let bond = pairing::pair(&address, passkey, Duration::from_secs(60), None).await?;
        if !bond.paired {
            return Err(BleError::Pairing {
                address,
                detail: "BlueZ reports the device as not paired after Pair()".into(),
            });
        }
        let store = &self.shared.store;
        let mut record = DeviceRecord {
            address: address.clone(),
            name: Some(name.to_string()),
            profile: String::new(),
            patient_binding: Some(patient.to_string()),
            serial: None,
            bond: Some(bond.as_record()),
        };
        // Known but not yet allowed while it is being identified.
        let key = store.upsert_device(record.clone(), false).await?;
        let link = BtleLink::new(
            peripheral,
            Duration::from_millis(cfg.op_timeout_ms),
            Duration::from_millis(cfg.connect_timeout_ms),
        );
        let mut session = Session {
            link: &link,
            shared: &self.shared,
            device: key.clone(),
            address: address.clone(),
            tag: key.to_string(),
            patient: patient.to_string(),
            dev_cfg: DeviceConfig {
                address: address.clone(),
                user_id: None,
                set_clock,
            },
            stored: 0,
            test_data: false,
        };
        let before = self.events().len();
        let profile = session
            .identify()
            .await
            .map_err(|e| BleError::Pairing {
                address: address.clone(),
                detail: format!("paired, but reading the device failed: {e}"),
            })?
            .ok_or_else(|| BleError::Pairing {
                address: address.clone(),
                detail: "the device offers none of the health profiles the hub reads".into(),
            })?;
        let (clock_offset_s, clock_written) = self
            .events()
            .into_iter()
            .skip(before)
            .find_map(|e| match e {
                super::BleEvent::ClockOffset {
                    device_minus_hub_s,
                    written,
                    ..
                } => Some((Some(device_minus_hub_s), written)),
                _ => None,
            })
            .unwrap_or((None, false));
        record.profile = profile.to_string();
        store.upsert_device(record, true).await?;
        Ok(Paired {
            address,
            bond,
            profile,
            clock_offset_s,
            clock_written,
        })
    }
}

impl Hub {
    /// One session with the allow-listed device at `address` now (the technician's `read`):
    /// its stored records are downloaded through this hub's sink, as the daemon would.
    pub async fn read_now(
        &self,
        address: &str,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<super::Outcome, BleError> {
        let address = address.to_ascii_uppercase();
        let device = match self.shared.store.device_by_address(&address).await? {
            Some(d) if d.allowed => d,
            _ => {
                return Err(BleError::Pairing {
                    address,
                    detail: "the device is not on the allow-list: pair it first".into(),
                })
            }
        };
        let peripheral = find(&address, Duration::from_secs(20)).await?;
        let cfg = &self.shared.config;
        let link = BtleLink::new(
            peripheral,
            Duration::from_millis(cfg.op_timeout_ms),
            Duration::from_millis(cfg.connect_timeout_ms),
        );
        let patient = device.record.patient_binding.clone().unwrap_or_default();
        Ok(self
            .session(&link, &device, &address, patient, false, shutdown)
            .await)
    }
}

/// Take `address` off the allow-list (its stored readings stay, for upload) and remove the bond
/// from BlueZ. Returns whether the hub knew the device.
pub async fn unpair(store: &Store, address: &str) -> Result<bool, BleError> {
    let address = address.to_ascii_uppercase();
    let known = match store.device_by_address(&address).await? {
        Some(d) => {
            let mut record = d.record;
            record.bond = None;
            store.upsert_device(record, false).await?;
            true
        }
        None => false,
    };
    let conn = zbus::Connection::system().await.map_err(bluez)?;
    let path = zbus::ObjectPath::try_from(pairing::device_path(&address)).map_err(bluez)?;
    match conn
        .call_method(
            Some("org.bluez"),
            "/org/bluez/hci0",
            Some("org.bluez.Adapter1"),
            "RemoveDevice",
            &(&path,),
        )
        .await
    {
        Ok(_) => {}
        // BlueZ no longer knows it: nothing to remove.
        Err(zbus::Error::MethodError(name, _, _)) if name.as_str().ends_with("DoesNotExist") => {}
        Err(e) => {
            return Err(BleError::Dbus {
                address,
                call: "Adapter1.RemoveDevice",
                detail: e.to_string(),
            })
        }
    }
    Ok(known)
}
