//! `vitals-hub sync --resend --since DATE` and `sync --rejected` (issue 15): the real binary queues
//! again what the clinic acknowledged since DATE, or rejected, says how many, and uploads them.
#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "daemon_support/mod.rs"]
mod support;

use std::path::Path;
use std::sync::Arc;
use support::{hub_command, World, PATIENT};
use vitals_hub::model::{Clock, Decimal, Kind, Reading, SystemClock, Unit, UtcMillis, Value};
use vitals_hub::store::{DeviceRecord, NewReading, Store, StoreConfig};

fn sync(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = hub_command()
        .arg("sync")
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn open(w: &World) -> Store {
    let mut sc = StoreConfig::new(w.state_dir());
    sc.patient_id = Some(PATIENT.into());
    Store::open(sc, Arc::new(SystemClock)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_and_rejected_entries_are_queued_again_with_counts() {
    let w = World::new().await;
    let config = w.config("hub.toml", "");
    let store = open(&w).await;
    let dev = store
        .upsert_device(
            DeviceRecord {
                address: "C0:26:DA:00:00:01".into(),
                name: Some("meter".into()),
                profile: "glucose".into(),
                patient_binding: Some(PATIENT.into()),
                ..DeviceRecord::default()
            },
            true,
        )
        .await
        .unwrap();
    let readings: Vec<NewReading> = (0..6)
        .map(|i| NewReading {
            reading: Reading::new(
                Kind::Glucose,
                Value::Number(Decimal::new(100 + i, 0)),
                Unit::MgPerDl,
            ),
            received_at: UtcMillis(1_750_000_000_000 + i * 60_000),
            stable_key: format!("k{i}"),
            test_data: true,
            summary: None,
        })
        .collect();
    store.append(&dev, readings, None).await.unwrap();
    store.close().await;

    let since = SystemClock.now().to_rfc3339();
    let (code, out, err) = sync(&config, &["--now"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("uploaded 6"), "{out}");

    // The clinic lost them: send again what it acknowledged since `since`.
    let (code, out, err) = sync(&config, &["--resend", "--since", &since]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("queued again 6 acknowledged entries"), "{out}");
    assert!(out.contains("still waiting 0"), "{out}");
    // Nothing is stored twice at the clinic (conditional create).
    assert!(
        w.at_receiver().values().all(|n| *n == 1),
        "{:?}",
        w.at_receiver()
    );

    // Entries a misled hub rejected go again.
    let store = open(&w).await;
    store
        .requeue_acked_since(UtcMillis(0), SystemClock.now())
        .await
        .unwrap();
    let ids: Vec<i64> = store
        .pending(50, SystemClock.now())
        .await
        .unwrap()
        .iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(store.reject(ids, "HTTP 400").await.unwrap(), 6);
    store.close().await;
    let (code, out, err) = sync(&config, &["--rejected"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("queued again 6 rejected entries"), "{out}");
    assert!(out.contains("still waiting 0"), "{out}");

    // A date that is not one: exit 2, naming the format.
    let (code, _, err) = sync(&config, &["--resend", "--since", "last week"]);
    assert_eq!(code, 2);
    assert!(err.contains("YYYY-MM-DD"), "{err}");
}
