//! `vitals-hub sync --now`: upload the backlog now, with progress, and say how it went. For the
//! technician after a long outage, or before carrying a hub away; the daemon normally does this by
//! itself, so while it runs this command only reports.
//!
//! Send again (issue 15): `--resend --since DATE` queues again what the clinic acknowledged at or
//! after DATE and the hub still holds (a clinic restored from a backup), `--rejected` queues again
//! what the clinic refused (a misconfiguration since fixed); both say how many, then upload with
//! progress. Conditional creates keep the server from storing anything twice.

use super::progress::Reporter;
use super::start::{open_store, start, Access, Start};
use crate::config::Config;
use crate::model::{Clock, SystemClock, UtcMillis};

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
    /// Queue again what the clinic acknowledged at or after `--since` (still held on the hub),
    /// then upload.
    #[arg(long, requires = "since")]
    pub resend: bool,
    /// With `--resend`: `YYYY-MM-DD` (00:00 UTC) or an RFC 3339 time.
    #[arg(long, value_name = "DATE")]
    pub since: Option<String>,
    /// Queue again the entries the clinic rejected, then upload.
    #[arg(long)]
    pub rejected: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// What to queue again before uploading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requeue {
    /// Acked at or after this time.
    pub acked_since: Option<UtcMillis>,
    pub rejected: bool,
}

/// `YYYY-MM-DD` (00:00 UTC) or an RFC 3339 time.
pub fn parse_since(text: &str) -> Result<UtcMillis, String> {
    let t = text.trim();
    let full = if t.len() == 10 {
        format!("{t}T00:00:00Z")
    } else {
        t.to_owned()
    };
    UtcMillis::parse_rfc3339(&full).map_err(|e| {
        format!("--since {t:?} is not a date: {e}; write YYYY-MM-DD (UTC) or an RFC 3339 time such as 2026-03-01T08:00:00+01:00")
    })
}

pub fn run(args: &SyncArgs) -> ExitCode {
    if !(args.now || args.resend || args.rejected) {
        eprintln!(
            "vitals-hub sync: pass --now to upload the backlog now (the daemon uploads by itself), \
             --resend --since DATE to send again what the clinic acknowledged since DATE, or \
             --rejected to send again what it rejected"
        );
        return ExitCode::from(2);
    }
    let requeue = Requeue {
        acked_since: match (args.resend, args.since.as_deref()) {
            (true, Some(s)) => match parse_since(s) {
                Ok(t) => Some(t),
                Err(e) => {
                    eprintln!("vitals-hub sync: {e}");
                    return ExitCode::from(2);
                }
            },
            _ => None,
        },
        rejected: args.rejected,
    };
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
    match rt.block_on(drain_requeued(
        &cfg,
        Duration::from_secs(args.timeout.max(1)),
        requeue,
    )) {
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
    drain_requeued(cfg, limit, Requeue::default()).await
}

/// Queue again what `requeue` says (printing the counts), then upload as [`drain`] does.
pub(super) async fn drain_requeued(
    cfg: &Config,
    limit: Duration,
    requeue: Requeue,
) -> Result<(u64, u64, u64), String> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = open_store(cfg, Access::Exclusive, clock.clone()).await?;
    let now = SystemClock.now();
    if let Some(since) = requeue.acked_since {
        let n = store
            .requeue_acked_since(since, now)
            .await
            .map_err(|e| e.to_string())?;
        // The server may have lost the hub's and devices' resources too.
        if let Ok(url) = cfg.uplink.validate() {
            store
                .forget_uplink_refs(&crate::uplink::sync::destination_of(&url))
                .await
                .map_err(|e| e.to_string())?;
        }
        println!(
            "queued again {n} acknowledged entries since {} (still held on the hub)",
            since.to_rfc3339()
        );
    }
    if requeue.rejected {
        let n = store
            .requeue_rejected(now)
            .await
            .map_err(|e| e.to_string())?;
        println!("queued again {n} rejected entries");
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_date_or_an_rfc3339_time() {
        assert_eq!(
            parse_since("2026-03-01").unwrap(),
            UtcMillis::parse_rfc3339("2026-03-01T00:00:00Z").unwrap()
        );
        assert!(parse_since("2026-03-01T08:00:00+01:00").is_ok());
        let e = parse_since("last week").unwrap_err();
        assert!(e.contains("YYYY-MM-DD"), "{e}");
    }
}
