//! Glucose meter restart (issue 14): sequence numbers that went back are detected ("no records
//! found" while the meter holds records), said in an event, and the meter read in full.
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
use vitals_hub::ble::{BleEvent, CURSOR_GLUCOSE};
use vitals_hub::model::Kind;

const METER: &str = "C0:26:DA:00:00:24";

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
fn a_restarted_meter_is_detected_and_read_in_full() {
    fake_bluez::harness::run(|broker| async move {
        let start = now_local().add_minutes(-3000 * 10).unwrap();
        let meter = GlucoseMeter::new(start, 30);
        let swap = meter.swap.clone();
        let dev = glucose_meter(METER, meter, now_local());
        let mut cfg = fast_config();
        cfg.cooldown_ms = 300;
        let env = Env::start(&broker, vec![dev], &[(METER, "glucose")], cfg).await;
        let key = env
            .store
            .device_by_address(METER)
            .await
            .unwrap()
            .unwrap()
            .key;
        env.wait_for(30, "cursor 30", || async {
            env.store.cursor(&key, CURSOR_GLUCOSE).await.unwrap() == Some(30)
        })
        .await;
        // Battery change: the meter starts again at 1 with five new measurements.
        let later = now_local().add_minutes(-100).unwrap();
        let reset = GlucoseMeter::new(later, 5);
        *swap.lock().unwrap() = Some((1, reset.records));
        env.wait_for(30, "35 readings and cursor 5", || async {
            env.store.cursor(&key, CURSOR_GLUCOSE).await.unwrap() == Some(5)
                && glucose_seqs(&env.readings().await).len() == 35
        })
        .await;
        assert!(env.hub.events().iter().any(|e| matches!(
            e,
            BleEvent::MeterRestarted { device, cursor: 30, records: 5 } if *device == key
        )));
        let racp = env.fake.device(METER).writes_to(0x2A52);
        assert!(racp.contains(&vec![0x04, 0x03, 0x01, 30, 0]), "{racp:?}");
        assert!(racp.contains(&vec![0x04, 0x01]), "{racp:?}");
        // The next sessions find nothing new and store nothing twice.
        env.wait_for(30, "a later session", || async {
            env.fake
                .device(METER)
                .writes_to(0x2A52)
                .contains(&vec![0x01, 0x03, 0x01, 6, 0])
        })
        .await;
        assert_eq!(glucose_seqs(&env.readings().await).len(), 35);
        env.stop().await;
    });
}
