//! What the technician does with the radio on a visit: see which health devices are near
//! ([`scan`]), pair one and put it on the allow-list bound to the patient ([`Hub::pair_device`]),
//! and take one off again ([`unpair`]). A device of a family member is never read without the
//! pairing step: the daemon connects only to allow-listed, bonded devices.

use super::link::{short_uuid, BtleLink};
use super::pairing::{self, BondInfo, PasskeySource};
use super::session::Session;
use super::{BleError, DeviceConfig, Hub, Port, Registration, Registry};
use btleplug::api::{Central as _, Peripheral as _, ScanFilter};
use btleplug::platform::{Adapter, Peripheral};
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

/// Scan for `window` on the adapter `[ble] adapter` names (none: the first) and list what was
/// seen, nearest first; `port` tells which devices are on the allow-list.
pub async fn scan(
    adapter_choice: Option<&str>,
    window: Duration,
    port: Option<&dyn Port>,
) -> Result<Vec<Seen>, BleError> {
    let op = Duration::from_secs(10);
    let (adapter, name) = super::adapter::open(adapter_choice, op).await?;
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
        let paired = tokio::time::timeout(op, pairing::is_paired(&name, &address))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false);
        let allow_listed = match port {
            Some(s) => s
                .device(&address)
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

/// Find the device with `address` on `adapter`, scanning up to `within`.
async fn find(adapter: &Adapter, address: &str, within: Duration) -> Result<Peripheral, BleError> {
    let op = Duration::from_secs(10);
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
        registry: &dyn Registry,
        address: &str,
        name: &str,
        patient: &str,
        set_clock: bool,
        passkey: PasskeySource,
    ) -> Result<Paired, BleError> {
        let address = address.to_ascii_uppercase();
        let cfg = &self.shared.config;
        let op = Duration::from_millis(cfg.op_timeout_ms);
        let (adapter, adapter_name) = super::adapter::open(cfg.adapter.as_deref(), op).await?;
        let peripheral = find(&adapter, &address, Duration::from_secs(20)).await?;
        let bond = match pairing::pair(
            &adapter_name,
            &address,
            passkey,
            Duration::from_secs(60),
            None,
        )
        .await
        {
            Ok(b) => b,
            Err(e) => {
                record_pairing_failure(registry, &address, &e).await;
                return Err(e);
            }
        };
        if !bond.paired {
            return Err(BleError::Pairing {
                address,
                detail: "BlueZ reports the device as not paired after Pair()".into(),
            });
        }
        let mut record = Registration {
            address: address.clone(),
            name: Some(name.to_string()),
            profile: String::new(),
            patient: Some(patient.to_string()),
            bond: Some(bond.as_record()),
        };
        // Known but not yet allowed while it is being identified.
        let key = registry.register(record.clone(), false).await?;
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
                name: name.to_string(),
                legacy_address: None,
                user_id: None,
                set_clock,
            },
            stored: 0,
            test_data: false,
            deadline: super::session::Deadline::after(Duration::from_millis(
                cfg.session_timeout_ms,
            )),
            quirk: None,
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
        registry.register(record, true).await?;
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
        let device = match self.shared.port.device(&address).await? {
            Some(d) if d.allowed => d,
            _ => {
                return Err(BleError::Pairing {
                    address,
                    detail: "the device is not on the allow-list: pair it first".into(),
                })
            }
        };
        let cfg = &self.shared.config;
        let op = Duration::from_millis(cfg.op_timeout_ms);
        let (adapter, _) = super::adapter::open(cfg.adapter.as_deref(), op).await?;
        let peripheral = find(&adapter, &address, Duration::from_secs(20)).await?;
        let link = BtleLink::new(
            peripheral,
            Duration::from_millis(cfg.op_timeout_ms),
            Duration::from_millis(cfg.connect_timeout_ms),
        );
        let patient = device.patient.clone().unwrap_or_default();
        Ok(self
            .session(&link, &device, &address, patient, false, shutdown)
            .await)
    }
}

/// Take `address` off the allow-list (its stored readings stay, for upload) and remove the bond
/// from BlueZ on the adapter `[ble] adapter` names (none: the first). Returns whether the hub
/// knew the device.
pub async fn unpair(
    registry: &dyn Registry,
    adapter_choice: Option<&str>,
    address: &str,
) -> Result<bool, BleError> {
    let address = address.to_ascii_uppercase();
    let known = registry.set_bond(&address, None, Some(false)).await?;
    let adapter = super::adapter::name(adapter_choice, Duration::from_secs(10)).await?;
    let conn = zbus::Connection::system().await.map_err(bluez)?;
    let path =
        zbus::ObjectPath::try_from(pairing::device_path(&adapter, &address)).map_err(bluez)?;
    let adapter_path = super::adapter::path(&adapter);
    match conn
        .call_method(
            Some("org.bluez"),
            adapter_path.as_str(),
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

/// A failed `Pair()` is a security event (issue 19): `ble_passkey_mismatch` when BlueZ says the
/// authentication failed (a wrong or missing passkey), else `ble_pairing_failed`. The detail names
/// the device by its store id when the hub knows it, never by address; nothing of BlueZ's message.
async fn record_pairing_failure(registry: &dyn Registry, address: &str, e: &BleError) {
    let BleError::Pairing { detail, .. } = e else {
        return;
    };
    let kind = if detail.contains("AuthenticationFailed") {
        "ble_passkey_mismatch"
    } else {
        "ble_pairing_failed"
    };
    let who = match registry.device(address).await {
        Ok(Some(d)) => format!("device {}", d.key),
        _ => "a device not on the hub's list".to_string(),
    };
    let event = super::AuditEvent {
        kind,
        severity: "security",
        detail: format!("pairing {who} failed ({kind})"),
    };
    if let Err(err) = registry.events(vec![event]).await {
        tracing::warn!(error = %err, "Pairing failure not recorded.");
    }
}
