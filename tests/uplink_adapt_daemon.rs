//! Issue 15, through the real `vitals-hub run`: the uplink's refusal alert reaches the local hook
//! `alerts.local_command` as the daemon wires it (one notice, naming the kind, no PHI).
#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod fhir_stub;
#[path = "daemon_support/mod.rs"]
mod support;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use std::time::{Duration, Instant};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_hands_a_lasting_refusal_to_the_local_hook_once() {
    let w = World::new().await;
    // A FHIR server that checks its base path (the receiver takes any), with the World's PKI.
    let cert = CertificateDer::from_pem_file(&w.pki.receiver_cert).unwrap();
    let key = PrivatePkcs8KeyDer::from_pem_file(&w.pki.receiver_key).unwrap();
    let ca = CertificateDer::from_pem_file(&w.pki.ca).unwrap();
    let stub =
        fhir_stub::Stub::start(&cert, key.secret_pkcs8_der(), &ca, fhir_stub::Mode::Accept).await;
    let out = w.dir.path().join("hook.jsonl");
    let script = w.dir.path().join("hook.sh");
    std::fs::write(&script, format!("#!/bin/sh\ncat >> '{}'\n", out.display())).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let devices = format!(
        r#"
[[device]]
name = "meter"
kind = "simulated"
profile = "glucose"
interval_secs = 1
values = [104, 118]

[alerts]
local_command = "{}"
"#,
        script.display()
    );
    let cfg = w.config("hub.toml", &devices);
    // A base URL one segment off, and a short delay before the alert.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(
            &format!("https://localhost:{}/fhir", w.receiver.addr().port()),
            &format!("{}/wrong", stub.url()),
        )
        .replace(
            "poll_interval_ms = 500",
            "poll_interval_ms = 500\nrefusal_alert_after_secs = 1",
        );
    std::fs::write(&cfg, text).unwrap();
    let mut hub = w.spawn(&cfg);
    let end = Instant::now() + Duration::from_secs(60);
    let raised = || {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .contains("\"raised\"")
    };
    while !raised() {
        if Instant::now() > end {
            signal(&hub, "KILL");
            panic!("no refusal notice in 60 s:\n{}", stderr_of(&mut hub));
        }
        if let Some(s) = hub.try_wait().unwrap() {
            panic!("the hub exited {s:?}:\n{}", stderr_of(&mut hub));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // More refusals for a while: still one notice.
    tokio::time::sleep(Duration::from_secs(3)).await;
    signal(&hub, "TERM");
    wait_exit(&mut hub, 10).expect("no exit within 10 s of SIGTERM");
    let err = stderr_of(&mut hub);
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| l.contains("uplink_refused"))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert_eq!(lines[0]["transition"], "raised");
    assert_eq!(lines[0]["subject"]["kind"], "wrong_base_path", "{text}");
    assert!(!text.contains(PATIENT), "{text}");
    assert!(
        err.contains("Every upload refused by the clinic server; hub alert raised."),
        "{err}"
    );
    assert!(
        !err.contains(PATIENT),
        "the patient id is in the log:\n{err}"
    );
}
