//! The front's request path: a hub's request, already identified and admitted by the ingest's
//! connection handling ([`crate::clinic::ingest`]), authorised, rebuilt and forwarded, or refused.

use super::rules::{check_response, prepare, tag_param, tagged};
use super::{Front, Upstream, UpstreamError, MAX_IF_NONE_EXIST};
use crate::clinic::authz;
use crate::clinic::db::TxError;
use crate::clinic::ingest::{
    bump, fhir_response, full, outcome, read_body, refuse, server_error, Body, Shared, Who,
};
use crate::clinic::limits;
use crate::clinic::registry::HubRecord;
use crate::fhir::identifier::percent_encode;
use hyper::StatusCode;
use serde_json::Value;
use std::sync::Arc;
use tracing::warn;

/// A hub's request, identified and admitted by the ingest's connection handling: authorised here
/// and forwarded, or refused (403 + AuditEvent).
pub(in crate::clinic) async fn handle(
    req: hyper::Request<hyper::body::Incoming>,
    shared: &Arc<Shared>,
    front: &Front,
    who: &Who,
    hub: HubRecord,
    what: String,
) -> hyper::Response<Body> {
    let path = req.uri().path().trim_end_matches('/').to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let mut segs = path.rsplit('/');
    let tail = segs.next().unwrap_or("").to_owned();
    let parent = segs.next().unwrap_or("").to_owned();
    let fp = hub.fingerprint.clone();
    let forbid = |why: String, action: &'static str| {
        let what = what.clone();
        let fp = fp.clone();
        let hub = hub.clone();
        async move { refuse(shared, who, Some(&hub), Some(&fp), &what, &why, action).await }
    };
    let method = req.method().clone();
    if method == hyper::Method::POST {
        return post(req, shared, front, who, &hub, &what).await;
    }
    if method != hyper::Method::GET {
        return forbid(
            "a hub may only create resources and read its own Devices".into(),
            "E",
        )
        .await;
    }
    let rel = match (tail.as_str(), parent.as_str()) {
        ("metadata", _) => "metadata".to_owned(),
        ("Patient", _)
            if authz::query_param(&query, "_summary").as_deref() == Some("count")
                && authz::query_param(&query, "_id").as_deref() == Some(hub.patient.as_str()) =>
        {
            format!(
                "Patient?_id={}&_summary=count",
                percent_encode(&hub.patient)
            )
        }
        ("Device", _) => match authz::query_param(&query, "identifier") {
            Some(idp) if idp.len() <= MAX_IF_NONE_EXIST => format!(
                "Device?identifier={}&{}",
                percent_encode(&idp),
                tag_param(&hub.hub_id)
            ),
            _ => {
                return forbid(
                    "a hub may search its own Devices by identifier only".into(),
                    "R",
                )
                .await
            }
        },
        (id, "Device") if authz::valid_logical_id(id) => format!("Device/{id}"),
        // The hub's poll for its own patient's alert limits (issue 18); the search is rebuilt
        // from the hub's record, never from what the hub sent.
        ("ServiceRequest", _)
            if authz::query_param(&query, "subject")
                == Some(format!("Patient/{}", hub.patient)) =>
        {
            format!(
                "ServiceRequest?subject={}&code={}&status=active&_count=50",
                percent_encode(&format!("Patient/{}", hub.patient)),
                percent_encode(&format!(
                    "{}|{}",
                    crate::fhir::limits::TELEMONITORING_SYSTEM,
                    crate::fhir::limits::LIMITS_CODE
                ))
            )
        }
        ("ServiceRequest", _) => {
            return forbid(
                "a hub may read only its own patient's alert limits".into(),
                "R",
            )
            .await
        }
        _ => return forbid("a hub may read only its own Devices".into(), "R").await,
    };
    let up = match front.send(reqwest::Method::GET, &rel, None).await {
        Ok(u) => u,
        Err(e) => return upstream_failed(&e),
    };
    if parent == "Device" && up.status == StatusCode::OK {
        let ok = serde_json::from_slice::<Value>(&up.body)
            .map(|v| {
                v.get("resourceType").and_then(Value::as_str) == Some("Device")
                    && tagged(&v, &hub.hub_id)
            })
            .unwrap_or(false);
        if !ok {
            return forbid("a hub may read only its own Devices".into(), "R").await;
        }
    }
    if tail == "Device" && up.status == StatusCode::OK {
        // The search was sent with the hub's `_tag`; a server that ignored it must not show
        // another hub's Devices.
        let ok = serde_json::from_slice::<Value>(&up.body)
            .ok()
            .is_some_and(|v| only_tagged(&v, &hub.hub_id));
        if !ok {
            warn!(hub = %hub.hub_id, "The FHIR server's Device search answer holds resources of another writer: not given to the hub.");
            return bad_gateway("the FHIR server did not scope the search by _tag");
        }
    }
    if tail == "ServiceRequest" && up.status == StatusCode::OK {
        // Only the hub's own patient's current version goes back, whatever the server returned.
        let own = format!("Patient/{}", hub.patient);
        let current = serde_json::from_slice::<Value>(&up.body)
            .ok()
            .and_then(|v| {
                let entries = v.get("entry").and_then(Value::as_array)?;
                let mine: Vec<Value> = entries
                    .iter()
                    .filter_map(|e| e.get("resource"))
                    .filter(|r| {
                        r.pointer("/subject/reference").and_then(Value::as_str) == Some(&own)
                            && r.get("status").and_then(Value::as_str) == Some("active")
                    })
                    .map(|r| serde_json::json!({ "resource": r }))
                    .collect();
                crate::fhir::limits::current_of(
                    &serde_json::json!({"resourceType": "Bundle", "entry": mine}),
                )
                .ok()
                .flatten()
            });
        return fhir_response(
            StatusCode::OK,
            &crate::clinic::db::searchset(current.into_iter().collect()),
        );
    }
    if parent == "Device" && up.status == StatusCode::NOT_FOUND {
        // Not found and not this hub's look the same to the hub.
        return forbid("a hub may read only its own Devices".into(), "R").await;
    }
    relay(up)
}

/// Whether a searchset holds only resources carrying this hub's tag (OperationOutcome entries of
/// the server's own, `search.mode = outcome`, aside).
fn only_tagged(searchset: &Value, hub_id: &str) -> bool {
    searchset.get("resourceType").and_then(Value::as_str) == Some("Bundle")
        && searchset
            .get("entry")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .all(|e| {
                let r = e.get("resource").unwrap_or(&Value::Null);
                r.get("resourceType").and_then(Value::as_str) == Some("OperationOutcome")
                    || tagged(r, hub_id)
            })
}

/// Read, bound, authorise and forward a transaction Bundle.
async fn post(
    req: hyper::Request<hyper::body::Incoming>,
    shared: &Arc<Shared>,
    front: &Front,
    who: &Who,
    hub: &HubRecord,
    what: &str,
) -> hyper::Response<Body> {
    let fp = hub.fingerprint.clone();
    // One of `max_inflight` slots for reading, parsing and forwarding the body.
    let Ok(Ok(_permit)) = tokio::time::timeout(
        shared.limits.queue_timeout,
        shared.work.clone().acquire_owned(),
    )
    .await
    else {
        return crate::clinic::ingest::busy(shared);
    };
    let body = match read_body(req, &shared.limits).await {
        Ok(b) => b,
        Err(e) => {
            bump(shared, |s| s.rejected += 1);
            return fhir_response(StatusCode::BAD_REQUEST, &outcome("invalid", &e));
        }
    };
    bump(shared, |s| s.request_bytes += body.len() as u64);
    let limits = shared.limits.clone();
    let h = hub.clone();
    let prepared = tokio::task::spawn_blocking(move || {
        limits::check_json(&body, &limits).map_err(TxError::Invalid)?;
        let bundle: Value = serde_json::from_slice(&body)
            .map_err(|e| TxError::Invalid(format!("not JSON: {e}")))?;
        drop(body);
        prepare(&bundle, &h)
    })
    .await
    .unwrap_or_else(|e| Err(TxError::Server(e.to_string())));
    let p = match prepared {
        Ok(p) => p,
        Err(TxError::Forbidden(why)) => {
            return refuse(shared, who, Some(hub), Some(&fp), what, &why, "C").await
        }
        Err(TxError::Invalid(why)) | Err(TxError::Multiple(why)) => {
            bump(shared, |s| s.rejected += 1);
            return fhir_response(StatusCode::BAD_REQUEST, &outcome("invalid", &why));
        }
        Err(TxError::Server(why)) => return server_error(&why),
    };
    for (i, ty, id) in &p.refs {
        match front.owns(&hub.hub_id, ty, id).await {
            Ok(true) => {}
            Ok(false) => {
                let ty = p.types.get(*i).map(String::as_str).unwrap_or("");
                let why = match authz::not_owned(*i, ty) {
                    TxError::Forbidden(w) => w,
                    other => format!("{other:?}"),
                };
                return refuse(shared, who, Some(hub), Some(&fp), what, &why, "C").await;
            }
            Err(e) => return upstream_failed(&e),
        }
    }
    let up = match front.send(reqwest::Method::POST, "", Some(p.body)).await {
        Ok(u) => u,
        Err(e) => return upstream_failed(&e),
    };
    if !up.status.is_success() {
        bump(shared, |s| s.rejected += 1);
        return relay(up);
    }
    let resp: Value = match serde_json::from_slice(&up.body) {
        Ok(v) => v,
        Err(_) => return bad_gateway("the FHIR server's answer is not JSON"),
    };
    let unproven = match check_response(&resp, &p.types, &hub.hub_id) {
        Ok(u) => u,
        Err(why) => {
            warn!(hub = %hub.hub_id, "The FHIR server's transaction-response is not given to the hub: {why}.");
            return bad_gateway(&format!(
                "the FHIR server's transaction-response does not match the request: {why}"
            ));
        }
    };
    for (ty, id) in unproven {
        match front.owns(&hub.hub_id, &ty, &id).await {
            Ok(true) => {}
            Ok(false) => {
                warn!(hub = %hub.hub_id, "The FHIR server matched a conditional create to another writer's {ty}: not given to the hub.");
                return bad_gateway(
                    "the FHIR server matched a conditional create to a resource of another writer",
                );
            }
            Err(e) => return upstream_failed(&e),
        }
    }
    let (mut created, mut existing) = (0, 0);
    for e in resp
        .get("entry")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        match e.pointer("/response/status").and_then(Value::as_str) {
            Some(s) if s.starts_with("201") => created += 1,
            _ => existing += 1,
        }
    }
    bump(shared, |s| {
        s.bundles += 1;
        s.created += created;
        s.existing += existing;
    });
    relay(up)
}

/// The server's answer to the hub: status, `Retry-After` and the body (an OperationOutcome in
/// place of a body that is not a FHIR resource).
fn relay(up: Upstream) -> hyper::Response<Body> {
    if matches!(up.status.as_u16(), 401 | 403 | 407) {
        // The server refused the front, not the hub: a hub must not take it as a verdict on its
        // data (it would stop sending it). The clinic's configuration is to fix.
        warn!(
            status = up.status.as_u16(),
            "The FHIR server refused the front's request: check --fhir-authorization-file and the server's access rules."
        );
        return bad_gateway("the FHIR server refused the clinic's front; retry later");
    }
    let is_resource = serde_json::from_slice::<Value>(&up.body)
        .ok()
        .is_some_and(|v| v.get("resourceType").is_some_and(Value::is_string));
    let mut r = if is_resource {
        let mut r = hyper::Response::new(full(up.body));
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/fhir+json"),
        );
        *r.status_mut() = up.status;
        r
    } else {
        fhir_response(
            up.status,
            &outcome(
                "exception",
                &format!("the FHIR server answered {}", up.status.as_u16()),
            ),
        )
    };
    if let Some(v) = up
        .retry_after
        .and_then(|v| hyper::header::HeaderValue::from_str(&v).ok())
    {
        r.headers_mut().insert(hyper::header::RETRY_AFTER, v);
    }
    r
}

fn bad_gateway(why: &str) -> hyper::Response<Body> {
    fhir_response(StatusCode::BAD_GATEWAY, &outcome("exception", why))
}

fn upstream_failed(e: &UpstreamError) -> hyper::Response<Body> {
    warn!(error = %e, "Forwarding to the FHIR server failed.");
    fhir_response(e.status(), &outcome("transient", &e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn a_search_answer_shows_only_the_hubs_own_resources() {
        let tag = |h: &str| json!({"meta": {"tag": [{"system": super::super::HUB_TAG_SYSTEM, "code": h}]}});
        let mut mine = tag("hub-a");
        mine["resourceType"] = json!("Device");
        let mut theirs = tag("hub-b");
        theirs["resourceType"] = json!("Device");
        let set = |rs: Vec<Value>| {
            json!({"resourceType": "Bundle", "type": "searchset",
                   "entry": rs.into_iter().map(|r| json!({"resource": r})).collect::<Vec<_>>()})
        };
        assert!(only_tagged(&set(vec![mine.clone()]), "hub-a"));
        assert!(only_tagged(&set(vec![]), "hub-a"));
        assert!(!only_tagged(&set(vec![mine, theirs]), "hub-a"));
        assert!(!only_tagged(&json!({"resourceType": "Device"}), "hub-a"));
    }
}
