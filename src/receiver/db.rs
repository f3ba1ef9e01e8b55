//! The receiver's SQLite: one table of resources, conditional create by identifier.

use super::ReceiverError;
use crate::fhir::identifier::percent_decode;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Why a transaction was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxError {
    /// 400: the Bundle or an entry is not acceptable (nothing stored).
    Invalid(String),
    /// 412: a conditional create matched more than one resource.
    Multiple(String),
    /// 500.
    Server(String),
}

impl From<rusqlite::Error> for TxError {
    fn from(e: rusqlite::Error) -> Self {
        TxError::Server(e.to_string())
    }
}

#[derive(Debug)]
pub struct ReceiverDb {
    conn: Connection,
}

const TYPES: [&str; 5] = [
    "Observation",
    "Device",
    "Patient",
    "Communication",
    "DetectedIssue",
];

pub fn capability_statement() -> Value {
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-01-01",
        "kind": "instance",
        "software": { "name": "vitals-hub receiver", "version": env!("CARGO_PKG_VERSION") },
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json"],
        "rest": [{
            "mode": "server",
            "security": { "description": "Mutual TLS: client certificates from the hub CA" },
            "resource": [
                { "type": "Observation", "interaction": [{ "code": "create" }, { "code": "search-type" }],
                  "conditionalCreate": true,
                  "searchParam": [{ "name": "identifier", "type": "token" }, { "name": "patient", "type": "reference" }] },
                { "type": "Device", "interaction": [{ "code": "create" }], "conditionalCreate": true },
                { "type": "Communication", "interaction": [{ "code": "create" }], "conditionalCreate": true },
                { "type": "DetectedIssue", "interaction": [{ "code": "create" }, { "code": "search-type" }],
                  "conditionalCreate": true,
                  "searchParam": [{ "name": "patient", "type": "reference" }] }
            ],
            "interaction": [{ "code": "transaction" }]
        }]
    })
}

pub fn searchset(resources: Vec<Value>) -> Value {
    let entries: Vec<Value> = resources
        .into_iter()
        .map(|r| {
            let url = format!(
                "{}/{}",
                r.get("resourceType").and_then(Value::as_str).unwrap_or(""),
                r.get("id").and_then(Value::as_str).unwrap_or("")
            );
            json!({ "fullUrl": url, "resource": r, "search": { "mode": "match" } })
        })
        .collect();
    json!({ "resourceType": "Bundle", "type": "searchset", "total": entries.len(), "entry": entries })
}

/// `identifier=system|value` (already percent-decoded) → (system, value).
fn parse_identifier_param(p: &str) -> (Option<String>, String) {
    match p.split_once('|') {
        Some((s, v)) => (Some(s.to_owned()), v.to_owned()),
        None => (None, p.to_owned()),
    }
}

fn rewrite_refs(v: &mut Value, map: &HashMap<String, String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if k == "reference" {
                    if let Some(target) = x.as_str().and_then(|s| map.get(s)) {
                        *x = Value::String(target.clone());
                    }
                } else {
                    rewrite_refs(x, map);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| rewrite_refs(x, map)),
        _ => {}
    }
}

fn check_resource(ty: &str, r: &Value, i: usize) -> Result<(), TxError> {
    let has = |k: &str| r.get(k).is_some();
    let need: &[&str] = match ty {
        "Observation" => &["status", "code", "subject"],
        "Communication" => &["status"],
        "DetectedIssue" => &["status", "patient"],
        _ => &[],
    };
    for k in need {
        if !has(k) {
            return Err(TxError::Invalid(format!("entry {i}: {ty}.{k} is required")));
        }
    }
    Ok(())
}

impl ReceiverDb {
    pub fn open(path: Option<&Path>) -> Result<ReceiverDb, ReceiverError> {
        let p = path
            .map(Path::to_path_buf)
            .unwrap_or_else(|| ":memory:".into());
        let err = |source| ReceiverError::Db {
            path: p.clone(),
            source,
        };
        let conn = match path {
            Some(path) => Connection::open(path),
            None => Connection::open_in_memory(),
        }
        .map_err(err)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
             CREATE TABLE IF NOT EXISTS resources(
               id INTEGER PRIMARY KEY,
               type TEXT NOT NULL,
               id_system TEXT,
               id_value TEXT,
               patient TEXT,
               client TEXT,
               json TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS resources_ident ON resources(type, id_value);
             CREATE INDEX IF NOT EXISTS resources_patient ON resources(type, patient);",
        )
        .map_err(err)?;
        Ok(ReceiverDb { conn })
    }

    fn matches(&self, ty: &str, system: Option<&str>, value: &str) -> rusqlite::Result<Vec<i64>> {
        let mut st = self.conn.prepare_cached(
            "SELECT id FROM resources WHERE type = ?1 AND id_value = ?2 AND (?3 IS NULL OR id_system = ?3)",
        )?;
        let it = st.query_map(params![ty, value, system], |r| r.get(0))?;
        it.collect()
    }

    /// Apply a transaction Bundle atomically. Returns the transaction-response and the counts of
    /// created and already-existing entries.
    pub fn transaction(
        &mut self,
        bundle: &Value,
        client: Option<&str>,
    ) -> Result<(Value, u64, u64), TxError> {
        if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
            return Err(TxError::Invalid("not a Bundle".into()));
        }
        if bundle.get("type").and_then(Value::as_str) != Some("transaction") {
            return Err(TxError::Invalid("Bundle.type must be transaction".into()));
        }
        let entries = bundle
            .get("entry")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let tx = self.conn.transaction()?;
        let mut map: HashMap<String, String> = HashMap::new();
        let mut plan: Vec<(i64, String, bool, Value)> = Vec::new();
        let (mut created, mut existing) = (0u64, 0u64);
        for (i, e) in entries.iter().enumerate() {
            let req = e
                .get("request")
                .ok_or_else(|| TxError::Invalid(format!("entry {i} has no request")))?;
            if req.get("method").and_then(Value::as_str) != Some("POST") {
                return Err(TxError::Invalid(format!(
                    "entry {i}: only POST is supported"
                )));
            }
            let ty = req
                .get("url")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            if !TYPES.contains(&ty.as_str()) {
                return Err(TxError::Invalid(format!(
                    "entry {i}: unsupported type {ty}"
                )));
            }
            let resource = e
                .get("resource")
                .cloned()
                .ok_or_else(|| TxError::Invalid(format!("entry {i} has no resource")))?;
            if resource.get("resourceType").and_then(Value::as_str) != Some(ty.as_str()) {
                return Err(TxError::Invalid(format!(
                    "entry {i}: resourceType does not match request.url"
                )));
            }
            check_resource(&ty, &resource, i)?;
            let ident = resource.get("identifier").and_then(|v| v.get(0));
            let id_system = ident
                .and_then(|x| x.get("system"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            let id_value = ident
                .and_then(|x| x.get("value"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            let cond = req
                .get("ifNoneExist")
                .and_then(Value::as_str)
                .and_then(|q| q.strip_prefix("identifier="))
                .map(|q| parse_identifier_param(&percent_decode(q)));
            let found = match &cond {
                Some((sys, val)) => {
                    let m = {
                        let mut st = tx.prepare_cached(
                            "SELECT id FROM resources WHERE type = ?1 AND id_value = ?2 AND (?3 IS NULL OR id_system = ?3)",
                        )?;
                        let it = st.query_map(params![ty, val, sys], |r| r.get::<_, i64>(0))?;
                        it.collect::<rusqlite::Result<Vec<i64>>>()?
                    };
                    if m.len() > 1 {
                        return Err(TxError::Multiple(format!(
                            "entry {i}: ifNoneExist matches {} resources",
                            m.len()
                        )));
                    }
                    m.first().copied()
                }
                None => None,
            };
            let (id, is_new) = match found {
                Some(id) => {
                    existing += 1;
                    (id, false)
                }
                None => {
                    let patient = resource
                        .get("subject")
                        .or_else(|| resource.get("patient"))
                        .and_then(|s| s.get("reference"))
                        .and_then(Value::as_str)
                        .and_then(|s| s.strip_prefix("Patient/"))
                        .map(str::to_owned);
                    tx.prepare_cached(
                        "INSERT INTO resources(type, id_system, id_value, patient, client, json) VALUES (?1, ?2, ?3, ?4, ?5, '{}')",
                    )?
                    .execute(params![ty, id_system, id_value, patient, client])?;
                    created += 1;
                    (tx.last_insert_rowid(), true)
                }
            };
            if let Some(full) = e.get("fullUrl").and_then(Value::as_str) {
                map.insert(full.to_owned(), format!("{ty}/{id}"));
            }
            plan.push((id, ty, is_new, resource));
        }
        let mut out = Vec::with_capacity(plan.len());
        for (id, ty, is_new, mut resource) in plan {
            if is_new {
                rewrite_refs(&mut resource, &map);
                if let Value::Object(m) = &mut resource {
                    m.insert("id".into(), json!(id.to_string()));
                    m.insert("meta".into(), {
                        let mut meta = m.get("meta").cloned().unwrap_or_else(|| json!({}));
                        if let Value::Object(mm) = &mut meta {
                            mm.insert("versionId".into(), json!("1"));
                        }
                        meta
                    });
                }
                tx.prepare_cached("UPDATE resources SET json = ?1 WHERE id = ?2")?
                    .execute(params![resource.to_string(), id])?;
            }
            out.push(json!({ "response": {
                "status": if is_new { "201 Created" } else { "200 OK" },
                "location": format!("{ty}/{id}/_history/1")
            }}));
        }
        tx.commit()?;
        Ok((
            json!({ "resourceType": "Bundle", "type": "transaction-response", "entry": out }),
            created,
            existing,
        ))
    }

    pub fn search_identifier(&self, ty: &str, param: &str) -> rusqlite::Result<Vec<Value>> {
        let (sys, val) = parse_identifier_param(param);
        let ids = self.matches(ty, sys.as_deref(), &val)?;
        ids.iter().map(|id| self.load(*id)).collect()
    }

    /// Resources of one type whose subject (or `patient`) is the given patient.
    pub fn search_patient_of(&self, ty: &str, patient: &str) -> rusqlite::Result<Vec<Value>> {
        let p = patient.strip_prefix("Patient/").unwrap_or(patient);
        let mut st = self.conn.prepare_cached(
            "SELECT json FROM resources WHERE type = ?1 AND patient = ?2 ORDER BY id",
        )?;
        let it = st.query_map([ty, p], |r| r.get::<_, String>(0))?;
        Ok(it
            .filter_map(|s| s.ok().and_then(|s| serde_json::from_str(&s).ok()))
            .collect())
    }

    fn load(&self, id: i64) -> rusqlite::Result<Value> {
        let s: Option<String> = self
            .conn
            .query_row("SELECT json FROM resources WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(s.and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(Value::Null))
    }

    pub fn identifier_counts(&self, ty: &str) -> rusqlite::Result<BTreeMap<String, u64>> {
        let mut st = self.conn.prepare(
            "SELECT id_value, count(*) FROM resources WHERE type = ?1 AND id_value IS NOT NULL GROUP BY id_value",
        )?;
        let it = st.query_map([ty], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        it.map(|x| x.map(|(k, v)| (k, u64::try_from(v).unwrap_or(0))))
            .collect()
    }

    pub fn count(&self, ty: &str) -> rusqlite::Result<u64> {
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM resources WHERE type = ?1",
            [ty],
            |r| r.get(0),
        )?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    pub fn resources(&self, ty: &str) -> rusqlite::Result<Vec<Value>> {
        let mut st = self
            .conn
            .prepare("SELECT json FROM resources WHERE type = ?1 ORDER BY id")?;
        let it = st.query_map([ty], |r| r.get::<_, String>(0))?;
        Ok(it
            .filter_map(|s| s.ok().and_then(|s| serde_json::from_str(&s).ok()))
            .collect())
    }

    pub fn clients(&self) -> rusqlite::Result<Vec<String>> {
        let mut st = self.conn.prepare(
            "SELECT DISTINCT client FROM resources WHERE client IS NOT NULL ORDER BY client",
        )?;
        let it = st.query_map([], |r| r.get::<_, String>(0))?;
        it.collect()
    }
}
