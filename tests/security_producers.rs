#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! Producers of the hub's security events (issue 19 part 3) through the real daemon start: a
//! changed hub.toml is one `config_changed` event (code `config-change`) and the same file again
//! is none; the file's text (it names the patient) is never in the store's events or state.

#[path = "daemon_support/mod.rs"]
mod support;

use std::time::Duration;
use support::*;
use vitals_hub::config::Config;
use vitals_hub::daemon::{Daemon, Options};
use vitals_hub::store::security::code_for;
use vitals_hub::store::Event;

async fn start_and_stop(path: &std::path::Path) -> Vec<Event> {
    let cfg = Config::load(path).unwrap();
    let daemon = Daemon::start(&cfg, Options::default()).await.unwrap();
    let events = daemon.store().events(1000).await.unwrap();
    daemon.stop(Duration::from_secs(5)).await;
    events
}

fn of_kind<'a>(events: &'a [Event], kind: &str) -> Vec<&'a Event> {
    events.iter().filter(|e| e.kind == kind).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_hub_toml_is_one_config_change_event() {
    let w = World::new().await;
    let first = w.config("hub.toml", "");
    let events = start_and_stop(&first).await;
    assert!(
        of_kind(&events, "config_changed").is_empty(),
        "the first start has nothing to compare with"
    );
    // The same file again: no event.
    let events = start_and_stop(&first).await;
    assert!(of_kind(&events, "config_changed").is_empty());

    // A changed file (another threshold): one event, code `config-change`.
    let text = std::fs::read_to_string(&first)
        .unwrap()
        .replace("high = 250", "high = 240");
    std::fs::write(&first, &text).unwrap();
    let events = start_and_stop(&first).await;
    let changed = of_kind(&events, "config_changed");
    assert_eq!(changed.len(), 1, "{events:?}");
    assert_eq!(
        code_for(&changed[0].kind, &changed[0].severity),
        Some("config-change")
    );
    // Nothing of the text: not the patient, not a path, not the changed value.
    for needle in [PATIENT, "high", "240", "localhost"] {
        assert!(!changed[0].detail.contains(needle), "{}", changed[0].detail);
    }

    // Unchanged again: still one.
    let events = start_and_stop(&first).await;
    assert_eq!(of_kind(&events, "config_changed").len(), 1);

    // The security report counts it under its code.
    let stored = {
        let mut sc = vitals_hub::store::StoreConfig::new(w.state_dir());
        sc.patient_id = Some(PATIENT.into());
        vitals_hub::store::Store::open(sc, std::sync::Arc::new(vitals_hub::model::SystemClock))
            .await
            .unwrap()
    };
    let reports = stored.security_reports().await.unwrap();
    let n: u64 = reports
        .iter()
        .filter(|(r, _)| r.code == "config-change")
        .map(|(r, _)| r.count)
        .sum();
    assert_eq!(n, 1);
    // The state holds a digest, not the text.
    let kept = stored
        .uplink_state("hub", "config_sha256")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.len(), 64);
    assert!(kept.bytes().all(|b| b.is_ascii_hexdigit()));
    stored.close().await;
}

/// The system clock as the hub sees it, stepped by hand.
#[derive(Debug, Default)]
struct SteppedClock(std::sync::atomic::AtomicI64);

use vitals_hub::model::Clock;

impl Clock for SteppedClock {
    fn now(&self) -> vitals_hub::model::UtcMillis {
        vitals_hub::model::UtcMillis(
            vitals_hub::model::SystemClock.now().0
                + self.0.load(std::sync::atomic::Ordering::SeqCst),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_of_the_hubs_clock_is_one_clock_jump_event() {
    let w = World::new().await;
    let path = w.config("hub.toml", "");
    let cfg = Config::load(&path).unwrap();
    let clock = std::sync::Arc::new(SteppedClock::default());
    let opts = Options {
        clock: clock.clone(),
        time_sync: None,
        tick: Duration::from_millis(50),
    };
    let daemon = Daemon::start(&cfg, opts).await.unwrap();
    // Ticks with a steady clock: nothing.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let events = daemon.store().events(1000).await.unwrap();
    assert!(of_kind(&events, "clock_jump").is_empty(), "{events:?}");
    // The clock steps two hours forward: one event at the next tick, not one per tick after.
    clock
        .0
        .fetch_add(2 * 3_600_000, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = daemon.store().events(1000).await.unwrap();
    let jumps = of_kind(&events, "clock_jump");
    assert_eq!(jumps.len(), 1, "{events:?}");
    assert_eq!(
        code_for(&jumps[0].kind, &jumps[0].severity),
        Some("clock-jump")
    );
    // And back: a second step, a second event.
    clock
        .0
        .fetch_sub(2 * 3_600_000, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = daemon.store().events(1000).await.unwrap();
    let jumps = of_kind(&events, "clock_jump");
    assert_eq!(jumps.len(), 2, "{events:?}");
    assert!(jumps.iter().any(|e| e.detail.contains("stepped -")));
    let reports = daemon.store().security_reports().await.unwrap();
    let n: u64 = reports
        .iter()
        .filter(|(r, _)| r.code == "clock-jump")
        .map(|(r, _)| r.count)
        .sum();
    assert_eq!(n, 2);
    daemon.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wipe_is_recorded_in_the_new_store_at_its_first_open() {
    let w = World::new().await;
    let path = w.config("hub.toml", "");
    let events = start_and_stop(&path).await;
    assert!(of_kind(&events, "wipe").is_empty());
    // The technician's wipe (the real one: it erases hub.toml too).
    let cfg = Config::load(&path).unwrap();
    let erased = vitals_hub::tech::wipe::wipe(&cfg).unwrap();
    assert!(erased.iter().any(|(p, _)| p.ends_with("store.db")));
    assert!(!w.state_dir().join("store.db").exists());
    let marker =
        std::fs::read_to_string(w.state_dir().join(vitals_hub::store::WIPED_MARKER)).unwrap();
    assert!(marker.trim().parse::<i64>().unwrap() > 0, "{marker}");
    // Set up again: the new store's first open records the wipe, once.
    let path = w.config("hub.toml", "");
    let events = start_and_stop(&path).await;
    let wipes = of_kind(&events, "wipe");
    assert_eq!(wipes.len(), 1, "{events:?}");
    assert_eq!(code_for(&wipes[0].kind, &wipes[0].severity), Some("wipe"));
    assert!(!w.state_dir().join(vitals_hub::store::WIPED_MARKER).exists());
    let events = start_and_stop(&path).await;
    assert_eq!(of_kind(&events, "wipe").len(), 1, "not recorded again");
}
