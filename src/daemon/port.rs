//! The daemon's side of `ble`'s [`Port`] and [`Registry`]: readings to ingest (store, then the
//! alert rules) or, for the technician's tools without ingest, straight to the store; device
//! records, cursors, device information, held readings and audit events to the store; raw stream
//! values into a bounded queue to the alert rules.
//!
//! **Queues.** Every call but [`Port::stream_value`] awaits the store's own bounded job queue
//! (256 jobs; a full queue makes the session wait — back-pressure, nothing dropped). The stream
//! queue ([`STREAM_QUEUE`] values) never makes a session wait: when it is full the **newest**
//! value is dropped, counted ([`HubPort::stream_dropped`]) and said once per 1,000 drops in the
//! log. A dropped raw value loses only the alert rules' sight of it: its window's summary is still
//! stored.

use super::ingest::Ingest;
use crate::ble::{
    AuditEvent, Batch, Committed, HeldReading, KnownDevice, Port, PortError, PortFuture, RawValue,
    Registration, Registry,
};
use crate::model::device::{DeviceInfo, DeviceKey};
use crate::store::{Device, DeviceRecord, NewHeld, Store};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::warn;

/// How many raw stream values may wait for the alert rules (a 1 Hz oximeter and heart-rate
/// sensor fill it in ten minutes only if the rules stop altogether).
pub const STREAM_QUEUE: usize = 1_024;

/// Called after each commit with (readings handed over, readings new to the store).
pub type CommitObserver = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// The port `ble` hands everything over through.
#[derive(Clone)]
pub struct HubPort {
    store: Store,
    ingest: Option<Arc<Ingest>>,
    stream: Option<mpsc::Sender<RawValue>>,
    stream_dropped: Arc<AtomicU64>,
    observer: Option<CommitObserver>,
}

impl std::fmt::Debug for HubPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubPort")
            .field("ingest", &self.ingest.is_some())
            .field("stream", &self.stream.is_some())
            .finish_non_exhaustive()
    }
}

fn store_err(e: impl std::fmt::Display) -> PortError {
    PortError::Store(e.to_string())
}

fn known(d: Device) -> KnownDevice {
    KnownDevice {
        key: d.key,
        name: d.record.name,
        allowed: d.allowed,
        patient: d.record.patient_binding,
        bond: d.record.bond,
    }
}

impl HubPort {
    /// Readings straight into the store (no alert rules); stream values go nowhere.
    pub fn new(store: Store) -> HubPort {
        HubPort {
            store,
            ingest: None,
            stream: None,
            stream_dropped: Arc::new(AtomicU64::new(0)),
            observer: None,
        }
    }

    /// Readings through `ingest` (store first, then the alert rules).
    pub fn with_ingest(mut self, ingest: Arc<Ingest>) -> HubPort {
        self.ingest = Some(ingest);
        self
    }

    /// Raw stream values into a queue of `capacity` (newest dropped when full); the receiver is
    /// the alert rules' end.
    pub fn with_stream_queue(mut self, capacity: usize) -> (HubPort, mpsc::Receiver<RawValue>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.stream = Some(tx);
        (self, rx)
    }

    /// Call `f` after every commit (the technician's progress display).
    pub fn with_observer(mut self, f: CommitObserver) -> HubPort {
        self.observer = Some(f);
        self
    }

    /// Stream values dropped because the queue was full.
    pub fn stream_dropped(&self) -> u64 {
        self.stream_dropped.load(Ordering::Relaxed)
    }
}

impl Port for HubPort {
    fn device<'a>(&'a self, address: &'a str) -> PortFuture<'a, Option<KnownDevice>> {
        Box::pin(async move {
            Ok(self
                .store
                .device_by_address(address)
                .await
                .map_err(store_err)?
                .map(known))
        })
    }

    fn paired_named<'a>(&'a self, name: &'a str) -> PortFuture<'a, Option<KnownDevice>> {
        Box::pin(async move {
            Ok(self
                .store
                .devices()
                .await
                .map_err(store_err)?
                .into_iter()
                .find(|d| {
                    d.allowed && d.record.bond.is_some() && d.record.name.as_deref() == Some(name)
                })
                .map(known))
        })
    }

    fn cursor<'a>(&'a self, device: &'a DeviceKey, name: &'a str) -> PortFuture<'a, Option<i64>> {
        Box::pin(async move { self.store.cursor(device, name).await.map_err(store_err) })
    }

    fn commit<'a>(&'a self, device: &'a DeviceKey, batch: Batch) -> PortFuture<'a, Committed> {
        Box::pin(async move {
            let n = batch.readings.len();
            let cursor = batch.cursor.map(|c| (c.name.to_string(), c.value));
            let append = match &self.ingest {
                Some(i) => {
                    i.append(device, batch.readings, cursor)
                        .await
                        .map_err(store_err)?
                        .append
                }
                None => self
                    .store
                    .append(device, batch.readings, cursor)
                    .await
                    .map_err(store_err)?,
            };
            let new = append.ids.len().saturating_sub(append.duplicates);
            if let Some(f) = &self.observer {
                f(n as u64, new as u64);
            }
            Ok(Committed {
                new,
                duplicates: append.duplicates,
            })
        })
    }

    fn device_info<'a>(&'a self, device: &'a DeviceKey) -> PortFuture<'a, Option<DeviceInfo>> {
        Box::pin(async move { self.store.device_info(device).await.map_err(store_err) })
    }

    fn set_device_info<'a>(
        &'a self,
        device: &'a DeviceKey,
        info: DeviceInfo,
    ) -> PortFuture<'a, ()> {
        Box::pin(async move {
            self.store
                .set_device_info(device, info)
                .await
                .map_err(store_err)
        })
    }

    fn hold<'a>(&'a self, held: HeldReading) -> PortFuture<'a, bool> {
        Box::pin(async move {
            let item = NewHeld {
                user_id: held.user_id,
                reading: held.reading,
                received_at: held.received_at,
                stable_key: held.stable_key,
            };
            let (_, duplicate) = self
                .store
                .hold(&held.device, item)
                .await
                .map_err(store_err)?;
            Ok(!duplicate)
        })
    }

    fn events<'a>(&'a self, events: Vec<AuditEvent>) -> PortFuture<'a, ()> {
        Box::pin(async move {
            for e in events {
                self.store
                    .append_event(e.kind, e.severity, e.detail)
                    .await
                    .map_err(store_err)?;
            }
            Ok(())
        })
    }

    fn stream_value(&self, value: RawValue) -> Result<(), PortError> {
        let Some(tx) = &self.stream else {
            return Ok(());
        };
        match tx.try_send(value) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                let n = self.stream_dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n == 1 || n.is_multiple_of(1_000) {
                    warn!(
                        dropped = n,
                        "Stream values dropped: the alert rules fall behind (summaries are still stored)."
                    );
                }
                Err(PortError::Full("stream value"))
            }
            // The alert rules' task has ended (the hub is stopping).
            Err(mpsc::error::TrySendError::Closed(_)) => Ok(()),
        }
    }
}

impl Registry for HubPort {
    fn register<'a>(&'a self, device: Registration, allowed: bool) -> PortFuture<'a, DeviceKey> {
        Box::pin(async move {
            // What the store knows beyond the registration (serial) stays.
            let serial = self
                .store
                .device_by_address(&device.address)
                .await
                .map_err(store_err)?
                .and_then(|d| d.record.serial);
            let record = DeviceRecord {
                address: device.address,
                name: device.name,
                profile: device.profile,
                patient_binding: device.patient,
                serial,
                bond: device.bond,
            };
            self.store
                .upsert_device(record, allowed)
                .await
                .map_err(store_err)
        })
    }

    fn set_bond<'a>(
        &'a self,
        address: &'a str,
        bond: Option<String>,
        allowed: Option<bool>,
    ) -> PortFuture<'a, bool> {
        Box::pin(async move {
            let Some(d) = self
                .store
                .device_by_address(address)
                .await
                .map_err(store_err)?
            else {
                return Ok(false);
            };
            let record = DeviceRecord { bond, ..d.record };
            self.store
                .upsert_device(record, allowed.unwrap_or(d.allowed))
                .await
                .map_err(store_err)?;
            Ok(true)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Kind, ManualClock, Reading, Unit, UtcMillis, Value};
    use crate::store::{KekSource, StoreConfig};

    async fn store(dir: &std::path::Path) -> Store {
        let mut sc = StoreConfig::new(dir);
        sc.kek = KekSource::resolve(dir, None);
        Store::open(sc, Arc::new(ManualClock::new(UtcMillis(1_000_000))))
            .await
            .unwrap()
    }

    fn raw(i: i64) -> RawValue {
        RawValue {
            device: DeviceKey("k".into()),
            reading: Reading::new(
                Kind::HeartRate,
                Value::Number(crate::model::Decimal::new(60 + i, 0)),
                Unit::PerMin,
            ),
            stream: true,
        }
    }

    #[tokio::test]
    async fn the_stream_queue_is_bounded_and_drops_the_newest_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (port, mut rx) = HubPort::new(store(dir.path()).await).with_stream_queue(8);
        for i in 0..8 {
            port.stream_value(raw(i)).unwrap();
        }
        for i in 8..20 {
            assert_eq!(
                port.stream_value(raw(i)),
                Err(PortError::Full("stream value"))
            );
        }
        assert_eq!(port.stream_dropped(), 12);
        // The oldest were kept, in order.
        for i in 0..8 {
            let v = rx.try_recv().unwrap();
            assert_eq!(v, raw(i));
        }
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn address_tags_differ_between_stores_and_are_stable_in_one() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (s1, s2) = (store(d1.path()).await, store(d2.path()).await);
        let k1 = s1.address_tag_key().await.unwrap();
        assert_eq!(k1, s1.address_tag_key().await.unwrap());
        let k2 = s2.address_tag_key().await.unwrap();
        assert_ne!(k1, k2);
        let a = "C0:26:DA:01:02:03";
        let (t1, t2) = (
            crate::ble::AddressTags::new(&k1).tag(a),
            crate::ble::AddressTags::new(&k2).tag(a),
        );
        assert_ne!(t1, t2);
        // Not the old unkeyed 32-bit FNV-1a tag of the address.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in a.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        assert_ne!(t1, format!("dev-{:08x}", h >> 32));
        assert_eq!(t1.len(), "dev-".len() + 16);
    }
}
