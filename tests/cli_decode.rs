//! `vitals-hub decode` as a user runs it: the real binary, its stdout, stderr and exit status.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support_bin;
use serde_json::Value;
use std::process::Output;

fn run(args: &[&str]) -> Output {
    support_bin::hub()
        .args(args)
        .output()
        .expect("run vitals-hub")
}

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

#[test]
fn glucose_by_uuid_and_by_name() {
    // 104 mg/dL (104e-5 kg/L), base time 11:10:30, offset -5 min, capillary whole blood, finger.
    let hex = "030100e307021b0b0a1efbff68b011";
    for ch in ["2A18", "0x2A18", "glucose-measurement"] {
        let doc = json(&run(&["decode", ch, hex]));
        assert_eq!(doc["characteristic"], "0x2A18");
        assert_eq!(doc["name"], "glucose-measurement");
        assert_eq!(doc["fields"]["sequence_number"], 1);
        assert_eq!(doc["fields"]["time_offset_min"], -5);
        let r = &doc["readings"][0];
        assert_eq!(r["kind"], "glucose");
        assert_eq!(r["value"], 104.0);
        assert_eq!(r["unit"], "mg/dL");
        assert_eq!(r["special"], Value::Null);
        assert_eq!(r["device_time"], "2019-02-27T11:05:30");
        assert_eq!(r["specimen"], "capillary_whole_blood");
    }
}

#[test]
fn special_values_have_null_value() {
    // Glucose concentration NaN (0x07FF).
    let doc = json(&run(&["decode", "2a18", "020100e307021b0b0a1eff0711"]));
    let r = &doc["readings"][0];
    assert_eq!(r["value"], Value::Null);
    assert_eq!(r["special"], "nan");
}

#[test]
fn text_format_is_for_people() {
    let out = run(&[
        "decode",
        "--format",
        "text",
        "2A18",
        "030100e307021b0b0a1efbff68b011",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("glucose: 104 mg/dL at 2019-02-27T11:05:30"),
        "{text}"
    );
}

fn assert_rejected(args: &[&str], needle: &str) {
    let out = run(args);
    assert_eq!(out.status.code(), Some(2), "{args:?}");
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "one line on stderr: {err}");
    assert!(err.contains(needle), "{err} should mention {needle}");
}

#[test]
fn undecodable_input_exits_2_with_one_line() {
    assert_rejected(
        &["decode", "2A18", "1b0100e307021b0b0a1efbff1e0012"],
        "flags 0x1B require 17 bytes, got 15",
    );
    assert_rejected(&["decode", "2A18", "zz"], "not a hex digit");
    assert_rejected(&["decode", "2A18", "123"], "odd number");
    assert_rejected(&["decode", "2A99", "00"], "not a characteristic");
    assert_rejected(
        &["decode", "battery-level", "65"],
        "battery level 101 is out of range",
    );
    assert_rejected(&["decode", "2A52", "060101"], "response code");
}

#[test]
fn list_names_every_characteristic() {
    let out = run(&["decode", "--list"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for name in [
        "0x2A18  glucose-measurement",
        "0x2AA7  cgm-measurement",
        "0x2A52  record-access-control-point",
    ] {
        assert!(text.contains(name), "{text}");
    }
}

/// `decode --zone`: device wall-clock times across both 2026 changes of Europe/Berlin and
/// America/New_York, with the zone's rules at each reading's own instant (issue 14).
#[test]
fn zone_gives_utc_and_flags_nonexistent_and_ambiguous_times() {
    let glucose_at = |date: &str| format!("020100{date}68b011");
    let cases = [
        // (zone, year-month-day-hour-minute-second as on the wire, UTC, uncertain)
        (
            "Europe/Berlin",
            "ea0707010c0000",
            "2026-07-01T10:00:00Z",
            false,
        ),
        (
            "Europe/Berlin",
            "ea070c010c0000",
            "2026-12-01T11:00:00Z",
            false,
        ),
        // 29 March 02:30 does not exist: read with the offset before the change.
        (
            "Europe/Berlin",
            "ea07031d021e00",
            "2026-03-29T01:30:00Z",
            true,
        ),
        // 25 October 02:30 exists twice: its first occurrence.
        (
            "Europe/Berlin",
            "ea070a19021e00",
            "2026-10-25T00:30:00Z",
            true,
        ),
        (
            "America/New_York",
            "ea070308020f00",
            "2026-03-08T07:15:00Z",
            true,
        ),
        (
            "America/New_York",
            "ea070b01011e00",
            "2026-11-01T05:30:00Z",
            true,
        ),
        (
            "America/New_York",
            "ea070b01021e00",
            "2026-11-01T07:30:00Z",
            false,
        ),
    ];
    for (zone, date, utc, uncertain) in cases {
        let hex = glucose_at(&date.replace(' ', ""));
        let doc = json(&run(&["decode", "2A18", &hex, "--zone", zone]));
        let r = &doc["readings"][0];
        assert_eq!(r["device_time_utc"], utc, "{zone} {date}");
        assert_eq!(
            r.get("time_uncertain").is_some_and(|v| v == true),
            uncertain,
            "{zone} {date}: {r}"
        );
    }
    let out = run(&[
        "decode",
        "2A18",
        &glucose_at("ea07031d021e00"),
        "--zone",
        "Mars/Olympus",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Mars/Olympus") && err.contains("IANA"),
        "{err}"
    );
}

/// The Beurer BM85 capture (fixtures/quirks/beurer-bm85.json): refused as sent, decoded with
/// `--quirk beurer-bm85`; `--list-quirks` names it with its source (issue 14).
#[test]
fn quirk_decodes_the_bm85_capture() {
    let hex = "566a0047000000ea07080b121f00003f000000";
    assert!(!run(&["decode", "2A35", hex]).status.success());
    let doc = json(&run(&["decode", "2A35", hex, "--quirk", "beurer-bm85"]));
    let f = &doc["fields"];
    assert_eq!(f["user_id"], 0, "{f}");
    let readings = doc["readings"].as_array().unwrap();
    let value = |kind: &str| {
        readings
            .iter()
            .find(|r| r["kind"] == kind)
            .map(|r| r["value"].as_f64().unwrap())
    };
    assert_eq!(value("systolic"), Some(106.0), "{doc}");
    assert_eq!(value("diastolic"), Some(71.0));
    assert_eq!(value("pulse_rate"), Some(63.0));
    assert_eq!(value("mean_arterial_pressure"), None);
    let out = run(&["decode", "--list-quirks"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("beurer-bm85") && text.contains("derdilla"),
        "{text}"
    );
    let out = run(&["decode", "2A35", hex, "--quirk", "acme-x1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("beurer-bm85"));
}
