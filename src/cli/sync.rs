//! `vitals-hub sync --now`: upload the backlog now, with progress, and say how it went. For the
//! technician after a long outage, or before carrying a hub away; the daemon normally does this by
//! itself, so while it runs this command only reports.

use super::progress::Reporter;
use super::start::{open_store, start, Access, Start};
use crate::config::Config;
use crate::model::{Clock, SystemClock};

use crate::uplink::sync::{Step, Uplink};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Upload now (required: the daemon uploads by itself otherwise).
    #[arg(long)]
    pub now: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    #[arg(long)]
    pub config: Option<PathBuf>,
}

pub fn run(args: &SyncArgs) -> ExitCode {
    if !args.now {
        eprintln!(
            "vitals-hub sync: pass --now to upload the backlog now (the daemon uploads by itself)"
        );
        return ExitCode::from(2);
    }
    let st = match start("sync", args.config.as_deref()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    // The daemon holds the state directory's lock: it is uploading already.
    let _lock = match st.lock(
        "the daemon is running and uploads as soon as readings arrive; \
         `vitals-hub status` shows its backlog and last sync",
    ) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let Start { cfg, rt, .. } = st;
    match rt.block_on(drain(&cfg, Duration::from_secs(args.timeout.max(1)))) {
        Ok((acked, rejected, left)) => {
            println!("uploaded {acked}, refused by the clinic {rejected}, still waiting {left}");
            if left == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("vitals-hub sync: {e}");
            ExitCode::FAILURE
        }
    }
}

pub(super) async fn drain(cfg: &Config, limit: Duration) -> Result<(u64, u64, u64), String> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = open_store(cfg, Access::Exclusive, clock.clone()).await?;
    let time_sync = cfg.uplink.time_sync();
    let result = async {
        let hub = crate::uplink::hub_info(&cfg.uplink).map_err(|e| e.to_string())?;
        let mut up = Uplink::new(cfg.uplink.clone(), store.clone(), clock, time_sync, hub)
            .map_err(|e| e.to_string())?
            .with_alert_rules(cfg.alerts.clone());
        store
            .due_now(SystemClock.now())
            .await
            .map_err(|e| e.to_string())?;
        let waiting = |s: &crate::store::Stats| s.pending + s.in_flight;
        let first = waiting(&store.stats().await.map_err(|e| e.to_string())?);
        let mut bar = Reporter::new("sync", "entries uploaded", 1_000);
        let (mut acked, mut rejected) = (0u64, 0u64);
        let start = Instant::now();
        let mut last_error = None;
        while start.elapsed() < limit {
            match up.step().await {
                Ok(Step::Delivered {
                    acked: a,
                    rejected: r,
                }) => {
                    acked += a as u64;
                    rejected += r as u64;
                    bar.update(acked + rejected, first.max(acked + rejected));
                }
                Ok(Step::Idle) => break,
                Err(e) if e.is_transient() => {
                    last_error = Some(e.to_string());
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        bar.finish();
        let left = waiting(&store.stats().await.map_err(|e| e.to_string())?);
        if left > 0 {
            if let Some(e) = last_error {
                return Err(format!("{left} entries still waiting; last error: {e}"));
            }
        }
        Ok((acked, rejected, left))
    }
    .await;
    store.close().await;
    result
}
