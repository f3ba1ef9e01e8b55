//! `vitals-hub wipe`: the real binary. Refuses without confirmation off a terminal and while the
//! daemon runs; afterwards no byte of any file left under the state directory holds the patient
//! id, the KEK or a private key, and the store files are gone.
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
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use support::{hub_command, World, PATIENT};
use vitals_hub::model::{Decimal, Kind, Reading, SystemClock, Unit, UtcMillis, Value};
use vitals_hub::store::{DeviceRecord, NewReading, Store, StoreConfig};

fn wipe(config: &Path, yes: bool) -> std::process::Output {
    let mut c = hub_command();
    c.arg("wipe").arg("--config").arg(config);
    if yes {
        c.arg("--yes");
    }
    c.env_remove("CREDENTIALS_DIRECTORY")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn all_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            all_files(&e.path(), out);
        } else {
            out.push(e.path());
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wipe_leaves_no_marker_under_the_state_directory() {
    let world = World::new().await;
    let state = world.state_dir();
    // The hub's credentials live under the state directory here, so wipe erases them too.
    let creds = state.join("creds");
    std::fs::create_dir_all(&creds).unwrap();
    let (cert, key) = (creds.join("client-cert.pem"), creds.join("client-key.pem"));
    std::fs::copy(&world.pki.hub_cert, &cert).unwrap();
    std::fs::copy(&world.pki.hub_key, &key).unwrap();
    let base = world.config("base.toml", "");
    let text = std::fs::read_to_string(&base)
        .unwrap()
        .replace(
            &world.pki.hub_cert.display().to_string(),
            &cert.display().to_string(),
        )
        .replace(
            &world.pki.hub_key.display().to_string(),
            &key.display().to_string(),
        );
    let config = world.dir.path().join("hub.toml");
    std::fs::write(&config, text).unwrap();

    let mut sc = StoreConfig::new(&state);
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
    let items = (0..50)
        .map(|i| NewReading {
            reading: Reading::new(
                Kind::Glucose,
                Value::Number(Decimal::new(31_337 + i, 0)),
                Unit::MgPerDl,
            ),
            received_at: UtcMillis(1_750_000_000_000 + i),
            stable_key: format!("marker-{i}"),
            test_data: false,
            summary: None,
        })
        .collect();
    store.append(&dev, items, None).await.unwrap();
    store.close().await;
    let kek = std::fs::read(state.join("keys/kek")).unwrap();
    assert_eq!(kek.len(), 32);
    assert!(contains(&std::fs::read(&key).unwrap(), b"PRIVATE KEY"));

    // No --yes and no terminal: refused, nothing erased.
    let out = wipe(&config, false);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass --yes"));
    assert!(state.join("store.db").exists());

    // While the daemon runs: refused.
    let mut child = world.spawn(&config);
    let end = std::time::Instant::now() + Duration::from_secs(20);
    while !state.join("hub.lock").exists() {
        assert!(std::time::Instant::now() < end, "daemon did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let out = wipe(&config, true);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("daemon is running"), "{err}");
    assert!(state.join("store.db").exists());
    support::signal(&child, "TERM");
    let st = support::wait_exit(&mut child, 15).expect("daemon stops");
    assert!(st.success(), "{}", support::stderr_of(&mut child));

    let out = wipe(&config, true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("store.db"), "{said}");
    assert!(said.contains("client-key.pem"), "{said}");

    for name in ["store.db", "store.db-wal", "store.db-shm", "keys/kek"] {
        assert!(!state.join(name).exists(), "{name} left behind");
    }
    // The config (it names the patient) is erased too.
    assert!(!config.exists(), "the config file was left behind");
    assert!(said.contains("hub.toml"), "{said}");
    let mut files = Vec::new();
    all_files(&state, &mut files);
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        assert!(!contains(&bytes, PATIENT.as_bytes()), "patient id in {f:?}");
        assert!(!contains(&bytes, &kek), "KEK in {f:?}");
        assert!(!contains(&bytes, b"PRIVATE KEY"), "private key in {f:?}");
    }
}
