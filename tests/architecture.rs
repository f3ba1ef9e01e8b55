//! The crate's plan, checked: which module may import what (the map in `src/lib.rs`). A reading
//! flows one way — `ble` hands it to the daemon through its port, the daemon stores it, the uplink
//! sends it — so `ble` names neither the store nor the uplink; the pure modules (`model`, `gatt`,
//! `alerts`, `fhir`) do no I/O; nothing on the daemon's path imports the benchmarks.
//!
//! The check reads the source text (comments removed) for the paths a module would need to break
//! the rule. It is deliberately simple: a new way around it shows up in review, and this test keeps
//! the rule from eroding by accident.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use std::path::{Path, PathBuf};

/// Every `.rs` file under `src/<module>/` and `src/<module>.rs`.
fn module_files(module: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let single = root.join(format!("{module}.rs"));
    if single.exists() {
        out.push(single);
    }
    let mut stack = vec![root.join(module)];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    assert!(!out.is_empty(), "module {module} has no source files");
    out.sort();
    out
}

/// The source with `//` comments (line and doc) removed, so prose may name anything.
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .map(|l| match l.find("//") {
            // Keep `//` inside string literals such as "https://…": only strip when the part
            // before it holds an even number of quotes.
            Some(i) if l[..i].matches('"').count() % 2 == 0 => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Occurrences of `path` as a path (not inside a longer identifier), e.g. `fs::` but not `refs::`.
fn mentions(code: &str, path: &str) -> bool {
    let mut from = 0;
    while let Some(i) = code[from..].find(path) {
        let at = from + i;
        let before = code[..at].chars().next_back();
        let ident_before = before.is_some_and(|c| c.is_alphanumeric() || c == '_');
        // `crate::store` must not match `crate::store_x`.
        let after = code[at + path.len()..].chars().next();
        let ident_after = path.ends_with(|c: char| c.is_alphanumeric())
            && after.is_some_and(|c| c.is_alphanumeric() || c == '_');
        if !ident_before && !ident_after {
            return true;
        }
        from = at + path.len();
    }
    false
}

fn violations(module: &str, forbidden: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for f in module_files(module) {
        let code = code_of(&f);
        for p in forbidden {
            if mentions(&code, p) {
                found.push(format!("{} uses `{p}`", f.display()));
            }
        }
    }
    found
}

#[test]
fn the_checker_sees_what_it_looks_for() {
    assert!(mentions("use crate::store::Store;", "crate::store"));
    assert!(mentions("let x = std::fs::read(p);", "std::fs"));
    assert!(mentions("use std::{fs::File};", "fs::"));
    assert!(!mentions("use crate::store_x;", "crate::store"));
    assert!(!mentions("refs::a", "fs::"));
    assert!(mentions("tokio::spawn", "tokio"));
    assert!(!mentions("my_tokio::spawn", "tokio"));
}

#[test]
fn ble_hands_readings_to_the_daemon_through_its_port_and_imports_no_store_or_uplink() {
    let v = violations(
        "ble",
        &[
            "crate::store",
            "crate::uplink",
            "crate::daemon",
            "crate::tech",
        ],
    );
    assert!(v.is_empty(), "ble must not import these:\n{}", v.join("\n"));
}

#[test]
fn pure_modules_do_no_io() {
    let io = [
        "tokio",
        "rusqlite",
        "reqwest",
        "hyper",
        "btleplug",
        "zbus",
        "std::fs",
        "fs::",
        "std::net",
        "std::process",
        "crate::store",
        "crate::uplink",
        "crate::ble",
        "crate::daemon",
        "crate::receiver",
        "crate::clinic",
        "crate::tech",
        "crate::cli",
    ];
    let mut all = Vec::new();
    for m in ["model", "gatt", "alerts", "fhir"] {
        all.extend(violations(m, &io));
    }
    assert!(
        all.is_empty(),
        "pure modules must not do I/O:\n{}",
        all.join("\n")
    );
}

#[test]
fn ingest_does_not_import_the_uplink() {
    let code = code_of(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src/daemon/ingest.rs"));
    assert!(
        !mentions(&code, "crate::uplink"),
        "daemon::ingest imports crate::uplink"
    );
}

#[test]
fn nothing_on_the_daemons_path_imports_the_benchmarks_or_the_cli() {
    let mut all = Vec::new();
    for m in [
        "model", "gatt", "alerts", "fhir", "store", "ble", "uplink", "config", "daemon", "sim",
    ] {
        all.extend(violations(m, &["crate::bench", "crate::cli"]));
    }
    assert!(all.is_empty(), "{}", all.join("\n"));
}

#[test]
fn config_sits_above_the_rooms_it_configures() {
    // `config` imports the section types of `ble`, `uplink`, `alerts` and `sim` (they own their
    // settings); none of them, nor anything below, imports `config` back.
    let mut all = Vec::new();
    for m in [
        "model", "gatt", "alerts", "fhir", "store", "ble", "uplink", "sim", "clinic",
    ] {
        all.extend(violations(m, &["crate::config"]));
    }
    assert!(all.is_empty(), "{}", all.join("\n"));
}

#[test]
fn nothing_on_the_hubs_path_imports_the_clinic() {
    // The clinic side (vitals-clinic) is its own room: the hub's package builds without it
    // (`cargo check --no-default-features` is the proof). `uplink` is left out here only because
    // its unit tests mint certificates with the clinic's development PKI.
    let mut all = Vec::new();
    for m in [
        "model", "gatt", "alerts", "fhir", "store", "ble", "config", "daemon", "tech",
    ] {
        all.extend(violations(m, &["crate::clinic", "crate::receiver"]));
    }
    assert!(all.is_empty(), "{}", all.join("\n"));
}
