//! `vitals-hub setup`, as the real binary, scripted by flags with the dev PKI: it writes a config
//! that `config check` accepts and installs the credentials with the stated modes; it refuses a
//! key that does not match the certificate, a CA that did not issue the certificate, an expired
//! certificate, a missing value without a terminal, and overwriting an enrolled hub without
//! `--force`; a certificate with fewer than 30 days left is installed with a warning.
#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "daemon_support/mod.rs"]
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use support::hub_command;
use vitals_hub::receiver::pki::{write_dev_pki, DevCa, Span};

fn run(args: &[&str]) -> (i32, String, String) {
    let out = hub_command()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn scripted_setup_checks_installs_and_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let pki = write_dev_pki(&dir.path().join("pki"), &["localhost"], "setup-hub").unwrap();
    // The source key is readable by all: setup copies it and makes the copy 0600.
    std::fs::set_permissions(&pki.hub_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = dir.path().join("etc").join("hub.toml");
    let state = dir.path().join("state");
    let setup = |ca: &Path, cert: &Path, key: &Path, extra: &[&str]| {
        let mut a = vec![
            "setup".to_string(),
            "--clinic-url".into(),
            "https://localhost:8443/fhir".into(),
            "--patient".into(),
            "pat-setup".into(),
            "--ca".into(),
            s(ca),
            "--cert".into(),
            s(cert),
            "--key".into(),
            s(key),
            "--config".into(),
            s(&config),
            "--state-dir".into(),
            s(&state),
        ];
        a.extend(extra.iter().map(|e| e.to_string()));
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        run(&refs)
    };

    // Refusals first: nothing is written.
    let other = DevCa::new("another CA").unwrap();
    let other_ca = dir.path().join("other-ca.crt");
    std::fs::write(&other_ca, &other.cert_pem).unwrap();
    let (stray_cert, stray_key) = other
        .client("stray", Span::DEFAULT)
        .unwrap()
        .write(dir.path(), "stray")
        .unwrap();
    let (code, _, err) = setup(&pki.ca, &pki.hub_cert, &stray_key, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("does not match the certificate"), "{err}");
    let (code, _, err) = setup(&other_ca, &pki.hub_cert, &pki.hub_key, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("does not verify to the clinic CA") && err.contains("--ca"),
        "{err}"
    );
    let (expired_cert, expired_key) = other
        .client("old", Span::EXPIRED)
        .unwrap()
        .write(dir.path(), "expired")
        .unwrap();
    let (code, _, err) = setup(&other_ca, &expired_cert, &expired_key, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("has expired"), "{err}");
    let (code, _, err) = run(&["setup", "--config", &s(&config)]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--clinic-url") && err.contains("not a terminal"),
        "{err}"
    );
    assert!(!config.exists() && !state.exists());
    let _ = stray_cert;

    // Scripted setup with the dev PKI.
    let (code, out, err) = setup(&pki.ca, &pki.hub_cert, &pki.hub_key, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("PRIVATE KEY") && !err.contains("PRIVATE KEY"));
    let keys = state.join("keys");
    assert_eq!(mode(&config), 0o640);
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&keys), 0o700);
    assert_eq!(mode(&keys.join("client-key")), 0o600);
    assert_eq!(mode(&keys.join("client-cert.pem")), 0o644);
    assert_eq!(mode(&keys.join("clinic-ca.pem")), 0o644);
    assert_eq!(
        std::fs::read(keys.join("client-key")).unwrap(),
        std::fs::read(&pki.hub_key).unwrap()
    );
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains("patient_id = \"pat-setup\"")
            && text.contains("base_url = \"https://localhost:8443/fhir\"")
            && text.contains(&s(&keys.join("client-key"))),
        "{text}"
    );
    let (code, out, err) = run(&["config", "check", "--config", &s(&config)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(": OK"), "{out}");

    // Enrolled: refused without --force, done with it.
    let (code, _, err) = setup(&pki.ca, &pki.hub_cert, &pki.hub_key, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("already enrolled") && err.contains("--force"),
        "{err}"
    );
    let (code, out, err) = setup(&pki.ca, &pki.hub_cert, &pki.hub_key, &["--force"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(mode(&keys.join("client-key")), 0o600);
    let (code, _, err) = run(&["config", "check", "--config", &s(&config)]);
    assert_eq!(code, 0, "{err}");

    // A certificate with fewer than 30 days left is installed, with a warning.
    let (short_cert, short_key) = other
        .client(
            "short",
            Span {
                from_days: -1,
                to_days: 10,
            },
        )
        .unwrap()
        .write(dir.path(), "short")
        .unwrap();
    let (code, out, err) = setup(&other_ca, &short_cert, &short_key, &["--force"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("warning") && err.contains("days left"),
        "{err}"
    );
}

/// Issue 13: a value given on the command line is reported as that flag's problem (never as a line
/// of a file the technician has not seen); a certificate and key given the wrong way round are
/// named as swapped; a successful setup reads back the patient, the clinic and the certificate, and
/// so does `config check`.
#[test]
fn setup_names_the_flag_the_swap_and_reads_the_patient_back() {
    let dir = tempfile::tempdir().unwrap();
    let pki = write_dev_pki(&dir.path().join("pki"), &["localhost"], "hub-0042").unwrap();
    let config = dir.path().join("hub.toml");
    let state = dir.path().join("state");
    let setup = |url: &str, cert: &Path, key: &Path| {
        run(&[
            "setup",
            "--clinic-url",
            url,
            "--patient",
            "pat-0042",
            "--ca",
            &s(&pki.ca),
            "--cert",
            &s(cert),
            "--key",
            &s(key),
            "--config",
            &s(&config),
            "--state-dir",
            &s(&state),
        ])
    };
    let (code, _, err) = setup("http://clinic.example/fhir", &pki.hub_cert, &pki.hub_key);
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        err,
        "vitals-hub setup: --clinic-url http://clinic.example/fhir: the clinic URL must be \
         https://…, not \"http://clinic.example/fhir\"\n  fix: the clinic's FHIR base URL, e.g. \
         https://clinic.example/fhir\n"
    );
    let (code, _, err) = setup("https://localhost:8443/fhir", &pki.hub_key, &pki.hub_cert);
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        err,
        format!(
            "vitals-hub setup: --cert {}: this is a private key, not a certificate: --cert and \
             --key look swapped; fix: give the certificate as --cert and the key as --key\n",
            s(&pki.hub_key)
        )
    );
    assert!(!config.exists() && !state.exists());

    let (code, out, err) = setup("https://localhost:8443/fhir", &pki.hub_cert, &pki.hub_key);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("patient:     pat-0042\n"), "{out}");
    assert!(
        out.contains("clinic:      https://localhost:8443/fhir\n"),
        "{out}"
    );
    let cert_line = out
        .lines()
        .find(|l| l.starts_with("certificate: "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        cert_line.contains("CN=hub-0042")
            && cert_line.contains("expires ")
            && cert_line.contains("days left"),
        "{cert_line}"
    );
    let (code, out, err) = run(&["config", "check", "--config", &s(&config)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("patient:      pat-0042\n"), "{out}");
    assert!(
        out.contains("clinic:       https://localhost:8443/fhir\n"),
        "{out}"
    );
    assert!(out.contains("certificate:  CN=hub-0042"), "{out}");
}

/// Issue 13: `setup` as root with `--config` pointing outside /etc wrote the state into the
/// installed hub's /var/lib/vitals-hub. As root, without `--state-dir`, the state directory is
/// `state/` beside that config. Root only (CI runs as root; there a skip is a failure).
#[test]
fn as_root_a_config_elsewhere_keeps_its_state_beside_it() {
    if !rustix::process::geteuid().is_root() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI=true but not root: this root-only test cannot run"
        );
        eprintln!("skipped: not root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = write_dev_pki(&dir.path().join("pki"), &["localhost"], "setup-hub").unwrap();
    let config = dir.path().join("elsewhere").join("hub.toml");
    let system_state = Path::new("/var/lib/vitals-hub");
    let before = system_state.exists();
    let (code, out, err) = run(&[
        "setup",
        "--clinic-url",
        "https://localhost:8443/fhir",
        "--patient",
        "pat-setup",
        "--ca",
        &s(&pki.ca),
        "--cert",
        &s(&pki.hub_cert),
        "--key",
        &s(&pki.hub_key),
        "--config",
        &s(&config),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let text = std::fs::read_to_string(&config).unwrap();
    let beside = dir.path().join("elsewhere").join("state");
    assert!(
        text.contains(&format!("state_dir = \"{}\"", beside.display())),
        "{text}"
    );
    assert!(beside.join("keys").join("client-key").exists(), "{out}");
    assert_eq!(system_state.exists(), before, "{out}");
}
