//! Devices: the allow-list (sealed records found by keyed address hash), download cursors, and
//! what is known about a device beyond its record (`device_info`). Guarantee: no address, name or
//! serial is stored in plain; lookups go through the index key.

use super::{new_uuid, Db};
use crate::model::UtcMillis;
use crate::store::{Device, DeviceInfo, DeviceKey, DeviceRecord, Result, StoreError};
use rusqlite::{params, OptionalExtension};

impl Db {
    pub(super) fn address_hash(&self, address: &str) -> Result<Vec<u8>> {
        Ok(self.index()?.hash(
            "device-address",
            address.trim().to_ascii_uppercase().as_bytes(),
        ))
    }

    pub(crate) fn upsert_device(
        &mut self,
        record: &DeviceRecord,
        allowed: bool,
    ) -> Result<DeviceKey> {
        self.write(|db| {
            let hash = db.address_hash(&record.address)?;
            let now = db.clock.now().floor_minute().as_millis();
            let existing: Option<String> = db
                .conn
                .query_row("SELECT uuid FROM devices WHERE address_hash = ?1", [&hash], |r| r.get(0))
                .optional()?;
            let plain = Db::json(record)?;
            let uuid = match existing {
                Some(u) => u,
                None => new_uuid(&mut db.public_random, db.clock.now())?,
            };
            let (key_id, sealed) = db.seal("devices", "sealed", &uuid, &plain)?;
            db.conn.execute(
                "INSERT INTO devices(uuid, address_hash, allowed, key_id, sealed, created_min, updated_min)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
                 ON CONFLICT(address_hash) DO UPDATE SET allowed = excluded.allowed,
                   key_id = excluded.key_id, sealed = excluded.sealed, updated_min = excluded.updated_min",
                params![uuid, hash, allowed, key_id, sealed, now],
            )?;
            Ok(DeviceKey(uuid))
        })
    }

    pub(super) fn device_rows(&mut self, filter: Option<Vec<u8>>) -> Result<Vec<Device>> {
        self.refresh_keys()?;
        let rows: Vec<(String, bool, i64, Vec<u8>)> = {
            let sql = if filter.is_some() {
                "SELECT uuid, allowed, key_id, sealed FROM devices WHERE address_hash = ?1"
            } else {
                "SELECT uuid, allowed, key_id, sealed FROM devices ORDER BY id"
            };
            let mut st = self.conn.prepare(sql)?;
            let map = |r: &rusqlite::Row<'_>| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?));
            let it = match &filter {
                Some(h) => st.query_map([h], map)?,
                None => st.query_map([], map)?,
            };
            it.collect::<rusqlite::Result<_>>()?
        };
        let mut out = Vec::with_capacity(rows.len());
        for (uuid, allowed, key_id, sealed) in rows {
            let plain = self.open_value("devices", "sealed", &uuid, key_id, &sealed);
            let plain = match plain {
                Ok(p) => p,
                Err(e) => {
                    self.flush_events();
                    return Err(e);
                }
            };
            out.push(Device {
                record: Db::decode(&uuid, &plain)?,
                key: DeviceKey(uuid),
                allowed,
            });
        }
        Ok(out)
    }

    pub(crate) fn device_by_address(&mut self, address: &str) -> Result<Option<Device>> {
        self.refresh_keys()?;
        let h = self.address_hash(address)?;
        Ok(self.device_rows(Some(h))?.into_iter().next())
    }

    /// Per device (by uuid): readings the clinic acknowledged, and when the last one was.
    pub(crate) fn acked_by_device(&mut self) -> Result<Vec<(String, u64, Option<i64>)>> {
        let mut st = self.conn.prepare(
            "SELECT d.uuid, count(*), max(o.done_at) FROM outbox o
               JOIN readings r ON o.item = 'reading' AND o.item_id = r.id
               JOIN devices d ON d.id = r.device_id
              WHERE o.state = 'acked' GROUP BY d.uuid",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                r.get::<_, Option<i64>>(2)?,
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Per device (by uuid): when its latest stored reading arrived, to the minute.
    pub(crate) fn last_received(&mut self) -> Result<Vec<(String, UtcMillis)>> {
        let mut st = self.conn.prepare(
            "SELECT d.uuid, max(r.received_min) FROM readings r JOIN devices d ON d.id = r.device_id GROUP BY d.uuid",
        )?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, UtcMillis(r.get(1)?))))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub(crate) fn devices(&mut self) -> Result<Vec<Device>> {
        self.device_rows(None)
    }

    pub(super) fn device_id(&self, device: &DeviceKey) -> Result<i64> {
        self.conn
            .prepare_cached("SELECT id FROM devices WHERE uuid = ?1")?
            .query_row([&device.0], |r| r.get(0))
            .optional()?
            .ok_or_else(|| StoreError::UnknownDevice(device.0.clone()))
    }

    pub(crate) fn cursor(&mut self, device: &DeviceKey, name: &str) -> Result<Option<i64>> {
        let id = self.device_id(device)?;
        Ok(self
            .conn
            .query_row(
                "SELECT value FROM cursors WHERE device_id = ?1 AND name = ?2",
                params![id, name],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub(crate) fn set_device_info(&mut self, device: &DeviceKey, info: &DeviceInfo) -> Result<()> {
        self.device_id(device)?;
        let plain = Db::json(info)?;
        let now = self.clock.now().floor_minute().as_millis();
        self.write(|db| {
            // The AAD binds the device's uuid and this table: it cannot be pasted onto another device.
            let (key_id, sealed) = db.seal("device_info", "sealed", &device.0, &plain)?;
            db.conn.execute(
                "INSERT INTO device_info(uuid, key_id, sealed, updated_min) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(uuid) DO UPDATE SET key_id = excluded.key_id, sealed = excluded.sealed,
                 updated_min = excluded.updated_min",
                params![device.0, key_id, sealed, now],
            )?;
            Ok(())
        })
    }

    pub(crate) fn device_info(&mut self, device: &DeviceKey) -> Result<Option<DeviceInfo>> {
        self.refresh_keys()?;
        let row: Option<(i64, Vec<u8>)> = self
            .conn
            .query_row(
                "SELECT key_id, sealed FROM device_info WHERE uuid = ?1",
                [&device.0],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((key_id, sealed)) = row else {
            return Ok(None);
        };
        match self.open_value("device_info", "sealed", &device.0, key_id, &sealed) {
            Ok(p) => Ok(Some(Db::decode(&device.0, &p)?)),
            Err(e) => {
                self.flush_events();
                Err(e)
            }
        }
    }
}
