//! A private D-Bus broker (busd, in process) and a fake systemd-timedated on it that answers
//! `NTPSynchronized` as told: the uplink's clock check without a real system bus.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The broker thread: busd on zruntime, stopped when this is dropped.
pub struct Broker {
    pub address: String,
    stop: Option<futures::channel::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

static NEXT: AtomicU64 = AtomicU64::new(0);

impl Broker {
    pub fn start() -> Broker {
        // An abstract socket: no file to clean up.
        let address = format!(
            "unix:abstract=vh-timedate-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let (stop_tx, stop_rx) = futures::channel::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let a = address.clone();
        let thread = std::thread::Builder::new()
            .name("busd".into())
            .spawn(move || {
                zruntime::block_on(async move {
                    let mut bus = busd::bus::Bus::for_address(Some(&a)).await.unwrap();
                    ready_tx.send(()).unwrap();
                    {
                        let run = std::pin::pin!(bus.run());
                        let _ = futures::future::select(run, stop_rx).await;
                    }
                    let _ = bus.cleanup().await;
                })
            })
            .unwrap();
        ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        Broker {
            address,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Timedate {
    ntp: bool,
}

#[zbus::interface(name = "org.freedesktop.timedate1")]
impl Timedate {
    #[zbus(property, name = "NTPSynchronized")]
    fn ntp_synchronized(&self) -> bool {
        self.ntp
    }
}

/// `org.freedesktop.timedate1` on the broker at `address`, answering `NTPSynchronized = ntp`;
/// served while the returned connection lives.
pub async fn fake_timedate1(address: &str, ntp: bool) -> zbus::Connection {
    zbus::connection::Builder::address(address)
        .serve_at("/org/freedesktop/timedate1", Timedate { ntp })
        .name("org.freedesktop.timedate1")
        .build()
        .await
        .unwrap()
}
