//! The real `vitals-hub run` binary end to end: simulated devices → encrypted store → alerts →
//! the receiver over mutual TLS; SIGTERM ends it cleanly; SIGKILL at random moments, 20 times,
//! loses nothing and duplicates nothing.
#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "daemon_support/mod.rs"]
mod support;

use std::time::{Duration, Instant};
use support::*;

/// Drain what the store holds with a hub that has no devices, then check that every stored
/// reading's Observation is at the receiver exactly once.
async fn drain_and_check(w: &World, what: &str) -> Stored {
    let quiet = w.config("drain.toml", "");
    let mut hub = w.spawn(&quiet);
    // Wait until the receiver stops growing for 3 s.
    let mut last = (0usize, Instant::now());
    let end = Instant::now() + Duration::from_secs(90);
    while Instant::now() < end {
        let n = w.at_receiver().len();
        if n != last.0 {
            last = (n, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    signal(&hub, "TERM");
    let status = wait_exit(&mut hub, 15).expect("the hub did not stop within 15 s of SIGTERM");
    let err = stderr_of(&mut hub);
    assert!(
        status.success(),
        "{what}: drain run exited {status:?}\n{err}"
    );
    let s = stored(&w.state_dir()).await;
    assert_eq!(s.pending, 0, "{what}: the outbox was not drained\n{err}");
    let at = w.at_receiver();
    assert!(!s.identifiers.is_empty(), "{what}: nothing stored");
    for (id, n) in &at {
        assert_eq!(*n, 1, "{what}: {id} is at the receiver {n} times");
    }
    for id in s.identifiers.keys() {
        assert_eq!(
            at.get(id).copied(),
            Some(1),
            "{what}: stored reading {id} is not at the receiver"
        );
    }
    s
}

/// The glucose meter's records are numbered 1, 2, …: the hub must hold a run without gaps.
fn assert_no_gaps(seqs: &[u32], what: &str) {
    let mut v = seqs.to_vec();
    v.sort_unstable();
    v.dedup();
    assert_eq!(
        v.len(),
        seqs.len(),
        "{what}: a glucose record is stored twice"
    );
    assert_eq!(
        v.first(),
        Some(&1),
        "{what}: the first stored records are missing"
    );
    for pair in v.windows(2) {
        assert_eq!(
            pair[1],
            pair[0] + 1,
            "{what}: glucose records missing after {}",
            pair[0]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_devices_reach_the_receiver_and_sigterm_loses_nothing() {
    let w = World::new().await;
    let cfg = w.config("hub.toml", FAST_DEVICES);
    let mut hub = w.spawn(&cfg);
    let end = Instant::now() + Duration::from_secs(60);
    while w.receiver.count("DetectedIssue") == 0 || w.at_receiver().len() < 20 {
        assert!(
            Instant::now() < end,
            "nothing reached the receiver in 60 s: {}",
            {
                signal(&hub, "KILL");
                stderr_of(&mut hub)
            }
        );
        if let Some(s) = hub.try_wait().unwrap() {
            panic!("the hub exited {s:?}:\n{}", stderr_of(&mut hub));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let t = Instant::now();
    signal(&hub, "TERM");
    let status = wait_exit(&mut hub, 10).expect("no exit within 10 s of SIGTERM");
    let err = stderr_of(&mut hub);
    assert!(status.success(), "exit {status:?}\n{err}");
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(err.contains("Hub stopped."), "{err}");
    // No PHI in the log: no patient id, no values.
    assert!(
        !err.contains(PATIENT),
        "the patient id is in the log:\n{err}"
    );
    let s = drain_and_check(&w, "after SIGTERM").await;
    assert_no_gaps(&s.glucose_sequences, "after SIGTERM");
    assert_eq!(s.alerts, 1, "one glucose value crosses the threshold once");
    // The simulated readings are test data upstream (the hub's own status Observations are not).
    let mut marked = 0;
    for o in w.receiver.resources("Observation") {
        let ids: Vec<String> = o["identifier"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["value"].as_str().map(String::from))
            .collect();
        if ids.iter().any(|i| s.identifiers.contains_key(i)) {
            assert!(
                o["meta"].to_string().contains("HTEST"),
                "not marked as test data: {o}"
            );
            marked += 1;
        }
    }
    assert_eq!(marked, s.identifiers.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_twenty_times_loses_and_duplicates_nothing() {
    let w = World::new().await;
    let cfg = w.config("hub.toml", FAST_DEVICES);
    let mut seed: u64 = std::env::var("KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1234);
    let mut before = std::collections::BTreeSet::new();
    let rounds: usize = std::env::var("KILL_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    for round in 0..rounds {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let alive = Duration::from_millis(300 + seed % 2200);
        let mut hub = w.spawn(&cfg);
        tokio::time::sleep(alive).await;
        if let Some(s) = hub.try_wait().unwrap() {
            panic!(
                "round {round}: the hub exited {s:?} by itself:\n{}",
                stderr_of(&mut hub)
            );
        }
        signal(&hub, "KILL");
        let _ = wait_exit(&mut hub, 10).expect("SIGKILL did not end the hub");
        // What the hub had stored is still there: nothing lost at a kill.
        let s = stored(&w.state_dir()).await;
        let now: std::collections::BTreeSet<String> = s.identifiers.keys().cloned().collect();
        let lost: Vec<_> = before.difference(&now).collect();
        assert!(
            lost.is_empty(),
            "round {round} (alive {alive:?}): stored readings lost: {lost:?}"
        );
        before = now;
    }
    let s = drain_and_check(&w, "after the kills").await;
    assert_no_gaps(&s.glucose_sequences, "after the kills");
    assert!(s.identifiers.len() >= before.len());
    eprintln!(
        "{rounds} SIGKILLs: {} readings stored, {} Observations at the receiver, each exactly once",
        s.readings,
        w.at_receiver().len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heart_rate_stream_alerts_on_raw_values_and_stores_summaries() {
    let w = World::new().await;
    let devices = r#"
[[device]]
name = "strap"
kind = "simulated"
profile = "heart-rate"
interval_secs = 3
values = [72, 74, 150, 76, 71]

[alerts.thresholds.heart_rate]
unit = "/min"
low = 40
high = 130
"#;
    let cfg = w.config("hub.toml", devices);
    let mut hub = w.spawn(&cfg);
    let end = Instant::now() + Duration::from_secs(60);
    // The alert (from a raw value) and a window summary (at the end of a burst) reach the clinic.
    let summary_arrived = || {
        w.receiver
            .resources("Observation")
            .iter()
            .any(|o| o["meta"].to_string().contains("HTEST"))
    };
    while w.receiver.count("DetectedIssue") == 0 || !summary_arrived() {
        if Instant::now() > end {
            signal(&hub, "KILL");
            panic!(
                "no alert or summary from the stream in 60 s:\n{}",
                stderr_of(&mut hub)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    signal(&hub, "TERM");
    assert!(wait_exit(&mut hub, 10).expect("no exit").success());
    let s = stored(&w.state_dir()).await;
    // The store holds window summaries (the mean), never the raw 150 on its own.
    assert!(s.readings > 0);
    assert_eq!(s.alerts, 1, "one episode for the stream's high values");
}
