//! Glucose sequence numbers (issue 14): past 65,535 comes 0, and the hub follows.
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
use vitals_hub::model::Kind;

const METER: &str = "C0:26:DA:00:00:23";

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
fn sequence_numbers_wrap_past_65535() {
    fake_bluez::harness::run(|broker| async move {
        let start = now_local().add_minutes(-70_000 * 10).unwrap();
        let meter = GlucoseMeter::from_seq(start, 65_530, 6);
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
        env.wait_for(30, "cursor 65535", || async {
            env.store.cursor(&key, CURSOR_GLUCOSE).await.unwrap() == Some(65_535)
        })
        .await;
        // Five new measurements: 0..=4 after 65,535.
        let wrapped = GlucoseMeter::from_seq(start, 65_530, 11);
        *swap.lock().unwrap() = Some((65_530, wrapped.records));
        env.wait_for(30, "records 0..=4 and cursor 4", || async {
            env.store.cursor(&key, CURSOR_GLUCOSE).await.unwrap() == Some(4)
                && glucose_seqs(&env.readings().await).len() == 11
        })
        .await;
        let mut want: Vec<u16> = (0..=4).chain(65_530..=65_535).collect();
        want.sort_unstable();
        assert_eq!(glucose_seqs(&env.readings().await), want, "each once");
        env.stop().await;
    });
}
