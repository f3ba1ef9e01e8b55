#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! The hub offline while the clinician saves a new limits version (issue 18): the hub keeps the
//! limits it had while its link is cut (a TCP relay in front of the clinic, switched off and every
//! open connection dropped), applies the new version when the link returns, and its
//! acknowledgement reaches the clinic then, saying when the version was applied.

mod uplink_support;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use uplink_support::*;
use vitals_hub::alerts::AlertRules;
use vitals_hub::clinic::registry::record_for_der;
use vitals_hub::clinic::Limits as ClinicLimits;
use vitals_hub::daemon::{Ingest, IngestConfig};
use vitals_hub::fhir::limits::{read_ack, LimitsVersion};
use vitals_hub::model::{Kind, UtcMillis};
use vitals_hub::receiver::pki::{DevCa, Span};
use vitals_hub::uplink::limits::{in_force, Applier, Offer};

/// A TCP relay to `to` that can be cut: while down it refuses new connections and has dropped
/// the open ones.
struct Link {
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    port: u16,
}

impl Link {
    async fn start(to: std::net::SocketAddr) -> Link {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (up2, conns2) = (up.clone(), conns.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let h = tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                conns2.lock().unwrap().push(h);
            }
        });
        Link { up, conns, port }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

fn version(v: u32, glucose_high: i64) -> LimitsVersion {
    LimitsVersion {
        reason: format!("version {v}"),
        ..glucose_high_version(PATIENT, v, glucose_high)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_the_hub_keeps_its_limits_and_applies_the_new_version_when_the_link_returns() {
    let ca = DevCa::new("clinic").unwrap();
    let rx = enforced_clinic(&ca, ClinicLimits::default()).await;
    let cert = ca.client("hub-a", Span::DEFAULT).unwrap();
    rx.enroll(&record_for_der(&cert.cert_der, PATIENT, None).unwrap())
        .unwrap();
    let link = Link::start(rx.addr()).await;
    let h = hub_with(0, &ca, &cert).await;
    let hub_rules = AlertRules::starting_points();
    let start = in_force(&h.store, &hub_rules).await.unwrap();
    let ingest = Arc::new(
        Ingest::open(
            h.store.clone(),
            IngestConfig {
                rules: start.rules.clone(),
                patient_id: PATIENT.into(),
                utc_offset_minutes: 0,
                zone: vitals_hub::model::Zone::utc(),
            },
        )
        .await
        .unwrap(),
    );
    let applier = Applier::new(
        h.store.clone(),
        Some(ingest.clone()),
        hub_rules,
        PATIENT.into(),
        start,
    );
    let base = format!("https://localhost:{}/fhir", link.port);
    let mut up = uplink(&h, uplink_config(&h, &base)).with_limits(applier);
    let high = |r: &AlertRules| r.thresholds[&Kind::Glucose].high.unwrap().0.to_string();

    rx.create_console_resource(&version(1, 180).to_service_request().unwrap())
        .unwrap();
    assert_eq!(
        up.sync_limits().await.unwrap(),
        Offer::Applied { version: 1 }
    );
    assert!(up.send_limits_ack().await.unwrap());

    // The link is cut; the clinician saves version 2 meanwhile.
    link.cut();
    rx.create_console_resource(&version(2, 160).to_service_request().unwrap())
        .unwrap();
    assert!(
        up.sync_limits().await.is_err(),
        "the clinic must be out of reach"
    );
    assert_eq!(
        high(&ingest.rules().await),
        "180",
        "the hub keeps version 1"
    );
    let before = UtcMillis(jiff::Timestamp::now().as_millisecond());

    // The link returns: version 2 is applied and acknowledged, with when.
    link.restore();
    assert_eq!(
        up.sync_limits().await.unwrap(),
        Offer::Applied { version: 2 }
    );
    assert_eq!(high(&ingest.rules().await), "160");
    assert!(up.send_limits_ack().await.unwrap());
    let acks: Vec<_> = rx
        .resources("Observation")
        .iter()
        .filter_map(read_ack)
        .collect();
    let v2 = acks
        .iter()
        .find(|a| a.1 == 2)
        .expect("version 2 acknowledged");
    assert_eq!(v2.2, vitals_hub::fhir::limits::AckOutcome::Applied);
    let at = UtcMillis::parse_rfc3339(&v2.3).unwrap();
    assert!(at >= before, "applied when the link returned: {}", v2.3);
}
