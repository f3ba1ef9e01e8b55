//! The technician's commands: `status`, `export`. Thin: load the config, call [`crate::hub::tech`], print.

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
    pub format: crate::hub::export::Format,
    /// Write here instead of stdout (created 0600: it holds the patient's data).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn export(args: &ExportArgs) -> ExitCode {
    use crate::hub::export::{self, Range};
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
    let cfg = match load(args.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut out: Box<dyn std::io::Write> = match &args.out {
        Some(p) => {
            use std::os::unix::fs::OpenOptionsExt;
            match std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(p)
            {
                Ok(f) => Box::new(std::io::BufWriter::new(f)),
                Err(e) => {
                    eprintln!("vitals-hub export: cannot create {}: {e}", p.display());
                    return ExitCode::FAILURE;
                }
            }
        }
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vitals-hub export: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
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
        let r = export::export(&store, &cfg, range, args.format, &mut out, &mut progress).await;
        store.close().await;
        r
    });
    reporter.finish();
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
    use crate::hub::wipe;
    let cfg = match load(args.config.as_deref()) {
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
