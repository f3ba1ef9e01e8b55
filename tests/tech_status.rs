//! `vitals-hub status`: the real binary, read-only beside a writer that holds the store open, and
//! beside the real daemon uploading to the in-process receiver.
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
use std::time::Duration;
use support::{hub_command, World, FAST_DEVICES, PATIENT};
use vitals_hub::model::{Decimal, Kind, Reading, SystemClock, Unit, UtcMillis, Value};
use vitals_hub::store::{DeviceRecord, NewReading, Store, StoreConfig};

fn status_json(config: &Path) -> serde_json::Value {
    let out = hub_command()
        .args(["status", "--json", "--config"])
        .arg(config)
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn glucose(v: i64, key: &str) -> NewReading {
    NewReading {
        reading: Reading::new(
            Kind::Glucose,
            Value::Number(Decimal::new(v, 0)),
            Unit::MgPerDl,
        ),
        received_at: UtcMillis(1_750_000_000_000),
        stable_key: key.into(),
        test_data: true,
        summary: None,
    }
}

/// A writer holds the store open with entries in flight (as the daemon does mid-upload); `status`
/// reports them and leaves them in flight, and the writer keeps writing afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_read_only_beside_a_running_writer() {
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
    store
        .append(
            &dev,
            vec![glucose(101, "a"), glucose(102, "b"), glucose(103, "c")],
            None,
        )
        .await
        .unwrap();
    let due = store
        .pending(10, UtcMillis(i64::MAX / 2))
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .take(2)
        .collect::<Vec<_>>();
    assert_eq!(store.mark_in_flight(due).await.unwrap(), 2);
    store
        .append_event("test_failure", "warning", "HTTP 503".into())
        .await
        .unwrap();
    // A security event: counted into a report (code and times only).
    store
        .append_event(
            "ble_spoof_attempt",
            "security",
            "the meter advertised without its bond".into(),
        )
        .await
        .unwrap();

    let cfg2 = config.clone();
    let s = tokio::task::spawn_blocking(move || status_json(&cfg2))
        .await
        .unwrap();
    assert_eq!(s["backlog"]["depth"], 3);
    assert_eq!(s["backlog"]["in_flight"], 2);
    assert_eq!(s["backlog"]["pending"], 1);
    assert!(s["backlog"]["oldest_waiting_age_secs"].is_i64());
    assert!(s["last_sync"]["at"].is_null());
    assert_eq!(s["alerts"]["total"], 0);
    assert_eq!(s["devices"].as_array().unwrap().len(), 1);
    assert_eq!(s["devices"][0]["name"], "meter");
    assert_eq!(s["devices"][0]["profile"], "glucose");
    assert!(s["devices"][0].get("address").is_none(), "{s}");
    assert_eq!(s["last_errors"][0]["kind"], "ble_spoof_attempt");
    assert_eq!(s["last_errors"][1]["kind"], "test_failure");
    // The security reports: the KEK's creation and the spoof attempt, both windows still open.
    assert_eq!(s["security"]["waiting"], 2, "{s}");
    assert_eq!(s["security"]["collecting"], 2, "{s}");
    assert_eq!(s["security"]["newest"]["code"], "spoof-attempt", "{s}");
    let spoof_at = s["security"]["newest"]["at"].as_i64().unwrap();
    // Issue 13: the patient, the clinic and the certificate, read back.
    assert_eq!(s["identity"]["patient_id"], PATIENT);
    assert!(s["identity"]["clinic_url"]
        .as_str()
        .unwrap()
        .starts_with("https://localhost:"));
    assert!(s["identity"]["certificate"]["subject"]
        .as_str()
        .unwrap()
        .contains("CN=e2e-hub"));
    assert!(s["identity"]["certificate"]["days_left"].as_i64().unwrap() > 0);

    // The writer's state is untouched: still two in flight, and it can still write.
    let st = store.stats().await.unwrap();
    assert_eq!((st.pending, st.in_flight), (1, 2));
    store
        .append(&dev, vec![glucose(104, "d")], None)
        .await
        .unwrap();
    assert_eq!(store.stats().await.unwrap().pending, 2);
    store.close().await;

    // Text output for humans.
    let out = hub_command()
        .args(["status", "--config"])
        .arg(&config)
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("backlog:      4 waiting"), "{text}");
    assert!(
        text.starts_with(&format!(
            "patient:      {PATIENT}\nclinic:       https://localhost:"
        )),
        "{text}"
    );
    assert!(text.contains("certificate:  CN=e2e-hub"), "{text}");
    assert!(
        text.contains(&format!(
            "security:     2 waiting to go upstream (2 still collecting); newest spoof-attempt at {}\n",
            UtcMillis(spoof_at).to_rfc3339()
        )),
        "{text}"
    );
    assert!(text.contains("meter"), "{text}");
    assert!(!text.contains("C0:26:DA"), "no address into a pipe: {text}");
}

/// No store yet: a clear error, nothing created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_without_a_store_says_so_and_creates_nothing() {
    let world = World::new().await;
    let config = world.config("hub.toml", "");
    let out = hub_command()
        .args(["status", "--config"])
        .arg(&config)
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("there is no store"), "{err}");
    assert!(!world.state_dir().exists());
}

/// Beside the real daemon uploading to the receiver: devices, a last successful sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_beside_the_running_daemon() {
    let world = World::new().await;
    let config = world.config("hub.toml", FAST_DEVICES);
    let mut child = world.spawn(&config);
    let end = std::time::Instant::now() + Duration::from_secs(30);
    let s = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if world.state_dir().join("store.db").exists() {
            let cfg2 = config.clone();
            let s = tokio::task::spawn_blocking(move || status_json(&cfg2))
                .await
                .unwrap();
            if s["last_sync"]["at"].is_i64() && s["devices"].as_array().unwrap().len() == 4 {
                break s;
            }
        }
        assert!(std::time::Instant::now() < end, "no sync seen");
    };
    assert!(s["last_sync"]["age_secs"].as_i64().unwrap() < 60);
    support::signal(&child, "TERM");
    let st = support::wait_exit(&mut child, 15).expect("daemon stops");
    assert!(st.success(), "{}", support::stderr_of(&mut child));
}
