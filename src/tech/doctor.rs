//! `vitals-hub doctor`: a checklist of what a working hub needs, each line pass / warn / fail with
//! the fix. Read-only: the store is opened read-only and the clinic probe carries no PHI
//! (`GET <base_url>/metadata`), so doctor is safe beside the running daemon. `commission` calls
//! [`run`] for its report.
//!
//! Thresholds (chosen here, stated in the README):
//! - disk: FAIL below [`MIN_FREE_BYTES`] free on the state directory's file system; WARN when the
//!   free space is less than the store may still grow by (`size_limit_mb` minus its current size),
//!   because the disk would then fill before the store refuses appends.
//! - client certificate: FAIL when expired (≤ 0 days left), WARN at ≤ [`CERT_WARN_DAYS`] days.
//! - certificate renewal: when the EST renewal is due; WARN when it is off or the last attempts
//!   failed (the daemon's record) or the clinic refused the renewed certificate.
//! - backlog: the oldest entry waiting for upload; WARN over 1 h, FAIL over 24 h.
//! - security reports: how many wait to go upstream and the newest's code and time (a PASS line
//!   for the record; the backlog line judges the delay).
//! - modes: the client key and the KEK must not be readable by group or others (0600 / 0400), the
//!   state directory must be 0700.

use crate::config::Config;
use crate::model::{Clock, SystemClock};
use crate::uplink::{tls, TimeSync, UplinkError};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Below this much free space on the state directory's file system, doctor fails.
pub const MIN_FREE_BYTES: u64 = 100 * 1024 * 1024;
/// A client certificate with this many days left or fewer is a warning.
pub const CERT_WARN_DAYS: i64 = 30;
/// Backlog age thresholds, seconds.
pub const BACKLOG_WARN_SECS: i64 = 3600;
pub const BACKLOG_FAIL_SECS: i64 = 24 * 3600;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One line of the checklist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// A stable short name (`ble adapter`, `clinic`, …).
    pub name: String,
    pub status: Status,
    /// What was found (never key material, never PHI).
    pub detail: String,
    /// What to do; `None` when the check passed.
    pub fix: Option<String>,
}

impl Check {
    fn pass(name: &str, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: Status::Pass,
            detail: detail.into(),
            fix: None,
        }
    }
    fn warn(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
    fn fail(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// The check line for a config that does not load (then no other check can run).
pub fn config_failure(e: &crate::config::ConfigError) -> Check {
    let path = e.path.display();
    let message = &e.message;
    Check::fail("config", format!("{path}: {message}"), e.fix.clone())
}

/// Whether any check failed.
pub fn any_failed(checks: &[Check]) -> bool {
    checks.iter().any(|c| c.status == Status::Fail)
}

/// The checklist as text, one line per check: status, name, detail, and the fix when not passing.
pub fn render_text(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        out.push_str(&format!(
            "{}  {:<18} {}",
            c.status.label(),
            c.name,
            c.detail
        ));
        if let Some(f) = &c.fix {
            out.push_str(" — fix: ");
            out.push_str(f);
        }
        out.push('\n');
    }
    out
}

/// Run every check for `cfg` (the config itself has loaded; see [`config_failure`] otherwise).
pub async fn run(cfg: &Config) -> Vec<Check> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let now_secs = clock.now().as_millis().div_euclid(1000);
    let mut out = vec![config_check(cfg)];
    out.push(adapter_check(cfg.ble.adapter.as_deref()).await);
    out.push(bluez_version_check().await);
    out.push(clock_check(cfg).await);
    out.push(disk_check(cfg).await);
    out.extend(mode_checks(cfg));
    out.extend(certificate_checks(cfg, now_secs));
    out.push(renewal_check(cfg, clock.clone(), now_secs).await);
    out.push(clinic_check(cfg).await);
    out.push(capability_check(cfg).await);
    out.push(patient_check(cfg).await);
    out.push(limits_check(cfg, clock.clone()).await);
    out.push(backlog_check(cfg, clock.clone(), now_secs).await);
    out.push(security_check(cfg, clock).await);
    out
}

fn config_check(cfg: &Config) -> Check {
    let path = cfg.path.display().to_string();
    let warnings = cfg.warnings();
    if warnings.is_empty() {
        Check::pass("config", format!("{path}: valid"))
    } else {
        Check::warn(
            "config",
            format!("{path}: valid; {}", warnings.join("; ")),
            "see `vitals-hub config check` and the README's configuration section",
        )
    }
}

/// `org.bluez.Adapter1.Powered` on the adapter the hub uses (`[ble] adapter`, else the first
/// BlueZ lists: the same choice as the daemon's), over the system bus.
async fn adapter_check(configured: Option<&str>) -> Check {
    const NAME: &str = "ble adapter";
    let op = Duration::from_secs(5);
    let conn = match tokio::time::timeout(op, zbus::Connection::system()).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            return Check::fail(
                NAME,
                format!("BlueZ is not reachable on the system bus ({e})"),
                "start BlueZ: `sudo systemctl enable --now bluetooth`, and check the D-Bus policy lets the hub's user talk to org.bluez",
            )
        }
        Err(_) => {
            return Check::fail(
                NAME,
                "the system bus did not answer in 5 s",
                "check `systemctl status dbus bluetooth`",
            )
        }
    };
    let adapter = match crate::ble::adapter::name(configured, op).await {
        Ok(a) => a,
        Err(crate::ble::BleError::NoAdapter) => {
            return Check::fail(
                NAME,
                "no Bluetooth adapter",
                "plug in or enable the Bluetooth adapter (`rfkill unblock bluetooth`; `bluetoothctl list` must show it)",
            )
        }
        Err(e @ crate::ble::BleError::AdapterMissing(_)) => {
            return Check::fail(NAME, e.to_string(), "set `[ble] adapter` to one `bluetoothctl list` shows, or remove it")
        }
        // Told below, with the D-Bus error's kind.
        Err(_) => configured.unwrap_or("hci0").to_string(),
    };
    let adapter_path = crate::ble::adapter::path(&adapter);
    let call = conn.call_method(
        Some("org.bluez"),
        adapter_path.as_str(),
        Some("org.freedesktop.DBus.Properties"),
        "Get",
        &("org.bluez.Adapter1", "Powered"),
    );
    let reply = match tokio::time::timeout(op, call).await {
        Ok(Ok(r)) => r,
        Ok(Err(zbus::Error::MethodError(name, _, _)))
            if name.as_str().ends_with("ServiceUnknown")
                || name.as_str().ends_with("NameHasNoOwner") =>
        {
            return Check::fail(
                NAME,
                "BlueZ is not reachable: no org.bluez on the system bus",
                "start BlueZ: `sudo systemctl enable --now bluetooth`",
            )
        }
        Ok(Err(zbus::Error::MethodError(name, _, _)))
            if name.as_str().ends_with("UnknownObject")
                || name.as_str().ends_with("UnknownInterface")
                || name.as_str().ends_with("UnknownMethod") =>
        {
            return Check::fail(
                NAME,
                format!("no Bluetooth adapter {adapter}"),
                "plug in or enable the Bluetooth adapter (`rfkill unblock bluetooth`; `bluetoothctl list` must show it)",
            )
        }
        Ok(Err(e)) => {
            return Check::fail(
                NAME,
                format!("BlueZ is not reachable: reading {adapter}'s Powered failed ({e})"),
                "check `systemctl status bluetooth` and the D-Bus policy for org.bluez",
            )
        }
        Err(_) => {
            return Check::fail(
                NAME,
                "BlueZ did not answer in 5 s",
                "restart it: `sudo systemctl restart bluetooth`",
            )
        }
    };
    let powered = reply
        .body()
        .deserialize::<zbus::OwnedVariant>()
        .ok()
        .and_then(|v| bool::try_from(v).ok());
    match powered {
        Some(true) => Check::pass(NAME, format!("{adapter} present and powered")),
        Some(false) => Check::fail(
            NAME,
            format!("{adapter} present but not powered"),
            "`bluetoothctl power on` (and `rfkill unblock bluetooth` if it is blocked)",
        ),
        None => Check::fail(
            NAME,
            format!("{adapter}'s Powered property is not a boolean"),
            "check the BlueZ installation (`bluetoothctl show`)",
        ),
    }
}

/// `bluetoothctl --version` when it is installed; BlueZ does not publish its version on D-Bus.
async fn bluez_version_check() -> Check {
    const NAME: &str = "bluez version";
    let out = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::process::Command::new("bluetoothctl")
            .arg("--version")
            .output(),
    )
    .await;
    match out {
        Ok(Ok(o)) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout).trim().to_string();
            let version = text.rsplit(' ').next().unwrap_or_default().to_string();
            let major_minor: Vec<u32> = version.split('.').filter_map(|p| p.parse().ok()).collect();
            match major_minor.as_slice() {
                // 5.51 opened the D-Bus policy to the default context (security-notes c.7).
                [5, minor, ..] if *minor >= 51 => Check::pass(NAME, format!("BlueZ {version}")),
                [_, ..] => Check::warn(
                    NAME,
                    format!("BlueZ {version} is older than 5.51"),
                    "upgrade bluez (the hub is tested with 5.51 and later)",
                ),
                [] => Check::warn(
                    NAME,
                    format!("unknown (bluetoothctl said {text:?})"),
                    "check the bluez package",
                ),
            }
        }
        _ => Check::warn(
            NAME,
            "unknown (bluetoothctl is not installed)",
            "install the bluez package (`sudo apt install bluez`) to see the version",
        ),
    }
}

async fn clock_check(cfg: &Config) -> Check {
    const NAME: &str = "clock";
    let synced = tokio::task::spawn_blocking(|| crate::uplink::SystemdTimeSync.is_synchronised())
        .await
        .unwrap_or(false);
    if synced {
        Check::pass(NAME, "synchronised (systemd-timesyncd)")
    } else if cfg.uplink.require_clock_sync {
        Check::fail(
            NAME,
            "not synchronised: uploads wait for NTP",
            "`sudo timedatectl set-ntp true`, check the network reaches an NTP server (`timedatectl timesync-status`)",
        )
    } else {
        Check::warn(
            NAME,
            "not synchronised (uploads do not wait: require_clock_sync = false)",
            "`sudo timedatectl set-ntp true`; device times may be corrected wrongly until then",
        )
    }
}

/// The nearest existing directory at or above `p` (the state directory may not exist yet).
fn existing_ancestor(p: &Path) -> Option<PathBuf> {
    p.ancestors().find(|a| a.is_dir()).map(Path::to_path_buf)
}

async fn disk_check(cfg: &Config) -> Check {
    const NAME: &str = "disk space";
    let state = cfg.state_dir();
    let Some(dir) = existing_ancestor(&state) else {
        return Check::fail(
            NAME,
            format!("no directory of {} exists", state.display()),
            "check `state_dir` in [hub]",
        );
    };
    let probe_dir = dir.clone();
    let free = tokio::task::spawn_blocking(move || crate::uplink::sync::free_disk(&probe_dir))
        .await
        .ok()
        .flatten();
    let Some(free) = free else {
        return Check::warn(
            NAME,
            format!("could not read the free space of {}", dir.display()),
            "check that the hub's user may read that directory (statvfs failed)",
        );
    };
    let used = std::fs::metadata(state.join("store.db"))
        .map(|m| m.len())
        .unwrap_or(0);
    let limit = cfg.store.size_limit_mb.saturating_mul(1 << 20);
    let headroom = limit.saturating_sub(used);
    let mb = |b: u64| b / (1 << 20);
    if free < MIN_FREE_BYTES {
        Check::fail(
            NAME,
            format!("{} MB free on {} (under {} MB)", mb(free), dir.display(), mb(MIN_FREE_BYTES)),
            "free space on that file system (old logs: `journalctl --vacuum-size=50M`) or move `state_dir`",
        )
    } else if free < headroom {
        Check::warn(
            NAME,
            format!(
                "{} MB free on {}, less than the store may still grow ({} MB to its {} MB limit)",
                mb(free),
                dir.display(),
                mb(headroom),
                cfg.store.size_limit_mb
            ),
            "free space, or lower `size_limit_mb` in [store] so the store refuses appends before the disk fills",
        )
    } else {
        Check::pass(NAME, format!("{} MB free on {}", mb(free), dir.display()))
    }
}

/// The mode lines: client key, KEK, state directory.
fn mode_checks(cfg: &Config) -> Vec<Check> {
    let mut out = Vec::new();
    match cfg.uplink.cert_paths() {
        Ok(p) => out.push(secret_mode("client key mode", &p.key)),
        Err(e) => out.push(Check::fail(
            "client key mode",
            e.to_string(),
            "set `client_key` in [uplink] (or run under systemd with the credential)",
        )),
    }
    let state = cfg.state_dir();
    let kek = crate::store::KekSource::from_env(&state);
    let kek_path = kek.path().to_path_buf();
    if kek_path.exists() {
        out.push(secret_mode("kek mode", &kek_path));
    } else {
        out.push(Check::warn(
            "kek mode",
            format!("{} does not exist yet", kek_path.display()),
            "the daemon creates it at its first start (`vitals-hub run`)",
        ));
    }
    out.push(state_dir_mode(&state));
    out
}

fn secret_mode(name: &str, path: &Path) -> Check {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(m) => {
            let mode = m.permissions().mode() & 0o7777;
            if mode & 0o077 == 0 {
                Check::pass(name, format!("{} is {mode:04o}", path.display()))
            } else {
                Check::fail(
                    name,
                    format!(
                        "{} is {mode:04o}: group or others can read it",
                        path.display()
                    ),
                    format!("chmod 600 {}", path.display()),
                )
            }
        }
        Err(e) => Check::fail(
            name,
            format!("{}: {e}", path.display()),
            "install the file (`vitals-hub setup`) or correct the path in the config",
        ),
    }
}

fn state_dir_mode(state: &Path) -> Check {
    use std::os::unix::fs::PermissionsExt;
    const NAME: &str = "state dir mode";
    match std::fs::metadata(state) {
        Ok(m) => {
            let mode = m.permissions().mode() & 0o7777;
            if mode & 0o077 == 0 {
                Check::pass(NAME, format!("{} is {mode:04o}", state.display()))
            } else {
                Check::fail(
                    NAME,
                    format!(
                        "{} is {mode:04o}: group or others can enter it",
                        state.display()
                    ),
                    format!("chmod 700 {}", state.display()),
                )
            }
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            match uncreatable(state) {
                None => Check::warn(
                    NAME,
                    format!("{} does not exist yet", state.display()),
                    "the daemon creates it at its first start, or run `vitals-hub setup`",
                ),
                Some((why, true)) => Check::fail(
                    NAME,
                    format!("{} does not exist and cannot be created: {why}", state.display()),
                    "correct [hub] state_dir: a path whose every parent is a directory",
                ),
                Some((why, false)) => Check::fail(
                    NAME,
                    format!("{} does not exist and cannot be created: {why}", state.display()),
                    format!(
                        "create it for the service user (`sudo install -d -m 0700 -o {u} -g {u} {}`), \
                         or set [hub] state_dir to a directory the hub can create",
                        state.display(),
                        u = crate::config::service_user_name()
                    ),
                ),
            }
        }
        Err(e) => Check::fail(
            NAME,
            format!("{}: {e}", state.display()),
            "give the service user access to the state directory's parents",
        ),
    }
}

/// Why a missing directory `dir` cannot be created by this process (its effective ids): the
/// nearest existing ancestor is not a directory, or is not writable and searchable. `None` when it
/// can; the flag tells a file in the path (a wrong path) from a permission.
fn uncreatable(dir: &Path) -> Option<(String, bool)> {
    use rustix::fs::{accessat, Access, AtFlags, CWD};
    let ancestor = dir.ancestors().skip(1).find(|a| a.exists())?;
    if !ancestor.is_dir() {
        return Some((
            format!("{} is a file, not a directory", ancestor.display()),
            true,
        ));
    }
    let euid = rustix::process::geteuid().as_raw();
    match accessat(
        CWD,
        ancestor,
        Access::WRITE_OK | Access::EXEC_OK,
        AtFlags::EACCESS,
    ) {
        Ok(()) => None,
        Err(_) => Some((
            format!("{} is not writable by uid {euid}", ancestor.display()),
            false,
        )),
    }
}

/// Days left of the certificate in `cert` (leaf first), `now_secs` since the epoch.
pub fn days_left(cert: &Path, now_secs: i64) -> Option<i64> {
    use rustls_pki_types::pem::PemObject;
    let leaf = rustls_pki_types::CertificateDer::pem_file_iter(cert)
        .ok()?
        .next()?
        .ok()?;
    let v = tls::validity(leaf.as_ref())?;
    Some((v.not_after - now_secs).div_euclid(86_400))
}

/// The certificate lines: the key matches the certificate and its days left; the chain verifies to
/// the clinic CA.
fn certificate_checks(cfg: &Config, now_secs: i64) -> Vec<Check> {
    const CERT: &str = "client certificate";
    const CHAIN: &str = "certificate chain";
    let paths = match cfg.uplink.cert_paths() {
        Ok(p) => p,
        Err(e) => {
            return vec![Check::fail(
                CERT,
                e.to_string(),
                "set `client_cert` and `client_key` in [uplink]",
            )]
        }
    };
    let mut out = Vec::new();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    match tls::ReloadingCert::new(paths.clone(), provider) {
        Err(e) => {
            let text = e.to_string();
            let fix = if text.contains("do not form a pair") {
                "install the key that belongs to this certificate (or the certificate issued for this key): `vitals-hub setup --force` with the matching pair"
            } else {
                "install a readable PEM certificate and key (`vitals-hub setup`)"
            };
            // Certificate and key swapped (or one of them the wrong kind): the real cause.
            if let Some(m) = super::setup::swapped(
                &paths.cert,
                &paths.key,
                ("client_cert", "client_key"),
            ) {
                let (detail, fix) = m.split_once("; fix: ").unwrap_or((m.as_str(), ""));
                out.push(Check::fail(
                    CERT,
                    detail.to_string(),
                    format!("{fix} in [uplink] of {}", cfg.path.display()),
                ));
                return out;
            }
            let detail = if text.contains("do not form a pair") {
                format!(
                    "the key {} does not match the certificate {}",
                    paths.key.display(),
                    paths.cert.display()
                )
            } else {
                text
            };
            out.push(Check::fail(CERT, detail, fix));
        }
        Ok(_) => match days_left(&paths.cert, now_secs) {
            None => out.push(Check::fail(
                CERT,
                format!("cannot read the validity of {}", paths.cert.display()),
                "install a valid X.509 certificate",
            )),
            Some(d) if d <= 0 => out.push(Check::fail(
                CERT,
                format!("{} has expired (key matches)", paths.cert.display()),
                "renew the hub certificate at the clinic CA and install it (`vitals-hub setup --force`)",
            )),
            Some(d) if d <= CERT_WARN_DAYS => out.push(Check::warn(
                CERT,
                format!("key matches; {d} days left"),
                "renew the hub certificate before it expires",
            )),
            Some(d) => out.push(Check::pass(CERT, format!("key matches; {d} days left"))),
        },
    }
    let now = rustls_pki_types::UnixTime::since_unix_epoch(Duration::from_secs(
        u64::try_from(now_secs).unwrap_or(0),
    ));
    match tls::verify_client_chain(&cfg.uplink.ca_bundle, &paths.cert, now) {
        Ok(()) => out.push(Check::pass(
            CHAIN,
            format!("verifies to the clinic CA {}", cfg.uplink.ca_bundle.display()),
        )),
        Err(e) => out.push(Check::fail(
            CHAIN,
            e.to_string(),
            format!(
                "`ca_bundle` must be the clinic's CA that issued the hub certificate; install the right CA bundle at {} or a certificate issued by it",
                cfg.uplink.ca_bundle.display()
            ),
        )),
    }
    out
}

/// The fix for a failed clinic probe.
fn probe_fix(e: &UplinkError, cfg: &Config) -> String {
    let url = &cfg.uplink.base_url;
    match e {
        UplinkError::Refused | UplinkError::Timeout | UplinkError::Reset(_) | UplinkError::Network(_) => format!(
            "check the hub's network and that the clinic server at {url} is up (the clinic's IT); check `base_url` in [uplink]"
        ),
        UplinkError::Dns(_) => format!("check DNS on the hub and the host name in `base_url` ({url})"),
        UplinkError::Http { status: 404, .. } => {
            format!("`base_url` {url} is not the clinic's FHIR base (no /metadata there)")
        }
        UplinkError::ServerCertUntrusted(_) => {
            "`ca_bundle` must hold the CA that issued the clinic server's certificate".into()
        }
        UplinkError::CertificateRevoked(_) => {
            "the clinic revoked this hub's certificate: ask the clinic to enrol a new one (`vitals-clinic hub enroll`), then install it (`vitals-hub setup --force`)".into()
        }
        UplinkError::ServerRejectedOurCertificate(_) | UplinkError::OwnCertificateExpired(_) => {
            "install a hub certificate issued by the clinic's hub CA (`vitals-hub setup --force`)".into()
        }
        UplinkError::ClockNotSynchronised
        | UplinkError::ServerCertExpired
        | UplinkError::ServerCertNotYetValid => {
            "check the hub clock (line `clock`), else the clinic must renew its certificate".into()
        }
        _ => "see the message; the README's uplink section lists each failure".into(),
    }
}

async fn clinic_check(cfg: &Config) -> Check {
    const NAME: &str = "clinic";
    // The probe's own timeouts come from the config; cap the whole check too.
    let limit = cfg.uplink.request_timeout() + cfg.uplink.connect_timeout();
    match tokio::time::timeout(limit, crate::uplink::sync::probe(&cfg.uplink)).await {
        Ok(Ok(status)) => Check::pass(
            NAME,
            format!(
                "{} answered GET /metadata with {status} over mutual TLS",
                cfg.uplink.base_url
            ),
        ),
        Ok(Err(e)) => Check::fail(
            NAME,
            format!("{} not reachable over mutual TLS: {e}", cfg.uplink.base_url),
            probe_fix(&e, cfg),
        ),
        Err(_) => Check::fail(
            NAME,
            format!("{} did not answer in time", cfg.uplink.base_url),
            probe_fix(&UplinkError::Timeout, cfg),
        ),
    }
}

/// The refusal the running uplink recorded (`uplink::refusal`): every upload refused since when,
/// and why. `None` when there is no store yet or it cannot be read (the `backlog` line says so).
async fn recorded_refusal(cfg: &Config) -> Option<crate::uplink::refusal::Refusal> {
    if !cfg.state_dir().join("store.db").exists() {
        return None;
    }
    let store = super::status::open_read_only(cfg, Arc::new(SystemClock))
        .await
        .ok()?;
    let r = crate::uplink::refusal::load(&store).await.ok().flatten();
    store.close().await;
    r
}

/// The clinic server's CapabilityStatement: transaction and conditional create (issue 15); and a
/// lasting refusal of every upload, recorded by the running uplink, with the fix for its kind.
async fn capability_check(cfg: &Config) -> Check {
    const NAME: &str = "fhir server";
    if let Some(r) = recorded_refusal(cfg).await {
        return Check::fail(
            NAME,
            format!(
                "every upload refused since {} ({}): {}{}",
                r.since.to_rfc3339(),
                r.kind.as_str(),
                r.kind.describe(),
                if r.raised { "; hub alert raised" } else { "" }
            ),
            r.kind.fix(),
        );
    }
    let limit = cfg.uplink.request_timeout() + cfg.uplink.connect_timeout();
    match tokio::time::timeout(limit, crate::uplink::sync::capability(&cfg.uplink)).await {
        Ok(Ok(gaps)) if gaps.is_empty() => Check::pass(
            NAME,
            "CapabilityStatement: transaction and conditional create of Observation and Device",
        ),
        Ok(Ok(gaps)) => Check::warn(
            NAME,
            format!("CapabilityStatement: {}", gaps.join("; ")),
            "the hub needs transactions and conditional create (ifNoneExist) of Observation and Device: enable them on the clinic's FHIR server (README, FHIR servers)",
        ),
        Ok(Err(e)) => Check::warn(
            NAME,
            format!("CapabilityStatement not read: {}", e.summary()),
            "see the line `clinic`",
        ),
        Err(_) => Check::warn(NAME, "CapabilityStatement: no answer in time", "see the line `clinic`"),
    }
}

/// Whether the clinic knows the hub's configured patient, asked with a count-only search (no
/// demographics). The value itself is never printed (doctor's output may be pasted into a ticket);
/// `config check` and `status` read it back to the technician.
async fn patient_check(cfg: &Config) -> Check {
    use crate::uplink::sync::PatientAtServer;
    const NAME: &str = "patient";
    let limit = cfg.uplink.request_timeout() + cfg.uplink.connect_timeout();
    match tokio::time::timeout(limit, crate::uplink::sync::patient_at_server(&cfg.uplink)).await {
        Ok(Ok(PatientAtServer::Known)) => Check::pass(
            NAME,
            "the clinic knows the configured `patient_id` (count-only search)",
        ),
        Ok(Ok(PatientAtServer::Unknown)) => Check::warn(
            NAME,
            "no Patient with the configured `patient_id` at the clinic's FHIR server",
            "compare `patient_id` (`vitals-hub config check` shows it) with the clinic's record: a typo is fixed with `vitals-hub setup --force`; a new patient must first be created at the clinic (README, FHIR servers)",
        ),
        Ok(Ok(PatientAtServer::Refused(status))) => Check::fail(
            NAME,
            format!("the clinic refuses (HTTP {status}) to answer for the configured `patient_id`: this hub's certificate is enrolled for another patient, and every upload will be refused"),
            "compare `patient_id` (`vitals-hub config check` shows it) with the clinic's enrollment (`vitals-clinic hub list`); a typo is fixed with `vitals-hub setup --force` and the right id; never re-enroll the certificate to match a typo",
        ),
        Ok(Err(e)) => Check::warn(
            NAME,
            format!("not asked: {}", e.summary()),
            "see the line `clinic`",
        ),
        Err(_) => Check::warn(NAME, "no answer in time", "see the line `clinic`"),
    }
}

/// Which alert limits are in force and where they come from (issue 18).
async fn limits_check(cfg: &Config, clock: Arc<dyn Clock>) -> Check {
    const NAME: &str = "alert limits";
    if !cfg.state_dir().join("store.db").exists() {
        return Check::pass(NAME, "hub.toml [alerts] (no store yet)");
    }
    let shown = match super::status::open_read_only(cfg, clock).await {
        Ok(store) => {
            let s = crate::uplink::limits::shown(&store).await;
            store.close().await;
            s
        }
        Err(e) => Err(e),
    };
    match shown {
        Ok(s) if s.last_refusal.is_some() => Check::warn(
            NAME,
            s.to_string(),
            "the clinic's newest version was refused and the hub keeps the one shown; correct and save it again in the console",
        ),
        Ok(s) => Check::pass(NAME, s.to_string()),
        Err(e) => Check::fail(
            NAME,
            format!("cannot read the store: {e}"),
            "see `vitals-hub status`",
        ),
    }
}

/// The certificate's renewal over EST: when it is due, and the last attempt's outcome as the
/// daemon recorded it ([`crate::uplink::renew`]).
async fn renewal_check(cfg: &Config, clock: Arc<dyn Clock>, now_secs: i64) -> Check {
    const NAME: &str = "certificate renewal";
    let pct = cfg.uplink.renew_at_percent;
    if pct == 0 {
        return Check::warn(
            NAME,
            "off (`renew_at_percent = 0`)",
            "the certificate must be replaced by hand before it expires; set `renew_at_percent` (default 67) in [uplink] to renew it over EST",
        );
    }
    let due = cfg.uplink.cert_paths().ok().and_then(|p| {
        use rustls_pki_types::pem::PemObject;
        let leaf = rustls_pki_types::CertificateDer::pem_file_iter(&p.cert)
            .ok()?
            .next()?
            .ok()?;
        tls::validity(leaf.as_ref()).map(|v| crate::uplink::renew::renew_at(v, pct))
    });
    let due_text = match due {
        Some(t) if t <= now_secs => "due now".to_string(),
        Some(t) => format!(
            "due {}",
            jiff::Timestamp::from_second(t)
                .map(|t| t.to_string())
                .unwrap_or_else(|_| t.to_string())
        ),
        None => "due date unknown".to_string(),
    };
    let state = match (
        cfg.uplink.validate(),
        cfg.state_dir().join("store.db").exists(),
    ) {
        (Ok(url), true) => match super::status::open_read_only(cfg, clock).await {
            Ok(store) => {
                let v = store
                    .uplink_state(
                        &crate::uplink::sync::destination_of(&url),
                        crate::uplink::renew::RENEWAL_STATE,
                    )
                    .await
                    .ok()
                    .flatten();
                store.close().await;
                v.and_then(|v| serde_json::from_str::<crate::uplink::renew::Renewal>(&v).ok())
            }
            Err(_) => None,
        },
        _ => None,
    };
    match state {
        Some(r) if r.state == "failing" => Check::warn(
            NAME,
            format!(
                "{due_text}; the last {} attempt(s) failed: {}",
                r.failures,
                r.error.as_deref().unwrap_or("-")
            ),
            "the clinic must serve EST re-enrolment for this hub (`vitals-clinic serve --est-ca-key`), and the certificate's directory must be writable by the service user; the hub retries by itself",
        ),
        Some(r) if r.state == "rolled_back" => Check::warn(
            NAME,
            format!("{due_text}; the clinic refused the renewed certificate, the previous one is back"),
            "ask the clinic to check the hub registry (`vitals-clinic hub list`)",
        ),
        Some(r) => Check::pass(NAME, format!("{due_text} (over EST); last renewal {}", r.state)),
        None => Check::pass(NAME, format!("{due_text} (over EST at {pct}% of its life)")),
    }
}

/// The security reports (aggregated security events) waiting to go upstream as AuditEvents and
/// the newest's code and time ([`super::status::SecurityReports`]): informational, no PHI.
async fn security_check(cfg: &Config, clock: Arc<dyn Clock>) -> Check {
    const NAME: &str = "security reports";
    if !cfg.state_dir().join("store.db").exists() {
        return Check::pass(NAME, "none (no store yet)");
    }
    let reports = match super::status::open_read_only(cfg, clock).await {
        Ok(store) => {
            let r = match store.stats().await {
                Ok(st) => super::status::security_reports(&store, st.security_open).await,
                Err(e) => Err(e),
            };
            store.close().await;
            r
        }
        Err(e) => Err(e),
    };
    match reports {
        Ok(r) => Check::pass(NAME, r.to_string()),
        Err(e) => Check::fail(
            NAME,
            format!("cannot read the store: {e}"),
            "see `vitals-hub status`",
        ),
    }
}

async fn backlog_check(cfg: &Config, clock: Arc<dyn Clock>, now_secs: i64) -> Check {
    const NAME: &str = "backlog";
    let db = cfg.state_dir().join("store.db");
    if !db.exists() {
        return Check::warn(
            NAME,
            format!("no store yet at {}", db.display()),
            "the daemon creates it at its first start (`vitals-hub run`)",
        );
    }
    let store = match super::status::open_read_only(cfg, clock).await {
        Ok(s) => s,
        Err(e) => {
            return Check::fail(
                NAME,
                format!("cannot open the store read-only: {e}"),
                "see `vitals-hub status`; check the KEK and the state directory's owner",
            )
        }
    };
    let stats = store.stats().await;
    store.close().await;
    let stats = match stats {
        Ok(s) => s,
        Err(e) => {
            return Check::fail(
                NAME,
                format!("cannot read the store: {e}"),
                "see `vitals-hub status`",
            )
        }
    };
    let waiting = stats.pending + stats.in_flight;
    let Some(oldest) = stats.oldest_waiting else {
        return Check::pass(NAME, "nothing waiting for upload");
    };
    let age = now_secs - oldest.as_millis().div_euclid(1000);
    let hours = age / 3600;
    let minutes = (age % 3600) / 60;
    let detail = format!("{waiting} waiting; the oldest for {hours} h {minutes} min");
    let fix =
        "check the `clinic` and `clock` lines; `vitals-hub status` shows the last upload errors";
    if age > BACKLOG_FAIL_SECS {
        Check::fail(NAME, detail, fix)
    } else if age > BACKLOG_WARN_SECS {
        Check::warn(NAME, detail, fix)
    } else {
        Check::pass(NAME, detail)
    }
}
