//! `vitals-hub setup --apt-*` (issue 19): the files that make apt and unattended-upgrades take
//! the clinic's signed suite, checked as written, and every bad input refused with its fix.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use vitals_hub::tech::apt::{self, AptRequest};
use vitals_hub::tech::setup::SetupError;

/// An OpenPGP public-key packet header (old format, tag 6, two-byte length) and some body: what
/// `gpg --export` starts with.
const PUBLIC: &[u8] = &[0x99, 0x00, 0x33, 0x04, 0x65, 0x00, 0x00, 0x00, 0x16];
/// A secret-key packet (tag 5), what `gpg --export-secret-keys` starts with.
const SECRET: &[u8] = &[0x95, 0x00, 0x58, 0x04, 0x65, 0x00, 0x00, 0x00, 0x16];

fn req(dir: &Path, key: &[u8]) -> AptRequest {
    let k = dir.join("clinic.gpg");
    std::fs::write(&k, key).unwrap();
    AptRequest {
        url: "https://apt.clinic.example/vitals".into(),
        suite: "canary".into(),
        key: k,
        origin: "vitals-clinic".into(),
        window: "02:00-04:00".into(),
        insecure_localhost: false,
        root: dir.join("root"),
    }
}

fn read(root: &Path, rel: &str) -> String {
    std::fs::read_to_string(root.join(rel)).unwrap()
}

#[test]
fn the_source_names_the_clinics_key_only_and_nothing_allows_a_downgrade() {
    let dir = tempfile::tempdir().unwrap();
    let r = req(dir.path(), PUBLIC);
    let out = apt::install(&r).unwrap();
    assert_eq!(out.files.len(), 5);
    for f in &out.files {
        let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "{}", f.display());
    }
    let root = dir.path().join("root");
    assert_eq!(std::fs::read(root.join(apt::KEYRING)).unwrap(), PUBLIC);
    let src = read(&root, apt::SOURCES);
    assert!(src.contains("\nTypes: deb\n"), "{src}");
    assert!(
        src.contains("\nURIs: https://apt.clinic.example/vitals\n"),
        "{src}"
    );
    assert!(src.contains("\nSuites: canary\n"), "{src}");
    assert!(src.contains("\nComponents: main\n"), "{src}");
    assert!(
        src.contains("\nSigned-By: /usr/share/keyrings/vitals-clinic.gpg\n"),
        "{src}"
    );
    assert_eq!(src.matches("Signed-By").count(), 1);

    let uu = read(&root, apt::UNATTENDED);
    assert!(
        uu.contains("\"origin=vitals-clinic,codename=canary\";"),
        "{uu}"
    );
    assert!(
        uu.contains("codename=${distro_codename}-security,label=Debian-Security"),
        "{uu}"
    );
    assert!(
        uu.contains("Unattended-Upgrade::Allow-downgrade \"false\";"),
        "{uu}"
    );
    let pins = read(&root, apt::PREFERENCES);
    for f in [&src, &uu, &pins] {
        assert!(!f.to_lowercase().contains("allow-downgrades"), "{f}");
    }
    // No pin above 1000 (apt would downgrade for it); the clinic's origin supplies its own
    // packages only.
    let prios: Vec<i32> = pins
        .lines()
        .filter_map(|l| l.strip_prefix("Pin-Priority: "))
        .map(|p| p.trim().parse().unwrap())
        .collect();
    assert_eq!(prios, vec![990, -1], "{pins}");
    assert!(pins.contains("Package: vitals-hub vitals-clinic\nPin: release o=vitals-clinic\n"));
    assert!(pins.contains("Package: *\nPin: release o=vitals-clinic\nPin-Priority: -1"));

    let win = read(&root, apt::WINDOW_DROPIN);
    assert!(
        win.contains("OnCalendar=\nOnCalendar=*-*-* 02:00\n"),
        "{win}"
    );
    assert!(win.contains("RandomizedDelaySec=115m"), "{win}");
    assert!(win.contains("Persistent=false"), "{win}");
    // Nothing half-written is left beside the files.
    for f in &out.files {
        let names: Vec<String> = std::fs::read_dir(f.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.contains("setup-tmp")), "{names:?}");
    }
}

#[test]
fn an_armoured_key_is_kept_as_asc_and_named_so() {
    let dir = tempfile::tempdir().unwrap();
    let r = req(
        dir.path(),
        b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEZQAAABYJKwYBBAHaRw8BAQdA\n-----END PGP PUBLIC KEY BLOCK-----\n",
    );
    let out = apt::install(&r).unwrap();
    assert_eq!(
        out.key_file,
        Path::new("/usr/share/keyrings/vitals-clinic.asc")
    );
    let src = read(&dir.path().join("root"), apt::SOURCES);
    assert!(
        src.contains("Signed-By: /usr/share/keyrings/vitals-clinic.asc\n"),
        "{src}"
    );
}

fn refused(r: &AptRequest) -> String {
    let e = apt::install(r).expect_err("must be refused");
    assert!(matches!(e, SetupError::Flag { .. }), "{e:?}");
    assert!(
        !r.root.join(apt::SOURCES).exists(),
        "nothing is written when refused"
    );
    e.to_string()
}

#[test]
fn bad_keys_urls_suites_and_windows_are_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let e = refused(&req(dir.path(), SECRET));
    assert!(e.contains("SECRET key") && e.contains("fix:"), "{e}");
    let e = refused(&req(
        dir.path(),
        b"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n-----END PGP PRIVATE KEY BLOCK-----\n",
    ));
    assert!(e.contains("SECRET key"), "{e}");
    let e = refused(&req(dir.path(), b"-----BEGIN CERTIFICATE-----\nMIIB\n"));
    assert!(
        e.contains("--apt-key") && e.contains("not an OpenPGP key"),
        "{e}"
    );
    let e = refused(&req(dir.path(), b""));
    assert!(e.contains("empty"), "{e}");
    // A user-id packet (tag 13) alone is not a key.
    let e = refused(&req(dir.path(), &[0xb4, 0x03, b'a', b'b', b'c']));
    assert!(e.contains("type 13"), "{e}");
    let mut r = req(dir.path(), PUBLIC);
    r.key = dir.path().join("missing.gpg");
    assert!(refused(&r).contains("cannot read it"));

    let mut r = req(dir.path(), PUBLIC);
    r.url = "http://apt.clinic.example/vitals".into();
    let e = refused(&r);
    assert!(e.contains("--apt-url") && e.contains("plain http"), "{e}");
    r.url = "http://127.0.0.1:8080/good".into();
    let e = refused(&r);
    assert!(e.contains("--apt-insecure-localhost"), "{e}");
    r.insecure_localhost = true;
    apt::install(&r).expect("the tests' local repository with the loud flag");
    let mut r = req(dir.path(), PUBLIC);
    r.root = dir.path().join("root2");
    for bad in ["ftp://x", "https://", "https://a b", "apt.clinic.example"] {
        r.url = bad.into();
        assert!(refused(&r).contains("--apt-url"), "{bad}");
    }
    let mut r = req(dir.path(), PUBLIC);
    r.root = dir.path().join("root3");
    r.suite = "unstable".into();
    assert!(refused(&r).contains("stable or canary"));
    let mut r = req(dir.path(), PUBLIC);
    r.root = dir.path().join("root4");
    r.origin = "vitals clinic\nPin-Priority: 1001".into();
    assert!(refused(&r).contains("--apt-origin"));
    for w in ["2-4", "02:00-02:05", "25:00-02:00", "02:00"] {
        let mut r = req(dir.path(), PUBLIC);
        r.root = dir.path().join("root5");
        r.window = w.into();
        assert!(refused(&r).contains("--update-window"), "{w}");
    }
    assert_eq!(
        apt::parse_window("23:30-01:30").unwrap(),
        (23 * 60 + 30, 120)
    );
}
