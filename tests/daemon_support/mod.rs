//! Support for the daemon tests: a dev PKI, the receiver in this process over mutual TLS, hub
//! configs with simulated devices, the real `vitals-hub` binary, and a look into the hub's store
//! (only while the hub is stopped).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use vitals_hub::fhir;
use vitals_hub::model::SystemClock;
use vitals_hub::receiver::pki::{write_dev_pki, DevPkiFiles};
use vitals_hub::receiver::{tls, FaultQueue, Listen, Receiver, ReceiverConfig};
use vitals_hub::store::{Store, StoreConfig};

pub const PATIENT: &str = "pat-e2e";

#[path = "../support_bin/mod.rs"]
mod support_bin;

/// The hub binary (through `VITALS_HUB_TEST_RUNNER`, e.g. qemu, when cross-testing).
pub fn hub_command() -> Command {
    support_bin::hub()
}

pub struct World {
    pub dir: tempfile::TempDir,
    pub pki: DevPkiFiles,
    pub receiver: Receiver,
}

impl World {
    pub async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let pki = write_dev_pki(&dir.path().join("pki"), &["localhost"], "e2e-hub").unwrap();
        let server = tls::server_config(&pki.receiver_cert, &pki.receiver_key, &pki.ca).unwrap();
        let receiver = Receiver::start(ReceiverConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            listen: Listen::Tls(server),
            db_path: None,
            faults: FaultQueue::new(),
        })
        .await
        .unwrap();
        World { dir, pki, receiver }
    }

    /// A world whose receiver authorises like `vitals-clinic serve`: the hub's certificate
    /// enrolled for `patient` in the registry, unknown certificates refused at TLS.
    pub async fn enrolled(patient: &str) -> World {
        World::enrolled_in(patient, None).await
    }

    /// [`World::enrolled`] with the clinic's store in `db` (e.g. the console's, so the console
    /// shows what this receiver ingests).
    pub async fn enrolled_in(patient: &str, db: Option<PathBuf>) -> World {
        let dir = tempfile::tempdir().unwrap();
        let pki = write_dev_pki(&dir.path().join("pki"), &["localhost"], "e2e-hub").unwrap();
        let registry = vitals_hub::clinic::Registry::new();
        let server = tls::server_config_registry(
            &pki.receiver_cert,
            &pki.receiver_key,
            &pki.ca,
            registry.clone(),
        )
        .unwrap();
        let receiver = Receiver::start_with(
            ReceiverConfig {
                bind: "127.0.0.1:0".parse().unwrap(),
                listen: Listen::Tls(server),
                db_path: db,
                faults: FaultQueue::new(),
            },
            vitals_hub::clinic::ClinicOptions {
                access: vitals_hub::clinic::Access::Registry(registry),
                limits: vitals_hub::clinic::Limits::default(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let der = tls::load_certs(&pki.hub_cert).unwrap();
        receiver
            .enroll(&vitals_hub::clinic::registry::record_for_der(&der[0], patient, None).unwrap())
            .unwrap();
        World { dir, pki, receiver }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// A hub config; `devices` is the `[[device]]` TOML appended as given.
    pub fn config(&self, name: &str, devices: &str) -> PathBuf {
        let text = format!(
            r#"[hub]
patient_id = "{PATIENT}"
state_dir = "{state}"

[uplink]
base_url = "https://localhost:{port}/fhir"
ca_bundle = "{ca}"
client_cert = "{cert}"
client_key = "{key}"
require_clock_sync = false
hub_mac = "02:00:5E:10:00:02"
retry_base_ms = 100
retry_cap_ms = 1000
poll_interval_ms = 500

[ble]
enabled = false

[alerts.thresholds.glucose]
unit = "mg/dL"
low = 70
high = 250

{devices}
"#,
            state = self.state_dir().display(),
            port = self.receiver.addr().port(),
            ca = self.pki.ca.display(),
            cert = self.pki.hub_cert.display(),
            key = self.pki.hub_key.display(),
        );
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn spawn(&self, config: &Path) -> Child {
        hub_command()
            .args(["run", "--config"])
            .arg(config)
            .env("VITALS_HUB_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Observation identifier → how many the receiver holds.
    pub fn at_receiver(&self) -> BTreeMap<String, u64> {
        self.receiver.observation_identifier_counts()
    }
}

/// Simulated devices, one measurement a second.
pub const FAST_DEVICES: &str = r#"
[[device]]
name = "meter"
kind = "simulated"
profile = "glucose"
interval_secs = 1
stored_records = 3
values = [104, 118, 262, 97]

[[device]]
name = "cuff"
kind = "simulated"
profile = "blood-pressure"
interval_secs = 1

[[device]]
name = "oximeter"
kind = "simulated"
profile = "pulse-oximeter"
interval_secs = 1

[[device]]
name = "scale"
kind = "simulated"
profile = "scale"
interval_secs = 2
"#;

/// What the hub's store holds (the hub must be stopped): the Observation identifier of every
/// stored reading that becomes an Observation, and the glucose sequence numbers.
pub struct Stored {
    pub identifiers: BTreeMap<String, usize>,
    pub readings: usize,
    pub glucose_sequences: Vec<u32>,
    pub pending: u64,
    pub alerts: u64,
}

pub async fn stored(state_dir: &Path) -> Stored {
    let mut sc = StoreConfig::new(state_dir);
    sc.patient_id = Some(PATIENT.into());
    let store = Store::open(sc, Arc::new(SystemClock)).await.unwrap();
    let devices: BTreeMap<_, _> = {
        let mut m = BTreeMap::new();
        for d in store.devices().await.unwrap() {
            let info = store.device_info(&d.key).await.unwrap().unwrap_or_default();
            let phd = vitals_hub::uplink::sync::phd_device_info(&d, info, 0);
            m.insert(d.key.clone(), phd);
        }
        m
    };
    let mut out = Stored {
        identifiers: BTreeMap::new(),
        readings: 0,
        glucose_sequences: Vec::new(),
        pending: 0,
        alerts: 0,
    };
    let mut after = 0;
    loop {
        let page = store.readings(after, 500).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.id;
        for r in page {
            out.readings += 1;
            if r.reading.kind == vitals_hub::model::Kind::Glucose {
                out.glucose_sequences
                    .push(r.reading.sequence.unwrap_or(0).into());
            }
            let dev = &devices[&r.device];
            if let Ok(id) = fhir::reading_identifier(dev, PATIENT, &r.reading, r.received_at) {
                *out.identifiers.entry(id.value()).or_default() += 1;
            }
        }
    }
    let st = store.stats().await.unwrap();
    out.pending = st.pending + st.in_flight;
    out.alerts = st.alerts;
    store.close().await;
    out
}

/// Wait for the child to exit, at most `secs`; its status.
pub fn wait_exit(child: &mut Child, secs: u64) -> Option<std::process::ExitStatus> {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    None
}

pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} failed");
}

pub fn stderr_of(child: &mut Child) -> String {
    use std::io::Read;
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}
