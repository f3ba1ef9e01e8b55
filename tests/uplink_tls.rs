#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! mTLS between the hub and the receiver: the happy path (with the receiver's search API and the
//! heartbeat), every refusal with its own error and nothing acked, and certificate rotation on disk.

mod uplink_support;
use std::time::Duration;
use uplink_support::*;
use vitals_hub::receiver::pki::{DevCa, Span};
use vitals_hub::uplink::UplinkError;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_over_mtls_search_and_heartbeat() {
    let ca = DevCa::new("clinic").unwrap();
    let rx = clinic(&ca).await;
    let h = hub_for(25, &ca).await;
    let mut up = uplink(&h, uplink_config(&h, &url(&rx)));
    let rep = up.drain(DRAIN).await.unwrap();
    assert_eq!(rep.acked, 25);
    let counts = rx.observation_identifier_counts();
    for i in 0..25 {
        assert_eq!(counts.get(&glucose_identifier(i)), Some(&1), "reading {i}");
    }
    assert_eq!(rx.count("Device"), 2, "PhgDevice + the meter, created once");
    // Uploading again sends nothing: everything is acked.
    assert_eq!(up.drain(DRAIN).await.unwrap().acked, 0);

    // The receiver's read API, over the same mTLS client configuration.
    let resolver = std::sync::Arc::new(
        vitals_hub::uplink::tls::ReloadingCert::new(
            vitals_hub::uplink::tls::CertPaths {
                cert: h.cert.clone(),
                key: h.key.clone(),
            },
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .unwrap(),
    );
    let cfg = vitals_hub::uplink::tls::client_config(&h.ca_path, resolver).unwrap();
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(cfg)
        .build()
        .unwrap();
    let base = url(&rx);
    let meta: serde_json::Value = get_json(&client, &format!("{base}/metadata")).await;
    assert_eq!(meta["resourceType"], "CapabilityStatement");
    let q = vitals_hub::fhir::identifier::if_none_exist(
        vitals_hub::fhir::codes::OBS_IDENTIFIER_SYSTEM,
        &glucose_identifier(3),
    );
    let found: serde_json::Value = get_json(&client, &format!("{base}/Observation?{q}")).await;
    assert_eq!(found["total"], 1);
    let obs = &found["entry"][0]["resource"];
    assert!(
        obs["device"]["reference"]
            .as_str()
            .unwrap()
            .starts_with("Device/"),
        "urn:uuid rewritten"
    );
    let by_patient: serde_json::Value = get_json(
        &client,
        &format!("{base}/Observation?patient=Patient/{PATIENT}"),
    )
    .await;
    assert_eq!(by_patient["total"], 25);

    up.heartbeat().await.unwrap();
    let hub_status = rx
        .resources("Observation")
        .into_iter()
        .filter(|o| o["identifier"][0]["system"] == vitals_hub::fhir::codes::HUB_STATUS_SYSTEM)
        .count();
    assert!(
        hub_status >= 3,
        "backlog, software version, device last seen …"
    );
    assert_eq!(
        rx.count("Device"),
        2,
        "the heartbeat's PhgDevice matched the existing one"
    );
    rx.shutdown().await;
}

async fn refused(
    server: vitals_hub::receiver::pki::Minted,
    server_trusts: &DevCa,
    versions: &[&'static rustls::SupportedProtocolVersion],
    clinic_ca: &DevCa,
    hub_cert: vitals_hub::receiver::pki::Minted,
) -> UplinkError {
    let rx = receiver(&server, Some(server_trusts), versions).await;
    let h = hub_with(3, clinic_ca, &hub_cert).await;
    let mut up = uplink(&h, uplink_config(&h, &url(&rx)));
    let err = up.drain(Duration::from_secs(20)).await.unwrap_err();
    assert_eq!(
        rx.count("Observation"),
        0,
        "{err}: nothing reached the receiver"
    );
    let st = h.store.stats().await.unwrap();
    assert_eq!(st.acked, 0, "{err}: nothing acked");
    assert_eq!(st.pending, 3, "{err}: everything still pending");
    let events = h.store.events(20).await.unwrap();
    assert!(
        events.iter().any(|e| e.kind == err.kind()),
        "{err}: an event of kind {}",
        err.kind()
    );
    rx.shutdown().await;
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tls_refusal_has_its_own_error_and_acks_nothing() {
    let ca = DevCa::new("clinic").unwrap();
    let other = DevCa::new("some other CA").unwrap();
    let names = ["localhost", "127.0.0.1"];
    let hub_cert = || ca.client("hub-0001", Span::DEFAULT).unwrap();

    let e = refused(
        other.server(&names, Span::DEFAULT).unwrap(),
        &ca,
        TLS13,
        &ca,
        hub_cert(),
    )
    .await;
    assert!(matches!(e, UplinkError::ServerCertUntrusted(_)), "{e:?}");

    let e = refused(
        ca.server(&names, Span::EXPIRED).unwrap(),
        &ca,
        TLS13,
        &ca,
        hub_cert(),
    )
    .await;
    assert_eq!(e, UplinkError::ServerCertExpired);

    let e = refused(
        ca.server(&names, Span::NOT_YET_VALID).unwrap(),
        &ca,
        TLS13,
        &ca,
        hub_cert(),
    )
    .await;
    assert_eq!(e, UplinkError::ServerCertNotYetValid);

    let e = refused(
        ca.server(&["clinic.example"], Span::DEFAULT).unwrap(),
        &ca,
        TLS13,
        &ca,
        hub_cert(),
    )
    .await;
    assert_eq!(e, UplinkError::ServerCertWrongName);

    let e = refused(
        ca.server(&names, Span::DEFAULT).unwrap(),
        &ca,
        &[&rustls::version::TLS12],
        &ca,
        hub_cert(),
    )
    .await;
    assert!(matches!(e, UplinkError::NoTls13(_)), "{e:?}");

    // The server only trusts hub certificates from another CA.
    let e = refused(
        ca.server(&names, Span::DEFAULT).unwrap(),
        &other,
        TLS13,
        &ca,
        hub_cert(),
    )
    .await;
    assert!(
        matches!(e, UplinkError::ServerRejectedOurCertificate(_)),
        "{e:?}"
    );

    let e = refused(
        ca.server(&names, Span::DEFAULT).unwrap(),
        &ca,
        TLS13,
        &ca,
        ca.client("hub-0001", Span::EXPIRED).unwrap(),
    )
    .await;
    assert!(matches!(e, UplinkError::OwnCertificateExpired(_)), "{e:?}");

    // A server that does not ask for the hub's certificate gets nothing.
    let rx = receiver(&ca.server(&names, Span::DEFAULT).unwrap(), None, TLS13).await;
    let h = hub_with(2, &ca, &hub_cert()).await;
    let mut up = uplink(&h, uplink_config(&h, &url(&rx)));
    assert_eq!(
        up.step().await.unwrap_err(),
        UplinkError::ServerDidNotRequestClientCert
    );
    assert_eq!(
        rx.stats().requests,
        0,
        "no request was written on the connection"
    );
    assert_eq!(h.store.stats().await.unwrap().acked, 0);
    rx.shutdown().await;

    // Nothing listening, and a name that does not resolve.
    let h = hub_with(1, &ca, &hub_cert()).await;
    let port = free_port();
    let mut up = uplink(
        &h,
        uplink_config(&h, &format!("https://127.0.0.1:{port}/fhir")),
    );
    assert_eq!(up.step().await.unwrap_err(), UplinkError::Refused);
    // A fresh hub: the first one's reading now waits for its retry time.
    let h = hub_with(1, &ca, &hub_cert()).await;
    let mut up = uplink(&h, uplink_config(&h, "https://no-such-host.invalid/fhir"));
    assert!(matches!(up.step().await.unwrap_err(), UplinkError::Dns(_)));
    assert_eq!(h.store.stats().await.unwrap().acked, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_on_disk_takes_effect_without_restart() {
    let clinic = DevCa::new("clinic").unwrap();
    let old_hub_ca = DevCa::new("old hub CA").unwrap();
    let new_hub_ca = DevCa::new("new hub CA").unwrap();
    let rx = receiver(
        &clinic.server(&["localhost"], Span::DEFAULT).unwrap(),
        Some(&new_hub_ca),
        TLS13,
    )
    .await;
    let h = hub_with(
        5,
        &clinic,
        &old_hub_ca.client("hub-0001", Span::DEFAULT).unwrap(),
    )
    .await;
    let mut up = uplink(&h, uplink_config(&h, &url(&rx)));
    let e = up.drain(Duration::from_secs(10)).await.unwrap_err();
    assert!(
        matches!(e, UplinkError::ServerRejectedOurCertificate(_)),
        "{e:?}"
    );
    // Rotate the files in place (atomic rename), same uplink instance.
    let new = new_hub_ca.client("hub-0001", Span::DEFAULT).unwrap();
    new.write(h.dir.path(), "hub").unwrap();
    let rep = up.drain(DRAIN).await.unwrap();
    assert_eq!(rep.acked, 5);
    assert_eq!(
        rx.clients(),
        vec![vitals_hub::receiver::tls::fingerprint(&new.cert_der)]
    );
    assert!(h
        .store
        .events(50)
        .await
        .unwrap()
        .iter()
        .any(|e| e.kind == "uplink_client_cert_reloaded"));
    rx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_certificate_warns_at_30_days_and_alerts_at_14() {
    let ca = DevCa::new("clinic").unwrap();
    let rx = clinic(&ca).await;
    let h = hub_with(
        1,
        &ca,
        &ca.client(
            "hub-0001",
            Span {
                from_days: -300,
                to_days: 10,
            },
        )
        .unwrap(),
    )
    .await;
    let mut up = uplink(&h, uplink_config(&h, &url(&rx)));
    up.drain(DRAIN).await.unwrap();
    let events = h.store.events(50).await.unwrap();
    assert!(events
        .iter()
        .any(|e| e.kind == "uplink_client_cert_expiring"));
    // The alert was raised and uploaded to the clinic (a Communication).
    let comms = rx.resources("Communication");
    assert_eq!(comms.len(), 1);
    assert!(comms[0]["payload"][0]["contentString"]
        .as_str()
        .unwrap()
        .contains("client_certificate_expiring"));
    rx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_wait_for_the_hub_clock_to_be_synchronised() {
    let ca = DevCa::new("clinic").unwrap();
    let rx = clinic(&ca).await;
    let h = hub_for(2, &ca).await;
    let mut up = vitals_hub::uplink::Uplink::new(
        uplink_config(&h, &url(&rx)),
        h.store.clone(),
        std::sync::Arc::new(vitals_hub::model::SystemClock),
        std::sync::Arc::new(vitals_hub::uplink::FixedTimeSync(false)),
        hub(),
    )
    .unwrap();
    assert_eq!(
        up.step().await.unwrap_err(),
        UplinkError::ClockNotSynchronised
    );
    assert_eq!(rx.stats().requests, 0, "nothing was sent");
    assert_eq!(h.store.stats().await.unwrap().pending, 2);
    rx.shutdown().await;
}

/// The check that a server asked for the hub's certificate is per connection: a connection to a
/// server that did not ask is refused even while another connection of the same client (to a
/// server that did ask) completes its handshake in the meantime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_auth_is_checked_per_connection_not_per_process() {
    use vitals_hub::uplink::tls::{client_config, CertPaths, ReloadingCert, RequireClientAuth};
    let ca = DevCa::new("clinic").unwrap();
    let with_auth = clinic(&ca).await;
    let without_auth = receiver(
        &ca.server(vitals_hub::receiver::pki::DEV_RECEIVER_NAMES, Span::DEFAULT)
            .unwrap(),
        None,
        TLS13,
    )
    .await;
    // A gate in front of the server that does not ask: its handshake waits until the other
    // connection is done.
    let gate = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gate_port = gate.local_addr().unwrap().port();
    let upstream = without_auth.addr();
    let (accepted_tx, accepted_rx) = tokio::sync::oneshot::channel::<()>();
    let (open_tx, open_rx) = tokio::sync::oneshot::channel::<()>();
    let proxy = tokio::spawn(async move {
        let (mut down, _) = gate.accept().await.unwrap();
        accepted_tx.send(()).unwrap();
        open_rx.await.unwrap();
        let mut up = tokio::net::TcpStream::connect(upstream).await.unwrap();
        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
    });

    let h = hub_for(0, &ca).await;
    let cert = std::sync::Arc::new(
        ReloadingCert::new(
            CertPaths {
                cert: h.cert.clone(),
                key: h.key.clone(),
            },
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .unwrap(),
    );
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(client_config(&h.ca_path, cert.clone()).unwrap())
        .connector_layer(RequireClientAuth(cert))
        .no_proxy()
        .build()
        .unwrap();
    let c = client.clone();
    let unasked = tokio::spawn(async move {
        c.get(format!("https://localhost:{gate_port}/fhir/metadata"))
            .send()
            .await
    });
    accepted_rx.await.unwrap();
    // Meanwhile a connection to the server that asks: the hub's certificate is requested.
    let asked = client
        .get(format!("{}/metadata", url(&with_auth)))
        .send()
        .await
        .unwrap();
    assert_eq!(asked.status(), 200);
    open_tx.send(()).unwrap();
    let e = unasked.await.unwrap().unwrap_err();
    assert_eq!(
        vitals_hub::uplink::classify(&e),
        UplinkError::ServerDidNotRequestClientCert
    );
    assert_eq!(
        without_auth.stats().requests,
        0,
        "no request was written on the unauthenticated connection"
    );
    proxy.abort();
    with_auth.shutdown().await;
    without_auth.shutdown().await;
}

/// The client-certificate resolver runs inside the TLS handshake and only reads memory: files are
/// re-read by the uplink's refresh (off the runtime's threads), not by the handshake. A renewed
/// certificate is picked up by the refresh; removed files leave the loaded one in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_resolver_reads_memory_only_and_a_renewed_certificate_is_picked_up() {
    use rustls::client::ResolvesClientCert;
    use vitals_hub::uplink::tls::{CertPaths, ReloadingCert};
    let ca = DevCa::new("clinic").unwrap();
    let old = ca.client("hub-0001", Span::DEFAULT).unwrap();
    let h = hub_with(2, &ca, &old).await;
    let cert = ReloadingCert::new(
        CertPaths {
            cert: h.cert.clone(),
            key: h.key.clone(),
        },
        std::sync::Arc::new(rustls::crypto::ring::default_provider()),
    )
    .unwrap();
    let presented = |c: &ReloadingCert| c.resolve(&[], &[]).unwrap().cert[0].as_ref().to_vec();
    assert!(presented(&cert) == old.cert_der);
    // Renewed on disk: the handshake keeps presenting what is loaded until a refresh.
    let new = ca.client("hub-0001", Span::DEFAULT).unwrap();
    new.write(h.dir.path(), "hub").unwrap();
    assert!(
        presented(&cert) == old.cert_der,
        "the handshake read the files"
    );
    assert!(cert.refresh().unwrap(), "the refresh sees the renewal");
    assert!(presented(&cert) == new.cert_der);
    // Files gone: the loaded certificate stays in use, and uploads still work.
    std::fs::remove_file(&h.cert).unwrap();
    std::fs::remove_file(&h.key).unwrap();
    assert!(presented(&cert) == new.cert_der);
    let rx = clinic(&ca).await;
    let h2 = hub_with(2, &ca, &old).await;
    let mut up = uplink(&h2, uplink_config(&h2, &url(&rx)));
    std::fs::remove_file(&h2.cert).unwrap();
    std::fs::remove_file(&h2.key).unwrap();
    assert_eq!(up.drain(DRAIN).await.unwrap().acked, 2);
    rx.shutdown().await;
}
