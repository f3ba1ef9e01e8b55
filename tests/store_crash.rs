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
