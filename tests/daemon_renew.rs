#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! Issue 19 end to end: the real `vitals-hub run` with a client certificate five minutes from
//! expiry renews it over EST against the clinic's ingest (registry + EST signer, in this process,
//! mutual TLS on 127.0.0.1) while it uploads: every reading arrives once, none is refused, uploads
//! carry the new certificate, and the old pair is removed once the new one has worked.

mod daemon_support;
use daemon_support::*;
use rustls_pki_types::CertificateDer;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vitals_hub::clinic::est::Est;
use vitals_hub::clinic::registry::record_for_der;
use vitals_hub::clinic::{Access, ClinicOptions, FaultQueue, Listen, Receiver, ReceiverConfig};
use vitals_hub::receiver::pki::{DevCa, Span};
use vitals_hub::receiver::tls;

fn fingerprint(p: &std::path::Path) -> String {
    tls::fingerprint(tls::load_certs(p).unwrap()[0].as_ref())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_renews_a_certificate_minutes_from_expiry_with_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = DevCa::new("clinic").unwrap();
    std::fs::write(d.join("ca.crt"), &ca.cert_pem).unwrap();
    let server = ca.server(&["localhost"], Span::DEFAULT).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let hub = ca.client_between("e2e-hub", now - 3600, now + 300).unwrap();
    let (cert, key) = hub.write(d, "hub").unwrap();

    let registry = vitals_hub::clinic::Registry::new();
    let cfg = tls::server_config_der_with(
        vec![CertificateDer::from(server.cert_der.clone())],
        PrivateKeyDer::Pkcs8(server.key_der.clone().into()),
        Some(vec![CertificateDer::from(ca.cert_der.clone())]),
        &[&rustls::version::TLS13],
        Some(registry.clone()),
    )
    .unwrap();
    let rx = Receiver::start_with(
        ReceiverConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            listen: Listen::Tls(cfg),
            db_path: None,
            faults: FaultQueue::new(),
        },
        ClinicOptions {
            access: Access::Registry(registry),
            est: Some(Arc::new(Est {
                ca: ca.hub_ca().unwrap(),
                days: 365,
            })),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    rx.enroll(&record_for_der(&hub.cert_der, PATIENT, None).unwrap())
        .unwrap();
    let old_fp = fingerprint(&cert);

    let state = d.join("state");
    let config = d.join("hub.toml");
    std::fs::write(
        &config,
        format!(
            r#"[hub]
patient_id = "{PATIENT}"
state_dir = "{state}"

[uplink]
base_url = "https://localhost:{port}/fhir"
ca_bundle = "{ca}"
client_cert = "{cert}"
client_key = "{key}"
require_clock_sync = false
hub_mac = "02:00:5E:10:00:02"
retry_base_ms = 100
retry_cap_ms = 1000
poll_interval_ms = 300

[ble]
enabled = false

[[device]]
name = "meter"
kind = "simulated"
profile = "glucose"
interval_secs = 3600
stored_records = 5
values = [104, 118, 97, 130, 88]
"#,
            state = state.display(),
            port = rx.addr().port(),
            ca = d.join("ca.crt").display(),
            cert = cert.display(),
            key = key.display(),
        ),
    )
    .unwrap();
    let mut child = hub_command()
        .args(["run", "--config"])
        .arg(&config)
        .env("VITALS_HUB_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let prev = d.join("hub.crt.prev");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let renewed = fingerprint(&cert) != old_fp;
        let uploaded = rx.observation_identifier_counts().len() >= 5;
        if renewed && uploaded && !prev.exists() && rx.clients().contains(&fingerprint(&cert)) {
            break;
        }
        if Instant::now() > deadline {
            signal(&child, "TERM");
            let _ = wait_exit(&mut child, 10);
            panic!(
                "not renewed/uploaded in time (renewed {renewed}, uploaded {uploaded}):\n{}",
                stderr_of(&mut child)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    signal(&child, "TERM");
    assert!(wait_exit(&mut child, 20).is_some_and(|s| s.success()));
    let log = stderr_of(&mut child);
    assert!(log.contains("renewed over EST"), "{log}");

    // Every reading the hub holds is at the clinic exactly once; nothing waits, nothing refused.
    let st = stored(&state).await;
    assert_eq!(st.pending, 0);
    let at = rx.observation_identifier_counts();
    for (id, n) in &st.identifiers {
        assert_eq!(*n, 1);
        assert_eq!(at.get(id), Some(&1), "{id}");
    }
    let s = rx.stats();
    assert_eq!((s.forbidden, s.tls_failures, s.rejected), (0, 0, 0));
    // Uploads were made with the new certificate (the heartbeat may have gone before it).
    assert!(rx.clients().contains(&fingerprint(&cert)));
    assert!(!d.join("hub.key.prev").exists());
}

use rustls_pki_types::PrivateKeyDer;
