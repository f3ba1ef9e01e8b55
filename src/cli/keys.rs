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
    /// The config file (default as for `run`); its state directory holds the store and its keys.
    #[arg(long, conflicts_with = "state_dir")]
    pub config: Option<PathBuf>,
    /// The hub's state directory (holds store.db and keys/kek), instead of the config's.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
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
    // The store of the config given (as root: acting as the service user, who owns its files), or
    // of the state directory given.
    let (cfg, origin) = match &a.state_dir {
        Some(dir) => {
            super::start::act_as_service_user_on(dir, dir).map_err(anyhow::Error::msg)?;
            (StoreConfig::new(dir), "--state-dir".to_string())
        }
        None => {
            let c = super::start::load(a.config.as_deref())
                .map_err(|_| anyhow::anyhow!("the config cannot be used (see above)"))?;
            let origin = format!("[hub] state_dir of {}", c.path.display());
            (c.store_config(), origin)
        }
    };
    let dir = cfg.state_dir.clone();
    // Rotation is for an existing store: a mistyped directory must not get a new store and key.
    if !dir.join("store.db").is_file() {
        anyhow::bail!(
            "no store in {} (from {origin}): `keys rotate` rotates the keys of an existing store; \
             give the hub's config (--config) or its state directory (--state-dir) — the store is \
             created by the hub's first start, not by this command",
            dir.display()
        );
    }
    // The daemon seals with the data key it loaded: rotating under it would let it write with a
    // key this command then deletes. Only with the daemon's lock held, like `sync` and `wipe`.
    let _lock = match crate::tech::wipe::hold_lock(&dir) {
        Ok(Some(lock)) => lock,
        Ok(None) => anyhow::bail!(
            "the hub's daemon is running (it holds {}): keys are rotated with the daemon stopped — \
             `sudo systemctl stop vitals-hub`, then `vitals-hub keys rotate`, then \
             `sudo systemctl start vitals-hub`",
            dir.join("hub.lock").display()
        ),
        Err(e) => anyhow::bail!("{e}"),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let store = Store::open(cfg, Arc::new(SystemClock))
            .await
            .with_context(|| format!("opening the store in {}", dir.display()))?;
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
