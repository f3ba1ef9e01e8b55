//! CGM sensor change (issue 14): the time-offset cursor was compared across sensor sessions, so
//! after a sensor change every record whose offset was below the old session's last one was
//! skipped. The cursor is kept per sensor session.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "fake_bluez/mod.rs"]
mod fake_bluez;

use fake_bluez::devices::{cgm_sensor, sst_bytes, CgmSensor};
use fake_bluez::harness::{fast_config, now_local, Env};
use std::time::Duration;
use vitals_hub::model::Kind;

const CGM: &str = "C0:26:DA:00:00:33";

#[test]
fn a_sensor_change_skips_no_record() {
    fake_bluez::harness::run(|broker| async move {
        let now = now_local();
        let first = now.add_minutes(-3 * 24 * 60).unwrap();
        let queue = std::sync::Arc::new(std::sync::Mutex::new(
            (0..4).map(|i| (100 + i64::from(i), 1000 + i * 5)).collect(),
        ));
        let sensor = CgmSensor {
            queue: queue.clone(),
            gap: Duration::from_millis(20),
        };
        let dev = cgm_sensor(CGM, sensor, Some(first), true, 1015, now);
        let mut cfg = fast_config();
        cfg.cooldown_ms = 300;
        let env = Env::start(&broker, vec![dev], &[(CGM, "cgm")], cfg).await;
        let count = || async {
            env.readings()
                .await
                .iter()
                .filter(|r| r.reading.kind == Kind::CgmGlucose)
                .count()
        };
        env.wait_for(30, "the first sensor's 4 readings", || async {
            count().await == 4
        })
        .await;
        // A new sensor: a new start, offsets from 5 again.
        let second = now.add_minutes(-30).unwrap();
        env.fake
            .device(CGM)
            .set_value(0x2AAA, sst_bytes(Some(second)));
        *queue.lock().unwrap() = (0..4).map(|i| (150 + i64::from(i), 5 + i * 5)).collect();
        env.wait_for(30, "the new sensor's 4 readings", || async {
            count().await == 8
        })
        .await;
        let readings = env.readings().await;
        let new: Vec<_> = readings
            .iter()
            .filter(|r| r.reading.kind == Kind::CgmGlucose)
            .filter(|r| r.reading.device_time.unwrap() > now.add_minutes(-31).unwrap())
            .collect();
        assert_eq!(new.len(), 4);
        env.stop().await;
    });
}
