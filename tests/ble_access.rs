//! Access control end to end: a device that is not on the allow-list is seen and counted but never
//! connected; an allow-listed meter that is not bonded yields the pairing-needed state once (no
//! connect loop, no crash); pairing through the library (Device1.Pair with the hub's Agent1 answering
//! the passkey, Trusted set, bond recorded in the store) then lets the download run.
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
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use vitals_hub::ble::{adapter, pairing, BleError, BleEvent, DeviceState};
use vitals_hub::model::Kind;

const STRANGER: &str = "C0:26:DA:00:02:01";
const UNBONDED: &str = "C0:26:DA:00:02:02";

#[test]
fn allow_list_bond_and_pairing() {
    fake_bluez::harness::run(|broker| async move {
        let start = now_local().add_minutes(-1000).unwrap();
        let stranger = glucose_meter(STRANGER, GlucoseMeter::new(start, 5), now_local());
        let unbonded = glucose_meter(UNBONDED, GlucoseMeter::new(start, 5), now_local())
            .unbonded(Some(123_456));
        let env = Env::start(
            &broker,
            vec![stranger, unbonded],
            &[(UNBONDED, "glucose")],
            fast_config(),
        )
        .await;
        let key = env
            .store
            .device_by_address(UNBONDED)
            .await
            .unwrap()
            .unwrap()
            .key;

        env.wait_for(20, "pairing needed", || async {
            env.hub.state(UNBONDED) == Some(DeviceState::PairingNeeded)
        })
        .await;
        // Several scan windows later: still no connect attempts, one event, the stranger counted.
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        assert_eq!(
            env.fake
                .device(STRANGER)
                .connect_calls
                .load(Ordering::SeqCst),
            0
        );
        assert_eq!(
            env.fake
                .device(UNBONDED)
                .connect_calls
                .load(Ordering::SeqCst),
            0
        );
        assert_eq!(env.hub.ignored(), 1);
        let pn = env
            .hub
            .events()
            .iter()
            .filter(|e| matches!(e, BleEvent::PairingNeeded { device } if *device == key))
            .count();
        assert_eq!(pn, 1, "pairing-needed is reported once, not in a loop");
        assert!(env.readings().await.is_empty());

        // A wrong passkey fails with an error that names the device.
        let wrong = pairing::pair(
            "hci0",
            UNBONDED,
            Arc::new(|| Some(111_111)),
            Duration::from_secs(5),
            Some(&vitals_hub::daemon::HubPort::new(env.store.clone())),
        )
        .await;
        let msg = wrong.unwrap_err().to_string();
        assert!(msg.contains(UNBONDED), "{msg}");
        // The right one bonds; Trusted is set; the bond is recorded.
        let bond = pairing::pair(
            "hci0",
            UNBONDED,
            Arc::new(|| Some(123_456)),
            Duration::from_secs(5),
            Some(&vitals_hub::daemon::HubPort::new(env.store.clone())),
        )
        .await
        .unwrap();
        assert!(bond.paired && bond.bonded && bond.trusted);
        assert_eq!(bond.security, "authenticated-passkey");
        assert!(env.fake.device(UNBONDED).trusted.load(Ordering::SeqCst));
        let rec = env
            .store
            .device_by_address(UNBONDED)
            .await
            .unwrap()
            .unwrap();
        assert!(rec
            .record
            .bond
            .unwrap()
            .contains("security=authenticated-passkey"));

        env.wait_for(20, "the five records after pairing", || async {
            env.readings()
                .await
                .iter()
                .filter(|r| r.reading.kind == Kind::Glucose)
                .count()
                == 5
        })
        .await;
        assert_eq!(
            env.fake
                .device(STRANGER)
                .connect_calls
                .load(Ordering::SeqCst),
            0
        );
        // One adapter choice: none configured is the first BlueZ lists; a configured one that
        // is not there is an error naming it (never a silent fall-back to hci0).
        let op = Duration::from_secs(5);
        assert_eq!(adapter::name(None, op).await.unwrap(), "hci0");
        assert_eq!(adapter::name(Some("hci0"), op).await.unwrap(), "hci0");
        let missing = adapter::name(Some("hci1"), op).await.unwrap_err();
        assert!(
            matches!(missing, BleError::AdapterMissing(ref a) if a == "hci1"),
            "{missing}"
        );
        env.stop().await;
    });
}
