//! The one-way flow, checked on the source: `ble` reaches ingest only through its port, so no
//! file under `src/ble/` names the store or the uplink, and ingest does not import the uplink.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn offenders(files: &[std::path::PathBuf], names: &[&str]) -> Vec<String> {
    let mut bad = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap();
        for (i, line) in text.lines().enumerate() {
            if names.iter().any(|n| line.contains(n)) {
                bad.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
            }
        }
    }
    bad
}

#[test]
fn ble_imports_neither_store_nor_uplink() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src/ble"), &mut files);
    assert!(!files.is_empty());
    let bad = offenders(
        &files,
        &["crate::store", "crate::uplink", "vitals_hub::store"],
    );
    assert!(
        bad.is_empty(),
        "ble names the store or uplink:\n{}",
        bad.join("\n")
    );
}

#[test]
fn ingest_does_not_import_the_uplink() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = vec![root.join("src/daemon/ingest.rs")];
    let bad = offenders(&files, &["crate::uplink"]);
    assert!(
        bad.is_empty(),
        "ingest imports the uplink:\n{}",
        bad.join("\n")
    );
}
