//! A patient's alert limits as set at the clinic: one FHIR `ServiceRequest` per version, the
//! limits in the documented extension [`LIMITS_EXTENSION`]. Both directions use the hub's own
//! [`AlertRules`] types, and [`LimitsVersion::from_service_request`] ends with
//! [`AlertRules::validate`], so the console and the hub refuse exactly the same sets (one
//! implementation).
//!
//! # The shape
//!
//! - `identifier` `{system: LIMITS_IDENTIFIER_SYSTEM, value: "<patient>-v<version>"}`;
//!   `status` `active`, `intent` `order`; `category` and `code` from [`TELEMONITORING_SYSTEM`]
//!   (`telemonitoring` / `alert-limits`): the order for the patient's telemonitoring.
//! - `subject` `Patient/<id>`; `authoredOn` when the clinician saved it; `requester.display` who
//!   saved it; `reasonCode[0].text` why (free text); `occurrencePeriod.start` the instant it takes
//!   effect.
//! - `extension[url=LIMITS_EXTENSION]`, a complex extension whose parts are:
//!   - `version` (`valueInteger`, ≥ 1, once): increases with every saved change for the patient;
//!   - `suppressMinutes` (`valueInteger`, at most once; default 60);
//!   - `threshold` (per measurement kind, at most once per kind): `kind` (`valueCode`, the hub's
//!     kind name such as `glucose`), `unit` (`valueCode`, UCUM), and each of `low`, `high`,
//!     `criticalLow`, `criticalHigh`, `hysteresis` as a `valueQuantity` in that unit;
//!   - `weightGain` (repeating): `windowHours` (`valueInteger`), `gain` (`valueQuantity`, a mass);
//!   - `schedule` (repeating): `device` (`valueString`, the device's name in `hub.toml`),
//!     `perDay` (`valueInteger`), `graceMinutes` (`valueInteger`, optional).
//!
//! What the clinic can *not* set: `local_command` (a program the hub runs) and its timeout stay
//! the technician's, from `hub.toml` — a clinic account never chooses what runs on the Pi.
//!
//! Limits travel as JSON numbers, so trailing zeros are not kept (`38.0` arrives as `38`, the
//! same value; comparisons are exact either way).
//!
//! Bounds: at most one threshold per kind, [`MAX_WEIGHT_GAIN`] weight-gain rules,
//! [`MAX_SCHEDULES`] schedules, strings of at most [`MAX_TEXT`] bytes; anything else is refused
//! with the element named.

use super::codes;
use crate::alerts::{AlertRules, Limit, Schedule, ThresholdRule, WeightGainRule};
use crate::model::{Kind, Unit, UtcMillis};
use serde::Deserialize;
use serde_json::{json, Map, Value as Json};

/// The complex extension carrying the limits.
pub const LIMITS_EXTENSION: &str =
    "https://vitals-hub.invalid/fhir/StructureDefinition/alert-limits";
/// The identifier system of a limits version (`<patient>-v<version>`).
pub const LIMITS_IDENTIFIER_SYSTEM: &str = "https://vitals-hub.invalid/fhir/alert-limits";
/// The code system of the telemonitoring order's category and code.
pub const TELEMONITORING_SYSTEM: &str = "https://vitals-hub.invalid/fhir/CodeSystem/telemonitoring";
/// The `code` of a limits order.
pub const LIMITS_CODE: &str = "alert-limits";

pub const MAX_WEIGHT_GAIN: usize = 8;
pub const MAX_SCHEDULES: usize = 32;
pub const MAX_TEXT: usize = 2000;

/// One saved version of a patient's alert limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsVersion {
    pub patient_id: String,
    /// ≥ 1; increases with every saved change.
    pub version: u32,
    /// The limits. `local_command` is always `None` here (the hub's own, from `hub.toml`).
    pub rules: AlertRules,
    /// When it takes effect.
    pub effective: UtcMillis,
    /// When it was saved.
    pub authored: UtcMillis,
    /// Who saved it (the console user).
    pub author: String,
    /// Why (free text).
    pub reason: String,
}

/// Why a limits version cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    /// Not the documented shape.
    #[error("the limits ServiceRequest is malformed: {0}")]
    Malformed(String),
    /// The shape is right but the limits contradict each other (the alert rules' own check).
    #[error("the limits are invalid: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// For another patient.
    #[error("version {version} is for another patient; the hub keeps the limits in force (check the hub's patient_id and the clinic's registry)")]
    OtherPatient { version: u32 },
    /// Not newer than the one in force.
    #[error("version {version} is not newer than version {applied} in force; the hub keeps version {applied} (save a new version at the clinic)")]
    Stale { version: u32, applied: u32 },
}

fn bad(what: impl Into<String>) -> LimitsError {
    LimitsError::Malformed(what.into())
}

fn quantity(l: Limit, unit: Unit) -> Json {
    json!({ "value": l, "unit": unit.ucum(), "system": codes::UCUM, "code": unit.ucum() })
}

fn part(url: &str, key: &str, value: Json) -> Json {
    let mut m = Map::new();
    m.insert("url".into(), json!(url));
    m.insert(key.into(), value);
    Json::Object(m)
}

fn complex(url: &str, parts: Vec<Json>) -> Json {
    json!({ "url": url, "extension": parts })
}

impl LimitsVersion {
    /// The `ServiceRequest` (no `id`: the FHIR server assigns it).
    pub fn to_service_request(&self) -> Result<Json, LimitsError> {
        let mut parts = vec![
            part("version", "valueInteger", json!(self.version)),
            part(
                "suppressMinutes",
                "valueInteger",
                json!(self.rules.suppress_minutes),
            ),
        ];
        for (kind, r) in &self.rules.thresholds {
            let mut t = vec![
                part("kind", "valueCode", json!(kind.as_str())),
                part("unit", "valueCode", json!(r.unit.ucum())),
            ];
            for (name, l) in [
                ("low", r.low),
                ("high", r.high),
                ("criticalLow", r.critical_low),
                ("criticalHigh", r.critical_high),
                ("hysteresis", r.hysteresis),
            ] {
                if let Some(l) = l {
                    t.push(part(name, "valueQuantity", quantity(l, r.unit)));
                }
            }
            parts.push(complex("threshold", t));
        }
        for w in &self.rules.weight_gain {
            parts.push(complex(
                "weightGain",
                vec![
                    part("windowHours", "valueInteger", json!(w.window_hours)),
                    part("gain", "valueQuantity", quantity(w.gain, w.unit)),
                ],
            ));
        }
        for s in &self.rules.schedules {
            let mut p = vec![
                part("device", "valueString", json!(s.device)),
                part("perDay", "valueInteger", json!(s.per_day)),
            ];
            if let Some(g) = s.grace_minutes {
                p.push(part("graceMinutes", "valueInteger", json!(g)));
            }
            parts.push(complex("schedule", p));
        }
        let instant =
            |t: UtcMillis| super::format_instant(t, 0, true).map_err(|e| bad(e.to_string()));
        Ok(json!({
            "resourceType": "ServiceRequest",
            "extension": [complex(LIMITS_EXTENSION, parts)],
            "identifier": [{
                "system": LIMITS_IDENTIFIER_SYSTEM,
                "value": format!("{}-v{}", self.patient_id, self.version),
            }],
            "status": "active",
            "intent": "order",
            "category": [{ "coding": [{
                "system": TELEMONITORING_SYSTEM, "code": "telemonitoring", "display": "Telemonitoring",
            }] }],
            "code": { "coding": [{
                "system": TELEMONITORING_SYSTEM, "code": LIMITS_CODE,
                "display": "Telemonitoring alert limits",
            }] },
            "subject": { "reference": format!("Patient/{}", self.patient_id) },
            "occurrencePeriod": { "start": instant(self.effective)? },
            "authoredOn": instant(self.authored)?,
            "requester": { "display": self.author },
            "reasonCode": [{ "text": self.reason }],
        }))
    }

    /// Read a limits `ServiceRequest` back, bounded, and validate its limits with
    /// [`AlertRules::validate`]. Each error names the element and what is wrong with it.
    pub fn from_service_request(sr: &Json) -> Result<LimitsVersion, LimitsError> {
        if sr.get("resourceType").and_then(Json::as_str) != Some("ServiceRequest") {
            return Err(bad("resourceType is not ServiceRequest"));
        }
        let code_ok = sr
            .pointer("/code/coding")
            .and_then(Json::as_array)
            .is_some_and(|c| {
                c.iter().any(|c| {
                    c.get("system").and_then(Json::as_str) == Some(TELEMONITORING_SYSTEM)
                        && c.get("code").and_then(Json::as_str) == Some(LIMITS_CODE)
                })
            });
        if !code_ok {
            return Err(bad(format!(
                "code is not {TELEMONITORING_SYSTEM}#{LIMITS_CODE}"
            )));
        }
        let patient_id = sr
            .pointer("/subject/reference")
            .and_then(Json::as_str)
            .and_then(|r| r.strip_prefix("Patient/"))
            .filter(|id| {
                (1..=64).contains(&id.len())
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
            })
            .ok_or_else(|| bad("subject.reference is not Patient/<id>"))?
            .to_owned();
        let text = |ptr: &str| -> Result<String, LimitsError> {
            let s = sr
                .pointer(ptr)
                .and_then(Json::as_str)
                .ok_or_else(|| bad(format!("{ptr} is missing")))?;
            if s.len() > MAX_TEXT {
                return Err(bad(format!("{ptr} is longer than {MAX_TEXT} bytes")));
            }
            Ok(s.to_owned())
        };
        let instant = |ptr: &str| -> Result<UtcMillis, LimitsError> {
            let s = text(ptr)?;
            UtcMillis::parse_rfc3339(&s).map_err(|e| {
                bad(format!(
                    "{ptr} {s:?} is not a dateTime with time and offset: {}",
                    e.why
                ))
            })
        };
        let effective = instant("/occurrencePeriod/start")?;
        let authored = instant("/authoredOn")?;
        let author = text("/requester/display")?;
        let reason = text("/reasonCode/0/text")?;
        let exts = sr
            .get("extension")
            .and_then(Json::as_array)
            .map(|a| {
                a.iter()
                    .filter(|e| e.get("url").and_then(Json::as_str) == Some(LIMITS_EXTENSION))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let [ext] = exts.as_slice() else {
            return Err(bad(format!(
                "expected exactly one extension {LIMITS_EXTENSION}, found {}",
                exts.len()
            )));
        };
        let (version, rules) = read_limits(ext)?;
        rules.validate().map_err(LimitsError::Invalid)?;
        Ok(LimitsVersion {
            patient_id,
            version,
            rules,
            effective,
            authored,
            author,
            reason,
        })
    }

    /// Whether the hub of `patient_id`, with version `applied` in force (none: `hub.toml`'s set),
    /// may apply this version.
    pub fn acceptable_for(
        &self,
        patient_id: &str,
        applied: Option<u32>,
    ) -> Result<(), LimitsError> {
        if self.patient_id != patient_id {
            return Err(LimitsError::OtherPatient {
                version: self.version,
            });
        }
        match applied {
            Some(a) if self.version <= a => Err(LimitsError::Stale {
                version: self.version,
                applied: a,
            }),
            _ => Ok(()),
        }
    }
}

fn parts_of(ext: &Json, at: &str) -> Result<Vec<(String, Json)>, LimitsError> {
    let a = ext
        .get("extension")
        .and_then(Json::as_array)
        .ok_or_else(|| bad(format!("{at} has no parts")))?;
    a.iter()
        .map(|p| {
            let url = p
                .get("url")
                .and_then(Json::as_str)
                .ok_or_else(|| bad(format!("a part of {at} has no url")))?;
            Ok((url.to_owned(), p.clone()))
        })
        .collect()
}

fn int(p: &Json, at: &str) -> Result<u32, LimitsError> {
    p.get("valueInteger")
        .and_then(Json::as_u64)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| bad(format!("{at}: valueInteger must be a non-negative integer")))
}

fn code<T: std::str::FromStr<Err = String>>(p: &Json, at: &str) -> Result<T, LimitsError> {
    let s = p
        .get("valueCode")
        .and_then(Json::as_str)
        .ok_or_else(|| bad(format!("{at}: valueCode is missing")))?;
    s.parse().map_err(|e: String| bad(format!("{at}: {e}")))
}

fn qty(p: &Json, unit: Unit, at: &str) -> Result<Limit, LimitsError> {
    let q = p
        .get("valueQuantity")
        .ok_or_else(|| bad(format!("{at}: valueQuantity is missing")))?;
    let c = q.get("code").and_then(Json::as_str).unwrap_or_default();
    if c != unit.ucum() {
        return Err(bad(format!(
            "{at}: quantity in {c:?}, not the rule's unit {unit}; give every limit of a rule in its unit"
        )));
    }
    let v = q
        .get("value")
        .filter(|v| v.is_number())
        .ok_or_else(|| bad(format!("{at}: value must be a number")))?;
    Limit::deserialize(v).map_err(|e| bad(format!("{at}: {e}")))
}

fn once<T>(slot: &mut Option<T>, v: T, at: &str) -> Result<(), LimitsError> {
    if slot.is_some() {
        return Err(bad(format!("{at} is given twice")));
    }
    *slot = Some(v);
    Ok(())
}

fn read_limits(ext: &Json) -> Result<(u32, AlertRules), LimitsError> {
    let mut version = None;
    let mut suppress = None;
    let mut rules = AlertRules::default();
    for (url, p) in parts_of(ext, "the limits extension")? {
        match url.as_str() {
            "version" => once(&mut version, int(&p, "version")?, "version")?,
            "suppressMinutes" => once(
                &mut suppress,
                int(&p, "suppressMinutes")?,
                "suppressMinutes",
            )?,
            "threshold" => {
                let parts = parts_of(&p, "threshold")?;
                let kind: Kind = parts
                    .iter()
                    .find(|(u, _)| u == "kind")
                    .ok_or_else(|| bad("threshold without kind"))
                    .and_then(|(_, k)| code(k, "threshold.kind"))?;
                let at = format!("threshold {kind}");
                let unit: Unit = parts
                    .iter()
                    .find(|(u, _)| u == "unit")
                    .ok_or_else(|| bad(format!("{at} without unit")))
                    .and_then(|(_, k)| code(k, &format!("{at}.unit")))?;
                let mut r = ThresholdRule {
                    unit,
                    low: None,
                    high: None,
                    critical_low: None,
                    critical_high: None,
                    hysteresis: None,
                };
                for (u, x) in &parts {
                    let slot = match u.as_str() {
                        "kind" | "unit" => continue,
                        "low" => &mut r.low,
                        "high" => &mut r.high,
                        "criticalLow" => &mut r.critical_low,
                        "criticalHigh" => &mut r.critical_high,
                        "hysteresis" => &mut r.hysteresis,
                        other => return Err(bad(format!("{at}: unknown part {other:?}"))),
                    };
                    let a = format!("{at}.{u}");
                    once(slot, qty(x, unit, &a)?, &a)?;
                }
                if rules.thresholds.insert(kind, r).is_some() {
                    return Err(bad(format!("{at} is given twice")));
                }
            }
            "weightGain" => {
                if rules.weight_gain.len() == MAX_WEIGHT_GAIN {
                    return Err(bad(format!("more than {MAX_WEIGHT_GAIN} weightGain rules")));
                }
                let (mut window, mut gain) = (None, None);
                for (u, x) in parts_of(&p, "weightGain")? {
                    match u.as_str() {
                        "windowHours" => once(
                            &mut window,
                            int(&x, "weightGain.windowHours")?,
                            "weightGain.windowHours",
                        )?,
                        "gain" => {
                            let unit: Unit = x
                                .pointer("/valueQuantity/code")
                                .and_then(Json::as_str)
                                .unwrap_or_default()
                                .parse()
                                .map_err(|e: String| bad(format!("weightGain.gain: {e}")))?;
                            let l = qty(&x, unit, "weightGain.gain")?;
                            once(&mut gain, (l, unit), "weightGain.gain")?
                        }
                        other => return Err(bad(format!("weightGain: unknown part {other:?}"))),
                    }
                }
                let (Some(window_hours), Some((gain, unit))) = (window, gain) else {
                    return Err(bad("weightGain needs windowHours and gain"));
                };
                rules.weight_gain.push(WeightGainRule {
                    window_hours,
                    gain,
                    unit,
                });
            }
            "schedule" => {
                if rules.schedules.len() == MAX_SCHEDULES {
                    return Err(bad(format!("more than {MAX_SCHEDULES} schedules")));
                }
                let (mut device, mut per_day, mut grace) = (None, None, None);
                for (u, x) in parts_of(&p, "schedule")? {
                    match u.as_str() {
                        "device" => {
                            let d = x
                                .get("valueString")
                                .and_then(Json::as_str)
                                .filter(|d| !d.is_empty() && d.len() <= 64)
                                .ok_or_else(|| {
                                    bad("schedule.device: valueString of 1 to 64 bytes")
                                })?;
                            once(&mut device, d.to_owned(), "schedule.device")?
                        }
                        "perDay" => {
                            once(&mut per_day, int(&x, "schedule.perDay")?, "schedule.perDay")?
                        }
                        "graceMinutes" => once(
                            &mut grace,
                            int(&x, "schedule.graceMinutes")?,
                            "schedule.graceMinutes",
                        )?,
                        other => return Err(bad(format!("schedule: unknown part {other:?}"))),
                    }
                }
                let (Some(device), Some(per_day)) = (device, per_day) else {
                    return Err(bad("schedule needs device and perDay"));
                };
                rules.schedules.push(Schedule {
                    device,
                    per_day,
                    grace_minutes: grace,
                });
            }
            other => return Err(bad(format!("the limits extension: unknown part {other:?}"))),
        }
    }
    let version = version
        .filter(|v| *v >= 1)
        .ok_or_else(|| bad("version is missing or 0; versions start at 1"))?;
    if let Some(s) = suppress {
        rules.suppress_minutes = s;
    }
    Ok((version, rules))
}

/// The hub's acknowledgement of a limits version: applied at `at`, rejected at `at` for a reason,
/// or accepted at `at` to take effect later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsAck {
    pub patient_id: String,
    pub version: u32,
    pub at: UtcMillis,
    /// `None`: applied (or accepted, with `takes_effect`). `Some(reason)`: rejected.
    pub rejected: Option<String>,
    /// Accepted and stored, in force from this time (its effective date is in the future).
    pub takes_effect: Option<UtcMillis>,
    /// For a refusal of a resource with no readable version (`version` 0): its id.
    pub resource_id: Option<String>,
}

impl LimitsAck {
    pub fn outcome(&self) -> AckOutcome {
        match (&self.rejected, self.takes_effect) {
            (Some(_), _) => AckOutcome::Rejected,
            (None, Some(_)) => AckOutcome::Accepted,
            (None, None) => AckOutcome::Applied,
        }
    }
}

/// What the hub did with a version (the acknowledgement's `valueString`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AckOutcome {
    /// In force on the hub.
    Applied,
    /// Refused; the hub keeps what it had.
    Rejected,
    /// Stored; it takes effect at its effective time (in the future when it arrived).
    Accepted,
}

impl AckOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AckOutcome::Applied => "applied",
            AckOutcome::Rejected => "rejected",
            AckOutcome::Accepted => "accepted",
        }
    }
}

/// The `code` of the acknowledgement Observation (hub-status code system).
pub const ACK_CODE: &str = "alert-limits";

/// The acknowledgement as a transaction Bundle: the PhgDevice and one hub-status Observation
/// (subject = the hub, like the heartbeat's) with `code` hub-status `alert-limits`, `focus` the
/// limits version by identifier (`<patient>-v<version>`), `valueString` `applied`, `rejected` or
/// `accepted`, `effectiveDateTime` when, for a rejection the reason in `note`, for an acceptance
/// `takes effect at <time>` in `note`. Conditional create on
/// `<hub>-hub-status-alert-limits-v<version>-<outcome>`: sending it again is harmless.
pub fn ack_bundle(
    ctx: &super::BundleContext<'_>,
    ack: &LimitsAck,
) -> Result<super::BuiltBundle, super::FhirError> {
    use super::bundle::{coding, entry, new_builder, EntryInfo, EntryKind};
    let ctx = super::BundleContext {
        hub_ref: None,
        ..ctx.clone()
    };
    let mut b = new_builder(&ctx);
    let hub_id = super::Eui64::from_eui48(ctx.hub.mac).compact();
    let outcome = ack.outcome().as_str();
    // A refusal of a resource with no readable version is keyed by the resource's id.
    let subject = match (ack.version, &ack.resource_id) {
        (0, Some(id)) => format!("id-{id}"),
        (v, _) => format!("v{v}"),
    };
    let ident = format!("{hub_id}-hub-status-{ACK_CODE}-{subject}-{outcome}");
    let mut m = Map::new();
    m.insert("resourceType".into(), json!("Observation"));
    m.insert(
        "identifier".into(),
        json!([{ "system": codes::HUB_STATUS_SYSTEM, "value": ident }]),
    );
    m.insert("status".into(), json!("final"));
    m.insert(
        "code".into(),
        json!({ "coding": [coding(codes::HUB_STATUS_SYSTEM, ACK_CODE, Some("Alert limits version on the hub"))] }),
    );
    m.insert("subject".into(), json!({ "reference": b.hub_ref }));
    m.insert(
        "focus".into(),
        json!([{ "identifier": {
            "system": LIMITS_IDENTIFIER_SYSTEM,
            "value": format!("{}-{subject}", ack.patient_id),
        } }]),
    );
    m.insert(
        "effectiveDateTime".into(),
        json!(super::format_instant(ack.at, 0, true)?),
    );
    m.insert("valueString".into(), json!(outcome));
    if let Some(r) = &ack.rejected {
        m.insert("note".into(), json!([{ "text": r }]));
    } else if let Some(t) = ack.takes_effect {
        m.insert(
            "note".into(),
            json!([{ "text": format!("takes effect at {}", super::format_instant(t, 0, true)?) }]),
        );
    }
    m.insert("device".into(), json!({ "reference": b.hub_ref }));
    let url = b.urn();
    let cond = super::identifier::if_none_exist(codes::HUB_STATUS_SYSTEM, &ident);
    b.push(
        entry(&url, Json::Object(m), "Observation", cond),
        EntryInfo {
            kind: EntryKind::HubStatus,
            tags: vec![],
            identifier: ident,
        },
    );
    Ok(b.finish(0, Vec::new()))
}

/// A hub's acknowledgement Observation: (patient, version, outcome, when, note) — what the console
/// shows as "applied on the hub at …" / "rejected by the hub: reason" / "accepted by the hub, takes
/// effect at …". A refusal of a resource that named no readable version has version 0 and the
/// resource's id in `focus` (`<patient>-id-<id>`): it reads as version 0.
pub fn read_ack(obs: &Json) -> Option<(String, u32, AckOutcome, String, Option<String>)> {
    let coded = obs
        .pointer("/code/coding")
        .and_then(Json::as_array)?
        .iter()
        .any(|c| {
            c.get("system").and_then(Json::as_str) == Some(codes::HUB_STATUS_SYSTEM)
                && c.get("code").and_then(Json::as_str) == Some(ACK_CODE)
        });
    if !coded {
        return None;
    }
    let focus = obs
        .pointer("/focus/0/identifier/value")
        .and_then(Json::as_str)?;
    let (patient, version) = match focus.rsplit_once("-v") {
        Some((p, v)) if v.parse::<u32>().is_ok() => (p, v.parse().ok()?),
        _ => (focus.rsplit_once("-id-")?.0, 0),
    };
    let applied = match obs.get("valueString").and_then(Json::as_str)? {
        "applied" => AckOutcome::Applied,
        "rejected" => AckOutcome::Rejected,
        "accepted" => AckOutcome::Accepted,
        _ => return None,
    };
    let at = obs
        .get("effectiveDateTime")
        .and_then(Json::as_str)?
        .to_owned();
    let reason = obs
        .pointer("/note/0/text")
        .and_then(Json::as_str)
        .map(str::to_owned);
    Some((patient.to_owned(), version, applied, at, reason))
}

/// The `version` a limits `ServiceRequest` claims, without checking anything else.
pub fn version_of(sr: &Json) -> Option<u32> {
    sr.get("extension")?
        .as_array()?
        .iter()
        .find(|e| e.get("url").and_then(Json::as_str) == Some(LIMITS_EXTENSION))?
        .get("extension")?
        .as_array()?
        .iter()
        .find(|p| p.get("url").and_then(Json::as_str) == Some("version"))?
        .get("valueInteger")?
        .as_u64()
        .and_then(|v| u32::try_from(v).ok())
}

/// Of a searchset, the limits `ServiceRequest` with the highest version (`None`: no entry).
pub fn current_of(bundle: &Json) -> Result<Option<Json>, String> {
    if bundle.get("resourceType").and_then(Json::as_str) != Some("Bundle") {
        return Err("the limits search answer is not a Bundle".into());
    }
    let entries = bundle
        .get("entry")
        .and_then(Json::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    Ok(entries
        .iter()
        .filter_map(|e| e.get("resource"))
        .filter(|r| r.get("resourceType").and_then(Json::as_str) == Some("ServiceRequest"))
        .max_by_key(|r| version_of(r).unwrap_or(0))
        .cloned())
}

/// The clinic's part of a hub's rules merged with the hub's own: the clinic's thresholds,
/// weight-gain rules, schedules and suppression window; the hub's `local_command` and timeout.
pub fn merged_with_hub(clinic: &AlertRules, hub: &AlertRules) -> AlertRules {
    AlertRules {
        local_command: hub.local_command.clone(),
        local_command_timeout_seconds: hub.local_command_timeout_seconds,
        ..clinic.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Decimal;

    fn sample() -> LimitsVersion {
        let mut rules = AlertRules::starting_points();
        rules.schedules.push(Schedule {
            device: "meter".into(),
            per_day: 2,
            grace_minutes: Some(90),
        });
        LimitsVersion {
            patient_id: "RPM-000123".into(),
            version: 3,
            rules,
            effective: UtcMillis(1_796_630_400_000),
            authored: UtcMillis(1_796_626_800_000),
            author: "dr.jones".into(),
            reason: "new insulin regimen".into(),
        }
    }

    #[test]
    fn round_trips_through_the_service_request() {
        let mut v = sample();
        let sr = v.to_service_request().unwrap();
        // A limit travels as a JSON number: 38.0 arrives as 38, the same value.
        let t = v.rules.thresholds.get_mut(&Kind::BodyTemperature).unwrap();
        assert_eq!(t.high, Some(Limit(Decimal::new(380, -1))));
        t.high = Some(Limit(Decimal::new(38, 0)));
        assert_eq!(LimitsVersion::from_service_request(&sr).unwrap(), v);
        // Through text too (what travels).
        let back: Json = serde_json::from_str(&sr.to_string()).unwrap();
        assert_eq!(LimitsVersion::from_service_request(&back).unwrap(), v);
    }

    #[test]
    fn contradictions_are_refused_by_the_rules_own_check() {
        let mut v = sample();
        if let Some(g) = v.rules.thresholds.get_mut(&Kind::Glucose) {
            g.low = Some(Limit(Decimal::new(300, 0)));
        }
        let sr = v.to_service_request().unwrap();
        let e = LimitsVersion::from_service_request(&sr).unwrap_err();
        assert!(
            e.to_string()
                .contains("alerts.thresholds.glucose: low 300 must be below high 250"),
            "{e}"
        );
    }

    #[test]
    fn malformed_parts_are_named() {
        let sr = sample().to_service_request().unwrap();
        let mut twice = sr.clone();
        let ext = twice["extension"][0]["extension"].as_array_mut().unwrap();
        ext.push(ext[0].clone());
        let e = LimitsVersion::from_service_request(&twice).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the limits ServiceRequest is malformed: version is given twice"
        );
        let mut unit = sr.clone();
        unit["extension"][0]["extension"][2]["extension"][2]["valueQuantity"]["code"] =
            json!("mmol/L");
        let e = LimitsVersion::from_service_request(&unit).unwrap_err();
        assert!(e.to_string().contains("not the rule's unit"), "{e}");
        let mut nopatient = sr;
        nopatient["subject"]["reference"] = json!("Group/1");
        let e = LimitsVersion::from_service_request(&nopatient).unwrap_err();
        assert!(e.to_string().contains("subject.reference"), "{e}");
    }

    #[test]
    fn other_patient_and_stale_versions_are_refused() {
        let v = sample();
        assert!(v.acceptable_for("RPM-000123", None).is_ok());
        assert!(v.acceptable_for("RPM-000123", Some(2)).is_ok());
        assert_eq!(
            v.acceptable_for("RPM-000999", None),
            Err(LimitsError::OtherPatient { version: 3 })
        );
        assert_eq!(
            v.acceptable_for("RPM-000123", Some(3)),
            Err(LimitsError::Stale {
                version: 3,
                applied: 3
            })
        );
    }

    #[test]
    fn the_hub_keeps_its_local_command() {
        let hub = AlertRules {
            local_command: Some("/usr/local/bin/beep".into()),
            ..AlertRules::default()
        };
        let m = merged_with_hub(&sample().rules, &hub);
        assert_eq!(m.local_command.as_deref(), Some("/usr/local/bin/beep"));
        assert_eq!(m.thresholds, sample().rules.thresholds);
    }
}
