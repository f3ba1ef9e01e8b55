//! `vitals-hub export`: the patient's readings in a time range, decrypted, as FHIR or CSV — for the
//! day the network is gone for good and the data must be carried.
//!
//! A reading's time is its measurement time (the device's wall clock, at the hub's UTC offset),
//! falling back to when the hub received it. The FHIR output is a Bundle of type `collection` made
//! of the same resources the uplink sends ([`crate::fhir::build`]): each transaction Bundle's
//! entries without their `request`, with Device references pointing at the collection's own
//! Device entries. The store is opened read-only, so export runs beside the daemon.

use crate::config::Config;
use crate::fhir::{self, bundle::Item, BundleContext, EntryKind, ReadingInput};
use crate::model::UtcMillis;
use crate::store::{Store, StoreError, StoredReading};
use serde_json::{json, Value as Json};
use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Errors of an export.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A date argument could not be parsed.
    #[error("`{text}` is not a date: use YYYY-MM-DD or RFC 3339 such as 2026-03-01T08:00:00Z")]
    BadDate { text: String },
    /// The range is empty.
    #[error("--from must be before --to")]
    EmptyRange,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing the export: {0}")]
    Io(#[from] std::io::Error),
    #[error("the hub's identity for FHIR: {0}")]
    Hub(String),
}

/// The `--out` file. The export is written to a new 0600 file in the same directory and renamed
/// over `path` only by [`OutFile::commit`]: an existing file at `path` never lends the export its
/// mode or owner (decrypted readings never land world-readable), and a failed export leaves it as
/// it was (the temporary file is removed when an uncommitted `OutFile` is dropped).
#[derive(Debug)]
pub struct OutFile {
    tmp: BufWriter<tempfile::NamedTempFile>,
    path: PathBuf,
}

impl OutFile {
    pub fn create(path: &Path) -> std::io::Result<OutFile> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .permissions(std::fs::Permissions::from_mode(0o600))
            .tempfile_in(dir)?;
        // Exactly 0600 whatever the umask (it can only have narrowed it).
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))?;
        Ok(OutFile {
            tmp: BufWriter::new(tmp),
            path: path.to_path_buf(),
        })
    }

    /// Flush, sync, and rename the new file over `path` (then sync the directory).
    pub fn commit(self) -> std::io::Result<()> {
        let tmp = self.tmp.into_inner().map_err(|e| e.into_error())?;
        tmp.as_file().sync_all()?;
        tmp.persist(&self.path).map_err(|e| e.error)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

impl Write for OutFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tmp.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.tmp.flush()
    }
}

/// The output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Fhir,
    Csv,
}

/// Parse a `--from`/`--to` value: RFC 3339, or a date (midnight UTC; with `end_of_day`, the next
/// midnight, so `--to 2026-03-01` includes that whole day).
pub fn parse_date(text: &str, end_of_day: bool) -> Result<UtcMillis, ExportError> {
    let bad = || ExportError::BadDate {
        text: text.to_owned(),
    };
    if text.len() == 10 {
        let t = UtcMillis::parse_rfc3339(&format!("{text}T00:00:00Z")).map_err(|_| bad())?;
        return Ok(if end_of_day {
            UtcMillis(t.as_millis() + 86_400_000)
        } else {
            t
        });
    }
    UtcMillis::parse_rfc3339(text).map_err(|_| bad())
}

/// When a reading was measured: its device time at the hub's UTC offset, else its receive time.
pub fn measured_at(r: &StoredReading, utc_offset_minutes: i32) -> UtcMillis {
    match r.reading.device_time {
        Some(t) => UtcMillis(
            (t.to_epoch_seconds() - i64::from(utc_offset_minutes) * 60).saturating_mul(1000),
        ),
        None => r.received_at,
    }
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExportReport {
    pub readings: u64,
    /// Readings the FHIR mapping could not express (counted, listed nowhere: the CSV has them).
    pub unmapped: u64,
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// What to export: readings measured in `[from, to)`, at `now` (the Bundle's timestamp).
#[derive(Debug, Clone, Copy)]
pub struct Range {
    pub from: UtcMillis,
    pub to: UtcMillis,
    pub now: UtcMillis,
}

/// Write the readings of the range to `out`. `progress(done, total)` is called as readings are
/// scanned (`total` is every reading held).
pub async fn export(
    store: &Store,
    cfg: &Config,
    range: Range,
    format: Format,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ExportReport, ExportError> {
    let Range { from, to, now } = range;
    if from >= to {
        return Err(ExportError::EmptyRange);
    }
    let offset = cfg.hub.utc_offset_minutes;
    let total = store.stats().await?.readings;
    let mut devices = HashMap::new();
    let mut names = HashMap::new();
    for d in store.devices().await? {
        let info = store.device_info(&d.key).await?.unwrap_or_default();
        names.insert(
            d.key.0.clone(),
            d.record
                .name
                .clone()
                .unwrap_or_else(|| d.record.profile.clone()),
        );
        devices.insert(
            d.key.0.clone(),
            crate::uplink::sync::phd_device_info(&d, info, offset),
        );
    }
    let hub = crate::uplink::hub_info(&cfg.uplink).map_err(|e| ExportError::Hub(e.to_string()))?;
    let mut report = ExportReport::default();
    let mut scanned = 0u64;
    let mut after = 0i64;
    // FHIR state across pages: the collection's entries, and the fullUrls of hub and devices.
    let mut entries: Vec<Json> = Vec::new();
    let mut hub_ref: Option<String> = None;
    let mut refs: HashMap<String, String> = HashMap::new();
    // Coincident-time Observations already listed (identifier → fullUrl), and the fullUrls of the
    // copies left out (→ the listed one).
    let mut cts_seen: HashMap<String, String> = HashMap::new();
    let mut cts_alias: HashMap<String, String> = HashMap::new();
    if format == Format::Csv {
        writeln!(out, "time,kind,value,unit,device,flags,test_data")?;
    }
    loop {
        let page = store.readings(after, 500).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        scanned += page.len() as u64;
        let chosen: Vec<&StoredReading> = page
            .iter()
            .filter(|r| {
                let t = measured_at(r, offset);
                t >= from && t < to
            })
            .collect();
        report.readings += chosen.len() as u64;
        match format {
            Format::Csv => {
                for r in &chosen {
                    let value = match r.reading.value {
                        crate::model::Value::Number(d) => d.to_string(),
                        crate::model::Value::Special(s) => s.to_string(),
                    };
                    let flags: Vec<String> = r
                        .reading
                        .flags
                        .iter()
                        .map(|f| {
                            serde_json::to_value(f)
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_owned))
                                .unwrap_or_else(|| format!("{f:?}"))
                        })
                        .collect();
                    writeln!(
                        out,
                        "{},{},{},{},{},{},{}",
                        measured_at(r, offset).to_rfc3339(),
                        r.reading.kind.as_str(),
                        csv_field(&value),
                        csv_field(r.reading.unit.ucum()),
                        csv_field(names.get(&r.device.0).map_or(r.device.0.as_str(), |n| n)),
                        csv_field(&flags.join(";")),
                        r.test_data
                    )?;
                }
            }
            Format::Fhir => {
                let items: Vec<Item<'_>> = chosen
                    .iter()
                    .filter_map(|r| {
                        devices.get(&r.device.0).map(|d| {
                            Item::Reading(ReadingInput {
                                tag: r.id,
                                device: d,
                                reading: &r.reading,
                                received_at: r.received_at,
                                test_data: r.test_data,
                                interpretation: None,
                            })
                        })
                    })
                    .collect();
                report.unmapped += (chosen.len() - items.len()) as u64;
                let mut rest: &[Item<'_>] = &items;

                while !rest.is_empty() {
                    let ctx = BundleContext {
                        patient_id: &cfg.hub.patient_id,
                        hub: &hub,
                        hub_ref: hub_ref.as_deref(),
                        device_refs: &refs,
                        nonce: after.unsigned_abs(),
                        more_may_follow: false,
                    };
                    let built = fhir::build(&ctx, rest);
                    report.unmapped += built.unmapped.len() as u64;
                    let json_entries = built
                        .json
                        .get("entry")
                        .and_then(Json::as_array)
                        .cloned()
                        .unwrap_or_default();
                    for (info, mut e) in built.entries.iter().zip(json_entries) {
                        let url = e
                            .get("fullUrl")
                            .and_then(Json::as_str)
                            .map(str::to_owned)
                            .unwrap_or_default();
                        // Each bundle re-creates a device's coincident-time Observation: the
                        // collection lists it once, and later references point at that one.
                        if info.kind == EntryKind::CoincidentTime {
                            if let Some(first) = cts_seen.get(&info.identifier) {
                                cts_alias.insert(url, first.clone());
                                continue;
                            }
                            cts_seen.insert(info.identifier.clone(), url.clone());
                        }
                        if !cts_alias.is_empty() {
                            let mut text = e.to_string();
                            for (dup, first) in &cts_alias {
                                text = text.replace(&format!("\"{dup}\""), &format!("\"{first}\""));
                            }
                            e = serde_json::from_str(&text).unwrap_or(e);
                        }
                        match &info.kind {
                            EntryKind::HubDevice => hub_ref = Some(url),
                            EntryKind::Device(k) => {
                                refs.insert(k.clone(), url);
                            }
                            _ => {}
                        }
                        if let Some(m) = e.as_object_mut() {
                            m.remove("request");
                        }
                        entries.push(e);
                    }
                    if built.consumed == 0 {
                        break;
                    }
                    rest = rest.get(built.consumed..).unwrap_or_default();
                }
            }
        }
        progress(scanned, total);
    }
    if format == Format::Fhir {
        let bundle = json!({
            "resourceType": "Bundle",
            "type": "collection",
            "timestamp": now.to_rfc3339(),
            "entry": entries,
        });
        serde_json::to_writer_pretty(&mut *out, &bundle).map_err(std::io::Error::from)?;
        writeln!(out)?;
    }
    out.flush()?;
    Ok(report)
}
