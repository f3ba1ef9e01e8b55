//! Glucose end to end through real btleplug against the fake BlueZ: a RACP download into the store,
//! link loss in the middle of a 300-record download with every record stored exactly once, the
//! cursor committed with the records, and a malformed record reported while the session goes on.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "fake_bluez/mod.rs"]
mod fake_bluez;

use fake_bluez::devices::{glucose_meter, glucose_record, GlucoseMeter};
use fake_bluez::harness::{fast_config, now_local, Env};
use std::collections::BTreeSet;
use vitals_hub::ble::{BleEvent, CURSOR_GLUCOSE};
use vitals_hub::gatt::GattValue;
use vitals_hub::model::{Decimal, Kind, Unit};

const METER: &str = "C0:26:DA:00:00:01";

#[test]
fn glucose_download_survives_link_loss_exactly_once() {
    fake_bluez::harness::run(|broker| async move {
        let start = now_local().add_minutes(-3000 * 10).unwrap();
        let mut meter = GlucoseMeter::new(start, 300);
        // Record 150 is malformed (flags promise a concentration the payload lacks).
        let mut bad = glucose_record(start, 150).encode().unwrap();
        bad.truncate(10);
        meter.records[149] = bad;
        let dev = glucose_meter(METER, meter, now_local());
        dev.faults.lock().unwrap().link_loss_after = Some(120);
        let env = Env::start(&broker, vec![dev], &[(METER, "glucose")], fast_config()).await;
        let key = env
            .store
            .device_by_address(METER)
            .await
            .unwrap()
            .unwrap()
            .key;

        env.wait_for(60, "299 glucose readings and cursor 300", || async {
            let c = env.store.cursor(&key, CURSOR_GLUCOSE).await.unwrap();
            c == Some(300)
                && env
                    .readings()
                    .await
                    .iter()
                    .filter(|r| r.reading.kind == Kind::Glucose)
                    .count()
                    == 299
        })
        .await;
        let meter = env.fake.device(METER);
        // The link really dropped mid-download and the hub came back for the rest.
        assert!(
            meter
                .connect_calls
                .load(std::sync::atomic::Ordering::SeqCst)
                >= 2
        );
        let racp = meter.writes_to(0x2A52);
        assert_eq!(
            racp[0],
            vec![0x01, 0x01],
            "first download asks for all records"
        );
        assert!(
            racp.iter()
                .any(|w| w.len() == 5 && w[..3] == [0x01, 0x03, 0x01]),
            "the reconnect asks for records after the cursor: {racp:?}"
        );

        let readings = env.readings().await;
        let glucose: Vec<_> = readings
            .iter()
            .filter(|r| r.reading.kind == Kind::Glucose)
            .collect();
        let seqs: BTreeSet<u16> = glucose
            .iter()
            .map(|r| r.reading.sequence.unwrap())
            .collect();
        assert_eq!(seqs.len(), glucose.len(), "no record stored twice");
        let expected: BTreeSet<u16> = (1..=300).filter(|s| *s != 150).collect();
        assert_eq!(seqs, expected);
        for r in &glucose {
            let s = r.reading.sequence.unwrap();
            assert_eq!(r.reading.unit, Unit::MgPerDl);
            let v = r.reading.value.number().unwrap();
            assert!(
                v.cmp_value(&Decimal::new(80 + i64::from(s % 100), 0))
                    .is_eq(),
                "seq {s}: {v:?}"
            );
            assert_eq!(
                r.reading.device_time,
                Some(start.add_minutes(i64::from(s) * 10).unwrap())
            );
            assert_eq!(r.patient_id.as_deref(), Some("patient-1"));
        }
        let events = env.hub.events();
        assert!(events.iter().any(|e| matches!(e, BleEvent::Malformed { device, characteristic: 0x2A18, .. } if *device == key)));
        assert!(events
            .iter()
            .any(|e| matches!(e, BleEvent::ClockOffset { device, .. } if *device == key)));
        env.stop().await;
    });
}
