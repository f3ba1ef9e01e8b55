//! `vitals-hub wipe`: decommission — erase the store, the KEK and the hub's credentials so the card
//! holds no PHI.
//!
//! **Daemon detection.** The daemon holds an exclusive `flock` on `<state_dir>/hub.lock` for its
//! whole life ([`hold_lock`]); wipe takes the same lock without waiting and refuses when it cannot.
//! An flock dies with its process (no stale pid files after a crash or SIGKILL) and works for the
//! systemd unit and a hand-started `vitals-hub run` alike.
//!
//! **Erasure.** Each file is overwritten with zeros, fsync'd, then unlinked, and its directory
//! fsync'd. On flash media (SD cards, eMMC) the controller remaps blocks, so overwriting is
//! best-effort: the real guarantee is that readings were only ever stored encrypted and the KEK
//! that wraps their keys is gone.

use crate::config::Config;
use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file the daemon holds.
pub const LOCK_FILE: &str = "hub.lock";

/// Errors of a wipe.
#[derive(Debug, thiserror::Error)]
pub enum WipeError {
    /// The daemon holds the state directory.
    #[error(
        "the hub daemon is running (it holds {0}); stop it first: `systemctl stop vitals-hub` \
         (and `systemctl disable vitals-hub` so it does not start again)"
    )]
    DaemonRunning(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WipeError + '_ {
    move |source| WipeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Take the daemon's lock on `state_dir` (which must exist); held until the file is dropped.
/// `Ok(None)` when another process holds it. A lock file created by root (`wipe`) is given to the
/// owner of the state directory, the service user: the service must be able to open it after.
pub fn hold_lock(state_dir: &Path) -> Result<Option<File>, WipeError> {
    use std::os::unix::fs::MetadataExt;
    let path = state_dir.join(LOCK_FILE);
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(&path))?;
    let owner = fs::metadata(state_dir).map_err(io(state_dir))?.uid();
    if f.metadata().map_err(io(&path))?.uid() != owner && crate::config::is_root() {
        std::os::unix::fs::fchown(&f, Some(owner), None).map_err(io(&path))?;
    }
    match f.try_lock() {
        Ok(()) => Ok(Some(f)),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => Err(io(&path)(e)),
    }
}

/// Zeros over the whole file, fsync, unlink, fsync the directory.
fn erase_file(path: &Path) -> Result<u64, WipeError> {
    let mut f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io(path))?;
    let len = f.metadata().map_err(io(path))?.len();
    f.seek(SeekFrom::Start(0)).map_err(io(path))?;
    let zeros = [0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left.min(zeros.len() as u64)).unwrap_or(zeros.len());
        f.write_all(zeros.get(..n).unwrap_or(&zeros))
            .map_err(io(path))?;
        left -= n as u64;
    }
    f.sync_all().map_err(io(path))?;
    drop(f);
    fs::remove_file(path).map_err(io(path))?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(len)
}

/// Every regular file under `dir`, recursively (symlinks are not followed).
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), WipeError> {
    for e in fs::read_dir(dir).map_err(io(dir))? {
        let e = e.map_err(io(dir))?;
        let t = e.file_type().map_err(io(&e.path()))?;
        if t.is_dir() {
            files_under(&e.path(), out)?;
        } else if t.is_file() {
            out.push(e.path());
        }
    }
    Ok(())
}

/// What would be erased: the store files, the key directory, and the credentials the config names
/// when they sit under the state directory or /etc/vitals-hub (a CA bundle or key elsewhere, e.g.
/// a systemd credential store, is not the hub's to erase).
pub fn targets(cfg: &Config) -> Result<Vec<PathBuf>, WipeError> {
    let state = cfg.state_dir();
    let mut out = Vec::new();
    for name in [
        "store.db",
        "store.db-wal",
        "store.db-shm",
        crate::store::CHECK_FAILED_MARKER,
    ] {
        let p = state.join(name);
        if p.is_file() {
            out.push(p);
        }
    }
    // Stores moved aside as corrupt still hold sealed PHI.
    if let Ok(rd) = fs::read_dir(&state) {
        for e in rd.flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with("store.db.corrupt-")
            {
                out.push(e.path());
            }
        }
    }
    let keys = state.join("keys");
    if keys.is_dir() {
        files_under(&keys, &mut out)?;
    }
    let etc = Path::new("/etc/vitals-hub");
    for p in [
        cfg.uplink.client_key.as_ref(),
        cfg.uplink.client_cert.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        if (p.starts_with(&state) || p.starts_with(etc)) && p.is_file() && !out.contains(p) {
            out.push(p.clone());
        }
    }
    // The config names the patient (their logical id): it goes too, last.
    if cfg.path.is_file() && !out.contains(&cfg.path) {
        out.push(cfg.path.clone());
    }
    Ok(out)
}

/// Erase everything [`targets`] lists; refuses while the daemon runs. Returns each file erased
/// with its size.
pub fn wipe(cfg: &Config) -> Result<Vec<(PathBuf, u64)>, WipeError> {
    let state = cfg.state_dir();
    let _lock = if state.is_dir() {
        match hold_lock(&state)? {
            Some(l) => Some(l),
            None => return Err(WipeError::DaemonRunning(state.join(LOCK_FILE))),
        }
    } else {
        None
    };
    let mut done = Vec::new();
    for p in targets(cfg)? {
        let n = erase_file(&p)?;
        done.push((p, n));
    }
    let keys = state.join("keys");
    if keys.is_dir() {
        let _ = fs::remove_dir_all(&keys);
    }
    // The next store records the wipe (a security event for the clinic): only the time, no PHI.
    if state.is_dir() && !done.is_empty() {
        let marker = state.join(crate::store::WIPED_MARKER);
        let now = crate::model::Clock::now(&crate::model::SystemClock).0;
        fs::write(&marker, format!("{now}\n")).map_err(io(&marker))?;
        // Run as root, the marker goes to the state directory's owner (the service user), like
        // every file under it: nothing there is left root-owned.
        if let Ok(meta) = fs::metadata(&state) {
            use std::os::unix::fs::MetadataExt;
            let _ = std::os::unix::fs::chown(&marker, Some(meta.uid()), Some(meta.gid()));
        }
    }
    Ok(done)
}
