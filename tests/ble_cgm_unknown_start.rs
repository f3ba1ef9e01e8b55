//! CGM records without a known Session Start Time (issue 14): every such record got the same
//! dedup key and all but the first were dropped as duplicates. Here the sensor's start is unknown
//! and read-only, so the hub cannot write it: every record must still be stored, once.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "fake_bluez/mod.rs"]
mod fake_bluez;

use fake_bluez::devices::{cgm_sensor, CgmSensor};
use fake_bluez::harness::{fast_config, now_local, Env};
use std::time::Duration;
use vitals_hub::model::Kind;

const CGM: &str = "C0:26:DA:00:00:31";

#[test]
fn cgm_records_without_a_session_start_never_collapse() {
    fake_bluez::harness::run(|broker| async move {
        let queue = std::sync::Arc::new(std::sync::Mutex::new(
            (0..8).map(|i| (100 + i64::from(i), 60 + i * 5)).collect(),
        ));
        let sensor = CgmSensor {
            queue,
            gap: Duration::from_millis(20),
        };
        let dev = cgm_sensor(CGM, sensor, None, false, 95, now_local());
        let env = Env::start(&broker, vec![dev], &[(CGM, "cgm")], fast_config()).await;
        env.wait_for(30, "the sensor hung up", || async {
            env.fake
                .device(CGM)
                .connect_calls
                .load(std::sync::atomic::Ordering::SeqCst)
                >= 1
                && !env
                    .fake
                    .device(CGM)
                    .connected
                    .load(std::sync::atomic::Ordering::SeqCst)
        })
        .await;
        env.wait_for(30, "8 CGM readings", || async {
            env.readings()
                .await
                .iter()
                .filter(|r| r.reading.kind == Kind::CgmGlucose)
                .count()
                >= 8
        })
        .await;
        let cgm: Vec<_> = env
            .readings()
            .await
            .into_iter()
            .filter(|r| r.reading.kind == Kind::CgmGlucose)
            .collect();
        assert_eq!(cgm.len(), 8, "no record collapsed into another");
        assert!(cgm.iter().all(|r| r.reading.device_time.is_none()));
        env.stop().await;
    });
}
