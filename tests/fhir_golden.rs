#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! Golden bundles for every shape the hub produces, checked against `fixtures/fhir/*.json` and
//! against the PHD IG rules that no offline validator checks (fhir-phd.md "Resource rules").
//! `UPDATE_GOLDEN=1 cargo test --test fhir_golden` rewrites the fixtures. Every bundle is also
//! written to `target/fhir-bundles/` for `.ci/validate_fhir.py`.

use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use vitals_hub::fhir::bundle::{AlertInput, DeviceStatus, Item};
use vitals_hub::fhir::codes;
use vitals_hub::fhir::{
    self, BundleContext, DeviceClass, DeviceClock, HubInfo, HubStatus, Interpretation,
    PhdDeviceInfo, ReadingInput,
};
use vitals_hub::model::{
    Decimal, Flag, GlucoseSpecimen, Kind, LocalDateTime, Reading, Special, Unit, UtcMillis,
    Value as V,
};

fn hub() -> HubInfo {
    HubInfo {
        mac: "DC:A6:32:12:34:56".parse().unwrap(),
        manufacturer: "Example RPM Ltd".into(),
        model: "vitals-hub".into(),
        software_version: "0.1.0".into(),
        ntp: true,
        utc_offset_minutes: 0,
        zone: None,
    }
}

fn cuff() -> PhdDeviceInfo {
    PhdDeviceInfo {
        key: "dev-cuff".into(),
        system_id: Some("00-09-1F-FF-FE-80-1A-2B".parse().unwrap()),
        bt_mac: Some("00:09:1F:80:1A:2B".parse().unwrap()),
        manufacturer: Some("Example Cuff Co".into()),
        model: Some("BP-200".into()),
        serial: Some("5B2000417".into()),
        firmware: Some("1.04".into()),
        hardware: None,
        software: None,
        class: DeviceClass::BloodPressure,
        clock: DeviceClock::Synchronized {
            utc_offset_minutes: 0,
        },
    }
}

fn meter() -> PhdDeviceInfo {
    PhdDeviceInfo {
        key: "dev-meter".into(),
        system_id: Some("00-60-19-FF-FE-4B-2C-1D".parse().unwrap()),
        bt_mac: Some("00:60:19:4B:2C:1D".parse().unwrap()),
        manufacturer: Some("Example Meter Co".into()),
        model: Some("GM-100".into()),
        serial: None,
        firmware: Some("2.1".into()),
        hardware: None,
        software: None,
        class: DeviceClass::Glucose,
        clock: DeviceClock::Synchronized {
            utc_offset_minutes: 0,
        },
    }
}

fn reading(kind: Kind, v: V, unit: Unit, t: Option<LocalDateTime>) -> Reading {
    let mut r = Reading::new(kind, v, unit);
    r.device_time = t;
    r
}

fn num(m: i64, e: i16) -> V {
    V::Number(Decimal::new(m, e))
}

const RX: UtcMillis = UtcMillis(1_741_940_200_000);

fn ctx<'a>(
    hub: &'a HubInfo,
    refs: &'a HashMap<String, String>,
    hub_ref: Option<&'a str>,
) -> BundleContext<'a> {
    BundleContext {
        patient_id: "RPM-000123",
        hub,
        hub_ref,
        device_refs: refs,
        nonce: 0x0b6b_3c1e_5f0a_4d8e,
        more_may_follow: false,
    }
}

fn input<'a>(tag: i64, device: &'a PhdDeviceInfo, reading: &'a Reading) -> ReadingInput<'a> {
    ReadingInput {
        tag,
        device,
        reading,
        received_at: RX,
        test_data: false,
        interpretation: None,
    }
}

fn golden(name: &str, v: &Value) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let text = serde_json::to_string_pretty(v).unwrap() + "\n";
    let out = root.join("target/fhir-bundles");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join(format!("{name}.json")), &text).unwrap();
    let path = root.join("fixtures/fhir").join(format!("{name}.json"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() || !path.exists() {
        std::fs::write(&path, &text).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        text,
        want,
        "{name} differs from {}; rerun with UPDATE_GOLDEN=1 if intended",
        path.display()
    );
}

/// The IG rules from fhir-phd.md, over every Observation and Device of a bundle.
fn check_rules(b: &Value) {
    assert_eq!(b["resourceType"], "Bundle");
    assert_eq!(b["type"], "transaction");
    let entries = b["entry"].as_array().unwrap();
    assert!(entries.len() <= fhir::MAX_ENTRIES);
    let urls: BTreeSet<&str> = entries
        .iter()
        .map(|e| e["fullUrl"].as_str().unwrap())
        .collect();
    assert_eq!(urls.len(), entries.len(), "fullUrls are unique");
    for e in entries {
        let r = &e["resource"];
        let req = &e["request"];
        assert_eq!(req["method"], "POST");
        let ine = req["ifNoneExist"].as_str().unwrap();
        assert!(ine.starts_with("identifier="), "{ine}");
        assert!(
            !ine.contains('+') && !ine.contains('|') && !ine.contains(' '),
            "{ine}"
        );
        let local_ref = |v: &Value| {
            let s = v["reference"].as_str().unwrap();
            assert!(
                urls.contains(s) || s.starts_with("Device/") || s.starts_with("Patient/"),
                "dangling {s}"
            );
        };
        match r["resourceType"].as_str().unwrap() {
            "Observation" => {
                assert!(["final", "preliminary"].contains(&r["status"].as_str().unwrap()));
                let cats: Vec<&str> = r["category"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|c| c["coding"].as_array().unwrap())
                    .map(|c| c["code"].as_str().unwrap())
                    .collect();
                assert!(cats.contains(&"phd"), "category phd");
                let id = &r["identifier"][0];
                let hub_status = id["system"] == codes::HUB_STATUS_SYSTEM;
                if !hub_status {
                    assert_eq!(id["system"], codes::OBS_IDENTIFIER_SYSTEM);
                    let codings = r["code"]["coding"].as_array().unwrap();
                    assert_eq!(codings[0]["system"], codes::MDC, "MDC coding first");
                    if cats.contains(&"vital-signs") {
                        assert!(
                            codings.iter().any(|c| c["system"] == codes::LOINC),
                            "vital sign has LOINC"
                        );
                    }
                    let ext = r["extension"].as_array().unwrap();
                    let gw: Vec<_> = ext
                        .iter()
                        .filter(|x| x["url"] == codes::GATEWAY_DEVICE_EXT)
                        .collect();
                    assert_eq!(gw.len(), 1, "gatewayDevice 1..1");
                    local_ref(&gw[0]["valueReference"]);
                    local_ref(&r["device"]);
                }
                local_ref(&r["subject"]);
                let value = r.get("valueQuantity");
                let absent = r.get("dataAbsentReason");
                let comps = r.get("component");
                if let Some(c) = comps {
                    assert!(value.is_none(), "compound has no value[x]");
                    for comp in c.as_array().unwrap() {
                        assert_eq!(comp["code"]["coding"][0]["system"], codes::MDC);
                        if let Some(q) = comp.get("valueQuantity") {
                            assert_eq!(q["system"], codes::UCUM);
                            assert!(q["value"].is_number() && q["code"].is_string());
                        } else {
                            assert!(comp.get("dataAbsentReason").is_some());
                        }
                    }
                } else if let Some(q) = value {
                    assert!(absent.is_none());
                    assert_eq!(q["system"], codes::UCUM);
                    assert!(q["value"].is_number() && q["code"].is_string());
                } else {
                    assert!(
                        absent.is_some()
                            || r.get("valueDateTime").is_some()
                            || r.get("valueString").is_some()
                    );
                }
                assert!(r.get("effectiveDateTime").is_some());
            }
            "Device" => {
                let profile = r["meta"]["profile"][0].as_str().unwrap();
                let ty = r["type"]["coding"][0]["code"].as_str().unwrap();
                if profile.ends_with("PhgDevice") {
                    assert_eq!(ty, "531981");
                } else {
                    assert_eq!(ty, "65573");
                    assert!(r["manufacturer"].is_string() && r["modelNumber"].is_string());
                }
                assert!(!r["identifier"].as_array().unwrap().is_empty());
                assert!(!r["specialization"].as_array().unwrap().is_empty());
                assert!(!r["version"].as_array().unwrap().is_empty());
                assert!(r.get("parent").is_none());
            }
            "Communication" => local_ref(&r["subject"]),
            "DetectedIssue" => {
                local_ref(&r["patient"]);
                assert_eq!(r["identifier"][0]["system"], codes::ALERT_IDENTIFIER_SYSTEM);
                assert!(["high", "moderate", "low"].contains(&r["severity"].as_str().unwrap()));
                assert!(r["identifiedDateTime"].is_string() && r["code"]["coding"].is_array());
                for i in r["implicated"].as_array().into_iter().flatten() {
                    assert_eq!(i["identifier"]["system"], codes::OBS_IDENTIFIER_SYSTEM);
                }
            }
            other => panic!("unexpected resource {other}"),
        }
    }
}

fn t(h: u8, m: u8, s: u8) -> Option<LocalDateTime> {
    Some(LocalDateTime::new(2025, 3, 14, h, m, s).unwrap())
}

#[test]
fn bp_and_glucose_first_upload_matches_the_design_example() {
    let (hub, cuff, meter) = (hub(), cuff(), meter());
    let refs = HashMap::new();
    let rs = [
        reading(Kind::Systolic, num(128, 0), Unit::MmHg, t(8, 15, 30)),
        reading(Kind::Diastolic, num(82, 0), Unit::MmHg, t(8, 15, 30)),
        reading(
            Kind::MeanArterialPressure,
            num(97, 0),
            Unit::MmHg,
            t(8, 15, 30),
        ),
        reading(Kind::Glucose, num(104, 0), Unit::MgPerDl, t(8, 21, 2)),
    ];
    let items: Vec<Item> = vec![
        Item::Reading(input(1, &cuff, &rs[0])),
        Item::Reading(input(2, &cuff, &rs[1])),
        Item::Reading(input(3, &cuff, &rs[2])),
        Item::Reading(ReadingInput {
            received_at: UtcMillis(RX.0 + 1),
            ..input(4, &meter, &rs[3])
        }),
    ];
    let b = fhir::build(&ctx(&hub, &refs, None), &items);
    assert_eq!(b.consumed, 4);
    assert!(b.unmapped.is_empty());
    check_rules(&b.json);
    let e = b.json["entry"].as_array().unwrap();
    assert_eq!(e.len(), 5, "PHG, cuff, BP, meter, glucose");
    let bp = &e[2]["resource"];
    assert_eq!(
        bp["identifier"][0]["value"],
        "00091FFFFE801A2B-RPM-000123-150020-795255330"
    );
    assert_eq!(bp["component"].as_array().unwrap().len(), 3);
    assert_eq!(bp["effectiveDateTime"], "2025-03-14T08:15:30+00:00");
    assert_eq!(
        e[4]["resource"]["identifier"][0]["value"],
        "006019FFFE4B2C1D-RPM-000123-160184-795255662"
    );
    assert_eq!(
        e[0]["resource"]["identifier"][0]["value"],
        "DC-A6-32-FF-FE-12-34-56"
    );
    assert_eq!(b.entries[2].tags, vec![1, 2, 3]);
    // The pure identifier / stable-key builders agree with the bundle.
    let id = fhir::reading_identifier(&cuff, "RPM-000123", &rs[1], RX).unwrap();
    assert_eq!(bp["identifier"][0]["value"], id.value());
    let keys: BTreeSet<String> = rs[..3]
        .iter()
        .map(|r| fhir::stable_key(&cuff, "RPM-000123", r, RX).unwrap())
        .collect();
    assert_eq!(keys.len(), 3, "BP components get distinct store keys");
    assert!(keys.contains("00091FFFFE801A2B-RPM-000123-150020-795255330-150022"));
    golden("bundle-bp-glucose-first-upload", &b.json);
}

#[test]
fn later_upload_references_known_devices_and_bp_with_pulse() {
    let (hub, cuff) = (hub(), cuff());
    let refs: HashMap<String, String> = [("dev-cuff".to_string(), "Device/12".to_string())].into();
    let mut pulse = reading(Kind::PulseRate, num(72, 0), Unit::PerMin, t(8, 15, 30));
    pulse.flags.insert(Flag::IrregularPulse);
    let rs = [
        reading(Kind::Systolic, num(1284, -1), Unit::MmHg, t(8, 15, 30)),
        reading(Kind::Diastolic, num(82, 0), Unit::MmHg, t(8, 15, 30)),
        pulse,
    ];
    let items: Vec<Item> = rs
        .iter()
        .enumerate()
        .map(|(i, r)| Item::Reading(input(i as i64, &cuff, r)))
        .collect();
    let b = fhir::build(&ctx(&hub, &refs, Some("Device/11")), &items);
    check_rules(&b.json);
    let e = b.json["entry"].as_array().unwrap();
    assert_eq!(e.len(), 2, "BP compound + pulse, no device entries");
    assert_eq!(e[1]["resource"]["code"]["coding"][0]["code"], "149546");
    assert_eq!(e[1]["resource"]["code"]["coding"][1]["code"], "8867-4");
    assert_eq!(e[1]["resource"]["valueQuantity"]["code"], "/min");
    assert_eq!(
        e[0]["resource"]["component"][0]["valueQuantity"]["value"],
        json!(128.4)
    );
    assert_eq!(e[0]["resource"]["device"]["reference"], "Device/12");
    assert_eq!(
        e[0]["resource"]["extension"][0]["valueReference"]["reference"],
        "Device/11"
    );
    golden("bundle-bp-pulse-later-upload", &b.json);
}

#[test]
fn specials_flags_test_data_and_interpretation() {
    let (hub, meter) = (hub(), meter());
    let refs = HashMap::new();
    let mut hi = reading(Kind::Glucose, num(63, -1), Unit::MmolPerL, t(9, 0, 0));
    hi.specimen = Some(GlucoseSpecimen::CapillaryWholeBlood);
    let rs = [
        reading(
            Kind::Glucose,
            V::Special(Special::Nan),
            Unit::MgPerDl,
            t(8, 30, 0),
        ),
        reading(Kind::Glucose, num(45, 0), Unit::MgPerDl, t(8, 40, 0)),
        hi,
    ];
    let items = vec![
        Item::Reading(input(1, &meter, &rs[0])),
        Item::Reading(ReadingInput {
            test_data: true,
            ..input(2, &meter, &rs[1])
        }),
        Item::Reading(ReadingInput {
            interpretation: Some(Interpretation::High),
            ..input(3, &meter, &rs[2])
        }),
    ];
    let b = fhir::build(&ctx(&hub, &refs, Some("Device/11")), &items);
    check_rules(&b.json);
    let e = b.json["entry"].as_array().unwrap();
    let nan = &e[1]["resource"];
    assert!(nan.get("valueQuantity").is_none());
    assert_eq!(nan["dataAbsentReason"]["coding"][0]["code"], "not-a-number");
    assert_eq!(e[2]["resource"]["meta"]["security"][0]["code"], "HTEST");
    assert_eq!(
        e[3]["resource"]["interpretation"][0]["coding"][0]["code"],
        "H"
    );
    assert_eq!(e[3]["resource"]["code"]["coding"][1]["code"], "14743-9");
    assert_eq!(e[1]["resource"]["status"], "final");
    let mut early = reading(Kind::Spo2, num(97, 0), Unit::Percent, t(9, 5, 0));
    early.flags.insert(Flag::EarlyEstimate);
    let mut ox = meter.clone();
    ox.class = DeviceClass::PulseOximeter;
    let b2 = fhir::build(
        &ctx(&hub, &refs, Some("Device/11")),
        &[Item::Reading(input(5, &ox, &early))],
    );
    check_rules(&b2.json);
    let o = &b2.json["entry"][1]["resource"];
    assert_eq!(o["status"], "preliminary");
    assert_eq!(
        o["interpretation"][0]["coding"][0]["code"],
        "early-indication"
    );
    golden("bundle-glucose-nan-test-interpretation", &b.json);
}

#[test]
fn unsynchronised_clock_gets_a_coincident_timestamp_observation() {
    let hub = hub();
    let mut meter = meter();
    // The meter's clock read 08:00:00 when the hub's read 08:02:10Z: shift by +130 s.
    meter.clock = DeviceClock::Coincident {
        device: LocalDateTime::new(2025, 3, 14, 8, 0, 0).unwrap(),
        hub: UtcMillis(1_741_939_330_000),
    };
    let refs = HashMap::new();
    let rs = [reading(
        Kind::Glucose,
        num(104, 0),
        Unit::MgPerDl,
        t(7, 50, 0),
    )];
    let items = vec![Item::Reading(input(1, &meter, &rs[0]))];
    let b = fhir::build(&ctx(&hub, &refs, Some("Device/11")), &items);
    check_rules(&b.json);
    let e = b.json["entry"].as_array().unwrap();
    assert_eq!(e.len(), 3, "meter, CTS, glucose");
    let cts = &e[1]["resource"];
    assert_eq!(cts["code"]["coding"][0]["code"], "67975");
    assert_eq!(cts["valueDateTime"], "2025-03-14T08:00:00+00:00");
    assert_eq!(cts["effectiveDateTime"], "2025-03-14T08:02:10.000+00:00");
    let obs = &e[2]["resource"];
    assert_eq!(obs["effectiveDateTime"], "2025-03-14T07:52:10+00:00");
    // The identifier keeps the device's own timestamp, not the corrected one.
    let devt = LocalDateTime::new(2025, 3, 14, 7, 50, 0)
        .unwrap()
        .to_epoch_seconds()
        - fhir::EPOCH_2000_SECS;
    assert!(obs["identifier"][0]["value"]
        .as_str()
        .unwrap()
        .ends_with(&devt.to_string()));
    assert_eq!(obs["extension"][1]["url"], codes::CTS_EXT);
    assert_eq!(
        obs["extension"][1]["valueReference"]["reference"],
        e[1]["fullUrl"]
    );
    golden("bundle-unsynchronised-clock-cts", &b.json);
}

#[test]
fn every_kind_maps_or_is_named_unmapped_and_bundles_are_bounded() {
    let hub = hub();
    let mut dev = meter();
    dev.class = DeviceClass::Generic;
    dev.system_id = None; // BT MAC only: 12-hex device part
    let refs = HashMap::new();
    let rs: Vec<Reading> = (0..120)
        .map(|i| {
            let k = Kind::ALL[i % Kind::ALL.len()];
            let mut r = reading(k, num(i as i64, 0), Unit::Percent, None);
            r.sequence = Some(i as u16);
            r
        })
        .collect();
    let items: Vec<Item> = rs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            Item::Reading(ReadingInput {
                received_at: UtcMillis(RX.0 + i as i64),
                ..input(i as i64, &dev, r)
            })
        })
        .collect();
    let mut start = 0;
    let mut seen = BTreeSet::new();
    let mut unmapped = 0;
    while start < items.len() {
        let b = fhir::build(&ctx(&hub, &refs, Some("Device/11")), &items[start..]);
        assert!(b.consumed > 0);
        check_rules(&b.json);
        for e in &b.entries {
            if e.kind == fhir::EntryKind::Observation {
                assert!(e.identifier.starts_with("0060194B2C1D-RPM-000123-"));
                assert!(seen.insert(e.identifier.clone()), "identifiers unique");
            }
        }
        unmapped += b.unmapped.len();
        start += b.consumed;
    }
    assert!(
        unmapped > 0,
        "cuff pressure / energy expended are reported, not dropped"
    );
}

#[test]
fn alert_and_heartbeat_bundles() {
    let hub = hub();
    let refs = HashMap::new();
    let payload = json!({"rule": "glucose_low", "severity": "high"});
    let items = vec![Item::Alert(AlertInput {
        tag: 9,
        payload: &payload,
        stable_key: "alert-glucose-low-1",
    })];
    let b = fhir::build(&ctx(&hub, &refs, Some("Device/11")), &items);
    check_rules(&b.json);
    golden("bundle-alert", &b.json);

    // A clinical alert event (as `hub::Ingest` stores it) becomes a DetectedIssue that refers to
    // its Observation by identifier; a resolution carries a mitigation.
    for (transition, name) in [
        ("raised", "bundle-detected-issue"),
        ("resolved", "bundle-detected-issue-resolved"),
    ] {
        let payload = json!({
            "alert": {
                "at": 1_741_939_200_000i64,
                "transition": transition,
                "subject": { "type": "threshold", "kind": "glucose" },
                "severity": "critical_low",
                "episode": "glucose-1741939200000",
                "readings": ["12"],
                "cause": null,
                "detail": "glucose 40 mg/dL below the critical low limit 54 mg/dL"
            },
            "observations": [{ "system": fhir::codes::OBS_IDENTIFIER_SYSTEM, "value": "0060194B2C1D-RPM-000123-160184-794818800" }]
        });
        let key = format!("alert/glucose-1741939200000/{transition}");
        let items = vec![Item::Alert(AlertInput {
            tag: 10,
            payload: &payload,
            stable_key: &key,
        })];
        let b = fhir::build(&ctx(&hub, &refs, Some("Device/11")), &items);
        check_rules(&b.json);
        let issue = &b.json["entry"][0]["resource"];
        assert_eq!(issue["resourceType"], "DetectedIssue");
        assert_eq!(issue["severity"], "high");
        assert_eq!(
            issue["implicated"][0]["identifier"]["value"],
            "0060194B2C1D-RPM-000123-160184-794818800"
        );
        assert_eq!(issue["mitigation"].is_array(), transition == "resolved");
        assert_eq!(b.json["entry"][0]["request"]["url"], "DetectedIssue");
        golden(name, &b.json);
    }

    let status = HubStatus {
        updates: Default::default(),
        at: RX,
        backlog: 17,
        free_disk_bytes: Some(1_000_000_000),
        cert_days_left: Some(200),
        devices: vec![DeviceStatus {
            ident: cuff().ident().unwrap(),
            last_seen_secs: Some(3600),
            battery_percent: Some(80),
        }],
    };
    let hb = fhir::heartbeat_bundle(&ctx(&hub, &refs, Some("Device/11")), &status).unwrap();
    check_rules(&hb.json);
    assert_eq!(
        hb.json["entry"][0]["resource"]["meta"]["profile"][0],
        format!("{}PhgDevice", codes::PROFILE_BASE)
    );
    golden("bundle-heartbeat", &hb.json);
}

#[test]
fn response_fixtures_parse() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/fhir");
    let bare = std::fs::read(root.join("response-201-bare.json")).unwrap();
    let r = fhir::parse_transaction_response(&bare, 2).unwrap();
    assert!(r.iter().all(|e| e.status == 201 && e.is_stored()));
    let hapi = std::fs::read(root.join("response-201-created-hapi.json")).unwrap();
    let r = fhir::parse_transaction_response(&hapi, 2).unwrap();
    assert_eq!(r[0].status, 201);
    assert_eq!(r[1].status, 200);
    assert_eq!(r[0].logical_ref().unwrap(), "Device/1");
    let oo: Value =
        serde_json::from_slice(&std::fs::read(root.join("outcome-400.json")).unwrap()).unwrap();
    let text = fhir::parse_operation_outcome(&oo).unwrap();
    assert!(text.contains("error invalid"));
}

/// A hub's security report (issue 19 part 3) as an AuditEvent: the hub's own Device as agent and
/// observer (here a new hub: its PhgDevice entry of the same Bundle), the count and kinds, the
/// window; nothing else referenced. The fixture is validated by `.ci/validate_fhir.py`.
#[test]
fn security_report_bundle() {
    let hub = hub();
    let refs = HashMap::new();
    let payload = json!({"security_report": {
        "id": 3, "uuid": "0193b3c2-1f00-7a1b-9c2d-3e4f5a6b7c8d", "code": "spoof-attempt",
        "kinds": ["ble_spoof_attempt"], "count": 1000,
        "first_at": 1_765_065_600_000_i64, "last_at": 1_765_066_440_000_i64 }});
    let items = vec![Item::Alert(AlertInput {
        tag: 12,
        payload: &payload,
        stable_key: "security-0193b3c2-1f00-7a1b-9c2d-3e4f5a6b7c8d",
    })];
    let b = fhir::build(&ctx(&hub, &refs, None), &items);
    let entries = b.json["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "the hub's PhgDevice and the AuditEvent");
    let a = &entries[1]["resource"];
    assert_eq!(a["resourceType"], "AuditEvent");
    assert_eq!(entries[1]["request"]["url"], "AuditEvent");
    assert_eq!(a["agent"][0]["who"]["reference"], entries[0]["fullUrl"]);
    assert_eq!(a["source"]["observer"]["reference"], entries[0]["fullUrl"]);
    assert_eq!(a["subtype"][0]["code"], "spoof-attempt");
    assert_eq!(a["entity"][0]["detail"][0]["valueString"], "1000");
    assert_eq!(b.entries[1].tags, vec![12]);
    assert!(!a.to_string().contains("Patient/"));
    golden("bundle-security-report", &b.json);
}
