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

    /// `Type/id` from the location (history suffix removed; a full URL's base removed), only when
    /// it is a valid FHIR reference: a resource type name and an id of `[A-Za-z0-9\-\.]{1,64}`.
    pub fn logical_ref(&self) -> Option<String> {
        let (ty, id) = split_location(self.location.as_deref()?)?;
        Some(format!("{ty}/{id}"))
    }
}

/// A FHIR logical id: `[A-Za-z0-9\-\.]{1,64}`.
pub fn is_fhir_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// A resource type name as FHIR spells them: an ASCII capital, then letters (at most 64).
fn is_type_name(ty: &str) -> bool {
    (1..=64).contains(&ty.len())
        && ty.bytes().next().is_some_and(|b| b.is_ascii_uppercase())
        && ty.bytes().all(|b| b.is_ascii_alphabetic())
}

/// `(Type, id)` of a `location` (`Type/id`, `Type/id/_history/v`, or either after a base URL),
/// when both are valid; `None` otherwise.
pub fn split_location(loc: &str) -> Option<(&str, &str)> {
    if loc.len() > MAX_KEPT_TEXT {
        return None;
    }
    let path = match loc.split_once("/_history/") {
        Some((p, v)) if is_fhir_id(v) => p,
        Some(_) => return None,
        None => loc,
    };
    let mut parts = path.rsplit('/');
    let id = parts.next()?;
    let ty = parts.next()?;
    (is_fhir_id(id) && is_type_name(ty)).then_some((ty, id))
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

/// The most bytes of anything a server says that the hub keeps (reasons, diagnostics, locations):
/// longer texts are cut at a character boundary with `…` before they are stored or alerted.
pub const MAX_KEPT_TEXT: usize = 1024;

/// The most issues of one OperationOutcome the hub reads.
pub const MAX_ISSUES: usize = 8;

/// `text` cut to at most `max` bytes at a character boundary (`…` marks the cut).
pub fn truncate_text(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", text.get(..end).unwrap_or(""))
}

const SEVERITIES: &[&str] = &["fatal", "error", "warning", "information"];

/// Summary text of an OperationOutcome: `"<severity> <code>[, <severity> <code>…]: <diagnostics>"`.
/// Severities and codes are checked against FHIR's value sets (anything else reads `?`), so the
/// part before the first `": "` ([`outcome_codes`]) is a fixed vocabulary that cannot echo PHI;
/// the diagnostics (which may) follow, and the whole is cut to [`MAX_KEPT_TEXT`].
pub fn parse_operation_outcome(v: &Json) -> Option<String> {
    if v.get("resourceType")?.as_str()? != "OperationOutcome" {
        return None;
    }
    let issues = v.get("issue")?.as_array()?;
    let mut codes = Vec::new();
    let mut texts = Vec::new();
    for i in issues.iter().take(MAX_ISSUES) {
        let word = |k: &str, set: &[&'static str]| {
            i.get(k)
                .and_then(Json::as_str)
                .and_then(|w| set.iter().copied().find(|c| *c == w))
                .unwrap_or("?")
        };
        codes.push(format!(
            "{} {}",
            word("severity", SEVERITIES),
            word("code", ISSUE_TYPES)
        ));
        for t in [
            i.get("diagnostics").and_then(Json::as_str),
            i.get("details")
                .and_then(|d| d.get("text"))
                .and_then(Json::as_str),
        ]
        .into_iter()
        .flatten()
        {
            texts.push(truncate_text(t, MAX_KEPT_TEXT));
        }
    }
    if codes.is_empty() {
        codes.push("? ?".into());
    }
    Some(truncate_text(
        &format!("{}: {}", codes.join(", "), texts.join(" | ")),
        MAX_KEPT_TEXT,
    ))
}

/// The severities and issue codes of a text made by [`parse_operation_outcome`] (`"error
/// invalid, warning processing"`): fixed vocabularies only, safe for events, `status` and alerts.
pub fn outcome_codes(text: &str) -> String {
    let head = text.split(": ").next().unwrap_or("");
    head.split(", ")
        .map(|pair| {
            let mut w = pair.split_whitespace();
            let sev = w.next().and_then(|s| SEVERITIES.iter().find(|c| **c == s));
            let code = w.next().and_then(|s| ISSUE_TYPES.iter().find(|c| **c == s));
            format!(
                "{} {}",
                sev.copied().unwrap_or("?"),
                code.copied().unwrap_or("?")
            )
        })
        .take(MAX_ISSUES)
        .collect::<Vec<_>>()
        .join(", ")
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
    let code = text
        .split_whitespace()
        .nth(1)?
        .trim_end_matches(':')
        .trim_end_matches(',');
    ISSUE_TYPES.iter().copied().find(|c| *c == code)
}

/// Parse a transaction-response for a request of `expected` entries.
pub fn parse_transaction_response(
    body: &[u8],
    expected: usize,
) -> Result<Vec<EntryOutcome>, FhirError> {
    parse_response(body, expected, None)
}

/// Parse a transaction-response for a request whose entries carry these resource types: the
/// `location` of each stored entry must be a `<Type>/<id>` of the type sent (a FHIR id), else the
/// whole response is unusable.
pub fn parse_transaction_response_for(
    body: &[u8],
    types: &[&str],
) -> Result<Vec<EntryOutcome>, FhirError> {
    parse_response(body, types.len(), Some(types))
}

fn parse_response(
    body: &[u8],
    expected: usize,
    types: Option<&[&str]>,
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
                "Bundle.type is {:?}, expected transaction-response",
                other.map(|t| truncate_text(t, 40))
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
            let location = r.get("location").and_then(Json::as_str);
            if let (Some(types), Some(loc), true) = (types, location, (200..300).contains(&status))
            {
                let sent = types.get(i).copied().unwrap_or("");
                match split_location(loc) {
                    Some((ty, _)) if ty == sent => {}
                    _ => {
                        return Err(FhirError::BadResponse(format!(
                            "entry {i}: location is not a {sent}/<id> (bad location)"
                        )))
                    }
                }
            }
            Ok(EntryOutcome {
                status,
                location: location.map(|l| truncate_text(l, MAX_KEPT_TEXT)),
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

    #[test]
    fn locations_must_be_a_fhir_reference_of_the_type_sent() {
        for (loc, want) in [
            ("Device/7", Some(("Device", "7"))),
            ("Device/a-b.C/_history/2", Some(("Device", "a-b.C"))),
            ("https://x/fhir/Device/7/_history/1", Some(("Device", "7"))),
            ("etc/passwd", None),
            ("Device/ ", None),
            ("Device/", None),
            ("Device/7/_history/ ", None),
            ("7", None),
        ] {
            assert_eq!(split_location(loc), want, "{loc}");
        }
        assert_eq!(split_location(&format!("Device/{}", "a".repeat(65))), None);
        let body = br#"{"resourceType":"Bundle","type":"transaction-response","entry":[
            {"response":{"status":"201","location":"Patient/evil-patient"}}]}"#;
        assert!(parse_transaction_response_for(body, &["Device"]).is_err());
        assert!(parse_transaction_response_for(body, &["Patient"]).is_ok());
    }

    #[test]
    fn server_text_is_cut_and_codes_are_a_fixed_vocabulary() {
        let v = serde_json::json!({"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "processing", "diagnostics": "é".repeat(5000)},
            {"severity": "evil", "code": "John Doe", "diagnostics": "x"}]});
        let text = parse_operation_outcome(&v).unwrap();
        assert!(text.len() <= MAX_KEPT_TEXT, "{}", text.len());
        assert_eq!(outcome_codes(&text), "error processing, ? ?");
        assert_eq!(issue_type_of_outcome_text(&text), Some("processing"));
    }
}
