//! Wiring: the daemon's tasks and what joins them — ingest (readings to the store, then the alert
//! rules), the local alert hook, and (with the daemon) the BLE sessions, the uplink and systemd
//! notification.

pub mod commission;
pub mod doctor;
pub mod export;
pub mod hook;
pub mod ingest;
pub mod run;
pub mod setup;
pub mod tech;
pub mod wipe;

pub use ingest::{Ingest, IngestConfig, IngestError, IngestOutcome};
pub use run::{run, Daemon, Options, RunError};
