//! `vitals-hub config check` and `run` on typical mistakes: every error names the file, the line
//! and the fix, and exits 78 (EX_CONFIG); and systemd's notification protocol (READY, watchdog
//! keep-alives) against a real notify socket.
#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "daemon_support/mod.rs"]
mod support;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};
use support::*;

fn check(path: &std::path::Path) -> (i32, String, String) {
    let out = hub_command()
        .args(["config", "check", "--config"])
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A valid config's text, with `edit` applied.
fn variant(w: &World, name: &str, edit: impl Fn(String) -> String) -> std::path::PathBuf {
    let good = w.config(
        "good.toml",
        "[[device]]\nname = \"meter\"\naddress = \"C0:26:DA:01:02:03\"\n",
    );
    let text = edit(std::fs::read_to_string(good).unwrap());
    let p = w.dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[tokio::test]
async fn typical_mistakes_name_file_line_and_fix() {
    let w = World::new().await;
    let good = variant(&w, "ok.toml", |t| t);
    let (code, out, err) = check(&good);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("OK"), "{out}");

    // (edit, expected line, text in the message, text in the fix)
    type Edit = Box<dyn Fn(String) -> String>;
    let cases: Vec<(&str, Edit, Option<usize>, &str, &str)> = vec![
        (
            "misspelt key",
            Box::new(|t: String| t.replace("require_clock_sync", "require_clok_sync")),
            Some(10),
            "unknown key `require_clok_sync`",
            "spelling",
        ),
        (
            "plain http clinic",
            Box::new(|t: String| t.replace("https://localhost", "http://localhost")),
            Some(6),
            "https",
            "FHIR base URL",
        ),
        (
            "patient id with a space",
            Box::new(|t: String| t.replace("pat-e2e", "pat e2e")),
            Some(2),
            "not a FHIR logical id",
            "patient's id",
        ),
        (
            // An address line from an older config: still checked; the fix is to drop it (the
            // hub knows the device by its pairing name).
            "short Bluetooth address",
            Box::new(|t: String| t.replace("C0:26:DA:01:02:03", "C0:26:DA:01:02")),
            Some(26),
            "not a Bluetooth address",
            "remove the line",
        ),
        (
            "number where a string belongs",
            Box::new(|t: String| t.replace("patient_id = \"pat-e2e\"", "patient_id = 1234")),
            Some(2),
            "invalid type",
            "type",
        ),
        (
            "missing [uplink] base_url",
            Box::new(|t: String| {
                t.lines()
                    .filter(|l| !l.starts_with("base_url"))
                    .collect::<Vec<_>>()
                    .join("\n")
            }),
            None,
            "missing key `base_url`",
            "add base_url",
        ),
        (
            "unknown simulated profile",
            Box::new(|t: String| {
                t + "\n[[device]]\nname = \"sim\"\nkind = \"simulated\"\nprofile = \"toaster\"\n"
            }),
            Some(32),
            "unknown variant `toaster`",
            "one of the values",
        ),
        (
            "broken TOML",
            Box::new(|t: String| t.replace("[ble]", "[ble")),
            Some(16),
            "",
            "TOML syntax",
        ),
    ];
    for (what, edit, line, msg, fix) in cases {
        let p = variant(&w, "case.toml", edit);
        let (code, out, err) = check(&p);
        assert_eq!(code, 78, "{what}: exit {code}\n{out}{err}");
        let head = format!("{}:", p.display());
        assert!(err.contains(&head), "{what}: no file name\n{err}");
        if let Some(l) = line {
            assert!(
                err.contains(&format!("{}:{l}:", p.display())),
                "{what}: not line {l}\n{err}"
            );
        }
        assert!(err.contains(msg), "{what}: message lacks {msg:?}\n{err}");
        assert!(
            err.contains("fix:") && err.contains(fix),
            "{what}: fix lacks {fix:?}\n{err}"
        );
    }

    // Files the config names are checked too: a CA bundle that is not there.
    let p = variant(&w, "noca.toml", |t| t.replace("ca.crt", "missing-ca.crt"));
    let (code, _, err) = check(&p);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("ca_bundle") && err.contains("missing-ca.crt"),
        "{err}"
    );
    // The hub's key does not match its certificate.
    let p = variant(&w, "wrongkey.toml", |t| {
        t.replace("hub.key", "receiver.key")
    });
    let (code, _, err) = check(&p);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("client certificate or key"), "{err}");

    // `run` refuses the same way, before opening anything.
    let p = variant(&w, "case.toml", |t| {
        t.replace("https://localhost", "http://localhost")
    });
    let out = hub_command()
        .args(["run", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(
        !w.state_dir().exists(),
        "a refused config must not create the state directory"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_then_watchdog_keepalives_on_the_notify_socket() {
    let w = World::new().await;
    let cfg = w.config("hub.toml", FAST_DEVICES);
    let sock_path = w.dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let started = Instant::now();
    let mut hub = hub_command()
        .args(["run", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "1000000")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 512];
    let mut ready_after = None;
    let mut pings = 0;
    while pings < 3 {
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                signal(&hub, "KILL");
                panic!(
                    "no notification ({e}); ready={ready_after:?} pings={pings}\n{}",
                    stderr_of(&mut hub)
                );
            }
        };
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        if msg.contains("READY=1") {
            ready_after = Some(started.elapsed());
        }
        if msg.contains("WATCHDOG=1") {
            assert!(ready_after.is_some(), "a keep-alive before READY");
            pings += 1;
        }
    }
    signal(&hub, "TERM");
    let status = wait_exit(&mut hub, 10).expect("no exit after SIGTERM");
    assert!(status.success());
    // STOPPING=1 came before the exit.
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut stopping = false;
    while let Ok(n) = sock.recv(&mut buf) {
        stopping |= String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1");
    }
    assert!(stopping, "no STOPPING=1");
    eprintln!("READY after {:?}", ready_after.unwrap());
}

/// Issue 13: `alerts defaults` printed `schedules = []`, so a hub config made of its output plus
/// the README's `[[alerts.schedules]]` failed with a bare "duplicate key". Now no empty list is
/// printed, the combination is accepted, and a key really set twice is named with its first line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_defaults_take_a_schedule_and_a_duplicate_key_is_named() {
    let w = World::new().await;
    let out = hub_command().args(["alerts", "defaults"]).output().unwrap();
    assert!(out.status.success());
    let defaults = String::from_utf8(out.stdout).unwrap();
    assert!(!defaults.contains("= []"), "{defaults}");
    let schedule = "\n[[alerts.schedules]]\ndevice = \"meter\"\nper_day = 2\n";
    let p = variant(&w, "defaults.toml", |t| {
        // The config without its own [alerts] tables, then the defaults, then a schedule.
        let hub_part = t
            .split("[alerts.thresholds.glucose]")
            .next()
            .unwrap()
            .to_string();
        let devices = "[[device]]\nname = \"meter\"\naddress = \"C0:26:DA:01:02:03\"\n";
        format!("{hub_part}\n{devices}\n{defaults}{schedule}")
    });
    let (code, out, err) = check(&p);
    assert_eq!(code, 0, "{out}{err}");

    let p = variant(&w, "dup.toml", |t| {
        t.replace(
            "[ble]\nenabled = false",
            "[ble]\nenabled = false\nenabled = true",
        )
    });
    let text = std::fs::read_to_string(&p).unwrap();
    let first = text.lines().position(|l| l == "enabled = false").unwrap() + 1;
    let (code, _, err) = check(&p);
    assert_eq!(code, 78, "{err}");
    assert_eq!(
        err,
        format!(
            "vitals-hub: config error\n{}:{}:1: duplicate key `enabled`: it is already set at \
             line {first}\n  fix: set `enabled` once: remove line {first} or this one\n",
            p.display(),
            first + 1
        )
    );
}
