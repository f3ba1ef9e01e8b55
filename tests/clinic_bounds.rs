#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! Resource bounds of `vitals-clinic serve`, run as a child process with 512 file descriptors
//! (`prlimit --nofile`), its peak RSS read from /proc: an amplifying gzip body (32 KB → 32 MiB of
//! JSON), 70k-entry bundles, huge strings, 1,100 connections that never start TLS, idle mTLS
//! connections and headers sent a byte at a time — and after each, a normal hub's upload succeeds.
//! The RSS budget is [`RSS_BUDGET_KIB`].

mod uplink_support;
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use uplink_support::*;
use vitals_hub::receiver::pki::{DevCa, Span, DEV_RECEIVER_NAMES};

/// What the clinic may use at its peak under all of the below.
const RSS_BUDGET_KIB: u64 = 256 * 1024;

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn clinic_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vitals-clinic"))
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

async fn post(c: &reqwest::Client, url: &str, body: Vec<u8>, gzip: bool) -> Result<u16, String> {
    let mut r = c
        .post(url)
        .header("content-type", "application/fhir+json")
        .timeout(Duration::from_secs(60));
    if gzip {
        r = r.header("content-encoding", "gzip");
    }
    r.body(body)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

/// A normal upload of hub A: one Device and one Observation with a fresh identifier.
async fn normal_upload(a: &reqwest::Client, url: &str, n: u32) {
    let id = format!("urn:a:{n}");
    let b = json!({ "resourceType": "Bundle", "type": "transaction", "entry": [
        { "fullUrl": "urn:uuid:00000000-0000-4000-8000-00000000000a",
          "resource": { "resourceType": "Device", "identifier": [{ "system": "urn:dev", "value": "A1" }] },
          "request": { "method": "POST", "url": "Device", "ifNoneExist": "identifier=urn:dev%7CA1" } },
        { "resource": { "resourceType": "Observation", "status": "final",
            "identifier": [{ "system": "urn:test", "value": id }],
            "code": { "coding": [{ "system": "urn:iso:std:iso:11073:10101", "code": "160184" }] },
            "subject": { "reference": format!("Patient/{PATIENT}") },
            "device": { "reference": "urn:uuid:00000000-0000-4000-8000-00000000000a" } },
          "request": { "method": "POST", "url": "Observation",
                       "ifNoneExist": format!("identifier=urn:test%7C{}", id.replace(':', "%3A")) } }
    ]});
    // The uplink retries with backoff; so does this (bounded).
    let mut last = String::new();
    for _ in 0..20 {
        let r = a
            .post(url)
            .header("content-type", "application/fhir+json")
            .header("content-encoding", "gzip")
            .timeout(Duration::from_secs(30))
            .body(gz(&serde_json::to_vec(&b).unwrap()))
            .send()
            .await;
        match r {
            Ok(r) if r.status() == 200 => return,
            Ok(r) => {
                last = format!(
                    "status {}: {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                )
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("hub A's upload {n} did not succeed: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clinic_stays_within_its_budget_and_serves_a_normal_hub() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "prlimit is missing"
        );
        eprintln!("skipped: prlimit (util-linux) is missing");
        return;
    }
    // This process holds 1,100+ sockets.
    {
        use rustix::process::{getrlimit, setrlimit, Resource};
        let mut l = getrlimit(Resource::Nofile);
        l.current = l.maximum;
        let _ = setrlimit(Resource::Nofile, l);
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = DevCa::new("clinic").unwrap();
    std::fs::write(d.join("ca.crt"), &ca.cert_pem).unwrap();
    ca.server(DEV_RECEIVER_NAMES, Span::DEFAULT)
        .unwrap()
        .write(d, "server")
        .unwrap();
    let (ca_c, ka) = ca
        .client("hub-a", Span::DEFAULT)
        .unwrap()
        .write(d, "a")
        .unwrap();
    let (cb, kb) = ca
        .client("hub-b", Span::DEFAULT)
        .unwrap()
        .write(d, "b")
        .unwrap();
    let db = d.join("clinic.db");
    for (cert, patient) in [(&ca_c, PATIENT), (&cb, "pat-0002")] {
        let out = clinic_bin()
            .args(["hub", "enroll", "--db"])
            .arg(&db)
            .arg("--cert")
            .arg(cert)
            .args(["--patient", patient])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let list = clinic_bin()
        .args(["hub", "list", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(list.contains("hub-a") && list.contains("hub-b"), "{list}");

    let mut child = Command::new("prlimit")
        .arg("--nofile=512:512")
        .arg(env!("CARGO_BIN_EXE_vitals-clinic"))
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
    let out = child.stdout.take().unwrap();
    let pid = child.id();
    let _kill = Kill(child);
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).unwrap();
    let port: u16 = line.trim().rsplit(':').next().unwrap().parse().unwrap();
    let url = format!("https://localhost:{port}/fhir");
    let a = mtls_client(&d.join("ca.crt"), &ca_c, &ka);
    let b = mtls_client(&d.join("ca.crt"), &cb, &kb);
    let mut n = 0;
    normal_upload(&a, &url, n).await;
    let base_kib = status_kib(pid, "VmHWM:");

    // 1. Amplifying gzip: 32 KB on the wire, 32 MiB of JSON; three at once.
    let mut bomb = Vec::with_capacity(32 << 20);
    bomb.push(b'[');
    while bomb.len() < (32 << 20) - 2 {
        bomb.extend_from_slice(b"0,");
    }
    bomb.extend_from_slice(b"0]");
    let bomb = gz(&bomb);
    assert!(bomb.len() < 64 << 10, "{}", bomb.len());
    // (A third one at once is over the hub's in-flight cap: 429.)
    let r = futures::future::join_all((0..3).map(|_| post(&b, &url, bomb.clone(), true))).await;
    assert!(r.iter().all(|s| matches!(s, Ok(400) | Ok(429))), "{r:?}");
    assert!(r.iter().filter(|s| **s == Ok(400)).count() >= 2, "{r:?}");
    n += 1;
    normal_upload(&a, &url, n).await;

    // 2. 70k-entry bundles, two at once (7 MB of JSON each, under the size cap: the value count
    //    refuses them before a tree is built).
    let entry = r#"{"resource":{"resourceType":"Communication","status":"completed"},"request":{"method":"POST","url":"Communication"}}"#;
    let mut big = String::from(r#"{"resourceType":"Bundle","type":"transaction","entry":["#);
    for i in 0..70_000 {
        if i > 0 {
            big.push(',');
        }
        big.push_str(entry);
    }
    big.push_str("]}");
    let big = gz(big.as_bytes());
    let r = futures::future::join_all((0..2).map(|_| post(&b, &url, big.clone(), true))).await;
    for s in r {
        assert_eq!(s, Ok(400));
    }
    n += 1;
    normal_upload(&a, &url, n).await;

    // 3. A 15 MB string: plain (over the body cap) and gzip-compressed (over the string cap).
    let huge = format!(
        r#"{{"resourceType":"Bundle","type":"transaction","entry":[{{"resource":{{"resourceType":"Device","identifier":[{{"value":"{}"}}]}},"request":{{"method":"POST","url":"Device"}}}}]}}"#,
        "x".repeat(15 << 20)
    );
    let r = post(&b, &url, huge.clone().into_bytes(), false).await;
    assert!(matches!(r, Ok(400) | Ok(413)) || r.is_err(), "{r:?}");
    let huge_gz = gz(huge.as_bytes());
    assert_eq!(post(&b, &url, huge_gz, true).await, Ok(400));
    let mid = huge.replace(&"x".repeat(15 << 20), &"x".repeat(5 << 20));
    assert_eq!(post(&b, &url, gz(mid.as_bytes()), true).await, Ok(400));
    n += 1;
    normal_upload(&a, &url, n).await;

    // 4. 1,100 connections that never start TLS (the clinic has 512 descriptors), then idle mTLS
    //    connections of one hub: a normal upload still gets through.
    let mut idle = Vec::new();
    for _ in 0..1_100 {
        match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            Ok(s) => idle.push(s),
            Err(_) => break,
        }
    }
    assert!(idle.len() >= 1_000, "{}", idle.len());
    n += 1;
    normal_upload(&a, &url, n).await;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_cfg(d, &cb, &kb)));
    let mut tls_idle = Vec::new();
    for _ in 0..40 {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp)).await
        {
            tls_idle.push(s);
        }
    }
    n += 1;
    normal_upload(&a, &url, n).await;
    drop(idle);

    // 5. Headers a byte at a time on 20 connections: each is closed by the header timeout.
    let mut slow = Vec::new();
    for _ in 0..20 {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let ca_conn = tokio_rustls::TlsConnector::from(Arc::new(client_cfg(d, &ca_c, &ka)));
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        slow.push(ca_conn.connect(name, tcp).await.unwrap());
    }
    let header = b"POST /fhir HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut closed = 0;
    'dribble: for byte in header.iter().cycle().take(40) {
        for s in slow.iter_mut() {
            use tokio::io::AsyncWriteExt;
            if s.write_all(&[*byte]).await.is_err() || s.flush().await.is_err() {
                closed += 1;
            }
        }
        if closed >= slow.len() {
            break 'dribble;
        }
        closed = 0;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(
        closed,
        slow.len(),
        "slow-header connections were closed by the clinic"
    );
    n += 1;
    normal_upload(&a, &url, n).await;
    drop(tls_idle);

    let peak = status_kib(pid, "VmHWM:");
    eprintln!(
        "clinic RSS: {base_kib} KiB after the first upload, peak {peak} KiB; budget {RSS_BUDGET_KIB} KiB"
    );
    assert!(
        peak < RSS_BUDGET_KIB,
        "peak RSS {peak} KiB over the budget {RSS_BUDGET_KIB} KiB"
    );
}

fn client_cfg(d: &Path, cert: &Path, key: &Path) -> rustls::ClientConfig {
    use vitals_hub::uplink::tls::{client_config, CertPaths, ReloadingCert};
    let resolver = Arc::new(
        ReloadingCert::new(
            CertPaths {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            },
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .unwrap(),
    );
    client_config(&d.join("ca.crt"), resolver).unwrap()
}
