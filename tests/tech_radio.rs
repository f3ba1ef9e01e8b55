//! The technician's radio commands, as the real binary, against the fake BlueZ on a private bus:
//! `scan` (health devices, paired / unsupported marked), `pair` (passkey, Device Information,
//! clock set, allow-list bound to the patient), the failure paths (wrong passkey, no passkey, no
//! BlueZ), `devices` and `unpair`.
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

use fake_bluez::devices::{clock_bytes, glucose_meter, stream_device, GlucoseMeter, Stream};
use fake_bluez::harness::now_local;
use fake_bluez::FakeBluez;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use support::{hub_command, World, PATIENT};
use vitals_hub::model::SystemClock;
use vitals_hub::store::{Store, StoreConfig};

const METER: &str = "C0:26:DA:00:08:01";
const WRONG_KEY: &str = "C0:26:DA:00:08:02";
const INSULIN: &str = "C0:26:DA:00:08:03";
const CUFF: &str = "C0:26:DA:00:08:04";

async fn run(args: &[&str], config: &std::path::Path) -> (i32, String, String) {
    let mut c = hub_command();
    c.args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null());
    let out = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn line(out: &str, start: &str) -> String {
    out.lines()
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("{start} not listed:\n{out}"))
        .to_string()
}

async fn open(w: &World) -> Store {
    let mut sc = StoreConfig::new(w.state_dir());
    sc.patient_id = Some(PATIENT.into());
    Store::open(sc, Arc::new(SystemClock)).await.unwrap()
}

#[test]
fn scan_pair_devices_unpair() {
    fake_bluez::harness::run(|broker| async move {
        let w = World::new().await;
        let cfg = w.config("hub.toml", "");
        let start = now_local().add_minutes(-1000).unwrap();
        // The meter's clock is ten minutes slow; it wants passkey 123456.
        let slow = now_local().add_minutes(-10).unwrap();
        let meter = glucose_meter(METER, GlucoseMeter::new(start, 3), slow).unbonded(Some(123_456));
        let wrong = glucose_meter(WRONG_KEY, GlucoseMeter::new(start, 3), now_local())
            .unbonded(Some(111_111));
        let insulin = stream_device(
            INSULIN,
            "pump",
            0x183A,
            vec![(0x2B20, &["read"], vec![0])],
            Stream {
                trigger: 0,
                values: vec![],
                gap: std::time::Duration::ZERO,
                hang_up: false,
                sent: false,
            },
            now_local(),
        );
        let cuff = stream_device(
            CUFF,
            "cuff",
            0x1810,
            vec![(0x2A35, &["indicate"], Vec::new())],
            Stream {
                trigger: 0x2A35,
                values: vec![],
                gap: std::time::Duration::ZERO,
                hang_up: true,
                sent: false,
            },
            now_local(),
        );
        let fake = FakeBluez::start(&broker.address, vec![meter, wrong, insulin, cuff]).await;
        let _ = clock_bytes;

        // scan: the health devices, the unsupported one marked, the already bonded cuff noted.
        let (code, out, err) = run(&["scan", "--seconds", "2"], &cfg).await;
        assert_eq!(code, 0, "{out}{err}");
        assert!(
            line(&out, METER).contains("glucose") && line(&out, METER).contains("not paired"),
            "{out}"
        );
        assert!(line(&out, INSULIN).contains("NOT SUPPORTED"), "{out}");
        assert!(
            line(&out, CUFF).contains("bonded in BlueZ, not on the allow-list"),
            "{out}"
        );

        // pair with the wrong passkey: refused, not allow-listed.
        let (code, out, err) = run(&["pair", WRONG_KEY, "--passkey", "222222"], &cfg).await;
        assert_eq!(code, 3, "{out}{err}");
        assert!(err.contains("pairing") && err.contains(WRONG_KEY), "{err}");
        // no passkey at all (stdin closed): refused too.
        let (code, _, err) = run(&["pair", WRONG_KEY], &cfg).await;
        assert_eq!(code, 3, "{err}");
        {
            let store = open(&w).await;
            let d = store.device_by_address(WRONG_KEY).await.unwrap();
            assert!(
                d.is_none_or(|d| !d.allowed),
                "a device that failed pairing is allow-listed"
            );
            // Each failure is a security event (code `pairing-failure`) naming no address.
            let failures: Vec<_> = store
                .events(1000)
                .await
                .unwrap()
                .into_iter()
                .filter(|e| {
                    vitals_hub::store::security::code_for(&e.kind, &e.severity)
                        == Some("pairing-failure")
                })
                .collect();
            assert_eq!(failures.len(), 2, "{failures:?}");
            assert!(
                failures.iter().any(|e| e.kind == "ble_passkey_mismatch"),
                "{failures:?}"
            );
            assert!(failures.iter().all(|e| !e.detail.contains(WRONG_KEY)));
            store.close().await;
        }

        // pair the meter: passkey answered, clock set, allow-listed for the patient.
        let (code, out, err) = run(
            &[
                "pair",
                METER,
                "--name",
                "meter",
                "--set-clock",
                "--passkey",
                "123456",
            ],
            &cfg,
        )
        .await;
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("glucose"), "{out}");
        assert!(out.contains("security=authenticated-passkey"), "{out}");
        assert!(out.contains("set to the hub's time"), "{out}");
        let m = fake.device(METER);
        assert!(m.paired.load(Ordering::SeqCst) && m.trusted.load(Ordering::SeqCst));
        assert_eq!(m.writes_to(0x2A2B).len(), 1, "the clock was written once");
        {
            let store = open(&w).await;
            let d = store.device_by_address(METER).await.unwrap().unwrap();
            assert!(d.allowed);
            assert_eq!(d.record.patient_binding.as_deref(), Some(PATIENT));
            assert_eq!(d.record.profile, "glucose");
            let info = store.device_info(&d.key).await.unwrap().unwrap();
            assert_eq!(info.manufacturer.as_deref(), Some("Fake Medical"));
            assert!(info.clock.is_some());
            store.close().await;
        }

        // devices: the meter with its bond's security level and battery.
        let (code, out, err) = run(&["devices"], &cfg).await;
        assert_eq!(code, 0, "{out}{err}");
        let l = line(&out, "meter ");
        assert!(
            l.contains("authenticated-passkey") && l.contains("77 %"),
            "{out}"
        );
        let (_, json, _) = run(&["devices", "--json"], &cfg).await;
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v[0]["profile"], "glucose");

        // read: the meter's three stored records, downloaded now through RACP.
        let (code, out, err) = run(&["read", METER], &cfg).await;
        assert_eq!(code, 0, "{out}{err}");
        let new: u64 = out
            .split(", ")
            .nth(1)
            .and_then(|p| p.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{out}"));
        assert!(
            new >= 3,
            "the three records (and the battery) are new: {out}"
        );
        {
            let store = open(&w).await;
            let glucose = store
                .readings(0, 100)
                .await
                .unwrap()
                .into_iter()
                .filter(|r| r.reading.kind == vitals_hub::model::Kind::Glucose)
                .count();
            assert_eq!(glucose, 3);
            store.close().await;
        }
        // A device not on the allow-list is not read.
        let (code, _, err) = run(&["read", WRONG_KEY], &cfg).await;
        assert_eq!(code, 3, "{err}");
        assert!(err.contains("pair it first"), "{err}");

        // The passkey typed at the prompt on a terminal (util-linux `script` gives the pty).
        if std::process::Command::new("script")
            .arg("--version")
            .output()
            .is_ok()
        {
            let line = format!(
                "{} {} pair {WRONG_KEY} --name second --config '{}'",
                std::env::var("VITALS_HUB_TEST_RUNNER").unwrap_or_default(),
                env!("CARGO_BIN_EXE_vitals-hub"),
                cfg.display()
            );
            let out = tokio::task::spawn_blocking(move || {
                use std::io::Write;
                let mut c = std::process::Command::new("script")
                    .args(["-qec", &line, "/dev/null"])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                c.stdin.take().unwrap().write_all(b"111111\n").unwrap();
                c.wait_with_output().unwrap()
            })
            .await
            .unwrap();
            let shown = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{shown}");
            assert!(shown.contains("type the 6 digits"), "no prompt: {shown}");
            assert!(shown.contains("security=authenticated-passkey"), "{shown}");
        } else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "util-linux `script` is required under CI"
            );
            eprintln!("skipped the passkey prompt: util-linux `script` is not installed");
        }

        // unpair: off the allow-list.
        let (code, out, err) = run(&["unpair", METER], &cfg).await;
        assert_eq!(code, 0, "{out}{err}");
        let (_, out, _) = run(&["devices"], &cfg).await;
        assert!(!out.lines().any(|l| l.starts_with("meter ")), "{out}");
        assert!(out.contains("device(s) on the allow-list"), "{out}");

        // No BlueZ on the bus: a clear error, exit 3.
        let mut c = hub_command();
        c.args(["scan", "--seconds", "1", "--config"])
            .arg(&cfg)
            .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus");
        let out = tokio::task::spawn_blocking(move || c.output().unwrap())
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(3));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("BlueZ is not reachable"), "{err}");
        drop(broker);
    });
}
