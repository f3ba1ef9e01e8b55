//! The store benchmark behind `vitals-hub bench store`: encrypted store vs a plaintext rusqlite
//! baseline with the same schema, statements and durability settings (WAL, `synchronous=FULL`).
//! Figures, never assertions: tests do not time anything.

use crate::model::{Decimal, Kind, LocalDateTime, Reading, SystemClock, Unit, UtcMillis, Value};
use crate::store::crypto;
use crate::store::{DeviceRecord, NewReading, Result, Store, StoreConfig, StoreError};
use rusqlite::{params, Connection};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub readings: usize,
    pub single: usize,
    pub batch: usize,
    pub dir: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reading `i` of a CGM's record store, as a session stores it: one every 5 minutes of device time,
/// with its sequence number, under the stable key `session.rs::stable_key` builds (so the dedup
/// key's bucket sees what it sees on a hub: one device, 288 readings a device day).
fn sample(i: usize) -> NewReading {
    let mut reading = Reading::new(
        Kind::CgmGlucose,
        Value::Number(Decimal::new(90 + (i % 80) as i64, 0)),
        Unit::MgPerDl,
    );
    let seq = (i % 65_536) as u16;
    reading.sequence = Some(seq);
    let t = LocalDateTime::from_epoch_seconds(1_750_000_000 + i as i64 * 300).ok();
    reading.device_time = t;
    let t = t.map(|t| t.to_string()).unwrap_or_default();
    NewReading {
        stable_key: format!(
            "v1|C0:26:DA:00:00:01|patient-8867|{}|seq={seq}|t={t}",
            reading.kind
        ),
        reading,
        received_at: UtcMillis(1_750_000_000_000 + i as i64 * 1000),
        test_data: false,
        summary: None,
    }
}

fn proc_field(file: &str, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(file).ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn write_bytes() -> u64 {
    proc_field("/proc/self/io", "write_bytes:").unwrap_or(0)
}

fn files_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// SQLite's own accounting of where a run's writes go: the WAL is truncated (checkpointed) before
/// the run, then every frame the run appended is read back (its page number is the first four
/// bytes of its header) and attributed to the table or index owning that page (`dbstat`). Each
/// frame is one page written by a commit; the same pages reach the database file again at the next
/// checkpoint. Returns (btree name, frames) sorted by frames, and the total frames.
fn wal_accounting(
    db: &Path,
    run: &mut dyn FnMut() -> Result<()>,
) -> Result<(Vec<(String, u64)>, u64)> {
    let side = Connection::open(db)?;
    side.busy_timeout(std::time::Duration::from_secs(10))?;
    side.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    run()?;
    let mut wal_path = db.as_os_str().to_owned();
    wal_path.push("-wal");
    let wal = std::fs::read(&wal_path).map_err(io(db))?;
    let page_size = wal
        .get(8..12)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
        .unwrap_or(4096) as usize;
    let mut owners: std::collections::HashMap<i64, String> = std::collections::HashMap::new();
    {
        let mut st = side.prepare("SELECT pageno, name FROM dbstat")?;
        let it = st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
        for row in it {
            let (page, name) = row?;
            owners.insert(page, name);
        }
    }
    let mut counts: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    let mut total = 0u64;
    let mut at = 32usize;
    while let Some(head) = wal.get(at..at + 24) {
        let page = head
            .get(0..4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_be_bytes)
            .unwrap_or(0);
        let name = owners
            .get(&i64::from(page))
            .cloned()
            .unwrap_or_else(|| "(free list / header)".into());
        *counts.entry(name).or_default() += 1;
        total += 1;
        at += 24 + page_size;
    }
    let mut v: Vec<(String, u64)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok((v, total))
}

/// The plaintext baseline: the same tables and statements, the payload as plain JSON.
struct Plain {
    conn: Connection,
}

impl Plain {
    fn open(path: &Path) -> Result<Plain> {
        let mut conn = Connection::open(path)?;
        conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
        conn.execute_batch(
            "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA temp_store=MEMORY;
             PRAGMA secure_delete=FAST; PRAGMA journal_size_limit=67108864;",
        )?;
        crate::store::schema::migrate(&mut conn)?;
        conn.execute(
            "INSERT INTO keys(id, purpose, state, kek_id, wrapped, seals, created_at) VALUES (1, 'data', 'active', 'plain', x'', 0, 0)",
            [],
        )?;
        conn.execute(
            "INSERT INTO devices(id, uuid, address_hash, allowed, key_id, sealed, created_min, updated_min) VALUES (1, 'd', x'00', 1, 1, x'', 0, 0)",
            [],
        )?;
        Ok(Plain { conn })
    }

    fn append(&mut self, items: &[NewReading]) -> Result<()> {
        let tx = self.conn.transaction()?;
        for (n, item) in items.iter().enumerate() {
            let dedup = item.stable_key.as_bytes();
            let existing: Option<i64> = {
                let mut st = tx.prepare_cached("SELECT id FROM readings WHERE dedup = ?1")?;
                let mut rows = st.query([dedup])?;
                rows.next()?.map(|r| r.get(0)).transpose()?
            };
            if existing.is_some() {
                continue;
            }
            let payload = serde_json::to_vec(&(
                &item.reading,
                item.received_at,
                &item.stable_key,
                item.test_data,
            ))
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
            let coarse = item.received_at.floor_minute().as_millis();
            tx.prepare_cached(
                "INSERT INTO readings(uuid, device_id, dedup, received_min, key_id, sealed) VALUES (?1, 1, ?2, ?3, 1, ?4)",
            )?
            .execute(params![format!("{}-{n}", item.stable_key), dedup, coarse, payload])?;
            let id = tx.last_insert_rowid();
            tx.prepare_cached(
                "INSERT INTO outbox(item, item_id, priority, state, next_attempt, created_min) VALUES ('reading', ?1, 1, 'pending', ?2, ?3)",
            )?
            .execute(params![id, i64::MIN, coarse])?;
        }
        tx.commit()?;
        Ok(())
    }
}

/// Batches and single appends whose WAL frames are attributed to tables and indexes (few enough
/// that no automatic checkpoint runs in between: 1,000 frames).
const ACCOUNTED_BATCHES: usize = 5;
const ACCOUNTED_SINGLE: usize = 50;

/// Pages written to the WAL per reading, per table or index, encrypted beside plaintext.
fn print_accounting(
    out: &mut dyn Write,
    label: &str,
    readings: usize,
    enc: &(Vec<(String, u64)>, u64),
    plain: &(Vec<(String, u64)>, u64),
) -> Result<()> {
    let w = |out: &mut dyn Write, s: String| writeln!(out, "{s}").map_err(io(Path::new("stdout")));
    let n = readings.max(1) as f64;
    w(
        out,
        format!(
            "WAL pages written per reading, {label} (dbstat owner of each frame)   encrypted  plaintext"
        ),
    )?;
    let mut names: Vec<&str> = enc.0.iter().map(|(k, _)| k.as_str()).collect();
    for (k, _) in &plain.0 {
        if !names.contains(&k.as_str()) {
            names.push(k);
        }
    }
    let get = |v: &Vec<(String, u64)>, name: &str| {
        v.iter()
            .find(|(k, _)| k == name)
            .map(|(_, c)| *c)
            .unwrap_or(0)
    };
    for name in names {
        w(
            out,
            format!(
                "  {name:<40} {:>10.2} {:>10.2}",
                get(&enc.0, name) as f64 / n,
                get(&plain.0, name) as f64 / n
            ),
        )?;
    }
    w(
        out,
        format!(
            "  {:<40} {:>10.2} {:>10.2}   ratio {:.2}",
            "total",
            enc.1 as f64 / n,
            plain.1 as f64 / n,
            enc.1 as f64 / (plain.1 as f64).max(1e-9)
        ),
    )
}

fn rate(n: usize, took: Duration) -> f64 {
    n as f64 / took.as_secs_f64().max(1e-9)
}

/// How many alternating rounds each timed comparison is split into.
const ROUNDS: usize = 6;

/// The two sides' times, in total and round by round.
#[derive(Debug, Default)]
struct Sides {
    plain: Duration,
    enc: Duration,
    /// Per round, encrypted / plaintext appends/s (the same readings on both sides).
    rounds: Vec<f64>,
    this_round: (Duration, Duration),
}

impl Sides {
    fn add(&mut self, plain_turn: bool, took: Duration) {
        if plain_turn {
            self.plain += took;
            self.this_round.0 = took;
        } else {
            self.enc += took;
            self.this_round.1 = took;
        }
    }

    fn end_round(&mut self) {
        let (p, e) = std::mem::take(&mut self.this_round);
        self.rounds
            .push(p.as_secs_f64() / e.as_secs_f64().max(1e-9));
    }

    /// "median m, lo–hi" of the rounds' ratios: a burst of disk latency in one round moves the
    /// total's ratio but hardly the median.
    fn spread(&self) -> String {
        let mut r = self.rounds.clone();
        r.sort_by(f64::total_cmp);
        let (Some(lo), Some(hi)) = (r.first(), r.last()) else {
            return String::new();
        };
        let mid = r.len() / 2;
        let at = |i: usize| r.get(i).copied().unwrap_or(0.0);
        let median = if r.len().is_multiple_of(2) {
            (at(mid.saturating_sub(1)) + at(mid)) / 2.0
        } else {
            at(mid)
        };
        format!("rounds: median {median:.2}, {lo:.2}–{hi:.2}")
    }
}

/// Run every measurement and print the figures to `out`.
pub fn run(opts: &Options, out: &mut dyn Write) -> Result<()> {
    let root = opts.dir.join(format!(
        "vitals-bench-{}-{}",
        std::process::id(),
        SystemClock.now_millis()
    ));
    std::fs::create_dir_all(&root).map_err(io(&root))?;
    let result = run_in(opts, &root, out);
    let _ = std::fs::remove_dir_all(&root);
    result
}

trait NowMillis {
    fn now_millis(&self) -> i64;
}
impl NowMillis for SystemClock {
    fn now_millis(&self) -> i64 {
        crate::model::Clock::now(self).as_millis()
    }
}

fn run_in(opts: &Options, root: &Path, out: &mut dyn Write) -> Result<()> {
    let w = |out: &mut dyn Write, s: String| writeln!(out, "{s}").map_err(io(Path::new("stdout")));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io(root))?;
    let aes = std::fs::read_to_string("/proc/cpuinfo")
        .map(|c| {
            c.lines()
                .filter(|l| l.starts_with("flags") || l.starts_with("Features"))
                .any(|l| l.split_whitespace().any(|f| f == "aes"))
        })
        .unwrap_or(false);
    w(out, format!("vitals-hub bench store — dir {}, {} single + {} batched readings (batch {}), CPU AES instructions: {}",
        opts.dir.display(), opts.single, opts.readings, opts.batch, if aes { "yes" } else { "no" }))?;

    // Both stores open side by side, and every timed part alternates between them in ROUNDS
    // rounds (which one goes first alternating too), so a drift in the disk's speed during the
    // run (a shared virtual disk, writeback of other files) falls on both alike instead of on
    // whichever would have run second.
    let plain_dir = root.join("plain");
    std::fs::create_dir_all(&plain_dir).map_err(io(&plain_dir))?;
    let plain_db = plain_dir.join("plain.db");
    let mut plain = Plain::open(&plain_db)?;
    let enc_dir = root.join("enc");
    let mut cfg = StoreConfig::new(&enc_dir);
    cfg.kek = crate::store::KekSource::resolve(&enc_dir, None);
    cfg.size_limit = u64::MAX / 4;
    let enc_db = cfg.db_path();
    let store = rt.block_on(Store::open(cfg, Arc::new(SystemClock)))?;
    let dev = rt.block_on(store.upsert_device(
        DeviceRecord {
            address: "C0:26:DA:00:00:01".into(),
            profile: "heart_rate".into(),
            ..DeviceRecord::default()
        },
        true,
    ))?;
    let enc_append = |items: &[NewReading]| {
        rt.block_on(store.append(&dev, items.to_vec(), None))
            .map(|_| ())
    };

    let mut single_t = Sides::default();
    let singles: Vec<usize> = (0..opts.single).collect();
    for (round, part) in singles
        .chunks(opts.single.div_ceil(ROUNDS).max(1))
        .enumerate()
    {
        for plain_turn in [round % 2 == 0, round % 2 == 1] {
            let t = Instant::now();
            for &i in part {
                let item = [sample(i)];
                if plain_turn {
                    plain.append(&item)?;
                } else {
                    enc_append(&item)?;
                }
            }
            single_t.add(plain_turn, t.elapsed());
        }
        single_t.end_round();
    }
    let plain_single = rate(opts.single, single_t.plain);
    let enc_single = rate(opts.single, single_t.enc);

    let items: Vec<NewReading> = (0..opts.readings).map(|i| sample(1_000_000 + i)).collect();
    let mut batched_t = Sides::default();
    let (mut plain_written, mut enc_written) = (0u64, 0u64);
    let round_len = opts.readings.div_ceil(ROUNDS).div_ceil(opts.batch.max(1)) * opts.batch.max(1);
    for (round, part) in items.chunks(round_len.max(1)).enumerate() {
        for plain_turn in [round % 2 == 0, round % 2 == 1] {
            let wb = write_bytes();
            let t = Instant::now();
            for chunk in part.chunks(opts.batch.max(1)) {
                if plain_turn {
                    plain.append(chunk)?;
                } else {
                    enc_append(chunk)?;
                }
            }
            batched_t.add(plain_turn, t.elapsed());
            let written = write_bytes().saturating_sub(wb);
            if plain_turn {
                plain_written += written;
            } else {
                enc_written += written;
            }
        }
        batched_t.end_round();
    }
    let plain_batched = rate(opts.readings, batched_t.plain);
    let enc_batched = rate(opts.readings, batched_t.enc);

    let extra: Vec<NewReading> = (0..ACCOUNTED_BATCHES * opts.batch + ACCOUNTED_SINGLE)
        .map(|i| sample(2_000_000 + i))
        .collect();
    let (batched_part, single_part) = extra.split_at(ACCOUNTED_BATCHES * opts.batch);
    let plain_acc_batched = wal_accounting(&plain_db, &mut || {
        for chunk in batched_part.chunks(opts.batch) {
            plain.append(chunk)?;
        }
        Ok(())
    })?;
    let plain_acc_single = wal_accounting(&plain_db, &mut || {
        for item in single_part {
            plain.append(std::slice::from_ref(item))?;
        }
        Ok(())
    })?;
    let enc_acc_batched = wal_accounting(&enc_db, &mut || {
        for chunk in batched_part.chunks(opts.batch) {
            enc_append(chunk)?;
        }
        Ok(())
    })?;
    let enc_acc_single = wal_accounting(&enc_db, &mut || {
        for item in single_part {
            enc_append(std::slice::from_ref(item))?;
        }
        Ok(())
    })?;
    drop(plain);
    let plain_size = files_size(&plain_dir);
    rt.block_on(store.close());
    let enc_size = files_size(&enc_dir);
    let total = (opts.single + opts.readings).max(1) as f64;
    let per = |b: u64| b as f64 / opts.readings.max(1) as f64;

    w(
        out,
        "appends/s                  encrypted    plaintext    ratio".into(),
    )?;
    w(
        out,
        format!(
            "  1 reading per tx     {enc_single:>11.0}  {plain_single:>11.0}    {:.2}  (target >= 0.80; {})",
            enc_single / plain_single.max(1e-9),
            single_t.spread()
        ),
    )?;
    w(out, format!("  batches of {:<4}      {enc_batched:>11.0}  {plain_batched:>11.0}    {:.2}  (target >= 0.80; {})", opts.batch, enc_batched / plain_batched.max(1e-9), batched_t.spread()))?;
    w(
        out,
        "bytes per reading          encrypted    plaintext    ratio".into(),
    )?;
    w(
        out,
        format!(
            "  written (batched run) {:>10.0}  {:>11.0}    {:.2}  (target <= 1.20; /proc/self/io write_bytes)",
            per(enc_written),
            per(plain_written),
            enc_written as f64 / (plain_written as f64).max(1.0)
        ),
    )?;
    w(
        out,
        format!(
            "  on disk (db+wal)      {:>10.0}  {:>11.0}",
            enc_size as f64 / total,
            plain_size as f64 / total
        ),
    )?;
    let budget = |b: f64| (1u64 << 30) as f64 / b.max(1.0);
    let readings_per_gib = budget(enc_size as f64 / total);
    w(out, format!("capacity of 1 GiB: {:.0} readings = {:.1} days of a 1 Hz stream, {:.0} years of 50 spot readings/day",
        readings_per_gib, readings_per_gib / 86_400.0, readings_per_gib / 50.0 / 365.0))?;

    for (label, n, enc, plain) in [
        (
            format!("{ACCOUNTED_BATCHES} batches of {}", opts.batch),
            batched_part.len(),
            &enc_acc_batched,
            &plain_acc_batched,
        ),
        (
            format!("{ACCOUNTED_SINGLE} single appends"),
            single_part.len(),
            &enc_acc_single,
            &plain_acc_single,
        ),
    ] {
        print_accounting(out, &label, n, enc, plain)?;
    }
    let (aes_n, aes_mb) = crypto::seal_throughput(&ring::aead::AES_256_GCM, 256, 400);
    let (cha_n, cha_mb) = crypto::seal_throughput(&ring::aead::CHACHA20_POLY1305, 256, 400);
    w(out, "AEAD seal, 256-byte payload (ring)".into())?;
    w(
        out,
        format!("  AES-256-GCM          {aes_n:>11.0} seals/s {aes_mb:>8.1} MB/s"),
    )?;
    w(
        out,
        format!(
            "  ChaCha20-Poly1305    {cha_n:>11.0} seals/s {cha_mb:>8.1} MB/s   (used by the store)"
        ),
    )?;
    let hwm = proc_field("/proc/self/status", "VmHWM:").unwrap_or(0);
    w(out, format!("peak RSS (VmHWM): {hwm} kB"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn rounds_spread_is_the_median_and_range_of_the_ratios() {
        let mut s = Sides::default();
        for (p, e) in [(10u64, 20u64), (10, 10), (30, 10), (10, 40)] {
            s.add(true, Duration::from_millis(p));
            s.add(false, Duration::from_millis(e));
            s.end_round();
        }
        // Ratios 0.5, 1, 3, 0.25 → sorted 0.25, 0.5, 1, 3: median 0.75.
        assert_eq!(s.spread(), "rounds: median 0.75, 0.25–3.00");
        assert_eq!(s.plain, Duration::from_millis(60));
        assert_eq!(s.enc, Duration::from_millis(80));
        assert_eq!(Sides::default().spread(), "");
    }

    /// The whole bench, small: every figure of the table is printed.
    #[test]
    fn a_small_run_prints_every_figure() {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options {
            readings: 300,
            single: 12,
            batch: 10,
            dir: dir.path().to_path_buf(),
        };
        let mut out = Vec::new();
        run(&opts, &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        for want in [
            "1 reading per tx",
            "batches of 10 ",
            "rounds: median",
            "written (batched run)",
            "WAL pages written per reading",
            "ChaCha20-Poly1305",
        ] {
            assert!(out.contains(want), "{want:?} missing from:\n{out}");
        }
        // The bench cleans up after itself.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
