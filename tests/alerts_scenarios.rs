//! The alert scenario tables in `fixtures/alerts/scenarios.json`: timed readings, the alert events
//! expected (in order), and patterns of events that must not happen. Run through the same replay
//! path as `vitals-hub alerts replay`, and once through the real binary.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support_bin;
use serde_json::Value as Json;
use vitals_hub::alerts::{replay, AlertRules};

fn scenarios() -> Vec<Json> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/alerts/scenarios.json"
    ))
    .unwrap();
    serde_json::from_str::<Vec<Json>>(&text).unwrap()
}

fn rules_of(s: &Json) -> AlertRules {
    match s["rules"].as_str() {
        Some(text) => toml::from_str(text).unwrap(),
        None => AlertRules::starting_points(),
    }
}

fn jsonl(s: &Json) -> String {
    s["readings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{r}\n"))
        .collect()
}

/// Does event `e` (as `replay::event_json` prints it) match the pattern `p`?
fn matches(e: &Json, p: &Json) -> bool {
    let p = p.as_object().unwrap();
    p.iter().all(|(k, v)| match k.as_str() {
        "readings_include" => e["readings"].as_array().unwrap().contains(v),
        key => &e[key] == v,
    })
}

fn check(s: &Json, events: &[Json]) -> Result<(), String> {
    let expect = s["expect"].as_array().unwrap();
    if events.len() != expect.len() {
        return Err(format!(
            "{} events, expected {}: {events:#?}",
            events.len(),
            expect.len()
        ));
    }
    for (i, (e, want)) in events.iter().zip(expect).enumerate() {
        if !matches(e, want) {
            return Err(format!("event {i} is {e}, expected {want}"));
        }
    }
    for f in s["forbid"].as_array().unwrap() {
        if let Some(e) = events.iter().find(|e| matches(e, f)) {
            return Err(format!("forbidden event {e} (pattern {f})"));
        }
    }
    Ok(())
}

#[test]
fn every_scenario_through_the_library() {
    let mut failures = Vec::new();
    let all = scenarios();
    assert!(all.len() >= 15);
    for s in &all {
        let readings = replay::parse(&jsonl(s)).unwrap();
        let events: Vec<Json> = replay::run(&rules_of(s), &readings)
            .iter()
            .map(replay::event_json)
            .collect();
        if let Err(e) = check(s, &events) {
            failures.push(format!("{}: {e}", s["name"]));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_scenario_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    for (i, s) in scenarios().iter().enumerate() {
        let readings = dir.path().join(format!("{i}.jsonl"));
        std::fs::write(&readings, jsonl(s)).unwrap();
        let mut cmd = support_bin::hub();
        cmd.args(["alerts", "replay"]);
        if let Some(text) = s["rules"].as_str() {
            let rules = dir.path().join(format!("{i}.toml"));
            // The hub config's own shape: the rules under [alerts].
            let wrapped = text.replace("[[weight_gain]]", "[[alerts.weight_gain]]");
            std::fs::write(&rules, format!("[alerts]\n{wrapped}")).unwrap();
            cmd.arg("--rules").arg(&rules);
        }
        let out = cmd.arg(&readings).output().unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            s["name"],
            String::from_utf8_lossy(&out.stderr)
        );
        let events: Vec<Json> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        check(s, &events).unwrap_or_else(|e| panic!("{}: {e}", s["name"]));
    }
}

#[test]
fn broken_rules_and_readings_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[alerts.thresholds.glucose]\nunit = \"mg/dL\"\nlow = 70\ncritical_low = 80\n",
    )
    .unwrap();
    let readings = dir.path().join("r.jsonl");
    std::fs::write(&readings, "{\"time\":\"2024-03-01T08:00:00Z\",\"kind\":\"glucose\",\"unit\":\"mg/dL\",\"value\":60}\n").unwrap();
    let out = support_bin::hub()
        .args(["alerts", "replay", "--rules"])
        .arg(&rules)
        .arg(&readings)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("critical_low 80 must be below low 70"),
        "{err}"
    );

    std::fs::write(&rules, "[alerts]\nsuppress_minutes = 5\nbogus = 1\n").unwrap();
    let out = support_bin::hub()
        .args(["alerts", "replay", "--rules"])
        .arg(&rules)
        .arg(&readings)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bogus"), "{err}");

    std::fs::write(
        &readings,
        "{\"time\":\"2024-03-01T08:00:00Z\",\"kind\":\"glucose\",\"unit\":\"mg/dL\"}\n",
    )
    .unwrap();
    let out = support_bin::hub()
        .args(["alerts", "replay"])
        .arg(&readings)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 1") && err.contains("value"), "{err}");
}
