//! The `vitals-hub` subcommands. Thin: parse, call the library, print.

mod alerts;
mod bench;
mod commission;
pub(crate) mod daemon;
mod decode;
#[cfg(feature = "clinic")]
pub(crate) mod demo;
mod held;
mod keys;
#[cfg(feature = "clinic")]
mod pki;
mod progress;
#[cfg(feature = "clinic")]
mod receiver;
mod start;
mod sync;
mod tech;
mod tech_radio;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// vitals-hub: remote patient monitoring home hub.
#[derive(Debug, Parser)]
#[command(name = "vitals-hub", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the hub (the daemon systemd starts): BLE sessions, the encrypted store, alerts, upload.
    Run(daemon::RunArgs),
    /// See the whole product on this machine: simulated devices, a local clinic receiver over
    /// mutual TLS, everything real in between.
    #[cfg(feature = "clinic")]
    Demo(demo::DemoArgs),
    /// List the health devices nearby (advertised profiles, name, address, RSSI), marking those
    /// already paired and those with a profile the hub does not read.
    Scan(tech_radio::ScanArgs),
    /// Pair a device (passkey prompt when it asks), read its information, set its clock where
    /// allowed, and put it on the allow-list bound to the patient.
    Pair(tech_radio::PairArgs),
    /// Download a paired device now (a meter's stored records), with progress; for when the
    /// daemon is stopped.
    Read(tech_radio::ReadArgs),
    /// Take a device off the allow-list and remove its bond.
    Unpair(tech_radio::UnpairArgs),
    /// The paired devices: last seen, last reading, battery, bond security, expected schedule.
    Devices(tech_radio::DevicesArgs),
    /// The install report: each paired device's acknowledged readings, clock offsets, RSSI, and
    /// the doctor's checklist; printed, and sent to the clinic.
    Commission(commission::CommissionArgs),
    /// Upload the backlog now, with progress (when the daemon is not running).
    Sync(sync::SyncArgs),
    /// The config file: check it, show where files are looked for.
    #[command(subcommand)]
    Config(daemon::ConfigCommand),
    /// Decode one Bluetooth GATT value (hex) of a health characteristic and print its fields and
    /// readings.
    Decode(decode::DecodeArgs),
    /// Readings of another user on a multi-user scale or cuff: list, assign to the patient
    /// (through the alert rules), discard.
    #[command(subcommand)]
    Held(held::HeldCommand),
    /// Key management: rotate the data key or the key-encryption key.
    Keys(keys::KeysArgs),
    /// Measure the hub on this machine.
    Bench(bench::BenchArgs),
    /// Alert rules: replay them over recorded readings, print the starting points.
    #[command(subcommand)]
    Alerts(alerts::AlertsCommand),
    /// The clinic's FHIR ingest: an alias of `vitals-clinic serve` (enrolled hubs only).
    #[cfg(feature = "clinic")]
    Receiver(Box<receiver::ReceiverArgs>),
    /// Mint a development PKI (CA, receiver and hub certificates) and enrol the hub in a clinic
    /// store beside it. NOT FOR PRODUCTION.
    #[cfg(feature = "clinic")]
    Pki(pki::PkiArgs),
    /// The hub's health: upload backlog, last sync, alerts, devices, last errors (read-only; safe
    /// while the daemon runs).
    Status(tech::StatusArgs),
    /// Decrypt and write the patient's readings in a time range as FHIR (a `collection` Bundle)
    /// or CSV (read-only; safe while the daemon runs).
    Export(tech::ExportArgs),
    /// Decommission: erase the store, the keys and the credentials (asks first; refuses while the
    /// daemon runs).
    Wipe(tech::WipeArgs),
    /// A checklist of the hub's health, each line PASS / WARN / FAIL with the fix: config, BLE
    /// adapter, BlueZ, clock, disk, key modes, certificate, clinic over mutual TLS, backlog. Exit 1
    /// when a check fails.
    Doctor(tech::DoctorArgs),
    /// Enrol the hub: check the clinic credentials, install them with the right modes and owners,
    /// write the config (prompts on a terminal for what the flags do not give).
    Setup(tech::SetupArgs),
    /// The health gate after an upgrade: wait for the new version to reach READY and complete an
    /// upload or heartbeat, else reinstall the previous one (README, "Updates").
    UpdateCheck(tech::UpdateCheckArgs),
}

/// Exit status for input that cannot be decoded or used.
pub const EXIT_BAD_INPUT: u8 = 2;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => daemon::run(&args),
        #[cfg(feature = "clinic")]
        Command::Demo(args) => demo::run(&args),
        Command::Config(cmd) => daemon::config(&cmd),
        Command::Scan(args) => tech_radio::scan(&args),
        Command::Sync(args) => sync::run(&args),
        Command::Commission(args) => commission::run(&args),
        Command::Pair(args) => tech_radio::pair(&args),
        Command::Read(args) => tech_radio::read(&args),
        Command::Unpair(args) => tech_radio::unpair(&args),
        Command::Devices(args) => tech_radio::devices(&args),
        Command::Decode(args) => decode::run(&args),
        Command::Held(cmd) => held::run(&cmd),
        Command::Keys(args) => keys::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Alerts(cmd) => match alerts::run(&cmd) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("vitals-hub alerts: {e:#}");
                ExitCode::from(EXIT_BAD_INPUT)
            }
        },
        #[cfg(feature = "clinic")]
        Command::Receiver(args) => receiver::run(&args),
        #[cfg(feature = "clinic")]
        Command::Pki(args) => pki::run(&args),
        Command::Status(args) => tech::status(&args),
        Command::Export(args) => tech::export(&args),
        Command::Wipe(args) => tech::wipe(&args),
        Command::Doctor(args) => tech::doctor(&args),
        Command::Setup(args) => tech::setup(&args),
        Command::UpdateCheck(args) => tech::update_check(&args),
    }
}
