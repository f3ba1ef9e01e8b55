//! `vitals-hub held list | assign ID | discard ID`: readings of another user on a multi-user
//! device, held out of the patient's data until someone decides (the operation is
//! [`crate::tech::held`]). `list` is read-only beside the daemon; `assign` and `discard` write,
//! and `assign` runs the alert rules, so both take the daemon's lock (stop the daemon first).

use super::start::{open_store, start, Access, Start};
use crate::model::{Clock, SystemClock};
use crate::tech::held;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Debug, Subcommand)]
pub enum HeldCommand {
    /// The held readings: id, device, user index, kind, value, device time, reception time.
    List(HeldListArgs),
    /// Give held reading ID to the patient (it is uploaded and goes through the alert rules).
    Assign(HeldIdArgs),
    /// Drop held reading ID (not the patient's); the device sending it again does not bring it
    /// back.
    Discard(HeldIdArgs),
}

#[derive(Debug, Args)]
pub struct HeldListArgs {
    /// The config file (default as for `run`).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct HeldIdArgs {
    /// The id `vitals-hub held list` shows.
    pub id: i64,
    /// The config file (default as for `run`).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

pub fn run(cmd: &HeldCommand) -> ExitCode {
    match cmd {
        HeldCommand::List(a) => list(a),
        HeldCommand::Assign(a) => assign(a),
        HeldCommand::Discard(a) => discard(a),
    }
}

fn clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

fn finish(name: &str, r: Result<String, String>) -> ExitCode {
    match r {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vitals-hub {name}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn list(a: &HeldListArgs) -> ExitCode {
    let st = match start("held list", a.config.as_deref()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let Start { name, cfg, rt } = st;
    let r = rt.block_on(async {
        let store = open_store(&cfg, Access::ReadOnly, clock()).await?;
        let held = held::list(&store).await.map_err(|e| e.to_string())?;
        Ok(held::render(&held))
    });
    finish(name, r)
}

fn assign(a: &HeldIdArgs) -> ExitCode {
    let st = match start("held assign", a.config.as_deref()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let _lock = match st
        .lock("the daemon is running: stop it (systemctl stop vitals-hub), assign, start it")
    {
        Ok(l) => l,
        Err(code) => return code,
    };
    let Start { name, cfg, rt } = st;
    let r = rt.block_on(async {
        let store = open_store(&cfg, Access::Exclusive, clock()).await?;
        let ingest = crate::daemon::Ingest::open(
            store.clone(),
            crate::daemon::IngestConfig {
                rules: cfg.alerts.clone(),
                patient_id: cfg.hub.patient_id.clone(),
                utc_offset_minutes: cfg.hub.utc_offset_minutes,
                zone: cfg.ble.zone.clone(),
            },
        )
        .await
        .map_err(|e| e.to_string())?;
        let done = held::assign(&ingest, a.id)
            .await
            .map_err(|e| e.to_string())?;
        Ok(format!(
            "Held reading {} assigned to the patient (reading {}); {} alert event(s).\n",
            a.id,
            done.reading_id,
            done.alerts.len()
        ))
    });
    finish(name, r)
}

fn discard(a: &HeldIdArgs) -> ExitCode {
    let st = match start("held discard", a.config.as_deref()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let _lock = match st
        .lock("the daemon is running: stop it (systemctl stop vitals-hub), discard, start it")
    {
        Ok(l) => l,
        Err(code) => return code,
    };
    let Start { name, cfg, rt } = st;
    let r = rt.block_on(async {
        let store = open_store(&cfg, Access::Exclusive, clock()).await?;
        held::discard(&store, a.id)
            .await
            .map_err(|e| e.to_string())?;
        Ok(format!("Held reading {} discarded.\n", a.id))
    });
    finish(name, r)
}
