//! `vitals-hub setup`: enrol the hub — check the clinic credentials, install them with the right
//! modes and owners, and write the config.
//!
//! Checks before anything is written: the key matches the certificate, the chain verifies to the
//! CA, the certificate has not expired (fewer than 30 days left is a warning), and the config that
//! would be written validates ([`Config::parse`]).
//!
//! Where things go: the key always into `<state_dir>/keys/client-key` (0600; the directories
//! 0700). The certificate and the CA bundle into `<state_dir>/keys/` (0644) — or, when the config
//! is the systemd one ([`SYSTEM_CONFIG`]), into `/etc/vitals-hub/` beside it. The source key's mode
//! does not matter: the copy is 0600. Every file is written to a temporary file in its directory,
//! fsync'd and renamed, so a reader never sees half a file; the config is validated with
//! [`Config::load`] from its temporary file before the rename.
//!
//! Owners: run as root with a `vitals-hub` system user present, the state directory, keys and
//! credentials are chowned to it, and the config to `root:vitals-hub` (0640, readable by the
//! service); otherwise everything stays with the current user.

use crate::config::{Config, SYSTEM_CONFIG};
use crate::uplink::tls;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::config::SERVICE_USER;

/// What to enrol.
#[derive(Debug, Clone)]
pub struct Request {
    pub clinic_url: String,
    pub patient_id: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Where the config goes.
    pub config: PathBuf,
    /// Written into `[hub] state_dir` when set; else the default state directory.
    pub state_dir: Option<PathBuf>,
    /// Overwrite an enrolled hub.
    pub force: bool,
}

/// What setup did.
#[derive(Debug, Clone)]
pub struct Report {
    pub config: PathBuf,
    pub state_dir: PathBuf,
    pub key: PathBuf,
    pub cert: PathBuf,
    pub ca: PathBuf,
    pub days_left: i64,
    /// Set when files were chowned to the service user.
    pub owner: Option<String>,
    pub warnings: Vec<String>,
}

/// Why setup refused or failed; each names the problem and the fix.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The hub is already enrolled.
    #[error("{0} — this hub is already enrolled; pass --force to replace its config and credentials (or `vitals-hub wipe` first)")]
    Enrolled(String),
    /// The values given do not make a valid config.
    #[error("the config would not be valid:\n{0}")]
    Config(String),
    /// A value given on the command line (or at a prompt) is not valid: named by its flag.
    #[error("{flag} {value}: {message}\n  fix: {fix}")]
    Flag {
        flag: &'static str,
        value: String,
        message: String,
        fix: String,
    },
    /// The CA bundle cannot be used.
    #[error("{0}")]
    Ca(String),
    /// The key does not belong to the certificate.
    #[error("the key {key} does not match the certificate {cert}; give the key this certificate was issued for (--key) or the certificate for this key (--cert)")]
    KeyMismatch { key: PathBuf, cert: PathBuf },
    /// The certificate or key cannot be read or used.
    #[error("{0}")]
    Certificate(String),
    /// The chain does not verify to the CA.
    #[error("{0}; give the clinic CA that issued this certificate (--ca), or a certificate issued by this CA")]
    Chain(String),
    /// The certificate has expired.
    #[error("the certificate {0} has expired; ask the clinic for a new hub certificate")]
    Expired(PathBuf),
    /// Writing failed.
    #[error("cannot write {path}: {source}; check the directory's owner and free space")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SetupError + '_ {
    move |source| SetupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether `config` (or the store of `state_dir`) shows an enrolled hub: a config with a `[hub]`
/// section, or an existing store.
pub fn enrolled(config: &Path, state_dir: &Path) -> Option<String> {
    if let Ok(text) = fs::read_to_string(config) {
        if text.lines().any(|l| l.trim() == "[hub]") {
            return Some(format!("{} has a [hub] section", config.display()));
        }
    }
    let db = state_dir.join("store.db");
    if db.exists() {
        return Some(format!("a store exists at {}", db.display()));
    }
    None
}

/// The config text setup writes.
pub fn config_text(req: &Request, ca: &Path, cert: &Path, key: &Path) -> String {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let p = |p: &Path| q(&p.display().to_string());
    let mut t = String::from("# Written by `vitals-hub setup`; the README's configuration section lists every key.\n[hub]\n");
    t.push_str(&format!("patient_id = {}\n", q(&req.patient_id)));
    if let Some(d) = &req.state_dir {
        t.push_str(&format!("state_dir = {}\n", p(d)));
    }
    t.push_str("\n[uplink]\n");
    t.push_str(&format!("base_url = {}\n", q(&req.clinic_url)));
    t.push_str(&format!("ca_bundle = {}\n", p(ca)));
    t.push_str(&format!("client_cert = {}\n", p(cert)));
    t.push_str(&format!("client_key = {}\n", p(key)));
    t
}

/// What the PEM blocks of a file are: (certificates, private keys); `None` when unreadable.
fn pem_blocks(path: &Path) -> Option<(usize, usize)> {
    let text = fs::read(path).ok()?;
    let text = String::from_utf8_lossy(&text);
    let mut certs = 0;
    let mut keys = 0;
    for line in text.lines() {
        if let Some(label) = line
            .trim()
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            if label == "CERTIFICATE" {
                certs += 1;
            } else if label.ends_with("PRIVATE KEY") {
                keys += 1;
            }
        }
    }
    Some((certs, keys))
}

/// A certificate given where the key goes, or a key where the certificate goes: the message naming
/// the flag (or the config key: `flags` gives the two names), the file and the fix; `None` when
/// neither file is of the wrong kind.
pub fn swapped(cert: &Path, key: &Path, flags: (&str, &str)) -> Option<String> {
    let (cert_flag, key_flag) = flags;
    let cert_is_key = pem_blocks(cert).is_some_and(|(c, k)| c == 0 && k > 0);
    let key_is_cert = pem_blocks(key).is_some_and(|(c, k)| k == 0 && c > 0);
    match (cert_is_key, key_is_cert) {
        (true, true) => Some(format!(
            "{cert_flag} {}: this is a private key, not a certificate: {cert_flag} and {key_flag} \
             look swapped; fix: give the certificate as {cert_flag} and the key as {key_flag}",
            cert.display()
        )),
        (true, false) => Some(format!(
            "{cert_flag} {}: this is a private key, not a certificate; fix: give the hub's \
             certificate (PEM, `-----BEGIN CERTIFICATE-----`) as {cert_flag}",
            cert.display()
        )),
        (false, true) => Some(format!(
            "{key_flag} {}: this is a certificate, not a private key; fix: give the hub's private \
             key (PEM, `-----BEGIN PRIVATE KEY-----`) as {key_flag}",
            key.display()
        )),
        (false, false) => None,
    }
}

/// Check the credentials of `req` at `now_secs` (seconds since the epoch): the days left of the
/// certificate, and warnings.
pub fn check_credentials(req: &Request, now_secs: i64) -> Result<(i64, Vec<String>), SetupError> {
    tls::roots(&req.ca).map_err(|e| SetupError::Ca(e.to_string()))?;
    if let Some(m) = swapped(&req.cert, &req.key, ("--cert", "--key")) {
        return Err(SetupError::Certificate(m));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let paths = tls::CertPaths {
        cert: req.cert.clone(),
        key: req.key.clone(),
    };
    if let Err(e) = tls::ReloadingCert::new(paths, provider) {
        let text = e.to_string();
        return Err(if text.contains("do not form a pair") {
            SetupError::KeyMismatch {
                key: req.key.clone(),
                cert: req.cert.clone(),
            }
        } else {
            SetupError::Certificate(text)
        });
    }
    let days = super::doctor::days_left(&req.cert, now_secs).ok_or_else(|| {
        SetupError::Certificate(format!(
            "cannot read the validity of {}; give an X.509 certificate in PEM",
            req.cert.display()
        ))
    })?;
    if days <= 0 {
        return Err(SetupError::Expired(req.cert.clone()));
    }
    let now = rustls_pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(now_secs).unwrap_or(0),
    ));
    tls::verify_client_chain(&req.ca, &req.cert, now)
        .map_err(|e| SetupError::Chain(e.to_string()))?;
    let mut warnings = Vec::new();
    if days < super::doctor::CERT_WARN_DAYS {
        warnings.push(format!(
            "the certificate has only {days} days left; renew it soon"
        ));
    }
    Ok((days, warnings))
}

/// Write `data` to `path` atomically with `mode`: a temporary file in the same directory, fsync,
/// rename, fsync of the directory.
pub(crate) fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<PathBuf, SetupError> {
    let tmp = temp_path(path);
    write_temp(&tmp, data, mode)?;
    commit(&tmp, path)?;
    Ok(path.to_path_buf())
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.setup-tmp"))
}

fn write_temp(tmp: &Path, data: &[u8], mode: u32) -> Result<(), SetupError> {
    let _ = fs::remove_file(tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(tmp)
        .map_err(io(tmp))?;
    // The umask may have narrowed the mode; never widened it, but set it exactly.
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io(tmp))?;
    f.write_all(data).map_err(io(tmp))?;
    f.sync_all().map_err(io(tmp))
}

fn commit(tmp: &Path, path: &Path) -> Result<(), SetupError> {
    fs::rename(tmp, path).map_err(io(path))?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    Ok(())
}

fn make_dir(dir: &Path, mode: u32) -> Result<(), SetupError> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode)).map_err(io(dir))
}

/// `(uid, gid, name)` of the service user, when it exists ([`crate::config::service_user`]).
fn service_user() -> Option<(u32, u32, String)> {
    crate::config::service_user().map(|u| (u.uid, u.gid, u.name))
}

/// A config error in the text setup generated, told as the problem of the value (flag) it came from.
fn flag_error(req: &Request, text: &str, e: crate::config::ConfigError) -> SetupError {
    let key = e
        .line
        .and_then(|l| text.lines().nth(l.saturating_sub(1)))
        .and_then(|l| l.split_once('='))
        .map(|(k, _)| k.trim().to_string());
    let flag = match key.as_deref() {
        Some("patient_id") => Some(("--patient", req.patient_id.clone())),
        Some("base_url") => Some(("--clinic-url", req.clinic_url.clone())),
        Some("state_dir") => req
            .state_dir
            .as_ref()
            .map(|d| ("--state-dir", d.display().to_string())),
        Some("ca_bundle") => Some(("--ca", req.ca.display().to_string())),
        Some("client_cert") => Some(("--cert", req.cert.display().to_string())),
        Some("client_key") => Some(("--key", req.key.display().to_string())),
        _ => None,
    };
    match flag {
        Some((flag, value)) => SetupError::Flag {
            flag,
            value,
            // The value's problem without the file's vocabulary (section, key name).
            message: e
                .message
                .trim_start_matches("in [uplink]: ")
                .trim_start_matches("uplink config: ")
                .replace("`base_url` must be", "the clinic URL must be")
                .replace("`patient_id` ", "the patient id ")
                .replace("`state_dir` ", "the state directory "),
            fix: e.fix,
        },
        None => SetupError::Config(e.to_string()),
    }
}

/// Paths come from the config the command was given: run as root for a config that is not the
/// system one ([`SYSTEM_CONFIG`]) and without `--state-dir`, the state directory is `state/` beside
/// that config (written into it), never the installed hub's /var/lib/vitals-hub.
fn with_state_dir(req: &Request) -> Request {
    let mut r = req.clone();
    // The config holds absolute paths only: a relative --state-dir is taken from here.
    if let Some(d) = &r.state_dir {
        if let Ok(abs) = std::path::absolute(d) {
            r.state_dir = Some(abs);
        }
    }
    if r.state_dir.is_none() && r.config != Path::new(SYSTEM_CONFIG) && crate::config::is_root() {
        let dir = r
            .config
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("state"), |p| p.join("state"));
        r.state_dir = std::path::absolute(&dir).ok().or(Some(dir));
    }
    r
}

/// Enrol: check, install the credentials, write the config. Nothing is written when a check fails.
pub fn setup(req: &Request, now_secs: i64) -> Result<Report, SetupError> {
    let req = &with_state_dir(req);
    let state_dir = req
        .state_dir
        .clone()
        .unwrap_or_else(crate::config::default_state_dir);
    if !req.force {
        if let Some(why) = enrolled(&req.config, &state_dir) {
            return Err(SetupError::Enrolled(why));
        }
    }
    let keys = state_dir.join("keys");
    let system = req.config == Path::new(SYSTEM_CONFIG);
    let public_dir = if system {
        Path::new(SYSTEM_CONFIG)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| keys.clone())
    } else {
        keys.clone()
    };
    let key_dst = keys.join("client-key");
    let cert_dst = public_dir.join("client-cert.pem");
    let ca_dst = public_dir.join("clinic-ca.pem");
    let text = config_text(req, &ca_dst, &cert_dst, &key_dst);
    // Validate the values before any check that reads files, so a typo in the URL is named first —
    // by the flag it came from, not by a line of a file the technician has not seen yet.
    Config::parse(&req.config, &text).map_err(|e| flag_error(req, &text, e))?;
    let (days_left, warnings) = check_credentials(req, now_secs)?;

    // Read everything first: a source may be the installed file itself (a re-run with --force).
    let key_pem = fs::read(&req.key).map_err(io(&req.key))?;
    let cert_pem = fs::read(&req.cert).map_err(io(&req.cert))?;
    let ca_pem = fs::read(&req.ca).map_err(io(&req.ca))?;

    make_dir(&state_dir, 0o700)?;
    make_dir(&keys, 0o700)?;
    if public_dir != keys {
        fs::create_dir_all(&public_dir).map_err(io(&public_dir))?;
    }
    write_atomic(&key_dst, &key_pem, 0o600)?;
    write_atomic(&cert_dst, &cert_pem, 0o644)?;
    write_atomic(&ca_dst, &ca_pem, 0o644)?;

    let config_dir = req
        .config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    fs::create_dir_all(&config_dir).map_err(io(&config_dir))?;
    let tmp = temp_path(&req.config);
    write_temp(&tmp, text.as_bytes(), 0o640)?;
    if let Err(e) = Config::load(&tmp) {
        let _ = fs::remove_file(&tmp);
        return Err(SetupError::Config(e.to_string()));
    }

    let owner = match (crate::config::is_root(), service_user()) {
        (true, Some((uid, gid, name))) => {
            for p in [&state_dir, &keys, &key_dst, &cert_dst, &ca_dst] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid)).map_err(io(p))?;
            }
            std::os::unix::fs::chown(&tmp, Some(0), Some(gid)).map_err(io(&tmp))?;
            Some(name)
        }
        _ => None,
    };
    commit(&tmp, &req.config)?;
    Ok(Report {
        config: req.config.clone(),
        state_dir,
        key: key_dst,
        cert: cert_dst,
        ca: ca_dst,
        days_left,
        owner,
        warnings,
    })
}
