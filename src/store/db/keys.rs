//! Keys: the key ring (loaded from `keys`, unwrapped with the KEK), sealing and opening of every
//! PHI column, the integrity error, data-key rotation (manual and automatic by seal count) and KEK
//! rotation. Guarantees: only the KEK fingerprint is stored; a value that fails to open is an
//! [`StoreError::Integrity`] with a security event, never skipped silently.

use super::{Db, KeyRing};
use crate::store::crypto::{self, DataKey, IndexKey, Kek, Place};
use crate::store::keyfile::{self, KekSource};
use crate::store::{Result, StoreError};
use rusqlite::params;
use std::fs;
use tracing::{error, info};

/// After a failed automatic rotation, the next try waits this long (ms).
const AUTO_ROTATION_RETRY_MS: i64 = 60_000;

impl Db {
    /// After a commit: a data key that reached its seal budget is replaced. This runs after the
    /// write committed, so it never fails that write: a failure is logged, recorded once as a
    /// `data_key_rotation_failed` event (shown by `status`) and tried again after
    /// [`AUTO_ROTATION_RETRY_MS`], at the next commit. The budget is a quarter of the nonce bound,
    /// so the key stays safe to use meanwhile.
    pub(super) fn maybe_auto_rotate(&mut self) {
        if self.auto_rotation.running || self.keys.active_seals < self.cfg.rotate_after_seals {
            return;
        }
        let now = self.clock.now();
        if self.auto_rotation.retry_at.is_some_and(|t| now < t) {
            return;
        }
        self.auto_rotation.running = true;
        let old = self.keys.active;
        match self.begin_data_key_rotation() {
            Ok(new) => {
                info!(old_key = ?old, new_key = new, "Data key reached its seal budget; rotated.");
            }
            Err(e) => {
                self.auto_rotation.retry_at = Some(now.plus_millis(AUTO_ROTATION_RETRY_MS));
                error!(error = %e, key = ?old, "Automatic data-key rotation failed; the write committed. Retrying later.");
                if !self.auto_rotation.failure_reported {
                    self.auto_rotation.failure_reported = true;
                    let seals = self.keys.active_seals;
                    self.queue(
                        "data_key_rotation_failed",
                        "error",
                        format!(
                            "data key {} reached its seal budget ({seals} seals) and could not be \
                             replaced: {e}; retried every {} s",
                            old.unwrap_or(0),
                            AUTO_ROTATION_RETRY_MS / 1000
                        ),
                    );
                    self.flush_events();
                }
            }
        }
        self.auto_rotation.running = false;
    }

    pub(super) fn refresh_keys(&mut self) -> Result<()> {
        let v: i64 = self
            .conn
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |r| r.get(0))?;
        if v != self.data_version || self.keys.active.is_none() {
            self.load_keys()?;
            self.data_version = v;
        }
        Ok(())
    }

    /// A KEK file rotated by another process, or staged by a rotation that crashed before its rename.
    pub(super) fn find_kek(&mut self, expected: &str) -> Result<()> {
        if self.kek.id() == expected {
            return Ok(());
        }
        if let KekSource::File(p) = &self.cfg.kek {
            let staged = keyfile::staged_path(p);
            if staged.exists() {
                let k = Kek::new(&*keyfile::read_checked(&staged)?)?;
                if k.id() == expected {
                    keyfile::commit_staged(p)?;
                    info!(kek = %k.id(), "Finished an interrupted KEK rotation.");
                    self.kek = k;
                    return Ok(());
                }
            }
        }
        let k = Kek::new(&*keyfile::read_checked(self.cfg.kek.path())?)?;
        if k.id() == expected {
            self.kek = k;
            return Ok(());
        }
        Err(StoreError::WrongKek {
            path: self.cfg.kek.path().to_path_buf(),
            found: self.kek.id().to_owned(),
            expected: expected.to_owned(),
        })
    }

    pub(super) fn load_keys(&mut self) -> Result<()> {
        let rows: Vec<(i64, String, String, String, Vec<u8>, i64)> = {
            let mut st = self
                .conn
                .prepare("SELECT id, purpose, state, kek_id, wrapped, seals FROM keys")?;
            let it = st.query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })?;
            it.collect::<rusqlite::Result<_>>()?
        };
        let mut ring = KeyRing::default();
        for (id, purpose, state, kek_id, wrapped, seals) in rows {
            self.find_kek(&kek_id)?;
            let bytes = self
                .kek
                .unwrap_key(&purpose, id, &wrapped)
                .map_err(|_| self.integrity("keys", "wrapped", &id.to_string()))?;
            if purpose == "index" {
                ring.index = Some(IndexKey::new(&bytes));
            } else {
                ring.data.insert(id, DataKey::new(id, &bytes)?);
                if state == "active" {
                    ring.active = Some(id);
                    // Counting resumes at the persisted reservation (see SEAL_RESERVATION).
                    ring.active_seals = u64::try_from(seals).unwrap_or(0);
                    ring.active_reserved = ring.active_seals;
                }
            }
        }
        self.keys = ring;
        Ok(())
    }

    /// Create a key inside the current transaction; a data key becomes the active one.
    pub(super) fn create_key(&mut self, purpose: &'static str) -> Result<i64> {
        let id: i64 =
            self.conn
                .query_row("SELECT coalesce(max(id), 0) + 1 FROM keys", [], |r| {
                    r.get(0)
                })?;
        let bytes = crypto::random_key(&self.rng)?;
        let wrapped = self.kek.wrap(&self.rng, purpose, id, &bytes)?;
        self.conn.execute(
            "INSERT INTO keys(id, purpose, state, kek_id, wrapped, seals, created_at) VALUES (?1, ?2, 'active', ?3, ?4, 0, ?5)",
            params![id, purpose, self.kek.id(), wrapped, self.clock.now().as_millis()],
        )?;
        if purpose == "data" {
            self.keys.data.insert(id, DataKey::new(id, &bytes)?);
            self.keys.active = Some(id);
            self.keys.active_seals = 0;
            self.keys.active_reserved = 0;
        } else {
            self.keys.index = Some(IndexKey::new(&bytes));
            self.keys.bucket_cache = None;
        }
        Ok(id)
    }

    pub(super) fn active_key(&self) -> Result<&DataKey> {
        self.keys
            .active
            .and_then(|id| self.keys.data.get(&id))
            .ok_or_else(|| StoreError::Invalid("no active data key (store not opened)".into()))
    }

    pub(in crate::store) fn index(&self) -> Result<&IndexKey> {
        self.keys
            .index
            .as_ref()
            .ok_or_else(|| StoreError::Invalid("no index key (store not opened)".into()))
    }

    pub(super) fn seal(
        &mut self,
        table: &'static str,
        column: &'static str,
        row: &str,
        plain: &[u8],
    ) -> Result<(i64, Vec<u8>)> {
        let nonce = self.public_random.nonce()?;
        let key = self.active_key()?;
        let sealed = key.seal(nonce, &Place { table, column, row }, plain)?;
        let id = key.id();
        self.tx_seals += 1;
        Ok((id, sealed))
    }

    /// The error for a value that failed to open; records a security event.
    pub(super) fn integrity(
        &mut self,
        table: &'static str,
        column: &'static str,
        row: &str,
    ) -> StoreError {
        error!(table, column, row, "Sealed value failed authentication.");
        self.queue(
            "integrity_failure",
            "security",
            format!("{table}.{column} of row {row} failed authentication"),
        );
        StoreError::Integrity {
            table,
            column,
            row: row.to_owned(),
        }
    }

    pub(super) fn open_value(
        &mut self,
        table: &'static str,
        column: &'static str,
        row: &str,
        key_id: i64,
        sealed: &[u8],
    ) -> Result<Vec<u8>> {
        let opened = self
            .keys
            .data
            .get(&key_id)
            .and_then(|k| k.open(&Place { table, column, row }, sealed).ok());
        match opened {
            Some(p) => Ok(p),
            None => Err(self.integrity(table, column, row)),
        }
    }

    pub(crate) fn begin_data_key_rotation(&mut self) -> Result<i64> {
        let new = self.write(|db| {
            db.conn.execute(
                "UPDATE keys SET state = 'retired' WHERE purpose = 'data' AND state = 'active'",
                [],
            )?;
            let id = db.create_key("data")?;
            db.queue(
                "data_key_rotated",
                "security",
                format!("data key {id} is active"),
            );
            Ok(id)
        })?;
        if self.auto_rotation.failure_reported {
            info!(
                new_key = new,
                "Data-key rotation succeeded after earlier failures."
            );
        }
        self.auto_rotation.retry_at = None;
        self.auto_rotation.failure_reported = false;
        Ok(new)
    }

    /// Re-seal up to `limit` rows that are not under the active key; one short transaction.
    pub(crate) fn reencrypt_batch(&mut self, limit: usize) -> Result<u64> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.write(|db| {
            let active = db.active_key()?.id();
            let mut done = 0u64;
            for (table, row_col) in [
                ("readings", "uuid"),
                ("alerts", "uuid"),
                ("devices", "uuid"),
                ("device_info", "uuid"),
                ("held", "uuid"),
                ("alert_limits", "uuid"),
                ("alert_limits_pending", "uuid"),
                ("snapshots", "uuid"),
            ] {
                let rows: Vec<(i64, String, i64, Vec<u8>)> = {
                    let mut st = db.conn.prepare(&format!(
                        "SELECT id, {row_col}, key_id, sealed FROM {table} WHERE key_id != ?1 LIMIT ?2"
                    ))?;
                    let it = st.query_map(params![active, limit], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
                    it.collect::<rusqlite::Result<_>>()?
                };
                for (id, row, key_id, sealed) in rows {
                    let plain = db.open_value(table, "sealed", &row, key_id, &sealed)?;
                    let (new_id, resealed) = db.seal(table, "sealed", &row, &plain)?;
                    db.conn.execute(
                        &format!("UPDATE {table} SET key_id = ?1, sealed = ?2 WHERE id = ?3"),
                        params![new_id, resealed, id],
                    )?;
                    done += 1;
                }
            }
            let rows: Vec<(i64, i64, Vec<u8>)> = {
                let mut st = db.conn.prepare(
                    "SELECT id, key_id, last_error FROM outbox WHERE last_error IS NOT NULL AND key_id != ?1 LIMIT ?2",
                )?;
                let it = st.query_map(params![active, limit], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                it.collect::<rusqlite::Result<_>>()?
            };
            for (id, key_id, sealed) in rows {
                let row = id.to_string();
                let plain = db.open_value("outbox", "last_error", &row, key_id, &sealed)?;
                let (new_id, resealed) = db.seal("outbox", "last_error", &row, &plain)?;
                db.conn.execute(
                    "UPDATE outbox SET key_id = ?1, last_error = ?2 WHERE id = ?3",
                    params![new_id, resealed, id],
                )?;
                done += 1;
            }
            Ok(done)
        })
    }

    pub(crate) fn delete_unused_keys(&mut self) -> Result<u64> {
        self.write(|db| {
            let n = db.conn.execute(
                "DELETE FROM keys WHERE purpose = 'data' AND state = 'retired' AND id NOT IN (
                   SELECT key_id FROM readings UNION SELECT key_id FROM alerts
                   UNION SELECT key_id FROM devices UNION SELECT key_id FROM device_info
                   UNION SELECT key_id FROM held WHERE key_id IS NOT NULL
                   UNION SELECT key_id FROM alert_limits
                   UNION SELECT key_id FROM alert_limits_pending
                   UNION SELECT key_id FROM snapshots
                   UNION SELECT key_id FROM outbox WHERE key_id IS NOT NULL)",
                [],
            )?;
            if n > 0 {
                db.queue(
                    "data_keys_deleted",
                    "security",
                    format!("{n} retired data keys deleted"),
                );
            }
            Ok(n as u64)
        })
    }

    pub(crate) fn rotate_kek(&mut self) -> Result<String> {
        let path = match &self.cfg.kek {
            KekSource::File(p) => p.clone(),
            KekSource::Credential(p) => {
                return Err(keyfile::KeyFileError::ReadOnlyCredential { path: p.clone() }.into())
            }
        };
        let staged = keyfile::staged_path(&path);
        if staged.exists() {
            fs::remove_file(&staged).map_err(|source| StoreError::Io {
                path: staged.clone(),
                source,
            })?;
        }
        let bytes = keyfile::random_key(&self.rng)?;
        keyfile::write_new(&staged, &bytes)?;
        let new = Kek::new(&bytes)?;
        let new_id = new.id().to_owned();
        self.write(|db| {
            let rows: Vec<(i64, String, Vec<u8>)> = {
                let mut st = db.conn.prepare("SELECT id, purpose, wrapped FROM keys")?;
                let it = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                it.collect::<rusqlite::Result<_>>()?
            };
            for (id, purpose, wrapped) in rows {
                let key = db
                    .kek
                    .unwrap_key(&purpose, id, &wrapped)
                    .map_err(|_| db.integrity("keys", "wrapped", &id.to_string()))?;
                let rewrapped = new.wrap(&db.rng, &purpose, id, &key)?;
                db.conn.execute(
                    "UPDATE keys SET kek_id = ?1, wrapped = ?2 WHERE id = ?3",
                    params![new.id(), rewrapped, id],
                )?;
            }
            db.queue(
                "kek_rotated",
                "security",
                format!("KEK {} replaced by {}", db.kek.id(), new.id()),
            );
            Ok(())
        })?;
        // The database now needs the new KEK (kept even if the rename fails: the staged file is
        // found and the rename finished at the next load or open).
        self.kek = new;
        keyfile::commit_staged(&path)?;
        info!(kek = %new_id, "KEK rotated.");
        Ok(new_id)
    }
}
