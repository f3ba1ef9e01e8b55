#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! `vitals-clinic hub crl|revoke --crl` and `serve --crl --est-ca-key` as processes (issue 19):
//! the CRL is signed by the hub CA and lists the revoked certificate's serial; the running clinic
//! re-reads it and refuses the hub at TLS as revoked; EST `cacerts` answers the hub CA; a broken
//! CRL or a CA key that is not the CA certificate's stops `serve` with the file and the fix.

mod uplink_support;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use uplink_support::*;
use vitals_hub::receiver::pki::{DevCa, Span, DEV_RECEIVER_NAMES};
use vitals_hub::uplink::UplinkError;

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn clinic() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vitals-clinic"))
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_writes_a_signed_crl_the_running_clinic_enforces() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = DevCa::new("clinic").unwrap();
    std::fs::write(d.join("ca.crt"), &ca.cert_pem).unwrap();
    std::fs::write(d.join("ca.key"), &ca.key_pem).unwrap();
    ca.server(DEV_RECEIVER_NAMES, Span::DEFAULT)
        .unwrap()
        .write(d, "server")
        .unwrap();
    let hub = ca.client("hub-a", Span::DEFAULT).unwrap();
    let (cert, key) = hub.write(d, "a").unwrap();
    let db = d.join("clinic.db");
    let crl = d.join("hubs.crl");
    ok(&clinic()
        .args(["hub", "enroll", "--db"])
        .arg(&db)
        .arg("--cert")
        .arg(&cert)
        .args(["--patient", PATIENT])
        .output()
        .unwrap());
    let ca_args = |c: &mut Command| {
        c.arg("--crl")
            .arg(&crl)
            .arg("--ca-cert")
            .arg(d.join("ca.crt"))
            .arg("--ca-key")
            .arg(d.join("ca.key"));
    };
    let mut c = clinic();
    c.args(["hub", "crl", "--db"]).arg(&db);
    ca_args(&mut c);
    assert!(ok(&c.output().unwrap()).contains("0 revoked"));

    // A broken CRL stops `serve` with the file named.
    let bad = d.join("bad.crl");
    std::fs::write(
        &bad,
        "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    )
    .unwrap();
    let serve = |crl: &std::path::Path| {
        let mut c = clinic();
        c.args(["serve", "--listen", "127.0.0.1:0", "--cert"])
            .arg(d.join("server.crt"))
            .arg("--key")
            .arg(d.join("server.key"))
            .arg("--client-ca")
            .arg(d.join("ca.crt"))
            .arg("--db")
            .arg(&db)
            .arg("--crl")
            .arg(crl)
            .arg("--est-ca-cert")
            .arg(d.join("ca.crt"))
            .arg("--est-ca-key")
            .arg(d.join("ca.key"));
        c
    };
    let out = serve(&bad).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.crl") && err.contains("hub revoke|crl"),
        "{err}"
    );
    // A CA key that is not the CA certificate's: refused with the fix.
    let other = DevCa::new("other").unwrap();
    std::fs::write(d.join("other.key"), &other.key_pem).unwrap();
    let out = clinic()
        .args(["hub", "crl", "--db"])
        .arg(&db)
        .arg("--crl")
        .arg(d.join("x.crl"))
        .arg("--ca-cert")
        .arg(d.join("ca.crt"))
        .arg("--ca-key")
        .arg(d.join("other.key"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not the key of the CA certificate"));

    let mut child = serve(&crl)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _kill = Kill(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let port = line.trim().rsplit(':').next().unwrap().to_owned();
    let base = format!("https://localhost:{port}");
    let client = || mtls_client(&d.join("ca.crt"), &cert, &key);
    let r = client()
        .get(format!("{base}/fhir/metadata"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // EST cacerts: the hub CA, as PKCS#7 certs-only in base64.
    let r = client()
        .get(format!("{base}/.well-known/est/cacerts"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/pkcs7-mime"));
    use base64::Engine;
    let body: Vec<u8> = r
        .bytes()
        .await
        .unwrap()
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let p7 = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    assert_eq!(
        vitals_hub::uplink::renew::certs_from_pkcs7(&p7).unwrap(),
        vec![ca.cert_der.clone()]
    );
    // An oversized CSR body is refused before it is read whole.
    let r = client()
        .post(format!("{base}/.well-known/est/simplereenroll"))
        .header("content-type", "application/pkcs10")
        .body(vec![b'A'; 64 << 10])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);

    // Revoke with --crl: the CRL lists the serial, signed by the hub CA.
    let mut c = clinic();
    c.args(["hub", "revoke", "--db"]).arg(&db).arg("hub-a");
    ca_args(&mut c);
    let out = ok(&c.output().unwrap());
    assert!(out.contains("1 revoked certificate(s) listed"), "{out}");
    let pem = std::fs::read(&crl).unwrap();
    let (_, p) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let (_, list) = x509_parser::parse_x509_crl(&p.contents).unwrap();
    let serials: Vec<Vec<u8>> = list
        .iter_revoked_certificates()
        .map(|r| r.raw_serial().to_vec())
        .collect();
    let (_, parsed) = x509_parser::parse_x509_certificate(&hub.cert_der).unwrap();
    assert_eq!(serials, vec![parsed.raw_serial().to_vec()]);
    let (_, ca_parsed) = x509_parser::parse_x509_certificate(&ca.cert_der).unwrap();
    list.verify_signature(ca_parsed.public_key()).unwrap();

    // The running clinic (another process) refuses the hub at TLS, as revoked.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match client().get(format!("{base}/fhir/metadata")).send().await {
            Err(e)
                if matches!(
                    vitals_hub::uplink::classify(&e),
                    UplinkError::CertificateRevoked(_)
                ) =>
            {
                break
            }
            r => assert!(Instant::now() < deadline, "still served: {r:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
