//! Readings held for assignment (schema v4) and continuous-stream summaries, through the public
//! store API: held readings are sealed, never in the outbox, survive a reopen, are deduplicated by
//! stable key (also after discard or assignment), and assignment moves one into readings + outbox as
//! the patient's in one transaction. Summary figures (count, min, max, window) survive a reopen;
//! a database written at schema v3 opens and takes held readings.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "store_support/mod.rs"]
mod store_support;

use store_support::{clock, config, device, reading, rt, T0};
use vitals_hub::model::{Decimal, Kind, Reading, Unit, UtcMillis, Value};
use vitals_hub::store::{schema, NewHeld, OutboxPayload, ReadingSummary, Store, StoreError};

fn held(user: u8, kg_tenths: i64, key: &str) -> NewHeld {
    let mut r = Reading::new(
        Kind::BodyWeight,
        Value::Number(Decimal::new(kg_tenths, -1)),
        Unit::Kg,
    );
    r.user_id = Some(user);
    NewHeld {
        user_id: user,
        reading: r,
        received_at: UtcMillis(T0 + 1234),
        stable_key: key.to_owned(),
    }
}

#[test]
fn held_readings_are_sealed_kept_deduplicated_and_assigned() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.patient_id = Some("patient-7".into());
    rt().block_on(async {
        let store = Store::open(cfg.clone(), clock()).await.unwrap();
        let dev = device(&store).await;
        let (a, dup) = store
            .hold(&dev, held(2, 812, "v1|scale|user=2|t=1"))
            .await
            .unwrap();
        assert!(!dup);
        let (b, _) = store
            .hold(&dev, held(3, 655, "v1|scale|user=3|t=2"))
            .await
            .unwrap();
        // The same record downloaded again: not held twice.
        let (again, dup) = store
            .hold(&dev, held(2, 812, "v1|scale|user=2|t=1"))
            .await
            .unwrap();
        assert_eq!((again, dup), (a, true));
        assert_eq!(store.held(10).await.unwrap().len(), 2);
        // Never in the outbox, never a reading. (At the end of time the store's own security
        // report — the KEK it created — is due: the only entry.)
        assert!(store
            .pending(100, UtcMillis(i64::MAX))
            .await
            .unwrap()
            .iter()
            .all(|i| matches!(&i.payload, OutboxPayload::Alert(a)
                if a.payload.get("security_report").is_some())));
        assert_eq!(store.stats().await.unwrap().pending, 0);
        assert!(store.readings(0, 10).await.unwrap().is_empty());
        let _ = b;
        store.close().await;
    });

    // Sealed: neither the stable key nor the user marker is in the file in plain text.
    let raw = std::fs::read(dir.path().join("store.db")).unwrap();
    let wal = std::fs::read(dir.path().join("store.db-wal")).unwrap_or_default();
    for bytes in [&raw, &wal] {
        assert!(
            !bytes.windows(8).any(|w| w == b"user=2|t"),
            "plaintext stable key in the file"
        );
    }

    // A restart keeps them; assignment moves one into readings + outbox with its stable key.
    rt().block_on(async {
        let store = Store::open(cfg.clone(), clock()).await.unwrap();
        let list = store.held(10).await.unwrap();
        assert_eq!(list.len(), 2);
        let h = list.iter().find(|h| h.user_id == 2).unwrap().clone();
        assert_eq!(h.stable_key, "v1|scale|user=2|t=1");
        assert_eq!(h.received_at, UtcMillis(T0 + 1234));
        assert_eq!(h.reading.value, Value::Number(Decimal::new(812, -1)));
        let rid = store.assign_held(h.id).await.unwrap();
        let rs = store.readings(0, 10).await.unwrap();
        assert_eq!(rs.len(), 1);
        assert_eq!(rs[0].id, rid);
        assert_eq!(rs[0].stable_key, h.stable_key);
        assert_eq!(rs[0].reading, h.reading);
        assert_eq!(rs[0].patient_id.as_deref(), Some("patient-7"));
        assert_eq!(rs[0].device, h.device);
        // (At the end of time the store's own security report is due too: not counted here.)
        let pending: Vec<_> = store
            .pending(100, UtcMillis(i64::MAX))
            .await
            .unwrap()
            .into_iter()
            .filter(|i| {
                !matches!(&i.payload, OutboxPayload::Alert(a)
                    if a.payload.get("security_report").is_some())
            })
            .collect();
        assert_eq!(pending.len(), 1);
        assert!(matches!(&pending[0].payload, OutboxPayload::Reading(r) if r.id == rid));
        // Assigned: no longer held; assigning again is an error, not a second reading.
        assert_eq!(store.held(10).await.unwrap().len(), 1);
        assert!(matches!(
            store.assign_held(h.id).await,
            Err(StoreError::Invalid(_))
        ));
        // Downloaded again after assignment: neither held again nor stored twice.
        let (_, dup) = store
            .hold(&h.device, held(2, 812, "v1|scale|user=2|t=1"))
            .await
            .unwrap();
        assert!(dup);
        assert_eq!(store.held(10).await.unwrap().len(), 1);
        assert_eq!(store.readings(0, 10).await.unwrap().len(), 1);

        // Discard the other; it stays gone when sent again.
        let other = store.held(10).await.unwrap()[0].clone();
        assert!(store.discard_held(other.id).await.unwrap());
        assert!(!store.discard_held(other.id).await.unwrap());
        assert!(store.held(10).await.unwrap().is_empty());
        let (_, dup) = store
            .hold(&other.device, held(3, 655, "v1|scale|user=3|t=2"))
            .await
            .unwrap();
        assert!(dup);
        assert!(store.held(10).await.unwrap().is_empty());
        assert_eq!(store.readings(0, 10).await.unwrap().len(), 1);
        assert_eq!(store.stats().await.unwrap().pending, 1);
        // A data-key rotation re-seals held rows and leaves retired ones alone.
        store
            .hold(&other.device, held(4, 700, "v1|scale|user=4|t=3"))
            .await
            .unwrap();
        let rep = store.rotate_data_key(10).await.unwrap();
        assert!(rep.rows_reencrypted >= 3, "{rep:?}");
        assert_eq!(store.held(10).await.unwrap()[0].user_id, 4);
        store.close().await;
    });
}

#[test]
fn a_held_payload_moved_to_another_row_fails_authentication() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let store = Store::open(config(dir.path()), clock()).await.unwrap();
        let dev = device(&store).await;
        store.hold(&dev, held(2, 812, "k1")).await.unwrap();
        store.hold(&dev, held(3, 655, "k2")).await.unwrap();
        store.close().await;
    });
    {
        let conn = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
        conn.execute(
            "UPDATE held SET sealed = (SELECT sealed FROM held ORDER BY id LIMIT 1) WHERE id = (SELECT max(id) FROM held)",
            [],
        )
        .unwrap();
    }
    rt().block_on(async {
        let store = Store::open(config(dir.path()), clock()).await.unwrap();
        let err = store.held(10).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Integrity { table: "held", .. }),
            "{err}"
        );
        let events = store.events(20).await.unwrap();
        assert!(events.iter().any(|e| e.kind == "integrity_failure"));
        store.close().await;
    });
}

#[test]
fn summary_figures_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let summary = ReadingSummary {
        count: 30,
        min: Decimal::new(60, 0),
        max: Decimal::new(89, 0),
        window_ms: 60_000,
    };
    rt().block_on(async {
        let store = Store::open(config(dir.path()), clock()).await.unwrap();
        let dev = device(&store).await;
        let mut mean = reading(745, "hr-window-1");
        mean.reading.kind = Kind::HeartRate;
        mean.reading.unit = Unit::PerMin;
        mean.summary = Some(summary);
        store
            .append(&dev, vec![mean, reading(100, "spot-1")], None)
            .await
            .unwrap();
        store.close().await;
    });
    rt().block_on(async {
        let store = Store::open(config(dir.path()), clock()).await.unwrap();
        let rs = store.readings(0, 10).await.unwrap();
        assert_eq!(rs.len(), 2);
        assert_eq!(rs[0].summary, Some(summary));
        assert_eq!(rs[1].summary, None);
        // The outbox carries the same opened reading.
        let p = store.pending(10, UtcMillis(i64::MAX)).await.unwrap();
        assert!(p.iter().any(
            |i| matches!(&i.payload, OutboxPayload::Reading(r) if r.summary == Some(summary))
        ));
        store.close().await;
    });
}

#[test]
fn a_v3_database_opens_and_takes_held_readings() {
    let dir = tempfile::tempdir().unwrap();
    // Readings written by this build, then the file rolled back to the v3 shape (no `held` table):
    // exactly what a v3 hub leaves behind, since v4 only adds a table.
    rt().block_on(async {
        let store = Store::open(config(dir.path()), clock()).await.unwrap();
        let dev = device(&store).await;
        store
            .append(
                &dev,
                vec![reading(101, "old-1"), reading(102, "old-2")],
                None,
            )
            .await
            .unwrap();
        store.close().await;
    });
    {
        let conn = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
        conn.execute_batch("DROP TABLE held; DROP TABLE alert_limits; DROP TABLE snapshots; DROP TABLE alert_limits_pending; DROP TABLE security_reports; PRAGMA user_version = 3;")
            .unwrap();
        assert_eq!(schema::version(&conn).unwrap(), 3);
    }
    rt().block_on(async {
        let store = Store::open(config(dir.path()), clock()).await.unwrap();
        let rs = store.readings(0, 10).await.unwrap();
        assert_eq!(rs.len(), 2);
        assert!(rs.iter().all(|r| r.summary.is_none()));
        let dev = rs[0].device.clone();
        store.hold(&dev, held(2, 800, "new-held")).await.unwrap();
        assert_eq!(store.held(10).await.unwrap().len(), 1);
        let events = store.events(50).await.unwrap();
        assert!(events
            .iter()
            .any(|e| e.kind == "store_opened"
                && e.detail == format!("schema 3 -> {}", schema::LATEST)));
        store.close().await;
    });
}

// ---------------------------------------------------------------------------------------------
// Held readings against an in-memory model: random hold / re-hold / discard / assign / crash /
// reopen sequences.

#[derive(Debug, Clone)]
enum HeldOp {
    /// Hold the reading with stable key number `k` (an existing one is a re-download).
    Hold(usize),
    Discard(usize),
    Assign(usize),
    /// Drop the handle without closing it and open the file again.
    Crash,
    Reopen,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum HeldState {
    Held,
    Gone,
    Assigned,
}

fn held_op() -> impl proptest::strategy::Strategy<Value = HeldOp> {
    use proptest::prelude::*;
    prop_oneof![
        5 => (0usize..12).prop_map(HeldOp::Hold),
        2 => (0usize..12).prop_map(HeldOp::Discard),
        2 => (0usize..12).prop_map(HeldOp::Assign),
        1 => Just(HeldOp::Crash),
        1 => Just(HeldOp::Reopen),
    ]
}

fn run_held(ops: Vec<HeldOp>) {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use vitals_hub::model::Clock;
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    rt().block_on(async {
        let open = || Store::open(config(dir.path()), clock.clone() as Arc<dyn Clock>);
        let mut store = open().await.unwrap();
        let dev = device(&store).await;
        // key number → (store id, state)
        let mut m: BTreeMap<usize, (i64, HeldState)> = BTreeMap::new();
        for op in ops {
            match op {
                HeldOp::Hold(k) => {
                    let key = format!("held-{k}");
                    let (id, dup) = store
                        .hold(&dev, held(2, 700 + k as i64, &key))
                        .await
                        .unwrap();
                    match m.get(&k) {
                        Some(_) => assert!(dup, "{key} held twice"),
                        None => {
                            assert!(!dup);
                            m.insert(k, (id, HeldState::Held));
                        }
                    }
                }
                HeldOp::Discard(k) => {
                    let id = m.get(&k).map(|e| e.0).unwrap_or(-1);
                    let done = store.discard_held(id).await.unwrap();
                    let was_held = m.get(&k).is_some_and(|e| e.1 == HeldState::Held);
                    assert_eq!(done, was_held);
                    if was_held {
                        m.insert(k, (id, HeldState::Gone));
                    }
                }
                HeldOp::Assign(k) => {
                    let id = m.get(&k).map(|e| e.0).unwrap_or(-1);
                    let r = store.assign_held(id).await;
                    if m.get(&k).is_some_and(|e| e.1 == HeldState::Held) {
                        r.unwrap();
                        m.insert(k, (id, HeldState::Assigned));
                    } else {
                        assert!(matches!(r, Err(StoreError::Invalid(_))), "{r:?}");
                    }
                }
                HeldOp::Crash => {
                    drop(store);
                    store = open().await.unwrap();
                }
                HeldOp::Reopen => {
                    store.close().await;
                    store = open().await.unwrap();
                }
            }
            let listed: Vec<String> = store
                .held(100)
                .await
                .unwrap()
                .into_iter()
                .map(|h| h.stable_key)
                .collect();
            let mut expected: Vec<(i64, String)> = m
                .iter()
                .filter(|(_, e)| e.1 == HeldState::Held)
                .map(|(k, e)| (e.0, format!("held-{k}")))
                .collect();
            expected.sort();
            let expected: Vec<String> = expected.into_iter().map(|(_, k)| k).collect();
            assert_eq!(listed, expected);
            let assigned: Vec<String> = m
                .iter()
                .filter(|(_, e)| e.1 == HeldState::Assigned)
                .map(|(k, _)| format!("held-{k}"))
                .collect();
            let mut readings: Vec<String> = store
                .readings(0, 100)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.stable_key)
                .collect();
            readings.sort();
            let mut assigned_sorted = assigned.clone();
            assigned_sorted.sort();
            assert_eq!(
                readings, assigned_sorted,
                "readings are exactly the assigned ones"
            );
            assert_eq!(
                store.stats().await.unwrap().pending,
                assigned.len() as u64,
                "only assigned readings are in the outbox"
            );
        }
        store.close().await;
    });
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
    #[test]
    fn held_readings_follow_the_model(ops in proptest::collection::vec(held_op(), 1..30)) {
        run_held(ops);
    }
}
