//! `vitals-hub bench store`: the store's throughput and cost figures, printed in one run.

use crate::bench::store as bench;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Appends/s (single and batched, encrypted vs plaintext SQLite), bytes per reading, peak RSS,
    /// AEAD seal throughput.
    Store(StoreBenchArgs),
    /// Drain a backlog to a local receiver over mTLS: readings/s, bytes on the wire per reading,
    /// peak RSS at 10,000 and at the full backlog, beside a bare-client baseline.
    #[cfg(feature = "clinic")]
    Uplink(crate::bench::uplink::UplinkBenchArgs),
    /// The daemon: start to READY, CPU and RSS with idle devices, RSS and CPU under load.
    #[cfg(feature = "clinic")]
    Daemon(crate::bench::daemon::DaemonBenchArgs),
}

#[derive(Debug, Args)]
pub struct StoreBenchArgs {
    /// Readings appended in the batched runs.
    #[arg(long, default_value_t = 20_000)]
    pub readings: usize,
    /// Readings appended one per transaction (each commit is an fsync).
    #[arg(long, default_value_t = 500)]
    pub single: usize,
    /// Readings per batch.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Directory for the temporary databases (default: the system temp dir). Put it on the disk
    /// you want measured.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

pub fn run(args: &BenchArgs) -> ExitCode {
    #[cfg_attr(not(feature = "clinic"), allow(clippy::infallible_destructuring_match))]
    let a = match &args.command {
        BenchCommand::Store(a) => a,
        #[cfg(feature = "clinic")]
        BenchCommand::Uplink(u) => return crate::bench::uplink::run(u),
        #[cfg(feature = "clinic")]
        BenchCommand::Daemon(d) => return crate::bench::daemon::run(d),
    };
    let opts = bench::Options {
        readings: a.readings,
        single: a.single,
        batch: a.batch.max(1),
        dir: a.dir.clone().unwrap_or_else(std::env::temp_dir),
    };
    match bench::run(&opts, &mut std::io::stdout()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
