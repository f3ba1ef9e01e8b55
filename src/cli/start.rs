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
    // The config is read as invoked, then (as root) the process becomes the service user — before
    // the runtime starts its threads.
    let cfg = load(config)?;
    let rt = runtime().map_err(|e| {
        eprintln!("vitals-hub {name}: cannot start the async runtime: {e}");
        ExitCode::FAILURE
    })?;
    Ok(Start { name, cfg, rt })
}

/// The config the command was given, or the default path's; run as root, the command then acts as
/// the service user ([`act_as_service_user`]). A config error prints its file, line and fix; the
/// exit code is 78 (EX_CONFIG), which systemd does not restart on.
pub(crate) fn load(explicit: Option<&Path>) -> Result<Config, ExitCode> {
    let mut cfg = load_as_invoked(explicit)?;
    act_as_service_user(&mut cfg).map_err(|e| {
        eprintln!("vitals-hub: {e}");
        ExitCode::FAILURE
    })?;
    Ok(cfg)
}

/// [`load`] without giving up root: for `wipe`, which also erases the root-owned config and
/// credentials under /etc (it leaves nothing new behind in the state directory).
pub(crate) fn load_as_invoked(explicit: Option<&Path>) -> Result<Config, ExitCode> {
    let path = config::config_path(explicit);
    Config::load(&path).map_err(|e| {
        eprintln!("vitals-hub: config error\n{e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

/// The one rule for who owns the hub's files: everything under the state directory belongs to the
/// service user ([`config::service_user`]), whoever created it. Run as root (`geteuid`) with the
/// service user present, this
/// 1. fixes the state directory in the config (so no path depends on who runs any more);
/// 2. gives the state directory (when it holds only the hub's entries) and the hub's own
///    entries in it (`store.db*`, `hub.lock`, `keys/` and its files) that another user owns back to
///    the service user — the repair for files an older version left root-owned;
/// 3. switches the process's effective ids and supplementary groups (`bluetooth` among them) to
///    the service user's, before any thread is started and anything under the state directory is
///    opened ([`drop_to`]). Every file the command creates is then the service's own, and
///    the key-file owner check sees the owner it expects.
///
/// Not root, or no service user on this machine (a development run): nothing changes.
pub(crate) fn act_as_service_user(cfg: &mut Config) -> Result<(), String> {
    if !config::is_root() {
        return Ok(());
    }
    let Some(user) = config::service_user() else {
        return Ok(());
    };
    if user.uid == 0 {
        return Ok(());
    }
    let state = cfg.state_dir();
    cfg.hub.state_dir = Some(state.clone());
    act_as_service_user_on(&state, &cfg.path)
}

/// [`act_as_service_user`] for a state directory given on the command line (`keys rotate
/// --state-dir`); `config` is named in the message when the service user cannot reach it.
pub(crate) fn act_as_service_user_on(state: &Path, config: &Path) -> Result<(), String> {
    if !config::is_root() {
        return Ok(());
    }
    let Some(user) = config::service_user() else {
        return Ok(());
    };
    if user.uid == 0 {
        return Ok(());
    }
    hand_over(state, &user)?;
    drop_to(&user)?;
    // Reachable as the service user? (A state directory under a directory only root may enter.)
    if state.exists() {
        std::fs::read_dir(state).map_err(|e| {
            format!(
                "the service user {} cannot open the state directory {}: {e}; fix: move [hub] \
             state_dir in {} to a directory the service user can reach (default {})",
                user.name,
                state.display(),
                config.display(),
                config::SYSTEM_STATE_DIR
            )
        })?;
    }
    Ok(())
}

/// The names of the hub's own entries in a state directory.
fn hub_entry(name: &str) -> bool {
    name == "keys" || name == crate::tech::wipe::LOCK_FILE || name.starts_with("store.db")
}

/// Step 2 of [`act_as_service_user`]: hand the state directory and the hub's entries in it to
/// `user`. Only the hub's own names are touched (never a whole tree: a state_dir
/// set by mistake to `/var/lib` must not chown the machine).
fn hand_over(state: &Path, user: &config::ServiceUser) -> Result<(), String> {
    use std::os::unix::fs::{lchown, MetadataExt};
    let fail = |p: &Path, e: std::io::Error| {
        format!(
            "cannot give {} to the service user {}: {e}",
            p.display(),
            user.name
        )
    };
    let give = |p: &Path| -> Result<(), String> {
        let m = std::fs::symlink_metadata(p).map_err(|e| fail(p, e))?;
        if m.uid() != user.uid {
            lchown(p, Some(user.uid), Some(user.gid)).map_err(|e| fail(p, e))?;
        }
        Ok(())
    };
    // No state directory yet: nothing to hand over (postinst creates it for the service user; a
    // command that needs it says so, and `status` creates nothing).
    if !state.is_dir() {
        return Ok(());
    }
    let entries: Vec<_> = std::fs::read_dir(state)
        .map_err(|e| fail(state, e))?
        .flatten()
        .collect();
    // A directory that already holds other things than the hub's is not handed over as a whole.
    if entries
        .iter()
        .all(|e| hub_entry(&e.file_name().to_string_lossy()))
    {
        give(state)?;
    }
    for e in entries {
        if !hub_entry(&e.file_name().to_string_lossy()) {
            continue;
        }
        let p = e.path();
        give(&p)?;
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            for k in std::fs::read_dir(&p).map_err(|e| fail(&p, e))?.flatten() {
                give(&k.path())?;
            }
        }
    }
    Ok(())
}

/// Step 3 of [`act_as_service_user`]: the effective ids and the supplementary groups become the
/// service user's, so every file the command creates is the service's and every access is checked
/// as the service's. The real and saved uid stay 0, so that [`resume_root`] can take root back for
/// what is root's alone (the file `export --out` writes outside the state directory).
fn drop_to(user: &config::ServiceUser) -> Result<(), String> {
    use nix::unistd::{getgrouplist, setegid, seteuid, setgroups, Gid, Uid};
    let fail = |what: &str, e: nix::Error| {
        format!(
            "cannot act as the service user {} ({what}: {e}); run the command as root",
            user.name
        )
    };
    let gid = Gid::from_raw(user.gid);
    let uid = Uid::from_raw(user.uid);
    let name = std::ffi::CString::new(user.name.as_str())
        .map_err(|_| format!("the service user's name {:?} holds a NUL", user.name))?;
    // Its groups as login would set them: the primary one and every group naming it (`bluetooth`,
    // which postinst adds it to, for BlueZ's D-Bus policy).
    let groups = getgrouplist(&name, gid).map_err(|e| fail("its groups", e))?;
    setgroups(&groups).map_err(|e| fail("setgroups", e))?;
    setegid(gid).map_err(|e| fail("setegid", e))?;
    seteuid(uid).map_err(|e| fail("seteuid", e))?;
    if rustix::process::geteuid().as_raw() != user.uid {
        return Err(format!(
            "cannot act as the service user {}: still uid {}",
            user.name,
            rustix::process::geteuid().as_raw()
        ));
    }
    Ok(())
}

/// Take root back after [`act_as_service_user`] (nothing when the command was not run as root).
/// Only for files outside the state directory.
pub(crate) fn resume_root() -> Result<(), String> {
    use nix::unistd::{getuid, setegid, seteuid, Gid, Uid};
    if !getuid().is_root() || config::is_root() {
        return Ok(());
    }
    seteuid(Uid::from_raw(0)).map_err(|e| format!("cannot take root back: {e}"))?;
    setegid(Gid::from_raw(0)).map_err(|e| format!("cannot take root back: {e}"))
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
