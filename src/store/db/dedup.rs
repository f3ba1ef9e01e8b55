//! Dedup keys of readings and held readings (schema v9, issue 20): `bucket ‖ hash`, a prefix
//! with locality followed by the keyed hash of the whole stable key.
//!
//! Before v9 the key was the hash alone, 16 pseudo-random bytes, so every insert into the
//! `dedup` UNIQUE index landed on a random leaf page: a batch of 100 readings dirtied ~100 index
//! pages, each a WAL frame and later a checkpoint write (2× the bytes a plaintext store writes per
//! reading). Now a 6-byte bucket comes first, three keyed hashes of 2 bytes each of what the
//! stable key names: the device, the device's month and the device's day (of its own clock; a key
//! without a device time uses the receive time it carries, a key with neither the device alone).
//! A device's readings are adjacent in the index, a month's within them, a day's within that: a
//! batch from one device's day touches one or two leaf pages, a meter's download of a few months
//! a handful.
//!
//! What the bucket reveals to someone holding the file without the keys: which rows share a
//! device, a device month and a device day — equality classes only, in keyed pseudo-random
//! order. No date, no time, no sequence number, no order between days (the rows' `device_id` and
//! `received_min` columns already say more). Exact deduplication does not depend on it: the
//! bucket is a function of the stable key alone (a duplicate re-sent on any later day has the
//! same key, so the same bucket and the same hash), and the parsing below only decides locality —
//! a key it does not understand lands in one fixed bucket and is still deduplicated exactly.
//!
//! Uniqueness rests on the hash: HMAC-SHA256 truncated to 128 bits ([`IndexKey::hash`], the same
//! value that was the whole key before v9). Two different stable keys collide with probability
//! about n²/2¹²⁹ among n readings — below 10⁻²⁰ for a billion, far more than a hub stores in its
//! life — and a collision must also share the bucket. Two-byte bucket parts collide often across
//! devices or days (1 in 65,536 per pair); that only merges two classes' pages, never two
//! readings.
//!
//! Rows written before v9 keep their 16-byte keys (stable keys are not stored in plaintext, so
//! they cannot be recomputed). While the store may hold such rows (`meta.dedup_legacy`, set by
//! the v9 migration when `readings` or `held` had rows), a lookup also tries the old form — the
//! hash alone, the new key's last 16 bytes — a read, no write; new rows are inserted under the
//! new key only. The lengths differ (16 against 22 bytes), so an old and a new key never meet.

use super::Db;
use crate::model::LocalDateTime;
use crate::store::crypto::IndexKey;
use crate::store::Result;
use rusqlite::OptionalExtension;
use std::borrow::Cow;

/// Bytes of each bucket part (device, month, day).
const PART: usize = 2;

/// A stable key's dedup key, and the form a row written before v9 has for it.
pub(super) struct DedupKey {
    key: Vec<u8>,
}

impl DedupKey {
    /// `domain` separates what is deduplicated (`reading`, `held`): the hash and the bucket of
    /// one stable key differ between domains.
    #[cfg(test)]
    pub(super) fn new(index: &IndexKey, domain: &str, stable_key: &str) -> DedupKey {
        DedupKey::with_cache(index, domain, stable_key, &mut None)
    }

    /// As `new`, reusing the bucket of the previous key when it names the same classes (the
    /// readings of one batch mostly share device and day: one HMAC a reading instead of four).
    /// The cache belongs to the index key it was filled with (it lives in the key ring).
    pub(super) fn with_cache(
        index: &IndexKey,
        domain: &str,
        stable_key: &str,
        cache: &mut Option<BucketCache>,
    ) -> DedupKey {
        let hash = index.hash(domain, stable_key.as_bytes());
        let (device, date) = parse(stable_key);
        let bucket = match cache {
            Some(c) if c.domain == domain && c.device.as_deref() == device && c.date == *date => {
                c.bucket
            }
            _ => {
                let (class, month, day) = classes_of(device, &date);
                let label = format!("{domain}/bucket");
                let mut bucket = [0u8; 3 * PART];
                let parts = [
                    class.clone(),
                    format!("{class}|{month}"),
                    format!("{class}|{month}|{day}"),
                ];
                for (out, class) in bucket.chunks_mut(PART).zip(parts) {
                    let h = index.hash(&label, class.as_bytes());
                    for (o, b) in out.iter_mut().zip(h) {
                        *o = b;
                    }
                }
                *cache = Some(BucketCache {
                    domain: domain.to_owned(),
                    device: device.map(str::to_owned),
                    date: date.into_owned(),
                    bucket,
                });
                bucket
            }
        };
        let mut key = Vec::with_capacity(3 * PART + hash.len());
        key.extend_from_slice(&bucket);
        key.extend(hash);
        DedupKey { key }
    }

    /// The key new rows are stored under.
    pub(super) fn key(&self) -> &[u8] {
        &self.key
    }

    /// The key a row written before v9 has for the same stable key.
    pub(super) fn legacy(&self) -> &[u8] {
        self.key.get(3 * PART..).unwrap_or_default()
    }
}

/// The last bucket computed, by the domain and the parts of the stable key it was computed from
/// (compared without allocating: a batch from one device day computes its bucket once). They
/// name a device address, a patient id and a date: its `Debug` shows none of them.
pub(super) struct BucketCache {
    domain: String,
    device: Option<String>,
    date: String,
    bucket: [u8; 3 * PART],
}

impl std::fmt::Debug for BucketCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BucketCache").finish_non_exhaustive()
    }
}

/// The device part of a stable key (`address|patient`, a slice of it), `None` for a format this
/// build does not know. Stable keys are built by `ble::session::stable_key` as
/// `v1|address|patient|kind[|seq=…][|user=…]|t=<device time>` or `…|<when>` where `<when>` is
/// `rx=<receive ms>` or `summary=<window start ms>+<window ms>`. The kind is left out so that
/// the readings of one measurement (systolic, diastolic, pulse …) share a bucket.
fn device_of(stable_key: &str) -> Option<&str> {
    let rest = stable_key.strip_prefix("v1|")?;
    let address_end = rest.find('|')?;
    let after = rest.get(address_end + 1..)?;
    let patient_end = after.find('|').unwrap_or(after.len());
    rest.get(..address_end + 1 + patient_end)
}

/// The device part and the date a stable key names (empty when it names none).
fn parse(stable_key: &str) -> (Option<&str>, Cow<'_, str>) {
    let Some(device) = device_of(stable_key) else {
        return (None, Cow::Borrowed(""));
    };
    let date = stable_key
        .get(3 + device.len()..)
        .unwrap_or_default()
        .split('|')
        .skip(2)
        .filter_map(date_of)
        .last()
        .unwrap_or(Cow::Borrowed(""));
    (Some(device), date)
}

/// The classes a bucket is built from: (device, month, day). A key of a format this build does
/// not know has fixed classes.
fn classes_of(device: Option<&str>, date: &str) -> (String, String, String) {
    let Some(device) = device else {
        return ("?".into(), String::new(), String::new());
    };
    let month = date.get(..7).unwrap_or(date);
    (device.to_owned(), month.to_owned(), date.to_owned())
}

#[cfg(test)]
fn classes(stable_key: &str) -> (String, String, String) {
    let (device, date) = parse(stable_key);
    classes_of(device, &date)
}

/// The date (`YYYY-MM-DD`, or what the device wrote before its `T`) a stable-key field names.
fn date_of(field: &str) -> Option<Cow<'_, str>> {
    if let Some(t) = field.strip_prefix("t=") {
        return Some(Cow::Borrowed(t.split('T').next().unwrap_or(t)));
    }
    let millis = field
        .strip_prefix("rx=")
        .or_else(|| field.strip_prefix("summary="))?;
    let digits: String = millis
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '-')
        .collect();
    let ms: i64 = digits.parse().ok()?;
    let t = LocalDateTime::from_epoch_seconds(ms.div_euclid(1000)).ok()?;
    let s = t.to_string();
    Some(Cow::Owned(s.split('T').next().unwrap_or(&s).to_owned()))
}

impl Db {
    /// Whether rows written before v9 (16-byte dedup keys) may be in `readings` or `held`.
    fn dedup_legacy(&mut self) -> Result<bool> {
        if let Some(v) = self.dedup_legacy {
            return Ok(v);
        }
        let v = self
            .conn
            .query_row("SELECT 1 FROM meta WHERE name = 'dedup_legacy'", [], |_| {
                Ok(())
            })
            .optional()?
            .is_some();
        self.dedup_legacy = Some(v);
        Ok(v)
    }

    /// The dedup key of `stable_key` in `domain` (`reading` or `held`).
    pub(super) fn dedup_key(&mut self, domain: &str, stable_key: &str) -> Result<DedupKey> {
        let mut cache = self.keys.bucket_cache.take();
        let key = DedupKey::with_cache(self.index()?, domain, stable_key, &mut cache);
        self.keys.bucket_cache = cache;
        Ok(key)
    }

    /// The id of the row of `table` (`readings` or `held`) stored under `key` or, in a store
    /// that may hold rows from before v9, under its old form.
    pub(super) fn find_dedup(
        &mut self,
        table: &'static str,
        key: &DedupKey,
    ) -> Result<Option<i64>> {
        let sql = match table {
            "held" => "SELECT id FROM held WHERE dedup = ?1",
            _ => "SELECT id FROM readings WHERE dedup = ?1",
        };
        let found = self
            .conn
            .prepare_cached(sql)?
            .query_row([key.key()], |r| r.get(0))
            .optional()?;
        if found.is_some() || !self.dedup_legacy()? {
            return Ok(found);
        }
        Ok(self
            .conn
            .prepare_cached(sql)?
            .query_row([key.legacy()], |r| r.get(0))
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> IndexKey {
        IndexKey::new(&[7u8; 32])
    }

    #[test]
    fn classes_follow_device_month_and_day() {
        let k = "v1|C0:26:DA:00:00:01|p-1|glucose|seq=7|t=2026-03-04T05:06:07";
        assert_eq!(
            classes(k),
            (
                "C0:26:DA:00:00:01|p-1".into(),
                "2026-03".into(),
                "2026-03-04".into()
            )
        );
        // The kind, sequence and user do not matter; the device time's date does.
        let k2 = "v1|C0:26:DA:00:00:01|p-1|systolic|user=2|t=2026-03-04T23:59:59";
        assert_eq!(classes(k2), classes(k));
        // Without a device time: the receive time or a summary window's start, in UTC.
        let rx = "v1|A|p|heart_rate|rx=1772600767000";
        assert_eq!(classes(rx).2, "2026-03-04");
        let sum = "v1|A|p|heart_rate|summary=1772600767000+60000";
        assert_eq!(classes(sum).2, "2026-03-04");
        // With neither, or a format this build does not know: what it has, never a panic.
        assert_eq!(
            classes("v1|A|p|weight|later"),
            ("A|p".into(), String::new(), String::new())
        );
        for odd in [
            "",
            "key-100",
            "v1",
            "v1|A",
            "v1|A|p|k|rx=",
            "v1|A|p|k|rx=-99999999999999999",
            "v1|A|p|k|t=",
        ] {
            let _ = classes(odd);
            let _ = DedupKey::new(&index(), "reading", odd);
        }
    }

    #[test]
    fn key_is_bucket_then_the_old_hash() {
        let ix = index();
        let k = "v1|C0:26:DA:00:00:01|p-1|glucose|seq=7|t=2026-03-04T05:06:07";
        let d = DedupKey::new(&ix, "reading", k);
        assert_eq!(d.key().len(), 22);
        assert_eq!(d.legacy(), ix.hash("reading", k.as_bytes()).as_slice());
        assert_eq!(&d.key()[6..], d.legacy());
        // The same day of the same device: same bucket, different hash.
        let k2 = "v1|C0:26:DA:00:00:01|p-1|glucose|seq=8|t=2026-03-04T05:11:07";
        let d2 = DedupKey::new(&ix, "reading", k2);
        assert_eq!(d.key()[..6], d2.key()[..6]);
        assert_ne!(d.key(), d2.key());
        // Another day of that month: same device and month parts.
        let k3 = "v1|C0:26:DA:00:00:01|p-1|glucose|seq=9|t=2026-03-05T05:11:07";
        let d3 = DedupKey::new(&ix, "reading", k3);
        assert_eq!(d.key()[..4], d3.key()[..4]);
        assert_ne!(d.key()[..6], d3.key()[..6]);
        // Another device: another device part (keyed, so no address is readable in it).
        let k4 = "v1|C0:26:DA:00:00:02|p-1|glucose|seq=7|t=2026-03-04T05:06:07";
        assert_ne!(d.key()[..2], DedupKey::new(&ix, "reading", k4).key()[..2]);
        // Domains and keys apart.
        assert_ne!(d.key(), DedupKey::new(&ix, "held", k).key());
        assert_ne!(
            d.key(),
            DedupKey::new(&IndexKey::new(&[8u8; 32]), "reading", k).key()
        );
        // A function of the stable key alone, whatever the cache held.
        assert_eq!(d.key(), DedupKey::new(&ix, "reading", k).key());
        let mut cache = None;
        for other in [k4, k, k3, k, k2, k, "other", k] {
            let from_cache = DedupKey::with_cache(&ix, "reading", other, &mut cache);
            assert_eq!(from_cache.key(), DedupKey::new(&ix, "reading", other).key());
            let held = DedupKey::with_cache(&ix, "held", other, &mut cache);
            assert_eq!(held.key(), DedupKey::new(&ix, "held", other).key());
        }
    }
}
