//! The patient page's device panel and each reading's time quality, over real HTTPS on the
//! built-in store: the hub (from its real heartbeat bundle) with its state, each device's battery
//! and last contact from that heartbeat, the device clock's offset from its coincident time stamp
//! and that its readings were corrected; per reading, whether its time is the device's, corrected,
//! unchecked or the time of reception; every time in the clinic's configured zone. (Against an external FHIR server: tests/console_rest.rs.)

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
use std::collections::HashMap;
use vitals_hub::fhir::bundle::DeviceStatus;
use vitals_hub::fhir::codes::{BTMAC_SYSTEM, CTS_EXT, HUB_FLAG_SYSTEM};
use vitals_hub::fhir::{self, BundleContext, HubStatus};
use vitals_hub::model::UtcMillis;

const P: &str = "p-dev";
const METER: &str = "00-09-1F-80-1A-2B";

fn ago(mins: i64) -> Timestamp {
    Timestamp::now() - SignedDuration::from_mins(mins)
}

fn whole_seconds(t: Timestamp) -> String {
    t.round(jiff::Unit::Second).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_patient_page_shows_devices_clock_correction_and_each_readings_time_quality() {
    // Shown in the clinic's configured zone (one without daylight saving time: +05:30 always).
    let env = start_zoned(Some(
        vitals_hub::clinic::console::zone("Asia/Kolkata").unwrap(),
    ))
    .await;
    let hub = hub_info("DC:A6:32:00:00:09", "0.3.1");
    let refs = HashMap::new();
    let at = ago(2);
    let ctx = BundleContext {
        patient_id: P,
        hub: &hub,
        hub_ref: None,
        device_refs: &refs,
        nonce: 7,
        more_may_follow: false,
    };
    let beat = fhir::heartbeat_bundle(
        &ctx,
        &HubStatus {
            updates: Default::default(),
            at: UtcMillis(at.as_millisecond()),
            backlog: 0,
            free_disk_bytes: Some(3 << 30),
            cert_days_left: Some(200),
            devices: vec![DeviceStatus {
                ident: fhir::DeviceIdent::BtMac(METER.replace('-', ":").parse().unwrap()),
                last_seen_secs: Some(600),
                battery_percent: Some(12),
            }],
        },
    )
    .unwrap()
    .json;
    ingest(&env.db, "hub-9", P, &beat);

    // The meter, its coincident time stamp (device 40 s behind the hub), and four readings.
    let hub_time = ago(90);
    let meter = "urn:uuid:00000000-0000-4000-8000-00000000d001";
    let cts = "urn:uuid:00000000-0000-4000-8000-00000000d002";
    let reading = |mins: i64, v: u32, extra: serde_json::Value, millis: bool| {
        let t = ago(mins);
        let mut o = glucose(P, t, v, None);
        o["effectiveDateTime"] = json!(if millis {
            format!("{}", t.round(jiff::Unit::Millisecond).unwrap())
        } else {
            whole_seconds(t)
        });
        if let serde_json::Value::Object(m) = extra {
            for (k, v) in m {
                o[k] = v;
            }
        }
        o
    };
    let b = bundle(vec![
        (
            json!({ "resourceType": "Device",
                    "identifier": [{ "system": BTMAC_SYSTEM, "value": METER }],
                    "deviceName": [{ "name": "GM-100", "type": "model-name" }] }),
            meter,
        ),
        (
            json!({ "resourceType": "Observation", "status": "final",
                    "code": { "coding": [{ "system": "urn:iso:std:iso:11073:10101", "code": "67975" }] },
                    "subject": { "reference": meter },
                    "effectiveDateTime": whole_seconds(hub_time),
                    "valueDateTime": whole_seconds(hub_time - SignedDuration::from_secs(40)) }),
            cts,
        ),
        (
            reading(
                80,
                101,
                json!({ "extension": [{ "url": CTS_EXT, "valueReference": { "reference": cts } }] }),
                false,
            ),
            "urn:uuid:00000000-0000-4000-8000-00000000d003",
        ),
        (
            reading(
                70,
                102,
                json!({ "interpretation": [{ "coding": [{ "system": HUB_FLAG_SYSTEM, "code": "device_clock_unchecked" }] }] }),
                false,
            ),
            "urn:uuid:00000000-0000-4000-8000-00000000d004",
        ),
        (
            reading(60, 103, json!({}), true),
            "urn:uuid:00000000-0000-4000-8000-00000000d005",
        ),
        (
            reading(50, 104, json!({}), false),
            "urn:uuid:00000000-0000-4000-8000-00000000d006",
        ),
    ]);
    ingest(&env.db, "hub-9", P, &b);

    let mut br = Browser::new(&env);
    assert_eq!(br.login(USER, PASSWORD).await.status, 303);
    let page = br.get(&format!("/patient/{P}")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let panel = page
        .body
        .split("<table id=\"devices\">")
        .nth(1)
        .expect("a device panel")
        .split("</table>")
        .next()
        .unwrap();
    let hub_row = panel.split("<tr").find(|r| r.contains("Hub ")).unwrap();
    assert!(hub_row.contains("heartbeat 2 min ago"), "{hub_row}");
    assert!(hub_row.contains("0.3.1"), "{hub_row}");
    let meter_row = panel
        .split("<tr")
        .find(|r| r.contains(&format!("data-device=\"{METER}\"")))
        .unwrap_or_else(|| panic!("no row for the meter in {panel}"));
    assert!(meter_row.contains("GM-100"), "{meter_row}");
    assert!(meter_row.contains("12 %"), "{meter_row}");
    assert!(
        meter_row.contains("class=\"err\""),
        "a low battery is marked: {meter_row}"
    );
    assert!(
        meter_row.contains("12 min ago"),
        "last seen 10 min before the 2-min-old heartbeat: {meter_row}"
    );
    assert!(meter_row.contains("offset 40 s behind"), "{meter_row}");
    assert!(meter_row.contains("readings corrected"), "{meter_row}");

    // Each reading's time quality, newest first.
    let table = page
        .body
        .split("<table class=\"readings\">")
        .nth(1)
        .unwrap()
        .split("</table>")
        .next()
        .unwrap();
    let rows: Vec<&str> = table.split("<tr>").skip(2).collect();
    assert!(page.body.contains("Times in Asia/Kolkata."));
    assert!(rows.iter().all(|r| r.contains(" +05:30<")), "{table}");
    let quality: Vec<&str> = rows
        .iter()
        .map(|r| {
            [
                "device clock, corrected by the hub",
                "device clock, not checked",
                "time received (no device time)",
                "device clock",
            ]
            .into_iter()
            .find(|q| r.contains(&format!(">{q}<")))
            .unwrap_or("?")
        })
        .collect();
    assert_eq!(
        quality,
        [
            "device clock",
            "time received (no device time)",
            "device clock, not checked",
            "device clock, corrected by the hub"
        ],
        "{table}"
    );
    env.stop().await;
}

#[test]
fn an_unknown_zone_is_refused_naming_the_fix() {
    let e = vitals_hub::clinic::console::zone("Mars/Olympus").unwrap_err();
    assert!(e.contains("IANA name such as Europe/Berlin"), "{e}");
}
