//! Pairing mechanics, which btleplug does not have: `org.bluez.Device1.Pair()` over zbus on the
//! system bus, with the hub's own `org.bluez.Agent1` (capability KeyboardDisplay) registered through
//! `AgentManager1.RegisterAgent` + `RequestDefaultAgent`, then `Trusted = true`; the bond is recorded
//! through the [`Registry`] (the store's device record). The technician's `pair` calls [`pair`].

use super::{BleError, Registry};
use std::sync::Arc;
use std::time::Duration;
use zbus::{interface, Connection, ObjectPath, OwnedVariant};

const AGENT_PATH: &str = "/org/vitalshub/agent";

/// The BlueZ object path of a device on `adapter` (`hci0`; see [`super::adapter::name`]).
pub fn device_path(adapter: &str, address: &str) -> String {
    format!(
        "{}/dev_{}",
        super::adapter::path(adapter),
        address.to_ascii_uppercase().replace(':', "_")
    )
}

/// Where the passkey comes from (the technician, reading it off the device's display or label).
pub type PasskeySource = Arc<dyn Fn() -> Option<u32> + Send + Sync>;

struct Agent {
    passkey: PasskeySource,
}

#[interface(name = "org.bluez.Agent1")]
impl Agent {
    fn release(&self) {}
    fn request_pin_code(&self, _device: ObjectPath<'_>) -> zbus::fdo::Result<String> {
        (self.passkey)()
            .map(|p| format!("{p:06}"))
            .ok_or_else(|| zbus::fdo::Error::Failed("no PIN given".into()))
    }
    fn display_pin_code(&self, _device: ObjectPath<'_>, _pin: &str) {}
    fn request_passkey(&self, _device: ObjectPath<'_>) -> zbus::fdo::Result<u32> {
        (self.passkey)().ok_or_else(|| zbus::fdo::Error::Failed("no passkey given".into()))
    }
    fn display_passkey(&self, _device: ObjectPath<'_>, _passkey: u32, _entered: u16) {}
    fn request_confirmation(&self, _device: ObjectPath<'_>, _passkey: u32) {}
    fn request_authorization(&self, _device: ObjectPath<'_>) {}
    fn authorize_service(&self, _device: ObjectPath<'_>, _uuid: &str) {}
    fn cancel(&self) {}
}

/// What the bond is, as recorded in the device record (`bond`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BondInfo {
    pub paired: bool,
    pub bonded: bool,
    pub trusted: bool,
    /// `authenticated-passkey` when a passkey was exchanged, else `unauthenticated-just-works`.
    pub security: &'static str,
}

impl BondInfo {
    pub fn as_record(&self) -> String {
        format!(
            "paired={};bonded={};trusted={};security={}",
            self.paired, self.bonded, self.trusted, self.security
        )
    }
}

async fn prop(conn: &Connection, path: &str, name: &str) -> Result<bool, zbus::Error> {
    let reply = conn
        .call_method(
            Some("org.bluez"),
            path,
            Some("org.freedesktop.DBus.Properties"),
            "Get",
            &("org.bluez.Device1", name),
        )
        .await?;
    let v: OwnedVariant = reply.body().deserialize()?;
    bool::try_from(v)
}

/// Whether BlueZ has this device paired on `adapter` (false when BlueZ does not know it). An
/// error means "not known": callers never take it as paired.
pub async fn is_paired(adapter: &str, address: &str) -> Result<bool, BleError> {
    let conn = Connection::system()
        .await
        .map_err(|e| BleError::Bluez(e.to_string()))?;
    match prop(&conn, &device_path(adapter, address), "Paired").await {
        Ok(b) => Ok(b),
        Err(zbus::Error::MethodError(name, _, _)) if name.as_str().ends_with("UnknownObject") => {
            Ok(false)
        }
        Err(e) => Err(BleError::Dbus {
            address: address.to_string(),
            call: "Get(Device1.Paired)",
            detail: e.to_string(),
        }),
    }
}

/// Pair the device at `address` on `adapter` with the hub's agent, trust it, and record the bond
/// through `registry` (when given and the hub knows the device).
pub async fn pair(
    adapter: &str,
    address: &str,
    passkey: PasskeySource,
    timeout: Duration,
    registry: Option<&dyn Registry>,
) -> Result<BondInfo, BleError> {
    let fail = |call: &'static str, e: zbus::Error| BleError::Dbus {
        address: address.to_string(),
        call,
        detail: e.to_string(),
    };
    let conn = Connection::system()
        .await
        .map_err(|e| BleError::Bluez(e.to_string()))?;
    let asked = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let asked2 = asked.clone();
    let source: PasskeySource = Arc::new(move || {
        asked2.store(true, std::sync::atomic::Ordering::SeqCst);
        passkey()
    });
    conn.object_server()
        .at(AGENT_PATH, Agent { passkey: source })
        .await
        .map_err(|e| fail("serve Agent1", e))?;
    let agent = ObjectPath::try_from(AGENT_PATH).map_err(|e| fail("agent path", e))?;
    let result = async {
        conn.call_method(
            Some("org.bluez"),
            "/org/bluez",
            Some("org.bluez.AgentManager1"),
            "RegisterAgent",
            &(&agent, "KeyboardDisplay"),
        )
        .await
        .map_err(|e| fail("AgentManager1.RegisterAgent", e))?;
        conn.call_method(
            Some("org.bluez"),
            "/org/bluez",
            Some("org.bluez.AgentManager1"),
            "RequestDefaultAgent",
            &(&agent,),
        )
        .await
        .map_err(|e| fail("AgentManager1.RequestDefaultAgent", e))?;
        let path = device_path(adapter, address);
        let pair = conn.call_method(
            Some("org.bluez"),
            path.as_str(),
            Some("org.bluez.Device1"),
            "Pair",
            &(),
        );
        match tokio::time::timeout(timeout, pair).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(BleError::Pairing {
                    address: address.to_string(),
                    detail: e.to_string(),
                })
            }
            Err(_) => {
                let _ = conn
                    .call_method(
                        Some("org.bluez"),
                        path.as_str(),
                        Some("org.bluez.Device1"),
                        "CancelPairing",
                        &(),
                    )
                    .await;
                return Err(BleError::Pairing {
                    address: address.to_string(),
                    detail: format!("no answer within {timeout:?}"),
                });
            }
        }
        conn.call_method(
            Some("org.bluez"),
            path.as_str(),
            Some("org.freedesktop.DBus.Properties"),
            "Set",
            &("org.bluez.Device1", "Trusted", zbus::Variant::from(true)),
        )
        .await
        .map_err(|e| fail("Set(Device1.Trusted)", e))?;
        let paired = prop(&conn, &path, "Paired")
            .await
            .map_err(|e| fail("Get(Paired)", e))?;
        let bonded = prop(&conn, &path, "Bonded").await.unwrap_or(paired);
        let trusted = prop(&conn, &path, "Trusted")
            .await
            .map_err(|e| fail("Get(Trusted)", e))?;
        Ok(BondInfo {
            paired,
            bonded,
            trusted,
            security: if asked.load(std::sync::atomic::Ordering::SeqCst) {
                "authenticated-passkey"
            } else {
                "unauthenticated-just-works"
            },
        })
    }
    .await;
    let _ = conn
        .call_method(
            Some("org.bluez"),
            "/org/bluez",
            Some("org.bluez.AgentManager1"),
            "UnregisterAgent",
            &(&agent,),
        )
        .await;
    let _ = conn.object_server().remove::<Agent, _>(AGENT_PATH).await;
    let bond = result?;
    if let Some(registry) = registry {
        registry
            .set_bond(&address.to_ascii_uppercase(), Some(bond.as_record()), None)
            .await?;
    }
    Ok(bond)
}
