//! The clinic's alert-limits version in force (schema v5): one row, replaced in one transaction
//! together with its security event, so after a crash at any instant the store holds exactly the
//! old version or exactly the new one. The sealed value is the limits `ServiceRequest` as the
//! clinic sent it; the hub parses and validates it again when it loads it
//! ([`crate::fhir::limits`]), so a row written by an older build is checked by today's rules.

use super::{new_uuid, Db};
use crate::model::UtcMillis;
use crate::store::{PendingLimits, Result, StoredLimits};
use rusqlite::{params, OptionalExtension};

impl Db {
    /// The version in force, if the clinic ever sent one.
    pub(crate) fn alert_limits(&mut self) -> Result<Option<StoredLimits>> {
        let row: Option<(String, i64, i64, i64, Vec<u8>)> = self
            .conn
            .query_row(
                "SELECT uuid, version, applied_ms, key_id, sealed FROM alert_limits WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        let Some((uuid, version, applied_ms, key_id, sealed)) = row else {
            return Ok(None);
        };
        let plain = self.open_value("alert_limits", "sealed", &uuid, key_id, &sealed)?;
        Ok(Some(StoredLimits {
            version: u32::try_from(version).unwrap_or(0),
            applied_at: UtcMillis(applied_ms),
            resource: String::from_utf8_lossy(&plain).into_owned(),
        }))
    }

    /// Replace the version in force with `version` (the `resource` text it came as); one
    /// transaction with the `alert_limits_changed` security event. A version not newer than the
    /// stored one is refused (the caller checked; this is the store's own guard).
    pub(crate) fn set_alert_limits(
        &mut self,
        version: u32,
        resource: &str,
        applied_at: UtcMillis,
    ) -> Result<()> {
        self.write(|db| {
            let old: Option<i64> = db
                .conn
                .query_row("SELECT version FROM alert_limits WHERE id = 1", [], |r| {
                    r.get(0)
                })
                .optional()?;
            if old.is_some_and(|o| o >= i64::from(version)) {
                return Err(crate::store::StoreError::Invalid(format!(
                    "alert limits version {version} is not newer than the stored version {}",
                    old.unwrap_or_default()
                )));
            }
            let uuid = new_uuid(&mut db.public_random, db.clock.now())?;
            let (key_id, sealed) = db.seal("alert_limits", "sealed", &uuid, resource.as_bytes())?;
            db.conn.execute(
                "INSERT INTO alert_limits(id, uuid, version, applied_ms, key_id, sealed)
                 VALUES (1, ?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(id) DO UPDATE SET uuid = excluded.uuid, version = excluded.version,
                   applied_ms = excluded.applied_ms, key_id = excluded.key_id,
                   sealed = excluded.sealed",
                params![uuid, version, applied_at.as_millis(), key_id, sealed],
            )?;
            // A pending version this one reaches or passes is done with, in the same transaction.
            db.conn.execute(
                "DELETE FROM alert_limits_pending WHERE version <= ?1",
                params![version],
            )?;
            let from = old.map_or("hub.toml [alerts]".to_owned(), |o| format!("version {o}"));
            db.queue(
                "alert_limits_changed",
                "security",
                format!("alert limits: clinic version {version} in force (was {from})"),
            );
            Ok(())
        })
    }

    /// The version accepted but not yet in force, if any (schema v7).
    pub(crate) fn pending_alert_limits(&mut self) -> Result<Option<PendingLimits>> {
        let row: Option<(String, i64, i64, i64, Vec<u8>)> = self
            .conn
            .query_row(
                "SELECT uuid, version, effective_ms, key_id, sealed FROM alert_limits_pending WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        let Some((uuid, version, effective_ms, key_id, sealed)) = row else {
            return Ok(None);
        };
        let plain = self.open_value("alert_limits_pending", "sealed", &uuid, key_id, &sealed)?;
        Ok(Some(PendingLimits {
            version: u32::try_from(version).unwrap_or(0),
            effective: UtcMillis(effective_ms),
            resource: String::from_utf8_lossy(&plain).into_owned(),
        }))
    }

    /// Keep `version` until `effective` (replacing any pending version); one transaction with the
    /// `alert_limits_pending` security event. Not newer than the version in force: refused.
    pub(crate) fn set_pending_alert_limits(
        &mut self,
        version: u32,
        resource: &str,
        effective: UtcMillis,
    ) -> Result<()> {
        self.write(|db| {
            let in_force: Option<i64> = db
                .conn
                .query_row("SELECT version FROM alert_limits WHERE id = 1", [], |r| {
                    r.get(0)
                })
                .optional()?;
            if in_force.is_some_and(|o| o >= i64::from(version)) {
                return Err(crate::store::StoreError::Invalid(format!(
                    "alert limits version {version} is not newer than the version in force {}",
                    in_force.unwrap_or_default()
                )));
            }
            let uuid = new_uuid(&mut db.public_random, db.clock.now())?;
            let (key_id, sealed) =
                db.seal("alert_limits_pending", "sealed", &uuid, resource.as_bytes())?;
            db.conn.execute(
                "INSERT INTO alert_limits_pending(id, uuid, version, effective_ms, key_id, sealed)
                 VALUES (1, ?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(id) DO UPDATE SET uuid = excluded.uuid, version = excluded.version,
                   effective_ms = excluded.effective_ms, key_id = excluded.key_id,
                   sealed = excluded.sealed",
                params![uuid, version, effective.as_millis(), key_id, sealed],
            )?;
            db.queue(
                "alert_limits_pending",
                "security",
                format!(
                    "alert limits: clinic version {version} accepted, takes effect at {}",
                    effective.to_rfc3339()
                ),
            );
            Ok(())
        })
    }
}
