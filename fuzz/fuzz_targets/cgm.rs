//! One parser on its own, so the fuzzer's corpus specialises in its layout.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vitals_hub::gatt::{self, Characteristic};

fuzz_target!(|data: &[u8]| {
    if let Ok(decoded) = gatt::decode(Characteristic::CgmMeasurement, data) {
        let _ = decoded.readings();
        let again = decoded.encode().expect("decoded values re-encode");
        assert_eq!(
            gatt::decode(Characteristic::CgmMeasurement, &again).expect("re-encoded values decode"),
            decoded
        );
    }
});
