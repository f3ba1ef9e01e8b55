//! `vitals-hub bench daemon`: the daemon's own figures, measured on the real process — time from
//! start to systemd READY (over a real notify socket), CPU use and RSS while every device is idle,
//! and RSS and CPU under the demo's load — against the local receiver over mutual TLS.

use crate::cli::demo::{local_clinic, local_hub_config, Workdir};
use anyhow::Context;
use clap::Args;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct DaemonBenchArgs {
    /// Seconds of each idle measurement.
    #[arg(long, default_value_t = 60)]
    pub idle_secs: u64,
    /// Seconds of the load measurement.
    #[arg(long, default_value_t = 30)]
    pub load_secs: u64,
    /// Instead of the idle and load figures: start to READY with this many stored readings
    /// (comma-separated, e.g. `0,100000,1000000`), each store generated directly. Each is started
    /// twice: first without a snapshot of the alert state (every stored reading replayed, as
    /// before issue 20), then from the snapshot that start wrote.
    #[arg(long, value_delimiter = ',')]
    pub history: Vec<u64>,
}

/// One simulated device measuring once an hour: connected once at start, then idle.
const IDLE_DEVICES: &str = r#"[[device]]
name = "idle-cuff"
kind = "simulated"
profile = "blood-pressure"
interval_secs = 3600
"#;

/// The demo's load, ten times faster.
const LOAD_DEVICES: &str = r#"[[device]]
name = "load-meter"
kind = "simulated"
profile = "glucose"
interval_secs = 1
stored_records = 200

[[device]]
name = "load-cuff"
kind = "simulated"
profile = "blood-pressure"
interval_secs = 2

[[device]]
name = "load-oximeter"
kind = "simulated"
profile = "pulse-oximeter"
interval_secs = 2

[[device]]
name = "load-scale"
kind = "simulated"
profile = "scale"
interval_secs = 3
"#;

pub fn run(args: &DaemonBenchArgs) -> ExitCode {
    match run_inner(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vitals-hub bench daemon: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `/proc/<pid>/stat` utime + stime, in clock ticks; `/proc/<pid>/status` VmRSS and VmHWM, in KiB.
pub(super) fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unexpected /proc stat format")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> anyhow::Result<u64> {
        f.get(i)
            .context("short /proc stat")?
            .parse::<u64>()
            .context("bad /proc stat field")
    };
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    Ok(field(11)? + field(12)?)
}

fn memory_kib(pid: u32, key: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("{key} not in /proc status"))
}

pub(super) fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

struct Measured {
    ready: Duration,
    cpu_pct: f64,
    rss_kib: u64,
    hwm_kib: u64,
}

/// Start `vitals-hub run` on `config`, wait for READY, then measure over `secs`.
fn measure(config: &Path, notify: &Path, secs: u64) -> anyhow::Result<Measured> {
    let _ = std::fs::remove_file(notify);
    let sock = UnixDatagram::bind(notify).context("binding the notify socket")?;
    sock.set_read_timeout(Some(Duration::from_secs(60)))?;
    let exe = std::env::current_exe().context("finding this binary")?;
    let started = Instant::now();
    let mut child: Child = Command::new(exe)
        .args(["run", "--config"])
        .arg(config)
        .env("NOTIFY_SOCKET", notify)
        .env("VITALS_HUB_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the hub")?;
    let pid = child.id();
    let result = (|| -> anyhow::Result<Measured> {
        let mut buf = [0u8; 256];
        let ready = loop {
            let n = sock
                .recv(&mut buf)
                .context("no READY from the hub within 60 s")?;
            if String::from_utf8_lossy(buf.get(..n).unwrap_or_default()).contains("READY=1") {
                break started.elapsed();
            }
        };
        // Let the start-up work (first sessions, the first upload) settle.
        std::thread::sleep(Duration::from_secs(5));
        let t0 = cpu_ticks(pid)?;
        let w0 = Instant::now();
        std::thread::sleep(Duration::from_secs(secs));
        let t1 = cpu_ticks(pid)?;
        let wall = w0.elapsed().as_secs_f64();
        let cpu = (t1.saturating_sub(t0)) as f64 / clock_ticks_per_second() as f64;
        Ok(Measured {
            ready,
            cpu_pct: 100.0 * cpu / wall,
            rss_kib: memory_kib(pid, "VmRSS:")?,
            hwm_kib: memory_kib(pid, "VmHWM:")?,
        })
    })();
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    result
}

/// Start `vitals-hub run` on `config` and time it to READY (waiting up to `timeout`), then stop it
/// with SIGTERM (a clean stop) and wait for it.
fn ready_time(
    config: &Path,
    notify: &Path,
    timeout: Duration,
    breakdown: bool,
) -> anyhow::Result<Duration> {
    let _ = std::fs::remove_file(notify);
    let sock = UnixDatagram::bind(notify).context("binding the notify socket")?;
    sock.set_read_timeout(Some(timeout))?;
    let exe = std::env::current_exe().context("finding this binary")?;
    let started = Instant::now();
    let mut child: Child = Command::new(exe)
        .args(["run", "--config"])
        .arg(config)
        .env("NOTIFY_SOCKET", notify)
        .env(
            "VITALS_HUB_LOG",
            if breakdown {
                "error,vitals_hub::daemon::run=debug,vitals_hub::daemon::ingest=debug,vitals_hub::store::db=debug"
            } else {
                "error"
            },
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the hub")?;
    let pid = child.id();
    let mut buf = [0u8; 256];
    let ready = loop {
        match sock.recv(&mut buf) {
            Ok(n) => {
                if String::from_utf8_lossy(buf.get(..n).unwrap_or_default()).contains("READY=1") {
                    break Ok(started.elapsed());
                }
            }
            Err(e) => break Err(e).context(format!("no READY from the hub within {timeout:?}")),
        }
    };
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    ready
}

/// A stored history of `n` glucose readings, one a minute, a few beyond the starting-point limits,
/// appended straight into the store in large transactions (the rows real ingestion writes; the
/// alerts they raise are stored by the first start's full replay, as a recovery after a crash
/// would).
fn generate_history(
    rt: &tokio::runtime::Runtime,
    state_dir: &Path,
    patient: &str,
    n: u64,
) -> anyhow::Result<()> {
    use crate::model::{Decimal, Kind, Reading, SystemClock, Unit, UtcMillis, Value};
    use crate::store::{DeviceRecord, NewReading, Store, StoreConfig};
    const VALUES: [i64; 12] = [110, 95, 130, 62, 48, 105, 180, 260, 320, 140, 101, 88];
    rt.block_on(async {
        let mut cfg = StoreConfig::new(state_dir);
        cfg.size_limit = u64::MAX / 4;
        cfg.patient_id = Some(patient.to_owned());
        let store = Store::open(cfg, std::sync::Arc::new(SystemClock)).await?;
        let dev = store
            .upsert_device(
                DeviceRecord {
                    address: "C0:26:DA:00:10:01".into(),
                    name: Some("history-meter".into()),
                    profile: "glucose".into(),
                    ..DeviceRecord::default()
                },
                true,
            )
            .await?;
        let t0 = 1_750_000_000_000i64;
        let mut i = 0u64;
        while i < n {
            let end = (i + 5000).min(n);
            let items: Vec<NewReading> = (i..end)
                .map(|k| {
                    // The cycle of VALUES (two episodes beyond the limits) once every 5,000
                    // readings, in range otherwise: a stored alert every few days, as a hub keeps.
                    let value = if k % 5000 < 12 {
                        VALUES.get((k % 5000) as usize).copied().unwrap_or(100)
                    } else {
                        90 + (k % 40) as i64
                    };
                    let mut reading = Reading::new(
                        Kind::Glucose,
                        Value::Number(Decimal::new(value, 0)),
                        Unit::MgPerDl,
                    );
                    reading.sequence = Some((k % 65_536) as u16);
                    NewReading {
                        reading,
                        received_at: UtcMillis(t0 + k as i64 * 60_000),
                        stable_key: format!("history-{k}"),
                        test_data: false,
                        summary: None,
                    }
                })
                .collect();
            store.append(&dev, items, None).await?;
            i = end;
        }
        store.close().await;
        Ok::<_, anyhow::Error>(())
    })
}

fn run_history(args: &DaemonBenchArgs) -> anyhow::Result<()> {
    let work = Workdir::new(None)?;
    let rt = crate::cli::daemon::runtime()?;
    let (pki, receiver) = rt.block_on(local_clinic(
        &work.path.join("pki"),
        0,
        None,
        "bench-patient",
    ))?;
    // The uplink points at a closed port: the backlog is not drained while starts are timed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let notify = work.path.join("notify.sock");
    let timeout = Duration::from_secs(3600);
    println!("vitals-hub bench daemon --history: start to READY (Bluetooth off, no devices)");
    for n in &args.history {
        let hub_dir = work.path.join(format!("history-{n}"));
        let t = Instant::now();
        generate_history(&rt, &hub_dir, "bench-patient", *n)?;
        let generated = t.elapsed();
        let text = local_hub_config("bench-patient", &hub_dir, closed, &pki, false, "")?;
        let cfg = work.path.join(format!("history-{n}.toml"));
        std::fs::write(&cfg, text)?;
        let full = ready_time(&cfg, &notify, timeout, false)?;
        // The second start prints its steps (DEBUG lines of `daemon::run` and `store::db`).
        let snap = ready_time(&cfg, &notify, timeout, true)?;
        println!(
            "  {n:>9} stored readings (generated in {:.1} s): no snapshot (full replay, as before) {:.0} ms · from the snapshot {:.0} ms",
            generated.as_secs_f64(),
            full.as_secs_f64() * 1000.0,
            snap.as_secs_f64() * 1000.0
        );
    }
    rt.block_on(receiver.shutdown());
    Ok(())
}

fn run_inner(args: &DaemonBenchArgs) -> anyhow::Result<()> {
    if !args.history.is_empty() {
        return run_history(args);
    }
    let work = Workdir::new(None)?;
    let rt = crate::cli::daemon::runtime()?;
    let (pki, receiver) = rt.block_on(local_clinic(
        &work.path.join("pki"),
        0,
        None,
        "bench-patient",
    ))?;
    let port = receiver.addr().port();
    let notify = work.path.join("notify.sock");
    let variants: [(&str, bool, &str, u64); 3] = [
        (
            "idle: one simulated device (hourly), Bluetooth off",
            false,
            IDLE_DEVICES,
            args.idle_secs,
        ),
        (
            "idle: Bluetooth on, no adapter reachable (backing off)",
            true,
            "",
            args.idle_secs,
        ),
        (
            "load: 4 simulated devices, 1–3 s intervals, 200 stored glucose records",
            false,
            LOAD_DEVICES,
            args.load_secs,
        ),
    ];
    println!(
        "vitals-hub bench daemon ({} s idle, {} s load)",
        args.idle_secs, args.load_secs
    );
    for (i, (what, ble, devices, secs)) in variants.iter().enumerate() {
        let hub_dir = work.path.join(format!("hub-{i}"));
        let text = local_hub_config("bench-patient", &hub_dir, port, &pki, *ble, devices)?;
        let cfg = work.path.join(format!("hub-{i}.toml"));
        std::fs::write(&cfg, text)?;
        let m = measure(&cfg, &notify, *secs)?;
        println!(
            "{what}\n  start to READY {:.0} ms · CPU {:.2} % of one core over {secs} s · RSS {:.1} MiB (peak {:.1} MiB)",
            m.ready.as_secs_f64() * 1000.0,
            m.cpu_pct,
            m.rss_kib as f64 / 1024.0,
            m.hwm_kib as f64 / 1024.0
        );
    }
    let exe = std::env::current_exe()?;
    let size = std::fs::metadata(&exe)?.len();
    println!(
        "binary {}: {:.1} MiB",
        exe.display(),
        size as f64 / (1024.0 * 1024.0)
    );
    println!(
        "receiver: {} Observations, {} DetectedIssues",
        receiver.count("Observation"),
        receiver.count("DetectedIssue")
    );
    rt.block_on(receiver.shutdown());
    Ok(())
}
