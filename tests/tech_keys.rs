//! `vitals-hub keys rotate --config` (issue 13): the store of the config given; a state directory
//! without a store is refused (a mistyped directory once got a new store and key, and "success").
#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "daemon_support/mod.rs"]
mod support;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_takes_the_config_and_refuses_a_directory_without_a_store() {
    let w = World::new().await;
    let cfg = w.config("hub.toml", "");
    let state = w.state_dir();

    // No store yet: refused, nothing created.
    let out = hub_command()
        .args(["keys", "rotate", "--config"])
        .arg(&cfg)
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "error: no store in {} (from [hub] state_dir of {}): `keys rotate` rotates the keys of \
             an existing store; give the hub's config (--config) or its state directory \
             (--state-dir) — the store is created by the hub's first start, not by this command\n",
            state.display(),
            cfg.display()
        )
    );
    assert!(!state.exists());
    let typo = w.dir.path().join("stat");
    let out = hub_command()
        .args(["keys", "rotate", "--kek", "--state-dir"])
        .arg(&typo)
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no store in"));
    assert!(!typo.exists());

    // A store (made by `sync --now`, which opens it): rotated through --config.
    std::fs::create_dir(&state).unwrap();
    let out = hub_command()
        .args(["sync", "--now", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for extra in [&[][..], &["--kek"][..]] {
        let out = hub_command()
            .args(["keys", "rotate", "--config"])
            .arg(&cfg)
            .args(extra)
            .env_remove("CREDENTIALS_DIRECTORY")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // With the daemon's lock held (here by this process, as the running daemon holds it): refused,
    // nothing rotated (it once rotated under a running daemon, which kept sealing with the old key).
    let lock = vitals_hub::tech::wipe::hold_lock(&state).unwrap().unwrap();
    let out = hub_command()
        .args(["keys", "rotate", "--config"])
        .arg(&cfg)
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the hub's daemon is running") && err.contains("systemctl stop vitals-hub"),
        "{err}"
    );
    drop(lock);
}
