#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! The hub with its default settings against an independent FHIR R4 server installed from a
//! package registry: `@medplum/fhir-router` with its in-memory repository on node
//! (`.ci/fhir-server.sh`), behind Debian's nginx running the reference mTLS config. Every reading
//! there exactly once, heartbeats accepted, and no refused request once the hub has learned the
//! router's transaction limit ("requires strict isolation but has too many entries").
//! Skips when node or nginx is missing, unless CI=true.

mod uplink_support;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use uplink_support::*;
use vitals_hub::receiver::pki::{DevCa, Span};
use vitals_hub::uplink::UplinkConfig;

fn which(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for n in names {
        let p = Path::new(n);
        if p.is_absolute() && p.exists() {
            return Some(p.to_path_buf());
        }
        for d in std::env::split_paths(&path) {
            if d.join(n).exists() {
                return Some(d.join(n));
            }
        }
    }
    None
}

fn skip(what: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{what} is not installed; CI needs it for the independent FHIR server test");
    }
    eprintln!("SKIPPED: {what} is not installed");
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The reference server block with test paths and ports; access log on (statuses counted).
fn nginx_config(dir: &Path, listen: u16, upstream: u16) -> PathBuf {
    let reference = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/clinic/nginx-mtls.conf"
    ))
    .unwrap();
    let d = dir.display();
    let site = reference
        .replace(
            "listen 443 ssl;",
            &format!("listen 127.0.0.1:{listen} ssl;"),
        )
        .replace(
            "/etc/nginx/vitals-hub/server.crt",
            &format!("{d}/server.crt"),
        )
        .replace(
            "/etc/nginx/vitals-hub/server.key",
            &format!("{d}/server.key"),
        )
        .replace(
            "/etc/nginx/vitals-hub/hub-ca.crt",
            &format!("{d}/hub-ca.crt"),
        )
        .replace("/etc/nginx/vitals-hub/hubs.crl", &format!("{d}/hubs.crl"))
        .replace(
            "http://127.0.0.1:8080;",
            &format!("http://127.0.0.1:{upstream};"),
        );
    std::fs::write(dir.join("site.conf"), site).unwrap();
    let main = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  log_format st '$request_method $status';\n  access_log {d}/access.log st;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
         fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  include {d}/site.conf;\n}}\n"
    );
    let p = dir.join("nginx.conf");
    std::fs::write(&p, main).unwrap();
    p
}

/// POSTs nginx answered with a 4xx so far.
fn refused_posts(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("access.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("POST 4"))
        .count()
}

/// Every Observation identifier value at the server, with its count.
async fn observation_counts(port: u16) -> std::collections::HashMap<String, u32> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let v = get_json(
        &reqwest::Client::new(),
        &format!("http://127.0.0.1:{port}/fhir/Observation?_count=1000"),
    )
    .await;
    let mut out = std::collections::HashMap::new();
    for e in v["entry"].as_array().cloned().unwrap_or_default() {
        if let Some(id) = e["resource"]["identifier"][0]["value"].as_str() {
            *out.entry(id.to_owned()).or_insert(0) += 1;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn medplum_router_behind_nginx_gets_every_reading_once_with_default_settings() {
    if which(&["node"]).is_none() || which(&["npm"]).is_none() {
        return skip("node/npm");
    }
    let Some(nginx) = which(&["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]) else {
        return skip("nginx");
    };
    // The FHIR server (npm ci into the cache on its first run).
    let fhir_port = free_port();
    let mut child = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/fhir-server.sh"))
        .args(["--port", &fhir_port.to_string(), "--patient", PATIENT])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _server = Kill(child);
    let ready = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.starts_with("listening"))
    });
    assert!(
        tokio::time::timeout(Duration::from_secs(600), ready)
            .await
            .expect("the FHIR server did not start in 10 minutes")
            .unwrap(),
        "the FHIR server exited before listening (see its stderr)"
    );

    // nginx with the reference mTLS config in front.
    let clinic = DevCa::new("clinic").unwrap();
    let hub_ca = DevCa::new("hub CA").unwrap();
    let ngx = tempfile::tempdir().unwrap();
    clinic
        .server(&["localhost"], Span::DEFAULT)
        .unwrap()
        .write(ngx.path(), "server")
        .unwrap();
    std::fs::write(ngx.path().join("hub-ca.crt"), &hub_ca.cert_pem).unwrap();
    // The hub CA's CRL (`ssl_crl`), nobody revoked.
    hub_ca
        .hub_ca()
        .unwrap()
        .write_crl(&ngx.path().join("hubs.crl"), &[])
        .unwrap();
    let port = free_port();
    let conf = nginx_config(ngx.path(), port, fhir_port);
    let _nginx = Kill(
        Command::new(&nginx)
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(ngx.path())
            .spawn()
            .unwrap(),
    );
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t.elapsed() < Duration::from_secs(10), "nginx did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let base = format!("https://localhost:{port}/fhir");

    // The hub with its default settings (only its files set).
    const N: u32 = 60;
    let h = hub_with(
        N,
        &clinic,
        &hub_ca.client("hub-0001", Span::DEFAULT).unwrap(),
    )
    .await;
    let mut cfg = UplinkConfig::new(&base, &h.ca_path, PATIENT);
    cfg.client_cert = Some(h.cert.clone());
    cfg.client_key = Some(h.key.clone());
    let mut up = uplink(&h, cfg.clone());
    up.check_capability().await;
    assert!(
        !h.store
            .events(50)
            .await
            .unwrap()
            .iter()
            .any(|e| e.kind == "uplink_server_capability"),
        "the server has what the hub needs"
    );
    up.heartbeat().await.expect("the heartbeat is accepted");
    let rep = up.drain(DRAIN).await.unwrap();
    assert_eq!(rep.rejected, 0, "{rep:?}");
    let counts = observation_counts(fhir_port).await;
    for i in 0..N {
        assert_eq!(counts.get(&glucose_identifier(i)), Some(&1), "reading {i}");
    }
    let learned = h
        .store
        .uplink_state(&base, "max_entries")
        .await
        .unwrap()
        .expect("the transaction limit was learned");
    eprintln!(
        "learned max_entries = {learned}; refused POSTs while learning: {}",
        refused_posts(ngx.path())
    );

    // Learned: a new run, more readings, heartbeats — no request refused.
    let before = refused_posts(ngx.path());
    h.store
        .append(&h.device, (N..N + 40).map(glucose).collect(), None)
        .await
        .unwrap();
    let mut up = uplink(&h, cfg);
    up.heartbeat().await.unwrap();
    up.drain(DRAIN).await.unwrap();
    up.heartbeat().await.unwrap();
    assert_eq!(
        refused_posts(ngx.path()),
        before,
        "a request was refused after learning"
    );
    let counts = observation_counts(fhir_port).await;
    for i in 0..N + 40 {
        assert_eq!(counts.get(&glucose_identifier(i)), Some(&1), "reading {i}");
    }
    let heartbeats = counts.keys().filter(|k| k.contains("hub-status")).count();
    assert!(heartbeats > 0, "heartbeat Observations at the server");
}
