//! The interactive paths, on a real pseudo-terminal (util-linux `script`, in every Debian base
//! system): `setup` asks for what its flags do not give; `wipe` erases only after the word `wipe`
//! is typed. Skips with a message where `script` is missing, except under CI=true.
#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "daemon_support/mod.rs"]
mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use support::World;

fn have_script() -> bool {
    let ok = Command::new("script")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "util-linux `script` is required under CI=true (apt-get install bsdutils)"
        );
        eprintln!("skipped: util-linux `script` is not installed");
    }
    ok
}

/// Run the hub binary with `args` on a pty, typing `input`; (exit status, what the terminal showed).
fn on_pty(args: &[&str], input: &str) -> (i32, String) {
    let exe = env!("CARGO_BIN_EXE_vitals-hub");
    let runner = std::env::var("VITALS_HUB_TEST_RUNNER").unwrap_or_default();
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let line = format!("{runner} {exe} {}", quoted.join(" "));
    let mut child = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `script` stops reading once the command has exited (a refusal before any prompt); the rest
    // of the input then meets a closed pipe, which is not this test's failure.
    if let Err(e) = child.stdin.take().unwrap().write_all(input.as_bytes()) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test]
async fn setup_asks_and_wipe_wants_the_word() {
    if !have_script() {
        return;
    }
    let w = World::new().await;
    let dir = w.dir.path();
    let config = dir.join("asked.toml");
    let state = dir.join("asked-state");
    let url = format!("https://localhost:{}/fhir", w.receiver.addr().port());
    let (code, shown) = on_pty(
        &[
            "setup",
            "--ca",
            w.pki.ca.to_str().unwrap(),
            "--cert",
            w.pki.hub_cert.to_str().unwrap(),
            "--key",
            w.pki.hub_key.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ],
        &format!("{url}\npat-typed\npat-typed\n"),
    );
    assert_eq!(code, 0, "{shown}");
    assert!(
        shown.contains("Clinic FHIR base URL")
            && shown.contains("Patient id at the clinic")
            && shown.contains("Patient id again, to confirm"),
        "{shown}"
    );
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains("patient_id = \"pat-typed\"") && text.contains(&url),
        "{text}"
    );

    // The hub runs once so that there is a store and a KEK.
    let mut hub = w.spawn(&config);
    let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !state.join("store.db").exists() {
        assert!(std::time::Instant::now() < end, "the hub did not start");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    support::signal(&hub, "TERM");
    assert!(support::wait_exit(&mut hub, 15).unwrap().success());

    // Anything but the word: nothing is erased.
    let (code, shown) = on_pty(&["wipe", "--config", config.to_str().unwrap()], "yes\n");
    assert_ne!(code, 0, "{shown}");
    assert!(
        state.join("store.db").exists(),
        "erased without the word: {shown}"
    );
    // The word: erased.
    let (code, shown) = on_pty(&["wipe", "--config", config.to_str().unwrap()], "wipe\n");
    assert_eq!(code, 0, "{shown}");
    assert!(
        !state.join("store.db").exists() && !state.join("keys/kek").exists(),
        "{shown}"
    );
}

/// Issue 13: the patient id typed at the prompt is asked twice; two different ids are asked again
/// (a valid but wrong id would file the readings under someone else), three times different is a
/// refusal with nothing written; the id is read back at the end.
#[tokio::test]
async fn setup_asks_the_patient_id_twice() {
    if !have_script() {
        return;
    }
    let w = World::new().await;
    let dir = w.dir.path();
    let config = dir.join("twice.toml");
    let state = dir.join("twice-state");
    let url = format!("https://localhost:{}/fhir", w.receiver.addr().port());
    let args = [
        "setup",
        "--clinic-url",
        &url,
        "--ca",
        w.pki.ca.to_str().unwrap(),
        "--cert",
        w.pki.hub_cert.to_str().unwrap(),
        "--key",
        w.pki.hub_key.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ];
    let (code, shown) = on_pty(&args, "pat-042\npat-0042\npat-1\npat-2\npat-3\npat-4\n");
    assert_eq!(code, 2, "{shown}");
    assert!(
        shown.contains("the two patient ids differ (pat-042 / pat-0042); type it again"),
        "{shown}"
    );
    assert!(
        shown.contains(
            "vitals-hub setup: the patient id was typed differently three times; nothing was \
             written. Check the id on the clinic's enrolment sheet and run setup again (or pass \
             --patient)"
        ),
        "{shown}"
    );
    assert!(!config.exists() && !state.exists());

    let (code, shown) = on_pty(&args, "pat-042\npat-0042\npat-0042\npat-0042\n");
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains("type it again"), "{shown}");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("patient_id = \"pat-0042\""), "{text}");
    assert!(shown.contains("patient:     pat-0042"), "{shown}");
}
