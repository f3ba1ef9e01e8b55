#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! The receiver's FHIR semantics, in plain-HTTP loopback mode: conditional create (a known
//! identifier answers 200 with the existing location), atomic transactions, urn:uuid resolution,
//! gzip request bodies, searches, and the loopback-only rule.

mod uplink_support;
use serde_json::{json, Value};
use uplink_support::{get_json, plain, post_raw as post, raw_bundle as bundle};
use vitals_hub::receiver::{FaultQueue, Listen, Receiver, ReceiverConfig, ReceiverError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_create_transactions_and_searches() {
    // A default reqwest client (plain HTTP here) still wants a process-wide rustls provider: ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rx = plain().await;
    let base = format!("http://{}/fhir", rx.addr());
    let (s, r) = post(&base, &bundle("A+1", true), true).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["type"], "transaction-response");
    assert_eq!(r["entry"][0]["response"]["status"], "201 Created");
    assert_eq!(r["entry"][1]["response"]["status"], "201 Created");
    let loc = r["entry"][1]["response"]["location"]
        .as_str()
        .unwrap()
        .to_owned();

    // The same identifiers again: 200 with the existing locations, nothing new stored.
    let (s, r) = post(&base, &bundle("A+1", true), false).await;
    assert_eq!(s, 200);
    assert_eq!(r["entry"][1]["response"]["status"], "200 OK");
    assert_eq!(r["entry"][1]["response"]["location"], loc);
    assert_eq!(rx.count("Observation"), 1);
    assert_eq!(rx.count("Device"), 1);

    // An invalid entry fails the whole transaction atomically: the new Device is not stored either.
    let mut bad = bundle("B", false);
    bad["entry"][0]["resource"]["identifier"][0]["value"] = json!("D2");
    bad["entry"][0]["request"]["ifNoneExist"] = json!("identifier=urn:dev%7CD2");
    let (s, r) = post(&base, &bad, false).await;
    assert_eq!(s, 400);
    assert_eq!(r["resourceType"], "OperationOutcome");
    assert_eq!(rx.count("Device"), 1);

    // Searches; references were rewritten from urn:uuid to the assigned id.
    let client = reqwest::Client::new();
    let found: Value = get_json(
        &client,
        &format!("{base}/Observation?identifier=urn:test%7CA%2B1"),
    )
    .await;
    assert_eq!(found["total"], 1);
    assert_eq!(
        found["entry"][0]["resource"]["device"]["reference"],
        "Device/1"
    );
    let by_patient: Value = get_json(&client, &format!("{base}/Observation?patient=p1")).await;
    assert_eq!(by_patient["total"], 1);
    let meta: Value = get_json(&client, &format!("{base}/metadata")).await;
    assert_eq!(meta["fhirVersion"], "4.0.1");
    // Not a transaction.
    let (s, _) = post(
        &base,
        &json!({"resourceType": "Bundle", "type": "batch"}),
        false,
    )
    .await;
    assert_eq!(s, 400);
    rx.shutdown().await;
}

#[tokio::test]
async fn plain_http_only_on_loopback() {
    let e = Receiver::start(ReceiverConfig {
        bind: "0.0.0.0:0".parse().unwrap(),
        listen: Listen::PlainLoopback,
        db_path: None,
        faults: FaultQueue::new(),
    })
    .await
    .unwrap_err();
    assert!(matches!(e, ReceiverError::PlainNotLoopback(_)));
    assert!(e.to_string().contains("nginx"));
}

/// The receiver's client check is per connection: two clients at once, one presenting a hub
/// certificate and one presenting none; only the first is served, and what it stored is
/// attributed to its own certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_is_checked_per_connection_with_clients_at_once() {
    use std::sync::Arc;
    use vitals_hub::receiver::pki::{DevCa, Span};
    use vitals_hub::uplink::tls::{client_config, roots, CertPaths, ReloadingCert};
    let ca = DevCa::new("clinic").unwrap();
    let rx = uplink_support::clinic(&ca).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &ca.cert_pem).unwrap();
    let hub = ca.client("hub-0001", Span::DEFAULT).unwrap();
    let (cert, key) = hub.write(dir.path(), "hub").unwrap();
    let resolver = Arc::new(
        ReloadingCert::new(
            CertPaths { cert, key },
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .unwrap(),
    );
    let with_cert = reqwest::Client::builder()
        .tls_backend_preconfigured(client_config(&ca_path, resolver).unwrap())
        .build()
        .unwrap();
    let no_cert_cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots(&ca_path).unwrap())
    .with_no_client_auth();
    let without_cert = reqwest::Client::builder()
        .tls_backend_preconfigured(no_cert_cfg)
        .build()
        .unwrap();
    let base = uplink_support::url(&rx);
    let body = serde_json::to_vec(&bundle("C1", true)).unwrap();
    let (ok, refused) = tokio::join!(
        with_cert
            .post(&base)
            .header("content-type", "application/fhir+json")
            .body(body.clone())
            .send(),
        without_cert
            .post(&base)
            .header("content-type", "application/fhir+json")
            .body(body.clone())
            .send(),
    );
    assert_eq!(ok.unwrap().status(), 200);
    assert!(
        refused.is_err(),
        "a client without a certificate is refused"
    );
    // The server counts the refusal once its handshake task ends (maybe after the client saw it).
    let t0 = std::time::Instant::now();
    while rx.stats().tls_failures == 0 && t0.elapsed() < std::time::Duration::from_secs(10) {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(rx.stats().tls_failures, 1);
    assert_eq!(rx.stats().bundles, 1);
    assert_eq!(
        rx.clients(),
        vec![vitals_hub::receiver::tls::fingerprint(&hub.cert_der)]
    );
    rx.shutdown().await;
}
