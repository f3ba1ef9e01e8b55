//! Shared by the `uplink_*` and `receiver_*` tests: a PKI minted at test time, an in-process
//! receiver on 127.0.0.1:0 (mutual TLS or plain loopback), raw transaction Bundles for the
//! receiver, a store seeded with readings, and an uplink pointed at the receiver.
#![allow(dead_code)]

pub mod timedate;

use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use vitals_hub::alerts::{AlertRules, Limit};
use vitals_hub::fhir::limits::LimitsVersion;
use vitals_hub::fhir::{DeviceIdent, HubInfo, IdTimestamp, ObservationIdentifier};
use vitals_hub::model::{
    Clock, Decimal, Kind, LocalDateTime, Reading, SystemClock, Unit, UtcMillis, Value,
};
use vitals_hub::receiver::pki::{DevCa, Minted, Span, DEV_RECEIVER_NAMES};
use vitals_hub::receiver::{tls, FaultQueue, Listen, Receiver, ReceiverConfig};
use vitals_hub::store::{DeviceKey, DeviceRecord, KekSource, NewReading, Store, StoreConfig};
use vitals_hub::uplink::{FixedTimeSync, TimeSync, Uplink, UplinkConfig};

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
        zone: None,
    }
}

pub const TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

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

/// The usual clinic: a receiver certificate from `ca` naming localhost and 127.0.0.1, TLS 1.3,
/// hub certificates from `ca` required.
pub async fn clinic(ca: &DevCa) -> Receiver {
    receiver(
        &ca.server(DEV_RECEIVER_NAMES, Span::DEFAULT).unwrap(),
        Some(ca),
        TLS13,
    )
    .await
}

/// The clinic as `vitals-clinic serve` runs it: mutual TLS with enrolled hubs only (enrol with
/// `Receiver::enroll`), each hub confined to its patient; `limits` as given.
pub async fn enforced_clinic(ca: &DevCa, limits: vitals_hub::clinic::Limits) -> Receiver {
    let registry = vitals_hub::clinic::Registry::new();
    let server = ca.server(DEV_RECEIVER_NAMES, Span::DEFAULT).unwrap();
    let cfg = tls::server_config_der_with(
        vec![CertificateDer::from(server.cert_der.clone())],
        der_key(&server),
        Some(vec![CertificateDer::from(ca.cert_der.clone())]),
        TLS13,
        Some(registry.clone()),
    )
    .unwrap();
    Receiver::start_with(
        ReceiverConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            listen: Listen::Tls(cfg),
            db_path: None,
            faults: FaultQueue::new(),
        },
        vitals_hub::clinic::ClinicOptions {
            access: vitals_hub::clinic::Access::Registry(registry),
            limits,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// A reqwest client presenting `cert`/`key` (PEM files) and trusting `ca_path`.
pub fn mtls_client(ca_path: &Path, cert: &Path, key: &Path) -> reqwest::Client {
    use vitals_hub::uplink::tls::{client_config, CertPaths, ReloadingCert};
    let resolver = Arc::new(
        ReloadingCert::new(
            CertPaths {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            },
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .unwrap(),
    );
    reqwest::Client::builder()
        .tls_backend_preconfigured(client_config(ca_path, resolver).unwrap())
        .build()
        .unwrap()
}

/// A receiver in plain-HTTP loopback mode (behind a TLS terminator, or the FHIR-semantics tests).
pub async fn plain() -> Receiver {
    Receiver::start(ReceiverConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        listen: Listen::PlainLoopback,
        db_path: None,
        faults: FaultQueue::new(),
    })
    .await
    .unwrap()
}

/// A free TCP port on 127.0.0.1 (nothing listens on it once this returns).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A hand-written transaction Bundle: a Device and an Observation with identifier `ident`
/// (`with_code: false` makes the Observation invalid: no `code`).
pub fn raw_bundle(ident: &str, with_code: bool) -> serde_json::Value {
    use serde_json::json;
    let mut obs = json!({
        "resourceType": "Observation",
        "identifier": [{ "system": "urn:test", "value": ident }],
        "status": "final",
        "subject": { "reference": "Patient/p1" },
        "device": { "reference": "urn:uuid:00000000-0000-4000-8000-000000000001" }
    });
    if with_code {
        obs["code"] =
            json!({ "coding": [{ "system": "urn:iso:std:iso:11073:10101", "code": "160184" }] });
    }
    json!({ "resourceType": "Bundle", "type": "transaction", "entry": [
        { "fullUrl": "urn:uuid:00000000-0000-4000-8000-000000000001",
          "resource": { "resourceType": "Device", "identifier": [{ "system": "urn:dev", "value": "D1" }] },
          "request": { "method": "POST", "url": "Device", "ifNoneExist": "identifier=urn:dev%7CD1" } },
        { "fullUrl": "urn:uuid:00000000-0000-4000-8000-000000000002",
          "resource": obs,
          "request": { "method": "POST", "url": "Observation", "ifNoneExist": format!("identifier=urn:test%7C{}", ident.replace('+', "%2B")) } }
    ]})
}

/// POST a Bundle over plain HTTP (gzip-compressed with `Content-Encoding: gzip` when asked).
pub async fn post_raw(
    base: &str,
    body: &serde_json::Value,
    gzip: bool,
) -> (u16, serde_json::Value) {
    use std::io::Write;
    let raw = serde_json::to_vec(body).unwrap();
    let mut req = reqwest::Client::new()
        .post(base)
        .header("content-type", "application/fhir+json");
    let data = if gzip {
        req = req.header("content-encoding", "gzip");
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&raw).unwrap();
        e.finish().unwrap()
    } else {
        raw
    };
    let r = req.body(data).send().await.unwrap();
    let s = r.status().as_u16();
    (
        s,
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap(),
    )
}

/// GET `url` and parse the JSON answer.
pub async fn get_json(client: &reqwest::Client, url: &str) -> serde_json::Value {
    serde_json::from_slice(&client.get(url).send().await.unwrap().bytes().await.unwrap()).unwrap()
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
    hub_on(
        store_config,
        Arc::new(SystemClock),
        (0..n).map(glucose).collect(),
        clinic_ca,
        hub_cert,
    )
    .await
}

/// A hub whose store is opened with `config(dir)` on `clock`, its meter ([`pair_meter`]) bound
/// to the config's patient, holding `readings`, with `clinic_ca` and `hub_cert` written into its
/// directory ([`write_credentials`]).
pub async fn hub_on(
    config: impl FnOnce(&Path) -> StoreConfig,
    clock: Arc<dyn Clock>,
    readings: Vec<NewReading>,
    clinic_ca: &DevCa,
    hub_cert: &Minted,
) -> Hub {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let patient = config
        .patient_id
        .clone()
        .expect("the hub's store config names its patient");
    let store = Store::open(config, clock).await.unwrap();
    let device = pair_meter(&store, &patient).await;
    for chunk in readings.chunks(500) {
        store.append(&device, chunk.to_vec(), None).await.unwrap();
    }
    let (ca_path, cert, key) = write_credentials(dir.path(), clinic_ca, hub_cert);
    Hub {
        dir,
        store,
        device,
        ca_path,
        cert,
        key,
    }
}

/// The glucose meter at [`METER_ADDR`] ("GM-100"), paired and bound to `patient`.
pub async fn pair_meter(store: &Store, patient: &str) -> DeviceKey {
    store
        .upsert_device(
            DeviceRecord {
                address: METER_ADDR.into(),
                name: Some("GM-100".into()),
                profile: "glucose".into(),
                patient_binding: Some(patient.into()),
                serial: None,
                bond: None,
            },
            true,
        )
        .await
        .unwrap()
}

/// The clinic's CA certificate (`clinic-ca.pem`) and the hub's certificate and key written into
/// `dir`: their paths (CA, certificate, key).
pub fn write_credentials(
    dir: &Path,
    clinic_ca: &DevCa,
    hub_cert: &Minted,
) -> (PathBuf, PathBuf, PathBuf) {
    let ca_path = dir.join("clinic-ca.pem");
    std::fs::write(&ca_path, &clinic_ca.cert_pem).unwrap();
    let (cert, key) = hub_cert.write(dir, "hub").unwrap();
    (ca_path, cert, key)
}

/// [`hub_with`] and a hub certificate `hub-0001` from the clinic's own CA.
pub async fn hub_for(n: u32, ca: &DevCa) -> Hub {
    hub_with(n, ca, &ca.client("hub-0001", Span::DEFAULT).unwrap()).await
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
    uplink_timed(h, cfg, Arc::new(FixedTimeSync(true)))
}

/// An uplink asking `time_sync` whether the hub's clock is synchronised.
pub fn uplink_timed(h: &Hub, cfg: UplinkConfig, time_sync: Arc<dyn TimeSync>) -> Uplink {
    Uplink::new(
        cfg,
        h.store.clone(),
        Arc::new(SystemClock),
        time_sync,
        hub(),
    )
    .unwrap()
}

/// Alert-limits version `v` for `patient`: the starting points with the glucose high limit at
/// `glucose_high` mg/dL, authored by dr.jones at 2025-11-30T23:00Z and effective an hour later
/// (in force on arrival); a test changes the fields it needs.
pub fn glucose_high_version(patient: &str, v: u32, glucose_high: i64) -> LimitsVersion {
    let mut rules = AlertRules::starting_points();
    if let Some(g) = rules.thresholds.get_mut(&Kind::Glucose) {
        g.high = Some(Limit(Decimal::new(glucose_high, 0)));
    }
    LimitsVersion {
        patient_id: patient.into(),
        version: v,
        rules,
        effective: UtcMillis(1_764_547_200_000),
        authored: UtcMillis(1_764_543_600_000),
        author: "dr.jones".into(),
        reason: "new insulin regimen".into(),
    }
}

pub fn url(r: &Receiver) -> String {
    format!("https://localhost:{}/fhir", r.addr().port())
}

pub const DRAIN: Duration = Duration::from_secs(60);
