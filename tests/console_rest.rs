//! The console against an independent FHIR R4 server (`@medplum/fhir-router` on node,
//! `.ci/fhir-server.sh`) — `vitals-clinic serve --fhir-base URL --console-listen …` — with the
//! hubs uploading into that server through the authorising front, compared with the console on
//! the built-in store fed the same data by the same hubs: the worklist rows, the patient page's
//! readings, points and alerts are the same. An acknowledgement made on the REST console is a Task
//! at the server, audited there, and takes the critical mark off the worklist.
//!
//! And a FHIR server that misbehaves on purpose (errors, garbage, a next link elsewhere, an endless
//! answer, pages that never end): every page is a 502 naming the problem, never a panic or a hang.
//!
//! Skips when node or npm is missing, unless CI=true.

#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod console_support;
mod uplink_support;

use console_support::{Browser, Env, Page, PASSWORD, USER};
use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Value};
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use uplink_support::{
    der_key, free_port, hub_on, mtls_client, store_config, uplink, uplink_config, PATIENT, TLS13,
};
use vitals_hub::clinic::console::fhir::{FhirBase, FhirClient, FhirClientError};
use vitals_hub::clinic::console::users::{Role, UserStore};
use vitals_hub::clinic::console::{server_config, Console, ConsoleConfig};
use vitals_hub::clinic::front::{Front, FrontConfig};
use vitals_hub::clinic::registry::record_for_der;
use vitals_hub::clinic::{
    tls, Access, ClinicOptions, FaultQueue, Limits, Listen, Receiver, ReceiverConfig, Registry,
};
use vitals_hub::model::{Decimal, Kind, LocalDateTime, Reading, SystemClock, Unit, UtcMillis};
use vitals_hub::receiver::pki::{DevCa, Minted, Span, DEV_RECEIVER_NAMES};
use vitals_hub::store::NewReading;

const PATIENT_B: &str = "pat-0002";

fn which(name: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|d| d.join(name).exists())
}

fn missing(what: &str) -> bool {
    if which(what) {
        return false;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{what} is not installed; CI needs it for the independent FHIR server test");
    }
    eprintln!("SKIPPED: {what} is not installed");
    true
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The independent FHIR server with `Patient/<PATIENT>`; its base URL.
async fn fhir_server() -> (Kill, String) {
    let port = free_port();
    let mut child = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/fhir-server.sh"))
        .args(["--port", &port.to_string(), "--patient", PATIENT])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let kill = Kill(child);
    let ready = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.starts_with("listening"))
    });
    assert!(
        tokio::time::timeout(Duration::from_secs(600), ready)
            .await
            .expect("the FHIR server did not start in 10 minutes")
            .unwrap(),
        "the FHIR server exited before listening (see its stderr)"
    );
    (kill, format!("http://127.0.0.1:{port}/fhir"))
}

/// The clinic as `vitals-clinic serve` runs it, mutual TLS with enrolled hubs: the built-in
/// store in `db`, or (with `front`) the authorising front for that FHIR server.
async fn clinic(ca: &DevCa, db: &Path, front: Option<Arc<Front>>) -> Receiver {
    let registry = Registry::new();
    let server = ca.server(DEV_RECEIVER_NAMES, Span::DEFAULT).unwrap();
    let cfg = tls::server_config_der_with(
        vec![server.cert_der.clone().into()],
        der_key(&server),
        Some(vec![ca.cert_der.clone().into()]),
        TLS13,
        Some(registry.clone()),
    )
    .unwrap();
    Receiver::start_with(
        ReceiverConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            listen: Listen::Tls(cfg),
            db_path: Some(db.to_path_buf()),
            faults: FaultQueue::new(),
        },
        ClinicOptions {
            access: Access::Registry(registry),
            limits: Limits::default(),
            front,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// The console over `db`'s accounts, reading the built-in store or (with `front`) the server.
async fn console(dir: &Path, db: &Path, front: Option<Arc<Front>>) -> Env {
    std::fs::create_dir_all(dir).unwrap();
    UserStore::open(db)
        .unwrap()
        .add(USER, Role::Clinician, PASSWORD)
        .unwrap();
    let ca = DevCa::new("console test CA").unwrap();
    let name = if front.is_some() { "rest" } else { "local" };
    let (cert, key) = ca
        .server(&["localhost", "127.0.0.1"], Span::DEFAULT)
        .unwrap()
        .write(dir, name)
        .unwrap();
    let c = Console::start(ConsoleConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        tls: server_config(&cert, &key).unwrap(),
        db_path: db.to_path_buf(),
        worklist: Default::default(),
        fhir_base: front,
        zone: None,
    })
    .await
    .unwrap();
    let mut env = Env::for_port(c.addr().port(), ca.cert_der.clone());
    env.console = Some(c);
    env.db = db.to_path_buf();
    env
}

/// A glucose reading `mins_ago` minutes ago (device time on a hub in UTC).
fn reading(i: u32, mins_ago: i64, mg_dl: i64) -> NewReading {
    let at = Timestamp::now() - SignedDuration::from_mins(mins_ago);
    let mut r = Reading::new(
        Kind::Glucose,
        vitals_hub::model::Value::Number(Decimal::new(mg_dl, 0)),
        Unit::MgPerDl,
    );
    r.device_time = Some(LocalDateTime::from_epoch_seconds(at.as_second()).unwrap());
    r.sequence = Some(u16::try_from(i).unwrap());
    NewReading {
        stable_key: format!("meter-{i}"),
        reading: r,
        received_at: UtcMillis(at.as_millisecond()),
        test_data: false,
        summary: None,
    }
}

/// A hub of `patient` holding `readings`, uploading with the real uplink to `url`: its readings
/// and a heartbeat.
async fn hub_uploads(
    ca: &DevCa,
    cert: &Minted,
    patient: &str,
    readings: Vec<NewReading>,
    url: &str,
) {
    let config = |dir: &Path| {
        let mut c = store_config(dir);
        c.patient_id = Some(patient.into());
        c
    };
    let h = hub_on(config, Arc::new(SystemClock), readings, ca, cert).await;
    let mut cfg = uplink_config(&h, url);
    cfg.patient_id = patient.into();
    let mut up = uplink(&h, cfg);
    up.heartbeat().await.expect("the heartbeat is accepted");
    let rep = up.drain(Duration::from_secs(60)).await.unwrap();
    assert_eq!(rep.rejected, 0, "{rep:?}");
}

/// A transaction as a hub's alerting sends it: a flagged reading and its critical alert.
fn alert_bundle(patient: &str, at: Timestamp) -> Value {
    console_support::bundle(vec![
        (
            console_support::glucose(patient, at, 45, Some("LL")),
            "urn:uuid:00000000-0000-4000-8000-0000000000a1",
        ),
        (
            console_support::alert(patient, "ep-1", "high", "raised", at),
            "urn:uuid:00000000-0000-4000-8000-0000000000a2",
        ),
    ])
}

async fn post_bundle(client: &reqwest::Client, url: &str, b: &Value) {
    let r = client
        .post(url)
        .header("content-type", "application/fhir+json")
        .body(serde_json::to_vec(b).unwrap())
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    assert_eq!(s, 200, "{}", r.text().await.unwrap());
}

/// The visible text of the element starting at `marker` up to `end`, whitespace folded, with the
/// heartbeat's age (seconds apart between the two clinics) left out.
fn text_of(html: &str, marker: &str, end: &str) -> String {
    let Some(i) = html.find(marker) else {
        return String::new();
    };
    let rest = &html[i..];
    let part = &rest[..rest.find(end).unwrap_or(rest.len())];
    let mut out = String::new();
    let mut in_tag = false;
    for ch in part.chars() {
        match ch {
            '<' => {
                in_tag = true;
                out.push(' ');
            }
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    let folded = out.split_whitespace().collect::<Vec<_>>().join(" ");
    folded
        .split("(heartbeat ")
        .enumerate()
        .map(|(n, s)| {
            if n == 0 {
                s.to_owned()
            } else {
                s.split_once(')')
                    .map(|x| x.1.to_owned())
                    .unwrap_or_default()
            }
        })
        .collect::<Vec<_>>()
        .join("(heartbeat …)")
}

fn order(html: &str) -> Vec<String> {
    html.split("data-patient=\"")
        .skip(1)
        .map(|x| x.split('"').next().unwrap().to_owned())
        .collect()
}

/// `data-points` of each chart, in page order.
fn points(html: &str) -> Vec<String> {
    html.split("data-points=\"")
        .skip(1)
        .map(|x| x.split('"').next().unwrap().to_owned())
        .collect()
}

async fn logged_in(env: &Env) -> Browser {
    let mut b = Browser::new(env);
    let p = b.login(USER, PASSWORD).await;
    assert_eq!(p.status, 303, "{}", p.body);
    b
}

async fn at_server(fhir: &str, ty: &str) -> Vec<Value> {
    let body = reqwest::get(format!("{fhir}/{ty}?_count=1000"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap();
    v["entry"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|e| e["resource"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_the_same_over_an_independent_fhir_server_as_over_the_built_in_store() {
    if missing("node") || missing("npm") {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (_server, fhir) = fhir_server().await;
    let put = reqwest::Client::new()
        .put(format!("{fhir}/Patient/{PATIENT_B}"))
        .header("content-type", "application/fhir+json")
        .body(json!({"resourceType": "Patient", "id": PATIENT_B, "active": true}).to_string())
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());

    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::new("clinic").unwrap();
    let cert_a = ca.client("hub-a", Span::DEFAULT).unwrap();
    let cert_b = ca.client("hub-b", Span::DEFAULT).unwrap();
    // The same front object the console uses in `serve --fhir-base`.
    let front = Arc::new(Front::new(&FrontConfig::new(&fhir)).unwrap());
    let built_in_db = dir.path().join("clinic.db");
    let registry_db = dir.path().join("registry.db");
    let built_in = clinic(&ca, &built_in_db, None).await;
    let fronted = clinic(&ca, &registry_db, Some(front.clone())).await;
    for rx in [&built_in, &fronted] {
        rx.enroll(&record_for_der(&cert_a.cert_der, PATIENT, None).unwrap())
            .unwrap();
        rx.enroll(&record_for_der(&cert_b.cert_der, PATIENT_B, None).unwrap())
            .unwrap();
    }
    // The same hubs' data into each: A's readings over three days and a heartbeat; B a reading,
    // a heartbeat, and a critical low with its alert.
    let a_readings = || {
        (0..12u32)
            .map(|i| reading(i, 120 + i64::from(i) * 360, 90 + i64::from(i)))
            .collect::<Vec<_>>()
    };
    let b_readings = || vec![reading(100, 300, 110)];
    let alert_at = Timestamp::now() - SignedDuration::from_mins(30);
    for rx in [&built_in, &fronted] {
        let url = uplink_support::url(rx);
        hub_uploads(&ca, &cert_a, PATIENT, a_readings(), &url).await;
        hub_uploads(&ca, &cert_b, PATIENT_B, b_readings(), &url).await;
        let (cb, kb) = cert_b.write(dir.path(), "hub-b").unwrap();
        let ca_path = dir.path().join("clinic-ca.pem");
        std::fs::write(&ca_path, &ca.cert_pem).unwrap();
        post_bundle(
            &mtls_client(&ca_path, &cb, &kb),
            &url,
            &alert_bundle(PATIENT_B, alert_at),
        )
        .await;
    }

    let local = console(&dir.path().join("l"), &built_in_db, None).await;
    let rest_db = dir.path().join("r/console.db");
    let rest = console(&dir.path().join("r"), &rest_db, Some(front.clone())).await;
    let mut lb = logged_in(&local).await;
    let mut rb = logged_in(&rest).await;

    // The worklist: the same rows in the same order, from the same fixed number of requests.
    let before = rest.console().fhir_requests();
    let (lw, rw) = (lb.get("/").await, rb.get("/").await);
    assert_eq!((lw.status, rw.status), (200, 200), "{}", rw.body);
    let per_page = rest.console().fhir_requests() - before;
    assert_eq!(
        per_page, 6,
        "five searches and the AuditEvent, whatever the patients"
    );
    assert_eq!(order(&rw.body), [PATIENT_B, PATIENT], "critical first");
    assert_eq!(order(&lw.body), order(&rw.body));
    let rows = |p: &Page| text_of(&p.body, "<tbody", "</tbody>");
    assert!(
        rows(&rw).contains("1 critical unacknowledged"),
        "{}",
        rows(&rw)
    );
    assert!(rows(&rw).contains("online"), "{}", rows(&rw));
    assert_eq!(rows(&lw), rows(&rw));

    // The patient pages: the same readings, points and alerts.
    for p in [PATIENT, PATIENT_B] {
        let (l, r) = (
            lb.get(&format!("/patient/{p}")).await,
            rb.get(&format!("/patient/{p}")).await,
        );
        assert_eq!((l.status, r.status), (200, 200), "{}", r.body);
        assert_eq!(points(&l.body), points(&r.body), "{p}");
        // The device panel: the same hub and devices with the same fields (numbers left out:
        // the two clinics got their heartbeats seconds apart).
        // (And the hub's logical id, which each server assigns.)
        let panel = |b: &str| {
            text_of(b, "<table id=\"devices", "</table>")
                .split(' ')
                .map(|w| {
                    if w.starts_with("Device/") {
                        "Device/…"
                    } else {
                        w
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
                .chars()
                .filter(|c| !c.is_ascii_digit())
                .collect::<String>()
        };
        assert!(r.body.contains("<table id=\"devices\">"), "{p}");
        assert_eq!(panel(&l.body), panel(&r.body), "{p}");
        for (m, e) in [
            ("<table class=\"readings", "</table>"),
            ("<table id=\"alerts", "</table>"),
        ] {
            assert_eq!(text_of(&l.body, m, e), text_of(&r.body, m, e), "{p} {m}");
        }
    }
    let pa = rb.get(&format!("/patient/{PATIENT}")).await;
    assert_eq!(points(&pa.body), ["12"]);
    let pb = rb.get(&format!("/patient/{PATIENT_B}")).await;
    assert_eq!(points(&pb.body), ["2"]);
    assert!(pb.body.contains("LL"));

    // Acknowledge at the REST console: a Task at the server, audited there; the mark is gone.
    let action = pb
        .body
        .split("action=\"/alert/")
        .nth(1)
        .expect("an acknowledge form")
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let issue = action.trim_end_matches("/ack").to_owned();
    let csrf = console_support::csrf_of(&pb.body);
    let ack = rb
        .post(
            &format!("/alert/{action}"),
            &[("csrf", &csrf), ("note", "called; ate; fine now")],
        )
        .await;
    assert_eq!(ack.status, 303, "{}", ack.body);
    let tasks = at_server(&fhir, "Task").await;
    assert_eq!(tasks.len(), 1);
    assert_eq!(
        tasks[0]["focus"]["reference"],
        format!("DetectedIssue/{issue}")
    );
    let audits = at_server(&fhir, "AuditEvent").await;
    let acks = audits
        .iter()
        .filter(|e| e["action"] == "C" && e["entity"][1]["what"]["reference"].is_string())
        .count();
    assert_eq!(acks, 1, "{audits:?}");
    let reads = audits
        .iter()
        .filter(|e| {
            e["action"] == "R"
                && e["entity"][0]["what"]["reference"] == format!("Patient/{PATIENT_B}")
        })
        .count();
    assert!(
        reads >= 2,
        "every view of B's page is audited at the server"
    );
    let rw = rb.get("/").await;
    assert!(
        !rows(&rw).contains("critical unacknowledged"),
        "{}",
        rows(&rw)
    );

    // An admin labels A at the REST console: the Patient at the server carries it as
    // name[0].text (its other elements kept), the worklist and the page show it.
    UserStore::open(&rest_db)
        .unwrap()
        .add("admin.kim", Role::Admin, PASSWORD)
        .unwrap();
    let mut admin = Browser::new(&rest);
    assert_eq!(admin.login("admin.kim", PASSWORD).await.status, 303);
    let page = admin.get(&format!("/patient/{PATIENT}")).await;
    let csrf = console_support::csrf_of(&page.body);
    let r = admin
        .post(
            &format!("/patient/{PATIENT}/label"),
            &[("csrf", &csrf), ("label", "J.D. room 4")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let patients = at_server(&fhir, "Patient").await;
    let a = patients.iter().find(|p| p["id"] == PATIENT).unwrap();
    assert_eq!(a["name"][0]["text"], "J.D. room 4");
    assert_eq!(a["active"], true);
    assert!(rb.get("/").await.body.contains("J.D. room 4"));
    assert!(rb
        .get(&format!("/patient/{PATIENT}"))
        .await
        .body
        .contains("J.D. room 4"));
    let audits = at_server(&fhir, "AuditEvent").await;
    assert_eq!(audits.iter().filter(|e| e["action"] == "U").count(), 1);

    // A hub's Devices at the server carry its patient (written by the front).
    let devices = at_server(&fhir, "Device").await;
    assert!(!devices.is_empty());
    for d in &devices {
        assert!(
            [format!("Patient/{PATIENT}"), format!("Patient/{PATIENT_B}")]
                .contains(&d["patient"]["reference"].as_str().unwrap().to_owned()),
            "{d}"
        );
    }

    local.stop().await;
    rest.stop().await;
    built_in.shutdown().await;
    fronted.shutdown().await;
}

/// A FHIR server misbehaving by path: answers written by hand over a raw socket.
async fn bad_server() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let Ok(n) = s.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                let head = String::from_utf8_lossy(&got).to_string();
                let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                let reply = |status: &str, body: String| {
                    format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/fhir+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                };
                let out = if path.starts_with("/error/") {
                    reply("400 Bad Request", json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "not-supported", "diagnostics": "parameter x is unknown"}]}).to_string())
                } else if path.starts_with("/garbage/") {
                    reply("200 OK", "<html>not FHIR</html>".into())
                } else if path.starts_with("/elsewhere/") {
                    reply("200 OK", json!({"resourceType": "Bundle", "type": "searchset", "total": 5000,
                        "link": [{"relation": "next", "url": "http://evil.invalid/fhir/Patient?page=2"}],
                        "entry": [{"resource": {"resourceType": "Patient", "id": "p1"}}]}).to_string())
                } else if path.starts_with("/endless/") {
                    // A page of new ids each time, always with a next link: bounded by _count.
                    let n: u64 = path.len() as u64 + rand_part(&path);
                    reply("200 OK", json!({"resourceType": "Bundle", "type": "searchset",
                        "link": [{"relation": "next", "url": format!("http://127.0.0.1:{port}/endless/fhir/Patient?p={n}")}],
                        "entry": [{"resource": {"resourceType": "Patient", "id": format!("p{n}")}}]}).to_string())
                } else if path.starts_with("/huge/") {
                    // Chunked, no length announced: only the cap while reading stops it.
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/fhir+json\r\ntransfer-encoding: chunked\r\n\r\n")
                        .await;
                    let mut chunk = b"10000\r\n".to_vec();
                    chunk.extend(vec![b' '; 1 << 16]);
                    chunk.extend(b"\r\n");
                    loop {
                        if s.write_all(&chunk).await.is_err() {
                            return;
                        }
                    }
                } else {
                    // /slow/: never answers.
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    return;
                };
                let _ = s.write_all(out.as_bytes()).await;
            });
        }
    });
    format!("http://127.0.0.1:{port}")
}

/// A distinct number per page of the endless server.
fn rand_part(path: &str) -> u64 {
    path.rsplit('=')
        .next()
        .and_then(|n| n.parse::<u64>().ok())
        .map_or(1, |n| n + 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misbehaving_fhir_server_is_named_never_followed_and_bounded() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let srv = bad_server().await;
    let client = |kind: &str| {
        let mut cfg = FrontConfig::new(&format!("{srv}/{kind}/fhir"));
        cfg.timeout = Duration::from_secs(2);
        cfg.max_response = 1 << 20;
        FhirClient::new(FhirBase::Rest(Arc::new(Front::new(&cfg).unwrap())))
    };
    let e = client("error")
        .search("Observation", &[("patient", "Patient/secret-id".into())])
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("400") && msg.contains("not-supported"),
        "{msg}"
    );
    assert!(msg.contains("search Observation (patient)"), "{msg}");
    assert!(
        !msg.contains("secret-id"),
        "no value in the error that is logged: {msg}"
    );
    assert_eq!(e.detail(), Some("parameter x is unknown"));

    let e = client("garbage").search("Patient", &[]).await.unwrap_err();
    assert!(matches!(e, FhirClientError::Answer { .. }), "{e}");
    assert!(e.to_string().contains("not JSON"), "{e}");

    let e = client("elsewhere")
        .search("Patient", &[("_count", "10".into())])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not below --fhir-base"), "{e}");

    let c = client("endless");
    let found = c
        .search("Patient", &[("_count", "5".into())])
        .await
        .unwrap();
    assert_eq!(found.resources.len(), 5, "stops at the _count asked");
    assert_eq!(c.requests(), 5, "one request per page");

    let e = client("huge").search("Patient", &[]).await.unwrap_err();
    assert!(e.to_string().contains("larger than"), "{e}");

    let e = client("slow").read("Patient", "p1").await.unwrap_err();
    assert!(e.to_string().contains("did not answer within 2 s"), "{e}");
}

/// `vitals-clinic serve --fhir-base URL --console-listen …` starts the console beside the front,
/// and the console reads that FHIR server (here one that is down: the worklist is a 502 naming
/// it, the accounts still work from --db). A bad --zone is refused at start, naming the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_fhir_base_and_console_listen_runs_the_console_against_that_server() {
    use std::io::Write;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = DevCa::new("clinic").unwrap();
    std::fs::write(d.join("ca.crt"), &ca.cert_pem).unwrap();
    ca.server(DEV_RECEIVER_NAMES, Span::DEFAULT)
        .unwrap()
        .write(d, "server")
        .unwrap();
    let console_ca = DevCa::new("console CA").unwrap();
    console_ca
        .server(&["localhost", "127.0.0.1"], Span::DEFAULT)
        .unwrap()
        .write(d, "console")
        .unwrap();
    let db = d.join("clinic.db");
    let bin = env!("CARGO_BIN_EXE_vitals-clinic");
    let mut add = Command::new(bin)
        .args(["user", "add", "--db"])
        .arg(&db)
        .arg(USER)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    writeln!(add.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    assert!(add.wait().unwrap().success());
    let dead = free_port();
    let serve = |zone: &str| {
        let mut c = Command::new(bin);
        c.args(["serve", "--listen", "127.0.0.1:0", "--cert"])
            .arg(d.join("server.crt"))
            .arg("--key")
            .arg(d.join("server.key"))
            .arg("--client-ca")
            .arg(d.join("ca.crt"))
            .arg("--db")
            .arg(&db)
            .args(["--fhir-base", &format!("http://127.0.0.1:{dead}/fhir")])
            .args(["--console-listen", "127.0.0.1:0", "--console-cert"])
            .arg(d.join("console.crt"))
            .arg("--console-key")
            .arg(d.join("console.key"))
            .args(["--zone", zone]);
        c
    };
    let out = serve("Mars/Olympus").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--zone") && err.contains("IANA name"), "{err}");

    let mut child = serve("Europe/Berlin")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _kill = Kill(child);
    let port = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| {
                l.strip_prefix("console https://")
                    .and_then(|a| a.rsplit(':').next())
                    .and_then(|p| p.trim().parse::<u16>().ok())
            })
    })
    .await
    .unwrap()
    .expect("the console's address line");
    let env = Env::for_port(port, console_ca.cert_der.clone());
    let mut b = logged_in(&env).await;
    let w = b.get("/").await;
    assert_eq!(w.status, 502, "{}", w.body);
    assert!(w.body.contains("cannot be reached"), "{}", w.body);
    assert!(w.body.contains("--fhir-base"), "{}", w.body);
}
