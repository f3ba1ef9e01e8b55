//! A Beurer BM85 (issue 14): its non-conformant Blood Pressure Measurements (the public capture
//! in fixtures/quirks/beurer-bm85.json) were refused outright, so every reading of the cuff was
//! lost. The session finds the quirk from the Device Information and stores the readings.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "fake_bluez/mod.rs"]
mod fake_bluez;

use fake_bluez::devices::{clock_bytes, Stream};
use fake_bluez::harness::{fast_config, now_local, Env};
use fake_bluez::DeviceModel;
use vitals_hub::model::Kind;

const CUFF: &str = "C0:26:DA:00:00:51";

#[test]
fn bm85_readings_are_stored_through_its_quirk() {
    fake_bluez::harness::run(|broker| async move {
        let captures = [
            "566a0047000000ea07080b121f00003f000000",
            "56710049000000ea07080b1438000041010000",
        ];
        let values = captures
            .iter()
            .map(|h| (0x2A35, hex::decode(h).unwrap()))
            .collect();
        let behavior = Stream {
            trigger: 0x2A35,
            values,
            gap: std::time::Duration::from_millis(20),
            hang_up: true,
            sent: false,
        };
        let dev = DeviceModel::new(CUFF, "Beurer BM85", Box::new(behavior))
            .service(
                0x1810,
                vec![
                    (0x2A35, &["indicate"], Vec::new()),
                    (0x2A49, &["read"], vec![0, 0]),
                ],
            )
            .service(
                0x180A,
                vec![
                    (0x2A29, &["read"], b"Beurer".to_vec()),
                    (0x2A24, &["read"], b"BM85".to_vec()),
                ],
            )
            .service(0x1805, vec![(0x2A2B, &["read"], clock_bytes(now_local()))]);
        let env = Env::start(
            &broker,
            vec![dev],
            &[(CUFF, "blood_pressure")],
            fast_config(),
        )
        .await;
        env.wait_for(30, "two systolic readings", || async {
            env.readings()
                .await
                .iter()
                .filter(|r| r.reading.kind == Kind::Systolic)
                .count()
                == 2
        })
        .await;
        let readings = env.readings().await;
        let values = |kind: Kind| {
            let mut v: Vec<f64> = readings
                .iter()
                .filter(|r| r.reading.kind == kind)
                .map(|r| r.reading.value.number().unwrap().to_f64())
                .collect();
            v.sort_by(f64::total_cmp);
            v
        };
        assert_eq!(values(Kind::Systolic), vec![106.0, 113.0]);
        assert_eq!(values(Kind::Diastolic), vec![71.0, 73.0]);
        assert_eq!(values(Kind::PulseRate), vec![63.0, 65.0]);
        assert!(values(Kind::MeanArterialPressure).is_empty());
        env.stop().await;
    });
}
