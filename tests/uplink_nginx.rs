#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! The same upload through Debian's nginx running a test-adapted copy of
//! `packaging/clinic/nginx-mtls.conf` in front of the receiver in plain-HTTP loopback mode; a hub
//! certificate from another CA, and one on the hub CA's CRL (`ssl_crl`), are refused by nginx.
//! Skips when nginx is missing, unless CI=true.

mod uplink_support;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use uplink_support::*;
use vitals_hub::receiver::pki::{DevCa, Span};
use vitals_hub::receiver::{FaultQueue, Listen, Receiver, ReceiverConfig};
use vitals_hub::uplink::UplinkError;

fn nginx() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

struct Nginx(Child);
impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The reference server block with test paths and ports, inside a minimal main config.
fn config(dir: &Path, listen: u16, upstream: u16) -> PathBuf {
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
    assert!(
        site.contains(&format!("127.0.0.1:{upstream}")),
        "the reference config's upstream line changed"
    );
    std::fs::write(dir.join("site.conf"), site).unwrap();
    let main = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
         fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  include {d}/site.conf;\n}}\n"
    );
    let p = dir.join("nginx.conf");
    std::fs::write(&p, main).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_through_nginx_mtls_and_other_ca_refused() {
    let Some(bin) = nginx() else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("nginx is not installed; .ci/fhir-and-nginx.sh installs it before the tests");
        }
        eprintln!(
            "SKIPPED: nginx is not installed (apt-get install nginx, or run .ci/fhir-and-nginx.sh)"
        );
        return;
    };
    let clinic = DevCa::new("clinic").unwrap();
    let hub_ca = DevCa::new("hub CA").unwrap();
    let other = DevCa::new("another CA").unwrap();
    let rx = Receiver::start(ReceiverConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        listen: Listen::PlainLoopback,
        db_path: None,
        faults: FaultQueue::new(),
    })
    .await
    .unwrap();
    let ngx_dir = tempfile::tempdir().unwrap();
    clinic
        .server(&["localhost"], Span::DEFAULT)
        .unwrap()
        .write(ngx_dir.path(), "server")
        .unwrap();
    std::fs::write(ngx_dir.path().join("hub-ca.crt"), &hub_ca.cert_pem).unwrap();
    // The hub CA's CRL (`ssl_crl`): hub-0002 is revoked.
    let revoked = hub_ca.client("hub-0002", Span::DEFAULT).unwrap();
    let (serial, _) = vitals_hub::clinic::crl::serial_hex(&revoked.cert_der).unwrap();
    hub_ca
        .hub_ca()
        .unwrap()
        .write_crl(
            &ngx_dir.path().join("hubs.crl"),
            &[(serial, "2026-01-01T00:00:00Z".into())],
        )
        .unwrap();
    let port = free_port();
    let conf = config(ngx_dir.path(), port, rx.addr().port());
    let check = Command::new(&bin)
        .arg("-t")
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(ngx_dir.path())
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "nginx -t: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let _ngx = Nginx(
        Command::new(&bin)
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(ngx_dir.path())
            .spawn()
            .unwrap(),
    );
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "nginx did not start: {}",
            std::fs::read_to_string(ngx_dir.path().join("error.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let base = format!("https://localhost:{port}/fhir");

    // A hub certificate from another CA: nginx refuses it; nothing reaches the receiver or is acked.
    let stranger = hub_with(
        4,
        &clinic,
        &other.client("hub-stranger", Span::DEFAULT).unwrap(),
    )
    .await;
    let mut up = uplink(&stranger, uplink_config(&stranger, &base));
    let e = up.drain(Duration::from_secs(15)).await.unwrap_err();
    assert!(
        matches!(e, UplinkError::ServerRejectedOurCertificate(_)),
        "{e:?}"
    );
    assert_eq!(rx.count("Observation"), 0);
    let st = stranger.store.stats().await.unwrap();
    assert_eq!((st.acked, st.rejected, st.pending), (0, 0, 4));

    // A revoked hub certificate (on the CRL nginx reads): refused, nothing acked.
    let gone = hub_with(3, &clinic, &revoked).await;
    let e = uplink(&gone, uplink_config(&gone, &base))
        .drain(Duration::from_secs(15))
        .await
        .unwrap_err();
    assert!(
        matches!(e, UplinkError::ServerRejectedOurCertificate(_)),
        "{e:?}"
    );
    assert_eq!(rx.count("Observation"), 0);
    assert_eq!(gone.store.stats().await.unwrap().pending, 3);

    // The provisioned hub uploads through nginx; the receiver sees nginx's verified subject.
    let h = hub_with(
        30,
        &clinic,
        &hub_ca.client("hub-0001", Span::DEFAULT).unwrap(),
    )
    .await;
    let mut up = uplink(&h, uplink_config(&h, &base));
    assert_eq!(up.drain(DRAIN).await.unwrap().acked, 30);
    let counts = rx.observation_identifier_counts();
    for i in 0..30 {
        assert_eq!(counts.get(&glucose_identifier(i)), Some(&1));
    }
    let clients = rx.clients();
    assert!(
        clients
            .iter()
            .all(|c| c.starts_with("dn:") && c.contains("CN=hub-0001")),
        "{clients:?}"
    );
    rx.shutdown().await;
}
