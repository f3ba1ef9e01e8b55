//! The registry of hubs: every hub certificate the clinic accepts, bound at enrolment to one hub
//! identity and one patient.
//!
//! **Stored** in the clinic's SQLite store (the `hubs` table, [`super::db::ReceiverDb::enroll`]),
//! written by `vitals-clinic hub enroll|revoke` (and by `vitals-hub pki` / the demo for their
//! development hub). **Served** from an in-memory copy ([`Registry`]) that the TLS handshake and the
//! authorisation of every request read without touching the database; the running clinic reloads
//! it from the store every [`RELOAD_EVERY`] (a revocation made by the command line in another
//! process takes effect within that time, and at once on connections opened after it).
//!
//! # The same registry beside an external FHIR server
//!
//! A clinic that keeps its data in an external FHIR server records each enrolment as the hub's
//! PHG `Device` there (the resource the hub itself references as `Observation.device` for its
//! heartbeat):
//!
//! ```json
//! { "resourceType": "Device",
//!   "identifier": [
//!     { "system": "urn:vitals-hub:hub-id", "value": "<hub id>" },
//!     { "system": "urn:ietf:rfc:6920", "type": { "text": "client certificate SHA-256" },
//!       "value": "sha256:<hex of the DER>" } ],
//!   "status": "active",            // "inactive" once revoked
//!   "patient": { "reference": "Patient/<patient id>" },
//!   "note": [{ "text": "subject: CN=…, O=…" }] }
//! ```
//!
//! [`HubRecord::as_fhir_device`] writes exactly this; a front that authorises for an external
//! server loads its [`Registry`] from `Device?identifier=urn:ietf:rfc:6920|` searches instead of
//! the `hubs` table. Revocation is `status = inactive` (the fingerprint identifier stays, so the
//! certificate is never accepted again).

use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// How often a running clinic reloads the registry from its store.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// The identifier system of hub ids on the hub's FHIR `Device`.
pub const HUB_ID_SYSTEM: &str = "urn:vitals-hub:hub-id";
/// The identifier system of certificate fingerprints (RFC 6920 style `sha256:<hex>`).
pub const FINGERPRINT_SYSTEM: &str = "urn:ietf:rfc:6920";

/// One enrolled hub certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubRecord {
    /// `sha256:<hex>` of the certificate's DER.
    pub fingerprint: String,
    /// The certificate's subject, as text (`CN=…, O=…`).
    pub subject: String,
    /// The hub's identity (by default the certificate's common name).
    pub hub_id: String,
    /// The one patient this hub serves (`Patient/<id>` → `<id>`).
    pub patient: String,
    /// RFC 3339, when enrolled.
    pub enrolled: String,
    /// RFC 3339, when revoked (a revoked certificate is refused at the TLS layer).
    pub revoked: Option<String>,
}

impl HubRecord {
    pub fn is_active(&self) -> bool {
        self.revoked.is_none()
    }

    /// The hub's PHG `Device` carrying this enrolment (see the module documentation).
    pub fn as_fhir_device(&self) -> Value {
        json!({
            "resourceType": "Device",
            "identifier": [
                { "system": HUB_ID_SYSTEM, "value": self.hub_id },
                { "system": FINGERPRINT_SYSTEM, "type": { "text": "client certificate SHA-256" },
                  "value": self.fingerprint }
            ],
            "status": if self.is_active() { "active" } else { "inactive" },
            "patient": { "reference": format!("Patient/{}", self.patient) },
            "note": [{ "text": format!("subject: {}", self.subject) }]
        })
    }
}

/// The registry as served: fingerprint → record, shared by the TLS verifier and the request
/// handlers. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct Registry(Arc<RwLock<HashMap<String, HubRecord>>>);

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// The record of an active (enrolled, not revoked) certificate.
    pub fn active(&self, fingerprint: &str) -> Option<HubRecord> {
        self.0
            .read()
            .ok()?
            .get(fingerprint)
            .filter(|r| r.is_active())
            .cloned()
    }

    /// Whether this certificate is enrolled and revoked.
    pub fn is_revoked(&self, fingerprint: &str) -> bool {
        self.0
            .read()
            .ok()
            .and_then(|g| g.get(fingerprint).map(|r| !r.is_active()))
            .unwrap_or(false)
    }

    /// Replace the whole registry (a reload from the store).
    pub fn replace(&self, records: Vec<HubRecord>) {
        let map = records
            .into_iter()
            .map(|r| (r.fingerprint.clone(), r))
            .collect();
        if let Ok(mut g) = self.0.write() {
            *g = map;
        }
    }

    pub fn len(&self) -> usize {
        self.0.read().map(|g| g.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a certificate cannot be enrolled.
#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    #[error("cannot read the certificate {path}: {msg}; give the hub's client certificate (PEM)")]
    Cert { path: String, msg: String },
    #[error("the certificate has no common name; give the hub's identity with --hub-id")]
    NoHubId,
    #[error("hub {hub_id} already serves patient {existing}; a hub serves one patient (revoke it and enrol a new hub)")]
    OtherPatient { hub_id: String, existing: String },
    #[error("this certificate is already enrolled for hub {hub_id}")]
    Already { hub_id: String },
    #[error("this certificate was revoked; a revoked certificate is never enrolled again (mint a new one)")]
    Revoked,
    #[error("{0} is not a usable id: 1–64 characters of A–Z a–z 0–9 - . _")]
    BadId(String),
    #[error("clinic store: {0}")]
    Db(String),
}

/// A FHIR-id-like token: what hub ids and patient ids must look like.
pub fn valid_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

/// Fingerprint, subject and common name of a DER certificate.
pub fn describe_cert(der: &[u8]) -> Result<(String, String, Option<String>), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let subject = cert.subject().to_string();
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .map(str::to_owned);
    Ok((super::tls::fingerprint(der), subject, cn))
}

/// The record `enroll` would store for this certificate (PEM, first block).
pub fn record_for_pem(
    path: &std::path::Path,
    patient: &str,
    hub_id: Option<&str>,
) -> Result<HubRecord, EnrolError> {
    let certs = super::tls::load_certs(path).map_err(|e| EnrolError::Cert {
        path: path.display().to_string(),
        msg: e.to_string(),
    })?;
    let der = certs.first().ok_or_else(|| EnrolError::Cert {
        path: path.display().to_string(),
        msg: "no certificate".into(),
    })?;
    record_for_der(der.as_ref(), patient, hub_id).map_err(|e| match e {
        EnrolError::Cert { msg, .. } => EnrolError::Cert {
            path: path.display().to_string(),
            msg,
        },
        e => e,
    })
}

/// The record for a DER certificate.
pub fn record_for_der(
    der: &[u8],
    patient: &str,
    hub_id: Option<&str>,
) -> Result<HubRecord, EnrolError> {
    let (fingerprint, subject, cn) = describe_cert(der).map_err(|msg| EnrolError::Cert {
        path: "(DER)".into(),
        msg,
    })?;
    let hub_id = hub_id
        .map(str::to_owned)
        .or(cn)
        .ok_or(EnrolError::NoHubId)?;
    if !valid_id(&hub_id) {
        return Err(EnrolError::BadId(hub_id));
    }
    if !valid_id(patient) {
        return Err(EnrolError::BadId(patient.to_owned()));
    }
    Ok(HubRecord {
        fingerprint,
        subject,
        hub_id,
        patient: patient.to_owned(),
        enrolled: jiff::Timestamp::now().to_string(),
        revoked: None,
    })
}
