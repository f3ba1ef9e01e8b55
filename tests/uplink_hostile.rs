#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! A hostile server holding a certificate from the clinic CA (issue 15): a 2 GB answer, huge
//! OperationOutcomes on every entry, garbage `location`s. The hub's memory stays bounded, it acks
//! nothing it should not, reuses no garbage, keeps accepting readings, and names each fault.
//! Memory is measured (peak RSS of this test process), never timed.

mod fhir_stub;
mod uplink_support;

use fhir_stub::{Mode, Stub};
use uplink_support::*;
use vitals_hub::model::{Clock, SystemClock};
use vitals_hub::receiver::pki::{DevCa, Span, DEV_RECEIVER_NAMES};

async fn stub(ca: &DevCa, mode: Mode) -> Stub {
    let srv = ca.server(DEV_RECEIVER_NAMES, Span::DEFAULT).unwrap();
    Stub::start(&srv.cert_der, &srv.key_der, &ca.cert_der, mode).await
}

/// Peak resident set of this process (VmHWM), in bytes; `None` off Linux.
fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Every waiting entry due at once (not a millisecond ahead: the next step must find them due
/// however fast it runs).
async fn make_due(h: &Hub) {
    h.store.due_now(SystemClock.now()).await.unwrap();
}

const MIB: u64 = 1024 * 1024;

/// A 2 GB answer (spaces, then a valid transaction-response, generated as it is sent) is read up
/// to the documented bound only: a bad response ("too large"), nothing acked, memory flat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2_gb_answer_is_not_buffered_and_acks_nothing() {
    let ca = DevCa::new("clinic").unwrap();
    let s = stub(&ca, Mode::HugePadding(2 * 1024 * MIB)).await;
    const N: u32 = 10;
    let h = hub_for(N, &ca).await;
    let mut up = uplink(&h, uplink_config(&h, &s.url()));
    let before = peak_rss();
    for _ in 0..2 {
        let e = up.step().await.unwrap_err();
        assert_eq!(e.bad_response_class(), Some("too_large"), "{e}");
        make_due(&h).await;
    }
    if let (Some(b), Some(a)) = (before, peak_rss()) {
        eprintln!("peak RSS before {} MiB, after {} MiB", b / MIB, a / MIB);
        assert!(
            a.saturating_sub(b) < 64 * MIB,
            "peak RSS grew by {} MiB",
            (a - b) / MIB
        );
    }
    let st = h.store.stats().await.unwrap();
    assert_eq!((st.acked, st.rejected), (0, 0), "{st:?}");
    assert_eq!(st.pending + st.in_flight, u64::from(N));
    let status = up.status();
    assert_eq!(
        status.last_error.as_deref(),
        Some("bad response: too_large")
    );
    assert!(status.last_success.is_none());
    let events = h.store.events(50).await.unwrap();
    assert!(events
        .iter()
        .any(|e| e.kind == "uplink_bad_response" && e.detail == "bad response: too_large"));
    // The hub still takes readings, and delivers them once the server behaves.
    h.store
        .append(&h.device, vec![glucose(N)], None)
        .await
        .unwrap();
    s.set_mode(Mode::Accept);
    up.drain(DRAIN).await.unwrap();
    assert_eq!(s.observation_counts().len(), N as usize + 1);
}

/// 400s carrying 10 MB OperationOutcomes on every request: read to the bound, nothing of it kept
/// beyond the documented sizes, the store does not grow, nothing rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_operation_outcomes_do_not_grow_the_store() {
    let ca = DevCa::new("clinic").unwrap();
    let s = stub(&ca, Mode::HugeOutcome(10 * MIB as usize)).await;
    const N: u32 = 20;
    let h = hub_for(N, &ca).await;
    let mut up = uplink(&h, uplink_config(&h, &s.url()));
    let used0 = h.store.stats().await.unwrap().bytes_used;
    for _ in 0..5 {
        let e = up.step().await.unwrap_err();
        assert_eq!(e.bad_response_class(), Some("too_large"), "{e}");
        make_due(&h).await;
    }
    // Within the bound (60 KB of diagnostics on every refusal): kept to 1 KiB where kept at all.
    s.set_mode(Mode::HugeOutcome(60_000));
    for _ in 0..5 {
        let e = up.step().await.unwrap_err();
        assert_eq!(e.kind(), "uplink_server_refuses_all", "{e}");
        make_due(&h).await;
    }
    let st = h.store.stats().await.unwrap();
    assert!(
        st.bytes_used < used0 + 2 * MIB,
        "store grew from {used0} to {}",
        st.bytes_used
    );
    assert_eq!(st.rejected, 0);
    assert_eq!(st.pending + st.in_flight, u64::from(N));
    for e in h.store.events(1000).await.unwrap() {
        assert!(
            e.detail.len() <= 1024,
            "{}: {} bytes",
            e.kind,
            e.detail.len()
        );
        assert!(!e.detail.contains("xxxxxxxx"), "server text in an event");
    }
    assert!(!up.status().last_error.unwrap().contains("xxxxxxxx"));
    // Readings are still accepted.
    h.store
        .append(&h.device, vec![glucose(N)], None)
        .await
        .unwrap();
}

/// Locations that are not `<Type>/<id>` of the type sent make the answer unusable: nothing acked,
/// nothing reused as a reference.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_locations_are_bad_responses_and_never_reused() {
    let ca = DevCa::new("clinic").unwrap();
    let s = stub(&ca, Mode::Accept).await;
    let h = hub_for(3, &ca).await;
    let mut up = uplink(&h, uplink_config(&h, &s.url()));
    for loc in [
        "Patient/evil-patient",
        "etc/passwd",
        "Device/ ",
        "Device/../../x",
        "Device/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ] {
        s.set_mode(Mode::Location(loc.into()));
        let e = up.step().await.unwrap_err();
        assert_eq!(e.bad_response_class(), Some("bad_location"), "{loc}: {e}");
        make_due(&h).await;
    }
    let dest = s.url();
    assert_eq!(
        h.store
            .uplink_state(&dest, "hub")
            .await
            .unwrap()
            .filter(|v| !v.is_empty()),
        None
    );
    let st = h.store.stats().await.unwrap();
    assert_eq!(st.acked, 0);
    s.set_mode(Mode::Accept);
    up.drain(DRAIN).await.unwrap();
    let hub_ref = h.store.uplink_state(&dest, "hub").await.unwrap().unwrap();
    assert!(hub_ref.starts_with("Device/"), "{hub_ref}");
    assert_eq!(s.observation_counts().len(), 3);
}
