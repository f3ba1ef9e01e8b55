#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! The alert-limits `ServiceRequest` (src/fhir/limits.rs) as a golden file that `.ci/validate_fhir.py`
//! checks with the independent FHIR models, and read back through the same code the hub uses.

use serde_json::{json, Value};
use std::path::PathBuf;
use vitals_hub::alerts::{AlertRules, Schedule};
use vitals_hub::fhir::limits::{LimitsError, LimitsVersion};
use vitals_hub::model::UtcMillis;

fn version() -> LimitsVersion {
    let mut rules = AlertRules::starting_points();
    rules.schedules.push(Schedule {
        device: "meter".into(),
        per_day: 2,
        grace_minutes: Some(90),
    });
    LimitsVersion {
        patient_id: "RPM-000123".into(),
        version: 2,
        rules,
        effective: UtcMillis::parse_rfc3339("2026-12-07T08:00:00Z").unwrap(),
        authored: UtcMillis::parse_rfc3339("2026-12-06T16:30:00Z").unwrap(),
        author: "dr.jones".into(),
        reason: "new insulin regimen".into(),
    }
}

#[test]
fn the_limits_service_request_is_golden_and_reads_back() {
    let v = version();
    let sr = v.to_service_request().unwrap();
    let bundle = json!({ "resourceType": "Bundle", "type": "collection", "entry": [{
        "fullUrl": "urn:uuid:00000000-0000-4000-8000-000000000001",
        "resource": sr,
    }] });
    let text = serde_json::to_string_pretty(&bundle).unwrap() + "\n";
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/fhir/service-request-alert-limits.json");
    if std::env::var_os("UPDATE_GOLDEN").is_some() || !path.exists() {
        std::fs::write(&path, &text).unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        text,
        "UPDATE_GOLDEN=1 rewrites {}",
        path.display()
    );
    let golden: Value = serde_json::from_str(&text).unwrap();
    let back = LimitsVersion::from_service_request(&golden["entry"][0]["resource"]).unwrap();
    assert_eq!(back.version, 2);
    assert_eq!(back.patient_id, "RPM-000123");
    assert_eq!(back.rules.thresholds, {
        // 38.0 travels as 38: the same value.
        let mut t = v.rules.thresholds.clone();
        if let Some(b) = t.get_mut(&vitals_hub::model::Kind::BodyTemperature) {
            b.high = Some(vitals_hub::alerts::Limit(vitals_hub::model::Decimal::new(
                38, 0,
            )));
        }
        t
    });
    assert_eq!(back.rules.schedules, v.rules.schedules);
    assert_eq!(back.rules.weight_gain, v.rules.weight_gain);
}

#[test]
fn a_hostile_service_request_is_refused_with_the_element_named() {
    let sr = version().to_service_request().unwrap();
    let cases: Vec<(Value, &str)> = vec![
        (
            {
                let mut s = sr.clone();
                s["extension"] = json!([]);
                s
            },
            "expected exactly one extension",
        ),
        (
            {
                let mut s = sr.clone();
                s["authoredOn"] = json!("2026-12-06");
                s
            },
            "/authoredOn",
        ),
        (
            {
                let mut s = sr.clone();
                s["reasonCode"][0]["text"] = json!("x".repeat(5000));
                s
            },
            "longer than 2000 bytes",
        ),
        (
            {
                let mut s = sr.clone();
                s["extension"][0]["extension"][0]["valueInteger"] = json!(0);
                s
            },
            "versions start at 1",
        ),
        (
            {
                let mut s = sr.clone();
                s["extension"][0]["extension"][0]["valueInteger"] = json!(-4);
                s
            },
            "non-negative integer",
        ),
        (
            {
                let mut s = sr.clone();
                s["extension"][0]["extension"][2]["extension"][0]["valueCode"] = json!("mood");
                s
            },
            "unknown measurement kind `mood`",
        ),
        (
            {
                let mut s = sr.clone();
                s["extension"][0]["extension"][2]["extension"][2]["valueQuantity"]["value"] =
                    json!("70");
                s
            },
            "value must be a number",
        ),
        (
            {
                let mut s = sr.clone();
                s["extension"][0]["extension"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"url": "localCommand", "valueString": "/bin/sh"}));
                s
            },
            "unknown part \"localCommand\"",
        ),
    ];
    for (s, want) in cases {
        let e = LimitsVersion::from_service_request(&s).unwrap_err();
        assert!(matches!(e, LimitsError::Malformed(_)), "{e}");
        assert!(e.to_string().contains(want), "{want}: {e}");
    }
    let mut many = sr.clone();
    let sched = many["extension"][0]["extension"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["url"] == "schedule")
        .cloned()
        .unwrap();
    for _ in 0..40 {
        many["extension"][0]["extension"]
            .as_array_mut()
            .unwrap()
            .push(sched.clone());
    }
    let e = LimitsVersion::from_service_request(&many).unwrap_err();
    assert!(e.to_string().contains("more than 32 schedules"), "{e}");
}

#[test]
fn the_acknowledgement_is_golden_and_reads_back() {
    use vitals_hub::fhir::limits::{ack_bundle, read_ack, AckOutcome, LimitsAck};
    let hub = vitals_hub::fhir::HubInfo {
        mac: "02:00:5E:10:00:02".parse().unwrap(),
        manufacturer: "Vitals".into(),
        model: "Hub".into(),
        software_version: "0.1.0".into(),
        ntp: true,
        utc_offset_minutes: 0,
        zone: None,
    };
    let refs = std::collections::HashMap::new();
    let ctx = vitals_hub::fhir::BundleContext {
        patient_id: "RPM-000123",
        hub: &hub,
        hub_ref: None,
        device_refs: &refs,
        nonce: 7,
        more_may_follow: false,
    };
    let ack = LimitsAck {
        patient_id: "RPM-000123".into(),
        version: 3,
        at: UtcMillis::parse_rfc3339("2026-12-07T08:00:05Z").unwrap(),
        rejected: Some("alerts.thresholds.glucose: low 300 must be below high 180".into()),
        takes_effect: None,
        resource_id: None,
    };
    let built = ack_bundle(&ctx, &ack).unwrap();
    let text = serde_json::to_string_pretty(&built.json).unwrap() + "\n";
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/fhir/bundle-alert-limits-ack.json");
    if std::env::var_os("UPDATE_GOLDEN").is_some() || !path.exists() {
        std::fs::write(&path, &text).unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        text,
        "UPDATE_GOLDEN=1 rewrites {}",
        path.display()
    );
    let obs = &built.json["entry"][1]["resource"];
    let (patient, version, applied, at, reason) = read_ack(obs).unwrap();
    assert_eq!(
        (patient.as_str(), version, applied),
        ("RPM-000123", 3, AckOutcome::Rejected)
    );
    assert_eq!(at, "2026-12-07T08:00:05.000+00:00");
    assert!(reason.unwrap().contains("low 300"));
}
