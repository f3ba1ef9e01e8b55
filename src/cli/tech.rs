//! The technician's commands: `status`. Thin: load the config, call [`crate::hub::tech`], print.

use super::daemon::{init_logging_default, load, runtime};
use crate::hub::tech;
use crate::model::{Clock, SystemClock};
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
    let cfg = match load(args.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vitals-hub status: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
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
