//! vitals-hub: the software of a remote patient monitoring home hub.
//!
//! It reads Bluetooth LE medical devices, keeps every reading encrypted on local disk until the
//! clinic has it, raises alerts on the hub itself, and uploads to the clinic as FHIR R4 over mutual
//! TLS. The components, in the order data flows through them:
//!
//! - [`model`]: domain types — [`model::Reading`], measurement kinds, exact decimal values with UCUM
//!   units, special values, clinically relevant status flags.
//! - [`gatt`]: pure codecs for the Bluetooth SIG health profiles (SFLOAT/FLOAT, glucose + RACP, blood
//!   pressure, heart rate, pulse oximetry, thermometer, weight scale, CGM, current time, device
//!   information, battery) — bytes in, `model` out, and encoders for the hub's writes and simulators.
//! - [`store`]: the encrypted store-and-forward store (SQLite + ring AEAD): devices, readings,
//!   download cursors, the upload outbox, alerts and the audit log; fsync'd before anything is acked.
//! - [`ble`]: Bluetooth LE sessions (btleplug behind a narrow `Link` seam): scanning in windows,
//!   the allow-list and bond check, one session per device, RACP downloads, pairing via zbus.
//! - [`alerts`]: pure alert rules — thresholds with exact unit conversion and hysteresis, weight
//!   trends, missed measurements by cause — and the replay used to try them.
//! - [`fhir`]: pure mapping to the HL7 PHD IG (Observations, PhdDevice / PhgDevice, coincident
//!   timestamps, conditional-create identifiers, bounded transaction Bundles) and parsing of
//!   transaction-responses.
//! - [`uplink`]: the mTLS client (reqwest + rustls on ring, certificate reload) and the sync loop:
//!   batches from the outbox, per-entry acks, backoff, bisection of refused bundles, heartbeat.
//! - [`receiver`]: a small FHIR ingest endpoint over mTLS (demo, pilots, tests) with a scripted fault
//!   queue, and the development PKI behind `vitals-hub pki`.
//! - [`config`]: the one TOML config tree, validated with file, line and fix in every error; the
//!   paths (FHS under systemd, `directories` for a user run).
//! - [`hub`]: wiring — the daemon ([`hub::run`]: BLE sessions, simulated devices, ingest into the
//!   store and the alert rules, the uplink, systemd notification and watchdog), the local alert
//!   hook.
//! - [`cli`]: the `vitals-hub` subcommands; thin — parse, call the library, print.

pub mod alerts;
pub mod bench;
pub mod ble;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod fhir;
pub mod gatt;
pub mod model;
pub mod receiver;
pub mod sim;
pub mod store;
pub mod tech;
pub mod uplink;
