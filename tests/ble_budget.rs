//! Ten devices at once stay within the connection budget, and a device that hangs in service
//! discovery (ServicesResolved never turns true) does not delay the others; connect aborts
//! (`le-connection-abort-by-local`) are retried.
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
use fake_bluez::Discovery;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use vitals_hub::ble::CURSOR_GLUCOSE;

const HANGING: &str = "C0:26:DA:00:03:00";

#[test]
fn ten_devices_within_budget_and_a_hanging_one_does_not_stall() {
    fake_bluez::harness::run(|broker| async move {
        let start = now_local().add_minutes(-1000).unwrap();
        let addrs: Vec<String> = (1..=10)
            .map(|i| format!("C0:26:DA:00:03:{i:02X}"))
            .collect();
        let mut devices = Vec::new();
        let hanging = glucose_meter(HANGING, GlucoseMeter::new(start, 5), now_local());
        hanging.faults.lock().unwrap().discovery = Discovery::Never;
        devices.push(hanging);
        for (i, a) in addrs.iter().enumerate() {
            let d = glucose_meter(a, GlucoseMeter::new(start, 20), now_local());
            d.faults.lock().unwrap().discovery = Discovery::Slow(Duration::from_millis(100));
            if i == 3 {
                d.faults.lock().unwrap().connect_aborts = 1;
            }
            devices.push(d);
        }
        let mut allowed: Vec<(&str, &str)> =
            addrs.iter().map(|a| (a.as_str(), "glucose")).collect();
        allowed.push((HANGING, "glucose"));
        let mut cfg = fast_config();
        cfg.max_connections = 3;
        cfg.connect_attempts = 2;
        let t0 = Instant::now();
        let env = Env::start(&broker, devices, &allowed, cfg).await;
        let mut keys = Vec::new();
        for a in &addrs {
            keys.push(env.store.device_by_address(a).await.unwrap().unwrap().key);
        }
        env.wait_for(40, "all ten downloads", || async {
            for k in &keys {
                if env.store.cursor(k, CURSOR_GLUCOSE).await.unwrap() != Some(20) {
                    return false;
                }
            }
            true
        })
        .await;
        let took = t0.elapsed();
        let max = env.fake.inner.connected_max.load(Ordering::SeqCst);
        eprintln!("ten devices done in {took:?}, at most {max} connected at once");
        assert!(max <= 3, "{max} connections at once; the budget is 3");
        assert_eq!(
            env.readings().await.len(),
            10 * 20 + 10,
            "200 glucose + one battery reading each"
        );
        // The hanging device was tried, timed out, and was told to disconnect.
        let h = env.fake.device(HANGING);
        assert!(h.connect_calls.load(Ordering::SeqCst) >= 1);
        assert!(took < Duration::from_secs(30), "{took:?}");
        assert!(
            env.fake
                .device(&addrs[3])
                .connect_calls
                .load(Ordering::SeqCst)
                >= 2,
            "abort retried"
        );
        env.stop().await;
    });
}
