//! The front's rules for what reaches the FHIR server and what comes back: the hub tag, the
//! rebuilt transaction Bundle ([`prepare`]) and the check of the transaction-response
//! ([`check_response`]). Pure: values in, verdict out.

use super::{HUB_TAG_SYSTEM, MAX_IF_NONE_EXIST};
use crate::clinic::authz::{self, WRITABLE};
use crate::clinic::db::{TxError, MAX_ENTRIES};
use crate::clinic::registry::HubRecord;
use crate::fhir::identifier::percent_encode;
use serde_json::{json, Map, Value};
use std::collections::HashSet;

/// The `meta.tag` marking a resource as written by this hub.
pub fn hub_tag(hub_id: &str) -> Value {
    json!({ "system": HUB_TAG_SYSTEM, "code": hub_id })
}

/// `_tag=<system>|<hub>` as a query parameter.
pub fn tag_param(hub_id: &str) -> String {
    format!(
        "_tag={}%7C{}",
        percent_encode(HUB_TAG_SYSTEM),
        percent_encode(hub_id)
    )
}

/// Whether a resource carries this hub's tag.
pub fn tagged(resource: &Value, hub_id: &str) -> bool {
    resource
        .get("meta")
        .and_then(|m| m.get("tag"))
        .and_then(Value::as_array)
        .is_some_and(|tags| {
            tags.iter().any(|t| {
                t.get("system").and_then(Value::as_str) == Some(HUB_TAG_SYSTEM)
                    && t.get("code").and_then(Value::as_str) == Some(hub_id)
            })
        })
}

/// A transaction Bundle rebuilt for the server.
#[derive(Debug)]
pub struct Prepared {
    /// The rebuilt Bundle (JSON).
    pub body: Vec<u8>,
    /// The type of each entry, in order.
    pub types: Vec<String>,
    /// `(entry index, type, id)` of references the hub must be shown to own.
    pub refs: Vec<(usize, String, String)>,
}

/// Authorise a hub's transaction Bundle and rebuild it for the server: only POSTs of the writable
/// types, references confined to the hub ([`authz::entry_refs`]), each resource tagged with the
/// hub, each `ifNoneExist` scoped to the hub's tag; nothing else of the hub's Bundle is kept.
pub fn prepare(bundle: &Value, hub: &HubRecord) -> Result<Prepared, TxError> {
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(TxError::Invalid("not a Bundle".into()));
    }
    if bundle.get("type").and_then(Value::as_str) != Some("transaction") {
        return Err(TxError::Invalid("Bundle.type must be transaction".into()));
    }
    let empty = Vec::new();
    let entries = match bundle.get("entry") {
        None => &empty,
        Some(v) => v
            .as_array()
            .ok_or_else(|| TxError::Invalid("Bundle.entry must be an array".into()))?,
    };
    if entries.len() > MAX_ENTRIES {
        return Err(TxError::Invalid(format!(
            "{} entries in one Bundle; at most {MAX_ENTRIES} (send smaller batches)",
            entries.len()
        )));
    }
    let mut full_urls = HashSet::new();
    for (i, e) in entries.iter().enumerate() {
        if let Some(u) = e.get("fullUrl") {
            let u = u
                .as_str()
                .filter(|u| u.starts_with("urn:uuid:") && u.len() <= 128)
                .ok_or_else(|| {
                    TxError::Invalid(format!(
                        "entry {i}: fullUrl must be a urn:uuid: of at most 128 characters"
                    ))
                })?;
            if !full_urls.insert(u) {
                return Err(TxError::Invalid(format!("entry {i}: fullUrl repeated")));
            }
        }
    }
    let scope = tag_param(&hub.hub_id);
    let mut out = Vec::with_capacity(entries.len());
    let mut types = Vec::with_capacity(entries.len());
    let mut refs = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let req = e
            .get("request")
            .ok_or_else(|| TxError::Invalid(format!("entry {i} has no request")))?;
        if req.get("method").and_then(Value::as_str) != Some("POST") {
            return Err(TxError::Forbidden(format!(
                "entry {i}: a hub may only create (POST)"
            )));
        }
        let url = req.get("url").and_then(Value::as_str).unwrap_or("");
        let Some(ty) = WRITABLE.iter().find(|t| **t == url) else {
            return Err(TxError::Forbidden(format!(
                "entry {i}: a hub may not create {}",
                if url.len() <= 64 { url } else { "this" }
            )));
        };
        let resource = e
            .get("resource")
            .and_then(Value::as_object)
            .ok_or_else(|| TxError::Invalid(format!("entry {i} has no resource")))?;
        if resource.get("resourceType").and_then(Value::as_str) != Some(ty) {
            return Err(TxError::Invalid(format!(
                "entry {i}: resourceType does not match request.url"
            )));
        }
        let as_value = e.get("resource").unwrap_or(&Value::Null);
        for (rty, rid) in authz::entry_refs(&hub.patient, ty, as_value, i, &full_urls)? {
            refs.push((i, rty, rid));
        }
        let mut request = Map::new();
        request.insert("method".into(), json!("POST"));
        request.insert("url".into(), json!(ty));
        if let Some(cond) = req.get("ifNoneExist") {
            let cond = cond
                .as_str()
                .filter(|c| {
                    c.len() <= MAX_IF_NONE_EXIST
                        && c.strip_prefix("identifier=").is_some_and(|v| !v.is_empty())
                        && !c
                            .bytes()
                            .any(|b| matches!(b, b'&' | b'#' | b'?') || b <= b' ')
                })
                .ok_or_else(|| {
                    TxError::Forbidden(format!(
                        "entry {i}: ifNoneExist must be identifier=<system>|<value> only"
                    ))
                })?;
            request.insert("ifNoneExist".into(), json!(format!("{cond}&{scope}")));
        }
        let mut resource = resource.clone();
        resource.remove("id");
        let mut meta = Map::new();
        if let Some(p) = resource
            .get("meta")
            .and_then(|m| m.get("profile"))
            .filter(|p| p.is_array())
        {
            meta.insert("profile".into(), p.clone());
        }
        meta.insert("tag".into(), json!([hub_tag(&hub.hub_id)]));
        resource.insert("meta".into(), Value::Object(meta));
        // A hub's Devices carry no patient (the hub sends no demographics); the front knows it
        // from the registry and writes it as `Device.patient`, as the built-in store shows it,
        // so the console finds whose hub a heartbeat comes from at any FHIR server. (A
        // `patient` the hub sent was checked above: it can only be its own.)
        if *ty == "Device" {
            resource
                .entry("patient")
                .or_insert_with(|| json!({ "reference": format!("Patient/{}", hub.patient) }));
        }
        let mut entry = Map::new();
        if let Some(u) = e.get("fullUrl") {
            entry.insert("fullUrl".into(), u.clone());
        }
        entry.insert("resource".into(), Value::Object(resource));
        entry.insert("request".into(), Value::Object(request));
        out.push(Value::Object(entry));
        types.push((*ty).to_owned());
    }
    let body = serde_json::to_vec(&json!({
        "resourceType": "Bundle", "type": "transaction", "entry": out
    }))
    .map_err(|e| TxError::Server(e.to_string()))?;
    Ok(Prepared { body, types, refs })
}

/// Check the server's transaction-response against what was sent. Returns the `(type, id)` of
/// entries that matched an existing resource without showing it (the caller proves the hub owns
/// them); `Err` says why the response cannot be given to the hub.
pub fn check_response(
    resp: &Value,
    types: &[String],
    hub_id: &str,
) -> Result<Vec<(String, String)>, String> {
    if resp.get("resourceType").and_then(Value::as_str) != Some("Bundle")
        || resp.get("type").and_then(Value::as_str) != Some("transaction-response")
    {
        return Err("not a transaction-response Bundle".into());
    }
    let entries = resp
        .get("entry")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if entries.len() != types.len() {
        return Err(format!(
            "{} response entries for {} entries sent",
            entries.len(),
            types.len()
        ));
    }
    let mut unproven = Vec::new();
    for (i, (e, ty)) in entries.iter().zip(types).enumerate() {
        let r = e.get("response");
        let status = r
            .and_then(|r| r.get("status"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if !status.starts_with('2') {
            return Err(format!(
                "entry {i}: status {status:.16} in a successful transaction"
            ));
        }
        let loc = r
            .and_then(|r| r.get("location"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let mut parts = loc.split('/');
        let (lty, lid) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let rest: Vec<&str> = parts.collect();
        let shape_ok = rest.is_empty() || (rest.len() == 2 && rest.first() == Some(&"_history"));
        if lty != ty || !authz::valid_logical_id(lid) || !shape_ok {
            return Err(format!("entry {i}: location is not a {ty} of this server"));
        }
        if !status.starts_with("201") {
            // An existing resource matched: it must be this hub's.
            match e.get("resource") {
                Some(res) if res.get("resourceType").and_then(Value::as_str) == Some(ty) => {
                    if !tagged(res, hub_id) {
                        return Err(format!(
                            "entry {i}: the match is another writer's {ty}; the server did not scope ifNoneExist by _tag"
                        ));
                    }
                }
                _ => unproven.push((ty.clone(), lid.to_owned())),
            }
        }
    }
    Ok(unproven)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn hub() -> HubRecord {
        HubRecord {
            fingerprint: "sha256:00".into(),
            subject: "CN=hub-a".into(),
            hub_id: "hub-a".into(),
            patient: "PA".into(),
            enrolled: "2026-01-01T00:00:00Z".into(),
            revoked: None,
        }
    }

    fn bundle(entries: Value) -> Value {
        json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    }

    #[test]
    fn every_resource_is_tagged_and_every_condition_scoped_to_the_hub() {
        let b = bundle(json!([
            {"fullUrl": "urn:uuid:d", "request": {"method": "POST", "url": "Device",
              "ifNoneExist": "identifier=urn:x%7CD1"},
             "resource": {"resourceType": "Device", "id": "evil",
               "meta": {"profile": ["p"], "tag": [{"system": HUB_TAG_SYSTEM, "code": "hub-b"}],
                        "security": [{"code": "x"}]}}},
            {"fullUrl": "urn:uuid:o", "request": {"method": "POST", "url": "Observation",
              "ifNoneExist": "identifier=urn:y%7CO1"},
             "resource": {"resourceType": "Observation", "status": "final",
               "subject": {"reference": "Patient/PA"}, "device": {"reference": "urn:uuid:d"},
               "derivedFrom": [{"reference": "Device/abc-1"}]}}
        ]));
        let p = prepare(&b, &hub()).unwrap();
        let v: Value = serde_json::from_slice(&p.body).unwrap();
        assert_eq!(p.types, ["Device", "Observation"]);
        assert_eq!(p.refs, [(1, "Device".to_owned(), "abc-1".to_owned())]);
        for e in v["entry"].as_array().unwrap() {
            assert_eq!(
                e["resource"]["meta"]["tag"],
                json!([{"system": HUB_TAG_SYSTEM, "code": "hub-a"}])
            );
            assert!(e["request"]["ifNoneExist"]
                .as_str()
                .unwrap()
                .ends_with("&_tag=urn:vitals-hub:hub-id%7Chub-a"));
            assert!(e["resource"].get("id").is_none());
        }
        assert_eq!(v["entry"][0]["resource"]["meta"]["profile"], json!(["p"]));
        assert!(v["entry"][0]["resource"]["meta"].get("security").is_none());
    }

    #[test]
    fn writes_outside_the_hub_are_refused() {
        let obs = |subject: &str| {
            json!({"request": {"method": "POST", "url": "Observation"},
                   "resource": {"resourceType": "Observation", "subject": {"reference": subject}}})
        };
        let forbidden = [
            bundle(json!([obs("Patient/PB")])),
            bundle(
                json!([{"request": {"method": "PUT", "url": "Observation/1"},
                           "resource": {"resourceType": "Observation"}}]),
            ),
            bundle(json!([{"request": {"method": "POST", "url": "Patient"},
                           "resource": {"resourceType": "Patient"}}])),
            bundle(json!([{"request": {"method": "POST", "url": "AuditEvent"},
                           "resource": {"resourceType": "AuditEvent"}}])),
            bundle(json!([{"request": {"method": "POST", "url": "Device",
                             "ifNoneExist": "identifier=x&_tag=urn:vitals-hub:hub-id|hub-b"},
                           "resource": {"resourceType": "Device"}}])),
            bundle(json!([{"request": {"method": "POST", "url": "Device",
                             "ifNoneExist": "patient=Patient/PB"},
                           "resource": {"resourceType": "Device"}}])),
        ];
        for b in forbidden {
            assert!(
                matches!(prepare(&b, &hub()), Err(TxError::Forbidden(_))),
                "{b}"
            );
        }
        assert!(matches!(
            prepare(&json!({"resourceType": "Bundle", "type": "batch"}), &hub()),
            Err(TxError::Invalid(_))
        ));
    }

    #[test]
    fn responses_must_match_what_was_sent_and_matches_must_be_the_hubs() {
        let types = vec!["Device".to_owned(), "Observation".to_owned()];
        let mine = json!({"resourceType": "Device", "meta": {"tag": [hub_tag("hub-a")]}});
        let theirs = json!({"resourceType": "Device", "meta": {"tag": [hub_tag("hub-b")]}});
        let resp = |dev: Value, loc2: &str| {
            json!({"resourceType": "Bundle", "type": "transaction-response", "entry": [
                {"response": {"status": "200 OK", "location": "Device/d1/_history/1"}, "resource": dev},
                {"response": {"status": "201 Created", "location": loc2}}
            ]})
        };
        assert_eq!(
            check_response(&resp(mine.clone(), "Observation/o1"), &types, "hub-a").unwrap(),
            vec![]
        );
        assert!(check_response(&resp(theirs, "Observation/o1"), &types, "hub-a").is_err());
        assert!(check_response(&resp(mine.clone(), "Patient/o1"), &types, "hub-a").is_err());
        assert!(check_response(&resp(mine, "https://x/Observation/o1"), &types, "hub-a").is_err());
        assert_eq!(
            check_response(&resp(Value::Null, "Observation/o1"), &types, "hub-a").unwrap(),
            vec![("Device".to_owned(), "d1".to_owned())]
        );
        let short = json!({"resourceType": "Bundle", "type": "transaction-response", "entry": []});
        assert!(check_response(&short, &types, "hub-a").is_err());
    }
}
