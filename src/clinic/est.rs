//! EST (RFC 7030) for the hubs, on the ingest's own mutual TLS: `GET /.well-known/est/cacerts`
//! and `POST /.well-known/est/simplereenroll` (issue 19). For pilots: the clinic signs with the hub
//! CA itself (`vitals-clinic serve --est-ca-key`); at scale a clinic PKI that speaks EST takes
//! over the same two URLs (README, "Hub certificates: renewal and revocation").
//!
//! **Who may re-enrol.** Only a hub the TLS layer and the registry accepted (enrolled, not
//! revoked — [`super::ingest`] identifies it before this module runs), and only for itself: the
//! CSR's subject must be the subject of the certificate the hub connected with, and its signature
//! must verify (proof of the new key); a refusal is a 403 with a security `AuditEvent` like every
//! other refusal of the ingest. The new certificate is enrolled in the registry for the
//! same hub and patient at once (the running registry too), and its serial is recorded so a
//! revocation lists it in the CRL. The certificate the hub connected with stays valid until it
//! expires (both are live for the overlap); a hub has at most [`MAX_LIVE`] unexpired, unrevoked
//! certificates, so a hub that loops on renewal cannot grow the registry. `vitals-clinic hub
//! revoke HUB` revokes all of them.
//!
//! **What is signed** is this module's own template, never the CSR's extensions: the CSR's subject
//! and public key, client-authentication EKU, digital-signature key usage, not a CA, a random
//! serial, valid from five minutes ago for [`Est::days`] days.
//!
//! **Bounds.** The request body is at most [`MAX_CSR_BODY`] bytes (base64 of a DER CSR), read
//! with the ingest's body timeout; parsing and signing run on the blocking pool.
//!
//! The answer is a degenerate PKCS#7 `SignedData` (certs-only, RFC 7030 4.1.3), base64, written
//! by [`certs_only`] (a few DER lines; no crate in the tree writes CMS).

use super::crl::{at_secs, serial_hex, HubCa};
use super::ingest::{fhir_response, full, outcome, refuse, Body, Shared, Who};
use super::registry::{record_for_der, HubRecord};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use std::sync::Arc;
use tracing::{info, warn};

/// The path prefix of the EST endpoints.
pub const PREFIX: &str = "/.well-known/est/";
/// Largest `simplereenroll` body accepted (base64 of a DER CSR; a P-256 CSR is under 1 KiB).
pub const MAX_CSR_BODY: usize = 16 << 10;
/// Live (unexpired, unrevoked) certificates one hub may hold at once.
pub const MAX_LIVE: u64 = 3;

/// The signer behind `simplereenroll`.
#[derive(Debug)]
pub struct Est {
    pub ca: HubCa,
    /// Validity of a renewed certificate, days.
    pub days: u32,
}

/// DER length octets.
fn der_len(n: usize, out: &mut Vec<u8>) {
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes = n.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        let body = bytes.get(skip..).unwrap_or_default();
        out.push(0x80 | body.len() as u8);
        out.extend_from_slice(body);
    }
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    der_len(content.len(), &mut out);
    out.extend_from_slice(content);
    out
}

/// OID 1.2.840.113549.1.7.2 (signedData) and .1 (data).
const OID_SIGNED_DATA: &[u8] = &[
    0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x02,
];
const OID_DATA: &[u8] = &[
    0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x01,
];

/// A certs-only PKCS#7 `ContentInfo` (RFC 5652 `SignedData` with no signers) holding `certs`.
pub fn certs_only(certs: &[&[u8]]) -> Vec<u8> {
    let mut signed = Vec::new();
    signed.extend(der(0x02, &[1])); // version
    signed.extend(der(0x31, &[])); // digestAlgorithms
    signed.extend(der(0x30, OID_DATA)); // encapContentInfo
    signed.extend(der(0xA0, &certs.concat())); // certificates [0] IMPLICIT
    signed.extend(der(0x31, &[])); // signerInfos
    let signed = der(0x30, &signed);
    let mut ci = OID_SIGNED_DATA.to_vec();
    ci.extend(der(0xA0, &signed));
    der(0x30, &ci)
}

fn est_response(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(full(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    h.insert(
        "content-transfer-encoding",
        hyper::header::HeaderValue::from_static("base64"),
    );
    r
}

fn pkcs7_answer(certs: &[&[u8]]) -> Response<Body> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(certs_only(certs));
    est_response(
        StatusCode::OK,
        "application/pkcs7-mime; smime-type=certs-only",
        b64.into_bytes(),
    )
}

fn text(status: StatusCode, msg: &str) -> Response<Body> {
    fhir_response(status, &outcome("invalid", msg))
}

/// Why a CSR is not signed.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Malformed request (400).
    Bad(String),
    /// Not this hub's to ask (403).
    Forbidden(String),
    /// Too many live certificates (409).
    TooMany,
    /// The clinic failed (500).
    Server(String),
}

/// Sign a DER CSR for `hub`, checked as the module documentation says. Returns the new
/// certificate (DER) and its registry record. Blocking (signature checks, signing).
pub fn sign(est: &Est, hub: &HubRecord, csr_der: &[u8]) -> Result<(Vec<u8>, HubRecord), Refusal> {
    use x509_parser::prelude::FromDer;
    let (_, req) = x509_parser::certification_request::X509CertificationRequest::from_der(csr_der)
        .map_err(|e| Refusal::Bad(format!("not a PKCS#10 request: {e}")))?;
    let subject = req.certification_request_info.subject.to_string();
    if subject != hub.subject {
        return Err(Refusal::Forbidden(format!(
            "the request's subject is not this hub's certificate subject ({})",
            hub.subject
        )));
    }
    let csr = rcgen::CertificateSigningRequestParams::from_der(&csr_der.to_vec().into())
        .map_err(|e| Refusal::Bad(format!("the request does not verify: {e}")))?;
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = csr.params.distinguished_name.clone();
    p.is_ca = rcgen::IsCa::ExplicitNoCa;
    p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    p.not_before = at_secs(now.saturating_sub(300));
    p.not_after = at_secs(now + u64::from(est.days.max(1)) * 86_400);
    let mut serial = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut serial)
        .map_err(|_| Refusal::Server("no randomness for the serial".into()))?;
    serial[0] &= 0x7f; // a positive INTEGER
    p.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let signed = rcgen::CertificateSigningRequestParams {
        params: p,
        public_key: csr.public_key,
    }
    .signed_by(est.ca.issuer())
    .map_err(|e| Refusal::Server(format!("signing: {e}")))?;
    let der = signed.der().as_ref().to_vec();
    let rec = record_for_der(&der, &hub.patient, Some(&hub.hub_id))
        .map_err(|e| Refusal::Server(e.to_string()))?;
    Ok((der, rec))
}

/// An EST request of an identified hub (`hub` is `None` only in [`super::Access::Open`]).
pub(super) async fn handle(
    req: Request<Incoming>,
    shared: &Arc<Shared>,
    who: &Who,
    hub: Option<HubRecord>,
    path: &str,
) -> Response<Body> {
    let Some(est) = shared.est.clone() else {
        return text(
            StatusCode::NOT_FOUND,
            "EST is not enabled on this clinic (vitals-clinic serve --est-ca-key)",
        );
    };
    let op = path.strip_prefix(PREFIX).unwrap_or("");
    match (req.method().clone(), op) {
        (Method::GET, "cacerts") => pkcs7_answer(&[&est.ca.cert_der]),
        (Method::POST, "simplereenroll") => {
            let Some(hub) = hub else {
                return text(
                    StatusCode::FORBIDDEN,
                    "re-enrolment needs the hub registry (an enrolled hub certificate)",
                );
            };
            reenroll(req, shared, who, est, hub).await
        }
        _ => text(StatusCode::NOT_FOUND, "unknown EST operation"),
    }
}

async fn reenroll(
    req: Request<Incoming>,
    shared: &Arc<Shared>,
    who: &Who,
    est: Arc<Est>,
    hub: HubRecord,
) -> Response<Body> {
    let ct = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if !ct.starts_with("application/pkcs10") {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "simplereenroll takes Content-Type: application/pkcs10 (base64 DER)",
        );
    }
    let collect = Limited::new(req.into_body(), MAX_CSR_BODY).collect();
    let body = match tokio::time::timeout(shared.limits.body_timeout, collect).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(_)) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("a CSR body is at most {MAX_CSR_BODY} bytes"),
            )
        }
        Err(_) => return text(StatusCode::REQUEST_TIMEOUT, "request body: too slow"),
    };
    let b64: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let Ok(csr) = base64::engine::general_purpose::STANDARD.decode(&b64) else {
        return text(StatusCode::BAD_REQUEST, "the body is not base64");
    };
    let db = shared.db.clone();
    let hub2 = hub.clone();
    let r = tokio::task::spawn_blocking(move || -> Result<(Vec<u8>, Vec<HubRecord>), Refusal> {
        let now = jiff::Timestamp::now().as_second();
        let mut d = db.lock().map_err(|_| Refusal::Server("lock".into()))?;
        let live = d
            .live_certificates(&hub2.hub_id, now)
            .map_err(|e| Refusal::Server(e.to_string()))?;
        if live >= MAX_LIVE {
            return Err(Refusal::TooMany);
        }
        let (der, rec) = sign(&est, &hub2, &csr)?;
        d.enroll(&rec).map_err(|e| Refusal::Server(e.to_string()))?;
        if let Some((serial, not_after)) = serial_hex(&der) {
            d.record_serial(&rec.fingerprint, &serial, not_after)
                .map_err(|e| Refusal::Server(e.to_string()))?;
        }
        let hubs = d.hubs().map_err(|e| Refusal::Server(e.to_string()))?;
        Ok((der, hubs))
    })
    .await
    .unwrap_or_else(|e| Err(Refusal::Server(e.to_string())));
    match r {
        Ok((der, hubs)) => {
            if let super::Access::Registry(reg) = &shared.access {
                reg.replace(hubs);
            }
            info!(hub = %hub.hub_id, "Hub certificate renewed (EST simplereenroll).");
            pkcs7_answer(&[&der])
        }
        Err(Refusal::Bad(m)) => text(StatusCode::BAD_REQUEST, &m),
        Err(Refusal::Forbidden(m)) => {
            // A 403 with an OperationOutcome and a stored security AuditEvent naming the hub.
            refuse(
                shared,
                who,
                Some(&hub),
                Some(&hub.fingerprint),
                &format!("POST {PREFIX}simplereenroll"),
                &m,
                "C",
            )
            .await
        }
        Err(Refusal::TooMany) => text(
            StatusCode::CONFLICT,
            &format!("this hub already holds {MAX_LIVE} live certificates; use one, or ask the clinic to revoke old ones"),
        ),
        Err(Refusal::Server(m)) => {
            warn!(hub = %hub.hub_id, "EST re-enrolment failed: {m}.");
            fhir_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &outcome("exception", "the clinic could not sign the request"),
            )
        }
    }
}
