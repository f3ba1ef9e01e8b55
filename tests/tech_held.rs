//! Held readings (issue 14): readings of another user on a multi-user device were held, but
//! nobody could act on them. Listed, assigned to the patient (through the alert rules like any
//! other reading) or discarded.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;
use vitals_hub::alerts::AlertRules;
use vitals_hub::daemon::{Ingest, IngestConfig};
use vitals_hub::model::{
    Clock, Decimal, Kind, LocalDateTime, Reading, SystemClock, Unit, UtcMillis, Value, Zone,
};
use vitals_hub::store::{DeviceRecord, KekSource, NewHeld, Store, StoreConfig};
use vitals_hub::tech::held;

fn held_glucose(mg: i64, key: &str) -> NewHeld {
    let mut r = Reading::new(
        Kind::Glucose,
        Value::Number(Decimal::new(mg, 0)),
        Unit::MgPerDl,
    );
    r.device_time = Some(LocalDateTime::new(2026, 3, 15, 7, 30, 0).unwrap());
    r.user_id = Some(2);
    NewHeld {
        user_id: 2,
        reading: r,
        received_at: UtcMillis(1_773_560_000_000),
        stable_key: key.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_readings_are_listed_assigned_through_the_rules_and_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let mut sc = StoreConfig::new(dir.path());
    sc.kek = KekSource::resolve(dir.path(), None);
    sc.patient_id = Some("patient-1".into());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = Store::open(sc, clock).await.unwrap();
    let key = store
        .upsert_device(
            DeviceRecord {
                address: "C0:26:DA:00:00:61".into(),
                name: None,
                profile: "glucose".into(),
                patient_binding: Some("patient-1".into()),
                serial: None,
                bond: None,
            },
            true,
        )
        .await
        .unwrap();
    store
        .hold(&key, held_glucose(40, "held-low"))
        .await
        .unwrap();
    store
        .hold(&key, held_glucose(120, "held-normal"))
        .await
        .unwrap();

    let list = held::list(&store).await.unwrap();
    assert_eq!(list.len(), 2);
    assert!(held::render(&list).contains("glucose"));
    let low = list.iter().find(|h| h.stable_key == "held-low").unwrap().id;
    let normal = list
        .iter()
        .find(|h| h.stable_key == "held-normal")
        .unwrap()
        .id;

    let ingest = Ingest::open(
        store.clone(),
        IngestConfig {
            rules: AlertRules::starting_points(),
            patient_id: "patient-1".into(),
            utc_offset_minutes: 0,
            zone: Zone::utc(),
        },
    )
    .await
    .unwrap();
    let done = held::assign(&ingest, low).await.unwrap();
    assert!(
        !done.alerts.is_empty(),
        "40 mg/dL raises an alert once assigned"
    );
    let readings = store.readings(0, 100).await.unwrap();
    assert!(readings
        .iter()
        .any(|r| r.id == done.reading_id && r.reading.kind == Kind::Glucose));

    held::discard(&store, normal).await.unwrap();
    assert!(held::list(&store).await.unwrap().is_empty());
    let e = held::discard(&store, normal).await.unwrap_err().to_string();
    assert!(e.contains("held list"), "{e}");
    assert!(held::assign(&ingest, 9_999).await.is_err());
}
