//! The BLE layer's settings: `[ble]` ([`BleConfig`]: scan windows, timeouts, connection budget,
//! the adapter) and each paired device's `[[device]]` settings ([`DeviceConfig`], found by the name
//! given at pairing). `config` parses them into these types; the sessions read them.

use super::KnownDevice;
use serde::Deserialize;
use std::time::Duration;

/// Per-device settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// The name given at pairing (`vitals-hub pair --name`; default the profile): how the config
    /// refers to a device. The address itself lives sealed in the store, never in the config.
    pub name: String,
    /// A device address written in an older config (still honoured; `config check` warns, since
    /// the file is readable and the address identifies the patient's device).
    #[serde(default)]
    pub legacy_address: Option<String>,
    /// The patient's user index on a multi-user scale or cuff; readings of other users are held.
    #[serde(default)]
    pub user_id: Option<u8>,
    /// Whether the hub may write the device clock (Current Time Service).
    #[serde(default)]
    pub set_clock: bool,
}

/// What the BLE sessions need. Durations in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BleConfig {
    /// Scan for and talk to paired devices (off on a hub used only with simulated devices).
    pub enabled: bool,
    /// The Bluetooth adapter (`hci0`, `hci1` …) the daemon, pairing, the technician's radio
    /// commands and `doctor` all use; none: the first adapter BlueZ lists.
    pub adapter: Option<String>,
    pub scan_window_ms: u64,
    pub scan_pause_ms: u64,
    pub connect_timeout_ms: u64,
    pub op_timeout_ms: u64,
    pub connect_attempts: u32,
    pub backoff_ms: u64,
    /// Concurrent connections (adapters manage a few).
    pub max_connections: usize,
    pub session_timeout_ms: u64,
    /// After a finished session, the device is left alone this long.
    pub cooldown_ms: u64,
    /// After a failed session, wait this long before the next attempt.
    pub retry_after_ms: u64,
    /// Without traffic this long, a spot device is done (or a stream checks its link).
    pub quiet_ms: u64,
    /// RACP: no record for this long → check the link; twice → abort.
    pub racp_idle_ms: u64,
    /// Readings per store transaction during a download.
    pub commit_batch: usize,
    /// Continuous streams: summary window (default 1 minute).
    pub summary_window_ms: i64,
    /// Continuous streams: a session ends after this long (the stream resumes next session).
    pub stream_max_ms: u64,
    /// Device clock skew beyond which the clock is written (where allowed).
    pub clock_tolerance_s: i64,
    /// The hub's zone offset for device wall clocks (the config tree brings real zones later).
    /// Set from `[hub]` by the config (not a key of `[ble]`).
    #[serde(skip)]
    pub utc_offset_minutes: i32,
    /// The home's time zone (`[hub] timezone`): device clocks are written with, and the CGM
    /// Session Start Time carries, its local time at each instant. Set by the config.
    #[serde(skip)]
    pub zone: crate::model::Zone,
    /// Set from the `[[device]]` tables by the config (not a key of `[ble]`).
    #[serde(skip)]
    pub devices: Vec<DeviceConfig>,
}

impl Default for BleConfig {
    fn default() -> Self {
        BleConfig {
            enabled: true,
            adapter: None,
            scan_window_ms: 10_000,
            scan_pause_ms: 5_000,
            connect_timeout_ms: 30_000,
            op_timeout_ms: 10_000,
            connect_attempts: 3,
            backoff_ms: 1_000,
            max_connections: 3,
            session_timeout_ms: 300_000,
            cooldown_ms: 60_000,
            retry_after_ms: 10_000,
            quiet_ms: 5_000,
            racp_idle_ms: 15_000,
            commit_batch: 50,
            summary_window_ms: 60_000,
            stream_max_ms: 600_000,
            clock_tolerance_s: 120,
            utc_offset_minutes: 0,
            zone: crate::model::Zone::utc(),
            devices: Vec::new(),
        }
    }
}

impl BleConfig {
    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }
    pub(crate) fn backoff(&self) -> Duration {
        Self::ms(self.backoff_ms)
    }
    pub(crate) fn quiet(&self) -> Duration {
        Self::ms(self.quiet_ms)
    }
    pub(crate) fn racp_idle(&self) -> Duration {
        Self::ms(self.racp_idle_ms)
    }
    pub(crate) fn stream_max(&self) -> Duration {
        Self::ms(self.stream_max_ms)
    }
    /// The settings of an allow-listed device: the `[[device]]` with its pairing name (or, from
    /// an older config, its address); defaults when none.
    pub(crate) fn device(&self, known: &KnownDevice, address: &str) -> DeviceConfig {
        let by_name = known
            .name
            .as_deref()
            .and_then(|n| self.devices.iter().find(|d| d.name == n));
        let by_address = || {
            self.devices.iter().find(|d| {
                d.legacy_address
                    .as_deref()
                    .is_some_and(|a| a.eq_ignore_ascii_case(address))
            })
        };
        by_name
            .or_else(by_address)
            .cloned()
            .unwrap_or_else(|| DeviceConfig {
                name: known.name.clone().unwrap_or_default(),
                ..DeviceConfig::default()
            })
    }
}
