//! The technician's radio commands: `scan`, `pair`, `unpair`, `devices`.

use super::daemon::{load, runtime};
use super::start::{start, Access, Start};
use crate::ble::tech::{self as radio, Seen};
use crate::config::Config;
use crate::model::{Clock, SystemClock, UtcMillis};
use crate::store::Store;
use clap::Args;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Exit status when the radio or the device failed (no adapter, pairing refused, …).
pub const EXIT_DEVICE: u8 = 3;

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// How long to listen.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// List every device seen, not only health devices.
    #[arg(long)]
    pub all: bool,
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PairArgs {
    /// The device's Bluetooth address (see `vitals-hub scan`).
    pub address: String,
    /// The device's name in the config (alert schedules refer to it); default: its profile.
    #[arg(long)]
    pub name: Option<String>,
    /// Let the hub set the device's clock (Current Time Service) now and on every session.
    #[arg(long)]
    pub set_clock: bool,
    /// The passkey the device shows (default: asked for when the device wants one).
    #[arg(long)]
    pub passkey: Option<u32>,
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReadArgs {
    /// The paired device's Bluetooth address.
    pub address: String,
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct UnpairArgs {
    pub address: String,
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DevicesArgs {
    #[arg(long)]
    pub json: bool,
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// The store beside a daemon that may be running: writes allowed, its in-flight uploads left
/// alone; `read_only` for listing.
async fn open_store_mode(cfg: &Config, read_only: bool) -> Result<Store, String> {
    let access = if read_only {
        Access::ReadOnly
    } else {
        Access::BesideDaemon
    };
    super::start::open_store(cfg, access, Arc::new(SystemClock)).await
}

async fn open_store(cfg: &Config) -> Result<Store, String> {
    open_store_mode(cfg, false).await
}

fn fail(code: u8, msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("vitals-hub: {msg}");
    ExitCode::from(code)
}

pub fn scan(args: &ScanArgs) -> ExitCode {
    let store_cfg = load(args.config.as_deref()).ok();
    let Ok(rt) = runtime() else {
        return fail(1, "cannot start the async runtime");
    };
    let r: Result<Vec<Seen>, String> = rt.block_on(async {
        let store = match &store_cfg {
            Some(c) => open_store(c).await.ok(),
            None => None,
        };
        let port = store.clone().map(crate::daemon::HubPort::new);
        let adapter = store_cfg.as_ref().and_then(|c| c.ble.adapter.clone());
        let seen = radio::scan(
            adapter.as_deref(),
            Duration::from_secs(args.seconds.max(1)),
            port.as_ref().map(|p| p as &dyn crate::ble::Port),
        )
        .await
        .map_err(|e| e.to_string());
        drop(port);
        if let Some(s) = store {
            s.close().await;
        }
        seen
    });
    let seen = match r {
        Ok(s) => s,
        Err(e) => return fail(EXIT_DEVICE, e),
    };
    let shown: Vec<&Seen> = seen.iter().filter(|s| args.all || s.is_health()).collect();
    println!(
        "{:<17}  {:>5}  {:<24}  {:<28}  status",
        "address", "rssi", "name", "profile"
    );
    for s in &shown {
        let profile = if !s.profiles.is_empty() {
            s.profiles.join(", ")
        } else if !s.unsupported.is_empty() {
            format!("{} (NOT SUPPORTED)", s.unsupported.join(", "))
        } else {
            "-".into()
        };
        let status = match (s.allow_listed, s.paired) {
            (true, true) => "paired with this hub",
            (true, false) => "allow-listed, bond missing: pair again",
            (false, true) => "bonded in BlueZ, not on the allow-list",
            (false, false) if !s.profiles.is_empty() => "not paired",
            _ => "",
        };
        println!(
            "{:<17}  {:>5}  {:<24}  {:<28}  {status}",
            s.address,
            s.rssi.map(|r| r.to_string()).unwrap_or_else(|| "-".into()),
            s.name.clone().unwrap_or_else(|| "-".into()),
            profile
        );
    }
    println!(
        "{} health device(s) of {} seen in {} s",
        seen.iter().filter(|s| s.is_health()).count(),
        seen.len(),
        args.seconds.max(1)
    );
    ExitCode::SUCCESS
}

/// The passkey: from the flag, else asked on the terminal, else read from stdin (scripts).
fn passkey_source(flag: Option<u32>) -> crate::ble::pairing::PasskeySource {
    Arc::new(move || {
        if let Some(p) = flag {
            return Some(p);
        }
        let tty = std::io::stdin().is_terminal();
        if tty {
            print!("The device asks for a passkey: type the 6 digits it shows: ");
            let _ = std::io::stdout().flush();
        }
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).ok()?;
        line.trim().parse().ok()
    })
}

pub fn pair(args: &PairArgs) -> ExitCode {
    let Start { cfg, rt, .. } = match start("pair", args.config.as_deref()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let r = rt.block_on(async {
        let store = open_store(&cfg).await?;
        let port = Arc::new(crate::daemon::HubPort::new(store.clone()));
        let hub = radio_hub(&cfg, &store, port.clone()).await?;
        let name = args.name.clone().unwrap_or_default();
        let r = hub
            .pair_device(
                port.as_ref(),
                &args.address,
                &name,
                &cfg.hub.patient_id,
                args.set_clock,
                passkey_source(args.passkey),
            )
            .await
            .map_err(|e| e.to_string());
        // A name given afterwards: the profile when none was chosen.
        if let (Ok(p), true) = (&r, name.is_empty()) {
            if let Ok(Some(mut d)) = store.device_by_address(&p.address).await {
                d.record.name = Some(p.profile.to_string());
                let _ = store.upsert_device(d.record, true).await;
            }
        }
        drop(hub);
        drop(port);
        store.close().await;
        r
    });
    match r {
        Ok(p) => {
            println!("paired {} ({})", p.address, p.profile);
            let name = args.name.clone().unwrap_or_else(|| p.profile.to_string());
            println!(
                "  name: {name} (settings in hub.toml go under [[device]] name = \"{name}\"; \
                 the address stays in the hub's encrypted store)"
            );
            println!(
                "  bond: paired={} bonded={} trusted={} security={}",
                p.bond.paired, p.bond.bonded, p.bond.trusted, p.bond.security
            );
            match p.clock_offset_s {
                Some(o) if p.clock_written => {
                    println!("  device clock was {o:+} s off the hub's; set to the hub's time")
                }
                Some(o) => println!("  device clock is {o:+} s off the hub's (not set)"),
                None => println!("  the device has no readable clock"),
            }
            println!("  on the allow-list for this hub's patient; the hub reads it from now on");
            ExitCode::SUCCESS
        }
        Err(e) => fail(EXIT_DEVICE, e),
    }
}

pub fn unpair(args: &UnpairArgs) -> ExitCode {
    let Start { cfg, rt, .. } = match start("unpair", args.config.as_deref()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let r = rt.block_on(async {
        let store = open_store(&cfg).await?;
        let port = crate::daemon::HubPort::new(store.clone());
        let r = radio::unpair(&port, cfg.ble.adapter.as_deref(), &args.address)
            .await
            .map_err(|e| e.to_string());
        drop(port);
        store.close().await;
        r
    });
    match r {
        Ok(true) => {
            println!(
                "{}: off the allow-list and the bond removed; its stored readings are still uploaded",
                args.address.to_ascii_uppercase()
            );
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!(
                "{}: the hub did not know this device; its BlueZ bond (if any) was removed",
                args.address.to_ascii_uppercase()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(EXIT_DEVICE, e),
    }
}

fn ago(now: UtcMillis, t: Option<UtcMillis>) -> String {
    match t {
        None => "never".into(),
        Some(t) => {
            let s = (now.as_millis() - t.as_millis()).max(0) / 1000;
            match s {
                0..=119 => format!("{s} s ago"),
                120..=7199 => format!("{} min ago", s / 60),
                7200..=172_799 => format!("{} h ago", s / 3600),
                _ => format!("{} days ago", s / 86_400),
            }
        }
    }
}

pub fn devices(args: &DevicesArgs) -> ExitCode {
    let Start { cfg, rt, .. } = match start("devices", args.config.as_deref()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let r = rt.block_on(async {
        let store = open_store_mode(&cfg, true).await?;
        let mut rows = Vec::new();
        let last = store.last_received().await.map_err(|e| e.to_string())?;
        for d in store.devices().await.map_err(|e| e.to_string())? {
            if !d.allowed {
                continue;
            }
            let info = store
                .device_info(&d.key)
                .await
                .map_err(|e| e.to_string())?
                .unwrap_or_default();
            rows.push((d.clone(), info, last.get(&d.key).copied()));
        }
        store.close().await;
        Ok::<_, String>(rows)
    });
    let rows = match r {
        Ok(r) => r,
        Err(e) => return fail(1, e),
    };
    let now = SystemClock.now();
    let schedule = |name: &str| {
        cfg.alerts
            .schedules
            .iter()
            .find(|s| s.device == name)
            .map(|s| format!("{} a day", s.per_day))
    };
    let security = |bond: &Option<String>| {
        if bond.as_deref() == Some("simulated") {
            return "simulated (no bond)".to_string();
        }
        bond.as_deref()
            .and_then(|b| b.split(';').find_map(|kv| kv.strip_prefix("security=")))
            .unwrap_or(if bond.is_some() { "unknown" } else { "no bond" })
            .to_string()
    };
    if args.json {
        let list: Vec<serde_json::Value> = rows
            .iter()
            .map(|(d, info, last)| {
                let name = d.record.name.clone().unwrap_or_default();
                serde_json::json!({
                    "name": name,
                    "address": d.record.address,
                    "profile": d.record.profile,
                    "last_seen": info.last_seen.map(|t| t.as_millis()),
                    "last_reading_received": last.map(|t| t.as_millis()),
                    "battery_percent": info.battery_percent,
                    "bond_security": security(&d.record.bond),
                    "schedule": schedule(&name),
                    "simulated": d.record.bond.as_deref() == Some("simulated"),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(list));
        return ExitCode::SUCCESS;
    }
    println!(
        "{:<16} {:<15} {:<17} {:<14} {:<14} {:>7}  {:<26} schedule",
        "name", "profile", "address", "last seen", "last reading", "battery", "bond"
    );
    for (d, info, last) in &rows {
        let name = d.record.name.clone().unwrap_or_else(|| "-".into());
        println!(
            "{:<16} {:<15} {:<17} {:<14} {:<14} {:>7}  {:<26} {}",
            name,
            d.record.profile,
            d.record.address,
            ago(now, info.last_seen),
            ago(now, *last),
            info.battery_percent
                .map(|b| format!("{b} %"))
                .unwrap_or_else(|| "-".into()),
            security(&d.record.bond),
            schedule(&name).unwrap_or_else(|| "-".into())
        );
    }
    println!("{} device(s) on the allow-list", rows.len());
    ExitCode::SUCCESS
}

/// A BLE hub for the technician's commands: sessions hand over through `port`, logs tag
/// addresses with the store's key.
async fn radio_hub(
    cfg: &Config,
    store: &Store,
    port: Arc<crate::daemon::HubPort>,
) -> Result<crate::ble::Hub, String> {
    let key = store.address_tag_key().await.map_err(|e| e.to_string())?;
    Ok(crate::ble::Hub::new(
        cfg.ble.clone(),
        port,
        Arc::new(SystemClock),
        crate::ble::AddressTags::new(&key),
    ))
}

/// `vitals-hub read ADDRESS`: download a paired device now (a meter's stored records), with
/// progress; refused while the daemon runs (it reads the device by itself).
pub fn read(args: &ReadArgs) -> ExitCode {
    let st = match start("read", args.config.as_deref()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let _lock = match st.lock(
        "the daemon is running and reads the device by itself; stop the unit first \
         (`systemctl stop vitals-hub`) to read it from here",
    ) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let Start { cfg, rt, .. } = st;
    let r = rt.block_on(async {
        let store = open_store(&cfg).await?;
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
        let counts = Arc::new((
            std::sync::atomic::AtomicU64::new(0),
            std::sync::atomic::AtomicU64::new(0),
            std::sync::Mutex::new(super::progress::Reporter::open_ended(
                "read",
                "records received",
                100,
            )),
        ));
        let c = counts.clone();
        let port = crate::daemon::HubPort::new(store.clone())
            .with_ingest(Arc::new(ingest))
            .with_observer(Arc::new(move |n, new| {
                use std::sync::atomic::Ordering;
                let seen = c.0.fetch_add(n, Ordering::SeqCst) + n;
                c.1.fetch_add(new, Ordering::SeqCst);
                if let Ok(mut r) = c.2.lock() {
                    r.count(seen);
                }
            }));
        let hub = radio_hub(&cfg, &store, Arc::new(port)).await?;
        let (_stop, rx) = tokio::sync::watch::channel(false);
        let outcome = hub
            .read_now(&args.address, rx)
            .await
            .map_err(|e| e.to_string());
        if let Ok(r) = counts.2.lock() {
            r.finish();
        }
        drop(hub);
        let counts = (
            counts.0.load(std::sync::atomic::Ordering::SeqCst),
            counts.1.load(std::sync::atomic::Ordering::SeqCst),
        );
        outcome.map(|o| (o, counts))
    });
    match r {
        Ok((crate::ble::Outcome::Done { .. }, (seen, stored))) => {
            println!(
                "{}: {seen} readings received, {stored} new (stored encrypted; the daemon uploads them)",
                args.address.to_ascii_uppercase()
            );
            ExitCode::SUCCESS
        }
        Ok((other, (seen, stored))) => fail(
            EXIT_DEVICE,
            format!(
                "{}: the session ended {other:?} after {seen} readings ({stored} new, all kept)",
                args.address.to_ascii_uppercase()
            ),
        ),
        Err(e) => fail(EXIT_DEVICE, e),
    }
}
