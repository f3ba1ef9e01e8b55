//! Capacity, disk full, corruption and schema upgrades.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod store_support;

use std::sync::Arc;
use store_support::*;
use vitals_hub::model::{Clock, UtcMillis};
use vitals_hub::store::{schema, Store, StoreError};

fn batch(from: usize, n: usize) -> Vec<vitals_hub::store::NewReading> {
    (from..from + n)
        .map(|i| reading(i as i64, &format!("cap-{i}")))
        .collect()
}

#[test]
fn disk_full_is_an_error_and_an_event_and_heals_without_reopen() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let mut cfg = config(dir.path());
        cfg.sqlite_max_pages = Some(60);
        let clock: Arc<dyn Clock> = clock();
        let store = Store::open(cfg, clock).await.unwrap();
        let dev = device(&store).await;
        let mut i = 0;
        let err = loop {
            match store.append(&dev, batch(i, 20), None).await {
                Ok(_) => i += 20,
                Err(e) => break e,
            }
            assert!(i < 100_000, "never filled up");
        };
        assert!(matches!(err, StoreError::DiskFull { .. }), "{err:?}");
        assert!(err.to_string().contains("full"));
        // It stays down without crashing, and says so once.
        assert!(matches!(
            store.append(&dev, batch(i, 20), None).await,
            Err(StoreError::DiskFull { .. })
        ));
        let events = store.events(50).await.unwrap();
        assert_eq!(events.iter().filter(|e| e.kind == "disk_full").count(), 1);
        // Space returns: the same handle works again.
        store.set_limits(1 << 30, Some(100_000)).await.unwrap();
        store.append(&dev, batch(i, 20), None).await.unwrap();
        let events = store.events(50).await.unwrap();
        assert!(events.iter().any(|e| e.kind == "disk_full_cleared"));
        assert!(events.iter().any(|e| e.kind == "disk_full" && e.id > 0));
        let all = store.readings(0, 100_000).await.unwrap();
        assert_eq!(all.len(), i + 20);
        assert_eq!(store.integrity_check().await.unwrap(), "ok");
        store.close().await;
    });
}

#[test]
fn size_limit_warns_at_80_percent_refuses_when_full_and_never_evicts() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let mut cfg = config(dir.path());
        cfg.size_limit = 400 * 1024;
        cfg.retention = 60_000;
        let clock = clock();
        let store = Store::open(cfg, clock.clone() as Arc<dyn Clock>)
            .await
            .unwrap();
        let dev = device(&store).await;
        let mut i = 0;
        let err = loop {
            match store.append(&dev, batch(i, 50), None).await {
                Ok(_) => i += 50,
                Err(e) => break e,
            }
        };
        let StoreError::Full { used, limit } = err else {
            panic!("{err:?}")
        };
        assert!(used >= limit);
        let events = store.events(100).await.unwrap();
        assert_eq!(
            events
                .iter()
                .filter(|e| e.kind == "capacity_warning")
                .count(),
            1
        );
        assert!(events.iter().any(|e| e.kind == "store_full"));
        // Nothing was evicted.
        assert_eq!(store.stats().await.unwrap().pending, i as u64);
        // Ack everything, let retention pass, prune: appends work again.
        let ids: Vec<i64> = store
            .pending(100_000, clock.now())
            .await
            .unwrap()
            .iter()
            .map(|p| p.id)
            .collect();
        store.ack(ids).await.unwrap();
        assert_eq!(
            store.prune(clock.now()).await.unwrap(),
            0,
            "retention not yet over"
        );
        clock.advance(61_000);
        assert_eq!(store.prune(clock.now()).await.unwrap(), i as u64);
        store.append(&dev, batch(i, 50), None).await.unwrap();
        let s = store.stats().await.unwrap();
        assert_eq!((s.pending, s.acked), (50, 0));
        store.close().await;
    });
}

#[test]
fn corrupt_database_is_moved_aside_and_a_fresh_one_started() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let clock: Arc<dyn Clock> = clock();
        let store = Store::open(config(dir.path()), clock.clone())
            .await
            .unwrap();
        let dev = device(&store).await;
        store.append(&dev, batch(0, 300), None).await.unwrap();
        store.close().await;
        let db = dir.path().join("store.db");
        let mut bytes = std::fs::read(&db).unwrap();
        let len = bytes.len();
        for b in &mut bytes[4096..len.min(4096 * 6)] {
            *b = 0xA5;
        }
        std::fs::write(&db, &bytes).unwrap();

        let store = Store::open(config(dir.path()), clock.clone())
            .await
            .unwrap();
        let events = store.events(20).await.unwrap();
        let ev = events
            .iter()
            .find(|e| e.kind == "corrupt_database_moved")
            .expect("an event");
        assert!(ev.detail.contains("corrupt-"));
        assert_eq!(store.stats().await.unwrap().pending, 0);
        assert_eq!(store.integrity_check().await.unwrap(), "ok");
        store.close().await;
        let moved: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("store.db.corrupt-"))
            .collect();
        assert_eq!(moved.len(), 1, "{moved:?}");
        assert_eq!(
            std::fs::read(dir.path().join(&moved[0])).unwrap(),
            bytes,
            "kept byte for byte"
        );

        // A file that is not a database at all is handled the same way.
        std::fs::write(&db, b"this is not an SQLite file, just garbage ......").unwrap();
        let _ = std::fs::remove_file(dir.path().join("store.db-wal"));
        let store = Store::open(config(dir.path()), clock).await.unwrap();
        assert!(store
            .events(20)
            .await
            .unwrap()
            .iter()
            .any(|e| e.kind == "corrupt_database_moved"));
        store.close().await;
    });
}

/// Overwrite one leaf page of `table` (found through `dbstat`) in the closed database at `db`.
fn corrupt_a_leaf_of(db: &std::path::Path, table: &str) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let page_size: i64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap();
    // Every committed frame into the file itself first.
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    let page: i64 = conn
        .query_row(
            "SELECT pageno FROM dbstat WHERE name = ?1 AND pagetype = 'leaf' ORDER BY pageno LIMIT 1 OFFSET 2",
            [table],
            |r| r.get(0),
        )
        .unwrap();
    drop(conn);
    let mut bytes = std::fs::read(db).unwrap();
    let at = usize::try_from((page - 1) * page_size).unwrap();
    let len = usize::try_from(page_size).unwrap();
    for b in &mut bytes[at..at + len] {
        *b = 0xA5;
    }
    std::fs::write(db, &bytes).unwrap();
}

#[test]
fn a_deferred_integrity_check_that_fails_makes_the_next_open_move_the_database_aside() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let clock: Arc<dyn Clock> = clock();
        let deferred = || {
            let mut c = config(dir.path());
            c.defer_integrity_check = true;
            c
        };
        let store = Store::open(deferred(), clock.clone()).await.unwrap();
        let dev = device(&store).await;
        store.append(&dev, batch(0, 300), None).await.unwrap();
        // A sound store passes and leaves no marker.
        assert_eq!(store.check_integrity().await.unwrap(), None);
        store.close().await;
        let marker = dir.path().join(vitals_hub::store::CHECK_FAILED_MARKER);
        assert!(!marker.exists());

        let db = dir.path().join("store.db");
        corrupt_a_leaf_of(&db, "readings");

        // The deferred open does not read the damaged page; the check beside it finds it.
        let store = Store::open(deferred(), clock.clone()).await.unwrap();
        let found = store.check_integrity().await.unwrap();
        assert!(found.is_some(), "the damaged page was not found");
        assert!(marker.exists(), "no marker for the next open");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&marker).unwrap().permissions().mode() & 0o777,
            0o600
        );
        store.close().await;

        // The next open (deferred or not) checks, moves the database aside and starts fresh.
        let store = Store::open(deferred(), clock.clone()).await.unwrap();
        let events = store.events(20).await.unwrap();
        assert!(
            events.iter().any(|e| e.kind == "corrupt_database_moved"),
            "{events:?}"
        );
        assert_eq!(store.stats().await.unwrap().pending, 0);
        assert_eq!(store.check_integrity().await.unwrap(), None);
        store.close().await;
        assert!(!marker.exists(), "the marker outlived the move");
        let moved: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| {
                n.starts_with("store.db.corrupt-") && !n.contains("-wal") && !n.contains("-shm")
            })
            .collect();
        assert_eq!(moved.len(), 1, "{moved:?}");
        // Kept, damaged page and all (the open between wrote to its other pages).
        let kept = std::fs::read(dir.path().join(&moved[0])).unwrap();
        assert!(
            kept.chunks_exact(4096)
                .any(|p| p.iter().all(|b| *b == 0xA5)),
            "the damaged page is not in the moved file"
        );
    });
}

#[test]
fn a_marker_whose_check_at_open_passes_is_removed_and_the_store_kept() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let clock: Arc<dyn Clock> = clock();
        let mut cfg = config(dir.path());
        cfg.defer_integrity_check = true;
        let store = Store::open(cfg.clone(), clock.clone()).await.unwrap();
        let dev = device(&store).await;
        store.append(&dev, batch(0, 50), None).await.unwrap();
        store.close().await;
        let marker = dir.path().join(vitals_hub::store::CHECK_FAILED_MARKER);
        std::fs::write(&marker, b"left by a failed check").unwrap();
        let store = Store::open(cfg, clock).await.unwrap();
        assert_eq!(store.stats().await.unwrap().pending, 50);
        assert!(store
            .events(20)
            .await
            .unwrap()
            .iter()
            .any(|e| e.kind == "integrity_check_passed"));
        store.close().await;
        assert!(!marker.exists());
    });
}

#[test]
fn opens_from_an_empty_file_and_from_every_earlier_version() {
    // Empty file (version 0).
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("store.db"), b"").unwrap();
    rt().block_on(async {
        let store = Store::open(config(dir.path()), clock()).await.unwrap();
        assert_eq!(store.stats().await.unwrap().pending, 0);
        store.close().await;
    });
    let conn = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
    assert_eq!(schema::version(&conn).unwrap(), schema::LATEST);
    drop(conn);

    // Every earlier version with data: a store written at LATEST, rolled back to version v's shape.
    for v in 1..schema::LATEST {
        let dir = tempfile::tempdir().unwrap();
        {
            // Build a version-v database with the real migrations, then write data as v would.
            let mut conn = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
            schema::migrate_to(&mut conn, v).unwrap();
            conn.execute(
                "INSERT INTO events(at, kind, detail) VALUES (1, 'from_v1', 'kept')",
                [],
            )
            .unwrap();
        }
        rt().block_on(async {
            let store = Store::open(config(dir.path()), clock()).await.unwrap();
            let dev = device(&store).await;
            store.append(&dev, batch(0, 3), None).await.unwrap();
            let events = store.events(50).await.unwrap();
            let old = events.iter().find(|e| e.kind == "from_v1").unwrap();
            assert_eq!(old.severity, "info");
            assert!(events
                .iter()
                .any(|e| e.kind == "store_opened" && e.detail.starts_with(&format!("schema {v}"))));
            store.close().await;
        });
        // Data written at v survives another reopen at LATEST.
        rt().block_on(async {
            let store = Store::open(config(dir.path()), clock()).await.unwrap();
            assert_eq!(store.readings(0, 10).await.unwrap().len(), 3);
            store.close().await;
        });
    }

    // A database from a newer build is refused with a clear error.
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
        conn.pragma_update(None, "user_version", schema::LATEST + 1)
            .unwrap();
    }
    rt().block_on(async {
        let err = Store::open(config(dir.path()), clock()).await.unwrap_err();
        assert!(err.to_string().contains("newer"), "{err}");
    });
    let _ = UtcMillis(0);
}
