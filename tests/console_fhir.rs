//! The FHIR resources the console writes — the acknowledgement `Task` and the `AuditEvent`s of a
//! patient view, an acknowledgement and a worklist view — as a golden collection Bundle in
//! `fixtures/fhir/`, which `.ci/validate_fhir.py` checks with the independent fhir.resources
//! models. `UPDATE_GOLDEN=1` rewrites it.

#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use serde_json::json;
use std::path::PathBuf;
use vitals_hub::clinic::console::records::{ack_task, audit, labelled_patient, Action};

#[test]
fn console_resources_match_the_golden_bundle() {
    let at: jiff::Timestamp = "2026-03-14T08:30:00Z".parse().unwrap();
    let addr: std::net::IpAddr = [192, 0, 2, 10].into();
    let mut task = ack_task(
        "DetectedIssue/42",
        "RPM-000123",
        "dr.jones",
        "called the patient; ate; fine now",
        at,
    );
    task["id"] = json!("43");
    let resources = [
        task,
        audit(Action::Read, "dr.jones", addr, Some("RPM-000123"), None, at),
        audit(
            Action::Acknowledge,
            "dr.jones",
            addr,
            Some("RPM-000123"),
            Some("Task/43"),
            at,
        ),
        audit(Action::Worklist, "dr.jones", addr, None, None, at),
    ];
    let entries: Vec<_> = resources
        .into_iter()
        .enumerate()
        .map(|(i, r)| json!({ "fullUrl": format!("urn:uuid:00000000-0000-4000-8000-{i:012}"), "resource": r }))
        .collect();
    let bundle = json!({ "resourceType": "Bundle", "type": "collection", "entry": entries });
    let text = serde_json::to_string_pretty(&bundle).unwrap() + "\n";
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/fhir/console-task-audit.json");
    if std::env::var_os("UPDATE_GOLDEN").is_some() || !path.exists() {
        std::fs::write(&path, &text).unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        text,
        "UPDATE_GOLDEN=1 rewrites {}",
        path.display()
    );
    // The Task points at the DetectedIssue and the patient; the AuditEvents name the user and
    // the address, and the patient where there is one.
    assert_eq!(
        bundle["entry"][0]["resource"]["focus"]["reference"],
        "DetectedIssue/42"
    );
    assert_eq!(
        bundle["entry"][1]["resource"]["agent"][0]["network"]["address"],
        "192.0.2.10"
    );
    assert!(
        bundle["entry"][3]["resource"].get("entity").is_none(),
        "no empty array"
    );
}

/// The Patient with an admin's display label and the AuditEvent of that change, as a golden
/// collection Bundle (`fixtures/fhir/console-patient-label.json`) for `.ci/validate_fhir.py`.
#[test]
fn the_patient_label_and_its_audit_match_the_golden_bundle() {
    let at: jiff::Timestamp = "2026-03-14T08:30:00Z".parse().unwrap();
    let addr: std::net::IpAddr = [192, 0, 2, 11].into();
    let existing = json!({ "resourceType": "Patient", "id": "RPM-000123", "active": true,
        "meta": { "versionId": "3" }, "name": [{ "text": "old label" }] });
    let patient = labelled_patient(Some(existing), "RPM-000123", Some("J.D. room 4"));
    assert_eq!(
        patient["active"], true,
        "the server's other elements are kept"
    );
    assert!(patient.get("meta").is_none());
    let cleared = labelled_patient(None, "RPM-000123", None);
    assert!(cleared.get("name").is_none());
    let resources = [
        patient,
        audit(
            Action::Label,
            "admin.kim",
            addr,
            Some("RPM-000123"),
            Some("Patient/RPM-000123"),
            at,
        ),
    ];
    let entries: Vec<_> = resources
        .into_iter()
        .enumerate()
        .map(|(i, r)| json!({ "fullUrl": format!("urn:uuid:00000000-0000-4000-8001-{i:012}"), "resource": r }))
        .collect();
    let bundle = json!({ "resourceType": "Bundle", "type": "collection", "entry": entries });
    let text = serde_json::to_string_pretty(&bundle).unwrap() + "\n";
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/fhir/console-patient-label.json");
    if std::env::var_os("UPDATE_GOLDEN").is_some() || !path.exists() {
        std::fs::write(&path, &text).unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        text,
        "UPDATE_GOLDEN=1 rewrites {}",
        path.display()
    );
    assert_eq!(
        bundle["entry"][0]["resource"]["name"][0]["text"],
        "J.D. room 4"
    );
    assert_eq!(bundle["entry"][1]["resource"]["action"], "U");
}
