//! The demo's console: one line `console: https://localhost:PORT/  user: NAME  password: PASSWORD`
//! whose login works over HTTPS with the console's own CA (not the hub CA), and a password that
//! is new at every start (the previous one refused).

#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod console_support;
use console_support::*;
use vitals_hub::clinic::console::demo;

fn parse(line: &str) -> (u16, String, String) {
    let rest = line
        .strip_prefix("console: https://localhost:")
        .expect(line);
    let (port, rest) = rest.split_once("/  user: ").expect(line);
    let (user, pw) = rest.split_once("  password: ").expect(line);
    (port.parse().unwrap(), user.to_owned(), pw.to_owned())
}

fn browser(pki: &std::path::Path, port: u16) -> Browser {
    use rustls_pki_types::pem::PemObject;
    let ca = std::fs::read(pki.join("console/console-ca.crt")).unwrap();
    let der = rustls_pki_types::CertificateDer::from_pem_slice(&ca).unwrap();
    let fake = Env::for_port(port, der.to_vec());
    Browser::new(&fake)
}

#[tokio::test]
async fn the_demo_line_logs_in_and_its_password_is_new_at_every_start() {
    let dir = tempfile::tempdir().unwrap();
    let (pki, db) = (dir.path().join("pki"), dir.path().join("receiver.db"));
    let d = demo::start(&pki, &db).await.unwrap();
    let line = d.line();
    assert_eq!(line.lines().count(), 1);
    let (port, user, pw) = parse(&line);
    assert_eq!(port, d.console.addr().port());
    assert!(pw.len() >= 16, "{pw}");
    let mut b = browser(&pki, port);
    assert_eq!(b.login(&user, &pw).await.status, 303);
    assert_eq!(b.get("/").await.status, 200);
    d.console.shutdown().await;

    // Started again on the same state: the same certificate, a new password.
    let ca_before = std::fs::read(pki.join("console/console-ca.crt")).unwrap();
    let d2 = demo::start(&pki, &db).await.unwrap();
    assert_eq!(
        std::fs::read(pki.join("console/console-ca.crt")).unwrap(),
        ca_before
    );
    let (port2, user2, pw2) = parse(&d2.line());
    assert_ne!(pw2, pw);
    let mut b = browser(&pki, port2);
    assert_eq!(
        b.login(&user2, &pw).await.status,
        401,
        "the old password is gone"
    );
    assert_eq!(b.login(&user2, &pw2).await.status, 303);
    d2.console.shutdown().await;
}
