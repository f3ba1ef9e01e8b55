//! Alerts: a clinical alert event becomes a `DetectedIssue`, a notice about the hub itself a
//! `Communication`.

use super::bundle::{entry, AlertInput, Builder, EntryInfo, EntryKind};
use super::codes;
use super::identifier::if_none_exist;
use crate::model::UtcMillis;
use serde_json::{json, Value as Json};

impl Builder<'_, '_> {
    pub(super) fn alert(&mut self, a: &AlertInput<'_>) {
        if let Some(report) = a.payload.get("security_report") {
            self.security_report(a, report);
            return;
        }
        let url = self.urn();
        let (mut resource, rtype) = match a.payload.get("alert") {
            Some(event) => (self.detected_issue(a, event), "DetectedIssue"),
            None => (self.hub_notice(a), "Communication"),
        };
        // An alert raised on test data says so (`"test": true` in its payload or its event).
        let test = [Some(a.payload), a.payload.get("alert")]
            .into_iter()
            .flatten()
            .any(|v| v.get("test").and_then(Json::as_bool) == Some(true));
        if test {
            super::bundle::add_htest(&mut resource);
        }
        let cond = if_none_exist(codes::ALERT_IDENTIFIER_SYSTEM, a.stable_key);
        self.push(
            entry(&url, resource, rtype, cond),
            EntryInfo {
                kind: EntryKind::Alert,
                tags: vec![a.tag],
                identifier: a.stable_key.to_owned(),
            },
        );
    }

    /// A clinical alert event (threshold, trend, missed measurement) as a `DetectedIssue`: the
    /// resource a clinic server can search by patient, with the triggering Observations in
    /// `implicated` (by their conditional-create identifiers, so they need not be in this bundle)
    /// and a resolution as `mitigation`.
    fn detected_issue(&self, a: &AlertInput<'_>, event: &Json) -> Json {
        let text = |k: &str| {
            event
                .get(k)
                .and_then(Json::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let severity = match text("severity").as_str() {
            "critical_low" | "critical_high" => "high",
            "low" | "high" => "moderate",
            _ => "low",
        };
        let subject = event.get("subject").cloned().unwrap_or(Json::Null);
        let rule = match subject.get("type").and_then(Json::as_str) {
            Some("threshold") => format!(
                "threshold-{}",
                subject
                    .get("kind")
                    .and_then(Json::as_str)
                    .unwrap_or("unknown")
            ),
            Some("weight_gain") => format!(
                "weight-gain-{}h",
                subject
                    .get("window_hours")
                    .and_then(Json::as_u64)
                    .unwrap_or(0)
            ),
            Some("overdue") => "overdue-measurement".to_owned(),
            _ => "other".to_owned(),
        };
        let at = event
            .get("at")
            .and_then(Json::as_i64)
            .map(|ms| UtcMillis(ms).to_rfc3339())
            .unwrap_or_default();
        let implicated: Vec<Json> = a
            .payload
            .get("observations")
            .and_then(Json::as_array)
            .map(|v| {
                v.iter()
                    .map(|id| json!({ "type": "Observation", "identifier": id }))
                    .collect()
            })
            .unwrap_or_default();
        let mut m = serde_json::Map::new();
        m.insert("resourceType".into(), json!("DetectedIssue"));
        m.insert(
            "identifier".into(),
            json!([
                { "system": codes::ALERT_IDENTIFIER_SYSTEM, "value": a.stable_key },
                { "system": codes::ALERT_EPISODE_SYSTEM, "value": text("episode") }
            ]),
        );
        m.insert("status".into(), json!("final"));
        m.insert(
            "code".into(),
            json!({
                "coding": [{ "system": codes::ALERT_RULE_SYSTEM, "code": rule }],
                "text": format!("{} {}", text("transition"), text("severity"))
            }),
        );
        m.insert("severity".into(), json!(severity));
        m.insert(
            "patient".into(),
            json!({ "reference": format!("Patient/{}", self.ctx.patient_id) }),
        );
        m.insert("identifiedDateTime".into(), json!(at));
        m.insert("author".into(), json!({ "reference": self.hub_ref }));
        if !implicated.is_empty() {
            m.insert("implicated".into(), Json::Array(implicated));
        }
        match event.get("late").filter(|l| !l.is_null()) {
            // A late reading: evaluated at its measurement time (identifiedDateTime), and said so.
            Some(late) => {
                let minutes = late
                    .get("late_by_minutes")
                    .and_then(Json::as_i64)
                    .unwrap_or(0);
                let by = late
                    .get("late_by")
                    .and_then(Json::as_str)
                    .unwrap_or_default();
                let received = late
                    .get("received_at")
                    .and_then(Json::as_i64)
                    .map(|ms| UtcMillis(ms).to_rfc3339())
                    .unwrap_or_default();
                m.insert(
                    "extension".into(),
                    json!([{ "url": codes::LATE_BY_EXTENSION,
                             "valueDuration": { "value": minutes, "unit": "min",
                                                "system": "http://unitsofmeasure.org", "code": "min" } }]),
                );
                m.insert(
                    "detail".into(),
                    json!(format!(
                        "LATE: measured at {at}, received {by} later ({received}). {}",
                        text("detail")
                    )),
                );
            }
            None => {
                m.insert("detail".into(), json!(text("detail")));
            }
        }
        if text("transition") == "resolved" {
            m.insert(
                "mitigation".into(),
                json!([{ "action": { "text": "resolved: back within limits" }, "date": at }]),
            );
        }
        Json::Object(m)
    }

    /// A notice about the hub itself (certificate expiring, an upload the clinic refused).
    fn hub_notice(&self, a: &AlertInput<'_>) -> Json {
        let text = serde_json::to_string(&notice_payload(a.payload)).unwrap_or_default();
        // The technician's commissioning report travels the same way, as routine news.
        let (category, priority) = if a.payload.get("commissioning_report").is_some() {
            ("vitals-hub commissioning report", "routine")
        } else {
            ("vitals-hub alert", "urgent")
        };
        json!({
            "resourceType": "Communication",
            "identifier": [{ "system": codes::ALERT_IDENTIFIER_SYSTEM, "value": a.stable_key }],
            "status": "completed",
            "category": [{ "text": category }],
            "priority": priority,
            "subject": { "reference": format!("Patient/{}", self.ctx.patient_id) },
            "sender": { "reference": self.hub_ref },
            "payload": [{ "contentString": text }]
        })
    }
}

/// What of a hub notice leaves the hub. A refused upload's notice carries its status, outbox ids
/// and a reason code only: notices queued by older versions held the server's refusal text,
/// which may echo PHI, and are cut down here too.
fn notice_payload(payload: &Json) -> Json {
    if payload.get("kind").and_then(Json::as_str) != Some("upload_rejected") {
        return payload.clone();
    }
    let reason = payload
        .get("reason")
        .and_then(Json::as_str)
        .and_then(|r| {
            super::response::ISSUE_TYPES
                .iter()
                .chain(["precondition-failed", "too-large", "rejected"].iter())
                .find(|c| **c == r)
        })
        .copied()
        .unwrap_or("rejected");
    json!({
        "kind": "upload_rejected",
        "status": payload.get("status").cloned().unwrap_or(Json::Null),
        "outbox": payload.get("outbox").cloned().unwrap_or(Json::Null),
        "reason": reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_notice_never_carries_the_servers_text() {
        let old = json!({"kind": "upload_rejected", "status": 400, "outbox": [7],
            "reason": "the clinic server answered HTTP 400: error invalid: Patient John Doe"});
        let text = notice_payload(&old).to_string();
        assert!(!text.contains("John"), "{text}");
        assert_eq!(
            notice_payload(&old),
            json!({"kind": "upload_rejected", "status": 400, "outbox": [7], "reason": "rejected"})
        );
        let new =
            json!({"kind": "upload_rejected", "status": 409, "outbox": [8], "reason": "conflict"});
        assert_eq!(notice_payload(&new), new);
        let other = json!({"kind": "client_certificate_expiring", "days_left": 3});
        assert_eq!(notice_payload(&other), other);
    }
}
