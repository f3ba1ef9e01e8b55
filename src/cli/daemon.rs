//! `vitals-hub run` (the daemon) and `vitals-hub config check`.

use super::start::{start, Start};
use crate::config::{self, Config};
use crate::daemon::{self as hub, Options};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use tokio::sync::watch;

/// Exit status for a config that cannot be used (sysexits' EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The config file (default: /etc/vitals-hub/hub.toml under systemd, else
    /// ~/.config/vitals-hub/hub.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the config file and the files it names, without starting the hub.
    Check {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print where the config and the state directory are looked for.
    Paths {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// Logs to stderr (journald under systemd), no colours, level from `VITALS_HUB_LOG` (default
/// `info`; e.g. `VITALS_HUB_LOG=vitals_hub=debug`).
pub fn init_logging() {
    init_logging_default("info");
}

/// [`init_logging`] with another default level.
pub fn init_logging_default(level: &str) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // `Targets` (`level` or `target=level,…`, what the hub documents) rather than `EnvFilter`:
    // the same directives without a regex engine in the binary (issue 20, binary size). A value
    // that does not parse falls back to the default level.
    let filter = std::env::var("VITALS_HUB_LOG")
        .ok()
        .and_then(|v| v.parse::<Targets>().ok())
        .or_else(|| level.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO));
    let under_journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false);
    let registry = tracing_subscriber::registry().with(filter);
    // journald stamps every line itself.
    let _ = if under_journal {
        registry.with(layer.without_time()).try_init()
    } else {
        registry.with(layer).try_init()
    };
}

/// The runtime every long-running subcommand uses: two workers, as many cores as a Pi has to spare.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("vitals-hub")
        .enable_all()
        .build()
}

/// A shutdown signal that turns true on SIGTERM or SIGINT.
pub fn shutdown_on_signals() -> std::io::Result<watch::Receiver<bool>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("Stop requested.");
        let _ = tx.send(true);
    });
    Ok(rx)
}

pub(crate) use super::start::load;

pub fn run(args: &RunArgs) -> ExitCode {
    init_logging();
    let Start { cfg, rt, .. } = match start("run", args.config.as_deref()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let result = rt.block_on(async {
        let shutdown = shutdown_on_signals().map_err(|e| format!("signal handlers: {e}"))?;
        hub::run(cfg, Options::default(), shutdown)
            .await
            .map_err(|e| e.to_string())
    });
    // Sessions may leave library tasks behind; do not wait for them.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vitals-hub: {e}");
            ExitCode::FAILURE
        }
    }
}

pub fn config(cmd: &ConfigCommand) -> ExitCode {
    match cmd {
        ConfigCommand::Paths { config: explicit } => {
            let path = config::config_path(explicit.as_deref());
            println!("config file:     {}", path.display());
            let state = Config::load(&path)
                .map(|c| c.state_dir())
                .unwrap_or_else(|_| config::default_state_dir());
            println!("state directory: {}", state.display());
            ExitCode::SUCCESS
        }
        ConfigCommand::Check { config: explicit } => {
            let cfg = match load(explicit.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let mut problems = Vec::new();
            if let Err(e) = crate::uplink::tls::roots(&cfg.uplink.ca_bundle) {
                problems.push(format!(
                    "[uplink] ca_bundle {}: {e}",
                    cfg.uplink.ca_bundle.display()
                ));
            }
            match cfg.uplink.cert_paths() {
                Ok(paths) => {
                    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
                    if let Some(m) = crate::tech::setup::swapped(
                        &paths.cert,
                        &paths.key,
                        ("[uplink] client_cert", "client_key"),
                    ) {
                        problems.push(m);
                    } else if let Err(e) = crate::uplink::tls::ReloadingCert::new(paths, provider) {
                        problems.push(format!("[uplink] client certificate or key: {e}"));
                    }
                }
                Err(e) => problems.push(format!("[uplink]: {e}")),
            }
            if let Err(e) = crate::uplink::hub_info(&cfg.uplink) {
                problems.push(format!("[uplink]: {e}"));
            }
            for w in cfg.warnings() {
                println!("warning: {w}");
            }
            if problems.is_empty() {
                let sims = cfg
                    .devices
                    .iter()
                    .filter(|d| matches!(d, config::DeviceEntry::Simulated(_)))
                    .count();
                println!(
                    "{}: OK ({} device settings, {} simulated; state directory {})",
                    cfg.path.display(),
                    cfg.devices.len() - sims,
                    sims,
                    cfg.state_dir().display()
                );
                // The patient, clinic and certificate read back: a valid but wrong id is seen here.
                let now = crate::model::Clock::now(&crate::model::SystemClock)
                    .as_millis()
                    .div_euclid(1000);
                let id = crate::tech::status::identity(&cfg, now);
                print!("{}", crate::tech::status::render_identity(&id, 14));
                ExitCode::SUCCESS
            } else {
                for p in problems {
                    eprintln!("{}: {p}", cfg.path.display());
                }
                ExitCode::from(EXIT_CONFIG)
            }
        }
    }
}
