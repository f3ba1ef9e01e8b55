#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! `--plain` behind the reference nginx: loopback only, and the identity header (the verified
//! client certificate nginx passes) is trusted only on requests carrying the proxy's shared secret.
//! Any other local process — no secret, a wrong one, a forged subject header — gets a 403 and an
//! AuditEvent.

mod uplink_support;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use uplink_support::*;
use vitals_hub::clinic::registry::{record_for_der, Registry};
use vitals_hub::clinic::{
    Access, ClinicOptions, FaultQueue, Listen, Receiver, ReceiverConfig, ReceiverError,
};
use vitals_hub::receiver::pki::{DevCa, Span};

const SECRET: &str = "0123456789abcdef-proxy-secret";

async fn proxied(bind: &str) -> Result<Receiver, ReceiverError> {
    Receiver::start_with(
        ReceiverConfig {
            bind: bind.parse().unwrap(),
            listen: Listen::Proxied {
                secret: SECRET.into(),
            },
            db_path: None,
            faults: FaultQueue::new(),
        },
        ClinicOptions {
            access: Access::Registry(Registry::new()),
            ..ClinicOptions::default()
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_mode_trusts_only_the_proxy() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    assert!(matches!(
        proxied("0.0.0.0:0").await,
        Err(ReceiverError::PlainNotLoopback(_))
    ));
    let rx = proxied("127.0.0.1:0").await.unwrap();
    let ca = DevCa::new("clinic").unwrap();
    let hub = ca.client("hub-a", Span::DEFAULT).unwrap();
    rx.enroll(&record_for_der(&hub.cert_der, "p1", None).unwrap())
        .unwrap();
    let base = format!("http://{}/fhir", rx.addr());
    let body = serde_json::to_vec(&raw_bundle("P1", true)).unwrap();
    let escaped = utf8_percent_encode(&hub.cert_pem, NON_ALPHANUMERIC).to_string();
    let c = reqwest::Client::new();
    let send = |headers: Vec<(&'static str, String)>| {
        let mut r = c
            .post(&base)
            .header("content-type", "application/fhir+json")
            .body(body.clone());
        for (k, v) in headers {
            r = r.header(k, v);
        }
        async move { r.send().await.unwrap().status().as_u16() }
    };
    // Any local process: no secret (with a forged subject, or even the certificate) — 403.
    assert_eq!(
        send(vec![("x-ssl-client-s-dn", "CN=hub-a".into())]).await,
        403
    );
    assert_eq!(
        send(vec![("x-ssl-client-cert", escaped.clone())]).await,
        403
    );
    assert_eq!(
        send(vec![
            ("x-clinic-proxy-secret", "wrong-secret-0123456789".into()),
            ("x-ssl-client-cert", escaped.clone()),
        ])
        .await,
        403
    );
    // The proxy without a certificate header: 403.
    assert_eq!(
        send(vec![("x-clinic-proxy-secret", SECRET.into())]).await,
        403
    );
    // The proxy with the verified, enrolled certificate: stored.
    assert_eq!(
        send(vec![
            ("x-clinic-proxy-secret", SECRET.into()),
            ("x-ssl-client-cert", escaped.clone()),
        ])
        .await,
        200
    );
    assert_eq!(rx.count("Observation"), 1);
    assert_eq!(rx.resources("AuditEvent").len(), 4);
    // A certificate the registry does not know, through the proxy: 403.
    let other = ca.client("hub-x", Span::DEFAULT).unwrap();
    assert_eq!(
        send(vec![
            ("x-clinic-proxy-secret", SECRET.into()),
            (
                "x-ssl-client-cert",
                utf8_percent_encode(&other.cert_pem, NON_ALPHANUMERIC).to_string()
            ),
        ])
        .await,
        403
    );
    rx.shutdown().await;
}
