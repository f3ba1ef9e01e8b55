//! Crash test with real processes: a child appends in a loop and is SIGKILLed at random moments.
//! After every kill the store is reopened: every append the child saw return `Ok` is present exactly
//! once, nothing is duplicated, every reading has its outbox entry, the cursor covers what was
//! acknowledged, and `PRAGMA integrity_check` passes.
//!
//! The child is this test binary run again with `crash_child_process --exact` and
//! `VITALS_CRASH_CHILD_DIR` set; without that variable the child test does nothing. 200 kills by
//! default; `CRASH_KILLS=N` (or `VITALS_SOAK=1` for 5000) runs more.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod store_support;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use store_support::*;
use vitals_hub::model::{Clock, SystemClock};
use vitals_hub::store::Store;

const CHILD_DIR: &str = "VITALS_CRASH_CHILD_DIR";
const CHILD_START: &str = "VITALS_CRASH_START";

/// The child: append forever, print `ACK <key> <cursor>` only after `append` returned Ok.
#[test]
fn crash_child_process() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let start: u64 = std::env::var(CHILD_START).unwrap().parse().unwrap();
    let rt = rt();
    rt.block_on(async {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let store = Store::open(config(std::path::Path::new(&dir)), clock)
            .await
            .unwrap();
        let dev = device(&store).await;
        let mut out = std::io::stdout().lock();
        let mut n = start;
        let mut last: Option<String> = None;
        loop {
            let size = 1 + (n % 3) as usize;
            let keys: Vec<String> = (0..size).map(|i| format!("k-{}", n + i as u64)).collect();
            let mut items: Vec<_> = keys.iter().map(|k| reading(100, k)).collect();
            // Re-append the previous batch's first key: it must come back as a duplicate.
            if let Some(k) = &last {
                items.push(reading(100, k));
            }
            let cursor = (n + size as u64 - 1) as i64;
            let outcome = store
                .append(&dev, items, Some(("racp".into(), cursor)))
                .await
                .unwrap();
            assert_eq!(outcome.duplicates, usize::from(last.is_some()));
            for k in &keys {
                writeln!(out, "ACK {k} {cursor}").unwrap();
            }
            out.flush().unwrap();
            last = keys.first().cloned();
            n += size as u64;
        }
    });
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[test]
fn sigkill_at_random_moments_loses_and_duplicates_nothing() {
    let kills: usize = std::env::var("CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if std::env::var_os("VITALS_SOAK").is_some() {
            5000
        } else {
            200
        });
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("crash test: {kills} kills, seed {seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let rt = rt();
    let mut acked: HashSet<String> = HashSet::new();
    let mut max_cursor: i64 = -1;
    let mut kills_mid_append = 0usize;
    let started = Instant::now();
    for round in 0..kills {
        let mut child = Command::new(&exe)
            .args([
                "crash_child_process",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_START, (round as u64 * 1_000_000).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(5 + rng.next() % 60));
        // `Child::kill` is SIGKILL on Unix.
        child.kill().unwrap();
        let output = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        let mut got_any = false;
        for line in text.lines() {
            let mut parts = line.split_whitespace();
            if parts.next() == Some("ACK") {
                acked.insert(parts.next().unwrap().to_owned());
                max_cursor = max_cursor.max(parts.next().unwrap().parse().unwrap());
                got_any = true;
            }
        }
        kills_mid_append += usize::from(got_any);

        // Restart and check.
        rt.block_on(async {
            let clock: Arc<dyn Clock> = Arc::new(SystemClock);
            let store = Store::open(config(dir.path()), clock).await.unwrap();
            let mut seen: HashMap<String, usize> = HashMap::new();
            let mut after = 0;
            loop {
                let batch = store.readings(after, 5000).await.unwrap();
                let Some(last) = batch.last() else { break };
                after = last.id;
                for r in batch {
                    *seen.entry(r.stable_key).or_default() += 1;
                }
            }
            for (k, n) in &seen {
                assert_eq!(*n, 1, "round {round}: {k} stored {n} times");
            }
            for k in &acked {
                assert!(seen.contains_key(k), "round {round}: acknowledged {k} lost");
            }
            let stats = store.stats().await.unwrap();
            assert_eq!(stats.pending + stats.in_flight, seen.len() as u64);
            if max_cursor >= 0 {
                let dev = device(&store).await;
                let c = store.cursor(&dev, "racp").await.unwrap().unwrap();
                assert!(
                    c >= max_cursor,
                    "round {round}: cursor {c} < acked {max_cursor}"
                );
            }
            assert_eq!(store.integrity_check().await.unwrap(), "ok");
            store.close().await;
        });
    }
    println!(
        "crash test: {kills} kills ({kills_mid_append} after at least one ack), {} acked appends, {:?}",
        acked.len(),
        started.elapsed()
    );
    assert!(
        kills_mid_append > kills / 4,
        "too few kills landed while appending"
    );
}

const INGEST_CHILD_DIR: &str = "VITALS_INGEST_CRASH_CHILD_DIR";

fn ingest_config() -> vitals_hub::daemon::IngestConfig {
    vitals_hub::daemon::IngestConfig {
        rules: vitals_hub::alerts::AlertRules::starting_points(),
        patient_id: "patient-crash".into(),
        utc_offset_minutes: 0,
        zone: vitals_hub::model::Zone::utc(),
    }
}

/// The child of the ingest kill test: readings through ingest (store, then the alert rules) in a
/// loop, glucose values that open, escalate and close episodes, a snapshot every 5 readings.
#[test]
fn ingest_crash_child_process() {
    use vitals_hub::daemon::Ingest;
    let Some(dir) = std::env::var_os(INGEST_CHILD_DIR) else {
        return;
    };
    let start: i64 = std::env::var(CHILD_START).unwrap().parse().unwrap();
    let rt = rt();
    rt.block_on(async {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let store = Store::open(config(std::path::Path::new(&dir)), clock)
            .await
            .unwrap();
        let dev = device(&store).await;
        let ingest = Ingest::open(store, ingest_config())
            .await
            .unwrap()
            .with_snapshot_every(5);
        const VALUES: [i64; 11] = [110, 65, 45, 120, 130, 300, 450, 100, 52, 240, 90];
        let mut n = start;
        loop {
            let size = 1 + (n % 3) as usize;
            let mut items: Vec<_> = (0..size as i64)
                .map(|i| {
                    let k = n + i;
                    let mut r = reading(VALUES[(k % 11) as usize], &format!("g-{k}"));
                    r.received_at = vitals_hub::model::UtcMillis(T0 + k * 60_000);
                    r
                })
                .collect();
            // A duplicate now and then: never evaluated twice.
            if n % 4 == 0 && n > start {
                let mut r = reading(VALUES[0], &format!("g-{}", n - 1));
                r.received_at = vitals_hub::model::UtcMillis(T0 + (n - 1) * 60_000);
                items.push(r);
            }
            ingest.append(&dev, items, None).await.unwrap();
            n += size as i64;
        }
    });
}

/// Copy a store directory (database, WAL, key file; modes kept) to `to`.
fn copy_store(from: &std::path::Path, to: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700)).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_store(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// Issue 20: start-up takes the alert state from its last sealed snapshot and replays only the
/// readings after it. A child runs ingest and is SIGKILLed at random moments (mid-append, mid
/// snapshot, mid start-up replay); after every kill, two copies of the store are opened: one from
/// the snapshot plus the readings after it, one by a full replay of every stored reading. Their
/// alert states (episodes, weights, the last id evaluated, references, last reading per device)
/// are equal. The test also checks that the snapshot was really used: in most rounds it covers
/// some, but not all, of the stored readings.
#[test]
fn sigkill_during_ingest_snapshot_plus_replay_equals_full_replay() {
    use vitals_hub::daemon::{Ingest, Replay};
    let kills: usize = std::env::var("INGEST_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("ingest crash test: {kills} kills, seed {seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let rt = rt();
    let mut partial = 0usize;
    for round in 0..kills {
        let mut child = Command::new(&exe)
            .args([
                "ingest_crash_child_process",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(INGEST_CHILD_DIR, dir.path())
            .env(CHILD_START, (round as u64 * 1_000_000).to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(20 + rng.next() % 150));
        child.kill().unwrap();
        child.wait().unwrap();

        let copies = tempfile::tempdir().unwrap();
        let (a, b) = (copies.path().join("a"), copies.path().join("b"));
        copy_store(dir.path(), &a);
        copy_store(dir.path(), &b);
        rt.block_on(async {
            let open = |p: std::path::PathBuf| async move {
                let clock: Arc<dyn Clock> = Arc::new(SystemClock);
                Store::open(config(&p), clock).await.unwrap()
            };
            let store_a = open(a.clone()).await;
            let snap = store_a.snapshot("alerts").await.unwrap();
            let newest = store_a
                .readings(0, usize::MAX)
                .await
                .unwrap()
                .last()
                .map_or(0, |r| r.id);
            if let Some(s) = &snap {
                assert!(
                    s.covers <= newest,
                    "round {round}: snapshot past the readings"
                );
                partial += usize::from(s.covers > 0 && s.covers < newest);
            }
            let from_snapshot =
                Ingest::open_with(store_a.clone(), ingest_config(), Replay::FromSnapshot)
                    .await
                    .unwrap();
            let store_b = open(b.clone()).await;
            let full = Ingest::open_with(store_b.clone(), ingest_config(), Replay::Full)
                .await
                .unwrap();
            assert_eq!(
                from_snapshot.state().await,
                full.state().await,
                "round {round}: snapshot + replay differs from a full replay"
            );
            drop((from_snapshot, full));
            store_a.close().await;
            store_b.close().await;
        });
    }
    println!("ingest crash test: {partial} of {kills} rounds started from a snapshot covering part of the readings");
    assert!(
        partial > kills / 4,
        "too few rounds exercised a snapshot plus a replay ({partial} of {kills})"
    );
}
