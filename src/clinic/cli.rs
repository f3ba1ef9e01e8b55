//! `vitals-clinic`: the clinic side's binary. `serve` runs the hubs' FHIR ingest (mutual TLS, or
//! plain HTTP on loopback behind the reference nginx with its shared secret); `hub enroll|list|
//! revoke` manage the registry of hubs in the clinic's store.

use super::db::ReceiverDb;
use super::front::{Front, FrontConfig};
use super::registry::{self, Registry};
use super::{tls, Access, ClinicOptions, FaultQueue, Limits, Listen, Receiver, ReceiverConfig};
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// vitals-clinic: the clinic side of vitals-hub.
#[derive(Debug, Parser)]
#[command(name = "vitals-clinic", version, about, long_about = None)]
pub struct ClinicCli {
    #[command(subcommand)]
    pub command: ClinicCommand,
}

#[derive(Debug, Subcommand)]
pub enum ClinicCommand {
    /// Serve the hubs' FHIR ingest: mutual TLS with enrolled hub certificates only, each hub
    /// confined to its patient. `serve --config FILE [FLAGS]` reads the flags from a TOML file
    /// first (one key per flag: `console_listen = "0.0.0.0:443"`), then the command line's.
    #[command(args_override_self = true)]
    Serve(Box<ServeArgs>),
    /// The registry of hubs: enroll a hub certificate for one patient, list, revoke.
    #[command(subcommand)]
    Hub(HubCommand),
    /// The clinicians' console accounts: add, disable, passwd, list.
    #[command(subcommand)]
    User(super::console::cli::UserCommand),
    /// Benchmarks (figures, never assertions): `bench console`.
    #[command(subcommand)]
    Bench(ClinicBench),
}

#[derive(Debug, Subcommand)]
pub enum ClinicBench {
    /// The console's worklist and patient page on a generated built-in store.
    Console(super::console::cli::BenchArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Server certificate (PEM), e.g. from `vitals-hub pki`.
    #[arg(long, required_unless_present_any = ["plain", "plain_socket"])]
    pub cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, required_unless_present_any = ["plain", "plain_socket"])]
    pub key: Option<PathBuf>,
    /// CA whose hub client certificates are accepted (PEM); each certificate must also be
    /// enrolled (`vitals-clinic hub enroll`).
    #[arg(long, required_unless_present_any = ["plain", "plain_socket"])]
    pub client_ca: Option<PathBuf>,
    /// Plain HTTP on a loopback address behind the reference nginx, which verifies the hub
    /// certificates and passes them with the shared secret of --proxy-secret-file.
    #[arg(long, requires = "proxy_secret_file")]
    pub plain: bool,
    /// File holding the secret the proxy sends in `X-Clinic-Proxy-Secret` (at least 16
    /// characters; the same value as in the nginx config).
    #[arg(long)]
    pub proxy_secret_file: Option<PathBuf>,
    /// Plain HTTP on this Unix socket behind the reference nginx (`proxy_pass
    /// http://unix:PATH:`): the certificate header is trusted only on connections from the user
    /// of --proxy-uid (the kernel's peer credentials, no secret needed).
    #[arg(long, requires = "proxy_uid", conflicts_with = "plain")]
    pub plain_socket: Option<PathBuf>,
    /// The uid the proxy (nginx's worker user, e.g. `id -u www-data`) connects to --plain-socket as.
    #[arg(long, requires = "plain_socket")]
    pub proxy_uid: Option<u32>,
    /// The clinic's SQLite store (received resources, the hub registry, the audit trail).
    /// Default: in memory, with no hub enrolled.
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Requests per second one hub may send on average (burst: twice that).
    #[arg(long, default_value_t = 50.0)]
    pub rate_per_hub: f64,
    /// Run as the authorising front for this external FHIR server (http or https base URL):
    /// each hub's requests are authorised and rebuilt here, then forwarded; nothing is stored
    /// but the registry of --db (required), which several fronts may share.
    #[arg(long, requires = "db")]
    pub fhir_base: Option<String>,
    /// CA certificates (PEM) of an https --fhir-base.
    #[arg(long, requires = "fhir_base")]
    pub fhir_ca: Option<PathBuf>,
    /// File holding the `Authorization` header value sent to --fhir-base (e.g. `Bearer …`).
    #[arg(long, requires = "fhir_base")]
    pub fhir_authorization_file: Option<PathBuf>,
    /// Also serve the clinicians' console (HTTPS) on this address; needs --db (its accounts),
    /// --console-cert and --console-key. It reads and writes the built-in store, or with
    /// --fhir-base that FHIR server (the one the hubs upload to through this front).
    #[arg(long, requires_all = ["db", "console_cert", "console_key"])]
    pub console_listen: Option<SocketAddr>,
    /// The console's server certificate (PEM): its own, not one from the hub CA.
    #[arg(long)]
    pub console_cert: Option<PathBuf>,
    /// The clinic's IANA time zone the console shows every time in (e.g. `Europe/Berlin`);
    /// default: the system's.
    #[arg(long, requires = "console_listen")]
    pub zone: Option<String>,
    /// The console's private key (PEM).
    #[arg(long)]
    pub console_key: Option<PathBuf>,
    /// The hub CA's CRL (PEM, as `vitals-clinic hub revoke|crl --crl` writes it): checked in
    /// every TLS handshake, re-read within 2 s when the file changes. Needs the registry (--db).
    #[arg(long, requires = "db")]
    pub crl: Option<PathBuf>,
    /// Serve EST re-enrolment (`/.well-known/est/simplereenroll`, `cacerts`) signing renewed hub
    /// certificates with this hub CA private key (PEM); the CA certificate is --est-ca-cert.
    /// Needs the registry (--db).
    #[arg(long, requires_all = ["db", "est_ca_cert"])]
    pub est_ca_key: Option<PathBuf>,
    /// The hub CA certificate (PEM) --est-ca-key belongs to.
    #[arg(long, requires = "est_ca_key")]
    pub est_ca_cert: Option<PathBuf>,
    /// Validity of a certificate renewed over EST, days.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub est_days: u32,
    /// The hubs' heartbeat interval in minutes (as the hubs are configured), for the console's
    /// offline rule.
    #[arg(long, default_value_t = 15, requires = "console_listen", value_parser = clap::value_parser!(u32).range(1..=1440))]
    pub heartbeat_minutes: u32,
    /// A hub shows offline on the console after this many heartbeat intervals without one.
    #[arg(long, default_value_t = 3, requires = "console_listen", value_parser = clap::value_parser!(u32).range(1..=96))]
    pub missed_heartbeats: u32,
}

#[derive(Debug, Subcommand)]
pub enum HubCommand {
    /// Bind a hub certificate (its SHA-256 fingerprint and subject) to a hub identity and the one
    /// patient it serves.
    Enroll {
        /// The clinic's store.
        #[arg(long)]
        db: PathBuf,
        /// The hub's client certificate (PEM).
        #[arg(long)]
        cert: PathBuf,
        /// The patient's logical id (`Patient/<id>`).
        #[arg(long)]
        patient: String,
        /// The hub's identity (default: the certificate's common name).
        #[arg(long)]
        hub_id: Option<String>,
    },
    /// The enrolled certificates: hub, patient, fingerprint, enrolled, revoked.
    List {
        #[arg(long)]
        db: PathBuf,
        /// JSON lines, each the hub's FHIR `Device` as an external FHIR server would hold it.
        #[arg(long)]
        fhir: bool,
    },
    /// Revoke a hub (every certificate of this hub id) or one certificate (by fingerprint): it is
    /// refused at the TLS layer from then on. With --crl, the hub CA's CRL is written anew
    /// listing every revoked certificate (for `serve --crl` and nginx's `ssl_crl`).
    Revoke {
        #[arg(long)]
        db: PathBuf,
        /// Hub id or `sha256:<hex>` fingerprint.
        hub: String,
        #[command(flatten)]
        crl: CrlArgs,
    },
    /// Write the hub CA's CRL anew (the same revoked certificates, fresh dates): run it from a
    /// timer well within its 30 days of validity, since nginx refuses every hub once it expired.
    Crl {
        #[arg(long)]
        db: PathBuf,
        #[command(flatten)]
        crl: CrlArgs,
    },
}

/// Where the CRL goes and the hub CA that signs it.
#[derive(Debug, Args)]
pub struct CrlArgs {
    /// The CRL file to write (PEM).
    #[arg(long = "crl", requires_all = ["ca_cert", "ca_key"])]
    pub path: Option<PathBuf>,
    /// The hub CA certificate (PEM).
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
    /// The hub CA private key (PEM).
    #[arg(long)]
    pub ca_key: Option<PathBuf>,
}

/// Write the CRL of `db`'s revoked certificates, if `args` names one. Returns how many serials
/// it lists.
pub fn write_crl(db: &Path, args: &CrlArgs) -> anyhow::Result<Option<usize>> {
    let (Some(path), Some(cert), Some(key)) = (&args.path, &args.ca_cert, &args.ca_key) else {
        return Ok(None);
    };
    let ca = super::crl::HubCa::load(cert, key)?;
    let revoked = open_db(db)?.revoked_serials()?;
    ca.write_crl(path, &revoked)?;
    Ok(Some(revoked.len()))
}

pub fn main() -> ExitCode {
    let args = match expand_config(std::env::args_os().collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("vitals-clinic: {e:#}");
            return ExitCode::from(2);
        }
    };
    let cli = ClinicCli::parse_from(args);
    let r = match cli.command {
        ClinicCommand::Serve(a) => serve_inner(&a),
        ClinicCommand::Hub(c) => hub(&c),
        ClinicCommand::User(c) => super::console::cli::run(&c),
        ClinicCommand::Bench(ClinicBench::Console(a)) => super::console::cli::bench(&a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vitals-clinic: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Largest config file read (the file is a few dozen lines).
const MAX_CONFIG: u64 = 64 * 1024;

/// `vitals-clinic serve --config FILE`: the file (TOML) is the serve command's own flags, one key
/// per flag (`listen = "0.0.0.0:8443"`, `console_listen = …`, `plain = true`), placed before the
/// flags of the command line, so that a flag given there overrides the file's. The keys are checked
/// by the same parser as the flags: an unknown key or a wrong value is refused naming it. Only
/// `serve` takes a config file; `--config` must come right after `serve`.
pub fn expand_config(args: Vec<std::ffi::OsString>) -> anyhow::Result<Vec<std::ffi::OsString>> {
    let (Some(cmd), Some(flag)) = (args.get(1), args.get(2)) else {
        return Ok(args);
    };
    if cmd != "serve" {
        return Ok(args);
    }
    let (path, rest) = if flag == "--config" {
        let Some(p) = args.get(3) else {
            anyhow::bail!(
                "serve --config needs a file, e.g. --config /etc/vitals-clinic/clinic.toml"
            );
        };
        (PathBuf::from(p), args.get(4..).unwrap_or_default())
    } else if let Some(p) = flag.to_str().and_then(|f| f.strip_prefix("--config=")) {
        (PathBuf::from(p), args.get(3..).unwrap_or_default())
    } else {
        return Ok(args);
    };
    let mut out: Vec<std::ffi::OsString> = args.get(..2).unwrap_or_default().to_vec();
    out.extend(config_flags(&path)?.into_iter().map(Into::into));
    out.extend(rest.iter().cloned());
    Ok(out)
}

/// The flags a config file stands for (see [`expand_config`]).
fn config_flags(path: &Path) -> anyhow::Result<Vec<String>> {
    use std::io::Read;
    let name = path.display();
    let f = std::fs::File::open(path).with_context(|| {
        format!("reading the config file {name}: check the path (the package installs /etc/vitals-clinic/clinic.toml)")
    })?;
    let mut text = String::new();
    f.take(MAX_CONFIG + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("reading the config file {name} (UTF-8 text expected)"))?;
    if text.len() as u64 > MAX_CONFIG {
        anyhow::bail!(
            "the config file {name} is larger than {MAX_CONFIG} bytes: is it the right file?"
        );
    }
    let table: toml::Table = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("the config file {name} is not valid TOML: {e}"))?;
    let mut flags = Vec::new();
    for (key, value) in table {
        if key == "config" {
            anyhow::bail!("{name}: `config` cannot name another file; remove it");
        }
        let flag = format!("--{}", key.replace('_', "-"));
        match value {
            toml::Value::Boolean(true) => flags.push(flag),
            toml::Value::Boolean(false) => {}
            toml::Value::String(v) => flags.extend([flag, v]),
            toml::Value::Integer(v) => flags.extend([flag, v.to_string()]),
            toml::Value::Float(v) => flags.extend([flag, v.to_string()]),
            _ => anyhow::bail!(
                "{name}: `{key}` must be a string, a number or true/false (the serve flag {flag}); tables and lists are not used"
            ),
        }
    }
    Ok(flags)
}

/// `vitals-clinic serve` (and `vitals-hub receiver`, its alias).
pub fn serve(args: &ServeArgs) -> ExitCode {
    match serve_inner(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn open_db(p: &Path) -> anyhow::Result<ReceiverDb> {
    ReceiverDb::open(Some(p)).with_context(|| format!("opening the clinic store {}", p.display()))
}

/// Enrol a certificate file into the store at `db` (used by `vitals-hub pki` and the demo too).
pub fn enroll_file(
    db: &Path,
    cert: &Path,
    patient: &str,
    hub_id: Option<&str>,
) -> anyhow::Result<registry::HubRecord> {
    let rec = registry::record_for_pem(cert, patient, hub_id)?;
    let mut d = open_db(db)?;
    d.enroll(&rec)?;
    // The serial, for the CRL should this certificate be revoked.
    if let Some(der) = tls::load_certs(cert)?.first() {
        if let Some((serial, not_after)) = super::crl::serial_hex(der.as_ref()) {
            d.record_serial(&rec.fingerprint, &serial, not_after)?;
        }
    }
    Ok(rec)
}

fn hub(c: &HubCommand) -> anyhow::Result<()> {
    match c {
        HubCommand::Enroll {
            db,
            cert,
            patient,
            hub_id,
        } => {
            let rec = enroll_file(db, cert, patient, hub_id.as_deref())?;
            println!(
                "enrolled hub {} for patient {} ({})",
                rec.hub_id, rec.patient, rec.fingerprint
            );
        }
        HubCommand::List { db, fhir } => {
            let hubs = open_db(db)?.hubs()?;
            let mut out = std::io::stdout().lock();
            for h in hubs {
                if *fhir {
                    writeln!(out, "{}", h.as_fhir_device())?;
                } else {
                    writeln!(
                        out,
                        "{}\tpatient {}\t{}\tenrolled {}\t{}\t{}",
                        h.hub_id,
                        h.patient,
                        h.fingerprint,
                        h.enrolled,
                        h.revoked
                            .as_deref()
                            .map(|r| format!("REVOKED {r}"))
                            .unwrap_or_else(|| "active".into()),
                        h.subject
                    )?;
                }
            }
        }
        HubCommand::Revoke { db, hub, crl } => {
            let n = open_db(db)?.revoke(hub)?;
            if n == 0 {
                anyhow::bail!(
                    "no active certificate of {hub} in {}; see `vitals-clinic hub list --db {}`",
                    db.display(),
                    db.display()
                );
            }
            println!(
                "revoked {n} certificate(s) of {hub}; a running clinic refuses them within {} s",
                registry::RELOAD_EVERY.as_secs()
            );
            match write_crl(db, crl)? {
                Some(k) => println!(
                    "wrote the CRL {} ({k} revoked certificate(s) listed)",
                    crl.path.as_deref().unwrap_or(Path::new("")).display()
                ),
                None => eprintln!(
                    "note: no --crl given; a TLS terminator in front (nginx `ssl_crl`) still accepts these certificates until the CRL is written (`vitals-clinic hub crl`)"
                ),
            }
        }
        HubCommand::Crl { db, crl } => match write_crl(db, crl)? {
            Some(k) => println!(
                "wrote the CRL {} ({k} revoked certificate(s) listed)",
                crl.path.as_deref().unwrap_or(Path::new("")).display()
            ),
            None => anyhow::bail!("give --crl FILE --ca-cert CA.crt --ca-key CA.key"),
        },
    }
    Ok(())
}

fn serve_inner(args: &ServeArgs) -> anyhow::Result<()> {
    let reg = Registry::new();
    let front = match &args.fhir_base {
        Some(base) => {
            let mut fc = FrontConfig::new(base);
            fc.ca = args.fhir_ca.clone();
            fc.authorization_file = args.fhir_authorization_file.clone();
            Some(std::sync::Arc::new(
                Front::new(&fc).map_err(anyhow::Error::msg)?,
            ))
        }
        None => None,
    };
    let mut crl_watch = None;
    let listen = if let (Some(path), Some(proxy_uid)) = (&args.plain_socket, args.proxy_uid) {
        Listen::ProxiedUnix {
            path: path.clone(),
            proxy_uid,
        }
    } else if args.plain {
        let Some(f) = &args.proxy_secret_file else {
            anyhow::bail!("--plain needs --proxy-secret-file (the secret nginx sends)");
        };
        let secret = std::fs::read_to_string(f)
            .with_context(|| format!("reading the proxy secret {}", f.display()))?
            .trim()
            .to_owned();
        Listen::Proxied { secret }
    } else {
        let (Some(c), Some(k), Some(ca)) = (&args.cert, &args.key, &args.client_ca) else {
            anyhow::bail!("--cert, --key and --client-ca are required without --plain");
        };
        let (cfg, watch) =
            tls::server_config_registry_crl(c, k, ca, reg.clone(), args.crl.as_deref())
                .context("loading the clinic's TLS files")?;
        crl_watch = watch;
        Listen::Tls(cfg)
    };
    if args.crl.is_some() && crl_watch.is_none() {
        anyhow::bail!("--crl is checked by the ingest's own TLS; behind nginx give `ssl_crl` to nginx instead (packaging/clinic/nginx-mtls.conf)");
    }
    let est = match (&args.est_ca_cert, &args.est_ca_key) {
        (Some(c), Some(k)) => Some(std::sync::Arc::new(super::est::Est {
            ca: super::crl::HubCa::load(c, k)?,
            days: args.est_days,
        })),
        _ => None,
    };
    raise_fd_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let tls_mode = !args.plain && args.plain_socket.is_none();
        let limits = Limits {
            rate_per_sec: args.rate_per_hub,
            rate_burst: args.rate_per_hub * 2.0,
            ..Limits::default()
        };
        let rx = Receiver::start_with(
            ReceiverConfig {
                bind: args.listen,
                listen,
                db_path: args.db.clone(),
                faults: FaultQueue::new(),
            },
            ClinicOptions {
                access: Access::Registry(reg.clone()),
                limits,
                front: front.clone(),
                est,
                crl: crl_watch,
            },
        )
        .await?;
        if reg.is_empty() {
            eprintln!("warning: no hub is enrolled in this store; every hub is refused (enrol with `vitals-clinic hub enroll`)");
        }
        let scheme = if tls_mode { "https" } else { "http" };
        let at = match &args.plain_socket {
            Some(p) => format!("http://unix:{}", p.display()),
            None => format!("{scheme}://{}", rx.addr()),
        };
        match &front {
            Some(f) => println!("listening {at} (front for {})", f.base()),
            None => println!("listening {at}"),
        }
        let console = start_console(args, front.clone()).await?;
        let _ = std::io::stdout().flush();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        let st = rx.stats();
        eprintln!(
            "clinic stopping: {} bundles, {} created, {} existing, {} rejected, {} forbidden, {} throttled, {} shed, {} TLS refusals",
            st.bundles, st.created, st.existing, st.rejected, st.forbidden, st.throttled, st.shed, st.tls_failures
        );
        rx.shutdown().await;
        if let Some(c) = console {
            c.shutdown().await;
        }
        Ok(())
    })
}

/// The console beside the ingest, when `--console-listen` is given.
async fn start_console(
    args: &ServeArgs,
    fhir_base: Option<std::sync::Arc<Front>>,
) -> anyhow::Result<Option<super::console::Console>> {
    let (Some(bind), Some(db), Some(cert), Some(key)) = (
        args.console_listen,
        &args.db,
        &args.console_cert,
        &args.console_key,
    ) else {
        return Ok(None);
    };
    let zone = match &args.zone {
        Some(z) => Some(super::console::zone(z).map_err(|e| anyhow::anyhow!("--zone: {e}"))?),
        None => None,
    };
    let tls =
        super::console::server_config(cert, key).context("loading the console's TLS files")?;
    let c = super::console::Console::start(super::console::ConsoleConfig {
        bind,
        tls,
        db_path: db.clone(),
        worklist: super::console::worklist::WorklistSettings {
            heartbeat_interval: jiff::SignedDuration::from_mins(i64::from(args.heartbeat_minutes)),
            missed_heartbeats: i32::try_from(args.missed_heartbeats).unwrap_or(3),
            ..Default::default()
        },
        fhir_base,
        zone,
    })
    .await
    .context("starting the console")?;
    println!("console https://{}", c.addr());
    Ok(Some(c))
}

/// Raise the soft descriptor limit to the hard one: the connection cap, not the default 1,024,
/// is what bounds the clinic's connections.
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut l = getrlimit(Resource::Nofile);
    if l.current < l.maximum {
        l.current = l.maximum;
        let _ = setrlimit(Resource::Nofile, l);
    }
}
