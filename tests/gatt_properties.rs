//! Properties over arbitrary bytes, for every characteristic the hub decodes:
//! decoding never panics, and whatever decodes re-encodes to a value that decodes to itself, with
//! readings that can be computed without panicking.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use vitals_hub::gatt::{self, Characteristic};

const CASES: u32 = 10_000;

/// Payloads shaped like real values: mostly short, sometimes long enough for every optional field.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..24),
        1 => proptest::collection::vec(any::<u8>(), 24..80),
    ]
}

fn check(ch: Characteristic, bytes: &[u8]) -> Result<(), TestCaseError> {
    let Ok(decoded) = gatt::decode(ch, bytes) else {
        return Ok(());
    };
    let _ = decoded.readings();
    let _ = serde_json::to_string(&decoded)
        .map_err(|e| TestCaseError::fail(format!("fields JSON: {e}")))?;
    let again = decoded
        .encode()
        .map_err(|e| TestCaseError::fail(format!("{ch}: decoded value does not re-encode: {e}")))?;
    let round = gatt::decode(ch, &again)
        .map_err(|e| TestCaseError::fail(format!("{ch}: re-encoded value does not decode: {e}")))?;
    prop_assert_eq!(round, decoded, "{}: {:02x?} -> {:02x?}", ch, bytes, again);
    Ok(())
}

#[test]
fn arbitrary_bytes_never_panic_and_decoded_values_are_stable() {
    for &ch in Characteristic::ALL {
        let mut runner = TestRunner::new(Config {
            cases: CASES,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&payload(), |bytes| check(ch, &bytes))
            .unwrap_or_else(|e| panic!("{ch} ({}): {e}", ch.uuid_text()));
    }
}

/// Payloads that start with every possible flags byte exercise every branch of the flag parsing.
#[test]
fn every_first_byte_with_every_length_never_panics() {
    for &ch in Characteristic::ALL {
        for first in 0u8..=255 {
            for len in 0..40usize {
                let mut b = vec![0x5Au8; len];
                if let Some(x) = b.first_mut() {
                    *x = first;
                }
                check(ch, &b).unwrap_or_else(|e| panic!("{ch}: {e}"));
            }
        }
    }
}
