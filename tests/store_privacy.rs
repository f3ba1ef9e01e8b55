//! PHI never reaches the disk in plain: a raw scan of the database, its WAL and every other file in
//! the state directory finds no marker; a ciphertext copied into another row fails to open, is
//! reported with the row named and recorded as a security event; an outbox entry that cannot be
//! opened or decoded is quarantined and the rest flow; every file the store writes is 0600.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod store_support;

use std::sync::Arc;
use store_support::*;
use vitals_hub::model::{Clock, LocalDateTime};
use vitals_hub::store::{DeviceRecord, OutboxPayload, Store, StoreError};

const VALUE_MARKER: i64 = 73_914_528_611;
const PATIENT_MARKER: &str = "PATIENT-7Q4XZ-MARKER";
const SERIAL_MARKER: &str = "SERIAL-99KJ-MARKER";
const ADDRESS_MARKER: &str = "F3:A1:B2:C4:D5:E6";
const KEY_MARKER: &str = "STABLEKEY-M4RK3R";
const ERROR_MARKER: &str = "OperationOutcome-echo-73914528611";

fn scan(dir: &std::path::Path, markers: &[&[u8]]) -> usize {
    let mut files = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let bytes = std::fs::read(&p).unwrap();
            files += 1;
            for m in markers {
                assert!(
                    !bytes.windows(m.len()).any(|w| w == *m),
                    "marker {:?} found in {}",
                    String::from_utf8_lossy(m),
                    p.display()
                );
            }
        }
    }
    files
}

#[test]
fn raw_bytes_hold_no_marker() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    rt.block_on(async {
        let mut cfg = config(dir.path());
        cfg.patient_id = Some(PATIENT_MARKER.into());
        let clock: Arc<dyn Clock> = clock();
        let store = Store::open(cfg.clone(), clock.clone()).await.unwrap();
        let dev = store
            .upsert_device(
                DeviceRecord {
                    address: ADDRESS_MARKER.into(),
                    serial: Some(SERIAL_MARKER.into()),
                    patient_binding: Some(PATIENT_MARKER.into()),
                    ..device_record("x")
                },
                true,
            )
            .await
            .unwrap();
        let mut items = Vec::new();
        for i in 0..200 {
            let mut r = reading(VALUE_MARKER, &format!("{KEY_MARKER}-{i}"));
            r.reading.device_time = Some(LocalDateTime::new(2031, 7, 19, 23, 58, 41).unwrap());
            items.push(r);
        }
        store
            .append(&dev, items, Some(("racp".into(), 7)))
            .await
            .unwrap();
        let pending = store.pending(10, clock.now()).await.unwrap();
        let ids: Vec<i64> = pending.iter().map(|p| p.id).collect();
        store.reject(ids[..2].to_vec(), ERROR_MARKER).await.unwrap();
        store
            .retry(ids[2..].to_vec(), ERROR_MARKER, clock.now())
            .await
            .unwrap();
        // Round trip works, so the markers really were written (sealed).
        let back = store.readings(0, 1).await.unwrap();
        assert_eq!(back[0].patient_id.as_deref(), Some(PATIENT_MARKER));
        assert_eq!(
            back[0].reading.value.number().unwrap().mantissa,
            VALUE_MARKER
        );
        let found = store
            .device_by_address(ADDRESS_MARKER)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.record.serial.as_deref(), Some(SERIAL_MARKER));

        let markers: Vec<Vec<u8>> = [
            VALUE_MARKER.to_string(),
            PATIENT_MARKER.into(),
            SERIAL_MARKER.into(),
            ADDRESS_MARKER.into(),
            KEY_MARKER.into(),
            ERROR_MARKER.into(),
            "2031-07-19".into(),
        ]
        .into_iter()
        .map(String::into_bytes)
        .collect();
        let markers: Vec<&[u8]> = markers.iter().map(Vec::as_slice).collect();
        // While open: the WAL holds the recent pages.
        assert!(
            std::fs::metadata(dir.path().join("store.db-wal"))
                .unwrap()
                .len()
                > 0
        );
        let n = scan(dir.path(), &markers);
        assert!(n >= 3, "scanned {n} files");
        // Rotation leaves old ciphertexts in free pages; still nothing plain.
        store.rotate_data_key(50).await.unwrap();
        scan(dir.path(), &markers);
        store.close().await;
        scan(dir.path(), &markers);
    });
}

fn swap_column(db: &std::path::Path, table: &str, column: &str) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let rows: Vec<(i64, Vec<u8>)> = conn
        .prepare(&format!(
            "SELECT id, {column} FROM {table} ORDER BY id LIMIT 2"
        ))
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let (a, b) = (&rows[0], &rows[1]);
    for (id, v) in [(a.0, &b.1), (b.0, &a.1)] {
        conn.execute(
            &format!("UPDATE {table} SET {column} = ?1 WHERE id = ?2"),
            rusqlite::params![v, id],
        )
        .unwrap();
    }
}

#[test]
fn swapped_rows_fail_loudly_and_are_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    rt.block_on(async {
        let clock: Arc<dyn Clock> = clock();
        let store = Store::open(config(dir.path()), clock.clone())
            .await
            .unwrap();
        let dev = device(&store).await;
        store
            .append(
                &dev,
                vec![reading(1, "a"), reading(2, "b"), reading(3, "c")],
                None,
            )
            .await
            .unwrap();
        let first_uuid = store.readings(0, 1).await.unwrap()[0].uuid.clone();
        store.close().await;

        swap_column(&dir.path().join("store.db"), "readings", "sealed");

        let store = Store::open(config(dir.path()), clock.clone())
            .await
            .unwrap();
        // Both swapped rows are quarantined (kept, never uploaded), each with a security event
        // naming its row; the untouched third row is still delivered, in the same poll.
        let rest = store.pending(10, clock.now()).await.unwrap();
        assert_eq!(rest.len(), 1);
        let OutboxPayload::Reading(r) = &rest[0].payload else {
            panic!()
        };
        assert_eq!(r.stable_key, "c");
        let events = store.events(20).await.unwrap();
        assert!(
            events.iter().any(|e| e.kind == "integrity_failure"
                && e.severity == "security"
                && e.detail.contains(&first_uuid)),
            "{events:?}"
        );
        assert_eq!(
            events
                .iter()
                .filter(|e| e.kind == "integrity_failure")
                .count(),
            2,
            "{events:?}"
        );
        assert!(
            events.iter().any(|e| e.kind == "outbox_quarantined"
                && e.detail.contains(&first_uuid)
                && e.detail.contains("failed authentication")),
            "{events:?}"
        );
        // Reading the rows back directly (export) still fails loudly, naming the row.
        let err = store.readings(0, 10).await.unwrap_err();
        match &err {
            StoreError::Integrity { table, column, row } => {
                assert_eq!(*table, "readings");
                assert_eq!(*column, "sealed");
                assert_eq!(row, &first_uuid);
            }
            other => panic!("expected an integrity error, got {other:?}"),
        }
        assert!(err.to_string().contains(&first_uuid));
        assert_eq!(store.pending(10, clock.now()).await.unwrap().len(), 1);
        let s = store.stats().await.unwrap();
        assert_eq!(s.quarantined, 2);
        store.close().await;
    });
}

/// Regression (issue 12): `store.db` and its WAL/SHM were created 0644 (SQLite's default, less the
/// umask), protected only by their 0700 directory. Every file the store writes is 0600, and a
/// store created by an older build is narrowed at open.
#[test]
fn every_file_the_store_writes_is_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let check = |when: &str| {
        let files = file_modes(&state);
        let names: Vec<String> = files
            .iter()
            .map(|(p, m)| format!("{} {m:04o}", p.display()))
            .collect();
        for want in ["store.db", "store.db-wal", "store.db-shm", "kek"] {
            assert!(
                files.iter().any(|(p, _)| p.file_name().unwrap() == want),
                "{when}: {want} missing from {names:?}"
            );
        }
        for (p, mode) in &files {
            assert_eq!(
                mode & 0o077,
                0,
                "{when}: {} has mode {mode:04o}; all: {names:?}",
                p.display()
            );
        }
    };
    rt().block_on(async {
        let clock: Arc<dyn Clock> = clock();
        let store = Store::open(config(&state), clock.clone()).await.unwrap();
        let dev = device(&store).await;
        store
            .append(&dev, vec![reading(1, "a"), reading(2, "b")], None)
            .await
            .unwrap();
        store.rotate_kek().await.unwrap();
        store.rotate_data_key(10).await.unwrap();
        store
            .append(&dev, vec![reading(3, "c")], None)
            .await
            .unwrap();
        check("after writes");
        store.close().await;

        // A store written by an older build: its database was 0644.
        std::fs::set_permissions(
            state.join("store.db"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let store = Store::open(config(&state), clock.clone()).await.unwrap();
        store
            .append(&dev, vec![reading(4, "d")], None)
            .await
            .unwrap();
        check("after reopening a 0644 store");
        store.close().await;

        // A corrupt database is moved aside and a fresh one started: both owner-only.
        std::fs::write(state.join("store.db"), vec![0x5au8; 8192]).unwrap();
        std::fs::set_permissions(
            state.join("store.db"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let store = Store::open(config(&state), clock.clone()).await.unwrap();
        store
            .upsert_device(device_record("C0:26:DA:00:00:02"), true)
            .await
            .unwrap();
        assert!(file_modes(&state)
            .iter()
            .any(|(p, _)| p.to_string_lossy().contains(".corrupt-")));
        check("after moving a corrupt database aside");
        store.close().await;
    });
}

/// Seal `plain` as `readings.sealed` of the row `uuid` with the store's active data key, the way
/// the store would: the row opens but does not decode.
fn plant_sealed_reading(dir: &std::path::Path, uuid: &str, plain: &[u8]) {
    use vitals_hub::store::crypto::{DataKey, Kek, Place};
    use vitals_hub::store::keyfile;
    let kek = Kek::new(&keyfile::read_checked(&dir.join("keys/kek")).unwrap()).unwrap();
    let conn = rusqlite::Connection::open(dir.join("store.db")).unwrap();
    let (id, wrapped): (i64, Vec<u8>) = conn
        .query_row(
            "SELECT id, wrapped FROM keys WHERE purpose = 'data' AND state = 'active'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let key = DataKey::new(id, &kek.unwrap_key("data", id, &wrapped).unwrap()).unwrap();
    let place = Place {
        table: "readings",
        column: "sealed",
        row: uuid,
    };
    let sealed = key
        .seal(
            vitals_hub::store::crypto::PublicRandom::default()
                .nonce()
                .unwrap(),
            &place,
            plain,
        )
        .unwrap();
    let n = conn
        .execute(
            "UPDATE readings SET key_id = ?1, sealed = ?2 WHERE uuid = ?3",
            rusqlite::params![id, sealed, uuid],
        )
        .unwrap();
    assert_eq!(n, 1);
}

/// Regression (issue 12): an outbox entry whose record opens but does not decode came back as a
/// `Decode` error on every poll and jammed the uplink for good. It is quarantined with an event
/// and the entries after it flow.
#[test]
fn undecodable_outbox_entry_is_quarantined_and_the_rest_flow() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let clock: Arc<dyn Clock> = clock();
        let store = Store::open(config(dir.path()), clock.clone())
            .await
            .unwrap();
        let dev = device(&store).await;
        store
            .append(
                &dev,
                vec![reading(1, "a"), reading(2, "b"), reading(3, "c")],
                None,
            )
            .await
            .unwrap();
        let first = store.readings(0, 1).await.unwrap()[0].clone();
        store.close().await;

        plant_sealed_reading(dir.path(), &first.uuid, b"{\"not\": \"a reading\"}");

        let store = Store::open(config(dir.path()), clock.clone())
            .await
            .unwrap();
        for poll in 0..2 {
            let items = store.pending(10, clock.now()).await.unwrap();
            let keys: Vec<&str> = items
                .iter()
                .map(|i| match &i.payload {
                    OutboxPayload::Reading(r) => r.stable_key.as_str(),
                    OutboxPayload::Alert(_) => panic!("no alerts here"),
                })
                .collect();
            assert_eq!(keys, ["b", "c"], "poll {poll}");
        }
        let s = store.stats().await.unwrap();
        assert_eq!(s.quarantined, 1, "{s:?}");
        assert_eq!(s.pending, 2, "{s:?}");
        let events = store.events(50).await.unwrap();
        let q: Vec<_> = events
            .iter()
            .filter(|e| e.kind == "outbox_quarantined")
            .collect();
        assert_eq!(q.len(), 1, "{events:?}");
        assert!(q[0].detail.contains(&first.uuid), "{q:?}");
        assert!(matches!(q[0].severity.as_str(), "error" | "security"));
        store.close().await;
        // The entry is kept (for investigation), not deleted.
        let conn = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
        let kept: i64 = conn
            .query_row(
                "SELECT count(*) FROM readings WHERE uuid = ?1",
                [&first.uuid],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(kept, 1);
    });
}

/// The uplink's way to set aside an entry it cannot build a request from: quarantined (kept,
/// never uploaded), the next entries flow, the reason sealed and never in the event.
#[test]
fn uplink_quarantine_keeps_the_entry_and_seals_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let clock: Arc<dyn Clock> = clock();
        let store = Store::open(config(dir.path()), clock.clone())
            .await
            .unwrap();
        let dev = device(&store).await;
        store
            .append(&dev, vec![reading(1, "a"), reading(2, "b")], None)
            .await
            .unwrap();
        let first = store.pending(10, clock.now()).await.unwrap()[0].id;
        store.mark_in_flight(vec![first]).await.unwrap();
        let n = store
            .quarantine(vec![first], &format!("no request: {ERROR_MARKER}"))
            .await
            .unwrap();
        assert_eq!(n, 1);
        // Already quarantined: not moved again.
        assert_eq!(store.quarantine(vec![first], "again").await.unwrap(), 0);
        let rest = store.pending(10, clock.now()).await.unwrap();
        assert_eq!(rest.len(), 1);
        assert_ne!(rest[0].id, first);
        let s = store.stats().await.unwrap();
        assert_eq!((s.quarantined, s.pending, s.in_flight), (1, 1, 0), "{s:?}");
        let events = store.events(20).await.unwrap();
        let q: Vec<_> = events
            .iter()
            .filter(|e| e.kind == "outbox_quarantined")
            .collect();
        assert_eq!(q.len(), 1, "{events:?}");
        assert!(q[0].detail.contains(&first.to_string()), "{q:?}");
        assert!(!q[0].detail.contains(ERROR_MARKER), "{q:?}");
        store.close().await;
        scan(dir.path(), &[ERROR_MARKER.as_bytes()]);
    });
}
