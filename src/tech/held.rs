//! Held readings: a multi-user scale's or cuff's readings of a user other than the patient are
//! held for assignment, out of the patient's data (`ble` holds them, the store keeps them). The
//! technician (later the clinic) lists them, assigns one to the patient — it then goes through
//! the alert rules like any other reading — or discards one (its dedup key stays, so the device
//! sending it again does not bring it back).

use crate::alerts::AlertEvent;
use crate::daemon::{Ingest, IngestError};
use crate::store::{Store, StoreError, StoredHeld};

/// Why a held-reading operation failed.
#[derive(Debug, thiserror::Error)]
pub enum HeldError {
    #[error("no held reading has id {0}; `vitals-hub held list` shows them")]
    NotHeld(i64),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
}

/// What an assignment did.
#[derive(Debug, Clone)]
pub struct Assigned {
    /// The reading's id among the patient's readings.
    pub reading_id: i64,
    /// Alerts the reading raised.
    pub alerts: Vec<AlertEvent>,
}

/// Every held reading, oldest first.
pub async fn list(store: &Store) -> Result<Vec<StoredHeld>, HeldError> {
    Ok(store.held(usize::MAX).await?)
}

/// Assign held reading `id` to the patient, through the alert rules.
pub async fn assign(ingest: &Ingest, id: i64) -> Result<Assigned, HeldError> {
    match ingest.assign_held(id).await? {
        Some((reading_id, alerts)) => Ok(Assigned { reading_id, alerts }),
        None => Err(HeldError::NotHeld(id)),
    }
}

/// Discard held reading `id`.
pub async fn discard(store: &Store, id: i64) -> Result<(), HeldError> {
    if store.discard_held(id).await? {
        Ok(())
    } else {
        Err(HeldError::NotHeld(id))
    }
}

/// One line per held reading, for the technician.
pub fn render(held: &[StoredHeld]) -> String {
    if held.is_empty() {
        return "No held readings.\n".into();
    }
    let mut out = String::from("id  device  user  kind  value  device time  received\n");
    for h in held {
        let value = match h.reading.value.number() {
            Some(d) => format!("{d} {}", h.reading.unit),
            None => format!("{:?}", h.reading.value),
        };
        let t = h
            .reading
            .device_time
            .map_or_else(|| "-".to_string(), |t| t.to_string());
        out.push_str(&format!(
            "{}  {}  {}  {}  {}  {}  {}\n",
            h.id,
            h.device,
            h.user_id,
            h.reading.kind,
            value,
            t,
            h.received_at.to_rfc3339()
        ));
    }
    out
}
