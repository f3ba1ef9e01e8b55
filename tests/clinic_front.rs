#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! The authorising front (`vitals-clinic serve --fhir-base`) in front of an independent FHIR R4
//! server, `@medplum/fhir-router` with its in-memory repository on node (`.ci/fhir-server.sh`):
//!
//! - two enrolled hubs: B cannot read A, cannot write for A, cannot squat A's identifiers (A's
//!   readings all stored under A at the server, A's hub acknowledges only what the server holds),
//!   each attempt a 403 with an OperationOutcome and a security AuditEvent stored at the server;
//!   a revoked hub is refused at TLS;
//! - a real hub (the uplink with its default settings) uploading through the front: every reading
//!   exactly once at the server, heartbeats accepted.
//!
//! What is at the server is read from the server directly, never through the front.
//! Skips when node or npm is missing, unless CI=true.

mod uplink_support;
use serde_json::{json, Value};
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use uplink_support::*;
use vitals_hub::clinic::front::{Front, FrontConfig, HUB_TAG_SYSTEM};
use vitals_hub::clinic::registry::record_for_der;
use vitals_hub::clinic::{
    tls, Access, ClinicOptions, FaultQueue, Limits, Listen, Receiver, ReceiverConfig, Registry,
};
use vitals_hub::fhir::codes::{BTMAC_SYSTEM, OBS_IDENTIFIER_SYSTEM, SYSID_SYSTEM};
use vitals_hub::fhir::identifier::if_none_exist;
use vitals_hub::fhir::{Eui48, Eui64};
use vitals_hub::receiver::pki::{DevCa, Span, DEV_RECEIVER_NAMES};
use vitals_hub::uplink::UplinkConfig;

const PATIENT_B: &str = "pat-0002";

fn which(name: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|d| d.join(name).exists())
}

fn missing(what: &str) -> bool {
    if which(what) {
        return false;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{what} is not installed; CI needs it for the independent FHIR server test");
    }
    eprintln!("SKIPPED: {what} is not installed");
    true
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The independent FHIR server with `Patient/<PATIENT>`; its base URL.
async fn fhir_server() -> (Kill, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let port = free_port();
    let mut child = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/fhir-server.sh"))
        .args(["--port", &port.to_string(), "--patient", PATIENT])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let kill = Kill(child);
    let ready = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.starts_with("listening"))
    });
    assert!(
        tokio::time::timeout(Duration::from_secs(600), ready)
            .await
            .expect("the FHIR server did not start in 10 minutes")
            .unwrap(),
        "the FHIR server exited before listening (see its stderr)"
    );
    (kill, format!("http://127.0.0.1:{port}/fhir"))
}

/// The front as `vitals-clinic serve --fhir-base <fhir> --db <db>` runs it.
async fn front(ca: &DevCa, fhir: &str, db: &Path) -> Receiver {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let registry = Registry::new();
    let server = ca.server(DEV_RECEIVER_NAMES, Span::DEFAULT).unwrap();
    let cfg = tls::server_config_der_with(
        vec![server.cert_der.clone().into()],
        der_key(&server),
        Some(vec![ca.cert_der.clone().into()]),
        TLS13,
        Some(registry.clone()),
    )
    .unwrap();
    Receiver::start_with(
        ReceiverConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            listen: Listen::Tls(cfg),
            db_path: Some(db.to_path_buf()),
            faults: FaultQueue::new(),
        },
        ClinicOptions {
            access: Access::Registry(registry),
            limits: Limits::default(),
            front: Some(Arc::new(Front::new(&FrontConfig::new(fhir)).unwrap())),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// Every resource of a type at the server (read directly).
async fn at_server(fhir: &str, ty: &str) -> Vec<Value> {
    let v = get_json(&reqwest::Client::new(), &format!("{fhir}/{ty}?_count=1000")).await;
    v["entry"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|e| e["resource"].clone())
        .collect()
}

fn hub_of(r: &Value) -> Option<&str> {
    r["meta"]["tag"]
        .as_array()?
        .iter()
        .find(|t| t["system"] == HUB_TAG_SYSTEM)?["code"]
        .as_str()
}

fn tx(entries: Vec<Value>) -> Value {
    json!({ "resourceType": "Bundle", "type": "transaction", "entry": entries })
}

fn entry(resource: Value, system: &str, value: &str) -> Value {
    let ty = resource["resourceType"].as_str().unwrap().to_owned();
    json!({
        "fullUrl": format!("urn:uuid:{}", uuid_for(value)),
        "resource": resource,
        "request": { "method": "POST", "url": ty, "ifNoneExist": if_none_exist(system, value) }
    })
}

fn uuid_for(s: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    let h: String = d.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn device(system: &str, value: &str) -> Value {
    json!({ "resourceType": "Device", "identifier": [{ "system": system, "value": value }] })
}

fn obs(value: &str, patient: &str, device_ref: &str) -> Value {
    json!({
        "resourceType": "Observation",
        "identifier": [{ "system": OBS_IDENTIFIER_SYSTEM, "value": value }],
        "status": "final",
        "code": { "coding": [{ "system": "urn:iso:std:iso:11073:10101", "code": "160184" }] },
        "subject": { "reference": format!("Patient/{patient}") },
        "device": { "reference": device_ref },
        "valueQuantity": { "value": 1, "unit": "mg/dL" }
    })
}

async fn send(c: &reqwest::Client, url: &str, body: Option<&Value>) -> (u16, Value) {
    let r = match body {
        Some(b) => c
            .post(url)
            .header("content-type", "application/fhir+json")
            .body(serde_json::to_vec(b).unwrap())
            .send()
            .await
            .unwrap(),
        None => c.get(url).send().await.unwrap(),
    };
    let s = r.status().as_u16();
    (
        s,
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null),
    )
}

/// The EUI-64 Device identifier the hub uses for a Bluetooth address.
fn sysid(mac: &str) -> String {
    Eui64::from_eui48(mac.parse::<Eui48>().unwrap()).dashed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_through_the_front_one_patient_each() {
    if missing("node") || missing("npm") {
        return;
    }
    let (_server, fhir) = fhir_server().await;
    let direct = reqwest::Client::new();
    let r = direct
        .put(format!("{fhir}/Patient/{PATIENT_B}"))
        .header("content-type", "application/fhir+json")
        .body(json!({"resourceType": "Patient", "id": PATIENT_B, "active": true}).to_string())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());

    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::new("clinic").unwrap();
    let rx = front(&ca, &fhir, &dir.path().join("registry.db")).await;
    let base = url(&rx);
    let cert_a = ca.client("hub-a", Span::DEFAULT).unwrap();
    let cert_b = ca.client("hub-b", Span::DEFAULT).unwrap();
    rx.enroll(&record_for_der(&cert_a.cert_der, PATIENT, None).unwrap())
        .unwrap();
    rx.enroll(&record_for_der(&cert_b.cert_der, PATIENT_B, None).unwrap())
        .unwrap();

    const N: u32 = 12;
    let a = hub_with(N, &ca, &cert_a).await;
    let (cb, kb) = cert_b.write(dir.path(), "hub-b").unwrap();
    let b = mtls_client(&a.ca_path, &cb, &kb);
    let mut refusals = 0usize;

    // B squats A's identifiers for its own patient: A's meter and hub Devices, and A's future
    // readings. Stored (as B's), matched by nobody else.
    // (A's meter reports no system id: the hub identifies it by its Bluetooth address.)
    let meter = METER_ADDR.parse::<Eui48>().unwrap().dashed();
    let phg = sysid("DC:A6:32:12:34:56");
    let squat = vec![
        entry(device(BTMAC_SYSTEM, &meter), BTMAC_SYSTEM, &meter),
        entry(device(SYSID_SYSTEM, &phg), SYSID_SYSTEM, &phg),
    ];
    let (s, r) = send(&b, &base, Some(&tx(squat))).await;
    assert_eq!(s, 200, "{r}");
    // (The server's transactions are small: B's squatting readings go a few at a time, referring
    // to B's meter by its server id, which the front proves is B's.)
    let squat_dev = r["entry"][0]["response"]["location"]
        .as_str()
        .unwrap()
        .split("/_history")
        .next()
        .unwrap()
        .to_owned();
    for chunk in (0..N).collect::<Vec<_>>().chunks(4) {
        let entries = chunk
            .iter()
            .map(|i| {
                let id = glucose_identifier(*i);
                entry(obs(&id, PATIENT_B, &squat_dev), OBS_IDENTIFIER_SYSTEM, &id)
            })
            .collect();
        let (s, r) = send(&b, &base, Some(&tx(entries))).await;
        assert_eq!(s, 200, "{r}");
    }

    // B writes for A's patient: 403 with an OperationOutcome.
    let id0 = glucose_identifier(0);
    let (s, r) = send(
        &b,
        &base,
        Some(&tx(vec![entry(
            obs(&id0, PATIENT, &squat_dev),
            OBS_IDENTIFIER_SYSTEM,
            &id0,
        )])),
    )
    .await;
    assert_eq!(s, 403, "{r}");
    assert_eq!(r["resourceType"], "OperationOutcome");
    refusals += 1;
    // B writes a Patient, or widens its condition to reach others' resources: 403.
    for bad in [
        json!({"request": {"method": "POST", "url": "Patient"},
               "resource": {"resourceType": "Patient"}}),
        json!({"request": {"method": "POST", "url": "Device",
                 "ifNoneExist": format!("identifier={BTMAC_SYSTEM}%7C{meter}&_tag=urn:vitals-hub:hub-id%7Chub-a")},
               "resource": device(BTMAC_SYSTEM, &meter)}),
        json!({"request": {"method": "PUT", "url": "Observation/x"},
               "resource": obs("x", PATIENT_B, &squat_dev)}),
    ] {
        let (s, r) = send(&b, &base, Some(&tx(vec![bad]))).await;
        assert_eq!(s, 403, "{r}");
        refusals += 1;
    }

    // The bounds hold in front of the server too: a 32 KB gzip body that expands to 32 MiB is a
    // 400 from the front, and nothing of it reaches the server.
    let bomb = {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(b"[").unwrap();
        let spaces = vec![b' '; 1 << 20];
        for _ in 0..32 {
            gz.write_all(&spaces).unwrap();
        }
        gz.finish().unwrap()
    };
    assert!(bomb.len() < 64 << 10, "{}", bomb.len());
    let r = b
        .post(&base)
        .header("content-type", "application/fhir+json")
        .header("content-encoding", "gzip")
        .body(bomb)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);

    // A uploads with the real uplink: every reading acknowledged, each stored under A.
    let mut up = uplink(&a, uplink_config(&a, &base));
    up.heartbeat().await.expect("the heartbeat is accepted");
    let rep = up.drain(DRAIN).await.unwrap();
    assert_eq!((rep.acked, rep.rejected), (N as usize, 0), "{rep:?}");
    let observations = at_server(&fhir, "Observation").await;
    for i in 0..N {
        let id = glucose_identifier(i);
        let same: Vec<&Value> = observations
            .iter()
            .filter(|o| o["identifier"][0]["value"] == id.as_str())
            .collect();
        let of_a: Vec<&&Value> = same.iter().filter(|o| hub_of(o) == Some("hub-a")).collect();
        assert_eq!(of_a.len(), 1, "reading {i}: once under hub A");
        assert_eq!(
            of_a[0]["subject"]["reference"],
            format!("Patient/{PATIENT}")
        );
        let of_b = same.iter().filter(|o| hub_of(o) == Some("hub-b")).count();
        assert_eq!(of_b, 1, "B's squat is B's own, untouched");
        assert_eq!(same.len(), 2);
    }
    // A's readings refer to A's own meter Device, not to B's squat.
    let devices = at_server(&fhir, "Device").await;
    let a_obs = observations
        .iter()
        .find(|o| {
            hub_of(o) == Some("hub-a") && o["subject"]["reference"] == format!("Patient/{PATIENT}")
        })
        .unwrap();
    let dev_a = a_obs["device"]["reference"].as_str().unwrap().to_owned();
    let dev_a_res = devices
        .iter()
        .find(|d| format!("Device/{}", d["id"].as_str().unwrap()) == dev_a)
        .unwrap();
    assert_eq!(hub_of(dev_a_res), Some("hub-a"));
    assert_eq!(dev_a_res["identifier"][0]["value"], meter.as_str());
    // Unscoped, the server itself holds two Devices with that identifier: a conditional create
    // without the front's scope would have matched B's squat (or failed with 412).
    let both = devices
        .iter()
        .filter(|d| d["identifier"][0]["value"] == meter.as_str())
        .count();
    assert_eq!(both, 2);
    // Every resource at the server was written through the front, tagged with its hub.
    for r in observations.iter().chain(&devices) {
        assert!(matches!(hub_of(r), Some("hub-a" | "hub-b")), "{r}");
    }

    // B reads A: 403 each.
    for path in [
        format!("{base}/Observation?patient=Patient/{PATIENT}"),
        format!("{base}/Observation?identifier={OBS_IDENTIFIER_SYSTEM}%7C{id0}"),
        format!("{base}/DetectedIssue?patient=Patient/{PATIENT}"),
        format!("{base}/{dev_a}"),
        format!("{base}/Patient?_id={PATIENT}&_summary=count"),
        format!("{base}/Patient/{PATIENT}"),
    ] {
        let (s, r) = send(&b, &path, None).await;
        assert_eq!(s, 403, "{path}: {r}");
        assert_eq!(r["resourceType"], "OperationOutcome");
        refusals += 1;
    }
    // B's own patient count, and B's Device search: only B's own.
    let (s, r) = send(
        &b,
        &format!("{base}/Patient?_id={PATIENT_B}&_summary=count"),
        None,
    )
    .await;
    assert_eq!((s, r["total"].as_u64()), (200, Some(1)), "{r}");
    let (s, r) = send(
        &b,
        &format!("{base}/Device?identifier={BTMAC_SYSTEM}%7C{meter}"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{r}");
    let found = r["entry"].as_array().cloned().unwrap_or_default();
    assert_eq!(found.len(), 1, "{r}");
    assert_eq!(hub_of(&found[0]["resource"]), Some("hub-b"));

    // B refers to A's device from an observation of its own patient: 403.
    let (s, r) = send(
        &b,
        &base,
        Some(&tx(vec![entry(
            obs("b-x", PATIENT_B, &dev_a),
            OBS_IDENTIFIER_SYSTEM,
            "b-x",
        )])),
    )
    .await;
    assert_eq!(s, 403, "{r}");
    refusals += 1;

    // Every refusal is a security AuditEvent at the server naming hub-b.
    let audits = at_server(&fhir, "AuditEvent").await;
    assert_eq!(audits.len(), refusals, "{audits:?}");
    for e in &audits {
        assert_eq!(e["type"]["code"], "110113");
        assert_eq!(e["agent"][0]["who"]["identifier"]["value"], "hub-b");
    }
    assert_eq!(rx.stats().forbidden, refusals as u64);

    // Revoked: refused at TLS on a new connection, and on the connection B already had.
    assert_eq!(rx.revoke("hub-b"), 1);
    let fresh_b = mtls_client(&a.ca_path, &cb, &kb);
    assert!(fresh_b
        .get(format!("{base}/metadata"))
        .send()
        .await
        .is_err());
    let (s, _) = send(&b, &format!("{base}/metadata"), None).await;
    assert_eq!(s, 403);
    // A keeps working.
    let (s, r) = send(
        &mtls_client(&a.ca_path, &a.cert, &a.key),
        &format!("{base}/metadata"),
        None,
    )
    .await;
    assert_eq!(
        (s, r["resourceType"].as_str()),
        (200, Some("CapabilityStatement"))
    );
    rx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_with_default_settings_uploads_every_reading_once_through_the_front() {
    if missing("node") || missing("npm") {
        return;
    }
    let (_server, fhir) = fhir_server().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::new("clinic").unwrap();
    let rx = front(&ca, &fhir, &dir.path().join("registry.db")).await;
    let base = url(&rx);
    let cert = ca.client("hub-0001", Span::DEFAULT).unwrap();
    rx.enroll(&record_for_der(&cert.cert_der, PATIENT, None).unwrap())
        .unwrap();
    const N: u32 = 60;
    let h = hub_with(N, &ca, &cert).await;
    let mut cfg = UplinkConfig::new(&base, &h.ca_path, PATIENT);
    cfg.client_cert = Some(h.cert.clone());
    cfg.client_key = Some(h.key.clone());
    let mut up = uplink(&h, cfg.clone());
    up.check_capability().await;
    up.heartbeat().await.expect("the heartbeat is accepted");
    let rep = up.drain(DRAIN).await.unwrap();
    assert_eq!(rep.rejected, 0, "{rep:?}");
    // More readings, a new run, another heartbeat (the hub now refers to its Devices by id).
    h.store
        .append(&h.device, (N..N + 20).map(glucose).collect(), None)
        .await
        .unwrap();
    let mut up = uplink(&h, cfg);
    up.heartbeat().await.unwrap();
    let rep = up.drain(DRAIN).await.unwrap();
    assert_eq!(rep.rejected, 0, "{rep:?}");
    let observations = at_server(&fhir, "Observation").await;
    for i in 0..N + 20 {
        let id = glucose_identifier(i);
        let n = observations
            .iter()
            .filter(|o| o["identifier"][0]["value"] == id.as_str())
            .count();
        assert_eq!(n, 1, "reading {i} once at the server");
    }
    assert!(observations.iter().any(|o| o["identifier"][0]["value"]
        .as_str()
        .unwrap()
        .contains("hub-status")));
    assert!(observations.iter().all(|o| hub_of(o) == Some("hub-0001")));
    assert_eq!(rx.stats().forbidden, 0);
    rx.shutdown().await;
}
