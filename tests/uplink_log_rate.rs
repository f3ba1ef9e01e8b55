#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! A repeating failure is logged at a bounded rate, never hidden behind an earlier one (issue 15:
//! a run of 502s was logged once): the first, then every 10th, with a count.

mod fhir_stub;
mod uplink_support;

use fhir_stub::{Mode, Stub};
use std::sync::{Arc, Mutex};
use uplink_support::*;
use vitals_hub::model::{Clock, SystemClock};
use vitals_hub::receiver::pki::{DevCa, Span, DEV_RECEIVER_NAMES};

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_run_of_502s_is_logged_first_then_every_tenth_with_a_count() {
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let ca = DevCa::new("clinic").unwrap();
    let srv = ca.server(DEV_RECEIVER_NAMES, Span::DEFAULT).unwrap();
    let s = Stub::start(&srv.cert_der, &srv.key_der, &ca.cert_der, Mode::Status(502)).await;
    let h = hub_for(2, &ca).await;
    let mut up = uplink(&h, uplink_config(&h, &s.url()));
    for _ in 0..25 {
        let e = up.step().await.unwrap_err();
        assert_eq!(e.kind(), "uplink_http_error");
        h.store.due_now(SystemClock.now()).await.unwrap();
    }
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Upload failed"))
        .collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[2].contains("repeats=20"), "{}", lines[2]);
    assert!(lines[0].contains("HTTP 502"), "{}", lines[0]);
}
