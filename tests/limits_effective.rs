#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! Issue 18: a limits version's effective date is enforced on the hub, with a moved clock (the
//! hub's `Clock` seam). A version saved to take effect in an hour arrives over the real mutual-TLS
//! uplink, is stored sealed and acknowledged "accepted, takes effect at …", but the limits in
//! force stay until the hour has passed — across a restart too. Once the clock reaches it, the next
//! reading is evaluated under the new limits (200 mg/dL alerts under high 180) and the hub reports
//! "applied"; a version that became due while the hub was off is in force at start.

mod uplink_support;
use std::sync::Arc;
use uplink_support::*;
use vitals_hub::alerts::AlertRules;
use vitals_hub::clinic::registry::record_for_der;
use vitals_hub::clinic::Limits as ClinicLimits;
use vitals_hub::daemon::{Ingest, IngestConfig};
use vitals_hub::fhir::limits::{read_ack, AckOutcome, LimitsVersion};
use vitals_hub::model::{Clock, Decimal, Kind, ManualClock, UtcMillis};
use vitals_hub::receiver::pki::{DevCa, Span};
use vitals_hub::receiver::Receiver;
use vitals_hub::store::{DeviceKey, Store};
use vitals_hub::uplink::limits::{apply_due_at_start, in_force, pending, Applier, Offer, Source};
use vitals_hub::uplink::Uplink;

const HOUR: i64 = 3_600_000;

fn version(v: u32, glucose_high: i64, effective: UtcMillis) -> serde_json::Value {
    LimitsVersion {
        effective,
        authored: UtcMillis(effective.0 - 2 * HOUR),
        reason: "from next hour".into(),
        ..glucose_high_version(PATIENT, v, glucose_high)
    }
    .to_service_request()
    .unwrap()
}

fn high(rules: &AlertRules) -> String {
    rules.thresholds[&Kind::Glucose].high.unwrap().0.to_string()
}

/// A 200 mg/dL reading (number `i`): its alerts.
async fn reading_200(ingest: &Ingest, device: &DeviceKey, i: u32) -> usize {
    let mut r = glucose(i);
    r.reading.value = vitals_hub::model::Value::Number(Decimal::new(200, 0));
    ingest
        .append(device, vec![r], None)
        .await
        .unwrap()
        .alerts
        .len()
}

/// The hub as the daemon starts it: due versions applied, the version in force, the one waiting.
struct Hub {
    store: Store,
    device: DeviceKey,
    ingest: Arc<Ingest>,
    up: Uplink,
}

async fn start(
    dir: &std::path::Path,
    clock: &Arc<ManualClock>,
    rx: &Receiver,
    files: &(std::path::PathBuf, std::path::PathBuf, std::path::PathBuf),
) -> (Hub, Option<u32>) {
    let store = Store::open(store_config(dir), clock.clone()).await.unwrap();
    let device = pair_meter(&store, PATIENT).await;
    let hub_rules = AlertRules::starting_points();
    let applied_at_start = apply_due_at_start(&store, clock.now()).await.unwrap();
    let current = in_force(&store, &hub_rules).await.unwrap();
    let waiting = pending(&store, &hub_rules).await.unwrap();
    let ingest = Arc::new(
        Ingest::open(
            store.clone(),
            IngestConfig {
                rules: current.rules.clone(),
                patient_id: PATIENT.into(),
                utc_offset_minutes: 0,
                zone: vitals_hub::model::Zone::utc(),
            },
        )
        .await
        .unwrap(),
    );
    ingest.set_pending_rules(waiting.clone()).await;
    let applier = Applier::new(
        store.clone(),
        Some(ingest.clone()),
        hub_rules,
        PATIENT.into(),
        current,
    )
    .with_pending(waiting, clock.now());
    let mut cfg = vitals_hub::uplink::UplinkConfig::new(&url(rx), &files.0, PATIENT);
    cfg.client_cert = Some(files.1.clone());
    cfg.client_key = Some(files.2.clone());
    let up = Uplink::new(
        cfg,
        store.clone(),
        clock.clone(),
        Arc::new(vitals_hub::uplink::FixedTimeSync(true)),
        hub(),
    )
    .unwrap()
    .with_limits(applier);
    (
        Hub {
            store,
            device,
            ingest,
            up,
        },
        applied_at_start,
    )
}

impl Hub {
    async fn stop(self) {
        drop(self.up);
        drop(self.ingest);
        self.store.close().await;
    }
}

fn acks(rx: &Receiver) -> Vec<(String, u32, AckOutcome, String, Option<String>)> {
    rx.resources("Observation")
        .iter()
        .filter_map(read_ack)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_takes_effect_at_its_effective_time_not_before_across_restarts() {
    let ca = DevCa::new("clinic").unwrap();
    let rx = enforced_clinic(&ca, ClinicLimits::default()).await;
    let cert = ca.client("hub-a", Span::DEFAULT).unwrap();
    rx.enroll(&record_for_der(&cert.cert_der, PATIENT, None).unwrap())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files = write_credentials(dir.path(), &ca, &cert);
    let state = dir.path().join("state");
    let t0 = UtcMillis(jiff::Timestamp::now().as_millisecond());
    let clock = Arc::new(ManualClock::new(t0));

    let (mut h, _) = start(&state, &clock, &rx, &files).await;
    assert_eq!(
        reading_200(&h.ingest, &h.device, 0).await,
        0,
        "normal at 250"
    );

    // Version 1 (high 180) takes effect in an hour: accepted, stored, not in force.
    let effective = UtcMillis(t0.0 + HOUR);
    rx.create_console_resource(&version(1, 180, effective))
        .unwrap();
    assert_eq!(
        h.up.sync_limits().await.unwrap(),
        Offer::Pending {
            version: 1,
            effective
        }
    );
    assert_eq!(high(&h.ingest.rules().await), "250");
    assert!(h.up.send_limits_ack().await.unwrap());
    let a = acks(&rx);
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!((a[0].1, a[0].2), (1, AckOutcome::Accepted));
    let note = a[0].4.clone().unwrap();
    assert!(note.starts_with("takes effect at "), "{note}");
    assert_eq!(
        UtcMillis::parse_rfc3339(note.trim_start_matches("takes effect at ")).unwrap(),
        effective
    );
    // Polled again a minute before: still waiting; not stored or reported twice.
    clock.advance(HOUR - 60_000);
    assert_eq!(
        h.up.sync_limits().await.unwrap(),
        Offer::Pending {
            version: 1,
            effective
        }
    );
    assert!(!h.up.send_limits_ack().await.unwrap());
    assert_eq!(reading_200(&h.ingest, &h.device, 1).await, 0, "not yet");
    assert_eq!(h.store.alert_limits().await.unwrap(), None);
    let report = h.up.limits_report().unwrap();
    assert_eq!(report.in_force, Source::HubToml);
    assert_eq!(report.pending, Some((1, effective)));
    // What `status` and `doctor` show.
    let shown = vitals_hub::uplink::limits::shown(&h.store)
        .await
        .unwrap()
        .to_string();
    assert!(
        shown.starts_with("hub.toml [alerts]")
            && shown.contains(&format!(
                "version 1 accepted, takes effect at {}",
                effective.to_rfc3339()
            )),
        "{shown}"
    );

    // A restart before the time: still hub.toml's limits, the version still waiting.
    h.stop().await;
    let (h2, applied) = start(&state, &clock, &rx, &files).await;
    let mut h = h2;
    assert_eq!(applied, None);
    assert_eq!(high(&h.ingest.rules().await), "250");
    assert_eq!(reading_200(&h.ingest, &h.device, 2).await, 0, "not yet");

    // The time comes: the next reading is evaluated under version 1 (no poll needed).
    clock.advance(60_000 + 1_000);
    let due = clock.now();
    assert_eq!(reading_200(&h.ingest, &h.device, 3).await, 1, "200 > 180");
    assert_eq!(high(&h.ingest.rules().await), "180");
    let stored = h.store.alert_limits().await.unwrap().unwrap();
    assert_eq!((stored.version, stored.applied_at), (1, due));
    assert_eq!(h.store.pending_alert_limits().await.unwrap(), None);
    // The uplink learns it at its next pass and reports it applied at that time.
    assert_eq!(
        h.up.sync_limits().await.unwrap(),
        Offer::Unchanged { version: 1 }
    );
    assert!(h.up.send_limits_ack().await.unwrap());
    let applied = acks(&rx)
        .into_iter()
        .find(|a| a.1 == 1 && a.2 == AckOutcome::Applied)
        .expect("version 1 acknowledged as applied");
    assert_eq!(UtcMillis::parse_rfc3339(&applied.3).unwrap(), due);

    // Version 2 (high 160) due in an hour; the hub is off when the hour passes: in force at start.
    let effective2 = UtcMillis(clock.now().0 + HOUR);
    rx.create_console_resource(&version(2, 160, effective2))
        .unwrap();
    assert!(matches!(
        h.up.sync_limits().await.unwrap(),
        Offer::Pending { version: 2, .. }
    ));
    h.stop().await;
    clock.advance(2 * HOUR);
    let (h, applied) = start(&state, &clock, &rx, &files).await;
    assert_eq!(applied, Some(2));
    assert_eq!(high(&h.ingest.rules().await), "160");
    assert!(matches!(
        h.up.limits_report().unwrap().in_force,
        Source::Clinic { version: 2, .. }
    ));
    let kinds: Vec<String> = h
        .store
        .events(200)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind.starts_with("alert_limits_"))
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| k.as_str() == "alert_limits_pending")
            .count(),
        2,
        "{kinds:?}"
    );
    assert_eq!(
        kinds
            .iter()
            .filter(|k| k.as_str() == "alert_limits_changed")
            .count(),
        2,
        "{kinds:?}"
    );
    h.stop().await;
    rx.shutdown().await;
}
