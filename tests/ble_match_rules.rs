//! D-Bus match rules the hub leaves registered, counted by the reference broker: `dbus-daemon`
//! (Debian's `dbus` package) started with a private session config, asked through
//! `org.freedesktop.DBus.Debug.Stats.GetAllMatchRules` (compiled into Debian's build). The fake
//! BlueZ runs on that bus, and the hub scans in short windows with no cooldown, so every window
//! runs a session; the rules btleplug registers (`sender='org.bluez'`) must stay bounded.
//!
//! Without `dbus-daemon` the test is skipped with a message, except under `CI=true`, where that is
//! a failure (`.ci/run` installs it).
//!
//! Figures: `cargo test --test ble_match_rules -- --nocapture` prints `FIGURE` lines.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "fake_bluez/mod.rs"]
mod fake_bluez;

use fake_bluez::devices::{glucose_meter, GlucoseMeter};
use fake_bluez::harness::{fast_config, now_local, Env};
use fake_bluez::FakeBluez;
use std::collections::HashMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use vitals_hub::ble::BleEvent;

/// bluez-async's `MessageStream` drop task panics with this when dbus-rs already dropped the
/// match's filter (a signal reached it after the stream's receiver closed); its `RemoveMatch` is
/// then never sent and the rule stays on the broker.
static LOST_REMOVE_MATCH: AtomicUsize = AtomicUsize::new(0);

fn count_lost_remove_match() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        if msg.contains("No match with that id found") {
            LOST_REMOVE_MATCH.fetch_add(1, Ordering::SeqCst);
        } else {
            default(info);
        }
    }));
}

const METER: &str = "C0:26:DA:00:07:01";
/// Not allow-listed; advertises all the time (an RSSI change every few milliseconds).
const NEIGHBOUR: &str = "C0:26:DA:00:07:02";

/// A private dbus-daemon, killed on drop.
struct Daemon {
    child: std::process::Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_daemon() -> Option<PathBuf> {
    // `VH_DBUS_DAEMON` names the binary instead (and checks the skip path when it does not exist).
    if let Some(p) = std::env::var_os("VH_DBUS_DAEMON") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("dbus-daemon"))
        .find(|p| p.is_file())
}

fn start_daemon() -> Option<Daemon> {
    let Some(bin) = find_daemon() else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("dbus-daemon is missing on CI: `.ci/run` must install Debian's `dbus` package");
        }
        eprintln!(
            "SKIPPED: dbus-daemon not found (install Debian's `dbus` package to run this test)"
        );
        return None;
    };
    let dir = tempfile::Builder::new()
        .prefix("vh")
        .tempdir_in("/tmp")
        .unwrap();
    let socket = dir.path().join("bus");
    let conf = dir.path().join("session.conf");
    std::fs::write(
        &conf,
        format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
            socket.display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(bin)
        .arg(format!("--config-file={}", conf.display()))
        .arg("--nofork")
        .arg("--nopidfile")
        .arg("--print-address=1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address = line.trim().to_owned();
    assert!(
        address.starts_with("unix:path="),
        "dbus-daemon said {address:?}"
    );
    Some(Daemon {
        child,
        address,
        _dir: dir,
    })
}

/// The broker's own count: match rules naming `sender='org.bluez'` (btleplug's), per connection,
/// split into adapter-wide and per-device rules.
async fn bluez_rules(stats: &zbus::Connection) -> (usize, usize, usize) {
    let reply = stats
        .call_method(
            Some("org.freedesktop.DBus"),
            "/org/freedesktop/DBus",
            Some("org.freedesktop.DBus.Debug.Stats"),
            "GetAllMatchRules",
            &(),
        )
        .await
        .unwrap();
    let all: HashMap<String, Vec<String>> = reply.body().deserialize().unwrap();
    let (mut adapter, mut device, mut total) = (0, 0, 0);
    for rules in all.values() {
        for r in rules.iter().filter(|r| r.contains("sender='org.bluez'")) {
            total += 1;
            if r.contains("/dev_") {
                device += 1;
            } else {
                adapter += 1;
            }
        }
    }
    (total, adapter, device)
}

fn sessions(env: &Env) -> usize {
    env.hub
        .events()
        .iter()
        .filter(|e| matches!(e, BleEvent::SessionEnded { .. }))
        .count()
}

#[test]
fn match_rules_stay_bounded_across_scan_windows_and_sessions() {
    let Some(daemon) = start_daemon() else {
        return;
    };
    std::env::set_var("DBUS_SYSTEM_BUS_ADDRESS", &daemon.address);
    count_lost_remove_match();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let stats = zbus::connection::Builder::address(daemon.address.as_str())
            .build()
            .await
            .unwrap();
        let start = now_local().add_minutes(-1000).unwrap();
        let meter = glucose_meter(METER, GlucoseMeter::new(start, 3), now_local());
        let neighbour = glucose_meter(NEIGHBOUR, GlucoseMeter::new(start, 1), now_local());
        let fake = FakeBluez::start(&daemon.address, vec![meter, neighbour]).await;
        let quiet = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        fake.chatter(NEIGHBOUR, Duration::from_millis(2), quiet.clone());
        let mut cfg = fast_config();
        cfg.scan_window_ms = 250;
        cfg.scan_pause_ms = 50;
        cfg.cooldown_ms = 0;
        cfg.quiet_ms = 100;
        cfg.racp_idle_ms = 300;
        let windows: usize = std::env::var("VH_MATCH_WINDOWS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(120);
        let env = Env::with_fake(fake, &[(METER, "glucose")], cfg.clone()).await;
        let period = Duration::from_millis(cfg.scan_window_ms + cfg.scan_pause_ms);
        let mut samples = Vec::new();
        for w in 1..=windows {
            tokio::time::sleep(period).await;
            if w % 20 == 0 || w == 1 {
                let (total, adapter, device) = bluez_rules(&stats).await;
                println!(
                    "FIGURE dbus-daemon hub after ~{w:>4} windows ({:>4} sessions): org.bluez match rules {total} (adapter {adapter}, device {device}); RemoveMatch lost {}",
                    sessions(&env),
                    LOST_REMOVE_MATCH.load(Ordering::SeqCst)
                );
                samples.push(total);
            }
        }
        let n = sessions(&env);
        assert!(n >= windows / 2, "only {n} sessions in {windows} windows");
        let fake = env.fake.clone();
        env.stop().await;
        quiet.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;

        // For comparison, what `ble_bench` does: bare btleplug connect/disconnect back to back.
        use btleplug::api::{Central as _, Manager as _, Peripheral as _};
        let cycles: usize = std::env::var("VH_MATCH_CYCLES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300);
        let lost0 = LOST_REMOVE_MATCH.load(Ordering::SeqCst);
        let manager = btleplug::platform::Manager::new().await.unwrap();
        let adapter = manager.adapters().await.unwrap().into_iter().next().unwrap();
        let p = adapter
            .peripherals()
            .await
            .unwrap()
            .into_iter()
            .find(|p| p.address().to_string() == METER)
            .unwrap();
        for i in 1..=cycles {
            p.connect().await.unwrap();
            p.disconnect().await.unwrap();
            if i % 100 == 0 {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let (total, _, _) = bluez_rules(&stats).await;
                println!(
                    "FIGURE dbus-daemon bare btleplug after {i:>4} connect/disconnect: org.bluez match rules {total}; RemoveMatch lost {}",
                    LOST_REMOVE_MATCH.load(Ordering::SeqCst) - lost0
                );
            }
        }
        // The same with 5 ms between connect and disconnect: bluez-async's drop task deregisters
        // before the disconnect's PropertiesChanged arrives, and nothing is lost.
        let lost1 = LOST_REMOVE_MATCH.load(Ordering::SeqCst);
        let (before, _, _) = bluez_rules(&stats).await;
        for _ in 0..100 {
            p.connect().await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
            p.disconnect().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (after, _, _) = bluez_rules(&stats).await;
        println!(
            "FIGURE dbus-daemon bare btleplug, 5 ms settle, 100 connect/disconnect: org.bluez match rules {before} -> {after}; RemoveMatch lost {}",
            LOST_REMOVE_MATCH.load(Ordering::SeqCst) - lost1
        );
        drop(fake);
        // Bounded: the adapter's two rules plus at most two per connection slot (a session's
        // notification stream and connect's wait for ServicesResolved).
        let bound = 2 + 2 * fast_config().max_connections;
        let last = *samples.last().unwrap();
        assert!(
            last <= bound,
            "{last} org.bluez match rules after {n} sessions (bound {bound}): {samples:?}"
        );
    });
}
