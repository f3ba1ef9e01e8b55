//! What the hub needs of a FHIR server, read from its `CapabilityStatement` (`GET [base]/metadata`):
//! the `transaction` interaction, and conditional create (`ifNoneExist`) of the resource types it
//! sends, which is what makes every retry safe.

use super::FhirError;
use serde_json::Value as Json;

/// The resource types the hub creates conditionally.
pub const CONDITIONAL_TYPES: &[&str] = &["Observation", "Device"];

/// What the server says it cannot do that the hub needs (empty: all there). Each gap is a fixed
/// text; nothing of the server's is echoed.
pub fn capability_gaps(v: &Json) -> Result<Vec<String>, FhirError> {
    if v.get("resourceType").and_then(Json::as_str) != Some("CapabilityStatement") {
        return Err(FhirError::BadResponse(
            "GET /metadata is not a CapabilityStatement".into(),
        ));
    }
    let rest: Vec<&Json> = v
        .get("rest")
        .and_then(Json::as_array)
        .map(|a| {
            a.iter()
                .filter(|r| r.get("mode").and_then(Json::as_str) == Some("server"))
                .collect()
        })
        .unwrap_or_default();
    let has_code = |list: Option<&Json>, code: &str| {
        list.and_then(Json::as_array).is_some_and(|a| {
            a.iter()
                .any(|i| i.get("code").and_then(Json::as_str) == Some(code))
        })
    };
    let mut gaps = Vec::new();
    if !rest
        .iter()
        .any(|r| has_code(r.get("interaction"), "transaction"))
    {
        gaps.push("no `transaction` interaction".to_owned());
    }
    for ty in CONDITIONAL_TYPES {
        let res = rest.iter().find_map(|r| {
            r.get("resource")
                .and_then(Json::as_array)?
                .iter()
                .find(|x| x.get("type").and_then(Json::as_str) == Some(ty))
        });
        match res {
            None => gaps.push(format!("{ty} is not listed")),
            Some(r) if r.get("conditionalCreate").and_then(Json::as_bool) != Some(true) => {
                gaps.push(format!("no conditional create of {ty}"))
            }
            Some(_) => {}
        }
    }
    Ok(gaps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn gaps_are_named() {
        let ok = json!({"resourceType": "CapabilityStatement", "rest": [{"mode": "server",
            "interaction": [{"code": "transaction"}],
            "resource": [{"type": "Observation", "conditionalCreate": true},
                         {"type": "Device", "conditionalCreate": true}]}]});
        assert!(capability_gaps(&ok).unwrap().is_empty());
        let bad = json!({"resourceType": "CapabilityStatement", "rest": [{"mode": "server",
            "interaction": [{"code": "batch"}],
            "resource": [{"type": "Observation"}]}]});
        assert_eq!(
            capability_gaps(&bad).unwrap(),
            [
                "no `transaction` interaction",
                "no conditional create of Observation",
                "Device is not listed"
            ]
        );
        assert!(capability_gaps(&json!({"resourceType": "Bundle"})).is_err());
    }
}
