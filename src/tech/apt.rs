//! `vitals-hub setup --apt-*`: the clinic's apt repository and unattended-upgrades (issue 19).
//!
//! Writes, under a root directory (`/` on a hub; a temporary one in tests), each file atomically
//! (temporary file, fsync, rename, directory fsync) with mode 0644, root-owned when run as root:
//! - `usr/share/keyrings/vitals-clinic.gpg` (or `.asc` for an armoured key): the clinic's public
//!   key, checked to be an OpenPGP *public* key (a secret key is refused: it must never leave the
//!   key ceremony's offline machine);
//! - `etc/apt/sources.list.d/vitals-clinic.sources`: a deb822 source whose `Signed-By:` names that
//!   key file alone, so apt takes the clinic's suite only when that key signed it;
//! - `etc/apt/preferences.d/vitals-clinic.pref`: the clinic's origin may supply `vitals-hub` (and
//!   `vitals-clinic`) only, at 990 (never above 1000: apt never downgrades for a pin); any other
//!   package from it is pinned -1, so a stolen repository key cannot replace openssl;
//! - `etc/apt/apt.conf.d/52vitals-hub-unattended-upgrades`: Debian's security suite and the
//!   clinic's origin/suite allowed, `Allow-downgrade` off, no automatic reboot;
//! - `etc/systemd/system/apt-daily-upgrade.timer.d/vitals-hub-window.conf`: the maintenance
//!   window (the install runs at a random time inside it, and not at boot after a missed one).
//!
//! The URL must be `https://`; `http://127.0.0.1` / `http://localhost` only with
//! [`AptRequest::insecure_localhost`] (the tests' repository). Signing, not transport, is what
//! protects the packages; https keeps what a hub runs from the network's view.

use super::setup::{write_atomic, SetupError};
use std::path::{Path, PathBuf};

/// Where the clinic's public key goes (binary keyring).
pub const KEYRING: &str = "usr/share/keyrings/vitals-clinic.gpg";
/// The deb822 source.
pub const SOURCES: &str = "etc/apt/sources.list.d/vitals-clinic.sources";
/// The pin file.
pub const PREFERENCES: &str = "etc/apt/preferences.d/vitals-clinic.pref";
/// The unattended-upgrades configuration (after Debian's 50unattended-upgrades).
pub const UNATTENDED: &str = "etc/apt/apt.conf.d/52vitals-hub-unattended-upgrades";
/// The maintenance window: a drop-in for apt-daily-upgrade.timer.
pub const WINDOW_DROPIN: &str =
    "etc/systemd/system/apt-daily-upgrade.timer.d/vitals-hub-window.conf";
/// The packages the clinic's origin may supply.
pub const CLINIC_PACKAGES: &str = "vitals-hub vitals-clinic";
/// The pin of those packages: high, never above 1000 (no downgrade by pin).
pub const PIN_PRIORITY: i32 = 990;

/// What to install.
#[derive(Debug, Clone)]
pub struct AptRequest {
    /// The repository's URL (the directory holding `dists/`).
    pub url: String,
    /// `stable` or `canary`.
    pub suite: String,
    /// The clinic's public key file (binary or armoured OpenPGP).
    pub key: PathBuf,
    /// The repository's `Origin:` (publish.sh's `--origin`).
    pub origin: String,
    /// The maintenance window, `HH:MM-HH:MM` (local time; may cross midnight).
    pub window: String,
    /// Allow `http://127.0.0.1` / `http://localhost` (tests only).
    pub insecure_localhost: bool,
    /// The file system root the files go under (`/` on a hub).
    pub root: PathBuf,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct AptReport {
    pub files: Vec<PathBuf>,
    pub key_file: PathBuf,
}

fn flag(flag: &'static str, value: &str, message: &str, fix: &str) -> SetupError {
    SetupError::Flag {
        flag,
        value: value.to_string(),
        message: message.to_string(),
        fix: fix.to_string(),
    }
}

/// The kind of OpenPGP data `bytes` starts with: `Ok(armoured)` for a public key, an error naming
/// the problem otherwise.
pub fn check_public_key(bytes: &[u8], shown: &str) -> Result<bool, SetupError> {
    let fix = "give the clinic's PUBLIC key (`publish.sh key REPO vitals-clinic.gpg`, or `gpg --export FPR`)";
    let head = bytes.get(..bytes.len().min(200)).unwrap_or_default();
    let text = String::from_utf8_lossy(head).into_owned();
    if text.contains("-----BEGIN PGP PRIVATE KEY BLOCK-----") {
        return Err(flag(
            "--apt-key",
            shown,
            "this is a SECRET key; it must never be on a hub",
            fix,
        ));
    }
    if text
        .trim_start()
        .starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    {
        return Ok(true);
    }
    let Some(&first) = bytes.first() else {
        return Err(flag("--apt-key", shown, "the file is empty", fix));
    };
    // An OpenPGP packet header (RFC 4880 4.2): bit 7 set; the tag in bits 5..2 (old format) or
    // 5..0 (new format). 6 = public key, 5 = secret key.
    if first & 0x80 == 0 {
        return Err(flag(
            "--apt-key",
            shown,
            "not an OpenPGP key (neither binary nor armoured)",
            fix,
        ));
    }
    let tag = if first & 0x40 != 0 {
        first & 0x3f
    } else {
        (first >> 2) & 0x0f
    };
    match tag {
        6 => Ok(false),
        5 => Err(flag(
            "--apt-key",
            shown,
            "this is a SECRET key; it must never be on a hub",
            fix,
        )),
        _ => Err(flag(
            "--apt-key",
            shown,
            &format!("an OpenPGP packet of type {tag}, not a public key"),
            fix,
        )),
    }
}

/// The URL checked: https, or http to this machine with the tests' flag.
pub fn check_url(url: &str, insecure_localhost: bool) -> Result<(), SetupError> {
    let bad = |m: &str| {
        flag(
            "--apt-url",
            url,
            m,
            "give the clinic repository's https:// URL (the directory holding dists/)",
        )
    };
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("contains white space"));
    }
    if let Some(rest) = url.strip_prefix("https://") {
        if rest.is_empty() || rest.starts_with('/') {
            return Err(bad("no host"));
        }
        return Ok(());
    }
    if let Some(rest) = url.strip_prefix("http://") {
        let host = rest.split(['/', ':']).next().unwrap_or("");
        if host == "127.0.0.1" || host == "localhost" {
            if insecure_localhost {
                return Ok(());
            }
            return Err(flag(
                "--apt-url",
                url,
                "plain http is for the tests' local repository only",
                "use https://, or for a test on this machine add --apt-insecure-localhost",
            ));
        }
        return Err(bad("plain http: the packages' signature is checked, but the network would see what the hub runs"));
    }
    Err(bad("not an https:// URL"))
}

/// `HH:MM-HH:MM` → (start minutes, length minutes).
pub fn parse_window(w: &str) -> Result<(u32, u32), SetupError> {
    let bad = || {
        flag(
            "--update-window",
            w,
            "not a window of the form HH:MM-HH:MM",
            "e.g. --update-window 02:00-04:00 (local time; may cross midnight)",
        )
    };
    let hm = |s: &str| -> Option<u32> {
        let (h, m) = s.trim().split_once(':')?;
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60 && s.trim().len() == 5).then_some(h * 60 + m)
    };
    let (a, b) = w.split_once('-').ok_or_else(bad)?;
    let (a, b) = (hm(a).ok_or_else(bad)?, hm(b).ok_or_else(bad)?);
    let len = (b + 24 * 60 - a) % (24 * 60);
    if len < 15 {
        return Err(flag(
            "--update-window",
            w,
            "shorter than 15 minutes",
            "give a window of at least 15 minutes",
        ));
    }
    Ok((a, len))
}

fn check_name(flag_name: &'static str, v: &str) -> Result<(), SetupError> {
    if v.is_empty()
        || !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return Err(flag(
            flag_name,
            v,
            "letters, digits, dots and dashes only",
            "give the name publish.sh was given",
        ));
    }
    Ok(())
}

/// The deb822 source.
pub fn sources_text(req: &AptRequest, key_file: &Path) -> String {
    format!(
        "# Written by `vitals-hub setup`: the clinic's repository, trusted with its own key only.\n\
         Types: deb\nURIs: {}\nSuites: {}\nComponents: main\nSigned-By: {}\n",
        req.url,
        req.suite,
        key_file.display()
    )
}

/// The pins: the clinic's origin supplies its own packages only, at [`PIN_PRIORITY`].
pub fn preferences_text(req: &AptRequest) -> String {
    format!(
        "# Written by `vitals-hub setup`: the clinic's repository may supply only its own packages.\n\
         Package: {CLINIC_PACKAGES}\nPin: release o={o}\nPin-Priority: {PIN_PRIORITY}\n\n\
         Package: *\nPin: release o={o}\nPin-Priority: -1\n",
        o = req.origin
    )
}

/// The unattended-upgrades configuration.
pub fn unattended_text(req: &AptRequest) -> String {
    format!(
        "// Written by `vitals-hub setup` (README, \"Updates\"). Debian's security updates and the\n\
         // clinic's suite, installed in the maintenance window (apt-daily-upgrade.timer), never a\n\
         // downgrade; a vitals-hub upgrade is health-checked and rolled back by `vitals-hub update-check`.\n\
         Unattended-Upgrade::Origins-Pattern {{\n\
         \x20   \"origin=Debian,codename=${{distro_codename}}-security,label=Debian-Security\";\n\
         \x20   \"origin={o},codename={s}\";\n\
         }};\n\
         Unattended-Upgrade::Allow-downgrade \"false\";\n\
         Unattended-Upgrade::Automatic-Reboot \"false\";\n\
         Unattended-Upgrade::MinimalSteps \"true\";\n\
         APT::Periodic::Update-Package-Lists \"1\";\n\
         APT::Periodic::Unattended-Upgrade \"1\";\n",
        o = req.origin,
        s = req.suite
    )
}

/// The timer drop-in for the window starting at `start` minutes, `len` minutes long.
pub fn window_text(start: u32, len: u32) -> String {
    format!(
        "# Written by `vitals-hub setup`: unattended upgrades in the maintenance window only.\n\
         [Timer]\nOnCalendar=\nOnCalendar=*-*-* {:02}:{:02}\nRandomizedDelaySec={}m\nPersistent=false\n",
        start / 60,
        start % 60,
        len.saturating_sub(5).max(1)
    )
}

/// Check everything, then write the files under `req.root`.
pub fn install(req: &AptRequest) -> Result<AptReport, SetupError> {
    check_url(&req.url, req.insecure_localhost)?;
    if req.suite != "stable" && req.suite != "canary" {
        return Err(flag(
            "--apt-suite",
            &req.suite,
            "not a suite of the clinic's repository",
            "give stable or canary",
        ));
    }
    check_name("--apt-origin", &req.origin)?;
    let (start, len) = parse_window(&req.window)?;
    let shown = req.key.display().to_string();
    let key = std::fs::read(&req.key).map_err(|e| {
        flag(
            "--apt-key",
            &shown,
            &format!("cannot read it: {e}"),
            "give the path of the clinic's public key file",
        )
    })?;
    if key.len() > 1024 * 1024 {
        return Err(flag(
            "--apt-key",
            &shown,
            "larger than 1 MiB",
            "give the clinic's public key only",
        ));
    }
    let armoured = check_public_key(&key, &shown)?;
    let key_rel = if armoured {
        KEYRING.replace(".gpg", ".asc")
    } else {
        KEYRING.to_string()
    };
    let key_abs = Path::new("/").join(&key_rel);
    let files = [
        (key_rel.clone(), key.clone()),
        (
            SOURCES.to_string(),
            sources_text(req, &key_abs).into_bytes(),
        ),
        (PREFERENCES.to_string(), preferences_text(req).into_bytes()),
        (UNATTENDED.to_string(), unattended_text(req).into_bytes()),
        (
            WINDOW_DROPIN.to_string(),
            window_text(start, len).into_bytes(),
        ),
    ];
    let mut written = Vec::new();
    for (rel, data) in files {
        let path = req.root.join(&rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| SetupError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        written.push(write_atomic(&path, &data, 0o644)?);
    }
    Ok(AptReport {
        files: written,
        key_file: key_abs,
    })
}
