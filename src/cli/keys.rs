//! `vitals-hub keys rotate`: a new data key (rows re-encrypted in short batches while ingest goes
//! on), or with `--kek` a new key-encryption key (data keys re-wrapped, key file replaced atomically).

use crate::model::SystemClock;
use crate::store::{Store, StoreConfig};
use anyhow::Context;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Rotate the data key (default) or the key-encryption key (`--kek`).
    Rotate(RotateArgs),
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    /// The hub's state directory (holds store.db and keys/kek).
    #[arg(long, default_value = "/var/lib/vitals-hub")]
    pub state_dir: PathBuf,
    /// Rotate the key-encryption key instead of the data key.
    #[arg(long)]
    pub kek: bool,
    /// Rows re-encrypted per transaction.
    #[arg(long, default_value_t = 200)]
    pub batch: usize,
}

pub fn run(args: &KeysArgs) -> ExitCode {
    match run_inner(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_inner(args: &KeysArgs) -> anyhow::Result<()> {
    let KeysCommand::Rotate(a) = &args.command;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let cfg = StoreConfig::new(&a.state_dir);
        let store = Store::open(cfg, Arc::new(SystemClock))
            .await
            .with_context(|| format!("opening the store in {}", a.state_dir.display()))?;
        if a.kek {
            let id = store.rotate_kek().await.context("rotating the KEK")?;
            println!("KEK rotated; new fingerprint {id}");
        } else {
            let r = store
                .rotate_data_key(a.batch)
                .await
                .context("rotating the data key")?;
            println!(
                "data key {} active; {} rows re-encrypted; {} old keys deleted",
                r.new_key_id, r.rows_reencrypted, r.keys_deleted
            );
        }
        store.close().await;
        Ok(())
    })
}
