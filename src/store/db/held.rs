//! Held readings (schema v4): another user's reading of a multi-user device, sealed and kept out
//! of the outbox until a technician discards it or assigns it to the patient. Guarantees: a held
//! row never reaches the outbox; once discarded or assigned only its dedup hash remains, so the
//! same record is not held twice.

use super::readings::ReadingEnvelope;
use super::{new_uuid, Db};
use crate::model::{Reading, UtcMillis};
use crate::store::{DeviceKey, NewHeld, Result, StoreError, StoredHeld};
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

/// The sealed payload of a `held` row.
#[derive(Serialize, Deserialize)]
struct HeldEnvelope {
    user_id: u8,
    reading: Reading,
    received_at: UtcMillis,
    stable_key: String,
}

impl Db {
    pub(crate) fn hold(&mut self, device: &DeviceKey, item: &NewHeld) -> Result<(i64, bool)> {
        self.check_capacity()?;
        self.write(|db| {
            let device_id = db.device_id(device)?;
            let dedup = db.dedup_key("held", &item.stable_key)?;
            if let Some(id) = db.find_dedup("held", &dedup)? {
                return Ok((id, true));
            }
            // Already the patient's (assigned before, or stored under this key): not held again.
            let as_reading = db.dedup_key("reading", &item.stable_key)?;
            if db.find_dedup("readings", &as_reading)?.is_some() {
                return Ok((0, true));
            }
            let uuid = new_uuid(&mut db.public_random, db.clock.now())?;
            let env = HeldEnvelope {
                user_id: item.user_id,
                reading: item.reading.clone(),
                received_at: item.received_at,
                stable_key: item.stable_key.clone(),
            };
            let (key_id, sealed) = db.seal("held", "sealed", &uuid, &Db::json(&env)?)?;
            db.conn.execute(
                "INSERT INTO held(uuid, device_id, dedup, state, received_min, key_id, sealed)
                 VALUES (?1, ?2, ?3, 'held', ?4, ?5, ?6)",
                params![
                    uuid,
                    device_id,
                    dedup.key(),
                    item.received_at.floor_minute().as_millis(),
                    key_id,
                    sealed
                ],
            )?;
            Ok((db.conn.last_insert_rowid(), false))
        })
    }

    pub(super) fn load_held(&mut self, id: i64) -> Result<(StoredHeld, i64)> {
        let (uuid, device, device_id, key_id, sealed): (String, String, i64, i64, Vec<u8>) = self
            .conn
            .query_row(
                "SELECT h.uuid, d.uuid, h.device_id, h.key_id, h.sealed FROM held h
                 JOIN devices d ON d.id = h.device_id WHERE h.id = ?1 AND h.state = 'held'",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?
            .ok_or_else(|| StoreError::Invalid(format!("no held reading {id}")))?;
        let plain = self.open_value("held", "sealed", &uuid, key_id, &sealed)?;
        let env: HeldEnvelope = Db::decode(&uuid, &plain)?;
        Ok((
            StoredHeld {
                id,
                uuid,
                device: DeviceKey(device),
                user_id: env.user_id,
                reading: env.reading,
                received_at: env.received_at,
                stable_key: env.stable_key,
            },
            device_id,
        ))
    }

    pub(crate) fn held(&mut self, limit: usize) -> Result<Vec<StoredHeld>> {
        self.refresh_keys()?;
        let ids: Vec<i64> = {
            let mut st = self
                .conn
                .prepare("SELECT id FROM held WHERE state = 'held' ORDER BY id LIMIT ?1")?;
            let it = st.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| r.get(0))?;
            it.collect::<rusqlite::Result<_>>()?
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match self.load_held(id) {
                Ok((h, _)) => out.push(h),
                Err(e) => {
                    self.flush_events();
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    /// Keep only the dedup hash of a held row.
    pub(super) fn retire_held(&mut self, id: i64, state: &'static str) -> Result<usize> {
        Ok(self.conn.execute(
            "UPDATE held SET state = ?1, key_id = NULL, sealed = NULL WHERE id = ?2 AND state = 'held'",
            params![state, id],
        )?)
    }

    pub(crate) fn discard_held(&mut self, id: i64) -> Result<bool> {
        let n = self.write(|db| {
            let n = db.retire_held(id, "discarded")?;
            if n > 0 {
                db.queue(
                    "held_discarded",
                    "info",
                    format!("held reading {id} discarded"),
                );
            }
            Ok(n)
        })?;
        Ok(n > 0)
    }

    pub(crate) fn assign_held(&mut self, id: i64) -> Result<i64> {
        self.check_capacity()?;
        let patient = self.cfg.patient_id.clone();
        let r = self.write(|db| {
            let (h, device_id) = db.load_held(id)?;
            let dedup = db.dedup_key("reading", &h.stable_key)?;
            let reading_id = match db.find_dedup("readings", &dedup)? {
                Some(rid) => rid,
                None => {
                    let env = ReadingEnvelope {
                        reading: h.reading,
                        received_at: h.received_at,
                        stable_key: h.stable_key,
                        test_data: false,
                        patient_id: patient,
                        summary: None,
                    };
                    db.insert_reading(device_id, dedup.key(), &env)?
                }
            };
            db.retire_held(id, "assigned")?;
            db.queue(
                "held_assigned",
                "info",
                format!("held reading {id} assigned to the patient as reading {reading_id}"),
            );
            Ok(reading_id)
        });
        if matches!(r, Err(StoreError::Integrity { .. })) {
            self.flush_events();
        }
        r
    }
}
