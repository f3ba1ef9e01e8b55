//! `vitals-hub commission`: the install report, printed and sent to the clinic.

use super::start::{open_store, start, Access, Start};
use crate::model::{Clock, SystemClock};
use crate::tech::commission;
use clap::Args;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct CommissionArgs {
    /// Seconds to scan for the devices' signal strength (0: no scan).
    #[arg(long, default_value_t = 5)]
    pub scan_seconds: u64,
    /// Print only; do not send the report to the clinic.
    #[arg(long)]
    pub no_upload: bool,
    #[arg(long)]
    pub json: bool,
    #[arg(long)]
    pub config: Option<PathBuf>,
}

pub fn run(args: &CommissionArgs) -> ExitCode {
    let Start { cfg, rt, .. } = match start("commission", args.config.as_deref()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let r = rt.block_on(async {
        // Signal strength of the paired devices (none when there is no radio).
        let mut rssi = HashMap::new();
        if args.scan_seconds > 0 {
            if let Ok(seen) = crate::ble::tech::scan(
                cfg.ble.adapter.as_deref(),
                Duration::from_secs(args.scan_seconds),
                None,
            )
            .await
            {
                for s in seen {
                    if let Some(v) = s.rssi {
                        rssi.insert(s.address, v);
                    }
                }
            }
        }
        let checks = commission::check_lines(&crate::tech::doctor::run(&cfg).await);
        let store = open_store(&cfg, Access::BesideDaemon, Arc::new(SystemClock)).await?;
        let report = commission::build(&cfg, &store, &rssi, checks, SystemClock.now())
            .await
            .map_err(|e| e.to_string());
        let queued = match &report {
            Ok(r) if !args.no_upload => Some(
                commission::queue(&store, r)
                    .await
                    .map_err(|e| e.to_string()),
            ),
            _ => None,
        };
        store.close().await;
        let report = report?;
        // Deliver it now when the daemon is not running (it would otherwise within seconds).
        let sent = match queued {
            Some(Ok(_)) => match crate::tech::wipe::hold_lock(&cfg.state_dir()) {
                Ok(Some(lock)) => {
                    let r = super::sync::drain(&cfg, Duration::from_secs(60)).await;
                    drop(lock);
                    Some(r.map(|(_, _, left)| left == 0).unwrap_or(false))
                }
                _ => None,
            },
            Some(Err(e)) => return Err(format!("the report could not be stored for upload: {e}")),
            None => None,
        };
        Ok::<_, String>((report, sent))
    });
    match r {
        Ok((report, sent)) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                print!("{}", commission::text(&report));
                println!();
                match (args.no_upload, sent) {
                    (true, _) => println!("not sent to the clinic (--no-upload)"),
                    (false, Some(true)) => println!("sent to the clinic and acknowledged"),
                    (false, Some(false)) => println!(
                        "stored for upload but not delivered now (the clinic unreachable or the clock not synchronised: \
                         see the checks above); the daemon sends it when it can"
                    ),
                    (false, None) => println!("stored for upload; the running daemon sends it within seconds"),
                }
            }
            if report.pass {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("vitals-hub commission: {e}");
            ExitCode::FAILURE
        }
    }
}
