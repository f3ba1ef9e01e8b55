//! The narrow seam between the sessions and the BLE library: [`Link`] and its btleplug
//! implementation [`BtleLink`]. btleplug and bluez-async types stop here.

use btleplug::api::{bleuuid::uuid_from_u16, Characteristic, Peripheral as _, WriteType};
use btleplug::platform::Peripheral;
use futures::stream::{Stream, StreamExt};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

/// Values a device sends: (16-bit characteristic UUID, bytes).
pub type Notifications = Pin<Box<dyn Stream<Item = (u16, Vec<u8>)> + Send>>;

/// Why a link operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The operation did not finish within its timeout.
    #[error("{op} timed out after {after:?}")]
    Timeout { op: &'static str, after: Duration },
    /// BlueZ refused because the device is not bonded (`NotPermitted` "Not paired", `NotPaired`).
    #[error("the device is not paired")]
    NotPaired,
    /// `le-connection-abort-by-local` and similar: worth retrying.
    #[error("the connection was aborted ({0})")]
    ConnectAborted(String),
    /// The link is down.
    #[error("not connected")]
    NotConnected,
    /// The device has no such characteristic.
    #[error("the device has no characteristic 0x{0:04X}")]
    Missing(u16),
    /// Anything else the stack reported.
    #[error("{0}")]
    Other(String),
}

/// One device's GATT link: what a session needs and nothing more.
pub trait Link: Send + Sync {
    /// Connect and discover services.
    fn connect(&self) -> impl Future<Output = Result<(), LinkError>> + Send;
    /// Whether the discovered GATT database has this characteristic.
    fn has(&self, ch: u16) -> bool;
    /// Whether the characteristic accepts writes.
    fn writable(&self, ch: u16) -> bool;
    fn read(&self, ch: u16) -> impl Future<Output = Result<Vec<u8>, LinkError>> + Send;
    /// Write with response.
    fn write(&self, ch: u16, data: &[u8]) -> impl Future<Output = Result<(), LinkError>> + Send;
    /// Enable notifications or indications (the CCCD).
    fn subscribe(&self, ch: u16) -> impl Future<Output = Result<(), LinkError>> + Send;
    /// The device's value stream; take it before triggering a control point.
    fn notifications(&self) -> impl Future<Output = Result<Notifications, LinkError>> + Send;
    fn is_connected(&self) -> impl Future<Output = Result<bool, LinkError>> + Send;
    fn disconnect(&self) -> impl Future<Output = Result<(), LinkError>> + Send;
}

/// A [`Link`] over a btleplug peripheral; every call under `op_timeout`.
#[derive(Debug)]
pub struct BtleLink {
    peripheral: Peripheral,
    op_timeout: Duration,
    connect_timeout: Duration,
    chars: Mutex<HashMap<u16, Characteristic>>,
}

impl BtleLink {
    pub(crate) fn new(
        peripheral: Peripheral,
        op_timeout: Duration,
        connect_timeout: Duration,
    ) -> Self {
        BtleLink {
            peripheral,
            op_timeout,
            connect_timeout,
            chars: Mutex::new(HashMap::new()),
        }
    }

    fn characteristic(&self, ch: u16) -> Result<Characteristic, LinkError> {
        self.chars
            .lock()
            .map_err(|_| LinkError::Other("characteristic table poisoned".into()))?
            .get(&ch)
            .cloned()
            .ok_or(LinkError::Missing(ch))
    }
}

/// The 16-bit SIG UUID of a full UUID in the Bluetooth base range.
pub(crate) fn short_uuid(u: uuid::Uuid) -> Option<u16> {
    let (d1, d2, d3, d4) = u.as_fields();
    let base = uuid_from_u16(0);
    let (_, b2, b3, b4) = base.as_fields();
    if d2 == b2 && d3 == b3 && d4 == b4 && d1 <= 0xFFFF {
        u16::try_from(d1).ok()
    } else {
        None
    }
}

/// Classify a btleplug error by the D-Bus error BlueZ answered with.
pub(crate) fn classify(e: btleplug::Error) -> LinkError {
    match &e {
        btleplug::Error::NotConnected => return LinkError::NotConnected,
        btleplug::Error::Other(inner) => {
            if let Some(bluez_async::BluetoothError::DbusError(d)) =
                inner.downcast_ref::<bluez_async::BluetoothError>()
            {
                let name = d.name().unwrap_or_default();
                let msg = d.message().unwrap_or_default();
                if name.ends_with("NotPermitted") && msg.contains("paired")
                    || name.ends_with("NotPaired")
                    || name.ends_with("AuthenticationFailed")
                {
                    return LinkError::NotPaired;
                }
                if msg.contains("le-connection-abort") || name.ends_with("InProgress") {
                    return LinkError::ConnectAborted(msg.to_string());
                }
                if msg.contains("Not connected") || name.ends_with("NotConnected") {
                    return LinkError::NotConnected;
                }
                return LinkError::Other(format!("{name}: {msg}"));
            }
        }
        _ => {}
    }
    LinkError::Other(e.to_string())
}

async fn timed<T>(
    op: &'static str,
    after: Duration,
    f: impl Future<Output = btleplug::Result<T>>,
) -> Result<T, LinkError> {
    match tokio::time::timeout(after, f).await {
        Ok(r) => r.map_err(classify),
        Err(_) => Err(LinkError::Timeout { op, after }),
    }
}

impl Link for BtleLink {
    async fn connect(&self) -> Result<(), LinkError> {
        let r = timed("connect", self.connect_timeout, self.peripheral.connect()).await;
        if let Err(e) = r {
            // BlueZ keeps trying after a client-side timeout or a failed discovery: stop it.
            let _ = timed("disconnect", self.op_timeout, self.peripheral.disconnect()).await;
            return Err(e);
        }
        if let Err(e) = timed(
            "discover services",
            self.connect_timeout,
            self.peripheral.discover_services(),
        )
        .await
        {
            let _ = timed("disconnect", self.op_timeout, self.peripheral.disconnect()).await;
            return Err(e);
        }
        let mut map = HashMap::new();
        for c in self.peripheral.characteristics() {
            if let Some(short) = short_uuid(c.uuid) {
                map.entry(short).or_insert(c);
            }
        }
        if let Ok(mut chars) = self.chars.lock() {
            *chars = map;
        }
        Ok(())
    }

    fn has(&self, ch: u16) -> bool {
        self.characteristic(ch).is_ok()
    }

    fn writable(&self, ch: u16) -> bool {
        self.characteristic(ch)
            .is_ok_and(|c| c.properties.contains(btleplug::api::CharPropFlags::WRITE))
    }

    async fn read(&self, ch: u16) -> Result<Vec<u8>, LinkError> {
        let c = self.characteristic(ch)?;
        timed("read", self.op_timeout, self.peripheral.read(&c)).await
    }

    async fn write(&self, ch: u16, data: &[u8]) -> Result<(), LinkError> {
        let c = self.characteristic(ch)?;
        timed(
            "write",
            self.op_timeout,
            self.peripheral.write(&c, data, WriteType::WithResponse),
        )
        .await
    }

    async fn subscribe(&self, ch: u16) -> Result<(), LinkError> {
        let c = self.characteristic(ch)?;
        timed("subscribe", self.op_timeout, self.peripheral.subscribe(&c)).await
    }

    async fn notifications(&self) -> Result<Notifications, LinkError> {
        let s = timed(
            "notifications",
            self.op_timeout,
            self.peripheral.notifications(),
        )
        .await?;
        Ok(Box::pin(s.filter_map(|n| async move {
            short_uuid(n.uuid).map(|u| (u, n.value))
        })))
    }

    async fn is_connected(&self) -> Result<bool, LinkError> {
        timed(
            "is_connected",
            self.op_timeout,
            self.peripheral.is_connected(),
        )
        .await
    }

    async fn disconnect(&self) -> Result<(), LinkError> {
        timed("disconnect", self.op_timeout, self.peripheral.disconnect()).await
    }
}
