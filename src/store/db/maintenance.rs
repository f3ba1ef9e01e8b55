//! Maintenance: capacity (the 80 % warning, refusing appends at the limit without evicting),
//! retention (pruning acked data in short transactions), the audit events, stats and SQLite's
//! integrity check.

use super::Db;
use crate::model::UtcMillis;
use crate::store::{Event, Result, Stats, StoreError};
use rusqlite::params;
use tracing::{error, warn};

/// Events kept by pruning.
const EVENTS_KEPT: i64 = 10_000;

impl Db {
    pub(crate) fn used_bytes(&self) -> Result<u64> {
        // Cached, as every statement on an append's path: compiling it again for each append was
        // a large part of a single append's time (issue 20).
        let (pages, free): (i64, i64) = self
            .conn
            .prepare_cached(
                "SELECT (SELECT page_count FROM pragma_page_count()), (SELECT freelist_count FROM pragma_freelist_count())",
            )?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(u64::try_from(pages.saturating_sub(free)).unwrap_or(0) * self.page_size)
    }

    pub(super) fn check_capacity(&mut self) -> Result<()> {
        let used = self.used_bytes()?;
        self.refuse_when_full(used)
            .inspect_err(|e| self.report_full(e))
    }

    /// `Err(Full)` when `used` bytes reach the limit; nothing recorded (inside a transaction,
    /// [`Db::report_full`] follows its rollback).
    pub(super) fn refuse_when_full(&mut self, used: u64) -> Result<()> {
        let limit = self.cfg.size_limit;
        if used >= limit {
            return Err(StoreError::Full { used, limit });
        }
        self.full_reported = false;
        Ok(())
    }

    /// The first refusal of a full store is logged and recorded as an event (once until the store
    /// has room again).
    pub(super) fn report_full(&mut self, e: &StoreError) {
        let StoreError::Full { used, limit } = *e else {
            return;
        };
        if !self.full_reported {
            self.full_reported = true;
            error!(
                used,
                limit, "Store full: appends are refused until uploads are acknowledged."
            );
            self.queue(
                "store_full",
                "error",
                format!("{used} of {limit} bytes used; appends refused"),
            );
            self.flush_events();
        }
    }

    /// After an append committed: the 80 % warning. Never fails the committed append; a size that
    /// cannot be read is checked again after the next one.
    pub(super) fn after_append_capacity(&mut self, measured: Option<u64>) {
        let used = match measured.map_or_else(|| self.used_bytes(), Ok) {
            Ok(u) => u,
            Err(e) => {
                warn!(error = %e, "Could not read the store's size after an append.");
                return;
            }
        };
        let limit = self.cfg.size_limit.max(1);
        let pct = used.saturating_mul(100) / limit;
        if pct >= 80 && !self.capacity_warned {
            self.capacity_warned = true;
            warn!(used, limit, "Store is 80 % full.");
            self.queue(
                "capacity_warning",
                "warning",
                format!("{pct} % of {limit} bytes used"),
            );
            self.flush_events();
        } else if pct < 70 {
            self.capacity_warned = false;
        }
    }

    pub(crate) fn prune_batch(&mut self, now: UtcMillis, limit: i64) -> Result<u64> {
        let cutoff = now.plus_millis(-self.cfg.retention).as_millis();
        self.write(|db| {
            let ids: Vec<(i64, String, i64)> = {
                let mut st = db.conn.prepare(
                    "SELECT id, item, item_id FROM outbox WHERE state = 'acked' AND done_at < ?1 LIMIT ?2",
                )?;
                let it = st.query_map(params![cutoff, limit], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                it.collect::<rusqlite::Result<_>>()?
            };
            for (id, item, item_id) in &ids {
                let table = match item.as_str() {
                    "alert" => "alerts",
                    "security" => "security_reports",
                    _ => "readings",
                };
                db.conn
                    .execute(&format!("DELETE FROM {table} WHERE id = ?1"), [item_id])?;
                db.conn.execute("DELETE FROM outbox WHERE id = ?1", [id])?;
            }
            db.conn.execute(
                "DELETE FROM events WHERE id <= (SELECT max(id) FROM events) - ?1",
                [EVENTS_KEPT],
            )?;
            Ok(ids.len() as u64)
        })
    }

    pub(crate) fn events(&mut self, limit: usize) -> Result<Vec<Event>> {
        let mut out: Vec<Event> = self
            .queued
            .iter()
            .rev()
            .map(|e| Event {
                id: 0,
                at: e.at,
                kind: e.kind.to_owned(),
                severity: e.severity.to_owned(),
                detail: e.detail.clone(),
            })
            .collect();
        let mut st = self.conn.prepare(
            "SELECT id, at, kind, severity, detail FROM events ORDER BY id DESC LIMIT ?1",
        )?;
        let it = st.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
            Ok(Event {
                id: r.get(0)?,
                at: UtcMillis(r.get(1)?),
                kind: r.get(2)?,
                severity: r.get(3)?,
                detail: r.get(4)?,
            })
        })?;
        for e in it {
            out.push(e?);
        }
        out.truncate(limit);
        Ok(out)
    }

    pub(crate) fn stats(&mut self) -> Result<Stats> {
        let mut s = Stats {
            bytes_used: self.used_bytes()?,
            size_limit: self.cfg.size_limit,
            active_key_id: self.keys.active.unwrap_or(0),
            active_key_seals: self.keys.active_seals,
            ..Stats::default()
        };
        let now = self.clock.now().as_millis();
        // A security report whose window is still open is not waiting for the uplink yet.
        let mut st = self.conn.prepare(
            "SELECT CASE WHEN item = 'security' AND state = 'pending' AND next_attempt > ?1
                    THEN 'open' ELSE state END, count(*) FROM outbox GROUP BY 1",
        )?;
        let rows = st.query_map([now], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (state, n) = row?;
            let n = u64::try_from(n).unwrap_or(0);
            match state.as_str() {
                "pending" => s.pending = n,
                "in_flight" => s.in_flight = n,
                "acked" => s.acked = n,
                "rejected" => s.rejected = n,
                "open" => s.security_open = n,
                _ => s.quarantined = n,
            }
        }
        let (alerts, oldest): (i64, Option<i64>) = self.conn.query_row(
            "SELECT count(*) FILTER (WHERE item = 'alert'), min(created_min) FROM outbox WHERE state IN ('pending', 'in_flight')
             AND NOT (item = 'security' AND state = 'pending' AND next_attempt > ?1)",
            [now],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        s.alerts_waiting = u64::try_from(alerts).unwrap_or(0);
        s.oldest_waiting = oldest.map(UtcMillis);
        let (readings, alerts_stored): (i64, i64) = self.conn.query_row(
            "SELECT (SELECT count(*) FROM readings), (SELECT count(*) FROM alerts)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        s.readings = u64::try_from(readings).unwrap_or(0);
        s.alerts = u64::try_from(alerts_stored).unwrap_or(0);
        Ok(s)
    }

    pub(crate) fn integrity_check(&mut self) -> Result<String> {
        let mut st = self.conn.prepare("PRAGMA integrity_check")?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        let lines: Vec<String> = rows.collect::<rusqlite::Result<_>>()?;
        Ok(lines.join("\n"))
    }

    pub(crate) fn append_event(
        &mut self,
        kind: &'static str,
        severity: &'static str,
        detail: String,
    ) -> Result<()> {
        self.queue(kind, severity, detail);
        self.write(|_| Ok(()))
    }
}
