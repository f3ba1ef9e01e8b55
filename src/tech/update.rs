//! The health gate of an upgrade (issue 19): `vitals-hub update-check`.
//!
//! The hand-over, all in [`UPDATE_DIR`] (root's, 0755; nothing secret in it):
//! - the package's postinst, on an upgrade from `OLD` to `NEW`, writes `pending`
//!   (`from=OLD`, `to=NEW`, `at=` seconds since the epoch), moves the kept package of the version
//!   that ran before to `previous.deb` (when `current.deb` was that version) and keeps its own
//!   package (from apt's archive) as `current.deb`; then it starts
//!   `vitals-hub-update-check.service` (under systemd), which runs this check;
//! - the daemon, once per run, after its first successful upload or heartbeat (so after READY,
//!   with the clinic answering), writes [`HEALTHY_FILE`] in its state directory: its version and
//!   the time ([`mark_healthy`]);
//! - this check waits for that file to name the new version with a time after `at`, up to
//!   [`Options::timeout`] (default 15 min). Healthy: `last-outcome` says `ok`, `pending` goes.
//!   Not: the kept `previous.deb` is reinstalled with `dpkg -i` (the one sanctioned downgrade;
//!   without a kept package, `apt-get install --allow-downgrades vitals-hub=OLD`), with
//!   `VITALS_HUB_ROLLBACK=1` so that its postinst does not start another check, and
//!   `last-outcome` says `rolled-back` (or `rollback-failed`).
//! - the daemon, at its next start, records a new `last-outcome` once in the store's events
//!   (`update`, severity `error` for a rollback, `info` for ok), which go upstream, and the
//!   heartbeat carries it ([`last_outcome`]).
//!
//! Pure parts ([`decide`], [`parse_pending`], [`parse_healthy`]) are tested without apt; the
//! installer is a command ([`Options::dpkg`], [`Options::apt_get`]) so tests can give a fake one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Where postinst and this check hand over.
pub const UPDATE_DIR: &str = "/var/lib/vitals-hub-update";
/// [`UPDATE_DIR`], or `VITALS_HUB_UPDATE_DIR` (tests).
pub fn update_dir() -> PathBuf {
    std::env::var_os("VITALS_HUB_UPDATE_DIR")
        .map_or_else(|| PathBuf::from(UPDATE_DIR), PathBuf::from)
}

/// The daemon's "this version works" file, in its state directory.
pub const HEALTHY_FILE: &str = "healthy-version";
/// The pin refusing a rolled-back version, in [`Options::apt_prefs_dir`]; named to sort before
/// `vitals-clinic.pref` (apt uses the first pin record matching a version).
pub const ROLLED_BACK_PIN: &str = "00-vitals-hub-rolled-back.pref";
/// The default bound for the new version to prove itself.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// The most bytes read of any hand-over file.
const MAX_FILE: u64 = 4096;

/// An upgrade waiting for its check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub from: String,
    pub to: String,
    /// Seconds since the epoch when postinst ran.
    pub at: i64,
}

/// What the daemon wrote after it worked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthy {
    /// The binary's own version (shown; a repacked test package keeps the binary's).
    pub version: String,
    /// When that daemon run started (ms since the epoch): after the upgrade began means it runs
    /// the new binary (dpkg unpacks right after preinst, which stamps the upgrade's start).
    pub started_ms: i64,
    /// When it first worked with the clinic (ms since the epoch).
    pub at_ms: i64,
}

/// The state of the check at a moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Healthy,
    Wait,
    Failed(String),
}

fn fields(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
}

/// A Debian version as this check accepts it (what dpkg allows, and nothing a shell would read).
pub fn valid_version(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.starts_with(|c: char| c.is_ascii_digit())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".+-~:".contains(c))
}

/// `pending` as postinst writes it; an error names what is wrong.
pub fn parse_pending(text: &str) -> Result<Pending, String> {
    let (mut from, mut to, mut at) = (None, None, None);
    for (k, v) in fields(text) {
        match k {
            "from" => from = Some(v.to_string()),
            "to" => to = Some(v.to_string()),
            "at" => at = v.parse::<i64>().ok(),
            _ => {}
        }
    }
    let from = from
        .filter(|v| valid_version(v))
        .ok_or("no valid from= version")?;
    let to = to
        .filter(|v| valid_version(v))
        .ok_or("no valid to= version")?;
    let at = at.ok_or("no at= time")?;
    Ok(Pending { from, to, at })
}

/// The daemon's [`HEALTHY_FILE`].
pub fn parse_healthy(text: &str) -> Option<Healthy> {
    let (mut version, mut started_ms, mut at_ms) = (None, None, None);
    for (k, v) in fields(text) {
        match k {
            "version" => version = Some(v.to_string()),
            "started_ms" => started_ms = v.parse::<i64>().ok(),
            "at_ms" => at_ms = v.parse::<i64>().ok(),
            _ => {}
        }
    }
    Some(Healthy {
        version: version?,
        started_ms: started_ms?,
        at_ms: at_ms?,
    })
}

/// Healthy when a daemon run started after the upgrade began worked with the clinic; failed once
/// `now_secs` is past the bound; else wait.
pub fn decide(p: &Pending, h: Option<&Healthy>, now_secs: i64, timeout: Duration) -> Decision {
    let since = p.at.saturating_mul(1000);
    if let Some(h) = h {
        if h.started_ms >= since && h.at_ms >= since {
            return Decision::Healthy;
        }
    }
    let deadline =
        p.at.saturating_add(i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX));
    if now_secs >= deadline {
        let seen = match h {
            Some(h) => format!(
                "the last run that worked started before the upgrade (binary {})",
                h.version
            ),
            None => "no run has worked yet".to_string(),
        };
        return Decision::Failed(format!(
            "{} did not reach READY and complete an upload or heartbeat within {} s ({seen})",
            p.to,
            timeout.as_secs()
        ));
    }
    Decision::Wait
}

fn read_small(path: &Path) -> Option<String> {
    use std::io::Read;
    let f = std::fs::File::open(path).ok()?;
    let mut s = String::new();
    f.take(MAX_FILE).read_to_string(&mut s).ok()?;
    Some(s)
}

fn write_file(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(d) = path.parent() {
        std::fs::File::open(d)?.sync_all()?;
    }
    Ok(())
}

/// The daemon: this version works (called once per run after the first successful exchange with
/// the clinic). Errors are the caller's to log; they never stop the daemon.
pub fn mark_healthy(state_dir: &Path, started_ms: i64, now_ms: i64) -> std::io::Result<()> {
    write_file(
        &state_dir.join(HEALTHY_FILE),
        &format!(
            "version={}\nstarted_ms={started_ms}\nat_ms={now_ms}\n",
            env!("CARGO_PKG_VERSION")
        ),
        0o600,
    )
}

/// The last update's outcome, one line (`ok 0.9.1 from 0.9.0 at …` / `rolled-back …`), if any.
pub fn last_outcome(update_dir: &Path) -> Option<String> {
    let s = read_small(&update_dir.join("last-outcome"))?;
    let line = s.lines().next()?.trim();
    (!line.is_empty()).then(|| line.chars().take(200).collect())
}

/// The security updates in `apt-get -s upgrade`'s output: `Inst` lines from a `-security` suite.
pub fn count_security(simulation: &str) -> u32 {
    let n = simulation
        .lines()
        .filter(|l| {
            l.starts_with("Inst ") && (l.contains("-security") || l.contains("Debian-Security"))
        })
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// How many security updates apt would install now (`apt-get -s upgrade`, which needs no root
/// and takes no lock), within `timeout`; `None` when apt is missing, fails or is too slow — the
/// heartbeat then says nothing (the clinic shows "unknown"), never fails.
pub fn security_pending(timeout: Duration) -> Option<u32> {
    use std::io::Read;
    let mut child = Command::new("apt-get")
        .args(["-s", "-q", "-o", "Debug::NoLocking=1", "upgrade"])
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let mut out = child.stdout.take()?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = (&mut out).take(4 << 20).read_to_string(&mut s);
        s
    });
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return reader.join().ok().map(|s| count_security(&s)),
            Ok(Some(_)) | Err(_) => return None,
            Ok(None) if std::time::Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// How the check runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub update_dir: PathBuf,
    pub state_dir: PathBuf,
    pub timeout: Duration,
    pub poll: Duration,
    /// The dpkg to reinstall the kept package with.
    pub dpkg: PathBuf,
    /// The apt-get to fetch the previous version with when no package was kept.
    pub apt_get: PathBuf,
    /// Check once and report, never wait or roll back (`--once`).
    pub once: bool,
    /// Where the pin refusing a rolled-back version goes (`/etc/apt/preferences.d`), so that
    /// unattended-upgrades does not take it again the next night; a newer version is taken.
    pub apt_prefs_dir: Option<PathBuf>,
}

impl Options {
    pub fn new(state_dir: PathBuf) -> Options {
        Options {
            update_dir: update_dir(),
            state_dir,
            timeout: DEFAULT_TIMEOUT,
            poll: Duration::from_secs(5),
            dpkg: PathBuf::from("dpkg"),
            apt_get: PathBuf::from("apt-get"),
            once: false,
            apt_prefs_dir: Some(PathBuf::from("/etc/apt/preferences.d")),
        }
    }
}

/// What the check ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    NothingPending,
    Healthy(Pending),
    StillWaiting(Pending),
    RolledBack { pending: Pending, reason: String },
    RollbackFailed { pending: Pending, reason: String },
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn stamp() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The version a package file holds (`dpkg-deb -f FILE Version`).
fn deb_version(dpkg: &Path, deb: &Path) -> Option<String> {
    let dpkg_deb = dpkg.with_file_name(format!("{}-deb", dpkg.file_name()?.to_string_lossy()));
    let out = Command::new(dpkg_deb)
        .arg("-f")
        .arg(deb)
        .arg("Version")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Reinstall `from`: the kept package when it is that version, else apt.
fn roll_back(opts: &Options, p: &Pending) -> Result<String, String> {
    let kept = opts.update_dir.join("previous.deb");
    let mut cmd;
    let how;
    if kept.is_file() && deb_version(&opts.dpkg, &kept).as_deref() == Some(p.from.as_str()) {
        cmd = Command::new(&opts.dpkg);
        cmd.arg("-i").arg(&kept);
        how = format!("dpkg -i {}", kept.display());
    } else {
        cmd = Command::new(&opts.apt_get);
        cmd.args(["install", "-y", "--allow-downgrades"])
            .arg(format!("vitals-hub={}", p.from));
        how = format!("apt-get install --allow-downgrades vitals-hub={}", p.from);
    }
    cmd.env("VITALS_HUB_ROLLBACK", "1")
        .env("DEBIAN_FRONTEND", "noninteractive");
    let out = cmd
        .output()
        .map_err(|e| format!("{how}: cannot run: {e}"))?;
    if out.status.success() {
        Ok(how)
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(3).collect();
        Err(format!(
            "{how} failed ({}): {}",
            out.status,
            tail.join(" / ")
        ))
    }
}

/// Run the check: wait for the new version to prove itself, else roll back; record the outcome.
pub fn check(opts: &Options) -> Result<Outcome, String> {
    let pending_path = opts.update_dir.join("pending");
    let Some(text) = read_small(&pending_path) else {
        return Ok(Outcome::NothingPending);
    };
    let p = parse_pending(&text).map_err(|e| {
        format!(
            "{}: {e}; fix: remove it (the package's postinst writes it on the next upgrade)",
            pending_path.display()
        )
    })?;
    let healthy_path = opts.state_dir.join(HEALTHY_FILE);
    let reason = loop {
        let h = read_small(&healthy_path).and_then(|t| parse_healthy(&t));
        match decide(&p, h.as_ref(), now_secs(), opts.timeout) {
            Decision::Healthy => {
                record(opts, &format!("ok {} from {} at {}", p.to, p.from, stamp()))?;
                let _ = std::fs::remove_file(&pending_path);
                return Ok(Outcome::Healthy(p));
            }
            Decision::Failed(r) => break r,
            Decision::Wait if opts.once => return Ok(Outcome::StillWaiting(p)),
            Decision::Wait => std::thread::sleep(opts.poll),
        }
    };
    let result = roll_back(opts, &p);
    let _ = std::fs::remove_file(&pending_path);
    if result.is_ok() {
        // The kept package is the one running again: kept for the next rollback.
        let _ = std::fs::rename(
            opts.update_dir.join("previous.deb"),
            opts.update_dir.join("current.deb"),
        );
    }
    if let Some(dir) = &opts.apt_prefs_dir {
        let pin = format!(
            "# Written by `vitals-hub update-check`: {} failed its health check on this hub and was\n\
             # rolled back; apt does not take it again (a newer version is taken).\n\
             Package: vitals-hub\nPin: version {}\nPin-Priority: -1\n",
            p.to, p.to
        );
        if let Err(e) = write_file(&dir.join(ROLLED_BACK_PIN), &pin, 0o644) {
            tracing::warn!(error = %e, "Could not pin the rolled-back version.");
        }
    }
    match result {
        Ok(how) => {
            record(
                opts,
                &format!(
                    "rolled-back {} to {} at {}: {reason}; reinstalled by {how}",
                    p.to,
                    p.from,
                    stamp()
                ),
            )?;
            Ok(Outcome::RolledBack { pending: p, reason })
        }
        Err(e) => {
            let reason = format!("{reason}; the rollback failed: {e}");
            record(
                opts,
                &format!(
                    "rollback-failed {} to {} at {}: {reason}",
                    p.to,
                    p.from,
                    stamp()
                ),
            )?;
            Ok(Outcome::RollbackFailed { pending: p, reason })
        }
    }
}

fn record(opts: &Options, line: &str) -> Result<(), String> {
    write_file(
        &opts.update_dir.join("last-outcome"),
        &format!("{line}\n"),
        0o644,
    )
    .map_err(|e| {
        format!(
            "cannot write {}: {e}",
            opts.update_dir.join("last-outcome").display()
        )
    })
}

/// The severity the daemon records an outcome with.
pub fn outcome_severity(line: &str) -> &'static str {
    if line.starts_with("ok ") {
        "info"
    } else {
        "error"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> Pending {
        Pending {
            from: "0.1.0".into(),
            to: "0.2.0".into(),
            at: 1_000,
        }
    }

    #[test]
    fn healthy_only_for_the_new_version_after_the_upgrade() {
        let t = Duration::from_secs(900);
        let h = |started_ms, at_ms| Healthy {
            version: "0.2.0".into(),
            started_ms,
            at_ms,
        };
        let new_run = h(1_000_100, 1_000_500);
        // A run that worked before the upgrade; one started before it that worked only after.
        let before = h(900_000, 999_999);
        let old_run_late = h(999_000, 1_200_000);
        assert_eq!(decide(&p(), Some(&new_run), 1_001, t), Decision::Healthy);
        assert_eq!(decide(&p(), Some(&before), 1_001, t), Decision::Wait);
        assert_eq!(decide(&p(), Some(&old_run_late), 1_899, t), Decision::Wait);
        match decide(&p(), Some(&old_run_late), 1_900, t) {
            Decision::Failed(r) => assert!(
                r.contains("before the upgrade") && r.contains("900 s"),
                "{r}"
            ),
            d => panic!("{d:?}"),
        }
        assert!(matches!(decide(&p(), None, 5_000, t), Decision::Failed(_)));
    }

    #[test]
    fn security_updates_are_counted_from_apts_simulation() {
        let sim = "Reading package lists...\n\
            Inst openssl [3.0.11-1~deb12u1] (3.0.13-1~deb12u1 Debian-Security:12/stable-security [amd64])\n\
            Inst vitals-hub [0.9.0] (0.9.1 vitals-clinic:stable [arm64])\n\
            Inst libc6 [2.36-9] (2.36-9+deb12u4 Debian:12.5/stable [amd64])\n\
            Conf openssl (3.0.13-1~deb12u1 Debian-Security:12/stable-security [amd64])\n";
        assert_eq!(count_security(sim), 1);
        assert_eq!(count_security(""), 0);
    }

    #[test]
    fn pending_is_parsed_and_hostile_versions_refused() {
        assert_eq!(
            parse_pending("from=0.1.0\nto=0.2.0\nat=1000\n").unwrap(),
            p()
        );
        assert!(parse_pending("from=0.1.0;rm -rf /\nto=0.2.0\nat=1").is_err());
        assert!(parse_pending("from=0.1.0\nat=1").is_err());
        assert!(parse_pending("from=0.1.0\nto=0.2.0\nat=soon").is_err());
        assert!(valid_version("1:0.9.1-1~bpo12+1"));
        assert!(!valid_version("-o Dpkg::x"));
    }
}
