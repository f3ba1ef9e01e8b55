#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! The clinic's alert limits on the hub (issue 18), over the real mutual-TLS uplink against the
//! clinic as `vitals-clinic serve` runs it: the hub fetches its patient's current version, applies
//! it (a reading normal before now raises an alert), refuses an invalid, another patient's and a
//! stale version with the reason and keeps what it had, keeps the version across a restart; another
//! hub cannot read the patient's limits (403).

mod uplink_support;
use serde_json::Value;
use std::sync::Arc;
use uplink_support::*;
use vitals_hub::alerts::{AlertRules, Limit};
use vitals_hub::clinic::registry::record_for_der;
use vitals_hub::clinic::Limits as ClinicLimits;
use vitals_hub::daemon::{Ingest, IngestConfig};
use vitals_hub::fhir::limits::AckOutcome;
use vitals_hub::model::{Decimal, Kind, UtcMillis};
use vitals_hub::receiver::pki::{DevCa, Span};
use vitals_hub::store::Store;
use vitals_hub::uplink::limits::{in_force, Applier, Offer, Source};

const PATIENT_B: &str = "pat-0002";

fn high_of(rules: &AlertRules) -> Option<Limit> {
    rules.thresholds.get(&Kind::Glucose).and_then(|g| g.high)
}

async fn open_ingest(store: &Store, rules: AlertRules) -> Arc<Ingest> {
    Arc::new(
        Ingest::open(
            store.clone(),
            IngestConfig {
                rules,
                patient_id: PATIENT.into(),
                utc_offset_minutes: 0,
                zone: vitals_hub::model::Zone::utc(),
            },
        )
        .await
        .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_applies_its_patients_limits_and_refuses_the_rest() {
    let ca = DevCa::new("clinic").unwrap();
    let rx = enforced_clinic(&ca, ClinicLimits::default()).await;
    let cert_a = ca.client("hub-a", Span::DEFAULT).unwrap();
    let cert_b = ca.client("hub-b", Span::DEFAULT).unwrap();
    rx.enroll(&record_for_der(&cert_a.cert_der, PATIENT, None).unwrap())
        .unwrap();
    rx.enroll(&record_for_der(&cert_b.cert_der, PATIENT_B, None).unwrap())
        .unwrap();
    let h = hub_with(0, &ca, &cert_a).await;
    let hub_rules = AlertRules {
        local_command: Some("/bin/true".into()),
        ..AlertRules::starting_points()
    };

    // No version yet: hub.toml's [alerts] are in force.
    let start = in_force(&h.store, &hub_rules).await.unwrap();
    assert_eq!(start.source, Source::HubToml);
    let ingest = open_ingest(&h.store, start.rules.clone()).await;
    let applier = Applier::new(
        h.store.clone(),
        Some(ingest.clone()),
        hub_rules.clone(),
        PATIENT.into(),
        start,
    );
    let mut up = uplink(&h, uplink_config(&h, &url(&rx))).with_limits(applier);
    assert_eq!(up.sync_limits().await.unwrap(), Offer::Nothing);

    // A glucose of 200 mg/dL is normal under the starting points (high 250).
    let mut r = glucose(0);
    r.reading.value = vitals_hub::model::Value::Number(Decimal::new(200, 0));
    assert!(ingest
        .append(&h.device, vec![r], None)
        .await
        .unwrap()
        .alerts
        .is_empty());

    // The clinician lowers the glucose high limit to 180 (version 1): applied.
    rx.create_console_resource(
        &glucose_high_version(PATIENT, 1, 180)
            .to_service_request()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        up.sync_limits().await.unwrap(),
        Offer::Applied { version: 1 }
    );
    assert_eq!(
        high_of(&ingest.rules().await),
        Some(Limit(Decimal::new(180, 0)))
    );
    assert_eq!(
        ingest.rules().await.local_command.as_deref(),
        Some("/bin/true"),
        "the hub's own local_command stays"
    );
    let mut r = glucose(1);
    r.reading.value = vitals_hub::model::Value::Number(Decimal::new(200, 0));
    let raised = ingest
        .append(&h.device, vec![r], None)
        .await
        .unwrap()
        .alerts;
    assert_eq!(raised.len(), 1, "{raised:?}");
    // The acknowledgement reaches the clinic once: "applied on the hub at …".
    assert!(up.send_limits_ack().await.unwrap());
    assert!(!up.send_limits_ack().await.unwrap(), "sent once");
    let acks = |rx: &vitals_hub::receiver::Receiver| -> Vec<_> {
        rx.resources("Observation")
            .iter()
            .filter_map(vitals_hub::fhir::limits::read_ack)
            .collect()
    };
    let a = acks(&rx);
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(
        (a[0].0.as_str(), a[0].1, a[0].2),
        (PATIENT, 1, AckOutcome::Applied)
    );
    // Polled again: nothing changes.
    assert_eq!(
        up.sync_limits().await.unwrap(),
        Offer::Unchanged { version: 1 }
    );

    // Invalid limits (version 2: low above high): refused with the reason; version 1 stays.
    let mut bad = glucose_high_version(PATIENT, 2, 180);
    if let Some(g) = bad.rules.thresholds.get_mut(&Kind::Glucose) {
        g.low = Some(Limit(Decimal::new(300, 0)));
    }
    rx.create_console_resource(&bad.to_service_request().unwrap())
        .unwrap();
    match up.sync_limits().await.unwrap() {
        Offer::Refused {
            version: Some(2),
            reason,
        } => assert!(
            reason.contains("alerts.thresholds.glucose: low 300 must be below high 180"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        high_of(&ingest.rules().await),
        Some(Limit(Decimal::new(180, 0)))
    );
    // "rejected by the hub: reason" reaches the clinic.
    assert!(up.send_limits_ack().await.unwrap());
    let a = acks(&rx);
    let rejected = a.iter().find(|x| x.1 == 2).unwrap();
    assert_eq!(rejected.2, AckOutcome::Rejected);
    assert!(
        rejected
            .4
            .as_deref()
            .is_some_and(|r| r.contains("low 300 must be below high 180")),
        "{rejected:?}"
    );
    let report = up.limits_report().unwrap();
    assert!(matches!(report.in_force, Source::Clinic { version: 1, .. }));
    assert!(report.refused.is_some());

    // Another hub cannot read this patient's limits: 403 (and its own patient's search is empty).
    let dir_b = tempfile::tempdir().unwrap();
    let (cb, kb) = cert_b.write(dir_b.path(), "hub-b").unwrap();
    let b = mtls_client(&h.ca_path, &cb, &kb);
    let theirs = format!("{}/ServiceRequest?subject=Patient/{PATIENT}", url(&rx));
    assert_eq!(b.get(&theirs).send().await.unwrap().status().as_u16(), 403);
    let own = format!("{}/ServiceRequest?subject=Patient/{PATIENT_B}", url(&rx));
    let v: Value = get_json(&b, &own).await;
    assert!(v["entry"].as_array().is_none_or(Vec::is_empty), "{v}");

    // Offered directly (a server that does not confine its answer): another patient's version
    // and a stale one are refused with their reasons.
    let mut applier = Applier::new(
        h.store.clone(),
        Some(ingest.clone()),
        hub_rules.clone(),
        PATIENT.into(),
        in_force(&h.store, &hub_rules).await.unwrap(),
    );
    let now = UtcMillis(1_796_700_000_000);
    let other = glucose_high_version(PATIENT_B, 9, 150)
        .to_service_request()
        .unwrap();
    match applier.offer(&other, now).await.unwrap() {
        Offer::Refused { reason, .. } => assert!(reason.contains("another patient"), "{reason}"),
        o => panic!("{o:?}"),
    }
    let v3 = glucose_high_version(PATIENT, 3, 160)
        .to_service_request()
        .unwrap();
    assert_eq!(
        applier.offer(&v3, now).await.unwrap(),
        Offer::Applied { version: 3 }
    );
    let stale = glucose_high_version(PATIENT, 2, 140)
        .to_service_request()
        .unwrap();
    match applier.offer(&stale, now).await.unwrap() {
        Offer::Refused { reason, .. } => assert!(
            reason.contains("version 2 is not newer than version 3 in force"),
            "{reason}"
        ),
        o => panic!("{o:?}"),
    }
    assert_eq!(
        high_of(&ingest.rules().await),
        Some(Limit(Decimal::new(160, 0)))
    );
    let events = h.store.events(200).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == "alert_limits_changed")
            .count(),
        2,
        "{kinds:?}"
    );
    assert!(
        kinds
            .iter()
            .filter(|k| **k == "alert_limits_refused")
            .count()
            >= 3
    );
    assert!(events
        .iter()
        .filter(|e| e.kind.starts_with("alert_limits_"))
        .all(|e| e.severity == "security"));

    // Restart: version 3 is in force, from the store.
    drop(up);
    drop(applier);
    drop(ingest);
    let dir = h.dir;
    h.store.close().await;
    let store = Store::open(
        store_config(dir.path()),
        Arc::new(vitals_hub::model::SystemClock),
    )
    .await
    .unwrap();
    let after = in_force(&store, &hub_rules).await.unwrap();
    assert!(
        matches!(after.source, Source::Clinic { version: 3, applied_at } if applied_at == now),
        "{:?}",
        after.source
    );
    assert_eq!(high_of(&after.rules), Some(Limit(Decimal::new(160, 0))));
    assert_eq!(after.rules.local_command.as_deref(), Some("/bin/true"));
    // What `status` and `doctor` show.
    let shown = vitals_hub::uplink::limits::shown(&store).await.unwrap();
    let text = shown.to_string();
    assert!(text.starts_with("clinic version 3, applied "), "{text}");
    assert!(
        text.contains("last refused: clinic alert limits version 2 refused"),
        "{text}"
    );
}
