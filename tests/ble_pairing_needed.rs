//! A glucose meter that BlueZ lists as paired but that has lost its bond answers the RACP write
//! with "Not paired" — `org.bluez.Error.NotPermitted` "Not paired" on current BlueZ,
//! `org.bluez.Error.NotPaired` on older ones. Either way the session ends in the pairing-needed
//! state, one `ble_pairing_needed` event is recorded in the store, nothing from the device is
//! stored, and the hub does not reconnect it window after window. Once the bond is recorded anew
//! (the technician re-paired it), the download runs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "fake_bluez/mod.rs"]
mod fake_bluez;

use fake_bluez::devices::{glucose_meter, GlucoseMeter};
use fake_bluez::harness::{fast_config, now_local, record, Env};
use fake_bluez::RacpRefusal;
use std::sync::atomic::Ordering;
use std::time::Duration;
use vitals_hub::ble::{BleEvent, DeviceState, Outcome};
use vitals_hub::model::Kind;

const NOT_PERMITTED: &str = "C0:26:DA:00:06:01";
const NOT_PAIRED: &str = "C0:26:DA:00:06:02";

#[test]
fn not_paired_on_racp_write_is_pairing_needed_without_a_loop() {
    fake_bluez::harness::run(|broker| async move {
        let start = now_local().add_minutes(-1000).unwrap();
        let a = glucose_meter(NOT_PERMITTED, GlucoseMeter::new(start, 5), now_local())
            .refuses_racp(RacpRefusal::NotPermitted);
        let b = glucose_meter(NOT_PAIRED, GlucoseMeter::new(start, 5), now_local())
            .refuses_racp(RacpRefusal::NotPaired);
        let cfg = fast_config();
        let window_ms = cfg.scan_window_ms + cfg.scan_pause_ms;
        let env = Env::start(
            &broker,
            vec![a, b],
            &[(NOT_PERMITTED, "glucose"), (NOT_PAIRED, "glucose")],
            cfg,
        )
        .await;
        let mut keys = Vec::new();
        for addr in [NOT_PERMITTED, NOT_PAIRED] {
            keys.push(
                env.store
                    .device_by_address(addr)
                    .await
                    .unwrap()
                    .unwrap()
                    .key,
            );
        }

        env.wait_for(20, "both meters pairing-needed", || async {
            env.hub.state(NOT_PERMITTED) == Some(DeviceState::PairingNeeded)
                && env.hub.state(NOT_PAIRED) == Some(DeviceState::PairingNeeded)
        })
        .await;
        // Four more scan windows: no reconnects, no further RACP attempts.
        tokio::time::sleep(Duration::from_millis(4 * window_ms)).await;
        for (addr, key) in [NOT_PERMITTED, NOT_PAIRED].iter().zip(&keys) {
            let d = env.fake.device(addr);
            assert_eq!(
                d.connect_calls.load(Ordering::SeqCst),
                1,
                "{addr}: connected again after pairing-needed"
            );
            assert_eq!(d.refused_writes.load(Ordering::SeqCst), 1, "{addr}");
            let events = env.hub.events();
            let pn = events
                .iter()
                .filter(|e| matches!(e, BleEvent::PairingNeeded { device } if device == key))
                .count();
            assert_eq!(pn, 1, "{addr}: pairing-needed reported once");
            assert!(
                events.iter().any(|e| matches!(e,
                    BleEvent::SessionEnded { device, outcome: Outcome::PairingNeeded } if device == key)),
                "{addr}: the session ended pairing-needed"
            );
        }
        // Nothing stored from either device (not even the battery level it read before RACP).
        assert!(
            env.readings().await.is_empty(),
            "{:?}",
            env.readings().await
        );
        // The audit log has one pairing-needed event per device.
        env.wait_for(5, "ble_pairing_needed in the store", || async {
            let ev = env.store.events(200).await.unwrap();
            keys.iter().all(|k| {
                ev.iter()
                    .filter(|e| e.kind == "ble_pairing_needed" && e.detail.contains(&k.0))
                    .count()
                    == 1
            })
        })
        .await;

        // The technician re-pairs the first meter; the bond is recorded anew: it is downloaded.
        *env.fake.device(NOT_PERMITTED).racp_refusal.lock().unwrap() = None;
        let mut rec = record(NOT_PERMITTED, "glucose");
        rec.bond =
            Some("paired=true;bonded=true;trusted=true;security=authenticated-passkey".into());
        env.store.upsert_device(rec, true).await.unwrap();
        env.wait_for(20, "the five records after re-pairing", || async {
            env.readings()
                .await
                .iter()
                .filter(|r| r.reading.kind == Kind::Glucose && r.device == keys[0])
                .count()
                == 5
        })
        .await;
        // The other is still left alone.
        assert_eq!(
            env.fake
                .device(NOT_PAIRED)
                .connect_calls
                .load(Ordering::SeqCst),
            1
        );
        assert!(env.readings().await.iter().all(|r| r.device == keys[0]));
        env.stop().await;
    });
}
