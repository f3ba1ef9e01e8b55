//! Shared by the `console_*` tests: a console over real HTTPS with its own development
//! certificate (a CA separate from any hub CA), a clinic store in a temporary folder, and a
//! reqwest client that trusts that CA, follows no redirect and keeps cookies by hand.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

pub mod webdriver;

use std::path::PathBuf;
use std::sync::Arc;
use vitals_hub::clinic::console::users::{Role, UserStore};
use vitals_hub::clinic::console::{server_config, Console, ConsoleConfig};
use vitals_hub::clinic::pki::{DevCa, Span};

pub const USER: &str = "dr.jones";
pub const PASSWORD: &str = "a long enough test password";

pub struct Env {
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
    pub console: Option<Console>,
    pub base: String,
    pub ca_der: Vec<u8>,
}

impl Env {
    /// A console started elsewhere (the demo's), for [`Browser::new`].
    pub fn for_port(port: u16, ca_der: Vec<u8>) -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
            db: PathBuf::new(),
            console: None,
            base: format!("https://localhost:{port}"),
            ca_der,
        }
    }

    pub fn console(&self) -> &Console {
        self.console.as_ref().unwrap()
    }

    pub async fn stop(self) {
        if let Some(c) = self.console {
            c.shutdown().await;
        }
    }
}

pub async fn start() -> Env {
    start_zoned(None).await
}

/// [`start`] with the console showing times in `zone`.
pub async fn start_zoned(zone: Option<jiff::tz::TimeZone>) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("clinic.db");
    {
        let mut u = UserStore::open(&db).unwrap();
        u.add(USER, Role::Clinician, PASSWORD).unwrap();
    }
    let ca = DevCa::new("console test CA").unwrap();
    let (cert, key) = ca
        .server(&["localhost", "127.0.0.1"], Span::DEFAULT)
        .unwrap()
        .write(dir.path(), "console")
        .unwrap();
    let console = Console::start(ConsoleConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        tls: server_config(&cert, &key).unwrap(),
        db_path: db.clone(),
        worklist: Default::default(),
        fhir_base: None,
        zone,
    })
    .await
    .unwrap();
    let base = format!("https://localhost:{}", console.addr().port());
    Env {
        dir,
        db,
        console: Some(console),
        base,
        ca_der: ca.cert_der.clone(),
    }
}

/// A browser-like client: trusts the console's CA, no redirects followed, cookies kept here.
pub struct Browser {
    pub http: reqwest::Client,
    pub base: String,
    pub cookies: Vec<(String, String)>,
}

pub struct Page {
    pub status: u16,
    pub location: Option<String>,
    pub set_cookies: Vec<String>,
    pub body: String,
}

impl Browser {
    pub fn new(env: &Env) -> Browser {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls_pki_types::CertificateDer::from(env.ca_der.clone()))
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(cfg)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Browser {
            http,
            base: env.base.clone(),
            cookies: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn finish(&mut self, r: reqwest::Response) -> Page {
        let status = r.status().as_u16();
        let location = r
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned());
        let set_cookies: Vec<String> = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        for c in &set_cookies {
            let first = c.split(';').next().unwrap();
            let (k, v) = first.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != k);
            if !v.is_empty() && !c.contains("Max-Age=0") {
                self.cookies.push((k.to_owned(), v.to_owned()));
            }
        }
        let body = r.text().await.unwrap();
        Page {
            status,
            location,
            set_cookies,
            body,
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.finish(r).await
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let body = form
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    k,
                    percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
                )
            })
            .collect::<Vec<_>>()
            .join("&");
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        self.finish(r).await
    }

    /// Log in as `user`; returns the login response.
    pub async fn login(&mut self, user: &str, password: &str) -> Page {
        let p = self.get("/login").await;
        assert_eq!(p.status, 200);
        let csrf = csrf_of(&p.body);
        self.post(
            "/login",
            &[("user", user), ("password", password), ("csrf", &csrf)],
        )
        .await
    }

    pub fn has_cookie(&self, name: &str) -> bool {
        self.cookies.iter().any(|(k, _)| k == name)
    }
}

/// The CSRF token of the (first) form on a page.
pub fn csrf_of(html: &str) -> String {
    let i = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    html[i..].split('"').next().unwrap().to_owned()
}

/// A transaction Bundle of `entries` (resource, fullUrl) as a hub would POST it.
pub fn bundle(entries: Vec<(serde_json::Value, &str)>) -> serde_json::Value {
    let e: Vec<serde_json::Value> = entries
        .into_iter()
        .map(|(r, url)| {
            let ty = r["resourceType"].as_str().unwrap().to_owned();
            serde_json::json!({ "fullUrl": url, "resource": r, "request": { "method": "POST", "url": ty } })
        })
        .collect();
    serde_json::json!({ "resourceType": "Bundle", "type": "transaction", "entry": e })
}

/// A hub as the fleet page's tests describe it: `mac`, software `version`, NTP on, UTC.
pub fn hub_info(mac: &str, version: &str) -> vitals_hub::fhir::HubInfo {
    vitals_hub::fhir::HubInfo {
        mac: mac.parse().unwrap(),
        manufacturer: "Example RPM Ltd".into(),
        model: "vitals-hub".into(),
        software_version: version.into(),
        ntp: true,
        utc_offset_minutes: 0,
        zone: None,
    }
}

/// A glucose reading of `patient` at `at`, with optional interpretation code (L, H, LL, HH).
pub fn glucose(
    patient: &str,
    at: jiff::Timestamp,
    mg_dl: u32,
    flag: Option<&str>,
) -> serde_json::Value {
    let mut o = serde_json::json!({
        "resourceType": "Observation",
        "status": "final",
        "code": { "coding": [{ "system": "urn:iso:std:iso:11073:10101", "code": "160184" }] },
        "subject": { "reference": format!("Patient/{patient}") },
        "effectiveDateTime": at.to_string(),
        "valueQuantity": { "value": mg_dl, "unit": "mg/dL", "system": "http://unitsofmeasure.org", "code": "mg/dL" }
    });
    if let Some(f) = flag {
        o["interpretation"] = serde_json::json!([{ "coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": f }] }]);
    }
    o
}

/// The hub's Device and one heartbeat Observation at `at` (subject = the hub).
pub fn heartbeat(at: jiff::Timestamp) -> serde_json::Value {
    bundle(vec![
        (
            serde_json::json!({ "resourceType": "Device" }),
            "urn:uuid:00000000-0000-4000-8000-000000000001",
        ),
        (
            serde_json::json!({
                "resourceType": "Observation",
                "identifier": [{ "system": "https://vitals-hub.invalid/fhir/CodeSystem/hub-status", "value": format!("hb-{}", at.as_second()) }],
                "status": "final",
                "code": { "coding": [{ "system": "https://vitals-hub.invalid/fhir/CodeSystem/hub-status", "code": "backlog-depth" }] },
                "subject": { "reference": "urn:uuid:00000000-0000-4000-8000-000000000001" },
                "effectiveDateTime": at.to_string(),
                "valueQuantity": { "value": 0, "unit": "1" }
            }),
            "urn:uuid:00000000-0000-4000-8000-000000000002",
        ),
    ])
}

/// A DetectedIssue of `patient` (severity high/moderate/low) in episode `episode`.
pub fn alert(
    patient: &str,
    episode: &str,
    severity: &str,
    transition: &str,
    at: jiff::Timestamp,
) -> serde_json::Value {
    serde_json::json!({
        "resourceType": "DetectedIssue",
        "identifier": [
            { "system": "https://vitals-hub.invalid/fhir/alert", "value": format!("alert/{episode}/{transition}") },
            { "system": "https://vitals-hub.invalid/fhir/alert-episode", "value": episode }
        ],
        "status": "final",
        "code": { "coding": [{ "system": "https://vitals-hub.invalid/fhir/CodeSystem/alert-rule", "code": "threshold-glucose" }],
                  "text": format!("{transition} critical_low") },
        "severity": severity,
        "patient": { "reference": format!("Patient/{patient}") },
        "identifiedDateTime": at.to_string()
    })
}

/// Write `b` into the clinic store as hub `hub` of `patient` would.
pub fn ingest(db: &std::path::Path, hub: &str, patient: &str, b: &serde_json::Value) {
    let mut d = vitals_hub::clinic::db::ReceiverDb::open(Some(db)).unwrap();
    d.transaction(
        b,
        Some(hub),
        Some(vitals_hub::clinic::db::Scope {
            hub_id: hub,
            patient,
        }),
    )
    .unwrap();
}
