//! A session whose hand-over fails ends there: the cursor does not move past the records that
//! were not stored, and the next session asks the meter for them again (against the fake BlueZ).
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
use vitals_hub::ble::{
    AuditEvent, Batch, BleEvent, Committed, HeldReading, KnownDevice, Outcome, Port, PortError,
    PortFuture, RawValue, CURSOR_GLUCOSE,
};
use vitals_hub::model::device::{DeviceInfo, DeviceKey};
use vitals_hub::model::Kind;

const METER: &str = "C0:26:DA:00:00:07";

/// The hub's port, except that the second commit fails (once): the store is unreachable for
/// that one transaction.
#[derive(Debug)]
struct FailSecondCommit {
    inner: std::sync::Arc<dyn Port>,
    commits: std::sync::atomic::AtomicUsize,
}

impl Port for FailSecondCommit {
    fn device<'a>(&'a self, address: &'a str) -> PortFuture<'a, Option<KnownDevice>> {
        self.inner.device(address)
    }
    fn cursor<'a>(&'a self, device: &'a DeviceKey, name: &'a str) -> PortFuture<'a, Option<i64>> {
        self.inner.cursor(device, name)
    }
    fn commit<'a>(&'a self, device: &'a DeviceKey, batch: Batch) -> PortFuture<'a, Committed> {
        if self
            .commits
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            == 1
        {
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

#[test]
fn a_failed_commit_ends_the_session_and_the_next_one_reads_again() {
    fake_bluez::harness::run(|broker| async move {
        let start = now_local().add_minutes(-3000 * 10).unwrap();
        // 60 records, batches of 25: commit 1 (1–25) works, commit 2 (26–50) fails.
        let dev = glucose_meter(METER, GlucoseMeter::new(start, 60), now_local());
        let fake = fake_bluez::FakeBluez::start(&broker.address, vec![dev]).await;
        let env = Env::with_port(fake, &[(METER, "glucose")], fast_config(), None, |inner| {
            std::sync::Arc::new(FailSecondCommit {
                inner,
                commits: Default::default(),
            })
        })
        .await;
        let key = env
            .store
            .device_by_address(METER)
            .await
            .unwrap()
            .unwrap()
            .key;
        env.wait_for(60, "all 60 records and cursor 60", || async {
            env.store.cursor(&key, CURSOR_GLUCOSE).await.unwrap() == Some(60)
                && env
                    .readings()
                    .await
                    .iter()
                    .filter(|r| r.reading.kind == Kind::Glucose)
                    .count()
                    == 60
        })
        .await;
        let meter = env.fake.device(METER);
        let racp = meter.writes_to(0x2A52);
        // The second session asked for the records after the last one stored (25), not after
        // the ones that arrived later in the failed session.
        assert!(
            racp.iter().any(|w| w == &vec![0x01, 0x03, 0x01, 26, 0]),
            "the next session asks again from record 26: {racp:?}"
        );
        assert!(env.hub.events().iter().any(|e| matches!(
            e,
            BleEvent::SessionEnded {
                outcome: Outcome::Failed(_),
                ..
            }
        )));
        env.stop().await;
    });
}
