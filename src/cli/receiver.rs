//! `vitals-hub receiver`: the small FHIR ingest endpoint (mTLS, or plain HTTP on loopback behind
//! nginx).

use crate::receiver::{tls, FaultQueue, Listen, Receiver, ReceiverConfig};
use anyhow::Context;
use clap::Args;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct ReceiverArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Receiver certificate (PEM), e.g. from `vitals-hub pki`.
    #[arg(long, required_unless_present = "plain")]
    pub cert: Option<PathBuf>,
    /// Receiver private key (PEM).
    #[arg(long, required_unless_present = "plain")]
    pub key: Option<PathBuf>,
    /// CA whose hub client certificates are accepted (PEM).
    #[arg(long, required_unless_present = "plain")]
    pub client_ca: Option<PathBuf>,
    /// Plain HTTP on a loopback address, behind a TLS terminator that verifies hub certificates.
    #[arg(long)]
    pub plain: bool,
    /// SQLite file for received resources (default: in memory).
    #[arg(long)]
    pub db: Option<PathBuf>,
}

pub fn run(args: &ReceiverArgs) -> ExitCode {
    match run_inner(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_inner(args: &ReceiverArgs) -> anyhow::Result<()> {
    let listen = if args.plain {
        Listen::PlainLoopback
    } else {
        let (Some(c), Some(k), Some(ca)) = (&args.cert, &args.key, &args.client_ca) else {
            anyhow::bail!("--cert, --key and --client-ca are required without --plain");
        };
        Listen::Tls(tls::server_config(c, k, ca).context("loading the receiver's TLS files")?)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let tls_mode = !args.plain;
        let rx = Receiver::start(ReceiverConfig {
            bind: args.listen,
            listen,
            db_path: args.db.clone(),
            faults: FaultQueue::new(),
        })
        .await?;
        let scheme = if tls_mode { "https" } else { "http" };
        println!("listening {scheme}://{}", rx.addr());
        let _ = std::io::stdout().flush();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        let st = rx.stats();
        eprintln!(
            "receiver stopping: {} bundles, {} created, {} existing, {} rejected, {} TLS refusals",
            st.bundles, st.created, st.existing, st.rejected, st.tls_failures
        );
        rx.shutdown().await;
        Ok(())
    })
}
