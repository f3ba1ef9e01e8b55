//! The start-up every subcommand shares, written once: load the config (a config error prints
//! file, line and fix and exits 78), build the async runtime, and open the store in the mode the
//! command needs — read-only beside a running daemon, beside it with writes, or alone with the
//! daemon's lock held.
//!
//! The store modes, and who uses them:
//! - [`Access::ReadOnly`]: `status`, `export`, `doctor` — no migration, no reset of in-flight
//!   uploads, no events; safe beside the daemon (SQLite's WAL shows the last committed state).
//! - [`Access::BesideDaemon`]: `pair`, `unpair`, `devices` — writes allowed, the daemon's in-flight
//!   uploads left alone.
//! - [`Access::Exclusive`]: `sync`, `read`, `commission` — only with the daemon's lock
//!   (`<state>/hub.lock`) held, so nothing else writes; see [`Start::lock`].

use super::daemon::{runtime, EXIT_CONFIG};
use crate::config::{self, Config};
use crate::model::Clock;
use crate::store::{Store, StoreConfig};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

/// How a command opens the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Read-only, beside a running daemon.
    ReadOnly,
    /// Writes allowed beside a running daemon, which keeps its in-flight uploads.
    BesideDaemon,
    /// The only writer: the caller holds the daemon's lock ([`Start::lock`]).
    Exclusive,
}

/// A command's start: its name (for messages), the loaded config and the runtime.
#[derive(Debug)]
pub(crate) struct Start {
    pub name: &'static str,
    pub cfg: Config,
    pub rt: tokio::runtime::Runtime,
}

/// Load the config the command was given (or the default path) and build the runtime. Each
/// failure is printed, naming the command; the exit code is returned for `main`.
pub(crate) fn start(name: &'static str, config: Option<&Path>) -> Result<Start, ExitCode> {
    let cfg = load(config)?;
    let rt = runtime().map_err(|e| {
        eprintln!("vitals-hub {name}: cannot start the async runtime: {e}");
        ExitCode::FAILURE
    })?;
    Ok(Start { name, cfg, rt })
}

/// The config the command was given, or the default path's. A config error prints its file, line
/// and fix; the exit code is 78 (EX_CONFIG), which systemd does not restart on.
pub(crate) fn load(explicit: Option<&Path>) -> Result<Config, ExitCode> {
    let path = config::config_path(explicit);
    Config::load(&path).map_err(|e| {
        eprintln!("vitals-hub: config error\n{e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

/// The store's settings for this hub's config ([`Config::store_config`]) in `access` mode.
pub(crate) fn store_config(cfg: &Config, access: Access) -> StoreConfig {
    let mut sc = cfg.store_config();
    match access {
        Access::ReadOnly => sc.read_only = true,
        Access::BesideDaemon => sc.recover_in_flight = false,
        Access::Exclusive => {}
    }
    sc
}

impl Start {
    /// Take the daemon's lock on the state directory, or refuse: `Ok(None)` means the daemon (or
    /// another command) holds it, and `while_running` has been printed as the reason.
    pub fn lock(&self, while_running: &str) -> Result<std::fs::File, ExitCode> {
        match crate::tech::wipe::hold_lock(&self.cfg.state_dir()) {
            Ok(Some(l)) => Ok(l),
            Ok(None) => {
                eprintln!("vitals-hub {}: {while_running}", self.name);
                Err(ExitCode::from(1))
            }
            Err(e) => {
                eprintln!("vitals-hub {}: {e}", self.name);
                Err(ExitCode::FAILURE)
            }
        }
    }
}

/// Open the store of `cfg` in `access` mode; the error names the state directory's problem.
pub(crate) async fn open_store(
    cfg: &Config,
    access: Access,
    clock: Arc<dyn Clock>,
) -> Result<Store, String> {
    Store::open(store_config(cfg, access), clock)
        .await
        .map_err(|e| {
            format!(
                "cannot open the hub's store in {}: {e}",
                cfg.state_dir().display()
            )
        })
}
