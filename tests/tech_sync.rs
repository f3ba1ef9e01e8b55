//! `vitals-hub sync --now`: a backlog built while the clinic was unreachable is uploaded on
//! command, exactly once; while the daemon runs, the command only points at it.
#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "daemon_support/mod.rs"]
mod support;

use std::time::Duration;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_is_uploaded_on_command() {
    let w = World::new().await;
    let good = w.config("hub.toml", FAST_DEVICES);
    // The same hub, but the clinic's port is closed: readings pile up.
    let port = w.receiver.addr().port();
    let text = std::fs::read_to_string(&good)
        .unwrap()
        .replace(&format!("localhost:{port}"), "localhost:1");
    let offline = w.dir.path().join("offline.toml");
    std::fs::write(&offline, text).unwrap();
    let mut hub = w.spawn(&offline);
    tokio::time::sleep(Duration::from_secs(4)).await;

    // While the daemon runs: refused, pointing at status.
    let out = hub_command()
        .args(["sync", "--now", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("daemon is running"));

    signal(&hub, "TERM");
    assert!(wait_exit(&mut hub, 15).unwrap().success());
    let before = stored(&w.state_dir()).await;
    assert!(before.pending > 10, "a backlog: {}", before.pending);
    assert!(w.at_receiver().is_empty());

    let out = hub_command()
        .args(["sync", "--now", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("still waiting 0"), "{said}");
    let after = stored(&w.state_dir()).await;
    assert_eq!(after.pending, 0);
    let at = w.at_receiver();
    for id in after.identifiers.keys() {
        assert_eq!(
            at.get(id),
            Some(&1),
            "{id} not at the receiver exactly once"
        );
    }
    // Without a terminal the progress goes as plain lines on stderr, not a bar.
    assert!(!String::from_utf8_lossy(&out.stderr).contains('\u{1b}'));
}
