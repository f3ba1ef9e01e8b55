#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! The fault matrix against the real receiver: 500, 503 + Retry-After, 429, a reset mid-response
//! (after the server committed), a 200 with a truncated body, a server slower than the timeout, and
//! a 400 on one entry of a batch. Afterwards every reading is at the receiver exactly once (counted
//! by identifier) and the poisoned one is rejected, kept, and alerted.

mod uplink_support;
use std::time::{Duration, Instant};
use uplink_support::*;
use vitals_hub::receiver::pki::DevCa;
use vitals_hub::receiver::Fault;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_matrix_delivers_every_reading_exactly_once() {
    let ca = DevCa::new("clinic").unwrap();
    let rx = clinic(&ca).await;
    const N: u32 = 60;
    const POISON: u32 = 37;
    let h = hub_for(N, &ca).await;
    let mut cfg = uplink_config(&h, &url(&rx));
    cfg.request_timeout_ms = 700;
    let mut up = uplink(&h, cfg);

    let f = rx.faults();
    f.push(Fault::Status(500));
    f.push(Fault::RetryAfter {
        status: 503,
        secs: 1,
    });
    f.push(Fault::Status(429));
    f.push(Fault::ResetAfterCommit);
    f.push(Fault::TruncatedAfterCommit);
    f.push(Fault::SlowAfterCommit(Duration::from_millis(1_500)));
    f.poison(&glucose_identifier(POISON));

    let t0 = Instant::now();
    let rep = up.drain(DRAIN).await.unwrap();
    assert_eq!(f.remaining(), 0, "every fault was hit");
    assert!(
        t0.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was honoured"
    );
    assert!(rep.failures >= 6, "{rep:?}");

    let counts = rx.observation_identifier_counts();
    for i in 0..N {
        let want = if i == POISON { None } else { Some(&1) };
        assert_eq!(counts.get(&glucose_identifier(i)), want, "reading {i}");
    }
    let st = h.store.stats().await.unwrap();
    assert_eq!(st.rejected, 1, "only the poisoned entry is rejected");
    assert_eq!(
        st.acked,
        u64::from(N) - 1 + 1,
        "the other readings + the rejection alert"
    );
    assert_eq!(st.pending + st.in_flight, 0);
    // The commits the hub never saw acknowledged were answered "200 OK" (existing) on retry.
    assert!(rx.stats().existing >= 3, "{:?}", rx.stats());
    // The rejection was alerted on the hub and the alert reached the clinic.
    let comms = rx.resources("Communication");
    assert_eq!(comms.len(), 1);
    assert!(comms[0]["payload"][0]["contentString"]
        .as_str()
        .unwrap()
        .contains("upload_rejected"));
    let events = h.store.events(200).await.unwrap();
    for kind in [
        "uplink_entry_rejected",
        "uplink_http_error",
        "uplink_timeout",
    ] {
        assert!(events.iter().any(|e| e.kind == kind), "event {kind}");
    }
    rx.shutdown().await;
}

/// A lone entry refused with nothing else of its kind accepted is not blamed: the refusal may be
/// the server's (issue 15). It waits, is named in the status, and goes once the server takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_412_on_a_lone_entry_is_not_rejected_and_goes_later() {
    let ca = DevCa::new("clinic").unwrap();
    let rx = clinic(&ca).await;
    let h = hub_for(1, &ca).await;
    let mut up = uplink(&h, uplink_config(&h, &url(&rx)));
    rx.faults().push(Fault::Status(412));
    let e = up.drain(Duration::from_secs(20)).await.unwrap_err();
    assert_eq!(e.kind(), "uplink_server_refuses_all", "{e}");
    assert_eq!(h.store.stats().await.unwrap().rejected, 0);
    use vitals_hub::model::Clock;
    h.store
        .due_now(vitals_hub::model::SystemClock.now())
        .await
        .unwrap();
    let rep = up.drain(Duration::from_secs(20)).await.unwrap();
    assert_eq!((rep.acked, rep.rejected), (1, 0), "{rep:?}");
    assert_eq!(rx.count("Observation"), 1);
    rx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_loop_uploads_new_readings_and_sends_heartbeats_until_shutdown() {
    let ca = DevCa::new("clinic").unwrap();
    let rx = clinic(&ca).await;
    let h = hub_for(5, &ca).await;
    let mut cfg = uplink_config(&h, &url(&rx));
    cfg.poll_interval_ms = 50;
    cfg.heartbeat_interval_secs = 1;
    let up = uplink(&h, cfg);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(up.run(stopped));
    // New readings arrive while it runs.
    h.store
        .append(&h.device, (5..12).map(glucose).collect(), None)
        .await
        .unwrap();
    let t0 = Instant::now();
    while rx
        .observation_identifier_counts()
        .keys()
        .filter(|k| k.contains("-160184-"))
        .count()
        < 12
    {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "run loop did not upload"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    let heartbeats = rx
        .resources("Observation")
        .into_iter()
        .filter(|o| o["code"]["coding"][0]["code"] == "backlog-depth")
        .count();
    assert!(
        heartbeats >= 2,
        "a heartbeat at start and one after the interval: {heartbeats}"
    );
    rx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_device_ids_are_resent_not_blamed_on_readings() {
    let ca = DevCa::new("clinic").unwrap();
    let rx = clinic(&ca).await;
    let h = hub_for(1, &ca).await;
    let dest = url(&rx);
    // Ids from a server that has since lost them; the refusal is a FHIR 400 (an OperationOutcome).
    h.store
        .set_uplink_state(&dest, "hub", "Device/999")
        .await
        .unwrap();
    h.store
        .set_uplink_state(&dest, &format!("device:{}", h.device.0), "Device/998")
        .await
        .unwrap();
    rx.faults().push(Fault::Status(400));
    let mut up = uplink(&h, uplink_config(&h, &dest));
    let rep = up.drain(DRAIN).await.unwrap();
    assert_eq!((rep.acked, rep.rejected), (1, 0), "{rep:?}");
    assert_eq!(
        rx.count("Device"),
        2,
        "hub and meter sent again as conditional creates"
    );
    let hub_ref = h.store.uplink_state(&dest, "hub").await.unwrap().unwrap();
    assert!(hub_ref.starts_with("Device/") && hub_ref != "Device/999");
    rx.shutdown().await;
}

/// The clinic's refusal text may echo PHI (here it names the entry's identifier, which holds the
/// patient id): the hub's alert carries a reason code and the HTTP status, never that text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_uploads_a_reason_code_and_the_status_never_the_servers_text() {
    let ca = DevCa::new("clinic").unwrap();
    let rx = clinic(&ca).await;
    let h = hub_for(3, &ca).await;
    let mut up = uplink(&h, uplink_config(&h, &url(&rx)));
    rx.faults().poison(&glucose_identifier(1));
    let rep = up.drain(DRAIN).await.unwrap();
    assert_eq!(rep.rejected, 1, "{rep:?}");
    let comms = rx.resources("Communication");
    assert_eq!(comms.len(), 1);
    let text = comms[0]["payload"][0]["contentString"].as_str().unwrap();
    for secret in ["injected", PATIENT, &glucose_identifier(1), "is invalid"] {
        assert!(!text.contains(secret), "{secret:?} uploaded in {text}");
    }
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    assert_eq!(v["kind"], "upload_rejected");
    assert_eq!(v["status"], 400);
    assert_eq!(v["reason"], "invalid", "{text}");
    rx.shutdown().await;
}

/// A crash loop must not flood the clinic with hub-status Observations: the heartbeat's interval
/// holds across restarts (three starts within the interval send one heartbeat).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_their_interval_across_restarts() {
    let ca = DevCa::new("clinic").unwrap();
    let rx = clinic(&ca).await;
    let h = hub_for(0, &ca).await;
    let mut cfg = uplink_config(&h, &url(&rx));
    cfg.poll_interval_ms = 50;
    cfg.heartbeat_interval_secs = 3_600;
    // Each start 10 s after the previous one (heartbeat identifiers are per second).
    use vitals_hub::model::{Clock, ManualClock, SystemClock};
    let clock = std::sync::Arc::new(ManualClock::new(SystemClock.now().plus_millis(60_000)));
    for start in 0..3u32 {
        clock.advance(10_000);
        let up = vitals_hub::uplink::Uplink::new(
            cfg.clone(),
            h.store.clone(),
            clock.clone(),
            std::sync::Arc::new(vitals_hub::uplink::FixedTimeSync(true)),
            hub(),
        )
        .unwrap();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(up.run(stopped));
        // A reading uploaded by this start proves its loop went past the heartbeat.
        h.store
            .append(&h.device, vec![glucose(start)], None)
            .await
            .unwrap();
        let t0 = Instant::now();
        while !rx
            .observation_identifier_counts()
            .contains_key(&glucose_identifier(start))
        {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "start {start} did not upload"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }
    let heartbeats = rx
        .resources("Observation")
        .into_iter()
        .filter(|o| o["code"]["coding"][0]["code"] == "backlog-depth")
        .count();
    assert_eq!(heartbeats, 1, "three starts within the interval");
    rx.shutdown().await;
}
