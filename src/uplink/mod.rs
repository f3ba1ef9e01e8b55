//! Upload to the clinic: PHD IG transaction Bundles over mutual TLS, exactly once.
//!
//! **Client.** reqwest (`rustls-no-provider`) with a preconfigured rustls `ClientConfig` on the ring
//! provider ([`tls`]): TLS 1.3 only, the clinic CA bundle as the only roots, ALPN `http/1.1`,
//! resumption off, https only, no redirects, no proxy, explicit connect and request timeouts. Every
//! new connection must have been asked for the hub's certificate (checked per connection). The
//! client certificate is re-read from its PEM files when they change, on a blocking thread (never
//! inside a handshake): once per loop, at most once a second while bundles flow
//! ([`sync::CERT_FILES_EVERY`]); the reqwest client (and its connection pool) is rebuilt then,
//! so the next connection presents the new certificate.
//!
//! **Sync loop** ([`Uplink`]). Pending outbox items are read in batches (`Store::pending`, bounded,
//! so memory stays flat however large the backlog), mapped by [`crate::fhir`], gzip-compressed and
//! POSTed ([`send`]; a body that fails to compress goes plain, without `Content-Encoding`). An
//! entry that cannot become a request is set aside before the bundle is built, so every response
//! entry is matched to its own outbox entry. Items are acked only after a parsed
//! transaction-response says 200/201 for their entry; until then they stay `pending` (no
//! `in_flight` commit before the POST: see [`sync`]), so a kill anywhere sends them again, and the
//! conditional create stores them once. The time of the last accepted upload is persisted at most
//! every [`sync::LAST_SUCCESS_EVERY`] while a backlog drains, and at once when the uplink idles.
//! While a whole batch is on the wire the next one is read from the store (excluding the entries
//! in flight), and used only when the pass ends cleanly; and the last bundle's ack, queued in the
//! store ([`crate::store::Store::ack_queued`]), is committed then: it is durable before the next
//! ack is queued or the outbox read afresh, and a kill before it only sends the last two bundles
//! again (`tests/uplink_kill.rs`).
//! 5xx, 408, 429, timeouts, resets and unparseable answers retry with full-jitter exponential backoff
//! (base 1 s, cap 10 min), honouring `Retry-After`. 400/409/412/422 bisect the batch to find the
//! poison entry. An entry is rejected as poison only when the server accepted other entries of
//! its kind in the same pass and refuses it alone; when everything is refused (a wrong base path,
//! auth, validation settings, a missing Patient) nothing is rejected: the entries wait with backoff
//! and one `uplink_server_refuses_all` event names the HTTP status and the OperationOutcome's
//! severities and issue codes (the server's diagnostics, which may echo PHI, stay sealed on the
//! hub). A rejection is alerted with a reason code and the HTTP status. Conditional creates make
//! every retry safe. The [`heartbeat`] keeps its interval across restarts (last attempt in the
//! store).
//!
//! **Fitting the server.** Bundles hold at most `max_entries`; a server that refuses a bundle and
//! takes its parts teaches a smaller size, kept per destination (`uplink_state` `max_entries`), and
//! every bundle — the heartbeat too — is cut to it; [`grow`] probes it upward again (double after
//! 20 bundles accepted whole, a refused probe doubles the wait). At start-up the
//! CapabilityStatement is read (transaction, conditional create) and the patient looked up by a
//! count-only search.
//!
//! **A lasting refusal** ([`refusal`]): every upload refused (auth, wrong base path, unknown
//! patient…) for `refusal_alert_after_secs` raises one hub alert (event + the local hook through
//! [`Uplink::with_notices`]), persisted so a restart does not raise it twice, resolved by the first
//! accepted upload.
//!
//! **Bounded trust.** Answers are streamed with a bound ([`send::response_limit`],
//! [`send::MAX_ERROR_RESPONSE`], [`send::MAX_CAPABILITY`]); `location`s must be `<Type>/<id>` of the
//! type sent; server text is cut to [`crate::fhir::response::MAX_KEPT_TEXT`] before it is kept.
//! Failures are logged the first time and every [`sync::LOG_EVERY`]-th repeat, with a count.
//! Uploads wait until the hub's clock is synchronised ([`TimeSync`]: systemd-timedated over D-Bus,
//! asked asynchronously once per loop; a synchronised answer is kept [`CLOCK_SYNC_KEPT`], not asked
//! again per bundle while a backlog drains).
//!
//! **Renewal and revocation** ([`renew`]): at `renew_at_percent` of its lifetime the hub renews
//! its client certificate itself over EST (RFC 7030) with its current identity, installs the new
//! pair atomically and keeps the old one until the new one has worked; a clinic that revoked the
//! hub answers the handshake with `certificate_revoked`, named [`UplinkError::CertificateRevoked`].
//!
//! **Failures** are named ([`UplinkError`]) and each kind is recorded once per change as a store
//! event (`uplink_<kind>`), security-relevant TLS failures with severity `security`.

pub mod grow;
pub mod heartbeat;
pub mod limits;
pub mod refusal;
pub mod renew;
pub mod send;
pub mod sync;
pub mod tls;

pub use sync::{DrainReport, Uplink, UplinkStatus};

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Errors of the uplink; each names the failure and what fixes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UplinkError {
    /// The configuration cannot be used.
    #[error("uplink config: {0}")]
    Config(String),
    /// The CA bundle cannot be used.
    #[error("clinic CA bundle {path}: {reason}; install the clinic's CA certificate(s) as PEM")]
    CaBundle { path: PathBuf, reason: String },
    /// The hub's client certificate or key cannot be used.
    #[error("client certificate {path}: {reason}; re-provision the hub certificate")]
    ClientCertificate { path: PathBuf, reason: String },
    /// The hub's own certificate has expired (checked locally, or the server said so).
    #[error("the hub's client certificate has expired{0}; renew it (vitals-hub pki or the clinic's CA) — uploads are paused")]
    OwnCertificateExpired(String),
    /// The server refused the hub's certificate (TLS alert).
    #[error("the clinic server rejected the hub's client certificate (TLS alert {0}); check that the hub certificate is issued by the clinic's hub CA")]
    ServerRejectedOurCertificate(String),
    /// The clinic refused the hub's certificate as revoked (TLS alert `certificate_revoked`): the
    /// clinic took this hub's identity away (`vitals-clinic hub revoke`).
    #[error("certificate revoked by the clinic: {0}; uploads stop — the clinic must enrol a new hub certificate (vitals-clinic hub enroll) and the technician install it (vitals-hub setup --force)")]
    CertificateRevoked(String),
    /// The server completed the handshake without asking for the hub's certificate.
    #[error("the server did not request the hub's client certificate (no mutual TLS); nothing was sent — the clinic endpoint must require client certificates")]
    ServerDidNotRequestClientCert,
    /// The server certificate does not chain to the configured clinic CA.
    #[error("the server certificate is not trusted ({0}); it must be issued by the clinic CA in the configured bundle")]
    ServerCertUntrusted(String),
    /// The server certificate has expired.
    #[error(
        "the server certificate has expired; the clinic must renew it (or the hub clock is wrong)"
    )]
    ServerCertExpired,
    /// The server certificate is not valid yet.
    #[error("the server certificate is not valid yet; check the hub clock, or the clinic issued it dated in the future")]
    ServerCertNotYetValid,
    /// The server certificate is for another name.
    #[error("the server certificate is not valid for this host name; check `base_url` in the uplink config")]
    ServerCertWrongName,
    /// The server does not speak TLS 1.3.
    #[error("the server does not offer TLS 1.3 ({0}); the hub only uses TLS 1.3 — upgrade the clinic's TLS terminator")]
    NoTls13(String),
    /// Any other TLS failure.
    #[error("TLS failure: {0}")]
    Tls(String),
    /// The host name does not resolve.
    #[error("DNS lookup of the clinic host failed ({0}); check network and `base_url`")]
    Dns(String),
    /// Nothing listens on the clinic port.
    #[error("connection refused by the clinic server; it is down or the port is wrong")]
    Refused,
    /// Connect or request timed out.
    #[error("the clinic server did not answer in time")]
    Timeout,
    /// The connection was reset or closed before a complete answer.
    #[error("the connection was reset before the answer was complete ({0})")]
    Reset(String),
    /// Other network failure.
    #[error("network failure: {0}")]
    Network(String),
    /// The server answered with an HTTP error.
    #[error("the clinic server answered HTTP {status}{}", .detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Http {
        status: u16,
        retry_after: Option<u64>,
        detail: Option<String>,
    },
    /// Every entry sent was refused and none could be singled out (other entries of its kind were
    /// not accepted): a wrong base path, auth, or the server's validation settings. Nothing is
    /// rejected; the backlog waits and uploads resume by themselves once the clinic is fixed.
    #[error("the clinic server refuses every entry (HTTP {status}{}); nothing was rejected, the backlog waits — check `base_url` (the FHIR base path), the hub's access and the server's validation settings at the clinic", if .codes.is_empty() { String::new() } else { format!(", {}", .codes) })]
    ServerRefusesAll { status: u16, codes: String },
    /// A 2xx answer the hub cannot use (truncated, not a transaction-response…): nothing is acked.
    #[error("unusable answer from the clinic server: {0}")]
    BadResponse(String),
    /// The hub's clock is not synchronised yet; uploads wait.
    #[error("the hub clock is not synchronised yet (NTP); uploads wait for it")]
    ClockNotSynchronised,
    /// The store failed.
    #[error("store: {0}")]
    Store(String),
}

impl From<crate::store::StoreError> for UplinkError {
    fn from(e: crate::store::StoreError) -> Self {
        UplinkError::Store(e.to_string())
    }
}

impl UplinkError {
    /// The event kind for this failure.
    pub fn kind(&self) -> &'static str {
        match self {
            UplinkError::Config(_) => "uplink_config",
            UplinkError::CaBundle { .. } => "uplink_ca_bundle",
            UplinkError::ClientCertificate { .. } => "uplink_client_cert_unusable",
            UplinkError::OwnCertificateExpired(_) => "uplink_client_cert_expired",
            UplinkError::ServerRejectedOurCertificate(_) => "uplink_server_rejected_client_cert",
            UplinkError::CertificateRevoked(_) => "uplink_client_cert_revoked",
            UplinkError::ServerDidNotRequestClientCert => "uplink_server_no_client_auth",
            UplinkError::ServerCertUntrusted(_) => "uplink_server_cert_untrusted",
            UplinkError::ServerCertExpired => "uplink_server_cert_expired",
            UplinkError::ServerCertNotYetValid => "uplink_server_cert_not_yet_valid",
            UplinkError::ServerCertWrongName => "uplink_server_cert_wrong_name",
            UplinkError::NoTls13(_) => "uplink_no_tls13",
            UplinkError::Tls(_) => "uplink_tls",
            UplinkError::Dns(_) => "uplink_dns",
            UplinkError::Refused => "uplink_refused",
            UplinkError::Timeout => "uplink_timeout",
            UplinkError::Reset(_) => "uplink_reset",
            UplinkError::Network(_) => "uplink_network",
            UplinkError::Http { .. } => "uplink_http_error",
            UplinkError::ServerRefusesAll { .. } => "uplink_server_refuses_all",
            UplinkError::BadResponse(_) => "uplink_bad_response",
            UplinkError::ClockNotSynchronised => "uplink_clock_not_synchronised",
            UplinkError::Store(_) => "uplink_store",
        }
    }

    /// What kind of bad response this was (`too_large`, `bad_location`, `not_json`,
    /// `entry_count`, `not_transaction_response`); `None` for other failures.
    pub fn bad_response_class(&self) -> Option<&'static str> {
        let UplinkError::BadResponse(m) = self else {
            return None;
        };
        Some(if m.contains("too large") {
            "too_large"
        } else if m.contains("bad location") {
            "bad_location"
        } else if m.contains("not JSON") {
            "not_json"
        } else if m.contains("request entries") {
            "entry_count"
        } else {
            "not_transaction_response"
        })
    }

    /// A short text naming the failure for events, `status` and logs: fixed vocabularies only
    /// (HTTP status, FHIR issue severities and codes, the kind of bad response), never the
    /// server's own words.
    pub fn summary(&self) -> String {
        match self {
            UplinkError::Http { status, detail, .. } => match detail {
                Some(d) => format!(
                    "HTTP {status} ({})",
                    crate::fhir::response::outcome_codes(d)
                ),
                None => format!("HTTP {status}"),
            },
            UplinkError::BadResponse(_) => format!(
                "bad response: {}",
                self.bad_response_class().unwrap_or("unknown")
            ),
            UplinkError::Reset(_) | UplinkError::Network(_) => self.kind().to_owned(),
            other => crate::fhir::response::truncate_text(
                &other.to_string(),
                crate::fhir::response::MAX_KEPT_TEXT,
            ),
        }
    }

    /// TLS and certificate failures: security events, long backoff.
    pub fn is_security(&self) -> bool {
        matches!(
            self,
            UplinkError::OwnCertificateExpired(_)
                | UplinkError::ServerRejectedOurCertificate(_)
                | UplinkError::CertificateRevoked(_)
                | UplinkError::ServerDidNotRequestClientCert
                | UplinkError::ServerCertUntrusted(_)
                | UplinkError::ServerCertExpired
                | UplinkError::ServerCertNotYetValid
                | UplinkError::ServerCertWrongName
                | UplinkError::NoTls13(_)
                | UplinkError::Tls(_)
        )
    }

    /// Failures of one attempt that the next attempt may not see (server faults, network blips).
    pub fn is_transient(&self) -> bool {
        match self {
            UplinkError::Timeout
            | UplinkError::Reset(_)
            | UplinkError::Network(_)
            | UplinkError::BadResponse(_) => true,
            UplinkError::Http { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            _ => false,
        }
    }
}

fn rustls_error(r: &rustls::Error) -> UplinkError {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    match r {
        E::InvalidCertificate(c) => match c {
            C::Expired | C::ExpiredContext { .. } => UplinkError::ServerCertExpired,
            C::NotValidYet | C::NotValidYetContext { .. } => UplinkError::ServerCertNotYetValid,
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                UplinkError::ServerCertWrongName
            }
            other => UplinkError::ServerCertUntrusted(format!("{other:?}")),
        },
        E::AlertReceived(a) => match a {
            A::ProtocolVersion => UplinkError::NoTls13(format!("alert {a:?}")),
            A::CertificateExpired => UplinkError::OwnCertificateExpired(" (server alert)".into()),
            A::CertificateRevoked => {
                UplinkError::CertificateRevoked("TLS alert certificate_revoked".into())
            }
            A::BadCertificate
            | A::CertificateRequired
            | A::UnknownCA
            | A::CertificateUnknown
            | A::UnsupportedCertificate
            | A::AccessDenied => UplinkError::ServerRejectedOurCertificate(format!("{a:?}")),
            other => UplinkError::Tls(format!("alert {other:?}")),
        },
        E::PeerIncompatible(p) => UplinkError::NoTls13(format!("{p:?}")),
        other => UplinkError::Tls(other.to_string()),
    }
}

/// Look through the wrappers hyper and reqwest put around a rustls error: `io::Error` hides its
/// inner error from `source()`, and a boxed error in a chain is seen as the box, not its content.
fn find_rustls<'a>(
    err: &'a (dyn std::error::Error + 'static),
    io_kind: &mut Option<std::io::ErrorKind>,
    depth: u8,
) -> Option<&'a rustls::Error> {
    if depth > 8 {
        return None;
    }
    if let Some(r) = err.downcast_ref::<rustls::Error>() {
        return Some(r);
    }
    if let Some(io) = err.downcast_ref::<std::io::Error>() {
        io_kind.get_or_insert(io.kind());
        if let Some(inner) = io.get_ref() {
            let inner: &(dyn std::error::Error + 'static) = inner;
            return find_rustls(inner, io_kind, depth + 1);
        }
    }
    tracing::trace!(error = ?err, "classify: chain element");
    None
}

/// Name a reqwest failure.
pub fn classify(e: &reqwest::Error) -> UplinkError {
    let mut text = String::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut io_kind = None;
    while let Some(err) = cur {
        if let Some(r) = find_rustls(err, &mut io_kind, 0) {
            return rustls_error(r);
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&err.to_string());
        cur = err.source();
    }
    let lower = text.to_lowercase();
    if text.contains(tls::NO_CLIENT_AUTH) {
        return UplinkError::ServerDidNotRequestClientCert;
    }
    if e.is_timeout() || io_kind == Some(std::io::ErrorKind::TimedOut) {
        return UplinkError::Timeout;
    }
    if lower.contains("dns error") || lower.contains("failed to lookup address") {
        return UplinkError::Dns(text);
    }
    match io_kind {
        Some(std::io::ErrorKind::ConnectionRefused) => return UplinkError::Refused,
        Some(
            std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::UnexpectedEof,
        ) => return UplinkError::Reset(text),
        _ => {}
    }
    if lower.contains("connection refused") {
        return UplinkError::Refused;
    }
    if lower.contains("invalid peer certificate")
        || lower.contains("received fatal alert")
        || lower.contains("peer is incompatible")
    {
        return UplinkError::Tls(text);
    }
    if e.is_body()
        || e.is_decode()
        || lower.contains("incomplete")
        || lower.contains("closed")
        || lower.contains("reset")
    {
        return UplinkError::Reset(text);
    }
    UplinkError::Network(text)
}

/// What is known about the hub's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockSync {
    /// Kept by NTP (the kernel says synchronised).
    Synchronised,
    /// Not (yet) synchronised.
    NotSynchronised,
    /// No answer: no systemd-timedated, no system bus, or no answer in time.
    NotKnown,
}

/// A boxed future that is `Send` (what [`TimeSync`] returns).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Whether the hub's clock is synchronised. Uploads wait for [`ClockSync::Synchronised`]
/// (`NotKnown` waits too: a hub without timedated sets `require_clock_sync = false`).
pub trait TimeSync: Send + Sync + std::fmt::Debug {
    /// Ask once. Never blocks the calling thread (asynchronous I/O, or a blocking thread) and
    /// answers within a short time ([`TIMEDATE1_TIMEOUT`] for systemd).
    fn clock_sync(&self) -> BoxFuture<'_, ClockSync>;

    /// Whether the hub's PhgDevice may claim SNTP sync, given what [`TimeSync::clock_sync`]
    /// answered this loop: only when the clock is known to be synchronised.
    fn claims_ntp(&self, asked: ClockSync) -> BoxFuture<'_, bool> {
        Box::pin(std::future::ready(asked == ClockSync::Synchronised))
    }

    /// The same, waited for on the calling thread: only for a blocking thread (`spawn_blocking`),
    /// never a runtime worker. `true` only when known to be synchronised.
    fn is_synchronised(&self) -> bool {
        let fut = self.clock_sync();
        let state = match tokio::runtime::Handle::try_current() {
            Ok(_) => futures::executor::block_on(fut),
            Err(_) => match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(fut),
                Err(_) => ClockSync::NotKnown,
            },
        };
        state == ClockSync::Synchronised
    }
}

/// How long the hub waits for systemd-timedated's answer.
pub const TIMEDATE1_TIMEOUT: Duration = Duration::from_secs(2);

/// systemd-timedated's `NTPSynchronized` property (`org.freedesktop.timedate1`) on the D-Bus system
/// bus, asked asynchronously. No systemd, no system bus or no answer in time: [`ClockSync::NotKnown`].
#[derive(Debug, Clone, Default)]
pub struct SystemdTimeSync;

impl TimeSync for SystemdTimeSync {
    fn clock_sync(&self) -> BoxFuture<'_, ClockSync> {
        Box::pin(timedate1_clock_sync(None))
    }
}

/// [`SystemdTimeSync`] on the bus at this D-Bus address (tests: a private broker).
#[derive(Debug, Clone)]
pub struct SystemdTimeSyncAt(pub String);

impl TimeSync for SystemdTimeSyncAt {
    fn clock_sync(&self) -> BoxFuture<'_, ClockSync> {
        Box::pin(timedate1_clock_sync(Some(&self.0)))
    }
}

/// Ask `org.freedesktop.timedate1` for `NTPSynchronized`, on the system bus or at `address`.
pub async fn timedate1_clock_sync(address: Option<&str>) -> ClockSync {
    let ask = async {
        let conn = match address {
            Some(a) => zbus::connection::Builder::address(a).build().await?,
            None => zbus::Connection::system().await?,
        };
        let proxy: zbus::Proxy<'_> = zbus::proxy::Builder::new(&conn)
            .destination("org.freedesktop.timedate1")
            .path("/org/freedesktop/timedate1")
            .interface("org.freedesktop.timedate1")
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await?;
        proxy.get_property::<bool>("NTPSynchronized").await
    };
    match tokio::time::timeout(TIMEDATE1_TIMEOUT, ask).await {
        Ok(Ok(true)) => ClockSync::Synchronised,
        Ok(Ok(false)) => ClockSync::NotSynchronised,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "systemd-timedated did not answer; clock sync not known.");
            ClockSync::NotKnown
        }
        Err(_) => {
            tracing::debug!("systemd-timedated did not answer in time; clock sync not known.");
            ClockSync::NotKnown
        }
    }
}

/// How long a [`ClockSync::Synchronised`] answer is kept by [`Cached`].
pub const CLOCK_SYNC_KEPT: Duration = Duration::from_secs(10);

/// A [`TimeSync`] that keeps a [`ClockSync::Synchronised`] answer for `kept` (issue 20): the
/// uplink asks once per loop, i.e. once per bundle while a backlog drains, and each question to
/// systemd-timedated is a new D-Bus connection. Any other answer is not kept: the next loop asks
/// again, so a clock that is not (yet) synchronised is seen as soon as it is, and one that lost
/// its synchronisation within `kept`.
#[derive(Debug)]
pub struct Cached<T> {
    inner: T,
    kept: Duration,
    since: std::sync::Mutex<Option<std::time::Instant>>,
}

impl<T: TimeSync> Cached<T> {
    pub fn new(inner: T, kept: Duration) -> Self {
        Cached {
            inner,
            kept,
            since: std::sync::Mutex::new(None),
        }
    }

    fn fresh(&self) -> bool {
        self.since
            .lock()
            .ok()
            .and_then(|s| *s)
            .is_some_and(|t| t.elapsed() < self.kept)
    }
}

impl<T: TimeSync> TimeSync for Cached<T> {
    fn clock_sync(&self) -> BoxFuture<'_, ClockSync> {
        Box::pin(async move {
            if self.fresh() {
                return ClockSync::Synchronised;
            }
            let state = self.inner.clock_sync().await;
            if let Ok(mut s) = self.since.lock() {
                *s = (state == ClockSync::Synchronised).then(std::time::Instant::now);
            }
            state
        })
    }
}

/// `require_clock_sync = false`: uploads never wait for the clock, but the PhgDevice claims SNTP
/// sync only when the inner check (systemd-timedated's `NTPSynchronized`) says so.
#[derive(Debug, Clone)]
pub struct NotRequired<T>(pub T);

impl<T: TimeSync> TimeSync for NotRequired<T> {
    fn clock_sync(&self) -> BoxFuture<'_, ClockSync> {
        Box::pin(std::future::ready(ClockSync::Synchronised))
    }
    fn claims_ntp(&self, _asked: ClockSync) -> BoxFuture<'_, bool> {
        Box::pin(async move { self.0.clock_sync().await == ClockSync::Synchronised })
    }
}

/// A fixed answer (tests; `--assume-time-synced` for development).
#[derive(Debug, Clone, Copy)]
pub struct FixedTimeSync(pub bool);

impl TimeSync for FixedTimeSync {
    fn clock_sync(&self) -> BoxFuture<'_, ClockSync> {
        let state = if self.0 {
            ClockSync::Synchronised
        } else {
            ClockSync::NotSynchronised
        };
        Box::pin(std::future::ready(state))
    }
}

fn d_batch() -> usize {
    40
}
fn d_max_entries() -> usize {
    crate::fhir::MAX_ENTRIES
}
fn d_connect() -> u64 {
    10_000
}
fn d_request() -> u64 {
    30_000
}
fn d_heartbeat() -> u64 {
    900
}
fn d_base() -> u64 {
    1_000
}
fn d_cap() -> u64 {
    600_000
}
fn d_poll() -> u64 {
    10_000
}
fn d_renew_at() -> u8 {
    renew::DEFAULT_RENEW_AT_PERCENT
}
fn d_refusal_alert() -> u64 {
    900
}
/// The longest `refusal_alert_after_secs`: a week.
pub const MAX_REFUSAL_ALERT_SECS: u64 = 7 * 86_400;
fn d_true() -> bool {
    true
}
fn d_manufacturer() -> String {
    "vitals-hub project".into()
}

/// The `[uplink]` section of the hub config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    /// The clinic's FHIR base URL; https only.
    pub base_url: String,
    /// PEM bundle of the clinic CA(s): the only trust anchors.
    pub ca_bundle: PathBuf,
    /// Hub certificate (PEM); default `$CREDENTIALS_DIRECTORY/client-cert`.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// Hub private key (PEM); default `$CREDENTIALS_DIRECTORY/client-key`.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// The patient's logical id at the clinic (`Patient/<id>`); in the hub config it is set once,
    /// in `[hub]`.
    #[serde(default)]
    pub patient_id: String,
    /// Outbox items per bundle (1..=50).
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    /// Entries per transaction Bundle at most (1..=50): the configured maximum. The hub learns a
    /// smaller one from a server's refusals and keeps it per server (`uplink_state`
    /// `max_entries`).
    #[serde(default = "d_max_entries")]
    pub max_entries: usize,
    #[serde(default = "d_connect")]
    pub connect_timeout_ms: u64,
    #[serde(default = "d_request")]
    pub request_timeout_ms: u64,
    #[serde(default = "d_heartbeat")]
    pub heartbeat_interval_secs: u64,
    #[serde(default = "d_base")]
    pub retry_base_ms: u64,
    #[serde(default = "d_cap")]
    pub retry_cap_ms: u64,
    /// How often an idle hub looks for new readings.
    #[serde(default = "d_poll")]
    pub poll_interval_ms: u64,
    /// gzip request bodies (`Content-Encoding: gzip`).
    #[serde(default = "d_true")]
    pub gzip: bool,
    /// The hub's MAC for its PhgDevice identity, e.g. `DC:A6:32:12:34:56`.
    #[serde(default)]
    pub hub_mac: Option<String>,
    /// The hub's UTC offset in minutes (for device wall-clock times).
    #[serde(default)]
    pub utc_offset_minutes: i32,
    /// The home's zone (`[hub] timezone`): device wall-clock times get the offset its rules give
    /// at their own instant (daylight saving). None: `utc_offset_minutes` for every time.
    #[serde(skip)]
    pub zone: Option<crate::model::Zone>,
    #[serde(default = "d_manufacturer")]
    pub manufacturer: String,
    /// Upload only once the hub's clock is synchronised (systemd-timesyncd); turn off only where
    /// the clock is known good by other means.
    #[serde(default = "d_true")]
    pub require_clock_sync: bool,
    /// After this long with every upload refused by the server (auth, wrong base path, unknown
    /// patient…), one hub alert ([`refusal`]); 1..=604800 s.
    #[serde(default = "d_refusal_alert")]
    pub refusal_alert_after_secs: u64,
    /// Renew the hub's client certificate over EST once this percentage of its lifetime has
    /// passed ([`renew`]); 0 turns renewal off, else 1..=99.
    #[serde(default = "d_renew_at")]
    pub renew_at_percent: u8,
}

impl UplinkConfig {
    /// A config with defaults (tests, the benchmark).
    pub fn new(base_url: &str, ca_bundle: &Path, patient_id: &str) -> UplinkConfig {
        UplinkConfig {
            base_url: base_url.into(),
            ca_bundle: ca_bundle.into(),
            client_cert: None,
            client_key: None,
            patient_id: patient_id.into(),
            batch_size: d_batch(),
            max_entries: d_max_entries(),
            connect_timeout_ms: d_connect(),
            request_timeout_ms: d_request(),
            heartbeat_interval_secs: d_heartbeat(),
            retry_base_ms: d_base(),
            retry_cap_ms: d_cap(),
            poll_interval_ms: d_poll(),
            gzip: true,
            hub_mac: None,
            utc_offset_minutes: 0,
            zone: None,
            manufacturer: d_manufacturer(),
            require_clock_sync: true,
            refusal_alert_after_secs: d_refusal_alert(),
            renew_at_percent: d_renew_at(),
        }
    }

    /// Check everything that can be checked without the network.
    pub fn validate(&self) -> Result<reqwest::Url, UplinkError> {
        let url = reqwest::Url::parse(&self.base_url).map_err(|e| {
            UplinkError::Config(format!("`base_url` {:?} is not a URL: {e}", self.base_url))
        })?;
        if url.scheme() != "https" {
            return Err(UplinkError::Config(format!(
                "`base_url` must be https://…, not {:?}",
                self.base_url
            )));
        }
        if !(1..=crate::fhir::MAX_ENTRIES).contains(&self.batch_size) {
            return Err(UplinkError::Config(format!(
                "`batch_size` must be 1..=50, not {}",
                self.batch_size
            )));
        }
        if !(1..=crate::fhir::MAX_ENTRIES).contains(&self.max_entries) {
            return Err(UplinkError::Config(format!(
                "`max_entries` must be 1..=50, not {}",
                self.max_entries
            )));
        }
        if self.patient_id.is_empty()
            || !self
                .patient_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(UplinkError::Config(
                "`patient_id` must be a FHIR logical id ([A-Za-z0-9-.]{1,64})".into(),
            ));
        }
        if !(1..=MAX_REFUSAL_ALERT_SECS).contains(&self.refusal_alert_after_secs) {
            return Err(UplinkError::Config(format!(
                "`refusal_alert_after_secs` must be 1..={MAX_REFUSAL_ALERT_SECS}, not {}",
                self.refusal_alert_after_secs
            )));
        }
        if self.renew_at_percent > 99 {
            return Err(UplinkError::Config(format!(
                "`renew_at_percent` must be 0 (off) or 1..=99, not {}",
                self.renew_at_percent
            )));
        }
        if self.request_timeout_ms == 0 || self.connect_timeout_ms == 0 {
            return Err(UplinkError::Config("timeouts must be > 0".into()));
        }
        Ok(url)
    }

    /// The certificate and key paths (explicit, or from systemd credentials).
    pub fn cert_paths(&self) -> Result<tls::CertPaths, UplinkError> {
        let cred = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
        let pick = |p: &Option<PathBuf>, name: &str| {
            p.clone()
                .or_else(|| cred.as_ref().map(|d| d.join(name)))
                .ok_or_else(|| {
                    UplinkError::Config(format!(
                        "`client_{}` is not set and $CREDENTIALS_DIRECTORY is not available",
                        name.trim_start_matches("client-")
                    ))
                })
        };
        Ok(tls::CertPaths {
            cert: pick(&self.client_cert, "client-cert")?,
            key: pick(&self.client_key, "client-key")?,
        })
    }

    /// The clock-synchronisation check `require_clock_sync` asks for.
    pub fn time_sync(&self) -> std::sync::Arc<dyn TimeSync> {
        // Asked once per loop (per bundle while a backlog drains): a synchronised answer is kept
        // for CLOCK_SYNC_KEPT instead of a D-Bus connection per bundle.
        let asked = Cached::new(SystemdTimeSync, CLOCK_SYNC_KEPT);
        if self.require_clock_sync {
            std::sync::Arc::new(asked)
        } else {
            std::sync::Arc::new(NotRequired(asked))
        }
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// Debug text of each element of an error chain (diagnostics).
pub fn chain_debug(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        out.push(format!("{err:?}"));
        cur = err.source();
    }
    out
}

/// The hub's PhgDevice identity from the config, else the MAC of the first non-loopback interface
/// (`/sys/class/net/*/address`).
pub fn hub_info(cfg: &UplinkConfig) -> Result<crate::fhir::HubInfo, UplinkError> {
    let mac = match &cfg.hub_mac {
        Some(m) => m.clone(),
        None => {
            let mut found = None;
            if let Ok(dir) = std::fs::read_dir("/sys/class/net") {
                let mut names: Vec<PathBuf> =
                    dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
                names.sort();
                for n in names {
                    if n.file_name().and_then(|f| f.to_str()) == Some("lo") {
                        continue;
                    }
                    if let Ok(a) = std::fs::read_to_string(n.join("address")) {
                        let a = a.trim().to_owned();
                        if a != "00:00:00:00:00:00" && !a.is_empty() {
                            found = Some(a);
                            break;
                        }
                    }
                }
            }
            found.ok_or_else(|| {
                UplinkError::Config(
                    "`hub_mac` is not set and no network interface has a MAC address".into(),
                )
            })?
        }
    };
    let mac = mac.parse().map_err(|e: crate::fhir::identifier::IdError| {
        UplinkError::Config(format!("`hub_mac`: {e}"))
    })?;
    Ok(crate::fhir::HubInfo {
        mac,
        manufacturer: cfg.manufacturer.clone(),
        model: "vitals-hub".into(),
        software_version: env!("CARGO_PKG_VERSION").into(),
        // Asked before each bundle (TimeSync::claims_ntp); nothing claimed until then.
        ntp: false,
        utc_offset_minutes: cfg.utc_offset_minutes,
        zone: cfg.zone.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_rejects_http_unknown_fields_and_bad_batches() {
        let c = UplinkConfig::new("http://clinic.example/fhir", Path::new("/ca.pem"), "p1");
        assert!(c.validate().unwrap_err().to_string().contains("https"));
        let mut c = UplinkConfig::new("https://clinic.example/fhir", Path::new("/ca.pem"), "p1");
        assert!(c.validate().is_ok());
        c.batch_size = 51;
        assert!(c.validate().is_err());
        let e = serde_json::from_str::<UplinkConfig>(
            r#"{"base_url":"https://x","ca_bundle":"/c","patient_id":"p","colour":1}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("colour"));
    }

    #[test]
    fn hub_identity_from_config() {
        let mut c = UplinkConfig::new("https://clinic.example/fhir", Path::new("/ca.pem"), "p1");
        c.hub_mac = Some("DC:A6:32:12:34:56".into());
        let h = hub_info(&c).unwrap();
        assert_eq!(
            crate::fhir::Eui64::from_eui48(h.mac).dashed(),
            "DC-A6-32-FF-FE-12-34-56"
        );
        c.hub_mac = Some("nope".into());
        assert!(hub_info(&c).is_err());
    }
}
