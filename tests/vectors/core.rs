//! Fixture checks for the numeric formats, time, device information, glucose and RACP.

use super::common::{
    all, date_time_matches, int_field, sfloat_matches, value_field, value_matches, Vector,
};
use serde_json::Value as Json;
use vitals_hub::gatt::datetime::{CurrentTime, DateTime};
use vitals_hub::gatt::dis::{BatteryLevel, SystemId};
use vitals_hub::gatt::glucose::{
    ConcentrationUnit, GlucoseContext, GlucoseFeature, GlucoseMeasurement, MedicationUnit,
};
use vitals_hub::gatt::racp::{FilterValue, RacpMessage};
use vitals_hub::gatt::{Float, GattValue, SFloat};

fn decode<T: GattValue>(v: &Vector) -> Result<T, String> {
    T::decode(&v.bytes()).map_err(|e| format!("decode failed: {e}"))
}

pub fn check(v: &Vector) -> Option<Result<(), String>> {
    let b = v.bytes();
    Some(match v.uuid() {
        "0xSFLOAT" => {
            let raw = u16::from_le_bytes([b[0], b[1]]);
            sfloat_matches(SFloat::from_raw(raw), &v.expected["value"])
        }
        "0xFLOAT" => {
            let raw = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            value_matches(Float::from_raw(raw).value(), &v.expected["value"])
        }
        "0x2A08" => decode::<DateTime>(v).and_then(|d| date_time_matches(&d, &v.expected)),
        "0x2A2B" => decode::<CurrentTime>(v).and_then(|c| {
            all(vec![
                date_time_matches(&c.date_time, &v.expected),
                int_field(v, "day_of_week", Some(c.day_of_week.into())),
                int_field(v, "fractions256", Some(c.fractions256.into())),
                int_field(v, "adjust_reason", Some(c.adjust_reason.into())),
            ])
        }),
        "0x2A19" => decode::<BatteryLevel>(v)
            .and_then(|x| int_field(v, "battery_pct", Some(x.percent.into()))),
        "0x2A23" => decode::<SystemId>(v).and_then(|s| {
            all(vec![
                int_field(
                    v,
                    "manufacturer_identifier_u40",
                    Some(s.manufacturer_identifier as i64),
                ),
                int_field(v, "oui_u24", Some(s.oui.into())),
            ])
        }),
        "0x2A18" => decode::<GlucoseMeasurement>(v).and_then(|m| {
            let conc = m.concentration;
            let unit_ok = match (v.get("unit").and_then(Json::as_str), conc.map(|c| c.unit)) {
                (None, None) => Ok(()),
                (Some("kg/L"), Some(ConcentrationUnit::KgPerL))
                | (Some("mol/L"), Some(ConcentrationUnit::MolPerL)) => Ok(()),
                (e, g) => Err(format!("unit {g:?}, expected {e:?}")),
            };
            all(vec![
                int_field(v, "flags", Some(b[0].into())),
                int_field(v, "sequence_number", Some(m.sequence_number.into())),
                v.get("base_time")
                    .ok_or_else(|| "no base_time".to_string())
                    .and_then(|e| date_time_matches(&m.base_time, e)),
                int_field(v, "time_offset_min", m.time_offset_min.map(Into::into)),
                value_field(v, "concentration", conc.map(|c| c.value.value())),
                unit_ok,
                int_field(v, "type", conc.map(|c| c.sample_type.into())),
                int_field(v, "sample_location", conc.map(|c| c.sample_location.into())),
                int_field(v, "sensor_status", m.sensor_status.map(Into::into)),
                match v.get("context_follows").and_then(Json::as_bool) {
                    Some(want) if want != m.context_follows => Err("context_follows".into()),
                    _ => Ok(()),
                },
            ])
        }),
        "0x2A34" => decode::<GlucoseContext>(v).and_then(|c| {
            all(vec![
                int_field(v, "flags", Some(b[0].into())),
                int_field(v, "sequence_number", Some(c.sequence_number.into())),
                int_field(v, "extended_flags", c.extended_flags.map(Into::into)),
                int_field(v, "carbohydrate_id", c.carbohydrate.map(|x| x.id.into())),
                value_field(
                    v,
                    "carbohydrate_kg",
                    c.carbohydrate.map(|x| x.amount_kg.value()),
                ),
                int_field(v, "meal", c.meal.map(Into::into)),
                int_field(v, "tester", c.tester_health.map(|x| x.0.into())),
                int_field(v, "health", c.tester_health.map(|x| x.1.into())),
                int_field(
                    v,
                    "exercise_duration_s",
                    c.exercise.map(|x| x.duration_s.into()),
                ),
                int_field(
                    v,
                    "exercise_intensity_pct",
                    c.exercise.map(|x| x.intensity_pct.into()),
                ),
                int_field(v, "medication_id", c.medication.map(|x| x.id.into())),
                value_field(v, "medication", c.medication.map(|x| x.amount.value())),
                match (
                    v.get("medication_unit").and_then(Json::as_str),
                    c.medication.map(|m| m.unit),
                ) {
                    (None, None)
                    | (Some("kg"), Some(MedicationUnit::Kg))
                    | (Some("L"), Some(MedicationUnit::Litre)) => Ok(()),
                    (e, g) => Err(format!("medication_unit {g:?}, expected {e:?}")),
                },
                value_field(v, "hba1c_pct", c.hba1c_pct.map(|x| x.value())),
            ])
        }),
        "0x2A51" => decode::<GlucoseFeature>(v).and_then(|f| {
            let bits: Vec<i64> = (0..16).filter(|i| f.has(*i)).map(i64::from).collect();
            let want: Vec<i64> = v.expected["bits_set"]
                .as_array()
                .map(|a| a.iter().filter_map(Json::as_i64).collect())
                .unwrap_or_default();
            all(vec![
                int_field(v, "features", Some(f.0.into())),
                if bits == want {
                    Ok(())
                } else {
                    Err(format!("bits {bits:?}, expected {want:?}"))
                },
                if v.expected["multiple_bond"].as_bool() == Some(f.has(10)) {
                    Ok(())
                } else {
                    Err("multiple_bond".into())
                },
            ])
        }),
        "0x2A52" => decode::<RacpMessage>(v).and_then(|m| {
            let mut checks = vec![int_field(v, "op_code", Some(m.op_code().into()))];
            match &m {
                RacpMessage::Request { filter, .. } => {
                    checks.push(int_field(v, "operator", Some(b[1].into())));
                    checks.push(int_field(
                        v,
                        "filter_type",
                        filter.as_ref().map(|f| f.filter_type.into()),
                    ));
                    let operand = filter.as_ref().map(|f| {
                        f.values
                            .iter()
                            .map(|x| match x {
                                FilterValue::U16(n) => format!("{:02x}{:02x}", n & 0xff, n >> 8),
                                FilterValue::Time(t) => format!("{t:?}"),
                            })
                            .collect::<String>()
                    });
                    checks.push(
                        match (v.get("operand").and_then(Json::as_str), operand.as_deref()) {
                            (None, None) => Ok(()),
                            (Some(e), Some(g)) if e == g => Ok(()),
                            (e, g) => Err(format!("operand {g:?}, expected {e:?}")),
                        },
                    );
                }
                RacpMessage::Abort => {}
                RacpMessage::NumberOfRecords(n) => {
                    checks.push(int_field(v, "number_of_records", Some((*n).into())));
                }
                RacpMessage::Response {
                    request_op_code,
                    response_code,
                } => {
                    checks.push(int_field(
                        v,
                        "request_op_code",
                        Some((*request_op_code).into()),
                    ));
                    checks.push(int_field(v, "response_code", Some((*response_code).into())));
                }
            }
            all(checks)
        }),
        _ => return None,
    })
}
