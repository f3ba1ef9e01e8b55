//! Shared by the `uplink_*` tests: a PKI minted at test time, an in-process receiver on
//! 127.0.0.1:0, a store seeded with readings, and an uplink pointed at the receiver.
#![allow(dead_code)]

use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use vitals_hub::fhir::{DeviceIdent, HubInfo, IdTimestamp, ObservationIdentifier};
use vitals_hub::model::{
    Decimal, Kind, LocalDateTime, Reading, SystemClock, Unit, UtcMillis, Value,
};
use vitals_hub::receiver::pki::{DevCa, Minted};
use vitals_hub::receiver::{tls, FaultQueue, Listen, Receiver, ReceiverConfig};
use vitals_hub::store::{DeviceKey, DeviceRecord, KekSource, NewReading, Store, StoreConfig};
use vitals_hub::uplink::{FixedTimeSync, Uplink, UplinkConfig};

pub const PATIENT: &str = "pat-0001";
pub const METER_ADDR: &str = "00:60:19:4B:2C:1D";

pub fn hub() -> HubInfo {
    HubInfo {
        mac: "DC:A6:32:12:34:56".parse().unwrap(),
        manufacturer: "vitals-hub tests".into(),
        model: "vitals-hub".into(),
        software_version: env!("CARGO_PKG_VERSION").into(),
        ntp: true,
        utc_offset_minutes: 0,
    }
}

pub fn der_key(m: &Minted) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(m.key_der.clone()))
}

/// Start a TLS receiver with this server certificate; clients must chain to `client_ca`.
pub async fn receiver(
    server: &Minted,
    client_ca: Option<&DevCa>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Receiver {
    let cfg = tls::server_config_der(
        vec![CertificateDer::from(server.cert_der.clone())],
        der_key(server),
        client_ca.map(|c| vec![CertificateDer::from(c.cert_der.clone())]),
        versions,
    )
    .unwrap();
    Receiver::start(ReceiverConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        listen: Listen::Tls(cfg),
        db_path: None,
        faults: FaultQueue::new(),
    })
    .await
    .unwrap()
}

pub struct Hub {
    pub dir: tempfile::TempDir,
    pub store: Store,
    pub device: DeviceKey,
    pub ca_path: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn store_config(dir: &Path) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    c.kek = KekSource::resolve(dir, None);
    c.patient_id = Some(PATIENT.into());
    c
}

/// A glucose reading with a device time `i` minutes after 2025-03-14T08:00:00.
pub fn glucose(i: u32) -> NewReading {
    let mut r = Reading::new(
        Kind::Glucose,
        Value::Number(Decimal::new(90 + i64::from(i % 50), 0)),
        Unit::MgPerDl,
    );
    r.device_time = Some(
        LocalDateTime::new(2025, 3, 14, 8, 0, 0)
            .unwrap()
            .add_minutes(i64::from(i))
            .unwrap(),
    );
    r.sequence = Some(u16::try_from(i % 65_000).unwrap());
    NewReading {
        stable_key: format!("meter-{i}"),
        reading: r,
        received_at: UtcMillis(1_741_939_200_000 + i64::from(i) * 60_000),
        test_data: false,
        summary: None,
    }
}

/// The identifier the hub must produce for [`glucose`]`(i)`.
pub fn glucose_identifier(i: u32) -> String {
    let r = glucose(i);
    ObservationIdentifier::new(
        DeviceIdent::BtMac(METER_ADDR.parse().unwrap()),
        PATIENT,
        160184,
        IdTimestamp::Device(r.reading.device_time.unwrap()),
    )
    .value()
}

/// A hub with a store holding `n` glucose readings and a client certificate from `hub_ca`.
pub async fn hub_with(n: u32, clinic_ca: &DevCa, hub_cert: &Minted) -> Hub {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_config(dir.path()), Arc::new(SystemClock))
        .await
        .unwrap();
    let device = store
        .upsert_device(
            DeviceRecord {
                address: METER_ADDR.into(),
                name: Some("GM-100".into()),
                profile: "glucose".into(),
                patient_binding: Some(PATIENT.into()),
                serial: None,
                bond: None,
            },
            true,
        )
        .await
        .unwrap();
    let items: Vec<NewReading> = (0..n).map(glucose).collect();
    for chunk in items.chunks(500) {
        store.append(&device, chunk.to_vec(), None).await.unwrap();
    }
    let ca_path = dir.path().join("clinic-ca.pem");
    std::fs::write(&ca_path, &clinic_ca.cert_pem).unwrap();
    let (cert, key) = hub_cert.write(dir.path(), "hub").unwrap();
    Hub {
        dir,
        store,
        device,
        ca_path,
        cert,
        key,
    }
}

pub fn uplink_config(h: &Hub, url: &str) -> UplinkConfig {
    let mut c = UplinkConfig::new(url, &h.ca_path, PATIENT);
    c.client_cert = Some(h.cert.clone());
    c.client_key = Some(h.key.clone());
    c.connect_timeout_ms = 2_000;
    c.request_timeout_ms = 3_000;
    c.retry_base_ms = 20;
    c.retry_cap_ms = 2_000;
    c.batch_size = 10;
    c
}

pub fn uplink(h: &Hub, cfg: UplinkConfig) -> Uplink {
    Uplink::new(
        cfg,
        h.store.clone(),
        Arc::new(SystemClock),
        Arc::new(FixedTimeSync(true)),
        hub(),
    )
    .unwrap()
}

pub fn url(r: &Receiver) -> String {
    format!("https://localhost:{}/fhir", r.addr().port())
}

pub const DRAIN: Duration = Duration::from_secs(60);
