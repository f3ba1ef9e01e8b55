//! `vitals-hub bench uplink`: drain a backlog to a local receiver (a `vitals-hub receiver` child
//! process, so the RSS figures are the hub's own) over mutual TLS, and compare with a bare client
//! POSTing the same bundles.

use crate::clinic::pki::write_default_dev_pki;
use crate::fhir::{self, bundle::Item, BundleContext, HubInfo, ReadingInput};
use crate::model::{Decimal, Kind, LocalDateTime, Reading, SystemClock, Unit, UtcMillis, Value};
use crate::store::{DeviceRecord, KekSource, NewReading, Store, StoreConfig};
use crate::uplink::{sync::Step, FixedTimeSync, Uplink, UplinkConfig};
use anyhow::{bail, Context};
use clap::Args;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct UplinkBenchArgs {
    /// Readings in the backlog.
    #[arg(long, default_value_t = 100_000)]
    pub readings: usize,
    /// Outbox items per bundle.
    #[arg(long, default_value_t = 40)]
    pub batch: usize,
    /// Directory for the temporary store, PKI and receiver databases (default: the temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

pub fn run(args: &UplinkBenchArgs) -> ExitCode {
    match run_inner(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn proc_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_receiver(pki: &Path, db: &Path) -> anyhow::Result<(ChildGuard, String)> {
    // The bench's hub is enrolled for its patient (the clinic refuses unknown certificates), and
    // its rate limit is lifted: this measures the uplink, not the clinic's throttle.
    if !db.exists() {
        crate::clinic::cli::enroll_file(db, &pki.join("hub.crt"), "bench-patient", None)
            .context("enrolling the bench's hub")?;
    }
    let exe = std::env::current_exe().context("locating the vitals-hub binary")?;
    let mut child = Command::new(exe)
        .args([
            "receiver",
            "--rate-per-hub",
            "100000",
            "--listen",
            "127.0.0.1:0",
            "--cert",
        ])
        .arg(pki.join("receiver.crt"))
        .arg("--key")
        .arg(pki.join("receiver.key"))
        .arg("--client-ca")
        .arg(pki.join("ca.crt"))
        .arg("--db")
        .arg(db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting `vitals-hub receiver`")?;
    let out = child.stdout.take().context("receiver stdout")?;
    let guard = ChildGuard(child);
    let mut line = String::new();
    BufReader::new(out)
        .read_line(&mut line)
        .context("reading the receiver's address")?;
    let addr = line
        .trim()
        .strip_prefix("listening https://")
        .context("unexpected receiver output")?
        .to_owned();
    let port = addr.rsplit(':').next().unwrap_or("0").to_owned();
    Ok((guard, format!("https://localhost:{port}/fhir")))
}

fn hub() -> HubInfo {
    HubInfo {
        mac: crate::fhir::Eui48([0xDC, 0xA6, 0x32, 0x12, 0x34, 0x56]),
        manufacturer: "vitals-hub bench".into(),
        model: "vitals-hub".into(),
        software_version: env!("CARGO_PKG_VERSION").into(),
        ntp: true,
        utc_offset_minutes: 0,
        zone: None,
    }
}

fn reading(i: usize) -> anyhow::Result<NewReading> {
    let base = LocalDateTime::new(2025, 1, 1, 0, 0, 0)?;
    let mut r = Reading::new(
        Kind::Glucose,
        Value::Number(Decimal::new(80 + (i % 90) as i64, 0)),
        Unit::MgPerDl,
    );
    r.device_time = Some(base.add_minutes(i as i64)?);
    Ok(NewReading {
        reading: r,
        received_at: UtcMillis(1_735_689_600_000 + i as i64 * 60_000),
        stable_key: format!("bench-{i}"),
        test_data: true,
        summary: None,
    })
}

const ADDRESS: &str = "00:60:19:4B:2C:1D";

fn run_inner(args: &UplinkBenchArgs) -> anyhow::Result<()> {
    if args.readings == 0 || !(1..=50).contains(&args.batch) {
        bail!("--readings must be > 0 and --batch 1..=50");
    }
    let tmp = tempfile_dir(args.dir.as_deref())?;
    let pki = tmp.join("pki");
    write_default_dev_pki(&pki, "hub-bench").context("minting the bench PKI")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut out = std::io::stdout();
    writeln!(out, "vitals-hub bench uplink: {} readings, {} per bundle, gzip, TLS 1.3 mTLS to a local `vitals-hub receiver` process", args.readings, args.batch)?;
    rt.block_on(async {
        // --- the hub: a store with the backlog, drained by the uplink
        let mut sc = StoreConfig::new(tmp.join("store"));
        sc.kek = KekSource::resolve(&tmp.join("store"), None);
        sc.patient_id = Some("bench-patient".into());
        let store = Store::open(sc, Arc::new(SystemClock)).await?;
        let dev = store
            .upsert_device(
                DeviceRecord {
                    address: ADDRESS.into(),
                    name: Some("GM-100".into()),
                    profile: "glucose".into(),
                    ..DeviceRecord::default()
                },
                true,
            )
            .await?;
        let t = Instant::now();
        let mut i = 0;
        while i < args.readings {
            let n = (args.readings - i).min(1_000);
            let items = (i..i + n).map(reading).collect::<anyhow::Result<Vec<_>>>()?;
            store.append(&dev, items, None).await?;
            i += n;
        }
        writeln!(out, "backlog appended in {:.1} s; RSS before upload {} kB", t.elapsed().as_secs_f64(), proc_kb("VmRSS:"))?;

        let (_rx1, url1) = spawn_receiver(&pki, &tmp.join("rx-uplink.db"))?;
        let mut cfg = UplinkConfig::new(&url1, &pki.join("ca.crt"), "bench-patient");
        cfg.client_cert = Some(pki.join("hub.crt"));
        cfg.client_key = Some(pki.join("hub.key"));
        cfg.batch_size = args.batch;
        let mut up = Uplink::new(cfg, store.clone(), Arc::new(SystemClock), Arc::new(FixedTimeSync(true)), hub())?;
        let t = Instant::now();
        let mut acked = 0usize;
        let mut at_10k = None;
        loop {
            match up.step().await {
                Ok(Step::Delivered { acked: a, .. }) => {
                    acked += a;
                    if at_10k.is_none() && acked >= 10_000.min(args.readings) {
                        at_10k = Some((acked, t.elapsed(), proc_kb("VmHWM:"), proc_kb("VmRSS:")));
                    }
                }
                Ok(Step::Idle) => break,
                Err(e) if e.is_transient() => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => return Err(anyhow::Error::new(e).context("uplink failed")),
            }
        }
        let el = t.elapsed();
        let hub_rate = acked as f64 / el.as_secs_f64();
        let st = up.status();
        let hwm_end = proc_kb("VmHWM:");
        writeln!(out, "\n== uplink (store → fhir → gzip → mTLS POST → parse → ack)")?;
        writeln!(out, "readings acked:          {acked}")?;
        writeln!(out, "time:                    {:.2} s", el.as_secs_f64())?;
        writeln!(out, "readings/s:              {:.0}", acked as f64 / el.as_secs_f64())?;
        writeln!(out, "bundles:                 {}", st.bundles)?;
        writeln!(out, "bytes on the wire/reading (gzip request + response bodies): {:.1}", st.wire_bytes as f64 / acked.max(1) as f64)?;
        if let Some((n, e, hwm, rss)) = at_10k {
            writeln!(out, "peak RSS at {n} readings: {hwm} kB (VmRSS {rss} kB, after {:.2} s)", e.as_secs_f64())?;
        }
        writeln!(out, "peak RSS at {acked} readings: {hwm_end} kB (VmRSS {} kB)", proc_kb("VmRSS:"))?;
        drop(up);
        store.close().await;

        // --- baseline: the same bundles from a bare client (no store, no ack, no parse)
        let (_rx2, url2) = spawn_receiver(&pki, &tmp.join("rx-baseline.db"))?;
        let resolver = Arc::new(crate::uplink::tls::ReloadingCert::new(
            crate::uplink::tls::CertPaths { cert: pki.join("hub.crt"), key: pki.join("hub.key") },
            Arc::new(rustls::crypto::ring::default_provider()),
        )?);
        let tls = crate::uplink::tls::client_config(&pki.join("ca.crt"), resolver)?;
        let client = reqwest::Client::builder().tls_backend_preconfigured(tls).build()?;
        let h = hub();
        let device = fhir::PhdDeviceInfo {
            key: dev.0.clone(),
            system_id: None,
            bt_mac: ADDRESS.parse().ok(),
            manufacturer: None,
            model: Some("GM-100".into()),
            serial: None,
            firmware: None,
            hardware: None,
            software: None,
            class: fhir::DeviceClass::Glucose,
            clock: fhir::DeviceClock::Synchronized { utc_offset_minutes: 0 },
        };
        let mut refs = HashMap::new();
        let mut hub_ref: Option<String> = None;
        let (mut sent, mut bytes) = (0usize, 0u64);
        let t = Instant::now();
        let mut i = 0;
        while i < args.readings {
            let n = (args.readings - i).min(args.batch);
            let rs = (i..i + n).map(reading).collect::<anyhow::Result<Vec<_>>>()?;
            let items: Vec<Item<'_>> = rs
                .iter()
                .enumerate()
                .map(|(k, r)| Item::Reading(ReadingInput { tag: (i + k) as i64, device: &device, reading: &r.reading, received_at: r.received_at, test_data: true, interpretation: None }))
                .collect();
            let ctx = BundleContext { patient_id: "bench-patient", hub: &h, hub_ref: hub_ref.as_deref(), device_refs: &refs, nonce: i as u64, more_may_follow: false };
            let b = fhir::build(&ctx, &items);
            let raw = serde_json::to_vec(&b.json)?;
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(&raw)?;
            let body = enc.finish()?;
            bytes += body.len() as u64;
            let resp = client
                .post(&url2)
                .header("content-type", "application/fhir+json")
                .header("content-encoding", "gzip")
                .body(body)
                .send()
                .await?;
            let status = resp.status();
            let rb = resp.bytes().await?;
            bytes += rb.len() as u64;
            if !status.is_success() {
                bail!("baseline POST answered {status}");
            }
            if hub_ref.is_none() {
                // The same later-upload shape as the uplink: devices by logical id.
                hub_ref = Some("Device/1".into());
                refs.insert(dev.0.clone(), "Device/2".into());
            }
            sent += n;
            i += n;
        }
        let el = t.elapsed();
        writeln!(out, "\n== baseline (bare reqwest client POSTing the same bundles, same TLS)")?;
        writeln!(out, "readings:                {sent}")?;
        writeln!(out, "time:                    {:.2} s", el.as_secs_f64())?;
        writeln!(out, "readings/s:              {:.0}", sent as f64 / el.as_secs_f64())?;
        writeln!(out, "bytes on the wire/reading (gzip request + response bodies): {:.1}", bytes as f64 / sent.max(1) as f64)?;
        writeln!(out, "(HTTP headers and TLS record overhead are not counted; the receiver runs in its own process.)")?;
        // Issue 20's figure: the hub's drain rate over the bare client's (1.0 = no cost of its own).
        writeln!(out, "\n== hub / bare client:      {:.2}", hub_rate / (sent as f64 / el.as_secs_f64()))?;
        anyhow::Ok(())
    })?;
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

fn tempfile_dir(base: Option<&Path>) -> anyhow::Result<PathBuf> {
    let base = base
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    let d = base.join(format!("vitals-hub-bench-uplink-{}", std::process::id()));
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    Ok(d)
}
