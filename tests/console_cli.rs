//! `vitals-clinic user add|passwd|disable|list`: the password comes from standard input (never
//! argv), bad input is refused with the fix, and the accounts work for the console's login check.

#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::Write;
use std::process::{Command, Output, Stdio};
use vitals_hub::clinic::console::users::UserStore;

fn clinic(args: &[&str], stdin: &str) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vitals-clinic"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that refuses its arguments exits without reading standard input; the write then
    // meets a closed pipe, which is not this test's failure (the exit status and output are).
    if let Err(e) = c.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    c.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn users_are_managed_with_passwords_from_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("clinic.db");
    let db = db.to_str().unwrap();
    let o = clinic(
        &["user", "add", "--db", db, "--role", "admin", "dr.who"],
        "tardis is bigger inside\n",
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("tardis"), "the password is never echoed");
    let o = clinic(
        &["user", "add", "--db", db, "dr.who"],
        "another password here\n",
    );
    assert!(!o.status.success());
    assert!(
        text(&o).contains("exists already") && text(&o).contains("user passwd"),
        "{}",
        text(&o)
    );
    let o = clinic(&["user", "add", "--db", db, "nurse"], "short\n");
    assert!(!o.status.success());
    assert!(text(&o).contains("use 12 to 256"), "{}", text(&o));
    let o = clinic(&["user", "add", "--db", db, "nurse"], "");
    assert!(
        text(&o).contains("no password on standard input"),
        "{}",
        text(&o)
    );
    let o = clinic(
        &["user", "add", "--db", db, "--role", "boss", "nurse"],
        "long enough password\n",
    );
    assert!(text(&o).contains("clinician or admin"), "{}", text(&o));
    let o = clinic(&["user", "list", "--db", db], "");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "dr.who\tadmin\tenabled\n"
    );

    let s = UserStore::open(std::path::Path::new(db)).unwrap();
    assert!(s
        .verify("dr.who", "tardis is bigger inside")
        .unwrap()
        .is_some());
    drop(s);
    assert!(clinic(&["user", "disable", "--db", db, "dr.who"], "")
        .status
        .success());
    let s = UserStore::open(std::path::Path::new(db)).unwrap();
    assert!(s
        .verify("dr.who", "tardis is bigger inside")
        .unwrap()
        .is_none());
    drop(s);
    let o = clinic(
        &["user", "passwd", "--db", db, "dr.who"],
        "regenerated twelve\n",
    );
    assert!(o.status.success(), "{}", text(&o));
    let s = UserStore::open(std::path::Path::new(db)).unwrap();
    assert!(s.verify("dr.who", "regenerated twelve").unwrap().is_some());
    let o = clinic(
        &["user", "passwd", "--db", db, "nobody"],
        "whatever password\n",
    );
    assert!(text(&o).contains("no user \"nobody\""), "{}", text(&o));
}
