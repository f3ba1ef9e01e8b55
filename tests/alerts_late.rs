#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! Late data (issue 14): a reading that reaches the hub days after it was measured (a meter read
//! after an outage, a back-fill) is evaluated at its own measurement time, and the alert it
//! raises says that it is late and by how much — in the stored event, the local hook's JSON and
//! the uploaded DetectedIssue — so nobody is paged at night for last Tuesday's value as if it were
//! now. "Late" is more than 15 minutes between measurement and reception
//! (`vitals_hub::alerts::LATE_AFTER_MS`); a reading received within that is not marked.

mod uplink_support;
use std::time::{Duration, Instant};
use uplink_support::*;
use vitals_hub::alerts::{AlertRules, Lateness, Severity, Transition, LATE_AFTER_MS};
use vitals_hub::daemon::{Ingest, IngestConfig};
use vitals_hub::fhir::codes;
use vitals_hub::model::{Decimal, Kind, LocalDateTime, Reading, Unit, UtcMillis, Value};
use vitals_hub::receiver::pki::{DevCa, Span};
use vitals_hub::store::NewReading;

/// Glucose `mg` measured at `measured` (UTC wall clock), received at `received`.
fn glucose(key: &str, mg: i64, measured: LocalDateTime, received: UtcMillis) -> NewReading {
    let mut r = Reading::new(
        Kind::Glucose,
        Value::Number(Decimal::new(mg, 0)),
        Unit::MgPerDl,
    );
    r.device_time = Some(measured);
    r.sequence = Some(9000);
    NewReading {
        stable_key: key.into(),
        reading: r,
        received_at: received,
        test_data: false,
        summary: None,
    }
}

#[test]
fn lateness_is_defined_and_written_for_people() {
    let t = UtcMillis(1_780_000_000_000);
    let after = |ms: i64| Lateness::of(t, UtcMillis(t.as_millis() + ms));
    assert_eq!(after(0), None);
    assert_eq!(after(LATE_AFTER_MS), None, "15 minutes is not late yet");
    assert_eq!(after(LATE_AFTER_MS + 60_000).unwrap().late_by, "16 min");
    assert_eq!(
        after(3 * 3_600_000 + 5 * 60_000).unwrap().late_by,
        "3 h 5 min"
    );
    let days = after((3 * 24 + 4) * 3_600_000).unwrap();
    assert_eq!(days.late_by, "3 d 4 h");
    assert_eq!(days.late_by_minutes, (3 * 24 + 4) * 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_critical_reading_says_it_is_late_everywhere() {
    let ca = DevCa::new("clinic").unwrap();
    let h = hub_with(0, &ca, &ca.client("hub-0001", Span::DEFAULT).unwrap()).await;
    let hook_out = h.dir.path().join("hook.jsonl");
    let script = h.dir.path().join("hook.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\ncat >> {}\n", hook_out.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let rules = AlertRules {
        local_command: Some(script.display().to_string()),
        ..AlertRules::starting_points()
    };
    let cfg = IngestConfig {
        rules: rules.clone(),
        patient_id: PATIENT.into(),
        utc_offset_minutes: 0,
        zone: vitals_hub::model::Zone::utc(),
    };
    let ingest = Ingest::open(h.store.clone(), cfg).await.unwrap();

    // Measured Tuesday 2026-06-02 03:10 UTC, read from the meter Friday 07:10 UTC (3 d 4 h).
    let measured = LocalDateTime::new(2026, 6, 2, 3, 10, 0).unwrap();
    let measured_ms = measured.to_epoch_seconds() * 1000;
    let received = UtcMillis(measured_ms + (3 * 24 + 4) * 3_600_000);
    let out = ingest
        .append(
            &h.device,
            vec![glucose("late-critical", 38, measured, received)],
            None,
        )
        .await
        .unwrap();
    assert_eq!(out.alerts.len(), 1, "{:?}", out.alerts);
    let e = &out.alerts[0];
    assert_eq!(e.transition, Transition::Raised);
    assert_eq!(e.severity, Severity::CriticalLow);
    // Evaluated at its own measurement time, not at reception.
    assert_eq!(e.at, UtcMillis(measured_ms));
    let late = e.late.as_ref().expect("the event does not say it is late");
    assert_eq!(late.received_at, received);
    assert_eq!(late.late_by, "3 d 4 h");

    // The local hook's JSON says so.
    let t0 = Instant::now();
    while !hook_out.exists() || std::fs::read_to_string(&hook_out).unwrap().is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(60), "the hook never ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let announced: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&hook_out)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(announced["at"], measured_ms);
    assert_eq!(announced["late"]["late_by"], "3 d 4 h");
    assert_eq!(announced["late"]["late_by_minutes"], (3 * 24 + 4) * 60);
    assert_eq!(announced["late"]["received_at"], received.as_millis());

    // A reading on time raises nothing late: a second device-time reading 2 minutes old
    // (the episode is open: a recovery resolves it, on time).
    let on_time_measured = LocalDateTime::new(2026, 6, 5, 7, 20, 0).unwrap();
    let on_time_rx = UtcMillis(on_time_measured.to_epoch_seconds() * 1000 + 120_000);
    let out = ingest
        .append(
            &h.device,
            vec![glucose("on-time", 120, on_time_measured, on_time_rx)],
            None,
        )
        .await
        .unwrap();
    assert!(
        out.alerts.iter().all(|e| e.late.is_none()),
        "{:?}",
        out.alerts
    );

    // Upstream: the DetectedIssue carries the lateness (extension and detail) and is identified
    // at the measurement time.
    let rx = receiver(
        &ca.server(&["localhost"], Span::DEFAULT).unwrap(),
        Some(&ca),
        &[&rustls::version::TLS13],
    )
    .await;
    let mut up = uplink(&h, uplink_config(&h, &url(&rx))).with_alert_rules(rules.clone());
    up.drain(DRAIN).await.unwrap();
    let issues = rx.resources("DetectedIssue");
    let raised = issues
        .iter()
        .find(|i| i["code"]["text"].as_str().unwrap().starts_with("raised"))
        .expect("the raised alert was uploaded");
    assert_eq!(
        raised["identifiedDateTime"],
        UtcMillis(measured_ms).to_rfc3339()
    );
    let ext = raised["extension"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["url"] == codes::LATE_BY_EXTENSION)
        .expect("no late-by extension");
    assert_eq!(ext["valueDuration"]["value"], (3 * 24 + 4) * 60);
    assert!(
        raised["detail"].as_str().unwrap().starts_with("LATE:"),
        "{}",
        raised["detail"]
    );
    assert!(
        issues
            .iter()
            .filter(|i| !i["code"]["text"].as_str().unwrap().starts_with("raised"))
            .all(|i| i.get("extension").is_none()),
        "an on-time event marked late"
    );
    rx.shutdown().await;
}
