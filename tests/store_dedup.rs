//! Dedup keys with locality (schema v9, issue 20): readings and held readings are deduplicated
//! exactly by stable key — across days, across reopens, and across the upgrade from a store
//! written before v9, whose rows keep their old 16-byte keys (the keyed hash alone) while new rows
//! get `bucket ‖ hash` (22 bytes).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "store_support/mod.rs"]
mod store_support;

use std::path::Path;
use store_support::{clock, config, device, reading, rt, T0};
use vitals_hub::model::{Decimal, Kind, Reading, Unit, UtcMillis, Value};
use vitals_hub::store::{schema, NewHeld, NewReading, Store};

const DAY: i64 = 86_400_000;

/// A glucose meter's record `seq` taken on device day `day` (of March 2026), as a session keys it.
fn key(seq: u32, day: u32) -> String {
    format!("v1|C0:26:DA:00:00:01|patient-7|glucose|seq={seq}|t=2026-03-{day:02}T08:15:00")
}

fn at(mantissa: i64, k: &str, received: i64) -> NewReading {
    let mut r = reading(mantissa, k);
    r.received_at = UtcMillis(received);
    r
}

fn held(user: u8, k: &str) -> NewHeld {
    let mut r = Reading::new(
        Kind::BodyWeight,
        Value::Number(Decimal::new(700 + i64::from(user), -1)),
        Unit::Kg,
    );
    r.user_id = Some(user);
    NewHeld {
        user_id: user,
        reading: r,
        received_at: UtcMillis(T0),
        stable_key: k.to_owned(),
    }
}

/// (length of the dedup key, rows) of a table, by length.
fn key_lengths(dir: &Path, table: &str) -> Vec<(i64, i64)> {
    let conn = rusqlite::Connection::open(dir.join("store.db")).unwrap();
    let mut st = conn
        .prepare(&format!(
            "SELECT length(dedup), count(*) FROM {table} GROUP BY 1 ORDER BY 1"
        ))
        .unwrap();
    let rows = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    rows
}

fn legacy_flag(dir: &Path) -> bool {
    let conn = rusqlite::Connection::open(dir.join("store.db")).unwrap();
    conn.query_row(
        "SELECT count(*) FROM meta WHERE name = 'dedup_legacy'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .unwrap()
        == 1
}

#[test]
fn a_record_resent_on_a_later_day_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let store = Store::open(config(dir.path()), clock()).await.unwrap();
        let dev = device(&store).await;
        // Day 4's records, a few the same device day (one bucket), one the next day.
        let first: Vec<NewReading> = (0..5)
            .map(|i| at(100 + i, &key(i as u32, 4), T0))
            .chain([at(200, &key(5, 5), T0)])
            .collect();
        let out = store.append(&dev, first, None).await.unwrap();
        assert_eq!(out.duplicates, 0);
        let ids = out.ids.clone();
        assert_eq!(ids.len(), 6);
        // The meter sends its whole memory again three days later, plus one new record.
        let again: Vec<NewReading> = (0..5)
            .map(|i| at(100 + i, &key(i as u32, 4), T0 + 3 * DAY))
            .chain([at(200, &key(5, 5), T0 + 3 * DAY)])
            .chain([at(300, &key(6, 7), T0 + 3 * DAY)])
            .collect();
        let out = store.append(&dev, again, None).await.unwrap();
        assert_eq!(out.duplicates, 6);
        assert_eq!(&out.ids[..6], &ids[..]);
        assert_eq!(store.readings(0, 100).await.unwrap().len(), 7);
        store.close().await;
    });
    // After a reopen too; every row under the new 22-byte key, and no old-key flag in a new store.
    rt().block_on(async {
        let store = Store::open(config(dir.path()), clock()).await.unwrap();
        let dev = device(&store).await;
        let out = store
            .append(&dev, vec![at(100, &key(0, 4), T0 + 9 * DAY)], None)
            .await
            .unwrap();
        assert_eq!(out.duplicates, 1);
        store.close().await;
    });
    assert_eq!(key_lengths(dir.path(), "readings"), vec![(22, 7)]);
    assert!(!legacy_flag(dir.path()));
}

#[test]
fn keys_of_other_formats_are_deduplicated_exactly() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let store = Store::open(config(dir.path()), clock()).await.unwrap();
        let dev = device(&store).await;
        let keys = [
            "legacy-format-1",
            "",
            "v1",
            "v1|A",
            "v1|A|p|heart_rate|rx=1772600767000",
            "v1|A|p|heart_rate|rx=1772600767001",
            "v1|A|p|heart_rate|summary=1772600767000+60000",
            "v1|A|p|weight|user=2|t=",
            "v1|A|p|weight|user=2|t=garbage",
            "v1|A|p|weight|user=2|t=garbage|x",
        ];
        let batch = |m: i64| {
            keys.iter()
                .enumerate()
                .map(|(i, k)| reading(m + i as i64, k))
                .collect::<Vec<_>>()
        };
        let out = store.append(&dev, batch(10), None).await.unwrap();
        assert_eq!(out.duplicates, 0);
        let out = store.append(&dev, batch(10), None).await.unwrap();
        assert_eq!(out.duplicates, keys.len());
        assert_eq!(store.readings(0, 100).await.unwrap().len(), keys.len());
        store.close().await;
    });
}

/// Write readings and held rows with this build, then give the file the shape a v8 hub leaves:
/// 16-byte keys (the keyed hash alone, which is what v9 keys end with), no v9 flag, version 8.
fn roll_back_to_v8(dir: &Path) {
    let conn = rusqlite::Connection::open(dir.join("store.db")).unwrap();
    conn.execute_batch(
        "UPDATE readings SET dedup = substr(dedup, 7);
         UPDATE held SET dedup = substr(dedup, 7);
         DELETE FROM meta WHERE name = 'dedup_legacy';
         PRAGMA user_version = 8;",
    )
    .unwrap();
    assert_eq!(schema::version(&conn).unwrap(), 8);
}

#[test]
fn a_store_written_before_v9_keeps_deduplicating_after_the_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.patient_id = Some("patient-7".into());
    let (old_ids, held_ids) = rt().block_on(async {
        let store = Store::open(cfg.clone(), clock()).await.unwrap();
        let dev = device(&store).await;
        let out = store
            .append(
                &dev,
                (0..4).map(|i| at(100 + i, &key(i as u32, 4), T0)).collect(),
                None,
            )
            .await
            .unwrap();
        let (h1, _) = store.hold(&dev, held(2, &key(50, 4))).await.unwrap();
        let (h2, _) = store.hold(&dev, held(3, &key(51, 4))).await.unwrap();
        store.close().await;
        (out.ids, [h1, h2])
    });
    roll_back_to_v8(dir.path());
    assert_eq!(key_lengths(dir.path(), "readings"), vec![(16, 4)]);
    assert_eq!(key_lengths(dir.path(), "held"), vec![(16, 2)]);

    rt().block_on(async {
        let store = Store::open(cfg.clone(), clock()).await.unwrap();
        let events = store.events(50).await.unwrap();
        assert!(events
            .iter()
            .any(|e| e.kind == "store_opened"
                && e.detail == format!("schema 8 -> {}", schema::LATEST)));
        let dev = device(&store).await;
        // The same records offered again days later: found under their old keys, nothing written.
        let out = store
            .append(
                &dev,
                (0..4)
                    .map(|i| at(100 + i, &key(i as u32, 4), T0 + 2 * DAY))
                    .chain([at(500, &key(9, 6), T0 + 2 * DAY)])
                    .collect(),
                None,
            )
            .await
            .unwrap();
        assert_eq!(out.duplicates, 4);
        assert_eq!(&out.ids[..4], &old_ids[..]);
        // Held rows from before: the same record is not held twice, and a record stored as a
        // reading before the upgrade is not held at all.
        assert_eq!(
            store.hold(&dev, held(2, &key(50, 4))).await.unwrap(),
            (held_ids[0], true)
        );
        assert_eq!(
            store.hold(&dev, held(2, &key(0, 4))).await.unwrap(),
            (0, true)
        );
        // A held row from before, assigned: its reading is new, stored once, under the new key.
        let rid = store.assign_held(held_ids[1]).await.unwrap();
        let out = store
            .append(&dev, vec![at(1, &key(51, 4), T0 + 3 * DAY)], None)
            .await
            .unwrap();
        assert_eq!((out.duplicates, out.ids[0]), (1, rid));
        store.close().await;
    });
    // Old rows kept their keys; the two new readings (one appended, one assigned) have new keys.
    assert_eq!(key_lengths(dir.path(), "readings"), vec![(16, 4), (22, 2)]);
    assert_eq!(key_lengths(dir.path(), "held"), vec![(16, 2)]);
    assert!(legacy_flag(dir.path()));

    // A reading assigned from an old held row whose record is also an old reading: not duplicated.
    rt().block_on(async {
        let store = Store::open(cfg.clone(), clock()).await.unwrap();
        let dev = device(&store).await;
        let out = store
            .append(
                &dev,
                (0..4)
                    .map(|i| at(100 + i, &key(i as u32, 4), T0 + 5 * DAY))
                    .chain([at(500, &key(9, 6), T0 + 5 * DAY)])
                    .collect(),
                None,
            )
            .await
            .unwrap();
        assert_eq!(out.duplicates, 5);
        assert_eq!(store.readings(0, 100).await.unwrap().len(), 6);
        store.close().await;
    });
}

#[test]
fn an_old_held_row_assigned_after_the_upgrade_finds_its_old_reading() {
    // Held before v9 under user 2's key, the same record also stored as the patient's reading
    // before v9 (a configuration change in between): assignment links the old reading.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.patient_id = Some("patient-7".into());
    let k = key(70, 8);
    let (hid, rid) = rt().block_on(async {
        let store = Store::open(cfg.clone(), clock()).await.unwrap();
        let dev = device(&store).await;
        let (hid, dup) = store.hold(&dev, held(2, &k)).await.unwrap();
        assert!(!dup);
        let out = store
            .append(&dev, vec![reading(5, &k)], None)
            .await
            .unwrap();
        store.close().await;
        (hid, out.ids[0])
    });
    roll_back_to_v8(dir.path());
    rt().block_on(async {
        let store = Store::open(cfg.clone(), clock()).await.unwrap();
        assert_eq!(store.assign_held(hid).await.unwrap(), rid);
        assert_eq!(store.readings(0, 100).await.unwrap().len(), 1);
        store.close().await;
    });
}

#[test]
fn a_store_created_empty_before_v9_gets_no_legacy_flag() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut conn = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
        schema::migrate_to(&mut conn, 8).unwrap();
    }
    rt().block_on(async {
        let store = Store::open(config(dir.path()), clock()).await.unwrap();
        let dev = device(&store).await;
        store
            .append(&dev, vec![reading(1, &key(1, 1))], None)
            .await
            .unwrap();
        store.close().await;
    });
    assert!(!legacy_flag(dir.path()));
    assert_eq!(key_lengths(dir.path(), "readings"), vec![(22, 1)]);
}
