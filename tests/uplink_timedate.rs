#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! The hub's clock check asks systemd-timedated (`org.freedesktop.timedate1`, property
//! `NTPSynchronized`) over D-Bus, asynchronously, instead of running `timedatectl`. Here against a
//! fake timedated on a private broker: synchronised, not synchronised, and no service at all.

mod uplink_support;
use std::sync::Arc;
use uplink_support::timedate::{fake_timedate1, Broker};
use uplink_support::*;
use vitals_hub::receiver::pki::DevCa;
use vitals_hub::uplink::{
    Cached, ClockSync, SystemdTimeSync, SystemdTimeSyncAt, TimeSync, UplinkError,
};

/// The one test of this binary that points the system bus at a private broker
/// (`DBUS_SYSTEM_BUS_ADDRESS` is process-wide; the others name their broker's address).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ntp_synchronized_true_on_the_system_bus_lets_uploads_go() {
    let broker = Broker::start();
    let _service = fake_timedate1(&broker.address, true).await;
    std::env::set_var("DBUS_SYSTEM_BUS_ADDRESS", &broker.address);
    assert_eq!(SystemdTimeSync.clock_sync().await, ClockSync::Synchronised);
    // The blocking form, for callers on a blocking thread (the doctor).
    assert!(
        tokio::task::spawn_blocking(|| SystemdTimeSync.is_synchronised())
            .await
            .unwrap()
    );
    let ca = DevCa::new("clinic").unwrap();
    let rx = clinic(&ca).await;
    let h = hub_for(3, &ca).await;
    let mut up = uplink_timed(&h, uplink_config(&h, &url(&rx)), Arc::new(SystemdTimeSync));
    assert_eq!(up.drain(DRAIN).await.unwrap().acked, 3);
    rx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ntp_synchronized_false_makes_uploads_wait() {
    let broker = Broker::start();
    let _service = fake_timedate1(&broker.address, false).await;
    let sync = SystemdTimeSyncAt(broker.address.clone());
    assert_eq!(sync.clock_sync().await, ClockSync::NotSynchronised);
    let ca = DevCa::new("clinic").unwrap();
    let rx = clinic(&ca).await;
    let h = hub_for(2, &ca).await;
    let mut up = uplink_timed(&h, uplink_config(&h, &url(&rx)), Arc::new(sync));
    assert_eq!(
        up.step().await.unwrap_err(),
        UplinkError::ClockNotSynchronised
    );
    assert_eq!(rx.stats().requests, 0, "nothing was sent");
    assert_eq!(h.store.stats().await.unwrap().pending, 2);
    rx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_timedate1_service_or_no_bus_is_not_known() {
    let broker = Broker::start();
    let sync = SystemdTimeSyncAt(broker.address.clone());
    assert_eq!(sync.clock_sync().await, ClockSync::NotKnown);
    let nowhere = SystemdTimeSyncAt(format!("unix:abstract=vh-no-bus-{}", std::process::id()));
    assert_eq!(nowhere.clock_sync().await, ClockSync::NotKnown);
}

/// Counts how often the uplink asks.
#[derive(Debug, Default)]
struct Counting(std::sync::atomic::AtomicUsize);

impl TimeSync for Counting {
    fn clock_sync(&self) -> vitals_hub::uplink::BoxFuture<'_, ClockSync> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(std::future::ready(ClockSync::Synchronised))
    }
}

/// One question per loop: the first loop (heartbeat due, a batch to upload) used to ask three
/// times, each a `timedatectl` process on the runtime's threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clock_is_asked_at_most_once_per_loop() {
    let ca = DevCa::new("clinic").unwrap();
    let rx = clinic(&ca).await;
    let h = hub_for(2, &ca).await;
    let mut cfg = uplink_config(&h, &url(&rx));
    // After the first loop uploads, the second finds nothing and sleeps a minute: at most two
    // loops run before the stop below.
    cfg.poll_interval_ms = 60_000;
    let counting = Arc::new(Counting::default());
    let up = uplink_timed(&h, cfg, counting.clone());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(up.run(stopped));
    let t0 = std::time::Instant::now();
    while rx.observation_identifier_counts().len() < 2 {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(20),
            "no upload"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stop.send(true).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    let asked = counting.0.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        (1..=2).contains(&asked),
        "asked {asked} times in at most two loops"
    );
    rx.shutdown().await;
}

/// Counts the questions and answers what it is set to (shared with the test).
#[derive(Debug, Clone)]
struct Answering(Arc<(std::sync::atomic::AtomicUsize, std::sync::Mutex<ClockSync>)>);

impl Answering {
    fn new(state: ClockSync) -> Self {
        Answering(Arc::new((
            std::sync::atomic::AtomicUsize::new(0),
            std::sync::Mutex::new(state),
        )))
    }
    fn asked(&self) -> usize {
        self.0 .0.load(std::sync::atomic::Ordering::SeqCst)
    }
    fn set(&self, state: ClockSync) {
        *self.0 .1.lock().unwrap() = state;
    }
}

impl TimeSync for Answering {
    fn clock_sync(&self) -> vitals_hub::uplink::BoxFuture<'_, ClockSync> {
        self.0 .0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let state = *self.0 .1.lock().unwrap();
        Box::pin(std::future::ready(state))
    }
}

/// Issue 20: the uplink asks once per loop, i.e. once per bundle while a backlog drains (a D-Bus
/// connection to systemd-timedated each). A synchronised answer is kept for a while: a drain of 20
/// bundles asks once. Any other answer is asked again at the next loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synchronised_answer_is_kept_while_a_backlog_drains() {
    let ca = DevCa::new("clinic").unwrap();
    let rx = clinic(&ca).await;
    let h = hub_for(200, &ca).await;
    let mut cfg = uplink_config(&h, &url(&rx));
    cfg.batch_size = 10;
    let inner = Answering::new(ClockSync::Synchronised);
    let kept = Cached::new(inner.clone(), std::time::Duration::from_secs(3600));
    let mut up = uplink_timed(&h, cfg, Arc::new(kept));
    let rep = up.drain(DRAIN).await.unwrap();
    assert_eq!(rep.acked, 200);
    assert!(rep.bundles >= 20, "{rep:?}");
    assert_eq!(inner.asked(), 1, "asked once for {} bundles", rep.bundles);
    rx.shutdown().await;

    // Not synchronised (or not known): asked again every time, until it is.
    let inner = Answering::new(ClockSync::NotSynchronised);
    let kept = Cached::new(inner.clone(), std::time::Duration::from_secs(3600));
    assert_eq!(kept.clock_sync().await, ClockSync::NotSynchronised);
    inner.set(ClockSync::NotKnown);
    assert_eq!(kept.clock_sync().await, ClockSync::NotKnown);
    inner.set(ClockSync::Synchronised);
    assert_eq!(kept.clock_sync().await, ClockSync::Synchronised);
    inner.set(ClockSync::NotSynchronised);
    assert_eq!(kept.clock_sync().await, ClockSync::Synchronised, "kept");
    assert_eq!(inner.asked(), 3);
    // Once the time it is kept has passed, asked again.
    let inner = Answering::new(ClockSync::Synchronised);
    let kept = Cached::new(inner.clone(), std::time::Duration::ZERO);
    assert_eq!(kept.clock_sync().await, ClockSync::Synchronised);
    inner.set(ClockSync::NotSynchronised);
    assert_eq!(kept.clock_sync().await, ClockSync::NotSynchronised);
    assert_eq!(inner.asked(), 2);
}
