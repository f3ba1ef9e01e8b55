//! `vitals-hub bench uplink`: drain a backlog to a local receiver (a `vitals-hub receiver` child
//! process, so the RSS figures are the hub's own) over mutual TLS, and compare with a bare client
//! POSTing the same bundles.

use crate::clinic::pki::write_default_dev_pki;
use crate::fhir::{self, bundle::Item, BundleContext, HubInfo, ReadingInput};
use crate::model::{
    Clock, Decimal, Kind, LocalDateTime, Reading, SystemClock, Unit, UtcMillis, Value,
};
use crate::store::{DeviceRecord, KekSource, NewReading, Store, StoreConfig};
use crate::uplink::{sync::Phases, sync::Step, FixedTimeSync, Uplink, UplinkConfig};
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
    /// Bundle sizes to compare, e.g. `10,20,40,50`: the backlog is drained at each (hub and bare
    /// client), then a table of the rates. Default: `--batch` only.
    #[arg(long)]
    pub sweep: Option<String>,
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

/// One side's drain: the hub's uplink or the bare client.
struct Side {
    readings: usize,
    time: Duration,
    bundles: u64,
    wire_bytes: u64,
    handshakes: u64,
    /// CPU seconds of this process (hub or bare client) and of its receiver.
    cpu: f64,
    receiver_cpu: f64,
    phases: Phases,
}

impl Side {
    fn rate(&self) -> f64 {
        self.readings as f64 / self.time.as_secs_f64().max(1e-9)
    }

    fn print(&self, out: &mut impl Write, hub: bool) -> std::io::Result<()> {
        let n = self.readings.max(1) as f64;
        writeln!(out, "readings:                {}", self.readings)?;
        writeln!(
            out,
            "time:                    {:.2} s",
            self.time.as_secs_f64()
        )?;
        writeln!(out, "readings/s:              {:.0}", self.rate())?;
        writeln!(
            out,
            "bundles:                 {} ({:.1} readings each)",
            self.bundles,
            n / self.bundles.max(1) as f64
        )?;
        writeln!(
            out,
            "TLS handshakes:          {} (connections opened; resumption is off)",
            self.handshakes
        )?;
        writeln!(
            out,
            "bytes on the wire/reading (gzip request + response bodies): {:.1}",
            self.wire_bytes as f64 / n
        )?;
        writeln!(
            out,
            "CPU per 1,000 readings:  {:.1} ms in this process, {:.1} ms in the receiver",
            self.cpu * 1e6 / n,
            self.receiver_cpu * 1e6 / n
        )?;
        let p = &self.phases;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let per = |d: Duration| d.as_secs_f64() * 1e6 / self.bundles.max(1) as f64;
        // The read ahead runs while the bundle is on the wire: not part of the serial sum.
        let serial = p.checks + p.read + p.build + p.encode + p.wire + p.parse + p.ack + p.after;
        let other = self.time.saturating_sub(serial);
        let mut line = |name: &str, d: Duration| {
            writeln!(
                out,
                "  {name:<34} {:>9.1} ms  {:>7.0} µs/bundle  {:>5.1} %",
                ms(d),
                per(d),
                100.0 * d.as_secs_f64() / self.time.as_secs_f64().max(1e-9)
            )
        };
        line("per-step checks (cert, renewal)", p.checks)?;
        if hub {
            line("store read (not read ahead)", p.read)?;
        }
        line("FHIR build", p.build)?;
        line("serialise + gzip (fast)", p.encode)?;
        line("POST on the wire (receiver's work)", p.wire)?;
        if hub {
            line("parse the transaction-response", p.parse)?;
            line("ack commit (fsync) not overlapped", p.ack)?;
            line("after the step (last-sync, …)", p.after)?;
        }
        line("other (scheduling, loop)", other)?;
        if hub {
            line("store read ahead (overlaps the wire)", p.read_ahead)?;
            line("last ack's commit (overlaps the wire)", p.ack_overlapped)?;
        }
        Ok(())
    }
}

fn receiver_cpu(rx: &ChildGuard) -> f64 {
    super::daemon::cpu_ticks(rx.0.id()).unwrap_or(0) as f64
        / super::daemon::clock_ticks_per_second() as f64
}

fn own_cpu() -> f64 {
    super::daemon::cpu_ticks(std::process::id()).unwrap_or(0) as f64
        / super::daemon::clock_ticks_per_second() as f64
}

/// Drain every pending entry of `store` through the uplink at `batch` per bundle, to a fresh
/// receiver. With `rss`, prints the peak RSS at 10,000 readings and at the end.
async fn hub_side(
    store: &Store,
    pki: &Path,
    rx_db: &Path,
    batch: usize,
    out: &mut impl Write,
    rss: bool,
) -> anyhow::Result<Side> {
    let (rx, url) = spawn_receiver(pki, rx_db)?;
    let mut cfg = UplinkConfig::new(&url, &pki.join("ca.crt"), "bench-patient");
    cfg.client_cert = Some(pki.join("hub.crt"));
    cfg.client_key = Some(pki.join("hub.key"));
    cfg.batch_size = batch;
    let mut up = Uplink::new(
        cfg,
        store.clone(),
        Arc::new(SystemClock),
        Arc::new(FixedTimeSync(true)),
        hub(),
    )?;
    let cpu0 = own_cpu();
    let t = Instant::now();
    let mut acked = 0usize;
    let mut at_10k = None;
    loop {
        match up.step().await {
            Ok(Step::Delivered { acked: a, .. }) => {
                acked += a;
                if at_10k.is_none() && acked >= 10_000 {
                    at_10k = Some((acked, t.elapsed(), proc_kb("VmHWM:"), proc_kb("VmRSS:")));
                }
            }
            Ok(Step::Idle) => break,
            Err(e) if e.is_transient() => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => return Err(anyhow::Error::new(e).context("uplink failed")),
        }
    }
    let time = t.elapsed();
    let cpu = own_cpu() - cpu0;
    let st = up.status();
    if rss {
        if let Some((n, e, hwm, rss)) = at_10k {
            writeln!(
                out,
                "peak RSS at {n} readings: {hwm} kB (VmRSS {rss} kB, after {:.2} s)",
                e.as_secs_f64()
            )?;
        }
        writeln!(
            out,
            "peak RSS at {acked} readings: {} kB (VmRSS {} kB)",
            proc_kb("VmHWM:"),
            proc_kb("VmRSS:")
        )?;
    }
    Ok(Side {
        readings: acked,
        time,
        bundles: st.bundles,
        wire_bytes: st.wire_bytes,
        handshakes: up.handshakes(),
        cpu,
        receiver_cpu: receiver_cpu(&rx),
        phases: up.phases(),
    })
}

/// The same bundles from a bare client: built from the same readings with the hub's own device
/// mapping, serialised and gzip'd the same way (`Compression::fast`), POSTed over one kept-alive
/// connection with the same TLS configuration; no store, no ack, and the answer is parsed only for
/// the first bundle (the server ids of the hub and device, as the uplink keeps them).
async fn bare_side(
    device: &fhir::PhdDeviceInfo,
    pki: &Path,
    rx_db: &Path,
    readings: usize,
    batch: usize,
) -> anyhow::Result<Side> {
    let (rx, url) = spawn_receiver(pki, rx_db)?;
    let resolver = Arc::new(crate::uplink::tls::ReloadingCert::new(
        crate::uplink::tls::CertPaths {
            cert: pki.join("hub.crt"),
            key: pki.join("hub.key"),
        },
        Arc::new(rustls::crypto::ring::default_provider()),
    )?);
    let tls = crate::uplink::tls::client_config(&pki.join("ca.crt"), resolver.clone())?;
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()?;
    let h = hub();
    let mut refs = HashMap::new();
    let mut hub_ref: Option<String> = None;
    let (mut sent, mut bytes, mut bundles) = (0usize, 0u64, 0u64);
    let mut phases = Phases::default();
    let cpu0 = own_cpu();
    let t = Instant::now();
    let mut i = 0;
    while i < readings {
        let tb = Instant::now();
        let n = (readings - i).min(batch);
        let rs = (i..i + n)
            .map(reading)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let items: Vec<Item<'_>> = rs
            .iter()
            .enumerate()
            .map(|(k, r)| {
                Item::Reading(ReadingInput {
                    tag: (i + k) as i64,
                    device,
                    reading: &r.reading,
                    received_at: r.received_at,
                    test_data: true,
                    interpretation: None,
                })
            })
            .collect();
        let ctx = BundleContext {
            patient_id: "bench-patient",
            hub: &h,
            hub_ref: hub_ref.as_deref(),
            device_refs: &refs,
            nonce: i as u64,
            more_may_follow: n == batch,
        };
        let b = fhir::build(&ctx, &items);
        phases.build += tb.elapsed();
        let te = Instant::now();
        let raw = serde_json::to_vec(&b.json)?;
        let mut enc = flate2::write::GzEncoder::new(
            Vec::with_capacity(raw.len() / 4),
            flate2::Compression::fast(),
        );
        enc.write_all(&raw)?;
        let body = enc.finish()?;
        phases.encode += te.elapsed();
        bytes += body.len() as u64;
        let tw = Instant::now();
        let resp = client
            .post(&url)
            .header("content-type", "application/fhir+json")
            .header("accept", "application/fhir+json")
            .header("content-encoding", "gzip")
            .body(body)
            .send()
            .await?;
        let status = resp.status();
        let rb = resp.bytes().await?;
        phases.wire += tw.elapsed();
        bytes += rb.len() as u64;
        bundles += 1;
        if !status.is_success() {
            bail!("baseline POST answered {status}");
        }
        if hub_ref.is_none() {
            let types = crate::uplink::send::entry_types(&b.json);
            let types: Vec<&str> = types.iter().map(String::as_str).collect();
            let outs = fhir::response::parse_transaction_response_for(&rb, &types)?;
            for (info, o) in b.entries.iter().zip(&outs) {
                match (&info.kind, o.logical_ref()) {
                    (fhir::EntryKind::HubDevice, Some(r)) => hub_ref = Some(r),
                    (fhir::EntryKind::Device(k), Some(r)) => {
                        refs.insert(k.clone(), r);
                    }
                    _ => {}
                }
            }
        }
        let took = b.consumed.max(1);
        sent += took;
        i += took;
    }
    let time = t.elapsed();
    Ok(Side {
        readings: sent,
        time,
        bundles,
        wire_bytes: bytes,
        handshakes: resolver.requests(),
        cpu: own_cpu() - cpu0,
        receiver_cpu: receiver_cpu(&rx),
        phases,
    })
}

fn sizes(args: &UplinkBenchArgs) -> anyhow::Result<Vec<usize>> {
    let Some(list) = &args.sweep else {
        return Ok(vec![args.batch]);
    };
    let mut v = Vec::new();
    for p in list.split(',') {
        let n: usize = p.trim().parse().with_context(|| {
            format!("--sweep {list:?}: {p:?} is not a bundle size (e.g. --sweep 10,20,40,50)")
        })?;
        if !(1..=fhir::MAX_ENTRIES).contains(&n) {
            bail!(
                "--sweep {list:?}: every size must be 1..={} (the hub's most entries per bundle)",
                fhir::MAX_ENTRIES
            );
        }
        v.push(n);
    }
    Ok(v)
}

fn run_inner(args: &UplinkBenchArgs) -> anyhow::Result<()> {
    if args.readings == 0 || !(1..=fhir::MAX_ENTRIES).contains(&args.batch) {
        bail!(
            "--readings must be > 0 and --batch 1..={}",
            fhir::MAX_ENTRIES
        );
    }
    let sizes = sizes(args)?;
    let tmp = tempfile_dir(args.dir.as_deref())?;
    let pki = tmp.join("pki");
    write_default_dev_pki(&pki, "hub-bench").context("minting the bench PKI")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut out = std::io::stdout();
    writeln!(out, "vitals-hub bench uplink: {} readings, {} per bundle, gzip (fast), TLS 1.3 mTLS (HTTP/1.1, kept alive) to a local `vitals-hub receiver` process", args.readings, sizes.iter().map(usize::to_string).collect::<Vec<_>>().join("/"))?;
    writeln!(out, "Like with like: the bare client posts the same readings as the same Bundles (the hub's device mapping, the same gzip level, TLS configuration and connection reuse), each side to its own fresh receiver; the hub adds the store, the answer's parsing and the durable acks.")?;
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
        // The bare client's device: the hub's own mapping of the stored device.
        let d = store
            .devices()
            .await?
            .into_iter()
            .find(|d| d.key == dev)
            .context("the bench's device is not in the store")?;
        let info = store.device_info(&d.key).await?.unwrap_or_default();
        let device = crate::uplink::sync::phd_device_info(&d, info, 0);

        let mut rows = Vec::new();
        for (k, &batch) in sizes.iter().enumerate() {
            if k > 0 {
                // The same backlog again, for the next size.
                store.requeue_acked_since(UtcMillis(0), SystemClock.now()).await?;
            }
            writeln!(out, "\n== uplink, {batch} per bundle (store → FHIR → gzip → mTLS POST → parse → durable ack)")?;
            let hub_run = hub_side(&store, &pki, &tmp.join(format!("rx-uplink-{batch}.db")), batch, &mut out, k == 0).await?;
            hub_run.print(&mut out, true)?;
            let bare = bare_side(&device, &pki, &tmp.join(format!("rx-baseline-{batch}.db")), args.readings, batch).await?;
            writeln!(out, "\n== bare client, {batch} per bundle (the same Bundles, same gzip and TLS, no store)")?;
            bare.print(&mut out, false)?;
            writeln!(out, "(HTTP headers and TLS record overhead are not counted; each receiver runs in its own process.)")?;
            // Issue 20's figure: the hub's drain rate over the bare client's (1.0 = no cost of its own).
            let ratio = hub_run.rate() / bare.rate();
            writeln!(out, "\n== hub / bare client, {batch} per bundle: {ratio:.2}")?;
            rows.push((batch, hub_run.rate(), bare.rate(), ratio));
        }
        if rows.len() > 1 {
            writeln!(out, "\n== sweep: bundle size | hub readings/s | bare readings/s | hub / bare")?;
            for (b, h, c, r) in rows {
                writeln!(out, "{b:>5} | {h:>9.0} | {c:>9.0} | {r:.2}")?;
            }
        }
        store.close().await;
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
