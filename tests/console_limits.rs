//! The alert-limits editor over real HTTPS with a session and its CSRF token (not a browser): a
//! save is a new version read back by the hub's own code; invalid limits (low above high, a unit
//! that does not fit the kind, a critical limit inside the normal band) are refused with the
//! reason on the page and nothing is stored; the hub's acknowledgement ("applied on the hub at …"
//! or "rejected by the hub: reason") is shown.

#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod console_support;
use console_support::*;
use vitals_hub::alerts::AlertRules;
use vitals_hub::clinic::db::ReceiverDb;
use vitals_hub::fhir::limits::{ack_bundle, LimitsAck, LimitsVersion};
use vitals_hub::model::UtcMillis;

/// The editor's form for the starting points with `changes` applied (`glucose.high` → `180`).
fn form(csrf: &str, reason: &str, changes: &[(&str, &str)]) -> Vec<(String, String)> {
    let rules = AlertRules::starting_points();
    let mut f = vec![
        ("csrf".to_owned(), csrf.to_owned()),
        ("reason".to_owned(), reason.to_owned()),
        ("suppress_minutes".to_owned(), "60".to_owned()),
        (
            "extras".to_owned(),
            "[[weight_gain]]\nwindow_hours = 24\ngain = 2\nunit = \"kg\"\n".to_owned(),
        ),
    ];
    for (k, r) in &rules.thresholds {
        let t =
            |l: Option<vitals_hub::alerts::Limit>| l.map(|l| l.0.to_string()).unwrap_or_default();
        for (name, v) in [
            ("unit", r.unit.ucum().to_owned()),
            ("low", t(r.low)),
            ("high", t(r.high)),
            ("critical_low", t(r.critical_low)),
            ("critical_high", t(r.critical_high)),
            ("hysteresis", t(r.hysteresis)),
        ] {
            f.push((format!("{k}.{name}"), v));
        }
    }
    for (k, v) in changes {
        match f.iter_mut().find(|(n, _)| n == k) {
            Some(e) => e.1 = (*v).to_owned(),
            None => f.push(((*k).to_owned(), (*v).to_owned())),
        }
    }
    f
}

async fn post(b: &mut Browser, path: &str, f: &[(String, String)]) -> Page {
    let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    b.post(path, &f).await
}

fn stored_versions(db: &std::path::Path) -> Vec<LimitsVersion> {
    let d = ReceiverDb::open(Some(db)).unwrap();
    d.search_patient_of("ServiceRequest", "zed")
        .unwrap()
        .iter()
        .map(|r| LimitsVersion::from_service_request(r).unwrap())
        .collect()
}

/// The hub `hub-zed` acknowledges `ack` as its uplink sends it: the transaction reaches the
/// clinic's store.
fn acknowledge(db: &std::path::Path, ack: &LimitsAck) {
    let hub = hub_info("02:00:5E:10:00:02", "0.1.0");
    let refs = std::collections::HashMap::new();
    let ctx = vitals_hub::fhir::BundleContext {
        patient_id: "zed",
        hub: &hub,
        hub_ref: None,
        device_refs: &refs,
        nonce: 1,
        more_may_follow: false,
    };
    ingest(db, "hub-zed", "zed", &ack_bundle(&ctx, ack).unwrap().json);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_saved_as_versions_refused_with_reasons_and_acknowledged() {
    let env = start().await;
    let mut b = Browser::new(&env);
    assert_eq!(b.login(USER, PASSWORD).await.status, 303);
    let page = b.get("/patient/zed/limits").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("No version saved"), "{}", page.body);
    let csrf = csrf_of(&page.body);

    // Preview: what a high limit of 180 would have raised over the last 30 days (200 and 120
    // mg/dL two and one days ago): one alert, and nothing saved.
    let day = jiff::SignedDuration::from_hours(24);
    let now = jiff::Timestamp::now();
    let g1 = glucose("zed", now - day * 2, 200, None);
    let g2 = glucose("zed", now - day, 120, None);
    ingest(
        &env.db,
        "hub-zed",
        "zed",
        &bundle(vec![(g1, "urn:uuid:g1"), (g2, "urn:uuid:g2")]),
    );
    let mut f = form(&csrf, "trying", &[("glucose.high", "180")]);
    f.push(("preview".into(), "1".into()));
    let p = post(&mut b, "/patient/zed/limits", &f).await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(
        p.body
            .contains("Preview: 1 alerts raised or escalated over the last 30 days"),
        "{}",
        p.body
    );
    assert!(
        p.body
            .contains("glucose 200 mg/dL above the high limit 180"),
        "{}",
        p.body
    );
    let mut f = form(&csrf, "trying", &[]);
    f.push(("preview".into(), "1".into()));
    let p = post(&mut b, "/patient/zed/limits", &f).await;
    assert!(p.body.contains("Preview: 0 alerts"), "{}", p.body);
    assert!(
        stored_versions(&env.db).is_empty(),
        "a preview saves nothing"
    );

    // The clinician lowers the glucose high limit: version 1.
    let p = post(
        &mut b,
        "/patient/zed/limits",
        &form(&csrf, "new insulin regimen", &[("glucose.high", "180")]),
    )
    .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let v = stored_versions(&env.db);
    assert_eq!(v.len(), 1);
    assert_eq!((v[0].version, v[0].author.as_str()), (1, USER));
    assert_eq!(v[0].reason, "new insulin regimen");
    assert_eq!(
        v[0].rules.thresholds[&vitals_hub::model::Kind::Glucose]
            .high
            .unwrap()
            .0
            .to_string(),
        "180"
    );
    assert_eq!(v[0].rules.weight_gain.len(), 1);
    let page = b.get("/patient/zed/limits").await;
    assert!(page.body.contains("Version 1 by dr.jones"), "{}", page.body);
    assert!(
        page.body.contains("The hub has not acknowledged"),
        "{}",
        page.body
    );

    // Refusals, each with its reason on the page; nothing stored.
    for (changes, reason) in [
        (
            vec![("glucose.low", "300"), ("glucose.high", "180")],
            "alerts.thresholds.glucose: low 300 must be below high 180",
        ),
        (
            vec![("glucose.unit", "kg")],
            "alerts.thresholds.glucose: unit kg does not measure glucose; use mg/dL",
        ),
        (
            vec![("glucose.critical_low", "80")],
            "alerts.thresholds.glucose: critical_low 80 must be below low 70",
        ),
        (
            vec![("glucose.high", "high")],
            "glucose high: &quot;high&quot; is not a number",
        ),
    ] {
        let p = post(&mut b, "/patient/zed/limits", &form(&csrf, "try", &changes)).await;
        assert_eq!(p.status, 422, "{reason}: {}", p.body);
        assert!(p.body.contains("Not saved"), "{}", p.body);
        assert!(p.body.contains(reason), "{reason}:\n{}", p.body);
        // The form comes back as the clinician typed it, not as the version in force.
        for (field, typed) in &changes {
            assert_eq!(
                attr_of_input(&p.body, field).as_deref(),
                Some(*typed),
                "{field} keeps what was typed"
            );
        }
        assert_eq!(attr_of_input(&p.body, "reason").as_deref(), Some("try"));
    }
    let p = post(&mut b, "/patient/zed/limits", &form(&csrf, "", &[])).await;
    assert_eq!(p.status, 422);
    assert!(p.body.contains("say why the limits change"), "{}", p.body);
    // Without the session's CSRF token: refused.
    let p = post(&mut b, "/patient/zed/limits", &form("0000", "x", &[])).await;
    assert_eq!(p.status, 403);
    assert_eq!(stored_versions(&env.db).len(), 1);

    // A second save is version 2; the previous one stays listed.
    let p = post(
        &mut b,
        "/patient/zed/limits",
        &form(&csrf, "diuretic changed", &[("glucose.high", "200")]),
    )
    .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let page = b.get("/patient/zed/limits").await;
    assert!(page.body.contains("Version 2 by dr.jones"), "{}", page.body);
    assert!(page.body.contains("new insulin regimen"), "{}", page.body);

    // The hub's acknowledgements, as its uplink sends them.
    acknowledge(
        &env.db,
        &LimitsAck {
            patient_id: "zed".into(),
            version: 1,
            at: UtcMillis::parse_rfc3339("2026-12-07T08:00:05Z").unwrap(),
            rejected: None,
            takes_effect: None,
            resource_id: None,
        },
    );
    let page = b.get("/patient/zed/limits").await;
    assert!(
        page.body
            .contains("Version 1 applied on the hub at 2026-12-07T08:00:05.000+00:00"),
        "{}",
        page.body
    );
    acknowledge(
        &env.db,
        &LimitsAck {
            patient_id: "zed".into(),
            version: 2,
            at: UtcMillis::parse_rfc3339("2026-12-07T09:00:00Z").unwrap(),
            rejected: Some(
                "version 2 is for another patient; the hub keeps the limits in force".into(),
            ),
            takes_effect: None,
            resource_id: None,
        },
    );
    let page = b.get("/patient/zed/limits").await;
    assert!(
        page.body.contains("Version 2 rejected by the hub at"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("is for another patient"),
        "{}",
        page.body
    );
    env.stop().await;
}

/// The value of `name="…"` in the first element carrying it in `html`.
fn attr<'a>(html: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("{name}=\"");
    let i = html.find(&key)? + key.len();
    Some(&html[i..i + html[i..].find('"')?])
}

fn glucose_section(html: &str) -> &str {
    let i = html
        .find("data-kind=\"Glucose\"")
        .expect("a glucose section");
    let rest = &html[i..];
    &rest[..rest.find("</section>").unwrap()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patient_page_bands_are_the_version_in_force_in_the_chart_unit_with_axis_labels() {
    let env = start().await;
    let mut b = Browser::new(&env);
    assert_eq!(b.login(USER, PASSWORD).await.status, 303);
    let day = jiff::SignedDuration::from_hours(24);
    let now = jiff::Timestamp::now();
    // 170 mg/dL flagged H by the hub (under its limits then); 100 unflagged.
    ingest(
        &env.db,
        "hub-zed",
        "zed",
        &bundle(vec![
            (glucose("zed", now - day * 3, 170, Some("H")), "urn:uuid:g1"),
            (glucose("zed", now - day, 100, None), "urn:uuid:g2"),
        ]),
    );

    // No version saved: the starting points, and the page says so.
    let before = env.console().fhir_requests();
    let p = b.get("/patient/zed").await;
    let requests = env.console().fhir_requests() - before;
    assert_eq!(p.status, 200, "{}", p.body);
    let g = glucose_section(&p.body);
    assert_eq!(attr(g, "data-band-unit"), Some("mg/dL"), "{g}");
    assert_eq!(attr(g, "data-band-low"), Some("70"));
    assert_eq!(attr(g, "data-band-high"), Some("250"));
    assert_eq!(attr(g, "data-critical-low"), Some("54"));
    assert_eq!(attr(g, "data-critical-high"), Some("400"));
    assert_eq!(attr(g, "data-band-version"), None);
    assert!(
        g.contains("the hub's documented starting limits: no alert-limits version is saved"),
        "{g}"
    );
    // The axis labels: values in the unit, dates in the clinic's zone, in HTML over the SVG.
    assert!(g.contains("<span class=\"axis-unit\">mg/dL</span>"), "{g}");
    assert!(g.matches("class=\"ytick\"").count() >= 3, "{g}");
    assert!(g.matches("class=\"xtick\"").count() >= 5, "{g}");
    let today = now
        .to_zoned_datetime(jiff::tz::TimeZone::system())
        .strftime("%b %-d")
        .to_string();
    assert!(
        g.contains(&format!(">{today}</span>")),
        "today's date: {today}: {g}"
    );
    assert!(g.contains("<figcaption"), "{g}");

    // A version in mmol/L: the bands are its limits converted exactly into the chart's mg/dL.
    let csrf = csrf_of(&b.get("/patient/zed/limits").await.body);
    let f = form(
        &csrf,
        "tighter, in mmol/L",
        &[
            ("glucose.unit", "mmol/L"),
            ("glucose.low", "4"),
            ("glucose.high", "10"),
            ("glucose.critical_low", "3"),
            ("glucose.critical_high", "20"),
            ("glucose.hysteresis", "0.2"),
        ],
    );
    let saved = post(&mut b, "/patient/zed/limits", &f).await;
    assert_eq!(saved.status, 303, "{}", saved.body);
    let before = env.console().fhir_requests();
    let p = b.get("/patient/zed").await;
    assert_eq!(
        env.console().fhir_requests() - before,
        requests,
        "the same fixed number of requests with a version"
    );
    let g = glucose_section(&p.body);
    assert_eq!(attr(g, "data-band-unit"), Some("mg/dL"), "{g}");
    // 1 mmol/L = 18.0156 mg/dL (src/alerts/units.rs).
    assert_eq!(attr(g, "data-band-low"), Some("72.0624"));
    assert_eq!(attr(g, "data-band-high"), Some("180.156"));
    assert_eq!(attr(g, "data-critical-low"), Some("54.0468"));
    assert_eq!(attr(g, "data-critical-high"), Some("360.312"));
    assert_eq!(attr(g, "data-band-version"), Some("1"));
    assert!(
        g.contains("this patient's alert limits version 1, effective"),
        "{g}"
    );
    assert!(!g.contains("starting limits"), "{g}");
    // The marks stay what the hub sent: 170 is under the new high but keeps its H.
    assert!(g.contains("170 mg/dL</td><td class=\"err\">H</td>"), "{g}");
    env.stop().await;
}

/// Each refusal of the issue, made by the hub's own applier (the code the uplink runs), reaches
/// the clinic as the hub acknowledges it and is shown on the limits page with its reason: invalid
/// limits, another patient's version, a stale version — and a resource with no readable version,
/// keyed by its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_refusal_by_the_hub_is_shown_in_the_console_with_its_reason() {
    use vitals_hub::alerts::Limit;
    use vitals_hub::model::{Decimal, Kind};
    use vitals_hub::store::{KekSource, Store, StoreConfig};
    use vitals_hub::uplink::limits::{in_force, Applier, Offer};

    let env = start().await;
    let mut b = Browser::new(&env);
    assert_eq!(b.login(USER, PASSWORD).await.status, 303);
    let hub_dir = tempfile::tempdir().unwrap();
    let mut sc = StoreConfig::new(hub_dir.path());
    sc.kek = KekSource::resolve(hub_dir.path(), None);
    sc.patient_id = Some("zed".into());
    let store = Store::open(sc, std::sync::Arc::new(vitals_hub::model::SystemClock))
        .await
        .unwrap();
    let hub_rules = AlertRules::starting_points();
    let mut applier = Applier::new(
        store.clone(),
        None,
        hub_rules.clone(),
        "zed".into(),
        in_force(&store, &hub_rules).await.unwrap(),
    );
    let version = |patient: &str, v: u32, low: i64, high: i64| {
        let mut rules = AlertRules::starting_points();
        let g = rules.thresholds.get_mut(&Kind::Glucose).unwrap();
        g.low = Some(Limit(Decimal::new(low, 0)));
        g.high = Some(Limit(Decimal::new(high, 0)));
        LimitsVersion {
            patient_id: patient.into(),
            version: v,
            rules,
            effective: UtcMillis(1_764_547_200_000),
            authored: UtcMillis(1_764_543_600_000),
            author: "dr.jones".into(),
            reason: "test".into(),
        }
        .to_service_request()
        .unwrap()
    };
    // Offered at successive minutes; what the hub acknowledges goes to the clinic; the page.
    let mut minute = 0;
    let mut offer = async |b: &mut Browser, sr: serde_json::Value| -> (Offer, String) {
        minute += 1;
        let o = applier
            .offer(&sr, UtcMillis(1_796_600_000_000 + minute * 60_000))
            .await
            .unwrap();
        let ack = applier.ack().expect("an acknowledgement is due");
        acknowledge(&env.db, &ack);
        let page = b.get("/patient/zed/limits").await;
        assert_eq!(page.status, 200);
        let i = page
            .body
            .find("id=\"hub-ack\"")
            .expect("the hub's acknowledgement");
        let shown = page.body[i..page.body[i..].find("</p>").unwrap() + i].to_owned();
        (o, shown)
    };

    let (o, shown) = offer(&mut b, version("zed", 2, 70, 180)).await;
    assert_eq!(o, Offer::Applied { version: 2 });
    assert!(shown.contains("Version 2 applied on the hub at"), "{shown}");

    // Invalid limits; another patient's version; a stale version (1, older than version 2 in
    // force).
    for (sr, v, reason) in [
        (
            version("zed", 3, 300, 180),
            3,
            "low 300 must be below high 180",
        ),
        (version("amy", 4, 70, 180), 4, "another patient"),
        (
            version("zed", 1, 70, 200),
            1,
            "version 1 is not newer than version 2",
        ),
    ] {
        let (o, shown) = offer(&mut b, sr).await;
        assert!(
            matches!(o, Offer::Refused { version: Some(n), .. } if n == v),
            "{o:?}"
        );
        assert!(
            shown.contains(&format!("Version {v} rejected by the hub at"))
                && shown.contains(reason),
            "{shown}"
        );
    }
    // No readable version (the limits extension unparseable): refused and reported, by its id.
    let mut broken = version("zed", 5, 70, 180);
    broken["id"] = serde_json::json!("sr-broken-1");
    broken["extension"] = serde_json::json!([{ "url": "https://vitals-hub.invalid/fhir/StructureDefinition/alert-limits", "valueString": "x" }]);
    let (o, shown) = offer(&mut b, broken).await;
    assert!(matches!(o, Offer::Refused { version: None, .. }), "{o:?}");
    assert!(
        shown.contains("A limits resource with no readable version was rejected by the hub at")
            && shown.contains("ServiceRequest/sr-broken-1: "),
        "{shown}"
    );
    // The store closes once no handle is left.
    drop(applier);
    store.close().await;
    env.stop().await;
}

/// The `value` of the input named `name` in `html`.
fn attr_of_input(html: &str, name: &str) -> Option<String> {
    let i = html.find(&format!("name=\"{name}\""))?;
    let tag = &html[i..i + html[i..].find('>')?];
    let v = tag.find("value=\"")? + 7;
    Some(tag[v..v + tag[v..].find('"')?].to_owned())
}
