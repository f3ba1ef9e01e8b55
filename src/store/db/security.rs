//! Security reports (`store::security`): every security event counts into the open aggregate of
//! its code, in the transaction that writes the event; a closed aggregate is an outbox entry
//! (item `security`) due when its window closes.

use super::{new_uuid, Db, PRIORITY_SECURITY};
use crate::model::UtcMillis;
use crate::store::security::{code_for, SecurityReport};
use crate::store::{Result, StoredAlert};
use rusqlite::{params, OptionalExtension};

impl Db {
    /// Count an event (inside the open write transaction). Called for every event written.
    pub(super) fn count_security_event(
        &mut self,
        kind: &str,
        severity: &str,
        at: UtcMillis,
    ) -> Result<()> {
        let Some(code) = code_for(kind, severity) else {
            return Ok(());
        };
        let now = self.clock.now().as_millis();
        let open: Option<(i64, String, i64)> = self
            .conn
            .prepare_cached(
                "SELECT id, kinds, closes_at FROM security_reports WHERE code = ?1 AND open = 1",
            )?
            .query_row([code], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let at = at.as_millis();
        match open {
            Some((id, kinds, closes_at)) if closes_at > now => {
                let mut list: Vec<&str> = kinds.split(',').filter(|k| !k.is_empty()).collect();
                let kinds = if list.contains(&kind) {
                    kinds.clone()
                } else {
                    list.push(kind);
                    list.sort_unstable();
                    list.join(",")
                };
                self.conn
                    .prepare_cached(
                        "UPDATE security_reports SET count = count + 1, kinds = ?2,
                           first_at = min(first_at, ?3), last_at = max(last_at, ?3) WHERE id = ?1",
                    )?
                    .execute(params![id, kinds, at])?;
                Ok(())
            }
            other => {
                if let Some((id, ..)) = other {
                    // Its window has passed (it is due, or the clock jumped): closed as it is.
                    self.conn
                        .execute("UPDATE security_reports SET open = 0 WHERE id = ?1", [id])?;
                }
                let uuid = new_uuid(&mut self.public_random, self.clock.now())?;
                let closes_at = now.saturating_add(self.cfg.security_window_ms.max(0));
                self.conn.execute(
                    "INSERT INTO security_reports(uuid, code, kinds, count, first_at, last_at, closes_at, open)
                     VALUES (?1, ?2, ?3, 1, ?4, ?4, ?5, 1)",
                    params![uuid, code, kind, at, closes_at],
                )?;
                let id = self.conn.last_insert_rowid();
                let created = self.clock.now().floor_minute().as_millis();
                self.conn.execute(
                    "INSERT INTO outbox(item, item_id, priority, state, next_attempt, created_min)
                     VALUES ('security', ?1, ?2, 'pending', ?3, ?4)",
                    params![id, PRIORITY_SECURITY, closes_at, created],
                )?;
                Ok(())
            }
        }
    }

    /// A security report for upload; closes it first (no event counts into what is being sent,
    /// even if the clock went back).
    pub(super) fn load_security_report(&mut self, id: i64) -> Result<StoredAlert> {
        let r = self.read_security_report(id)?;
        self.write(|db| {
            db.conn.execute(
                "UPDATE security_reports SET open = 0 WHERE id = ?1 AND open = 1",
                [id],
            )?;
            Ok(())
        })?;
        let stable_key = format!("security-{}", r.uuid);
        Ok(StoredAlert {
            id,
            uuid: r.uuid.clone(),
            payload: serde_json::json!({ "security_report": r }),
            stable_key,
            related: vec![],
        })
    }

    fn read_security_report(&mut self, id: i64) -> Result<SecurityReport> {
        let (uuid, code, kinds, count, first_at, last_at): (String, String, String, i64, i64, i64) =
            self.conn.query_row(
                "SELECT uuid, code, kinds, count, first_at, last_at FROM security_reports WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
            )?;
        Ok(SecurityReport {
            id,
            uuid,
            code,
            kinds: kinds
                .split(',')
                .filter(|k| !k.is_empty())
                .map(str::to_owned)
                .collect(),
            count: u64::try_from(count).unwrap_or(0),
            first_at,
            last_at,
        })
    }

    /// Every security report, oldest first, with its outbox state (`status`, tests).
    pub(crate) fn security_reports(&mut self) -> Result<Vec<(SecurityReport, String)>> {
        let ids: Vec<(i64, String)> = {
            let mut st = self.conn.prepare(
                "SELECT s.id, coalesce(o.state, '') FROM security_reports s
                 LEFT JOIN outbox o ON o.item = 'security' AND o.item_id = s.id ORDER BY s.id",
            )?;
            let it = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            it.collect::<rusqlite::Result<_>>()?
        };
        ids.into_iter()
            .map(|(id, state)| Ok((self.read_security_report(id)?, state)))
            .collect()
    }
}
