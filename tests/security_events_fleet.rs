//! Security events on the clinic's fleet page (issue 19 part 3), over real HTTPS with a session:
//! a hub's AuditEvents (built exactly as the hub's uplink builds them) show as a "Security events
//! (7 days)" column with summed counts; a flagged code or a spike flags the hub and raises one
//! clinic-side security-spike DetectedIssue about the hub's Device per spike (per hub and day),
//! not one per report; a hub with only routine events is not flagged.

#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod console_support;
use console_support::*;
use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Value};
use std::collections::HashMap;
use vitals_hub::clinic::db::{ReceiverDb, SPIKE_SYSTEM};
use vitals_hub::fhir::bundle::{AlertInput, Item};
use vitals_hub::fhir::{self, BundleContext, HubInfo, HubStatus};
use vitals_hub::model::UtcMillis;

fn ctx<'a>(
    hub: &'a HubInfo,
    patient: &'a str,
    refs: &'a HashMap<String, String>,
) -> BundleContext<'a> {
    BundleContext {
        patient_id: patient,
        hub,
        hub_ref: None,
        device_refs: refs,
        nonce: 7,
        more_may_follow: false,
    }
}

fn beat(hub: &HubInfo, patient: &str) -> Value {
    let refs = HashMap::new();
    let status = HubStatus {
        at: UtcMillis(Timestamp::now().as_millisecond() - 60_000),
        backlog: 0,
        free_disk_bytes: Some(3 << 30),
        cert_days_left: Some(300),
        devices: vec![],
        updates: Default::default(),
    };
    fhir::heartbeat_bundle(&ctx(hub, patient, &refs), &status)
        .unwrap()
        .json
}

/// A security report bundle as the hub's uplink builds it.
fn report(hub: &HubInfo, patient: &str, n: u32, code: &str, count: u64, mins_ago: i64) -> Value {
    let refs = HashMap::new();
    let last = Timestamp::now() - SignedDuration::from_mins(mins_ago);
    let payload = json!({"security_report": {
        "id": n, "uuid": format!("u-{n}"), "code": code, "kinds": ["k"], "count": count,
        "first_at": last.as_millisecond() - 60_000, "last_at": last.as_millisecond() }});
    let key = format!("security-u-{n}");
    let items = vec![Item::Alert(AlertInput {
        tag: 1,
        payload: &payload,
        stable_key: &key,
    })];
    fhir::build(&ctx(hub, patient, &refs), &items).json
}

fn row_of<'a>(html: &'a str, patient: &str) -> &'a str {
    html.split("data-hub=\"")
        .skip(1)
        .map(|r| r.split("</tr>").next().unwrap())
        .find(|r| r.contains(&format!("href=\"/patient/{patient}\"")))
        .unwrap_or_else(|| panic!("no row for {patient} in {html}"))
}

fn spike_issues(db: &std::path::Path) -> Vec<Value> {
    let d = ReceiverDb::open(Some(db)).unwrap();
    let found = d
        .search(
            "DetectedIssue",
            &[("code".into(), format!("{SPIKE_SYSTEM}|security-spike"))],
        )
        .unwrap();
    found["entry"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|e| e["resource"].clone())
        .collect()
}

#[tokio::test]
async fn the_fleet_page_shows_security_events_flags_unusual_hubs_and_raises_one_spike_alert() {
    let env = start().await;
    let quiet = hub_info("DC:A6:32:00:00:01", "0.3.1");
    let noisy = hub_info("DC:A6:32:00:00:02", "0.3.1");
    ingest(&env.db, "hub-1", "p-quiet", &beat(&quiet, "p-quiet"));
    ingest(&env.db, "hub-2", "p-noisy", &beat(&noisy, "p-noisy"));
    // The quiet hub: a key rotation (routine), and an old spoof report outside the 7 days.
    ingest(
        &env.db,
        "hub-1",
        "p-quiet",
        &report(&quiet, "p-quiet", 1, "key-rotation", 2, 30),
    );
    ingest(
        &env.db,
        "hub-1",
        "p-quiet",
        &report(&quiet, "p-quiet", 2, "tls-other", 3, 8 * 24 * 60),
    );
    // The noisy hub: three windows of spoofing, 1,000 + 400 + 7, and a limits change.
    for (n, count, ago) in [(3, 1000, 50), (4, 400, 30), (5, 7, 10)] {
        ingest(
            &env.db,
            "hub-2",
            "p-noisy",
            &report(&noisy, "p-noisy", n, "spoof-attempt", count, ago),
        );
    }
    ingest(
        &env.db,
        "hub-2",
        "p-noisy",
        &report(&noisy, "p-noisy", 6, "limits-change", 1, 5),
    );
    // A resend of a stored report (a lost answer) is not counted twice.
    ingest(
        &env.db,
        "hub-2",
        "p-noisy",
        &report(&noisy, "p-noisy", 5, "spoof-attempt", 7, 10),
    );

    let mut b = Browser::new(&env);
    assert_eq!(b.login(USER, PASSWORD).await.status, 303);
    let p = b.get("/fleet").await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(p.body.contains("Security events (7 days)"));

    let noisy_row = row_of(&p.body, "p-noisy");
    assert!(noisy_row.contains("spoof-attempt × 1407"), "{noisy_row}");
    assert!(noisy_row.contains("limits-change × 1"), "{noisy_row}");
    assert!(
        noisy_row.contains("unusual security events: spoof-attempt"),
        "{noisy_row}"
    );
    assert!(noisy_row.contains("security alert raised"), "{noisy_row}");

    let quiet_row = row_of(&p.body, "p-quiet");
    assert!(quiet_row.contains("key-rotation × 2"), "{quiet_row}");
    assert!(
        !quiet_row.contains("tls-other"),
        "older than 7 days: {quiet_row}"
    );
    assert!(!quiet_row.contains("unusual"), "{quiet_row}");
    assert!(!quiet_row.contains("security alert raised"), "{quiet_row}");

    // One spike alert for the noisy hub (three spiking reports on one day), about its Device,
    // with no patient; none for the quiet hub.
    let days: std::collections::BTreeSet<String> = [50, 30, 10]
        .iter()
        .map(|m| (Timestamp::now() - SignedDuration::from_mins(*m)).to_string()[..10].to_owned())
        .collect();
    let issues = spike_issues(&env.db);
    assert_eq!(
        issues.len(),
        days.len(),
        "one per hub and UTC day: {issues:?}"
    );
    let hub_ref = issues[0]["implicated"][0]["reference"].as_str().unwrap();
    assert!(hub_ref.starts_with("Device/"), "{hub_ref}");
    assert!(p.body.contains(&format!("data-hub=\"{hub_ref}\"")));
    assert!(issues[0].get("patient").is_none());
}
