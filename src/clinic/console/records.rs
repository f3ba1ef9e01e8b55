//! The FHIR resources the console writes: the acknowledgement of an alert (a `Task` whose focus
//! is the `DetectedIssue`), a patient's display label set by an admin (the `Patient`'s
//! `name[0].text`: the hubs send no demographics, the label is the clinic's) and the audit record
//! of every patient view, acknowledgement and label change (an `AuditEvent` in the IHE BALP style:
//! who, which patient, when, from where, what was done).

use super::worklist::{ACK_CODE, ACK_SYSTEM};
use serde_json::{json, Value};
use std::net::IpAddr;

/// The identifier system of console accounts (agents of the AuditEvents, authors of notes).
pub const USER_SYSTEM: &str = "https://vitals-hub.invalid/fhir/console-user";

/// Longest acknowledgement note.
pub const MAX_NOTE: usize = 2_000;

/// The acknowledgement of `issue` (`DetectedIssue/<id>`) of `patient` by `user`, with `note`.
pub fn ack_task(issue: &str, patient: &str, user: &str, note: &str, now: jiff::Timestamp) -> Value {
    let now = now.to_string();
    json!({
        "resourceType": "Task",
        "status": "completed",
        "intent": "order",
        "code": { "coding": [{ "system": ACK_SYSTEM, "code": ACK_CODE, "display": "Acknowledge alert" }] },
        "focus": { "reference": issue },
        "for": { "reference": format!("Patient/{patient}") },
        "authoredOn": now,
        "lastModified": now,
        "owner": { "identifier": { "system": USER_SYSTEM, "value": user } },
        "note": [{ "authorString": user, "time": now, "text": note }]
    })
}

/// Longest patient display label (characters).
pub const MAX_LABEL: usize = 64;

/// A label as typed, checked: trimmed, at most [`MAX_LABEL`] characters, no control characters;
/// `Ok(None)` for an empty one (the label is removed). `Err` says what to fix.
pub fn check_label(raw: &str) -> Result<Option<String>, String> {
    let l = raw.trim();
    if l.is_empty() {
        return Ok(None);
    }
    if l.chars().count() > MAX_LABEL {
        return Err(format!(
            "A label is at most {MAX_LABEL} characters; shorten it."
        ));
    }
    if l.chars().any(char::is_control) {
        return Err("A label is one line of text without control characters.".into());
    }
    Ok(Some(l.to_owned()))
}

/// The display label of a Patient resource (`name[0].text`).
pub fn label_of(patient: &Value) -> Option<String> {
    patient
        .get("name")?
        .get(0)?
        .get("text")?
        .as_str()
        .map(str::to_owned)
}

/// The Patient `id` as the clinic's FHIR server holds it (`existing`, or a new one), with the
/// display `label` as its only name (`name[0].text`, use `usual`), or no name for `None`. Every
/// other element of an existing Patient is kept.
pub fn labelled_patient(existing: Option<Value>, id: &str, label: Option<&str>) -> Value {
    let mut p = match existing {
        Some(Value::Object(m)) => Value::Object(m),
        _ => json!({ "resourceType": "Patient", "id": id }),
    };
    if let Value::Object(m) = &mut p {
        m.insert("resourceType".into(), json!("Patient"));
        m.insert("id".into(), json!(id));
        // The server's version bookkeeping is its own.
        m.remove("meta");
        match label {
            Some(l) => {
                m.insert("name".into(), json!([{ "use": "usual", "text": l }]));
            }
            None => {
                m.remove("name");
            }
        }
    }
    p
}

/// What an audited access did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A patient page was read.
    Read,
    /// An alert was acknowledged (a Task created).
    Acknowledge,
    /// The worklist was shown: a search across every patient (no one patient entity).
    Worklist,
    /// A patient's display label was set or removed (the Patient updated).
    Label,
    /// A new alert-limits version was saved for the patient (a ServiceRequest created).
    Limits,
}

/// The AuditEvent of `user` from `addr` doing `action` on `patient`'s record (and `what`, the
/// resource created, for an acknowledgement).
pub fn audit(
    action: Action,
    user: &str,
    addr: IpAddr,
    patient: Option<&str>,
    what: Option<&str>,
    now: jiff::Timestamp,
) -> Value {
    let (sub, code) = match action {
        Action::Read => ("read", "R"),
        Action::Acknowledge => ("create", "C"),
        Action::Worklist => ("search-type", "E"),
        Action::Label => ("update", "U"),
        Action::Limits => ("create", "C"),
    };
    let mut entity: Vec<Value> = patient.into_iter().map(|patient| json!({
        "what": { "reference": format!("Patient/{patient}") },
        "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1", "display": "Person" },
        "role": { "system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient" }
    })).collect();
    if let Some(w) = what {
        entity.push(json!({
            "what": { "reference": w },
            "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object" },
            "role": { "system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "4", "display": "Domain Resource" }
        }));
    }
    let mut event = json!({
        "resourceType": "AuditEvent",
        "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "Restful Operation" },
        "subtype": [{ "system": "http://hl7.org/fhir/restful-interaction", "code": sub }],
        "action": code,
        "recorded": now.to_string(),
        "outcome": "0",
        "agent": [{
            "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP", "display": "information recipient" }] },
            "who": { "identifier": { "system": USER_SYSTEM, "value": user } },
            "requestor": true,
            "network": { "address": addr.to_string(), "type": "2" }
        }],
        "source": {
            "observer": { "display": "vitals-clinic console" },
            "type": [{ "system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "3", "display": "Web Server" }]
        }
    });
    // FHIR allows no empty arrays: a worklist view names no patient entity.
    if let (false, Some(m)) = (entity.is_empty(), event.as_object_mut()) {
        m.insert("entity".into(), Value::Array(entity));
    }
    event
}
