//! The install report (`vitals-hub commission`): what a technician leaves behind and the clinic
//! receives — every paired device has produced a reading the clinic acknowledged, the clock offsets
//! found (and whether the hub corrected them), each device's signal strength, and the doctor's
//! checklist. Printed for the technician; stored as a hub notice so the uplink delivers it to the
//! clinic (a FHIR `Communication`, routine) exactly once, like every other outbox entry.

use crate::config::Config;
use crate::model::UtcMillis;
use crate::store::Store;
use serde::Serialize;
use std::collections::HashMap;

/// One paired device in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceLine {
    pub name: String,
    pub profile: String,
    pub address: String,
    /// Readings of this device the clinic acknowledged.
    pub acknowledged: u64,
    pub last_acknowledged: Option<UtcMillis>,
    /// When the hub last stored a reading of this device (acknowledged or not).
    pub last_stored: Option<UtcMillis>,
    /// Device clock minus hub clock at the last clock check, seconds.
    pub clock_offset_s: Option<i64>,
    /// The hub set the device's clock at that check.
    pub clock_corrected: bool,
    pub battery_percent: Option<u8>,
    /// Signal strength seen in the report's scan (dBm); `None` when not seen or no radio.
    pub rssi: Option<i16>,
    pub simulated: bool,
    /// At least one reading acknowledged by the clinic.
    pub pass: bool,
}

/// A line of the doctor's checklist, as the report carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckLine {
    pub name: String,
    pub status: String,
    pub detail: String,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub at: UtcMillis,
    pub hub_version: String,
    /// The patient, clinic and hub certificate this hub reports for and to.
    pub identity: crate::tech::status::Identity,
    pub devices: Vec<DeviceLine>,
    pub checks: Vec<CheckLine>,
    /// Every device passed and no check failed.
    pub pass: bool,
}

/// The doctor's checklist as the report carries it (its fixes are printed by `doctor`).
pub fn check_lines(checks: &[crate::tech::doctor::Check]) -> Vec<CheckLine> {
    checks
        .iter()
        .map(|c| CheckLine {
            name: c.name.clone(),
            status: c.status.label().to_string(),
            detail: match &c.fix {
                Some(f) => format!("{} — fix: {f}", c.detail),
                None => c.detail.clone(),
            },
        })
        .collect()
}

/// Build the report from the store (read what the hub knows), the scan's RSSI by address, and the
/// doctor's lines.
pub async fn build(
    cfg: &Config,
    store: &Store,
    rssi: &HashMap<String, i16>,
    checks: Vec<CheckLine>,
    now: UtcMillis,
) -> Result<Report, crate::store::StoreError> {
    let acked = store.acked_by_device().await?;
    let received = store.last_received().await?;
    let mut devices = Vec::new();
    for d in store.devices().await? {
        if !d.allowed {
            continue;
        }
        let info = store.device_info(&d.key).await?.unwrap_or_default();
        let (clock_offset_s, clock_corrected) = match info.clock {
            Some(c) => {
                let hub_local =
                    c.hub.as_millis().div_euclid(1000) + i64::from(cfg.hub.utc_offset_minutes) * 60;
                (
                    Some(c.device.to_epoch_seconds() - hub_local),
                    c.set_by_hub_offset_minutes.is_some(),
                )
            }
            None => (None, false),
        };
        let (n, last) = acked.get(&d.key).copied().unwrap_or((0, None));
        let address = d.record.address.to_ascii_uppercase();
        devices.push(DeviceLine {
            name: d
                .record
                .name
                .clone()
                .unwrap_or_else(|| d.record.profile.clone()),
            profile: d.record.profile.clone(),
            rssi: rssi.get(&address).copied(),
            address,
            acknowledged: n,
            last_acknowledged: last,
            last_stored: received.get(&d.key).copied(),
            clock_offset_s,
            clock_corrected,
            battery_percent: info.battery_percent,
            simulated: d.record.bond.as_deref() == Some("simulated"),
            pass: n > 0,
        });
    }
    devices.sort_by(|a, b| a.name.cmp(&b.name));
    let pass = !devices.is_empty()
        && devices.iter().all(|d| d.pass)
        && checks.iter().all(|c| c.status != "FAIL");
    Ok(Report {
        at: now,
        hub_version: env!("CARGO_PKG_VERSION").to_string(),
        identity: crate::tech::status::identity(cfg, now.as_millis().div_euclid(1000)),
        devices,
        checks,
        pass,
    })
}

/// The report as the technician reads it.
pub fn text(r: &Report) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "vitals-hub commissioning report ({}) — {}\n\n",
        r.at.to_rfc3339(),
        if r.pass { "PASS" } else { "FAIL" }
    ));
    out.push_str(&crate::tech::status::render_identity(&r.identity, 13));
    out.push('\n');
    out.push_str("devices:\n");
    if r.devices.is_empty() {
        out.push_str(
            "  FAIL  no paired device: pair the patient's devices with `vitals-hub pair`\n",
        );
    }
    for d in &r.devices {
        let clock = match (d.clock_offset_s, d.clock_corrected) {
            (Some(o), true) => format!("clock was {o:+} s off, corrected"),
            (Some(o), false) => format!("clock {o:+} s off"),
            (None, _) => "no clock read".into(),
        };
        out.push_str(&format!(
            "  {}  {:<16} {:<15} {}  acknowledged readings: {}  {}  rssi {}  battery {}{}\n",
            if d.pass { "PASS" } else { "FAIL" },
            d.name,
            d.profile,
            d.address,
            d.acknowledged,
            clock,
            d.rssi
                .map(|v| format!("{v} dBm"))
                .unwrap_or_else(|| "-".into()),
            d.battery_percent
                .map(|b| format!("{b} %"))
                .unwrap_or_else(|| "-".into()),
            if d.simulated { "  (simulated)" } else { "" }
        ));
        if !d.pass {
            out.push_str(&format!("        {}\n", device_fix(r, d)));
        }
    }
    if !r.checks.is_empty() {
        out.push_str("\nchecks:\n");
        for c in &r.checks {
            out.push_str(&format!("  {:<4}  {}: {}\n", c.status, c.name, c.detail));
        }
    }
    out
}

/// Why a device has no acknowledged reading, and the fix: the real cause first — a hub clock that is
/// not synchronised holds every upload, however many readings the device delivered.
fn device_fix(r: &Report, d: &DeviceLine) -> String {
    let failed = |name: &str| {
        r.checks
            .iter()
            .any(|c| c.name == name && c.status == "FAIL")
    };
    match d.last_stored {
        Some(t) if failed("clock") => format!(
            "readings stored (the last at {}), none uploaded: uploads wait until the hub clock is \
             synchronised, and it is not (line `clock` below); fix: `sudo timedatectl set-ntp true`, \
             let the hub reach an NTP server (`timedatectl timesync-status`), then run commission again",
            t.to_rfc3339()
        ),
        Some(t) => format!(
            "readings stored (the last at {}), none acknowledged by the clinic yet; fix: see \
             the `clinic` and `backlog` lines below, wait for the upload (`vitals-hub status`), then \
             run commission again",
            t.to_rfc3339()
        ),
        None => "no reading received from this device; fix: take a measurement on the device near \
                 the hub, wait for the upload (`vitals-hub status`), then run commission again"
            .to_string(),
    }
}

/// Store the report for upload (a hub notice; the stable key makes a re-run at the same
/// millisecond a duplicate, never a second report).
pub async fn queue(store: &Store, r: &Report) -> Result<i64, crate::store::StoreError> {
    let payload = serde_json::json!({ "commissioning_report": r });
    let (id, _) = store
        .append_alert(
            payload,
            &format!("commission/{}", r.at.as_millis()),
            Vec::new(),
        )
        .await?;
    // A security event too (issue 19): the clinic's fleet page sees each commissioning.
    store
        .append_event(
            "commissioned",
            "info",
            "commissioning report queued for upload".into(),
        )
        .await?;
    Ok(id)
}
