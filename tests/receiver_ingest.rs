#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! The receiver's FHIR semantics, in plain-HTTP loopback mode: conditional create (a known
//! identifier answers 200 with the existing location), atomic transactions, urn:uuid resolution,
//! gzip request bodies, searches, and the loopback-only rule.

use serde_json::{json, Value};
use std::io::Write;
use vitals_hub::receiver::{FaultQueue, Listen, Receiver, ReceiverConfig, ReceiverError};

async fn plain() -> Receiver {
    Receiver::start(ReceiverConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        listen: Listen::PlainLoopback,
        db_path: None,
        faults: FaultQueue::new(),
    })
    .await
    .unwrap()
}

fn bundle(ident: &str, with_code: bool) -> Value {
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

async fn post(base: &str, body: &Value, gzip: bool) -> (u16, Value) {
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
    let found: Value = serde_json::from_slice(
        &client
            .get(format!("{base}/Observation?identifier=urn:test%7CA%2B1"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(found["total"], 1);
    assert_eq!(
        found["entry"][0]["resource"]["device"]["reference"],
        "Device/1"
    );
    let by_patient: Value = serde_json::from_slice(
        &client
            .get(format!("{base}/Observation?patient=p1"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(by_patient["total"], 1);
    let meta: Value = serde_json::from_slice(
        &client
            .get(format!("{base}/metadata"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
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
