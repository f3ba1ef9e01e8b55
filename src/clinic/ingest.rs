//! The hubs' FHIR ingest endpoint over mutual TLS — not a general FHIR server.
//!
//! It accepts transaction Bundles with conditional-create semantics (an `ifNoneExist` identifier
//! seen before answers `200 OK` with the existing location, a new one `201 Created`), applies each
//! transaction atomically in the clinic's SQLite store, rewrites `urn:uuid:` references to the
//! logical ids it assigned, and serves `GET /metadata`. TLS is rustls on the ring provider.
//!
//! **Access.** With [`Access::Registry`] (what `vitals-clinic serve` and the demo run) a client
//! certificate must chain to the hub CA *and* be enrolled, not revoked ([`super::registry`]); every
//! request is then authorised for that hub: it writes only for its own patient and its own
//! resources, its conditional creates match only its own resources, it reads only its own
//! `Device`s. A refusal is a 403 with an OperationOutcome and a stored security `AuditEvent`
//! naming the hub. [`Access::Open`] (tests of the hub's uplink, the legacy plain mode) accepts any
//! certificate of the CA and authorises nothing: never for patient data.
//!
//! **Plain mode behind a proxy.** [`Listen::Proxied`] serves plain HTTP on loopback only and
//! trusts the identity header (`X-SSL-Client-Cert`, the verified client certificate nginx passes)
//! only on requests carrying the proxy's shared secret (`X-Clinic-Proxy-Secret`); see
//! `packaging/clinic/nginx-mtls.conf`. [`Listen::ProxiedUnix`] serves a Unix socket instead and
//! trusts the header only on connections whose peer uid is the proxy's ([`super::unix`]).
//!
//! **Front.** With [`ClinicOptions::front`] the connection handling, identification, admission and
//! bounds here stay the same, and each identified hub's request is authorised and forwarded to an
//! external FHIR server by [`super::front`] instead of the store; the rules both apply are
//! [`super::authz`].
//!
//! **Bounds** ([`super::limits::Limits`]): body, decompressed size, depth, strings and value count
//! checked before the parse; parsing and database work on the blocking pool, at most
//! `max_inflight` at once; handshake, header, body and idle timeouts; a connection cap with load
//! shedding, the oldest unfinished handshake dropped for a new one; per-hub connection, in-flight
//! and rate limits; the accept loop backs off (and logs once) when descriptors run out.
//!
//! A scripted [`FaultQueue`] lets tests inject server faults.
//!
//! Size: over 800 lines: the request path (identify, bound, authorise, store, audit) is one
//! pipeline kept in one place so every request visibly passes every check; bounds are in `limits`,
//! the store in `db`, the registry in `registry`.

use super::authz::{self, audit_event, query_param};
use super::db::{self, Scope};
use super::faults;
use super::limits::{self, Bucket, Limits};
use super::registry::{HubRecord, Registry};
use super::tls;
use super::{FaultQueue, ReceiverError};
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Semaphore};
use tracing::{debug, info, warn};

/// Largest request body accepted by default (compressed or not).
pub const MAX_BODY: usize = 8 << 20;

/// How the receiver listens.
#[derive(Debug, Clone)]
pub enum Listen {
    /// Mutual TLS with this server configuration (see [`tls::server_config_registry`]).
    Tls(Arc<rustls::ServerConfig>),
    /// Plain HTTP on loopback, identity from the `X-SSL-Client-S-DN` header of anyone: only with
    /// [`Access::Open`] (tests of the hub side); never for patient data.
    PlainLoopback,
    /// Plain HTTP on loopback behind the TLS terminator: the identity header is trusted only with
    /// `X-Clinic-Proxy-Secret: <secret>`.
    Proxied { secret: String },
    /// Plain HTTP on a Unix socket behind the TLS terminator: the identity header is trusted only
    /// on connections whose peer (`SO_PEERCRED`) runs as `proxy_uid` ([`super::unix`]).
    ProxiedUnix { path: PathBuf, proxy_uid: u32 },
}

/// Who may do what.
#[derive(Debug, Clone, Default)]
pub enum Access {
    /// Any client the TLS layer accepted may write anything (tests of the hub's uplink).
    #[default]
    Open,
    /// Enrolled hubs only, each confined to its patient and its own resources.
    Registry(Registry),
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

/// Access and bounds ([`Receiver::start_with`]).
#[derive(Debug, Clone, Default)]
pub struct ClinicOptions {
    pub access: Access,
    pub limits: Limits,
    /// Forward authorised requests to this external FHIR server instead of storing them
    /// ([`super::front`]); needs [`Access::Registry`].
    pub front: Option<Arc<super::front::Front>>,
    /// Serve EST re-enrolment signed by the hub CA ([`super::est`]); needs [`Access::Registry`].
    pub est: Option<Arc<super::est::Est>>,
    /// The CRL the TLS verifier checks, re-read every [`super::registry::RELOAD_EVERY`] when it
    /// changed ([`tls::CrlWatch`]).
    pub crl: Option<Arc<tls::CrlWatch>>,
}

/// Counters the tests and the benchmark read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    pub requests: u64,
    pub bundles: u64,
    pub created: u64,
    pub existing: u64,
    pub rejected: u64,
    pub forbidden: u64,
    pub throttled: u64,
    pub shed: u64,
    pub tls_failures: u64,
    pub request_bytes: u64,
}

#[derive(Debug)]
pub(super) struct Shared {
    pub(super) db: Arc<Mutex<db::ReceiverDb>>,
    faults: FaultQueue,
    stats: Mutex<ReceiverStats>,
    pub(super) access: Access,
    pub(super) est: Option<Arc<super::est::Est>>,
    listen: Listen,
    pub(super) limits: Limits,
    pub(super) work: Arc<Semaphore>,
    front: Option<Arc<super::front::Front>>,
    buckets: Mutex<HashMap<String, Bucket>>,
    hub_inflight: Mutex<HashMap<String, usize>>,
    hub_conns: Mutex<HashMap<String, usize>>,
}

/// A running receiver.
#[derive(Debug)]
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

pub(crate) type Body = BoxBody<Bytes, std::io::Error>;

pub(crate) fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// No processing slot free in time: counted as shed, a 503 with `Retry-After: 5` (the hub backs
/// off and sends again; nothing was read or stored).
pub(super) fn busy(shared: &Shared) -> Response<Body> {
    bump(shared, |s| s.shed += 1);
    let mut r = fhir_response(
        StatusCode::SERVICE_UNAVAILABLE,
        &outcome("transient", "the clinic is busy; retry later"),
    );
    r.headers_mut().insert(
        hyper::header::RETRY_AFTER,
        hyper::header::HeaderValue::from_static("5"),
    );
    r
}

pub(crate) fn fhir_response(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(full(serde_json::to_vec(v).unwrap_or_default()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/fhir+json"),
    );
    r
}

/// An OperationOutcome with one error issue.
pub fn outcome(code: &str, diagnostics: &str) -> Value {
    json!({
        "resourceType": "OperationOutcome",
        "issue": [{ "severity": "error", "code": code, "diagnostics": diagnostics }]
    })
}

impl Receiver {
    /// Bind and start serving with [`Access::Open`] and the default bounds.
    pub async fn start(cfg: ReceiverConfig) -> Result<Receiver, ReceiverError> {
        Receiver::start_with(cfg, ClinicOptions::default()).await
    }

    /// Bind and start serving.
    pub async fn start_with(
        cfg: ReceiverConfig,
        opts: ClinicOptions,
    ) -> Result<Receiver, ReceiverError> {
        let plain = !matches!(cfg.listen, Listen::Tls(_));
        let unix_path = match &cfg.listen {
            Listen::ProxiedUnix { path, .. } => Some(path.clone()),
            _ => None,
        };
        if plain && unix_path.is_none() && !cfg.bind.ip().is_loopback() {
            return Err(ReceiverError::PlainNotLoopback(cfg.bind));
        }
        if matches!(cfg.listen, Listen::PlainLoopback) && matches!(opts.access, Access::Registry(_))
        {
            return Err(ReceiverError::Tls(
                "plain mode with the hub registry needs the proxy's shared secret (--proxy-secret-file)".into(),
            ));
        }
        if let Listen::Proxied { secret } = &cfg.listen {
            if secret.len() < 16 {
                return Err(ReceiverError::Tls(
                    "the proxy secret must be at least 16 characters".into(),
                ));
            }
        }
        if (opts.est.is_some() || opts.crl.is_some()) && !matches!(opts.access, Access::Registry(_))
        {
            return Err(ReceiverError::Tls(
                "EST re-enrolment and the CRL work with the hub registry only".into(),
            ));
        }
        if opts.front.is_some() && !matches!(opts.access, Access::Registry(_)) {
            return Err(ReceiverError::Tls(
                "the front for an external FHIR server authorises by the hub registry only".into(),
            ));
        }
        let db = db::ReceiverDb::open(cfg.db_path.as_deref())?;
        if let Access::Registry(reg) = &opts.access {
            reg.replace(db.hubs().map_err(|source| ReceiverError::Db {
                path: cfg.db_path.clone().unwrap_or_else(|| ":memory:".into()),
                source,
            })?);
        }
        let (listener, addr) = match &unix_path {
            Some(path) => (Err(super::unix::bind(path)?), cfg.bind),
            None => {
                let l =
                    TcpListener::bind(cfg.bind)
                        .await
                        .map_err(|source| ReceiverError::Bind {
                            addr: cfg.bind,
                            source,
                        })?;
                let addr = l.local_addr().map_err(|source| ReceiverError::Bind {
                    addr: cfg.bind,
                    source,
                })?;
                (Ok(l), addr)
            }
        };
        let shared = Arc::new(Shared {
            db: Arc::new(Mutex::new(db)),
            faults: cfg.faults.clone(),
            stats: Mutex::new(ReceiverStats::default()),
            access: opts.access.clone(),
            listen: cfg.listen.clone(),
            front: opts.front.clone(),
            est: opts.est.clone(),
            work: Arc::new(Semaphore::new(opts.limits.max_inflight.max(1))),
            limits: opts.limits,
            buckets: Mutex::new(HashMap::new()),
            hub_inflight: Mutex::new(HashMap::new()),
            hub_conns: Mutex::new(HashMap::new()),
        });
        let (stop, stop_rx) = watch::channel(false);
        let acceptor = match &cfg.listen {
            Listen::Tls(sc) => Some(tokio_rustls::TlsAcceptor::from(sc.clone())),
            _ => None,
        };
        if let Access::Registry(reg) = &opts.access {
            tokio::spawn(reload_registry(
                reg.clone(),
                shared.db.clone(),
                stop_rx.clone(),
            ));
        }
        if let Some(w) = &opts.crl {
            tokio::spawn(reload_crl(w.clone(), stop_rx.clone()));
        }
        let sh = shared.clone();
        let task = match listener {
            Ok(l) => tokio::spawn(accept_loop(l, acceptor, sh, stop_rx)),
            Err(u) => tokio::spawn(super::unix::accept_loop(u, sh, stop_rx)),
        };
        info!(%addr, tls = !plain, registry = matches!(opts.access, Access::Registry(_)), "Clinic ingest listening.");
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

    fn with_db<T: Default>(&self, f: impl FnOnce(&mut db::ReceiverDb) -> Option<T>) -> T {
        self.shared
            .db
            .lock()
            .ok()
            .and_then(|mut d| f(&mut d))
            .unwrap_or_default()
    }

    /// How many stored Observations carry each identifier value.
    pub fn observation_identifier_counts(&self) -> BTreeMap<String, u64> {
        self.with_db(|d| d.identifier_counts("Observation").ok())
    }

    /// How many resources of a type are stored.
    pub fn count(&self, resource_type: &str) -> u64 {
        self.with_db(|d| d.count(resource_type).ok())
    }

    /// Stored resources of a type (JSON), oldest first.
    pub fn resources(&self, resource_type: &str) -> Vec<Value> {
        self.with_db(|d| d.resources(resource_type).ok())
    }

    /// Stored resources of a type for one patient, oldest first.
    pub fn resources_of_patient(&self, resource_type: &str, patient: &str) -> Vec<Value> {
        self.with_db(|d| d.search_patient_of(resource_type, patient).ok())
    }

    /// Client identities (certificate fingerprint or proxied subject) seen with stored bundles.
    pub fn clients(&self) -> Vec<String> {
        self.with_db(|d| d.clients().ok())
    }

    /// Enrol a hub certificate in this clinic's store, effective at once.
    /// Create a resource as the console does (`Task`, `AuditEvent`, `ServiceRequest`): its id.
    pub fn create_console_resource(&self, resource: &Value) -> Option<String> {
        self.with_db(|d| Some(d.create_console(resource).ok()))
    }

    pub fn enroll(&self, rec: &HubRecord) -> Result<(), super::registry::EnrolError> {
        let mut d = self
            .shared
            .db
            .lock()
            .map_err(|_| super::registry::EnrolError::Db("lock".into()))?;
        d.enroll(rec)?;
        self.refresh_registry(&d);
        Ok(())
    }

    /// Revoke a hub (by id) or one certificate (by fingerprint), effective at once.
    pub fn revoke(&self, hub_or_fingerprint: &str) -> usize {
        let Ok(mut d) = self.shared.db.lock() else {
            return 0;
        };
        let n = d.revoke(hub_or_fingerprint).unwrap_or(0);
        self.refresh_registry(&d);
        n
    }

    fn refresh_registry(&self, d: &db::ReceiverDb) {
        if let (Access::Registry(reg), Ok(h)) = (&self.shared.access, d.hubs()) {
            reg.replace(h);
        }
    }

    /// Stop accepting and wait for the accept loop to end.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn reload_registry(
    reg: Registry,
    db: Arc<Mutex<db::ReceiverDb>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(super::registry::RELOAD_EVERY) => {}
        }
        let db = db.clone();
        let hubs = tokio::task::spawn_blocking(move || db.lock().ok().map(|d| d.hubs()))
            .await
            .ok()
            .flatten();
        match hubs {
            Some(Ok(h)) => reg.replace(h),
            Some(Err(e)) => {
                warn!(error = %e, "Reloading the hub registry failed; keeping the last one.")
            }
            None => {}
        }
    }
}

/// Re-read the CRL file when it changed; a broken file keeps the last good CRL (logged once per
/// change).
async fn reload_crl(w: Arc<tls::CrlWatch>, mut stop: watch::Receiver<bool>) {
    let mut logged = false;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(super::registry::RELOAD_EVERY) => {}
        }
        let w2 = w.clone();
        match tokio::task::spawn_blocking(move || w2.reload()).await {
            Ok(Ok(_)) => logged = false,
            Ok(Err(e)) if !logged => {
                warn!(error = %e, "Reloading the CRL failed; the last good one stays in force.");
                logged = true;
            }
            _ => {}
        }
    }
}

pub(super) fn bump(shared: &Shared, f: impl FnOnce(&mut ReceiverStats)) {
    if let Ok(mut s) = shared.stats.lock() {
        f(&mut s);
    }
}

/// Connections still in the TLS handshake, oldest first: a new connection over the cap drops the
/// oldest (so a flood of connections that never speak TLS cannot keep a real hub out).
#[derive(Debug, Default)]
struct Handshakes {
    next: u64,
    pending: BTreeMap<u64, oneshot::Sender<()>>,
}

impl Handshakes {
    fn admit(&mut self, cap: usize) -> (u64, oneshot::Receiver<()>) {
        while self.pending.len() >= cap.max(1) {
            match self.pending.pop_first() {
                Some((_, tx)) => {
                    let _ = tx.send(());
                }
                None => break,
            }
        }
        let (tx, rx) = oneshot::channel();
        self.next += 1;
        self.pending.insert(self.next, tx);
        (self.next, rx)
    }
    fn evict_oldest(&mut self, n: usize) {
        for _ in 0..n {
            match self.pending.pop_first() {
                Some((_, tx)) => {
                    let _ = tx.send(());
                }
                None => break,
            }
        }
    }
}

pub(super) fn is_fd_exhaustion(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23) | Some(24)) // ENFILE, EMFILE
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let conns = Arc::new(Semaphore::new(shared.limits.max_connections.max(1)));
    let handshakes = Arc::new(Mutex::new(Handshakes::default()));
    let mut backoff = Duration::from_millis(5);
    let mut fd_logged = false;
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.changed() => return,
            r = listener.accept() => match r {
                Ok(x) => { backoff = Duration::from_millis(5); fd_logged = false; x }
                Err(e) => {
                    if is_fd_exhaustion(&e) {
                        if !fd_logged {
                            warn!(error = %e, "Out of file descriptors: accepting backs off and the oldest unfinished handshakes are dropped.");
                            fd_logged = true;
                        }
                        if let Ok(mut h) = handshakes.lock() { h.evict_oldest(16); }
                    } else {
                        debug!(error = %e, "Accept failed.");
                    }
                    tokio::select! {
                        _ = stop.changed() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let Ok(permit) = conns.clone().try_acquire_owned() else {
            bump(&shared, |s| s.shed += 1);
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        let acceptor = acceptor.clone();
        let handshakes = handshakes.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let activity = Arc::new(Activity::new());
            let io = Tracked {
                inner: tcp,
                act: activity.clone(),
            };
            match acceptor {
                Some(acc) => {
                    let (id, evicted) = match handshakes.lock() {
                        Ok(mut h) => h.admit(shared.limits.max_handshakes),
                        Err(_) => return,
                    };
                    let hs = tokio::select! {
                        r = tokio::time::timeout(shared.limits.handshake_timeout, acc.accept(io)) => r,
                        _ = evicted => { debug!(%peer, "Unfinished handshake dropped for a newer connection."); return; }
                    };
                    if let Ok(mut h) = handshakes.lock() {
                        h.pending.remove(&id);
                    }
                    match hs {
                        Ok(Ok(tls)) => {
                            let fp = tls
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .map(|c| tls::fingerprint(c.as_ref()));
                            let hub = match (&shared.access, &fp) {
                                (Access::Registry(reg), Some(fp)) => reg.active(fp),
                                _ => None,
                            };
                            let _slot = match &hub {
                                Some(h) => match HubConn::take(&shared, &h.hub_id) {
                                    Some(s) => Some(s),
                                    None => {
                                        bump(&shared, |s| s.shed += 1);
                                        debug!(hub = %h.hub_id, "Too many connections of this hub: closed.");
                                        return;
                                    }
                                },
                                None => None,
                            };
                            let who = Who {
                                fingerprint: fp,
                                peer,
                                peer_uid: None,
                            };
                            serve(TokioIo::new(tls), shared, who, activity).await;
                        }
                        Ok(Err(e)) => {
                            bump(&shared, |s| s.tls_failures += 1);
                            debug!(%peer, error = %e, "TLS handshake refused.");
                        }
                        Err(_) => {
                            bump(&shared, |s| s.tls_failures += 1);
                            debug!(%peer, "TLS handshake timed out.");
                        }
                    }
                }
                None => {
                    let who = Who {
                        fingerprint: None,
                        peer,
                        peer_uid: None,
                    };
                    serve(TokioIo::new(io), shared, who, activity).await
                }
            }
        });
    }
}

/// One authenticated connection of a hub (released on drop).
struct HubConn {
    shared: Arc<Shared>,
    hub: String,
}

impl HubConn {
    fn take(shared: &Arc<Shared>, hub: &str) -> Option<HubConn> {
        let mut m = shared.hub_conns.lock().ok()?;
        let n = m.entry(hub.to_owned()).or_insert(0);
        if *n >= shared.limits.per_hub_connections {
            return None;
        }
        *n += 1;
        Some(HubConn {
            shared: shared.clone(),
            hub: hub.to_owned(),
        })
    }
}

impl Drop for HubConn {
    fn drop(&mut self) {
        if let Ok(mut m) = self.shared.hub_conns.lock() {
            if let Some(n) = m.get_mut(&self.hub) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    m.remove(&self.hub);
                }
            }
        }
    }
}

/// Last traffic on a connection and the requests in progress on it (for the idle timeout).
#[derive(Debug)]
pub(super) struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    inflight: AtomicUsize,
}

impl Activity {
    pub(super) fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            inflight: AtomicUsize::new(0),
        }
    }
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }
    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// A stream that records when it last moved bytes.
pub(super) struct Tracked<S> {
    pub(super) inner: S,
    pub(super) act: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.act.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.act.touch();
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The peer of a connection.
#[derive(Debug, Clone)]
pub(super) struct Who {
    pub(super) fingerprint: Option<String>,
    pub(super) peer: SocketAddr,
    /// The peer's uid, on a Unix socket.
    pub(super) peer_uid: Option<u32>,
}

async fn idle_watch(act: Arc<Activity>, idle: Duration) {
    loop {
        let quiet = act.idle_for();
        if quiet >= idle && act.inflight.load(Ordering::Relaxed) == 0 {
            return;
        }
        tokio::time::sleep(idle.saturating_sub(quiet).max(Duration::from_millis(200))).await;
    }
}

pub(super) async fn serve<I>(io: I, shared: Arc<Shared>, who: Who, act: Arc<Activity>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let idle = shared.limits.idle_timeout;
    let header_timeout = shared.limits.header_timeout;
    let a2 = act.clone();
    let svc = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        let who = who.clone();
        let act = a2.clone();
        async move {
            act.inflight.fetch_add(1, Ordering::Relaxed);
            let r = handle(req, shared, who).await;
            act.inflight.fetch_sub(1, Ordering::Relaxed);
            act.touch();
            Ok::<_, std::convert::Infallible>(r)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(64 << 10)
        .serve_connection(io, svc);
    tokio::select! {
        r = conn => if let Err(e) = r { debug!(error = %e, "Connection ended with an error."); },
        _ = idle_watch(act, idle) => debug!("Idle connection closed."),
    }
}

pub(super) async fn read_body(req: Request<Incoming>, lim: &Limits) -> Result<Vec<u8>, String> {
    let gz = req
        .headers()
        .get(hyper::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.eq_ignore_ascii_case("gzip"))
        .unwrap_or(false);
    let collect = Limited::new(req.into_body(), lim.max_body).collect();
    let body = tokio::time::timeout(lim.body_timeout, collect)
        .await
        .map_err(|_| "request body: too slow".to_owned())?
        .map_err(|e| format!("request body: {e}"))?
        .to_bytes();
    if !gz {
        if body.len() > lim.max_json {
            return Err("body too large".into());
        }
        return Ok(body.to_vec());
    }
    let max = lim.max_json;
    tokio::task::spawn_blocking(move || limits::gunzip_capped(&body, max))
        .await
        .map_err(|e| format!("gzip body: {e}"))?
}

/// The hub of the verified client certificate the proxy passes (`X-SSL-Client-Cert`, URL-escaped
/// PEM), once the request is known to come from the proxy.
fn proxied_hub(
    req: &Request<Incoming>,
    reg: &Registry,
) -> Result<Option<HubRecord>, (String, Option<String>)> {
    let pem = req
        .headers()
        .get("x-ssl-client-cert")
        .and_then(|v| v.to_str().ok())
        .map(crate::fhir::identifier::percent_decode)
        .ok_or_else(|| ("no client certificate from the proxy".to_owned(), None))?;
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|_| ("unreadable client certificate header".to_owned(), None))?;
    let fp = tls::fingerprint(der.as_ref());
    reg.active(&fp)
        .map(Some)
        .ok_or(("certificate not enrolled or revoked".into(), Some(fp)))
}

/// The hub behind a request, by the rules of the listening mode. `Err` is the refusal.
fn identify(
    req: &Request<Incoming>,
    shared: &Shared,
    who: &Who,
) -> Result<Option<HubRecord>, (String, Option<String>)> {
    let Access::Registry(reg) = &shared.access else {
        return Ok(None);
    };
    match &shared.listen {
        Listen::Tls(_) => {
            let fp = who.fingerprint.clone();
            // Re-checked on every request: a revocation also ends connections already open.
            match fp.as_deref().and_then(|f| reg.active(f)) {
                Some(h) => Ok(Some(h)),
                None => Err(("certificate not enrolled or revoked".into(), fp)),
            }
        }
        Listen::Proxied { secret } => {
            let given = req
                .headers()
                .get("x-clinic-proxy-secret")
                .map(|v| v.as_bytes())
                .unwrap_or_default();
            let d = |b: &[u8]| ring::digest::digest(&ring::digest::SHA256, b);
            if d(given).as_ref() != d(secret.as_bytes()).as_ref() {
                return Err(("request not from the configured proxy".into(), None));
            }
            proxied_hub(req, reg)
        }
        Listen::ProxiedUnix { proxy_uid, .. } => {
            if who.peer_uid != Some(*proxy_uid) {
                return Err(("connection not from the configured proxy user".into(), None));
            }
            proxied_hub(req, reg)
        }
        Listen::PlainLoopback => Err(("plain mode without a proxy secret".into(), None)),
    }
}

pub(super) async fn refuse(
    shared: &Arc<Shared>,
    who: &Who,
    hub: Option<&HubRecord>,
    fingerprint: Option<&str>,
    what: &str,
    why: &str,
    action: &str,
) -> Response<Body> {
    bump(shared, |s| s.forbidden += 1);
    warn!(
        hub = hub.map(|h| h.hub_id.as_str()).unwrap_or("-"),
        request = %authz::loggable(what),
        "Request refused (403): {why}."
    );
    let ev = audit_event(hub, fingerprint, &who.peer, what, why, action);
    if let Some(front) = &shared.front {
        if let Err(e) = front.audit(&ev).await {
            warn!(
                hub = hub.map(|h| h.hub_id.as_str()).unwrap_or("-"),
                request = %authz::loggable(what),
                "The security AuditEvent of this refusal is not stored at the FHIR server ({e}); this line is its record: {why}."
            );
        }
        return fhir_response(StatusCode::FORBIDDEN, &outcome("forbidden", why));
    }
    let hub_id = hub.map(|h| h.hub_id.clone());
    let db = shared.db.clone();
    let _ = tokio::task::spawn_blocking(move || {
        if let Ok(mut d) = db.lock() {
            if let Err(e) = d.audit(&ev, hub_id.as_deref()) {
                warn!(error = %e, "Storing a security AuditEvent failed.");
            }
        }
    })
    .await;
    fhir_response(StatusCode::FORBIDDEN, &outcome("forbidden", why))
}

/// Admission per hub: the rate limit and the in-flight cap. `Err` is the 429.
fn admit(shared: &Arc<Shared>, hub: &str) -> Result<InFlight, Box<Response<Body>>> {
    let lim = &shared.limits;
    let too_many = |secs: u64| {
        bump(shared, |s| s.throttled += 1);
        let mut r = fhir_response(
            StatusCode::TOO_MANY_REQUESTS,
            &outcome("throttled", "too many requests from this hub; retry later"),
        );
        if let Ok(v) = hyper::header::HeaderValue::from_str(&secs.to_string()) {
            r.headers_mut().insert(hyper::header::RETRY_AFTER, v);
        }
        Box::new(r)
    };
    if let Ok(mut b) = shared.buckets.lock() {
        if b.len() > 100_000 {
            b.clear();
        }
        let bucket = b
            .entry(hub.to_owned())
            .or_insert_with(|| Bucket::new(lim.rate_burst));
        if let Err(secs) = bucket.take(lim.rate_per_sec, lim.rate_burst) {
            return Err(too_many(secs));
        }
    }
    let mut m = shared.hub_inflight.lock().map_err(|_| too_many(1))?;
    let n = m.entry(hub.to_owned()).or_insert(0);
    if *n >= lim.per_hub_inflight {
        drop(m);
        return Err(too_many(1));
    }
    *n += 1;
    Ok(InFlight {
        shared: shared.clone(),
        hub: hub.to_owned(),
    })
}

struct InFlight {
    shared: Arc<Shared>,
    hub: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut m) = self.shared.hub_inflight.lock() {
            if let Some(n) = m.get_mut(&self.hub) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    m.remove(&self.hub);
                }
            }
        }
    }
}

pub(super) fn server_error(msg: &str) -> Response<Body> {
    fhir_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        &outcome("exception", msg),
    )
}

async fn handle(req: Request<Incoming>, shared: Arc<Shared>, who: Who) -> Response<Body> {
    bump(&shared, |s| s.requests += 1);
    let path = req.uri().path().trim_end_matches('/').to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let method = req.method().clone();
    let what = format!("{method} {path}");
    let hub = match identify(&req, &shared, &who) {
        Ok(h) => h,
        Err((why, fp)) => {
            let mut r = refuse(&shared, &who, None, fp.as_deref(), &what, &why, "E").await;
            // Close the connection: a hub revoked while connected meets the TLS refusal
            // (`certificate_revoked`) on its next handshake instead of 403s on an old one.
            r.headers_mut().insert(
                hyper::header::CONNECTION,
                hyper::header::HeaderValue::from_static("close"),
            );
            return r;
        }
    };
    // Open mode: the label of the client stored with its bundles (fingerprint, or the proxied
    // subject in the legacy plain mode).
    let client = match &hub {
        Some(h) => Some(h.fingerprint.clone()),
        None => who.fingerprint.clone().or_else(|| {
            req.headers()
                .get("x-ssl-client-s-dn")
                .and_then(|v| v.to_str().ok())
                .map(|s| format!("dn:{s}"))
        }),
    };
    let _inflight = match &hub {
        Some(h) => match admit(&shared, &h.hub_id) {
            Ok(g) => Some(g),
            Err(r) => return *r,
        },
        None => None,
    };
    if path.starts_with(super::est::PREFIX.trim_end_matches('/')) {
        return super::est::handle(req, &shared, &who, hub, &path).await;
    }
    if let (Some(front), Some(h)) = (shared.front.clone(), hub.clone()) {
        return super::front::handle(req, &shared, &front, &who, h, what).await;
    }
    let registry = matches!(shared.access, Access::Registry(_));
    let mut segs = path.rsplit('/');
    let tail = segs.next().unwrap_or("").to_owned();
    let parent = segs.next().unwrap_or("").to_owned();
    let fp = hub.as_ref().map(|h| h.fingerprint.clone());
    match (method, tail.as_str()) {
        (Method::GET, "metadata") => fhir_response(StatusCode::OK, &db::capability_statement()),
        (Method::GET, "Device") if registry => {
            let Some(idp) = query_param(&query, "identifier") else {
                return refuse(
                    &shared,
                    &who,
                    hub.as_ref(),
                    fp.as_deref(),
                    &what,
                    "a hub may search its own Devices by identifier only",
                    "R",
                )
                .await;
            };
            let owner = hub.as_ref().map(|h| h.hub_id.clone());
            let db = shared.db.clone();
            let r = tokio::task::spawn_blocking(move || {
                db.lock().map_err(|_| "lock".to_owned()).and_then(|d| {
                    d.search_identifier_owned("Device", &idp, owner.as_deref())
                        .map_err(|e| e.to_string())
                })
            })
            .await;
            match r {
                Ok(Ok(v)) => fhir_response(StatusCode::OK, &db::searchset(v)),
                Ok(Err(e)) => server_error(&e),
                Err(e) => server_error(&e.to_string()),
            }
        }
        // The hub's start-up check that its patient exists (`Patient?_id=<own>&_summary=count`):
        // a count, never a resource, and only for the hub's own patient. The registry is the
        // clinic's record that the patient exists (the embedded store keeps no demographics).
        (Method::GET, "Patient")
            if registry
                && query_param(&query, "_summary").as_deref() == Some("count")
                && hub.as_ref().is_some_and(|h| {
                    query_param(&query, "_id").as_deref() == Some(h.patient.as_str())
                }) =>
        {
            fhir_response(
                StatusCode::OK,
                &serde_json::json!({"resourceType": "Bundle", "type": "searchset", "total": 1}),
            )
        }
        // The hub's poll for its patient's alert limits (issue 18): only its own patient's, and
        // only the current version (the highest), as a searchset of at most one entry.
        (Method::GET, "ServiceRequest") => {
            let own = hub.as_ref().map(|h| format!("Patient/{}", h.patient));
            let asked = query_param(&query, "subject");
            let patient = match (own, asked) {
                (Some(own), Some(a)) if a == own => own,
                (None, Some(a)) if !registry && a.starts_with("Patient/") => a,
                _ => {
                    return refuse(
                        &shared,
                        &who,
                        hub.as_ref(),
                        fp.as_deref(),
                        &what,
                        "a hub may read only its own patient's alert limits (ServiceRequest?subject=Patient/<its patient>)",
                        "R",
                    )
                    .await
                }
            };
            let db = shared.db.clone();
            let r = tokio::task::spawn_blocking(move || {
                db.lock().map_err(|_| "lock".to_owned()).and_then(|d| {
                    d.search_patient_of("ServiceRequest", &patient)
                        .map_err(|e| e.to_string())
                })
            })
            .await;
            match r {
                Ok(Ok(v)) => {
                    let limits: Vec<Value> = v
                        .into_iter()
                        .filter(|r| {
                            r.get("status").and_then(Value::as_str) == Some("active")
                                && crate::fhir::limits::version_of(r).is_some()
                        })
                        .collect();
                    let current = crate::fhir::limits::current_of(&serde_json::json!({
                        "resourceType": "Bundle", "entry": limits.into_iter()
                            .map(|r| serde_json::json!({ "resource": r })).collect::<Vec<_>>(),
                    }))
                    .ok()
                    .flatten();
                    fhir_response(
                        StatusCode::OK,
                        &db::searchset(current.into_iter().collect()),
                    )
                }
                Ok(Err(e)) => server_error(&e),
                Err(e) => server_error(&e.to_string()),
            }
        }
        (Method::GET, id) if registry && parent == "Device" => {
            let owner = hub.as_ref().map(|h| h.hub_id.clone());
            let db = shared.db.clone();
            let id = id.to_owned();
            let r = tokio::task::spawn_blocking(move || {
                db.lock()
                    .ok()
                    .and_then(|d| d.read_owned("Device", &id, owner.as_deref()).ok())
                    .flatten()
            })
            .await
            .ok()
            .flatten();
            match r {
                Some(v) => fhir_response(StatusCode::OK, &v),
                None => {
                    refuse(
                        &shared,
                        &who,
                        hub.as_ref(),
                        fp.as_deref(),
                        &what,
                        "a hub may read only its own Devices",
                        "R",
                    )
                    .await
                }
            }
        }
        (Method::GET, _) if registry => {
            refuse(
                &shared,
                &who,
                hub.as_ref(),
                fp.as_deref(),
                &what,
                "a hub may read only its own Devices",
                "R",
            )
            .await
        }
        (Method::GET, ty @ ("Observation" | "DetectedIssue")) => {
            let ty = ty.to_owned();
            let db = shared.db.clone();
            let r = tokio::task::spawn_blocking(move || -> Result<Option<Vec<Value>>, String> {
                let d = db.lock().map_err(|_| "lock".to_owned())?;
                if let Some(idp) = query_param(&query, "identifier") {
                    d.search_identifier_owned(&ty, &idp, None)
                        .map(Some)
                        .map_err(|e| e.to_string())
                } else if let Some(p) = query_param(&query, "patient") {
                    d.search_patient_of(&ty, &p)
                        .map(Some)
                        .map_err(|e| e.to_string())
                } else {
                    Ok(None)
                }
            })
            .await;
            match r {
                Ok(Ok(Some(v))) => fhir_response(StatusCode::OK, &db::searchset(v)),
                Ok(Ok(None)) => fhir_response(
                    StatusCode::BAD_REQUEST,
                    &outcome("not-supported", "search by identifier or patient"),
                ),
                Ok(Err(e)) => server_error(&e),
                Err(e) => server_error(&e.to_string()),
            }
        }
        (Method::POST, _) => post(req, shared, who, hub, client, what).await,
        _ => fhir_response(
            StatusCode::NOT_FOUND,
            &outcome("not-found", "unknown endpoint"),
        ),
    }
}

async fn post(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    who: Who,
    hub: Option<HubRecord>,
    client: Option<String>,
    what: String,
) -> Response<Body> {
    let fault = shared.faults.pop();
    if let Some(resp) = faults::before(&fault).await {
        return resp;
    }
    // One of `max_inflight` processing slots for reading, parsing and storing the body.
    let permit = match tokio::time::timeout(
        shared.limits.queue_timeout,
        shared.work.clone().acquire_owned(),
    )
    .await
    {
        Ok(Ok(p)) => p,
        _ => return busy(&shared),
    };
    let body = match read_body(req, &shared.limits).await {
        Ok(b) => b,
        Err(e) => {
            bump(&shared, |s| s.rejected += 1);
            return fhir_response(StatusCode::BAD_REQUEST, &outcome("invalid", &e));
        }
    };
    bump(&shared, |s| s.request_bytes += body.len() as u64);
    enum Done {
        Parse(String),
        Poisoned(String),
        Tx(Result<(Value, u64, u64), db::TxError>),
    }
    let sh = shared.clone();
    let scope_of = hub.clone();
    let done = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        if let Err(e) = limits::check_json(&body, &sh.limits) {
            return Done::Parse(e);
        }
        let bundle: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return Done::Parse(format!("not JSON: {e}")),
        };
        drop(body);
        if let Some(bad) = sh.faults.poisoned_in(&bundle) {
            return Done::Poisoned(bad);
        }
        let scope = scope_of.as_ref().map(|h| Scope {
            hub_id: &h.hub_id,
            patient: &h.patient,
        });
        let r = match sh.db.lock() {
            Ok(mut d) => d.transaction(&bundle, client.as_deref(), scope),
            Err(_) => Err(db::TxError::Server("lock".into())),
        };
        Done::Tx(r)
    })
    .await;
    let done = match done {
        Ok(d) => d,
        Err(e) => return server_error(&e.to_string()),
    };
    match done {
        Done::Parse(e) => {
            bump(&shared, |s| s.rejected += 1);
            fhir_response(StatusCode::BAD_REQUEST, &outcome("structure", &e))
        }
        Done::Poisoned(bad) => {
            bump(&shared, |s| s.rejected += 1);
            fhir_response(
                StatusCode::BAD_REQUEST,
                &outcome(
                    "invalid",
                    &format!("entry with identifier {bad} is invalid (injected)"),
                ),
            )
        }
        Done::Tx(Ok((resp, created, existing))) => {
            bump(&shared, |s| {
                s.bundles += 1;
                s.created += created;
                s.existing += existing;
            });
            faults::after(&fault, fhir_response(StatusCode::OK, &resp)).await
        }
        Done::Tx(Err(db::TxError::Invalid(msg))) => {
            bump(&shared, |s| s.rejected += 1);
            fhir_response(StatusCode::BAD_REQUEST, &outcome("invalid", &msg))
        }
        Done::Tx(Err(db::TxError::Forbidden(msg))) => {
            let fp = hub.as_ref().map(|h| h.fingerprint.clone());
            refuse(&shared, &who, hub.as_ref(), fp.as_deref(), &what, &msg, "C").await
        }
        Done::Tx(Err(db::TxError::Multiple(msg))) => {
            fhir_response(StatusCode::PRECONDITION_FAILED, &outcome("duplicate", &msg))
        }
        Done::Tx(Err(db::TxError::Server(msg))) => server_error(&msg),
    }
}
