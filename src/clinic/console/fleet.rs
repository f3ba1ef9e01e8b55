//! The fleet page: one row per hub — its patient, software version, last heartbeat, upload
//! backlog, free disk, certificate days left and its devices' batteries — offline and failing hubs
//! first, built from the hubs' heartbeat Observations (`src/fhir/heartbeat.rs`).
//!
//! Guarantees: a fixed number of FHIR requests whatever the number of hubs; the offline rule is
//! the worklist's ([`super::worklist::hub_state`]). With `Observation/$lastn`
//! ([`WorklistSettings::lastn`], the built-in store's default): the Devices, one `$lastn` (max=1)
//! for the hub's own fields and one (max=[`MAX_HUB_DEVICES`]) for its devices' last contact and
//! battery, then the hubs' security AuditEvents and the clinic's security-spike DetectedIssues
//! of the last [`SECURITY_DAYS`] ([`SEARCHES`] = 5) — the newest heartbeat of each hub whatever its
//! age and whatever the length of the history, so a hub silent for longer than the period still
//! shows "offline since". Without it: the Devices, one Observation search per heartbeat field
//! bounded by the period and [`MAX_SEARCH`], newest first, and the same two security searches
//! ([`SEARCHES_WITHOUT_LASTN`]); a cut search is shown
//! ([`Fleet::truncated`]). A field a hub did not report shows as absent
//! (`None`), never as zero.
//!
//! Pure: FHIR resources and the time in, rows out ([`build`]); [`load`] makes the searches.

use super::fhir::{FhirClient, FhirClientError};
use super::worklist::{hub_state, is_heartbeat, HubState, WorklistSettings, PERIOD_DAYS};
use crate::clinic::db::{resource_date, MAX_SEARCH};
use crate::fhir::audit::CODE_SYSTEM as AUDIT_CODES;
use crate::fhir::codes::{self, mdc};
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

/// A hub is failing when its certificate has fewer days left than this…
pub const CERT_DAYS_WARN: i64 = 30;
/// …or less free disk than this (bytes)…
pub const FREE_DISK_WARN: u64 = 200 * 1024 * 1024;
/// …or more readings waiting to upload than this…
pub const BACKLOG_WARN: u64 = 1_000;
/// …or a device battery at or below this (percent).
pub const BATTERY_WARN: u8 = 15;

/// A hub's security events flag it when one of these codes is among them (README "Security events
/// upstream"): integrity at rest, spoofing or unbonded connections, a revoked certificate, an
/// untrusted clinic, another patient's data, a wipe…
pub const FLAGGED_CODES: [&str; 7] = [
    "integrity-failure",
    "spoof-attempt",
    "unbonded-connection",
    "tls-client-revoked",
    "tls-server-untrusted",
    "patient-mismatch",
    "wipe",
];

/// …or when more events of one code than this arrived in the period (a spike).
pub const SECURITY_SPIKE: u64 = 100;

/// How far back the security column looks (days).
pub const SECURITY_DAYS: i64 = 7;

/// One security code of a hub over the last [`SECURITY_DAYS`]: the hub's AuditEvents summed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityRow {
    pub code: String,
    pub count: u64,
    pub last: Timestamp,
}

/// The count a hub's security report carries (`entity.detail` "count").
pub fn report_count(a: &Value) -> Option<u64> {
    a.pointer("/entity/0/detail")?
        .as_array()?
        .iter()
        .find(|d| d.get("type").and_then(Value::as_str) == Some("count"))?
        .get("valueString")?
        .as_str()?
        .parse()
        .ok()
}

/// The heartbeat fields searched, as (code system, code); one search each.
const FIELDS: [(&str, &str); 8] = [
    (codes::HUB_STATUS_SYSTEM, "backlog-depth"),
    (codes::HUB_STATUS_SYSTEM, "software-version"),
    (codes::HUB_STATUS_SYSTEM, "free-disk"),
    (codes::HUB_STATUS_SYSTEM, "cert-days-left"),
    (codes::HUB_STATUS_SYSTEM, "security-updates-pending"),
    (codes::HUB_STATUS_SYSTEM, "last-update"),
    (codes::HUB_STATUS_SYSTEM, "device-last-seen"),
    (codes::MDC, "67996"),
];

/// The hub's own fields: the first this many of [`FIELDS`] (the rest are its devices').
const HUB_FIELDS: usize = 6;

/// FHIR requests per fleet page with `$lastn`: the Devices, two `$lastn`, the hubs' security
/// AuditEvents and the clinic's security-spike DetectedIssues.
pub const SEARCHES: usize = 5;

/// FHIR searches per fleet page without `$lastn`: the Devices, one per heartbeat field, the
/// hubs' security AuditEvents and the security-spike DetectedIssues.
pub const SEARCHES_WITHOUT_LASTN: usize = 3 + FIELDS.len();

/// The most medical devices of one hub the fleet page shows: the `max` of the devices' `$lastn`
/// (each heartbeat reports every device once, so the newest heartbeat's are the newest this many).
pub const MAX_HUB_DEVICES: usize = 32;

/// One medical device as the hub's newest heartbeat reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceRow {
    /// The device's identifier (system id or Bluetooth address, dashed).
    pub ident: String,
    pub battery_percent: Option<u8>,
    /// Seconds since the hub last heard from it, when the heartbeat was sent.
    pub last_seen_secs: Option<i64>,
}

/// One hub.
#[derive(Debug, Clone)]
pub struct HubRow {
    /// `Device/<id>` of the hub.
    pub hub: String,
    pub patient: Option<String>,
    pub state: HubState,
    pub software_version: Option<String>,
    pub backlog: Option<u64>,
    pub free_disk_bytes: Option<u64>,
    pub cert_days_left: Option<i64>,
    /// Security updates pending on the hub (`None`: not reported — unknown).
    pub security_updates_pending: Option<u64>,
    /// The hub's last software update's outcome (`ok …`, `rolled-back …`).
    pub last_update: Option<String>,
    pub devices: Vec<DeviceRow>,
    /// Its security events of the last [`SECURITY_DAYS`], by code, the most recent first.
    pub security: Vec<SecurityRow>,
    /// When the clinic raised its newest security-spike alert about the hub (within
    /// [`SECURITY_DAYS`]), if it did.
    pub spike_alert: Option<Timestamp>,
    /// What makes the hub failing, in words (empty: healthy).
    pub problems: Vec<String>,
}

impl HubRow {
    fn rank(&self) -> (u8, Option<Timestamp>, usize) {
        match self.state {
            // Offline first, the longest offline (the earliest "since") at the top.
            HubState::Offline { since } => (0, Some(since), 0),
            // No heartbeat read (none ever with $lastn; none in the period with the standard
            // searches): after the offline hubs, which have a "since" to show.
            HubState::Unknown => (1, None, 0),
            _ if !self.problems.is_empty() => (2, None, usize::MAX - self.problems.len()),
            HubState::Online { .. } => (3, None, 0),
        }
    }
}

/// The page: the rows and whether a search was cut at [`MAX_SEARCH`] (only without `$lastn`:
/// then the oldest heartbeats are missing and a long-silent hub may show "no heartbeat").
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    pub rows: Vec<HubRow>,
    pub truncated: bool,
}

fn reference(v: Option<&Value>) -> Option<&str> {
    v?.get("reference")?.as_str()
}

fn code_of(o: &Value) -> Option<&str> {
    o.get("code")?
        .get("coding")?
        .as_array()?
        .iter()
        .find_map(|c| {
            let sys = c.get("system").and_then(Value::as_str)?;
            (sys == codes::HUB_STATUS_SYSTEM || sys == codes::MDC)
                .then(|| c.get("code").and_then(Value::as_str))
                .flatten()
        })
}

fn number(o: &Value) -> Option<f64> {
    o.get("valueQuantity")?.get("value")?.as_f64()
}

fn focus_ident(o: &Value) -> Option<String> {
    o.get("focus")?
        .as_array()?
        .first()?
        .get("identifier")?
        .get("value")?
        .as_str()
        .map(str::to_owned)
}

fn is_hub_device(d: &Value) -> bool {
    let want = mdc::MOC_VMS_MDS_AHD.to_string();
    d.get("type")
        .and_then(|t| t.get("coding"))
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.get("code").and_then(Value::as_str) == Some(want.as_str()))
        })
}

/// The rows, offline hubs first (longest offline at the top), then hubs without a heartbeat in
/// the period, then failing hubs (most problems first), then healthy ones; by hub within a group.
/// `observations` may hold anything: only heartbeat Observations count, the newest per field.
pub fn build(
    devices: &[Value],
    observations: &[Value],
    now: Timestamp,
    s: &WorklistSettings,
) -> Vec<HubRow> {
    build_with_security(devices, observations, &[], &[], now, s)
}

/// [`build`] with the hubs' security AuditEvents (`audits`: anything; only a hub's own reports
/// of the last [`SECURITY_DAYS`] count, each under the Device that is its agent) and the clinic's
/// security-spike DetectedIssues (`issues`, each about the Device it implicates).
pub fn build_with_security(
    devices: &[Value],
    observations: &[Value],
    audits: &[Value],
    issues: &[Value],
    now: Timestamp,
    s: &WorklistSettings,
) -> Vec<HubRow> {
    let device_patient: HashMap<String, String> = devices
        .iter()
        .filter_map(|d| {
            let id = d.get("id").and_then(Value::as_str)?;
            let p = reference(d.get("patient"))?.strip_prefix("Patient/")?;
            Some((format!("Device/{id}"), p.to_owned()))
        })
        .collect();
    let mut rows: BTreeMap<String, HubRow> = BTreeMap::new();
    let new_row = |hub: &str| HubRow {
        hub: hub.to_owned(),
        patient: device_patient.get(hub).cloned(),
        state: HubState::Unknown,
        software_version: None,
        backlog: None,
        free_disk_bytes: None,
        cert_days_left: None,
        security_updates_pending: None,
        last_update: None,
        devices: Vec::new(),
        security: Vec::new(),
        spike_alert: None,
        problems: Vec::new(),
    };
    for d in devices.iter().filter(|d| is_hub_device(d)) {
        if let Some(id) = d.get("id").and_then(Value::as_str) {
            let hub = format!("Device/{id}");
            rows.insert(hub.clone(), new_row(&hub));
        }
    }
    // The newest heartbeat Observation per (hub, field, device).
    let mut newest: HashMap<(String, String, Option<String>), (Timestamp, &Value)> = HashMap::new();
    let mut last_beat: HashMap<String, Timestamp> = HashMap::new();
    for o in observations.iter().filter(|o| is_heartbeat(o)) {
        let (Some(hub), Some(at), Some(code)) =
            (reference(o.get("subject")), resource_date(o), code_of(o))
        else {
            continue;
        };
        let beat = last_beat.entry(hub.to_owned()).or_insert(at);
        *beat = (*beat).max(at);
        let key = (hub.to_owned(), code.to_owned(), focus_ident(o));
        match newest.get(&key) {
            Some((t, _)) if *t >= at => {}
            _ => {
                newest.insert(key, (at, o));
            }
        }
    }
    for ((hub, code, dev), (at, o)) in &newest {
        // A field older than the hub's newest heartbeat is one the hub stopped reporting.
        if last_beat.get(hub).is_some_and(|b| b > at) {
            continue;
        }
        let r = rows.entry(hub.clone()).or_insert_with(|| new_row(hub));
        let whole = number(o).filter(|v| *v >= 0.0 && v.fract() == 0.0);
        match (code.as_str(), dev) {
            ("backlog-depth", _) => r.backlog = whole.map(|v| v as u64),
            ("free-disk", _) => r.free_disk_bytes = whole.map(|v| v as u64),
            ("cert-days-left", _) => {
                r.cert_days_left = number(o).filter(|v| v.fract() == 0.0).map(|v| v as i64)
            }
            ("security-updates-pending", _) => r.security_updates_pending = whole.map(|v| v as u64),
            ("last-update", _) => {
                r.last_update = o
                    .get("valueString")
                    .and_then(Value::as_str)
                    .map(|s| s.chars().take(200).collect())
            }
            ("software-version", _) => {
                r.software_version = o
                    .get("valueString")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            }
            ("device-last-seen", Some(d)) | ("67996", Some(d)) => {
                let i = match r.devices.iter().position(|x| &x.ident == d) {
                    Some(i) => i,
                    None => {
                        r.devices.push(DeviceRow {
                            ident: d.clone(),
                            ..Default::default()
                        });
                        r.devices.len() - 1
                    }
                };
                if let Some(row) = r.devices.get_mut(i) {
                    if code == "67996" {
                        row.battery_percent = whole.filter(|v| *v <= 100.0).map(|v| v as u8);
                    } else {
                        row.last_seen_secs = whole.map(|v| v as i64);
                    }
                }
            }
            _ => {}
        }
    }
    let since = now - SignedDuration::from_hours(24 * SECURITY_DAYS);
    for a in audits {
        let (Some(hub), Some(code), Some(count), Some(at)) = (
            a.pointer("/agent/0/who/reference").and_then(Value::as_str),
            a.pointer("/subtype/0")
                .filter(|c| c.get("system").and_then(Value::as_str) == Some(AUDIT_CODES))
                .and_then(|c| c.get("code"))
                .and_then(Value::as_str),
            report_count(a),
            resource_date(a),
        ) else {
            continue;
        };
        if at < since {
            continue;
        }
        // Only rows of hubs the Device search found: a report names its hub by its Device.
        let Some(r) = rows.get_mut(hub) else {
            continue;
        };
        match r.security.iter_mut().find(|x| x.code == code) {
            Some(x) => {
                x.count = x.count.saturating_add(count);
                x.last = x.last.max(at);
            }
            None => r.security.push(SecurityRow {
                code: code.to_owned(),
                count,
                last: at,
            }),
        }
    }
    for i in issues {
        let spike = i.pointer("/code/coding/0/system").and_then(Value::as_str)
            == Some(crate::clinic::db::SPIKE_SYSTEM);
        let (Some(hub), Some(at)) = (
            i.pointer("/implicated/0/reference").and_then(Value::as_str),
            resource_date(i),
        ) else {
            continue;
        };
        if !spike || at < since {
            continue;
        }
        if let Some(r) = rows.get_mut(hub) {
            r.spike_alert = Some(r.spike_alert.map_or(at, |t| t.max(at)));
        }
    }
    let mut out: Vec<HubRow> = rows
        .into_values()
        .map(|mut r| {
            r.state = hub_state(last_beat.get(&r.hub).copied(), now, s);
            r.devices.sort_by(|a, b| a.ident.cmp(&b.ident));
            if let Some(d) = r.cert_days_left.filter(|d| *d < CERT_DAYS_WARN) {
                r.problems.push(if d < 0 {
                    "certificate expired".to_owned()
                } else {
                    format!("certificate expires in {d} days")
                });
            }
            if r.free_disk_bytes.is_some_and(|f| f < FREE_DISK_WARN) {
                r.problems.push("disk nearly full".to_owned());
            }
            if r.last_update
                .as_deref()
                .is_some_and(|u| !u.starts_with("ok "))
            {
                r.problems
                    .push("last software update rolled back or failed".to_owned());
            }
            if r.backlog.is_some_and(|b| b > BACKLOG_WARN) {
                r.problems.push("upload backlog growing".to_owned());
            }
            let low = r
                .devices
                .iter()
                .filter(|d| d.battery_percent.is_some_and(|b| b <= BATTERY_WARN))
                .count();
            if low > 0 {
                r.problems.push(format!("{low} device battery low"));
            }
            r.security
                .sort_by(|a, b| b.last.cmp(&a.last).then_with(|| a.code.cmp(&b.code)));
            let unusual: Vec<&str> = r
                .security
                .iter()
                .filter(|x| FLAGGED_CODES.contains(&x.code.as_str()) || x.count > SECURITY_SPIKE)
                .map(|x| x.code.as_str())
                .collect();
            if !unusual.is_empty() {
                r.problems
                    .push(format!("unusual security events: {}", unusual.join(", ")));
            }
            r
        })
        .collect();
    out.sort_by(|a, b| a.rank().cmp(&b.rank()).then_with(|| a.hub.cmp(&b.hub)));
    out
}

/// The fleet's requests: [`SEARCHES`] with `$lastn`, [`SEARCHES_WITHOUT_LASTN`] without,
/// whatever the number of hubs.
pub async fn load(
    fhir: &FhirClient,
    now: Timestamp,
    s: &WorklistSettings,
) -> Result<Fleet, FhirClientError> {
    let since = (now - SignedDuration::from_hours(24 * PERIOD_DAYS)).to_string();
    let count = MAX_SEARCH.to_string();
    let devices = fhir.search("Device", &[("_count", count.clone())]).await?;
    let mut truncated = devices.total > devices.resources.len();
    let mut obs = Vec::new();
    let list = |fields: &[(&str, &str)]| {
        fields
            .iter()
            .map(|(system, code)| format!("{system}|{code}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    if s.lastn {
        let (hub, dev) = FIELDS.split_at(HUB_FIELDS);
        for (fields, max) in [(hub, 1), (dev, MAX_HUB_DEVICES)] {
            let found = fhir
                .search(
                    "Observation/$lastn",
                    &[("code", list(fields)), ("max", max.to_string())],
                )
                .await?;
            obs.extend(found.resources);
        }
    } else {
        for (system, code) in FIELDS {
            let found = fhir
                .search(
                    "Observation",
                    &[
                        ("code", format!("{system}|{code}")),
                        ("date", format!("ge{since}")),
                        ("_sort", "-date".into()),
                        ("_count", count.clone()),
                    ],
                )
                .await?;
            truncated |= found.total > found.resources.len();
            obs.extend(found.resources);
        }
    }
    // The hubs' security reports of the last SECURITY_DAYS, by their codes (`subtype`).
    let codes: Vec<String> = crate::store::security::CODES
        .iter()
        .map(|(_, c)| *c)
        .chain([crate::store::security::OTHER])
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|c| format!("{AUDIT_CODES}|{c}"))
        .collect();
    let audit_since = (now - SignedDuration::from_hours(24 * SECURITY_DAYS)).to_string();
    let audits = fhir
        .search(
            "AuditEvent",
            &[
                ("subtype", codes.join(",")),
                ("date", format!("ge{audit_since}")),
                ("_sort", "-date".into()),
                ("_count", count.clone()),
            ],
        )
        .await?;
    truncated |= audits.total > audits.resources.len();
    let issues = fhir
        .search(
            "DetectedIssue",
            &[
                (
                    "code",
                    format!("{}|security-spike", crate::clinic::db::SPIKE_SYSTEM),
                ),
                ("date", format!("ge{audit_since}")),
                ("_count", "1000".into()),
            ],
        )
        .await?;
    Ok(Fleet {
        rows: build_with_security(
            &devices.resources,
            &obs,
            &audits.resources,
            &issues.resources,
            now,
            s,
        ),
        truncated,
    })
}
