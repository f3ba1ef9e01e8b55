//! A hub's security report (`store::security`: events of one code aggregated over a window) as
//! an `AuditEvent` in the style of IHE BALP's security alert: DICOM 110113 "Security Alert" with
//! the hub's own code in `subtype`, the hub's PhgDevice as the one agent and as the source's
//! observer, the window in `period`, and one `entity` (a system object) whose `detail` carries
//! the count and the event kinds counted. No PHI: no patient reference, no device address, no
//! reading, no event detail text (README "Security events upstream").

use super::bundle::{entry, AlertInput, Builder, EntryInfo, EntryKind};
use super::identifier::if_none_exist;
use crate::model::UtcMillis;
use serde_json::{json, Value as Json};

/// The code system of the hub's security codes (`AuditEvent.subtype`; the list is in
/// `store::security::CODES` and README "Security events upstream").
pub const CODE_SYSTEM: &str = "urn:vitals-hub:security-event";

/// The identifier system of a report (`entity.what.identifier`, the conditional create's key).
pub const REPORT_IDENTIFIER_SYSTEM: &str = "https://vitals-hub.invalid/fhir/security-report";

/// Codes that record something done, not something refused or broken: outcome 0 (success).
const DONE: [&str; 7] = [
    "config-change",
    "key-rotation",
    "certificate-renewal",
    "software-version",
    "commissioning",
    "limits-change",
    "wipe",
];

impl Builder<'_, '_> {
    /// `report` is the `security_report` object of an outbox payload.
    pub(super) fn security_report(&mut self, a: &AlertInput<'_>, report: &Json) {
        let url = self.urn();
        let resource = audit_event(report, &self.hub_ref, a.stable_key);
        let cond = if_none_exist(REPORT_IDENTIFIER_SYSTEM, a.stable_key);
        self.push(
            entry(&url, resource, "AuditEvent", cond),
            EntryInfo {
                kind: EntryKind::Alert,
                tags: vec![a.tag],
                identifier: a.stable_key.to_owned(),
            },
        );
    }
}

/// The AuditEvent of one report, the hub's Device being `hub_ref`.
pub fn audit_event(report: &Json, hub_ref: &str, stable_key: &str) -> Json {
    let code = report
        .get("code")
        .and_then(Json::as_str)
        .unwrap_or("other-security");
    let count = report.get("count").and_then(Json::as_u64).unwrap_or(0);
    let time = |k: &str| {
        report
            .get(k)
            .and_then(Json::as_i64)
            .map(|ms| UtcMillis(ms).to_rfc3339())
            .unwrap_or_default()
    };
    let kinds: Vec<&str> = report
        .get("kinds")
        .and_then(Json::as_array)
        .map(|a| a.iter().filter_map(Json::as_str).collect())
        .unwrap_or_default();
    let outcome = if DONE.contains(&code) { "0" } else { "4" };
    json!({
        "resourceType": "AuditEvent",
        "type": { "system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110113",
                  "display": "Security Alert" },
        "subtype": [{ "system": CODE_SYSTEM, "code": code }],
        "action": "E",
        "period": { "start": time("first_at"), "end": time("last_at") },
        "recorded": time("last_at"),
        "outcome": outcome,
        "outcomeDesc": format!("{count} {code} event(s) on the hub"),
        "agent": [{
            "type": { "coding": [{ "system": "http://dicom.nema.org/resources/ontology/DCM",
                                   "code": "110153", "display": "Source Role ID" }] },
            "who": { "reference": hub_ref },
            "requestor": false
        }],
        "source": {
            "observer": { "reference": hub_ref },
            "type": [{ "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                       "code": "2", "display": "Data Interface" }]
        },
        "entity": [{
            "what": { "identifier": { "system": REPORT_IDENTIFIER_SYSTEM, "value": stable_key } },
            "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                      "code": "2", "display": "System Object" },
            "detail": [
                { "type": "count", "valueString": count.to_string() },
                { "type": "kinds", "valueString": kinds.join(",") }
            ]
        }]
    })
}
