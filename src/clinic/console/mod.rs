//! The clinicians' console: server-rendered HTML over HTTPS (axum routes, maud templates, no
//! JavaScript), on its own listen address with its own certificate — not the hub CA's: it asks
//! for no client certificate, so a hub's certificate never logs in here, and the hubs' ingest
//! ([`super::ingest`]) serves no page.
//!
//! Guarantees: no page without a session ([`auth`]): a request without one is redirected to the
//! login page, and a form sent without the session's CSRF token is refused (403) before it does
//! anything. Login attempts are rate-limited per name and per address. Every response carries
//! `Cache-Control: no-store` and a Content-Security-Policy that allows no script. Bounds: the
//! request body (16 KiB), the connections at once ([`MAX_CONNECTIONS`]), the TLS handshake and the
//! request head ([`HANDSHAKE_TIMEOUT`]), and every table in [`auth`].
//!
//! Accounts live in the clinic's store ([`users`]); `vitals-clinic user add|disable|passwd`
//! manages them ([`cli`]). The clinical record is read and written through [`fhir`]: the
//! built-in store, or the external FHIR server of `serve --fhir-base` (the accounts and sessions
//! stay in the clinic's store either way).

pub mod auth;
pub mod bench;
pub mod cli;
pub mod demo;
pub mod fhir;
pub mod fleet;
mod limits;
mod pages;
pub mod patient;
pub mod records;
pub mod users;
pub mod worklist;

use super::db::ReceiverDb;
use super::tls;
use super::ReceiverError;
use auth::{LoginLimiter, Session, Sessions, LOGIN_COOKIE, SESSION_COOKIE};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path as UrlPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tracing::{info, warn};
use users::UserStore;

/// Most console connections at once; more wait in the kernel's accept queue.
pub const MAX_CONNECTIONS: usize = 256;
/// Time for the TLS handshake, and for the request head once connected.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request body (the console's forms are small).
pub const MAX_BODY: usize = 16 * 1024;

/// Where and how the console listens.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    pub bind: SocketAddr,
    /// The console's own server certificate ([`server_config`]).
    pub tls: Arc<rustls::ServerConfig>,
    /// The clinic's store (the accounts and the resources the console reads).
    pub db_path: PathBuf,
    /// Heartbeat interval, missed heartbeats before offline, stale-data age.
    pub worklist: worklist::WorklistSettings,
    /// The external FHIR server the console reads and writes (`--fhir-base`); `None`: the
    /// built-in store of `db_path`. The accounts stay in `db_path` either way.
    pub fhir_base: Option<Arc<super::front::Front>>,
    /// The clinic's zone every time is shown in (`None`: the system's).
    pub zone: Option<jiff::tz::TimeZone>,
}

/// The IANA zone `name` (e.g. `Europe/Berlin`), or an error naming the fix.
pub fn zone(name: &str) -> Result<jiff::tz::TimeZone, String> {
    jiff::tz::TimeZone::get(name).map_err(|e| {
        format!("time zone {name:?}: {e}; give an IANA name such as Europe/Berlin (see /usr/share/zoneinfo)")
    })
}

/// The console's TLS configuration from PEM files: TLS 1.3, no client certificates.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, ReceiverError> {
    tls::server_config_der(
        tls::load_certs(cert)?,
        tls::load_key(key)?,
        None,
        &[&rustls::version::TLS13],
    )
}

#[derive(Debug)]
pub(crate) struct AppState {
    users: Mutex<UserStore>,
    sessions: Mutex<Sessions>,
    limiter: Mutex<LoginLimiter>,
    fhir: fhir::FhirClient,
    settings: worklist::WorklistSettings,
    zone: jiff::tz::TimeZone,
}

type Shared = Arc<AppState>;

/// A running console.
#[derive(Debug)]
pub struct Console {
    addr: SocketAddr,
    state: Shared,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Console {
    /// Open the store, bind, and serve.
    pub async fn start(cfg: ConsoleConfig) -> Result<Console, ReceiverError> {
        let path = cfg.db_path.clone();
        let p2 = path.clone();
        let db_err = move |source| ReceiverError::Db { path: p2, source };
        let local = cfg.fhir_base.is_none();
        let (users, db) = tokio::task::spawn_blocking(move || {
            let users = UserStore::open(&path).map_err(|e| match e {
                users::UserError::Db(e) => db_err(e),
                other => ReceiverError::Tls(other.to_string()),
            })?;
            let db = if local {
                Some(ReceiverDb::open(Some(&path))?)
            } else {
                None
            };
            Ok::<_, ReceiverError>((users, db))
        })
        .await
        .map_err(|e| ReceiverError::Tls(format!("opening the console's store: {e}")))??;
        let base = match (cfg.fhir_base, db) {
            (Some(front), _) => fhir::FhirBase::Rest(front),
            (None, Some(db)) => fhir::FhirBase::Local(Arc::new(Mutex::new(db))),
            (None, None) => {
                return Err(ReceiverError::Tls(
                    "the console has neither a FHIR base nor a store".into(),
                ))
            }
        };
        let fhir = fhir::FhirClient::new(base);
        let mut settings = cfg.worklist;
        // `$lastn` only where the server declares it: the built-in store implements it; a REST
        // base is asked for its CapabilityStatement once, and one that cannot be read now (down,
        // refusing) is read with the standard searches, which every FHIR server answers.
        match fhir.capabilities().await {
            Ok(None) => {}
            Ok(Some(cs)) => settings.lastn = settings.lastn && worklist::supports_lastn(&cs),
            Err(e) => {
                settings.lastn = false;
                warn!(
                    "console: the FHIR server's CapabilityStatement could not be read ({e}); the worklist uses the standard searches"
                );
            }
        }
        info!(lastn = settings.lastn, "console: FHIR base read");
        let state = Arc::new(AppState {
            users: Mutex::new(users),
            sessions: Mutex::new(Sessions::default()),
            limiter: Mutex::new(LoginLimiter::default()),
            fhir,
            settings,
            zone: cfg.zone.unwrap_or_else(jiff::tz::TimeZone::system),
        });
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
        let (stop, stop_rx) = watch::channel(false);
        let app = router(state.clone());
        let task = tokio::spawn(accept_loop(
            listener,
            tokio_rustls::TlsAcceptor::from(cfg.tls),
            app,
            stop_rx,
        ));
        info!(%addr, "Clinicians' console listening.");
        Ok(Console {
            addr,
            state,
            stop,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// FHIR requests the console has made (the benchmark and the tests count them per page).
    pub fn fhir_requests(&self) -> u64 {
        self.state.fhir.requests()
    }

    /// Stop accepting and end every connection.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: Router,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            _ = stop.changed() => break,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (tcp, peer) = tokio::select! {
            _ = stop.changed() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors or a transient error: back off instead of spinning.
                    warn!(error = %e, "Console accept failed; retrying in 100 ms.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        while conns.try_join_next().is_some() {}
        let acceptor = acceptor.clone();
        let app = app.clone();
        conns.spawn(async move {
            let _permit = permit;
            let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
            else {
                return;
            };
            let svc = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    let app = app.clone();
                    async move {
                        use tower_service::Service;
                        let mut app = app;
                        app.call(req.map(axum::body::Body::new)).await
                    }
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT)
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        });
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}

pub(crate) fn router(state: Shared) -> Router {
    let private = Router::new()
        .route("/", get(worklist))
        .route("/fleet", get(fleet_page))
        .route("/logout", post(logout))
        .route("/patient/{id}", get(patient_page))
        .route("/alert/{id}/ack", post(acknowledge))
        .route(
            "/patient/{id}/limits",
            get(limits::limits_page).post(limits::save_limits),
        )
        .route("/patient/{id}/label", post(set_label))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            require_session,
        ));
    Router::new()
        .route("/login", get(login_page).post(login))
        .merge(private)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

async fn security_headers(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    let set = [
        (header::CACHE_CONTROL, "no-store"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::STRICT_TRANSPORT_SECURITY, "max-age=31536000"),
    ];
    for (k, v) in set {
        h.insert(k, HeaderValue::from_static(v));
    }
    r
}

fn cookie_of<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|h| auth::cookie(h, name))
}

/// Runs before every private route: the session or a redirect to the login page.
async fn require_session(State(st): State<Shared>, mut req: Request, next: Next) -> Response {
    let token = cookie_of(req.headers(), SESSION_COOKIE).map(str::to_owned);
    let session = token.as_deref().and_then(|t| {
        st.sessions
            .lock()
            .ok()
            .and_then(|mut s| s.touch(t, Instant::now()))
    });
    let Some(session) = session else {
        return Redirect::to("/login").into_response();
    };
    // A disabled account's sessions end at their next request.
    let st2 = st.clone();
    let name = session.user.clone();
    let enabled = tokio::task::spawn_blocking(move || {
        st2.users
            .lock()
            .ok()
            .and_then(|u| u.get(&name).ok().flatten())
            .is_some_and(|u| !u.disabled)
    })
    .await
    .unwrap_or(false);
    if !enabled {
        if let Ok(mut s) = st.sessions.lock() {
            s.end_user(&session.user);
        }
        return Redirect::to("/login").into_response();
    }
    req.extensions_mut().insert(session);
    next.run(req).await
}

/// 403 for a form without the right CSRF token.
fn csrf_refused() -> Response {
    (
        StatusCode::FORBIDDEN,
        pages::message(
            "Form refused",
            "This form was not sent from a current page of the console (missing or stale CSRF token). Reload the page and send it again.",
        ),
    )
        .into_response()
}

fn with_cookie(mut r: Response, cookie: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

async fn login_page(headers: HeaderMap) -> Response {
    login_form(&headers, StatusCode::OK, None)
}

/// The login form with its pre-session CSRF token (the cookie's, or a new one).
fn login_form(headers: &HeaderMap, status: StatusCode, error: Option<&str>) -> Response {
    let token = cookie_of(headers, LOGIN_COOKIE)
        .filter(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned)
        .or_else(auth::new_token);
    let Some(token) = token else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "no random source").into_response();
    };
    with_cookie(
        (status, pages::login(&token, error)).into_response(),
        &auth::set_cookie(LOGIN_COOKIE, &token),
    )
}

#[derive(Debug, serde::Deserialize)]
struct LoginForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
}

async fn login(
    State(st): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let cookie_token = cookie_of(&headers, LOGIN_COOKIE).unwrap_or("");
    if f.csrf.is_empty() || !auth::same_token(&f.csrf, cookie_token) {
        return csrf_refused();
    }
    let now = Instant::now();
    let allowed = st
        .limiter
        .lock()
        .map(|l| l.allowed(&f.user, peer.ip(), now))
        .unwrap_or(false);
    if !allowed {
        info!("Console login refused: too many failed attempts.");
        return login_form(
            &headers,
            StatusCode::TOO_MANY_REQUESTS,
            Some("Too many failed logins for this account or from this address. Wait 15 minutes, or ask an admin to reset the password."),
        );
    }
    let st2 = st.clone();
    let (name, pw) = (f.user.clone(), zeroize::Zeroizing::new(f.password));
    let user = tokio::task::spawn_blocking(move || {
        st2.users
            .lock()
            .ok()
            .and_then(|u| u.verify(&name, &pw).ok().flatten())
    })
    .await
    .ok()
    .flatten();
    let Some(user) = user else {
        if let Ok(mut l) = st.limiter.lock() {
            l.failed(&f.user, peer.ip(), now);
        }
        info!("Console login failed.");
        return login_form(
            &headers,
            StatusCode::UNAUTHORIZED,
            Some("Wrong user name or password."),
        );
    };
    if let Ok(mut l) = st.limiter.lock() {
        l.succeeded(&user.name);
    }
    let started = st
        .sessions
        .lock()
        .ok()
        .and_then(|mut s| s.start(&user.name, user.role, now));
    let Some((token, _)) = started else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "no random source").into_response();
    };
    info!(role = user.role.as_str(), "Console login.");
    let r = Redirect::to("/").into_response();
    let r = with_cookie(r, &auth::set_cookie(SESSION_COOKIE, &token));
    with_cookie(r, &auth::clear_cookie(LOGIN_COOKIE))
}

#[derive(Debug, serde::Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(st): State<Shared>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    if !auth::same_token(&f.csrf, &session.csrf) {
        return csrf_refused();
    }
    if let (Some(t), Ok(mut s)) = (cookie_of(&headers, SESSION_COOKIE), st.sessions.lock()) {
        s.end(t);
    }
    with_cookie(
        Redirect::to("/login").into_response(),
        &auth::clear_cookie(SESSION_COOKIE),
    )
}

async fn worklist(
    State(st): State<Shared>,
    Extension(session): Extension<Session>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    let now = jiff::Timestamp::now();
    match worklist::load(&st.fhir, now, &st.settings).await {
        Ok(rows) => {
            // The worklist shows every patient's latest values: audited like any search.
            let action = records::Action::Worklist;
            if let Err(r) = audited(&st, &session, peer, action, None, None, now).await {
                return r;
            }
            pages::worklist(&session, &rows, now, &st.zone).into_response()
        }
        Err(e) => fhir_failed(&e),
    }
}

async fn fleet_page(State(st): State<Shared>, Extension(session): Extension<Session>) -> Response {
    let now = jiff::Timestamp::now();
    // No AuditEvent for this view: it shows hubs' technical status and patient ids only, no
    // clinical data (readings, alerts); the views of patient data stay audited.
    match fleet::load(&st.fhir, now, &st.settings).await {
        Ok(f) => pages::fleet(&session, &f, now, &st.settings, &st.zone).into_response(),
        Err(e) => fhir_failed(&e),
    }
}

fn not_found(what: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        pages::message(
            "Not found",
            &format!("{what} is not in this clinic's record."),
        ),
    )
        .into_response()
}

fn fhir_failed(e: &fhir::FhirClientError) -> Response {
    // The server's own words (which may echo an id) go to the page, not to the log.
    warn!(error = %e, "A console FHIR request failed.");
    let text = match e.detail() {
        Some(d) => format!("{e}. The FHIR server says: {d}"),
        None => e.to_string(),
    };
    (
        StatusCode::BAD_GATEWAY,
        pages::message("The clinical record is unavailable", &text),
    )
        .into_response()
}

/// Write the AuditEvent of `action` by the session's user from `peer` (about `patient`, on the
/// resource `what`); a page whose access cannot be audited is not shown.
async fn audited(
    st: &AppState,
    session: &Session,
    peer: SocketAddr,
    action: records::Action,
    patient: Option<&str>,
    what: Option<&str>,
    now: jiff::Timestamp,
) -> Result<(), Response> {
    let event = records::audit(action, &session.user, peer.ip(), patient, what, now);
    st.fhir
        .create(event)
        .await
        .map(|_| ())
        .map_err(|e| fhir_failed(&e))
}

/// Create `resource` at the clinic's FHIR server, then audit `action` on it about `patient`
/// ([`audited`]): its reference (`Type/id`), or the page that answers a failure.
async fn create_audited(
    st: &AppState,
    session: &Session,
    peer: SocketAddr,
    action: records::Action,
    patient: &str,
    resource: serde_json::Value,
    now: jiff::Timestamp,
) -> Result<String, Response> {
    let kind = resource
        .get("resourceType")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("Resource")
        .to_owned();
    let created = match st.fhir.create(resource).await {
        Ok(id) => format!("{kind}/{id}"),
        Err(e) => return Err(fhir_failed(&e)),
    };
    audited(
        st,
        session,
        peer,
        action,
        Some(patient),
        Some(&created),
        now,
    )
    .await?;
    Ok(created)
}

async fn patient_page(
    State(st): State<Shared>,
    Extension(session): Extension<Session>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    UrlPath(id): UrlPath<String>,
) -> Response {
    if !super::registry::valid_id(&id) {
        return not_found("This patient id");
    }
    let now = jiff::Timestamp::now();
    let view = match patient::load_with(&st.fhir, &id, now, &st.settings).await {
        Ok(v) => v,
        Err(e) => return fhir_failed(&e),
    };
    let read = records::Action::Read;
    if let Err(r) = audited(&st, &session, peer, read, Some(&id), None, now).await {
        return r;
    }
    pages::patient(&session, &view, now, &st.zone).into_response()
}

#[derive(Debug, serde::Deserialize)]
struct AckForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    note: String,
}

async fn acknowledge(
    State(st): State<Shared>,
    Extension(session): Extension<Session>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    UrlPath(id): UrlPath<String>,
    Form(f): Form<AckForm>,
) -> Response {
    if !auth::same_token(&f.csrf, &session.csrf) {
        return csrf_refused();
    }
    let note = f.note.trim();
    if note.is_empty() || note.chars().count() > records::MAX_NOTE {
        return (
            StatusCode::BAD_REQUEST,
            pages::message(
                "Note needed",
                &format!("An acknowledgement needs a note of 1 to {} characters: what was done or decided. Go back and write one.", records::MAX_NOTE),
            ),
        )
            .into_response();
    }
    let issue = match st.fhir.read("DetectedIssue", &id).await {
        Ok(Some(i)) => i,
        Ok(None) => return not_found("This alert"),
        Err(e) => return fhir_failed(&e),
    };
    let Some(patient) = issue
        .get("patient")
        .and_then(|p| p.get("reference"))
        .and_then(serde_json::Value::as_str)
        .and_then(|p| p.strip_prefix("Patient/"))
        .map(str::to_owned)
    else {
        return not_found("This alert's patient");
    };
    let now = jiff::Timestamp::now();
    let focus = format!("DetectedIssue/{id}");
    let task = records::ack_task(&focus, &patient, &session.user, note, now);
    let action = records::Action::Acknowledge;
    if let Err(r) = create_audited(&st, &session, peer, action, &patient, task, now).await {
        return r;
    }
    info!("Alert acknowledged.");
    Redirect::to(&format!("/patient/{patient}")).into_response()
}

#[derive(Debug, serde::Deserialize)]
struct LabelForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    label: String,
}

/// An admin sets (or with an empty one removes) a patient's display label: the Patient's
/// `name[0].text` at the clinic's FHIR server, audited.
async fn set_label(
    State(st): State<Shared>,
    Extension(session): Extension<Session>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    UrlPath(id): UrlPath<String>,
    Form(f): Form<LabelForm>,
) -> Response {
    if !auth::same_token(&f.csrf, &session.csrf) {
        return csrf_refused();
    }
    if session.role != users::Role::Admin {
        info!("Console label change refused: not an admin.");
        return (
            StatusCode::FORBIDDEN,
            pages::message(
                "Admins only",
                "Only an admin account sets patient labels. Ask a clinic admin, or an admin to give you that role (vitals-clinic user add --role admin).",
            ),
        )
            .into_response();
    }
    if !super::registry::valid_id(&id) {
        return not_found("This patient id");
    }
    let label = match records::check_label(&f.label) {
        Ok(l) => l,
        Err(why) => {
            return (
                StatusCode::BAD_REQUEST,
                pages::message("Label not saved", &format!("{why} Go back and correct it.")),
            )
                .into_response()
        }
    };
    let existing = match st.fhir.read("Patient", &id).await {
        Ok(p) => p,
        Err(e) => return fhir_failed(&e),
    };
    let patient = records::labelled_patient(existing, &id, label.as_deref());
    if let Err(e) = st.fhir.update(patient).await {
        return fhir_failed(&e);
    }
    let now = jiff::Timestamp::now();
    let what = format!("Patient/{id}");
    let label = records::Action::Label;
    if let Err(r) = audited(&st, &session, peer, label, Some(&id), Some(&what), now).await {
        return r;
    }
    info!("Patient label changed.");
    Redirect::to(&format!("/patient/{id}")).into_response()
}
