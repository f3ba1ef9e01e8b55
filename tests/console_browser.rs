//! The console in a real browser: headless Chromium driven through chromedriver (WebDriver, the
//! fantoccini client). Logs in, finds the patient with the critical reading at the top of the
//! worklist, opens the patient page (the chart has one dot per reading and the limit band),
//! acknowledges the alert, and sees the patient move down; then opens the fleet page from the
//! header and finds the hub whose heartbeats stopped first, "offline since". Screenshots of the
//! worklist, the patient page and the fleet page are written to `target/tmp/console-*.png`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them when missing); skips
//! without them, except under `CI=true`, where it fails.

#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod console_support;
use console_support::webdriver::{
    chromedriver_or_skip, click, driver, fill, log_in, screenshot, session, text_of, wait_path,
    wait_source,
};
use console_support::*;
use fantoccini::Locator;
use jiff::{SignedDuration, Timestamp};

fn ago(mins: i64) -> Timestamp {
    Timestamp::now() - SignedDuration::from_mins(mins)
}

async fn rows(c: &fantoccini::Client) -> Vec<String> {
    let mut out = Vec::new();
    for e in c.find_all(Locator::Css("tr[data-patient]")).await.unwrap() {
        out.push(e.attr("data-patient").await.unwrap().unwrap());
    }
    out
}

#[tokio::test]
async fn a_clinician_finds_the_critical_patient_first_and_acknowledges() {
    let Some(drv) = chromedriver_or_skip() else {
        return;
    };
    let env = start().await;
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
        "urn:uuid:a".into(),
    ));
    let e: Vec<(serde_json::Value, &str)> =
        e.iter().map(|(r, u)| (r.clone(), u.as_str())).collect();
    ingest(&env.db, "hub-zed", "zed", &bundle(e));
    ingest(
        &env.db,
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
    ingest(
        &env.db,
        "hub-bob",
        "bob",
        &bundle(vec![(glucose("bob", ago(30), 100, None), "urn:uuid:1")]),
    );

    let d = driver(&drv).await;
    let c = session(&d).await;

    // No session: the worklist sends the browser to the login page. A wrong password stays there.
    c.goto(&format!("{}/", env.base)).await.unwrap();
    assert!(c.current_url().await.unwrap().path().ends_with("/login"));
    fill(&c, "user", USER).await;
    fill(&c, "password", "wrong password here").await;
    click(&c, "button[type=submit]").await;
    wait_source(&c, "Wrong user name or password").await;
    log_in(&c, &env.base, USER, PASSWORD).await;
    assert_eq!(rows(&c).await, ["zed", "amy", "bob"]);
    screenshot(&c, "console-worklist").await;

    click(&c, "tr[data-patient=zed] a").await;
    wait_path(&c, "/patient/zed").await;
    let dots = c
        .find_all(Locator::Css("section[data-kind=Glucose] svg circle"))
        .await
        .unwrap();
    assert_eq!(dots.len(), 5, "one dot per reading");
    let (r, g, b) = vitals_hub::clinic::console::patient::BAND_RGB;
    let svg = c
        .find(Locator::Css("section[data-kind=Glucose] svg"))
        .await
        .unwrap()
        .html(false)
        .await
        .unwrap();
    assert!(
        svg.contains(&format!("#{r:02X}{g:02X}{b:02X}")),
        "the limit band"
    );
    // The axis labels are HTML over the SVG: shown without script, in the unit and the zone.
    let xticks = c
        .find_all(Locator::Css("section[data-kind=Glucose] .xtick"))
        .await
        .unwrap();
    assert!(xticks.len() >= 5, "dates on the time axis");
    for t in &xticks {
        assert!(t.is_displayed().await.unwrap(), "a date label is shown");
    }
    assert_eq!(
        text_of(&c, "section[data-kind=Glucose] .axis-unit").await,
        "mg/dL"
    );
    screenshot(&c, "console-patient").await;

    fill(&c, "note", "called, ate, fine now").await;
    click(&c, "form[action$='/ack'] button").await;
    wait_source(&c, "called, ate, fine now").await;
    c.goto(&format!("{}/", env.base)).await.unwrap();
    assert_eq!(
        rows(&c).await,
        ["amy", "zed", "bob"],
        "acknowledged: below the unacknowledged"
    );

    // The fleet page, from the header: bob's hub stopped sending heartbeats 3 hours ago (offline,
    // first row); amy's is current.
    for (hub, p, mins) in [("hub-bob", "bob", 180), ("hub-amy", "amy", 2)] {
        ingest(&env.db, hub, p, &fleet_heartbeat(hub, p, ago(mins)));
    }
    click(&c, "header a[href='/fleet']").await;
    wait_path(&c, "/fleet").await;
    let text = text_of(&c, "#fleet tbody tr:first-child").await;
    assert!(
        text.contains("bob") && text.contains("offline since"),
        "{text}"
    );
    let amy = c
        .find(Locator::XPath(
            "//table[@id='fleet']//tr[.//a[@href='/patient/amy']]",
        ))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(amy.contains("online") && !amy.contains("offline"), "{amy}");
    screenshot(&c, "console-fleet").await;
    c.close().await.unwrap();
    env.stop().await;
}

/// One heartbeat as the hub builds it (`fhir::heartbeat_bundle`).
fn fleet_heartbeat(hub: &str, patient: &str, at: Timestamp) -> serde_json::Value {
    use vitals_hub::fhir::{self, bundle::DeviceStatus, BundleContext, HubStatus};
    let mac = if hub == "hub-bob" {
        "DC:A6:32:00:00:0B"
    } else {
        "DC:A6:32:00:00:0A"
    };
    let info = hub_info(mac, "0.3.1");
    let refs = std::collections::HashMap::new();
    let ctx = BundleContext {
        patient_id: patient,
        hub: &info,
        hub_ref: None,
        device_refs: &refs,
        nonce: 1,
        more_may_follow: false,
    };
    let status = HubStatus {
        updates: Default::default(),
        at: vitals_hub::model::UtcMillis(at.as_millisecond()),
        backlog: 3,
        free_disk_bytes: Some(8 * 1024 * 1024 * 1024),
        cert_days_left: Some(300),
        devices: vec![DeviceStatus {
            ident: fhir::DeviceIdent::BtMac("00:09:1F:80:1A:2B".parse().unwrap()),
            last_seen_secs: Some(900),
            battery_percent: Some(64),
        }],
    };
    fhir::heartbeat_bundle(&ctx, &status).unwrap().json
}
