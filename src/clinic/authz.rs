//! The per-hub authorisation rules, shared by the embedded ingest ([`super::ingest`], storing in
//! the clinic's SQLite store) and the authorising front for an external FHIR server
//! ([`super::front`]): what a hub may write, which references an entry may carry, and the security
//! `AuditEvent` a refusal leaves.
//!
//! The rules are pure (values in, verdict out); proving that a hub *owns* a resource it refers to
//! by server id is left to the caller, which knows where resources live: [`entry_refs`] returns
//! those references and the caller checks each (a SQL lookup in the embedded store, a read of the
//! resource's hub tag at the external server).

use super::db::TxError;
use super::registry::{HubRecord, HUB_ID_SYSTEM};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::net::SocketAddr;

/// The resource types a hub may create (never `Patient`: the clinic creates patients).
pub const WRITABLE: [&str; 5] = [
    "Observation",
    "Device",
    "Communication",
    "DetectedIssue",
    "AuditEvent",
];

/// The most bytes of a hub's `AuditEvent` (its security report is a few hundred).
pub const MAX_AUDIT_EVENT: usize = 4096;

/// A hub's `AuditEvent` is only about the hub itself: exactly one agent, whose `who` is the
/// source's `observer`, a `Device` (`Device/<id>` or an entry of the same Bundle); no other
/// reference at all (no patient, no other resource); at most [`MAX_AUDIT_EVENT`] bytes. Returns
/// the Device reference (the caller proves it is the hub's own PhgDevice).
pub fn audit_event_agent(resource: &Value, i: usize) -> Result<&str, TxError> {
    let refuse = |why: &str| {
        TxError::Forbidden(format!(
            "entry {i} (AuditEvent): {why}; a hub reports only about itself: one agent and the \
             source's observer, both the hub's own Device"
        ))
    };
    if resource.to_string().len() > MAX_AUDIT_EVENT {
        return Err(TxError::Invalid(format!(
            "entry {i} (AuditEvent): more than {MAX_AUDIT_EVENT} bytes"
        )));
    }
    let agents = resource
        .get("agent")
        .and_then(Value::as_array)
        .ok_or_else(|| refuse("no agent"))?;
    if agents.len() != 1 {
        return Err(refuse("not exactly one agent"));
    }
    let who = agents
        .first()
        .and_then(|a| a.pointer("/who/reference"))
        .and_then(Value::as_str)
        .ok_or_else(|| refuse("the agent is not a reference"))?;
    let observer = resource
        .pointer("/source/observer/reference")
        .and_then(Value::as_str)
        .ok_or_else(|| refuse("the source's observer is not a reference"))?;
    if who != observer {
        return Err(refuse("the agent is not the source's observer"));
    }
    if !(who.starts_with("Device/") || who.starts_with("urn:uuid:")) {
        return Err(refuse("the agent is not a Device"));
    }
    let mut refs = Vec::new();
    references(resource, &mut refs);
    if refs.iter().any(|r| *r != who) {
        return Err(refuse("it refers to something other than the hub"));
    }
    Ok(who)
}

/// Every `reference` string in a resource.
pub fn references<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("reference", Value::String(s)) => out.push(s),
                    _ => references(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| references(x, out)),
        _ => {}
    }
}

/// A FHIR logical id (`[A-Za-z0-9\-\.]{1,64}`).
pub fn valid_logical_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
}

/// What a hub may write: no `Patient`; every reference is the hub's own patient, a contained
/// resource (`#…`), an entry of the same Bundle (`urn:uuid:` fullUrl), or `Type/id` of a writable
/// type — returned as `(type, id)` for the caller to prove the hub owns it. Anything else (another
/// patient, an absolute URL, a conditional reference) is refused.
pub fn entry_refs(
    patient: &str,
    ty: &str,
    resource: &Value,
    i: usize,
    full_urls: &HashSet<&str>,
) -> Result<Vec<(String, String)>, TxError> {
    if ty == "Patient" {
        return Err(TxError::Forbidden(format!(
            "entry {i}: a hub does not write Patient resources"
        )));
    }
    if ty == "AuditEvent" {
        audit_event_agent(resource, i)?;
    }
    let mut refs = Vec::new();
    references(resource, &mut refs);
    let own_patient = format!("Patient/{patient}");
    let mut owned = Vec::new();
    for r in refs {
        if r.starts_with('#') || r == own_patient {
            continue;
        }
        if r.starts_with("urn:uuid:") {
            if full_urls.contains(r) {
                continue;
            }
            return Err(TxError::Invalid(format!(
                "entry {i}: reference {r} is not an entry of this Bundle"
            )));
        }
        match r.split_once('/') {
            // Never to an AuditEvent: a hub writes its own, but nothing it writes refers to one.
            Some((rty, rid))
                if WRITABLE.contains(&rty) && rty != "AuditEvent" && valid_logical_id(rid) =>
            {
                owned.push((rty.to_owned(), rid.to_owned()));
            }
            _ => {
                return Err(TxError::Forbidden(format!(
                    "entry {i} ({ty}): refers to a patient or resource this hub does not own"
                )))
            }
        }
    }
    Ok(owned)
}

/// The refusal of a reference the caller found the hub does not own.
pub fn not_owned(i: usize, ty: &str) -> TxError {
    TxError::Forbidden(format!(
        "entry {i} ({ty}): refers to a patient or resource this hub does not own"
    ))
}

/// A query parameter, percent-decoded (the first of that name).
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| crate::fhir::identifier::percent_decode(v))
    })
}

/// A refused request (`METHOD /path`) as the log may show it: the method and the resource type,
/// never an id (a path may hold a patient id: `GET /fhir/Patient/<id>`).
pub fn loggable(what: &str) -> String {
    const KNOWN: [&str; 7] = [
        "Observation",
        "Device",
        "Patient",
        "Communication",
        "DetectedIssue",
        "AuditEvent",
        "metadata",
    ];
    let (method, path) = what.split_once(' ').unwrap_or((what, ""));
    let method = if method.len() <= 8 { method } else { "?" };
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.iter().position(|s| KNOWN.contains(s)) {
        Some(i) => format!(
            "{method} {}{}",
            segs.get(i).copied().unwrap_or(""),
            if segs.len() > i + 1 { "/…" } else { "" }
        ),
        None => format!("{method} (another path)"),
    }
}

/// A security `AuditEvent` (DICOM 110113 Security Alert) for a refused request.
pub fn audit_event(
    hub: Option<&HubRecord>,
    fingerprint: Option<&str>,
    peer: &SocketAddr,
    what: &str,
    why: &str,
    action: &str,
) -> Value {
    let who = match hub {
        Some(h) => json!({
            "identifier": { "system": HUB_ID_SYSTEM, "value": h.hub_id },
            "display": format!("hub {}", h.hub_id)
        }),
        None => json!({ "display": "unidentified client" }),
    };
    json!({
        "resourceType": "AuditEvent",
        "type": { "system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110113",
                  "display": "Security Alert" },
        "action": action,
        "recorded": jiff::Timestamp::now().to_string(),
        "outcome": "4",
        "outcomeDesc": why,
        "agent": [{
            "type": { "coding": [{ "system": "http://dicom.nema.org/resources/ontology/DCM",
                                   "code": "110153", "display": "Source Role ID" }] },
            "who": who,
            "altId": fingerprint,
            "requestor": true,
            "network": { "address": peer.ip().to_string(), "type": "2" }
        }],
        "source": {
            "observer": { "display": "vitals-clinic" },
            "type": [{ "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                       "code": "4", "display": "Application Server" }]
        },
        "entity": [{ "what": { "display": what }, "description": why }]
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn logged_requests_carry_no_ids() {
        assert_eq!(loggable("GET /fhir/Patient/pat-0001"), "GET Patient/…");
        assert_eq!(loggable("GET /fhir/Observation"), "GET Observation");
        assert_eq!(loggable("POST /fhir"), "POST (another path)");
        assert_eq!(loggable("GET /pat-0001/x"), "GET (another path)");
    }

    #[test]
    fn references_of_an_entry_are_confined_to_the_hub() {
        let urls: HashSet<&str> = ["urn:uuid:a"].into_iter().collect();
        let ok = json!({"subject": {"reference": "Patient/P1"},
                        "device": {"reference": "urn:uuid:a"},
                        "derivedFrom": [{"reference": "Observation/x-1"}],
                        "contained": [], "focus": [{"reference": "#c"}]});
        assert_eq!(
            entry_refs("P1", "Observation", &ok, 0, &urls).unwrap(),
            vec![("Observation".to_owned(), "x-1".to_owned())]
        );
        for bad in [
            json!({"subject": {"reference": "Patient/P2"}}),
            json!({"subject": {"reference": "https://elsewhere/fhir/Patient/P1"}}),
            json!({"subject": {"reference": "Patient?identifier=x"}}),
            json!({"device": {"reference": "Device/../Patient/P2"}}),
            json!({"device": {"reference": "AuditEvent/1"}}),
        ] {
            assert!(matches!(
                entry_refs("P1", "Observation", &bad, 3, &urls),
                Err(TxError::Forbidden(_))
            ));
        }
        assert!(matches!(
            entry_refs(
                "P1",
                "Observation",
                &json!({"device": {"reference": "urn:uuid:b"}}),
                0,
                &urls
            ),
            Err(TxError::Invalid(_))
        ));
        assert!(matches!(
            entry_refs("P1", "Patient", &json!({}), 0, &urls),
            Err(TxError::Forbidden(_))
        ));
    }
}
