//! Every characteristic: the first byte picks one, the rest is its value. Decoding must not panic,
//! and whatever decodes must re-encode to a value that decodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vitals_hub::gatt::{self, Characteristic};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, payload)) = data.split_first() else {
        return;
    };
    let all = Characteristic::ALL;
    let ch = all[usize::from(pick) % all.len()];
    if let Ok(decoded) = gatt::decode(ch, payload) {
        let _ = decoded.readings();
        let again = decoded.encode().expect("decoded values re-encode");
        assert_eq!(
            gatt::decode(ch, &again).expect("re-encoded values decode"),
            decoded
        );
    }
});
