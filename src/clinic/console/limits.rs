//! The patient's alert-limits editor (issue 18): `GET /patient/{id}/limits` shows the version in
//! force (who, when, why, from when), what the hub said of it ("applied on the hub at …" /
//! "rejected by the hub: reason", from the hub's acknowledgement Observation), the previous
//! versions, and a form prefilled with the current set; `POST` saves a new version.
//!
//! A save is read back through [`LimitsVersion::from_service_request`] — the hub's own reading of
//! the resource, ending with `AlertRules::validate` — before anything is written, so the console
//! refuses exactly what the hub would (low above high, a unit that does not fit the kind, a
//! critical limit inside the normal band), with the same reasons, shown on the page. Each save is
//! a new `ServiceRequest` with the next version number; nothing is overwritten. The weight-gain
//! rules and the schedules are edited as the `[alerts]` TOML the technician knows.
//!
//! "Preview" runs the form's limits over the patient's last 30 days of readings at the clinic with
//! the hub's own rules engine ([`crate::alerts::replay::run`]) and lists what they would have
//! raised, without saving: glucose, blood pressure (systolic), SpO2, pulse, temperature and weight
//! Observations are read back into readings (value and UCUM unit as the hub sent them).

use super::auth::Session;
use super::{audited, create_audited, csrf_refused, fhir_failed, not_found, records, AppState};
use crate::alerts::{AlertRules, Limit, Schedule, ThresholdRule, WeightGainRule};
use crate::fhir::limits::{read_ack, AckOutcome, LimitsVersion, ACK_CODE};
use crate::model::{Kind, UtcMillis};
use axum::extract::{ConnectInfo, Path as UrlPath, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use hyper::StatusCode;
use maud::{html, Markup};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tracing::info;

/// The kinds the editor offers a threshold row for.
const KINDS: [Kind; 8] = [
    Kind::Glucose,
    Kind::CgmGlucose,
    Kind::Systolic,
    Kind::Diastolic,
    Kind::Spo2,
    Kind::HeartRate,
    Kind::PulseRate,
    Kind::BodyTemperature,
];

/// An Observation of the PHD IG back into a timed reading for the replay (`None`: not a kind
/// the limits cover, or no numeric value).
fn reading_of(o: &serde_json::Value, line: usize) -> Option<crate::alerts::replay::TimedReading> {
    use serde_json::Value;
    let code = o
        .pointer("/code/coding")?
        .as_array()?
        .iter()
        .find(|c| c.get("system").and_then(Value::as_str) == Some(crate::fhir::codes::MDC))?
        .get("code")?
        .as_str()?;
    let (kind, q) = match code {
        "150020" => (
            Kind::Systolic,
            o.get("component")?
                .as_array()?
                .iter()
                .find(|c| {
                    c.pointer("/code/coding/0/code").and_then(Value::as_str) == Some("150021")
                })?
                .get("valueQuantity")?,
        ),
        "150456" => (Kind::Spo2, o.get("valueQuantity")?),
        "149530" | "149546" | "147842" => (Kind::PulseRate, o.get("valueQuantity")?),
        "188736" => (Kind::BodyWeight, o.get("valueQuantity")?),
        "150364" => (Kind::BodyTemperature, o.get("valueQuantity")?),
        c if c.starts_with("1601") || c.starts_with("1602") || c.starts_with("1603") => {
            (Kind::Glucose, o.get("valueQuantity")?)
        }
        _ => return None,
    };
    let value: crate::model::Decimal = q.get("value")?.as_number()?.to_string().parse().ok()?;
    let unit: crate::model::Unit = q.get("code")?.as_str()?.parse().ok()?;
    let at = UtcMillis::parse_rfc3339(o.get("effectiveDateTime")?.as_str()?).ok()?;
    Some(crate::alerts::replay::TimedReading {
        line,
        at,
        reading: crate::model::Reading::new(kind, crate::model::Value::Number(value), unit),
    })
}

/// What `rules` would have raised over the patient's last 30 days at the clinic.
async fn preview(
    st: &AppState,
    patient: &str,
    rules: &AlertRules,
) -> Result<Vec<crate::alerts::AlertEvent>, Response> {
    let since = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * 30);
    let found = st
        .fhir
        .search(
            "Observation",
            &[
                ("patient", format!("Patient/{patient}")),
                ("date", format!("ge{since}")),
                ("_sort", "date".into()),
                ("_count", crate::clinic::db::MAX_SEARCH.to_string()),
            ],
        )
        .await
        .map_err(|e| fhir_failed(&e))?;
    let mut readings: Vec<_> = found
        .resources
        .iter()
        .enumerate()
        .filter_map(|(i, o)| reading_of(o, i + 1))
        .collect();
    readings.sort_by_key(|r| r.at);
    Ok(crate::alerts::replay::run(rules, &readings)
        .into_iter()
        .filter(|e| e.transition != crate::alerts::Transition::Resolved)
        .collect())
}

const LIMIT_FIELDS: [&str; 5] = ["low", "high", "critical_low", "critical_high", "hysteresis"];

/// The patient's saved versions, newest first.
async fn versions(st: &AppState, patient: &str) -> Result<Vec<LimitsVersion>, Response> {
    saved_versions(&st.fhir, patient)
        .await
        .map_err(|e| fhir_failed(&e))
}

/// The patient's saved versions, newest first (the first is the one in force), from one FHIR
/// search; the editor and the patient page's bands both read them here.
pub async fn saved_versions(
    fhir: &super::fhir::FhirClient,
    patient: &str,
) -> Result<Vec<LimitsVersion>, super::fhir::FhirClientError> {
    let found = fhir
        .search("ServiceRequest", &[("patient", patient.to_owned())])
        .await?;
    let mut v: Vec<LimitsVersion> = found
        .resources
        .iter()
        .filter_map(|r| LimitsVersion::from_service_request(r).ok())
        .filter(|v| v.patient_id == patient)
        .collect();
    v.sort_by_key(|v| std::cmp::Reverse(v.version));
    Ok(v)
}

/// The hub's newest acknowledgement for the patient: (version — 0 for a resource without a
/// readable version —, outcome, when, note).
type Ack = (u32, AckOutcome, String, Option<String>);

async fn hub_ack(st: &AppState, patient: &str) -> Result<Option<Ack>, Response> {
    let found = st
        .fhir
        .search(
            "Observation",
            &[(
                "code",
                format!("{}|{ACK_CODE}", crate::fhir::codes::HUB_STATUS_SYSTEM),
            )],
        )
        .await
        .map_err(|e| fhir_failed(&e))?;
    Ok(found
        .resources
        .iter()
        .filter_map(read_ack)
        .filter(|a| a.0 == patient)
        // The newest by the hub's time (its acknowledgements carry UTC times in one format).
        .max_by(|a, b| (&a.3, a.1).cmp(&(&b.3, b.1)))
        .map(|(_, v, applied, at, reason)| (v, applied, at, reason)))
}

fn limit_text(l: Option<Limit>) -> String {
    l.map(|l| l.0.to_string()).unwrap_or_default()
}

/// The `[alerts]` TOML of the weight-gain rules and schedules.
fn extras_toml(rules: &AlertRules) -> String {
    #[derive(serde::Serialize)]
    struct Extras<'a> {
        weight_gain: &'a [WeightGainRule],
        schedules: &'a [Schedule],
    }
    toml::to_string(&Extras {
        weight_gain: &rules.weight_gain,
        schedules: &rules.schedules,
    })
    .unwrap_or_default()
}

// One page, its parts passed as they are: a struct would only rename them.
#[allow(clippy::too_many_arguments)]
fn editor(
    session: &Session,
    patient: &str,
    shown: &AlertRules,
    history: &[LimitsVersion],
    ack: Option<&Ack>,
    errors: &[String],
    preview: Option<&[crate::alerts::AlertEvent]>,
    typed: Option<&HashMap<String, String>>,
) -> Markup {
    let current = history.first();
    // What the clinician typed wins over `shown` (a refused form comes back as they left it).
    let pick = |name: &str, default: String| -> String {
        typed.and_then(|t| t.get(name)).cloned().unwrap_or(default)
    };
    let body = html! {
        h1 { "Alert limits — " (patient) }
        p { a href={ "/patient/" (patient) } { "Back to the patient" } }
        @match current {
            Some(v) => p id="in-force" {
                "Version " (v.version) " by " (v.author) ", saved " (v.authored.to_rfc3339())
                ", effective " (v.effective.to_rfc3339()) ": " (v.reason)
            },
            None => p id="in-force" { "No version saved: the hub applies its hub.toml [alerts]." },
        }
        @match ack {
            Some((v, AckOutcome::Applied, at, _)) => p id="hub-ack" { "Version " (v) " applied on the hub at " (at) "." },
            Some((v, AckOutcome::Accepted, at, note)) => p id="hub-ack" {
                "Version " (v) " accepted by the hub at " (at) ", " (note.as_deref().unwrap_or("takes effect later")) "."
            },
            Some((0, AckOutcome::Rejected, at, reason)) => p.err id="hub-ack" {
                "A limits resource with no readable version was rejected by the hub at " (at) ": "
                (reason.as_deref().unwrap_or("no reason given"))
            },
            Some((v, AckOutcome::Rejected, at, reason)) => p.err id="hub-ack" {
                "Version " (v) " rejected by the hub at " (at) ": " (reason.as_deref().unwrap_or("no reason given"))
            },
            None => p.muted id="hub-ack" { "The hub has not acknowledged a version yet." },
        }
        @if !errors.is_empty() {
            div.err id="refusal" role="alert" {
                p { "Not saved: the limits are refused." }
                ul { @for e in errors { li { (e) } } }
            }
        }
        @if let Some(events) = preview {
            div id="preview" {
                h2 { "Preview: " (events.len()) " alerts raised or escalated over the last 30 days with these limits (not saved)" }
                ul { @for e in events { li { (e.at.to_rfc3339()) ": " (e.detail) } } }
            }
        }
        form method="post" action={ "/patient/" (patient) "/limits" } {
            input type="hidden" name="csrf" value=(session.csrf);
            table {
                tr { th { "kind" } th { "unit" } th { "low" } th { "high" } th { "critical low" } th { "critical high" } th { "hysteresis" } }
                @for k in KINDS {
                    @let r = shown.thresholds.get(&k);
                    tr {
                        td { (k.as_str()) }
                        td { input name={ (k.as_str()) ".unit" } size="6"
                            value=(pick(&format!("{}.unit", k.as_str()), r.map(|r| r.unit.ucum().to_owned()).unwrap_or_else(|| crate::alerts::rules::natural_unit(k).ucum().to_owned()))); }
                        @for f in LIMIT_FIELDS {
                            @let v = r.map(|r| match f {
                                "low" => limit_text(r.low),
                                "high" => limit_text(r.high),
                                "critical_low" => limit_text(r.critical_low),
                                "critical_high" => limit_text(r.critical_high),
                                _ => limit_text(r.hysteresis),
                            }).unwrap_or_default();
                            td { input name={ (k.as_str()) "." (f) } size="6" value=(pick(&format!("{}.{f}", k.as_str()), v)); }
                        }
                    }
                }
            }
            p { label { "Suppress repeats for (minutes) " input name="suppress_minutes" size="4" value=(pick("suppress_minutes", shown.suppress_minutes.to_string())); } }
            p { label { "Weight-gain rules and schedules ([alerts] TOML)" br;
                textarea name="extras" rows="8" cols="60" { (pick("extras", extras_toml(shown))) } } }
            p { label { "Takes effect (RFC 3339, empty: now) " input name="effective" size="26" value=(pick("effective", String::new())); } }
            p { label { "Why " input name="reason" size="60" required value=(pick("reason", String::new())); } }
            p { button type="submit" name="preview" value="1" { "Preview the last 30 days" } " "
                button type="submit" { "Save as a new version" } }
        }
        h2 { "Versions" }
        table id="versions" {
            tr { th { "version" } th { "saved" } th { "by" } th { "effective" } th { "why" } }
            @for v in history {
                tr { td { (v.version) } td { (v.authored.to_rfc3339()) } td { (v.author) }
                     td { (v.effective.to_rfc3339()) } td { (v.reason) } }
            }
        }
    };
    super::pages::page("Alert limits", Some(session), body)
}

pub(super) async fn limits_page(
    State(st): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    UrlPath(id): UrlPath<String>,
) -> Response {
    if !crate::clinic::registry::valid_id(&id) {
        return not_found("This patient id");
    }
    let history = match versions(&st, &id).await {
        Ok(h) => h,
        Err(r) => return r,
    };
    let ack = match hub_ack(&st, &id).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let now = jiff::Timestamp::now();
    let read = records::Action::Read;
    if let Err(r) = audited(&st, &session, peer, read, Some(&id), None, now).await {
        return r;
    }
    let current = history.first();
    let shown = current
        .map(|v| v.rules.clone())
        .unwrap_or_else(AlertRules::starting_points);
    editor(
        &session,
        &id,
        &shown,
        &history,
        ack.as_ref(),
        &[],
        None,
        None,
    )
    .into_response()
}

/// The form into rules; each problem named.
fn rules_of(form: &HashMap<String, String>) -> Result<AlertRules, Vec<String>> {
    let mut errs = Vec::new();
    let mut rules = AlertRules::default();
    for k in KINDS {
        let get = |f: &str| {
            form.get(&format!("{}.{f}", k.as_str()))
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        };
        let mut limits = [None; 5];
        for (slot, f) in limits.iter_mut().zip(LIMIT_FIELDS) {
            let t = get(f);
            if t.is_empty() {
                continue;
            }
            match t.parse() {
                Ok(d) => *slot = Some(Limit(d)),
                Err(e) => errs.push(format!("{k} {f}: {t:?} is not a number ({e})")),
            }
        }
        // Hysteresis alone is no rule.
        if limits.iter().take(4).all(Option::is_none) {
            continue;
        }
        let unit = match get("unit").parse() {
            Ok(u) => u,
            Err(e) => {
                errs.push(format!("{k} unit: {e}"));
                continue;
            }
        };
        let [low, high, critical_low, critical_high, hysteresis] = limits;
        rules.thresholds.insert(
            k,
            ThresholdRule {
                unit,
                low,
                high,
                critical_low,
                critical_high,
                hysteresis,
            },
        );
    }
    match form
        .get("suppress_minutes")
        .map(|s| s.trim())
        .unwrap_or("60")
        .parse::<u32>()
    {
        Ok(m) if m <= 7 * 24 * 60 => rules.suppress_minutes = m,
        _ => errs.push("suppress minutes: a whole number of minutes up to 10080 (7 days)".into()),
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Extras {
        #[serde(default)]
        weight_gain: Vec<WeightGainRule>,
        #[serde(default)]
        schedules: Vec<Schedule>,
    }
    match toml::from_str::<Extras>(form.get("extras").map(String::as_str).unwrap_or("")) {
        Ok(x) => {
            rules.weight_gain = x.weight_gain;
            rules.schedules = x.schedules;
        }
        Err(e) => errs.push(format!("weight-gain rules and schedules: {}", e.message())),
    }
    if errs.is_empty() {
        Ok(rules)
    } else {
        Err(errs)
    }
}

pub(super) async fn save_limits(
    State(st): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    UrlPath(id): UrlPath<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if !form
        .get("csrf")
        .is_some_and(|c| super::auth::same_token(c, &session.csrf))
    {
        return csrf_refused();
    }
    if !crate::clinic::registry::valid_id(&id) {
        return not_found("This patient id");
    }
    let history = match versions(&st, &id).await {
        Ok(h) => h,
        Err(r) => return r,
    };
    let now = jiff::Timestamp::now();
    let now_ms = UtcMillis(now.as_millisecond());
    let refuse = |rules: &AlertRules, errors: Vec<String>, ack| {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            editor(
                &session,
                &id,
                rules,
                &history,
                ack,
                &errors,
                None,
                Some(&form),
            ),
        )
            .into_response()
    };
    let reason = form.get("reason").map(|s| s.trim()).unwrap_or("");
    let effective = match form.get("effective").map(|s| s.trim()).unwrap_or("") {
        "" => Ok(now_ms),
        t => UtcMillis::parse_rfc3339(t).map_err(|e| {
            format!(
                "takes effect: {t:?} is not a date and time with an offset ({})",
                e.why
            )
        }),
    };
    let rules = rules_of(&form);
    let shown = rules.clone().unwrap_or_else(|_| {
        history
            .first()
            .map(|v| v.rules.clone())
            .unwrap_or_else(AlertRules::starting_points)
    });
    let mut errors = rules.clone().err().unwrap_or_default();
    if reason.is_empty() || reason.len() > 2000 {
        errors.push("why: say why the limits change (1 to 2000 characters)".into());
    }
    if let Err(e) = &effective {
        errors.push(e.clone());
    }
    let version = LimitsVersion {
        patient_id: id.clone(),
        version: history.first().map_or(1, |v| v.version.saturating_add(1)),
        rules: shown.clone(),
        effective: effective.unwrap_or(now_ms),
        authored: now_ms,
        author: session.user.clone(),
        reason: reason.to_owned(),
    };
    // The hub's own reading of what would be sent: the same refusals, the same reasons.
    let sr = version.to_service_request();
    match sr
        .as_ref()
        .map_err(|e| e.clone())
        .and_then(LimitsVersion::from_service_request)
    {
        Ok(_) => {}
        Err(crate::fhir::limits::LimitsError::Invalid(v)) => errors.extend(v),
        Err(e) => errors.push(e.to_string()),
    }
    if !errors.is_empty() {
        return refuse(&shown, errors, None);
    }
    if form.contains_key("preview") {
        let events = match preview(&st, &id, &shown).await {
            Ok(e) => e,
            Err(r) => return r,
        };
        return editor(
            &session,
            &id,
            &shown,
            &history,
            None,
            &[],
            Some(&events),
            Some(&form),
        )
        .into_response();
    }
    let Ok(sr) = sr else {
        return refuse(&shown, vec!["the limits could not be written".into()], None);
    };
    let action = records::Action::Limits;
    if let Err(r) = create_audited(&st, &session, peer, action, &id, sr, now).await {
        return r;
    }
    info!(version = version.version, "Alert limits version saved.");
    Redirect::to(&format!("/patient/{id}/limits")).into_response()
}
