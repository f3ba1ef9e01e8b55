//! Kill test (issue 18): the real `vitals-hub run` process is SIGKILLed at random moments while it
//! fetches and applies a new alert-limits version from the clinic (the clinic saves a newer
//! version before every start). After each kill the store's limits in force are exactly the old
//! set or exactly the new one — never a mixture, never unreadable. Finally one hub runs until it
//! applied the newest version.
//!
//! 50 kills by default (`VITALS_KILLS=N` for more); the seed is printed (`VITALS_KILL_SEED=S`
//! replays one).
#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "daemon_support/mod.rs"]
mod support;

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{hub_command, signal, wait_exit, World, PATIENT};
use vitals_hub::alerts::{AlertRules, Limit};
use vitals_hub::fhir::limits::{merged_with_hub, LimitsVersion};
use vitals_hub::model::{Decimal, SystemClock, UtcMillis};
use vitals_hub::store::{Store, StoreConfig};
use vitals_hub::uplink::limits::{in_force, Source};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Version `v`: every threshold of the starting points moved, so a mixture of two versions would
/// differ from both.
fn version(v: u32) -> LimitsVersion {
    let mut rules = AlertRules::starting_points();
    let bump = i64::from(v);
    for r in rules.thresholds.values_mut() {
        if let Some(h) = r.high.as_mut() {
            *h = Limit(Decimal::new(h.0.mantissa + bump, h.0.exponent));
        }
        if let Some(c) = r.critical_high.as_mut() {
            *c = Limit(Decimal::new(c.0.mantissa + bump, c.0.exponent));
        }
    }
    rules.suppress_minutes = 30 + v;
    LimitsVersion {
        patient_id: PATIENT.into(),
        version: v,
        rules,
        effective: UtcMillis(1_764_547_200_000), // 2025-12-01: in force on arrival
        authored: UtcMillis(1_764_543_600_000),
        author: "dr.jones".into(),
        reason: format!("kill test version {v}"),
    }
}

/// The set version `v` arrives as (limits travel as JSON numbers: 39.0 arrives as 39).
fn sent(v: u32) -> AlertRules {
    LimitsVersion::from_service_request(&version(v).to_service_request().unwrap())
        .unwrap()
        .rules
}

/// The `[alerts]` of the hub's config.
fn hub_rules(config: &std::path::Path) -> AlertRules {
    vitals_hub::config::Config::load(config).unwrap().alerts
}

async fn limits_in_force(w: &World, hub: &AlertRules) -> (Option<u32>, AlertRules) {
    let mut sc = StoreConfig::new(w.state_dir());
    sc.patient_id = Some(PATIENT.into());
    let store = Store::open(sc, Arc::new(SystemClock)).await.unwrap();
    let f = in_force(&store, hub).await.unwrap();
    let unusable = store
        .events(1000)
        .await
        .unwrap()
        .iter()
        .any(|e| e.kind == "alert_limits_unusable");
    store.close().await;
    assert!(!unusable, "a stored version did not validate");
    let v = match f.source {
        Source::Clinic { version, .. } => Some(version),
        Source::HubToml => None,
    };
    (v, f.rules)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_applying_limits_leaves_the_old_or_the_new_set() {
    let kills: u32 = std::env::var("VITALS_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let seed: u64 = std::env::var("VITALS_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("kill seed {seed} (VITALS_KILL_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let w = World::enrolled(PATIENT).await;
    let config = w.config("hub.toml", "");
    let hub = hub_rules(&config);
    let (mut old, mut old_rules) = (None, hub.clone());
    let (mut kept, mut applied) = (0u32, 0u32);
    for i in 1..=kills {
        // The clinic saves a new version; the hub starts, fetches and applies it.
        let new = version(i);
        w.receiver
            .create_console_resource(&new.to_service_request().unwrap())
            .unwrap();
        let mut child = hub_command()
            .args(["run", "--config"])
            .arg(&config)
            .env("VITALS_HUB_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(rng.below(700))).await;
        signal(&child, "KILL");
        assert!(
            wait_exit(&mut child, 10).is_some(),
            "kill {i}: still running"
        );
        let (v, rules) = limits_in_force(&w, &hub).await;
        if v == old {
            assert_eq!(rules, old_rules, "kill {i}: version {v:?} but not its set");
            kept += 1;
        } else {
            assert_eq!(
                v,
                Some(i),
                "kill {i}: neither the old nor the newest version"
            );
            assert_eq!(
                rules,
                merged_with_hub(&sent(i), &hub),
                "kill {i}: version {i} but not exactly its set"
            );
            applied += 1;
            old = v;
            old_rules = rules;
        }
    }
    eprintln!("{kills} kills: {kept} kept the old set, {applied} had applied the new one");
    // Finally one hub runs until it has applied the newest version (SIGTERM once it did).
    let newest = kills + 1;
    w.receiver
        .create_console_resource(&version(newest).to_service_request().unwrap())
        .unwrap();
    let mut child = w.spawn(&config);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut sc = StoreConfig::new(w.state_dir());
    sc.patient_id = Some(PATIENT.into());
    let ro = sc.read_only();
    loop {
        let store = Store::open(ro.clone(), Arc::new(SystemClock))
            .await
            .unwrap();
        let v = store.alert_limits().await.unwrap().map(|s| s.version);
        store.close().await;
        if v == Some(newest) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the hub did not apply version {newest}: {}",
            support::stderr_of(&mut child)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    signal(&child, "TERM");
    assert!(wait_exit(&mut child, 20).is_some());
    let (v, rules) = limits_in_force(&w, &hub).await;
    assert_eq!(v, Some(newest));
    assert_eq!(rules, merged_with_hub(&sent(newest), &hub));
}
