//! CGM back-fill after a link loss (issue 14): a sensor keeps measuring while the link is down;
//! after the reconnect the hub asks the CGM's Record Access Control Point for the records with a
//! time offset greater than the last one it stored in this sensor session (CGMS filter type 0x01),
//! so the gap is filled. Before, the hub only listened for live notifications and the records of
//! the gap were never read.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "fake_bluez/mod.rs"]
mod fake_bluez;

use fake_bluez::devices::{cgm_device, cgm_record, RacpCgm};
use fake_bluez::harness::{fast_config, now_local, Env};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vitals_hub::gatt::racp::{FilterValue, Operator, RacpMessage};
use vitals_hub::gatt::GattValue;
use vitals_hub::model::Kind;

const CGM: &str = "C0:26:DA:00:00:34";

#[test]
fn a_gap_while_the_link_was_down_is_back_filled_by_time_offset() {
    fake_bluez::harness::run(|broker| async move {
        let now = now_local();
        let start = now.add_minutes(-600).unwrap();
        // Before the hub first connects the sensor holds offsets 5..=20.
        let log = Arc::new(Mutex::new(
            (1..=4u16).map(|i| (100 + i64::from(i), i * 5)).collect(),
        ));
        let dev = cgm_device(
            CGM,
            Box::new(RacpCgm {
                log: log.clone(),
                gap: Duration::from_millis(10),
                answered: Arc::default(),
            }),
            Some(start),
            false,
            20,
            now,
        );
        let mut cfg = fast_config();
        cfg.cooldown_ms = 300;
        let env = Env::start(&broker, vec![dev], &[(CGM, "cgm")], cfg).await;
        let offsets = || async {
            env.readings()
                .await
                .iter()
                .filter(|r| r.reading.kind == Kind::CgmGlucose)
                .map(|r| {
                    let t = r.reading.device_time.unwrap();
                    (t.to_epoch_seconds() - start.to_epoch_seconds()) / 60
                })
                .collect::<BTreeSet<i64>>()
        };
        env.wait_for(30, "the first back-fill (offsets 5..=20)", || async {
            offsets().await.len() == 4
        })
        .await;
        // A live measurement while connected.
        log.lock().unwrap().push((125, 25));
        env.fake.notify(CGM, 0x2AA7, cgm_record(125, 25)).await;
        env.wait_for(30, "the live record at 25", || async {
            offsets().await.contains(&25)
        })
        .await;
        // The link drops; the sensor measures 30..=50 meanwhile (nobody hears them live).
        env.fake.hang_up(CGM).await;
        let racp_writes_before = env.fake.device(CGM).writes_to(0x2AAC).len();
        for off in (30..=50u16).step_by(5) {
            log.lock().unwrap().push((100 + i64::from(off), off));
        }
        env.wait_for(30, "the gap 30..=50 back-filled", || async {
            offsets().await == (1..=10).map(|i| i * 5).collect()
        })
        .await;
        // The reconnect asked for offsets ≥ 26: newer than the last stored one.
        let writes = env.fake.device(CGM).writes_to(0x2AAC);
        let after: Vec<_> = writes[racp_writes_before..]
            .iter()
            .map(|w| RacpMessage::decode(w).unwrap())
            .collect();
        assert!(
            after.iter().any(|m| matches!(
                m,
                RacpMessage::Request {
                    operator: Operator::GreaterThanOrEqual,
                    filter: Some(f),
                    ..
                } if f.filter_type == 0x01 && f.values == vec![FilterValue::U16(26)]
            )),
            "no RACP request for offsets ≥ 26 after the reconnect: {after:?}"
        );
        // Nothing stored twice.
        let n = env
            .readings()
            .await
            .iter()
            .filter(|r| r.reading.kind == Kind::CgmGlucose)
            .count();
        assert_eq!(n, 10);
        env.stop().await;
    });
}
