//! The outbox: which entries are due (alerts first, then oldest), their upload states
//! (`pending → in_flight → acked | rejected`, `quarantined`), the sealed last error, and the
//! per-destination uplink state. Guarantee: an entry whose record cannot be turned into an upload
//! (fails authentication, does not decode, is missing; or the uplink says so through
//! [`Db::quarantine`]) is quarantined with an event and the entries after it flow; it is never
//! returned again and never deleted.

use super::Db;
use crate::model::UtcMillis;
use crate::store::{OutboxItem, OutboxPayload, Result, StoreError};
use rusqlite::{params, OptionalExtension};
use std::collections::HashSet;
use tracing::{error, warn};

/// Why an entry whose record failed to load can never become an upload (no PHI: table, row uuid,
/// ids), or `None` when the failure is not the entry's (the database itself failed).
fn unusable(e: &StoreError, item: &str, item_id: i64) -> Option<String> {
    match e {
        StoreError::Integrity { table, row, .. } => {
            Some(format!("{table} row {row} failed authentication"))
        }
        StoreError::Decode { row, .. } => Some(format!("{item} row {row} could not be decoded")),
        StoreError::Sqlite(rusqlite::Error::QueryReturnedNoRows) => {
            Some(format!("its {item} {item_id} is missing"))
        }
        _ => None,
    }
}

impl Db {
    pub(crate) fn pending(&mut self, batch: usize, now: UtcMillis) -> Result<Vec<OutboxItem>> {
        self.pending_excluding(batch, now, &HashSet::new())
    }

    /// [`Db::pending`] without the entries in `exclude` (the uplink's read ahead: the batch on
    /// the wire and the one whose ack is committing are still `pending`). They are skipped before
    /// their records are read and opened, so a read ahead costs one batch's unsealing, not three.
    pub(crate) fn pending_excluding(
        &mut self,
        batch: usize,
        now: UtcMillis,
        exclude: &HashSet<i64>,
    ) -> Result<Vec<OutboxItem>> {
        self.refresh_keys()?;
        let limit = batch.saturating_add(exclude.len());
        let rows: Vec<(i64, String, i64, u32)> = {
            let mut st = self.conn.prepare_cached(
                "SELECT id, item, item_id, attempts FROM outbox
                 WHERE state = 'pending' AND next_attempt <= ?1 ORDER BY priority, id LIMIT ?2",
            )?;
            let it = st.query_map(
                params![now.as_millis(), i64::try_from(limit).unwrap_or(i64::MAX)],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?;
            it.filter(|row| row.as_ref().map_or(true, |r| !exclude.contains(&r.0)))
                .take(batch)
                .collect::<rusqlite::Result<_>>()?
        };
        let mut out = Vec::with_capacity(rows.len());
        for (id, item, item_id, attempts) in rows {
            let payload = if item == "alert" {
                self.load_alert(item_id).map(OutboxPayload::Alert)
            } else if item == "security" {
                self.load_security_report(item_id).map(OutboxPayload::Alert)
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
                    let Some(what) = unusable(&e, &item, item_id) else {
                        // The database itself failed: nothing wrong with the entry.
                        self.flush_events();
                        return Err(e);
                    };
                    // One entry that cannot become a request must not hold up the ones after it:
                    // it is quarantined (kept, never uploaded) with an event, and the poll goes on.
                    if let Err(qe) = self.quarantine_entry(id, &what, &e.to_string()) {
                        warn!(outbox = id, error = %qe, "Could not quarantine an outbox entry.");
                        self.flush_events();
                        return Err(qe);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Quarantine one entry whose record cannot be turned into an upload: `what` (no PHI) goes into
    /// the event, `error` (may echo a value) is sealed into `last_error`.
    fn quarantine_entry(&mut self, id: i64, what: &str, error: &str) -> Result<()> {
        let now = self.clock.now().as_millis();
        self.write(|db| {
            let mut vals = vec![now.into()];
            vals.extend(Db::sealed_error(db, id, error)?);
            vals.push(id.into());
            let n = db.conn.execute(
                "UPDATE outbox SET state = 'quarantined', done_at = ?1, key_id = ?2, last_error = ?3
                 WHERE id = ?4 AND state IN ('pending', 'in_flight')",
                rusqlite::params_from_iter(vals),
            )?;
            if n > 0 {
                error!(outbox = id, "Outbox entry quarantined: {what}.");
                db.queue(
                    "outbox_quarantined",
                    "error",
                    format!("outbox entry {id} quarantined, never uploaded: {what}"),
                );
            }
            Ok(())
        })
    }

    /// Pending or in flight → quarantined: entries the uplink cannot turn into a request. Kept for
    /// investigation, never uploaded, never retried. `reason` is sealed (it may echo a value); the
    /// event names only the entries.
    pub(crate) fn quarantine(&mut self, ids: &[i64], reason: &str) -> Result<usize> {
        let now = self.clock.now().as_millis();
        let n = self.update_each(
            "UPDATE outbox SET state = 'quarantined', done_at = ?1, key_id = ?2, last_error = ?3
             WHERE id = ?4 AND state IN ('pending', 'in_flight')",
            ids,
            &|db, id| {
                let mut v = vec![now.into()];
                v.extend(Db::sealed_error(db, id, reason)?);
                Ok(v)
            },
        )?;
        if n > 0 {
            error!(entries = n, "Outbox entries quarantined by the uplink.");
            let list: Vec<String> = ids.iter().take(20).map(i64::to_string).collect();
            let more = if ids.len() > 20 { ", …" } else { "" };
            self.queue(
                "outbox_quarantined",
                "error",
                format!(
                    "{n} outbox entries quarantined by the uplink, never uploaded (entries {}{more}): \
                     they could not be turned into a request",
                    list.join(", ")
                ),
            );
            self.flush_events();
        }
        Ok(n)
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
        let text = super::bounded(text.to_owned(), super::MAX_LAST_ERROR);
        let (key_id, sealed) = db.seal("outbox", "last_error", &id.to_string(), text.as_bytes())?;
        Ok(vec![key_id.into(), sealed.into()])
    }

    /// Every pending entry due now (a technician's `sync --now` after an outage); not a security
    /// report still open (its window still counting events): it goes when its window closes.
    pub(crate) fn due_now(&mut self, now: UtcMillis) -> Result<usize> {
        self.write(|db| {
            Ok(db.conn.execute(
                "UPDATE outbox SET next_attempt = ?1 WHERE state = 'pending' AND next_attempt > ?1
                 AND NOT (item = 'security'
                          AND item_id IN (SELECT id FROM security_reports WHERE open = 1))",
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

    /// Rejected → pending, due now (`vitals-hub sync --rejected`): the clinic was misconfigured,
    /// or fixed its validation. Attempts restart; the sealed last error stays until the next.
    pub(crate) fn requeue_rejected(&mut self, now: UtcMillis) -> Result<usize> {
        let n = self.write(|db| {
            Ok(db.conn.execute(
                "UPDATE outbox SET state = 'pending', next_attempt = ?1, attempts = 0, done_at = NULL
                 WHERE state = 'rejected'",
                [now.as_millis()],
            )?)
        })?;
        if n > 0 {
            self.queue(
                "outbox_requeued",
                "info",
                format!("{n} rejected outbox entries queued for upload again"),
            );
            self.flush_events();
        }
        Ok(n)
    }

    /// Acked at or after `since` → pending, due now (`vitals-hub sync --resend --since`): the
    /// clinic lost what it had acknowledged (a restored backup). Only what the hub still holds
    /// (not pruned); conditional creates keep the server from storing anything twice.
    pub(crate) fn requeue_acked_since(
        &mut self,
        since: UtcMillis,
        now: UtcMillis,
    ) -> Result<usize> {
        let n = self.write(|db| {
            Ok(db.conn.execute(
                "UPDATE outbox SET state = 'pending', next_attempt = ?1, attempts = 0, done_at = NULL
                 WHERE state = 'acked' AND done_at >= ?2",
                params![now.as_millis(), since.as_millis()],
            )?)
        })?;
        if n > 0 {
            self.queue(
                "outbox_resend",
                "info",
                format!("{n} acknowledged outbox entries queued for upload again"),
            );
            self.flush_events();
        }
        Ok(n)
    }

    /// Forget the server ids of the hub and its devices at `destination`: the next bundles send
    /// them again as conditional creates (a server restored from a backup may not have them).
    pub(crate) fn forget_uplink_refs(&mut self, destination: &str) -> Result<usize> {
        self.write(|db| {
            Ok(db.conn.execute(
                "UPDATE uplink_state SET value = '' WHERE destination = ?1
                 AND (name = 'hub' OR name LIKE 'device:%')",
                [destination],
            )?)
        })
    }

    /// The newest last error of an entry waiting or rejected, unsealed (the server's reason, which
    /// may echo PHI: for the technician's terminal only).
    pub(crate) fn latest_error(&mut self) -> Result<Option<String>> {
        self.refresh_keys()?;
        let row: Option<(i64, i64, Vec<u8>)> = self
            .conn
            .query_row(
                "SELECT id, key_id, last_error FROM outbox
                 WHERE last_error IS NOT NULL AND state IN ('pending', 'in_flight', 'rejected')
                 ORDER BY max(coalesce(done_at, 0), next_attempt) DESC, id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((id, key_id, sealed)) = row else {
            return Ok(None);
        };
        let plain = self.open_value("outbox", "last_error", &id.to_string(), key_id, &sealed)?;
        Ok(Some(String::from_utf8_lossy(&plain).into_owned()))
    }
}
