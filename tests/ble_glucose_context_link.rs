//! Glucose context records (issue 14): a link lost between a measurement and its context record
//! loses neither.
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
use vitals_hub::ble::CURSOR_GLUCOSE;
use vitals_hub::model::{Kind, Meal};

const METER: &str = "C0:26:DA:00:00:22";

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
fn context_records_survive_link_loss_between_measurement_and_context() {
    fake_bluez::harness::run(|broker| async move {
        let start = now_local().add_minutes(-3000 * 10).unwrap();
        let meter = GlucoseMeter::new(start, 60).with_contexts();
        let dev = glucose_meter(METER, meter, now_local());
        // m1 c1 … m25 c25 m26 | link lost before c26.
        dev.faults.lock().unwrap().link_loss_after = Some(51);
        let env = Env::start(&broker, vec![dev], &[(METER, "glucose")], fast_config()).await;
        let key = env
            .store
            .device_by_address(METER)
            .await
            .unwrap()
            .unwrap()
            .key;
        env.wait_for(60, "60 glucose readings and cursor 60", || async {
            env.store.cursor(&key, CURSOR_GLUCOSE).await.unwrap() == Some(60)
                && glucose_seqs(&env.readings().await).len() == 60
        })
        .await;
        let readings = env.readings().await;
        assert_eq!(glucose_seqs(&readings), (1..=60).collect::<Vec<u16>>());
        for r in readings.iter().filter(|r| r.reading.kind == Kind::Glucose) {
            let s = r.reading.sequence.unwrap();
            let want = if s.is_multiple_of(2) {
                Meal::Fasting
            } else {
                Meal::Postprandial
            };
            assert_eq!(r.reading.meal, Some(want), "seq {s} lost its context");
        }
        env.stop().await;
    });
}
