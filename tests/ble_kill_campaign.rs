//! Kill campaign (issue 14): the real `vitals-hub run` process, talking to the fake BlueZ on this
//! test's private D-Bus broker, is SIGKILLed at random moments while it downloads a glucose meter
//! whose every record has a context record (a slow meter, commits of a few records) and while it
//! back-fills a CGM through its RACP (the sensor keeps measuring, one record per cycle, sent live
//! when someone listens). Both devices keep gaining records between kills. After each kill the
//! fake drops the links (BlueZ tears down a dead client's connection). Finally one hub runs to
//! the end and is stopped with SIGTERM; then the store must hold every record the devices hold,
//! exactly once, with its context, and the cursors must be the devices' newest records.
//!
//! 100 kills by default (`VITALS_KILLS=N` for more); the seed is printed (`VITALS_KILL_SEED=S`
//! replays one).
#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "fake_bluez/mod.rs"]
mod fake_bluez;
#[path = "daemon_support/mod.rs"]
mod support;

use fake_bluez::devices::{cgm_device, cgm_record, glucose_meter, GlucoseMeter, RacpCgm};
use fake_bluez::harness::now_local;
use fake_bluez::FakeBluez;
use std::collections::BTreeMap;
use std::process::{Child, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{hub_command, World, PATIENT};
use vitals_hub::gatt::racp::response;
use vitals_hub::model::{Kind, LocalDateTime, Meal, SystemClock};
use vitals_hub::store::{DeviceRecord, Store, StoreConfig};

const METER: &str = "C0:26:DA:00:0C:01";
const CGM: &str = "C0:26:DA:00:0C:02";

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

fn config(w: &World) -> std::path::PathBuf {
    let text = format!(
        r#"[hub]
patient_id = "{PATIENT}"
state_dir = "{state}"
timezone = "UTC"

[uplink]
base_url = "https://localhost:{port}/fhir"
ca_bundle = "{ca}"
client_cert = "{cert}"
client_key = "{key}"
require_clock_sync = false
hub_mac = "02:00:5E:10:00:02"
retry_base_ms = 100
retry_cap_ms = 1000
poll_interval_ms = 500

[ble]
enabled = true
scan_window_ms = 300
scan_pause_ms = 50
connect_timeout_ms = 2000
op_timeout_ms = 2000
connect_attempts = 3
backoff_ms = 50
session_timeout_ms = 60000
cooldown_ms = 200
retry_after_ms = 100
quiet_ms = 500
racp_idle_ms = 700
commit_batch = 4
"#,
        state = w.state_dir().display(),
        port = w.receiver.addr().port(),
        ca = w.pki.ca.display(),
        cert = w.pki.hub_cert.display(),
        key = w.pki.hub_key.display(),
    );
    let p = w.dir.path().join("hub.toml");
    std::fs::write(&p, text).unwrap();
    p
}

async fn open(w: &World) -> Store {
    let mut sc = StoreConfig::new(w.state_dir());
    sc.patient_id = Some(PATIENT.into());
    Store::open(sc, Arc::new(SystemClock)).await.unwrap()
}

fn spawn(w: &World, cfg: &std::path::Path, log: &std::path::Path) -> Child {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    hub_command()
        .args(["run", "--config"])
        .arg(cfg)
        .env("VITALS_HUB_LOG", "info")
        .env(
            "DBUS_SYSTEM_BUS_ADDRESS",
            std::env::var("DBUS_SYSTEM_BUS_ADDRESS").unwrap(),
        )
        .current_dir(w.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(f))
        .spawn()
        .unwrap()
}

async fn reap(mut child: Child) {
    tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
}

/// The meter's records 1..=n, each with its context.
fn grow_meter(swap: &fake_bluez::devices::MeterSwap, start: LocalDateTime, n: u16) {
    let m = GlucoseMeter::new(start, n).with_contexts();
    *swap.lock().unwrap() = Some((1, m.records));
}

fn cgm_value(off: u16) -> i64 {
    90 + i64::from(off / 5 % 60)
}

#[test]
fn sigkill_during_glucose_and_cgm_transfers_loses_and_duplicates_nothing() {
    let kills: usize = std::env::var("VITALS_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
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
    println!("kill campaign: {kills} kills, seed {seed} (VITALS_KILL_SEED={seed} replays it)");
    fake_bluez::harness::run(|broker| async move {
        let mut rng = Rng(seed);
        let w = World::new().await;
        let cfg = config(&w);
        let log_path = w.dir.path().join("hub.log");
        let now = now_local();
        let meter_start = now.add_minutes(-20 * 24 * 60).unwrap();
        let sst = now.add_minutes(-5 * 24 * 60).unwrap();

        let mut meter_n: u16 = 30;
        let mut meter = GlucoseMeter::new(meter_start, meter_n).with_contexts();
        meter.gap = Duration::from_millis(12);
        let swap = meter.swap.clone();
        let meter_answers = meter.answered.clone();
        let cgm_log: fake_bluez::devices::CgmLog = Arc::new(Mutex::new(
            (1..=30u16).map(|i| (cgm_value(i * 5), i * 5)).collect(),
        ));
        let cgm_answers: fake_bluez::devices::RacpAnswers = Arc::default();
        let cgm = cgm_device(
            CGM,
            Box::new(RacpCgm {
                log: cgm_log.clone(),
                gap: Duration::from_millis(12),
                answered: cgm_answers.clone(),
            }),
            Some(sst),
            false,
            150,
            now,
        );
        let fake =
            FakeBluez::start(&broker.address, vec![glucose_meter(METER, meter, now), cgm]).await;

        // Both devices paired for the patient.
        {
            let store = open(&w).await;
            for (a, p) in [(METER, "glucose"), (CGM, "cgm")] {
                let rec = DeviceRecord {
                    address: a.into(),
                    name: None,
                    profile: p.into(),
                    patient_binding: Some(PATIENT.into()),
                    serial: None,
                    bond: None,
                };
                store.upsert_device(rec, true).await.unwrap();
            }
            store.close().await;
        }

        let started = Instant::now();
        let mut mid_session = 0usize;
        let mut next_off: u16 = 31 * 5;
        for round in 0..kills {
            // The devices gain records: the meter one or two, the CGM one (measured while the
            // hub is down, or sent live below).
            meter_n += 1 + u16::from(rng.below(2) == 0);
            grow_meter(&swap, meter_start, meter_n);
            let child = spawn(&w, &cfg, &log_path);
            tokio::time::sleep(Duration::from_millis(150 + rng.below(700))).await;
            let off = next_off;
            next_off += 5;
            cgm_log.lock().unwrap().push((cgm_value(off), off));
            fake.notify(CGM, 0x2AA7, cgm_record(cgm_value(off), off))
                .await;
            tokio::time::sleep(Duration::from_millis(rng.below(500))).await;
            let busy = fake.device(METER).connected.load(Ordering::SeqCst)
                || fake.device(CGM).connected.load(Ordering::SeqCst);
            // `Child::kill` is SIGKILL on Unix.
            let mut child = child;
            child.kill().unwrap();
            reap(child).await;
            mid_session += usize::from(busy);
            // BlueZ tears down the links a dead client held.
            fake.hang_up_all().await;
            if round % 20 == 19 {
                println!(
                    "kill campaign: {} kills, {mid_session} mid-session, {:?}",
                    round + 1,
                    started.elapsed()
                );
            }
        }

        // The last run: no more records; it runs until the meter says nothing is newer than
        // its newest record and the CGM answered a back-fill, then stops cleanly.
        let meter_answers_before = meter_answers.lock().unwrap().len();
        let cgm_answers_before = cgm_answers.lock().unwrap().len();
        let mut child = spawn(&w, &cfg, &log_path);
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let meter_done = meter_answers.lock().unwrap()[meter_answers_before..]
                .iter()
                .any(|(from, code)| *from == meter_n + 1 && *code == response::NO_RECORDS_FOUND);
            let cgm_done = cgm_answers.lock().unwrap().len() > cgm_answers_before;
            if meter_done && cgm_done {
                break;
            }
            if Instant::now() > end {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                panic!(
                    "seed {seed}: the last run did not finish (meter {meter_done}, cgm {cgm_done}); log tail:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        support::signal(&child, "TERM");
        let status = tokio::task::spawn_blocking(move || {
            let s = support::wait_exit(&mut child, 20);
            if s.is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
            s
        })
        .await
        .unwrap();
        assert!(
            status.is_some_and(|s| s.success()),
            "seed {seed}: the hub did not stop cleanly: {status:?}"
        );

        // Compare the store with what the devices hold.
        let store = open(&w).await;
        let mut glucose: BTreeMap<u16, usize> = BTreeMap::new();
        let mut cgm_seen: BTreeMap<i64, usize> = BTreeMap::new();
        let mut keys: BTreeMap<String, usize> = BTreeMap::new();
        let mut after = 0;
        loop {
            let page = store.readings(after, 1_000).await.unwrap();
            let Some(last) = page.last() else { break };
            after = last.id;
            for r in page {
                *keys.entry(r.stable_key.clone()).or_default() += 1;
                match r.reading.kind {
                    Kind::Glucose => {
                        let seq = r.reading.sequence.unwrap();
                        *glucose.entry(seq).or_default() += 1;
                        let want = if seq % 2 == 0 {
                            Meal::Fasting
                        } else {
                            Meal::Postprandial
                        };
                        assert_eq!(
                            r.reading.meal,
                            Some(want),
                            "seed {seed}: record {seq} stored without its context"
                        );
                        assert_eq!(
                            r.reading.value.number().unwrap().to_string(),
                            (80 + i64::from(seq % 100)).to_string(),
                            "seed {seed}: record {seq}'s value"
                        );
                    }
                    Kind::CgmGlucose => {
                        let t = r.reading.device_time.unwrap();
                        let off = (t.to_epoch_seconds() - sst.to_epoch_seconds()) / 60;
                        *cgm_seen.entry(off).or_default() += 1;
                        assert_eq!(
                            r.reading.value.number().unwrap().to_string(),
                            cgm_value(off as u16).to_string(),
                            "seed {seed}: CGM offset {off}'s value"
                        );
                    }
                    _ => {}
                }
            }
        }
        for (k, n) in &keys {
            assert_eq!(*n, 1, "seed {seed}: {k} stored {n} times");
        }
        let want_glucose: Vec<u16> = (1..=meter_n).collect();
        let missing: Vec<u16> = want_glucose
            .iter()
            .filter(|s| !glucose.contains_key(s))
            .copied()
            .collect();
        assert!(
            missing.is_empty(),
            "seed {seed}: glucose records lost: {missing:?}"
        );
        assert!(
            glucose.values().all(|n| *n == 1) && glucose.len() == usize::from(meter_n),
            "seed {seed}: glucose records duplicated or unknown: {glucose:?}"
        );
        let want_cgm: Vec<i64> = cgm_log
            .lock()
            .unwrap()
            .iter()
            .map(|(_, o)| i64::from(*o))
            .collect();
        let missing: Vec<i64> = want_cgm
            .iter()
            .filter(|o| !cgm_seen.contains_key(o))
            .copied()
            .collect();
        assert!(
            missing.is_empty(),
            "seed {seed}: CGM records lost: {missing:?}"
        );
        assert!(
            cgm_seen.values().all(|n| *n == 1) && cgm_seen.len() == want_cgm.len(),
            "seed {seed}: CGM records duplicated or unknown"
        );
        // The cursors are the devices' newest records.
        let meter_key = store.device_by_address(METER).await.unwrap().unwrap().key;
        let cgm_key = store.device_by_address(CGM).await.unwrap().unwrap().key;
        assert_eq!(
            store
                .cursor(&meter_key, vitals_hub::ble::CURSOR_GLUCOSE)
                .await
                .unwrap(),
            Some(i64::from(meter_n)),
            "seed {seed}: glucose cursor"
        );
        let c = store
            .cursor(&cgm_key, vitals_hub::ble::CURSOR_CGM)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            c & 0xFFFF,
            *want_cgm.iter().max().unwrap(),
            "seed {seed}: CGM cursor"
        );
        assert_eq!(
            c >> 16,
            sst.to_epoch_seconds().div_euclid(60),
            "seed {seed}: CGM cursor's sensor session"
        );
        assert_eq!(store.integrity_check().await.unwrap(), "ok");
        store.close().await;
        println!(
            "kill campaign: {kills} kills ({mid_session} with a device connected), {} glucose records with contexts, {} CGM records, {:?}",
            meter_n,
            want_cgm.len(),
            started.elapsed()
        );
        assert!(
            mid_session >= kills / 2,
            "seed {seed}: too few kills landed during a session ({mid_session} of {kills})"
        );
        drop(fake);
        drop(broker);
    });
}
