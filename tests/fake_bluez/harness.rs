//! Test wiring: broker + fake + store + hub.
use super::{Broker, DeviceModel, FakeBluez};
use std::sync::Arc;
use std::time::Duration;
use vitals_hub::ble::{AddressTags, BleConfig, Hub, Port, RawValue};
use vitals_hub::daemon::HubPort;
use vitals_hub::model::{Clock, LocalDateTime, SystemClock};
use vitals_hub::store::{DeviceRecord, KekSource, Store, StoreConfig, StoredReading};

pub struct Env {
    pub fake: FakeBluez,
    pub store: Store,
    pub hub: Hub,
    /// Raw stream values for the alert rules (the port's bounded queue).
    pub alerts: tokio::sync::mpsc::Receiver<RawValue>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    pub _dir: tempfile::TempDir,
}

/// Short timeouts so the BLE tests stay quick.
pub fn fast_config() -> BleConfig {
    BleConfig {
        enabled: true,
        adapter: None,
        scan_window_ms: 800,
        scan_pause_ms: 100,
        connect_timeout_ms: 2_000,
        op_timeout_ms: 2_000,
        connect_attempts: 3,
        backoff_ms: 50,
        max_connections: 3,
        session_timeout_ms: 30_000,
        cooldown_ms: 600_000,
        retry_after_ms: 200,
        quiet_ms: 600,
        racp_idle_ms: 700,
        commit_batch: 25,
        summary_window_ms: 60_000,
        stream_max_ms: 5_000,
        clock_tolerance_s: 120,
        utc_offset_minutes: 0,
        zone: vitals_hub::model::Zone::utc(),
        devices: Vec::new(),
    }
}

/// The broker of this test binary; `DBUS_SYSTEM_BUS_ADDRESS` points at it.
pub fn broker() -> Broker {
    let b = Broker::start();
    std::env::set_var("DBUS_SYSTEM_BUS_ADDRESS", &b.address);
    b
}

pub fn now_local() -> LocalDateTime {
    LocalDateTime::from_epoch_seconds(SystemClock.now().as_millis() / 1000).unwrap()
}

pub fn record(address: &str, profile: &str) -> DeviceRecord {
    DeviceRecord {
        address: address.into(),
        name: None,
        profile: profile.into(),
        patient_binding: Some("patient-1".into()),
        serial: None,
        bond: None,
    }
}

impl Env {
    /// Start fake + store + hub; `allowed` devices go on the allow-list first.
    pub async fn start(
        broker: &Broker,
        devices: Vec<DeviceModel>,
        allowed: &[(&str, &str)],
        config: BleConfig,
    ) -> Env {
        let fake = FakeBluez::start(&broker.address, devices).await;
        Env::with_fake(fake, allowed, config).await
    }

    pub async fn with_fake(fake: FakeBluez, allowed: &[(&str, &str)], config: BleConfig) -> Env {
        Env::with_fake_and_rules(fake, allowed, config, None).await
    }

    /// As [`Env::with_fake`]; with `rules`, readings go through the hub's ingest (store, then the
    /// alert rules) instead of straight into the store.
    pub async fn with_fake_and_rules(
        fake: FakeBluez,
        allowed: &[(&str, &str)],
        config: BleConfig,
        rules: Option<vitals_hub::alerts::AlertRules>,
    ) -> Env {
        Env::with_port(fake, allowed, config, rules, |p| p).await
    }

    /// As [`Env::with_fake_and_rules`], with the hub's port wrapped by `wrap` (a test's fault
    /// injection or counting).
    pub async fn with_port(
        fake: FakeBluez,
        allowed: &[(&str, &str)],
        config: BleConfig,
        rules: Option<vitals_hub::alerts::AlertRules>,
        wrap: impl FnOnce(Arc<dyn Port>) -> Arc<dyn Port>,
    ) -> Env {
        Env::with_clock(fake, allowed, config, rules, wrap, Arc::new(SystemClock)).await
    }

    /// As [`Env::with_port`], with the hub's and the store's clock `clock` (a test's manual
    /// clock; the radio's timers stay real).
    pub async fn with_clock(
        fake: FakeBluez,
        allowed: &[(&str, &str)],
        config: BleConfig,
        rules: Option<vitals_hub::alerts::AlertRules>,
        wrap: impl FnOnce(Arc<dyn Port>) -> Arc<dyn Port>,
        clock: Arc<dyn Clock>,
    ) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let mut sc = StoreConfig::new(dir.path());
        sc.kek = KekSource::resolve(dir.path(), None);
        sc.patient_id = Some("patient-1".into());
        let store = Store::open(sc, clock.clone()).await.unwrap();
        for (a, p) in allowed {
            store.upsert_device(record(a, p), true).await.unwrap();
        }
        let mut port = HubPort::new(store.clone());
        if let Some(rules) = rules {
            let cfg = vitals_hub::daemon::IngestConfig {
                rules,
                patient_id: "patient-1".into(),
                utc_offset_minutes: 0,
                zone: vitals_hub::model::Zone::utc(),
            };
            let ingest = vitals_hub::daemon::Ingest::open(store.clone(), cfg)
                .await
                .unwrap();
            port = port.with_ingest(Arc::new(ingest));
        }
        let (port, alerts) = port.with_stream_queue(4_096);
        let tags = AddressTags::new(&store.address_tag_key().await.unwrap());
        let hub = Hub::new(config, wrap(Arc::new(port)), clock, tags);
        let (stop, rx) = tokio::sync::watch::channel(false);
        let h = hub.clone();
        let task = tokio::spawn(async move {
            let _ = h.run(rx).await;
        });
        Env {
            fake,
            store,
            hub,
            alerts,
            stop,
            task,
            _dir: dir,
        }
    }

    pub async fn readings(&self) -> Vec<StoredReading> {
        self.store.readings(0, 100_000).await.unwrap()
    }

    /// Wait until `f` holds (polling), or panic after `secs`.
    pub async fn wait_for<F, Fut>(&self, secs: u64, what: &str, mut f: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let end = tokio::time::Instant::now() + Duration::from_secs(secs);
        while tokio::time::Instant::now() < end {
            if f().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("timed out waiting for: {what}");
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        // Session tasks may still hold store handles, so the store is dropped, not closed.
        drop(self.hub);
        drop(self.store);
    }
}

/// The preamble every radio test shares: a two-thread runtime and this binary's broker
/// (`DBUS_SYSTEM_BUS_ADDRESS` points at it), then `f` on the runtime.
pub fn run<F, Fut>(f: F)
where
    F: FnOnce(Broker) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let b = broker();
    rt.block_on(f(b));
}
