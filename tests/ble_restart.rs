//! A bluetoothd restart (the `org.bluez` owner goes away and a new one takes the name with a fresh
//! object tree) is survived without restarting the hub: a meter that appears after the restart is
//! downloaded by the same running hub.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "fake_bluez/mod.rs"]
mod fake_bluez;

use fake_bluez::devices::{glucose_meter, GlucoseMeter};
use fake_bluez::harness::{fast_config, now_local, record, Env};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use vitals_hub::ble::CURSOR_GLUCOSE;

const BEFORE: &str = "C0:26:DA:00:04:01";
const AFTER: &str = "C0:26:DA:00:04:02";

#[test]
fn bluetoothd_restart_is_survived() {
    fake_bluez::harness::run(|broker| async move {
        let start = now_local().add_minutes(-1000).unwrap();
        let a = glucose_meter(BEFORE, GlucoseMeter::new(start, 10), now_local());
        let env = Env::start(&broker, vec![a], &[(BEFORE, "glucose")], fast_config()).await;
        let ka = env
            .store
            .device_by_address(BEFORE)
            .await
            .unwrap()
            .unwrap()
            .key;
        env.wait_for(20, "first download", || async {
            env.store.cursor(&ka, CURSOR_GLUCOSE).await.unwrap() == Some(10)
        })
        .await;

        let kb = env
            .store
            .upsert_device(record(AFTER, "glucose"), true)
            .await
            .unwrap();
        let b = glucose_meter(AFTER, GlucoseMeter::new(start, 7), now_local());
        env.fake.inner.devices.lock().unwrap().push(Arc::new(b));
        env.fake.restart().await;
        assert_eq!(env.fake.inner.restarts.load(Ordering::SeqCst), 1);

        env.wait_for(30, "download after the restart", || async {
            env.store.cursor(&kb, CURSOR_GLUCOSE).await.unwrap() == Some(7)
        })
        .await;
        // The new bluetoothd publishes its known devices at once, so the download may finish
        // before the hub has asked the new adapter to scan again; the scan must still come.
        env.wait_for(30, "discovery restarted on the new adapter", || async {
            env.fake.inner.start_discovery_calls.load(Ordering::SeqCst) >= 2
        })
        .await;
        env.stop().await;
    });
}
