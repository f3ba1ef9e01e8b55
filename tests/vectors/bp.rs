//! Fixture checks for `gatt::bp` (0x2A35, 0x2A36), plus the timestamp and key helpers the other
//! profile checks share.

use super::common::{all, date_time_matches, int_field, value_field, Vector};
use serde_json::Value as Json;
use vitals_hub::gatt::bp::{BloodPressureMeasurement, IntermediateCuffPressure, PressureUnit};
use vitals_hub::gatt::datetime::DateTime;
use vitals_hub::gatt::GattValue;

pub fn decode<T: GattValue>(v: &Vector) -> Result<T, String> {
    T::decode(&v.bytes()).map_err(|e| format!("decode failed: {e}"))
}

/// Fail when `expected` has a key this check does not compare, so no expectation goes unchecked.
pub fn only_keys(v: &Vector, known: &[&str]) -> Result<(), String> {
    let unknown: Vec<&String> = v
        .expected
        .as_object()
        .map(|o| o.keys().filter(|k| !known.contains(&k.as_str())).collect())
        .unwrap_or_default();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(format!("expected keys not checked: {unknown:?}"))
    }
}

/// Compare an optional Date Time with `expected[key]` (absent on both sides passes).
pub fn timestamp_field(v: &Vector, key: &str, got: Option<&DateTime>) -> Result<(), String> {
    match (v.get(key), got) {
        (None, None) => Ok(()),
        (Some(e), Some(t)) => date_time_matches(t, e).map_err(|m| format!("{key}: {m}")),
        (e, g) => Err(format!("{key}: got {g:?}, expected {e:?}")),
    }
}

/// Compare a string field with `expected[key]`.
pub fn str_field(v: &Vector, key: &str, got: Option<&str>) -> Result<(), String> {
    match (v.get(key).and_then(Json::as_str), got) {
        (None, None) => Ok(()),
        (Some(e), Some(g)) if e == g => Ok(()),
        (e, g) => Err(format!("{key}: got {g:?}, expected {e:?}")),
    }
}

fn unit_name(u: PressureUnit) -> &'static str {
    match u {
        PressureUnit::MmHg => "mmHg",
        PressureUnit::KPa => "kPa",
    }
}

/// `None` when the vector is not one of this module's characteristics.
pub fn check(v: &Vector) -> Option<Result<(), String>> {
    Some(match v.uuid() {
        "0x2A35" => decode::<BloodPressureMeasurement>(v).and_then(|m| {
            all(vec![
                only_keys(
                    v,
                    &[
                        "flags",
                        "unit",
                        "systolic",
                        "diastolic",
                        "mean_arterial_pressure",
                        "timestamp",
                        "pulse_rate_bpm",
                        "user_id",
                        "measurement_status",
                    ],
                ),
                int_field(v, "flags", Some(m.flags().into())),
                str_field(v, "unit", Some(unit_name(m.unit))),
                value_field(v, "systolic", Some(m.systolic.value())),
                value_field(v, "diastolic", Some(m.diastolic.value())),
                value_field(
                    v,
                    "mean_arterial_pressure",
                    Some(m.mean_arterial_pressure.value()),
                ),
                timestamp_field(v, "timestamp", m.timestamp.as_ref()),
                value_field(v, "pulse_rate_bpm", m.pulse_rate.map(|p| p.value())),
                int_field(v, "user_id", m.user_id.map(Into::into)),
                int_field(
                    v,
                    "measurement_status",
                    m.measurement_status.map(|s| s.0.into()),
                ),
            ])
        }),
        "0x2A36" => decode::<IntermediateCuffPressure>(v).and_then(|m| {
            // The unused slots are compared only when the fixture states them.
            let unused = |key: &str, got: vitals_hub::gatt::SFloat| {
                if v.get(key).is_some() {
                    value_field(v, key, Some(got.value()))
                } else {
                    Ok(())
                }
            };
            all(vec![
                only_keys(
                    v,
                    &[
                        "flags",
                        "unit",
                        "cuff_pressure",
                        "diastolic",
                        "mean_arterial_pressure",
                        "timestamp",
                        "pulse_rate_bpm",
                        "user_id",
                        "measurement_status",
                    ],
                ),
                int_field(v, "flags", Some(m.flags().into())),
                str_field(v, "unit", Some(unit_name(m.unit))),
                value_field(v, "cuff_pressure", Some(m.cuff_pressure.value())),
                unused("diastolic", m.unused_diastolic),
                unused("mean_arterial_pressure", m.unused_mean_arterial_pressure),
                timestamp_field(v, "timestamp", m.timestamp.as_ref()),
                value_field(v, "pulse_rate_bpm", m.pulse_rate.map(|p| p.value())),
                int_field(v, "user_id", m.user_id.map(Into::into)),
                int_field(
                    v,
                    "measurement_status",
                    m.measurement_status.map(|s| s.0.into()),
                ),
            ])
        }),
        _ => return None,
    })
}
