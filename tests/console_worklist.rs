//! The worklist over real HTTPS and the built-in store's FHIR search it reads through: patients
//! in attention order (critical unacknowledged first, then open alerts, stale data, hub offline),
//! a fixed number of FHIR requests per page whatever the number of patients, and the search
//! parameters bounded and checked.

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
use serde_json::json;
use vitals_hub::clinic::console::worklist::{self, HubState, WorklistSettings};
use vitals_hub::clinic::db::{ReceiverDb, SearchError};

fn ago(mins: i64) -> Timestamp {
    Timestamp::now() - SignedDuration::from_mins(mins)
}

fn s(k: &str, v: &str) -> (String, String) {
    (k.to_owned(), v.to_owned())
}

/// The patients of the worklist table, in order.
fn order(html: &str) -> Vec<String> {
    html.split("data-patient=\"")
        .skip(1)
        .map(|x| x.split('"').next().unwrap().to_owned())
        .collect()
}

#[test]
fn built_in_search_filters_sorts_counts_and_refuses_what_it_cannot_do() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    ingest(
        &db,
        "hub-a",
        "pa",
        &bundle(vec![
            (glucose("pa", ago(300), 100, None), "urn:uuid:1"),
            (glucose("pa", ago(10), 60, Some("L")), "urn:uuid:2"),
            (glucose("pa", ago(60 * 24 * 40), 90, None), "urn:uuid:3"),
        ]),
    );
    ingest(
        &db,
        "hub-b",
        "pb",
        &bundle(vec![(glucose("pb", ago(5), 120, None), "urn:uuid:1")]),
    );
    let d = ReceiverDb::open(Some(&db)).unwrap();
    let b = d
        .search(
            "Observation",
            &[
                s("patient", "Patient/pa"),
                s("_sort", "-date"),
                s("_count", "1"),
            ],
        )
        .unwrap();
    assert_eq!(b["type"], "searchset");
    assert_eq!(b["total"], 3);
    assert_eq!(b["entry"].as_array().unwrap().len(), 1);
    assert_eq!(
        b["entry"][0]["resource"]["valueQuantity"]["value"], 60,
        "newest first"
    );
    let since = format!("ge{}", ago(60 * 24 * 30));
    let b = d
        .search("Observation", &[s("date", &since), s("_sort", "date")])
        .unwrap();
    let vals: Vec<i64> = b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["valueQuantity"]["value"].as_i64().unwrap())
        .collect();
    assert_eq!(
        vals,
        [100, 60, 120],
        "the 40-day-old reading is out, oldest first"
    );
    let b = d.search("Patient", &[]).unwrap();
    assert_eq!(b["total"], 2);
    assert!(matches!(
        d.search("Observation", &[s("name", "x")]),
        Err(SearchError::Param { .. })
    ));
    assert!(matches!(
        d.search("Observation", &[s("_count", "0")]),
        Err(SearchError::Value { .. })
    ));
    assert!(matches!(
        d.search("Observation", &[s("_count", "999999999")]),
        Err(SearchError::Value { .. })
    ));
    assert!(matches!(
        d.search("Observation", &[s("date", "yesterday")]),
        Err(SearchError::Value { .. })
    ));
    assert!(matches!(
        d.search("Consent", &[]),
        Err(SearchError::Type(_))
    ));
    let e = d
        .search("Observation", &[s("_sort", "value")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("date and -date"), "{e}");
}

#[test]
fn acknowledged_critical_alerts_leave_the_top_and_a_new_one_brings_the_patient_back() {
    let now = Timestamp::now();
    let mut issues = vec![
        alert("p1", "ep1", "high", "raised", ago(30)),
        alert("p2", "ep2", "moderate", "raised", ago(30)),
    ];
    issues[0]["id"] = json!("11");
    issues[1]["id"] = json!("12");
    let obs = vec![
        glucose("p1", ago(30), 40, Some("LL")),
        glucose("p2", ago(30), 150, Some("H")),
    ];
    let set = WorklistSettings::default();
    let rows = worklist::build(&[], &[], &obs, &issues, &[], now, &set);
    assert_eq!(rows[0].patient, "p1");
    assert_eq!(rows[0].critical_unacked, 1);
    assert_eq!(rows[0].latest["Glucose"].1, ["LL"]);
    let ack = json!({ "resourceType": "Task", "focus": { "reference": "DetectedIssue/11" } });
    let rows = worklist::build(
        &[],
        &[],
        &obs,
        &issues,
        std::slice::from_ref(&ack),
        now,
        &set,
    );
    assert_eq!(
        rows[0].patient, "p1",
        "still open: above p2's moderate alert only by name"
    );
    assert_eq!(rows[0].critical_unacked, 0);
    // An escalation (a newer record of the episode) is not covered by the old acknowledgement.
    let mut esc = alert("p1", "ep1", "high", "escalated", ago(5));
    esc["id"] = json!("13");
    issues.push(esc);
    let rows = worklist::build(&[], &[], &obs, &issues, &[ack], now, &set);
    assert_eq!(rows[0].critical_unacked, 1);
    // Resolved: no longer open.
    let mut res = alert("p1", "ep1", "high", "resolved", ago(1));
    res["id"] = json!("14");
    issues.push(res);
    let rows = worklist::build(&[], &[], &obs, &issues, &[], now, &set);
    let p1 = rows.iter().find(|r| r.patient == "p1").unwrap();
    assert_eq!(p1.open, [0, 0, 0]);
}

#[test]
fn days_with_readings_give_the_billing_band() {
    let now = Timestamp::now();
    let obs: Vec<_> = (0..20)
        .map(|d| glucose("p", ago(60 * 24 * d + 1), 100, None))
        .collect();
    let set = WorklistSettings::default();
    let r = &worklist::build(&[], &[], &obs[..1], &[], &[], now, &set)[0];
    assert_eq!((r.days_with_readings, r.band()), (1, "under 2"));
    let r = &worklist::build(&[], &[], &obs[..15], &[], &[], now, &set)[0];
    assert_eq!((r.days_with_readings, r.band()), (15, "2–15"));
    let r = &worklist::build(&[], &[], &obs, &[], &[], now, &set)[0];
    assert_eq!((r.days_with_readings, r.band()), (20, "16+"));
}

#[tokio::test]
async fn worklist_puts_the_critical_patient_first_and_the_offline_hub_before_the_quiet_one() {
    let env = start().await;
    // calm: fresh reading, fresh heartbeat. offline: fresh reading, heartbeat 2 h old (15-min
    // interval, 3 missed = offline). crit: an open critical alert.
    for (hub, p, hb) in [
        ("hub-calm", "calm", 2),
        ("hub-off", "offline", 120),
        ("hub-crit", "crit", 2),
    ] {
        ingest(&env.db, hub, p, &heartbeat(ago(hb)));
        ingest(
            &env.db,
            hub,
            p,
            &bundle(vec![(glucose(p, ago(20), 110, None), "urn:uuid:1")]),
        );
    }
    ingest(
        &env.db,
        "hub-crit",
        "crit",
        &bundle(vec![
            (glucose("crit", ago(3), 38, Some("LL")), "urn:uuid:1"),
            (
                alert("crit", "glucose-1", "high", "raised", ago(3)),
                "urn:uuid:2",
            ),
        ]),
    );
    let mut b = Browser::new(&env);
    assert_eq!(b.login(USER, PASSWORD).await.status, 303);
    let before = env.console().fhir_requests();
    let p = b.get("/").await;
    assert_eq!(p.status, 200, "{}", p.body);
    let per_page = env.console().fhir_requests() - before;
    assert_eq!(order(&p.body), ["crit", "offline", "calm"], "{}", p.body);
    assert!(p.body.contains("1 critical unacknowledged"));
    assert!(p.body.contains("38 mg/dL") && p.body.contains("LL"));
    assert!(p.body.contains("offline since"));

    // Twenty more patients: the same number of FHIR requests for the page.
    for i in 0..20 {
        let p = format!("more-{i}");
        ingest(
            &env.db,
            &format!("hub-{i}"),
            &p,
            &bundle(vec![(glucose(&p, ago(20), 100, None), "urn:uuid:1")]),
        );
    }
    let before = env.console().fhir_requests();
    let p = b.get("/").await;
    assert_eq!(order(&p.body).len(), 23);
    assert_eq!(
        env.console().fhir_requests() - before,
        per_page,
        "one search per resource type"
    );
    assert_eq!(
        per_page,
        worklist::REQUESTS_LASTN as u64 + 1,
        "the worklist's requests and the AuditEvent of the view"
    );
    let audits = ReceiverDb::open(Some(&env.db))
        .unwrap()
        .resources("AuditEvent")
        .unwrap();
    let views: Vec<_> = audits
        .iter()
        .filter(|a| a["subtype"][0]["code"] == "search-type")
        .collect();
    assert_eq!(views.len(), 2, "one per worklist shown");
    assert_eq!(views[0]["agent"][0]["who"]["identifier"]["value"], USER);
    env.stop().await;
}

#[test]
fn hub_state_from_heartbeat_age_against_the_interval() {
    let now = Timestamp::now();
    let set = WorklistSettings::default();
    let dev =
        json!({ "resourceType": "Device", "id": "7", "patient": { "reference": "Patient/p" } });
    let hb = |m| {
        let mut o = heartbeat(ago(m))["entry"][1]["resource"].clone();
        o["subject"] = json!({ "reference": "Device/7" });
        o
    };
    let r = &worklist::build(
        &[],
        std::slice::from_ref(&dev),
        &[hb(44)],
        &[],
        &[],
        now,
        &set,
    )[0];
    assert!(matches!(r.hub, HubState::Online { .. }), "{:?}", r.hub);
    let r = &worklist::build(
        &[],
        std::slice::from_ref(&dev),
        &[hb(46)],
        &[],
        &[],
        now,
        &set,
    )[0];
    match r.hub {
        HubState::Offline { since } => {
            let expect = ago(46) + SignedDuration::from_mins(15);
            assert!(
                (since - expect).abs() < SignedDuration::from_secs(5),
                "{since} vs {expect}"
            );
        }
        ref other => panic!("{other:?}"),
    }
}
