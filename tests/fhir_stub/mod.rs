//! A small FHIR server stub over mutual TLS (hyper + tokio-rustls, on 127.0.0.1:0) for behaviours
//! no installable server shows on demand: a wrong base path, a transaction size limit, a server
//! that refuses everything, and hostile answers (huge bodies generated on the fly, huge
//! OperationOutcomes, garbage `location`s). It answers transaction Bundles with a
//! transaction-response (201 and `<Type>/<n>` per entry) and counts Observations by identifier.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// How the stub answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// A well-behaved FHIR server.
    Accept,
    /// 400 with an OperationOutcome for every request (auth, validation settings…).
    RefuseAll,
    /// Refuses transactions of more than this many entries, as Medplum does.
    MaxEntries(usize),
    /// 200 with this many spaces, then a valid transaction-response (never buffered here).
    HugePadding(u64),
    /// 400 with an OperationOutcome whose diagnostics are this many bytes.
    HugeOutcome(usize),
    /// 200 transaction-response whose every entry is 201 with this `location`.
    Location(String),
    /// This HTTP status with an empty body for every transaction (a proxy's 502).
    Status(u16),
}

type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

#[derive(Debug, Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub refused: AtomicU64,
    pub metadata: AtomicU64,
}

#[derive(Debug)]
pub struct Stub {
    pub addr: std::net::SocketAddr,
    pub mode: Arc<Mutex<Mode>>,
    /// Observation identifier value → times created (conditional create: once).
    pub observations: Arc<Mutex<HashMap<String, u32>>>,
    /// Every entry count of a transaction that was accepted / refused.
    pub sizes: Arc<Mutex<Vec<(usize, bool)>>>,
    pub counters: Arc<Counters>,
    /// The base path the server serves (`/fhir`); anything else is refused with 400.
    pub base_path: String,
    /// The CapabilityStatement served at `<base>/metadata`.
    pub capability: Arc<Mutex<Value>>,
    /// Referential integrity: Observations whose `subject` names a Patient not in `patients`
    /// are refused (HAPI with enforced referential integrity, Medplum).
    pub strict_refs: Arc<std::sync::atomic::AtomicBool>,
    pub patients: Arc<Mutex<std::collections::HashSet<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A capability statement announcing transaction and conditional create.
pub fn capable() -> Value {
    json!({"resourceType": "CapabilityStatement", "status": "active", "kind": "instance",
        "fhirVersion": "4.0.1", "format": ["json"],
        "rest": [{"mode": "server",
            "interaction": [{"code": "transaction"}, {"code": "batch"}],
            "resource": [
                {"type": "Observation", "conditionalCreate": true, "interaction": [{"code": "create"}]},
                {"type": "Device", "conditionalCreate": true, "interaction": [{"code": "create"}]}]}]})
}

impl Stub {
    /// Serve with `server` (a certificate for localhost) and require clients from `client_ca`.
    pub async fn start(
        server_cert: &[u8],
        server_key: &[u8],
        client_ca: &[u8],
        mode: Mode,
    ) -> Stub {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(client_ca.to_vec())).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![CertificateDer::from(server_cert.to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.to_vec())),
            )
            .unwrap();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = State {
            mode: Arc::new(Mutex::new(mode)),
            observations: Arc::default(),
            sizes: Arc::default(),
            counters: Arc::default(),
            base_path: "/fhir".into(),
            capability: Arc::new(Mutex::new(capable())),
            next_id: Arc::default(),
            strict_refs: Arc::default(),
            patients: Arc::default(),
        };
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let st = st.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, std::convert::Infallible>(st.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Stub {
            addr,
            mode: state.mode,
            observations: state.observations,
            sizes: state.sizes,
            counters: state.counters,
            base_path: state.base_path,
            capability: state.capability,
            strict_refs: state.strict_refs,
            patients: state.patients,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("https://localhost:{}{}", self.addr.port(), self.base_path)
    }

    pub fn set_mode(&self, m: Mode) {
        *self.mode.lock().unwrap() = m;
    }

    pub fn observation_counts(&self) -> HashMap<String, u32> {
        self.observations.lock().unwrap().clone()
    }

    /// The server is restored from an old backup: everything it stored is gone.
    pub fn wipe(&self) {
        self.observations.lock().unwrap().clear();
    }

    /// Transactions refused since the start.
    pub fn refused(&self) -> u64 {
        self.counters.refused.load(Ordering::SeqCst)
    }
}

#[derive(Debug, Clone)]
struct State {
    mode: Arc<Mutex<Mode>>,
    observations: Arc<Mutex<HashMap<String, u32>>>,
    sizes: Arc<Mutex<Vec<(usize, bool)>>>,
    counters: Arc<Counters>,
    base_path: String,
    capability: Arc<Mutex<Value>>,
    next_id: Arc<AtomicU64>,
    strict_refs: Arc<std::sync::atomic::AtomicBool>,
    patients: Arc<Mutex<std::collections::HashSet<String>>>,
}

fn full(status: u16, v: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/fhir+json")
        .body(
            Full::new(Bytes::from(serde_json::to_vec(v).unwrap()))
                .map_err(|never| match never {})
                .boxed(),
        )
        .unwrap()
}

pub fn outcome(code: &str, diagnostics: &str) -> Value {
    json!({"resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}]})
}

impl State {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        self.counters.requests.fetch_add(1, Ordering::SeqCst);
        let path = req.uri().path().trim_end_matches('/').to_owned();
        if req.method() == hyper::Method::GET && path == format!("{}/metadata", self.base_path) {
            self.counters.metadata.fetch_add(1, Ordering::SeqCst);
            let cap = self.capability.lock().unwrap().clone();
            return full(200, &cap);
        }
        if req.method() == hyper::Method::GET && path == format!("{}/Patient", self.base_path) {
            let q = req.uri().query().unwrap_or("").to_owned();
            let id = q
                .split('&')
                .find_map(|kv| kv.strip_prefix("_id="))
                .unwrap_or("")
                .to_owned();
            let n = u64::from(self.patients.lock().unwrap().contains(&id));
            return full(
                200,
                &json!({"resourceType": "Bundle", "type": "searchset", "total": n}),
            );
        }
        let gz = req
            .headers()
            .get("content-encoding")
            .is_some_and(|v| v.as_bytes() == b"gzip");
        let raw = req.into_body().collect().await.map(|b| b.to_bytes());
        let Ok(raw) = raw else {
            return full(400, &outcome("structure", "body"));
        };
        let body = if gz {
            use std::io::Read;
            let mut out = Vec::new();
            if flate2::read::GzDecoder::new(raw.as_ref())
                .read_to_end(&mut out)
                .is_err()
            {
                return full(400, &outcome("structure", "gzip"));
            }
            out
        } else {
            raw.to_vec()
        };
        let mode = self.mode.lock().unwrap().clone();
        let Ok(bundle) = serde_json::from_slice::<Value>(&body) else {
            return full(400, &outcome("structure", "not JSON"));
        };
        let entries = bundle["entry"].as_array().cloned().unwrap_or_default();
        let refuse = |me: &State, status: u16, v: &Value| {
            me.counters.refused.fetch_add(1, Ordering::SeqCst);
            me.sizes.lock().unwrap().push((entries.len(), false));
            full(status, v)
        };
        if path != self.base_path {
            // HAPI at a wrong base path: the first segment is taken for a resource type.
            return refuse(
                self,
                400,
                &outcome("processing", "HAPI-0302: Unknown resource type 'wrong' - Server knows how to handle: [Observation, Device, Patient]"),
            );
        }
        match mode {
            Mode::RefuseAll => {
                return refuse(
                    self,
                    400,
                    &outcome(
                        "invalid",
                        "Resource Patient/p is not known (referential integrity)",
                    ),
                );
            }
            Mode::MaxEntries(n) if entries.len() > n => {
                return refuse(
                    self,
                    400,
                    &outcome(
                        "invalid",
                        "Transaction requires strict isolation but has too many entries",
                    ),
                );
            }
            Mode::Status(code) => {
                self.counters.refused.fetch_add(1, Ordering::SeqCst);
                return Response::builder()
                    .status(code)
                    .body(
                        Full::new(Bytes::new())
                            .map_err(|never| match never {})
                            .boxed(),
                    )
                    .unwrap();
            }
            Mode::HugeOutcome(size) => {
                let text = "x".repeat(size);
                return refuse(self, 400, &outcome("invalid", &text));
            }
            Mode::HugePadding(n) => {
                let tail = serde_json::to_vec(&self.accept(&entries)).unwrap();
                return padded(n, tail);
            }
            Mode::Location(loc) => {
                let resp: Vec<Value> = entries
                    .iter()
                    .map(|_| json!({"response": {"status": "201 Created", "location": loc}}))
                    .collect();
                return full(
                    200,
                    &json!({"resourceType": "Bundle", "type": "transaction-response", "entry": resp}),
                );
            }
            _ => {}
        }
        if self.strict_refs.load(Ordering::SeqCst) {
            let patients = self.patients.lock().unwrap().clone();
            for e in &entries {
                if let Some(r) = e["resource"]["subject"]["reference"].as_str() {
                    if let Some(id) = r.strip_prefix("Patient/") {
                        if !patients.contains(id) {
                            let text = format!(
                                "Resource {r} not found, specified in path: Observation.subject"
                            );
                            return refuse(self, 400, &outcome("processing", &text));
                        }
                    }
                }
            }
        }
        self.sizes.lock().unwrap().push((entries.len(), true));
        let v = self.accept(&entries);
        full(200, &v)
    }

    fn accept(&self, entries: &[Value]) -> Value {
        let mut resp = Vec::new();
        for e in entries {
            let ty = e["resource"]["resourceType"]
                .as_str()
                .unwrap_or("Unknown")
                .to_owned();
            let mut status = "201 Created";
            if ty == "Observation" {
                let ident = e["resource"]["identifier"][0]["value"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned();
                let mut o = self.observations.lock().unwrap();
                let c = o.entry(ident).or_insert(0);
                if *c > 0 {
                    status = "200 OK";
                } else {
                    *c = 1;
                }
            }
            let id = self.next_id.fetch_add(1, Ordering::SeqCst) + 1;
            resp.push(json!({"response": {"status": status, "location": format!("{ty}/{id}/_history/1")}}));
        }
        json!({"resourceType": "Bundle", "type": "transaction-response", "entry": resp})
    }
}

/// A 200 whose body is `n` spaces then `tail`, generated as it is sent (never held in memory).
fn padded(n: u64, tail: Vec<u8>) -> Response<Body> {
    const CHUNK: usize = 64 * 1024;
    let spaces = Bytes::from(vec![b' '; CHUNK]);
    let count = n / CHUNK as u64;
    let stream = futures::stream::iter(0..count)
        .map(move |_| Ok::<_, std::io::Error>(Frame::data(spaces.clone())))
        .chain(futures::stream::once(async move {
            Ok::<_, std::io::Error>(Frame::data(Bytes::from(tail)))
        }));
    Response::builder()
        .status(200)
        .header("content-type", "application/fhir+json")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap()
}

use futures::StreamExt;
