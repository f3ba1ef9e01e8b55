#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! `vitals-hub pki DIR` mints a labelled development PKI and enrols its hub (DIR/clinic.db);
//! `vitals-hub receiver` (the alias of `vitals-clinic serve`) serves it; a hub uploads to the child
//! process with the minted hub certificate.

mod support_bin;
mod uplink_support;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::Arc;
use uplink_support::*;
use vitals_hub::model::SystemClock;
use vitals_hub::uplink::{FixedTimeSync, Uplink, UplinkConfig};

struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pki_then_receiver_then_upload() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let out = support_bin::hub()
        .arg("pki")
        .arg(&pki)
        .args(["--patient", PATIENT])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NOT FOR PRODUCTION"));
    for f in [
        "ca.crt",
        "receiver.crt",
        "receiver.key",
        "hub.crt",
        "hub.key",
        "README-NOT-FOR-PRODUCTION.txt",
        "clinic.db",
    ] {
        assert!(pki.join(f).exists(), "{f}");
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(pki.join("hub.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    let mut child = support_bin::hub()
        .args(["receiver", "--listen", "127.0.0.1:0", "--cert"])
        .arg(pki.join("receiver.crt"))
        .arg("--key")
        .arg(pki.join("receiver.key"))
        .arg("--client-ca")
        .arg(pki.join("ca.crt"))
        .arg("--db")
        .arg(pki.join("clinic.db"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _kill = Kill(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let port = line.trim().rsplit(':').next().unwrap().to_owned();
    assert!(line.starts_with("listening https://127.0.0.1:"), "{line}");

    // A hub store with readings, uploading with the minted certificate.
    let ca = vitals_hub::receiver::pki::DevCa::new("unused").unwrap();
    let h = hub_with(
        7,
        &ca,
        &ca.client("unused", vitals_hub::receiver::pki::Span::DEFAULT)
            .unwrap(),
    )
    .await;
    let mut cfg = UplinkConfig::new(
        &format!("https://localhost:{port}/fhir"),
        &pki.join("ca.crt"),
        PATIENT,
    );
    cfg.client_cert = Some(pki.join("hub.crt"));
    cfg.client_key = Some(pki.join("hub.key"));
    let mut up = Uplink::new(
        cfg,
        h.store.clone(),
        Arc::new(SystemClock),
        Arc::new(FixedTimeSync(true)),
        hub(),
    )
    .unwrap();
    assert_eq!(up.drain(DRAIN).await.unwrap().acked, 7);
    let db = rusqlite::Connection::open(pki.join("clinic.db")).unwrap();
    let n: i64 = db
        .query_row(
            "SELECT count(*) FROM resources WHERE type = 'Observation'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 7);
}
