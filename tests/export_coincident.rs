//! `vitals-hub export --format fhir` over more readings than one bundle holds, from a device whose
//! clock was checked: its coincident-time Observation is listed once (issue 15), and every
//! reference resolves.
#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "daemon_support/mod.rs"]
mod support;

use std::sync::Arc;
use support::{hub_command, World, PATIENT};
use vitals_hub::model::{
    Decimal, Kind, LocalDateTime, Reading, SystemClock, Unit, UtcMillis, Value,
};
use vitals_hub::store::{ClockSample, DeviceInfo, DeviceRecord, NewReading, Store, StoreConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_coincident_time_observation_is_listed_once() {
    let world = World::new().await;
    let config = world.config("hub.toml", "");
    let mut sc = StoreConfig::new(world.state_dir());
    sc.patient_id = Some(PATIENT.into());
    let store = Store::open(sc, Arc::new(SystemClock)).await.unwrap();
    let dev = store
        .upsert_device(
            DeviceRecord {
                address: "C0:26:DA:00:00:01".into(),
                name: Some("meter".into()),
                profile: "glucose".into(),
                ..DeviceRecord::default()
            },
            true,
        )
        .await
        .unwrap();
    let t0 = LocalDateTime::new(2026, 3, 1, 8, 0, 0).unwrap();
    store
        .set_device_info(
            &dev,
            DeviceInfo {
                clock: Some(ClockSample {
                    device: t0,
                    hub: UtcMillis::parse_rfc3339("2026-03-01T08:00:00Z").unwrap(),
                    set_by_hub_offset_minutes: None,
                }),
                ..DeviceInfo::default()
            },
        )
        .await
        .unwrap();
    let readings: Vec<NewReading> = (0..120)
        .map(|i| {
            let mut r = Reading::new(
                Kind::Glucose,
                Value::Number(Decimal::new(100 + i, 0)),
                Unit::MgPerDl,
            );
            r.device_time = Some(t0.add_minutes(i).unwrap());
            NewReading {
                reading: r,
                received_at: UtcMillis::parse_rfc3339("2026-03-05T10:00:00Z").unwrap(),
                stable_key: format!("k{i}"),
                test_data: false,
                summary: None,
            }
        })
        .collect();
    store.append(&dev, readings, None).await.unwrap();
    store.close().await;
    let file = world.dir.path().join("export.json");
    let out = hub_command()
        .arg("export")
        .arg("--config")
        .arg(&config)
        .args([
            "--from",
            "2026-01-01",
            "--to",
            "2026-12-31",
            "--format",
            "fhir",
            "--out",
        ])
        .arg(&file)
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let entries = b["entry"].as_array().unwrap();
    let mut seen = std::collections::HashMap::new();
    for e in entries {
        if let Some(id) = e["resource"]["identifier"][0]["value"].as_str() {
            *seen.entry(id.to_owned()).or_insert(0) += 1;
        }
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "listed more than once: {twice:?}");
    let cts = entries
        .iter()
        .filter(|e| {
            e["resource"]["meta"]["profile"][0]
                .as_str()
                .is_some_and(|p| p.ends_with("PhdCoincidentTimeStampObservation"))
        })
        .count();
    assert_eq!(cts, 1, "one coincident-time Observation");
    let text = serde_json::to_string(&b).unwrap();
    let urls: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["fullUrl"].as_str())
        .collect();
    for r in text.split("\"reference\":\"").skip(1) {
        let r = r.split('"').next().unwrap();
        if r.starts_with("urn:") {
            assert!(urls.contains(&r), "dangling reference {r}");
        }
    }
}
