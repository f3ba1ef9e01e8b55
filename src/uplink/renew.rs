//! The hub renews its own client certificate (issue 19): EST simple re-enrollment (RFC 7030
//! 4.2.2) over its current mutual-TLS identity, at `renew_at_percent` of the certificate's
//! lifetime (default [`DEFAULT_RENEW_AT_PERCENT`], two thirds).
//!
//! **One attempt** ([`Uplink::maybe_renew`], from the upload loop, never inside a handshake): a
//! new P-256 key pair made on the hub ([`make_request`]), a PKCS#10 CSR with the current
//! certificate's subject, POSTed base64 to `<origin of base_url>/.well-known/est/simplereenroll`
//! with the uplink's own client (same CA bundle, same client certificate, same timeouts). The
//! answer (at most [`MAX_EST_RESPONSE`] bytes, a PKCS#7 certs-only, [`certs_from_pkcs7`]) must
//! hold a certificate for exactly the new key and the same subject, valid now.
//!
//! **Installed atomically, the old kept** ([`install`]): the current files are copied to
//! `<cert>.prev` / `<key>.prev`; the new key and certificate are each written to a new file in the
//! same directory (key 0600), fsync'd and renamed over the old, then the directory is fsync'd. The
//! uplink reloads them at once. The old pair stays until the new one has worked once: the first
//! upload the clinic accepts with it removes the `.prev` files ([`confirm`]); a clinic that
//! refuses the new certificate at the TLS layer before that gets the old pair back
//! ([`roll_back`]), which is valid until its own expiry (the clinic keeps it enrolled).
//!
//! **Failures** (clinic down, CSR refused, an unusable answer, a read-only certificate directory
//! such as systemd's `$CREDENTIALS_DIRECTORY`) retry with exponential backoff from
//! `retry_base_ms` to `retry_cap_ms`; each failure is an `uplink_client_cert_renewal_failed`
//! event naming the cause in fixed words; the 14-day hub alert of
//! [`Uplink::check_certificate`](super::Uplink) escalates when renewal keeps failing. The state
//! (`scheduled`, `renewed`, `confirmed`, `failing`, `rolled_back`) is kept in the store
//! (`uplink_state` [`RENEWAL_STATE`]) for `vitals-hub status` and `doctor`.

use super::sync::Uplink;
use super::tls::{CertPaths, Validity};
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Renew at two thirds of the lifetime by default.
pub const DEFAULT_RENEW_AT_PERCENT: u8 = 67;
/// The `uplink_state` name of the renewal state ([`Renewal`], JSON).
pub const RENEWAL_STATE: &str = "cert_renewal";
/// Largest EST answer read.
pub const MAX_EST_RESPONSE: usize = 64 << 10;
/// The EST re-enrolment path (RFC 7030 3.2.2), at the origin of `base_url`.
pub const EST_REENROLL: &str = "/.well-known/est/simplereenroll";

/// The renewal state as stored and shown by `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Renewal {
    /// `renewed` (installed, not yet used), `confirmed` (the clinic accepted an upload with it),
    /// `failing`, `rolled_back`.
    pub state: String,
    /// When, ms since the epoch.
    pub at: i64,
    /// Failed attempts in a row.
    pub failures: u32,
    /// The last failure, in fixed words.
    pub error: Option<String>,
    /// The new certificate's expiry (s since the epoch), after a renewal.
    pub not_after: Option<i64>,
}

/// The uplink's renewal bookkeeping in memory.
#[derive(Debug, Default)]
pub struct RenewState {
    failures: u32,
    next_attempt: Option<Instant>,
    /// A renewed pair is installed and has not worked yet (`.prev` files kept).
    pending: bool,
}

/// When renewal is due: `percent` of the way from notBefore to notAfter (s since the epoch).
pub fn renew_at(v: Validity, percent: u8) -> i64 {
    let life = (v.not_after - v.not_before).max(0);
    v.not_before + life.saturating_mul(i64::from(percent)) / 100
}

/// The EST URL for a FHIR base URL: same scheme, host and port, the well-known path.
pub fn est_url(base: &reqwest::Url) -> reqwest::Url {
    let mut u = base.clone();
    u.set_path(EST_REENROLL);
    u.set_query(None);
    u.set_fragment(None);
    u
}

/// A renewal request made on the hub.
#[derive(Debug)]
pub struct Request {
    /// The new private key (PKCS#8 PEM); written only once the new certificate is in hand.
    pub key_pem: String,
    /// The CSR, base64 of its DER (the EST body).
    pub csr_b64: String,
    /// The new key's SubjectPublicKeyInfo (DER), to find its certificate in the answer.
    pub spki: Vec<u8>,
    /// The current certificate's subject, as text.
    pub subject: String,
}

/// A new key pair and a CSR carrying the subject of the current certificate `cert_der`.
pub fn make_request(cert_der: &[u8]) -> Result<Request, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| format!("the current certificate cannot be read ({e})"))?;
    let subject = cert.subject().to_string();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = copy_name(cert.subject()).ok_or(
        "the current certificate's subject cannot be copied (a multi-valued or non-text name)",
    )?;
    let key = rcgen::KeyPair::generate().map_err(|e| format!("key generation failed ({e})"))?;
    let csr = p
        .serialize_request(&key)
        .map_err(|e| format!("CSR generation failed ({e})"))?;
    Ok(Request {
        key_pem: key.serialize_pem(),
        csr_b64: base64::engine::general_purpose::STANDARD.encode(csr.der().as_ref()),
        spki: rcgen::PublicKeyData::subject_public_key_info(&key),
        subject,
    })
}

/// The same name for rcgen: each attribute's type and text, in order (single-valued RDNs only).
fn copy_name(name: &x509_parser::x509::X509Name) -> Option<rcgen::DistinguishedName> {
    use x509_parser::der_parser::asn1_rs::Tag;
    let mut dn = rcgen::DistinguishedName::new();
    for rdn in name.iter() {
        let mut it = rdn.iter();
        let attr = it.next()?;
        if it.next().is_some() {
            return None;
        }
        let oid: Vec<u64> = attr.attr_type().iter()?.collect();
        let text = std::str::from_utf8(attr.attr_value().data).ok()?.to_owned();
        let value = match attr.attr_value().header.tag() {
            Tag::PrintableString => rcgen::DnValue::PrintableString(text.try_into().ok()?),
            Tag::Ia5String => rcgen::DnValue::Ia5String(text.try_into().ok()?),
            Tag::Utf8String => rcgen::DnValue::Utf8String(text),
            _ => return None,
        };
        dn.push(rcgen::DnType::from_oid(&oid), value);
    }
    Some(dn)
}

/// The certificates (DER) of a PKCS#7 certs-only `ContentInfo` (RFC 7030 4.1.3); at most 8.
pub fn certs_from_pkcs7(der: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    use super::tls::tlv;
    let bad = |what: &str| format!("the answer is not a PKCS#7 certs-only ({what})");
    let (t, ci, _) = tlv(der).ok_or_else(|| bad("outer"))?;
    if t != 0x30 {
        return Err(bad("outer"));
    }
    let (t, oid, rest) = tlv(ci).ok_or_else(|| bad("content type"))?;
    // 1.2.840.113549.1.7.2 signedData
    if t != 0x06 || oid != [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x02] {
        return Err(bad("not signedData"));
    }
    let (t, explicit, _) = tlv(rest).ok_or_else(|| bad("content"))?;
    let (t2, mut sd, _) = tlv(explicit).ok_or_else(|| bad("SignedData"))?;
    if t != 0xA0 || t2 != 0x30 {
        return Err(bad("SignedData"));
    }
    while !sd.is_empty() {
        let (tag, content, rest) = tlv(sd).ok_or_else(|| bad("SignedData field"))?;
        if tag == 0xA0 {
            let mut out = Vec::new();
            let mut certs = content;
            while !certs.is_empty() {
                let (ct, _, rest) = tlv(certs).ok_or_else(|| bad("certificate"))?;
                let whole = certs
                    .get(..certs.len() - rest.len())
                    .ok_or_else(|| bad("certificate"))?;
                if ct != 0x30 || out.len() >= 8 {
                    return Err(bad("certificate"));
                }
                out.push(whole.to_vec());
                certs = rest;
            }
            return Ok(out);
        }
        sd = rest;
    }
    Err(bad("no certificates"))
}

/// The certificate in `certs` for the request's key and subject, valid at `now` (s): its PEM and
/// notAfter.
pub fn pick(certs: &[Vec<u8>], req: &Request, now: i64) -> Result<(String, i64), String> {
    for der in certs {
        let Ok((_, c)) = x509_parser::parse_x509_certificate(der) else {
            continue;
        };
        if c.public_key().raw != req.spki.as_slice() {
            continue;
        }
        if c.subject().to_string() != req.subject {
            return Err("the clinic's new certificate names another subject".into());
        }
        let (nb, na) = (
            c.validity().not_before.timestamp(),
            c.validity().not_after.timestamp(),
        );
        if now < nb - 600 || now >= na {
            return Err(
                "the clinic's new certificate is not valid now (check the hub clock)".into(),
            );
        }
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(chunk));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
        return Ok((pem, na));
    }
    Err("the clinic's answer holds no certificate for the new key".into())
}

fn prev(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".prev");
    PathBuf::from(s)
}

fn write_new(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

fn sync_dir(p: &Path) {
    if let Some(d) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(f) = std::fs::File::open(d) {
            let _ = f.sync_all();
        }
    }
}

/// Keep the current pair as `.prev`, then put the new key and certificate in place (see the
/// module documentation). Blocking.
pub fn install(paths: &CertPaths, cert_pem: &str, key_pem: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let io = |what: &str, p: &Path, e: std::io::Error| {
        format!(
            "cannot write {what} {} ({e}); the certificate directory must be writable by the hub's service user (not $CREDENTIALS_DIRECTORY) for renewal",
            p.display()
        )
    };
    let cert_mode = std::fs::metadata(&paths.cert)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0o644);
    std::fs::copy(&paths.key, prev(&paths.key)).map_err(|e| io("the key backup", &paths.key, e))?;
    std::fs::copy(&paths.cert, prev(&paths.cert))
        .map_err(|e| io("the certificate backup", &paths.cert, e))?;
    write_new(&paths.key, key_pem.as_bytes(), 0o600).map_err(|e| io("the key", &paths.key, e))?;
    write_new(&paths.cert, cert_pem.as_bytes(), cert_mode)
        .map_err(|e| io("the certificate", &paths.cert, e))?;
    sync_dir(&paths.key);
    sync_dir(&paths.cert);
    Ok(())
}

/// The wait after `failures` failed attempts in a row: `base_ms` doubling, at most `cap_ms`.
pub fn backoff(base_ms: u64, cap_ms: u64, failures: u32) -> Duration {
    let base = base_ms.max(1);
    let cap = cap_ms.max(base);
    let exp = failures.saturating_sub(1).min(30);
    Duration::from_millis(base.saturating_mul(1u64 << exp).min(cap))
}

/// Whether an unconfirmed renewal left the old pair beside the new one.
pub fn has_previous(paths: &CertPaths) -> bool {
    prev(&paths.cert).exists() && prev(&paths.key).exists()
}

/// The new pair worked: drop the old one.
pub fn confirm(paths: &CertPaths) -> std::io::Result<()> {
    for p in [prev(&paths.key), prev(&paths.cert)] {
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    sync_dir(&paths.cert);
    Ok(())
}

/// The new pair was refused before it ever worked: put the old one back.
pub fn roll_back(paths: &CertPaths) -> std::io::Result<()> {
    std::fs::rename(prev(&paths.key), &paths.key)?;
    std::fs::rename(prev(&paths.cert), &paths.cert)?;
    sync_dir(&paths.cert);
    Ok(())
}

impl Uplink {
    fn renewal_backoff(&self) -> Duration {
        backoff(
            self.cfg.retry_base_ms,
            self.cfg.retry_cap_ms,
            self.renew.failures,
        )
    }

    async fn save_renewal(&mut self, r: &Renewal) {
        let v = serde_json::to_string(r).unwrap_or_default();
        if let Err(e) = self
            .store
            .set_uplink_state(&self.destination, RENEWAL_STATE, &v)
            .await
        {
            warn!(error = %e, "Could not record the certificate renewal state.");
        }
    }

    async fn renewal_event(&mut self, kind: &'static str, severity: &'static str, text: String) {
        if let Err(e) = self.store.append_event(kind, severity, text).await {
            warn!(error = %e, "Could not record a certificate renewal event.");
        }
    }

    /// Renew the client certificate if it is due and no attempt is backing off (see the module
    /// documentation). Never fails the upload step: a failure is recorded and retried later.
    pub(super) async fn maybe_renew(&mut self) {
        if self.cfg.renew_at_percent == 0 || self.renew.pending {
            return;
        }
        let Some(v) = self.cert.validity() else {
            return;
        };
        let now = self.clock.now().as_millis().div_euclid(1000);
        if now < renew_at(v, self.cfg.renew_at_percent) || now >= v.not_after {
            return;
        }
        if self.renew.next_attempt.is_some_and(|t| Instant::now() < t) {
            return;
        }
        match self.renew_once(now).await {
            Ok(not_after) => {
                self.renew.failures = 0;
                self.renew.next_attempt = None;
                self.renew.pending = true;
                info!("Client certificate renewed over EST; the previous one is kept until the new one has worked.");
                self.renewal_event(
                    "uplink_client_cert_renewed",
                    "security",
                    format!(
                        "client certificate renewed (EST); valid until {}",
                        fmt_secs(not_after)
                    ),
                )
                .await;
                self.save_renewal(&Renewal {
                    state: "renewed".into(),
                    at: now.saturating_mul(1000),
                    failures: 0,
                    error: None,
                    not_after: Some(not_after),
                })
                .await;
                if let Err(e) = self.check_certificate().await {
                    warn!(error = %e, "The renewed certificate could not be loaded.");
                }
            }
            Err(e) => {
                self.renew.failures = self.renew.failures.saturating_add(1);
                let wait = self.renewal_backoff();
                self.renew.next_attempt = Some(Instant::now() + wait);
                warn!(error = %e, failures = self.renew.failures, retry_in_secs = wait.as_secs(), "Client certificate renewal failed.");
                self.renewal_event(
                    "uplink_client_cert_renewal_failed",
                    "warning",
                    format!("renewal attempt {} failed: {e}", self.renew.failures),
                )
                .await;
                let failures = self.renew.failures;
                self.save_renewal(&Renewal {
                    state: "failing".into(),
                    at: now.saturating_mul(1000),
                    failures,
                    error: Some(e),
                    not_after: None,
                })
                .await;
            }
        }
    }

    async fn renew_once(&mut self, now: i64) -> Result<i64, String> {
        let paths = self.cfg.cert_paths().map_err(|e| e.to_string())?;
        if has_previous(&paths) {
            // A renewal installed by an earlier run that never worked: keep both, do not stack.
            self.renew.pending = true;
            return Err("an earlier renewed certificate has not worked yet".into());
        }
        let p2 = paths.clone();
        let req = tokio::task::spawn_blocking(move || {
            use rustls_pki_types::pem::PemObject;
            let der = rustls_pki_types::CertificateDer::pem_file_iter(&p2.cert)
                .ok()
                .and_then(|mut it| it.next())
                .and_then(Result::ok)
                .ok_or_else(|| format!("cannot read the certificate {}", p2.cert.display()))?;
            make_request(der.as_ref())
        })
        .await
        .map_err(|e| e.to_string())??;
        let resp = self
            .client
            .post(est_url(&self.url))
            .header(reqwest::header::CONTENT_TYPE, "application/pkcs10")
            .header("content-transfer-encoding", "base64")
            .body(req.csr_b64.clone())
            .timeout(self.cfg.request_timeout())
            .send()
            .await
            .map_err(|e| super::classify(&e).summary())?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(match status {
                404 => "the clinic does not offer EST re-enrolment (HTTP 404; vitals-clinic serve --est-ca-key)".into(),
                403 => "the clinic refused the renewal request (HTTP 403)".into(),
                s => format!("the clinic answered the renewal request with HTTP {s}"),
            });
        }
        let mut body = Vec::new();
        let mut resp = resp;
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| super::classify(&e).summary())?
        {
            if body.len() + chunk.len() > MAX_EST_RESPONSE {
                return Err(format!(
                    "the renewal answer is larger than {MAX_EST_RESPONSE} bytes"
                ));
            }
            body.extend_from_slice(&chunk);
        }
        let b64: Vec<u8> = body
            .into_iter()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(&b64)
            .map_err(|_| "the renewal answer is not base64".to_string())?;
        let certs = certs_from_pkcs7(&der)?;
        let (pem, not_after) = pick(&certs, &req, now)?;
        let key_pem = req.key_pem;
        tokio::task::spawn_blocking(move || install(&paths, &pem, &key_pem))
            .await
            .map_err(|e| e.to_string())??;
        Ok(not_after)
    }

    /// An upload was accepted: a renewed certificate pending its first use has worked.
    pub(super) async fn renewal_worked(&mut self) {
        if !self.renew.pending {
            return;
        }
        let Ok(paths) = self.cfg.cert_paths() else {
            return;
        };
        if let Err(e) = tokio::task::spawn_blocking(move || confirm(&paths))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
        {
            warn!(error = %e, "Could not remove the previous client certificate.");
            return;
        }
        self.renew.pending = false;
        let now = self.clock.now().as_millis();
        self.renewal_event(
            "uplink_client_cert_renewal_confirmed",
            "security",
            "the renewed client certificate worked; the previous one is removed".into(),
        )
        .await;
        let not_after = self.cert.validity().map(|v| v.not_after);
        self.save_renewal(&Renewal {
            state: "confirmed".into(),
            at: now,
            failures: 0,
            error: None,
            not_after,
        })
        .await;
    }

    /// The clinic refused the client certificate at the TLS layer: a renewed one that never
    /// worked is replaced by the previous pair.
    pub(super) async fn renewal_refused(&mut self, e: &super::UplinkError) {
        if !self.renew.pending
            || !matches!(
                e,
                super::UplinkError::ServerRejectedOurCertificate(_)
                    | super::UplinkError::CertificateRevoked(_)
            )
        {
            return;
        }
        let Ok(paths) = self.cfg.cert_paths() else {
            return;
        };
        if let Err(err) = tokio::task::spawn_blocking(move || roll_back(&paths))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
        {
            warn!(error = %err, "Could not restore the previous client certificate.");
            return;
        }
        self.renew.pending = false;
        self.renew.failures = self.renew.failures.saturating_add(1);
        self.renew.next_attempt = Some(Instant::now() + self.renewal_backoff());
        warn!("The clinic refused the renewed client certificate; the previous one is back.");
        self.renewal_event(
            "uplink_client_cert_renewal_rolled_back",
            "security",
            format!(
                "the clinic refused the renewed certificate ({}); the previous one is back",
                e.kind()
            ),
        )
        .await;
        let now = self.clock.now().as_millis();
        let failures = self.renew.failures;
        self.save_renewal(&Renewal {
            state: "rolled_back".into(),
            at: now,
            failures,
            error: Some(e.kind().into()),
            not_after: None,
        })
        .await;
        if let Err(e) = self.check_certificate().await {
            warn!(error = %e, "The previous certificate could not be loaded.");
        }
    }
}

fn fmt_secs(s: i64) -> String {
    jiff::Timestamp::from_second(s)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_at_two_thirds() {
        let v = Validity {
            not_before: 0,
            not_after: 300,
        };
        assert_eq!(renew_at(v, 67), 201);
        assert_eq!(renew_at(v, 50), 150);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let ms = |n| backoff(1_000, 600_000, n).as_millis();
        assert_eq!((ms(1), ms(2), ms(3), ms(4)), (1_000, 2_000, 4_000, 8_000));
        assert_eq!(ms(10), 512_000);
        assert_eq!(ms(11), 600_000);
        assert_eq!(ms(u32::MAX), 600_000);
    }

    #[test]
    fn est_url_keeps_origin() {
        let u = reqwest::Url::parse("https://clinic.example:8443/fhir/r4?x=1").unwrap();
        assert_eq!(
            est_url(&u).as_str(),
            "https://clinic.example:8443/.well-known/est/simplereenroll"
        );
    }

    #[test]
    fn pkcs7_garbage_is_an_error() {
        assert!(certs_from_pkcs7(&[]).is_err());
        assert!(certs_from_pkcs7(&[0x30, 0x03, 0x06, 0x01, 0x00]).is_err());
        assert!(certs_from_pkcs7(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
