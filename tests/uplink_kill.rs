//! Kill test (issue 20): the real `vitals-hub run` process drains a stored backlog to the receiver
//! and is SIGKILLed at random moments, mid-drain (a bundle on the wire, its ack commit under way,
//! the next batch read ahead). After every kill the store still holds every reading; at the end
//! one hub drains the rest, and the receiver holds every stored reading exactly once: none lost,
//! none stored twice (a bundle whose ack was not yet durable is sent again, as a conditional
//! create).
//!
//! 12 kills by default (`VITALS_KILLS=N` for more); the seed is printed (`VITALS_KILL_SEED=S`
//! replays one).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "daemon_support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{signal, stderr_of, stored, wait_exit, World, PATIENT};
use vitals_hub::model::{
    Decimal, Kind, LocalDateTime, Reading, SystemClock, Unit, UtcMillis, Value,
};
use vitals_hub::store::{DeviceRecord, NewReading, Store, StoreConfig};

/// Readings in the backlog: at the default 40 per bundle, about a hundred bundles.
const BACKLOG: usize = 4_000;

/// A backlog of glucose readings from one meter, straight into the hub's store.
async fn fill(state_dir: &std::path::Path) {
    let mut sc = StoreConfig::new(state_dir);
    sc.patient_id = Some(PATIENT.into());
    let store = Store::open(sc, Arc::new(SystemClock)).await.unwrap();
    let dev = store
        .upsert_device(
            DeviceRecord {
                address: "00:60:19:4B:2C:1D".into(),
                name: Some("GM-100".into()),
                profile: "glucose".into(),
                ..DeviceRecord::default()
            },
            true,
        )
        .await
        .unwrap();
    let base = LocalDateTime::new(2025, 1, 1, 0, 0, 0).unwrap();
    let mut i = 0;
    while i < BACKLOG {
        let items = (i..(i + 500).min(BACKLOG))
            .map(|k| {
                let mut r = Reading::new(
                    Kind::Glucose,
                    Value::Number(Decimal::new(90 + (k % 60) as i64, 0)),
                    Unit::MgPerDl,
                );
                r.device_time = Some(base.add_minutes(k as i64).unwrap());
                NewReading {
                    reading: r,
                    received_at: UtcMillis(1_735_689_600_000 + k as i64 * 60_000),
                    stable_key: format!("kill-{k}"),
                    test_data: true,
                    summary: None,
                }
            })
            .collect();
        store.append(&dev, items, None).await.unwrap();
        i += 500;
    }
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_drain_loses_and_duplicates_nothing() {
    let w = World::new().await;
    fill(&w.state_dir()).await;
    let cfg = w.config("hub.toml", "");
    let mut seed: u64 = std::env::var("VITALS_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    eprintln!("VITALS_KILL_SEED={seed}");
    let kills: usize = std::env::var("VITALS_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let mut killed_mid_drain = 0;
    for round in 0..kills {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let before = w.at_receiver().len();
        let mut hub = w.spawn(&cfg);
        // Wait until this hub has delivered something (start-up is not what is tested), then a
        // random moment of the drain.
        let end = Instant::now() + Duration::from_secs(60);
        while w.at_receiver().len() == before && w.at_receiver().len() < BACKLOG {
            if Instant::now() > end {
                signal(&hub, "KILL");
                panic!(
                    "round {round}: nothing delivered in 60 s:\n{}",
                    stderr_of(&mut hub)
                );
            }
            if let Some(s) = hub.try_wait().unwrap() {
                panic!(
                    "round {round}: the hub exited {s:?}:\n{}",
                    stderr_of(&mut hub)
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(seed % 400)).await;
        if w.at_receiver().len() < BACKLOG {
            killed_mid_drain += 1;
        }
        signal(&hub, "KILL");
        wait_exit(&mut hub, 10).expect("SIGKILL did not end the hub");
        // Nothing the hub stored is lost at a kill.
        let s = stored(&w.state_dir()).await;
        assert_eq!(s.readings, BACKLOG, "round {round}: stored readings lost");
        // Nothing is at the receiver twice, whatever the moment of the kill.
        for (id, n) in w.at_receiver() {
            assert_eq!(n, 1, "round {round}: {id} is at the receiver {n} times");
        }
        if s.pending == 0 {
            break;
        }
    }
    assert!(killed_mid_drain > 0, "no kill landed mid-drain");
    // One hub drains the rest.
    let mut hub = w.spawn(&cfg);
    let end = Instant::now() + Duration::from_secs(120);
    while w.at_receiver().len() < BACKLOG && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The last acks committed before the stop.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    signal(&hub, "TERM");
    let status = wait_exit(&mut hub, 15).expect("no exit within 15 s of SIGTERM");
    let err = stderr_of(&mut hub);
    assert!(status.success(), "exit {status:?}\n{err}");
    assert!(
        !err.contains(PATIENT),
        "the patient id is in the log:\n{err}"
    );
    let s = stored(&w.state_dir()).await;
    assert_eq!(s.pending, 0, "the outbox was not drained\n{err}");
    let at = w.at_receiver();
    assert_eq!(s.identifiers.len(), BACKLOG);
    for (id, n) in &at {
        assert_eq!(*n, 1, "{id} is at the receiver {n} times");
    }
    for id in s.identifiers.keys() {
        assert_eq!(
            at.get(id).copied(),
            Some(1),
            "stored reading {id} is not at the receiver"
        );
    }
    eprintln!(
        "{killed_mid_drain} SIGKILLs mid-drain: {} readings, each at the receiver exactly once",
        s.readings
    );
}
