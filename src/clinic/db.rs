//! The clinic's SQLite store: one table of resources (each with the hub that wrote it), conditional
//! create by identifier (scoped to the writing hub when the registry is enforced), the registry of
//! hubs (`hubs`) and the security audit trail (`AuditEvent` resources). The FHIR searches the
//! console reads through, and its creates, are in `search` (a file of its own).

use super::registry::{EnrolError, HubRecord};
use super::ReceiverError;
use crate::fhir::identifier::percent_decode;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

mod patients;
mod search;
pub use search::{resource_date, SearchError, MAX_LASTN, MAX_SEARCH};

/// Why a transaction was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxError {
    /// 400: the Bundle or an entry is not acceptable (nothing stored).
    Invalid(String),
    /// 412: a conditional create matched more than one resource.
    Multiple(String),
    /// 403: the hub may not write this (another patient, a resource it does not own).
    Forbidden(String),
    /// 500.
    Server(String),
}

/// Who is writing, when the registry is enforced: every match, reference and stored row is
/// confined to this hub and its patient.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub hub_id: &'a str,
    pub patient: &'a str,
}

/// Most entries in one transaction Bundle (the hub sends at most 50).
pub const MAX_ENTRIES: usize = 1_000;

impl From<rusqlite::Error> for TxError {
    fn from(e: rusqlite::Error) -> Self {
        TxError::Server(e.to_string())
    }
}

#[derive(Debug)]
pub struct ReceiverDb {
    conn: Connection,
}

const TYPES: [&str; 6] = [
    "Observation",
    "Device",
    "Patient",
    "Communication",
    "DetectedIssue",
    "AuditEvent",
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
        "AuditEvent" => &["type", "recorded", "agent", "source"],
        _ => &[],
    };
    for k in need {
        if !has(k) {
            return Err(TxError::Invalid(format!("entry {i}: {ty}.{k} is required")));
        }
    }
    Ok(())
}

/// The code system (and identifier system) of the clinic's security-spike `DetectedIssue`.
pub const SPIKE_SYSTEM: &str = "urn:vitals-clinic:security-spike";

/// A hub's security report that is unusual (a flagged code, or a count above the spike
/// threshold: `console::fleet`) raises one `DetectedIssue` about the hub's Device per hub and UTC
/// day, in the transaction that stores the report: a spike spread over many windows raises one,
/// never one per event or per report. No patient: it is about the hub, not a clinical alert.
fn spike_issue(
    tx: &rusqlite::Transaction<'_>,
    hub_id: &str,
    report: &Value,
) -> rusqlite::Result<()> {
    use super::console::fleet::{report_count, FLAGGED_CODES, SECURITY_SPIKE};
    let Some(code) = report
        .pointer("/subtype/0")
        .filter(|c| {
            c.get("system").and_then(Value::as_str) == Some(crate::fhir::audit::CODE_SYSTEM)
        })
        .and_then(|c| c.get("code"))
        .and_then(Value::as_str)
    else {
        return Ok(());
    };
    let count = report_count(report).unwrap_or(0);
    if !(FLAGGED_CODES.contains(&code) || count > SECURITY_SPIKE) {
        return Ok(());
    }
    let recorded = report.get("recorded").and_then(Value::as_str).unwrap_or("");
    let day = recorded.get(..10).unwrap_or(recorded);
    let key = format!("{hub_id}|{day}");
    let exists = tx
        .prepare_cached(
            "SELECT 1 FROM resources WHERE type = 'DetectedIssue' AND id_system = ?1 AND id_value = ?2",
        )?
        .exists(params![SPIKE_SYSTEM, key])?;
    if exists {
        return Ok(());
    }
    let device = report
        .pointer("/agent/0/who/reference")
        .and_then(Value::as_str)
        .unwrap_or("");
    tx.prepare_cached(
        "INSERT INTO resources(type, id_system, id_value, patient, client, hub, json) VALUES ('DetectedIssue', ?1, ?2, NULL, NULL, NULL, '{}')",
    )?
    .execute(params![SPIKE_SYSTEM, key])?;
    let id = tx.last_insert_rowid();
    let issue = json!({
        "resourceType": "DetectedIssue",
        "id": id.to_string(),
        "meta": { "versionId": "1" },
        "identifier": [{ "system": SPIKE_SYSTEM, "value": key }],
        "status": "preliminary",
        "code": { "coding": [{ "system": SPIKE_SYSTEM, "code": "security-spike" }],
                  "text": "unusual security events from a hub" },
        "severity": "high",
        "identifiedDateTime": recorded,
        "implicated": [{ "reference": device }],
        "detail": format!("hub {hub_id}: {code} × {count}; see the fleet page")
    });
    tx.prepare_cached("UPDATE resources SET json = ?1 WHERE id = ?2")?
        .execute(params![issue.to_string(), id])?;
    search::index_resource(tx, id, "DetectedIssue", None, &issue)
}

/// Whether a Device (its JSON text) is a hub's PhgDevice: the PHD IG's PhgDevice profile.
fn is_phg_device(json: &str) -> bool {
    serde_json::from_str::<Value>(json).is_ok_and(|v| {
        v.get("resourceType").and_then(Value::as_str) == Some("Device")
            && v.pointer("/meta/profile")
                .and_then(Value::as_array)
                .is_some_and(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .any(|p| p.ends_with("/PhgDevice"))
                })
    })
}

/// What a hub may write ([`super::authz::entry_refs`]), with every `Type/id` reference proved to
/// be a resource this hub wrote.
fn authorise_entry(
    tx: &rusqlite::Transaction<'_>,
    sc: Scope<'_>,
    ty: &str,
    resource: &Value,
    i: usize,
    full_urls: &std::collections::HashSet<&str>,
    phg_urls: &std::collections::HashSet<&str>,
) -> Result<(), TxError> {
    if ty == "AuditEvent" {
        // About the hub itself: its agent is the hub's own PhgDevice (in this Bundle or stored).
        let agent = super::authz::audit_event_agent(resource, i)?;
        let phg = match agent.strip_prefix("Device/") {
            Some(id) => tx
                .query_row(
                    "SELECT json FROM resources WHERE id = ?1 AND type = 'Device' AND hub = ?2",
                    params![id.parse::<i64>().unwrap_or(-1), sc.hub_id],
                    |r| r.get::<_, String>(0),
                )
                .optional()?
                .is_some_and(|j| is_phg_device(&j)),
            None => phg_urls.contains(agent),
        };
        if !phg {
            return Err(TxError::Forbidden(format!(
                "entry {i} (AuditEvent): its agent is not this hub's own Device (PhgDevice); a \
                 hub reports only about itself"
            )));
        }
    }
    for (rty, rid) in super::authz::entry_refs(sc.patient, ty, resource, i, full_urls)? {
        let owned = match rid.parse::<i64>() {
            Ok(rid) => tx
                .query_row(
                    "SELECT 1 FROM resources WHERE id = ?1 AND type = ?2 AND hub = ?3",
                    params![rid, rty, sc.hub_id],
                    |_| Ok(()),
                )
                .optional()?
                .is_some(),
            Err(_) => false,
        };
        if !owned {
            return Err(super::authz::not_owned(i, ty));
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
        let mut conn = match path {
            Some(path) => Connection::open(path),
            None => Connection::open_in_memory(),
        }
        .map_err(err)?;
        conn.execute_batch(
            // A 64 MiB page cache (SQLite's default is 2 MiB; it grows only as pages are read):
            // the console's searches probe the indexes once per patient, and at 1,000 patients
            // those pages no longer fit the default, so every page was re-read from the OS.
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA cache_size=-65536;
             CREATE TABLE IF NOT EXISTS resources(
               id INTEGER PRIMARY KEY,
               type TEXT NOT NULL,
               id_system TEXT,
               id_value TEXT,
               patient TEXT,
               client TEXT,
               json TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS resources_ident ON resources(type, id_value);
             CREATE INDEX IF NOT EXISTS resources_patient ON resources(type, patient);
             CREATE TABLE IF NOT EXISTS hubs(
               fingerprint TEXT PRIMARY KEY,
               subject TEXT NOT NULL,
               hub_id TEXT NOT NULL,
               patient TEXT NOT NULL,
               enrolled TEXT NOT NULL,
               revoked TEXT);
             CREATE INDEX IF NOT EXISTS hubs_hub ON hubs(hub_id);
             CREATE TABLE IF NOT EXISTS hub_serials(
               fingerprint TEXT PRIMARY KEY,
               serial TEXT NOT NULL,
               not_after INTEGER NOT NULL);",
        )
        .map_err(err)?;
        // The owning hub of each resource (added by issue 16; older files gain the column).
        let has_hub: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('resources') WHERE name = 'hub'")
            .and_then(|mut st| st.exists([]))
            .map_err(err)?;
        if !has_hub {
            conn.execute_batch("ALTER TABLE resources ADD COLUMN hub TEXT;")
                .map_err(err)?;
        }
        conn.execute_batch(
            "CREATE INDEX IF NOT EXISTS resources_hub_ident ON resources(hub, type, id_value);",
        )
        .map_err(err)?;
        // The search index (issue 17), filled for the resources of older files.
        search::migrate(&mut conn).map_err(err)?;
        Ok(ReceiverDb { conn })
    }

    /// Apply a transaction Bundle atomically. Returns the transaction-response and the counts of
    /// created and already-existing entries. With a `scope`, conditional creates match only that
    /// hub's resources, every reference must be the hub's patient, an entry of the same Bundle or
    /// a resource the hub wrote, and what is stored is bound to the hub and its patient.
    pub fn transaction(
        &mut self,
        bundle: &Value,
        client: Option<&str>,
        scope: Option<Scope<'_>>,
    ) -> Result<(Value, u64, u64), TxError> {
        if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
            return Err(TxError::Invalid("not a Bundle".into()));
        }
        if bundle.get("type").and_then(Value::as_str) != Some("transaction") {
            return Err(TxError::Invalid("Bundle.type must be transaction".into()));
        }
        let empty = Vec::new();
        let entries = bundle
            .get("entry")
            .and_then(Value::as_array)
            .unwrap_or(&empty);
        if entries.len() > MAX_ENTRIES {
            return Err(TxError::Invalid(format!(
                "{} entries in one Bundle; at most {MAX_ENTRIES} (send smaller batches)",
                entries.len()
            )));
        }
        let full_urls: std::collections::HashSet<&str> = entries
            .iter()
            .filter_map(|e| e.get("fullUrl").and_then(Value::as_str))
            .collect();
        // The entries that are a hub's own PhgDevice (an AuditEvent's only possible agent).
        let phg_urls: std::collections::HashSet<&str> = entries
            .iter()
            .filter(|e| {
                e.get("resource")
                    .is_some_and(|r| is_phg_device(&r.to_string()))
            })
            .filter_map(|e| e.get("fullUrl").and_then(Value::as_str))
            .collect();
        let tx = self.conn.transaction()?;
        let mut map: HashMap<String, String> = HashMap::new();
        let mut plan: Vec<(i64, String, Option<Option<String>>, &Value)> = Vec::new();
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
                .ok_or_else(|| TxError::Invalid(format!("entry {i} has no resource")))?;
            if resource.get("resourceType").and_then(Value::as_str) != Some(ty.as_str()) {
                return Err(TxError::Invalid(format!(
                    "entry {i}: resourceType does not match request.url"
                )));
            }
            check_resource(&ty, resource, i)?;
            if let Some(sc) = scope {
                authorise_entry(&tx, sc, &ty, resource, i, &full_urls, &phg_urls)?;
            }
            // An AuditEvent has no identifier: a hub's security report is keyed by its entity's.
            let ident = if ty == "AuditEvent" {
                resource.pointer("/entity/0/what/identifier")
            } else {
                resource.get("identifier").and_then(|v| v.get(0))
            };
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
            let owner = scope.map(|s| s.hub_id);
            let found = match &cond {
                Some((sys, val)) => {
                    let m = {
                        let mut st = tx.prepare_cached(
                            "SELECT id FROM resources WHERE type = ?1 AND id_value = ?2 AND (?3 IS NULL OR id_system = ?3)
                               AND (?4 IS NULL OR hub = ?4)",
                        )?;
                        let it =
                            st.query_map(params![ty, val, sys, owner], |r| r.get::<_, i64>(0))?;
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
            // The patient a new row is filed under (`None` in `is_new`: the row existed).
            let (id, is_new) = match found {
                Some(id) => {
                    existing += 1;
                    (id, None)
                }
                None => {
                    let patient = match scope {
                        Some(sc) => Some(sc.patient.to_owned()),
                        None => resource
                            .get("subject")
                            .or_else(|| resource.get("patient"))
                            .and_then(|s| s.get("reference"))
                            .and_then(Value::as_str)
                            .and_then(|s| s.strip_prefix("Patient/"))
                            .map(str::to_owned),
                    };
                    tx.prepare_cached(
                        "INSERT INTO resources(type, id_system, id_value, patient, client, hub, json) VALUES (?1, ?2, ?3, ?4, ?5, ?6, '{}')",
                    )?
                    .execute(params![ty, id_system, id_value, patient, client, owner])?;
                    created += 1;
                    (tx.last_insert_rowid(), Some(patient))
                }
            };
            if let Some(full) = e.get("fullUrl").and_then(Value::as_str) {
                map.insert(full.to_owned(), format!("{ty}/{id}"));
            }
            plan.push((id, ty, is_new, resource));
        }
        let mut out = Vec::with_capacity(plan.len());
        for (id, ty, is_new, resource) in plan {
            if let Some(patient) = &is_new {
                let mut resource = resource.clone();
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
                search::index_resource(&tx, id, &ty, patient.as_deref(), &resource)?;
                if let (Some(sc), "AuditEvent") = (scope, ty.as_str()) {
                    spike_issue(&tx, sc.hub_id, &resource)?;
                }
            }
            out.push(json!({ "response": {
                "status": if is_new.is_some() { "201 Created" } else { "200 OK" },
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

    /// Resources of a type with this identifier, only those `hub` wrote when given.
    pub fn search_identifier_owned(
        &self,
        ty: &str,
        param: &str,
        hub: Option<&str>,
    ) -> rusqlite::Result<Vec<Value>> {
        let (sys, val) = parse_identifier_param(param);
        let mut st = self.conn.prepare_cached(
            "SELECT id FROM resources WHERE type = ?1 AND id_value = ?2 AND (?3 IS NULL OR id_system = ?3)
               AND (?4 IS NULL OR hub = ?4)",
        )?;
        let ids = st
            .query_map(params![ty, val, sys, hub], |r| r.get::<_, i64>(0))?
            .collect::<rusqlite::Result<Vec<i64>>>()?;
        ids.iter().map(|id| self.load(*id)).collect()
    }

    /// One resource by type and logical id, only if `hub` wrote it (when given).
    pub fn read_owned(
        &self,
        ty: &str,
        id: &str,
        hub: Option<&str>,
    ) -> rusqlite::Result<Option<Value>> {
        let Ok(id) = id.parse::<i64>() else {
            return Ok(None);
        };
        let s: Option<String> = self
            .conn
            .query_row(
                "SELECT json FROM resources WHERE id = ?1 AND type = ?2 AND (?3 IS NULL OR hub = ?3)",
                params![id, ty, hub],
                |r| r.get(0),
            )
            .optional()?;
        Ok(s.and_then(|s| serde_json::from_str(&s).ok()))
    }

    /// Store a security `AuditEvent`.
    pub fn audit(&mut self, event: &Value, hub: Option<&str>) -> rusqlite::Result<()> {
        self.conn.execute(
            "INSERT INTO resources(type, hub, json) VALUES ('AuditEvent', ?1, ?2)",
            params![hub, event.to_string()],
        )?;
        Ok(())
    }

    /// Enrol a hub certificate (see [`super::registry`]).
    pub fn enroll(&mut self, rec: &HubRecord) -> Result<(), EnrolError> {
        let db = |e: rusqlite::Error| EnrolError::Db(e.to_string());
        let tx = self.conn.transaction().map_err(db)?;
        let same: Option<(String, Option<String>)> = tx
            .query_row(
                "SELECT hub_id, revoked FROM hubs WHERE fingerprint = ?1",
                [&rec.fingerprint],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(db)?;
        match same {
            Some((_, Some(_))) => return Err(EnrolError::Revoked),
            Some((hub_id, None)) => return Err(EnrolError::Already { hub_id }),
            None => {}
        }
        let other: Option<String> = tx
            .query_row(
                "SELECT patient FROM hubs WHERE hub_id = ?1 AND patient != ?2 LIMIT 1",
                [&rec.hub_id, &rec.patient],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)?;
        if let Some(existing) = other {
            return Err(EnrolError::OtherPatient {
                hub_id: rec.hub_id.clone(),
                existing,
            });
        }
        tx.execute(
            "INSERT INTO hubs(fingerprint, subject, hub_id, patient, enrolled, revoked) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![rec.fingerprint, rec.subject, rec.hub_id, rec.patient, rec.enrolled, rec.revoked],
        )
        .map_err(db)?;
        tx.commit().map_err(db)
    }

    /// Remember the serial (hex) and expiry (Unix seconds) of an enrolled certificate: what a CRL
    /// lists when it is revoked ([`super::crl`]).
    pub fn record_serial(
        &mut self,
        fingerprint: &str,
        serial: &str,
        not_after: i64,
    ) -> rusqlite::Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO hub_serials(fingerprint, serial, not_after) VALUES (?1, ?2, ?3)",
            params![fingerprint, serial, not_after],
        )?;
        Ok(())
    }

    /// The serials and revocation times of every revoked certificate whose serial is known.
    pub fn revoked_serials(&self) -> rusqlite::Result<Vec<(String, String)>> {
        let mut st = self.conn.prepare_cached(
            "SELECT s.serial, h.revoked FROM hubs h JOIN hub_serials s ON s.fingerprint = h.fingerprint
             WHERE h.revoked IS NOT NULL ORDER BY s.serial",
        )?;
        let it = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        it.collect()
    }

    /// How many active certificates of a hub are not expired at `now` (Unix seconds), counting
    /// those whose expiry is unknown.
    pub fn live_certificates(&self, hub_id: &str, now: i64) -> rusqlite::Result<u64> {
        self.conn.query_row::<i64, _, _>(
            "SELECT COUNT(*) FROM hubs h LEFT JOIN hub_serials s ON s.fingerprint = h.fingerprint
             WHERE h.hub_id = ?1 AND h.revoked IS NULL AND (s.not_after IS NULL OR s.not_after > ?2)",
            params![hub_id, now],
            |r| r.get(0),
        )
        .map(|n| u64::try_from(n).unwrap_or(0))
    }

    /// Every enrolled certificate, revoked ones included.
    pub fn hubs(&self) -> rusqlite::Result<Vec<HubRecord>> {
        let mut st = self.conn.prepare_cached(
            "SELECT fingerprint, subject, hub_id, patient, enrolled, revoked FROM hubs ORDER BY hub_id, enrolled",
        )?;
        let it = st.query_map([], |r| {
            Ok(HubRecord {
                fingerprint: r.get(0)?,
                subject: r.get(1)?,
                hub_id: r.get(2)?,
                patient: r.get(3)?,
                enrolled: r.get(4)?,
                revoked: r.get(5)?,
            })
        })?;
        it.collect()
    }

    /// Revoke every active certificate of a hub (by hub id) or one certificate (by fingerprint).
    /// Returns how many were revoked.
    pub fn revoke(&mut self, hub_or_fingerprint: &str) -> rusqlite::Result<usize> {
        self.conn.execute(
            "UPDATE hubs SET revoked = ?2 WHERE revoked IS NULL AND (hub_id = ?1 OR fingerprint = ?1)",
            params![hub_or_fingerprint, jiff::Timestamp::now().to_string()],
        )
    }

    pub fn search_identifier(&self, ty: &str, param: &str) -> rusqlite::Result<Vec<Value>> {
        self.search_identifier_owned(ty, param, None)
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
