//! vitals-hub: the software of a remote patient monitoring home hub.
//!
//! It reads Bluetooth LE medical devices, keeps every reading encrypted on local disk until the
//! clinic has it, raises alerts on the hub itself, and uploads to the clinic as FHIR R4 over mutual
//! TLS. This page is the map of the crate as it is: the architecture document. (The first plan,
//! `shared/design/ARCHITECTURE.md`, is history; where they differ, this page is right and
//! `tests/architecture.rs` checks the import rules below.)
//!
//! # Which way data flows
//!
//! One direction, no back and forth. Each arrow is a call into the next room; nothing calls back.
//!
//! ```text
//!  BLE device ─► ble::session ─bytes─► gatt::decode ─► model::Reading
//!     ─► ble::Port (defined by ble, implemented by daemon::port::HubPort)
//!          ─► daemon::ingest ─► store (sealed, fsync'd, cursor in the same transaction)
//!                            ─► alerts (rules; raised alerts sealed in the store; local hook)
//!  store outbox ─► uplink ─► fhir (Bundle) ─► mTLS POST ─► fhir::response ─► store ack
//! ```
//!
//! A reading is acknowledged to nothing (RACP cursor, BLE session, log line "stored") before its
//! store transaction has committed, and the store is the only hand-over point between ingest and
//! upload: a process killed anywhere resumes from the store, losing nothing and sending nothing
//! twice.
//!
//! # The rooms
//!
//! **Pure logic** — no tokio, rusqlite, reqwest, `std::fs`, sockets or processes; bytes or values
//! in, values out; tested exhaustively with fixtures and property tests:
//!
//! | module | owns |
//! |---|---|
//! | [`model`] | domain types: readings, kinds, exact decimals with UCUM units, flags, device records handed from `ble` to the store, times (`jiff` underneath), the [`model::Clock`] seam |
//! | [`gatt`] | codecs for the Bluetooth SIG health profiles: bytes in, `model` out; encoders for the hub's writes and the simulators |
//! | [`alerts`] | alert rules: thresholds with exact unit conversion and hysteresis, weight trends, missed measurements by cause; replay |
//! | [`fhir`] | mapping to the HL7 PHD IG: observations, devices, alerts, heartbeat, transaction Bundles; parsing of transaction-responses; the clinic's alert limits as a versioned `ServiceRequest` and the hub's acknowledgement (`fhir::limits`); the hub's security reports as `AuditEvent`s (`fhir::audit`) |
//!
//! **The hub's runtime path** — I/O, each behind a narrow seam, tested against real peers:
//!
//! | module | owns | imports |
//! |---|---|---|
//! | [`ble`] | btleplug sessions behind [`ble::Link`], scan windows, allow-list and bond checks, RACP downloads, pairing over zbus; hands everything over through its own [`ble::Port`] | `gatt`, `model`; never `store`, `uplink` or `daemon` |
//! | [`store`] | SQLite schema and migrations, AEAD sealing (ring) of every PHI column, the outbox, retention and capacity, key files; security events aggregated per code and window into reports for the outbox (`store::security`) | `model` |
//! | [`uplink`] | the mTLS client (reqwest + rustls on ring), certificate reload and renewal over EST, batching, backoff, bisection, heartbeat, clock-sync check; fetching, checking, storing and applying the clinic's alert limits (`uplink::limits`, which hands them to the daemon's ingest) | `fhir`, `store`, `model`, `daemon::Ingest` |
//! | [`daemon`] | the running process (`vitals-hub run`): ingest (store, then rules), the port `ble` hands over through, the alert hook, the tasks, systemd notify and watchdog | everything above |
//! | [`config`] | the one TOML tree, validated with file, line and fix in every error; paths (FHS under systemd, `directories` for a user run) | the section types of the rooms it configures (see below) |
//!
//! **Off the runtime path** — each in its own room; nothing on the daemon's path imports them:
//!
//! | module | owns |
//! |---|---|
//! | [`tech`] | the technician's operations: setup (with the clinic's apt repository: `tech::apt`), doctor, status, commission, export, wipe, the update health gate (`tech::update`) (the radio half — scan, pair, unpair — is [`ble::tech`]) |
//! | [`sim`] | simulated peripherals: a [`ble::Link`] that behaves like each device profile, for the demo and tests |
//! | [`clinic`] | the clinic side, binary `vitals-clinic` (cargo feature `clinic`, on by default, off in the hub's Debian package): the hubs' FHIR ingest over mTLS, the registry binding each hub certificate to one hub and one patient, per-request authorisation ([`clinic::authz`], one set of rules), bounds, the authorising front for an external FHIR server (`serve --fhir-base`, [`clinic::front`]), plain HTTP behind a proxy on loopback or a Unix socket, the development PKI, the hub CA's EST re-enrolment and CRLs, the clinicians' console (`clinic::console`: HTTPS, accounts, worklist and patient pages read through FHIR searches, of the built-in store or of the `--fhir-base` server); `vitals-hub demo` starts it in process |
//! | [`bench`] | the `vitals-hub bench` figures: store, uplink, daemon — never assertions |
//! | [`cli`] | the `vitals-hub` subcommands: parse, start up once ([`cli`]'s `start`), call the library, print |
//!
//! **Config owns no section types.** `config` parses `[ble]`, `[uplink]`, `[alerts]` into the types
//! those rooms define (`ble::BleConfig`, `uplink::UplinkConfig`, `alerts::Rules`, `sim::SimConfig`)
//! so each room keeps its own settings beside the code that reads them, and `config` adds file,
//! line and fix to every error. The price is that `config` imports those rooms' types; none of them
//! imports `config`.
//!
//! # Queues
//!
//! Every queue between tasks is bounded, and what happens when it is full is written where it is
//! made: the store's job channel (callers wait: back-pressure, nothing dropped), the raw stream
//! values to the alert rules (`daemon::port`: the newest value is dropped and counted; its window's
//! summary is still stored), the alert-hook queue, and the wake-up signal of the uplink.

pub mod alerts;
pub mod bench;
pub mod ble;
pub mod cli;
#[cfg(feature = "clinic")]
pub mod clinic;
pub mod config;
pub mod daemon;
pub mod fhir;
pub mod gatt;
pub mod model;
/// The clinic side's former path (`vitals_hub::receiver`), kept for the tests of the hub side.
#[cfg(feature = "clinic")]
pub use clinic as receiver;
pub mod sim;
pub mod store;
pub mod tech;
pub mod uplink;
