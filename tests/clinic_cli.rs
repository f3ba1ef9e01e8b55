#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! `vitals-clinic hub enroll|list|revoke` against a running `vitals-clinic serve`: the enrolled hub
//! is served; `hub list --fhir` prints its FHIR Device; a revocation made by the command line (another
//! process) makes the running clinic refuse the certificate at TLS; a revoked certificate is never
//! enrolled again; a certificate for a second patient of the same hub id is refused.

mod uplink_support;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use uplink_support::*;
use vitals_hub::receiver::pki::{DevCa, Span, DEV_RECEIVER_NAMES};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_list_revoke_with_a_running_clinic() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = DevCa::new("clinic").unwrap();
    std::fs::write(d.join("ca.crt"), &ca.cert_pem).unwrap();
    ca.server(DEV_RECEIVER_NAMES, Span::DEFAULT)
        .unwrap()
        .write(d, "server")
        .unwrap();
    let (cert, key) = ca
        .client("hub-a", Span::DEFAULT)
        .unwrap()
        .write(d, "a")
        .unwrap();
    let db = d.join("clinic.db");
    let enroll = |cert: &std::path::Path, patient: &str| {
        clinic()
            .args(["hub", "enroll", "--db"])
            .arg(&db)
            .arg("--cert")
            .arg(cert)
            .args(["--patient", patient])
            .output()
            .unwrap()
    };
    let out = enroll(&cert, PATIENT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Same hub id, another patient: refused with the reason.
    let (cert2, _) = ca
        .client("hub-a", Span::DEFAULT)
        .unwrap()
        .write(d, "a2")
        .unwrap();
    let out = enroll(&cert2, "someone-else");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("one patient"));

    let out = clinic()
        .args(["hub", "list", "--fhir", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let dev: serde_json::Value =
        serde_json::from_slice(out.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(dev["resourceType"], "Device");
    assert_eq!(dev["status"], "active");
    assert_eq!(dev["patient"]["reference"], format!("Patient/{PATIENT}"));
    assert!(dev["identifier"][1]["value"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));

    let mut child = clinic()
        .args(["serve", "--listen", "127.0.0.1:0", "--cert"])
        .arg(d.join("server.crt"))
        .arg("--key")
        .arg(d.join("server.key"))
        .arg("--client-ca")
        .arg(d.join("ca.crt"))
        .arg("--db")
        .arg(&db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _kill = Kill(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let port = line.trim().rsplit(':').next().unwrap().to_owned();
    let url = format!("https://localhost:{port}/fhir/metadata");
    let get = || async {
        mtls_client(&d.join("ca.crt"), &cert, &key)
            .get(&url)
            .send()
            .await
            .map(|r| r.status().as_u16())
    };
    assert_eq!(get().await.unwrap(), 200);

    let out = clinic()
        .args(["hub", "revoke", "--db"])
        .arg(&db)
        .arg("hub-a")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The running clinic reloads its registry (every 2 s): a new connection is refused at TLS.
    let mut refused = false;
    for _ in 0..50 {
        if get().await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        refused,
        "the revoked certificate is refused by the running clinic"
    );
    // Never enrolled again.
    let out = enroll(&cert, PATIENT);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("revoked"));
}

/// `vitals-clinic serve --fhir-base`: settings checked before it listens, and a running front in
/// front of a misbehaving FHIR server — one that answers metadata with a body far over the
/// front's cap — answers the hub 502, never the oversized body; an unreachable server is a 502 too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_as_the_front_of_an_external_fhir_server() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = DevCa::new("clinic").unwrap();
    std::fs::write(d.join("ca.crt"), &ca.cert_pem).unwrap();
    ca.server(DEV_RECEIVER_NAMES, Span::DEFAULT)
        .unwrap()
        .write(d, "server")
        .unwrap();
    let (cert, key) = ca
        .client("hub-a", Span::DEFAULT)
        .unwrap()
        .write(d, "a")
        .unwrap();
    let db = d.join("registry.db");
    let out = clinic()
        .args(["hub", "enroll", "--db"])
        .arg(&db)
        .arg("--cert")
        .arg(&cert)
        .args(["--patient", PATIENT])
        .output()
        .unwrap();
    assert!(out.status.success());
    let serve = |base: &str| {
        let mut c = clinic();
        c.args(["serve", "--listen", "127.0.0.1:0", "--cert"])
            .arg(d.join("server.crt"))
            .arg("--key")
            .arg(d.join("server.key"))
            .arg("--client-ca")
            .arg(d.join("ca.crt"))
            .arg("--db")
            .arg(&db)
            .args(["--fhir-base", base]);
        c
    };
    // https without the server's CA, or not http at all: refused with the fix.
    let out = serve("https://fhir.internal/fhir").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--fhir-ca"));
    let out = serve("ftp://fhir.internal/fhir").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("http or https"));
    // --fhir-base needs the registry.
    let out = clinic()
        .args(["serve", "--plain", "--proxy-secret-file", "/dev/null"])
        .args(["--fhir-base", "http://127.0.0.1:1/fhir"])
        .output()
        .unwrap();
    assert!(!out.status.success());

    // A FHIR server that announces and sends 64 MiB for anything (and records what it was sent).
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_port = upstream.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = upstream.accept().await {
            let seen = seen2.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                seen.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase());
                let n = 64usize << 20;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nContent-Length: {n}\r\n\r\n"
                );
                let _ = s.write_all(head.as_bytes()).await;
                let chunk = vec![b' '; 1 << 20];
                for _ in 0..64 {
                    if s.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    // A FHIR server that refuses the front's credentials: the hub gets a 502, not a 401 it could
    // take as a verdict on its data.
    let denying = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let deny_port = denying.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = denying.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    let dead = free_port();
    for (base, what) in [
        (format!("http://127.0.0.1:{up_port}/fhir"), "larger than"),
        (
            format!("http://127.0.0.1:{deny_port}/fhir"),
            "refused the clinic's front",
        ),
        (format!("http://127.0.0.1:{dead}/fhir"), "cannot be reached"),
    ] {
        let mut child = serve(&base)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let _kill = Kill(child);
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        assert!(line.contains("front for"), "{line}");
        let port = line
            .split_whitespace()
            .nth(1)
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .to_owned();
        // The hub's own headers, identity and hop-by-hop among them, never reach the server.
        let r = mtls_client(&d.join("ca.crt"), &cert, &key)
            .get(format!("https://localhost:{port}/fhir/metadata"))
            .header("x-ssl-client-s-dn", "CN=forged")
            .header("x-clinic-proxy-secret", "forged-secret-0123456789")
            .header("authorization", "Bearer from-the-hub")
            .header("x-hub-private", "1")
            .header("connection", "keep-alive, x-hub-private")
            .header("te", "trailers")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 502);
        let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert_eq!(body["resourceType"], "OperationOutcome");
        assert!(body.to_string().contains(what), "{body}");
    }
    let seen = seen.lock().unwrap().clone();
    assert!(seen.starts_with("get /fhir/metadata "), "{seen}");
    for h in [
        "x-ssl-client",
        "x-clinic-proxy-secret",
        "authorization",
        "x-hub-private",
        "te:",
        "forged",
    ] {
        assert!(!seen.contains(h), "{h} forwarded: {seen}");
    }
}
