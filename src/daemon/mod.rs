//! The running hub (`vitals-hub run`): the daemon's tasks and what joins them — ingest (readings to
//! the store, then the alert rules), the local alert hook, and the BLE sessions, the uplink and
//! systemd notification with its watchdog.

pub mod hook;
pub mod ingest;
pub mod port;
pub mod run;

pub use ingest::{
    Ingest, IngestConfig, IngestError, IngestOutcome, PendingRules, Replay, SnapshotState,
};
pub use port::HubPort;
pub use run::{run, Daemon, Options, RunError};
