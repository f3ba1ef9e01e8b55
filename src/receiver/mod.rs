//! A small FHIR ingest endpoint over mutual TLS, for the demo, pilots and tests — not a FHIR server.
//!
//! It accepts transaction Bundles with conditional-create semantics (an `ifNoneExist` identifier
//! seen before answers `200 OK` with the existing location, a new one `201 Created`), applies each
//! transaction atomically in its own SQLite database, rewrites `urn:uuid:` references to the logical
//! ids it assigned, and serves `GET /metadata`, `GET /Observation?identifier=…` and
//! `GET /Observation?patient=…`. TLS is rustls on the ring provider and requires a client
//! certificate that chains to the configured hub CA. A plain-HTTP mode, bound to loopback only, sits
//! behind a TLS terminator (`packaging/clinic/nginx-mtls.conf`) that passes the verified subject in
//! `X-SSL-Client-S-DN`. A scripted [`FaultQueue`] lets tests inject server faults.

pub mod db;
pub mod faults;
pub mod pki;
pub mod tls;

pub use faults::{Fault, FaultQueue};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// Largest request body accepted (compressed or not).
pub const MAX_BODY: usize = 32 << 20;

/// Errors of the receiver.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    /// The listen address could not be bound.
    #[error(
        "receiver cannot listen on {addr}: {source}; pick a free port or stop the other process"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// Plain HTTP is only for a TLS terminator on the same machine.
    #[error("plain-HTTP mode must bind to a loopback address (127.0.0.1 or ::1), not {0}; put nginx (packaging/clinic/nginx-mtls.conf) in front")]
    PlainNotLoopback(SocketAddr),
    /// A certificate, key or CA file could not be used.
    #[error("receiver TLS: {0}")]
    Tls(String),
    /// The receiver's database failed.
    #[error("receiver database {path}: {source}")]
    Db {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
}

/// How the receiver listens.
#[derive(Debug, Clone)]
pub enum Listen {
    /// Mutual TLS with this server configuration (see [`tls::server_config`]).
    Tls(Arc<rustls::ServerConfig>),
    /// Plain HTTP on loopback, behind a TLS terminator.
    PlainLoopback,
}

/// Receiver settings.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    pub bind: SocketAddr,
    pub listen: Listen,
    /// SQLite file; `None` keeps the database in memory.
    pub db_path: Option<PathBuf>,
    pub faults: FaultQueue,
}

/// Counters the tests and the benchmark read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    pub requests: u64,
    pub bundles: u64,
    pub created: u64,
    pub existing: u64,
    pub rejected: u64,
    pub tls_failures: u64,
    pub request_bytes: u64,
}

#[derive(Debug)]
struct Shared {
    db: Mutex<db::ReceiverDb>,
    faults: FaultQueue,
    stats: Mutex<ReceiverStats>,
}

/// A running receiver.
#[derive(Debug)]
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

type Body = BoxBody<Bytes, std::io::Error>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

fn fhir_response(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(full(serde_json::to_vec(v).unwrap_or_default()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/fhir+json"),
    );
    r
}

/// An OperationOutcome with one error issue.
pub fn outcome(code: &str, diagnostics: &str) -> serde_json::Value {
    serde_json::json!({
        "resourceType": "OperationOutcome",
        "issue": [{ "severity": "error", "code": code, "diagnostics": diagnostics }]
    })
}

impl Receiver {
    /// Bind and start serving.
    pub async fn start(cfg: ReceiverConfig) -> Result<Receiver, ReceiverError> {
        if matches!(cfg.listen, Listen::PlainLoopback) && !cfg.bind.ip().is_loopback() {
            return Err(ReceiverError::PlainNotLoopback(cfg.bind));
        }
        let db = db::ReceiverDb::open(cfg.db_path.as_deref())?;
        let listener = TcpListener::bind(cfg.bind)
            .await
            .map_err(|source| ReceiverError::Bind {
                addr: cfg.bind,
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ReceiverError::Bind {
                addr: cfg.bind,
                source,
            })?;
        let shared = Arc::new(Shared {
            db: Mutex::new(db),
            faults: cfg.faults.clone(),
            stats: Mutex::new(ReceiverStats::default()),
        });
        let (stop, stop_rx) = watch::channel(false);
        let acceptor = match &cfg.listen {
            Listen::Tls(sc) => Some(tokio_rustls::TlsAcceptor::from(sc.clone())),
            Listen::PlainLoopback => None,
        };
        let sh = shared.clone();
        let task = tokio::spawn(accept_loop(listener, acceptor, sh, stop_rx));
        info!(%addr, tls = acceptor_is_tls(&cfg.listen), "Receiver listening.");
        Ok(Receiver {
            addr,
            shared,
            stop,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The fault queue (push faults while running).
    pub fn faults(&self) -> &FaultQueue {
        &self.shared.faults
    }

    pub fn stats(&self) -> ReceiverStats {
        self.shared
            .stats
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// How many stored Observations carry each identifier value.
    pub fn observation_identifier_counts(&self) -> std::collections::BTreeMap<String, u64> {
        self.shared
            .db
            .lock()
            .ok()
            .and_then(|d| d.identifier_counts("Observation").ok())
            .unwrap_or_default()
    }

    /// How many resources of a type are stored.
    pub fn count(&self, resource_type: &str) -> u64 {
        self.shared
            .db
            .lock()
            .ok()
            .and_then(|d| d.count(resource_type).ok())
            .unwrap_or(0)
    }

    /// Stored resources of a type (JSON), oldest first.
    pub fn resources(&self, resource_type: &str) -> Vec<serde_json::Value> {
        self.shared
            .db
            .lock()
            .ok()
            .and_then(|d| d.resources(resource_type).ok())
            .unwrap_or_default()
    }

    /// Client identities (certificate fingerprint or proxied subject) seen with stored bundles.
    pub fn clients(&self) -> Vec<String> {
        self.shared
            .db
            .lock()
            .ok()
            .and_then(|d| d.clients().ok())
            .unwrap_or_default()
    }

    /// Stop accepting and wait for the accept loop to end.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

fn acceptor_is_tls(l: &Listen) -> bool {
    matches!(l, Listen::Tls(_))
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.changed() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => { warn!(error = %e, "Accept failed."); continue; }
            },
        };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match acceptor {
                Some(acc) => match acc.accept(tcp).await {
                    Ok(tls) => {
                        let client = tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .map(|c| tls::fingerprint(c.as_ref()));
                        serve(TokioIo::new(tls), shared, client).await;
                    }
                    Err(e) => {
                        if let Ok(mut s) = shared.stats.lock() {
                            s.tls_failures += 1;
                        }
                        debug!(%peer, error = %e, "TLS handshake refused.");
                    }
                },
                None => serve(TokioIo::new(tcp), shared, None).await,
            }
        });
    }
}

async fn serve<I>(io: I, shared: Arc<Shared>, client: Option<String>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        let client = client.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(req, shared, client).await) }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, svc)
        .await
    {
        debug!(error = %e, "Connection ended with an error.");
    }
}

async fn read_body(req: Request<Incoming>) -> Result<Vec<u8>, String> {
    let gz = req
        .headers()
        .get(hyper::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.eq_ignore_ascii_case("gzip"))
        .unwrap_or(false);
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("request body: {e}"))?
        .to_bytes();
    if !gz {
        return Ok(body.to_vec());
    }
    let mut out = Vec::new();
    let dec = flate2::read::GzDecoder::new(body.as_ref());
    use std::io::Read;
    dec.take(MAX_BODY as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("gzip body: {e}"))?;
    if out.len() > MAX_BODY {
        return Err("decompressed body too large".into());
    }
    Ok(out)
}

/// `GET /<type>?identifier=…` or `?patient=…` for the searchable types.
fn search(shared: &Shared, ty: &str, query: &str) -> Response<Body> {
    let res = match shared.db.lock() {
        Ok(d) => {
            if let Some(idp) = query_param(query, "identifier") {
                d.search_identifier(ty, &idp)
            } else if let Some(p) = query_param(query, "patient") {
                d.search_patient_of(ty, &p)
            } else {
                return fhir_response(
                    StatusCode::BAD_REQUEST,
                    &outcome("not-supported", "search by identifier or patient"),
                );
            }
        }
        Err(_) => {
            return fhir_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &outcome("exception", "lock"),
            )
        }
    };
    match res {
        Ok(v) => fhir_response(StatusCode::OK, &db::searchset(v)),
        Err(e) => fhir_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &outcome("exception", &e.to_string()),
        ),
    }
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| crate::fhir::identifier::percent_decode(v))
    })
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    client: Option<String>,
) -> Response<Body> {
    if let Ok(mut s) = shared.stats.lock() {
        s.requests += 1;
    }
    let path = req.uri().path().trim_end_matches('/').to_owned();
    // Behind nginx, the verified client subject arrives as a header; only trusted on loopback.
    let client = client.or_else(|| {
        req.headers()
            .get("x-ssl-client-s-dn")
            .and_then(|v| v.to_str().ok())
            .map(|s| format!("dn:{s}"))
    });
    let query = req.uri().query().unwrap_or("").to_owned();
    let method = req.method().clone();
    let tail = path.rsplit('/').next().unwrap_or("").to_owned();
    match (method, tail.as_str()) {
        (Method::GET, "metadata") => fhir_response(StatusCode::OK, &db::capability_statement()),
        (Method::GET, ty @ ("Observation" | "DetectedIssue")) => search(&shared, ty, &query),
        (Method::POST, _) => {
            let fault = shared.faults.pop();
            if let Some(resp) = faults::before(&fault).await {
                return resp;
            }
            let body = match read_body(req).await {
                Ok(b) => b,
                Err(e) => return fhir_response(StatusCode::BAD_REQUEST, &outcome("invalid", &e)),
            };
            if let Ok(mut s) = shared.stats.lock() {
                s.request_bytes += body.len() as u64;
            }
            let bundle: serde_json::Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => {
                    return fhir_response(
                        StatusCode::BAD_REQUEST,
                        &outcome("structure", &format!("not JSON: {e}")),
                    )
                }
            };
            if let Some(bad) = shared.faults.poisoned_in(&bundle) {
                if let Ok(mut s) = shared.stats.lock() {
                    s.rejected += 1;
                }
                return fhir_response(
                    StatusCode::BAD_REQUEST,
                    &outcome(
                        "invalid",
                        &format!("entry with identifier {bad} is invalid (injected)"),
                    ),
                );
            }
            let result = match shared.db.lock() {
                Ok(mut d) => d.transaction(&bundle, client.as_deref()),
                Err(_) => Err(db::TxError::Server("lock".into())),
            };
            match result {
                Ok((resp, created, existing)) => {
                    if let Ok(mut s) = shared.stats.lock() {
                        s.bundles += 1;
                        s.created += created;
                        s.existing += existing;
                    }
                    faults::after(&fault, fhir_response(StatusCode::OK, &resp)).await
                }
                Err(db::TxError::Invalid(msg)) => {
                    if let Ok(mut s) = shared.stats.lock() {
                        s.rejected += 1;
                    }
                    fhir_response(StatusCode::BAD_REQUEST, &outcome("invalid", &msg))
                }
                Err(db::TxError::Multiple(msg)) => {
                    fhir_response(StatusCode::PRECONDITION_FAILED, &outcome("duplicate", &msg))
                }
                Err(db::TxError::Server(msg)) => fhir_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &outcome("exception", &msg),
                ),
            }
        }
        _ => fhir_response(
            StatusCode::NOT_FOUND,
            &outcome("not-found", "unknown endpoint"),
        ),
    }
}
