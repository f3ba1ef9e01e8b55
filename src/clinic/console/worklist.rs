//! The worklist: one row per patient, sorted by what needs attention — unacknowledged critical
//! alerts, then other open alerts, then stale data, then hubs offline — built from FHIR searches
//! whose number does not depend on the number of patients, never one per patient.
//!
//! Pure: FHIR resources and the time in, rows out ([`build`]); [`load`] makes the requests.
//!
//! Two ways to read, chosen by [`WorklistSettings::lastn`] (explicit, not guessed from an error):
//!
//! - **With `Observation/$lastn`** (the default; the built-in store implements it, and a REST
//!   base whose CapabilityStatement declares it — [`supports_lastn`] — can use it): the latest
//!   value per measurement kind is one `$lastn` (max=1, every kind's MDC code, all subjects), the
//!   newest heartbeat per hub another (`backlog-depth`, which every heartbeat carries). Their
//!   answer is (patients × kinds) and (hubs), whatever the length of the history. The period's
//!   days with readings come from one `Patient?_has:Observation:subject:date=eq<day>` search per
//!   UTC day of the period ([`period_dates`]): each answers only patient ids (at most one per
//!   patient), so no Observation body is read for the count — the alternative, `_elements` over
//!   every reading of 30 days, returns 480,000 entries at 1,000 patients. 4 + [`PERIOD_DAYS`] +
//!   2 requests per page ([`REQUESTS_LASTN`]).
//! - **Without it** (a FHIR server that lacks `$lastn`): the standard searches bounded by date —
//!   every Observation of the period, newest first, up to [`MAX_SEARCH`] — as before: five
//!   requests, whose answer grows with the period's volume (heartbeats included) and is cut at
//!   the cap (the oldest readings and heartbeats then missing).
//!
//! Both read the acknowledgement `Task`s authored since one day before the period (an
//! acknowledgement comes after the alert record it points at, and only the period's
//! DetectedIssues are read; the day covers a hub clock ahead of the console's), so that search
//! does not grow with every acknowledgement ever made.
//!
//! Days with readings: the UTC dates from 29 days before today to today on which an
//! Observation about the patient (subject `Patient/<id>`; a hub's heartbeat is about the hub)
//! was made.

use super::fhir::{FhirClient, FhirClientError};
use crate::clinic::db::{resource_date, MAX_SEARCH};
use crate::fhir::codes;
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};

/// The RPM period the days-with-readings count covers.
pub const PERIOD_DAYS: i64 = 30;

/// Settings of the worklist.
#[derive(Debug, Clone, Copy)]
pub struct WorklistSettings {
    /// The hubs' heartbeat interval.
    pub heartbeat_interval: SignedDuration,
    /// A hub is offline after this many intervals without a heartbeat.
    pub missed_heartbeats: i32,
    /// A patient's data is stale when the newest reading is older than this.
    pub stale_after: SignedDuration,
    /// Whether the FHIR base implements `Observation/$lastn` (the worklist and the fleet page
    /// then read the newest values with it; see the module doc). True for the built-in store; for
    /// a REST base, set it from [`supports_lastn`] of the server's CapabilityStatement.
    pub lastn: bool,
}

impl Default for WorklistSettings {
    fn default() -> Self {
        WorklistSettings {
            heartbeat_interval: SignedDuration::from_mins(15),
            missed_heartbeats: 3,
            stale_after: SignedDuration::from_hours(48),
            lastn: true,
        }
    }
}

/// Whether a CapabilityStatement declares the `Observation/$lastn` operation (by its name `lastn`
/// or its canonical definition) on a server-mode `rest`.
pub fn supports_lastn(capability_statement: &Value) -> bool {
    capability_statement
        .get("rest")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|r| r.get("mode").and_then(Value::as_str) == Some("server"))
        .flat_map(|r| {
            r.get("resource")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .filter(|r| r.get("type").and_then(Value::as_str) == Some("Observation"))
        .flat_map(|r| {
            r.get("operation")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .any(|op| {
            op.get("name").and_then(Value::as_str) == Some("lastn")
                || op
                    .get("definition")
                    .and_then(Value::as_str)
                    .is_some_and(|d| d.ends_with("/OperationDefinition/Observation-lastn"))
        })
}

/// The MDC codes of the measurement kinds [`kind_of`] names (those the hub writes): what the
/// worklist's `$lastn` asks for.
pub const KIND_CODES: [&str; 17] = [
    "150020", "150456", "149530", "149546", "147842", "188736", "150364", "160184", "160188",
    "160192", "160196", "160200", "160204", "160364", "160368", "160372", "160376",
];

/// FHIR requests of a worklist page with `$lastn`: Patient, Device, two `$lastn`, one
/// `Patient?_has` per day of the period, DetectedIssue, Task.
pub const REQUESTS_LASTN: usize = 4 + PERIOD_DAYS as usize + 2;

/// The UTC dates of the period, oldest first: today (of `now`) and the 29 days before.
pub fn period_dates(now: Timestamp) -> Vec<jiff::civil::Date> {
    let today = jiff::tz::Offset::UTC.to_datetime(now).date();
    (0..PERIOD_DAYS)
        .rev()
        .filter_map(|back| today.checked_sub(jiff::Span::new().days(back)).ok())
        .collect()
}

/// The ack code the console writes on its `Task`s.
pub const ACK_SYSTEM: &str = "https://vitals-hub.invalid/fhir/CodeSystem/console-task";
pub const ACK_CODE: &str = "acknowledge-alert";

/// A measurement kind's label from an Observation's MDC code.
pub fn kind_of(obs: &Value) -> Option<&'static str> {
    let codings = obs.get("code")?.get("coding")?.as_array()?;
    codings.iter().find_map(|c| {
        if c.get("system").and_then(Value::as_str) != Some(codes::MDC) {
            return None;
        }
        Some(match c.get("code").and_then(Value::as_str)? {
            "150020" => "Blood pressure",
            "150456" => "SpO₂",
            "149530" | "149546" | "147842" => "Pulse",
            "188736" => "Weight",
            "150364" => "Temperature",
            c if c.starts_with("1601") || c.starts_with("1602") || c.starts_with("1603") => {
                "Glucose"
            }
            _ => return None,
        })
    })
}

/// Whether an Observation is part of a hub's heartbeat (subject = the hub).
pub fn is_heartbeat(obs: &Value) -> bool {
    obs.get("identifier")
        .and_then(Value::as_array)
        .is_some_and(|ids| {
            ids.iter()
                .any(|i| i.get("system").and_then(Value::as_str) == Some(codes::HUB_STATUS_SYSTEM))
        })
}

fn quantity(q: &Value) -> Option<String> {
    let v = q.get("value")?;
    let unit = q
        .get("unit")
        .or_else(|| q.get("code"))
        .and_then(Value::as_str)
        .unwrap_or("");
    Some(format!("{v} {unit}").trim_end().to_owned())
}

/// The value of an Observation as shown (`128/82 mmHg`, `104 mg/dL`).
pub fn value_text(obs: &Value) -> String {
    if let Some(q) = obs.get("valueQuantity").and_then(quantity) {
        return q;
    }
    let comps = obs
        .get("component")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let comp = |code: &str| {
        comps.iter().find(|c| {
            c.get("code")
                .and_then(|x| x.get("coding"))
                .and_then(Value::as_array)
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|x| x.get("code").and_then(Value::as_str) == Some(code))
                })
        })
    };
    let num = |c: Option<&Value>| {
        c.and_then(|c| c.get("valueQuantity"))
            .and_then(|q| q.get("value"))
            .map(|v| v.to_string())
    };
    match (num(comp("150021")), num(comp("150022"))) {
        (Some(s), Some(d)) => format!("{s}/{d} mmHg"),
        _ => obs
            .get("valueString")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| "—".into()),
    }
}

/// The interpretation flags of an Observation (`L`, `H`, `LL`, `HH`), top level and components.
pub fn flags_of(obs: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut scan = |v: &Value| {
        if let Some(is) = v.get("interpretation").and_then(Value::as_array) {
            for i in is {
                for c in i
                    .get("coding")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(code) = c.get("code").and_then(Value::as_str) {
                        if ["L", "H", "LL", "HH"].contains(&code) && !out.iter().any(|x| x == code)
                        {
                            out.push(code.to_owned());
                        }
                    }
                }
            }
        }
    };
    scan(obs);
    for c in obs
        .get("component")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        scan(c);
    }
    out
}

/// An alert episode: its DetectedIssues (raised, escalated, resolved) in time order.
#[derive(Debug, Clone)]
pub struct Episode {
    pub key: String,
    pub patient: String,
    /// The newest record's id (`DetectedIssue/<id>`): what an acknowledgement points at.
    pub current_id: String,
    /// high, moderate or low.
    pub severity: String,
    pub text: String,
    pub at: Option<Timestamp>,
    pub open: bool,
    pub acknowledged: bool,
}

fn patient_of(r: &Value) -> Option<String> {
    r.get("subject")
        .or_else(|| r.get("patient"))
        .or_else(|| r.get("for"))
        .and_then(|s| s.get("reference"))
        .and_then(Value::as_str)
        .and_then(|s| s.strip_prefix("Patient/"))
        .map(str::to_owned)
}

fn id_of(r: &Value) -> String {
    r.get("id").and_then(Value::as_str).unwrap_or("").to_owned()
}

/// Alert episodes from DetectedIssues and the acknowledgement Tasks.
pub fn episodes(issues: &[Value], tasks: &[Value]) -> Vec<Episode> {
    let acked: HashSet<String> = tasks
        .iter()
        .filter_map(|t| {
            t.get("focus")
                .and_then(|f| f.get("reference"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect();
    let mut by_key: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for i in issues {
        let key = i
            .get("identifier")
            .and_then(Value::as_array)
            .and_then(|ids| {
                ids.iter().find(|x| {
                    x.get("system").and_then(Value::as_str) == Some(codes::ALERT_EPISODE_SYSTEM)
                })
            })
            .and_then(|x| x.get("value"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("DetectedIssue/{}", id_of(i)));
        by_key.entry(key).or_default().push(i);
    }
    by_key
        .into_iter()
        .filter_map(|(key, mut recs)| {
            recs.sort_by_key(|r| resource_date(r));
            let last = *recs.last()?;
            let text = last
                .get("code")
                .and_then(|c| c.get("text"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let current_id = format!("DetectedIssue/{}", id_of(last));
            Some(Episode {
                patient: patient_of(last)?,
                open: !text.starts_with("resolved") && last.get("mitigation").is_none(),
                acknowledged: acked.contains(&current_id),
                severity: last
                    .get("severity")
                    .and_then(Value::as_str)
                    .unwrap_or("low")
                    .to_owned(),
                at: resource_date(last),
                current_id,
                key,
                text,
            })
        })
        .collect()
}

/// The hub's state from its newest heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubState {
    Online {
        last: Timestamp,
    },
    /// Offline since the first heartbeat that did not come.
    Offline {
        since: Timestamp,
    },
    /// No heartbeat read: none ever with `$lastn`, none in the period with the standard
    /// searches.
    Unknown,
}

/// A hub's state from its newest heartbeat: offline once `missed_heartbeats` intervals passed
/// without one, "since" the first heartbeat that did not come. The worklist and the fleet page
/// share this rule.
pub fn hub_state(last: Option<Timestamp>, now: Timestamp, s: &WorklistSettings) -> HubState {
    let offline_after = s.heartbeat_interval * s.missed_heartbeats;
    match last {
        None => HubState::Unknown,
        Some(last) if now.duration_since(last) > offline_after => HubState::Offline {
            since: last + s.heartbeat_interval,
        },
        Some(last) => HubState::Online { last },
    }
}

/// One worklist row.
#[derive(Debug, Clone)]
pub struct Row {
    pub patient: String,
    /// The display label an admin set (`Patient.name[0].text`).
    pub label: Option<String>,
    pub critical_unacked: usize,
    /// Open alerts by severity: high, moderate, low.
    pub open: [usize; 3],
    /// Per kind: the latest value, its flags and its time.
    pub latest: BTreeMap<&'static str, (String, Vec<String>, Timestamp)>,
    pub stale: bool,
    pub hub: HubState,
    /// Days with at least one reading in the period (UTC days).
    pub days_with_readings: usize,
}

impl Row {
    /// RPM billing band of the period's days with readings.
    pub fn band(&self) -> &'static str {
        match self.days_with_readings {
            0..=1 => "under 2",
            2..=15 => "2–15",
            _ => "16+",
        }
    }

    fn attention(&self) -> (bool, bool, bool, bool) {
        (
            self.critical_unacked > 0,
            self.open.iter().sum::<usize>() > 0,
            self.stale,
            matches!(self.hub, HubState::Offline { .. }),
        )
    }
}

/// The rows, most urgent first; the days with readings counted from `observations`' readings.
pub fn build(
    patients: &[Value],
    devices: &[Value],
    observations: &[Value],
    issues: &[Value],
    tasks: &[Value],
    now: Timestamp,
    s: &WorklistSettings,
) -> Vec<Row> {
    build_with_days(patients, devices, observations, issues, tasks, None, now, s)
}

/// [`build`], with the days with readings per patient given (`Some`: counted by the server, and
/// `observations` need hold only each kind's latest value and each hub's newest heartbeat).
#[allow(clippy::too_many_arguments)]
pub fn build_with_days(
    patients: &[Value],
    devices: &[Value],
    observations: &[Value],
    issues: &[Value],
    tasks: &[Value],
    days_given: Option<&HashMap<String, usize>>,
    now: Timestamp,
    s: &WorklistSettings,
) -> Vec<Row> {
    let mut rows: HashMap<String, Row> = HashMap::new();
    let row = |rows: &mut HashMap<String, Row>, p: &str| {
        rows.entry(p.to_owned()).or_insert_with(|| Row {
            patient: p.to_owned(),
            label: None,
            critical_unacked: 0,
            open: [0; 3],
            latest: BTreeMap::new(),
            stale: true,
            hub: HubState::Unknown,
            days_with_readings: 0,
        });
    };
    for p in patients {
        let id = id_of(p);
        row(&mut rows, &id);
        if let Some(r) = rows.get_mut(&id) {
            r.label = super::records::label_of(p);
        }
    }
    let device_patient: HashMap<String, String> = devices
        .iter()
        .filter_map(|d| Some((format!("Device/{}", id_of(d)), patient_of(d)?)))
        .collect();
    let mut days: HashMap<String, HashSet<jiff::civil::Date>> = HashMap::new();
    let mut heartbeat: HashMap<String, Timestamp> = HashMap::new();
    let period = period_dates(now);
    let in_period = |d: jiff::civil::Date| {
        period.first().is_some_and(|f| d >= *f) && period.last().is_some_and(|l| d <= *l)
    };
    for o in observations {
        // A heartbeat's subject is the hub's Device, whose `patient` says whose hub it is.
        let Some(at) = resource_date(o) else { continue };
        let patient = patient_of(o).or_else(|| {
            o.get("subject")
                .and_then(|s| s.get("reference"))
                .and_then(Value::as_str)
                .and_then(|d| device_patient.get(d).cloned())
        });
        let Some(patient) = patient else { continue };
        row(&mut rows, &patient);
        if is_heartbeat(o) {
            let e = heartbeat.entry(patient).or_insert(at);
            *e = (*e).max(at);
            continue;
        }
        let Some(kind) = kind_of(o) else { continue };
        let day = jiff::tz::Offset::UTC.to_datetime(at).date();
        if in_period(day) {
            days.entry(patient.clone()).or_default().insert(day);
        }
        if let Some(r) = rows.get_mut(&patient) {
            let newer = r.latest.get(kind).is_none_or(|(_, _, t)| at > *t);
            if newer {
                r.latest.insert(kind, (value_text(o), flags_of(o), at));
            }
        }
    }
    for e in episodes(issues, tasks) {
        row(&mut rows, &e.patient);
        if let Some(r) = rows.get_mut(&e.patient) {
            if e.open {
                let i = match e.severity.as_str() {
                    "high" => 0,
                    "moderate" => 1,
                    _ => 2,
                };
                if let Some(n) = r.open.get_mut(i) {
                    *n += 1;
                }
                if i == 0 && !e.acknowledged {
                    r.critical_unacked += 1;
                }
            }
        }
    }
    let mut out: Vec<Row> = rows
        .into_values()
        .map(|mut r| {
            r.days_with_readings = match days_given {
                Some(given) => given.get(&r.patient).copied().unwrap_or(0),
                None => days.get(&r.patient).map_or(0, HashSet::len),
            };
            r.stale = r
                .latest
                .values()
                .map(|(_, _, t)| *t)
                .max()
                .is_none_or(|t| now.duration_since(t) > s.stale_after);
            r.hub = hub_state(heartbeat.get(&r.patient).copied(), now, s);
            r
        })
        .collect();
    out.sort_by(|a, b| {
        b.attention()
            .cmp(&a.attention())
            .then_with(|| b.critical_unacked.cmp(&a.critical_unacked))
            .then_with(|| a.patient.cmp(&b.patient))
    });
    out
}

/// The worklist's requests: [`REQUESTS_LASTN`] with `$lastn`, five without (see the module
/// doc), whatever the number of patients.
pub async fn load(
    fhir: &FhirClient,
    now: Timestamp,
    s: &WorklistSettings,
) -> Result<Vec<Row>, FhirClientError> {
    let since = (now - SignedDuration::from_hours(24 * PERIOD_DAYS)).to_string();
    let count = MAX_SEARCH.to_string();
    let patients = fhir.search("Patient", &[("_count", count.clone())]).await?;
    let devices = fhir.search("Device", &[("_count", count.clone())]).await?;
    let (obs, days) = if s.lastn {
        let kinds = KIND_CODES
            .iter()
            .map(|c| format!("{}|{c}", codes::MDC))
            .collect::<Vec<_>>()
            .join(",");
        let mut obs = fhir
            .search(
                "Observation/$lastn",
                &[("code", kinds), ("max", "1".into())],
            )
            .await?
            .resources;
        obs.extend(
            fhir.search(
                "Observation/$lastn",
                &[
                    (
                        "code",
                        format!("{}|backlog-depth", codes::HUB_STATUS_SYSTEM),
                    ),
                    ("max", "1".into()),
                ],
            )
            .await?
            .resources,
        );
        let mut days: HashMap<String, usize> = HashMap::new();
        for day in period_dates(now) {
            let found = fhir
                .search(
                    "Patient",
                    &[
                        ("_has:Observation:subject:date", day.to_string()),
                        ("_count", count.clone()),
                    ],
                )
                .await?;
            for p in &found.resources {
                *days.entry(id_of(p)).or_default() += 1;
            }
        }
        (obs, Some(days))
    } else {
        let found = fhir
            .search(
                "Observation",
                &[
                    ("date", format!("ge{since}")),
                    ("_sort", "-date".into()),
                    ("_count", count.clone()),
                ],
            )
            .await?;
        (found.resources, None)
    };
    let issues = fhir
        .search(
            "DetectedIssue",
            &[("date", format!("ge{since}")), ("_count", count.clone())],
        )
        .await?;
    // An acknowledgement is authored after the record it acknowledges was identified, so only
    // those of the period's DetectedIssues matter; a day's margin covers a hub's clock ahead of
    // the console's. Bounded so, the search no longer grows with every acknowledgement ever made.
    let acks_since = (now - SignedDuration::from_hours(24 * (PERIOD_DAYS + 1))).to_string();
    let tasks = fhir
        .search(
            "Task",
            &[
                ("code", format!("{ACK_SYSTEM}|{ACK_CODE}")),
                ("date", format!("ge{acks_since}")),
                ("_count", count),
            ],
        )
        .await?;
    Ok(build_with_days(
        &patients.resources,
        &devices.resources,
        &obs,
        &issues.resources,
        &tasks.resources,
        days.as_ref(),
        now,
        s,
    ))
}
