//! Patient display labels over real HTTPS on the built-in store: an admin sets one on the
//! patient page (the Patient's `name[0].text`), the worklist and the patient page show it beside
//! the id, the change is an AuditEvent; a clinician, a form without the CSRF token and a bad label
//! are refused and change nothing; an empty label removes it. (Against an external FHIR server:
//! tests/console_rest.rs.)

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
use vitals_hub::clinic::console::users::{Role, UserStore};
use vitals_hub::clinic::db::ReceiverDb;

const ADMIN: &str = "admin.kim";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_labels_a_patient_and_everyone_sees_it_beside_the_id() {
    let env = start().await;
    UserStore::open(&env.db)
        .unwrap()
        .add(ADMIN, Role::Admin, PASSWORD)
        .unwrap();
    let at = Timestamp::now() - SignedDuration::from_mins(20);
    ingest(
        &env.db,
        "hub-a",
        "pat-7",
        &bundle(vec![(glucose("pat-7", at, 101, None), "urn:uuid:1")]),
    );

    // A clinician sees no label form, and is refused when posting one anyway.
    let mut clin = Browser::new(&env);
    assert_eq!(clin.login(USER, PASSWORD).await.status, 303);
    let page = clin.get("/patient/pat-7").await;
    assert_eq!(page.status, 200);
    assert!(
        !page.body.contains("/label\""),
        "no label form for a clinician"
    );
    let csrf = csrf_of(&page.body);
    let r = clin
        .post(
            "/patient/pat-7/label",
            &[("csrf", &csrf), ("label", "J.D. room 4")],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("Only an admin"));

    let mut admin = Browser::new(&env);
    assert_eq!(admin.login(ADMIN, PASSWORD).await.status, 303);
    let page = admin.get("/patient/pat-7").await;
    assert!(page.body.contains("action=\"/patient/pat-7/label\""));
    let csrf = csrf_of(&page.body);
    // Without the CSRF token: refused.
    let r = admin
        .post("/patient/pat-7/label", &[("label", "J.D. room 4")])
        .await;
    assert_eq!(r.status, 403);
    // Too long, or with a control character: 400 naming the fix.
    let long = "x".repeat(65);
    for bad in [long.as_str(), "two\nlines"] {
        let r = admin
            .post("/patient/pat-7/label", &[("csrf", &csrf), ("label", bad)])
            .await;
        assert_eq!(r.status, 400, "{bad}");
        assert!(r.body.contains("Label not saved"));
    }
    let r = admin
        .post(
            "/patient/pat-7/label",
            &[("csrf", &csrf), ("label", "  J.D. <room 4>  ")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location.as_deref(), Some("/patient/pat-7"));

    // Everyone sees it, escaped, beside the id.
    let w = clin.get("/").await;
    assert!(
        w.body
            .contains("<span class=\"label\">J.D. &lt;room 4&gt;</span>"),
        "{}",
        w.body
    );
    let p = clin.get("/patient/pat-7").await;
    assert!(p.body.contains("J.D. &lt;room 4&gt;"));

    // Stored as the clinic's Patient, and audited as an update by the admin.
    let db = ReceiverDb::open(Some(&env.db)).unwrap();
    let stored = db.stored_patient("pat-7").unwrap().unwrap();
    assert_eq!(stored["name"][0]["text"], "J.D. <room 4>");
    let audits = db.resources("AuditEvent").unwrap();
    let label_audits: Vec<_> = audits.iter().filter(|e| e["action"] == "U").collect();
    assert_eq!(label_audits.len(), 1, "the refused attempts wrote nothing");
    assert_eq!(
        label_audits[0]["agent"][0]["who"]["identifier"]["value"],
        ADMIN
    );
    assert_eq!(
        label_audits[0]["entity"][0]["what"]["reference"],
        "Patient/pat-7"
    );

    // An empty label removes it.
    let r = admin
        .post("/patient/pat-7/label", &[("csrf", &csrf), ("label", " ")])
        .await;
    assert_eq!(r.status, 303);
    let w = clin.get("/").await;
    assert!(!w.body.contains("class=\"label\""));
    assert!(ReceiverDb::open(Some(&env.db))
        .unwrap()
        .stored_patient("pat-7")
        .unwrap()
        .unwrap()
        .get("name")
        .is_none());
    env.stop().await;
}
