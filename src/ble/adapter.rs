//! The one adapter choice: `[ble] adapter` when configured (`hci1`), else the first adapter BlueZ
//! lists (by object path, so every caller — the daemon's scan, pairing, the technician's radio
//! commands, `doctor` — picks the same one).

use super::BleError;
use btleplug::api::{Central as _, Manager as _};
use btleplug::platform::{Adapter, Manager};
use std::collections::HashMap;
use std::time::Duration;
use zbus::{OwnedObjectPath, OwnedVariant};

type Managed = HashMap<OwnedObjectPath, HashMap<String, HashMap<String, OwnedVariant>>>;

/// The adapter's name (`hci0`): `configured`, checked to exist, or the first BlueZ lists.
pub async fn name(configured: Option<&str>, op: Duration) -> Result<String, BleError> {
    let bluez = |e: String| BleError::Bluez(e);
    let conn = tokio::time::timeout(op, zbus::Connection::system())
        .await
        .map_err(|_| bluez("the system bus did not answer".into()))?
        .map_err(|e| bluez(e.to_string()))?;
    let reply = tokio::time::timeout(
        op,
        conn.call_method(
            Some("org.bluez"),
            "/",
            Some("org.freedesktop.DBus.ObjectManager"),
            "GetManagedObjects",
            &(),
        ),
    )
    .await
    .map_err(|_| bluez("BlueZ did not answer".into()))?
    .map_err(|e| bluez(e.to_string()))?;
    let objects: Managed = reply
        .body()
        .deserialize()
        .map_err(|e| bluez(e.to_string()))?;
    let mut names: Vec<String> = objects
        .iter()
        .filter(|(_, ifaces)| ifaces.contains_key("org.bluez.Adapter1"))
        .filter_map(|(path, _)| path.as_str().strip_prefix("/org/bluez/").map(str::to_owned))
        .filter(|n| !n.contains('/'))
        .collect();
    names.sort();
    match configured {
        Some(c) if names.iter().any(|n| n == c) => Ok(c.to_string()),
        Some(c) => Err(BleError::AdapterMissing(c.to_string())),
        None => names.into_iter().next().ok_or(BleError::NoAdapter),
    }
}

/// The btleplug adapter called `name` (its info reads `hci0 (usb:…)`).
pub async fn find(manager: &Manager, name: &str, op: Duration) -> Result<Adapter, BleError> {
    let bluez = |e: String| BleError::Bluez(e);
    let adapters = tokio::time::timeout(op, manager.adapters())
        .await
        .map_err(|_| bluez("timeout".into()))?
        .map_err(|e| bluez(e.to_string()))?;
    for a in adapters {
        let info = tokio::time::timeout(op, a.adapter_info())
            .await
            .map_err(|_| bluez("timeout".into()))?
            .map_err(|e| bluez(e.to_string()))?;
        if info.split_whitespace().next() == Some(name) {
            return Ok(a);
        }
    }
    Err(BleError::AdapterMissing(name.to_string()))
}

/// The adapter the config chooses, as btleplug's handle and by name.
pub async fn open(configured: Option<&str>, op: Duration) -> Result<(Adapter, String), BleError> {
    let name = name(configured, op).await?;
    let m = tokio::time::timeout(op, Manager::new())
        .await
        .map_err(|_| BleError::Bluez("timeout".into()))?
        .map_err(|e| BleError::Bluez(e.to_string()))?;
    Ok((find(&m, &name, op).await?, name))
}

/// The BlueZ object path of the adapter `name`.
pub fn path(name: &str) -> String {
    format!("/org/bluez/{name}")
}
