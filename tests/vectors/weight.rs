//! Fixture checks for `gatt::weight` (0x2A9D, 0x2A9E).

use super::bp::{decode, only_keys, str_field, timestamp_field};
use super::common::{all, int_field, value_field, value_matches, Vector};
use serde_json::Value as Json;
use vitals_hub::gatt::weight::{MeasurementSystem, WeightMeasurement, WeightScaleFeature};
use vitals_hub::model::Value;

/// `None` when the vector is not one of this module's characteristics.
pub fn check(v: &Vector) -> Option<Result<(), String>> {
    Some(match v.uuid() {
        "0x2A9D" => decode::<WeightMeasurement>(v).and_then(|m| {
            let weight = match (v.get("weight"), m.weight()) {
                (Some(Json::String(s)), None) if s == "unsuccessful" => Ok(()),
                (Some(e), Some(d)) => {
                    value_matches(Value::Number(d), e).map_err(|x| format!("weight: {x}"))
                }
                (e, g) => Err(format!("weight: got {g:?}, expected {e:?}")),
            };
            all(vec![
                only_keys(
                    v,
                    &[
                        "flags",
                        "unit",
                        "weight",
                        "weight_raw",
                        "timestamp",
                        "user_id",
                        "bmi",
                        "height",
                    ],
                ),
                int_field(v, "flags", Some(m.flags().into())),
                str_field(
                    v,
                    "unit",
                    Some(match m.system {
                        MeasurementSystem::Si => "kg",
                        MeasurementSystem::Imperial => "lb",
                    }),
                ),
                weight,
                int_field(v, "weight_raw", Some(m.weight_raw.into())),
                timestamp_field(v, "timestamp", m.timestamp.as_ref()),
                int_field(v, "user_id", m.user_id.map(Into::into)),
                value_field(v, "bmi", m.bmi().map(Value::Number)),
                value_field(v, "height", m.height().map(Value::Number)),
            ])
        }),
        "0x2A9E" => decode::<WeightScaleFeature>(v).and_then(|f| {
            all(vec![
                only_keys(v, &["features"]),
                int_field(v, "features", Some(f.0.into())),
            ])
        }),
        _ => return None,
    })
}
