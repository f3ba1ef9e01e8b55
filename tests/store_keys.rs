//! Key management: data-key rotation under ingest, automatic rotation by seal count, KEK rotation,
//! the key file's permission checks and the `vitals-hub keys rotate` command.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod store_support;
mod support_bin;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use store_support::*;
use vitals_hub::model::Clock;
use vitals_hub::store::{Store, StoreError};

#[test]
fn data_key_rotation_reencrypts_everything_while_ingest_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let clock: Arc<dyn Clock> = clock();
        let store = Store::open(config(dir.path()), clock.clone())
            .await
            .unwrap();
        let dev = device(&store).await;
        for b in 0..10 {
            let items = (0..50)
                .map(|i| reading(i, &format!("old-{b}-{i}")))
                .collect();
            store.append(&dev, items, None).await.unwrap();
        }
        let ids: Vec<i64> = store
            .pending(5, clock.now())
            .await
            .unwrap()
            .iter()
            .map(|p| p.id)
            .collect();
        store.retry(ids, "timeout", clock.now()).await.unwrap();
        let before = store.stats().await.unwrap().active_key_id;

        // Ingest keeps going during the rotation.
        let s2 = store.clone();
        let d2 = dev.clone();
        let ingest = tokio::spawn(async move {
            for i in 0..40 {
                s2.append(&d2, vec![reading(i, &format!("during-{i}"))], None)
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
            }
        });
        let report = store.rotate_data_key(25).await.unwrap();
        ingest.await.unwrap();
        assert_ne!(report.new_key_id, before);
        assert!(report.rows_reencrypted >= 500, "{report:?}");
        assert_eq!(report.keys_deleted, 1);
        let all = store.readings(0, 10_000).await.unwrap();
        assert_eq!(all.len(), 540);
        assert_eq!(store.pending(10_000, clock.now()).await.unwrap().len(), 540);
        let conn = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
        let old_rows: i64 = conn
            .query_row(
                "SELECT count(*) FROM readings WHERE key_id = ?1",
                [before],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(old_rows, 0);
        let keys: i64 = conn
            .query_row(
                "SELECT count(*) FROM keys WHERE purpose = 'data'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(keys, 1);
        assert!(store
            .events(50)
            .await
            .unwrap()
            .iter()
            .any(|e| e.kind == "data_key_rotated"));
        store.close().await;
    });
}

#[test]
fn data_keys_rotate_by_themselves_before_their_seal_budget() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let mut cfg = config(dir.path());
        cfg.rotate_after_seals = 10;
        let store = Store::open(cfg.clone(), clock()).await.unwrap();
        let dev = device(&store).await;
        let first = store.stats().await.unwrap().active_key_id;
        for i in 0..25 {
            store
                .append(&dev, vec![reading(i, &format!("r{i}"))], None)
                .await
                .unwrap();
        }
        let s = store.stats().await.unwrap();
        assert!(s.active_key_id >= first + 2, "{s:?}");
        assert!(s.active_key_seals < 10);
        store.close().await;
        // Old keys still open their rows after a reopen; the counter survived.
        let store = Store::open(cfg, clock()).await.unwrap();
        assert_eq!(store.readings(0, 100).await.unwrap().len(), 25);
        assert_eq!(store.stats().await.unwrap().active_key_id, s.active_key_id);
        store.close().await;
    });
}

#[test]
fn kek_rotation_rewraps_and_replaces_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let kek = dir.path().join("keys/kek");
    rt().block_on(async {
        let store = Store::open(config(dir.path()), clock()).await.unwrap();
        let dev = device(&store).await;
        store
            .append(&dev, vec![reading(5, "a")], None)
            .await
            .unwrap();
        let old = std::fs::read(&kek).unwrap();
        let id = store.rotate_kek().await.unwrap();
        let new = std::fs::read(&kek).unwrap();
        assert_ne!(old, new);
        assert_eq!(
            std::fs::metadata(&kek).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!dir.path().join("keys/kek.new").exists());
        store.close().await;

        let store = Store::open(config(dir.path()), clock()).await.unwrap();
        assert_eq!(store.readings(0, 10).await.unwrap().len(), 1);
        assert!(store
            .events(20)
            .await
            .unwrap()
            .iter()
            .any(|e| e.kind == "kek_rotated" && e.detail.contains(&id)));
        store.close().await;

        // The old KEK no longer opens the store, and the error says what to do.
        std::fs::write(&kek, &old).unwrap();
        let err = Store::open(config(dir.path()), clock()).await.unwrap_err();
        assert!(matches!(err, StoreError::WrongKek { .. }), "{err:?}");
        assert!(err.to_string().contains("restore the right key file"));

        // A rotation interrupted after the commit but before the rename is finished at open.
        let kek_new = dir.path().join("keys/kek.new");
        std::fs::write(&kek_new, &new).unwrap();
        std::fs::set_permissions(&kek_new, std::fs::Permissions::from_mode(0o600)).unwrap();
        let store = Store::open(config(dir.path()), clock()).await.unwrap();
        assert_eq!(store.readings(0, 10).await.unwrap().len(), 1);
        assert_eq!(std::fs::read(&kek).unwrap(), new);
        store.close().await;
    });
}

#[test]
fn a_key_file_others_can_read_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let store = Store::open(config(dir.path()), clock()).await.unwrap();
        store.close().await;
        let kek = dir.path().join("keys/kek");
        std::fs::set_permissions(&kek, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = Store::open(config(dir.path()), clock()).await.unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("chmod 600") && msg.contains(&kek.display().to_string()),
            "{msg}"
        );
        std::fs::set_permissions(&kek, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(
            dir.path().join("keys"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let msg = Store::open(config(dir.path()), clock())
            .await
            .unwrap_err()
            .to_string();
        assert!(msg.contains("chmod 700"), "{msg}");
    });
}

#[test]
fn keys_rotate_command_rotates_data_key_and_kek() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let store = Store::open(config(dir.path()), clock()).await.unwrap();
        let dev = device(&store).await;
        store
            .append(&dev, vec![reading(1, "x"), reading(2, "y")], None)
            .await
            .unwrap();
        store.close().await;
    });
    for extra in [&[][..], &["--kek"][..]] {
        let out = support_bin::hub()
            .args(["keys", "rotate", "--state-dir"])
            .arg(dir.path())
            .args(extra)
            .env_remove("CREDENTIALS_DIRECTORY")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("rotated") || text.contains("re-encrypted"),
            "{text}"
        );
    }
    rt().block_on(async {
        let store = Store::open(config(dir.path()), clock()).await.unwrap();
        assert_eq!(store.readings(0, 10).await.unwrap().len(), 2);
        store.close().await;
    });
}

/// Regression (issue 12): automatic data-key rotation runs after the write's COMMIT, and its
/// failure came back as the committed write's error. It is an event (stored, visible in `status`)
/// and a retry later; the append returns `Ok` and its reading is stored.
#[test]
fn failed_automatic_rotation_is_an_event_and_a_retry_not_the_writes_error() {
    let dir = tempfile::tempdir().unwrap();
    let manual = clock();
    let clock: Arc<dyn Clock> = manual.clone();
    let mut cfg = config(dir.path());
    cfg.rotate_after_seals = 3;
    rt().block_on(async {
        let store = Store::open(cfg.clone(), clock.clone()).await.unwrap();
        let dev = device(&store).await;
        let first = store.stats().await.unwrap().active_key_id;
        store.close().await;
        // Any new key is refused by the database: the rotation's transaction fails.
        let conn = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
        conn.execute_batch(
            "CREATE TRIGGER refuse_new_keys BEFORE INSERT ON keys
             BEGIN SELECT RAISE(ABORT, 'test: new keys refused'); END;",
        )
        .unwrap();

        let store = Store::open(cfg.clone(), clock.clone()).await.unwrap();
        for i in 0..6 {
            let out = store
                .append(&dev, vec![reading(i, &format!("r{i}"))], None)
                .await;
            assert!(out.is_ok(), "append {i} committed but returned {out:?}");
        }
        assert_eq!(store.readings(0, 100).await.unwrap().len(), 6);
        let s = store.stats().await.unwrap();
        assert_eq!(s.active_key_id, first, "{s:?}");
        let failed = |events: &[vitals_hub::store::Event]| {
            events
                .iter()
                .filter(|e| e.kind == "data_key_rotation_failed")
                .count()
        };
        let events = store.events(100).await.unwrap();
        // Once, not once per write; severity shown by `status`.
        assert_eq!(failed(&events), 1, "{events:?}");
        assert!(events
            .iter()
            .any(|e| e.kind == "data_key_rotation_failed" && e.severity == "error"));
        // Stored, not only in memory.
        let stored: i64 = conn
            .query_row(
                "SELECT count(*) FROM events WHERE kind = 'data_key_rotation_failed'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(stored, 1);

        // The cause goes away; a later write retries the rotation and succeeds.
        conn.execute_batch("DROP TRIGGER refuse_new_keys").unwrap();
        manual.advance(10 * 60_000);
        store
            .append(&dev, vec![reading(99, "after")], None)
            .await
            .unwrap();
        let s = store.stats().await.unwrap();
        assert!(s.active_key_id > first, "{s:?}");
        assert!(s.active_key_seals < 3, "{s:?}");
        assert_eq!(store.readings(0, 100).await.unwrap().len(), 7);
        assert!(store
            .events(100)
            .await
            .unwrap()
            .iter()
            .any(|e| e.kind == "data_key_rotated"));
        store.close().await;
    });
}
