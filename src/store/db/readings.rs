//! Readings and alerts: appends (deduplicated by keyed hash of the stable key, each with its
//! outbox entry and the device cursor in the same transaction) and reading them back, opened.
//! Guarantees: a stable key is stored once; every reading and alert has exactly one outbox entry;
//! a cursor never covers a reading that is not committed.

use super::{new_uuid, Db, PRIORITY_ALERT, PRIORITY_READING};
use crate::model::{Reading, UtcMillis};
use crate::store::{
    AppendOutcome, DeviceKey, NewReading, ReadingSummary, Result, Snapshot, StoredAlert,
    StoredReading,
};
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub(super) struct ReadingEnvelope {
    pub(super) reading: Reading,
    pub(super) received_at: UtcMillis,
    pub(super) stable_key: String,
    pub(super) test_data: bool,
    pub(super) patient_id: Option<String>,
    /// Absent in rows written before summaries were stored; omitted when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) summary: Option<ReadingSummary>,
}

#[derive(Serialize, Deserialize)]
struct AlertEnvelope {
    payload: serde_json::Value,
    stable_key: String,
    related: Vec<i64>,
}

impl Db {
    pub(crate) fn append(
        &mut self,
        device: &DeviceKey,
        items: &[NewReading],
        cursor: Option<&(String, i64)>,
        snapshot: Option<&Snapshot>,
    ) -> Result<AppendOutcome> {
        let patient = self.cfg.patient_id.clone();
        // The store's size is read inside the append's own transaction, before it (the limit) and
        // after it (the 80 % warning): two separate read transactions per append were a tenth of
        // a single append's time (issue 20).
        let mut used_after = None;
        let written = self.write(|db| {
            let used = db.used_bytes()?;
            db.refuse_when_full(used)?;
            let device_id = db.device_id(device)?;
            let mut out = AppendOutcome::default();
            for item in items {
                let dedup = db.dedup_key("reading", &item.stable_key)?;
                if let Some(id) = db.find_dedup("readings", &dedup)? {
                    out.ids.push(id);
                    out.duplicates += 1;
                    continue;
                }
                let env = ReadingEnvelope {
                    reading: item.reading.clone(),
                    received_at: item.received_at,
                    stable_key: item.stable_key.clone(),
                    test_data: item.test_data,
                    patient_id: patient.clone(),
                    summary: item.summary,
                };
                out.ids.push(db.insert_reading(device_id, dedup.key(), &env)?);
            }
            if let Some((name, value)) = cursor {
                db.conn
                    .prepare_cached(
                        "INSERT INTO cursors(device_id, name, value, updated_min) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(device_id, name) DO UPDATE SET value = excluded.value, updated_min = excluded.updated_min",
                    )?
                    .execute(params![device_id, name, value, db.clock.now().floor_minute().as_millis()])?;
            }
            if let Some(snap) = snapshot {
                db.put_snapshot_in_tx(snap)?;
            }
            used_after = db.used_bytes().ok();
            Ok(out)
        });
        let out = written.inspect_err(|e| self.report_full(e))?;
        self.after_append_capacity(used_after);
        Ok(out)
    }

    /// Insert a reading row and its outbox entry inside the current transaction.
    pub(super) fn insert_reading(
        &mut self,
        device_id: i64,
        dedup: &[u8],
        env: &ReadingEnvelope,
    ) -> Result<i64> {
        let uuid = new_uuid(&mut self.public_random, self.clock.now())?;
        let (key_id, sealed) = self.seal("readings", "sealed", &uuid, &Db::json(env)?)?;
        let coarse = env.received_at.floor_minute().as_millis();
        self.conn
            .prepare_cached(
                "INSERT INTO readings(uuid, device_id, dedup, received_min, key_id, sealed) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![uuid, device_id, dedup, coarse, key_id, sealed])?;
        let id = self.conn.last_insert_rowid();
        self.conn
            .prepare_cached(
                "INSERT INTO outbox(item, item_id, priority, state, next_attempt, created_min) VALUES ('reading', ?1, ?2, 'pending', ?3, ?4)",
            )?
            .execute(params![id, PRIORITY_READING, i64::MIN, coarse])?;
        Ok(id)
    }

    pub(crate) fn append_alert(
        &mut self,
        payload: &serde_json::Value,
        stable_key: &str,
        related: &[i64],
    ) -> Result<(i64, bool)> {
        self.check_capacity()?;
        self.write(|db| {
            let dedup = db.index()?.hash("alert", stable_key.as_bytes());
            let existing: Option<i64> = db
                .conn
                .query_row("SELECT id FROM alerts WHERE dedup = ?1", [&dedup], |r| r.get(0))
                .optional()?;
            if let Some(id) = existing {
                return Ok((id, true));
            }
            let uuid = new_uuid(&mut db.public_random, db.clock.now())?;
            let env = AlertEnvelope {
                payload: payload.clone(),
                stable_key: stable_key.to_owned(),
                related: related.to_vec(),
            };
            let (key_id, sealed) = db.seal("alerts", "sealed", &uuid, &Db::json(&env)?)?;
            let now = db.clock.now().floor_minute().as_millis();
            db.conn.execute(
                "INSERT INTO alerts(uuid, dedup, created_min, key_id, sealed) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![uuid, dedup, now, key_id, sealed],
            )?;
            let id = db.conn.last_insert_rowid();
            db.conn.execute(
                "INSERT INTO outbox(item, item_id, priority, state, next_attempt, created_min) VALUES ('alert', ?1, ?2, 'pending', ?3, ?4)",
                params![id, PRIORITY_ALERT, i64::MIN, now],
            )?;
            Ok((id, false))
        })
    }

    pub(super) fn load_reading(&mut self, id: i64) -> Result<StoredReading> {
        let (uuid, device, key_id, sealed): (String, String, i64, Vec<u8>) = self
            .conn
            .prepare_cached(
                "SELECT r.uuid, d.uuid, r.key_id, r.sealed FROM readings r JOIN devices d ON d.id = r.device_id WHERE r.id = ?1",
            )?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        let plain = self.open_value("readings", "sealed", &uuid, key_id, &sealed)?;
        let env: ReadingEnvelope = Db::decode(&uuid, &plain)?;
        Ok(StoredReading {
            id,
            uuid,
            device: DeviceKey(device),
            reading: env.reading,
            received_at: env.received_at,
            stable_key: env.stable_key,
            test_data: env.test_data,
            patient_id: env.patient_id,
            summary: env.summary,
        })
    }

    pub(super) fn load_alert(&mut self, id: i64) -> Result<StoredAlert> {
        let (uuid, key_id, sealed): (String, i64, Vec<u8>) = self.conn.query_row(
            "SELECT uuid, key_id, sealed FROM alerts WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let plain = self.open_value("alerts", "sealed", &uuid, key_id, &sealed)?;
        let env: AlertEnvelope = Db::decode(&uuid, &plain)?;
        Ok(StoredAlert {
            id,
            uuid,
            payload: env.payload,
            stable_key: env.stable_key,
            related: env.related,
        })
    }

    pub(crate) fn readings(&mut self, after: i64, limit: usize) -> Result<Vec<StoredReading>> {
        self.refresh_keys()?;
        let ids: Vec<i64> = {
            let mut st = self
                .conn
                .prepare("SELECT id FROM readings WHERE id > ?1 ORDER BY id LIMIT ?2")?;
            let it = st.query_map(
                params![after, i64::try_from(limit).unwrap_or(i64::MAX)],
                |r| r.get(0),
            )?;
            it.collect::<rusqlite::Result<_>>()?
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match self.load_reading(id) {
                Ok(r) => out.push(r),
                Err(e) => {
                    self.flush_events();
                    return Err(e);
                }
            }
        }
        Ok(out)
    }
}
