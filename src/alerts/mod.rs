//! Alerts on the hub: pure rule evaluation — readings and history in, alert decisions out.
//!
//! Rules ([`AlertRules`], the config's `[alerts]` section) are thresholds per measurement kind,
//! weight-gain trends, and expected schedules per device. [`Engine`] holds the state between
//! readings (open alert episodes, recent weights, overdue devices) and is serde-serialisable so the
//! hub can keep it in the store across restarts.
//!
//! Behaviour:
//! - **Comparison is exact.** A reading and a limit in different units (mmol/L against mg/dL, a lb
//!   scale against kg limits, kPa against mm[Hg], [degF] against Cel) are compared as rationals
//!   after exact conversion ([`units`]).
//! - **What never raises a threshold alert**: control-solution tests, readings whose status says
//!   the sensor or device failed, special values (NaN, NRes, ±INF) — [`crate::model::Reading::is_alertable`].
//!   They are still stored and uploaded with their flags.
//! - **Lifecycle.** A reading outside a limit *raises* an alert episode; one that crosses into a
//!   critical limit *escalates* it (once per episode: falling back and crossing again does not
//!   repeat it); the episode is *resolved* by a reading back inside the limits by at least the
//!   hysteresis band. An episode stays open at least `suppress_minutes` after it was raised or
//!   escalated, so a value flapping around a limit makes one alert, not one per reading. A value that
//!   crosses into the opposite direction (low → high) resolves the first episode and raises another.
//!   Hence the number of events is bounded by the number of changes of condition (property-tested).
//! - **Missed measurements** ([`Engine::tick`]): each scheduled device that has delivered nothing
//!   for longer than its interval plus grace raises an overdue alert naming what the hub knows: the
//!   Bluetooth adapter is down, pairing/authentication fails, the device was not seen at all (out of
//!   range or battery flat, with its last battery level), or it was seen but had nothing new (the
//!   patient did not measure). A new reading resolves it. A hub that is itself offline cannot tell
//!   anyone: the clinic detects that from missing heartbeats.
//!
//! Upstream, alerts become FHIR `DetectedIssue` resources (see the `fhir` module), and readings get
//! `interpretation` L / H / LL / HH from [`interpretation`].
//!
//! Size: the code is about 660 lines; the file passes 800 only with its table tests, kept
//! beside the fields they check (one profile, one file).

pub mod replay;
pub mod rules;
pub mod units;

pub use rules::{AlertRules, Limit, Schedule, ThresholdRule, WeightGainRule};

use crate::model::{Kind, Reading, Unit, UtcMillis};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use units::{convert, convert_delta, Rational};

/// Where a value stands against a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    CriticalLow,
    Low,
    High,
    CriticalHigh,
    /// A trend or a missed measurement: not a limit of a single value.
    Warning,
}

impl Severity {
    pub fn is_critical(&self) -> bool {
        matches!(self, Severity::CriticalLow | Severity::CriticalHigh)
    }

    fn direction(&self) -> Option<Direction> {
        match self {
            Severity::CriticalLow | Severity::Low => Some(Direction::Low),
            Severity::High | Severity::CriticalHigh => Some(Direction::High),
            Severity::Warning => None,
        }
    }
}

/// FHIR Observation interpretation codes (v3 ObservationInterpretation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Interpretation {
    #[serde(rename = "LL")]
    CriticalLow,
    #[serde(rename = "L")]
    Low,
    #[serde(rename = "H")]
    High,
    #[serde(rename = "HH")]
    CriticalHigh,
}

impl Interpretation {
    pub fn code(&self) -> &'static str {
        match self {
            Interpretation::CriticalLow => "LL",
            Interpretation::Low => "L",
            Interpretation::High => "H",
            Interpretation::CriticalHigh => "HH",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Direction {
    Low,
    High,
}

/// What an alert is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Subject {
    /// A value outside its limits.
    Threshold { kind: Kind },
    /// Weight gained more than the rule allows within its window.
    WeightGain { window_hours: u32 },
    /// A scheduled device delivered nothing new in time.
    Overdue { device: String },
}

/// Why a scheduled measurement is missing, as far as the hub can tell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cause", rename_all = "snake_case")]
pub enum OverdueCause {
    /// The hub's Bluetooth adapter is missing or down: nothing can be received.
    AdapterDown,
    /// The device is seen but pairing or authentication fails.
    PairingFailing,
    /// The device was not seen at all in time: out of range or battery flat.
    NotSeen {
        last_seen: Option<UtcMillis>,
        last_battery_pct: Option<u8>,
    },
    /// The device was seen but had nothing new: the patient did not measure.
    NothingNew { last_seen: UtcMillis },
}

/// A transition of an alert episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    Raised,
    Escalated,
    Resolved,
}

/// One alert event, to be stored, uploaded and announced locally.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertEvent {
    pub at: UtcMillis,
    pub transition: Transition,
    pub subject: Subject,
    pub severity: Severity,
    /// The episode this event belongs to: stable across re-evaluation, the base of the upload's
    /// conditional-create identifier.
    pub episode: String,
    /// The readings it refers to (the caller's references: store ids, or line numbers in replay).
    pub readings: Vec<String>,
    pub cause: Option<OverdueCause>,
    /// A sentence for people. Holds values: it is PHI, stored sealed, never logged.
    pub detail: String,
    /// The reading behind this event reached the hub more than [`LATE_AFTER_MS`] after it was
    /// measured (a back-fill, a meter read after an outage): it was evaluated at its own
    /// measurement time (`at`), and everyone shown it is told how late it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late: Option<Lateness>,
}

/// A reading is late when it reaches the hub more than 15 minutes after it was measured: longer
/// than a spot device's transfer and a CGM's back-fill of its last few records, shorter than any
/// gap a person would still call "now".
pub const LATE_AFTER_MS: i64 = 15 * 60_000;

/// How late the reading behind an alert event arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lateness {
    /// When the hub received it (`AlertEvent::at` is when it was measured).
    pub received_at: UtcMillis,
    /// Received minus measured, in minutes.
    pub late_by_minutes: i64,
    /// The same for people, e.g. `3 d 4 h`.
    pub late_by: String,
}

impl Lateness {
    /// `Some` when `received_at` is more than [`LATE_AFTER_MS`] after `measured_at`.
    pub fn of(measured_at: UtcMillis, received_at: UtcMillis) -> Option<Lateness> {
        let ms = received_at.as_millis() - measured_at.as_millis();
        if ms <= LATE_AFTER_MS {
            return None;
        }
        let minutes = ms / 60_000;
        let (d, h, m) = (minutes / 1440, minutes % 1440 / 60, minutes % 60);
        let late_by = match (d, h) {
            (0, 0) => format!("{m} min"),
            (0, _) => format!("{h} h {m} min"),
            _ => format!("{d} d {h} h"),
        };
        Some(Lateness {
            received_at,
            late_by_minutes: minutes,
            late_by,
        })
    }
}

/// What the hub knows about a scheduled device at tick time.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceStatus {
    pub last_seen: Option<UtcMillis>,
    pub last_reading: Option<UtcMillis>,
    pub last_battery_pct: Option<u8>,
    pub pairing_failing: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Episode {
    id: String,
    severity: Severity,
    /// The most severe level already announced in this episode.
    announced: Severity,
    last_announced_at: UtcMillis,
    readings: Vec<String>,
    /// Set when a reading came back to normal inside the suppression window: the episode resolves
    /// when the window ends unless an abnormal reading comes first.
    #[serde(default)]
    cleared_by: Option<String>,
    /// A threshold episode's latest value and its unit, so a change of limits can tell whether
    /// the condition still holds ([`Engine::limits_changed`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_value: Option<(crate::model::Decimal, Unit)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct WeightPoint {
    at: UtcMillis,
    kg: (i128, i128),
    reference: String,
}

/// The evaluation state between readings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Engine {
    open: BTreeMap<Kind, Episode>,
    weights: Vec<WeightPoint>,
    weight_open: BTreeMap<u32, Episode>,
    overdue_open: BTreeMap<String, Episode>,
}

fn rational_of(reading: &Reading) -> Option<Rational> {
    reading.value.number().and_then(Rational::from_decimal)
}

fn limit_in(rule: &ThresholdRule, limit: Option<Limit>, unit: Unit) -> Option<Rational> {
    limit
        .and_then(|l| l.rational())
        .and_then(|l| convert(l, rule.unit, unit))
}

/// Classify a value (in the reading's unit) against a rule: which limit it is beyond, if any.
fn classify(rule: &ThresholdRule, value: Rational, unit: Unit) -> Option<Severity> {
    let beyond = |l: Option<Limit>, want: Ordering| {
        limit_in(rule, l, unit).is_some_and(|l| value.cmp_exact(&l) == want)
    };
    if beyond(rule.critical_low, Ordering::Less) {
        Some(Severity::CriticalLow)
    } else if beyond(rule.critical_high, Ordering::Greater) {
        Some(Severity::CriticalHigh)
    } else if beyond(rule.low, Ordering::Less) {
        Some(Severity::Low)
    } else if beyond(rule.high, Ordering::Greater) {
        Some(Severity::High)
    } else {
        None
    }
}

/// Whether a value is inside the limits by at least the hysteresis band: "back to normal".
fn clear_of_limits(rule: &ThresholdRule, value: Rational, unit: Unit) -> bool {
    let band = hysteresis_in(rule, unit);
    let edge = |l: Option<Limit>, up: bool| {
        limit_in(rule, l, unit).and_then(|l| match band {
            Some(b) if up => l.checked_add(b),
            Some(b) => l.checked_sub(b),
            None => Some(l),
        })
    };
    let low_ok = edge(rule.low.or(rule.critical_low), true)
        .is_none_or(|l| value.cmp_exact(&l) != Ordering::Less);
    let high_ok = edge(rule.high.or(rule.critical_high), false)
        .is_none_or(|h| value.cmp_exact(&h) != Ordering::Greater);
    low_ok && high_ok
}

fn hysteresis_in(rule: &ThresholdRule, unit: Unit) -> Option<Rational> {
    rule.hysteresis
        .and_then(|h| h.rational())
        .and_then(|h| convert_delta(h, rule.unit, unit))
}

/// The interpretation (L, H, LL, HH) of a reading against the rules, without hysteresis.
pub fn interpretation(rules: &AlertRules, reading: &Reading) -> Option<Interpretation> {
    if !reading.is_alertable() {
        return None;
    }
    let rule = rules.thresholds.get(&reading.kind)?;
    let v = rational_of(reading)?;
    Some(match classify(rule, v, reading.unit)? {
        Severity::CriticalLow => Interpretation::CriticalLow,
        Severity::Low => Interpretation::Low,
        Severity::High => Interpretation::High,
        Severity::CriticalHigh => Interpretation::CriticalHigh,
        Severity::Warning => return None,
    })
}

fn describe(kind: Kind, reading: &Reading, severity: Severity, rule: &ThresholdRule) -> String {
    let value = reading
        .value
        .number()
        .map(|d| d.to_string())
        .unwrap_or_default();
    let (what, limit) = match severity {
        Severity::CriticalLow => ("below the critical low limit", rule.critical_low),
        Severity::Low => ("below the low limit", rule.low.or(rule.critical_low)),
        Severity::High => ("above the high limit", rule.high.or(rule.critical_high)),
        Severity::CriticalHigh => ("above the critical high limit", rule.critical_high),
        Severity::Warning => ("outside its limits", None),
    };
    let limit = limit
        .map(|l| format!(" {} {}", l.0, rule.unit))
        .unwrap_or_default();
    format!("{kind} {value} {} {what}{limit}", reading.unit)
}

impl Engine {
    pub fn new() -> Engine {
        Engine::default()
    }

    /// Whether an alert episode is open for a threshold of this kind.
    pub fn is_open(&self, kind: Kind) -> bool {
        self.open.contains_key(&kind)
    }

    /// Every reading reference the state still holds, so a later event may name it: the readings
    /// of open episodes (threshold, weight gain, overdue), the reading that cleared a threshold
    /// episode inside its suppression window, and the weights a weight-gain rule measures from.
    /// A later event names only these and the reading being evaluated then (a reference enters
    /// the state only as the reading being evaluated), so what callers keep per reading (the
    /// Observation identifiers of ingest) can be pruned to these. May repeat a reference.
    pub fn references(&self) -> impl Iterator<Item = &str> {
        let episodes = self
            .open
            .values()
            .chain(self.weight_open.values())
            .chain(self.overdue_open.values());
        episodes
            .flat_map(|ep| ep.readings.iter().chain(ep.cleared_by.iter()))
            .chain(self.weights.iter().map(|w| &w.reference))
            .map(String::as_str)
    }

    /// Evaluate one reading measured at `at`. `reference` identifies it in the events (a store id).
    /// Readings must be given in measurement-time order per kind.
    pub fn observe(
        &mut self,
        rules: &AlertRules,
        at: UtcMillis,
        reading: &Reading,
        reference: &str,
    ) -> Vec<AlertEvent> {
        let mut events = self.resolve_cleared(rules, at);
        if !reading.is_alertable() {
            return events;
        }
        if let Some(rule) = rules.thresholds.get(&reading.kind) {
            self.observe_threshold(rules, rule, at, reading, reference, &mut events);
        }
        if reading.kind == Kind::BodyWeight && !rules.weight_gain.is_empty() {
            self.observe_weight(rules, at, reading, reference, &mut events);
        }
        events
    }

    fn observe_threshold(
        &mut self,
        rules: &AlertRules,
        rule: &ThresholdRule,
        at: UtcMillis,
        reading: &Reading,
        reference: &str,
        events: &mut Vec<AlertEvent>,
    ) {
        let kind = reading.kind;
        let Some(v) = rational_of(reading) else {
            return;
        };
        let subject = Subject::Threshold { kind };
        let suppress_ms = i64::from(rules.suppress_minutes) * 60_000;
        let plain = classify(rule, v, reading.unit);
        match self.open.get_mut(&kind) {
            None => {
                let Some(severity) = plain else { return };
                let id = format!("{kind}-{}", at.0);
                events.push(AlertEvent {
                    late: None,
                    at,
                    transition: Transition::Raised,
                    subject,
                    severity,
                    episode: id.clone(),
                    readings: vec![reference.to_string()],
                    cause: None,
                    detail: describe(kind, reading, severity, rule),
                });
                self.open.insert(
                    kind,
                    Episode {
                        id,
                        severity,
                        announced: severity,
                        last_announced_at: at,
                        readings: vec![reference.to_string()],
                        cleared_by: None,
                        last_value: reading.value.number().map(|d| (d, reading.unit)),
                    },
                );
            }
            Some(ep) => {
                let open_dir = ep.severity.direction();
                let opposite = plain
                    .and_then(|s| s.direction())
                    .is_some_and(|d| Some(d) != open_dir);
                let back_to_normal =
                    opposite || (plain.is_none() && clear_of_limits(rule, v, reading.unit));
                if back_to_normal {
                    let window_over = at.0 - ep.last_announced_at.0 >= suppress_ms;
                    if !(window_over || opposite) {
                        // Inside the suppression window: the episode stays open, silently, and
                        // resolves when the window ends (see `tick`) unless the value leaves again.
                        ep.cleared_by = Some(reference.to_string());
                        return;
                    }
                    let value = reading
                        .value
                        .number()
                        .map(|d| d.to_string())
                        .unwrap_or_default();
                    let detail = format!("{kind} back within limits ({value} {})", reading.unit);
                    if let Some(ep) = self.open.remove(&kind) {
                        events.push(resolved(at, subject.clone(), ep, reference, detail));
                    }
                    if opposite {
                        // The value crossed to the other side: a new episode starts with it.
                        self.observe_threshold(rules, rule, at, reading, reference, events);
                    }
                    return;
                }
                // Still out on the same side, or inside the band: the episode goes on.
                if ep.readings.len() < 32 {
                    ep.readings.push(reference.to_string());
                }
                ep.cleared_by = None;
                ep.last_value = reading.value.number().map(|d| (d, reading.unit));
                let Some(current) = plain.filter(|p| p.direction() == open_dir) else {
                    return;
                };
                ep.severity = current;
                if current.is_critical() && !ep.announced.is_critical() {
                    ep.announced = current;
                    ep.last_announced_at = at;
                    events.push(AlertEvent {
                        late: None,
                        at,
                        transition: Transition::Escalated,
                        subject,
                        severity: current,
                        episode: ep.id.clone(),
                        readings: vec![reference.to_string()],
                        cause: None,
                        detail: describe(kind, reading, current, rule),
                    });
                }
            }
        }
    }

    fn observe_weight(
        &mut self,
        rules: &AlertRules,
        at: UtcMillis,
        reading: &Reading,
        reference: &str,
        events: &mut Vec<AlertEvent>,
    ) {
        let Some(kg) = rational_of(reading).and_then(|v| convert(v, reading.unit, Unit::Kg)) else {
            return;
        };
        let max_window = rules
            .weight_gain
            .iter()
            .map(|w| i64::from(w.window_hours) * 3_600_000)
            .max()
            .unwrap_or(0);
        self.weights
            .retain(|p| at.0 - p.at.0 <= max_window && p.at.0 <= at.0);
        for rule in &rules.weight_gain {
            let window = i64::from(rule.window_hours) * 3_600_000;
            let Some(limit) = rule
                .gain
                .rational()
                .and_then(|g| convert_delta(g, rule.unit, Unit::Kg))
            else {
                continue;
            };
            let base = self
                .weights
                .iter()
                .filter(|p| at.0 - p.at.0 <= window)
                .min_by(|a, b| {
                    Rational::new(a.kg.0, a.kg.1)
                        .zip(Rational::new(b.kg.0, b.kg.1))
                        .map(|(x, y)| x.cmp_exact(&y))
                        .unwrap_or(Ordering::Equal)
                });
            let gain = base
                .and_then(|b| Rational::new(b.kg.0, b.kg.1))
                .and_then(|b| kg.checked_sub(b));
            let exceeded = gain.is_some_and(|g| g.cmp_exact(&limit) == Ordering::Greater);
            let subject = Subject::WeightGain {
                window_hours: rule.window_hours,
            };
            match (exceeded, self.weight_open.contains_key(&rule.window_hours)) {
                (true, false) => {
                    let id = format!("weight-gain-{}h-{}", rule.window_hours, at.0);
                    let mut refs: Vec<String> =
                        base.map(|b| vec![b.reference.clone()]).unwrap_or_default();
                    refs.push(reference.to_string());
                    let g = gain
                        .map(|g| format!("{:.2}", g.to_f64()))
                        .unwrap_or_default();
                    events.push(AlertEvent {
                        late: None,
                        at,
                        transition: Transition::Raised,
                        subject,
                        severity: Severity::Warning,
                        episode: id.clone(),
                        readings: refs.clone(),
                        cause: None,
                        detail: format!(
                            "weight up {g} kg within {} h (limit {} {})",
                            rule.window_hours, rule.gain.0, rule.unit
                        ),
                    });
                    self.weight_open.insert(
                        rule.window_hours,
                        Episode {
                            id,
                            severity: Severity::Warning,
                            announced: Severity::Warning,
                            last_announced_at: at,
                            readings: refs,
                            cleared_by: None,
                            last_value: None,
                        },
                    );
                }
                (false, true) => {
                    if let Some(ep) = self.weight_open.remove(&rule.window_hours) {
                        let mut readings = ep.readings;
                        readings.push(reference.to_string());
                        events.push(AlertEvent {
                            late: None,
                            at,
                            transition: Transition::Resolved,
                            subject,
                            severity: Severity::Warning,
                            episode: ep.id,
                            readings,
                            cause: None,
                            detail: format!(
                                "weight gain within {} h back under the limit",
                                rule.window_hours
                            ),
                        });
                    }
                }
                _ => {}
            }
        }
        self.weights.push(WeightPoint {
            at,
            kg: kg.parts(),
            reference: reference.to_string(),
        });
    }

    /// Resolve threshold episodes whose value came back to normal inside the suppression window,
    /// once the window is over.
    pub fn resolve_cleared(&mut self, rules: &AlertRules, now: UtcMillis) -> Vec<AlertEvent> {
        let suppress_ms = i64::from(rules.suppress_minutes) * 60_000;
        let due: Vec<Kind> = self
            .open
            .iter()
            .filter(|(_, ep)| {
                ep.cleared_by.is_some() && now.0 - ep.last_announced_at.0 >= suppress_ms
            })
            .map(|(k, _)| *k)
            .collect();
        let mut events = Vec::new();
        for kind in due {
            if let Some(ep) = self.open.remove(&kind) {
                let by = ep.cleared_by.clone().unwrap_or_default();
                let detail = format!("{kind} back within limits");
                events.push(resolved(now, Subject::Threshold { kind }, ep, &by, detail));
            }
        }
        events
    }

    /// The limits in force changed at `now` (the clinic sent a new version): every open episode
    /// whose condition no longer holds under `rules` resolves with the detail "limits changed" —
    /// a threshold episode whose kind has no rule any more or whose latest value is within the new
    /// limits (or beyond the opposite one: the next reading opens that episode), a weight-gain
    /// episode whose window has no rule, an overdue episode whose device has no schedule. Other
    /// episodes stay open and go on under the new limits.
    pub fn limits_changed(&mut self, rules: &AlertRules, now: UtcMillis) -> Vec<AlertEvent> {
        let reference = "limits-changed";
        let mut events = Vec::new();
        let kinds: Vec<Kind> = self.open.keys().copied().collect();
        for kind in kinds {
            let holds = match (rules.thresholds.get(&kind), self.open.get(&kind)) {
                (Some(rule), Some(ep)) => ep
                    .last_value
                    .and_then(|(d, unit)| Some((Rational::from_decimal(d)?, unit)))
                    .map(|(v, unit)| {
                        classify(rule, v, unit).and_then(|s| s.direction())
                            == ep.severity.direction()
                    })
                    // An episode from before values were kept: the next reading decides.
                    .unwrap_or(true),
                _ => false,
            };
            if !holds {
                if let Some(ep) = self.open.remove(&kind) {
                    let detail = format!("{kind}: limits changed; no longer outside them");
                    events.push(resolved(
                        now,
                        Subject::Threshold { kind },
                        ep,
                        reference,
                        detail,
                    ));
                }
            }
        }
        let windows: Vec<u32> = self.weight_open.keys().copied().collect();
        for w in windows {
            if !rules.weight_gain.iter().any(|r| r.window_hours == w) {
                if let Some(ep) = self.weight_open.remove(&w) {
                    let subject = Subject::WeightGain { window_hours: w };
                    let detail =
                        format!("weight gain over {w} h: limits changed; no rule any more");
                    events.push(resolved(now, subject, ep, reference, detail));
                }
            }
        }
        let devices: Vec<String> = self.overdue_open.keys().cloned().collect();
        for d in devices {
            if !rules.schedules.iter().any(|s| s.device == d) {
                if let Some(ep) = self.overdue_open.remove(&d) {
                    let detail = "overdue: limits changed; no schedule any more".to_owned();
                    events.push(resolved(
                        now,
                        Subject::Overdue { device: d },
                        ep,
                        reference,
                        detail,
                    ));
                }
            }
        }
        events
    }

    /// Check the schedules at `now`. `status` gives what the hub knows of each scheduled device
    /// (by the schedule's device name); `adapter_down` whether the Bluetooth adapter is unusable.
    pub fn tick(
        &mut self,
        rules: &AlertRules,
        now: UtcMillis,
        status: &BTreeMap<String, DeviceStatus>,
        adapter_down: bool,
    ) -> Vec<AlertEvent> {
        let mut events = self.resolve_cleared(rules, now);
        for s in &rules.schedules {
            let st = status.get(&s.device).cloned().unwrap_or_default();
            let due = st.last_reading.map(|t| t.0 + s.overdue_after_ms());
            let overdue = match due {
                Some(d) => now.0 > d,
                // Never delivered anything: overdue once a whole interval passed since it was first
                // known (the caller passes last_seen = enrolment time for a new device).
                None => st
                    .last_seen
                    .is_none_or(|t| now.0 > t.0 + s.overdue_after_ms()),
            };
            let subject = Subject::Overdue {
                device: s.device.clone(),
            };
            match (overdue, self.overdue_open.contains_key(&s.device)) {
                (true, false) => {
                    let since = st.last_reading.unwrap_or(now);
                    let cause = if adapter_down {
                        OverdueCause::AdapterDown
                    } else if st.pairing_failing {
                        OverdueCause::PairingFailing
                    } else {
                        match st.last_seen {
                            Some(seen)
                                if st.last_reading.is_none_or(|r| seen.0 > r.0)
                                    && due.is_none_or(|d| seen.0 > d - s.overdue_after_ms()) =>
                            {
                                OverdueCause::NothingNew { last_seen: seen }
                            }
                            seen => OverdueCause::NotSeen {
                                last_seen: seen,
                                last_battery_pct: st.last_battery_pct,
                            },
                        }
                    };
                    let id = format!("overdue-{}-{}", s.device, since.0);
                    let detail = match &cause {
                        OverdueCause::AdapterDown => format!("no new measurement from {}: the hub's Bluetooth adapter is down", s.device),
                        OverdueCause::PairingFailing => format!("no new measurement from {}: pairing or authentication with the device fails", s.device),
                        OverdueCause::NotSeen { last_battery_pct, .. } => format!(
                            "no new measurement from {}: device not seen (out of range or battery flat; last battery {})",
                            s.device,
                            last_battery_pct.map(|b| format!("{b} %")).unwrap_or_else(|| "unknown".into())
                        ),
                        OverdueCause::NothingNew { .. } => format!("no new measurement from {}: the device was seen but had nothing new (not measured)", s.device),
                    };
                    events.push(AlertEvent {
                        late: None,
                        at: now,
                        transition: Transition::Raised,
                        subject,
                        severity: Severity::Warning,
                        episode: id.clone(),
                        readings: Vec::new(),
                        cause: Some(cause),
                        detail,
                    });
                    self.overdue_open.insert(
                        s.device.clone(),
                        Episode {
                            id,
                            severity: Severity::Warning,
                            announced: Severity::Warning,
                            last_announced_at: now,
                            readings: Vec::new(),
                            cleared_by: None,
                            last_value: None,
                        },
                    );
                }
                (false, true) => {
                    if let Some(ep) = self.overdue_open.remove(&s.device) {
                        events.push(AlertEvent {
                            late: None,
                            at: now,
                            transition: Transition::Resolved,
                            subject,
                            severity: Severity::Warning,
                            episode: ep.id,
                            readings: Vec::new(),
                            cause: None,
                            detail: format!("{} delivered a new measurement", s.device),
                        });
                    }
                }
                _ => {}
            }
        }
        events
    }
}

fn resolved(
    at: UtcMillis,
    subject: Subject,
    ep: Episode,
    reference: &str,
    detail: String,
) -> AlertEvent {
    let mut readings = ep.readings;
    if !readings.iter().any(|r| r == reference) {
        readings.push(reference.to_string());
    }
    AlertEvent {
        late: None,
        at,
        transition: Transition::Resolved,
        subject,
        severity: ep.severity,
        episode: ep.id,
        readings,
        cause: None,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    fn rules() -> AlertRules {
        AlertRules {
            schedules: vec![Schedule {
                device: "meter".into(),
                per_day: 2,
                grace_minutes: Some(60),
            }],
            ..AlertRules::starting_points()
        }
    }

    fn status(
        last_seen: Option<i64>,
        last_reading: Option<i64>,
        battery: Option<u8>,
        pairing: bool,
    ) -> BTreeMap<String, DeviceStatus> {
        BTreeMap::from([(
            "meter".to_string(),
            DeviceStatus {
                last_seen: last_seen.map(UtcMillis),
                last_reading: last_reading.map(UtcMillis),
                last_battery_pct: battery,
                pairing_failing: pairing,
            },
        )])
    }

    fn cause_after(st: BTreeMap<String, DeviceStatus>, adapter_down: bool) -> Option<OverdueCause> {
        let mut e = Engine::new();
        // Twice a day + 60 min grace: overdue 13 h after the last reading.
        assert!(e
            .tick(&rules(), UtcMillis(12 * H), &st, adapter_down)
            .is_empty());
        let ev = e.tick(&rules(), UtcMillis(14 * H), &st, adapter_down);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].transition, Transition::Raised);
        // Not repeated on the next tick.
        assert!(e
            .tick(&rules(), UtcMillis(15 * H), &st, adapter_down)
            .is_empty());
        ev[0].cause.clone()
    }

    #[test]
    fn a_change_of_limits_resolves_what_no_longer_holds() {
        let glucose = |mg: i64| {
            Reading::new(
                Kind::Glucose,
                crate::model::Value::Number(crate::model::Decimal::new(mg, 0)),
                Unit::MgPerDl,
            )
        };
        let mut e = Engine::new();
        let r = rules();
        let raised = e.observe(&r, UtcMillis(0), &glucose(300), "1");
        assert_eq!(raised.len(), 1);
        e.observe(&r, UtcMillis(H), &glucose(280), "2");
        let overdue = e.tick(
            &r,
            UtcMillis(40 * H),
            &status(None, Some(0), None, false),
            false,
        );
        assert_eq!(overdue.len(), 1);
        // Still above a high of 270: stays open. No schedule any more: overdue resolves.
        let mut still = AlertRules::starting_points();
        if let Some(g) = still.thresholds.get_mut(&Kind::Glucose) {
            g.high = Some(Limit(crate::model::Decimal::new(270, 0)));
        }
        let ev = e.limits_changed(&still, UtcMillis(41 * H));
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert!(matches!(ev[0].subject, Subject::Overdue { .. }));
        assert!(e.is_open(Kind::Glucose));
        // 280 is within a high of 300: resolves with "limits changed".
        let mut wider = AlertRules::starting_points();
        if let Some(g) = wider.thresholds.get_mut(&Kind::Glucose) {
            g.high = Some(Limit(crate::model::Decimal::new(300, 0)));
        }
        let ev = e.limits_changed(&wider, UtcMillis(42 * H));
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert_eq!(ev[0].transition, Transition::Resolved);
        assert_eq!(ev[0].episode, raised[0].episode);
        assert!(ev[0].detail.contains("limits changed"), "{}", ev[0].detail);
        assert!(!e.is_open(Kind::Glucose));
        // Nothing open: nothing to resolve.
        assert!(e.limits_changed(&r, UtcMillis(43 * H)).is_empty());
    }

    #[test]
    fn overdue_names_the_cause() {
        assert_eq!(
            cause_after(status(Some(0), Some(0), Some(80), false), true),
            Some(OverdueCause::AdapterDown)
        );
        assert_eq!(
            cause_after(status(Some(0), Some(0), Some(80), true), false),
            Some(OverdueCause::PairingFailing)
        );
        assert_eq!(
            cause_after(status(Some(0), Some(0), Some(7), false), false),
            Some(OverdueCause::NotSeen {
                last_seen: Some(UtcMillis(0)),
                last_battery_pct: Some(7)
            })
        );
        assert_eq!(
            cause_after(status(Some(10 * H), Some(0), Some(80), false), false),
            Some(OverdueCause::NothingNew {
                last_seen: UtcMillis(10 * H)
            })
        );
    }

    #[test]
    fn a_new_reading_resolves_overdue() {
        let mut e = Engine::new();
        let r = rules();
        assert_eq!(
            e.tick(
                &r,
                UtcMillis(14 * H),
                &status(Some(0), Some(0), None, false),
                false
            )
            .len(),
            1
        );
        let ev = e.tick(
            &r,
            UtcMillis(15 * H),
            &status(Some(15 * H), Some(15 * H), None, false),
            false,
        );
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].transition, Transition::Resolved);
    }

    #[test]
    fn suppression_window_resolves_on_tick() {
        let r = AlertRules::starting_points();
        let mut e = Engine::new();
        let g = |v| {
            Reading::new(
                Kind::Glucose,
                crate::model::Value::Number(crate::model::Decimal::new(v, 0)),
                Unit::MgPerDl,
            )
        };
        assert_eq!(e.observe(&r, UtcMillis(0), &g(300), "1").len(), 1);
        // Back to normal 10 minutes later: inside the window, no event yet.
        assert!(e.observe(&r, UtcMillis(600_000), &g(120), "2").is_empty());
        assert!(e.is_open(Kind::Glucose));
        let ev = e.tick(&r, UtcMillis(H), &BTreeMap::new(), false);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].transition, Transition::Resolved);
        assert_eq!(ev[0].readings, vec!["1".to_string(), "2".to_string()]);
        assert!(!e.is_open(Kind::Glucose));
    }

    #[test]
    fn engine_state_survives_serialisation() {
        let r = AlertRules::starting_points();
        let mut e = Engine::new();
        let g = Reading::new(
            Kind::Glucose,
            crate::model::Value::Number(crate::model::Decimal::new(40, 0)),
            Unit::MgPerDl,
        );
        e.observe(&r, UtcMillis(0), &g, "1");
        let json = serde_json::to_string(&e).unwrap();
        let mut back: Engine = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
        // Still open after a "restart": the next low reading raises nothing new.
        assert!(back.observe(&r, UtcMillis(60_000), &g, "2").is_empty());
    }
}
