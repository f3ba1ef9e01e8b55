//! Shared pieces of the fixture-vector tests: loading `fixtures/gatt-vectors.json` and comparing
//! decoded values with the `expected` objects.

use serde::Deserialize;
use serde_json::Value as Json;
use vitals_hub::gatt::datetime::DateTime;
use vitals_hub::gatt::{Float, SFloat};
use vitals_hub::model::{Special, Value};

#[derive(Debug, Clone, Deserialize)]
pub struct Vector {
    pub characteristic_uuid: String,
    pub characteristic: String,
    pub hex: String,
    pub valid: bool,
    pub expected: Json,
}

impl Vector {
    pub fn bytes(&self) -> Vec<u8> {
        (0..self.hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&self.hex[i..i + 2], 16).expect("fixture hex"))
            .collect()
    }

    pub fn uuid(&self) -> &str {
        &self.characteristic_uuid
    }

    pub fn label(&self) -> String {
        format!(
            "{} {} ({})",
            self.characteristic_uuid, self.hex, self.characteristic
        )
    }

    /// The `expected` field `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Json> {
        self.expected.get(key)
    }
}

pub fn load() -> Vec<Vector> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/gatt-vectors.json");
    let text = std::fs::read_to_string(path).expect("read fixtures/gatt-vectors.json");
    serde_json::from_str(&text).expect("parse fixtures/gatt-vectors.json")
}

/// Compare a decoded model value with an expected JSON value: a number, or one of the strings
/// "NaN", "NRes", "+INF", "-INF", "Reserved".
pub fn value_matches(got: Value, expected: &Json) -> Result<(), String> {
    match (got, expected) {
        (Value::Number(d), Json::Number(n)) => {
            let want = n.as_f64().ok_or("expected number not f64")?;
            let have = d.to_f64();
            let tol = want.abs() * 1e-12;
            if (have - want).abs() <= tol {
                Ok(())
            } else {
                Err(format!("value {d} (= {have}), expected {want}"))
            }
        }
        (Value::Special(s), Json::String(name)) => {
            let want = match name.as_str() {
                "NaN" => Special::Nan,
                "NRes" => Special::NRes,
                "+INF" => Special::PosInf,
                "-INF" => Special::NegInf,
                "Reserved" => Special::Reserved,
                other => return Err(format!("unknown special `{other}` in fixture")),
            };
            if s == want {
                Ok(())
            } else {
                Err(format!("special {s:?}, expected {want:?}"))
            }
        }
        (g, e) => Err(format!("value {g:?}, expected {e}")),
    }
}

pub fn sfloat_matches(got: SFloat, expected: &Json) -> Result<(), String> {
    value_matches(got.value(), expected)
}

pub fn float_matches(got: Float, expected: &Json) -> Result<(), String> {
    value_matches(got.value(), expected)
}

/// Compare an integer-valued field with `expected[key]`; a missing key passes only if `got` is None.
pub fn int_field(v: &Vector, key: &str, got: Option<i64>) -> Result<(), String> {
    match (v.get(key), got) {
        (None, None) => Ok(()),
        (Some(e), Some(g)) if e.as_i64() == Some(g) => Ok(()),
        (e, g) => Err(format!("{key}: got {g:?}, expected {e:?}")),
    }
}

/// Compare a float-valued field with `expected[key]` (absent on both sides passes).
pub fn value_field(v: &Vector, key: &str, got: Option<Value>) -> Result<(), String> {
    match (v.get(key), got) {
        (None, None) => Ok(()),
        (Some(e), Some(g)) => value_matches(g, e).map_err(|m| format!("{key}: {m}")),
        (e, g) => Err(format!("{key}: got {g:?}, expected {e:?}")),
    }
}

/// Run several checks and join their failures.
pub fn all(results: Vec<Result<(), String>>) -> Result<(), String> {
    let errs: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("; "))
    }
}

/// Compare a decoded Date Time with an expected `{year, month, day, hour, minute, second}` object.
pub fn date_time_matches(got: &DateTime, want: &Json) -> Result<(), String> {
    let f = |k: &str| want.get(k).and_then(Json::as_i64);
    let w = [
        f("year"),
        f("month"),
        f("day"),
        f("hour"),
        f("minute"),
        f("second"),
    ];
    let g = [
        got.year,
        got.month.into(),
        got.day.into(),
        got.hour.into(),
        got.minute.into(),
        got.second.into(),
    ]
    .map(|x: u16| Some(i64::from(x)));
    if w == g {
        Ok(())
    } else {
        Err(format!("date time {g:?}, expected {w:?}"))
    }
}
