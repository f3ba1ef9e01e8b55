//! The patient page over real HTTPS: the 30-day chart has one dot per reading and the limit band,
//! the readings table shows the flags, every view writes an AuditEvent; acknowledging an alert
//! (CSRF token and a note required) stores a Task whose focus is the DetectedIssue, audits it, and
//! moves the patient down the worklist.

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
use vitals_hub::clinic::console::patient::BAND_RGB;
use vitals_hub::clinic::db::ReceiverDb;

fn ago(mins: i64) -> Timestamp {
    Timestamp::now() - SignedDuration::from_mins(mins)
}

fn order(html: &str) -> Vec<String> {
    html.split("data-patient=\"")
        .skip(1)
        .map(|x| x.split('"').next().unwrap().to_owned())
        .collect()
}

fn section<'a>(html: &'a str, kind: &str) -> &'a str {
    let i = html.find(&format!("data-kind=\"{kind}\"")).expect(kind);
    let rest = &html[i..];
    &rest[..rest.find("</section>").unwrap()]
}

fn store(db: &std::path::Path) {
    // zed: five glucose readings over four days, the last critically low, with an open critical
    // alert. amy: a moderate open alert.
    let mut e = Vec::new();
    for (i, (mins, v, f)) in [
        (5_000, 120, None),
        (3_000, 180, None),
        (1_500, 260, Some("H")),
        (600, 90, None),
        (10, 40, Some("LL")),
    ]
    .into_iter()
    .enumerate()
    {
        e.push((glucose("zed", ago(mins), v, f), format!("urn:uuid:{i}")));
    }
    e.push((
        alert("zed", "glucose-1", "high", "raised", ago(10)),
        "urn:uuid:alert".into(),
    ));
    let e: Vec<(serde_json::Value, &str)> =
        e.iter().map(|(r, u)| (r.clone(), u.as_str())).collect();
    ingest(db, "hub-zed", "zed", &bundle(e));
    ingest(
        db,
        "hub-amy",
        "amy",
        &bundle(vec![
            (glucose("amy", ago(30), 200, Some("H")), "urn:uuid:1"),
            (
                alert("amy", "glucose-2", "moderate", "raised", ago(30)),
                "urn:uuid:2",
            ),
        ]),
    );
}

#[tokio::test]
async fn patient_page_charts_every_reading_with_the_band_and_audits_the_view() {
    let env = start().await;
    store(&env.db);
    let mut b = Browser::new(&env);
    assert_eq!(b.login(USER, PASSWORD).await.status, 303);
    let p = b.get("/patient/zed").await;
    assert_eq!(p.status, 200, "{}", p.body);
    let g = section(&p.body, "Glucose");
    assert!(g.contains("data-points=\"5\""), "{g}");
    assert_eq!(g.matches("<circle").count(), 5, "one dot per reading");
    let (r, gr, bl) = BAND_RGB;
    let band = format!("#{r:02X}{gr:02X}{bl:02X}");
    assert!(g.contains(&band), "the limit band is drawn: {band}");
    assert!(g.contains("40 mg/dL") && g.contains("LL") && g.contains(">H<"));
    assert!(p.body.contains("raised critical_low"));

    let audits = ReceiverDb::open(Some(&env.db))
        .unwrap()
        .resources("AuditEvent")
        .unwrap();
    let views: Vec<_> = audits.iter().filter(|a| a["action"] == "R").collect();
    assert_eq!(views.len(), 1, "{audits:?}");
    let v = views[0];
    assert_eq!(v["agent"][0]["who"]["identifier"]["value"], USER);
    assert_eq!(v["agent"][0]["network"]["address"], "127.0.0.1");
    assert_eq!(v["entity"][0]["what"]["reference"], "Patient/zed");

    // Ids that are not FHIR ids, and unknown patients.
    assert_eq!(b.get("/patient/..%2F..%2Fetc").await.status, 404);
    let p = b.get("/patient/nobody").await;
    assert_eq!(p.status, 200);
    assert!(p.body.contains("No alert"));
    env.stop().await;
}

#[tokio::test]
async fn acknowledging_stores_a_task_audits_it_and_moves_the_patient_down() {
    let env = start().await;
    store(&env.db);
    let mut b = Browser::new(&env);
    assert_eq!(b.login(USER, PASSWORD).await.status, 303);
    assert_eq!(order(&b.get("/").await.body), ["zed", "amy"]);
    let page = b.get("/patient/zed").await.body;
    let issue = page
        .split("data-issue=\"DetectedIssue/")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let csrf = csrf_of(&page);
    let url = format!("/alert/{issue}/ack");

    assert_eq!(
        b.post(&url, &[("note", "called the patient")]).await.status,
        403,
        "no CSRF token"
    );
    assert_eq!(
        b.post(&url, &[("csrf", &csrf), ("note", "  ")])
            .await
            .status,
        400,
        "no note"
    );
    assert_eq!(
        b.post("/alert/999999/ack", &[("csrf", &csrf), ("note", "x")])
            .await
            .status,
        404
    );
    let db = ReceiverDb::open(Some(&env.db)).unwrap();
    assert_eq!(db.count("Task").unwrap(), 0);

    let p = b
        .post(
            &url,
            &[
                ("csrf", &csrf),
                ("note", "called the patient, ate, fine now"),
            ],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert_eq!(p.location.as_deref(), Some("/patient/zed"));
    let tasks = db.resources("Task").unwrap();
    assert_eq!(tasks.len(), 1);
    assert_eq!(
        tasks[0]["focus"]["reference"],
        format!("DetectedIssue/{issue}")
    );
    assert_eq!(tasks[0]["for"]["reference"], "Patient/zed");
    assert_eq!(tasks[0]["note"][0]["authorString"], USER);
    let acks: Vec<_> = db
        .resources("AuditEvent")
        .unwrap()
        .into_iter()
        .filter(|a| a["action"] == "C")
        .collect();
    assert_eq!(acks.len(), 1);
    assert_eq!(
        acks[0]["entity"][1]["what"]["reference"],
        format!("Task/{}", tasks[0]["id"].as_str().unwrap())
    );

    let page = b.get("/patient/zed").await.body;
    assert!(page.contains("called the patient, ate, fine now"));
    assert!(
        !page.contains(&format!("/alert/{issue}/ack")),
        "no second acknowledge form"
    );
    assert_eq!(
        order(&b.get("/").await.body),
        ["amy", "zed"],
        "acknowledged: below the open moderate alert's patient only by name now"
    );

    // A new critical alert brings zed back to the top.
    ingest(
        &env.db,
        "hub-zed",
        "zed",
        &bundle(vec![(
            alert("zed", "glucose-3", "high", "raised", ago(1)),
            "urn:uuid:1",
        )]),
    );
    assert_eq!(order(&b.get("/").await.body), ["zed", "amy"]);
    env.stop().await;
}
