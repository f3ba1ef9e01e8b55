//! The authorising front for an external FHIR server (`vitals-clinic serve --fhir-base URL`).
//!
//! Hubs connect to the front exactly as to the embedded ingest: mutual TLS with enrolled, not
//! revoked certificates ([`super::registry`]), the same bounds, timeouts, connection caps and
//! per-hub rate limits ([`super::ingest`] runs the connection; this module only replaces where an
//! authorised request goes). Each request is authorised by the rules of [`super::authz`], then
//! rebuilt — never passed through — and sent to the FHIR base over the clinic network:
//!
//! - **Writes** (transaction Bundles): only `POST` entries of the types a hub writes, every
//!   reference the hub's own patient, an entry of the same Bundle, or a resource the server shows
//!   carrying this hub's tag. Every resource forwarded carries the tag
//!   `urn:vitals-hub:hub-id|<hub id>` in `meta.tag` (any tag of that system the hub sent is
//!   replaced; a Device also gets `patient`, the hub's own, when it has none — what the built-in
//!   store shows, and how the console finds whose hub a heartbeat is from), and every
//!   `ifNoneExist` gains `&_tag=urn:vitals-hub:hub-id|<hub id>`: a conditional
//!   create can only ever match this hub's own resources, so another hub cannot squat its
//!   identifiers. The transaction-response is checked before the hub sees it: one entry per entry
//!   sent, each a 2xx whose location is of the type sent, and every "already there" match proven to
//!   carry this hub's tag (a server that ignored `_tag` in `ifNoneExist` would otherwise hand out
//!   another hub's resource); a response that fails is a 502 and the hub acknowledges nothing.
//! - **Reads**: `metadata`, the hub's own patient count (`Patient?_id=<own>&_summary=count`), its
//!   own Devices by identifier (the search is sent with the hub's `_tag`) or by id (the answer must
//!   carry the hub's tag). Everything else is a 403.
//! - **Refusals** are a 403 with an OperationOutcome and a security `AuditEvent` POSTed to the FHIR
//!   server; when the server refuses or cannot be reached, the refusal stays in the front's log
//!   (WARN, hub id and reason, no patient data).
//!
//! Nothing from the hub's request reaches the server but the rebuilt body and the query the front
//! wrote itself: no hub headers (identity, hop-by-hop, encodings), only `Content-Type`, `Accept`
//! and the front's own `Authorization` when configured. Answers are read through a size cap with
//! a timeout, and only the status, `Retry-After` and the (checked) body go back to the hub.
//!
//! **State**: none beyond the registry (the `hubs` table of the store file given with `--db`,
//! reloaded every [`super::registry::RELOAD_EVERY`]) and a bounded cache of references already
//! proven owned (ownership never changes, so the cache is only a saving). Several fronts can run
//! behind a load balancer, each reading the same registry file.

mod rules;
mod serve;

pub use rules::{check_response, hub_tag, prepare, tag_param, tagged, Prepared};
pub(in crate::clinic) use serve::handle;

use super::authz::{self, WRITABLE};
use super::registry::HUB_ID_SYSTEM;
use hyper::StatusCode;
use serde_json::Value;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// The tag system that marks which hub wrote a resource at the external server.
pub const HUB_TAG_SYSTEM: &str = HUB_ID_SYSTEM;

/// Longest `ifNoneExist` accepted from a hub (its identifiers are well under 300 characters).
pub const MAX_IF_NONE_EXIST: usize = 2_048;

/// Entries of the owned-reference cache before it is cleared.
const OWNED_CACHE: usize = 50_000;

/// Settings of the front.
#[derive(Debug, Clone)]
pub struct FrontConfig {
    /// The FHIR base, e.g. `http://fhir.clinic.internal:8080/fhir`.
    pub base: String,
    /// CA certificates (PEM) for an `https` base.
    pub ca: Option<PathBuf>,
    /// File holding the `Authorization` header value the front sends (e.g. `Bearer …`).
    pub authorization_file: Option<PathBuf>,
    /// Whole-request timeout toward the server.
    pub timeout: Duration,
    /// Largest answer read from the server.
    pub max_response: usize,
}

impl FrontConfig {
    pub fn new(base: &str) -> FrontConfig {
        FrontConfig {
            base: base.to_owned(),
            ca: None,
            authorization_file: None,
            timeout: Duration::from_secs(30),
            max_response: 8 << 20,
        }
    }
}

/// Why the front could not get an answer from the server.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("the FHIR server did not answer within {0} s")]
    Timeout(u64),
    #[error("the FHIR server's answer is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the FHIR server cannot be reached: {0}")]
    Unreachable(String),
}

impl UpstreamError {
    pub fn status(&self) -> StatusCode {
        match self {
            UpstreamError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        }
    }
}

/// An answer of the server: status, `Retry-After`, `Location` (of a create), body.
#[derive(Debug)]
pub struct Upstream {
    pub status: StatusCode,
    pub retry_after: Option<String>,
    pub location: Option<String>,
    pub body: Vec<u8>,
}

/// The front's client of the external FHIR server.
#[derive(Debug)]
pub struct Front {
    base: String,
    client: reqwest::Client,
    authorization: Option<String>,
    timeout: Duration,
    max_response: usize,
    owned: Mutex<HashSet<(String, String)>>,
}

impl Front {
    /// Check the settings and build the client (no request is made).
    pub fn new(cfg: &FrontConfig) -> Result<Front, String> {
        let base = cfg.base.trim_end_matches('/').to_owned();
        let url = reqwest::Url::parse(&base)
            .map_err(|e| format!("--fhir-base {base}: {e}; give the FHIR base URL, e.g. http://fhir.internal:8080/fhir"))?;
        if !matches!(url.scheme(), "http" | "https") || url.query().is_some() {
            return Err(format!(
                "--fhir-base {base}: an http or https URL without a query is needed"
            ));
        }
        let mut roots = rustls::RootCertStore::empty();
        match (&cfg.ca, url.scheme()) {
            (Some(ca), _) => {
                for c in super::tls::load_certs(ca).map_err(|e| e.to_string())? {
                    roots
                        .add(c)
                        .map_err(|e| format!("--fhir-ca {}: {e}", ca.display()))?;
                }
            }
            (None, "https") => {
                return Err(format!(
                    "--fhir-base {base} is https: give the CA of the FHIR server's certificate with --fhir-ca"
                ))
            }
            _ => {}
        }
        let authorization = match &cfg.authorization_file {
            Some(f) => {
                let v = std::fs::read_to_string(f)
                    .map_err(|e| format!("--fhir-authorization-file {}: {e}", f.display()))?
                    .trim()
                    .to_owned();
                if reqwest::header::HeaderValue::from_str(&v).is_err() || v.is_empty() {
                    return Err(format!(
                        "--fhir-authorization-file {}: not a usable Authorization header value",
                        f.display()
                    ));
                }
                Some(v)
            }
            None => None,
        };
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5).min(cfg.timeout))
            .timeout(cfg.timeout)
            .no_proxy()
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("vitals-clinic-front/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("building the FHIR client: {e}"))?;
        Ok(Front {
            base,
            client,
            authorization,
            timeout: cfg.timeout,
            max_response: cfg.max_response,
            owned: Mutex::new(HashSet::new()),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// One request to the server: `rel` is the path (and query) below the base, written by the
    /// front. The answer is read through the size cap, all of it within the timeout.
    pub async fn send(
        &self,
        method: reqwest::Method,
        rel: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Upstream, UpstreamError> {
        let rel = rel.trim_start_matches('/');
        let url = if rel.is_empty() || rel.starts_with('?') {
            format!("{}{rel}", self.base)
        } else {
            format!("{}/{rel}", self.base)
        };
        let mut rb = self
            .client
            .request(method, &url)
            .header(reqwest::header::ACCEPT, "application/fhir+json");
        if let Some(a) = &self.authorization {
            rb = rb.header(reqwest::header::AUTHORIZATION, a);
        }
        if let Some(b) = body {
            rb = rb
                .header(reqwest::header::CONTENT_TYPE, "application/fhir+json")
                .body(b);
        }
        let max = self.max_response;
        let secs = self.timeout.as_secs();
        let run = async move {
            let mut resp = rb.send().await.map_err(|e| upstream_error(&e, secs))?;
            if resp.content_length().is_some_and(|n| n > max as u64) {
                return Err(UpstreamError::TooLarge(max));
            }
            let status =
                StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .filter(|v| v.len() <= 64)
                .map(str::to_owned);
            let location = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .filter(|v| v.len() <= 1024)
                .map(str::to_owned);
            let mut out = Vec::new();
            while let Some(c) = resp.chunk().await.map_err(|e| upstream_error(&e, secs))? {
                if out.len() + c.len() > max {
                    return Err(UpstreamError::TooLarge(max));
                }
                out.extend_from_slice(&c);
            }
            Ok(Upstream {
                status,
                retry_after,
                location,
                body: out,
            })
        };
        tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| UpstreamError::Timeout(self.timeout.as_secs()))?
    }

    /// Whether the server holds `ty/id` carrying this hub's tag (cached once proven).
    pub async fn owns(&self, hub: &str, ty: &str, id: &str) -> Result<bool, UpstreamError> {
        let key = (hub.to_owned(), format!("{ty}/{id}"));
        if self.owned.lock().map(|s| s.contains(&key)).unwrap_or(false) {
            return Ok(true);
        }
        if !authz::valid_logical_id(id) || !WRITABLE.contains(&ty) {
            return Ok(false);
        }
        let r = self.send(reqwest::Method::GET, &key.1, None).await?;
        let owned = r.status == StatusCode::OK
            && serde_json::from_slice::<Value>(&r.body)
                .map(|v| {
                    v.get("resourceType").and_then(Value::as_str) == Some(ty) && tagged(&v, hub)
                })
                .unwrap_or(false);
        if owned {
            if let Ok(mut s) = self.owned.lock() {
                if s.len() >= OWNED_CACHE {
                    s.clear();
                }
                s.insert(key);
            }
        }
        Ok(owned)
    }

    /// Store a security AuditEvent at the server. `Err` says why it is not stored there.
    pub async fn audit(&self, event: &Value) -> Result<(), String> {
        let body = serde_json::to_vec(event).map_err(|e| e.to_string())?;
        match self
            .send(reqwest::Method::POST, "AuditEvent", Some(body))
            .await
        {
            Ok(u) if u.status.is_success() => Ok(()),
            Ok(u) => Err(format!("the FHIR server answered {}", u.status.as_u16())),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// A reqwest error as the front names it: the client's own timeout is a timeout.
fn upstream_error(e: &reqwest::Error, timeout_secs: u64) -> UpstreamError {
    if e.is_timeout() {
        UpstreamError::Timeout(timeout_secs)
    } else {
        UpstreamError::Unreachable(without_url(e))
    }
}

/// A reqwest error without its URL (the query may hold identifiers).
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), "(the FHIR server)");
    }
    if e.is_connect() {
        format!("connection failed ({s})")
    } else {
        s
    }
}
