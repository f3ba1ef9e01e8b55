//! The clinic's rustls server configuration (ring provider), requiring client certificates; with a
//! [`Registry`], a certificate must also be enrolled and not revoked ([`RegistryVerifier`]); with a
//! CRL file ([`CrlWatch`], `serve --crl`), the WebPKI verifier checks it too and re-reads it when
//! it changes. Either way a revoked hub certificate fails the handshake with the
//! `certificate_revoked` alert, which the hub names distinctly.

use super::registry::Registry;
use super::ReceiverError;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::UnixTime;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme, SupportedProtocolVersion,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

/// SHA-256 of a DER certificate, as `sha256:<hex>`.
pub fn fingerprint(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    format!("sha256:{}", hex::encode(d))
}

fn tls_err(what: &str, path: &Path, e: impl std::fmt::Display) -> ReceiverError {
    ReceiverError::Tls(format!("{what} {}: {e}", path.display()))
}

/// PEM certificates from a file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ReceiverError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_err("certificate file", path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err("certificate file", path, e))?;
    if certs.is_empty() {
        return Err(tls_err("certificate file", path, "no CERTIFICATE block"));
    }
    Ok(certs)
}

/// A PEM private key from a file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, ReceiverError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| tls_err("private key file", path, e))
}

/// A server config from DER material: `versions` is `[TLS13]` in production; tests pass `[TLS12]`.
/// With `client_ca`, every client must present a certificate chaining to it.
pub fn server_config_der(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_ca: Option<Vec<CertificateDer<'static>>>,
    versions: &[&'static SupportedProtocolVersion],
) -> Result<Arc<ServerConfig>, ReceiverError> {
    server_config_der_with(chain, key, client_ca, versions, None)
}

/// [`server_config_der`], and with `registry` every client certificate must also be enrolled
/// there and not revoked.
pub fn server_config_der_with(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_ca: Option<Vec<CertificateDer<'static>>>,
    versions: &[&'static SupportedProtocolVersion],
    registry: Option<Registry>,
) -> Result<Arc<ServerConfig>, ReceiverError> {
    server_config_crl(chain, key, client_ca, versions, registry, None).map(|(c, _)| c)
}

/// [`server_config_der_with`], and with `crl` (needs `registry`) the client verifier checks that
/// CRL file; the returned [`CrlWatch`] re-reads it ([`CrlWatch::reload`]).
pub fn server_config_crl(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_ca: Option<Vec<CertificateDer<'static>>>,
    versions: &[&'static SupportedProtocolVersion],
    registry: Option<Registry>,
    crl: Option<&Path>,
) -> Result<(Arc<ServerConfig>, Option<Arc<CrlWatch>>), ReceiverError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut watch = None;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| ReceiverError::Tls(e.to_string()))?;
    let builder = match client_ca {
        Some(cas) => {
            let mut roots = RootCertStore::empty();
            for c in cas {
                roots
                    .add(c)
                    .map_err(|e| ReceiverError::Tls(format!("client CA: {e}")))?;
            }
            let roots = Arc::new(roots);
            let verifier = build_verifier(&roots, &provider, Vec::new())?;
            match registry {
                Some(registry) => {
                    let hints = verifier.root_hint_subjects().to_vec();
                    let slot = Arc::new(RwLock::new(verifier));
                    if let Some(path) = crl {
                        let w = Arc::new(CrlWatch {
                            path: path.to_path_buf(),
                            roots,
                            provider: provider.clone(),
                            slot: slot.clone(),
                            stamp: Mutex::new(None),
                        });
                        w.reload()?;
                        watch = Some(w);
                    }
                    builder.with_client_cert_verifier(Arc::new(RegistryVerifier {
                        inner: slot,
                        hints,
                        registry,
                    }))
                }
                None if crl.is_some() => {
                    return Err(ReceiverError::Tls(
                        "a CRL is checked with the hub registry only".into(),
                    ))
                }
                None => builder.with_client_cert_verifier(verifier),
            }
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder
        .with_single_cert(chain, key)
        .map_err(|e| ReceiverError::Tls(format!("server certificate/key: {e}")))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(cfg), watch))
}

fn build_verifier(
    roots: &Arc<RootCertStore>,
    provider: &Arc<rustls::crypto::CryptoProvider>,
    crls: Vec<rustls_pki_types::CertificateRevocationListDer<'static>>,
) -> Result<Arc<dyn ClientCertVerifier>, ReceiverError> {
    let mut b = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
    if !crls.is_empty() {
        // Hub certificates are issued by the hub CA directly: only the end entity is looked up.
        b = b.with_crls(crls).only_check_end_entity_revocation();
    }
    b.build()
        .map_err(|e| ReceiverError::Tls(format!("client verifier: {e}")))
}

type Stamp = Option<(SystemTime, u64)>;

fn stamp(p: &Path) -> Stamp {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// The CRL file `serve --crl` names: read at start (a missing or broken file is an error then),
/// re-read by [`CrlWatch::reload`] when its modification time or size changed; a broken new file
/// keeps the verifier of the last good one.
#[derive(Debug)]
pub struct CrlWatch {
    path: PathBuf,
    roots: Arc<RootCertStore>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    slot: Arc<RwLock<Arc<dyn ClientCertVerifier>>>,
    stamp: Mutex<Stamp>,
}

impl CrlWatch {
    /// Re-read the CRL if the file changed; true when a new one is in force. Blocking file I/O.
    pub fn reload(&self) -> Result<bool, ReceiverError> {
        let now = stamp(&self.path);
        if let Ok(s) = self.stamp.lock() {
            if now.is_some() && *s == now {
                return Ok(false);
            }
        }
        let bad = |e: String| {
            ReceiverError::Tls(format!(
                "CRL {}: {e}; give the PEM CRL `vitals-clinic hub revoke|crl --crl` writes, signed by the hub CA of --client-ca",
                self.path.display()
            ))
        };
        let crls = rustls_pki_types::CertificateRevocationListDer::pem_file_iter(&self.path)
            .map_err(|e| bad(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        if crls.is_empty() {
            return Err(bad("no X509 CRL block".into()));
        }
        for c in &crls {
            let (_, parsed) = x509_parser::parse_x509_crl(c.as_ref())
                .map_err(|e| bad(format!("not a CRL ({e})")))?;
            let issuer = parsed.issuer().as_raw();
            // A CRL of another CA would leave every hub's revocation status unknown: refused.
            if !self
                .roots
                .roots
                .iter()
                .any(|r| r.subject.as_ref() == strip_seq(issuer))
            {
                return Err(bad("its issuer is not the hub CA".into()));
            }
        }
        let v = build_verifier(&self.roots, &self.provider, crls)?;
        if let Ok(mut s) = self.slot.write() {
            *s = v;
        }
        if let Ok(mut s) = self.stamp.lock() {
            *s = now;
        }
        tracing::info!(crl = %self.path.display(), "Hub CRL loaded.");
        Ok(true)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The content of a DER SEQUENCE (a trust anchor's subject is stored without its header).
fn strip_seq(der: &[u8]) -> &[u8] {
    match der {
        [0x30, l, rest @ ..] if *l < 0x80 => rest,
        [0x30, 0x81, _, rest @ ..] => rest,
        [0x30, 0x82, _, _, rest @ ..] => rest,
        other => other,
    }
}

/// The production server config from PEM files: TLS 1.3 only, client certificates required, and
/// enrolled in `registry` (not revoked).
pub fn server_config_registry(
    cert: &Path,
    key: &Path,
    client_ca: &Path,
    registry: Registry,
) -> Result<Arc<ServerConfig>, ReceiverError> {
    server_config_registry_crl(cert, key, client_ca, registry, None).map(|(c, _)| c)
}

/// [`server_config_registry`] checking the CRL file `crl` too (`serve --crl`).
pub fn server_config_registry_crl(
    cert: &Path,
    key: &Path,
    client_ca: &Path,
    registry: Registry,
    crl: Option<&Path>,
) -> Result<(Arc<ServerConfig>, Option<Arc<CrlWatch>>), ReceiverError> {
    server_config_crl(
        load_certs(cert)?,
        load_key(key)?,
        Some(load_certs(client_ca)?),
        &[&rustls::version::TLS13],
        Some(registry),
        crl,
    )
}

/// The WebPKI client verifier (chain to the hub CA, validity, key usage), then the registry: an
/// unknown certificate fails the handshake with `ApplicationVerificationFailure`, a revoked one
/// with `Revoked` (the hub sees a TLS alert, never an HTTP answer).
#[derive(Debug)]
pub struct RegistryVerifier {
    inner: Arc<RwLock<Arc<dyn ClientCertVerifier>>>,
    hints: Vec<DistinguishedName>,
    registry: Registry,
}

impl RegistryVerifier {
    fn inner(&self) -> Result<Arc<dyn ClientCertVerifier>, rustls::Error> {
        self.inner
            .read()
            .map(|g| g.clone())
            .map_err(|_| rustls::Error::General("client verifier lock".into()))
    }
}

impl ClientCertVerifier for RegistryVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        true
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The trust anchors' names: the same in every verifier this slot holds.
        &self.hints
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner()?
            .verify_client_cert(end_entity, intermediates, now)?;
        let fp = fingerprint(end_entity.as_ref());
        match self.registry.active(&fp) {
            Some(_) => Ok(ClientCertVerified::assertion()),
            None if self.registry.is_revoked(&fp) => {
                tracing::warn!(fingerprint = %fp, "Client certificate revoked: refused.");
                Err(rustls::Error::InvalidCertificate(CertificateError::Revoked))
            }
            None => {
                tracing::warn!(fingerprint = %fp, "Client certificate not enrolled or revoked: refused.");
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ))
            }
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner()?.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner()?.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner()
            .map(|v| v.supported_verify_schemes())
            .unwrap_or_default()
    }
}

/// The server config from PEM files: TLS 1.3 only, client certificates required (chain only, no
/// registry: development and tests; `vitals-clinic serve` uses [`server_config_registry`]).
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: &Path,
) -> Result<Arc<ServerConfig>, ReceiverError> {
    server_config_der(
        load_certs(cert)?,
        load_key(key)?,
        Some(load_certs(client_ca)?),
        &[&rustls::version::TLS13],
    )
}
