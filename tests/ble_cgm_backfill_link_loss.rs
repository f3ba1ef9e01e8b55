//! CGM back-fill interrupted (issue 14: link loss mid-RACP): the link drops in the middle of the
//! back-fill; what arrived is stored, the cursor does not move past what never arrived, and the
//! next connection asks again and completes it, storing nothing twice. (Its own binary: the fake
//! BlueZ's broker is process-wide.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "fake_bluez/mod.rs"]
mod fake_bluez;

use fake_bluez::devices::{cgm_device, RacpCgm};
use fake_bluez::harness::{fast_config, now_local, Env};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vitals_hub::model::Kind;

const CGM: &str = "C0:26:DA:00:00:36";

/// The link drops in the middle of the back-fill: what arrived is stored, the cursor does not
/// move past what never arrived, and the next connection asks again and completes it, once.
#[test]
fn a_link_loss_mid_backfill_loses_nothing_and_stores_nothing_twice() {
    fake_bluez::harness::run(|broker| async move {
        let now = now_local();
        let start = now.add_minutes(-600).unwrap();
        let log = Arc::new(Mutex::new(
            (1..=20u16).map(|i| (100 + i64::from(i), i * 5)).collect(),
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
            100,
            now,
        );
        // The first connection drops after 7 notifications.
        dev.faults.lock().unwrap().link_loss_after = Some(7);
        let mut cfg = fast_config();
        cfg.cooldown_ms = 300;
        let env = Env::start(&broker, vec![dev], &[(CGM, "cgm")], cfg).await;
        let cgm = || async {
            env.readings()
                .await
                .into_iter()
                .filter(|r| r.reading.kind == Kind::CgmGlucose)
                .collect::<Vec<_>>()
        };
        env.wait_for(30, "all 20 records after the reconnect", || async {
            cgm().await.len() >= 20
        })
        .await;
        // Two back-fill requests: the interrupted one and the one that completed.
        env.wait_for(30, "the second back-fill request", || async {
            env.fake.device(CGM).writes_to(0x2AAC).len() >= 2
        })
        .await;
        let stored = cgm().await;
        let offsets: BTreeSet<i64> = stored
            .iter()
            .map(|r| {
                (r.reading.device_time.unwrap().to_epoch_seconds() - start.to_epoch_seconds()) / 60
            })
            .collect();
        assert_eq!(stored.len(), 20, "nothing stored twice");
        assert_eq!(offsets, (1..=20).map(|i| i * 5).collect());
        let key = env.store.device_by_address(CGM).await.unwrap().unwrap().key;
        env.wait_for(30, "the cursor at offset 100", || async {
            env.store
                .cursor(&key, vitals_hub::ble::CURSOR_CGM)
                .await
                .unwrap()
                .is_some_and(|c| c & 0xFFFF == 100)
        })
        .await;
        env.stop().await;
    });
}
