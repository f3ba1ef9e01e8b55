//! Helpers shared by the `store_*` integration tests.

#![allow(dead_code)]

use std::sync::Arc;
use vitals_hub::model::{Decimal, Kind, ManualClock, Reading, Unit, UtcMillis, Value};
use vitals_hub::store::{DeviceKey, DeviceRecord, KekSource, NewReading, Store, StoreConfig};

pub const T0: i64 = 1_750_000_000_000;

pub fn config(dir: &std::path::Path) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    // Never pick up a systemd credential from the test environment.
    c.kek = KekSource::resolve(dir, None);
    c
}

pub fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(UtcMillis(T0)))
}

pub fn reading(mantissa: i64, key: &str) -> NewReading {
    NewReading {
        reading: Reading::new(
            Kind::Glucose,
            Value::Number(Decimal::new(mantissa, 0)),
            Unit::MgPerDl,
        ),
        received_at: UtcMillis(T0),
        stable_key: key.to_owned(),
        test_data: false,
        summary: None,
    }
}

pub fn device_record(address: &str) -> DeviceRecord {
    DeviceRecord {
        address: address.to_owned(),
        name: Some("Meter".into()),
        profile: "glucose".into(),
        patient_binding: None,
        serial: Some("SN-0001".into()),
        bond: None,
    }
}

pub async fn device(store: &Store) -> DeviceKey {
    store
        .upsert_device(device_record("C0:26:DA:00:00:01"), true)
        .await
        .unwrap()
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Every regular file under `dir` (recursively) with its permission bits.
pub fn file_modes(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                stack.push(p);
            } else {
                out.push((p, meta.permissions().mode() & 0o7777));
            }
        }
    }
    out.sort();
    out
}
