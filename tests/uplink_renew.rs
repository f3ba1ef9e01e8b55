#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! Issue 19, the hub's identity: EST renewal and revocation over real mutual TLS on 127.0.0.1,
//! the clinic's ingest with its registry (and EST signer, and CRL) in process, the hub's own
//! uplink against it.

mod uplink_support;
use rustls_pki_types::CertificateDer;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uplink_support::*;
use vitals_hub::clinic::est::Est;
use vitals_hub::clinic::registry::record_for_der;
use vitals_hub::clinic::{Access, ClinicOptions, FaultQueue, Listen, Receiver, ReceiverConfig};
use vitals_hub::receiver::pki::{DevCa, Minted, Span, DEV_RECEIVER_NAMES};
use vitals_hub::receiver::tls;
use vitals_hub::uplink::renew::{Renewal, RENEWAL_STATE};
use vitals_hub::uplink::UplinkError;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The clinic as `vitals-clinic serve --db … [--est-ca-key …] [--crl …]` runs it.
async fn clinic_with(ca: &DevCa, est: bool, crl: Option<&Path>) -> Receiver {
    clinic_signing(ca, est.then_some(ca), crl).await
}

/// [`clinic_with`], its EST signing with `est` (which need not be the CA the ingest trusts).
async fn clinic_signing(ca: &DevCa, est: Option<&DevCa>, crl: Option<&Path>) -> Receiver {
    let registry = vitals_hub::clinic::Registry::new();
    let server = ca.server(DEV_RECEIVER_NAMES, Span::DEFAULT).unwrap();
    let (cfg, watch) = tls::server_config_crl(
        vec![CertificateDer::from(server.cert_der.clone())],
        der_key(&server),
        Some(vec![CertificateDer::from(ca.cert_der.clone())]),
        TLS13,
        Some(registry.clone()),
        crl,
    )
    .unwrap();
    Receiver::start_with(
        ReceiverConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            listen: Listen::Tls(cfg),
            db_path: None,
            faults: FaultQueue::new(),
        },
        ClinicOptions {
            access: Access::Registry(registry),
            est: est.map(|signer| {
                Arc::new(Est {
                    ca: signer.hub_ca().unwrap(),
                    days: 365,
                })
            }),
            crl: watch,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

fn enroll(rx: &Receiver, m: &Minted) {
    rx.enroll(&record_for_der(&m.cert_der, PATIENT, None).unwrap())
        .unwrap();
}

fn fingerprint_of(path: &Path) -> String {
    tls::fingerprint(tls::load_certs(path).unwrap()[0].as_ref())
}

async fn renewal_state(h: &Hub, url: &str) -> Option<Renewal> {
    let dest = vitals_hub::uplink::sync::destination_of(&reqwest::Url::parse(url).unwrap());
    h.store
        .uplink_state(&dest, RENEWAL_STATE)
        .await
        .unwrap()
        .map(|v| serde_json::from_str(&v).unwrap())
}

async fn event_kinds(h: &Hub) -> Vec<String> {
    h.store
        .events(1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

fn prev(p: &Path) -> std::path::PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".prev");
    s.into()
}

/// A certificate with minutes left, past two thirds of its life, renews on the first pass; every
/// reading arrives once, none is refused, and the uploads are made with the new certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_minutes_from_expiry_renews_with_no_reading_lost_or_refused() {
    let ca = DevCa::new("clinic").unwrap();
    let rx = clinic_with(&ca, true, None).await;
    let t = now();
    let old = ca.client_between("hub-0001", t - 3600, t + 300).unwrap();
    enroll(&rx, &old);
    let h = hub_with(40, &ca, &old).await;
    let old_fp = fingerprint_of(&h.cert);
    let url = url(&rx);
    let mut up = uplink(&h, uplink_config(&h, &url));

    let rep = up.drain(DRAIN).await.unwrap();
    // The 40 readings and the hub's own alert (minutes left: under 14 days).
    assert_eq!(rep.acked, 41);
    let counts = rx.observation_identifier_counts();
    for i in 0..40 {
        assert_eq!(counts.get(&glucose_identifier(i)), Some(&1), "reading {i}");
    }
    let st = rx.stats();
    assert_eq!((st.forbidden, st.tls_failures, st.rejected), (0, 0, 0));
    let store = h.store.stats().await.unwrap();
    assert_eq!((store.pending, store.rejected), (0, 0));

    // The new certificate is in place: another key, the same subject, a year of validity.
    let new_fp = fingerprint_of(&h.cert);
    assert_ne!(new_fp, old_fp);
    let der = tls::load_certs(&h.cert).unwrap()[0].as_ref().to_vec();
    let v = vitals_hub::uplink::tls::validity(&der).unwrap();
    assert!(v.not_after > i64::try_from(t).unwrap() + 300 * 86_400);
    let (_, c) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert_eq!(
        c.subject().to_string().split(',').next(),
        Some("CN=hub-0001")
    );
    assert_ne!(
        std::fs::read_to_string(&h.key).unwrap(),
        old.key_pem,
        "a new key pair made on the hub"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&h.key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The uploads went with the new certificate, which confirmed it: the old pair is gone.
    assert_eq!(rx.clients(), vec![new_fp.clone()]);
    assert!(!prev(&h.cert).exists() && !prev(&h.key).exists());
    let r = renewal_state(&h, &url).await.unwrap();
    assert_eq!(r.state, "confirmed");
    let kinds = event_kinds(&h).await;
    assert!(
        kinds.contains(&"uplink_client_cert_renewed".to_owned()),
        "{kinds:?}"
    );
    assert!(kinds.contains(&"uplink_client_cert_renewal_confirmed".to_owned()));

    // The old certificate stays valid at the clinic until it expires (the overlap).
    let (oc, ok) = old.write(h.dir.path(), "old").unwrap();
    let c = mtls_client(&h.ca_path, &oc, &ok);
    let r = c
        .get(format!("{url}/Patient?_id={PATIENT}&_summary=count"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Not due again: a second pass renews nothing.
    up.drain(DRAIN).await.unwrap();
    assert_eq!(fingerprint_of(&h.cert), new_fp);
}

/// A renewed certificate the clinic then refuses at TLS (here: signed by a CA its ingest does not
/// trust) is rolled back before anything is lost: the old pair is put back and the readings go
/// with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_the_clinic_refuses_is_rolled_back() {
    let ca = DevCa::new("clinic").unwrap();
    let rogue = DevCa::new("not the hub CA").unwrap();
    let rx = clinic_signing(&ca, Some(&rogue), None).await;
    let t = now();
    let old = ca.client_between("hub-0001", t - 3600, t + 300).unwrap();
    enroll(&rx, &old);
    let h = hub_with(10, &ca, &old).await;
    let url = url(&rx);
    let mut cfg = uplink_config(&h, &url);
    cfg.retry_base_ms = 30_000; // no second renewal inside this test
    let mut up = uplink(&h, cfg);
    let e = up.drain(DRAIN).await.unwrap_err();
    assert!(
        matches!(e, UplinkError::ServerRejectedOurCertificate(_)),
        "{e:?}"
    );
    // The old pair is back, and nothing was acked with the refused one.
    assert_eq!(
        tls::load_certs(&h.cert).unwrap()[0].as_ref(),
        old.cert_der.as_slice()
    );
    assert_eq!(std::fs::read_to_string(&h.key).unwrap(), old.key_pem);
    assert!(!prev(&h.cert).exists() && !prev(&h.key).exists());
    let r = renewal_state(&h, &url).await.unwrap();
    assert_eq!(r.state, "rolled_back");
    assert!(event_kinds(&h)
        .await
        .contains(&"uplink_client_cert_renewal_rolled_back".to_owned()));
    assert_eq!(rx.count("Observation"), 0);
    // The uploads go on with the old certificate: everything arrives once.
    let rep = up.drain(DRAIN).await.unwrap();
    assert_eq!(rep.acked, 11, "10 readings and the expiry alert");
    let counts = rx.observation_identifier_counts();
    for i in 0..10 {
        assert_eq!(counts.get(&glucose_identifier(i)), Some(&1), "reading {i}");
    }
}

/// Clinic down, then a clinic that refuses the CSR: each attempt fails with its cause, waits its
/// backoff (no attempt inside it; the doubling itself is `renew::tests::backoff_doubles_up_to_the_cap`),
/// uploads go on with the old certificate, and with 10 days left the hub raises its alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_failures_retry_with_backoff_and_alert_at_14_days() {
    let ca = DevCa::new("clinic").unwrap();
    let t = now();
    let cert = ca
        .client_between("hub-0001", t - 30 * 86_400, t + 10 * 86_400)
        .unwrap();
    let h = hub_with(5, &ca, &cert).await;

    // 1. The clinic is down: the attempt fails as refused.
    let down = format!("https://localhost:{}/fhir", free_port());
    let mut cfg = uplink_config(&h, &down);
    cfg.retry_base_ms = 1_500;
    cfg.retry_cap_ms = 60_000;
    let mut up = uplink(&h, cfg.clone());
    assert!(up.step().await.is_err());
    let r = renewal_state(&h, &down).await.unwrap();
    assert_eq!((r.state.as_str(), r.failures), ("failing", 1));
    assert!(r.error.unwrap().contains("refused"), "named cause");
    drop(up);

    // 2. The clinic is up but refuses the CSR: this hub already holds the most live certificates.
    let rx = clinic_with(&ca, true, None).await;
    enroll(&rx, &cert);
    for _ in 0..vitals_hub::clinic::est::MAX_LIVE - 1 {
        enroll(&rx, &ca.client("hub-0001", Span::DEFAULT).unwrap());
    }
    let url = url(&rx);
    let mut cfg = uplink_config(&h, &url);
    cfg.retry_base_ms = 200;
    cfg.retry_cap_ms = 60_000;
    let mut up = uplink(&h, cfg.clone());
    let failures = |h: &Hub| {
        let h = h.store.clone();
        async move {
            h.events(1000)
                .await
                .unwrap()
                .into_iter()
                .filter(|e| e.kind == "uplink_client_cert_renewal_failed")
                .count()
        }
    };
    let before = failures(&h).await;
    // The readings (and the 14-day alert) go with the old certificate in the same pass.
    assert_eq!(up.drain(DRAIN).await.unwrap().acked, 6);
    let after_drain = failures(&h).await;
    assert!(after_drain > before);
    let r = renewal_state(&h, &url).await.unwrap();
    assert!(r.error.as_deref().unwrap().contains("HTTP 409"), "{r:?}");
    // After its backoff the attempt is made again, by itself, and counted.
    let deadline = Instant::now() + Duration::from_secs(20);
    while failures(&h).await < after_drain + 1 {
        assert!(Instant::now() < deadline, "no retry after the backoff");
        up.step().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = renewal_state(&h, &url).await.unwrap();
    assert!(r.failures >= 2 && r.state == "failing", "{r:?}");
    drop(up);
    // Inside a backoff no attempt is made: a hub with a 60 s base tries once, then waits.
    cfg.retry_base_ms = 60_000;
    let mut up = uplink(&h, cfg);
    let start = failures(&h).await;
    for _ in 0..20 {
        up.step().await.unwrap();
    }
    assert_eq!(failures(&h).await, start + 1, "one attempt, then the wait");

    // 10 days left: the hub's alert, and the certificate is unchanged.
    let kinds = event_kinds(&h).await;
    assert!(
        kinds.contains(&"uplink_client_cert_expiring".to_owned()),
        "{kinds:?}"
    );
    assert!(
        h.store.stats().await.unwrap().alerts >= 1,
        "the 14-day alert"
    );
    assert_eq!(
        tls::load_certs(&h.cert).unwrap()[0].as_ref(),
        cert.cert_der.as_slice()
    );
}

/// A revoked hub is refused at the TLS layer, named as revoked, and nothing is acked; a
/// certificate only on the CRL (the registry still lists it) is refused the same way once the
/// clinic has re-read the CRL file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_hub_is_refused_at_tls_and_nothing_is_acked() {
    let ca = DevCa::new("clinic").unwrap();
    let hub_ca = ca.hub_ca().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let crl = dir.path().join("hubs.crl");
    hub_ca.write_crl(&crl, &[]).unwrap();
    let rx = clinic_with(&ca, false, Some(&crl)).await;

    // Hub A: revoked in the registry (`vitals-clinic hub revoke`).
    let a = ca.client("hub-0001", Span::DEFAULT).unwrap();
    enroll(&rx, &a);
    let h = hub_with(5, &ca, &a).await;
    let url = url(&rx);
    let mut up = uplink(&h, uplink_config(&h, &url));
    assert_eq!(up.drain(DRAIN).await.unwrap().acked, 5);
    h.store
        .append(&h.device, (5..10).map(glucose).collect(), None)
        .await
        .unwrap();
    assert_eq!(rx.revoke("hub-0001"), 1);
    // The open connection is answered 403 and closed; the next handshake meets the revocation.
    let deadline = Instant::now() + Duration::from_secs(15);
    let e = loop {
        match up.step().await {
            Err(e @ UplinkError::CertificateRevoked(_)) => break e,
            r => assert!(Instant::now() < deadline, "never refused as revoked: {r:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(matches!(e, UplinkError::CertificateRevoked(_)), "{e:?}");
    assert!(e
        .to_string()
        .starts_with("certificate revoked by the clinic: "));
    assert_eq!(e.kind(), "uplink_client_cert_revoked");
    assert_eq!(h.store.stats().await.unwrap().pending, 5, "nothing acked");
    assert_eq!(rx.count("Observation"), 5);
    let kinds = event_kinds(&h).await;
    assert!(
        kinds.contains(&"uplink_client_cert_revoked".to_owned()),
        "{kinds:?}"
    );

    // Hub B: enrolled and active in the registry, but its serial is put on the CRL: new
    // connections are refused at the handshake once the clinic has re-read the file.
    let b = ca.client("hub-0002", Span::DEFAULT).unwrap();
    enroll(&rx, &b);
    let hb = hub_with(3, &ca, &b).await;
    assert_eq!(
        uplink(&hb, uplink_config(&hb, &url))
            .drain(DRAIN)
            .await
            .unwrap()
            .acked,
        3
    );
    let (serial, _) = vitals_hub::clinic::crl::serial_hex(&b.cert_der).unwrap();
    hub_ca
        .write_crl(&crl, &[(serial, jiff::Timestamp::now().to_string())])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        // A new client each time: a new connection, a new handshake.
        let c = mtls_client(&hb.ca_path, &hb.cert, &hb.key);
        match c.get(format!("{url}/metadata")).send().await {
            Err(e)
                if matches!(
                    vitals_hub::uplink::classify(&e),
                    UplinkError::CertificateRevoked(_)
                ) =>
            {
                break
            }
            r => assert!(Instant::now() < deadline, "the CRL was not applied: {r:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    hb.store
        .append(&hb.device, (3..5).map(glucose).collect(), None)
        .await
        .unwrap();
    // TLS 1.3: the clinic refuses the client certificate after the client has sent its Finished,
    // so the refusal reaches the client either as the `certificate_revoked` alert or, when the
    // request was already on its way, as a connection closed under it (a network error, retried
    // by the uplink). Each attempt is refused; within a few the hub names the revocation.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let e = uplink(&hb, uplink_config(&hb, &url))
            .step()
            .await
            .unwrap_err();
        assert_eq!(
            hb.store.stats().await.unwrap().pending,
            2,
            "nothing of hub B acked after the CRL"
        );
        match e {
            UplinkError::CertificateRevoked(_) => break,
            UplinkError::Network(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            e => panic!("not refused as revoked: {e:?}"),
        }
    }
}

/// A CSR whose subject is not the connecting hub's is refused, and nothing is enrolled.
#[test]
fn est_signs_only_the_connecting_hubs_subject() {
    let ca = DevCa::new("clinic").unwrap();
    let est = Est {
        ca: ca.hub_ca().unwrap(),
        days: 30,
    };
    let mine = ca.client("hub-0001", Span::DEFAULT).unwrap();
    let other = ca.client("hub-0002", Span::DEFAULT).unwrap();
    let rec = record_for_der(&mine.cert_der, PATIENT, None).unwrap();
    // A request made by the hub of `other` (its subject), sent over `mine`'s connection.
    let req = vitals_hub::uplink::renew::make_request(&other.cert_der).unwrap();
    use base64::Engine;
    let csr = base64::engine::general_purpose::STANDARD
        .decode(&req.csr_b64)
        .unwrap();
    let r = vitals_hub::clinic::est::sign(&est, &rec, &csr);
    assert!(
        matches!(r, Err(vitals_hub::clinic::est::Refusal::Forbidden(_))),
        "{r:?}"
    );
    // Its own subject is signed: the answer round-trips through PKCS#7 to the hub's reader.
    let req = vitals_hub::uplink::renew::make_request(&mine.cert_der).unwrap();
    let csr = base64::engine::general_purpose::STANDARD
        .decode(&req.csr_b64)
        .unwrap();
    let (der, new_rec) = vitals_hub::clinic::est::sign(&est, &rec, &csr).unwrap();
    assert_eq!(
        (new_rec.hub_id.as_str(), new_rec.patient.as_str()),
        ("hub-0001", PATIENT)
    );
    let p7 = vitals_hub::clinic::est::certs_only(&[&der]);
    let certs = vitals_hub::uplink::renew::certs_from_pkcs7(&p7).unwrap();
    assert_eq!(certs, vec![der.clone()]);
    let (pem, _) =
        vitals_hub::uplink::renew::pick(&certs, &req, i64::try_from(now()).unwrap()).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    // Garbage is a 400-class refusal, never a panic.
    assert!(matches!(
        vitals_hub::clinic::est::sign(&est, &rec, b"not a csr"),
        Err(vitals_hub::clinic::est::Refusal::Bad(_))
    ));
}

/// Over the wire: a hub asking for another subject gets a 403 and a stored security AuditEvent
/// naming it; a request without the EST media type is refused; nothing is enrolled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simplereenroll_for_another_subject_is_refused_and_audited() {
    let ca = DevCa::new("clinic").unwrap();
    let rx = clinic_with(&ca, true, None).await;
    let mine = ca.client("hub-0001", Span::DEFAULT).unwrap();
    enroll(&rx, &mine);
    let h = hub_with(0, &ca, &mine).await;
    let c = mtls_client(&h.ca_path, &h.cert, &h.key);
    let est = format!(
        "https://localhost:{}/.well-known/est/simplereenroll",
        rx.addr().port()
    );
    let other = ca.client("hub-0002", Span::DEFAULT).unwrap();
    let req = vitals_hub::uplink::renew::make_request(&other.cert_der).unwrap();
    let r = c
        .post(&est)
        .header("content-type", "application/pkcs10")
        .body(req.csr_b64.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let audits = rx.resources("AuditEvent");
    assert_eq!(audits.len(), 1, "{audits:?}");
    assert!(audits[0].to_string().contains("hub-0001"));
    let r = c.post(&est).body(req.csr_b64).send().await.unwrap();
    assert_eq!(r.status(), 415);
    assert_eq!(rx.stats().forbidden, 1);
}
