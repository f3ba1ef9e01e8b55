//! Parsing the server's answers: transaction-response Bundles and OperationOutcomes.
//!
//! Input from the network is never trusted: every field is optional until checked, and a response
//! that does not account for every request entry is unusable (the uplink then acks nothing).

use super::FhirError;
use serde_json::Value as Json;

/// The server's answer for one request entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryOutcome {
    /// The HTTP status from `response.status` ("201", "201 Created", "200 OK").
    pub status: u16,
    /// `response.location`, e.g. `Observation/17/_history/1`.
    pub location: Option<String>,
    /// Diagnostics of an OperationOutcome in `response.outcome`, if any (may echo PHI: not logged).
    pub outcome: Option<String>,
}

impl EntryOutcome {
    /// 200 (already existed) or 201 (created): the entry is at the server.
    pub fn is_stored(&self) -> bool {
        self.status == 200 || self.status == 201
    }

    /// `Type/id` from the location (history suffix removed; a full URL's base removed).
    pub fn logical_ref(&self) -> Option<String> {
        let loc = self.location.as_deref()?;
        let path = loc.split("/_history/").next().unwrap_or(loc);
        let parts: Vec<&str> = path.trim_end_matches('/').rsplit('/').take(2).collect();
        match parts.as_slice() {
            [id, ty] if !id.is_empty() && !ty.is_empty() => Some(format!("{ty}/{id}")),
            _ => None,
        }
    }
}

fn status_code(text: &str) -> Option<u16> {
    let digits: String = text
        .trim()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    if digits.len() != 3 {
        return None;
    }
    digits.parse().ok().filter(|c| (100..=599).contains(c))
}

/// Summary text of an OperationOutcome: severity, code and diagnostics of each issue.
pub fn parse_operation_outcome(v: &Json) -> Option<String> {
    if v.get("resourceType")?.as_str()? != "OperationOutcome" {
        return None;
    }
    let issues = v.get("issue")?.as_array()?;
    let parts: Vec<String> = issues
        .iter()
        .map(|i| {
            let f = |k: &str| i.get(k).and_then(Json::as_str).unwrap_or("").to_owned();
            let text = i
                .get("details")
                .and_then(|d| d.get("text"))
                .and_then(Json::as_str)
                .unwrap_or("");
            format!(
                "{} {}: {}{}",
                f("severity"),
                f("code"),
                f("diagnostics"),
                text
            )
        })
        .collect();
    Some(parts.join("; "))
}

/// FHIR's IssueType codes (<http://hl7.org/fhir/issue-type>): the only server words a refusal
/// report may carry off the hub, since they are a fixed vocabulary that cannot echo PHI.
pub const ISSUE_TYPES: &[&str] = &[
    "invalid",
    "structure",
    "required",
    "value",
    "invariant",
    "security",
    "login",
    "unknown",
    "expired",
    "forbidden",
    "suppressed",
    "processing",
    "not-supported",
    "duplicate",
    "multiple-matches",
    "not-found",
    "deleted",
    "too-long",
    "code-invalid",
    "extension",
    "too-costly",
    "business-rule",
    "conflict",
    "transient",
    "lock-error",
    "no-store",
    "exception",
    "timeout",
    "incomplete",
    "throttled",
    "informational",
];

/// The issue type of the first issue in a text made by [`parse_operation_outcome`]
/// (`"<severity> <code>: …"`), when it is one of [`ISSUE_TYPES`].
pub fn issue_type_of_outcome_text(text: &str) -> Option<&'static str> {
    let code = text.split_whitespace().nth(1)?.trim_end_matches(':');
    ISSUE_TYPES.iter().copied().find(|c| *c == code)
}

/// Parse a transaction-response for a request of `expected` entries.
pub fn parse_transaction_response(
    body: &[u8],
    expected: usize,
) -> Result<Vec<EntryOutcome>, FhirError> {
    let v: Json = serde_json::from_slice(body)
        .map_err(|e| FhirError::BadResponse(format!("not JSON ({e})")))?;
    if v.get("resourceType").and_then(Json::as_str) != Some("Bundle") {
        return Err(FhirError::BadResponse("not a Bundle".into()));
    }
    match v.get("type").and_then(Json::as_str) {
        Some("transaction-response") | Some("batch-response") => {}
        other => {
            return Err(FhirError::BadResponse(format!(
                "Bundle.type is {other:?}, expected transaction-response"
            )))
        }
    }
    let entries = match v.get("entry") {
        Some(Json::Array(a)) => a.as_slice(),
        None if expected == 0 => &[],
        _ => return Err(FhirError::BadResponse("no entry array".into())),
    };
    if entries.len() != expected {
        return Err(FhirError::BadResponse(format!(
            "{} response entries for {expected} request entries",
            entries.len()
        )));
    }
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let r = e
                .get("response")
                .ok_or_else(|| FhirError::BadResponse(format!("entry {i} has no response")))?;
            let status = r
                .get("status")
                .and_then(Json::as_str)
                .and_then(status_code)
                .ok_or_else(|| FhirError::BadResponse(format!("entry {i} has no usable status")))?;
            Ok(EntryOutcome {
                status,
                location: r.get("location").and_then(Json::as_str).map(str::to_owned),
                outcome: r.get("outcome").and_then(parse_operation_outcome),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_types_are_read_from_outcome_text_and_nothing_else() {
        let v = serde_json::json!({"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "duplicate", "diagnostics": "Patient John Doe exists"}]});
        let text = parse_operation_outcome(&v).unwrap();
        assert_eq!(issue_type_of_outcome_text(&text), Some("duplicate"));
        assert_eq!(issue_type_of_outcome_text("error John: Doe"), None);
        assert_eq!(issue_type_of_outcome_text(""), None);
    }

    #[test]
    fn statuses_bare_and_hapi_style() {
        let body = br#"{"resourceType":"Bundle","type":"transaction-response","entry":[
            {"response":{"status":"201","location":"Observation/1/_history/1"}},
            {"response":{"status":"201 Created","location":"https://x/fhir/Device/7/_history/1"}},
            {"response":{"status":"200 OK","location":"Observation/3"}}]}"#;
        let r = parse_transaction_response(body, 3).unwrap();
        assert_eq!(
            r.iter().map(|e| e.status).collect::<Vec<_>>(),
            [201, 201, 200]
        );
        assert_eq!(r[1].logical_ref().unwrap(), "Device/7");
        assert_eq!(r[0].logical_ref().unwrap(), "Observation/1");
        assert!(parse_transaction_response(body, 2).is_err());
        assert!(parse_transaction_response(&body[..40], 3).is_err());
        assert!(parse_transaction_response(br#"{"resourceType":"Bundle","type":"transaction-response","entry":[{"response":{"status":"OK"}}]}"#, 1).is_err());
    }
}
