//! The update health gate (`vitals-hub update-check`, issue 19) without apt: a fake dpkg and
//! apt-get record how they were called; the hand-over files are the ones postinst writes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::{Path, PathBuf};
use std::time::Duration;
use vitals_hub::tech::update::{self, Options, Outcome};

struct Rig {
    _dir: tempfile::TempDir,
    update: PathBuf,
    state: PathBuf,
    prefs: PathBuf,
    log: PathBuf,
    bin: PathBuf,
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A fake program writing its arguments and VITALS_HUB_ROLLBACK to `log`, exiting `rc`.
fn fake(path: &Path, log: &Path, rc: i32, stdout: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(
        path,
        format!(
            "#!/bin/sh\necho \"$(basename \"$0\") $* rollback=$VITALS_HUB_ROLLBACK\" >>'{}'\nprintf '%s' '{stdout}'\nexit {rc}\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn rig(dpkg_rc: i32, kept_version: &str) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    for d in ["update", "state", "prefs", "bin"] {
        std::fs::create_dir(p(d)).unwrap();
    }
    let log = p("calls.log");
    fake(&p("bin/dpkg"), &log, dpkg_rc, "");
    fake(&p("bin/dpkg-deb"), &log, 0, kept_version);
    fake(&p("bin/apt-get"), &log, 0, "");
    Rig {
        update: p("update"),
        state: p("state"),
        prefs: p("prefs"),
        log,
        bin: p("bin"),
        _dir: dir,
    }
}

impl Rig {
    fn opts(&self, timeout: u64) -> Options {
        let mut o = Options::new(self.state.clone());
        o.update_dir = self.update.clone();
        o.timeout = Duration::from_secs(timeout);
        o.poll = Duration::from_millis(100);
        o.dpkg = self.bin.join("dpkg");
        o.apt_get = self.bin.join("apt-get");
        o.apt_prefs_dir = Some(self.prefs.clone());
        o
    }
    fn pending(&self, at: i64) {
        std::fs::write(
            self.update.join("pending"),
            format!("from=0.9.0-1\nto=0.9.1-1\nat={at}\n"),
        )
        .unwrap();
    }
    fn outcome(&self) -> String {
        update::last_outcome(&self.update).unwrap_or_default()
    }
    fn calls(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

#[test]
fn a_new_version_that_worked_after_the_upgrade_passes() {
    let r = rig(0, "0.9.0-1");
    let at = now_secs();
    r.pending(at);
    assert!(matches!(
        update::check(&Options {
            once: true,
            ..r.opts(900)
        })
        .unwrap(),
        Outcome::StillWaiting(_)
    ));
    // The daemon restarted on the new binary and uploaded, while the check waits.
    let state = r.state.clone();
    let marker = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        update::mark_healthy(&state, at * 1000 + 10, at * 1000 + 200).unwrap();
    });
    let out = update::check(&r.opts(30)).unwrap();
    marker.join().unwrap();
    assert!(matches!(out, Outcome::Healthy(_)), "{out:?}");
    assert!(
        r.outcome().starts_with("ok 0.9.1-1 from 0.9.0-1 at "),
        "{}",
        r.outcome()
    );
    assert!(!r.update.join("pending").exists());
    assert_eq!(
        r.calls().lines().filter(|l| l.starts_with("dpkg ")).count(),
        0
    );
    assert_eq!(update::outcome_severity(&r.outcome()), "info");
    assert!(matches!(
        update::check(&r.opts(30)).unwrap(),
        Outcome::NothingPending
    ));
}

#[test]
fn a_version_that_never_worked_is_rolled_back_from_the_kept_package_and_pinned_away() {
    let r = rig(0, "0.9.0-1");
    let at = now_secs();
    r.pending(at);
    std::fs::write(r.update.join("previous.deb"), b"kept").unwrap();
    // Only a run from before the upgrade ever worked: that is not the new version.
    update::mark_healthy(&r.state, (at - 60) * 1000, (at - 50) * 1000).unwrap();
    let out = update::check(&r.opts(1)).unwrap();
    let Outcome::RolledBack { reason, .. } = out else {
        panic!("{out:?}")
    };
    assert!(reason.contains("within 1 s"), "{reason}");
    let calls = r.calls();
    let kept = r.update.join("previous.deb");
    assert!(
        calls.contains(&format!("dpkg -i {} rollback=1", kept.display())),
        "{calls}"
    );
    assert!(!calls.contains("apt-get"), "{calls}");
    assert!(
        r.outcome()
            .starts_with("rolled-back 0.9.1-1 to 0.9.0-1 at "),
        "{}",
        r.outcome()
    );
    assert_eq!(update::outcome_severity(&r.outcome()), "error");
    assert!(!r.update.join("pending").exists());
    // The package running again is kept for the next rollback.
    assert!(r.update.join("current.deb").exists() && !kept.exists());
    let pin = std::fs::read_to_string(r.prefs.join(update::ROLLED_BACK_PIN)).unwrap();
    assert!(
        pin.contains("Package: vitals-hub\nPin: version 0.9.1-1\nPin-Priority: -1\n"),
        "{pin}"
    );
}

#[test]
fn without_a_kept_package_of_that_version_apt_fetches_the_previous_one() {
    // The kept package is of another version: not used.
    let r = rig(0, "0.8.0-1");
    r.pending(now_secs());
    std::fs::write(r.update.join("previous.deb"), b"kept").unwrap();
    let out = update::check(&r.opts(0)).unwrap();
    assert!(matches!(out, Outcome::RolledBack { .. }), "{out:?}");
    let calls = r.calls();
    assert!(
        calls.contains("apt-get install -y --allow-downgrades vitals-hub=0.9.0-1 rollback=1"),
        "{calls}"
    );
    assert!(!calls.contains("dpkg -i"), "{calls}");
}

#[test]
fn a_failed_rollback_is_recorded_as_such() {
    let r = rig(1, "0.9.0-1");
    r.pending(now_secs());
    std::fs::write(r.update.join("previous.deb"), b"kept").unwrap();
    let out = update::check(&r.opts(0)).unwrap();
    assert!(matches!(out, Outcome::RollbackFailed { .. }), "{out:?}");
    assert!(
        r.outcome()
            .starts_with("rollback-failed 0.9.1-1 to 0.9.0-1"),
        "{}",
        r.outcome()
    );
    assert!(
        r.update.join("previous.deb").exists(),
        "the kept package stays"
    );
}

#[test]
fn a_hostile_pending_file_is_refused_and_nothing_is_run() {
    let r = rig(0, "0.9.0-1");
    std::fs::write(
        r.update.join("pending"),
        "from=0.9.0 --force-all\nto=0.9.1\nat=1\n",
    )
    .unwrap();
    let e = update::check(&r.opts(0)).unwrap_err();
    assert!(
        e.contains("pending") && e.contains("no valid from= version") && e.contains("fix:"),
        "{e}"
    );
    assert_eq!(r.calls(), "");
}
