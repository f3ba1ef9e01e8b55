#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! The response parser never panics on network input, and identifiers survive the
//! ifNoneExist encoding round trip.

use proptest::prelude::*;
use vitals_hub::fhir::identifier::{if_none_exist, percent_decode};
use vitals_hub::fhir::{parse_transaction_response, EntryOutcome};

proptest! {
    #[test]
    fn response_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), n in 0usize..5) {
        let _ = parse_transaction_response(&bytes, n);
    }

    #[test]
    fn response_parser_on_json_shapes(statuses in proptest::collection::vec("[0-9A-Za-z ]{0,12}", 0..5), loc in "[A-Za-z0-9/_]{0,30}") {
        let entries: Vec<_> = statuses.iter().map(|s| serde_json::json!({"response": {"status": s, "location": loc}})).collect();
        let body = serde_json::to_vec(&serde_json::json!({"resourceType": "Bundle", "type": "transaction-response", "entry": entries})).unwrap();
        if let Ok(out) = parse_transaction_response(&body, statuses.len()) {
            for o in &out { let _ = EntryOutcome::logical_ref(o); prop_assert!((100..=599).contains(&o.status)); }
        }
    }

    #[test]
    fn if_none_exist_round_trips(value in "[ -~]{1,60}") {
        let q = if_none_exist("http://example.org/sys", &value);
        prop_assert!(!q.contains('+') && !q.contains(' ') && !q.contains('|'));
        let decoded = percent_decode(q.strip_prefix("identifier=").unwrap());
        prop_assert_eq!(decoded, format!("http://example.org/sys|{value}"));
    }
}
