//! `vitals-hub commission`: after the simulated devices' readings reached the clinic, every device
//! passes, clock offsets are reported, and the report itself reaches the clinic once; a paired
//! device that never delivered fails the report with the fix.
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
#[allow(dead_code)]
#[path = "uplink_support/timedate.rs"]
mod timedate;

use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;
use vitals_hub::model::SystemClock;
use vitals_hub::store::{DeviceRecord, Store, StoreConfig};

fn commission(cfg: &std::path::Path) -> (i32, String, String) {
    let out = hub_command()
        .args(["commission", "--scan-seconds", "0", "--config"])
        .arg(cfg)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_report_passes_when_every_device_delivered_and_reaches_the_clinic() {
    // A powered adapter (the fake BlueZ), so the doctor's radio line passes.
    fake_bluez::harness::run(|broker| async move { report(&broker).await });
}

async fn report(broker: &fake_bluez::Broker) {
    let _fake = fake_bluez::FakeBluez::start(&broker.address, Vec::new()).await;
    let w = World::new().await;
    let cfg = w.config("hub.toml", FAST_DEVICES);
    let mut hub = w.spawn(&cfg);
    let end = Instant::now() + Duration::from_secs(60);
    while w.at_receiver().len() < 12 {
        assert!(Instant::now() < end, "no upload");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let every device deliver once more, then stop the daemon: commission sends the report itself.
    tokio::time::sleep(Duration::from_secs(3)).await;
    signal(&hub, "TERM");
    assert!(wait_exit(&mut hub, 15).unwrap().success());

    let (code, out, err) = commission(&cfg);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("PASS"), "{out}");
    for name in ["meter", "cuff", "oximeter", "scale"] {
        let line = out
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name}:\n{out}"));
        assert!(line.trim_start().starts_with("PASS"), "{line}");
        assert!(line.contains("clock"), "{line}");
    }
    assert!(out.contains("sent to the clinic and acknowledged"), "{out}");
    let reports: Vec<_> = w
        .receiver
        .resources("Communication")
        .into_iter()
        .filter(|c| c.to_string().contains("commissioning report"))
        .collect();
    assert_eq!(reports.len(), 1, "one report at the clinic");
    assert_eq!(reports[0]["priority"], "routine");

    // A paired device that never delivered: the report fails and says what to do.
    {
        let mut sc = StoreConfig::new(w.state_dir());
        sc.patient_id = Some(PATIENT.into());
        let store = Store::open(sc, Arc::new(SystemClock)).await.unwrap();
        store
            .upsert_device(
                DeviceRecord {
                    address: "C0:26:DA:00:09:01".into(),
                    name: Some("thermo".into()),
                    profile: "thermometer".into(),
                    patient_binding: Some(PATIENT.into()),
                    serial: None,
                    bond: Some(
                        "paired=true;bonded=true;trusted=true;security=authenticated-passkey"
                            .into(),
                    ),
                },
                true,
            )
            .await
            .unwrap();
        store.close().await;
    }
    let (code, out, _) = commission(&cfg);
    assert_eq!(code, 1, "{out}");
    let line = out.lines().find(|l| l.contains("thermo")).unwrap();
    assert!(line.trim_start().starts_with("FAIL"), "{line}");
    assert!(out.contains("fix: take a measurement"), "{out}");

    // Each commissioning is also a security event, counted into one report for the clinic (issue
    // 19): two runs within the window, one report with count 2, still open (delivering at once,
    // as `commission` does, does not hurry it).
    let mut sc = StoreConfig::new(w.state_dir());
    sc.patient_id = Some(PATIENT.into());
    let store = Store::open(sc, Arc::new(SystemClock)).await.unwrap();
    let reports = store.security_reports().await.unwrap();
    let c: Vec<_> = reports
        .iter()
        .filter(|(r, _)| r.code == "commissioning")
        .collect();
    assert_eq!(c.len(), 1, "{reports:?}");
    assert_eq!(c[0].0.count, 2, "{reports:?}");
    assert_eq!(c[0].0.kinds, ["commissioned"]);
    assert_eq!(c[0].1, "pending");
    store.close().await;
}

/// Issue 13: with the hub clock not synchronised (and `require_clock_sync`, the default) every
/// upload waits; commission names the clock as the cause for each device whose readings are stored,
/// not "take a measurement". The clock's state comes from a fake systemd-timedated
/// (`NTPSynchronized = false`) on a private broker given to the hub's processes only, so the test
/// runs the same on a machine whose own clock is synchronised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsynchronised_clock_is_named_not_the_device() {
    let broker = timedate::Broker::start();
    let _timedated = timedate::fake_timedate1(&broker.address, false).await;
    let w = World::new().await;
    let cfg = w.config("hub.toml", FAST_DEVICES);
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("require_clock_sync = false", "require_clock_sync = true");
    std::fs::write(&cfg, text).unwrap();
    let mut hub = hub_command()
        .args(["run", "--config"])
        .arg(&cfg)
        .env("DBUS_SYSTEM_BUS_ADDRESS", &broker.address)
        .env("VITALS_HUB_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    signal(&hub, "TERM");
    assert!(wait_exit(&mut hub, 15).unwrap().success());
    assert!(stored(&w.state_dir()).await.pending >= 4, "readings stored");
    assert!(
        w.at_receiver().is_empty(),
        "nothing may be uploaded with the clock unsynchronised"
    );
    let out = hub_command()
        .args([
            "commission",
            "--scan-seconds",
            "0",
            "--no-upload",
            "--config",
        ])
        .arg(&cfg)
        .env("DBUS_SYSTEM_BUS_ADDRESS", &broker.address)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let meter = out
        .lines()
        .skip_while(|l| !l.contains("meter"))
        .nth(1)
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        meter
            .trim_start()
            .starts_with("readings stored (the last at ")
            && meter.ends_with(
                "), none uploaded: uploads wait until the hub clock is synchronised, and it is \
                 not (line `clock` below); fix: `sudo timedatectl set-ntp true`, let the hub \
                 reach an NTP server (`timedatectl timesync-status`), then run commission again"
            ),
        "{out}"
    );
    assert!(!out.contains("take a measurement"), "{out}");
    assert!(out.contains(&format!("patient:     {PATIENT}\n")), "{out}");
}
