//! `vitals-clinic user add|disable|passwd|list`: the console's accounts. A password is read from
//! standard input — typed at a prompt with the echo off when it is a terminal, else its first
//! line — never from the command line (argv is visible to every user of the machine).

use super::users::{Role, UserStore};
use anyhow::Context;
use clap::Subcommand;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a console account; the password is read from standard input.
    Add {
        /// The clinic's store.
        #[arg(long)]
        db: PathBuf,
        /// clinician or admin.
        #[arg(long, default_value = "clinician")]
        role: String,
        /// The account name (a-z 0-9 . _ -).
        name: String,
    },
    /// Disable an account: no more logins, its sessions end at their next request.
    Disable {
        #[arg(long)]
        db: PathBuf,
        name: String,
    },
    /// Set a new password (read from standard input); enables a disabled account.
    Passwd {
        #[arg(long)]
        db: PathBuf,
        name: String,
    },
    /// The accounts: name, role, enabled or disabled.
    List {
        #[arg(long)]
        db: PathBuf,
    },
}

/// `vitals-clinic bench console`: page latency figures on a generated built-in store.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[arg(long, default_value_t = 1000)]
    pub patients: usize,
    #[arg(long, default_value_t = 30)]
    pub days: i64,
    /// Hours of 15-minute heartbeats stored per hub (720: the 30 days of issue 17's figure).
    #[arg(long, default_value_t = 720)]
    pub heartbeat_hours: i64,
    /// Page loads timed per page.
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
}

/// Run `bench console`.
pub fn bench(a: &BenchArgs) -> anyhow::Result<()> {
    super::bench::run(&super::bench::BenchSpec {
        patients: a.patients.max(1),
        days: a.days.clamp(1, 30),
        heartbeat_hours: a.heartbeat_hours.clamp(1, 24 * 30),
        runs: a.runs.max(1),
    })
}

fn open(db: &Path) -> anyhow::Result<UserStore> {
    UserStore::open(db).with_context(|| format!("opening the clinic store {}", db.display()))
}

/// Run a `user` subcommand.
pub fn run(c: &UserCommand) -> anyhow::Result<()> {
    match c {
        UserCommand::Add { db, role, name } => {
            let role = Role::parse(role).with_context(|| {
                format!("--role {role:?} is not a role; use clinician or admin")
            })?;
            let mut s = open(db)?;
            if !super::users::valid_name(name) {
                anyhow::bail!("{}", super::users::UserError::BadName(name.clone()));
            }
            let pw = read_password(&format!("password for {name}"))?;
            s.add(name, role, &pw)?;
            println!("added {} user {name}", role.as_str());
        }
        UserCommand::Disable { db, name } => {
            open(db)?.disable(name)?;
            println!("disabled {name}; a running console ends its sessions at their next request");
        }
        UserCommand::Passwd { db, name } => {
            let mut s = open(db)?;
            if s.get(name)?.is_none() {
                anyhow::bail!("{}", super::users::UserError::NoSuchUser(name.clone()));
            }
            let pw = read_password(&format!("new password for {name}"))?;
            s.set_password(name, &pw)?;
            println!("password of {name} changed");
        }
        UserCommand::List { db } => {
            for u in open(db)?.list()? {
                println!(
                    "{}\t{}\t{}",
                    u.name,
                    u.role.as_str(),
                    if u.disabled { "disabled" } else { "enabled" }
                );
            }
        }
    }
    Ok(())
}

/// The password: typed twice at a prompt without echo on a terminal, else the first line of
/// standard input.
fn read_password(what: &str) -> anyhow::Result<Zeroizing<String>> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = Zeroizing::new(String::new());
        stdin
            .lock()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        let pw = Zeroizing::new(line.trim_end_matches(['\n', '\r']).to_owned());
        if pw.is_empty() {
            anyhow::bail!(
                "no password on standard input; pipe one line, or run in a terminal to be prompted"
            );
        }
        return Ok(pw);
    }
    let first = prompt_hidden(&format!("{what}: "))?;
    let second = prompt_hidden("again: ")?;
    if *first != *second {
        anyhow::bail!("the two passwords differ; nothing changed");
    }
    Ok(first)
}

fn prompt_hidden(prompt: &str) -> anyhow::Result<Zeroizing<String>> {
    use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
    let stdin = std::io::stdin();
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let saved = tcgetattr(&stdin).context("reading the terminal's settings")?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    tcsetattr(&stdin, OptionalActions::Now, &quiet).context("turning the echo off")?;
    let mut line = Zeroizing::new(String::new());
    let r = stdin.lock().read_line(&mut line);
    let _ = tcsetattr(&stdin, OptionalActions::Now, &saved);
    eprintln!();
    r.context("reading the password")?;
    Ok(Zeroizing::new(
        line.trim_end_matches(['\n', '\r']).to_owned(),
    ))
}
