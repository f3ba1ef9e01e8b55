//! Every vector in `fixtures/gatt-vectors.json` is checked: valid ones decode to the expected
//! fields and re-encode to the same bytes, invalid ones are rejected.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "vectors/bp.rs"]
mod bp;
#[path = "vectors/cgm.rs"]
mod cgm;
#[path = "vectors/common.rs"]
mod common;
#[path = "vectors/core.rs"]
mod core;
#[path = "vectors/hr.rs"]
mod hr;
#[path = "vectors/plx.rs"]
mod plx;
#[path = "vectors/thermo.rs"]
mod thermo;
#[path = "vectors/weight.rs"]
mod weight;

use common::Vector;
use vitals_hub::gatt::{self, Characteristic};

type Check = fn(&Vector) -> Option<Result<(), String>>;
const CHECKS: [Check; 7] = [
    core::check,
    bp::check,
    hr::check,
    thermo::check,
    weight::check,
    plx::check,
    cgm::check,
];

fn characteristic(v: &Vector) -> Option<Characteristic> {
    v.uuid().parse().ok()
}

/// Checks the decoded fields of a valid vector, or that an invalid one is rejected.
fn check_one(v: &Vector) -> Result<(), String> {
    let bytes = v.bytes();
    if !v.valid {
        let ch = characteristic(v).ok_or("invalid vector for an unknown characteristic")?;
        return match gatt::decode(ch, &bytes) {
            Err(_) => Ok(()),
            Ok(d) => Err(format!("accepted an invalid vector as {d:?}")),
        };
    }
    let verdict = CHECKS
        .iter()
        .find_map(|c| c(v))
        .ok_or("no check covers this characteristic")?;
    verdict?;
    // A value that decodes re-encodes to the bytes it came from (raw fields are kept).
    if let Some(ch) = characteristic(v) {
        if let Ok(d) = gatt::decode(ch, &bytes) {
            let again = d.encode().map_err(|e| format!("re-encode failed: {e}"))?;
            if again != bytes {
                return Err(format!("re-encodes to {again:02x?}"));
            }
        }
    }
    Ok(())
}

#[test]
fn every_fixture_vector() {
    let vectors = common::load();
    assert!(
        vectors.len() >= 68,
        "fixture file shrank: {}",
        vectors.len()
    );
    let failures: Vec<String> = vectors
        .iter()
        .filter_map(|v| check_one(v).err().map(|e| format!("{}: {e}", v.label())))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} vectors failed:\n{}",
        failures.len(),
        vectors.len(),
        failures.join("\n")
    );
}
