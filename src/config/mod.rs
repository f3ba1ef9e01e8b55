//! The one TOML config tree of the hub, its validation, and where files live.
//!
//! One file (`/etc/vitals-hub/hub.toml` under systemd, the `directories` location for a user run,
//! `--config` to override). Unknown keys are refused — a misspelt key is an error, never a setting
//! silently ignored. Every error names the file, the line and column, what is wrong and the fix, e.g.
//!
//! ```text
//! /etc/vitals-hub/hub.toml:12:1: unknown key `sufix_minutes` in [alerts]
//!   fix: remove it or correct its spelling; allowed here: thresholds, weight_gain, …
//! ```
//!
//! Sections: `[hub]` (patient, state directory, zone offset), `[store]`, `[uplink]`
//! ([`UplinkConfig`]), `[ble]` (radio timings, [`BleConfig`]), `[alerts]` ([`AlertRules`]) and one
//! `[[device]]` table per device: `kind = "ble"` (settings for a paired device: user index on a
//! multi-user scale, whether the hub may set its clock) or `kind = "simulated"` (a simulated
//! peripheral that produces spec-conformant GATT bytes through the same decode → store → alert →
//! upload path; its readings are marked as test data upstream).
//!
//! The values every section shares (`patient_id`, `utc_offset_minutes`) are set once, in `[hub]`.
//!
//! **Who owns a section's type (decision, issue 12).** `config` does not own the types of the
//! sections it parses: [`UplinkConfig`] stays in `uplink`, [`BleConfig`]/[`DeviceConfig`] in `ble`,
//! [`AlertRules`] in `alerts`, [`SimConfig`] in `sim`, and ARCHITECTURE's rule "config may import
//! serde only" is replaced by: *each module owns its settings type, its defaults and its own
//! validation; `config` sits above them, owns the file (one tree, unknown keys refused), the values
//! the sections share, the positions in error messages and the paths, and imports the section
//! types to assemble them.* Why: those types are the modules' own inputs, not config plumbing
//! (`AlertRules` *is* the alert engine's rule set, `UplinkConfig::validate` knows the URL and TLS
//! rules, the simulator's `Profile` is its device model), so moving them would make `config` a
//! second home for every module's logic and make `alerts` — a pure module — import `config`.
//! The direction stays one-way and acyclic: no module below `config` imports it; only `daemon`,
//! `tech`, `cli` and `bench` do.
//!
//! Size: about 770 lines of code and its tests: one loader that validates every section with file,
//! line and fix; positions are in `locate`.

mod locate;

use crate::alerts::AlertRules;
use crate::ble::{BleConfig, DeviceConfig};
use crate::sim::{Pattern, Profile, SimConfig};
use crate::uplink::UplinkConfig;
use serde::Deserialize;
use std::path::{Path, PathBuf};

pub use locate::line_of;

/// The config file used under systemd.
pub const SYSTEM_CONFIG: &str = "/etc/vitals-hub/hub.toml";
/// The state directory used under systemd (`StateDirectory=vitals-hub`).
pub const SYSTEM_STATE_DIR: &str = "/var/lib/vitals-hub";

/// A config error: where, what, and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {message}\n  fix: {fix}", path.display(), position(*line, *column))]
pub struct ConfigError {
    pub path: PathBuf,
    /// 1-based; `None` when the problem is the file as a whole.
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
    pub fix: String,
}

fn position(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

/// `[hub]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSection {
    /// The patient's logical id at the clinic (`Patient/<id>`).
    pub patient_id: String,
    /// Where the store, its keys and the hub's state live; default: see [`default_state_dir`].
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// Deprecated (no daylight saving): the zone offset of the home, minutes east of UTC. Used
    /// only when `timezone` is absent; with `timezone` it is derived (the zone's offset at
    /// start-up) for the parts that still take one offset.
    #[serde(default)]
    pub utc_offset_minutes: i32,
    /// The home's time zone, an IANA name (`Europe/Berlin`); default: the system's
    /// (`/etc/localtime`). Device wall clocks are read and written with its rules.
    #[serde(default)]
    pub timezone: Option<String>,
}

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// Appends are refused (never evicting unsent data) when the live database reaches this size.
    pub size_limit_mb: u64,
    /// Acknowledged data is erased after this many days.
    pub retention_days: u32,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            size_limit_mb: 1024,
            retention_days: 30,
        }
    }
}

/// The `kind` of a `[[device]]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// A real Bluetooth LE device, paired with `vitals-hub pair`.
    #[default]
    Ble,
    /// A simulated peripheral (demo, commissioning dry runs); its readings are test data.
    Simulated,
}

/// One `[[device]]` table as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    name: String,
    #[serde(default)]
    kind: DeviceKind,
    // ble
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    user_id: Option<u8>,
    #[serde(default)]
    set_clock: Option<bool>,
    // simulated
    #[serde(default)]
    profile: Option<Profile>,
    #[serde(default)]
    interval_secs: Option<u64>,
    #[serde(default)]
    pattern: Option<Pattern>,
    #[serde(default)]
    values: Vec<f64>,
    #[serde(default)]
    stored_records: Option<u16>,
}

/// A device of the config, validated.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceEntry {
    Ble { name: String, config: DeviceConfig },
    Simulated(SimConfig),
}

impl DeviceEntry {
    pub fn name(&self) -> &str {
        match self {
            DeviceEntry::Ble { name, .. } => name,
            DeviceEntry::Simulated(s) => &s.name,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    hub: HubSection,
    #[serde(default)]
    store: StoreSection,
    uplink: UplinkConfig,
    #[serde(default)]
    ble: BleConfig,
    #[serde(default)]
    alerts: Option<AlertRules>,
    #[serde(default)]
    device: Vec<RawDevice>,
}

/// The whole config, validated. Shared values (`patient_id`, `utc_offset_minutes`) are already
/// copied into the sections that use them.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it came from (for messages).
    pub path: PathBuf,
    pub hub: HubSection,
    pub store: StoreSection,
    pub uplink: UplinkConfig,
    pub ble: BleConfig,
    pub alerts: AlertRules,
    /// `false` when the file has no `[alerts]` section (no thresholds: a warning at start).
    pub alerts_configured: bool,
    pub devices: Vec<DeviceEntry>,
    /// SHA-256 of the file's text, lower-case hex: the daemon keeps it in the store to notice a
    /// changed configuration (`config_changed`, a security event). The text itself names the
    /// patient and is never stored or uploaded; only this digest is.
    pub digest: String,
}

impl Config {
    /// The store's settings for this hub — state directory, patient, size limit, retention — built
    /// in one place, so every command opens the store exactly as the daemon does.
    pub fn store_config(&self) -> crate::store::StoreConfig {
        crate::store::StoreConfig::for_hub(
            self.state_dir(),
            &self.hub.patient_id,
            self.store.size_limit_mb,
            self.store.retention_days,
        )
    }

    /// Read and validate `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            line: None,
            column: None,
            message: format!("cannot read the config file: {e}"),
            fix: if e.kind() == std::io::ErrorKind::NotFound {
                "write it (the README's configuration section shows every key), or pass the right file with --config".into()
            } else {
                "check the file's owner and mode (the hub's user must be able to read it)".into()
            },
        })?;
        Config::parse(path, &text)
    }

    /// Validate config text as if read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| syntax_error(path, text, &e))?;
        let err = |keys: &[&str], message: String, fix: &str| {
            let (line, column) = match line_of(text, keys) {
                Some(l) => (Some(l), Some(1)),
                None => (None, None),
            };
            ConfigError {
                path: path.to_path_buf(),
                line,
                column,
                message,
                fix: fix.to_string(),
            }
        };
        let mut hub = raw.hub;
        if !valid_logical_id(&hub.patient_id) {
            return Err(err(
                &["hub", "patient_id"],
                format!("`patient_id` {:?} is not a FHIR logical id", hub.patient_id),
                "use the patient's id at the clinic: 1 to 64 of A-Z a-z 0-9 - .",
            ));
        }
        if !(-14 * 60..=14 * 60).contains(&hub.utc_offset_minutes) {
            return Err(err(
                &["hub", "utc_offset_minutes"],
                format!(
                    "`utc_offset_minutes` {} is out of range",
                    hub.utc_offset_minutes
                ),
                "minutes east of UTC, -840 to 840 (e.g. 60 for UTC+1)",
            ));
        }
        let zone = match (&hub.timezone, hub.utc_offset_minutes) {
            (Some(_), o) if o != 0 => {
                return Err(err(
                    &["hub", "utc_offset_minutes"],
                    "both `timezone` and the deprecated `utc_offset_minutes` are set".into(),
                    "delete `utc_offset_minutes`: `timezone` gives the offset at every instant, daylight saving included",
                ))
            }
            (Some(name), _) => match crate::model::Zone::named(name) {
                Ok(z) => z,
                Err(e) => {
                    return Err(err(
                        &["hub", "timezone"],
                        format!("`timezone` {name:?} is not a time zone the tz database knows ({})", e.detail),
                        "use an IANA name such as \"Europe/Berlin\" (`timedatectl list-timezones` lists them), or delete the key for the system's zone",
                    ))
                }
            },
            (None, 0) => crate::model::Zone::system(),
            (None, o) => crate::model::Zone::fixed(o),
        };
        if hub.timezone.is_some() || hub.utc_offset_minutes == 0 {
            let now = crate::model::UtcMillis(jiff::Timestamp::now().as_millisecond());
            hub.utc_offset_minutes = zone.offset_minutes_at(now);
        }
        if let Some(dir) = &hub.state_dir {
            if !dir.is_absolute() {
                return Err(err(
                    &["hub", "state_dir"],
                    format!("`state_dir` {} is not an absolute path", dir.display()),
                    "write the full path, e.g. /var/lib/vitals-hub",
                ));
            }
        }
        if raw.store.size_limit_mb < 16 {
            return Err(err(
                &["store", "size_limit_mb"],
                format!("`size_limit_mb` {} is too small", raw.store.size_limit_mb),
                "give the store at least 16 MB (the default is 1024)",
            ));
        }
        if raw.store.retention_days == 0 {
            return Err(err(
                &["store", "retention_days"],
                "`retention_days` is 0".into(),
                "keep acknowledged data at least 1 day (the default is 30)",
            ));
        }

        let mut uplink = raw.uplink;
        if !uplink.patient_id.is_empty() && uplink.patient_id != hub.patient_id {
            return Err(err(
                &["uplink", "patient_id"],
                "`patient_id` in [uplink] differs from the one in [hub]".into(),
                "set `patient_id` once, in [hub], and remove it from [uplink]",
            ));
        }
        uplink.patient_id = hub.patient_id.clone();
        uplink.utc_offset_minutes = hub.utc_offset_minutes;
        if let Err(e) = uplink.validate() {
            let key = uplink_key_of(&e.to_string());
            return Err(err(
                &["uplink", key],
                format!("in [uplink]: {e}"),
                match key {
                    "base_url" => "the clinic's FHIR base URL, e.g. https://clinic.example/fhir",
                    "batch_size" => "1 to 50 entries per bundle (the default is 40)",
                    "refusal_alert_after_secs" => {
                        "seconds of refused uploads before the hub alerts: 1 to 604800 (a week; the default is 900)"
                    }
                    _ => "see the config reference in the README",
                },
            ));
        }
        if !uplink.ca_bundle.is_absolute() {
            return Err(err(
                &["uplink", "ca_bundle"],
                format!(
                    "`ca_bundle` {} is not an absolute path",
                    uplink.ca_bundle.display()
                ),
                "write the full path of the clinic CA bundle (PEM)",
            ));
        }

        uplink.zone = Some(zone.clone());
        let mut ble = raw.ble;
        ble.utc_offset_minutes = hub.utc_offset_minutes;
        ble.zone = zone;
        if ble.max_connections == 0 || ble.scan_window_ms == 0 || ble.op_timeout_ms == 0 {
            return Err(err(
                &["ble"],
                "`max_connections`, `scan_window_ms` and `op_timeout_ms` must be above 0".into(),
                "remove the key to use its default",
            ));
        }
        if let Some(a) = &ble.adapter {
            let ok = a
                .strip_prefix("hci")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if !ok {
                return Err(err(
                    &["ble", "adapter"],
                    format!("{a:?} is not a Bluetooth adapter name"),
                    "give the name `bluetoothctl list` or `hciconfig` shows, e.g. adapter = \"hci1\", or remove the key to use the first adapter",
                ));
            }
        }

        let mut devices = Vec::new();
        let mut names = std::collections::BTreeSet::new();
        for (i, d) in raw.device.into_iter().enumerate() {
            let idx = i.to_string();
            let at = |k: &'static str| -> [String; 3] { ["device".into(), idx.clone(), k.into()] };
            let e = |k: &'static str, message: String, fix: &str| {
                let keys = at(k);
                let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                err(&refs, message, fix)
            };
            if d.name.is_empty()
                || !d
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(e(
                    "name",
                    format!("device name {:?} is not usable", d.name),
                    "use letters, digits, - and _ (the name alert schedules refer to)",
                ));
            }
            if !names.insert(d.name.clone()) {
                return Err(e(
                    "name",
                    format!("two devices are named {:?}", d.name),
                    "give every [[device]] its own name",
                ));
            }
            match d.kind {
                DeviceKind::Ble => {
                    if d.profile.is_some()
                        || d.interval_secs.is_some()
                        || d.pattern.is_some()
                        || !d.values.is_empty()
                        || d.stored_records.is_some()
                    {
                        return Err(e(
                            "kind",
                            format!("device {:?}: profile, interval_secs, pattern, values and stored_records are for simulated devices", d.name),
                            "remove them, or set kind = \"simulated\"",
                        ));
                    }
                    // The address belongs in the store (sealed, since pairing), not in this
                    // readable file; one written by an older setup is still honoured, with a
                    // warning (see `warnings`).
                    if let Some(address) = &d.address {
                        if !valid_address(address) {
                            return Err(e(
                                "address",
                                format!(
                                    "device {:?}: {address:?} is not a Bluetooth address",
                                    d.name
                                ),
                                "remove the line: the hub knows the device by the name given at \
                                 pairing (`vitals-hub devices` lists them)",
                            ));
                        }
                    }
                    devices.push(DeviceEntry::Ble {
                        name: d.name.clone(),
                        config: DeviceConfig {
                            name: d.name,
                            legacy_address: d.address.map(|a| a.to_ascii_uppercase()),
                            user_id: d.user_id,
                            set_clock: d.set_clock.unwrap_or(false),
                        },
                    });
                }
                DeviceKind::Simulated => {
                    if d.address.is_some() || d.set_clock.is_some() {
                        return Err(e(
                            "address",
                            format!(
                                "device {:?}: simulated devices take no address or set_clock",
                                d.name
                            ),
                            "remove them (the simulator makes up its own address)",
                        ));
                    }
                    let Some(profile) = d.profile else {
                        return Err(e(
                            "name",
                            format!("simulated device {:?} has no `profile`", d.name),
                            "add profile = one of glucose, blood-pressure, pulse-oximeter, scale, thermometer, heart-rate",
                        ));
                    };
                    let interval_secs = d.interval_secs.unwrap_or(60);
                    if interval_secs == 0 || interval_secs > 86_400 {
                        return Err(e(
                            "interval_secs",
                            format!("`interval_secs` {interval_secs} is out of range"),
                            "seconds between measurements, 1 to 86400",
                        ));
                    }
                    if let Some(bad) = d.values.iter().find(|v| !profile.accepts(**v)) {
                        return Err(e(
                            "values",
                            format!("value {bad} is not a possible {} reading", profile.name()),
                            &format!(
                                "use values in {} ({})",
                                profile.range_text(),
                                profile.unit_text()
                            ),
                        ));
                    }
                    devices.push(DeviceEntry::Simulated(SimConfig {
                        name: d.name,
                        profile,
                        interval_secs,
                        pattern: d.pattern.unwrap_or_default(),
                        values: d.values,
                        user_id: d.user_id,
                        stored_records: d.stored_records.unwrap_or(5),
                    }));
                }
            }
        }
        ble.devices = devices
            .iter()
            .filter_map(|d| match d {
                DeviceEntry::Ble { config, .. } => Some(config.clone()),
                DeviceEntry::Simulated(_) => None,
            })
            .collect();

        let alerts_configured = raw.alerts.is_some();
        let alerts = raw.alerts.unwrap_or_default();
        for s in &alerts.schedules {
            if !names.contains(&s.device) {
                return Err(err(
                    &["alerts", "schedules"],
                    format!(
                        "an alert schedule names device {:?}, which no [[device]] has",
                        s.device
                    ),
                    "use the `name` of one of the [[device]] tables",
                ));
            }
        }
        Ok(Config {
            path: path.to_path_buf(),
            hub,
            store: raw.store,
            uplink,
            ble,
            alerts,
            alerts_configured,
            devices,
            digest: sha256_hex(text.as_bytes()),
        })
    }

    /// The state directory this config uses.
    pub fn state_dir(&self) -> PathBuf {
        self.hub.state_dir.clone().unwrap_or_else(default_state_dir)
    }

    /// Things that are allowed but probably not meant; printed by `config check` and logged.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        for d in &self.devices {
            if let DeviceEntry::Ble { name, config } = d {
                if config.legacy_address.is_some() {
                    w.push(format!(
                        "device {name:?}: `address` in the config is no longer needed and shows the \
                         device's Bluetooth address to anyone who can read the file; remove the line \
                         (the hub knows the device by the name given at pairing)"
                    ));
                }
            }
        }
        if !self.alerts_configured || self.alerts.thresholds.is_empty() {
            w.push(
                "no alert thresholds are configured: the hub raises no threshold alerts \
                 (see `vitals-hub alerts defaults` for documented starting points)"
                    .to_string(),
            );
        }
        if self
            .devices
            .iter()
            .any(|d| matches!(d, DeviceEntry::Simulated(_)))
        {
            w.push(
                "simulated devices are configured: their readings are uploaded marked as test data"
                    .into(),
            );
        }
        w
    }
}

fn valid_logical_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

fn valid_address(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The uplink key an `UplinkError::Config` message is about.
fn uplink_key_of(msg: &str) -> &'static str {
    [
        "base_url",
        "batch_size",
        "patient_id",
        "refusal_alert_after_secs",
        "timeout",
    ]
    .into_iter()
    .find(|k| msg.contains(k))
    .map(|k| {
        if k == "timeout" {
            "request_timeout_ms"
        } else {
            k
        }
    })
    .unwrap_or("base_url")
}

/// A TOML or schema error from the parser, with its position and a fix.
fn syntax_error(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let (line, column) = match e.span() {
        Some(span) => {
            let (line, column) = locate::line_col(text, span.start);
            (Some(line), Some(column))
        }
        None => (None, None),
    };
    let message = e.message().trim().to_string();
    if message == "missing field `hub`" {
        return ConfigError {
            path: path.to_path_buf(),
            line: None,
            column: None,
            message: "the config has no [hub] section: this hub is not set up yet".into(),
            fix: "set the patient, the clinic and the credentials (the README's configuration \
                  section shows every key; `vitals-hub config check` tells what is missing)"
                .into(),
        };
    }
    if message == "duplicate key" {
        if let Some(e) = duplicate_key(path, text, e, line, column) {
            return e;
        }
    }
    let fix = if message.starts_with("unknown field") {
        "remove it or correct its spelling (the keys allowed at this place are listed above)"
            .to_string()
    } else if let Some(rest) = message.strip_prefix("missing field ") {
        format!(
            "add {} = … here (see the config reference in the README)",
            rest.trim_matches('`')
        )
    } else if message.starts_with("invalid type") || message.starts_with("invalid value") {
        "give the value the type shown (strings in quotes, numbers without)".to_string()
    } else if message.contains("unknown variant") {
        "use one of the values listed".to_string()
    } else {
        "correct the TOML syntax at this place (https://toml.io)".to_string()
    };
    ConfigError {
        path: path.to_path_buf(),
        line,
        column,
        message: message.replace("field", "key"),
        fix,
    }
}

/// toml's "duplicate key", with the key named and the earlier line that set it.
fn duplicate_key(
    path: &Path,
    text: &str,
    e: &toml::de::Error,
    line: Option<usize>,
    column: Option<usize>,
) -> Option<ConfigError> {
    let span = e.span()?;
    let key = text.get(span)?.trim().trim_matches('"').to_string();
    if key.is_empty() {
        return None;
    }
    let here = line.unwrap_or(usize::MAX);
    let earlier = text
        .lines()
        .take(here.saturating_sub(1))
        .enumerate()
        .find_map(|(i, l)| {
            let rest = l.trim().strip_prefix(key.as_str())?.trim_start();
            let value = rest.strip_prefix('=')?.trim();
            Some((i + 1, value == "[]"))
        });
    let (message, fix) = match earlier {
        Some((n, empty_list)) => (
            format!("duplicate key `{key}`: it is already set at line {n}"),
            if empty_list {
                format!(
                    "remove line {n} (`{key} = []`, an empty list): the `[[…{key}]]` tables \
                     below are that list"
                )
            } else {
                format!("set `{key}` once: remove line {n} or this one")
            },
        ),
        None => (
            format!("duplicate key `{key}`: it is already set above"),
            format!("set `{key}` once: remove one of the two"),
        ),
    };
    Some(ConfigError {
        path: path.to_path_buf(),
        line,
        column,
        message,
        fix,
    })
}

/// Whether this process runs as a systemd service, as root or as the service user: then the FHS
/// paths apply.
pub fn system_mode() -> bool {
    std::env::var_os("INVOCATION_ID").is_some()
        || std::env::var_os("STATE_DIRECTORY").is_some()
        || is_root()
        || service_user().is_some_and(|u| u.uid == rustix::process::geteuid().as_raw())
}

/// The system user the packaging creates and the unit runs the hub as (`User=vitals-hub`).
pub const SERVICE_USER: &str = "vitals-hub";

/// The service user's name: [`SERVICE_USER`], or `$VITALS_HUB_SERVICE_USER` when set (tests use an
/// existing unprivileged user such as `nobody`; another packaging may name its own).
pub fn service_user_name() -> String {
    std::env::var("VITALS_HUB_SERVICE_USER")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| SERVICE_USER.to_string())
}

/// The service user, as the system knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceUser {
    pub name: String,
    pub uid: u32,
    /// Its primary group.
    pub gid: u32,
}

/// The service user when it exists (getpwnam through NSS, so a user from systemd-sysusers or LDAP
/// is found as well as one in `/etc/passwd`). Every file under the state directory belongs to it,
/// whoever created the file; commands run as root act as it (`cli::start`).
pub fn service_user() -> Option<ServiceUser> {
    let name = service_user_name();
    let u = uzers::get_user_by_name(&name)?;
    Some(ServiceUser {
        name,
        uid: u.uid(),
        gid: u.primary_group_id(),
    })
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn project_dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("", "", "vitals-hub")
}

/// `--config` when given; else /etc/vitals-hub/hub.toml under systemd (or as root), else the user's
/// config directory (`~/.config/vitals-hub/hub.toml`).
pub fn config_path(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    if system_mode() {
        return PathBuf::from(SYSTEM_CONFIG);
    }
    project_dirs()
        .map(|d| d.config_dir().join("hub.toml"))
        .unwrap_or_else(|| PathBuf::from(SYSTEM_CONFIG))
}

/// `$STATE_DIRECTORY` (systemd's `StateDirectory=`), else /var/lib/vitals-hub under systemd or as
/// root, else the user's data directory (`~/.local/share/vitals-hub`).
pub fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("STATE_DIRECTORY") {
        // systemd may pass several, colon-separated; ours is the first.
        let d = d
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or_default()
            .to_string();
        if !d.is_empty() {
            return PathBuf::from(d);
        }
    }
    if system_mode() {
        return PathBuf::from(SYSTEM_STATE_DIR);
    }
    project_dirs()
        .map(|d| d.data_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from(SYSTEM_STATE_DIR))
}

/// SHA-256 of `bytes`, lower-case hex.
fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = String::with_capacity(64);
    for b in d.as_ref() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )]
    use super::*;

    const GOOD: &str = r#"
[hub]
patient_id = "pat-1"
utc_offset_minutes = 60

[uplink]
base_url = "https://clinic.example/fhir"
ca_bundle = "/etc/vitals-hub/clinic-ca.pem"

[[device]]
name = "meter"
set_clock = true

[[device]]
name = "sim-cuff"
kind = "simulated"
profile = "blood-pressure"
interval_secs = 30
values = [120, 185]

[alerts]
[[alerts.schedules]]
device = "meter"
per_day = 2
"#;

    fn parse(t: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/vitals-hub/hub.toml"), t)
    }

    #[test]
    fn a_good_config_is_validated_and_shared_values_copied() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.uplink.patient_id, "pat-1");
        assert_eq!(c.uplink.utc_offset_minutes, 60);
        assert_eq!(c.ble.utc_offset_minutes, 60);
        assert_eq!(c.ble.devices.len(), 1);
        assert_eq!(c.ble.devices[0].name, "meter");
        assert_eq!(c.ble.devices[0].legacy_address, None);
        assert_eq!(c.devices.len(), 2);
        assert!(matches!(&c.devices[1], DeviceEntry::Simulated(s) if s.interval_secs == 30));
        // A schedule but no thresholds: warned.
        assert!(c
            .warnings()
            .iter()
            .any(|w| w.contains("no alert thresholds")));
    }

    #[test]
    fn devices_are_named_in_the_config_and_an_old_address_line_is_a_warning() {
        // A device is referred to by the name given at pairing: no address needed.
        let c = parse(GOOD).unwrap();
        assert!(!c.warnings().iter().any(|w| w.contains("address")));
        // An address written by an older setup still works (the device's settings find it) but
        // is warned about: the file is readable and the address identifies the device.
        let old = GOOD.replace(
            "name = \"meter\"\nset_clock",
            "name = \"meter\"\naddress = \"c0:26:da:01:02:03\"\nset_clock",
        );
        let c = parse(&old).unwrap();
        assert_eq!(
            c.ble.devices[0].legacy_address.as_deref(),
            Some("C0:26:DA:01:02:03")
        );
        let w = c.warnings();
        assert!(
            w.iter()
                .any(|w| w.contains("`address` in the config is no longer needed")),
            "{w:?}"
        );
    }

    #[test]
    fn timezone_is_an_iana_name_with_its_rules() {
        let t = GOOD.replace("utc_offset_minutes = 60", "timezone = \"America/New_York\"");
        let c = parse(&t).unwrap();
        assert_eq!(c.ble.zone.name(), "America/New_York");
        let summer = crate::model::UtcMillis::parse_rfc3339("2026-07-01T12:00:00Z").unwrap();
        assert_eq!(c.ble.zone.offset_minutes_at(summer), -240);

        let t = GOOD.replace("utc_offset_minutes = 60", "timezone = \"Europe/Atlantis\"");
        let e = parse(&t).unwrap_err();
        assert!(e.message.contains("Europe/Atlantis"), "{e}");
        assert!(e.fix.contains("IANA"), "{e}");

        let t = GOOD.replace(
            "utc_offset_minutes = 60",
            "utc_offset_minutes = 60\ntimezone = \"Europe/Berlin\"",
        );
        let e = parse(&t).unwrap_err();
        assert!(e.fix.contains("delete `utc_offset_minutes`"), "{e}");
        // The deprecated offset alone is still a (fixed, DST-free) zone.
        let c = parse(GOOD).unwrap();
        assert_eq!(c.ble.zone.offset_minutes_at(summer), 60);
    }

    #[test]
    fn unknown_key_names_line_and_fix() {
        let t = GOOD.replace("utc_offset_minutes = 60", "utc_ofset_minutes = 60");
        let e = parse(&t).unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.message.contains("unknown key `utc_ofset_minutes`"), "{e}");
        assert!(
            e.to_string().starts_with("/etc/vitals-hub/hub.toml:4:"),
            "{e}"
        );
    }

    /// Issue 15: the refusal alert's delay is bounded, and a bad one is named with its line.
    #[test]
    fn refusal_alert_after_secs_is_validated_with_line_and_fix() {
        assert_eq!(parse(GOOD).unwrap().uplink.refusal_alert_after_secs, 900);
        let with = |v: &str| {
            GOOD.replace(
                "ca_bundle = \"/etc/vitals-hub/clinic-ca.pem\"",
                &format!(
                    "ca_bundle = \"/etc/vitals-hub/clinic-ca.pem\"\nrefusal_alert_after_secs = {v}"
                ),
            )
        };
        assert_eq!(
            parse(&with("60")).unwrap().uplink.refusal_alert_after_secs,
            60
        );
        for bad in ["0", "604801"] {
            let e = parse(&with(bad)).unwrap_err();
            assert_eq!(e.line, Some(9), "{e}");
            assert!(e.message.contains("refusal_alert_after_secs"), "{e}");
            assert!(e.fix.contains("1 to 604800"), "{e}");
        }
    }

    /// Issue 13: a duplicate key is named, with the line that set it first.
    #[test]
    fn a_duplicate_key_is_named_with_its_first_line() {
        let text = format!("{GOOD}\n[store]\nretention_days = 3\nretention_days = 4\n");
        let e = parse(&text).unwrap_err();
        let first = text
            .lines()
            .position(|l| l == "retention_days = 3")
            .unwrap()
            + 1;
        assert_eq!(
            e.message,
            format!("duplicate key `retention_days`: it is already set at line {first}")
        );
        assert!(e.fix.starts_with("set `retention_days` once"), "{}", e.fix);
    }

    #[test]
    fn the_ble_adapter_is_one_choice_checked_at_load() {
        assert_eq!(
            parse(GOOD).unwrap().ble.adapter,
            None,
            "default: the first adapter"
        );
        let t = format!("{GOOD}\n[ble]\nadapter = \"hci1\"\n");
        assert_eq!(parse(&t).unwrap().ble.adapter.as_deref(), Some("hci1"));
        let t = format!("{GOOD}\n[ble]\nadapter = \"/org/bluez/hci1\"\n");
        let e = parse(&t).unwrap_err();
        assert!(e.message.contains("not a Bluetooth adapter name"), "{e}");
        assert!(e.to_string().contains("hci1"), "{e}");
    }

    #[test]
    fn an_unconfigured_hub_says_so() {
        let e = parse("# nothing here yet\n").unwrap_err();
        assert!(e.message.contains("not set up"), "{e}");
    }

    #[test]
    fn semantic_errors_point_at_their_key() {
        let t = GOOD.replace("https://clinic", "http://clinic");
        let e = parse(&t).unwrap_err();
        assert_eq!(e.line, Some(7), "{e}");
        assert!(e.message.contains("https"), "{e}");
        // A (legacy) address line is still checked, and pointed at.
        let t = GOOD.replace(
            "name = \"meter\"\nset_clock",
            "name = \"meter\"\naddress = \"c0:26:da:01:02\"\nset_clock",
        );
        let e = parse(&t).unwrap_err();
        assert_eq!(e.line, Some(12), "{e}");
        let t = GOOD.replace("values = [120, 185]", "values = [120, 900]");
        let e = parse(&t).unwrap_err();
        assert_eq!(e.line, Some(19), "{e}");
        assert!(e.fix.contains("mmHg"), "{e}");
    }
}
