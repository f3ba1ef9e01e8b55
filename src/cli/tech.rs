//! The technician's commands: `status`, `export`, `wipe`, `doctor`, `setup`. Thin: load the config, call [`crate::tech::status`], print.

use super::daemon::init_logging_default;
use super::start::{act_as_service_user, load_as_invoked, start, Start};
use crate::model::{Clock, SystemClock};
use crate::tech::status as tech;
use clap::Args;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The config file (default as for `run`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn status(args: &StatusArgs) -> ExitCode {
    init_logging_default("warn");
    let Start { cfg, rt, .. } = match start("status", args.config.as_deref()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    // Device addresses only on the technician's own terminal, never into a pipe or a file.
    let with_addresses = !args.json && std::io::stdout().is_terminal();
    let result = rt.block_on(async {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let store = tech::open_read_only(&cfg, clock.clone()).await?;
        let s = tech::status(&store, &cfg, clock.now(), with_addresses).await;
        store.close().await;
        s
    });
    match result {
        Ok(s) if args.json => match serde_json::to_string_pretty(&s) {
            Ok(j) => {
                println!("{j}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("vitals-hub status: {e}");
                ExitCode::FAILURE
            }
        },
        Ok(s) => {
            print!("{}", tech::render_text(&s));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vitals-hub status: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The config file (default as for `run`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Start of the range (inclusive): YYYY-MM-DD (midnight UTC) or RFC 3339.
    #[arg(long)]
    pub from: String,
    /// End of the range (exclusive; a plain date includes that whole day).
    #[arg(long)]
    pub to: String,
    #[arg(long, value_enum)]
    pub format: crate::tech::export::Format,
    /// Write here instead of stdout (created 0600: it holds the patient's data).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn export(args: &ExportArgs) -> ExitCode {
    use crate::tech::export::{self, Range};
    init_logging_default("warn");
    let (from, to) = match (
        export::parse_date(&args.from, false),
        export::parse_date(&args.to, true),
    ) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("vitals-hub export: {e}");
            return ExitCode::from(super::EXIT_BAD_INPUT);
        }
    };
    // `--out`: a new 0600 file, renamed into place only when the export is complete. Created
    // before the command acts as the service user: it is the invoker's file, outside the state
    // directory, and is committed (below) after root is taken back.
    if let Some(out) = args.out.as_deref() {
        let dir = out
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        if !dir.is_dir() {
            eprintln!(
                "vitals-hub export: --out {}: the directory {} does not exist; fix: create it \
                 (`mkdir -p {}`) or give --out a file in an existing directory",
                out.display(),
                dir.display(),
                dir.display()
            );
            return ExitCode::from(super::EXIT_BAD_INPUT);
        }
    }
    let mut file = match args.out.as_deref().map(export::OutFile::create).transpose() {
        Ok(f) => f,
        Err(e) => {
            let p = args.out.as_deref().unwrap_or(std::path::Path::new(""));
            eprintln!("vitals-hub export: cannot create {}: {e}", p.display());
            return ExitCode::FAILURE;
        }
    };
    let Start { cfg, rt, .. } = match start("export", args.config.as_deref()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let out: &mut dyn std::io::Write = match &mut file {
        Some(f) => f,
        None => &mut stdout,
    };
    let mut reporter = super::progress::Reporter::new("export", "readings scanned", 10_000);
    let mut progress = |done: u64, total: u64| reporter.update(done, total);
    let result = rt.block_on(async {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let store = tech::open_read_only(&cfg, clock.clone()).await?;
        let range = Range {
            from,
            to,
            now: clock.now(),
        };
        let r = export::export(&store, &cfg, range, args.format, out, &mut progress).await;
        store.close().await;
        r
    });
    reporter.finish();
    // The store is closed: the file outside the state directory is committed (or removed) as the
    // invoker again.
    if let Err(e) = super::start::resume_root() {
        eprintln!("vitals-hub export: {e}");
        return ExitCode::FAILURE;
    }
    let result = match (result, file) {
        (Ok(r), Some(f)) => f.commit().map(|()| r).map_err(export::ExportError::Io),
        (r, _) => r,
    };
    match result {
        Ok(r) => {
            eprintln!(
                "vitals-hub export: {} readings written{}",
                r.readings,
                if r.unmapped > 0 {
                    format!(" ({} not expressible in FHIR)", r.unmapped)
                } else {
                    String::new()
                }
            );
            ExitCode::SUCCESS
        }
        Err(e @ export::ExportError::EmptyRange) => {
            eprintln!("vitals-hub export: {e}");
            ExitCode::from(super::EXIT_BAD_INPUT)
        }
        Err(e) => {
            eprintln!("vitals-hub export: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug, Args)]
pub struct WipeArgs {
    /// The config file (default as for `run`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Do not ask (required when stdin is not a terminal).
    #[arg(long)]
    pub yes: bool,
}

pub fn wipe(args: &WipeArgs) -> ExitCode {
    use crate::tech::wipe;
    // As root, not as the service user: the config and credentials under /etc are root's.
    let cfg = match load_as_invoked(args.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            eprintln!(
                "vitals-hub wipe: refusing without confirmation: stdin is not a terminal; pass \
                 --yes to erase the store, the keys and the credentials"
            );
            return ExitCode::from(super::EXIT_BAD_INPUT);
        }
        let list = match wipe::targets(&cfg) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("vitals-hub wipe: {e}");
                return ExitCode::FAILURE;
            }
        };
        println!("This erases, for good, every reading, key and credential of this hub:");
        for p in &list {
            println!("  {}", p.display());
        }
        print!("Type `wipe` to confirm: ");
        let _ = std::io::Write::flush(&mut std::io::stdout());
        let mut line = String::new();
        if std::io::stdin().read_line(&mut line).is_err() || line.trim() != "wipe" {
            eprintln!("vitals-hub wipe: not confirmed; nothing was erased");
            return ExitCode::from(super::EXIT_BAD_INPUT);
        }
    }
    match wipe::wipe(&cfg) {
        Ok(done) => {
            for (p, n) in &done {
                println!("erased {} ({n} bytes)", p.display());
            }
            println!("wipe: {} files erased", done.len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vitals-hub wipe: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The config file (default as for `run`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print the checks as a JSON array instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Exit 0 when nothing failed (warnings allowed), 1 when a check failed.
pub fn doctor(args: &DoctorArgs) -> ExitCode {
    use crate::tech::doctor;
    init_logging_default("warn");
    let path = crate::config::config_path(args.config.as_deref());
    let checks = match crate::config::Config::load(&path) {
        Err(e) => vec![doctor::config_failure(&e)],
        Ok(mut cfg) => {
            if let Err(e) = act_as_service_user(&mut cfg) {
                eprintln!("vitals-hub doctor: {e}");
                return ExitCode::FAILURE;
            }
            let rt = match super::daemon::runtime() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("vitals-hub doctor: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let checks = rt.block_on(doctor::run(&cfg));
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
            checks
        }
    };
    if args.json {
        match serde_json::to_string_pretty(&checks) {
            Ok(j) => println!("{j}"),
            Err(e) => {
                eprintln!("vitals-hub doctor: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", doctor::render_text(&checks));
    }
    if doctor::any_failed(&checks) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[derive(Debug, Args)]
pub struct SetupArgs {
    /// The clinic's FHIR base URL (https://…).
    #[arg(long)]
    pub clinic_url: Option<String>,
    /// The patient's logical id at the clinic.
    #[arg(long)]
    pub patient: Option<String>,
    /// The clinic CA bundle (PEM).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// The hub's client certificate (PEM).
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// The hub's private key (PEM); copied with mode 0600 whatever the source's mode.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// The config file to write (default as for `run`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The state directory, written into the config (default: /var/lib/vitals-hub under systemd
    /// or as root, else the user's data directory).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Replace the config and credentials of an enrolled hub.
    #[arg(long)]
    pub force: bool,
    /// The clinic's apt repository (https://…, the directory holding dists/): installs its
    /// source, pins and unattended-upgrades (README, "Updates").
    #[arg(long)]
    pub apt_url: Option<String>,
    /// The repository's suite this hub follows: stable or canary.
    #[arg(long, default_value = "stable")]
    pub apt_suite: String,
    /// The clinic's OpenPGP public key (binary or armoured), from `publish.sh key`.
    #[arg(long)]
    pub apt_key: Option<PathBuf>,
    /// The repository's Origin (publish.sh init --origin).
    #[arg(long, default_value = "vitals-clinic")]
    pub apt_origin: String,
    /// The maintenance window for unattended upgrades, HH:MM-HH:MM local time.
    #[arg(long, default_value = "02:00-04:00")]
    pub update_window: String,
    /// Allow a plain-http repository on 127.0.0.1/localhost (tests only).
    #[arg(long)]
    pub apt_insecure_localhost: bool,
    /// Install the apt files only (an enrolled hub): no credentials, no config.
    #[arg(long)]
    pub apt_only: bool,
    /// The root the apt files go under (tests).
    #[arg(long, default_value = "/", hide = true)]
    pub apt_root: PathBuf,
}

/// The apt half of setup; `None` when no --apt-url was given.
fn setup_apt(args: &SetupArgs) -> Option<Result<(), String>> {
    let url = args.apt_url.clone()?;
    let Some(key) = args.apt_key.clone() else {
        return Some(Err(
            "--apt-key is missing: --apt-url needs the clinic's public key (publish.sh key REPO vitals-clinic.gpg)"
                .to_string(),
        ));
    };
    let req = crate::tech::apt::AptRequest {
        url,
        suite: args.apt_suite.clone(),
        key,
        origin: args.apt_origin.clone(),
        window: args.update_window.clone(),
        insecure_localhost: args.apt_insecure_localhost,
        root: args.apt_root.clone(),
    };
    Some(match crate::tech::apt::install(&req) {
        Ok(r) => {
            for f in &r.files {
                println!("apt:         {} (0644)", f.display());
            }
            println!(
                "updates:     {} suite {} (signed by {} only), window {}",
                req.url,
                req.suite,
                r.key_file.display(),
                req.window
            );
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    })
}

/// A value from its flag, else asked on the terminal; without a terminal, an error naming the flag.
fn value_or_ask(v: &Option<String>, flag: &str, prompt: &str) -> Result<String, String> {
    if let Some(v) = v {
        return Ok(v.clone());
    }
    if !std::io::stdin().is_terminal() {
        return Err(format!(
            "{flag} is missing and stdin is not a terminal to ask on; pass {flag}"
        ));
    }
    eprint!("{prompt}: ");
    let _ = std::io::Write::flush(&mut std::io::stderr());
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("reading {flag}: {e}"))?;
    let line = line.trim().to_string();
    if line.is_empty() {
        return Err(format!("{flag} is required"));
    }
    Ok(line)
}

/// The patient id from `--patient`, else typed twice on the terminal: the same id both times, or
/// asked again (three tries). A valid but wrong id (`pat-042` for `pat-0042`) would send the
/// readings under someone else's record; typing it twice catches the slip, and setup reads the id
/// back at the end.
fn patient_id(flag: &Option<String>) -> Result<String, String> {
    if flag.is_some() {
        return value_or_ask(flag, "--patient", "Patient id at the clinic");
    }
    for _ in 0..3 {
        let first = value_or_ask(&None, "--patient", "Patient id at the clinic")?;
        let again = value_or_ask(&None, "--patient", "Patient id again, to confirm")?;
        if first == again {
            return Ok(first);
        }
        eprintln!("the two patient ids differ ({first} / {again}); type it again");
    }
    Err(
        "the patient id was typed differently three times; nothing was written. Check the id \
         on the clinic's enrolment sheet and run setup again (or pass --patient)"
            .to_string(),
    )
}

/// Exit 0 when enrolled, 2 for a missing value, 1 when a check refused or writing failed.
pub fn setup(args: &SetupArgs) -> ExitCode {
    use crate::tech::setup;
    init_logging_default("warn");
    if args.apt_only {
        return match setup_apt(args) {
            None => {
                eprintln!("vitals-hub setup: --apt-only needs --apt-url and --apt-key");
                ExitCode::from(super::EXIT_BAD_INPUT)
            }
            Some(Ok(())) => ExitCode::SUCCESS,
            Some(Err(e)) => {
                eprintln!("vitals-hub setup: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if args.apt_url.is_some() {
        // Checked before anything is written: a bad apt option leaves the hub as it was.
        if let Err(e) = crate::tech::apt::check_url(
            &args.apt_url.clone().unwrap_or_default(),
            args.apt_insecure_localhost,
        )
        .and_then(|()| crate::tech::apt::parse_window(&args.update_window).map(|_| ()))
        {
            eprintln!("vitals-hub setup: {e}");
            return ExitCode::FAILURE;
        }
    }
    let asked = (|| -> Result<setup::Request, String> {
        let path = |v: &Option<PathBuf>| v.as_ref().map(|p| p.display().to_string());
        Ok(setup::Request {
            clinic_url: value_or_ask(
                &args.clinic_url,
                "--clinic-url",
                "Clinic FHIR base URL (https://…)",
            )?,
            patient_id: patient_id(&args.patient)?,
            ca: value_or_ask(&path(&args.ca), "--ca", "Clinic CA bundle (PEM file)")?.into(),
            cert: value_or_ask(&path(&args.cert), "--cert", "Hub certificate (PEM file)")?.into(),
            key: value_or_ask(&path(&args.key), "--key", "Hub private key (PEM file)")?.into(),
            config: crate::config::config_path(args.config.as_deref()),
            state_dir: args.state_dir.clone(),
            force: args.force,
        })
    })();
    let req = match asked {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vitals-hub setup: {e}");
            return ExitCode::from(super::EXIT_BAD_INPUT);
        }
    };
    let now = SystemClock.now().as_millis().div_euclid(1000);
    match setup::setup(&req, now) {
        Ok(r) => {
            for w in &r.warnings {
                eprintln!("vitals-hub setup: warning: {w}");
            }
            println!("config:      {} (0640)", r.config.display());
            println!("state dir:   {} (0700)", r.state_dir.display());
            println!("client key:  {} (0600)", r.key.display());
            println!(
                "client cert: {} (0644; {} days left)",
                r.cert.display(),
                r.days_left
            );
            println!("clinic CA:   {} (0644)", r.ca.display());
            if let Some(o) = &r.owner {
                println!("owner:       {o}");
            }
            // Read back what the clinic will file the readings under.
            let id = crate::tech::status::Identity {
                patient_id: req.patient_id.clone(),
                clinic_url: req.clinic_url.clone(),
                certificate: Some(crate::tech::status::cert_info(&r.cert, now)),
            };
            print!("{}", crate::tech::status::render_identity(&id, 13));
            if let Some(Err(e)) = setup_apt(args) {
                eprintln!(
                    "vitals-hub setup: the hub is enrolled, but its updates are not set up: {e}"
                );
                return ExitCode::FAILURE;
            }
            println!("setup: done; next: `vitals-hub doctor`");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vitals-hub setup: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug, Args)]
pub struct UpdateCheckArgs {
    /// The config file (default as for `run`), for the state directory.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The hub's state directory (default: the config's).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Where postinst left the pending upgrade and the kept package.
    #[arg(long)]
    pub update_dir: Option<PathBuf>,
    /// How long the new version has to reach READY and complete an upload or heartbeat.
    #[arg(long, default_value_t = 900)]
    pub timeout_secs: u64,
    /// How often to look.
    #[arg(long, default_value_t = 5)]
    pub poll_secs: u64,
    /// Look once and report; never wait nor roll back.
    #[arg(long)]
    pub once: bool,
    /// The dpkg that reinstalls the kept package.
    #[arg(long, default_value = "dpkg")]
    pub dpkg: PathBuf,
    /// The apt-get that fetches the previous version when no package was kept.
    #[arg(long, default_value = "apt-get")]
    pub apt_get: PathBuf,
}

/// Exit 0 when healthy (or nothing pending, or still waiting with --once), 1 when rolled back or
/// the rollback failed, 2 for bad input.
pub fn update_check(args: &UpdateCheckArgs) -> ExitCode {
    use crate::tech::update::{self, Outcome};
    init_logging_default("warn");
    let state_dir = args.state_dir.clone().unwrap_or_else(|| {
        let path = crate::config::config_path(args.config.as_deref());
        crate::config::Config::load(&path).map_or_else(
            |_| std::path::PathBuf::from("/var/lib/vitals-hub"),
            |c| c.state_dir(),
        )
    });
    let mut opts = update::Options::new(state_dir);
    if let Some(d) = &args.update_dir {
        opts.update_dir = d.clone();
    }
    opts.timeout = std::time::Duration::from_secs(args.timeout_secs);
    opts.poll = std::time::Duration::from_secs(args.poll_secs.max(1));
    opts.once = args.once;
    opts.dpkg = args.dpkg.clone();
    opts.apt_get = args.apt_get.clone();
    match update::check(&opts) {
        Ok(Outcome::NothingPending) => {
            println!("update-check: no upgrade pending");
            ExitCode::SUCCESS
        }
        Ok(Outcome::Healthy(p)) => {
            println!(
                "update-check: {} is healthy (upgraded from {})",
                p.to, p.from
            );
            ExitCode::SUCCESS
        }
        Ok(Outcome::StillWaiting(p)) => {
            println!(
                "update-check: {} has not yet proved itself (upgraded from {})",
                p.to, p.from
            );
            ExitCode::SUCCESS
        }
        Ok(Outcome::RolledBack { pending, reason }) => {
            println!(
                "update-check: rolled back {} to {}: {reason}",
                pending.to, pending.from
            );
            ExitCode::FAILURE
        }
        Ok(Outcome::RollbackFailed { pending, reason }) => {
            eprintln!(
                "update-check: {} is unhealthy and could not be rolled back to {}: {reason}",
                pending.to, pending.from
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("vitals-hub update-check: {e}");
            ExitCode::from(super::EXIT_BAD_INPUT)
        }
    }
}
