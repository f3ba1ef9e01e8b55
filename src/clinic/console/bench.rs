//! `vitals-clinic bench console`: the console's page latency on the built-in store — a figure,
//! never an assertion. Fills a fresh store with `patients` patients (one hub each), `days` days of
//! 4 kinds × 4 readings a day, and the hubs' 15-minute heartbeats over the last `heartbeat_hours`;
//! then times the worklist (its FHIR searches and the rows) and the patient page (its searches and
//! the SVG charts) and the fleet page (its searches and the rows), and counts the FHIR requests
//! per page and the time each kind of search (type and parameter names) took per page — where
//! a page's time goes. The machine's cores are shared with whatever else runs: a figure, not a promise.
//! Every hub's heartbeats go to one Device (a conditional create by identifier, as the hub does).

use super::fhir::{FhirBase, FhirClient};
use super::{fleet, patient, worklist};
use crate::clinic::db::{ReceiverDb, Scope};
use anyhow::Context;
use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What to fill the store with.
#[derive(Debug, Clone, Copy)]
pub struct BenchSpec {
    pub patients: usize,
    pub days: i64,
    pub heartbeat_hours: i64,
    pub runs: usize,
}

/// The identifier system of the bench's hub Devices.
const BENCH_HUB_SYSTEM: &str = "https://vitals-hub.invalid/bench/hub";

fn obs(patient: &str, code: &str, unit: &str, v: f64, at: Timestamp, flag: bool) -> Value {
    let mut o = json!({
        "resourceType": "Observation", "status": "final",
        "code": { "coding": [{ "system": "urn:iso:std:iso:11073:10101", "code": code }] },
        "subject": { "reference": format!("Patient/{patient}") },
        "effectiveDateTime": at.to_string(),
        "valueQuantity": { "value": v, "unit": unit }
    });
    if let (true, Some(m)) = (flag, o.as_object_mut()) {
        m.insert(
            "interpretation".into(),
            json!([{ "coding": [{ "code": "H" }] }]),
        );
    }
    o
}

fn tx(entries: Vec<Value>) -> Value {
    let e: Vec<Value> = entries
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let ty = r.get("resourceType").cloned().unwrap_or_default();
            json!({ "fullUrl": format!("urn:uuid:00000000-0000-4000-8000-{i:012}"), "resource": r,
                    "request": { "method": "POST", "url": ty } })
        })
        .collect();
    json!({ "resourceType": "Bundle", "type": "transaction", "entry": e })
}

fn fill(db: &mut ReceiverDb, s: &BenchSpec, now: Timestamp) -> anyhow::Result<usize> {
    let kinds = [
        ("160184", "mg/dL", 110.0),
        ("150456", "%", 96.0),
        ("149530", "/min", 70.0),
        ("188736", "kg", 80.0),
    ];
    let mut n = 0;
    for p in 0..s.patients {
        let patient = format!("bench-{p:05}");
        let hub = format!("hub-{p:05}");
        let scope = Some(Scope {
            hub_id: &hub,
            patient: &patient,
        });
        let mut e = Vec::new();
        for d in 0..s.days {
            for k in 0..4 {
                let at = now - SignedDuration::from_hours(24 * d + 6 * k + 1);
                for (i, (code, unit, base)) in kinds.iter().enumerate() {
                    let v = base + ((p + i + usize::try_from(d).unwrap_or(0)) % 7) as f64;
                    e.push(obs(
                        &patient,
                        code,
                        unit,
                        v,
                        at,
                        (p + k as usize).is_multiple_of(97),
                    ));
                }
            }
        }
        n += e.len();
        for chunk in e.chunks(900) {
            db.transaction(&tx(chunk.to_vec()), Some(&hub), scope)
                .map_err(|e| anyhow::anyhow!("filling: {e:?}"))?;
        }
        // The hub's Device, created once: each chunk's conditional create finds it again.
        let device = json!({ "resourceType": "Device",
            "identifier": [{ "system": BENCH_HUB_SYSTEM, "value": hub }] });
        let mut hb = vec![device.clone()];
        for q in 0..s.heartbeat_hours * 4 {
            let at = now - SignedDuration::from_mins(15 * q);
            hb.push(json!({
                "resourceType": "Observation", "status": "final",
                "identifier": [{ "system": crate::fhir::codes::HUB_STATUS_SYSTEM, "value": format!("{hub}-{q}") }],
                "code": { "coding": [{ "system": crate::fhir::codes::HUB_STATUS_SYSTEM, "code": "backlog-depth" }] },
                "subject": { "reference": "urn:uuid:00000000-0000-4000-8000-000000000000" },
                "effectiveDateTime": at.to_string(),
                "valueQuantity": { "value": 0, "unit": "1" }
            }));
        }
        n += hb.len();
        for chunk in hb.chunks(900) {
            let mut c = chunk.to_vec();
            if c.first()
                .and_then(|r| r.get("resourceType"))
                .and_then(Value::as_str)
                != Some("Device")
            {
                c.insert(0, device.clone());
            }
            let mut bundle = tx(c);
            if let Some(r) = bundle
                .pointer_mut("/entry/0/request")
                .and_then(Value::as_object_mut)
            {
                r.insert(
                    "ifNoneExist".into(),
                    json!(format!("identifier={BENCH_HUB_SYSTEM}|{hub}")),
                );
            }
            db.transaction(&bundle, Some(&hub), scope)
                .map_err(|e| anyhow::anyhow!("filling: {e:?}"))?;
        }
        if p.is_multiple_of(5) {
            let a = json!({
                "resourceType": "DetectedIssue", "status": "final",
                "identifier": [{ "system": crate::fhir::codes::ALERT_EPISODE_SYSTEM, "value": format!("ep-{p}") }],
                "code": { "text": "raised critical_high" }, "severity": if p.is_multiple_of(10) { "high" } else { "moderate" },
                "patient": { "reference": format!("Patient/{patient}") },
                "identifiedDateTime": (now - SignedDuration::from_hours(3)).to_string()
            });
            db.transaction(&tx(vec![a]), Some(&hub), scope)
                .map_err(|e| anyhow::anyhow!("filling: {e:?}"))?;
            n += 1;
        }
    }
    Ok(n)
}

fn stats(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let at = |q: f64| {
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        v.get(i).copied().unwrap_or_default()
    };
    (at(0.5), at(0.99))
}

/// The time each kind of search took per page (mean over `runs` pages), most costly first.
fn print_search_times(fhir: &FhirClient, runs: usize) {
    let mut kinds: Vec<_> = fhir.take_search_times().into_iter().collect();
    kinds.sort_by_key(|k| std::cmp::Reverse(k.1.total));
    let runs = runs.max(1) as f64;
    for (kind, t) in kinds {
        println!(
            "  {kind}: {:.1} ms per page in {} searches",
            t.total.as_secs_f64() * 1e3 / runs,
            t.searches as f64 / runs
        );
    }
}

/// Run the benchmark and print the figures.
pub fn run(s: &BenchSpec) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("a temporary folder")?;
    let path = dir.path().join("bench.db");
    let mut db = ReceiverDb::open(Some(&path))?;
    let now = Timestamp::now();
    let t = Instant::now();
    let n = fill(&mut db, s, now)?;
    println!(
        "store: {} patients, {} days × 4 kinds × 4 a day, heartbeats every 15 min over {} h: {n} resources in {:.1} s",
        s.patients, s.days, s.heartbeat_hours, t.elapsed().as_secs_f64()
    );
    let fhir = FhirClient::new(FhirBase::Local(Arc::new(Mutex::new(db))));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let set = worklist::WorklistSettings::default();
        fhir.take_search_times();
        let mut wl = Vec::new();
        let mut per_page = 0;
        for _ in 0..s.runs {
            let r0 = fhir.requests();
            let t = Instant::now();
            let rows = worklist::load(&fhir, now, &set).await?;
            wl.push(t.elapsed());
            per_page = fhir.requests() - r0;
            anyhow::ensure!(rows.len() == s.patients, "{} rows for {} patients", rows.len(), s.patients);
        }
        let (m, p99) = stats(wl);
        println!(
            "worklist: median {:.1} ms, p99 {:.1} ms over {} runs; {per_page} FHIR requests per page",
            m.as_secs_f64() * 1e3, p99.as_secs_f64() * 1e3, s.runs
        );
        print_search_times(&fhir, s.runs);
        let mut pp = Vec::new();
        for i in 0..s.runs {
            let p = format!("bench-{:05}", (i * 7919) % s.patients.max(1));
            let r0 = fhir.requests();
            let t = Instant::now();
            let v = patient::load(&fhir, &p, now).await?;
            let rules = patient::band_rules(&v);
            for (kind, rs) in &v.kinds {
                let band = patient::band(kind, rs, &rules);
                patient::chart(rs, band.as_ref(), now, &jiff::tz::TimeZone::UTC)
                    .map_err(|e| anyhow::anyhow!(e))?;
            }
            pp.push(t.elapsed());
            per_page = fhir.requests() - r0;
        }
        let (m, p99) = stats(pp);
        println!(
            "patient page (searches + SVG charts): median {:.1} ms, p99 {:.1} ms over {} runs; {per_page} FHIR requests per page",
            m.as_secs_f64() * 1e3, p99.as_secs_f64() * 1e3, s.runs
        );
        fhir.take_search_times();
        let mut fl = Vec::new();
        for _ in 0..s.runs {
            let r0 = fhir.requests();
            let t = Instant::now();
            let f = fleet::load(&fhir, now, &set).await?;
            fl.push(t.elapsed());
            per_page = fhir.requests() - r0;
            anyhow::ensure!(f.rows.len() == s.patients, "{} fleet rows for {} hubs", f.rows.len(), s.patients);
        }
        let (m, p99) = stats(fl);
        println!(
            "fleet page: median {:.1} ms, p99 {:.1} ms over {} runs; {per_page} FHIR requests per page",
            m.as_secs_f64() * 1e3, p99.as_secs_f64() * 1e3, s.runs
        );
        print_search_times(&fhir, s.runs);
        Ok(())
    })
}
