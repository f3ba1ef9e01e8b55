//! `vitals-hub doctor`, as the real binary, against the fake BlueZ on a private bus and the
//! in-process receiver over mutual TLS: all checks pass on a set-up hub (the clock and BlueZ
//! version lines may WARN on a build machine: there is no override for systemd-timesyncd and
//! `bluetoothctl` may be missing), and the failure paths — no BlueZ, clinic unreachable, CA
//! mismatch, a key that does not match the certificate, a key file readable by others — each FAIL
//! with the fix and exit 1.
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

use fake_bluez::harness::broker;
use fake_bluez::FakeBluez;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use support::{hub_command, World, PATIENT};
use vitals_hub::model::SystemClock;
use vitals_hub::receiver::pki::{DevCa, Span};
use vitals_hub::store::{Store, StoreConfig};

async fn doctor(config: &Path, env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = hub_command();
    c.args(["doctor", "--config"])
        .arg(config)
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The line of check `name`.
fn line(out: &str, name: &str) -> String {
    out.lines()
        .find(|l| {
            l.get(6..)
                .is_some_and(|r| r.starts_with(&format!("{name} ")))
        })
        .unwrap_or_else(|| panic!("no `{name}` line:\n{out}"))
        .to_string()
}

/// A copy of `config` with `from` replaced by `to`.
fn variant(config: &Path, name: &str, from: &str, to: &str) -> PathBuf {
    let text = std::fs::read_to_string(config).unwrap();
    assert!(text.contains(from), "{from} not in the config");
    let p = config.with_file_name(name);
    std::fs::write(&p, text.replace(from, to)).unwrap();
    p
}

#[test]
fn doctor_checklist_and_failure_paths() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let broker = broker();
    rt.block_on(async {
        let w = World::new().await;
        // A small store limit so the disk line does not depend on this machine's free space.
        let cfg = w.config("hub.toml", "[store]\nsize_limit_mb = 16\n");
        let _fake = FakeBluez::start(&broker.address, vec![]).await;

        // A set-up hub: state directory 0700, the store and its KEK created.
        std::fs::create_dir_all(w.state_dir()).unwrap();
        std::fs::set_permissions(w.state_dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let mut sc = StoreConfig::new(w.state_dir());
        sc.patient_id = Some(PATIENT.into());
        Store::open(sc, Arc::new(SystemClock))
            .await
            .unwrap()
            .close()
            .await;

        let (code, out, err) = doctor(&cfg, &[]).await;
        assert_eq!(code, 0, "{out}{err}");
        for name in [
            "config",
            "ble adapter",
            "disk space",
            "client key mode",
            "kek mode",
            "state dir mode",
            "client certificate",
            "certificate chain",
            "clinic",
            "alert limits",
            "backlog",
            "security reports",
        ] {
            assert!(line(&out, name).starts_with("PASS"), "{name}:\n{out}");
        }
        // The store's own report of its KEK's creation, its window still open.
        let l = line(&out, "security reports");
        assert!(
            l.contains("1 waiting to go upstream (1 still collecting); newest key-rotation at "),
            "{out}"
        );
        assert!(line(&out, "ble adapter").contains("powered"), "{out}");
        assert!(line(&out, "clinic").contains("/metadata"), "{out}");
        assert!(
            line(&out, "alert limits").contains("hub.toml [alerts]"),
            "{out}"
        );
        // Not controllable here; never FAIL with require_clock_sync = false.
        assert!(!line(&out, "clock").starts_with("FAIL"), "{out}");
        assert!(!line(&out, "bluez version").starts_with("FAIL"), "{out}");
        assert!(
            !out.contains("PRIVATE KEY") && !out.contains(PATIENT),
            "{out}"
        );

        // --json: one object per check.
        let mut c = hub_command();
        c.args(["doctor", "--json", "--config"]).arg(&cfg);
        let o = tokio::task::spawn_blocking(move || c.output().unwrap())
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let clinic = v
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "clinic")
            .unwrap();
        assert_eq!(clinic["status"], "PASS");
        assert!(clinic["fix"].is_null());

        // No BlueZ on the bus: the adapter line fails with the fix, exit 1.
        let (code, out, _) = doctor(
            &cfg,
            &[("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus")],
        )
        .await;
        assert_eq!(code, 1, "{out}");
        let l = line(&out, "ble adapter");
        assert!(
            l.starts_with("FAIL") && l.contains("BlueZ is not reachable") && l.contains("fix:"),
            "{out}"
        );

        // CA mismatch: the config's ca_bundle is another CA.
        let other = DevCa::new("some other CA").unwrap();
        let other_ca = w.dir.path().join("other-ca.crt");
        std::fs::write(&other_ca, &other.cert_pem).unwrap();
        let bad_ca = variant(
            &cfg,
            "bad-ca.toml",
            &w.pki.ca.display().to_string(),
            &other_ca.display().to_string(),
        );
        let (code, out, _) = doctor(&bad_ca, &[]).await;
        assert_eq!(code, 1, "{out}");
        let l = line(&out, "certificate chain");
        assert!(
            l.starts_with("FAIL") && l.contains("chain does not verify") && l.contains("ca_bundle"),
            "{out}"
        );
        assert!(line(&out, "clinic").starts_with("FAIL"), "{out}");

        // A key that does not match the certificate.
        let (_, stray_key) = other
            .client("stray", Span::DEFAULT)
            .unwrap()
            .write(w.dir.path(), "stray")
            .unwrap();
        let bad_key = variant(
            &cfg,
            "bad-key.toml",
            &w.pki.hub_key.display().to_string(),
            &stray_key.display().to_string(),
        );
        let (code, out, _) = doctor(&bad_key, &[]).await;
        assert_eq!(code, 1, "{out}");
        let l = line(&out, "client certificate");
        assert!(
            l.starts_with("FAIL") && l.contains("does not match the certificate"),
            "{out}"
        );

        // The key file readable by others.
        let open_key = w.dir.path().join("open.key");
        std::fs::copy(&w.pki.hub_key, &open_key).unwrap();
        std::fs::set_permissions(&open_key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let loose = variant(
            &cfg,
            "loose.toml",
            &w.pki.hub_key.display().to_string(),
            &open_key.display().to_string(),
        );
        let (code, out, _) = doctor(&loose, &[]).await;
        assert_eq!(code, 1, "{out}");
        let l = line(&out, "client key mode");
        assert!(
            l.starts_with("FAIL")
                && l.contains("0644")
                && l.contains(&format!("chmod 600 {}", open_key.display())),
            "{out}"
        );
        assert!(line(&out, "clinic").starts_with("PASS"), "{out}");

        // The clinic unreachable: the receiver stopped.
        let World { dir, pki, receiver } = w;
        receiver.shutdown().await;
        let (code, out, _) = doctor(&cfg, &[]).await;
        assert_eq!(code, 1, "{out}");
        let l = line(&out, "clinic");
        assert!(
            l.starts_with("FAIL")
                && l.contains("refused")
                && l.contains("fix: check the hub's network"),
            "{out}"
        );
        drop((dir, pki));
    });
    drop(broker);
}

/// The backlog line: an entry waiting 2 h is a WARN, one waiting 25 h a FAIL (exit 1). The entries
/// are written through a store whose clock is set back.
#[test]
fn doctor_backlog_age() {
    use vitals_hub::model::{Decimal, Kind, ManualClock, Reading, Unit, UtcMillis, Value};
    use vitals_hub::store::{DeviceRecord, NewReading};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let w = World::new().await;
        let cfg = w.config("hub.toml", "[store]\nsize_limit_mb = 16\n");
        let now = vitals_hub::model::Clock::now(&SystemClock).0;
        let append_at = |ago_ms: i64| {
            let state = w.state_dir();
            async move {
                let mut sc = StoreConfig::new(state);
                sc.patient_id = Some(PATIENT.into());
                let clock = Arc::new(ManualClock::new(UtcMillis(now - ago_ms)));
                let store = Store::open(sc, clock).await.unwrap();
                let dev = store
                    .upsert_device(
                        DeviceRecord {
                            address: "C0:26:DA:00:00:01".into(),
                            profile: "glucose".into(),
                            ..DeviceRecord::default()
                        },
                        true,
                    )
                    .await
                    .unwrap();
                let r = NewReading {
                    reading: Reading::new(
                        Kind::Glucose,
                        Value::Number(Decimal::new(104, 0)),
                        Unit::MgPerDl,
                    ),
                    received_at: UtcMillis(now - ago_ms),
                    stable_key: format!("k{ago_ms}"),
                    test_data: true,
                    summary: None,
                };
                store.append(&dev, vec![r], None).await.unwrap();
                store.close().await;
            }
        };
        append_at(2 * 3_600_000).await;
        let (_, out, _) = doctor(&cfg, &[]).await;
        let l = line(&out, "backlog");
        // The reading and the store's own security report of its key's creation (its 15-minute
        // window closed long before now), both waiting for the uplink.
        assert!(l.starts_with("WARN") && l.contains("2 waiting"), "{out}");
        // That report on its own line: its code and the time of its event (the KEK's creation).
        let l = line(&out, "security reports");
        let created = UtcMillis(now - 2 * 3_600_000).to_rfc3339();
        assert!(
            l.starts_with("PASS")
                && l.ends_with(&format!(
                    "1 waiting to go upstream; newest key-rotation at {created}"
                )),
            "{out}"
        );
        append_at(25 * 3_600_000).await;
        let (code, out, _) = doctor(&cfg, &[]).await;
        assert_eq!(code, 1, "{out}");
        let l = line(&out, "backlog");
        assert!(
            l.starts_with("FAIL") && l.contains("3 waiting") && l.contains("fix:"),
            "{out}"
        );
    });
}

/// Issue 13: the real cause, the real fix — a state directory that cannot be created (a file in its
/// path) is a FAIL naming why, not "does not exist yet — the daemon creates it"; a certificate and
/// key configured the wrong way round are named as swapped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_an_uncreatable_state_dir_and_a_swapped_pair() {
    let w = World::new().await;
    let cfg = w.config("hub.toml", "");
    let blocker = w.dir.path().join("not-a-dir");
    std::fs::write(&blocker, "x").unwrap();
    let state = s(&w.state_dir());
    let bad = variant(
        &cfg,
        "bad-state.toml",
        &format!("state_dir = \"{state}\""),
        &format!("state_dir = \"{}/state\"", blocker.display()),
    );
    let (code, out, _) = doctor(&bad, &[]).await;
    assert_eq!(code, 1, "{out}");
    let l = line(&out, "state dir mode");
    assert!(
        l.starts_with("FAIL")
            && l.ends_with(&format!(
                "{}/state does not exist and cannot be created: {} is a file, not a directory — \
                 fix: correct [hub] state_dir: a path whose every parent is a directory",
                blocker.display(),
                blocker.display()
            )),
        "{out}"
    );

    let text = std::fs::read_to_string(&cfg).unwrap();
    let cert = s(&w.pki.hub_cert);
    let key = s(&w.pki.hub_key);
    let swapped = text
        .replace(&format!("client_cert = \"{cert}\""), "client_cert = \"@K\"")
        .replace(
            &format!("client_key = \"{key}\""),
            &format!("client_key = \"{cert}\""),
        )
        .replace("@K", &key);
    let p = w.dir.path().join("swapped.toml");
    std::fs::write(&p, swapped).unwrap();
    let (code, out, _) = doctor(&p, &[]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        line(&out, "client certificate").contains(&format!(
            "client_cert {key}: this is a private key, not a certificate: client_cert and \
             client_key look swapped"
        )),
        "{out}"
    );
    assert!(
        out.contains("give the certificate as client_cert and the key as client_key in [uplink]"),
        "{out}"
    );
}

/// Issue 13: a typo that is still a valid id (`pat-042` for `pat-0042`) passed `doctor`, and the
/// clinic would have filed the readings under someone else's id. Against an authorising clinic the
/// question is refused for any patient but the enrolled one: doctor FAILs and names the fix,
/// without printing the id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_fails_a_patient_id_the_clinic_did_not_enroll_this_hub_for() {
    let w = World::enrolled(PATIENT).await;
    let cfg = w.config("hub.toml", "[store]\nsize_limit_mb = 16\n");

    let (_, out, err) = doctor(&cfg, &[]).await;
    assert!(line(&out, "patient").starts_with("PASS"), "{out}{err}");

    let typo = variant(
        &cfg,
        "typo.toml",
        &format!("patient_id = \"{PATIENT}\""),
        "patient_id = \"pat-e2ee\"",
    );
    let (code, out, err) = doctor(&typo, &[]).await;
    assert_eq!(code, 1, "{out}{err}");
    let l = line(&out, "patient");
    assert!(l.starts_with("FAIL"), "{out}");
    assert!(l.contains("enrolled for another patient"), "{l}");
    assert!(l.contains("setup --force"), "{l}");
    assert!(!out.contains("pat-e2ee") && !out.contains(PATIENT), "{out}");
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Issue 15: a lasting refusal of every upload, as the running uplink records it in the store, is
/// the `fhir server` line's FAIL with its kind, since when, and the fix for that kind; once
/// uploads are accepted again (the record cleared) the line no longer fails for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_shows_a_lasting_refusal_with_its_kind_since_and_fix() {
    use vitals_hub::model::UtcMillis;
    let w = World::new().await;
    let cfg = w.config("hub.toml", "");
    let set = |value: &'static str| {
        let state = w.state_dir();
        async move {
            let mut sc = StoreConfig::new(state);
            sc.patient_id = Some(PATIENT.into());
            let store = Store::open(sc, Arc::new(SystemClock)).await.unwrap();
            store
                .set_uplink_state("uplink", "refusal", value)
                .await
                .unwrap();
            store.close().await;
        }
    };
    set(r#"{"kind":"wrong_base_path","since":1765000000000,"raised":true}"#).await;
    let (code, out, _) = doctor(&cfg, &[]).await;
    assert_eq!(code, 1, "{out}");
    let l = line(&out, "fhir server");
    assert!(
        l.starts_with("FAIL")
            && l.contains("every upload refused since")
            && l.contains(&UtcMillis(1_765_000_000_000).to_rfc3339())
            && l.contains("(wrong_base_path)")
            && l.contains("hub alert raised")
            && l.contains("fix: check `clinic.url` / `base_url` in [uplink]"),
        "{out}"
    );
    set(r#"{"kind":"auth","since":1765000000000,"raised":false}"#).await;
    let (_, out, _) = doctor(&cfg, &[]).await;
    let l = line(&out, "fhir server");
    assert!(
        l.starts_with("FAIL") && l.contains("(auth)") && !l.contains("hub alert raised"),
        "{out}"
    );
    assert!(
        l.contains("the clinic must allow the hub's certificate"),
        "{out}"
    );
    set("").await;
    let (_, out, _) = doctor(&cfg, &[]).await;
    assert!(!line(&out, "fhir server").starts_with("FAIL"), "{out}");
}
