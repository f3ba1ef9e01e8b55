//! A fake BlueZ for the `ble_*` tests: an in-process D-Bus broker (busd) and a zbus service that owns
//! `org.bluez` on it, with the object tree, properties and signals btleplug 0.13 / bluez-async 0.9
//! use. Scriptable devices are built with the `gatt` encoders; faults are switched per device.
//!
//! One broker and one fake per test binary: `DBUS_SYSTEM_BUS_ADDRESS` is process-wide.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;
use zbus::object_server::SignalEmitter;
use zbus::{interface, Connection, ObjectPath, OwnedObjectPath, OwnedVariant, Variant};

pub const ADAPTER: &str = "/org/bluez/hci0";

// ---------------------------------------------------------------------------------------------
// The broker.

/// The broker thread: busd on zruntime, stopped when this is dropped.
pub struct Broker {
    pub address: String,
    stop: Option<futures::channel::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Broker {
    pub fn start() -> Broker {
        // An abstract socket: no file, and well under libdbus's 99-byte path limit.
        let address = format!(
            "unix:abstract=vh-ble-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let (stop_tx, stop_rx) = futures::channel::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let a = address.clone();
        let thread = std::thread::Builder::new()
            .name("busd".into())
            .spawn(move || {
                zruntime::block_on(async move {
                    let mut bus = busd::bus::Bus::for_address(Some(&a)).await.unwrap();
                    ready_tx.send(()).unwrap();
                    {
                        let run = std::pin::pin!(bus.run());
                        let _ = futures::future::select(run, stop_rx).await;
                    }
                    let _ = bus.cleanup().await;
                })
            })
            .unwrap();
        ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        Broker {
            address,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

static NEXT: AtomicU64 = AtomicU64::new(0);

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors BlueZ answers with.

#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.bluez.Error")]
pub enum BluezError {
    #[zbus(error)]
    ZBus(zbus::Error),
    NotPermitted(String),
    /// What older BlueZ answers for a device without a bond.
    NotPaired(String),
    Failed(String),
    NotConnected(String),
    AuthenticationFailed(String),
    DoesNotExist(String),
    InProgress(String),
}

// ---------------------------------------------------------------------------------------------
// Devices.

/// What a device does when the hub touches it.
pub enum Action {
    Notify(u16, Vec<u8>),
    Disconnect,
    Sleep(Duration),
}

/// A device's script.
pub trait Behavior: Send {
    /// The hub enabled notifications/indications on `ch`.
    fn on_subscribe(&mut self, _ch: u16) -> Vec<Action> {
        Vec::new()
    }
    /// The hub wrote `data` to `ch`.
    fn on_write(&mut self, _ch: u16, _data: &[u8]) -> Result<Vec<Action>, String> {
        Ok(Vec::new())
    }
}

/// How service discovery goes on this device.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Discovery {
    Normal,
    Slow(Duration),
    /// `ServicesResolved` never turns true (a Pi's discovery timeout).
    Never,
}

#[derive(Debug)]
pub struct Faults {
    /// After this many notifications in a connection, the link drops (once).
    pub link_loss_after: Option<usize>,
    pub discovery: Discovery,
    /// The next this-many `Connect` calls fail with `le-connection-abort-by-local`.
    pub connect_aborts: usize,
}

/// How a device whose bond BlueZ believes in, but the device has lost (battery change, factory
/// reset), refuses a Record Access Control Point write.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RacpRefusal {
    /// Current BlueZ: `org.bluez.Error.NotPermitted` "Not paired".
    NotPermitted,
    /// Older BlueZ: `org.bluez.Error.NotPaired`.
    NotPaired,
}

pub struct CharSpec {
    pub uuid: u16,
    pub flags: Vec<&'static str>,
    pub value: Mutex<Vec<u8>>,
    pub notifying: AtomicBool,
}

pub struct ServiceSpec {
    pub uuid: u16,
    pub chars: Vec<Arc<CharSpec>>,
}

pub struct DeviceModel {
    pub address: String,
    pub name: String,
    pub services: Vec<ServiceSpec>,
    /// Writes to control points fail with NotPermitted "Not paired" until bonded.
    pub requires_bond: bool,
    /// RACP writes fail this way although `Paired` is true (the device lost the bond).
    pub racp_refusal: Mutex<Option<RacpRefusal>>,
    /// Writes refused with a not-paired error.
    pub refused_writes: AtomicUsize,
    /// The passkey the device asks the agent for at pairing.
    pub passkey: Option<u32>,
    pub paired: AtomicBool,
    pub trusted: AtomicBool,
    pub connected: AtomicBool,
    pub resolved: AtomicBool,
    pub connect_calls: AtomicUsize,
    pub pair_calls: AtomicUsize,
    pub writes: Mutex<Vec<(u16, Vec<u8>)>>,
    pub faults: Mutex<Faults>,
    pub behavior: Mutex<Box<dyn Behavior>>,
    /// Bumped on every connect and disconnect, so scripted actions of an old link stop.
    epoch: AtomicU64,
    sent_this_link: AtomicUsize,
}

pub fn uuid128(u: u16) -> String {
    format!("0000{u:04x}-0000-1000-8000-00805f9b34fb")
}

impl DeviceModel {
    pub fn new(address: &str, name: &str, behavior: Box<dyn Behavior>) -> DeviceModel {
        DeviceModel {
            address: address.to_string(),
            name: name.to_string(),
            services: Vec::new(),
            requires_bond: false,
            racp_refusal: Mutex::new(None),
            refused_writes: AtomicUsize::new(0),
            passkey: None,
            paired: AtomicBool::new(true),
            trusted: AtomicBool::new(true),
            connected: AtomicBool::new(false),
            resolved: AtomicBool::new(false),
            connect_calls: AtomicUsize::new(0),
            pair_calls: AtomicUsize::new(0),
            writes: Mutex::new(Vec::new()),
            faults: Mutex::new(Faults {
                link_loss_after: None,
                discovery: Discovery::Normal,
                connect_aborts: 0,
            }),
            behavior: Mutex::new(behavior),
            epoch: AtomicU64::new(0),
            sent_this_link: AtomicUsize::new(0),
        }
    }

    pub fn service(mut self, uuid: u16, chars: Vec<(u16, &[&'static str], Vec<u8>)>) -> Self {
        self.services.push(ServiceSpec {
            uuid,
            chars: chars
                .into_iter()
                .map(|(uuid, flags, v)| {
                    Arc::new(CharSpec {
                        uuid,
                        flags: flags.to_vec(),
                        value: Mutex::new(v),
                        notifying: AtomicBool::new(false),
                    })
                })
                .collect(),
        });
        self
    }

    /// Device Information, Battery and Current Time services, as most health devices have.
    pub fn standard(self, serial: &str, battery: u8, clock: &[u8]) -> Self {
        self.service(
            0x180A,
            vec![
                (0x2A29, &["read"], b"Fake Medical".to_vec()),
                (0x2A24, &["read"], b"FM-1".to_vec()),
                (0x2A25, &["read"], serial.as_bytes().to_vec()),
            ],
        )
        .service(0x180F, vec![(0x2A19, &["read", "notify"], vec![battery])])
        .service(
            0x1805,
            vec![(0x2A2B, &["read", "write", "notify"], clock.to_vec())],
        )
    }

    pub fn unbonded(mut self, passkey: Option<u32>) -> Self {
        self.requires_bond = true;
        self.passkey = passkey;
        self.paired.store(false, Ordering::SeqCst);
        self.trusted.store(false, Ordering::SeqCst);
        self
    }

    /// BlueZ says paired, but the device refuses RACP writes as unbonded.
    pub fn refuses_racp(self, how: RacpRefusal) -> Self {
        *self.racp_refusal.lock().unwrap() = Some(how);
        self
    }

    pub fn path(&self) -> String {
        format!("{ADAPTER}/dev_{}", self.address.replace(':', "_"))
    }

    fn char_by_uuid(&self, uuid: u16) -> Option<(String, Arc<CharSpec>)> {
        for (si, s) in self.services.iter().enumerate() {
            for (ci, c) in s.chars.iter().enumerate() {
                if c.uuid == uuid {
                    return Some((char_path(&self.path(), si, ci), c.clone()));
                }
            }
        }
        None
    }

    /// Set the value a read of `ch` returns (a sensor change, a clock set by hand).
    pub fn set_value(&self, ch: u16, value: Vec<u8>) {
        if let Some((_, c)) = self.char_by_uuid(ch) {
            *c.value.lock().unwrap() = value;
        }
    }

    pub fn value_of(&self, ch: u16) -> Vec<u8> {
        self.char_by_uuid(ch)
            .map(|(_, c)| c.value.lock().unwrap().clone())
            .unwrap_or_default()
    }

    pub fn writes_to(&self, ch: u16) -> Vec<Vec<u8>> {
        self.writes
            .lock()
            .unwrap()
            .iter()
            .filter(|(c, _)| *c == ch)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

fn service_path(dev: &str, si: usize) -> String {
    format!("{dev}/service{:04x}", 0x10 * (si + 1))
}
fn char_path(dev: &str, si: usize, ci: usize) -> String {
    format!(
        "{}/char{:04x}",
        service_path(dev, si),
        0x10 * (si + 1) + 2 * ci + 1
    )
}

// ---------------------------------------------------------------------------------------------
// The fake bluetoothd.

pub struct FakeInner {
    conn: tokio::sync::Mutex<Option<Connection>>,
    pub devices: Mutex<Vec<Arc<DeviceModel>>>,
    agent: Mutex<Option<(String, OwnedObjectPath)>>,
    powered: AtomicBool,
    discovering: AtomicBool,
    pub start_discovery_calls: AtomicUsize,
    pub stop_discovery_calls: AtomicUsize,
    /// How many devices are connected now, and the most at once.
    pub connected_now: AtomicUsize,
    pub connected_max: AtomicUsize,
    pub restarts: AtomicUsize,
}

#[derive(Clone)]
pub struct FakeBluez {
    pub inner: Arc<FakeInner>,
}

impl FakeBluez {
    /// Publish `org.bluez` on the bus at `address` (must run inside the tokio runtime).
    pub async fn start(address: &str, devices: Vec<DeviceModel>) -> FakeBluez {
        let fake = FakeBluez {
            inner: Arc::new(FakeInner {
                conn: tokio::sync::Mutex::new(None),
                devices: Mutex::new(devices.into_iter().map(Arc::new).collect()),
                agent: Mutex::new(None),
                powered: AtomicBool::new(true),
                discovering: AtomicBool::new(false),
                start_discovery_calls: AtomicUsize::new(0),
                stop_discovery_calls: AtomicUsize::new(0),
                connected_now: AtomicUsize::new(0),
                connected_max: AtomicUsize::new(0),
                restarts: AtomicUsize::new(0),
            }),
        };
        ADDRESS.get_or_init(|| address.to_string());
        let conn = fake.publish(address).await;
        *fake.inner.conn.lock().await = Some(conn);
        fake
    }

    async fn publish(&self, address: &str) -> Connection {
        let weak = Arc::downgrade(&self.inner);
        let mut b = zbus::connection::Builder::address(address)
            .serve_at("/", zbus::fdo::ObjectManager)
            .serve_at("/org/bluez", AgentManager { fake: weak.clone() })
            .serve_at(ADAPTER, Adapter { fake: weak.clone() });
        let devices = self.inner.devices.lock().unwrap().clone();
        for d in devices {
            b = serve_device(b, &d, &weak);
        }
        b.name("org.bluez").build().await.unwrap()
    }

    /// Add a device while running (InterfacesAdded is emitted).
    pub async fn add_device(&self, d: DeviceModel) -> Arc<DeviceModel> {
        let d = Arc::new(d);
        self.inner.devices.lock().unwrap().push(d.clone());
        let conn = self.inner.conn.lock().await.clone().unwrap();
        let weak = Arc::downgrade(&self.inner);
        let os = conn.object_server();
        let dp = d.path();
        os.at(
            dp.as_str(),
            Device {
                m: d.clone(),
                fake: weak.clone(),
            },
        )
        .await
        .unwrap();
        for (si, s) in d.services.iter().enumerate() {
            let sp = service_path(&dp, si);
            os.at(
                sp.as_str(),
                Service {
                    uuid: s.uuid,
                    device: dp.clone(),
                },
            )
            .await
            .unwrap();
            for (ci, c) in s.chars.iter().enumerate() {
                let cp = char_path(&dp, si, ci);
                os.at(
                    cp.as_str(),
                    Characteristic {
                        m: d.clone(),
                        c: c.clone(),
                        service: sp.clone(),
                        fake: weak.clone(),
                    },
                )
                .await
                .unwrap();
                if c.flags.iter().any(|f| *f == "notify" || *f == "indicate") {
                    os.at(
                        format!("{cp}/desc{:04x}", 0).as_str(),
                        Descriptor { ch: cp.clone() },
                    )
                    .await
                    .unwrap();
                }
            }
        }
        d
    }

    pub fn device(&self, address: &str) -> Arc<DeviceModel> {
        self.inner
            .devices
            .lock()
            .unwrap()
            .iter()
            .find(|d| d.address == address)
            .cloned()
            .unwrap()
    }

    /// bluetoothd restarts: the `org.bluez` owner goes away with its objects and a new one takes
    /// the name with a fresh tree; every link is gone.
    pub async fn restart(&self) {
        let old = self.inner.conn.lock().await.take();
        if let Some(c) = old {
            let _ = c.release_name("org.bluez").await;
            drop(c);
        }
        for d in self.inner.devices.lock().unwrap().iter() {
            d.epoch.fetch_add(1, Ordering::SeqCst);
            if d.connected.swap(false, Ordering::SeqCst) {
                self.inner.connected_now.fetch_sub(1, Ordering::SeqCst);
            }
            d.resolved.store(false, Ordering::SeqCst);
            for s in &d.services {
                for c in &s.chars {
                    c.notifying.store(false, Ordering::SeqCst);
                }
            }
        }
        *self.inner.agent.lock().unwrap() = None;
        self.inner.discovering.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let addr = ADDRESS.get().unwrap().clone();
        let conn = self.publish(&addr).await;
        *self.inner.conn.lock().await = Some(conn);
        self.inner.restarts.fetch_add(1, Ordering::SeqCst);
    }

    /// Like a real adapter in discovery: `RSSI` changes of the device at `address` every `every`
    /// (while the fake lives and `stop` is false), as `PropertiesChanged` signals.
    pub fn chatter(&self, address: &str, every: Duration, stop: Arc<AtomicBool>) {
        let path = self.device(address).path();
        let inner = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut rssi: i16 = -60;
            while !stop.load(Ordering::SeqCst) {
                let Some(f) = inner.upgrade() else { return };
                let conn = f.conn.lock().await.clone();
                drop(f);
                if let Some(c) = conn {
                    rssi = if rssi <= -80 { -50 } else { rssi - 1 };
                    emit(
                        &c,
                        &path,
                        "org.bluez.Device1",
                        vec![("RSSI", Variant::from(rssi))],
                    )
                    .await;
                }
                tokio::time::sleep(every).await;
            }
        });
    }

    /// The device at `address` notifies `bytes` on `ch` now (a sensor's live measurement): sent
    /// only while it is connected and the hub subscribed, as a real device does.
    pub async fn notify(&self, address: &str, ch: u16, bytes: Vec<u8>) {
        let m = self.device(address);
        if let Some(conn) = self.inner.conn.lock().await.clone() {
            run_actions(conn, self.inner.clone(), m, vec![Action::Notify(ch, bytes)]);
        }
    }

    /// The link to the device at `address` drops (out of range, supervision timeout), or BlueZ
    /// tears it down because the client that held it is gone.
    pub async fn hang_up(&self, address: &str) {
        let m = self.device(address);
        if let Some(conn) = self.inner.conn.lock().await.clone() {
            if m.connected.load(Ordering::SeqCst) {
                set_connected(&conn, &self.inner, &m, false).await;
            }
        }
    }

    /// Every connected device's link drops (see [`FakeBluez::hang_up`]).
    pub async fn hang_up_all(&self) {
        let all: Vec<String> = self
            .inner
            .devices
            .lock()
            .unwrap()
            .iter()
            .map(|d| d.address.clone())
            .collect();
        for a in all {
            self.hang_up(&a).await;
        }
    }

    pub async fn conn(&self) -> Connection {
        self.inner.conn.lock().await.clone().unwrap()
    }
}

static ADDRESS: OnceLock<String> = OnceLock::new();

fn serve_device(
    mut b: zbus::connection::Builder<'static>,
    d: &Arc<DeviceModel>,
    weak: &Weak<FakeInner>,
) -> zbus::connection::Builder<'static> {
    let dp = d.path();
    b = b.serve_at(
        dp.clone(),
        Device {
            m: d.clone(),
            fake: weak.clone(),
        },
    );
    for (si, s) in d.services.iter().enumerate() {
        let sp = service_path(&dp, si);
        b = b.serve_at(
            sp.clone(),
            Service {
                uuid: s.uuid,
                device: dp.clone(),
            },
        );
        for (ci, c) in s.chars.iter().enumerate() {
            let cp = char_path(&dp, si, ci);
            b = b.serve_at(
                cp.clone(),
                Characteristic {
                    m: d.clone(),
                    c: c.clone(),
                    service: sp.clone(),
                    fake: weak.clone(),
                },
            );
            if c.flags.iter().any(|f| *f == "notify" || *f == "indicate") {
                b = b.serve_at(format!("{cp}/desc{:04x}", 0), Descriptor { ch: cp.clone() });
            }
        }
    }
    b
}

async fn emit(conn: &Connection, path: &str, iface: &str, changed: Vec<(&str, Variant<'_>)>) {
    if let Ok(e) = SignalEmitter::new(conn, path.to_string()) {
        let map: HashMap<&str, Variant<'_>> = changed.into_iter().collect();
        let inval: Vec<&str> = Vec::new();
        let _ = e
            .emit(
                "org.freedesktop.DBus.Properties",
                "PropertiesChanged",
                &(iface, map, inval),
            )
            .await;
    }
}

async fn set_connected(conn: &Connection, fake: &FakeInner, m: &DeviceModel, on: bool) {
    if m.connected.swap(on, Ordering::SeqCst) != on {
        if on {
            let n = fake.connected_now.fetch_add(1, Ordering::SeqCst) + 1;
            fake.connected_max.fetch_max(n, Ordering::SeqCst);
        } else {
            fake.connected_now.fetch_sub(1, Ordering::SeqCst);
        }
    }
    m.epoch.fetch_add(1, Ordering::SeqCst);
    m.sent_this_link.store(0, Ordering::SeqCst);
    if !on {
        m.resolved.store(false, Ordering::SeqCst);
        for s in &m.services {
            for c in &s.chars {
                c.notifying.store(false, Ordering::SeqCst);
            }
        }
        emit(
            conn,
            &m.path(),
            "org.bluez.Device1",
            vec![
                ("Connected", Variant::from(false)),
                ("ServicesResolved", Variant::from(false)),
            ],
        )
        .await;
    } else {
        emit(
            conn,
            &m.path(),
            "org.bluez.Device1",
            vec![("Connected", Variant::from(true))],
        )
        .await;
    }
}

/// Run a device's scripted actions after the call that caused them has been answered.
fn run_actions(conn: Connection, fake: Arc<FakeInner>, m: Arc<DeviceModel>, actions: Vec<Action>) {
    if actions.is_empty() {
        return;
    }
    let epoch = m.epoch.load(Ordering::SeqCst);
    tokio::spawn(async move {
        tokio::task::yield_now().await;
        for a in actions {
            if m.epoch.load(Ordering::SeqCst) != epoch || !m.connected.load(Ordering::SeqCst) {
                return;
            }
            match a {
                Action::Sleep(d) => tokio::time::sleep(d).await,
                Action::Disconnect => {
                    set_connected(&conn, &fake, &m, false).await;
                    return;
                }
                Action::Notify(ch, bytes) => {
                    let loss = m.faults.lock().unwrap().link_loss_after;
                    if let Some(k) = loss {
                        if m.sent_this_link.load(Ordering::SeqCst) >= k {
                            m.faults.lock().unwrap().link_loss_after = None;
                            set_connected(&conn, &fake, &m, false).await;
                            return;
                        }
                    }
                    let Some((path, c)) = m.char_by_uuid(ch) else {
                        continue;
                    };
                    if !c.notifying.load(Ordering::SeqCst) {
                        continue; // no CCCD set: real devices send nothing
                    }
                    *c.value.lock().unwrap() = bytes.clone();
                    m.sent_this_link.fetch_add(1, Ordering::SeqCst);
                    emit(
                        &conn,
                        &path,
                        "org.bluez.GattCharacteristic1",
                        vec![("Value", Variant::from(bytes))],
                    )
                    .await;
                }
            }
        }
    });
}

// ---------------------------------------------------------------------------------------------
// D-Bus interfaces.

struct Adapter {
    fake: Weak<FakeInner>,
}

#[interface(name = "org.bluez.Adapter1")]
impl Adapter {
    async fn set_discovery_filter(&self, _filter: HashMap<String, OwnedVariant>) {}
    async fn start_discovery(&self, #[zbus(signal_emitter)] e: SignalEmitter<'_>) {
        if let Some(f) = self.fake.upgrade() {
            f.start_discovery_calls.fetch_add(1, Ordering::SeqCst);
            f.discovering.store(true, Ordering::SeqCst);
        }
        let _ = self.discovering_changed(&e).await;
    }
    async fn stop_discovery(&self, #[zbus(signal_emitter)] e: SignalEmitter<'_>) {
        if let Some(f) = self.fake.upgrade() {
            f.stop_discovery_calls.fetch_add(1, Ordering::SeqCst);
            f.discovering.store(false, Ordering::SeqCst);
        }
        let _ = self.discovering_changed(&e).await;
    }
    async fn remove_device(&self, _device: ObjectPath<'_>) {}
    #[zbus(property)]
    fn address(&self) -> String {
        "00:1A:7D:DA:71:13".into()
    }
    #[zbus(property)]
    fn address_type(&self) -> String {
        "public".into()
    }
    #[zbus(property)]
    fn name(&self) -> String {
        "vitals-hub-test".into()
    }
    #[zbus(property)]
    fn alias(&self) -> String {
        "vitals-hub-test".into()
    }
    #[zbus(property)]
    fn modalias(&self) -> String {
        "usb:v1D6Bp0246d0537".into()
    }
    #[zbus(property)]
    fn powered(&self) -> bool {
        self.fake
            .upgrade()
            .is_some_and(|f| f.powered.load(Ordering::SeqCst))
    }
    #[zbus(property)]
    fn set_powered(&mut self, on: bool) {
        if let Some(f) = self.fake.upgrade() {
            f.powered.store(on, Ordering::SeqCst);
        }
    }
    #[zbus(property)]
    fn discovering(&self) -> bool {
        self.fake
            .upgrade()
            .is_some_and(|f| f.discovering.load(Ordering::SeqCst))
    }
    #[zbus(property)]
    fn discoverable(&self) -> bool {
        false
    }
    #[zbus(property)]
    fn pairable(&self) -> bool {
        true
    }
    #[zbus(property, name = "UUIDs")]
    fn uuids(&self) -> Vec<String> {
        Vec::new()
    }
}

struct AgentManager {
    fake: Weak<FakeInner>,
}

#[interface(name = "org.bluez.AgentManager1")]
impl AgentManager {
    async fn register_agent(
        &self,
        agent: ObjectPath<'_>,
        capability: &str,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
    ) -> Result<(), BluezError> {
        if capability != "KeyboardDisplay" && capability != "NoInputNoOutput" {
            return Err(BluezError::Failed(format!("capability {capability}")));
        }
        let sender = hdr.sender().map(|s| s.to_string()).unwrap_or_default();
        if let Some(f) = self.fake.upgrade() {
            *f.agent.lock().unwrap() = Some((sender, agent.into()));
        }
        Ok(())
    }
    async fn request_default_agent(&self, _agent: ObjectPath<'_>) {}
    async fn unregister_agent(&self, _agent: ObjectPath<'_>) {
        if let Some(f) = self.fake.upgrade() {
            *f.agent.lock().unwrap() = None;
        }
    }
}

struct Device {
    m: Arc<DeviceModel>,
    fake: Weak<FakeInner>,
}

#[interface(name = "org.bluez.Device1")]
impl Device {
    async fn connect(&self, #[zbus(connection)] conn: &Connection) -> Result<(), BluezError> {
        self.m.connect_calls.fetch_add(1, Ordering::SeqCst);
        let fake = self
            .fake
            .upgrade()
            .ok_or(BluezError::Failed("gone".into()))?;
        let (abort, discovery) = {
            let mut f = self.m.faults.lock().unwrap();
            let abort = f.connect_aborts > 0;
            if abort {
                f.connect_aborts -= 1;
            }
            (abort, f.discovery)
        };
        if abort {
            tokio::time::sleep(Duration::from_millis(20)).await;
            return Err(BluezError::Failed("le-connection-abort-by-local".into()));
        }
        if self.m.connected.load(Ordering::SeqCst) {
            return Ok(());
        }
        set_connected(conn, &fake, &self.m, true).await;
        let m = self.m.clone();
        let conn = conn.clone();
        let epoch = m.epoch.load(Ordering::SeqCst);
        tokio::spawn(async move {
            match discovery {
                Discovery::Never => return,
                Discovery::Slow(d) => tokio::time::sleep(d).await,
                Discovery::Normal => tokio::time::sleep(Duration::from_millis(5)).await,
            }
            if m.epoch.load(Ordering::SeqCst) != epoch {
                return;
            }
            m.resolved.store(true, Ordering::SeqCst);
            emit(
                &conn,
                &m.path(),
                "org.bluez.Device1",
                vec![("ServicesResolved", Variant::from(true))],
            )
            .await;
        });
        Ok(())
    }

    async fn disconnect(&self, #[zbus(connection)] conn: &Connection) {
        if let Some(fake) = self.fake.upgrade() {
            set_connected(conn, &fake, &self.m, false).await;
        }
    }

    async fn pair(&self, #[zbus(connection)] conn: &Connection) -> Result<(), BluezError> {
        self.m.pair_calls.fetch_add(1, Ordering::SeqCst);
        let fake = self
            .fake
            .upgrade()
            .ok_or(BluezError::Failed("gone".into()))?;
        if self.m.paired.load(Ordering::SeqCst) {
            return Err(BluezError::Failed("Already Exists".into()));
        }
        if let Some(expected) = self.m.passkey {
            let agent = fake.agent.lock().unwrap().clone();
            let Some((sender, path)) = agent else {
                return Err(BluezError::AuthenticationFailed("no agent".into()));
            };
            let dev = ObjectPath::try_from(self.m.path()).unwrap();
            let reply = conn
                .call_method(
                    Some(sender.as_str()),
                    path.as_str(),
                    Some("org.bluez.Agent1"),
                    "RequestPasskey",
                    &(dev,),
                )
                .await
                .map_err(|e| BluezError::AuthenticationFailed(e.to_string()))?;
            let got: u32 = reply
                .body()
                .deserialize()
                .map_err(|e| BluezError::AuthenticationFailed(e.to_string()))?;
            if got != expected {
                return Err(BluezError::AuthenticationFailed("wrong passkey".into()));
            }
        }
        self.m.paired.store(true, Ordering::SeqCst);
        emit(
            conn,
            &self.m.path(),
            "org.bluez.Device1",
            vec![
                ("Paired", Variant::from(true)),
                ("Bonded", Variant::from(true)),
            ],
        )
        .await;
        Ok(())
    }

    async fn cancel_pairing(&self) {}

    #[zbus(property)]
    fn address(&self) -> String {
        self.m.address.clone()
    }
    #[zbus(property)]
    fn address_type(&self) -> String {
        "public".into()
    }
    #[zbus(property)]
    fn name(&self) -> String {
        self.m.name.clone()
    }
    #[zbus(property)]
    fn alias(&self) -> String {
        self.m.name.clone()
    }
    #[zbus(property)]
    fn adapter(&self) -> OwnedObjectPath {
        ObjectPath::try_from(ADAPTER).unwrap().into()
    }
    #[zbus(property, name = "UUIDs")]
    fn uuids(&self) -> Vec<String> {
        self.m
            .services
            .iter()
            .filter(|s| !matches!(s.uuid, 0x180A | 0x180F | 0x1805))
            .map(|s| uuid128(s.uuid))
            .collect()
    }
    #[zbus(property, name = "RSSI")]
    fn rssi(&self) -> i16 {
        -60
    }
    #[zbus(property)]
    fn paired(&self) -> bool {
        self.m.paired.load(Ordering::SeqCst)
    }
    #[zbus(property)]
    fn bonded(&self) -> bool {
        self.m.paired.load(Ordering::SeqCst)
    }
    #[zbus(property)]
    fn trusted(&self) -> bool {
        self.m.trusted.load(Ordering::SeqCst)
    }
    #[zbus(property)]
    fn set_trusted(&mut self, on: bool) {
        self.m.trusted.store(on, Ordering::SeqCst);
    }
    #[zbus(property)]
    fn blocked(&self) -> bool {
        false
    }
    #[zbus(property)]
    fn legacy_pairing(&self) -> bool {
        false
    }
    #[zbus(property)]
    fn connected(&self) -> bool {
        self.m.connected.load(Ordering::SeqCst)
    }
    #[zbus(property)]
    fn services_resolved(&self) -> bool {
        self.m.resolved.load(Ordering::SeqCst)
    }
}

struct Service {
    uuid: u16,
    device: String,
}

#[interface(name = "org.bluez.GattService1")]
impl Service {
    #[zbus(property, name = "UUID")]
    fn uuid(&self) -> String {
        uuid128(self.uuid)
    }
    #[zbus(property)]
    fn primary(&self) -> bool {
        true
    }
    #[zbus(property)]
    fn device(&self) -> OwnedObjectPath {
        ObjectPath::try_from(self.device.clone()).unwrap().into()
    }
}

struct Characteristic {
    m: Arc<DeviceModel>,
    c: Arc<CharSpec>,
    service: String,
    fake: Weak<FakeInner>,
}

#[interface(name = "org.bluez.GattCharacteristic1")]
impl Characteristic {
    async fn read_value(
        &self,
        _options: HashMap<String, OwnedVariant>,
    ) -> Result<Vec<u8>, BluezError> {
        if !self.m.connected.load(Ordering::SeqCst) {
            return Err(BluezError::Failed("Not connected".into()));
        }
        Ok(self.c.value.lock().unwrap().clone())
    }

    async fn write_value(
        &self,
        value: Vec<u8>,
        _options: HashMap<String, OwnedVariant>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), BluezError> {
        if !self.m.connected.load(Ordering::SeqCst) {
            return Err(BluezError::Failed("Not connected".into()));
        }
        if self.m.requires_bond && !self.m.paired.load(Ordering::SeqCst) {
            self.m.refused_writes.fetch_add(1, Ordering::SeqCst);
            return Err(BluezError::NotPermitted("Not paired".into()));
        }
        if self.c.uuid == 0x2A52 {
            let refusal = *self.m.racp_refusal.lock().unwrap();
            match refusal {
                Some(RacpRefusal::NotPermitted) => {
                    self.m.refused_writes.fetch_add(1, Ordering::SeqCst);
                    return Err(BluezError::NotPermitted("Not paired".into()));
                }
                Some(RacpRefusal::NotPaired) => {
                    self.m.refused_writes.fetch_add(1, Ordering::SeqCst);
                    return Err(BluezError::NotPaired("Not paired".into()));
                }
                None => {}
            }
        }
        self.m
            .writes
            .lock()
            .unwrap()
            .push((self.c.uuid, value.clone()));
        // Writable clocks keep what was written: Current Time, CGM Session Start Time.
        if self.c.uuid == 0x2A2B || self.c.uuid == 0x2AAA {
            *self.c.value.lock().unwrap() = value.clone();
        }
        let actions = self
            .m
            .behavior
            .lock()
            .unwrap()
            .on_write(self.c.uuid, &value)
            .map_err(BluezError::Failed)?;
        if let Some(f) = self.fake.upgrade() {
            run_actions(conn.clone(), f, self.m.clone(), actions);
        }
        Ok(())
    }

    async fn start_notify(&self, #[zbus(connection)] conn: &Connection) -> Result<(), BluezError> {
        if !self.m.connected.load(Ordering::SeqCst) {
            return Err(BluezError::Failed("Not connected".into()));
        }
        self.c.notifying.store(true, Ordering::SeqCst);
        let actions = self.m.behavior.lock().unwrap().on_subscribe(self.c.uuid);
        if let Some(f) = self.fake.upgrade() {
            run_actions(conn.clone(), f, self.m.clone(), actions);
        }
        Ok(())
    }

    async fn stop_notify(&self) {
        self.c.notifying.store(false, Ordering::SeqCst);
    }

    #[zbus(property, name = "UUID")]
    fn uuid(&self) -> String {
        uuid128(self.c.uuid)
    }
    #[zbus(property)]
    fn service(&self) -> OwnedObjectPath {
        ObjectPath::try_from(self.service.clone()).unwrap().into()
    }
    #[zbus(property)]
    fn flags(&self) -> Vec<String> {
        self.c.flags.iter().map(|s| s.to_string()).collect()
    }
    #[zbus(property)]
    fn notifying(&self) -> bool {
        self.c.notifying.load(Ordering::SeqCst)
    }
    #[zbus(property)]
    fn value(&self) -> Vec<u8> {
        self.c.value.lock().unwrap().clone()
    }
    #[zbus(property, name = "MTU")]
    fn mtu(&self) -> u16 {
        247
    }
}

struct Descriptor {
    ch: String,
}

#[interface(name = "org.bluez.GattDescriptor1")]
impl Descriptor {
    async fn read_value(&self, _options: HashMap<String, OwnedVariant>) -> Vec<u8> {
        vec![0, 0]
    }
    async fn write_value(&self, _value: Vec<u8>, _options: HashMap<String, OwnedVariant>) {}
    #[zbus(property, name = "UUID")]
    fn uuid(&self) -> String {
        uuid128(0x2902)
    }
    #[zbus(property)]
    fn characteristic(&self) -> OwnedObjectPath {
        ObjectPath::try_from(self.ch.clone()).unwrap().into()
    }
}

pub mod devices;
pub mod harness;
