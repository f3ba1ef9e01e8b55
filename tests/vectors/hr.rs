//! Fixture checks for `gatt::hr` (0x2A37, 0x2A38).

use super::bp::{decode, only_keys, str_field};
use super::common::{all, int_field, Vector};
use serde_json::Value as Json;
use vitals_hub::gatt::hr::{BodySensorLocation, HeartRateMeasurement};

/// `None` when the vector is not one of this module's characteristics.
pub fn check(v: &Vector) -> Option<Result<(), String>> {
    Some(match v.uuid() {
        "0x2A37" => decode::<HeartRateMeasurement>(v).and_then(|m| {
            let rr = match v.get("rr_raw_1_1024s") {
                None if m.rr_intervals.is_empty() => Ok(()),
                Some(Json::Array(a)) => {
                    let want: Vec<Option<i64>> = a.iter().map(Json::as_i64).collect();
                    let have: Vec<Option<i64>> =
                        m.rr_intervals.iter().map(|x| Some((*x).into())).collect();
                    if want == have {
                        Ok(())
                    } else {
                        Err(format!("rr_raw_1_1024s: {have:?}, expected {want:?}"))
                    }
                }
                e => Err(format!(
                    "rr_raw_1_1024s: got {:?}, expected {e:?}",
                    m.rr_intervals
                )),
            };
            all(vec![
                only_keys(
                    v,
                    &[
                        "flags",
                        "heart_rate_bpm",
                        "sensor_contact",
                        "energy_expended_kj",
                        "rr_raw_1_1024s",
                    ],
                ),
                int_field(v, "flags", Some(m.flags().into())),
                int_field(v, "heart_rate_bpm", Some(m.heart_rate.into())),
                str_field(v, "sensor_contact", m.contact().map(|c| c.name())),
                int_field(
                    v,
                    "energy_expended_kj",
                    m.energy_expended_kj.map(Into::into),
                ),
                rr,
            ])
        }),
        "0x2A38" => decode::<BodySensorLocation>(v).and_then(|l| {
            all(vec![
                only_keys(v, &["body_sensor_location", "meaning"]),
                int_field(v, "body_sensor_location", Some(l.0.into())),
                match v.get("meaning") {
                    None => Ok(()),
                    Some(_) => str_field(v, "meaning", l.name()),
                },
            ])
        }),
        _ => return None,
    })
}
