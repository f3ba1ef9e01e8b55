//! Benchmarks behind `vitals-hub bench …`: figures, never assertions. Nothing on the daemon's path
//! imports this module.

// Both start the clinic side (in process or as a child): only with the `clinic` feature.
#[cfg(feature = "clinic")]
pub mod daemon;
pub mod store;
#[cfg(feature = "clinic")]
pub mod uplink;
