//! The outbox: which entries are due (alerts first, then oldest), their upload states
//! (`pending → in_flight → acked | rejected`, `quarantined`), the sealed last error, and the
//! per-destination uplink state. Guarantee: an entry whose record cannot be opened is quarantined
//! with an event, never returned again and never dropped.

use super::Db;
use crate::model::UtcMillis;
use crate::store::{OutboxItem, OutboxPayload, Result, StoreError};
use rusqlite::{params, OptionalExtension};
use tracing::warn;

impl Db {
    pub(crate) fn pending(&mut self, batch: usize, now: UtcMillis) -> Result<Vec<OutboxItem>> {
        self.refresh_keys()?;
        let rows: Vec<(i64, String, i64, u32)> = {
            let mut st = self.conn.prepare_cached(
                "SELECT id, item, item_id, attempts FROM outbox
                 WHERE state = 'pending' AND next_attempt <= ?1 ORDER BY priority, id LIMIT ?2",
            )?;
            let it = st.query_map(
                params![now.as_millis(), i64::try_from(batch).unwrap_or(i64::MAX)],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?;
            it.collect::<rusqlite::Result<_>>()?
        };
        let mut out = Vec::with_capacity(rows.len());
        for (id, item, item_id, attempts) in rows {
            let payload = if item == "alert" {
                self.load_alert(item_id).map(OutboxPayload::Alert)
            } else {
                self.load_reading(item_id).map(OutboxPayload::Reading)
            };
            match payload {
                Ok(payload) => out.push(OutboxItem {
                    id,
                    attempts,
                    payload,
                }),
                Err(e) => {
                    if matches!(e, StoreError::Integrity { .. }) {
                        // Quarantine so the queue moves on; the error and the event name the row.
                        let q = self.write(|db| {
                            db.conn.execute(
                                "UPDATE outbox SET state = 'quarantined' WHERE id = ?1",
                                [id],
                            )?;
                            Ok(())
                        });
                        if let Err(qe) = q {
                            warn!(outbox = id, error = %qe, "Could not quarantine an outbox entry.");
                        }
                    }
                    self.flush_events();
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    pub(super) fn update_each(
        &mut self,
        sql: &str,
        ids: &[i64],
        extra: &dyn Fn(&mut Db, i64) -> Result<Vec<rusqlite::types::Value>>,
    ) -> Result<usize> {
        let sql = sql.to_owned();
        self.write(|db| {
            let mut n = 0;
            for &id in ids {
                let mut vals = extra(db, id)?;
                vals.push(rusqlite::types::Value::Integer(id));
                n += db
                    .conn
                    .prepare_cached(&sql)?
                    .execute(rusqlite::params_from_iter(vals))?;
            }
            Ok(n)
        })
    }

    pub(crate) fn mark_in_flight(&mut self, ids: &[i64]) -> Result<usize> {
        self.update_each(
            "UPDATE outbox SET state = 'in_flight', attempts = attempts + 1 WHERE id = ?1 AND state = 'pending'",
            ids,
            &|_, _| Ok(vec![]),
        )
    }

    pub(crate) fn ack(&mut self, ids: &[i64]) -> Result<usize> {
        let now = self.clock.now().as_millis();
        self.update_each(
            "UPDATE outbox SET state = 'acked', done_at = ?1 WHERE id = ?2 AND state IN ('pending', 'in_flight')",
            ids,
            &move |_, _| Ok(vec![now.into()]),
        )
    }

    pub(super) fn sealed_error(
        db: &mut Db,
        id: i64,
        text: &str,
    ) -> Result<Vec<rusqlite::types::Value>> {
        let (key_id, sealed) = db.seal("outbox", "last_error", &id.to_string(), text.as_bytes())?;
        Ok(vec![key_id.into(), sealed.into()])
    }

    /// Every pending entry due now (a technician's `sync --now` after an outage).
    pub(crate) fn due_now(&mut self, now: UtcMillis) -> Result<usize> {
        self.write(|db| {
            Ok(db.conn.execute(
                "UPDATE outbox SET next_attempt = ?1 WHERE state = 'pending' AND next_attempt > ?1",
                [now.as_millis()],
            )?)
        })
    }

    pub(crate) fn retry(&mut self, ids: &[i64], error: &str, next: UtcMillis) -> Result<usize> {
        self.update_each(
            "UPDATE outbox SET state = 'pending', next_attempt = ?1, key_id = ?2, last_error = ?3
             WHERE id = ?4 AND state IN ('pending', 'in_flight')",
            ids,
            &|db, id| {
                let mut v = vec![next.as_millis().into()];
                v.extend(Db::sealed_error(db, id, error)?);
                Ok(v)
            },
        )
    }

    pub(crate) fn reject(&mut self, ids: &[i64], reason: &str) -> Result<usize> {
        let now = self.clock.now().as_millis();
        let n = self.update_each(
            "UPDATE outbox SET state = 'rejected', done_at = ?1, key_id = ?2, last_error = ?3
             WHERE id = ?4 AND state IN ('pending', 'in_flight')",
            ids,
            &|db, id| {
                let mut v = vec![now.into()];
                v.extend(Db::sealed_error(db, id, reason)?);
                Ok(v)
            },
        )?;
        if n > 0 {
            warn!(
                entries = n,
                "Outbox entries rejected by the clinic; kept for review."
            );
            self.queue(
                "rejected",
                "warning",
                format!("{n} outbox entries rejected"),
            );
            self.flush_events();
        }
        Ok(n)
    }

    pub(crate) fn uplink_state(&mut self, destination: &str, name: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT value FROM uplink_state WHERE destination = ?1 AND name = ?2",
                params![destination, name],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub(crate) fn set_uplink_state(
        &mut self,
        destination: &str,
        name: &str,
        value: &str,
    ) -> Result<()> {
        self.write(|db| {
            db.conn.execute(
                "INSERT INTO uplink_state(destination, name, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT(destination, name) DO UPDATE SET value = excluded.value",
                params![destination, name, value],
            )?;
            Ok(())
        })
    }
}
