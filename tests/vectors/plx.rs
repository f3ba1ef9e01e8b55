//! Fixture checks for `gatt::plx`: every key of each vector's `expected` object is compared (an
//! unknown key fails the check, so nothing in the fixture goes unverified). The key helpers are
//! shared with `cgm.rs`.

use super::common::{all, sfloat_matches, Vector};
use serde_json::Value as Json;
use vitals_hub::gatt::plx::{ContinuousMeasurement, PlxFeatures, SpotCheckMeasurement};
use vitals_hub::gatt::GattValue;

pub fn decode<T: GattValue>(v: &Vector) -> Result<T, String> {
    T::decode(&v.bytes()).map_err(|e| format!("decode failed: {e}"))
}

/// An integer key: `null` in the fixture means the field is absent.
pub fn int(key: &str, want: &Json, got: Option<i64>) -> Result<(), String> {
    match (want, got) {
        (Json::Null, None) => Ok(()),
        (w, Some(g)) if w.as_i64() == Some(g) => Ok(()),
        (w, g) => Err(format!("{key}: got {g:?}, expected {w}")),
    }
}

pub fn boolean(key: &str, want: &Json, got: bool) -> Result<(), String> {
    if want.as_bool() == Some(got) {
        Ok(())
    } else {
        Err(format!("{key}: got {got}, expected {want}"))
    }
}

pub fn sfloat_opt(
    key: &str,
    want: &Json,
    got: Option<vitals_hub::gatt::SFloat>,
) -> Result<(), String> {
    match (want, got) {
        (Json::Null, None) => Ok(()),
        (w, Some(g)) => sfloat_matches(g, w).map_err(|m| format!("{key}: {m}")),
        (w, None) => Err(format!("{key}: absent, expected {w}")),
    }
}

/// Apply `one` to every key of `expected`; a key it does not know is a failure.
pub fn every_key(
    v: &Vector,
    one: impl Fn(&str, &Json) -> Option<Result<(), String>>,
) -> Result<(), String> {
    let obj = v.expected.as_object().ok_or("expected is not an object")?;
    all(obj
        .iter()
        .map(|(k, want)| one(k, want).unwrap_or_else(|| Err(format!("unchecked key `{k}`"))))
        .collect())
}

/// The flags octet: as received, and as the decoded value re-derives it.
fn flags(want: &Json, received: u8, encoded: Option<u8>) -> Result<(), String> {
    all(vec![
        int("flags", want, Some(received.into())),
        int("flags (re-encoded)", want, encoded.map(Into::into)),
    ])
}

/// `None` when the vector is not one of this module's characteristics.
pub fn check(v: &Vector) -> Option<Result<(), String>> {
    let b = v.bytes();
    let first = b.first().copied().unwrap_or(0);
    Some(match v.uuid() {
        "0x2A5E" => decode::<SpotCheckMeasurement>(v).and_then(|m| {
            let enc = m.encode().ok().and_then(|e| e.first().copied());
            every_key(v, |k, want| {
                Some(match k {
                    "flags" => flags(want, first, enc),
                    "spo2_pct" => sfloat_matches(m.spo2_pct, want),
                    "pulse_rate_bpm" => sfloat_matches(m.pulse_rate_per_min, want),
                    "measurement_status" => int(k, want, m.measurement_status.map(Into::into)),
                    "device_sensor_status" => int(k, want, m.device_sensor_status.map(Into::into)),
                    "pulse_amplitude_index_pct" => sfloat_opt(k, want, m.pulse_amplitude_index_pct),
                    "device_clock_not_set" => boolean(k, want, m.device_clock_not_set),
                    _ => return None,
                })
            })
        }),
        "0x2A5F" => decode::<ContinuousMeasurement>(v).and_then(|m| {
            let enc = m.encode().ok().and_then(|e| e.first().copied());
            every_key(v, |k, want| {
                Some(match k {
                    "flags" => flags(want, first, enc),
                    "spo2_pct" => sfloat_matches(m.spo2_pct, want),
                    "pulse_rate_bpm" => sfloat_matches(m.pulse_rate_per_min, want),
                    "spo2_fast_pct" => sfloat_opt(k, want, m.fast.map(|p| p.spo2_pct)),
                    "pulse_rate_fast_bpm" => {
                        sfloat_opt(k, want, m.fast.map(|p| p.pulse_rate_per_min))
                    }
                    "spo2_slow_pct" => sfloat_opt(k, want, m.slow.map(|p| p.spo2_pct)),
                    "pulse_rate_slow_bpm" => {
                        sfloat_opt(k, want, m.slow.map(|p| p.pulse_rate_per_min))
                    }
                    "measurement_status" => int(k, want, m.measurement_status.map(Into::into)),
                    "device_sensor_status" => int(k, want, m.device_sensor_status.map(Into::into)),
                    "pulse_amplitude_index_pct" => sfloat_opt(k, want, m.pulse_amplitude_index_pct),
                    _ => return None,
                })
            })
        }),
        "0x2A60" => decode::<PlxFeatures>(v).and_then(|f| {
            every_key(v, |k, want| {
                Some(match k {
                    "supported_features" => int(k, want, Some(f.supported_features.into())),
                    "measurement_status_support" => {
                        int(k, want, f.measurement_status_support.map(Into::into))
                    }
                    "device_sensor_status_support" => {
                        int(k, want, f.device_sensor_status_support.map(Into::into))
                    }
                    _ => return None,
                })
            })
        }),
        _ => return None,
    })
}

/// Every vector of `uuids` with one expected value changed (numbers +1, booleans negated,
/// strings and nulls replaced by a number, an extra key added) must fail its check: this proves
/// the checks compare every key rather than pass by default.
pub fn assert_checks_catch_mutations(
    uuids: &[&str],
    check: fn(&Vector) -> Option<Result<(), String>>,
) {
    fn mutate(j: &Json) -> Json {
        match j {
            Json::Number(n) => match n.as_i64() {
                Some(i) => Json::from(i + 1),
                None => Json::from(n.as_f64().unwrap_or(0.0) * 1.5 + 1.0),
            },
            Json::Bool(b) => Json::Bool(!b),
            _ => Json::from(12345),
        }
    }
    /// Every path to a leaf of `j`.
    fn leaves(j: &Json, path: Vec<String>, out: &mut Vec<Vec<String>>) {
        match j {
            Json::Object(o) => o.iter().for_each(|(k, v)| {
                let mut p = path.clone();
                p.push(k.clone());
                leaves(v, p, out)
            }),
            Json::Array(a) => a.iter().enumerate().for_each(|(i, v)| {
                let mut p = path.clone();
                p.push(i.to_string());
                leaves(v, p, out)
            }),
            _ => out.push(path),
        }
    }
    fn at<'a>(j: &'a mut Json, path: &[String]) -> &'a mut Json {
        path.iter().fold(j, |j, k| match j {
            Json::Array(a) => &mut a[k.parse::<usize>().unwrap()],
            other => &mut other[k.as_str()],
        })
    }
    let mut tried = 0;
    for v in super::common::load()
        .into_iter()
        .filter(|v| v.valid && uuids.contains(&v.uuid()))
    {
        assert_eq!(check(&v), Some(Ok(())), "{}", v.label());
        let mut paths = vec![];
        leaves(&v.expected, vec![], &mut paths);
        for p in paths {
            let mut m = v.clone();
            let leaf = at(&mut m.expected, &p);
            *leaf = mutate(leaf);
            assert!(
                matches!(check(&m), Some(Err(_))),
                "{}: changing {p:?} went unnoticed",
                v.label()
            );
            tried += 1;
        }
        let mut m = v.clone();
        m.expected["no_such_key"] = Json::from(1);
        assert!(
            matches!(check(&m), Some(Err(_))),
            "{}: extra key",
            v.label()
        );
    }
    assert!(tried > 0);
}

#[test]
fn plx_checks_compare_every_key() {
    assert_checks_catch_mutations(&["0x2A5E", "0x2A5F", "0x2A60"], check);
}
