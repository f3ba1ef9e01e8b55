//! The hub's TLS client: rustls on the ring provider, TLS 1.3 only, the clinic CA bundle as the only
//! roots, ALPN `http/1.1`, no session resumption; the client certificate comes from PEM files through
//! a resolver that presents the copy in memory. The uplink re-reads the files when they change
//! ([`ReloadingCert::refresh`], on a blocking thread) and swaps the copy: rotation without a restart,
//! and no file I/O inside a TLS handshake (which runs on the async runtime's threads).

use super::UplinkError;
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tracing::info;

/// The validity period of a certificate, seconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: i64,
    pub not_after: i64,
}

/// A DER TLV: (tag, content, rest).
pub(crate) fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&len0, rest) = rest.split_first()?;
    let (len, rest) = if len0 < 0x80 {
        (usize::from(len0), rest)
    } else {
        let n = usize::from(len0 & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (lb, rest) = rest.split_at(n);
        (
            lb.iter().fold(0usize, |a, b| (a << 8) | usize::from(*b)),
            rest,
        )
    };
    if rest.len() < len {
        return None;
    }
    let (content, rest) = rest.split_at(len);
    Some((tag, content, rest))
}

fn digits(s: &[u8]) -> Option<i64> {
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// UTCTime `YYMMDDHHMMSSZ` or GeneralizedTime `YYYYMMDDHHMMSSZ` → Unix seconds.
fn x509_time(tag: u8, v: &[u8]) -> Option<i64> {
    let (year, rest) = match tag {
        0x17 => {
            let yy = digits(v.get(0..2)?)?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, v.get(2..)?)
        }
        0x18 => (digits(v.get(0..4)?)?, v.get(4..)?),
        _ => return None,
    };
    let f = |a: usize| rest.get(a..a + 2).and_then(digits);
    let (mo, d, h, mi, s) = (f(0)?, f(2)?, f(4)?, f(6)?, f(8)?);
    let n = |v: i64| i8::try_from(v).ok();
    let t = jiff::civil::DateTime::new(
        i16::try_from(year).ok()?,
        n(mo)?,
        n(d)?,
        n(h)?,
        n(mi)?,
        n(s)?,
        0,
    );
    Some(
        jiff::tz::Offset::UTC
            .to_timestamp(t.ok()?)
            .ok()?
            .as_second(),
    )
}

/// notBefore / notAfter of an X.509 certificate (RFC 5280 4.1: Certificate → TBSCertificate →
/// \[version\] serial signature issuer validity).
pub fn validity(der: &[u8]) -> Option<Validity> {
    let (_, cert, _) = tlv(der)?;
    let (_, tbs, _) = tlv(cert)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xA0) {
        rest = tlv(rest)?.2;
    }
    for _ in 0..3 {
        rest = tlv(rest)?.2; // serial, signature, issuer
    }
    let (_, val, _) = tlv(rest)?;
    let (t1, nb, r) = tlv(val)?;
    let (t2, na, _) = tlv(r)?;
    Some(Validity {
        not_before: x509_time(t1, nb)?,
        not_after: x509_time(t2, na)?,
    })
}

/// Where the client certificate and key come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

type Stamp = Option<(SystemTime, u64)>;

fn stamp(p: &Path) -> Stamp {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    validity: Option<Validity>,
    stamps: (Stamp, Stamp),
}

/// A [`ResolvesClientCert`] over PEM files. The handshake only reads the certificate held in
/// memory; [`ReloadingCert::refresh`] re-reads the files when their modification time or size
/// changed and swaps it (call it off the async runtime's threads: it does file I/O).
#[derive(Debug)]
pub struct ReloadingCert {
    paths: CertPaths,
    /// How many times a server asked for the client certificate (one per full handshake; a
    /// diagnostic: the per-connection check is [`RequireClientAuth`]'s).
    requests: std::sync::atomic::AtomicU64,
    provider: Arc<rustls::crypto::CryptoProvider>,
    current: Mutex<Option<Loaded>>,
}

fn load(
    paths: &CertPaths,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<Loaded, UplinkError> {
    let bad = |what: &str, p: &Path, e: String| UplinkError::ClientCertificate {
        path: p.to_path_buf(),
        reason: format!("{what}: {e}"),
    };
    // Stamps first: a file replaced while we read is seen as changed next time.
    let stamps = (stamp(&paths.cert), stamp(&paths.key));
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&paths.cert)
        .map_err(|e| bad("cannot read", &paths.cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad("not PEM", &paths.cert, e.to_string()))?;
    let leaf = chain
        .first()
        .ok_or_else(|| bad("no CERTIFICATE block", &paths.cert, String::new()))?;
    let validity = validity(leaf.as_ref());
    let key = PrivateKeyDer::from_pem_file(&paths.key)
        .map_err(|e| bad("cannot read the private key", &paths.key, e.to_string()))?;
    let ck = CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        bad(
            "certificate and key do not form a pair",
            &paths.key,
            e.to_string(),
        )
    })?;
    Ok(Loaded {
        key: Arc::new(ck),
        validity,
        stamps,
    })
}

impl ReloadingCert {
    pub fn new(
        paths: CertPaths,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<ReloadingCert, UplinkError> {
        let loaded = load(&paths, &provider)?;
        Ok(ReloadingCert {
            requests: std::sync::atomic::AtomicU64::new(0),
            paths,
            provider,
            current: Mutex::new(Some(loaded)),
        })
    }

    /// Re-read the files if they changed. Returns true when a new certificate was loaded. A broken
    /// or missing new file keeps the old certificate (and is reported). Blocking file I/O: the
    /// uplink calls it through `spawn_blocking`.
    pub fn refresh(&self) -> Result<bool, UplinkError> {
        let now = (stamp(&self.paths.cert), stamp(&self.paths.key));
        let same = self
            .current
            .lock()
            .map(|c| c.as_ref().map(|l| l.stamps == now).unwrap_or(false))
            .unwrap_or(false);
        if same {
            return Ok(false);
        }
        let loaded = load(&self.paths, &self.provider)?;
        info!(cert = %self.paths.cert.display(), "Client certificate reloaded.");
        if let Ok(mut c) = self.current.lock() {
            *c = Some(loaded);
        }
        Ok(true)
    }

    /// How many times servers asked for the client certificate.
    pub fn requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The current certificate's validity.
    pub fn validity(&self) -> Option<Validity> {
        self.current
            .lock()
            .ok()
            .and_then(|c| c.as_ref().and_then(|l| l.validity))
    }
}

impl ResolvesClientCert for ReloadingCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // This connection's handshake asked for the hub's certificate (see RequireClientAuth).
        let _ = CLIENT_AUTH_ASKED.try_with(|asked| asked.store(true, Ordering::SeqCst));
        // Memory only: the files are re-read by `refresh`, never inside a handshake.
        self.current
            .lock()
            .ok()
            .and_then(|c| c.as_ref().map(|l| l.key.clone()))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The message of the connector error for a server that did not authenticate the hub.
pub const NO_CLIENT_AUTH: &str = "the server did not request the hub's client certificate";

tokio::task_local! {
    /// Set by the resolver when the handshake of the connection being made asked for the hub's
    /// certificate. Scoped to one connection's connect future (TLS handshake included), so
    /// concurrent connections never see each other's flag.
    static CLIENT_AUTH_ASKED: Arc<AtomicBool>;
}

/// A reqwest connector layer: a new connection whose handshake did not ask for the client
/// certificate is dropped before any request (and so any PHI) is written on it
/// (security-notes checklist 9: mutual authentication on every session). The check is per
/// connection: each connect future carries its own flag, which the resolver sets when it runs
/// inside that connection's handshake; connections made at the same time do not mix.
/// Holds the resolver of the client configuration the connector uses: only a [`ReloadingCert`]
/// resolver sets the per-connection flag.
#[derive(Debug, Clone)]
pub struct RequireClientAuth(pub Arc<ReloadingCert>);

impl<S> tower_layer::Layer<S> for RequireClientAuth {
    type Service = RequireClientAuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequireClientAuthService { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RequireClientAuthService<S> {
    inner: S,
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, R> tower_service::Service<R> for RequireClientAuthService<S>
where
    S: tower_service::Service<R>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: From<String> + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let asked = Arc::new(AtomicBool::new(false));
        // The TLS handshake runs while this future is polled (reqwest and hyper-rustls spawn no
        // task for it), so the resolver sees this connection's flag.
        let fut = CLIENT_AUTH_ASKED.scope(asked.clone(), self.inner.call(req));
        Box::pin(async move {
            let conn = fut.await?;
            if !asked.load(Ordering::SeqCst) {
                return Err(S::Error::from(NO_CLIENT_AUTH.to_owned()));
            }
            Ok(conn)
        })
    }
}

/// PEM CA certificates as the only trust anchors.
pub fn roots(ca_bundle: &Path) -> Result<RootCertStore, UplinkError> {
    let bad = |e: String| UplinkError::CaBundle {
        path: ca_bundle.to_path_buf(),
        reason: e,
    };
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca_bundle).map_err(|e| bad(e.to_string()))? {
        let c = c.map_err(|e| bad(e.to_string()))?;
        roots.add(c).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no CERTIFICATE block".into()));
    }
    Ok(roots)
}

/// Verify that the hub certificate in `cert` (PEM; leaf first, then any intermediates) chains to a
/// CA in `ca_bundle` and is valid at `now` for client authentication, with the same rustls/webpki
/// verifier a clinic server would use on the hub. A broken chain here means the clinic would refuse
/// the hub's handshake.
pub fn verify_client_chain(
    ca_bundle: &Path,
    cert: &Path,
    now: rustls_pki_types::UnixTime,
) -> Result<(), UplinkError> {
    let bad = |reason: String| UplinkError::ClientCertificate {
        path: cert.to_path_buf(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(format!("cannot read: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(format!("not PEM: {e}")))?;
    let (leaf, intermediates) = chain
        .split_first()
        .ok_or_else(|| bad("no CERTIFICATE block".into()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(ca_bundle)?),
        provider,
    )
    .build()
    .map_err(|e| UplinkError::Tls(format!("building the chain verifier: {e}")))?;
    verifier
        .verify_client_cert(leaf, intermediates, now)
        .map(|_| ())
        .map_err(|e| {
            bad(format!(
                "the certificate chain does not verify to the clinic CA {} ({e})",
                ca_bundle.display()
            ))
        })
}

/// The hub's rustls client configuration.
pub fn client_config(
    ca_bundle: &Path,
    resolver: Arc<ReloadingCert>,
) -> Result<ClientConfig, UplinkError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| UplinkError::Tls(e.to_string()))?
        .with_root_certificates(roots(ca_bundle)?)
        .with_client_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Every session authenticates both ends afresh (security-notes checklist 9).
    cfg.resumption = Resumption::disabled();
    cfg.enable_early_data = false;
    Ok(cfg)
}

// Built against certificates from the clinic's dev CA: the `clinic` feature (the default).
#[cfg(all(test, feature = "clinic"))]
mod tests {
    use super::*;
    use crate::model::Clock;
    use crate::receiver::pki::{DevCa, Span};

    #[test]
    fn validity_of_minted_certificates() {
        let ca = DevCa::new("t").unwrap();
        let c = ca
            .client(
                "x",
                Span {
                    from_days: -2,
                    to_days: 30,
                },
            )
            .unwrap();
        let v = validity(&c.cert_der).unwrap();
        assert_eq!(v.not_after - v.not_before, 32 * 86_400);
        let now = crate::model::SystemClock.now().as_millis() / 1000;
        assert!(v.not_before < now && now < v.not_after);
        assert!(validity(&c.cert_der[..40]).is_none());
        assert!(validity(&[]).is_none());
    }
}
