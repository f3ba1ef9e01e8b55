//! A development PKI (rcgen, ring): a CA, receiver (server) certificates and hub (client)
//! certificates. **NOT FOR PRODUCTION**: keys (the CA's too, `ca.key`) are generated and written in
//! plain PEM files.
//! Tests mint their PKI with it at run time; `vitals-hub pki DIR` writes one to a folder.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};

/// Errors minting or writing the development PKI.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen refused the parameters.
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Validity relative to now, in days (negative = in the past).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub from_days: i64,
    pub to_days: i64,
}

impl Span {
    pub const DEFAULT: Span = Span {
        from_days: -1,
        to_days: 365,
    };
    pub const EXPIRED: Span = Span {
        from_days: -30,
        to_days: -1,
    };
    pub const NOT_YET_VALID: Span = Span {
        from_days: 10,
        to_days: 400,
    };
}

fn ymd(offset: i64) -> (i32, u8, u8) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(0))
        .unwrap_or(0);
    let t = jiff::Timestamp::from_second(now.saturating_add(offset.saturating_mul(86_400)));
    let d = jiff::tz::Offset::UTC.to_datetime(t.unwrap_or_default());
    (d.year().into(), d.month() as u8, d.day() as u8)
}

macro_rules! day {
    ($off:expr) => {{
        let (y, m, d) = ymd($off);
        rcgen::date_time_ymd(y, m, d)
    }};
}

/// A certificate and its key, PEM and DER.
#[derive(Debug, Clone)]
pub struct Minted {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: Vec<u8>,
    pub key_der: Vec<u8>,
}

impl Minted {
    /// Write `<stem>.crt` and `<stem>.key` (0600) into `dir`.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf), PkiError> {
        let c = dir.join(format!("{stem}.crt"));
        let k = dir.join(format!("{stem}.key"));
        write_file(&c, self.cert_pem.as_bytes(), 0o644)?;
        write_file(&k, self.key_pem.as_bytes(), 0o600)?;
        Ok((c, k))
    }
}

fn write_file(p: &Path, data: &[u8], mode: u32) -> Result<(), PkiError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| PkiError::Io {
        path: p.to_path_buf(),
        source,
    };
    // Replace atomically so a reader never sees half a file (certificate rotation).
    let tmp = p.with_extension("tmp-write");
    std::fs::write(&tmp, data).map_err(io)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(io)?;
    std::fs::rename(&tmp, p).map_err(io)
}

/// A development certificate authority.
#[derive(Debug)]
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    /// The CA's private key (PEM): a development CA signs renewals (EST) and CRLs with it.
    pub key_pem: String,
}

impl DevCa {
    pub fn new(name: &str) -> Result<DevCa, PkiError> {
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("{name} (NOT FOR PRODUCTION)"));
        dn.push(DnType::OrganizationName, "vitals-hub development PKI");
        p.distinguished_name = dn;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.not_before = day!(-1);
        p.not_after = day!(3650);
        let key = KeyPair::generate()?;
        let cert = p.self_signed(&key)?;
        Ok(DevCa {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(p, key),
        })
    }

    /// This CA as the clinic's hub CA (EST signing, CRLs).
    pub fn hub_ca(&self) -> Result<super::crl::HubCa, PkiError> {
        let key = KeyPair::from_pem(&self.key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, key)?;
        Ok(super::crl::HubCa::from_parts(self.cert_der.clone(), issuer))
    }

    /// A hub client certificate valid from `not_before` to `not_after` (s since the epoch): a
    /// certificate minutes from expiry, for the renewal tests.
    pub fn client_between(
        &self,
        hub_id: &str,
        not_before: u64,
        not_after: u64,
    ) -> Result<Minted, PkiError> {
        let mut m = self.leaf(
            hub_id,
            &[],
            Span::DEFAULT,
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        // Re-sign the same template with the exact times.
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, hub_id);
        dn.push(
            DnType::OrganizationName,
            "vitals-hub development PKI (NOT FOR PRODUCTION)",
        );
        p.distinguished_name = dn;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.not_before = super::crl::at_secs(not_before);
        p.not_after = super::crl::at_secs(not_after);
        let key = KeyPair::from_pem(&m.key_pem)?;
        let cert = p.signed_by(&key, &self.issuer)?;
        m.cert_pem = cert.pem();
        m.cert_der = cert.der().to_vec();
        Ok(m)
    }

    fn leaf(
        &self,
        cn: &str,
        sans: &[&str],
        span: Span,
        eku: ExtendedKeyUsagePurpose,
    ) -> Result<Minted, PkiError> {
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.subject_alt_names = sans
            .iter()
            .map(|s| match s.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName((*s).try_into()?)),
            })
            .collect::<Result<_, rcgen::Error>>()?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        dn.push(
            DnType::OrganizationName,
            "vitals-hub development PKI (NOT FOR PRODUCTION)",
        );
        p.distinguished_name = dn;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![eku];
        p.not_before = day!(span.from_days);
        p.not_after = day!(span.to_days);
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &self.issuer)?;
        Ok(Minted {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        })
    }

    /// A receiver certificate for these DNS names / IP addresses.
    pub fn server(&self, names: &[&str], span: Span) -> Result<Minted, PkiError> {
        self.leaf(
            names.first().copied().unwrap_or("receiver"),
            names,
            span,
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A hub client certificate (CN = the hub's id).
    pub fn client(&self, hub_id: &str, span: Span) -> Result<Minted, PkiError> {
        self.leaf(hub_id, &[], span, ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// The names every development receiver certificate carries (`vitals-hub pki`, the demo, the
/// benchmarks): a hub may point at `localhost` or `127.0.0.1`.
pub const DEV_RECEIVER_NAMES: &[&str] = &["localhost", "127.0.0.1"];

/// The files `vitals-hub pki DIR` writes.
#[derive(Debug, Clone)]
pub struct DevPkiFiles {
    pub ca: PathBuf,
    /// The CA's private key (0600): `vitals-clinic serve --est-ca-key`, `hub revoke --ca-key`.
    pub ca_key: PathBuf,
    pub receiver_cert: PathBuf,
    pub receiver_key: PathBuf,
    pub hub_cert: PathBuf,
    pub hub_key: PathBuf,
}

/// [`write_dev_pki`] with the receiver certificate naming [`DEV_RECEIVER_NAMES`]: what the demo,
/// the benchmarks and `vitals-hub pki` (without `--name`) write.
pub fn write_default_dev_pki(dir: &Path, hub_id: &str) -> Result<DevPkiFiles, PkiError> {
    write_dev_pki(dir, DEV_RECEIVER_NAMES, hub_id)
}

/// Mint a CA (used both as the clinic CA and the hub CA), a receiver certificate for `names` and a
/// hub certificate for `hub_id`, into `dir`.
pub fn write_dev_pki(dir: &Path, names: &[&str], hub_id: &str) -> Result<DevPkiFiles, PkiError> {
    std::fs::create_dir_all(dir).map_err(|source| PkiError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let ca = DevCa::new("vitals-hub dev CA")?;
    let ca_path = dir.join("ca.crt");
    write_file(&ca_path, ca.cert_pem.as_bytes(), 0o644)?;
    let ca_key = dir.join("ca.key");
    write_file(&ca_key, ca.key_pem.as_bytes(), 0o600)?;
    let (rc, rk) = ca.server(names, Span::DEFAULT)?.write(dir, "receiver")?;
    let (hc, hk) = ca.client(hub_id, Span::DEFAULT)?.write(dir, "hub")?;
    write_file(
        &dir.join("README-NOT-FOR-PRODUCTION.txt"),
        b"This folder holds a DEVELOPMENT PKI minted by `vitals-hub pki`.\n\
          NOT FOR PRODUCTION: the CA key (ca.key, for EST renewal and CRLs in development) and\n\
          every other key are plain PEM files, and nothing here is protected. Use the clinic's\n\
          real CA and systemd credentials for deployed hubs.\n",
        0o644,
    )?;
    Ok(DevPkiFiles {
        ca: ca_path,
        ca_key,
        receiver_cert: rc,
        receiver_key: rk,
        hub_cert: hc,
        hub_key: hk,
    })
}
