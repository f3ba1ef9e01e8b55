//! `vitals-hub pki DIR`: mint a development PKI and enrol its hub in `DIR/clinic.db` (the store
//! `vitals-clinic serve --db` reads). NOT FOR PRODUCTION.

use crate::clinic::pki::{write_dev_pki, DEV_RECEIVER_NAMES};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct PkiArgs {
    /// Folder to write ca.crt, receiver.{crt,key}, hub.{crt,key} into.
    pub dir: PathBuf,
    /// DNS names / IP addresses of the receiver certificate (default: the names every development
    /// receiver certificate carries, `localhost` and `127.0.0.1`).
    #[arg(long = "name", default_values = DEV_RECEIVER_NAMES)]
    pub names: Vec<String>,
    /// The hub's id (the client certificate's common name).
    #[arg(long, default_value = "hub-dev-0001")]
    pub hub_id: String,
    /// The patient the hub serves: its certificate is enrolled for this patient in DIR/clinic.db.
    #[arg(long, default_value = "dev-patient")]
    pub patient: String,
}

pub fn run(args: &PkiArgs) -> ExitCode {
    eprintln!("************************************************************************");
    eprintln!("*  DEVELOPMENT PKI — NOT FOR PRODUCTION. Keys are plain PEM files and  *");
    eprintln!("*  so is the CA key (ca.key). Deployed hubs use the clinic's real CA.  *");
    eprintln!("************************************************************************");
    let names: Vec<&str> = args.names.iter().map(String::as_str).collect();
    match write_dev_pki(&args.dir, &names, &args.hub_id) {
        Ok(f) => {
            let db = args.dir.join("clinic.db");
            if let Err(e) =
                crate::clinic::cli::enroll_file(&db, &f.hub_cert, &args.patient, Some(&args.hub_id))
            {
                eprintln!("error: enrolling the hub in {}: {e:#}", db.display());
                return ExitCode::FAILURE;
            }
            println!("{}", db.display());
            for p in [
                &f.ca,
                &f.receiver_cert,
                &f.receiver_key,
                &f.hub_cert,
                &f.hub_key,
            ] {
                println!("{}", p.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
