#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! The hub adapting to a real FHIR server over time (issue 15), through the stub
//! (`tests/fhir_stub`): one hub alert for a lasting refusal of every upload — through the local
//! hook the daemon runs for `alerts.local_command` — resolved by the first accepted upload and
//! never raised twice across a restart; and a learned bundle size that grows again when the
//! server's limit is raised.

mod fhir_stub;
mod uplink_support;

use fhir_stub::{Mode, Stub};
use std::path::Path;
use std::time::{Duration, Instant};
use uplink_support::*;
use vitals_hub::model::{Clock, SystemClock};
use vitals_hub::receiver::pki::{DevCa, Span, DEV_RECEIVER_NAMES};

async fn stub(ca: &DevCa, mode: Mode) -> Stub {
    let srv = ca.server(DEV_RECEIVER_NAMES, Span::DEFAULT).unwrap();
    Stub::start(&srv.cert_der, &srv.key_der, &ca.cert_der, mode).await
}

/// A hook script that appends its input (one JSON line per notice) to `out`.
fn recording_hook(dir: &Path, out: &Path) -> String {
    let script = dir.join("hook.sh");
    std::fs::write(&script, format!("#!/bin/sh\ncat >> '{}'\n", out.display())).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    script.display().to_string()
}

/// The notices the hook recorded, once `n` have arrived (or after a few seconds).
async fn hook_lines(out: &Path, n: usize) -> Vec<serde_json::Value> {
    let t = Instant::now();
    loop {
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(out)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= n || t.elapsed() > Duration::from_secs(5) {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The uplink wired as the daemon wires it: its notices go to `alerts.local_command`.
fn with_hook(h: &Hub, up: vitals_hub::uplink::Uplink, command: &str) -> vitals_hub::uplink::Uplink {
    let (tx, rx) = tokio::sync::mpsc::channel(vitals_hub::daemon::hook::NOTICE_QUEUE);
    tokio::spawn(vitals_hub::daemon::hook::notice_task(
        h.store.clone(),
        command.to_owned(),
        Duration::from_secs(5),
        rx,
    ));
    up.with_notices(tx)
}

/// Steps the uplink for `for_`, making every pending entry due between steps.
async fn steps_for(up: &mut vitals_hub::uplink::Uplink, h: &Hub, for_: Duration) {
    let t = Instant::now();
    while t.elapsed() < for_ {
        let _ = up.step().await;
        h.store.due_now(SystemClock.now()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn count(events: &[vitals_hub::store::Event], kind: &str) -> usize {
    events.iter().filter(|e| e.kind == kind).count()
}

/// A base URL one segment off: every upload is refused. After `refusal_alert_after_secs` the hub
/// raises one alert naming the kind (an event and one hook notice, no server text, no PHI), not
/// again while it lasts nor after a restart; the first accepted upload (the URL fixed) resolves it,
/// and every reading arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lasting_refusal_raises_one_hub_alert_resolved_by_the_first_accepted_upload() {
    let ca = DevCa::new("clinic").unwrap();
    let s = stub(&ca, Mode::Accept).await;
    const N: u32 = 12;
    let h = hub_for(N, &ca).await;
    let out = h.dir.path().join("hook.jsonl");
    let hook = recording_hook(h.dir.path(), &out);
    let wrong = format!("{}/wrong", s.url());
    let mut cfg = uplink_config(&h, &wrong);
    cfg.refusal_alert_after_secs = 1;

    let mut up = with_hook(&h, uplink(&h, cfg.clone()), &hook);
    up.check_capability().await;
    // Refused, but not for long yet: no alert.
    steps_for(&mut up, &h, Duration::from_millis(300)).await;
    let events = h.store.events(200).await.unwrap();
    assert_eq!(count(&events, "uplink_refusal_alert"), 0, "{events:?}");
    // Past the delay: one alert, however many refusals follow.
    steps_for(&mut up, &h, Duration::from_millis(1500)).await;
    let events = h.store.events(200).await.unwrap();
    assert_eq!(count(&events, "uplink_refusal_alert"), 1, "{events:?}");
    let alert = events
        .iter()
        .find(|e| e.kind == "uplink_refusal_alert")
        .unwrap();
    assert!(
        alert.detail.contains("wrong_base_path") && alert.detail.contains("base_url"),
        "{}",
        alert.detail
    );
    let lines = hook_lines(&out, 1).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["transition"], "raised");
    assert_eq!(lines[0]["subject"]["type"], "uplink_refused");
    assert_eq!(lines[0]["subject"]["kind"], "wrong_base_path");
    // No server text, no PHI in what leaves the uplink.
    let text = std::fs::read_to_string(&out).unwrap();
    for secret in ["HAPI", PATIENT, METER_ADDR, "Unknown resource"] {
        assert!(!text.contains(secret), "{secret} in {text}");
        assert!(
            !alert.detail.contains(secret),
            "{secret} in {}",
            alert.detail
        );
    }
    assert_eq!(h.store.stats().await.unwrap().rejected, 0);

    // A restart while it lasts: no second alert.
    drop(up);
    let mut up = with_hook(&h, uplink(&h, cfg.clone()), &hook);
    up.check_capability().await;
    steps_for(&mut up, &h, Duration::from_millis(1200)).await;
    let events = h.store.events(200).await.unwrap();
    assert_eq!(count(&events, "uplink_refusal_alert"), 1, "{events:?}");
    assert_eq!(hook_lines(&out, 2).await.len(), 1);

    // The clinic fixed: `base_url` corrected, uploads accepted, the alert resolved once.
    drop(up);
    let mut good = cfg.clone();
    good.base_url = s.url();
    let mut up = with_hook(&h, uplink(&h, good), &hook);
    up.check_capability().await;
    let rep = up.drain(DRAIN).await.unwrap();
    assert_eq!(rep.rejected, 0, "{rep:?}");
    let events = h.store.events(200).await.unwrap();
    assert_eq!(count(&events, "uplink_refusal_resolved"), 1, "{events:?}");
    let lines = hook_lines(&out, 2).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[1]["transition"], "resolved");
    assert_eq!(lines[1]["episode"], lines[0]["episode"]);
    let counts = s.observation_counts();
    for i in 0..N {
        assert_eq!(counts.get(&glucose_identifier(i)), Some(&1), "reading {i}");
    }
    assert_eq!(h.store.stats().await.unwrap().rejected, 0);
    // Resolved for good: more accepted uploads announce nothing more.
    h.store
        .append(&h.device, (N..N + 3).map(glucose).collect(), None)
        .await
        .unwrap();
    up.drain(DRAIN).await.unwrap();
    assert_eq!(hook_lines(&out, 3).await.len(), 2);
    assert_eq!(
        vitals_hub::uplink::refusal::load(&h.store).await.unwrap(),
        None
    );
}

/// A refusal shorter than the delay raises nothing, and an outage (a proxy's 502) neither starts
/// nor extends one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_refusal_and_an_outage_raise_nothing() {
    let ca = DevCa::new("clinic").unwrap();
    let s = stub(&ca, Mode::Status(502)).await;
    const N: u32 = 6;
    let h = hub_for(N, &ca).await;
    let out = h.dir.path().join("hook.jsonl");
    let hook = recording_hook(h.dir.path(), &out);
    let mut cfg = uplink_config(&h, &s.url());
    cfg.refusal_alert_after_secs = 1;
    let mut up = with_hook(&h, uplink(&h, cfg), &hook);
    steps_for(&mut up, &h, Duration::from_millis(1300)).await;
    assert_eq!(
        vitals_hub::uplink::refusal::load(&h.store).await.unwrap(),
        None,
        "an outage is not a refusal"
    );
    s.set_mode(Mode::RefuseAll);
    steps_for(&mut up, &h, Duration::from_millis(300)).await;
    let r = vitals_hub::uplink::refusal::load(&h.store)
        .await
        .unwrap()
        .expect("a refusal is recorded");
    assert!(!r.raised);
    s.set_mode(Mode::Accept);
    up.drain(DRAIN).await.unwrap();
    assert_eq!(
        vitals_hub::uplink::refusal::load(&h.store).await.unwrap(),
        None
    );
    let events = h.store.events(200).await.unwrap();
    assert_eq!(count(&events, "uplink_refusal_alert"), 0, "{events:?}");
    assert_eq!(count(&events, "uplink_refusal_resolved"), 0, "{events:?}");
    assert!(hook_lines(&out, 1).await.is_empty());
}

/// A server whose transaction limit is raised mid-run: the learned size is probed upward and the
/// bundles grow; a probe refused while the limit held cost nothing (every reading stored exactly
/// once, none rejected).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raised_transaction_limit_is_found_by_probing_and_bundles_grow() {
    use vitals_hub::uplink::grow::PROBE_AFTER;
    let ca = DevCa::new("clinic").unwrap();
    let s = stub(&ca, Mode::MaxEntries(8)).await;
    const N: u32 = 1600;
    let h = hub_for(N, &ca).await;
    let mut cfg = uplink_config(&h, &s.url());
    cfg.batch_size = 40;
    let mut up = uplink(&h, cfg);
    // Learn the limit, then enough bundles at it for a probe that the limit refuses.
    up.step().await.unwrap();
    let learnt_at = s.sizes.lock().unwrap().len();
    for _ in 0..PROBE_AFTER + 3 {
        up.step().await.unwrap();
    }
    let learned = |h: &Hub, url: String| {
        let store = h.store.clone();
        async move {
            store
                .uplink_state(&url, "max_entries")
                .await
                .unwrap()
                .and_then(|v| v.parse::<usize>().ok())
        }
    };
    let first = learned(&h, s.url()).await.expect("the limit was learned");
    assert!(first <= 8, "{first}");
    let sizes = s.sizes.lock().unwrap().clone();
    let probes: Vec<usize> = sizes[learnt_at..]
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(
        probes,
        vec![first * 2],
        "one probe at double the size, refused: {sizes:?}"
    );
    assert_eq!(h.store.stats().await.unwrap().rejected, 0);

    // The clinic raises the limit: the bundles grow back to the configured batch.
    s.set_mode(Mode::Accept);
    let rep = up.drain(DRAIN).await.unwrap();
    assert_eq!(rep.rejected, 0, "{rep:?}");
    let sizes = s.sizes.lock().unwrap().clone();
    let largest = sizes
        .iter()
        .filter(|(_, ok)| *ok)
        .map(|(n, _)| *n)
        .max()
        .unwrap();
    assert!(largest >= 40, "bundles grew: {sizes:?}");
    let events = h.store.events(500).await.unwrap();
    assert!(
        count(&events, "uplink_bundle_size_raised") >= 1,
        "{events:?}"
    );
    let counts = s.observation_counts();
    for i in 0..N {
        assert_eq!(counts.get(&glucose_identifier(i)), Some(&1), "reading {i}");
    }
    let st = h.store.stats().await.unwrap();
    assert_eq!((st.pending, st.in_flight, st.rejected), (0, 0, 0), "{st:?}");
}
