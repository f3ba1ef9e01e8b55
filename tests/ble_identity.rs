//! One identity per reading (issue 14): the store dedups on its own key, the clinic on the PHD IG
//! Observation identifier. A CGM whose session start is unknown sends several records in one
//! notification: the store keeps them apart (by time offset), but their identifiers were the
//! same (no device time, so the one reception time of the notification) and the clinic's
//! conditional create merged them. Every stored reading must map to its own identifier.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "fake_bluez/mod.rs"]
mod fake_bluez;

use fake_bluez::devices::{cgm_device, Stream};
use fake_bluez::harness::{fast_config, now_local, Env};
use std::collections::BTreeSet;
use std::time::Duration;
use vitals_hub::gatt::cgm::{CgmMeasurement, CgmRecord};
use vitals_hub::gatt::{GattValue, SFloat};
use vitals_hub::model::{Decimal, Kind};

const CGM: &str = "C0:26:DA:00:00:35";

#[test]
fn records_of_one_notification_without_a_start_get_one_identifier_each() {
    fake_bluez::harness::run(|broker| async move {
        // One notification, four records (offsets 60..=75), start unknown and read-only.
        let bytes = CgmMeasurement {
            records: (0..4u16)
                .map(|i| CgmRecord {
                    glucose_mg_dl: SFloat::from_decimal(Decimal::new(100 + i64::from(i), 0))
                        .unwrap(),
                    time_offset_min: 60 + i * 5,
                    status_octet: None,
                    cal_temp_octet: None,
                    warning_octet: None,
                    trend_mg_dl_min: None,
                    quality_pct: None,
                    e2e_crc: false,
                })
                .collect(),
        }
        .encode()
        .unwrap();
        let sensor = Stream {
            trigger: 0x2AA7,
            values: vec![(0x2AA7, bytes)],
            gap: Duration::ZERO,
            hang_up: true,
            sent: false,
        };
        let dev = cgm_device(CGM, Box::new(sensor), None, false, 75, now_local());
        let env = Env::start(&broker, vec![dev], &[(CGM, "cgm")], fast_config()).await;
        env.wait_for(30, "4 CGM readings", || async {
            env.readings()
                .await
                .iter()
                .filter(|r| r.reading.kind == Kind::CgmGlucose)
                .count()
                >= 4
        })
        .await;
        let d = env.store.device_by_address(CGM).await.unwrap().unwrap();
        let info = env
            .store
            .device_info(&d.key)
            .await
            .unwrap()
            .unwrap_or_default();
        let phd = vitals_hub::uplink::sync::phd_device_info(&d, info, 0);
        let stored: Vec<_> = env
            .readings()
            .await
            .into_iter()
            .filter(|r| r.reading.kind == Kind::CgmGlucose)
            .collect();
        assert_eq!(stored.len(), 4);
        let keys: BTreeSet<_> = stored.iter().map(|r| r.stable_key.clone()).collect();
        let ids: BTreeSet<_> = stored
            .iter()
            .map(|r| {
                vitals_hub::fhir::reading_identifier(&phd, "patient-1", &r.reading, r.received_at)
                    .unwrap()
                    .value()
            })
            .collect();
        assert_eq!(keys.len(), 4, "the store keeps the four apart");
        assert_eq!(
            ids.len(),
            4,
            "four stored readings, {} upstream identities: {ids:?}",
            ids.len()
        );
        env.stop().await;
    });
}
