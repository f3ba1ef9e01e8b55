//! Unit tests of the sync loop that need its private parts.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]
use super::*;
use crate::model::{Decimal, LocalDateTime, Reading, SystemClock, Unit, Value};
use crate::receiver::pki::{DevCa, Span, DEV_RECEIVER_NAMES};
use crate::receiver::{tls, FaultQueue, Listen, Receiver, ReceiverConfig};
use crate::store::{DeviceKey, DeviceRecord, KekSource, NewReading, StoreConfig};
use crate::uplink::send::{gzip, request_body};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

#[test]
fn a_failed_compression_sends_the_plain_body_without_content_encoding() {
    let raw = br#"{"resourceType":"Bundle"}"#.to_vec();
    let failing = |_: &[u8]| Err(std::io::Error::other("compression failed (test seam)"));
    let (body, gz) = request_body(raw.clone(), true, failing);
    assert_eq!(body, raw);
    assert!(
        !gz,
        "a plain body must not be labelled Content-Encoding: gzip"
    );
    let (body, gz) = request_body(raw.clone(), true, gzip);
    assert!(gz);
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut out).unwrap();
    assert_eq!(out, raw);
    assert_eq!(request_body(raw.clone(), false, gzip), (raw, false));
}

fn glucose(i: i64) -> NewReading {
    let mut r = Reading::new(
        crate::model::Kind::Glucose,
        Value::Number(Decimal::new(100 + i, 0)),
        Unit::MgPerDl,
    );
    r.device_time = Some(
        LocalDateTime::new(2025, 3, 14, 8, 0, 0)
            .unwrap()
            .add_minutes(i)
            .unwrap(),
    );
    NewReading {
        stable_key: format!("g-{i}"),
        reading: r,
        received_at: UtcMillis(1_741_939_200_000 + i * 60_000),
        test_data: false,
        summary: None,
    }
}

/// An entry the uplink cannot turn into a request (here: its device record is unknown) in
/// the middle of a batch, with a refused entry after it: every other entry is matched to its
/// own response entry — the right ones acked, the refused one rejected, none left in flight —
/// and the skipped one is neither sent nor acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skipped_entry_mid_batch_does_not_shift_the_acks() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::new("clinic").unwrap();
    let server = ca.server(DEV_RECEIVER_NAMES, Span::DEFAULT).unwrap();
    let rx = Receiver::start(ReceiverConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        listen: Listen::Tls(
            tls::server_config_der(
                vec![CertificateDer::from(server.cert_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server.key_der.clone())),
                Some(vec![CertificateDer::from(ca.cert_der.clone())]),
                &[&rustls::version::TLS13],
            )
            .unwrap(),
        ),
        db_path: None,
        faults: FaultQueue::new(),
    })
    .await
    .unwrap();
    let mut sc = StoreConfig::new(dir.path());
    sc.kek = KekSource::resolve(dir.path(), None);
    sc.patient_id = Some("pat-1".into());
    let store = Store::open(sc, Arc::new(SystemClock)).await.unwrap();
    let dev = store
        .upsert_device(
            DeviceRecord {
                address: "00:60:19:4B:2C:1D".into(),
                name: None,
                profile: "glucose".into(),
                patient_binding: Some("pat-1".into()),
                serial: None,
                bond: None,
            },
            true,
        )
        .await
        .unwrap();
    store
        .append(&dev, (0..4).map(glucose).collect(), None)
        .await
        .unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &ca.cert_pem).unwrap();
    let (cert, key) = ca
        .client("hub-1", Span::DEFAULT)
        .unwrap()
        .write(dir.path(), "hub")
        .unwrap();
    let mut cfg = UplinkConfig::new(
        &format!("https://localhost:{}/fhir", rx.addr().port()),
        &ca_path,
        "pat-1",
    );
    cfg.client_cert = Some(cert);
    cfg.client_key = Some(key);
    let hub = HubInfo {
        mac: "DC:A6:32:12:34:56".parse().unwrap(),
        manufacturer: "t".into(),
        model: "vitals-hub".into(),
        software_version: "0".into(),
        ntp: true,
        utc_offset_minutes: 0,
        zone: None,
    };
    let mut up = Uplink::new(
        cfg,
        store.clone(),
        Arc::new(SystemClock),
        Arc::new(super::super::FixedTimeSync(true)),
        hub,
    )
    .unwrap();
    up.load_devices().await.unwrap();
    let mut items = store.pending(10, SystemClock.now()).await.unwrap();
    assert_eq!(items.len(), 4);
    // Entry 1 cannot be turned into a request; entry 2 is refused by the clinic.
    if let OutboxPayload::Reading(r) = &mut items[1].payload {
        r.device = DeviceKey("no-such-device".into());
    }
    let d = up.devices.values().next().unwrap().clone();
    let ident = |i: usize| match &items[i].payload {
        OutboxPayload::Reading(r) => {
            fhir::reading_identifier(&d, "pat-1", &r.reading, r.received_at)
                .unwrap()
                .value()
        }
        OutboxPayload::Alert(_) => unreachable!(),
    };
    rx.faults().poison(&ident(2));
    let (acked, rejected) = up.deliver(&items, false).await.unwrap();
    assert_eq!((acked, rejected), (2, 1));
    let counts = rx.observation_identifier_counts();
    assert_eq!(counts.get(&ident(0)), Some(&1));
    assert_eq!(counts.get(&ident(3)), Some(&1));
    assert_eq!(counts.get(&ident(2)), None);
    assert_eq!(
        counts.len(),
        2,
        "the skipped entry was not sent: {counts:?}"
    );
    let st = store.stats().await.unwrap();
    assert_eq!((st.acked, st.rejected, st.in_flight), (2, 1, 0), "{st:?}");
    // The entry that cannot become a request is quarantined (kept, never sent), not left to
    // come back on every poll.
    assert_eq!(st.quarantined, 1, "{st:?}");
    let waiting: Vec<i64> = store
        .pending(10, UtcMillis(i64::MAX))
        .await
        .unwrap()
        .iter()
        .map(|i| i.id)
        .collect();
    assert!(
        !waiting.contains(&items[1].id),
        "the skipped entry is quarantined"
    );
    rx.shutdown().await;
}
