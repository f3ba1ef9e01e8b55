//! Moved to `tests/uplink_support` (one support module for the uplink and receiver tests); this
//! shim keeps `mod support_pki;` working until every user says `mod uplink_support;`.
#![allow(unused_imports)]

#[path = "../uplink_support/mod.rs"]
mod uplink_support;
pub use uplink_support::*;
