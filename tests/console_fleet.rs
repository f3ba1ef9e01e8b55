//! The fleet page over real HTTPS, fed by the hub's own heartbeat bundles
//! (`fhir::heartbeat_bundle`, as `src/uplink/heartbeat.rs` uploads them) written into the clinic's
//! store: a hub whose heartbeats stopped shows "offline since" the first missed one and sorts
//! first, a healthy hub shows online with what its heartbeat reports, a failing one comes before
//! it, the page makes the same number of FHIR requests whatever the number of hubs, and no session
//! means the login page.

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
use std::collections::HashMap;
use vitals_hub::clinic::console::fleet;
use vitals_hub::clinic::console::worklist::{HubState, WorklistSettings};
use vitals_hub::fhir::bundle::DeviceStatus;
use vitals_hub::fhir::{self, BundleContext, HubInfo, HubStatus};
use vitals_hub::model::UtcMillis;

fn ago(mins: i64) -> Timestamp {
    Timestamp::now() - SignedDuration::from_mins(mins)
}

/// One heartbeat exactly as the hub builds it, at `at`.
fn beat(
    hub: &HubInfo,
    patient: &str,
    at: Timestamp,
    cert_days: Option<i64>,
    battery: u8,
) -> serde_json::Value {
    let refs = HashMap::new();
    let ctx = BundleContext {
        patient_id: patient,
        hub,
        hub_ref: None,
        device_refs: &refs,
        nonce: u64::try_from(at.as_millisecond()).unwrap(),
        more_may_follow: false,
    };
    let status = HubStatus {
        updates: Default::default(),
        at: UtcMillis(at.as_millisecond()),
        backlog: 17,
        free_disk_bytes: Some(3 * 1024 * 1024 * 1024),
        cert_days_left: cert_days,
        devices: vec![DeviceStatus {
            ident: fhir::DeviceIdent::BtMac("00:09:1F:80:1A:2B".parse().unwrap()),
            last_seen_secs: Some(600),
            battery_percent: Some(battery),
        }],
    };
    fhir::heartbeat_bundle(&ctx, &status).unwrap().json
}

/// The hubs' patients in the fleet table's order.
fn order(html: &str) -> Vec<String> {
    html.split("data-hub=\"")
        .skip(1)
        .map(|row| {
            let row = row.split("</tr>").next().unwrap();
            row.split("href=\"/patient/")
                .nth(1)
                .and_then(|x| x.split('"').next())
                .unwrap_or("?")
                .to_owned()
        })
        .collect()
}

fn row_of<'a>(html: &'a str, patient: &str) -> &'a str {
    html.split("data-hub=\"")
        .skip(1)
        .map(|r| r.split("</tr>").next().unwrap())
        .find(|r| r.contains(&format!("href=\"/patient/{patient}\"")))
        .unwrap_or_else(|| panic!("no row for {patient} in {html}"))
}

#[tokio::test]
async fn a_hub_whose_heartbeats_stop_is_offline_since_the_first_missed_one_and_sorts_first() {
    let env = start().await;
    let set = WorklistSettings::default();
    let healthy = hub_info("DC:A6:32:00:00:01", "0.3.1");
    let failing = hub_info("DC:A6:32:00:00:02", "0.3.1");
    let silent = hub_info("DC:A6:32:00:00:03", "0.2.9");
    // Four heartbeats each, 15 minutes apart; the silent hub's last one was 3 hours ago.
    for k in 0..4 {
        ingest(
            &env.db,
            "hub-1",
            "p-healthy",
            &beat(&healthy, "p-healthy", ago(2 + 15 * k), Some(200), 80),
        );
        ingest(
            &env.db,
            "hub-2",
            "p-failing",
            &beat(&failing, "p-failing", ago(3 + 15 * k), Some(5), 80),
        );
        ingest(
            &env.db,
            "hub-3",
            "p-silent",
            &beat(&silent, "p-silent", ago(180 + 15 * k), None, 60),
        );
    }
    let last_silent = ago(180);

    let mut b = Browser::new(&env);
    let p = b.get("/fleet").await;
    assert_eq!(p.status, 303, "no session: to the login page");
    assert_eq!(p.location.as_deref(), Some("/login"));

    assert_eq!(b.login(USER, PASSWORD).await.status, 303);
    let w = b.get("/").await;
    assert!(
        w.body.contains("href=\"/fleet\""),
        "the header links the fleet page"
    );
    let before = env.console().fhir_requests();
    let p = b.get("/fleet").await;
    assert_eq!(p.status, 200, "{}", p.body);
    let per_page = env.console().fhir_requests() - before;
    assert_eq!(
        per_page,
        fleet::SEARCHES as u64,
        "no AuditEvent, no per-hub request"
    );
    assert_eq!(
        order(&p.body),
        ["p-silent", "p-failing", "p-healthy"],
        "offline, then failing, then healthy: {}",
        p.body
    );

    let silent_row = row_of(&p.body, "p-silent");
    // In the clinic's zone (the system's here), with its offset.
    let shown = |t: Timestamp| {
        t.to_zoned_datetime(jiff::tz::TimeZone::system())
            .strftime("%Y-%m-%d %H:%M %:z")
            .to_string()
    };
    let since = shown(last_silent + set.heartbeat_interval);
    // The minute may tick between the heartbeat's time here and the page's rendering.
    let since_next = shown(last_silent + set.heartbeat_interval + SignedDuration::from_secs(60));
    assert!(
        silent_row.contains(&format!("offline since {since}"))
            || silent_row.contains(&format!("offline since {since_next}")),
        "{silent_row}"
    );
    assert!(silent_row.contains("0.2.9"), "{silent_row}");
    assert!(
        silent_row.contains("not reported by this hub"),
        "a field the heartbeat does not carry shows as such: {silent_row}"
    );

    let healthy_row = row_of(&p.body, "p-healthy");
    assert!(healthy_row.contains("online"), "{healthy_row}");
    assert!(!healthy_row.contains("offline"), "{healthy_row}");
    for shown in [
        "0.3.1",
        "17 readings",
        "3.0 GiB",
        "200 days left",
        "00-09-1F-80-1A-2B",
        "80 %",
    ] {
        assert!(healthy_row.contains(shown), "{shown} in {healthy_row}");
    }
    let failing_row = row_of(&p.body, "p-failing");
    assert!(
        failing_row.contains("certificate expires in 5 days"),
        "{failing_row}"
    );

    // Twenty more hubs: the same number of FHIR requests for the page.
    for i in 0..20 {
        let h = hub_info(&format!("DC:A6:32:00:01:{i:02X}"), "0.3.1");
        let p = format!("more-{i}");
        ingest(
            &env.db,
            &format!("hub-m{i}"),
            &p,
            &beat(&h, &p, ago(5), Some(300), 90),
        );
    }
    let before = env.console().fhir_requests();
    let p = b.get("/fleet").await;
    assert_eq!(order(&p.body).len(), 23);
    assert_eq!(env.console().fhir_requests() - before, per_page);
    assert_eq!(order(&p.body)[0], "p-silent");
    env.stop().await;
}

#[test]
fn the_newest_heartbeat_wins_and_the_offline_rule_is_the_worklists() {
    let set = WorklistSettings::default();
    let hub = hub_info("DC:A6:32:00:00:09", "1.0.0");
    let resources = |b: serde_json::Value| -> Vec<serde_json::Value> {
        b["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let mut r = e["resource"].clone();
                // As stored: the hub's Device has id 7, every Observation points at it.
                if r["resourceType"] == "Device" {
                    r["id"] = "7".into();
                    r["patient"] = serde_json::json!({ "reference": "Patient/p" });
                } else {
                    r["subject"] = serde_json::json!({ "reference": "Device/7" });
                }
                r
            })
            .collect()
    };
    let old = resources(beat(&hub, "p", ago(46), Some(100), 10));
    let new = resources(beat(&hub, "p", ago(44), Some(99), 70));
    let devices = vec![new[0].clone()];
    let obs: Vec<_> = old[1..].iter().chain(&new[1..]).cloned().collect();
    let rows = fleet::build(&devices, &obs, Timestamp::now(), &set);
    assert_eq!(rows.len(), 1);
    assert!(
        matches!(rows[0].state, HubState::Online { .. }),
        "44 min: online"
    );
    assert_eq!(rows[0].cert_days_left, Some(99));
    assert_eq!(rows[0].devices[0].battery_percent, Some(70));
    assert!(rows[0].problems.is_empty(), "{:?}", rows[0].problems);
    let rows = fleet::build(&devices, &old[1..], Timestamp::now(), &set);
    match rows[0].state {
        HubState::Offline { since } => {
            let expect = ago(46) + set.heartbeat_interval;
            assert!((since - expect).abs() < SignedDuration::from_secs(5));
        }
        ref other => panic!("46 min: offline, not {other:?}"),
    }
    assert_eq!(rows[0].problems, ["1 device battery low"]);
    assert_eq!(rows[0].patient.as_deref(), Some("p"));

    // An enrolled hub (its PhgDevice) with no heartbeat in the period comes before a failing
    // online hub, and says so.
    let mut mute = new[0].clone();
    mute["id"] = "8".into();
    mute["patient"] = serde_json::json!({ "reference": "Patient/q" });
    let failing: Vec<_> = resources(beat(&hub, "p", ago(2), Some(3), 70))[1..].to_vec();
    let rows = fleet::build(&[new[0].clone(), mute], &failing, Timestamp::now(), &set);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].patient.as_deref(), Some("q"));
    assert_eq!(rows[0].state, HubState::Unknown);
    assert_eq!(rows[1].problems, ["certificate expires in 3 days"]);
}

#[test]
fn the_heartbeat_carries_pending_security_updates_and_the_last_update_and_the_fleet_shows_them() {
    let set = WorklistSettings::default();
    let hub = hub_info("DC:A6:32:00:00:0A", "0.9.1-1");
    let with_updates = |updates: fhir::heartbeat::UpdateStatus| -> Vec<serde_json::Value> {
        let refs = HashMap::new();
        let at = ago(1);
        let ctx = BundleContext {
            patient_id: "p",
            hub: &hub,
            hub_ref: None,
            device_refs: &refs,
            nonce: 9,
            more_may_follow: false,
        };
        let status = HubStatus {
            updates,
            at: UtcMillis(at.as_millisecond()),
            backlog: 0,
            free_disk_bytes: None,
            cert_days_left: None,
            devices: vec![],
        };
        let b = fhir::heartbeat_bundle(&ctx, &status).unwrap().json;
        b["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let mut r = e["resource"].clone();
                if r["resourceType"] == "Device" {
                    r["id"] = "7".into();
                } else {
                    r["subject"] = serde_json::json!({ "reference": "Device/7" });
                }
                r
            })
            .collect()
    };
    let rolled = "rolled-back 0.9.2-1 to 0.9.1-1 at 2026-12-07T02:10:00Z: no upload within 900 s";
    let res = with_updates(fhir::heartbeat::UpdateStatus {
        security_pending: Some(3),
        last_outcome: Some(rolled.into()),
    });
    let rows = fleet::build(&res[..1], &res[1..], Timestamp::now(), &set);
    assert_eq!(rows[0].software_version.as_deref(), Some("0.9.1-1"));
    assert_eq!(rows[0].security_updates_pending, Some(3));
    assert_eq!(rows[0].last_update.as_deref(), Some(rolled));
    assert_eq!(
        rows[0].problems,
        ["last software update rolled back or failed"]
    );
    // Unknown (apt missing or slow) is absent, never zero; an ok update is no problem.
    let res = with_updates(fhir::heartbeat::UpdateStatus {
        security_pending: None,
        last_outcome: Some("ok 0.9.1-1 from 0.9.0-1 at 2026-12-07T02:10:00Z".into()),
    });
    let rows = fleet::build(&res[..1], &res[1..], Timestamp::now(), &set);
    assert_eq!(rows[0].security_updates_pending, None);
    assert!(rows[0].problems.is_empty(), "{:?}", rows[0].problems);
}
