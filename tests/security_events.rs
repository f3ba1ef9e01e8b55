#![cfg(feature = "clinic")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! Security events upstream (issue 19 part 3): the hub's security events, aggregated per code and
//! window, reach a real mutual-TLS clinic on 127.0.0.1 as AuditEvents about the hub's own Device,
//! each once with its count; a flood of 1,000 is one AuditEvent; nothing in them names the patient,
//! a reading value, a device address or key bytes; a lost response and a restart do not send an
//! aggregate twice; an AuditEvent about anything but the hub is refused (403).

mod uplink_support;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use uplink_support::*;
use vitals_hub::clinic::registry::record_for_der;
use vitals_hub::clinic::Limits as ClinicLimits;
use vitals_hub::fhir::audit::CODE_SYSTEM;
use vitals_hub::model::{Clock, Decimal, SystemClock, UtcMillis};
use vitals_hub::receiver::pki::{DevCa, Minted, Span};
use vitals_hub::receiver::{Fault, Receiver};
use vitals_hub::store::{Store, StoreConfig};
use vitals_hub::uplink::{FixedTimeSync, Uplink};

const WINDOW_MS: i64 = 300_000;
/// A reading value no timestamp or count can contain by chance.
const MARKER_VALUE: &str = "417.3";

/// The system clock moved forward by hand: time passes (backoffs end) and windows can be skipped.
#[derive(Debug, Default)]
struct AheadClock(AtomicI64);

impl AheadClock {
    fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for AheadClock {
    fn now(&self) -> UtcMillis {
        UtcMillis(SystemClock.now().0 + self.0.load(Ordering::SeqCst))
    }
}

/// A hub of [`uplink_support`] on its own clock (reached through `Deref`).
struct TestHub {
    hub: Hub,
    clock: Arc<AheadClock>,
}

impl std::ops::Deref for TestHub {
    type Target = Hub;
    fn deref(&self) -> &Hub {
        &self.hub
    }
}

fn config(dir: &Path) -> StoreConfig {
    let mut c = store_config(dir);
    c.security_window_ms = WINDOW_MS;
    c
}

async fn test_hub(ca: &DevCa, cert: &Minted) -> TestHub {
    let clock = Arc::new(AheadClock::default());
    let hub = hub_on(config, clock.clone(), Vec::new(), ca, cert).await;
    TestHub { hub, clock }
}

impl TestHub {
    fn uplink_to(&self, url: &str, ca_path: &Path) -> Uplink {
        let mut c = uplink_config(self, url);
        c.ca_bundle = ca_path.to_path_buf();
        c.retry_cap_ms = 200;
        Uplink::new(
            c,
            self.store.clone(),
            self.clock.clone(),
            Arc::new(FixedTimeSync(true)),
            hub(),
        )
        .unwrap()
    }

    fn uplink(&self, rx: &Receiver) -> Uplink {
        self.uplink_to(&url(rx), &self.ca_path)
    }

    /// A restart: the store closed (every other handle dropped first) and opened again.
    async fn reopen(mut self) -> TestHub {
        self.hub.store.close().await;
        self.hub.store = Store::open(config(self.hub.dir.path()), self.clock.clone())
            .await
            .unwrap();
        self
    }
}

async fn clinic_for(ca: &DevCa, cert: &Minted) -> Receiver {
    let rx = enforced_clinic(ca, ClinicLimits::default()).await;
    rx.enroll(&record_for_der(&cert.cert_der, PATIENT, None).unwrap())
        .unwrap();
    rx
}

/// The hub's AuditEvents at the clinic (not the clinic's own refusals): code → (count, resource).
fn reports(rx: &Receiver) -> Vec<(String, u64, Value)> {
    rx.resources("AuditEvent")
        .into_iter()
        .filter(|a| a.pointer("/subtype/0/system").and_then(Value::as_str) == Some(CODE_SYSTEM))
        .map(|a| {
            let code = a["subtype"][0]["code"].as_str().unwrap().to_owned();
            let count = a["entity"][0]["detail"]
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["type"] == "count")
                .and_then(|d| d["valueString"].as_str())
                .unwrap()
                .parse()
                .unwrap();
            (code, count, a)
        })
        .collect()
}

fn by_code(rx: &Receiver) -> BTreeMap<String, Vec<u64>> {
    let mut m: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (code, count, _) in reports(rx) {
        m.entry(code).or_default().push(count);
    }
    m
}

async fn post(client: &reqwest::Client, base: &str, body: &Value) -> u16 {
    client
        .post(base)
        .header("content-type", "application/fhir+json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn swap_sealed(db: &Path) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let rows: Vec<(i64, Vec<u8>)> = conn
        .prepare("SELECT id, sealed FROM readings ORDER BY id LIMIT 2")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let (a, b) = (&rows[0], &rows[1]);
    for (id, v) in [(a.0, &b.1), (b.0, &a.1)] {
        conn.execute(
            "UPDATE readings SET sealed = ?1 WHERE id = ?2",
            rusqlite::params![v, id],
        )
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_events_arrive_once_aggregated_with_counts_and_no_phi() {
    let ca = DevCa::new("clinic").unwrap();
    let cert = ca.client("hub-a", Span::DEFAULT).unwrap();
    let rx = clinic_for(&ca, &cert).await;
    let mut h = test_hub(&ca, &cert).await;

    // Key rotation, through the store (before the swap below: a swapped row cannot be re-sealed).
    h.store.rotate_data_key(100).await.unwrap();

    // Readings, the third with a marker value; the first two are then swapped on disk.
    let mut items: Vec<_> = (0..3).map(glucose).collect();
    items[2].reading.value = vitals_hub::model::Value::Number(Decimal::new(4173, 1));
    h.store.append(&h.device, items, None).await.unwrap();
    h = h.reopen().await;
    swap_sealed(&h.dir.path().join("store.db"));
    h = h.reopen().await;

    // Integrity at rest: the uplink's poll finds the swapped rows (two integrity failures).
    let mut up = h.uplink(&rx);
    up.drain(DRAIN).await.unwrap();
    assert_eq!(
        rx.resources("Observation").len(),
        1,
        "the untouched reading went up"
    );

    // TLS: the same hub against a clinic certificate from another CA.
    let other = DevCa::new("not-the-clinic").unwrap();
    let other_ca = h.dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, &other.cert_pem).unwrap();
    h.store
        .append(&h.device, vec![glucose(10)], None)
        .await
        .unwrap();
    let mut wrong = h.uplink_to(&url(&rx), &other_ca);
    let e = wrong.step().await.unwrap_err();
    assert_eq!(e.kind(), "uplink_server_cert_untrusted", "{e}");

    // The clinic's limits change, through the store (the path `uplink::limits` takes).
    h.store
        .set_alert_limits(1, "{}".into(), h.clock.now())
        .await
        .unwrap();

    // A flood: 1,000 spoof attempts whose details name the meter, the patient and a value.
    for _ in 0..1000 {
        h.store
            .append_event(
                "ble_spoof_attempt",
                "security",
                format!("device {METER_ADDR} (patient {PATIENT}) advertised GM-100; last {MARKER_VALUE}"),
            )
            .await
            .unwrap();
    }

    // Within the window nothing is due: no AuditEvent yet, and `pending` does not count them.
    assert!(up.drain(DRAIN).await.is_ok());
    assert!(reports(&rx).is_empty(), "{:?}", by_code(&rx));
    let st = h.store.stats().await.unwrap();
    assert_eq!(st.pending, 0);
    assert!(st.security_open >= 4, "{st:?}");

    // The window closes: each aggregate goes up once.
    h.clock.advance(WINDOW_MS + 1_000);
    up.drain(DRAIN).await.unwrap();
    let got = by_code(&rx);
    assert_eq!(got.get("spoof-attempt"), Some(&vec![1000]), "{got:?}");
    assert_eq!(got.get("integrity-failure"), Some(&vec![2]), "{got:?}");
    assert_eq!(got.get("tls-server-untrusted"), Some(&vec![1]), "{got:?}");
    assert_eq!(got.get("limits-change"), Some(&vec![1]), "{got:?}");
    // The KEK created at the first open and the data-key rotation: one window, one report.
    assert_eq!(got.get("key-rotation"), Some(&vec![2]), "{got:?}");

    // About the hub's own Device only; first/last times; no PHI, no key material.
    let kek = std::fs::read(h.dir.path().join("keys/kek")).unwrap();
    let kek_hex: String = kek.iter().map(|b| format!("{b:02x}")).collect();
    let addr_plain = METER_ADDR.replace(':', "");
    for (code, _, a) in reports(&rx) {
        let who = a["agent"][0]["who"]["reference"].as_str().unwrap();
        assert!(who.starts_with("Device/"), "{code}: {who}");
        let device = rx
            .resources("Device")
            .into_iter()
            .find(|d| format!("Device/{}", d["id"].as_str().unwrap_or("")) == who)
            .unwrap();
        assert!(device.to_string().contains("PhgDevice"), "{device}");
        assert_eq!(a["source"]["observer"]["reference"], who);
        assert!(a["period"]["start"].as_str().unwrap() <= a["period"]["end"].as_str().unwrap());
        let text = a.to_string();
        for marker in [
            PATIENT,
            METER_ADDR,
            &METER_ADDR.to_lowercase(),
            &addr_plain,
            MARKER_VALUE,
            "GM-100",
            &kek_hex,
        ] {
            assert!(!text.contains(marker), "{code}: {marker} in {text}");
        }
        assert!(!text.contains("Patient/"), "{text}");
    }
    // Every report acked once; nothing more goes up.
    let stored = h.store.security_reports().await.unwrap();
    assert!(stored.iter().all(|(_, s)| s == "acked"), "{stored:?}");
    let n = reports(&rx).len();
    h.clock.advance(WINDOW_MS * 3);
    up.drain(DRAIN).await.unwrap();
    assert_eq!(reports(&rx).len(), n);

    // A second flood in a later window is a new report, again one.
    for _ in 0..50 {
        h.store
            .append_event("ble_spoof_attempt", "security", "x".into())
            .await
            .unwrap();
    }
    h.clock.advance(WINDOW_MS + 1);
    up.drain(DRAIN).await.unwrap();
    assert_eq!(
        by_code(&rx).get("spoof-attempt"),
        Some(&vec![1000, 50]),
        "{:?}",
        by_code(&rx)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_and_restarts_do_not_send_an_aggregate_twice() {
    let ca = DevCa::new("clinic").unwrap();
    let cert = ca.client("hub-a", Span::DEFAULT).unwrap();
    let rx = clinic_for(&ca, &cert).await;
    let mut h = test_hub(&ca, &cert).await;
    // The hub's Device is known to the clinic first (a reading), so the report names Device/<id>.
    h.store
        .append(&h.device, vec![glucose(0)], None)
        .await
        .unwrap();
    h.uplink(&rx).drain(DRAIN).await.unwrap();

    // A restart while the window is open: the events before and after count into one report.
    for _ in 0..5 {
        h.store
            .append_event("integrity_failure", "security", "x".into())
            .await
            .unwrap();
    }
    h = h.reopen().await;
    for _ in 0..5 {
        h.store
            .append_event("integrity_failure", "security", "x".into())
            .await
            .unwrap();
    }
    h.clock.advance(WINDOW_MS + 1);

    // The clinic stores the bundle, then the connection is reset: the hub does not know.
    rx.faults().push(Fault::ResetAfterCommit);
    let mut up = h.uplink(&rx);
    assert!(up.step().await.is_err());
    assert_eq!(
        by_code(&rx).get("integrity-failure"),
        Some(&vec![10]),
        "stored once at the clinic"
    );
    drop(up);
    // The hub restarts and sends it again once its retry is due (the failed step scheduled one):
    // the conditional create finds it.
    h = h.reopen().await;
    h.clock.advance(3_600_000);
    h.uplink(&rx).drain(DRAIN).await.unwrap();
    assert_eq!(by_code(&rx).get("integrity-failure"), Some(&vec![10]));
    let stored = h.store.security_reports().await.unwrap();
    let integrity: Vec<_> = stored
        .iter()
        .filter(|(r, _)| r.code == "integrity-failure")
        .collect();
    assert_eq!(integrity.len(), 1, "{stored:?}");
    assert_eq!(integrity[0].0.count, 10);
    assert_eq!(integrity[0].1, "acked");
    // And after a further restart nothing is sent again.
    h = h.reopen().await;
    h.uplink(&rx).drain(DRAIN).await.unwrap();
    assert_eq!(by_code(&rx).get("integrity-failure"), Some(&vec![10]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_event_about_anything_but_the_hub_is_refused() {
    let ca = DevCa::new("clinic").unwrap();
    let cert = ca.client("hub-a", Span::DEFAULT).unwrap();
    let rx = clinic_for(&ca, &cert).await;
    let h = test_hub(&ca, &cert).await;
    h.store
        .append(&h.device, vec![glucose(0)], None)
        .await
        .unwrap();
    h.uplink(&rx).drain(DRAIN).await.unwrap();
    let devices = rx.resources("Device");
    let phg = devices
        .iter()
        .find(|d| d.to_string().contains("PhgDevice"))
        .unwrap();
    let phd = devices
        .iter()
        .find(|d| !d.to_string().contains("PhgDevice"))
        .unwrap();
    let phg_ref = format!("Device/{}", phg["id"].as_str().unwrap());
    let phd_ref = format!("Device/{}", phd["id"].as_str().unwrap());
    let client = mtls_client(&h.ca_path, &h.cert, &h.key);
    let base = url(&rx);
    let ae = |who: &str, observer: &str, extra: Value| {
        let mut a = vitals_hub::fhir::audit::audit_event(
            &json!({"code": "spoof-attempt", "count": 1, "kinds": ["ble_spoof_attempt"],
                    "first_at": 1, "last_at": 2}),
            who,
            "security-x",
        );
        a["source"]["observer"]["reference"] = json!(observer);
        if let (Some(m), Value::Object(e)) = (a.as_object_mut(), extra) {
            m.extend(e);
        }
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [{
            "fullUrl": "urn:uuid:00000000-0000-4000-8000-000000000001",
            "resource": a,
            "request": {"method": "POST", "url": "AuditEvent"}}]})
    };
    let audits_before = rx.resources("AuditEvent").len();
    for (name, bundle) in [
        ("a PHD device as agent", ae(&phd_ref, &phd_ref, json!({}))),
        (
            "agent and observer differ",
            ae(&phg_ref, &phd_ref, json!({})),
        ),
        (
            "names the patient",
            ae(
                &phg_ref,
                &phg_ref,
                json!({"patient": {"reference": format!("Patient/{PATIENT}")}}),
            ),
        ),
        (
            "another hub's device",
            ae("Device/999999", "Device/999999", json!({})),
        ),
    ] {
        let status = post(&client, &base, &bundle).await;
        assert_eq!(status, 403, "{name}");
    }
    // Each refusal left the clinic's own AuditEvent; nothing of the hub's was stored.
    let after = rx.resources("AuditEvent");
    assert_eq!(after.len(), audits_before + 4);
    assert!(reports(&rx).is_empty());
    // Oversized: refused, not stored.
    let big = ae(&phg_ref, &phg_ref, json!({"outcomeDesc": "x".repeat(5000)}));
    let status = post(&client, &base, &big).await;
    assert!(status == 400 || status == 403 || status == 413, "{status}");
    // The hub's own report is accepted.
    let status = post(&client, &base, &ae(&phg_ref, &phg_ref, json!({}))).await;
    assert_eq!(status, 200);
    assert_eq!(reports(&rx).len(), 1);
}
