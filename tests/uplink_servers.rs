#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! The hub against FHIR servers that are not our receiver (issue 15), through a stub
//! (`tests/fhir_stub`): a wrong base path, a server that refuses everything, a transaction size
//! limit, and hostile answers.

mod fhir_stub;
mod uplink_support;

use fhir_stub::{Mode, Stub};
use std::time::Duration;
use uplink_support::*;
use vitals_hub::model::{Clock, SystemClock};
use vitals_hub::receiver::pki::{DevCa, Span, DEV_RECEIVER_NAMES};

async fn stub(ca: &DevCa, mode: Mode) -> Stub {
    let srv = ca.server(DEV_RECEIVER_NAMES, Span::DEFAULT).unwrap();
    Stub::start(&srv.cert_der, &srv.key_der, &ca.cert_der, mode).await
}

/// Steps the uplink `n` times, making every pending entry due between steps.
async fn steps(up: &mut vitals_hub::uplink::Uplink, h: &Hub, n: usize) {
    for _ in 0..n {
        let _ = up.step().await;
        h.store.due_now(SystemClock.now()).await.unwrap();
    }
}

/// A base URL one segment off: the server answers 400 with an OperationOutcome to everything.
/// Nothing is rejected, the backlog stays pending, one event names the reason; once the URL is
/// fixed every reading arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_base_path_rejects_nothing_and_every_reading_arrives_once_fixed() {
    let ca = DevCa::new("clinic").unwrap();
    let s = stub(&ca, Mode::Accept).await;
    const N: u32 = 25;
    let h = hub_for(N, &ca).await;
    let wrong = format!("{}/wrong", s.url());
    let mut up = uplink(&h, uplink_config(&h, &wrong));
    steps(&mut up, &h, 4).await;
    let st = h.store.stats().await.unwrap();
    assert_eq!(
        st.rejected, 0,
        "nothing rejected while the server refuses everything"
    );
    assert_eq!(st.pending + st.in_flight, u64::from(N), "{st:?}");
    let status = up.status();
    assert_eq!(
        status.last_error_kind,
        Some("uplink_server_refuses_all"),
        "{status:?}"
    );
    let text = status.last_error.unwrap();
    assert!(
        text.contains("400") && text.contains("processing"),
        "{text}"
    );
    assert!(
        status.last_success.is_none(),
        "no accepted entry, no last sync"
    );
    let events = h.store.events(100).await.unwrap();
    let refusals: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "uplink_server_refuses_all")
        .collect();
    assert_eq!(
        refusals.len(),
        1,
        "one event for the whole refusal: {events:?}"
    );
    assert!(!events.iter().any(|e| e.kind == "uplink_entry_rejected"));
    // The server's own words: kept sealed for the technician's `status`, in no event.
    let said = h.store.latest_error().await.unwrap().unwrap();
    assert!(said.contains("HAPI-0302"), "{said}");
    assert!(events.iter().all(|e| !e.detail.contains("HAPI-0302")));

    // The technician fixes the URL.
    let mut up = uplink(&h, uplink_config(&h, &s.url()));
    let rep = up.drain(DRAIN).await.unwrap();
    assert_eq!(rep.rejected, 0, "{rep:?}");
    let counts = s.observation_counts();
    for i in 0..N {
        assert_eq!(counts.get(&glucose_identifier(i)), Some(&1), "reading {i}");
    }
    assert_eq!(h.store.stats().await.unwrap().rejected, 0);
}

/// The server refuses everything for a while (validation settings), then is fixed: uploads resume
/// by themselves, nothing rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_refusing_everything_then_fixed_gets_every_reading() {
    let ca = DevCa::new("clinic").unwrap();
    let s = stub(&ca, Mode::RefuseAll).await;
    const N: u32 = 12;
    let h = hub_for(N, &ca).await;
    let mut up = uplink(&h, uplink_config(&h, &s.url()));
    steps(&mut up, &h, 3).await;
    assert_eq!(h.store.stats().await.unwrap().rejected, 0);
    s.set_mode(Mode::Accept);
    let rep = up.drain(DRAIN).await.unwrap();
    assert_eq!(rep.rejected, 0);
    assert_eq!(
        s.observation_counts().values().filter(|c| **c == 1).count(),
        N as usize
    );
}

/// A server refusing transactions of more than 8 entries (Medplum: "requires strict isolation but
/// has too many entries"): the hub learns the size from the refusals, remembers it per server,
/// the heartbeat is split too, and no request is refused once the size is learned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_size_limit_is_learned_and_the_heartbeat_is_split() {
    use vitals_hub::store::DeviceRecord;
    let ca = DevCa::new("clinic").unwrap();
    let s = stub(&ca, Mode::MaxEntries(8)).await;
    const N: u32 = 40;
    let h = hub_for(N, &ca).await;
    // More devices: a heartbeat larger than 8 entries.
    let seen = vitals_hub::store::DeviceInfo {
        battery_percent: Some(80),
        last_seen: Some(SystemClock.now()),
        ..Default::default()
    };
    h.store
        .set_device_info(&h.device, seen.clone())
        .await
        .unwrap();
    for i in 0..4 {
        let key = h
            .store
            .upsert_device(
                DeviceRecord {
                    address: format!("00:60:19:4B:2C:2{i}"),
                    name: Some(format!("extra-{i}")),
                    profile: "thermometer".into(),
                    patient_binding: Some(PATIENT.into()),
                    serial: None,
                    bond: None,
                },
                true,
            )
            .await
            .unwrap();
        h.store.set_device_info(&key, seen.clone()).await.unwrap();
    }
    let mut cfg = uplink_config(&h, &s.url());
    cfg.batch_size = 40;
    let mut up = uplink(&h, cfg.clone());
    // The heartbeat first, on a server whose limit is not known yet.
    up.heartbeat().await.unwrap();
    let rep = up.drain(DRAIN).await.unwrap();
    assert_eq!(rep.rejected, 0, "{rep:?}");
    let counts = s.observation_counts();
    for i in 0..N {
        assert_eq!(counts.get(&glucose_identifier(i)), Some(&1), "reading {i}");
    }
    let learned: usize = h
        .store
        .uplink_state(&s.url(), "max_entries")
        .await
        .unwrap()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=8).contains(&learned), "{learned}");
    let sizes = s.sizes.lock().unwrap().clone();
    assert!(
        sizes.iter().any(|(n, ok)| *n > 8 && !ok),
        "the heartbeat was larger than the limit: {sizes:?}"
    );

    // Learned: a new run (the size is remembered), more readings, another heartbeat — nothing refused.
    let refused = s.refused();
    let mut up = uplink(&h, cfg);
    h.store
        .append(&h.device, (N..N + 30).map(glucose).collect(), None)
        .await
        .unwrap();
    up.heartbeat().await.unwrap();
    up.drain(DRAIN).await.unwrap();
    up.heartbeat().await.unwrap();
    assert_eq!(s.refused(), refused, "{:?}", s.sizes.lock().unwrap());
    for i in 0..N + 30 {
        assert_eq!(
            s.observation_counts().get(&glucose_identifier(i)),
            Some(&1),
            "reading {i}"
        );
    }
    let hb = s
        .observation_counts()
        .keys()
        .filter(|k| k.contains("hub-status"))
        .count();
    assert!(hb > 0, "heartbeat observations arrived");
}

/// At start-up the hub reads the server's CapabilityStatement and names what it lacks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_transactions_is_named_at_start_up() {
    let ca = DevCa::new("clinic").unwrap();
    let s = stub(&ca, Mode::Accept).await;
    *s.capability.lock().unwrap() = serde_json::json!({"resourceType": "CapabilityStatement",
        "rest": [{"mode": "server", "interaction": [{"code": "batch"}],
            "resource": [{"type": "Observation", "conditionalCreate": true}, {"type": "Device"}]}]});
    s.patients.lock().unwrap().insert(PATIENT.into());
    let h = hub_for(1, &ca).await;
    let mut cfg = uplink_config(&h, &s.url());
    cfg.poll_interval_ms = 50;
    let up = uplink(&h, cfg);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(up.run(stopped));
    let t0 = std::time::Instant::now();
    let event = loop {
        let events = h.store.events(50).await.unwrap();
        if let Some(e) = events
            .into_iter()
            .find(|e| e.kind == "uplink_server_capability")
        {
            break e;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no capability event"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        event.detail.contains("no `transaction` interaction"),
        "{}",
        event.detail
    );
    assert!(
        event.detail.contains("no conditional create of Device"),
        "{}",
        event.detail
    );
    assert_eq!(
        h.store
            .uplink_state(&s.url(), "capability")
            .await
            .unwrap()
            .as_deref(),
        Some("no `transaction` interaction; no conditional create of Device")
    );
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

/// A server wiped between two runs (restored from last week's backup): the hub sends again what
/// the clinic acknowledged since a date and it still holds; rejected entries (the old bug's
/// victims) are queued again too. Each with its count; every reading arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_and_rejected_entries_are_sent_again_on_command() {
    let ca = DevCa::new("clinic").unwrap();
    let s = stub(&ca, Mode::Accept).await;
    const N: u32 = 15;
    let h = hub_for(N, &ca).await;
    let mut up = uplink(&h, uplink_config(&h, &s.url()));
    let since = SystemClock.now();
    up.drain(DRAIN).await.unwrap();
    assert_eq!(s.observation_counts().len(), N as usize);
    s.wipe();
    // Nothing to resend from before `since` + 1 day; everything since `since`.
    let later = since.plus_millis(86_400_000);
    assert_eq!(
        h.store
            .requeue_acked_since(later, SystemClock.now())
            .await
            .unwrap(),
        0
    );
    let n = h
        .store
        .requeue_acked_since(since, SystemClock.now())
        .await
        .unwrap();
    assert_eq!(n, N as usize);
    h.store.forget_uplink_refs(&s.url()).await.unwrap();
    let mut up = uplink(&h, uplink_config(&h, &s.url()));
    up.drain(DRAIN).await.unwrap();
    let counts = s.observation_counts();
    for i in 0..N {
        assert_eq!(counts.get(&glucose_identifier(i)), Some(&1), "reading {i}");
    }

    // Entries rejected by an earlier, misled hub go again.
    h.store
        .append(&h.device, (N..N + 5).map(glucose).collect(), None)
        .await
        .unwrap();
    let ids: Vec<i64> = h
        .store
        .pending(50, SystemClock.now())
        .await
        .unwrap()
        .iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(h.store.reject(ids, "HTTP 400").await.unwrap(), 5);
    assert_eq!(
        h.store.requeue_rejected(SystemClock.now()).await.unwrap(),
        5
    );
    assert_eq!(h.store.stats().await.unwrap().rejected, 0);
    up.drain(DRAIN).await.unwrap();
    assert_eq!(s.observation_counts().len(), N as usize + 5);
}

/// A server that checks references and does not know the patient: nothing is rejected, the hub
/// names the missing Patient at start-up; once the clinic creates it, every reading arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_enforcing_references_gets_every_reading_once_the_patient_exists() {
    let ca = DevCa::new("clinic").unwrap();
    let s = stub(&ca, Mode::Accept).await;
    s.strict_refs
        .store(true, std::sync::atomic::Ordering::SeqCst);
    const N: u32 = 10;
    let h = hub_for(N, &ca).await;
    let mut up = uplink(&h, uplink_config(&h, &s.url()));
    up.check_capability().await;
    let events = h.store.events(50).await.unwrap();
    let e = events
        .iter()
        .find(|e| e.kind == "uplink_server_capability")
        .expect("the missing patient is named");
    assert!(e.detail.contains("no Patient"), "{}", e.detail);
    assert!(
        !e.detail.contains(PATIENT),
        "the patient id is not in the event"
    );
    steps(&mut up, &h, 3).await;
    let st = h.store.stats().await.unwrap();
    assert_eq!((st.rejected, st.acked), (0, 0), "{st:?}");
    // The clinic creates the Patient.
    s.patients.lock().unwrap().insert(PATIENT.into());
    up.drain(DRAIN).await.unwrap();
    let counts = s.observation_counts();
    for i in 0..N {
        assert_eq!(counts.get(&glucose_identifier(i)), Some(&1), "reading {i}");
    }
    assert_eq!(h.store.stats().await.unwrap().rejected, 0);
}
