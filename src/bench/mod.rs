//! Benchmarks behind `vitals-hub bench …`: figures, never assertions. Nothing on the daemon's path
//! imports this module.

pub mod daemon;
pub mod store;
pub mod uplink;
