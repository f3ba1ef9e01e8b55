//! Who owns the hub's files (issue 13): everything under the state directory belongs to the
//! service user, whoever created it. The real binary run as root (the technician's `sudo
//! vitals-hub …`) before and after the daemon has run as the service user: every command works and
//! no file under the state directory is left root-owned.
//!
//! Needs root (to run commands as root and the daemon as another user); skipped otherwise, except
//! under `CI=true`. The service user is `nobody` here, through `VITALS_HUB_SERVICE_USER` (the
//! installed hub's `vitals-hub` user is what the variable replaces).
#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "daemon_support/mod.rs"]
mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use support::*;

const SERVICE: &str = "nobody";

/// The service user's (uid, gid), when the test can run: root here, `nobody` present.
fn service_user() -> Option<(u32, u32)> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if !rustix::process::geteuid().is_root() {
        assert!(!ci, "CI=true: tests/tech_owner.rs needs root");
        eprintln!("skipped: not root");
        return None;
    }
    let Some(u) = uzers::get_user_by_name(SERVICE) else {
        assert!(!ci, "CI=true: no user `{SERVICE}`");
        eprintln!("skipped: no user `{SERVICE}`");
        return None;
    };
    Some((u.uid(), u.primary_group_id()))
}

/// The hub binary as root, with `nobody` as the service user.
fn as_root(args: &[&str], config: &Path) -> Output {
    hub_command()
        .args(args)
        .arg("--config")
        .arg(config)
        .env("VITALS_HUB_SERVICE_USER", SERVICE)
        .env_remove("CREDENTIALS_DIRECTORY")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn all_under(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            all_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Every file and directory under `state` (itself included) belongs to `uid`.
fn owned_by(state: &Path, uid: u32, after: &str) {
    let mut files = Vec::new();
    all_under(state, &mut files);
    let wrong: Vec<String> = files
        .iter()
        .filter_map(|p| {
            let m = std::fs::symlink_metadata(p).unwrap();
            (m.uid() != uid).then(|| format!("{} (uid {})", p.display(), m.uid()))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "after {after}: not the service user's: {wrong:?}"
    );
}

/// A world the service user can reach: the temporary directory 0755, the hub's key its own (as
/// `setup` leaves it).
async fn world(uid: u32, gid: u32) -> World {
    let w = World::new().await;
    std::fs::set_permissions(w.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let pki = w.dir.path().join("pki");
    std::fs::set_permissions(&pki, std::fs::Permissions::from_mode(0o755)).unwrap();
    for e in std::fs::read_dir(&pki).unwrap().flatten() {
        std::os::unix::fs::chown(e.path(), Some(uid), Some(gid)).unwrap();
    }
    w
}

/// The daemon as systemd starts it: `vitals-hub run` as the service user.
fn daemon(w: &World, config: &Path, uid: u32, gid: u32) -> std::process::Child {
    // The service user may not be able to reach the build's binary (a checkout under a 0700
    // directory): it runs a copy in the world's directory, which it can reach.
    let exe = w.dir.path().join("vitals-hub");
    if !exe.exists() {
        std::fs::copy(env!("CARGO_BIN_EXE_vitals-hub"), &exe).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut cmd = Command::new(&exe);
    cmd.args(["run", "--config"])
        .arg(config)
        .env("VITALS_HUB_LOG", "info")
        .env("VITALS_HUB_SERVICE_USER", SERVICE)
        .env_remove("CREDENTIALS_DIRECTORY")
        .current_dir(w.dir.path())
        .uid(uid)
        .gid(gid)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // The copy was just written: while another test thread forks to spawn its own child, that
    // child holds the copy's write descriptor until it execs, and executing the copy then fails
    // with ETXTBSY ("Text file busy"). Seen once in CI; the child execs within milliseconds.
    for _ in 0..100 {
        match cmd.spawn() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                std::thread::sleep(Duration::from_millis(20));
            }
            spawned => return spawned.unwrap(),
        }
    }
    cmd.spawn().unwrap()
}

fn run_daemon_a_while(w: &World, config: &Path, uid: u32, gid: u32) {
    let mut hub = daemon(w, config, uid, gid);
    std::thread::sleep(Duration::from_secs(4));
    signal(&hub, "TERM");
    let status = wait_exit(&mut hub, 15);
    let err = stderr_of(&mut hub);
    assert!(
        status.is_some_and(|s| s.success()),
        "the daemon as the service user failed: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_commands_before_and_after_the_daemon_leave_the_service_users_files() {
    let Some((uid, gid)) = service_user() else {
        return;
    };
    let w = world(uid, gid).await;
    let config = w.config("hub.toml", FAST_DEVICES);
    let state = w.state_dir();
    // As postinst leaves it (here created by root: an empty directory is handed over too).
    std::fs::create_dir(&state).unwrap();

    // Before the daemon's first start: root creates the store.
    ok("sync --now", &as_root(&["sync", "--now"], &config));
    owned_by(&state, uid, "sync --now before the first start");
    ok("status", &as_root(&["status", "--json"], &config));
    owned_by(&state, uid, "status");

    // The service's own start works on what root created.
    run_daemon_a_while(&w, &config, uid, gid);
    owned_by(&state, uid, "the daemon's run");

    // After it: the README's root commands.
    ok("status", &as_root(&["status", "--json"], &config));
    let out_file = w.dir.path().join("export.json");
    ok(
        "export",
        &as_root(
            &[
                "export",
                "--from",
                "2000-01-01",
                "--to",
                "2100-01-01",
                "--format",
                "fhir",
                "--out",
                out_file.to_str().unwrap(),
            ],
            &config,
        ),
    );
    // The export is the invoker's (root's) file, outside the state directory, 0600.
    let m = std::fs::metadata(&out_file).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o777), (0, 0o600));
    ok("sync --now", &as_root(&["sync", "--now"], &config));
    ok("keys rotate", &as_root(&["keys", "rotate"], &config));
    let _ = as_root(&["doctor"], &config);
    owned_by(&state, uid, "root's commands after the daemon");

    // And the service starts again.
    run_daemon_a_while(&w, &config, uid, gid);
    owned_by(&state, uid, "the daemon's second run");
}

/// `wipe` before the daemon's first start (no lock file yet) takes the lock: the lock file it
/// creates is the service user's, not root's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wipe_before_the_first_start_leaves_no_root_owned_lock() {
    let Some((uid, gid)) = service_user() else {
        return;
    };
    let w = world(uid, gid).await;
    let config = w.config("hub.toml", "");
    let state = w.state_dir();
    std::fs::create_dir(&state).unwrap();
    std::os::unix::fs::chown(&state, Some(uid), Some(gid)).unwrap();
    let _ = gid;
    // wipe erases the config it is given: a copy.
    let copy = w.dir.path().join("wipe.toml");
    std::fs::copy(&config, &copy).unwrap();
    ok("wipe", &as_root(&["wipe", "--yes"], &copy));
    owned_by(&state, uid, "wipe");
    run_daemon_a_while(&w, &config, uid, gid);
    owned_by(&state, uid, "the daemon's run after wipe");
}

/// A key file left root-owned by an older version: a root command gives it back to the service
/// user (the repair), and the daemon then reads its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_owned_files_from_before_are_given_back() {
    let Some((uid, gid)) = service_user() else {
        return;
    };
    let w = world(uid, gid).await;
    let config = w.config("hub.toml", "");
    let state = w.state_dir();
    // What a root `sync --now` of an older version left: everything root's.
    std::fs::create_dir(&state).unwrap();
    let out = hub_command()
        .args(["sync", "--now", "--config"])
        .arg(&config)
        .env("VITALS_HUB_SERVICE_USER", "no-such-user-here")
        .output()
        .unwrap();
    ok("sync as plain root", &out);
    let kek = state.join("keys").join("kek");
    assert_eq!(std::fs::metadata(&kek).unwrap().uid(), 0);
    ok("status", &as_root(&["status", "--json"], &config));
    owned_by(&state, uid, "status (the repair)");
    run_daemon_a_while(&w, &config, uid, gid);
}
