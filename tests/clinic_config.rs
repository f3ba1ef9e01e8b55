#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! `vitals-clinic serve --config FILE`: the file's keys are serve's flags, read before the command
//! line's (which override them); an unknown key, a value of the wrong type, a missing or huge file
//! stop the start naming the key or the file. The file the Debian package installs
//! (`packaging/clinic/clinic.toml`) holds only keys `serve` knows.

mod uplink_support;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use uplink_support::*;
use vitals_hub::receiver::pki::{DevCa, Span, DEV_RECEIVER_NAMES};

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn clinic() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vitals-clinic"))
}

fn serve_with(config: &Path, extra: &[&str]) -> Output {
    clinic()
        .args(["serve", "--config"])
        .arg(config)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reads_its_flags_from_the_config_file_and_the_command_line_overrides_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = DevCa::new("clinic").unwrap();
    std::fs::write(d.join("ca.crt"), &ca.cert_pem).unwrap();
    ca.server(DEV_RECEIVER_NAMES, Span::DEFAULT)
        .unwrap()
        .write(d, "server")
        .unwrap();
    let (cert, key) = ca
        .client("hub-a", Span::DEFAULT)
        .unwrap()
        .write(d, "a")
        .unwrap();
    let db = d.join("clinic.db");
    let out = clinic()
        .args(["hub", "enroll", "--db"])
        .arg(&db)
        .arg("--cert")
        .arg(&cert)
        .args(["--patient", PATIENT])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The file names a port that is taken: the command line's --listen must win.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = d.join("clinic.toml");
    std::fs::write(
        &config,
        format!(
            "# the clinic\nlisten = \"{}\"\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\ndb = {:?}\nrate_per_hub = 20.5\nplain = false\n",
            taken.local_addr().unwrap(),
            d.join("server.crt"),
            d.join("server.key"),
            d.join("ca.crt"),
            db
        ),
    )
    .unwrap();
    let mut child = clinic()
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _kill = Kill(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let port = line.trim().rsplit(':').next().unwrap().to_owned();
    assert_ne!(port, taken.local_addr().unwrap().port().to_string());
    let status = mtls_client(&d.join("ca.crt"), &cert, &key)
        .get(format!("https://localhost:{port}/fhir/metadata"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(
        status, 200,
        "the enrolled hub is served with the file's certificates"
    );
}

#[test]
fn a_wrong_config_file_is_refused_naming_the_key_or_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let case = |name: &str, text: &str| {
        let p = d.join(name);
        std::fs::write(&p, text).unwrap();
        let out = serve_with(&p, &[]);
        assert!(!out.status.success(), "{name} must be refused");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = case("typo.toml", "lisen = \"127.0.0.1:8443\"\n");
    assert!(e.contains("--lisen"), "{e}");
    let e = case("table.toml", "[console]\nlisten = \"127.0.0.1:9443\"\n");
    assert!(e.contains("`console`") && e.contains("tables"), "{e}");
    let e = case("value.toml", "listen = \"not an address\"\n");
    assert!(
        e.contains("--listen") && e.contains("not an address"),
        "{e}"
    );
    let e = case("syntax.toml", "listen = \n");
    assert!(e.contains("not valid TOML"), "{e}");
    let e = case("nested.toml", "config = \"/etc/other.toml\"\n");
    assert!(e.contains("another file"), "{e}");
    let big = d.join("big.toml");
    std::fs::write(&big, "#".repeat(70 * 1024)).unwrap();
    let out = serve_with(&big, &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("larger than"));
    let out = serve_with(&d.join("missing.toml"), &[]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("missing.toml"), "{e}");
}

/// The config the package installs names only flags `serve` knows, with values it accepts
/// (`--help` after them: clap parses every flag before it prints the help and exits 0).
#[test]
fn the_packaged_config_file_holds_only_serve_flags() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/clinic/clinic.toml");
    let out = serve_with(&file, &["--help"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
