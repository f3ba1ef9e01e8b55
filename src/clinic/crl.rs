//! The hub CA's signing key in the clinic's hands (issue 19): certificate revocation lists for
//! revoked hubs, and (through [`super::est`]) renewed hub certificates.
//!
//! **CRL.** `vitals-clinic hub revoke HUB --crl FILE --ca-cert CA --ca-key KEY` marks the hub's
//! certificates revoked in the registry and writes FILE anew: a CRL (RFC 5280) signed by the hub
//! CA listing the serial of every revoked certificate the store knows the serial of (recorded at
//! enrolment and at EST renewal; [`super::db::ReceiverDb::record_serial`]), with
//! `nextUpdate` [`CRL_VALID_DAYS`] later. `vitals-clinic hub crl` re-issues it unchanged but for
//! the dates — run it from a timer well inside that period, since nginx's `ssl_crl` refuses every
//! client once the CRL has expired. The file is written beside itself and renamed over the old one
//! (a reader never sees half a CRL).
//!
//! **Where it is checked.** `vitals-clinic serve --crl FILE` builds the WebPKI client verifier
//! with it ([`super::tls::CrlWatch`]) and re-reads it every [`super::registry::RELOAD_EVERY`] when
//! its modification time or size changed (a broken new file keeps the last good one, logged); a
//! revoked certificate then fails the TLS handshake with the `certificate_revoked` alert. The
//! registry refuses the same certificate with the same alert, so an ingest without `--crl` still
//! refuses it; the CRL is what a TLS terminator in front (the reference nginx, `ssl_crl`) reads.

use rcgen::{
    CertificateRevocationListParams, Issuer, KeyIdMethod, KeyPair, RevokedCertParams, SerialNumber,
};
use std::path::{Path, PathBuf};

/// How long a CRL written here is valid (`nextUpdate - thisUpdate`).
pub const CRL_VALID_DAYS: u64 = 30;

/// Errors loading the hub CA or writing a CRL; each names the file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("hub CA file {path}: {reason}; give the hub CA's certificate and private key (PEM), the CA that issues the hubs' client certificates")]
    Load { path: PathBuf, reason: String },
    #[error("signing with the hub CA failed: {0}; the CA certificate and key must be a pair and the CA allowed to sign certificates and CRLs")]
    Sign(String),
    #[error(
        "cannot write {path}: {source}; check the directory exists and is writable by this user"
    )]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The hub CA: its certificate and the key that signs hub certificates and CRLs.
pub struct HubCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate (DER), as served by EST `cacerts`.
    pub cert_der: Vec<u8>,
}

impl std::fmt::Debug for HubCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("HubCa")
            .field("cert_der_len", &self.cert_der.len())
            .finish_non_exhaustive()
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An rcgen time `secs` after the Unix epoch.
pub fn at_secs(secs: u64) -> time::OffsetDateTime {
    rcgen::date_time_ymd(1970, 1, 1) + std::time::Duration::from_secs(secs)
}

impl HubCa {
    /// Load the CA certificate (first PEM block) and its private key (PEM).
    pub fn load(cert: &Path, key: &Path) -> Result<HubCa, CaError> {
        let bad = |path: &Path, reason: String| CaError::Load {
            path: path.to_path_buf(),
            reason,
        };
        let cert_pem = std::fs::read_to_string(cert).map_err(|e| bad(cert, e.to_string()))?;
        let key_pem = std::fs::read_to_string(key).map_err(|e| bad(key, e.to_string()))?;
        let kp = KeyPair::from_pem(&key_pem).map_err(|e| bad(key, e.to_string()))?;
        let der = super::tls::load_certs(cert)
            .map_err(|e| bad(cert, e.to_string()))?
            .into_iter()
            .next()
            .ok_or_else(|| bad(cert, "no certificate".into()))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|e| bad(cert, e.to_string()))?;
        if parsed.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(&kp).as_slice()
        {
            return Err(bad(
                key,
                format!("not the key of the CA certificate {}", cert.display()),
            ));
        }
        let issuer =
            Issuer::from_ca_cert_pem(&cert_pem, kp).map_err(|e| bad(cert, e.to_string()))?;
        Ok(HubCa {
            issuer,
            cert_der: der.as_ref().to_vec(),
        })
    }

    /// A CA from parts already in memory (tests, the demo).
    pub fn from_parts(cert_der: Vec<u8>, issuer: Issuer<'static, KeyPair>) -> HubCa {
        HubCa { issuer, cert_der }
    }

    pub(super) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    /// A CRL listing these revoked serials (hex of the DER INTEGER content, as
    /// [`serial_hex`] gives) with their revocation times (RFC 3339), DER.
    pub fn crl_der(&self, revoked: &[(String, String)]) -> Result<Vec<u8>, CaError> {
        let now = now_secs();
        let revoked_certs = revoked
            .iter()
            .filter_map(|(serial, when)| {
                let bytes = hex::decode(serial).ok()?;
                let t = when
                    .parse::<jiff::Timestamp>()
                    .ok()
                    .and_then(|t| u64::try_from(t.as_second()).ok())
                    .unwrap_or(now);
                Some(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&bytes),
                    revocation_time: at_secs(t),
                    reason_code: None,
                    invalidity_date: None,
                })
            })
            .collect();
        let params = CertificateRevocationListParams {
            this_update: at_secs(now.saturating_sub(60)),
            next_update: at_secs(now + CRL_VALID_DAYS * 86_400),
            crl_number: SerialNumber::from(now),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params
            .signed_by(&self.issuer)
            .map_err(|e| CaError::Sign(e.to_string()))?;
        Ok(crl.der().as_ref().to_vec())
    }

    /// [`HubCa::crl_der`] written as PEM to `path`, atomically.
    pub fn write_crl(&self, path: &Path, revoked: &[(String, String)]) -> Result<(), CaError> {
        let der = self.crl_der(revoked)?;
        let pem = pem_block("X509 CRL", &der);
        write_atomic(path, pem.as_bytes(), 0o644)
    }
}

/// PEM armour around DER.
pub fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The serial of a DER certificate as hex (the INTEGER's content bytes).
pub fn serial_hex(cert_der: &[u8]) -> Option<(String, i64)> {
    let (_, c) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    Some((
        hex::encode(c.raw_serial()),
        c.validity().not_after.timestamp(),
    ))
}

/// Write `data` to `path` through a new file in the same directory: write, fsync, rename, fsync
/// the directory.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), CaError> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let io = |source| CaError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    tmp.write_all(data).map_err(io)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
