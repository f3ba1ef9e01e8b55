//! The built-in store's indexed FHIR search and its `Observation/$lastn`, parameter by parameter
//! with the exact resources expected (not only counts); the index filled for a file written
//! before it existed; the worklist read with `$lastn` equal to the worklist read with the
//! standard searches; and the fleet's "offline since" with more heartbeats than one search
//! answers ([`MAX_SEARCH`]).

#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use vitals_hub::clinic::console::fhir::{FhirBase, FhirClient};
use vitals_hub::clinic::console::fleet;
use vitals_hub::clinic::console::worklist::{self, HubState, WorklistSettings};
use vitals_hub::clinic::db::{ReceiverDb, SearchError, MAX_SEARCH};

const MDC: &str = "urn:iso:std:iso:11073:10101";
const HUB_STATUS: &str = "https://vitals-hub.invalid/fhir/CodeSystem/hub-status";

fn s(k: &str, v: &str) -> (String, String) {
    (k.to_owned(), v.to_owned())
}

/// A transaction Bundle; `cond` gives an entry's ifNoneExist.
fn tx(entries: Vec<(Value, Option<String>)>) -> Value {
    let e: Vec<Value> = entries
        .into_iter()
        .enumerate()
        .map(|(i, (r, cond))| {
            let ty = r["resourceType"].clone();
            let mut req = json!({ "method": "POST", "url": ty });
            if let Some(c) = cond {
                req["ifNoneExist"] = json!(c);
            }
            json!({ "fullUrl": format!("urn:uuid:00000000-0000-4000-8000-{i:012}"), "resource": r, "request": req })
        })
        .collect();
    json!({ "resourceType": "Bundle", "type": "transaction", "entry": e })
}

/// An Observation of `patient` with the codings given, a value (to tell them apart) and a time.
fn obs(patient: &str, codings: &[(&str, &str)], value: i64, when: &str) -> Value {
    let coding: Vec<Value> = codings
        .iter()
        .map(|(sys, c)| json!({ "system": sys, "code": c }))
        .collect();
    json!({
        "resourceType": "Observation", "status": "final",
        "code": { "coding": coding },
        "subject": { "reference": format!("Patient/{patient}") },
        "effectiveDateTime": when,
        "valueQuantity": { "value": value }
    })
}

/// The values of a searchset's resources, in order.
fn values(b: &Value) -> Vec<i64> {
    b["entry"]
        .as_array()
        .map(|es| {
            es.iter()
                .map(|e| e["resource"]["valueQuantity"]["value"].as_i64().unwrap())
                .collect()
        })
        .unwrap_or_default()
}

fn store() -> ReceiverDb {
    let mut d = ReceiverDb::open(None).unwrap();
    let entries = vec![
        (
            obs("pa", &[(MDC, "160184")], 1, "2026-03-01T08:00:00Z"),
            None,
        ),
        (
            obs("pa", &[(MDC, "160184")], 2, "2026-03-02T08:00:00Z"),
            None,
        ),
        (
            obs("pa", &[(MDC, "150456")], 3, "2026-03-02T09:00:00Z"),
            None,
        ),
        // Two codings: found by either, answered once.
        (
            obs(
                "pa",
                &[(MDC, "149530"), ("http://loinc.org", "8867-4")],
                4,
                "2026-03-02T23:59:59.999Z",
            ),
            None,
        ),
        (
            obs("pb", &[(MDC, "160184")], 5, "2026-03-03T00:00:00Z"),
            None,
        ),
        // Same code in another system: not found by MDC|160184.
        (
            obs(
                "pb",
                &[("urn:other", "160184")],
                6,
                "2026-03-01T12:00:00+01:00",
            ),
            None,
        ),
        (
            obs("pb", &[(MDC, "160184")], 7, "2026-03-01T00:00:00Z"),
            None,
        ),
    ];
    d.transaction(&tx(entries), None, None).unwrap();
    d
}

#[test]
fn code_matches_any_of_a_list_with_or_without_system_and_repeated_codes_all_apply() {
    let d = store();
    let q = |p: &[(String, String)]| values(&d.search("Observation", p).unwrap());
    assert_eq!(
        q(&[s("code", "urn:iso:std:iso:11073:10101|160184")]),
        [1, 2, 5, 7]
    );
    assert_eq!(q(&[s("code", "160184")]), [1, 2, 5, 6, 7], "any system");
    assert_eq!(q(&[s("code", "urn:other|160184")]), [6]);
    assert_eq!(
        q(&[s(
            "code",
            "urn:iso:std:iso:11073:10101|150456,http://loinc.org|8867-4"
        )]),
        [3, 4],
        "a,b is a OR b; the two-coding Observation once"
    );
    assert_eq!(
        q(&[
            s("code", "urn:iso:std:iso:11073:10101|149530"),
            s("code", "http://loinc.org|8867-4")
        ]),
        [4],
        "two code parameters: both apply"
    );
    assert_eq!(q(&[s("code", "nothing")]), Vec::<i64>::new());
    assert_eq!(
        q(&[s("code", "160184"), s("patient", "Patient/pb")]),
        [5, 6, 7]
    );
}

#[test]
fn date_prefixes_and_date_precision_follow_fhir() {
    let d = store();
    let q = |p: &[(String, String)]| values(&d.search("Observation", p).unwrap());
    // A date stands for its whole (UTC) day.
    assert_eq!(q(&[s("date", "2026-03-02")]), [2, 3, 4]);
    assert_eq!(q(&[s("date", "eq2026-03-02")]), [2, 3, 4]);
    assert_eq!(q(&[s("date", "gt2026-03-02")]), [5]);
    assert_eq!(q(&[s("date", "ge2026-03-02")]), [2, 3, 4, 5]);
    assert_eq!(q(&[s("date", "lt2026-03-02")]), [1, 6, 7]);
    assert_eq!(q(&[s("date", "le2026-03-02")]), [1, 2, 3, 4, 6, 7]);
    // An instant is itself; +01:00 is the same instant as 11:00Z.
    assert_eq!(q(&[s("date", "2026-03-01T11:00:00Z")]), [6]);
    assert_eq!(q(&[s("date", "gt2026-03-03T00:00:00Z")]), Vec::<i64>::new());
    assert_eq!(q(&[s("date", "ge2026-03-03T00:00:00Z")]), [5]);
    assert_eq!(
        q(&[
            s("date", "ge2026-03-01T08:00:00Z"),
            s("date", "lt2026-03-02T09:00:00Z")
        ]),
        [1, 2, 6],
        "two bounds: both apply"
    );
}

#[test]
fn sort_count_total_summary_and_elements() {
    let d = store();
    let b = d
        .search(
            "Observation",
            &[s("_sort", "-date"), s("_count", "3"), s("patient", "pa")],
        )
        .unwrap();
    assert_eq!(values(&b), [4, 3, 2]);
    assert_eq!(b["total"], 4, "the total of the matches, not of the page");
    let b = d
        .search("Observation", &[s("_sort", "date"), s("_count", "50")])
        .unwrap();
    assert_eq!(values(&b), [7, 1, 6, 2, 3, 4, 5]);
    assert_eq!(b["total"], 7);
    let b = d
        .search(
            "Observation",
            &[
                s("_summary", "count"),
                s("code", "160184"),
                s("date", "ge2026-03-02"),
            ],
        )
        .unwrap();
    assert_eq!(b["total"], 2);
    assert!(b.get("entry").is_none(), "{b}");
    let b = d
        .search(
            "Observation",
            &[
                s("_elements", "subject,effective"),
                s("patient", "pb"),
                s("_sort", "date"),
            ],
        )
        .unwrap();
    let got: Vec<(String, String)> = b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let r = &e["resource"];
            assert!(r.get("valueQuantity").is_none());
            assert_eq!(r["meta"]["tag"][0]["code"], "SUBSETTED");
            (
                r["subject"]["reference"].as_str().unwrap().to_owned(),
                r["effectiveDateTime"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("Patient/pb".to_owned(), "2026-03-01T00:00:00Z".to_owned()),
            ("Patient/pb".to_owned(), "2026-03-01T11:00:00Z".to_owned()),
            ("Patient/pb".to_owned(), "2026-03-03T00:00:00Z".to_owned()),
        ]
    );
    let e = d
        .search("Observation", &[s("_elements", "valueQuantity")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("subject, effective"), "{e}");
    let e = d
        .search("Observation", &[s("_summary", "true")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("_summary=count"), "{e}");
    let e = d
        .search("Observation", &[s("subject", "pb")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("Type/id"), "{e}");
    assert_eq!(
        values(
            &d.search("Observation", &[s("subject", "Patient/pb")])
                .unwrap()
        ),
        [5, 6, 7]
    );
    assert!(matches!(
        d.search("Observation", &[s("status", "final")]),
        Err(SearchError::Param { .. })
    ));
}

#[test]
fn lastn_answers_the_newest_per_subject_and_code() {
    let d = store();
    let q = |p: &[(String, String)]| values(&d.lastn(p).unwrap());
    // Groups ordered by subject, then code; newest first within a group. The two-coding
    // Observation is the newest of two groups and answered once.
    assert_eq!(q(&[]), [4, 3, 2, 5, 6]);
    assert_eq!(q(&[s("max", "2")]), [4, 3, 2, 1, 5, 7, 6]);
    assert_eq!(
        q(&[
            s("code", "urn:iso:std:iso:11073:10101|160184"),
            s("max", "1")
        ]),
        [2, 5]
    );
    assert_eq!(
        q(&[s("patient", "Patient/pb"), s("code", "160184")]),
        [5, 6]
    );
    assert_eq!(
        q(&[
            s("subject", "Patient/pa"),
            s("max", "5"),
            s("code", "160184")
        ]),
        [2, 1]
    );
    assert_eq!(
        values(
            &d.search("Observation/$lastn", &[s("patient", "pa")])
                .unwrap()
        ),
        [4, 3, 2],
        "the search entry point takes Observation/$lastn too"
    );
    assert!(matches!(
        d.lastn(&[s("max", "0")]),
        Err(SearchError::Value { .. })
    ));
    assert!(matches!(
        d.lastn(&[s("max", "101")]),
        Err(SearchError::Value { .. })
    ));
    assert!(matches!(
        d.lastn(&[s("category", "x")]),
        Err(SearchError::Param { .. })
    ));
    // A newer reading takes over its group.
    let mut d = d;
    d.transaction(
        &tx(vec![(
            obs("pa", &[(MDC, "160184")], 8, "2026-03-05T08:00:00Z"),
            None,
        )]),
        None,
        None,
    )
    .unwrap();
    assert_eq!(values(&d.lastn(&[s("patient", "pa")]).unwrap()), [4, 3, 8]);
    // Two readings at the same instant: the one stored last is the newest, then the other.
    d.transaction(
        &tx(vec![
            (
                obs("pc", &[(MDC, "160184")], 9, "2026-03-06T08:00:00Z"),
                None,
            ),
            (
                obs("pc", &[(MDC, "160184")], 10, "2026-03-06T08:00:00Z"),
                None,
            ),
        ]),
        None,
        None,
    )
    .unwrap();
    assert_eq!(values(&d.lastn(&[s("patient", "pc")]).unwrap()), [10]);
    assert_eq!(
        values(&d.lastn(&[s("patient", "pc"), s("max", "2")]).unwrap()),
        [10, 9]
    );
}

#[test]
fn patients_with_an_observation_on_a_day_and_not_by_their_hubs_heartbeat() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let mut d = ReceiverDb::open(Some(&path)).unwrap();
    d.transaction(
        &tx(vec![(
            obs("pa", &[(MDC, "160184")], 1, "2026-03-02T23:00:00Z"),
            None,
        )]),
        None,
        None,
    )
    .unwrap();
    d.transaction(
        &tx(vec![(
            obs("pb", &[(MDC, "160184")], 2, "2026-03-03T01:00:00Z"),
            None,
        )]),
        None,
        None,
    )
    .unwrap();
    // pc's hub sent a heartbeat on the 2nd (filed under pc, about the hub): not a reading.
    let beat = json!({
        "resourceType": "Observation", "status": "final",
        "identifier": [{ "system": HUB_STATUS, "value": "hb-1" }],
        "code": { "coding": [{ "system": HUB_STATUS, "code": "backlog-depth" }] },
        "subject": { "reference": "urn:uuid:00000000-0000-4000-8000-000000000000" },
        "effectiveDateTime": "2026-03-02T12:00:00Z",
        "valueQuantity": { "value": 0 }
    });
    d.transaction(
        &tx(vec![
            (json!({ "resourceType": "Device" }), None),
            (beat, None),
        ]),
        Some("hub-c"),
        Some(vitals_hub::clinic::db::Scope {
            hub_id: "hub-c",
            patient: "pc",
        }),
    )
    .unwrap();
    let ids = |day: &str| -> Vec<String> {
        let b = d
            .search("Patient", &[s("_has:Observation:subject:date", day)])
            .unwrap();
        b["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["resource"]["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids("2026-03-02"), ["pa"]);
    assert_eq!(ids("2026-03-03"), ["pb"]);
    assert_eq!(ids("ge2026-03-01"), ["pa", "pb"]);
    assert_eq!(ids("2026-03-04"), Vec::<String>::new());
    let all = d.search("Patient", &[s("_summary", "count")]).unwrap();
    assert_eq!(all["total"], 3, "pc is a patient (of the heartbeat's hub)");
}

#[test]
fn a_store_written_before_the_index_is_indexed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    {
        let mut d = ReceiverDb::open(Some(&path)).unwrap();
        d.transaction(
            &tx(vec![
                (
                    obs("pa", &[(MDC, "160184")], 1, "2026-03-01T08:00:00Z"),
                    None,
                ),
                (
                    obs("pa", &[(MDC, "160184")], 2, "2026-03-02T08:00:00Z"),
                    None,
                ),
            ]),
            None,
            None,
        )
        .unwrap();
    }
    {
        // Back to what a file of the previous release holds: no index rows, no version.
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "DELETE FROM resource_codes; DELETE FROM lastn_groups; DELETE FROM patients;
             UPDATE resources SET subject = NULL, at = NULL; PRAGMA user_version = 0;",
        )
        .unwrap();
    }
    let d = ReceiverDb::open(Some(&path)).unwrap();
    assert_eq!(
        values(
            &d.search(
                "Observation",
                &[s("code", "160184"), s("date", "ge2026-03-02")]
            )
            .unwrap()
        ),
        [2]
    );
    assert_eq!(values(&d.lastn(&[]).unwrap()), [2]);
    assert_eq!(d.search("Patient", &[]).unwrap()["total"], 1);
}

#[test]
fn supports_lastn_reads_the_capability_statement() {
    let with = json!({ "resourceType": "CapabilityStatement", "rest": [{ "mode": "server", "resource": [
        { "type": "Patient" },
        { "type": "Observation", "operation": [{ "name": "lastn", "definition": "http://hl7.org/fhir/OperationDefinition/Observation-lastn" }] }
    ]}]});
    let by_definition = json!({ "rest": [{ "mode": "server", "resource": [
        { "type": "Observation", "operation": [{ "name": "last-n", "definition": "http://hl7.org/fhir/OperationDefinition/Observation-lastn" }] }
    ]}]});
    let without = json!({ "rest": [{ "mode": "server", "resource": [
        { "type": "Observation", "operation": [{ "name": "stats", "definition": "http://hl7.org/fhir/OperationDefinition/Observation-stats" }] },
        { "type": "Patient", "operation": [{ "name": "lastn" }] }
    ]}]});
    assert!(worklist::supports_lastn(&with));
    assert!(worklist::supports_lastn(&by_definition));
    assert!(!worklist::supports_lastn(&without));
    assert!(!worklist::supports_lastn(&json!({})));
}

/// A heartbeat bundle of hub `hub` (its Device by conditional create) at the instants given.
fn beats(hub: &str, ats: &[Timestamp]) -> Value {
    let cond = format!("identifier=urn:test:hub|{hub}");
    let mut e = vec![(
        json!({ "resourceType": "Device", "identifier": [{ "system": "urn:test:hub", "value": hub }] }),
        Some(cond),
    )];
    for t in ats {
        e.push((
            json!({
                "resourceType": "Observation", "status": "final",
                "identifier": [{ "system": HUB_STATUS, "value": format!("{hub}-{}", t.as_second()) }],
                "code": { "coding": [{ "system": HUB_STATUS, "code": "backlog-depth" }] },
                "subject": { "reference": "urn:uuid:00000000-0000-4000-8000-000000000000" },
                "effectiveDateTime": t.to_string(),
                "valueQuantity": { "value": 0, "unit": "1" }
            }),
            None,
        ));
    }
    tx(e)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worklist_with_lastn_equals_worklist_by_search() {
    let now = Timestamp::now();
    let ago = |h: i64| now - SignedDuration::from_hours(h);
    let mut d = ReceiverDb::open(None).unwrap();
    let scope = |hub: &'static str, p: &'static str| {
        Some(vitals_hub::clinic::db::Scope {
            hub_id: hub,
            patient: p,
        })
    };
    // pa: glucose and SpO2 over 20 days; pb: one old weight (stale); pc: nothing but a hub.
    let mut e = Vec::new();
    let mut dates = std::collections::BTreeSet::new();
    let date = |t: Timestamp| jiff::tz::Offset::UTC.to_datetime(t).date();
    for day in 0..20 {
        dates.insert(date(ago(24 * day + 2)));
        if day % 3 == 0 {
            dates.insert(date(ago(24 * day + 5)));
        }
        e.push((
            obs(
                "pa",
                &[(MDC, "160184")],
                100 + day,
                &ago(24 * day + 2).to_string(),
            ),
            None,
        ));
        if day % 3 == 0 {
            e.push((
                obs(
                    "pa",
                    &[(MDC, "150456")],
                    90 + day,
                    &ago(24 * day + 5).to_string(),
                ),
                None,
            ));
        }
    }
    d.transaction(&tx(e), Some("hub-a"), scope("hub-a", "pa"))
        .unwrap();
    d.transaction(
        &tx(vec![(
            obs("pb", &[(MDC, "188736")], 80, &ago(24 * 5).to_string()),
            None,
        )]),
        Some("hub-b"),
        scope("hub-b", "pb"),
    )
    .unwrap();
    let fresh: Vec<Timestamp> = (0..8)
        .map(|q| now - SignedDuration::from_mins(15 * q + 1))
        .collect();
    let old: Vec<Timestamp> = (0..8)
        .map(|q| ago(30) - SignedDuration::from_mins(15 * q))
        .collect();
    d.transaction(&beats("hub-a", &fresh), Some("hub-a"), scope("hub-a", "pa"))
        .unwrap();
    d.transaction(&beats("hub-c", &old), Some("hub-c"), scope("hub-c", "pc"))
        .unwrap();
    let fhir = FhirClient::new(FhirBase::Local(Arc::new(Mutex::new(d))));
    let with = WorklistSettings::default();
    let without = WorklistSettings {
        lastn: false,
        ..WorklistSettings::default()
    };
    let r0 = fhir.requests();
    let a = worklist::load(&fhir, now, &with).await.unwrap();
    assert_eq!(fhir.requests() - r0, worklist::REQUESTS_LASTN as u64);
    let b = worklist::load(&fhir, now, &without).await.unwrap();
    let view = |rows: &[worklist::Row]| -> Vec<String> {
        rows.iter()
            .map(|r| {
                format!(
                    "{} latest={:?} days={} stale={} hub={:?} open={:?}",
                    r.patient, r.latest, r.days_with_readings, r.stale, r.hub, r.open
                )
            })
            .collect()
    };
    assert_eq!(view(&a), view(&b));
    let pa = a.iter().find(|r| r.patient == "pa").unwrap();
    assert_eq!(pa.days_with_readings, dates.len());
    assert_eq!(pa.latest["Glucose"].0, "100");
    assert_eq!(pa.latest["SpO₂"].0, "90");
    assert!(matches!(pa.hub, HubState::Online { .. }));
    let pc = a.iter().find(|r| r.patient == "pc").unwrap();
    assert_eq!(
        pc.hub,
        HubState::Offline {
            since: old[0] + SignedDuration::from_mins(15)
        }
    );
    assert_eq!(a.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_shows_offline_since_with_more_heartbeats_than_one_search_answers() {
    let now = Timestamp::now();
    let mut d = ReceiverDb::open(None).unwrap();
    // 60 busy hubs with 15-minute heartbeats over the last 10 days: 57,600 heartbeats, more than
    // MAX_SEARCH, all newer than the silent hubs' last ones.
    let busy = 60;
    let per_hub = 960;
    assert!(busy * per_hub > MAX_SEARCH);
    for h in 0..busy {
        let hub = format!("busy-{h:02}");
        let ats: Vec<Timestamp> = (0..per_hub)
            .map(|q| now - SignedDuration::from_mins(15 * i64::try_from(q).unwrap() + 1))
            .collect();
        for chunk in ats.chunks(900) {
            d.transaction(&beats(&hub, chunk), None, None).unwrap();
        }
    }
    // Silent since 12 days (inside the period) and since 40 days (before it).
    let last12 = now - SignedDuration::from_hours(24 * 12);
    let last40 = now - SignedDuration::from_hours(24 * 40);
    for (hub, last) in [("silent-12", last12), ("silent-40", last40)] {
        let ats: Vec<Timestamp> = (0..96)
            .map(|q| last - SignedDuration::from_mins(15 * q))
            .collect();
        d.transaction(&beats(hub, &ats), None, None).unwrap();
    }
    let fhir = FhirClient::new(FhirBase::Local(Arc::new(Mutex::new(d))));
    let set = WorklistSettings::default();
    let r0 = fhir.requests();
    let f = fleet::load(&fhir, now, &set).await.unwrap();
    assert_eq!(fhir.requests() - r0, fleet::SEARCHES as u64);
    assert!(!f.truncated);
    assert_eq!(f.rows.len(), busy + 2);
    let q = SignedDuration::from_mins(15);
    assert_eq!(
        f.rows[0].state,
        HubState::Offline { since: last40 + q },
        "longest offline first"
    );
    assert_eq!(f.rows[1].state, HubState::Offline { since: last12 + q });
    for r in &f.rows[2..] {
        assert_eq!(
            r.state,
            HubState::Online {
                last: now - SignedDuration::from_mins(1)
            },
            "{}",
            r.hub
        );
    }
    // The standard searches, for a server without $lastn: cut at MAX_SEARCH, and they say so.
    let old = fleet::load(
        &fhir,
        now,
        &WorklistSettings {
            lastn: false,
            ..set
        },
    )
    .await
    .unwrap();
    assert!(old.truncated);
}
