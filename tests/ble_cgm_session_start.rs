//! CGM as a real sensor (issue 14): the hub writes the Session Start Time when the sensor has
//! none (its local time minus the CGM Status time offset) and uses it for every record's device
//! time; and the session follows the sensor's cadence (records minutes apart, here sped up to
//! one a second, well past the spot devices' quiet time) on one connection.
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
use std::sync::atomic::Ordering;
use std::time::Duration;
use vitals_hub::gatt::cgm::SessionStartTime;
use vitals_hub::gatt::GattValue;
use vitals_hub::model::Kind;

const CGM: &str = "C0:26:DA:00:00:32";

#[test]
fn the_hub_writes_the_session_start_and_follows_the_cadence() {
    fake_bluez::harness::run(|broker| async move {
        // One record a minute at offsets 120..=124; the sensor sends one a second (> quiet 600 ms).
        let queue = std::sync::Arc::new(std::sync::Mutex::new(
            (0..5).map(|i| (100 + i64::from(i), 120 + i)).collect(),
        ));
        let sensor = CgmSensor {
            queue,
            gap: Duration::from_millis(1_000),
        };
        let dev = cgm_sensor(CGM, sensor, None, true, 124, now_local());
        let before = now_local();
        let env = Env::start(&broker, vec![dev], &[(CGM, "cgm")], fast_config()).await;
        env.wait_for(30, "5 CGM readings", || async {
            env.readings()
                .await
                .iter()
                .filter(|r| r.reading.kind == Kind::CgmGlucose)
                .count()
                >= 5
        })
        .await;
        let after = now_local();
        let sensor = env.fake.device(CGM);
        assert_eq!(
            sensor.connect_calls.load(Ordering::SeqCst),
            1,
            "one long-lived connection"
        );
        let written = sensor.writes_to(0x2AAA);
        assert_eq!(written.len(), 1, "the hub wrote the Session Start Time");
        let sst = SessionStartTime::decode(&written[0]).unwrap();
        let start = sst.start.to_local().unwrap();
        // Hub local time (UTC here) minus the 124-minute time offset.
        assert!(
            start >= before.add_minutes(-125).unwrap() && start <= after.add_minutes(-124).unwrap()
        );
        let cgm: Vec<_> = env
            .readings()
            .await
            .into_iter()
            .filter(|r| r.reading.kind == Kind::CgmGlucose)
            .collect();
        assert_eq!(cgm.len(), 5);
        for r in &cgm {
            let t = r
                .reading
                .device_time
                .expect("a device time from the written start");
            let v = r.reading.value.number().unwrap().to_f64() as i64;
            let off = 120 + (v - 100);
            assert_eq!(t, start.add_minutes(off).unwrap());
        }
        env.stop().await;
    });
}
