//! `vitals-hub export`: the real binary, over readings stored through the store API; CSV and FHIR
//! values exact, the range filter by measurement time (falling back to receive time), bad dates.
#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "daemon_support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use support::{hub_command, World, PATIENT};
use vitals_hub::model::{
    Decimal, Kind, LocalDateTime, Reading, SystemClock, Unit, UtcMillis, Value,
};
use vitals_hub::store::{DeviceRecord, NewReading, Store, StoreConfig};

fn at(text: &str) -> UtcMillis {
    UtcMillis::parse_rfc3339(text).unwrap()
}

fn reading(
    v: Decimal,
    device_time: Option<LocalDateTime>,
    received: &str,
    key: &str,
) -> NewReading {
    let mut r = Reading::new(Kind::Glucose, Value::Number(v), Unit::MgPerDl);
    r.device_time = device_time;
    NewReading {
        reading: r,
        received_at: at(received),
        stable_key: key.into(),
        test_data: key == "c",
        summary: None,
    }
}

/// Three glucose readings: 104 measured 2026-03-01 08:00, 262 measured 2026-03-02 23:30 (both
/// received days later), and 5.9 with no device time, received 2026-03-03 12:00.
async fn stored_world() -> (World, PathBuf) {
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
            vec![
                reading(
                    Decimal::new(104, 0),
                    Some(LocalDateTime::new(2026, 3, 1, 8, 0, 0).unwrap()),
                    "2026-03-05T10:00:00Z",
                    "a",
                ),
                reading(
                    Decimal::new(262, 0),
                    Some(LocalDateTime::new(2026, 3, 2, 23, 30, 0).unwrap()),
                    "2026-03-05T10:00:01Z",
                    "b",
                ),
                reading(Decimal::new(59, -1), None, "2026-03-03T12:00:00Z", "c"),
            ],
            None,
        )
        .await
        .unwrap();
    store.close().await;
    (world, config)
}

fn export(config: &Path, args: &[&str]) -> std::process::Output {
    hub_command()
        .arg("export")
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_export_has_exact_values_in_the_range() {
    let (_world, config) = stored_world().await;
    let out = export(
        &config,
        &[
            "--from",
            "2026-03-01",
            "--to",
            "2026-03-02",
            "--format",
            "csv",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        vec![
            "time,kind,value,unit,device,flags,test_data",
            "2026-03-01T08:00:00Z,glucose,104,mg/dL,meter,,false",
            "2026-03-02T23:30:00Z,glucose,262,mg/dL,meter,,false",
        ],
        "{text}"
    );
    // Receive time is the fallback; RFC 3339 bounds; `--to` is exclusive.
    let out = export(
        &config,
        &[
            "--from",
            "2026-03-03T11:59:59Z",
            "--to",
            "2026-03-03T12:00:01Z",
            "--format",
            "csv",
        ],
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text.lines().nth(1),
        Some("2026-03-03T12:00:00Z,glucose,5.9,mg/dL,meter,,true"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhir_export_is_a_collection_of_the_uplink_resources() {
    let (world, config) = stored_world().await;
    let file = world.dir.path().join("export.json");
    let out = export(
        &config,
        &[
            "--from",
            "2026-01-01",
            "--to",
            "2026-12-31",
            "--format",
            "fhir",
            "--out",
            file.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("3 readings written"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let b: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(b["resourceType"], "Bundle");
    assert_eq!(b["type"], "collection");
    let entries = b["entry"].as_array().unwrap();
    assert!(entries.iter().all(|e| e.get("request").is_none()));
    let mut values: Vec<String> = entries
        .iter()
        .filter(|e| e["resource"]["resourceType"] == "Observation")
        .filter_map(|e| e["resource"].get("valueQuantity"))
        .map(|q| format!("{} {}", q["value"], q["code"].as_str().unwrap_or("")))
        .collect();
    values.sort();
    assert_eq!(values, vec!["104 mg/dL", "262 mg/dL", "5.9 mg/dL"], "{b:#}");
    let text = serde_json::to_string(&b).unwrap();
    assert!(text.contains(&format!("Patient/{PATIENT}")));
    // Every urn reference resolves inside the collection.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_date_exits_2_with_the_format() {
    let (_world, config) = stored_world().await;
    let out = export(
        &config,
        &[
            "--from",
            "01/03/2026",
            "--to",
            "2026-03-02",
            "--format",
            "csv",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`01/03/2026` is not a date: use YYYY-MM-DD or RFC 3339"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

/// `--out` onto a file that already exists (here 0644, as an editor or `touch` leaves it): the
/// export is written to a new 0600 file and renamed into place, so the decrypted readings never
/// take over the old file's wider mode. A failed export leaves the old file as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_onto_an_existing_0644_file_is_0600_after() {
    use std::os::unix::fs::PermissionsExt;
    let (world, config) = stored_world().await;
    let file = world.dir.path().join("existing.csv");
    std::fs::write(&file, "old contents\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let args = |from: &'static str| {
        [
            "--from",
            from,
            "--to",
            "2026-12-31",
            "--format",
            "csv",
            "--out",
        ]
    };
    // An export that fails (empty range) leaves the existing file untouched.
    let out = export(
        &config,
        &[&args("2027-01-01")[..], &[file.to_str().unwrap()]].concat(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "old contents\n");

    let out = export(
        &config,
        &[&args("2026-01-01")[..], &[file.to_str().unwrap()]].concat(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600,
        "the export took over the existing file's mode"
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("time,kind,value"), "{text}");
    // No temporary file is left beside it.
    let left: Vec<_> = std::fs::read_dir(world.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("existing.csv") && n != "existing.csv")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Issue 13: `--out` into a directory that does not exist names the directory and the fix (it
/// said only "No such file or directory").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_into_a_missing_directory_names_it() {
    let (w, config) = stored_world().await;
    let dir = w.dir.path().join("usb");
    let target = dir.join("export.csv");
    let out = export(
        &config,
        &[
            "--from",
            "2024-03-01",
            "--to",
            "2024-03-02",
            "--format",
            "csv",
            "--out",
            target.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "vitals-hub export: --out {}: the directory {} does not exist; fix: create it \
             (`mkdir -p {}`) or give --out a file in an existing directory\n",
            target.display(),
            dir.display(),
            dir.display()
        )
    );
    assert!(!dir.exists());
}
