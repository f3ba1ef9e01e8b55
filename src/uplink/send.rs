//! Sending: the HTTP client, the request body (gzip), the POST and its answer, the server ids the
//! answer assigns, and refused entries (rejected and alerted with a reason code, never the
//! server's text).

use super::sync::Uplink;
use super::tls::{client_config, ReloadingCert};
use super::{classify, UplinkConfig, UplinkError};
use crate::fhir::{self, BuiltBundle, EntryKind, EntryOutcome};
use crate::store::{OutboxItem, OutboxPayload};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

pub(super) fn build_client(
    cfg: &UplinkConfig,
    cert: Arc<ReloadingCert>,
) -> Result<reqwest::Client, UplinkError> {
    let tls = client_config(&cfg.ca_bundle, cert.clone())?;
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connector_layer(super::tls::RequireClientAuth(cert))
        .https_only(true)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(cfg.connect_timeout())
        .timeout(cfg.request_timeout())
        .no_proxy()
        .pool_idle_timeout(Duration::from_secs(30))
        .user_agent(concat!("vitals-hub/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| UplinkError::Tls(format!("building the HTTP client: {e}")))
}

/// The most bytes of a transaction-response the hub reads: 64 KiB plus 16 KiB per request entry
/// (an entry's response legitimately holds a status, a location, an etag, a date and at most a
/// short OperationOutcome: well under 2 KiB). A longer answer is a bad response: reading stops
/// there, the connection is dropped and nothing is acked.
pub const fn response_limit(entries: usize) -> usize {
    64 * 1024 + 16 * 1024 * entries
}

/// The most bytes of an error answer (4xx/5xx) the hub reads; past it, a bad response.
pub const MAX_ERROR_RESPONSE: usize = 64 * 1024;

/// Read a response body chunk by chunk, refusing (before buffering it) anything past `limit`.
pub(super) async fn read_bounded(
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, UplinkError> {
    let too_large = || {
        UplinkError::BadResponse(format!(
            "answer larger than {} KiB (too large)",
            limit / 1024
        ))
    };
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| classify(&e))? {
        if out.len().saturating_add(chunk.len()) > limit {
            return Err(too_large());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The resource type of each entry of a request Bundle, in order.
pub fn entry_types(bundle: &serde_json::Value) -> Vec<String> {
    bundle
        .get("entry")
        .and_then(serde_json::Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| {
                    e.pointer("/resource/resourceType")
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or("")
                        .to_owned()
                })
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    enc.write_all(body)?;
    enc.finish()
}

/// The request body and whether it is gzip-compressed (`Content-Encoding: gzip`). When compression
/// fails the plain body goes without the header.
pub(super) fn request_body(
    raw: Vec<u8>,
    gzip: bool,
    compress: impl FnOnce(&[u8]) -> std::io::Result<Vec<u8>>,
) -> (Vec<u8>, bool) {
    if !gzip {
        return (raw, false);
    }
    match compress(&raw) {
        Ok(body) => (body, true),
        // Never a plain body labelled gzip: the server would refuse it (or worse, guess).
        Err(e) => {
            warn!(error = %e, "Compressing the request body failed; sending it uncompressed.");
            (raw, false)
        }
    }
}

/// A FHIR-level refusal of the content: only these bisect and reject. A 4xx without an
/// OperationOutcome (a proxy's error page, a wrong URL) is not blamed on an entry.
pub(super) fn is_poison(e: &UplinkError) -> bool {
    matches!(e, UplinkError::Http { status, detail: Some(_), .. } if matches!(status, 400 | 409 | 412 | 413 | 422))
        || matches!(
            e,
            UplinkError::Http {
                status: 412 | 413,
                ..
            }
        )
}

/// Why the clinic refused an entry, as a code that carries no text of the server's: the
/// OperationOutcome's issue type when it is one of FHIR's codes, else one from the HTTP status.
pub(super) fn rejection_code(e: &UplinkError) -> &'static str {
    let UplinkError::Http { status, detail, .. } = e else {
        return "rejected";
    };
    detail
        .as_deref()
        .and_then(fhir::response::issue_type_of_outcome_text)
        .unwrap_or(match status {
            400 => "invalid",
            409 => "conflict",
            412 => "precondition-failed",
            413 => "too-large",
            422 => "processing",
            _ => "rejected",
        })
}

impl Uplink {
    pub(super) async fn post(
        &mut self,
        built: &BuiltBundle,
    ) -> Result<Vec<EntryOutcome>, UplinkError> {
        let t = std::time::Instant::now();
        let raw = serde_json::to_vec(&built.json).map_err(|e| UplinkError::Store(e.to_string()))?;
        let (body, gz) = request_body(raw, self.cfg.gzip, gzip);
        self.phases.encode += t.elapsed();
        let t = std::time::Instant::now();
        let sent = body.len() as u64;
        let mut req = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/fhir+json")
            .header(reqwest::header::ACCEPT, "application/fhir+json");
        if gz {
            req = req.header(reqwest::header::CONTENT_ENCODING, "gzip");
        }
        let resp = req.body(body).send().await.map_err(|e| {
            tracing::debug!(chain = ?super::chain_debug(&e), "Request failed.");
            classify(&e)
        })?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let limit = if status.is_success() {
            response_limit(built.entries.len())
        } else {
            MAX_ERROR_RESPONSE
        };
        let read = read_bounded(resp, limit).await;
        let got = match &read {
            Ok(b) => b.len(),
            Err(_) => limit,
        };
        self.with_status(|s| {
            s.wire_bytes += sent + got as u64;
            s.bundles += 1;
        });
        self.phases.wire += t.elapsed();
        let bytes = read?;
        if status.is_success() {
            let t = std::time::Instant::now();
            let types = entry_types(&built.json);
            let types: Vec<&str> = types.iter().map(String::as_str).collect();
            let parsed = fhir::response::parse_transaction_response_for(&bytes, &types)
                .map_err(|e| UplinkError::BadResponse(e.to_string()));
            self.phases.parse += t.elapsed();
            return parsed;
        }
        let detail = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| fhir::parse_operation_outcome(&v));
        // nginx completes the handshake and answers a failed client-certificate check with its
        // own 400 page ("The SSL certificate error" / "No required SSL certificate was sent").
        if detail.is_none() && matches!(status.as_u16(), 400 | 403 | 495 | 496) {
            let text = String::from_utf8_lossy(&bytes);
            if text.contains("SSL certificate") {
                return Err(UplinkError::ServerRejectedOurCertificate(format!(
                    "HTTP {} from the TLS terminator",
                    status.as_u16()
                )));
            }
        }
        Err(UplinkError::Http {
            status: status.as_u16(),
            retry_after,
            detail,
        })
    }

    pub(super) async fn remember_refs(
        &mut self,
        built: &BuiltBundle,
        outcomes: &[EntryOutcome],
    ) -> Result<(), UplinkError> {
        for (info, out) in built.entries.iter().zip(outcomes) {
            let name = match &info.kind {
                EntryKind::HubDevice => "hub".to_owned(),
                EntryKind::Device(k) => format!("device:{k}"),
                _ => continue,
            };
            if let (true, Some(r)) = (out.is_stored(), out.logical_ref()) {
                self.refs_cache = None;
                self.store
                    .set_uplink_state(&self.destination, &name, &r)
                    .await?;
            }
        }
        Ok(())
    }

    pub(super) async fn reject_poison(
        &mut self,
        items: &[OutboxItem],
        tags: Vec<i64>,
        e: &UplinkError,
    ) -> Result<usize, UplinkError> {
        // The full text (it may echo PHI) stays on the hub, sealed with the entry; what leaves the
        // hub is a reason code and the HTTP status.
        let reason = e.to_string();
        let code = rejection_code(e);
        let n = self.store.reject(tags.clone(), &reason).await?;
        let readings: Vec<i64> = items
            .iter()
            .filter(|i| tags.contains(&i.id))
            .filter_map(|i| match &i.payload {
                OutboxPayload::Reading(r) => Some(r.id),
                OutboxPayload::Alert(_) => None,
            })
            .collect();
        let status = match e {
            UplinkError::Http { status, .. } => *status,
            _ => 0,
        };
        warn!(outbox = ?tags, status, "Clinic server rejected an entry; it is kept and alerted.");
        self.store
            .append_event(
                "uplink_entry_rejected",
                "error",
                format!("outbox {tags:?} rejected: {}", e.summary()),
            )
            .await?;
        if !readings.is_empty() {
            self.store
                .append_alert(
                    serde_json::json!({ "kind": "upload_rejected", "status": status, "outbox": tags, "reason": code }),
                    &format!("upload-rejected-{}", tags.first().copied().unwrap_or(0)),
                    readings,
                )
                .await?;
        }
        self.with_status(|s| s.rejected += n as u64);
        Ok(n)
    }
}

/// The most bytes of a CapabilityStatement the hub reads (HAPI's lists every resource type and
/// search parameter: a few hundred KiB); past it, a bad response.
pub const MAX_CAPABILITY: usize = 4 * 1024 * 1024;

/// Read the server's CapabilityStatement with `client` and name what the hub needs that it lacks
/// (transaction, conditional create of Observation and Device); empty when all is there.
pub(super) async fn capability_with(
    client: &reqwest::Client,
    url: &reqwest::Url,
) -> Result<Vec<String>, UplinkError> {
    let target = format!("{}/metadata", url.as_str().trim_end_matches('/'));
    let resp = client
        .get(&target)
        .header("Accept", "application/fhir+json")
        .send()
        .await
        .map_err(|e| super::classify(&e))?;
    let status = resp.status().as_u16();
    if !resp.status().is_success() {
        return Err(UplinkError::Http {
            status,
            retry_after: None,
            detail: None,
        });
    }
    let body = read_bounded(resp, MAX_CAPABILITY).await?;
    let v: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| UplinkError::BadResponse(format!("capability statement not JSON ({e})")))?;
    fhir::capability::capability_gaps(&v).map_err(|e| UplinkError::BadResponse(e.to_string()))
}

/// Whether the server knows the patient the hub's Observations name (`subject` =
/// `Patient/<patient_id>`): `GET [base]/Patient?_id=<id>&_summary=count`, which answers a count and
/// no demographics. A server that enforces referential integrity refuses every reading until the
/// clinic has created that Patient (the documented clinic-side step; README, FHIR servers).
pub(super) async fn patient_known(
    client: &reqwest::Client,
    url: &reqwest::Url,
    patient_id: &str,
) -> Result<bool, UplinkError> {
    let target = format!(
        "{}/Patient?_id={patient_id}&_summary=count",
        url.as_str().trim_end_matches('/')
    );
    let resp = client
        .get(&target)
        .header("Accept", "application/fhir+json")
        .send()
        .await
        .map_err(|e| super::classify(&e))?;
    let status = resp.status().as_u16();
    if !resp.status().is_success() {
        return Err(UplinkError::Http {
            status,
            retry_after: None,
            detail: None,
        });
    }
    let body = read_bounded(resp, MAX_ERROR_RESPONSE).await?;
    let v: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| UplinkError::BadResponse(format!("search answer not JSON ({e})")))?;
    v.get("total")
        .and_then(serde_json::Value::as_u64)
        .map(|n| n > 0)
        .ok_or_else(|| UplinkError::BadResponse("search answer without a total".into()))
}

/// The gap named when the server does not know the hub's patient.
pub const PATIENT_UNKNOWN: &str = "no Patient with the hub's `patient_id` at the server: a server that checks references refuses every reading until the clinic creates it";

/// [`capability_with`] over the uplink's own mutual-TLS client, for `doctor` (which asks about
/// the patient separately: [`patient_at_server`]).
pub async fn capability(cfg: &UplinkConfig) -> Result<Vec<String>, UplinkError> {
    let url = cfg.validate()?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cert = Arc::new(ReloadingCert::new(cfg.cert_paths()?, provider)?);
    let client = build_client(cfg, cert)?;
    capability_with(&client, &url).await
}

/// What the clinic says of the hub's configured patient, for `doctor`'s `patient` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatientAtServer {
    /// A Patient with that id exists (a count-only answer; no demographics read).
    Known,
    /// The search answered a count of 0.
    Unknown,
    /// The clinic refused the question for this hub's certificate (401/403): an authorising clinic
    /// (`vitals-clinic`) answers only for the patient the certificate is enrolled for, so the
    /// configured `patient_id` is not that patient — a typo, or a certificate of another hub.
    Refused(u16),
}

/// [`patient_known`] over the uplink's own mutual-TLS client, with a refusal told apart from an
/// unreachable server.
pub async fn patient_at_server(cfg: &UplinkConfig) -> Result<PatientAtServer, UplinkError> {
    let url = cfg.validate()?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cert = Arc::new(ReloadingCert::new(cfg.cert_paths()?, provider)?);
    let client = build_client(cfg, cert)?;
    match patient_known(&client, &url, &cfg.patient_id).await {
        Ok(true) => Ok(PatientAtServer::Known),
        Ok(false) => Ok(PatientAtServer::Unknown),
        Err(UplinkError::Http {
            status: status @ (401 | 403),
            ..
        }) => Ok(PatientAtServer::Refused(status)),
        Err(e) => Err(e),
    }
}

impl Uplink {
    /// At start-up: read the server's CapabilityStatement; what it lacks is an event
    /// (`uplink_server_capability`) and kept in `uplink_state` (`capability`) for `status`.
    /// A server that does not answer is not held against it here (uploads report their own
    /// failures).
    pub async fn check_capability(&mut self) {
        let read = capability_with(&self.client, &self.url).await;
        // What names a later refusal of everything (`refusal`): no metadata at the base URL is a
        // wrong base path; no Patient is an unknown patient.
        self.server_facts.metadata_refused = matches!(
            &read,
            Err(UplinkError::Http { status, .. })
                if (400..500).contains(status) && !matches!(status, 401 | 403 | 408 | 429)
        );
        match read {
            Ok(mut gaps) => {
                let known = patient_known(&self.client, &self.url, &self.cfg.patient_id).await;
                self.server_facts.patient_unknown = matches!(known, Ok(false));
                if let Ok(false) = known {
                    gaps.push(PATIENT_UNKNOWN.into());
                }
                let text = if gaps.is_empty() {
                    "ok".to_owned()
                } else {
                    gaps.join("; ")
                };
                if !gaps.is_empty() {
                    warn!(gaps = %text, "The clinic server's CapabilityStatement lacks what the hub needs.");
                    let _ = self
                        .store
                        .append_event(
                            "uplink_server_capability",
                            "warning",
                            format!("the server's CapabilityStatement says: {text}"),
                        )
                        .await;
                }
                let _ = self
                    .store
                    .set_uplink_state(&self.destination, "capability", &text)
                    .await;
            }
            Err(e) => {
                tracing::debug!(error = %e.summary(), "CapabilityStatement not read.");
            }
        }
    }
}

/// A probe of the clinic that carries no PHI: `GET <base_url>/metadata` (the FHIR capability
/// statement) over the uplink's own mutual-TLS client (same roots, client certificate, TLS 1.3 and
/// refusal of servers that do not ask for the hub's certificate). Returns the HTTP status of a 2xx
/// answer; anything else is the failure, named as the uplink names it.
pub async fn probe(cfg: &UplinkConfig) -> Result<u16, UplinkError> {
    let url = cfg.validate()?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cert = Arc::new(ReloadingCert::new(cfg.cert_paths()?, provider)?);
    let client = build_client(cfg, cert)?;
    let target = format!("{}/metadata", url.as_str().trim_end_matches('/'));
    let resp = client
        .get(&target)
        .header("Accept", "application/fhir+json")
        .send()
        .await
        .map_err(|e| super::classify(&e))?;
    let status = resp.status().as_u16();
    if resp.status().is_success() {
        Ok(status)
    } else {
        Err(UplinkError::Http {
            status,
            retry_after: None,
            detail: None,
        })
    }
}
