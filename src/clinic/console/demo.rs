//! The console of `vitals-hub demo`: its own development certificate (a CA of its own, not the
//! hub CA), a one-off login whose password is new at every start, on a free local port.

use super::users::{random_bytes, Role, UserStore};
use super::{server_config, Console, ConsoleConfig};
use crate::clinic::pki::{DevCa, Span, DEV_RECEIVER_NAMES};
use anyhow::Context;
use std::path::Path;

/// The demo's console account.
pub const DEMO_USER: &str = "demo";

/// A running demo console and its one-off login.
#[derive(Debug)]
pub struct DemoConsole {
    pub console: Console,
    pub user: &'static str,
    pub password: String,
}

impl DemoConsole {
    /// The one line the demo prints.
    pub fn line(&self) -> String {
        format!(
            "console: https://localhost:{}/  user: {}  password: {}",
            self.console.addr().port(),
            self.user,
            self.password
        )
    }
}

/// Mint (or reuse) the console's certificate in `pki_dir/console`, set the demo account's password
/// anew in the store at `db`, and start the console on 127.0.0.1 (any free port).
pub async fn start(pki_dir: &Path, db: &Path) -> anyhow::Result<DemoConsole> {
    let dir = pki_dir.join("console");
    let (cert, key) = (dir.join("console.crt"), dir.join("console.key"));
    if !cert.exists() || !key.exists() {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let ca = DevCa::new("vitals-clinic console dev CA")?;
        std::fs::write(dir.join("console-ca.crt"), &ca.cert_pem)
            .with_context(|| format!("writing {}", dir.display()))?;
        ca.server(DEV_RECEIVER_NAMES, Span::DEFAULT)?
            .write(&dir, "console")?;
    }
    let password = hex::encode(random_bytes::<12>()?);
    let (db2, pw) = (db.to_path_buf(), password.clone());
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut u = UserStore::open(&db2)?;
        if u.get(DEMO_USER)?.is_some() {
            u.set_password(DEMO_USER, &pw)?;
        } else {
            u.add(DEMO_USER, Role::Clinician, &pw)?;
        }
        Ok(())
    })
    .await
    .context("setting the demo login")??;
    let console = Console::start(ConsoleConfig {
        bind: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        tls: server_config(&cert, &key)?,
        db_path: db.to_path_buf(),
        worklist: Default::default(),
        fhir_base: None,
        zone: None,
    })
    .await
    .context("starting the console")?;
    Ok(DemoConsole {
        console,
        user: DEMO_USER,
        password,
    })
}
