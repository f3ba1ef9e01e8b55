//! `vitals-hub alerts …`: try alert rules on recorded readings; print the starting-point rules.

use crate::alerts::{replay, AlertRules};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};

#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// Run alert rules over a file of timed readings (JSON lines) and print each alert event
    /// (raised, escalated, resolved) as one JSON line.
    Replay(ReplayArgs),
    /// Print the documented starting-point rules as TOML (the clinician sets the real values).
    Defaults,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// A TOML file with the rules: a hub config (its `[alerts]` section is used) or the section's
    /// contents alone. Without it the documented starting points are used.
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// Readings, one JSON object a line: {"time": "2024-03-01T08:00:00Z", "kind": "glucose",
    /// "unit": "mg/dL", "value": 54, "flags": ["control_solution"]}.
    pub readings: PathBuf,
}

/// Load rules from a TOML file; errors name the file, the line and the fix.
pub fn load_rules(path: &Path) -> Result<AlertRules> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read rules file {}", path.display()))?;
    let doc: toml::Table =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("rules file {}: {e}", path.display()))?;
    let section = match doc.get("alerts") {
        Some(toml::Value::Table(t)) => t.clone(),
        Some(_) => bail!(
            "rules file {}: `alerts` must be a table ([alerts])",
            path.display()
        ),
        None => doc,
    };
    let rules: AlertRules = section.try_into().map_err(|e: toml::de::Error| {
        anyhow::anyhow!("rules file {}: [alerts] {}", path.display(), e.message())
    })?;
    if let Err(errs) = rules.validate() {
        bail!("rules file {}: {}", path.display(), errs.join("; "));
    }
    Ok(rules)
}

/// Remove every empty array from `v`'s tables.
fn drop_empty_arrays(v: &mut toml::Value) {
    if let toml::Value::Table(t) = v {
        t.retain(|_, x| !matches!(x, toml::Value::Array(a) if a.is_empty()));
        for (_, x) in t.iter_mut() {
            drop_empty_arrays(x);
        }
    }
}

pub fn run(cmd: &AlertsCommand) -> Result<()> {
    match cmd {
        AlertsCommand::Defaults => {
            let mut rules = toml::Value::try_from(AlertRules::starting_points())
                .context("render the rules as TOML")?;
            // No empty lists (`schedules = []`): the README's `[[alerts.schedules]]` tables are
            // added after this text, and TOML refuses a key set twice.
            drop_empty_arrays(&mut rules);
            let doc = std::collections::BTreeMap::from([("alerts", rules)]);
            let text = toml::to_string(&doc).context("render the rules as TOML")?;
            println!("# Documented starting points, not clinical advice: the clinician sets the real values.");
            print!("{text}");
            Ok(())
        }
        AlertsCommand::Replay(args) => {
            let rules = match &args.rules {
                Some(p) => load_rules(p)?,
                None => {
                    eprintln!("vitals-hub alerts replay: no --rules given; using the documented starting points");
                    AlertRules::starting_points()
                }
            };
            let text = std::fs::read_to_string(&args.readings).with_context(|| {
                format!("cannot read readings file {}", args.readings.display())
            })?;
            let readings = replay::parse(&text)
                .map_err(|e| anyhow::anyhow!("readings file {}: {e}", args.readings.display()))?;
            for event in replay::run(&rules, &readings) {
                println!("{}", replay::event_json(&event));
            }
            Ok(())
        }
    }
}
