//! Glucose context records (issue 14): the cursor never covers a measurement still waiting for
//! its context, whether the hub dies after a commit or the link drops between the two.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "fake_bluez/mod.rs"]
mod fake_bluez;

use fake_bluez::devices::{glucose_meter, GlucoseMeter};
use fake_bluez::harness::{fast_config, now_local, Env};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use vitals_hub::ble::{
    AuditEvent, Batch, Committed, HeldReading, KnownDevice, Port, PortError, PortFuture, RawValue,
    CURSOR_GLUCOSE,
};
use vitals_hub::model::device::{DeviceInfo, DeviceKey};
use vitals_hub::model::Kind;

const METER: &str = "C0:26:DA:00:00:21";

/// The hub's port, except that every commit after the first fails: the hub dies (or its disk
/// does) right after its first transaction.
#[derive(Debug)]
struct DeadAfterFirstCommit {
    inner: Arc<dyn Port>,
    commits: Arc<AtomicUsize>,
}

impl Port for DeadAfterFirstCommit {
    fn device<'a>(&'a self, address: &'a str) -> PortFuture<'a, Option<KnownDevice>> {
        self.inner.device(address)
    }
    fn cursor<'a>(&'a self, device: &'a DeviceKey, name: &'a str) -> PortFuture<'a, Option<i64>> {
        self.inner.cursor(device, name)
    }
    fn commit<'a>(&'a self, device: &'a DeviceKey, batch: Batch) -> PortFuture<'a, Committed> {
        if batch
            .readings
            .iter()
            .all(|r| r.reading.kind != Kind::Glucose)
        {
            return self.inner.commit(device, batch); // the battery reading
        }
        if self.commits.fetch_add(1, Ordering::SeqCst) >= 1 {
            return Box::pin(async { Err(PortError::Store("disk I/O error".into())) });
        }
        self.inner.commit(device, batch)
    }
    fn device_info<'a>(&'a self, device: &'a DeviceKey) -> PortFuture<'a, Option<DeviceInfo>> {
        self.inner.device_info(device)
    }
    fn set_device_info<'a>(
        &'a self,
        device: &'a DeviceKey,
        info: DeviceInfo,
    ) -> PortFuture<'a, ()> {
        self.inner.set_device_info(device, info)
    }
    fn hold<'a>(&'a self, held: HeldReading) -> PortFuture<'a, bool> {
        self.inner.hold(held)
    }
    fn events<'a>(&'a self, events: Vec<AuditEvent>) -> PortFuture<'a, ()> {
        self.inner.events(events)
    }
    fn stream_value(&self, value: RawValue) -> Result<(), PortError> {
        self.inner.stream_value(value)
    }
}

fn glucose_seqs(readings: &[vitals_hub::store::StoredReading]) -> Vec<u16> {
    let mut v: Vec<u16> = readings
        .iter()
        .filter(|r| r.reading.kind == Kind::Glucose)
        .map(|r| r.reading.sequence.unwrap())
        .collect();
    v.sort_unstable();
    v
}

#[test]
fn context_follows_never_puts_the_cursor_past_an_unstored_measurement() {
    fake_bluez::harness::run(|broker| async move {
        let start = now_local().add_minutes(-3000 * 10).unwrap();
        let meter = GlucoseMeter::new(start, 60).with_contexts();
        let dev = glucose_meter(METER, meter, now_local());
        let fake = fake_bluez::FakeBluez::start(&broker.address, vec![dev]).await;
        let commits = Arc::new(AtomicUsize::new(0));
        let c2 = commits.clone();
        let env = Env::with_port(fake, &[(METER, "glucose")], fast_config(), None, |inner| {
            Arc::new(DeadAfterFirstCommit { inner, commits: c2 })
        })
        .await;
        let key = env
            .store
            .device_by_address(METER)
            .await
            .unwrap()
            .unwrap()
            .key;
        env.wait_for(30, "a commit after the first one", || async {
            commits.load(Ordering::SeqCst) >= 3
        })
        .await;
        let cursor = env.store.cursor(&key, CURSOR_GLUCOSE).await.unwrap();
        let seqs = glucose_seqs(&env.readings().await);
        assert_eq!(seqs, (1..=25).collect::<Vec<u16>>());
        assert_eq!(
            cursor,
            Some(25),
            "the cursor covers exactly the stored records"
        );
        env.stop().await;
    });
}
