//! Fixture checks for `gatt::thermo` (0x2A1C, 0x2A1D, 0x2A1E).

use super::bp::{decode, only_keys, str_field, timestamp_field};
use super::common::{all, float_matches, int_field, Vector};
use vitals_hub::gatt::thermo::{
    IntermediateTemperature, TemperatureMeasurement, TemperatureType, TemperatureUnit,
};

fn measurement(v: &Vector, m: &TemperatureMeasurement) -> Result<(), String> {
    all(vec![
        only_keys(
            v,
            &[
                "flags",
                "unit",
                "temperature",
                "timestamp",
                "temperature_type",
            ],
        ),
        int_field(v, "flags", Some(m.flags().into())),
        str_field(
            v,
            "unit",
            Some(match m.unit {
                TemperatureUnit::Celsius => "C",
                TemperatureUnit::Fahrenheit => "F",
            }),
        ),
        float_matches(m.temperature, &v.expected["temperature"])
            .map_err(|e| format!("temperature: {e}")),
        timestamp_field(v, "timestamp", m.timestamp.as_ref()),
        int_field(
            v,
            "temperature_type",
            m.temperature_type.map(|t| t.0.into()),
        ),
    ])
}

/// `None` when the vector is not one of this module's characteristics.
pub fn check(v: &Vector) -> Option<Result<(), String>> {
    Some(match v.uuid() {
        "0x2A1C" => decode::<TemperatureMeasurement>(v).and_then(|m| measurement(v, &m)),
        "0x2A1E" => decode::<IntermediateTemperature>(v).and_then(|m| measurement(v, &m.0)),
        "0x2A1D" => decode::<TemperatureType>(v).and_then(|t| {
            all(vec![
                only_keys(v, &["temperature_type", "meaning"]),
                int_field(v, "temperature_type", Some(t.0.into())),
                match v.get("meaning") {
                    None => Ok(()),
                    Some(_) => str_field(v, "meaning", t.description()),
                },
            ])
        }),
        _ => return None,
    })
}
