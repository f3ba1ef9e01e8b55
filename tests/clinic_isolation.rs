#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! One hub, one patient: two enrolled hubs A and B against the clinic as `vitals-clinic serve` runs
//! it. B cannot read A, cannot write for A, cannot squat A's identifiers (A's readings are all
//! stored under A and A's hub acknowledges only what the clinic holds); each attempt is a 403 with
//! an OperationOutcome and a stored security AuditEvent naming B; a revoked or unknown certificate
//! is refused at the TLS layer.

mod uplink_support;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use uplink_support::*;
use vitals_hub::clinic::registry::record_for_der;
use vitals_hub::clinic::Limits;
use vitals_hub::receiver::pki::{DevCa, Span};

const PATIENT_B: &str = "pat-0002";

fn obs(ident: &str, patient: &str, device_ref: &str) -> Value {
    json!({
        "resourceType": "Observation",
        "identifier": [{ "system": "urn:ietf:rfc:3986", "value": ident }],
        "status": "final",
        "code": { "coding": [{ "system": "urn:iso:std:iso:11073:10101", "code": "160184" }] },
        "subject": { "reference": format!("Patient/{patient}") },
        "device": { "reference": device_ref },
        "valueQuantity": { "value": 1, "unit": "mg/dL" }
    })
}

fn tx(entries: Vec<Value>) -> Value {
    json!({ "resourceType": "Bundle", "type": "transaction", "entry": entries })
}

fn entry(resource: Value, ident: &str) -> Value {
    let ty = resource["resourceType"].as_str().unwrap().to_owned();
    json!({
        "resource": resource,
        "request": { "method": "POST", "url": ty,
                     "ifNoneExist": format!("identifier=urn:ietf:rfc:3986%7C{}", ident.replace(':', "%3A")) }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_one_patient_each() {
    let ca = DevCa::new("clinic").unwrap();
    let rx = enforced_clinic(&ca, Limits::default()).await;
    let base = url(&rx);
    let cert_a = ca.client("hub-a", Span::DEFAULT).unwrap();
    let cert_b = ca.client("hub-b", Span::DEFAULT).unwrap();
    rx.enroll(&record_for_der(&cert_a.cert_der, PATIENT, None).unwrap())
        .unwrap();
    rx.enroll(&record_for_der(&cert_b.cert_der, PATIENT_B, None).unwrap())
        .unwrap();
    // A hub serves one patient: enrolling hub-a again for another patient is refused.
    let again = ca.client("hub-a", Span::DEFAULT).unwrap();
    assert!(rx
        .enroll(&record_for_der(&again.cert_der, PATIENT_B, None).unwrap())
        .is_err());

    const N: u32 = 12;
    let a = hub_with(N, &ca, &cert_a).await;
    let dir_b = tempfile::tempdir().unwrap();
    let (cb, kb) = cert_b.write(dir_b.path(), "hub-b").unwrap();
    let b = mtls_client(&a.ca_path, &cb, &kb);
    let mut refusals = 0u64;

    // B's own patient: a device of its own, stored.
    let dev_b = json!({ "resourceType": "Device",
        "identifier": [{ "system": "urn:ietf:rfc:3986", "value": "urn:b:device" }] });
    let (s, r) = send(&b, &base, Some(&tx(vec![entry(dev_b, "urn:b:device")]))).await;
    assert_eq!(s, 200, "{r}");

    // B writes for A's patient: 403.
    let (s, r) = send(
        &b,
        &base,
        Some(&tx(vec![entry(
            obs(&glucose_identifier(0), PATIENT, "Device/1"),
            &glucose_identifier(0),
        )])),
    )
    .await;
    assert_eq!(s, 403, "{r}");
    assert_eq!(r["resourceType"], "OperationOutcome");
    refusals += 1;

    // B squats A's future identifiers for its own patient: stored under B, matched by nobody else.
    let squat: Vec<Value> = (0..N)
        .map(|i| {
            let id = glucose_identifier(i);
            entry(obs(&id, PATIENT_B, "Device/1"), &id)
        })
        .collect();
    let (s, r) = send(&b, &base, Some(&tx(squat))).await;
    assert_eq!(s, 200, "{r}");

    // A uploads its readings with the real uplink: every one is created under A.
    let mut up = uplink(&a, uplink_config(&a, &base));
    let rep = up.drain(DRAIN).await.unwrap();
    assert_eq!(rep.acked, N as usize);
    let of_a = rx.resources_of_patient("Observation", PATIENT);
    let ids_a: BTreeSet<String> = of_a
        .iter()
        .map(|o| o["identifier"][0]["value"].as_str().unwrap().to_owned())
        .collect();
    for i in 0..N {
        assert!(
            ids_a.contains(&glucose_identifier(i)),
            "reading {i} of A stored under A"
        );
    }
    for o in &of_a {
        assert_eq!(o["subject"]["reference"], format!("Patient/{PATIENT}"));
    }
    // The device A's observations refer to is A's own.
    let dev_a = of_a[0]["device"]["reference"].as_str().unwrap().to_owned();

    // B reads A: its observations, its device — 403 each.
    for path in [
        format!("{base}/Observation?patient=Patient/{PATIENT}"),
        format!(
            "{base}/Observation?identifier=urn:ietf:rfc:3986%7C{}",
            glucose_identifier(0)
        ),
        format!("{base}/DetectedIssue?patient=Patient/{PATIENT}"),
        format!("{base}/{dev_a}"),
        // Even whether A's patient exists is not B's to ask.
        format!("{base}/Patient?_id={PATIENT}&_summary=count"),
    ] {
        let (s, r) = send(&b, &path, None).await;
        assert_eq!(s, 403, "{path}: {r}");
        refusals += 1;
    }
    // B may ask whether its own patient exists (the hub's start-up check): a count, no resource.
    let (s, r) = send(
        &b,
        &format!("{base}/Patient?_id={PATIENT_B}&_summary=count"),
        None,
    )
    .await;
    assert_eq!((s, r["total"].as_u64()), (200, Some(1)), "{r}");
    assert!(r.get("entry").is_none(), "{r}");
    // B searching Devices by identifier sees only its own (A's meter is not among them).
    let (s, r) = send(
        &b,
        &format!("{base}/Device?identifier=urn:ietf:rfc:3986%7Curn:b:device"),
        None,
    )
    .await;
    assert_eq!((s, r["total"].as_u64()), (200, Some(1)));

    // B refers to A's device from an observation of its own patient: 403.
    let (s, _) = send(
        &b,
        &base,
        Some(&tx(vec![entry(
            obs("urn:b:x", PATIENT_B, &dev_a),
            "urn:b:x",
        )])),
    )
    .await;
    assert_eq!(s, 403);
    refusals += 1;

    // Every refusal is a stored security AuditEvent naming hub-b.
    let audits = rx.resources("AuditEvent");
    assert_eq!(audits.len() as u64, refusals);
    for e in &audits {
        assert_eq!(e["type"]["code"], "110113");
        assert_eq!(e["agent"][0]["who"]["identifier"]["value"], "hub-b");
    }
    assert_eq!(rx.stats().forbidden, refusals);

    // Revoked: refused at TLS (a new connection), and on the connection B already had open.
    assert_eq!(rx.revoke("hub-b"), 1);
    let fresh_b = mtls_client(&a.ca_path, &cb, &kb);
    assert!(fresh_b
        .get(format!("{base}/metadata"))
        .send()
        .await
        .is_err());
    let (s, _) = send(&b, &format!("{base}/metadata"), None).await;
    assert_eq!(s, 403);
    // Unknown (never enrolled, same CA): refused at TLS.
    let c = ca.client("hub-c", Span::DEFAULT).unwrap();
    let (cc, kc) = c.write(dir_b.path(), "hub-c").unwrap();
    let unknown = mtls_client(&a.ca_path, &cc, &kc);
    assert!(unknown
        .get(format!("{base}/metadata"))
        .send()
        .await
        .is_err());
    // A keeps working.
    let (s, _) = send(
        &mtls_client(&a.ca_path, &a.cert, &a.key),
        &format!("{base}/metadata"),
        None,
    )
    .await;
    assert_eq!(s, 200);
    rx.shutdown().await;
}
