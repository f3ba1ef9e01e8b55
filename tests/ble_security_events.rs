//! The BLE side's security events (issue 19 part 3) through the fake BlueZ: a device that is not
//! on the allow-list but advertises the name of a paired device is a `ble_spoof_attempt` (code
//! `spoof-attempt`) naming the paired device's store id only, never the spoofer's address or the
//! name; a paired device whose address BlueZ reports as not bonded is a `ble_unbonded_connection`
//! (code `unbonded-connection`) beside `ble_pairing_needed`; a device registered but never paired
//! is only `ble_pairing_needed`, and a stranger with another name is nothing.
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
use vitals_hub::ble::DeviceState;
use vitals_hub::store::security::code_for;
use vitals_hub::store::DeviceRecord;

/// The paired meter, bonded in BlueZ and in the store.
const PAIRED: &str = "C0:26:DA:00:19:01";
/// Not on the allow-list, advertising the paired meter's name.
const SPOOF: &str = "C0:26:DA:00:19:02";
/// Paired with the hub (bond recorded) but BlueZ has no bond.
const LOST_BOND: &str = "C0:26:DA:00:19:03";
/// Allow-listed, never paired.
const NEVER_PAIRED: &str = "C0:26:DA:00:19:04";
/// Not on the allow-list, another name.
const STRANGER: &str = "C0:26:DA:00:19:05";
/// The name every fake glucose meter advertises.
const METER_NAME: &str = "meter+123";

fn paired_record(address: &str, name: &str, bond: Option<&str>) -> DeviceRecord {
    DeviceRecord {
        name: Some(name.into()),
        bond: bond.map(str::to_string),
        ..record(address, "glucose")
    }
}

#[test]
fn spoofed_names_and_lost_bonds_are_security_events() {
    fake_bluez::harness::run(|broker| async move {
        let start = now_local().add_minutes(-100).unwrap();
        // The hub starts with no devices in range; the store is filled before any appears.
        let env = Env::start(&broker, Vec::new(), &[], fast_config()).await;
        let s = &env.store;
        let paired = s
            .upsert_device(paired_record(PAIRED, METER_NAME, Some("bond-1")), true)
            .await
            .unwrap();
        let lost = s
            .upsert_device(paired_record(LOST_BOND, "meter-b", Some("bond-2")), true)
            .await
            .unwrap();
        let never = s
            .upsert_device(paired_record(NEVER_PAIRED, "meter-c", None), true)
            .await
            .unwrap();
        env.fake
            .add_device(glucose_meter(
                PAIRED,
                GlucoseMeter::new(start, 3),
                now_local(),
            ))
            .await;
        env.fake
            .add_device(glucose_meter(
                SPOOF,
                GlucoseMeter::new(start, 3),
                now_local(),
            ))
            .await;
        env.fake
            .add_device(
                glucose_meter(LOST_BOND, GlucoseMeter::new(start, 3), now_local()).unbonded(None),
            )
            .await;
        env.fake
            .add_device(
                glucose_meter(NEVER_PAIRED, GlucoseMeter::new(start, 3), now_local())
                    .unbonded(None),
            )
            .await;
        let mut stranger = glucose_meter(STRANGER, GlucoseMeter::new(start, 3), now_local());
        stranger.name = "scale-9".into();
        env.fake.add_device(stranger).await;

        env.wait_for(30, "spoof and unbonded events", || async {
            let ev = env.store.events(1000).await.unwrap();
            ev.iter().any(|e| e.kind == "ble_spoof_attempt")
                && ev.iter().any(|e| e.kind == "ble_unbonded_connection")
                && env.hub.state(NEVER_PAIRED) == Some(DeviceState::PairingNeeded)
                && matches!(env.hub.state(PAIRED), Some(DeviceState::Done { .. }))
        })
        .await;
        // A few more scan windows: each is still recorded once.
        let cfg = fast_config();
        tokio::time::sleep(std::time::Duration::from_millis(
            3 * (cfg.scan_window_ms + cfg.scan_pause_ms),
        ))
        .await;
        let events = env.store.events(1000).await.unwrap();
        let of = |kind: &str| -> Vec<_> { events.iter().filter(|e| e.kind == kind).collect() };

        let spoofs = of("ble_spoof_attempt");
        assert_eq!(spoofs.len(), 1, "{events:?}");
        assert_eq!(
            code_for(&spoofs[0].kind, &spoofs[0].severity),
            Some("spoof-attempt")
        );
        assert!(
            spoofs[0].detail.contains(&paired.to_string()),
            "{}",
            spoofs[0].detail
        );

        let unbonded = of("ble_unbonded_connection");
        assert_eq!(unbonded.len(), 1, "{events:?}");
        assert_eq!(
            code_for(&unbonded[0].kind, &unbonded[0].severity),
            Some("unbonded-connection")
        );
        assert!(unbonded[0].detail.contains(&lost.to_string()));
        // The never-paired device needs pairing; that is not a security event.
        let needed = of("ble_pairing_needed");
        assert!(needed.iter().any(|e| e.detail.contains(&never.to_string())));
        assert!(needed.iter().any(|e| e.detail.contains(&lost.to_string())));
        assert_eq!(code_for("ble_pairing_needed", "error"), None);

        // No address, no advertised name in any event detail.
        for e in &events {
            for needle in [
                PAIRED,
                SPOOF,
                LOST_BOND,
                NEVER_PAIRED,
                STRANGER,
                METER_NAME,
                "scale-9",
            ] {
                assert!(!e.detail.contains(needle), "{needle} in {e:?}");
            }
        }
        // The security reports count them under their codes.
        let reports = env.store.security_reports().await.unwrap();
        let count = |code: &str| -> u64 {
            reports
                .iter()
                .filter(|(r, _)| r.code == code)
                .map(|(r, _)| r.count)
                .sum()
        };
        assert_eq!(count("spoof-attempt"), 1);
        assert_eq!(count("unbonded-connection"), 1);
        env.stop().await;
    });
}
