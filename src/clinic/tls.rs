//! The clinic's rustls server configuration (ring provider), requiring client certificates; with a
//! [`Registry`], a certificate must also be enrolled and not revoked ([`RegistryVerifier`]).

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
use std::path::Path;
use std::sync::Arc;

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
    let provider = Arc::new(rustls::crypto::ring::default_provider());
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
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| ReceiverError::Tls(format!("client verifier: {e}")))?;
            match registry {
                Some(registry) => builder.with_client_cert_verifier(Arc::new(RegistryVerifier {
                    inner: verifier,
                    registry,
                })),
                None => builder.with_client_cert_verifier(verifier),
            }
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder
        .with_single_cert(chain, key)
        .map_err(|e| ReceiverError::Tls(format!("server certificate/key: {e}")))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The production server config from PEM files: TLS 1.3 only, client certificates required, and
/// enrolled in `registry` (not revoked).
pub fn server_config_registry(
    cert: &Path,
    key: &Path,
    client_ca: &Path,
    registry: Registry,
) -> Result<Arc<ServerConfig>, ReceiverError> {
    server_config_der_with(
        load_certs(cert)?,
        load_key(key)?,
        Some(load_certs(client_ca)?),
        &[&rustls::version::TLS13],
        Some(registry),
    )
}

/// The WebPKI client verifier (chain to the hub CA, validity, key usage), then the registry: an
/// unknown certificate fails the handshake with `ApplicationVerificationFailure`, a revoked one
/// with `Revoked` (the hub sees a TLS alert, never an HTTP answer).
#[derive(Debug)]
pub struct RegistryVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    registry: Registry,
}

impl ClientCertVerifier for RegistryVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        true
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let fp = fingerprint(end_entity.as_ref());
        match self.registry.active(&fp) {
            Some(_) => Ok(ClientCertVerified::assertion()),
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
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
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
