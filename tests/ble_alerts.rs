//! From the radio to an alert: a glucose meter's stored records downloaded through real btleplug
//! against the fake BlueZ go through the hub's ingest, and the critical one raises an alert that
//! waits in the outbox ahead of the readings.
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
use fake_bluez::FakeBluez;
use vitals_hub::alerts::AlertRules;
use vitals_hub::ble::CURSOR_GLUCOSE;
use vitals_hub::gatt::glucose::Concentration;
use vitals_hub::gatt::{GattValue, SFloat};
use vitals_hub::model::{Decimal, UtcMillis};
use vitals_hub::store::OutboxPayload;

const METER: &str = "C0:26:DA:00:00:07";

#[test]
fn a_critical_record_from_the_meter_raises_an_alert() {
    fake_bluez::harness::run(|broker| async move {
        let start = now_local().add_minutes(-600).unwrap();
        let mut meter = GlucoseMeter::new(start, 5);
        let mut low = glucose_record(start, 3);
        low.concentration = low.concentration.map(|c| Concentration {
            value: SFloat::from_decimal(Decimal::new(40, -5)).unwrap(),
            ..c
        });
        meter.records[2] = low.encode().unwrap();
        let fake = FakeBluez::start(
            &broker.address,
            vec![glucose_meter(METER, meter, now_local())],
        )
        .await;
        let env = Env::with_fake_and_rules(
            fake,
            &[(METER, "glucose")],
            fast_config(),
            Some(AlertRules::starting_points()),
        )
        .await;
        let key = env
            .store
            .device_by_address(METER)
            .await
            .unwrap()
            .unwrap()
            .key;
        env.wait_for(30, "5 glucose records", || async {
            env.store.cursor(&key, CURSOR_GLUCOSE).await.unwrap() == Some(5)
        })
        .await;

        let pending = env
            .store
            .pending(10, UtcMillis(i64::MAX / 2))
            .await
            .unwrap();
        let OutboxPayload::Alert(alert) = &pending[0].payload else {
            panic!(
                "the alert waits ahead of the readings: {:?}",
                pending[0].payload
            );
        };
        assert_eq!(alert.payload["alert"]["severity"], "critical_low");
        assert_eq!(alert.payload["alert"]["transition"], "raised");
        assert_eq!(alert.payload["observations"].as_array().unwrap().len(), 1);
        // One raised, not one per reading. The battery level is stored after the download (only
        // once the meter has shown it is bonded), and evaluating it may already resolve the
        // episode, records 4 and 5 being back in range: a `resolved` may follow.
        let transitions: Vec<_> = pending
            .iter()
            .filter_map(|p| match &p.payload {
                // (Not the store's own security reports, which share the alerts' entry type.)
                OutboxPayload::Alert(a) if a.payload.get("security_report").is_none() => {
                    Some(a.payload["alert"]["transition"].clone())
                }
                _ => None,
            })
            .collect();
        let raised = transitions.iter().filter(|t| *t == "raised").count();
        assert_eq!(raised, 1, "one alert, not one per reading: {transitions:?}");
        assert!(
            transitions
                .iter()
                .all(|t| *t == "raised" || *t == "resolved"),
            "{transitions:?}"
        );
        // What the session learned of the device is stored for the FHIR PhdDevice and the
        // heartbeat: Device Information, battery, last seen, and the coincident clock pair.
        let info = env
            .store
            .device_info(&key)
            .await
            .unwrap()
            .expect("device information stored");
        assert_eq!(info.manufacturer.as_deref(), Some("Fake Medical"));
        assert_eq!(info.model.as_deref(), Some("FM-1"));
        assert_eq!(info.battery_percent, Some(77));
        assert!(info.last_seen.is_some());
        assert!(info.clock.is_some(), "the clock check is kept as evidence");
        // The store's audit log has the BLE session's events (no values in them).
        env.wait_for(10, "the clock-offset event in the store", || async {
            env.store
                .events(200)
                .await
                .unwrap()
                .iter()
                .any(|e| e.kind == "ble_clock_offset")
        })
        .await;
        env.stop().await;
    });
}
