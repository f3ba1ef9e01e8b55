//! The patient page's data: per measurement kind the 30-day readings (charted as SVG by plotters,
//! with the alert limits as a band and flagged readings marked), the readings table with their
//! L/H/LL/HH flags, and the alert timeline with its acknowledgements — from three FHIR searches
//! (Observation, DetectedIssue, Task) confined to the patient, and a read of the Patient (its
//! display label).
//!
//! The limit bands are the patient's own limits: the version in force of the clinic's alert-limits
//! `ServiceRequest`s (`src/fhir/limits.rs`), read with the editor's one search
//! ([`super::limits::saved_versions`]), converted into the unit the chart's readings are in. Only
//! when the clinic holds no version are they the hub's documented starting points
//! ([`AlertRules::starting_points`]); the page says which (version number and effective date, or
//! the starting points). The readings table's L/H/LL/HH marks stay what the hub sent.
//!
//! plotters is built without a font feature, so the SVG carries no text: the axis labels (dates
//! in the clinic's zone below, values in the chart's unit beside) are HTML placed over the SVG at
//! the pixel positions plotters itself computes ([`Chart`]); readable without JavaScript.

use super::fhir::{FhirClient, FhirClientError};
use super::worklist::{
    episodes, flags_of, is_heartbeat, kind_of, value_text, HubState, WorklistSettings, ACK_CODE,
    ACK_SYSTEM, PERIOD_DAYS,
};
use crate::alerts::rules::{AlertRules, Limit};
use crate::alerts::units::{convert, Rational};
use crate::clinic::db::{resource_date, MAX_SEARCH};
use crate::fhir::codes;
use crate::fhir::limits::LimitsVersion;
use crate::model::{Kind, Unit};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Where a reading's time comes from, as its Observation records it
/// (`src/fhir/observation.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeQuality {
    /// The device's clock, synchronised (or set by the hub).
    Device,
    /// The device's clock corrected by the hub: shifted by the offset of a coincident time stamp
    /// (the Observation's `coincident-time-stamp` extension).
    Corrected,
    /// The device's clock, which nobody checked (flag `device_clock_unchecked`).
    Unchecked,
    /// No device time: the time the hub received it (an instant with milliseconds).
    Reception,
}

impl TimeQuality {
    pub fn text(self) -> &'static str {
        match self {
            TimeQuality::Device => "device clock",
            TimeQuality::Corrected => "device clock, corrected by the hub",
            TimeQuality::Unchecked => "device clock, not checked",
            TimeQuality::Reception => "time received (no device time)",
        }
    }
}

/// A reading's time quality from its Observation.
pub fn time_quality(o: &Value) -> TimeQuality {
    let has_cts = o
        .get("extension")
        .and_then(Value::as_array)
        .is_some_and(|es| {
            es.iter()
                .any(|e| e.get("url").and_then(Value::as_str) == Some(codes::CTS_EXT))
        });
    if has_cts {
        return TimeQuality::Corrected;
    }
    let unchecked = o
        .get("interpretation")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|i| i.get("coding").and_then(Value::as_array))
        .flatten()
        .any(|c| {
            c.get("system").and_then(Value::as_str) == Some(codes::HUB_FLAG_SYSTEM)
                && c.get("code").and_then(Value::as_str) == Some("device_clock_unchecked")
        });
    if unchecked {
        return TimeQuality::Unchecked;
    }
    // The hub writes a device time to the second, a reception time with milliseconds.
    let fractional = o
        .get("effectiveDateTime")
        .and_then(Value::as_str)
        .is_some_and(|t| t.get(19..20) == Some("."));
    if fractional {
        TimeQuality::Reception
    } else {
        TimeQuality::Device
    }
}

/// One reading on the page.
#[derive(Debug, Clone)]
pub struct Reading {
    pub at: Timestamp,
    pub text: String,
    /// The charted number (systolic for blood pressure).
    pub value: Option<f64>,
    pub flags: Vec<String>,
    pub time: TimeQuality,
    /// The charted number's UCUM unit (`None`: absent or not one the hub knows).
    pub unit: Option<Unit>,
}

/// One of the patient's devices as the page shows it.
#[derive(Debug, Clone, Default)]
pub struct DeviceView {
    /// The device's identifier (Bluetooth address or system id, dashed).
    pub ident: String,
    pub name: Option<String>,
    pub battery_percent: Option<u8>,
    /// When the hub last heard from it (from the hub's newest heartbeat).
    pub last_seen: Option<Timestamp>,
    /// The device clock's offset from the hub's (device minus hub), from its newest coincident
    /// time stamp: its readings were corrected by it.
    pub clock_offset: Option<SignedDuration>,
    /// Whether the hub corrected this device's times (a coincident time stamp exists).
    pub corrected: bool,
}

/// The patient's hub(s) and devices.
#[derive(Debug, Clone, Default)]
pub struct Devices {
    pub hubs: Vec<super::fleet::HubRow>,
    pub devices: Vec<DeviceView>,
}

/// One record of the alert timeline.
#[derive(Debug, Clone)]
pub struct AlertEvent {
    /// `DetectedIssue/<id>`.
    pub issue: String,
    pub episode: String,
    pub at: Option<Timestamp>,
    pub text: String,
    pub severity: String,
    /// The episode's newest record, open and not acknowledged: the one to acknowledge.
    pub can_ack: bool,
    /// Acknowledgements of this record: who, when, note.
    pub acks: Vec<(String, String, String)>,
}

/// What the patient page shows.
#[derive(Debug, Clone, Default)]
pub struct PatientView {
    pub patient: String,
    /// The display label an admin set (`Patient.name[0].text`).
    pub label: Option<String>,
    pub devices: Devices,
    pub kinds: BTreeMap<&'static str, Vec<Reading>>,
    pub alerts: Vec<AlertEvent>,
    /// The patient's alert-limits version in force at the clinic (`None`: none saved; the bands
    /// are then the starting points).
    pub limits: Option<LimitsVersion>,
}

/// The charted quantity of an Observation: its `valueQuantity`, or the systolic component's.
fn charted(v: &Value) -> Option<&Value> {
    v.get("valueQuantity").or_else(|| {
        v.get("component")?.as_array()?.iter().find_map(|c| {
            let sys = c
                .get("code")?
                .get("coding")?
                .as_array()?
                .iter()
                .any(|x| x.get("code").and_then(Value::as_str) == Some("150021"));
            if sys {
                c.get("valueQuantity")
            } else {
                None
            }
        })
    })
}

fn unit_of(v: &Value) -> Option<Unit> {
    charted(v)?.get("code")?.as_str()?.parse().ok()
}

fn number(v: &Value) -> Option<f64> {
    v.get("valueQuantity")
        .and_then(|q| q.get("value"))
        .and_then(Value::as_f64)
        .or_else(|| {
            v.get("component")?.as_array()?.iter().find_map(|c| {
                let sys = c
                    .get("code")?
                    .get("coding")?
                    .as_array()?
                    .iter()
                    .any(|x| x.get("code").and_then(Value::as_str) == Some("150021"));
                if sys {
                    c.get("valueQuantity")?.get("value")?.as_f64()
                } else {
                    None
                }
            })
        })
}

/// The patient page's model from the searches' results.
pub fn build(
    patient: &str,
    observations: &[Value],
    issues: &[Value],
    tasks: &[Value],
) -> PatientView {
    let mut kinds: BTreeMap<&'static str, Vec<Reading>> = BTreeMap::new();
    for o in observations.iter().filter(|o| !is_heartbeat(o)) {
        let (Some(kind), Some(at)) = (kind_of(o), resource_date(o)) else {
            continue;
        };
        kinds.entry(kind).or_default().push(Reading {
            at,
            text: value_text(o),
            value: number(o),
            flags: flags_of(o),
            time: time_quality(o),
            unit: unit_of(o),
        });
    }
    for v in kinds.values_mut() {
        v.sort_by_key(|r| r.at);
    }
    let eps = episodes(issues, tasks);
    let mut alerts: Vec<AlertEvent> = issues
        .iter()
        .map(|i| {
            let id = format!(
                "DetectedIssue/{}",
                i.get("id").and_then(Value::as_str).unwrap_or("")
            );
            let ep = eps.iter().find(|e| e.current_id == id);
            let acks = tasks
                .iter()
                .filter(|t| {
                    t.get("focus")
                        .and_then(|f| f.get("reference"))
                        .and_then(Value::as_str)
                        == Some(id.as_str())
                })
                .filter_map(|t| {
                    let n = t.get("note")?.get(0)?;
                    Some((
                        n.get("authorString")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned(),
                        n.get("time")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned(),
                        n.get("text")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned(),
                    ))
                })
                .collect();
            AlertEvent {
                episode: i
                    .get("identifier")
                    .and_then(|x| x.get(1))
                    .and_then(|x| x.get("value"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                at: resource_date(i),
                text: i
                    .get("code")
                    .and_then(|c| c.get("text"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                severity: i
                    .get("severity")
                    .and_then(Value::as_str)
                    .unwrap_or("low")
                    .to_owned(),
                can_ack: ep.is_some_and(|e| e.open && !e.acknowledged),
                acks,
                issue: id,
            }
        })
        .collect();
    alerts.sort_by_key(|a| std::cmp::Reverse(a.at));
    PatientView {
        patient: patient.to_owned(),
        label: None,
        devices: Devices::default(),
        kinds,
        alerts,
        limits: None,
    }
}

fn ident_of(d: &Value) -> Option<String> {
    d.get("identifier")?
        .get(0)?
        .get("value")?
        .as_str()
        .map(str::to_owned)
}

/// The device panel from the patient's Devices and the Observations about them (heartbeats,
/// coincident time stamps); `observations` may hold anything.
pub fn devices(
    devices: &[Value],
    observations: &[Value],
    now: Timestamp,
    s: &WorklistSettings,
) -> Devices {
    let hubs = super::fleet::build(devices, observations, now, s);
    let by_ref: HashMap<String, &Value> = devices
        .iter()
        .filter_map(|d| Some((format!("Device/{}", d.get("id")?.as_str()?), d)))
        .collect();
    let hub_refs: HashSet<&str> = hubs.iter().map(|h| h.hub.as_str()).collect();
    let mut out: BTreeMap<String, DeviceView> = BTreeMap::new();
    for (r, d) in &by_ref {
        if hub_refs.contains(r.as_str()) {
            continue;
        }
        let Some(ident) = ident_of(d) else { continue };
        let name = d
            .get("deviceName")
            .and_then(|n| n.get(0))
            .and_then(|n| n.get("name"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        out.insert(
            ident.clone(),
            DeviceView {
                ident,
                name,
                ..Default::default()
            },
        );
    }
    // The hubs' newest heartbeat: battery and last contact of each device.
    for h in &hubs {
        let beat = match h.state {
            HubState::Online { last } => Some(last),
            _ => None,
        };
        for d in &h.devices {
            let v = out.entry(d.ident.clone()).or_insert_with(|| DeviceView {
                ident: d.ident.clone(),
                ..Default::default()
            });
            v.battery_percent = d.battery_percent;
            v.last_seen = beat
                .zip(d.last_seen_secs)
                .map(|(b, s)| b - SignedDuration::from_secs(s));
        }
    }
    // The newest coincident time stamp per device: hub time (effective) vs device time (value).
    let cts = codes::mdc::TIME_ABS.to_string();
    let mut newest: HashMap<String, (Timestamp, SignedDuration)> = HashMap::new();
    for o in observations {
        let is_cts = o
            .get("code")
            .and_then(|c| c.get("coding"))
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.get("code").and_then(Value::as_str) == Some(cts.as_str()))
            });
        if !is_cts {
            continue;
        }
        let Some(dev) = o
            .get("subject")
            .and_then(|s| s.get("reference"))
            .and_then(Value::as_str)
            .and_then(|r| by_ref.get(r))
            .and_then(|d| ident_of(d))
        else {
            continue;
        };
        let hub_at = o
            .get("effectiveDateTime")
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<Timestamp>().ok());
        let dev_at = o
            .get("valueDateTime")
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<Timestamp>().ok());
        if let (Some(h), Some(d)) = (hub_at, dev_at) {
            if newest.get(&dev).is_none_or(|(t, _)| h > *t) {
                newest.insert(dev, (h, d.duration_since(h)));
            }
        }
    }
    for (dev, (_, off)) in newest {
        let v = out.entry(dev.clone()).or_insert_with(|| DeviceView {
            ident: dev,
            ..Default::default()
        });
        v.clock_offset = Some(off);
        v.corrected = true;
    }
    Devices {
        hubs,
        devices: out.into_values().collect(),
    }
}

/// The patient page's searches (default worklist settings).
pub async fn load(
    fhir: &FhirClient,
    patient: &str,
    now: Timestamp,
) -> Result<PatientView, FhirClientError> {
    load_with(fhir, patient, now, &WorklistSettings::default()).await
}

/// The patient page's searches: Observation, DetectedIssue, Task, Device, ServiceRequest (the
/// alert-limits versions) of the patient, the Patient read, and — where the FHIR server files the hubs' Observations about devices
/// (heartbeats, coincident time stamps, subject = a Device) apart from the patient's — one search
/// of those by subject ([`FhirClient::device_observations_by_patient`]).
pub async fn load_with(
    fhir: &FhirClient,
    patient: &str,
    now: Timestamp,
    settings: &WorklistSettings,
) -> Result<PatientView, FhirClientError> {
    let since = format!("ge{}", now - SignedDuration::from_hours(24 * PERIOD_DAYS));
    let since_devices = since.clone();
    let p = format!("Patient/{patient}");
    let p_ref = p.clone();
    let count = MAX_SEARCH.to_string();
    let obs = fhir
        .search(
            "Observation",
            &[
                ("patient", p.clone()),
                ("date", since.clone()),
                ("_sort", "date".into()),
                ("_count", count.clone()),
            ],
        )
        .await?;
    let issues = fhir
        .search(
            "DetectedIssue",
            &[
                ("patient", p.clone()),
                ("date", since),
                ("_sort", "date".into()),
                ("_count", count.clone()),
            ],
        )
        .await?;
    let tasks = fhir
        .search(
            "Task",
            &[
                ("patient", p),
                ("code", format!("{ACK_SYSTEM}|{ACK_CODE}")),
                ("_count", count.clone()),
            ],
        )
        .await?;
    let devs = fhir
        .search("Device", &[("patient", p_ref), ("_count", count.clone())])
        .await?;
    let mut about_devices = Vec::new();
    if !fhir.device_observations_by_patient() && !devs.resources.is_empty() {
        let refs: Vec<String> = devs
            .resources
            .iter()
            .filter_map(|d| Some(format!("Device/{}", d.get("id")?.as_str()?)))
            .collect();
        about_devices = fhir
            .search(
                "Observation",
                &[
                    ("subject", refs.join(",")),
                    ("date", since_devices),
                    ("_sort", "-date".into()),
                    ("_count", count),
                ],
            )
            .await?
            .resources;
    }
    let mut view = build(patient, &obs.resources, &issues.resources, &tasks.resources);
    let all: Vec<Value> = obs.resources.into_iter().chain(about_devices).collect();
    view.devices = devices(&devs.resources, &all, now, settings);
    view.label = fhir
        .read("Patient", patient)
        .await?
        .as_ref()
        .and_then(super::records::label_of);
    view.limits = super::limits::saved_versions(fhir, patient)
        .await?
        .into_iter()
        .next();
    Ok(view)
}

/// The alert limits drawn on one chart, in the chart's unit.
#[derive(Debug, Clone, PartialEq)]
pub struct Band {
    /// The unit of the chart (its readings') the limits were converted into.
    pub unit: Unit,
    pub low: Option<f64>,
    pub high: Option<f64>,
    pub critical_low: Option<f64>,
    pub critical_high: Option<f64>,
}

/// The alert kind whose limits a chart of the page shows.
fn alert_kind(kind: &str) -> Option<Kind> {
    Some(match kind {
        "Glucose" => Kind::Glucose,
        "Blood pressure" => Kind::Systolic,
        "SpO₂" => Kind::Spo2,
        "Pulse" => Kind::PulseRate,
        "Temperature" => Kind::BodyTemperature,
        _ => return None,
    })
}

/// The unit of a chart: the one every reading of it is in (`None`: none, or mixed).
pub fn chart_unit(readings: &[Reading]) -> Option<Unit> {
    let first = readings.first()?.unit?;
    readings
        .iter()
        .all(|r| r.unit == Some(first))
        .then_some(first)
}

/// The band of a kind from `rules` (the patient's version in force, or the starting points),
/// converted exactly into the unit of the readings; `None` when the rules hold no limit for the
/// kind, or the readings have no single unit the limits convert into.
pub fn band(kind: &str, readings: &[Reading], rules: &AlertRules) -> Option<Band> {
    let k = alert_kind(kind)?;
    let unit = chart_unit(readings)?;
    let r = rules.thresholds.get(&k)?;
    let f = |l: Option<Limit>| -> Option<f64> {
        let v = Rational::from_decimal(l?.0)?;
        Some(convert(v, r.unit, unit)?.to_f64())
    };
    let b = Band {
        unit,
        low: f(r.low),
        high: f(r.high),
        critical_low: f(r.critical_low),
        critical_high: f(r.critical_high),
    };
    [b.low, b.high, b.critical_low, b.critical_high]
        .iter()
        .any(Option::is_some)
        .then_some(b)
}

/// The rules the page's bands come from: the version in force, else the starting points.
pub fn band_rules(v: &PatientView) -> AlertRules {
    v.limits
        .as_ref()
        .map(|l| l.rules.clone())
        .unwrap_or_else(AlertRules::starting_points)
}

/// The normal band's fill colour in the SVG (tests look for it).
pub const BAND_RGB: (u8, u8, u8) = (0xDC, 0xF0, 0xDC);
/// The critical limits' line colour in the SVG.
pub const CRITICAL_RGB: (u8, u8, u8) = (0xB0, 0x30, 0x30);
/// The SVG's size in pixels (the HTML labels are placed in these pixels).
pub const CHART_SIZE: (u32, u32) = (640, 180);

/// A drawn chart: the SVG and its axis labels with their pixel positions in it.
#[derive(Debug, Clone, Default)]
pub struct Chart {
    pub svg: String,
    /// (pixel y, value text) of the value axis, in the band's/readings' unit.
    pub y_ticks: Vec<(i32, String)>,
    /// (pixel x, date text in the clinic's zone) of the time axis (local midnights).
    pub x_ticks: Vec<(i32, String)>,
}

/// Round tick values (1, 2 or 5 × a power of ten apart) inside `lo..=hi`, three to seven of them.
fn nice_ticks(lo: f64, hi: f64) -> (Vec<f64>, usize) {
    let raw = (hi - lo) / 6.0;
    if !(raw.is_finite() && raw > 0.0) {
        return (Vec::new(), 0);
    }
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let decimals = if step < 1.0 {
        (-step.log10().floor()) as usize
    } else {
        0
    };
    let mut v = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while v <= hi && out.len() < 12 {
        out.push(v);
        v += step;
    }
    (out, decimals)
}

/// A 30-day chart of one kind: the normal band (filled), the critical limits (lines), grid lines
/// at the labelled ticks, the line, a dot per reading (flagged ones red).
pub fn chart(
    readings: &[Reading],
    band: Option<&Band>,
    now: Timestamp,
    tz: &TimeZone,
) -> Result<Chart, String> {
    use plotters::prelude::*;
    let start = now - SignedDuration::from_hours(24 * PERIOD_DAYS);
    let x = |t: Timestamp| t.duration_since(start).as_secs_f64() / 86_400.0;
    let pts: Vec<(f64, f64, bool)> = readings
        .iter()
        .filter_map(|r| Some((x(r.at), r.value?, !r.flags.is_empty())))
        .collect();
    let mut ys: Vec<f64> = pts.iter().map(|p| p.1).collect();
    if let Some(b) = band {
        ys.extend(
            [b.low, b.high, b.critical_low, b.critical_high]
                .iter()
                .flatten(),
        );
    }
    let (mut y0, mut y1) = ys
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    if !y0.is_finite() || !y1.is_finite() {
        (y0, y1) = (0.0, 1.0);
    }
    let pad = ((y1 - y0) * 0.1).max(1.0);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let (yt, decimals) = nice_ticks(y0, y1);
    // Local midnights in the clinic's zone, every fifth day.
    let mut days: Vec<(f64, String)> = Vec::new();
    let mut d = start.to_zoned_datetime(tz.clone()).date();
    let end_day = now.to_zoned_datetime(tz.clone()).date();
    while d <= end_day {
        if let Ok(z) = d.to_zoned_datetime(tz.clone()) {
            if let Ok(z) = z.start_of_day() {
                let at = z.timestamp();
                if at >= start && at <= now {
                    days.push((x(at), z.strftime("%b %-d").to_string()));
                }
            }
        }
        d = match d.tomorrow() {
            Ok(n) => n,
            Err(_) => break,
        };
    }
    let days: Vec<(f64, String)> = days.into_iter().rev().step_by(5).rev().collect();
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let mut out = Chart::default();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, CHART_SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut c = ChartBuilder::on(&root)
            .margin(6)
            .build_cartesian_2d(0.0..PERIOD_DAYS as f64, y0..y1)
            .map_err(|e| err(&e))?;
        if let Some(b) = band {
            if b.low.is_some() || b.high.is_some() {
                let (r, g, bl) = BAND_RGB;
                c.draw_series(std::iter::once(Rectangle::new(
                    [
                        (0.0, b.low.unwrap_or(y0)),
                        (PERIOD_DAYS as f64, b.high.unwrap_or(y1)),
                    ],
                    RGBColor(r, g, bl).filled(),
                )))
                .map_err(|e| err(&e))?;
            }
        }
        let grid = RGBColor(0xE4, 0xE4, 0xE4);
        for v in &yt {
            c.draw_series(LineSeries::new([(0.0, *v), (PERIOD_DAYS as f64, *v)], grid))
                .map_err(|e| err(&e))?;
            let (_, py) = c.backend_coord(&(0.0, *v));
            out.y_ticks.push((py, format!("{v:.decimals$}")));
        }
        for (dx, label) in &days {
            c.draw_series(LineSeries::new([(*dx, y0), (*dx, y1)], grid))
                .map_err(|e| err(&e))?;
            let (px, _) = c.backend_coord(&(*dx, y0));
            out.x_ticks.push((px, label.clone()));
        }
        if let Some(b) = band {
            let (r, g, bl) = CRITICAL_RGB;
            for v in [b.critical_low, b.critical_high].iter().flatten() {
                c.draw_series(LineSeries::new(
                    [(0.0, *v), (PERIOD_DAYS as f64, *v)],
                    RGBColor(r, g, bl).stroke_width(1),
                ))
                .map_err(|e| err(&e))?;
            }
        }
        c.draw_series(LineSeries::new(
            pts.iter().map(|p| (p.0, p.1)),
            RGBColor(0x23, 0x44, 0x66),
        ))
        .map_err(|e| err(&e))?;
        c.draw_series(pts.iter().map(|p| {
            let col = if p.2 {
                RGBColor(0xCC, 0, 0)
            } else {
                RGBColor(0x23, 0x44, 0x66)
            };
            Circle::new((p.0, p.1), if p.2 { 5 } else { 3 }, col.filled())
        }))
        .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    out.svg = svg;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_inside_the_range() {
        let (t, d) = nice_ticks(31.0, 229.0);
        assert_eq!(t, vec![50.0, 100.0, 150.0, 200.0]);
        assert_eq!(d, 0);
        let (t, d) = nice_ticks(35.2, 39.1);
        assert_eq!(d, 0);
        assert_eq!(t, vec![36.0, 37.0, 38.0, 39.0]);
        let (t, d) = nice_ticks(36.1, 36.9);
        assert_eq!(d, 1);
        assert_eq!(t.len(), 4, "{t:?}");
        assert!(nice_ticks(1.0, 1.0).0.is_empty());
    }
    #[test]
    fn the_band_rectangle_is_drawn_at_the_limits() {
        let now: Timestamp = "2026-12-06T12:00:00Z".parse().unwrap();
        let r = |v: f64, h: i64| Reading {
            at: now - SignedDuration::from_hours(h),
            text: format!("{v} mg/dL"),
            value: Some(v),
            flags: Vec::new(),
            time: TimeQuality::Device,
            unit: Some(Unit::MgPerDl),
        };
        let rs = [r(100.0, 48), r(150.0, 24)];
        let mut rules = AlertRules::starting_points();
        let g = rules.thresholds.get_mut(&Kind::Glucose).unwrap();
        g.unit = Unit::MmolPerL;
        g.low = Some(Limit("4".parse().unwrap()));
        g.high = Some(Limit("10".parse().unwrap()));
        (g.critical_low, g.critical_high) = (None, None);
        let b = band("Glucose", &rs, &rules).unwrap();
        assert_eq!((b.low, b.high), (Some(72.0624), Some(180.156)));
        let c = chart(&rs, Some(&b), now, &TimeZone::UTC).unwrap();
        // The value axis runs over the band ± 10 % over pixels 6..=173 (plotters' margin 6).
        let pad = (180.156 - 72.0624) * 0.1;
        let (y0, y1) = (72.0624 - pad, 180.156 + pad);
        let px = |v: f64| 6.0 + (y1 - v) / (y1 - y0) * 167.0;
        let (bg, br, bb) = BAND_RGB;
        let fill = format!("fill=\"#{bg:02X}{br:02X}{bb:02X}\"");
        let rect = c.svg.lines().find(|l| l.contains(&fill)).unwrap();
        let attr = |n: &str| -> f64 {
            let k = format!(" {n}=\"");
            let i = rect.find(&k).unwrap() + k.len();
            rect[i..i + rect[i..].find('"').unwrap()].parse().unwrap()
        };
        assert!((attr("y") - px(180.156)).abs() <= 1.0, "{rect}");
        assert!(
            (attr("y") + attr("height") - px(72.0624)).abs() <= 1.0,
            "{rect}"
        );
        assert!(
            c.x_ticks.iter().any(|(_, t)| t == "Dec 6"),
            "{:?}",
            c.x_ticks
        );
        assert!(c.y_ticks.iter().any(|(_, t)| t == "100"), "{:?}", c.y_ticks);
    }
}
