//! `vitals-hub demo`: the whole product on one machine, nothing to set up.
//!
//! Mints a development PKI, starts the receiver over mutual TLS on a local port, writes a hub config
//! with four simulated devices (a glucose meter whose stored records are fetched through RACP, a
//! blood-pressure cuff, a pulse oximeter and a scale; one glucose value above the high threshold),
//! and runs the real daemon on it: decode → encrypted store → alert rules → FHIR over mTLS. It shows
//! a live summary, ends on Ctrl-C or after `--duration`, and prints the final counts and where to
//! look. Readings are marked as test data (HTEST) upstream.

use super::daemon::{init_logging_default, runtime, shutdown_on_signals};
use crate::alerts::AlertRules;
use crate::clinic::{
    tls, Access, ClinicOptions, FaultQueue, Listen, Receiver, ReceiverConfig, Registry,
};
use crate::config::Config;
use crate::daemon::{Daemon, Options};
use anyhow::Context;
use clap::Args;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Stop after this long (e.g. 90s, 5m, 1h); default: run until Ctrl-C.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Keep the hub's state in DIR/hub and the receiver's in DIR/receiver (default: a temporary
    /// folder, deleted at the end).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// The patient's logical id.
    #[arg(long, default_value = "demo-patient")]
    pub patient: String,
    /// The receiver's port on 127.0.0.1 (default: any free port).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
}

/// `90`, `90s`, `5m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration; write e.g. 90s, 5m or 1h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        _ => return Err(format!("unit {unit:?} unknown; use s, m or h")),
    };
    Ok(Duration::from_secs(secs))
}

pub fn run(args: &DemoArgs) -> ExitCode {
    init_logging_default("warn");
    match run_inner(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vitals-hub demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A private temporary folder (0700), removed on drop unless kept.
pub(crate) struct Workdir {
    pub(crate) path: PathBuf,
    temporary: bool,
}

impl Workdir {
    pub(crate) fn new(keep: Option<&Path>) -> anyhow::Result<Workdir> {
        use std::os::unix::fs::DirBuilderExt;
        if let Some(p) = keep {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(p)
                .with_context(|| format!("creating {}", p.display()))?;
            return Ok(Workdir {
                path: p.to_path_buf(),
                temporary: false,
            });
        }
        let mut r = [0u8; 6];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut r)
            .map_err(|_| anyhow::anyhow!("no randomness for a temporary folder name"))?;
        let name = hex::encode(r);
        let path = std::env::temp_dir().join(format!("vitals-hub-demo-{name}"));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(Workdir {
            path,
            temporary: true,
        })
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn toml_str(p: &Path) -> String {
    // Paths from temp_dir() or the user; quoted for TOML (basic string escapes).
    format!("{:?}", p.display().to_string())
}

/// The four simulated devices of the demo.
const DEMO_DEVICES: &str = r#"[[device]]
name = "demo-meter"
kind = "simulated"
profile = "glucose"
interval_secs = 15
# Five records are already in the meter: the first session fetches them through RACP. The 7th
# value is above the high threshold (250 mg/dL).
stored_records = 5
values = [104, 118, 97, 126, 112, 121, 268, 108, 99, 131]

[[device]]
name = "demo-cuff"
kind = "simulated"
profile = "blood-pressure"
interval_secs = 20

[[device]]
name = "demo-oximeter"
kind = "simulated"
profile = "pulse-oximeter"
interval_secs = 25

[[device]]
name = "demo-scale"
kind = "simulated"
profile = "scale"
interval_secs = 30
"#;

/// A hub config for the local receiver: `devices` is `[[device]]` TOML; the documented alert
/// starting points.
pub(crate) fn local_hub_config(
    patient: &str,
    hub_dir: &Path,
    port: u16,
    pki: &crate::clinic::pki::DevPkiFiles,
    ble_enabled: bool,
    devices: &str,
) -> anyhow::Result<String> {
    #[derive(serde::Serialize)]
    struct A {
        alerts: AlertRules,
    }
    let alerts = toml::to_string(&A {
        alerts: AlertRules::starting_points(),
    })
    .context("writing the alert rules")?;
    Ok(format!(
        r#"# Written by `vitals-hub demo` (or `bench daemon`): a local receiver. NOT FOR PATIENT USE.
# Run it again with: vitals-hub run --config <this file>

[hub]
patient_id = "{patient}"
state_dir = {state_dir}

[uplink]
base_url = "https://localhost:{port}/fhir"
ca_bundle = {ca}
client_cert = {cert}
client_key = {key}
# A demo machine may not run systemd-timesyncd; a real hub waits for a synchronised clock.
require_clock_sync = false
hub_mac = "02:00:5E:10:00:01"
heartbeat_interval_secs = 60

[ble]
# The demo has no radio: only simulated devices.
enabled = {ble_enabled}

{devices}
{alerts}"#,
        state_dir = toml_str(hub_dir),
        ca = toml_str(&pki.ca),
        cert = toml_str(&pki.hub_cert),
        key = toml_str(&pki.hub_key),
    ))
}

/// The development PKI in `dir` (minted on first use) and the clinic over mutual TLS, its hub
/// enrolled for `patient` (the only hub it accepts).
pub(crate) async fn local_clinic(
    dir: &Path,
    port: u16,
    db: Option<PathBuf>,
    patient: &str,
) -> anyhow::Result<(crate::clinic::pki::DevPkiFiles, Receiver)> {
    let pki = if dir.join("ca.crt").exists() {
        crate::clinic::pki::DevPkiFiles {
            ca: dir.join("ca.crt"),
            ca_key: dir.join("ca.key"),
            receiver_cert: dir.join("receiver.crt"),
            receiver_key: dir.join("receiver.key"),
            hub_cert: dir.join("hub.crt"),
            hub_key: dir.join("hub.key"),
        }
    } else {
        crate::clinic::pki::write_default_dev_pki(dir, "demo-hub")
            .context("minting the development PKI")?
    };
    let registry = Registry::new();
    let server = tls::server_config_registry(
        &pki.receiver_cert,
        &pki.receiver_key,
        &pki.ca,
        registry.clone(),
    )
    .context("receiver TLS")?;
    let receiver = Receiver::start_with(
        ReceiverConfig {
            bind: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            listen: Listen::Tls(server),
            db_path: db,
            faults: FaultQueue::new(),
        },
        ClinicOptions {
            access: Access::Registry(registry),
            ..ClinicOptions::default()
        },
    )
    .await
    .context("starting the receiver")?;
    let rec = crate::clinic::registry::record_for_pem(&pki.hub_cert, patient, None)
        .context("reading the demo hub's certificate")?;
    match receiver.enroll(&rec) {
        Ok(()) | Err(crate::clinic::registry::EnrolError::Already { .. }) => {}
        Err(e) => return Err(e).context("enrolling the demo hub"),
    }
    Ok((pki, receiver))
}

fn run_inner(args: &DemoArgs) -> anyhow::Result<()> {
    if !args
        .patient
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        || args.patient.is_empty()
        || args.patient.len() > 64
    {
        anyhow::bail!(
            "--patient {:?} is not a FHIR logical id (1 to 64 of A-Z a-z 0-9 - .)",
            args.patient
        );
    }
    let work = Workdir::new(args.state_dir.as_deref())?;
    let hub_dir = work.path.join("hub");
    let receiver_dir = work.path.join("receiver");
    let pki_dir = work.path.join("pki");
    for d in [&hub_dir, &receiver_dir] {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(d)
            .with_context(|| format!("creating {}", d.display()))?;
    }
    let rt = runtime().context("starting the async runtime")?;
    let result = rt.block_on(demo(args, &work.path, &hub_dir, &receiver_dir, &pki_dir));
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn demo(
    args: &DemoArgs,
    root: &Path,
    hub_dir: &Path,
    receiver_dir: &Path,
    pki_dir: &Path,
) -> anyhow::Result<()> {
    let (pki, receiver) = local_clinic(
        pki_dir,
        args.port,
        Some(receiver_dir.join("receiver.db")),
        &args.patient,
    )
    .await?;
    let pki = &pki;
    let port = receiver.addr().port();
    let config_path = hub_dir.join("hub.toml");
    std::fs::write(
        &config_path,
        local_hub_config(&args.patient, hub_dir, port, pki, false, DEMO_DEVICES)?,
    )
    .with_context(|| format!("writing {}", config_path.display()))?;
    let cfg = Config::load(&config_path)?;

    let console =
        crate::clinic::console::demo::start(pki_dir, &receiver_dir.join("receiver.db")).await?;

    let tty = std::io::stdout().is_terminal();
    println!("vitals-hub demo — simulated devices, real everything else (NOT FOR PATIENT USE)");
    println!("  clinic receiver: https://localhost:{port}/fhir (mutual TLS, development PKI)");
    println!("  hub config:      {}", config_path.display());
    println!("  devices:         glucose meter (RACP), blood-pressure cuff, pulse oximeter, scale");
    println!("{}", console.line());
    match args.duration {
        Some(d) => println!("  runs for {} s; Ctrl-C ends it earlier\n", d.as_secs()),
        None => println!("  Ctrl-C ends it\n"),
    }

    let daemon = Daemon::start(&cfg, Options::default())
        .await
        .context("starting the hub")?;
    let mut shutdown = shutdown_on_signals()?;
    let started = Instant::now();
    let mut last_plain = Instant::now();
    loop {
        let line = summary(&daemon, &receiver).await;
        if tty {
            print!("\r\x1b[2K{:>4} s  {line}", started.elapsed().as_secs());
            let _ = std::io::stdout().flush();
        } else if last_plain.elapsed() >= Duration::from_secs(5) {
            println!("{:>4} s  {line}", started.elapsed().as_secs());
            last_plain = Instant::now();
        }
        if args.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => break,
        }
    }
    if tty {
        println!();
    }
    let final_line = summary(&daemon, &receiver).await;
    daemon.stop(Duration::from_secs(8)).await;
    println!("\nfinal: {final_line}");
    println!(
        "the clinic holds {} Observations and {} DetectedIssues (alerts) for Patient/{}",
        receiver.count("Observation"),
        receiver.count("DetectedIssue"),
        args.patient
    );
    println!("\nwhere to look:");
    println!(
        "  the clinic's store: {} (resources, the hub registry, the security audit trail)\n  \
         the hub's certificate is enrolled for Patient/{} only and cannot read patient data back",
        receiver_dir.join("receiver.db").display(),
        args.patient,
    );
    if args.state_dir.is_some() {
        println!(
            "  (the receiver stopped with the demo; start it again on the kept data with\n   vitals-clinic serve --listen 127.0.0.1:{port} --cert {} --key {} --client-ca {} --db {})",
            pki.receiver_cert.display(),
            pki.receiver_key.display(),
            pki.ca.display(),
            receiver_dir.join("receiver.db").display()
        );
        println!("  hub state (encrypted): {}", hub_dir.display());
    } else {
        println!(
            "  (the demo ran in {}, deleted now; keep it with --state-dir DIR)",
            root.display()
        );
    }
    receiver.shutdown().await;
    console.console.shutdown().await;
    Ok(())
}

async fn summary(daemon: &Daemon, receiver: &Receiver) -> String {
    let st = match daemon.store().stats().await {
        Ok(s) => s,
        Err(e) => return format!("store unavailable: {e}"),
    };
    let up = daemon.uplink_status();
    format!(
        "stored {} readings (encrypted) · uploaded+acknowledged {} · waiting {} · alerts {} · clinic: {} Observations, {} DetectedIssues{}",
        st.readings,
        st.acked,
        st.pending + st.in_flight,
        st.alerts,
        receiver.count("Observation"),
        receiver.count("DetectedIssue"),
        up.last_error
            .map(|e| format!(" · last upload error: {e}"))
            .unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("x").is_err());
    }

    /// The demo's receiver certificate names what `vitals-hub pki` names: `localhost` and
    /// `127.0.0.1` (a hub pointed at either verifies it).
    #[test]
    fn demo_receiver_certificate_names_localhost_and_127_0_0_1() {
        use rustls::client::danger::ServerCertVerifier;
        use rustls_pki_types::pem::PemObject;
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (pki, rx) = rt
            .block_on(local_clinic(
                &dir.path().join("pki"),
                0,
                None,
                "demo-patient",
            ))
            .unwrap();
        rt.block_on(rx.shutdown());
        let ca = rustls_pki_types::CertificateDer::from_pem_file(&pki.ca).unwrap();
        let leaf = rustls_pki_types::CertificateDer::from_pem_file(&pki.receiver_cert).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        for name in crate::clinic::pki::DEV_RECEIVER_NAMES {
            let sn = rustls_pki_types::ServerName::try_from(*name).unwrap();
            verifier
                .verify_server_cert(&leaf, &[], &sn, &[], rustls_pki_types::UnixTime::now())
                .unwrap_or_else(|e| panic!("the demo certificate does not name {name}: {e}"));
        }
    }
}
