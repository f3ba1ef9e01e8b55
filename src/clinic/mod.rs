//! The clinic side: the hubs' FHIR ingest over mutual TLS ([`ingest`]), the registry of hubs that
//! binds each hub certificate to one hub and one patient ([`registry`]), the per-hub authorisation
//! rules ([`authz`]), the clinic's store ([`db`]) or — as the authorising front — an external FHIR
//! server ([`front`]), its TLS configuration ([`tls`]), the Unix-socket listener behind a local
//! proxy ([`unix`]), the development PKI ([`pki`]), the hub CA's revocation lists ([`crl`]) and EST
//! re-enrolment of hub certificates ([`est`]); `vitals-clinic` is its binary ([`cli`]).
//!
//! Off the hub's runtime path: nothing the daemon runs imports this module, and the hub's Debian
//! package builds without it (the `clinic` cargo feature). `vitals-hub demo` starts it in process.

pub mod authz;
pub mod cli;
pub mod console;
pub mod crl;
pub mod db;
pub mod est;
pub mod faults;
pub mod front;
pub mod ingest;
pub mod limits;
pub mod pki;
pub mod registry;
pub mod tls;
pub mod unix;

pub use faults::{Fault, FaultQueue};
pub use ingest::{
    outcome, Access, ClinicOptions, Listen, Receiver, ReceiverConfig, ReceiverStats, MAX_BODY,
};
pub use limits::Limits;
pub use registry::{HubRecord, Registry};

use std::net::SocketAddr;
use std::path::PathBuf;

/// Errors of the clinic's ingest.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    /// The listen address could not be bound.
    #[error(
        "receiver cannot listen on {addr}: {source}; pick a free port or stop the other process"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// Plain HTTP is only for a TLS terminator on the same machine.
    #[error("plain-HTTP mode must bind to a loopback address (127.0.0.1 or ::1), not {0}; put nginx (packaging/clinic/nginx-mtls.conf) in front")]
    PlainNotLoopback(SocketAddr),
    /// The Unix socket of `--plain-socket` could not be bound.
    #[error("cannot listen on the socket {path}: {source}; remove the file or pick another path")]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A certificate, key or CA file could not be used.
    #[error("receiver TLS: {0}")]
    Tls(String),
    /// The receiver's database failed.
    #[error("receiver database {path}: {source}")]
    Db {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
}
