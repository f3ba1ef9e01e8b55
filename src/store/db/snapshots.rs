//! Snapshots: sealed state derived from the readings (the alert engine's, `daemon::ingest`), one
//! row per name, each saying which readings it covers, so a start replays only the readings after
//! it instead of every stored one. Written in the same transaction as an append (no commit of its
//! own) or alone (start-up, clean stop). Guarantees: what a snapshot covers is sealed with it (a
//! changed plain column cannot make a start skip readings); a snapshot that fails to open is an
//! [`StoreError::Integrity`] with a security event, and the caller falls back to a full replay.

use super::{new_uuid, Db};
use crate::store::{Result, Snapshot};
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct SnapshotEnvelope {
    covers: i64,
    state: serde_json::Value,
}

impl Db {
    /// Write (or replace) snapshot `snap` inside the current transaction.
    pub(super) fn put_snapshot_in_tx(&mut self, snap: &Snapshot) -> Result<()> {
        let existing: Option<String> = self
            .conn
            .prepare_cached("SELECT uuid FROM snapshots WHERE name = ?1")?
            .query_row([&snap.name], |r| r.get(0))
            .optional()?;
        let uuid = match existing {
            Some(u) => u,
            None => new_uuid(&mut self.public_random, self.clock.now())?,
        };
        let env = SnapshotEnvelope {
            covers: snap.covers,
            state: snap.state.clone(),
        };
        let (key_id, sealed) = self.seal("snapshots", "sealed", &uuid, &Db::json(&env)?)?;
        let now = self.clock.now().floor_minute().as_millis();
        self.conn
            .prepare_cached(
                "INSERT INTO snapshots(uuid, name, key_id, sealed, updated_min) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(name) DO UPDATE SET key_id = excluded.key_id, sealed = excluded.sealed,
                   updated_min = excluded.updated_min",
            )?
            .execute(params![uuid, snap.name, key_id, sealed, now])?;
        Ok(())
    }

    /// Write (or replace) a snapshot in a transaction of its own.
    pub(crate) fn put_snapshot(&mut self, snap: &Snapshot) -> Result<()> {
        self.write(|db| db.put_snapshot_in_tx(snap))
    }

    /// The snapshot named `name`, opened; `None` if there is none.
    pub(crate) fn snapshot(&mut self, name: &str) -> Result<Option<Snapshot>> {
        self.refresh_keys()?;
        let row: Option<(String, i64, Vec<u8>)> = self
            .conn
            .query_row(
                "SELECT uuid, key_id, sealed FROM snapshots WHERE name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((uuid, key_id, sealed)) = row else {
            return Ok(None);
        };
        let plain = match self.open_value("snapshots", "sealed", &uuid, key_id, &sealed) {
            Ok(p) => p,
            Err(e) => {
                self.flush_events();
                return Err(e);
            }
        };
        let env: SnapshotEnvelope = Db::decode(&uuid, &plain)?;
        Ok(Some(Snapshot {
            name: name.to_owned(),
            covers: env.covers,
            state: env.state,
        }))
    }
}
