//! The clinic store's FHIR read API for the console (issue 17): searches answering `searchset`
//! Bundles, bounded by [`MAX_SEARCH`], the `Observation/$lastn` operation, and the creates of the
//! resources the console writes (Task, AuditEvent). Read only on the hubs' resources.
//!
//! Searches are answered from an index written with each resource ([`index_resource`], filled for
//! older files by [`migrate`]): the `resources` table's `patient`, `subject` (the reference as
//! stored) and `at` (the instant of [`resource_date`], nanoseconds since 1970, UTC) columns, one
//! `resource_codes` row per `code.coding` (with the resource's type, subject and instant, so a
//! code search walks one index; a newest-per-code lookup reads the first entries of
//! `resource_codes_newest`, which ends in (instant, resource) — `$lastn`'s order — so it reads
//! `max` entries, not the group's whole history to sort it), `lastn_groups` (every (subject,
//! code) an Observation was stored under: what `$lastn` iterates, bounded by subjects × codes, not
//! by history) and `patients` (every patient named). No search parses a JSON body to decide whether
//! it matches; only the bodies returned are read.

use super::{searchset, ReceiverDb};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};
use serde_json::{json, Value};

/// Most resources one search answers (`_count` above it is refused with the fix).
pub const MAX_SEARCH: usize = 50_000;

/// Most results per group `$lastn` answers (`max` above it is refused with the fix).
pub const MAX_LASTN: usize = 100;

/// The index schema's version (`PRAGMA user_version`): files below it are indexed on open.
const INDEX_VERSION: i64 = 1;

/// Why a FHIR search was refused (400 with an OperationOutcome over REST).
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("search on {0} is not supported; the built-in store searches Patient, Observation, DetectedIssue, Device, Task, ServiceRequest and AuditEvent")]
    Type(String),
    #[error("search parameter {param:?} is not supported for {ty}; supported: {supported}")]
    Param {
        ty: String,
        param: String,
        supported: &'static str,
    },
    #[error("search parameter {param}={value:?}: {why}")]
    Value {
        param: String,
        value: String,
        why: String,
    },
    #[error("the clinic store: {0}")]
    Db(#[from] rusqlite::Error),
}

/// A `date` search bound: its prefix and the range its value stands for, `[start, end)`: an
/// instant is a range of one nanosecond, a date (`2026-03-14`) its whole UTC day — FHIR's
/// precision rule, so `eq2026-03-14` is any instant of that day and `gt2026-03-14` starts on the
/// next one.
#[derive(Debug, Clone, Copy)]
struct DateBound {
    prefix: &'static str,
    start: jiff::Timestamp,
    end: jiff::Timestamp,
}

impl DateBound {
    /// The SQL condition on the instant column `col`, its values appended to `args`.
    fn sql(&self, col: &str, args: &mut Vec<rusqlite::types::Value>) -> String {
        let mut v = |t: jiff::Timestamp| {
            args.push(nanos(t).map_or(rusqlite::types::Value::Null, Into::into));
        };
        match self.prefix {
            "ge" => {
                v(self.start);
                format!("{col} >= ?")
            }
            "gt" => {
                v(self.end);
                format!("{col} >= ?")
            }
            "le" => {
                v(self.end);
                format!("{col} < ?")
            }
            "lt" => {
                v(self.start);
                format!("{col} < ?")
            }
            _ => {
                v(self.start);
                v(self.end);
                format!("({col} >= ? AND {col} < ?)")
            }
        }
    }
}

fn parse_date_param(v: &str) -> Result<DateBound, String> {
    let (prefix, rest) = ["ge", "gt", "le", "lt", "eq"]
        .into_iter()
        .find_map(|p| v.strip_prefix(p).map(|r| (p, r)))
        .unwrap_or(("eq", v));
    let fix = "not a FHIR dateTime; use e.g. ge2026-01-01 or ge2026-01-01T00:00:00Z";
    if let Ok(at) = rest.parse::<jiff::Timestamp>() {
        let end = at
            .checked_add(jiff::SignedDuration::from_nanos(1))
            .map_err(|_| fix.to_owned())?;
        return Ok(DateBound {
            prefix,
            start: at,
            end,
        });
    }
    let day = rest
        .parse::<jiff::civil::Date>()
        .map_err(|_| fix.to_owned())?;
    let midnight = |d: jiff::civil::Date| jiff::tz::Offset::UTC.to_timestamp(d.at(0, 0, 0, 0));
    let start = midnight(day).map_err(|_| fix.to_owned())?;
    let end = day
        .tomorrow()
        .and_then(midnight)
        .map_err(|_| fix.to_owned())?;
    Ok(DateBound { prefix, start, end })
}

/// An RFC 3339 instant, or a date (midnight UTC).
fn parse_instant(s: &str) -> Option<jiff::Timestamp> {
    s.parse::<jiff::Timestamp>().ok().or_else(|| {
        s.parse::<jiff::civil::Date>()
            .ok()
            .and_then(|d| jiff::tz::Offset::UTC.to_timestamp(d.at(0, 0, 0, 0)).ok())
    })
}

/// The instant a resource is about, for `date` and `_sort=date`.
pub fn resource_date(r: &Value) -> Option<jiff::Timestamp> {
    let s = r
        .get("effectiveDateTime")
        .or_else(|| r.get("effectivePeriod").and_then(|p| p.get("start")))
        .or_else(|| r.get("identifiedDateTime"))
        .or_else(|| r.get("authoredOn"))
        .or_else(|| r.get("recorded"))
        .and_then(Value::as_str)?;
    parse_instant(s)
}

/// Nanoseconds since 1970 (UTC) of an instant, as the index stores it (`None` past year 2262).
fn nanos(t: jiff::Timestamp) -> Option<i64> {
    i64::try_from(t.as_nanosecond()).ok()
}

/// The index columns of one resource: (subject reference, instant, codings as (system, code)).
fn index_columns(r: &Value) -> (String, Option<i64>, Vec<(String, String)>) {
    let subject = r
        .get("subject")
        .or_else(|| r.get("for"))
        .and_then(|s| s.get("reference"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let audit = r.get("resourceType").and_then(Value::as_str) == Some("AuditEvent");
    // A hub's AuditEvent is filed under its agent (the hub's Device) and its subtype codes.
    let subject = match (subject.is_empty(), audit) {
        (true, true) => r
            .pointer("/agent/0/who/reference")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        _ => subject,
    };
    let at = resource_date(r).and_then(nanos);
    let coded = if audit {
        r.get("subtype")
    } else {
        r.get("code").and_then(|c| c.get("coding"))
    };
    let mut codes: Vec<(String, String)> = coded
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let code = c.get("code").and_then(Value::as_str)?;
            let system = c.get("system").and_then(Value::as_str).unwrap_or("");
            Some((system.to_owned(), code.to_owned()))
        })
        .collect();
    codes.sort();
    codes.dedup();
    (subject, at, codes)
}

/// Write the search index of a stored resource (its row `id` already holds `type` and
/// `patient`): called in the same transaction as the write, so a resource is never stored
/// without its index.
pub(super) fn index_resource(
    conn: &Connection,
    id: i64,
    ty: &str,
    patient: Option<&str>,
    r: &Value,
) -> rusqlite::Result<()> {
    let (subject, at, codes) = index_columns(r);
    conn.prepare_cached("UPDATE resources SET subject = ?2, at = ?3 WHERE id = ?1")?
        .execute(params![id, subject, at])?;
    for (system, code) in &codes {
        conn.prepare_cached(
            "INSERT INTO resource_codes(res, type, system, code, subject, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![id, ty, system, code, subject, at])?;
        if ty == "Observation" {
            conn.prepare_cached(
                "INSERT OR IGNORE INTO lastn_groups(type, subject, system, code, patient) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![ty, subject, system, code, patient])?;
        }
    }
    if let Some(p) = patient {
        conn.prepare_cached("INSERT OR IGNORE INTO patients(id) VALUES (?1)")?
            .execute([p])?;
    }
    Ok(())
}

/// Create the search index (idempotent) and fill it for the resources stored before it existed
/// (`PRAGMA user_version` below [`INDEX_VERSION`]), in one transaction: an interrupted
/// migration leaves the file as it was and runs again on the next open.
pub(super) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    for col in ["subject TEXT", "at INTEGER"] {
        let name = col.split(' ').next().unwrap_or(col);
        let has: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('resources') WHERE name = ?1")?
            .exists([name])?;
        if !has {
            conn.execute_batch(&format!("ALTER TABLE resources ADD COLUMN {col};"))?;
        }
    }
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS resource_codes(
           res INTEGER NOT NULL,
           type TEXT NOT NULL,
           system TEXT NOT NULL,
           code TEXT NOT NULL,
           subject TEXT NOT NULL,
           at INTEGER);
         CREATE INDEX IF NOT EXISTS resource_codes_code ON resource_codes(type, code, system, at);
         DROP INDEX IF EXISTS resource_codes_group;
         CREATE INDEX IF NOT EXISTS resource_codes_newest ON resource_codes(type, subject, code, system, at, res);
         CREATE INDEX IF NOT EXISTS resource_codes_res ON resource_codes(res);
         CREATE TABLE IF NOT EXISTS lastn_groups(
           type TEXT NOT NULL,
           subject TEXT NOT NULL,
           system TEXT NOT NULL,
           code TEXT NOT NULL,
           patient TEXT,
           PRIMARY KEY(type, subject, system, code)) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS patients(id TEXT PRIMARY KEY) WITHOUT ROWID;
         CREATE INDEX IF NOT EXISTS resources_type_at ON resources(type, at);
         CREATE INDEX IF NOT EXISTS resources_patient_at ON resources(type, patient, at);
         CREATE INDEX IF NOT EXISTS resources_subject_at ON resources(type, subject, at);",
    )?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version >= INDEX_VERSION {
        return Ok(());
    }
    let tx = conn.transaction()?;
    tx.execute_batch("DELETE FROM resource_codes; DELETE FROM lastn_groups;")?;
    {
        let mut st = tx.prepare("SELECT id, type, patient, json FROM resources ORDER BY id")?;
        let mut rows = st.query([])?;
        while let Some(row) = rows.next()? {
            let (id, ty, patient, text): (i64, String, Option<String>, String) =
                (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
            // A body that does not parse is indexed as having no date, code or subject.
            let r = serde_json::from_str::<Value>(&text).unwrap_or(Value::Null);
            index_resource(&tx, id, &ty, patient.as_deref(), &r)?;
        }
    }
    tx.execute_batch(&format!("PRAGMA user_version = {INDEX_VERSION};"))?;
    tx.commit()
}

/// One `code` parameter: alternatives (`a,b` is a OR b), each `[system|]code` (`|code`: a coding
/// without a system).
fn parse_codes(v: &str) -> Vec<(Option<String>, String)> {
    v.split(',')
        .map(|one| match one.split_once('|') {
            Some((s, c)) => (Some(s.to_owned()), c.to_owned()),
            None => (None, one.to_owned()),
        })
        .collect()
}

/// SQL condition on `resource_codes` (alias `c`) matching one `code` parameter's alternatives,
/// its values appended to `args`.
fn codes_sql(alts: &[(Option<String>, String)], args: &mut Vec<rusqlite::types::Value>) -> String {
    let parts: Vec<String> = alts
        .iter()
        .map(|(sys, code)| {
            args.push(code.clone().into());
            match sys {
                Some(s) => {
                    args.push(s.clone().into());
                    "(c.code = ? AND c.system = ?)".to_owned()
                }
                None => "c.code = ?".to_owned(),
            }
        })
        .collect();
    format!("({})", parts.join(" OR "))
}

/// A `subject` value: a literal reference `Type/id` (the store keeps references as written).
fn parse_subject(v: &str) -> Result<String, String> {
    match v.split_once('/') {
        Some((t, id)) if !t.is_empty() && !id.is_empty() && !id.contains('/') => Ok(v.to_owned()),
        _ => Err("give the reference as Type/id, e.g. subject=Patient/123 or subject=Device/7 (or use patient=123)".to_owned()),
    }
}

/// The `_elements` the index answers without reading a body.
const ELEMENTS: &str = "subject, effective";

impl ReceiverDb {
    /// A FHIR search on the built-in store, read only, answering a `searchset` Bundle: the
    /// console's reads go through this the way they would go to any FHIR server's REST search.
    /// `ty` may also be `Observation/$lastn` ([`ReceiverDb::lastn`]).
    ///
    /// Parameters: `patient` (all but Patient: the patient the store files the resource under —
    /// the subject's, or for a hub's own resources such as its heartbeats, the hub's patient),
    /// `subject` (`Type/id`, the literal reference), `date` (ge/gt/le/lt/eq, repeatable: all
    /// apply), `code` (`[system|]code`, `a,b` for either; repeated: all apply), `_sort` (`date`
    /// or `-date`; ties by logical id), `_count` (1 to [`MAX_SEARCH`], default 100),
    /// `_summary=count` (the total only), `_elements` (Observation: `subject`, `effective`;
    /// answered from the index, the instant as UTC, marked SUBSETTED), `_id` (Patient).
    /// Anything else is refused, naming what is supported. Answered from the index: one SQL query
    /// for the page and, when the page is full, one count.
    pub fn search(&self, ty: &str, params: &[(String, String)]) -> Result<Value, SearchError> {
        const SUPPORTED: &str = "patient, subject, date, code, _sort, _count, _summary=count, _elements (and _id, _has:Observation:subject:date for Patient)";
        if ty == "Observation/$lastn" {
            return self.lastn(params);
        }
        if ![
            "Patient",
            "Observation",
            "DetectedIssue",
            "Device",
            "Task",
            "ServiceRequest",
            "AuditEvent",
        ]
        .contains(&ty)
        {
            return Err(SearchError::Type(ty.to_owned()));
        }
        let bad = |param: &str, value: &str, why: &str| SearchError::Value {
            param: param.to_owned(),
            value: value.to_owned(),
            why: why.to_owned(),
        };
        let mut q = Query {
            count: 100,
            ..Query::default()
        };
        for (k, v) in params {
            match k.as_str() {
                "patient" if ty != "Patient" => {
                    q.patient = Some(v.strip_prefix("Patient/").unwrap_or(v).to_owned())
                }
                "subject" if ty != "Patient" => {
                    q.subject = Some(parse_subject(v).map_err(|w| bad(k, v, &w))?)
                }
                "_id" if ty == "Patient" => q.ids.extend(v.split(',').map(str::to_owned)),
                "_has:Observation:subject:date" if ty == "Patient" && q.has_date.is_none() => {
                    q.has_date = Some(parse_date_param(v).map_err(|w| bad(k, v, &w))?)
                }
                "date" => q
                    .dates
                    .push(parse_date_param(v).map_err(|w| bad(k, v, &w))?),
                "code" if ty != "Patient" => q.codes.push(parse_codes(v)),
                // AuditEvent's own name for what the index files as its codes.
                "subtype" if ty == "AuditEvent" => q.codes.push(parse_codes(v)),
                "_sort" => match v.as_str() {
                    "date" => q.sort = Some(false),
                    "-date" => q.sort = Some(true),
                    _ => return Err(bad(k, v, "only date and -date are supported")),
                },
                "_count" => {
                    q.count = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_SEARCH).contains(n))
                        .ok_or_else(|| bad(k, v, &format!("a number from 1 to {MAX_SEARCH}")))?
                }
                "_summary" => match v.as_str() {
                    "count" => q.summary_count = true,
                    _ => return Err(bad(k, v, "only _summary=count is supported")),
                },
                "_elements" if ty == "Observation" => {
                    let els: Vec<&str> = v.split(',').map(str::trim).collect();
                    if let Some(e) = els.iter().find(|e| !["subject", "effective"].contains(e)) {
                        return Err(bad(
                            k,
                            v,
                            &format!("{e:?} is not answered from the index; supported: {ELEMENTS}"),
                        ));
                    }
                    q.elements = Some(els.into_iter().map(str::to_owned).collect());
                }
                _ => {
                    return Err(SearchError::Param {
                        ty: ty.to_owned(),
                        param: k.clone(),
                        supported: SUPPORTED,
                    })
                }
            }
        }
        if ty == "Patient" {
            return self.search_patients(&q);
        }
        let mut args: Vec<rusqlite::types::Value> = vec![ty.to_owned().into()];
        let mut cond = vec!["r.type = ?".to_owned()];
        if let Some(p) = &q.patient {
            cond.push("r.patient = ?".into());
            args.push(p.clone().into());
        }
        if let Some(s) = &q.subject {
            cond.push("r.subject = ?".into());
            args.push(s.clone().into());
        }
        for b in &q.dates {
            cond.push(b.sql("r.at", &mut args));
        }
        for alts in &q.codes {
            let mut sub = vec![ty.to_owned().into()];
            let c = codes_sql(alts, &mut sub);
            cond.push(format!(
                "r.id IN (SELECT c.res FROM resource_codes c WHERE c.type = ? AND {c})"
            ));
            args.extend(sub);
        }
        let wher = cond.join(" AND ");
        let count_sql = format!("SELECT count(*) FROM resources r WHERE {wher}");
        let count = |args: &[rusqlite::types::Value]| -> Result<usize, SearchError> {
            let n: i64 = self
                .conn
                .prepare_cached(&count_sql)?
                .query_row(params_from_iter(args.iter()), |r| r.get(0))?;
            Ok(usize::try_from(n).unwrap_or(0))
        };
        if q.summary_count {
            let mut b = searchset(Vec::new());
            if let Value::Object(m) = &mut b {
                m.insert("total".into(), json!(count(&args)?));
                m.remove("entry");
            }
            return Ok(b);
        }
        let order = match q.sort {
            None => "r.id",
            Some(false) => "r.at, r.id",
            Some(true) => "r.at DESC, r.id DESC",
        };
        let cols = if q.elements.is_some() {
            "r.id, r.subject, r.at, NULL, r.patient"
        } else {
            "r.id, NULL, NULL, r.json, r.patient"
        };
        let sql = format!("SELECT {cols} FROM resources r WHERE {wher} ORDER BY {order} LIMIT ?");
        let mut page_args = args.clone();
        page_args.push(i64::try_from(q.count).unwrap_or(i64::MAX).into());
        let mut st = self.conn.prepare_cached(&sql)?;
        let rows = st
            .query_map(params_from_iter(page_args.iter()), |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let full = rows.len() == q.count;
        let out: Vec<Value> = rows
            .into_iter()
            .filter_map(|(id, subject, at, body, p)| match &q.elements {
                Some(els) => Some(subsetted(ty, id, els, subject, at)),
                None => {
                    let mut r = serde_json::from_str::<Value>(body.as_deref()?).ok()?;
                    // The hub's devices carry no patient (the hub sends no demographics); the
                    // store knows it from the registry, and says so in `Device.patient`.
                    if let (Value::Object(m), Some(p), true) = (&mut r, p, ty == "Device") {
                        m.entry("patient")
                            .or_insert_with(|| json!({ "reference": format!("Patient/{p}") }));
                    }
                    Some(r)
                }
            })
            .collect();
        let total = if full { count(&args)? } else { out.len() };
        let mut b = searchset(out);
        if let Value::Object(m) = &mut b {
            m.insert("total".into(), json!(total));
        }
        Ok(b)
    }

    /// Patients: the built-in store holds no demographics; a patient is an id the registry or a
    /// stored resource names.
    fn search_patients(&self, q: &Query) -> Result<Value, SearchError> {
        if q.patient.is_some() || q.subject.is_some() || !q.dates.is_empty() || q.sort.is_some() {
            return Err(SearchError::Param {
                ty: "Patient".into(),
                param: "date/_sort".into(),
                supported: "_id, _has:Observation:subject:date, _count, _summary=count",
            });
        }
        let all = match &q.has_date {
            None => self
                .conn
                .prepare_cached(
                    "SELECT patient FROM hubs UNION SELECT id FROM patients ORDER BY 1",
                )?
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?,
            Some(b) => {
                // Each subject an Observation was filed under is probed once in the
                // (type, subject, at) index: the work is one lookup per patient.
                let mut args = Vec::new();
                let c = b.sql("r.at", &mut args);
                self.conn
                    .prepare_cached(&format!(
                        "SELECT substr(g.subject, 9) FROM (SELECT DISTINCT subject FROM lastn_groups
                           WHERE type = 'Observation' AND subject LIKE 'Patient/%') g
                         WHERE EXISTS (SELECT 1 FROM resources r WHERE r.type = 'Observation'
                           AND r.subject = g.subject AND {c})
                         ORDER BY 1"
                    ))?
                    .query_map(params_from_iter(args.iter()), |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()?
            }
        };
        let all: Vec<String> = all
            .into_iter()
            .filter(|p| q.ids.is_empty() || q.ids.contains(p))
            .collect();
        let total = all.len();
        let out = if q.summary_count {
            Vec::new()
        } else {
            all.into_iter()
                .take(q.count)
                .map(|p| json!({ "resourceType": "Patient", "id": p }))
                .collect()
        };
        let mut b = searchset(out);
        if let Value::Object(m) = &mut b {
            m.insert("total".into(), json!(total));
            if q.summary_count {
                m.remove("entry");
            }
        }
        Ok(b)
    }

    /// `Observation/$lastn` (FHIR R4): the `max` newest Observations (default 1, at most
    /// [`MAX_LASTN`]) of each code of each subject, newest first within a group. Parameters:
    /// `max`, `patient` (as in [`ReceiverDb::search`]), `subject` (`Type/id`), `code` (one
    /// parameter; `a,b` for several codes; `[system|]code`). Without `patient` or `subject`, every
    /// subject's. The groups come from `lastn_groups` and each group's newest from one indexed
    /// lookup, so the work is (subjects × codes × max), whatever the length of the history.
    pub fn lastn(&self, params: &[(String, String)]) -> Result<Value, SearchError> {
        const SUPPORTED: &str = "max, patient, subject, code";
        let bad = |param: &str, value: &str, why: &str| SearchError::Value {
            param: param.to_owned(),
            value: value.to_owned(),
            why: why.to_owned(),
        };
        let (mut max, mut patient, mut subject, mut codes) = (1usize, None, None, None);
        for (k, v) in params {
            match k.as_str() {
                "max" => {
                    max = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_LASTN).contains(n))
                        .ok_or_else(|| bad(k, v, &format!("a number from 1 to {MAX_LASTN}")))?
                }
                "patient" => patient = Some(v.strip_prefix("Patient/").unwrap_or(v).to_owned()),
                "subject" => subject = Some(parse_subject(v).map_err(|w| bad(k, v, &w))?),
                "code" if codes.is_none() => codes = Some(parse_codes(v)),
                "code" => {
                    return Err(bad(
                        k,
                        v,
                        "give $lastn's codes as one comma-separated code parameter",
                    ))
                }
                _ => {
                    return Err(SearchError::Param {
                        ty: "Observation/$lastn".into(),
                        param: k.clone(),
                        supported: SUPPORTED,
                    })
                }
            }
        }
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        let mut cond = vec!["c.type = 'Observation'".to_owned()];
        if let Some(p) = &patient {
            cond.push("c.patient = ?".into());
            args.push(p.clone().into());
        }
        if let Some(s) = &subject {
            cond.push("c.subject = ?".into());
            args.push(s.clone().into());
        }
        if let Some(alts) = &codes {
            cond.push(codes_sql(alts, &mut args));
        }
        let groups: Vec<(String, String, String)> = self
            .conn
            .prepare_cached(&format!(
                "SELECT c.subject, c.system, c.code FROM lastn_groups c WHERE {} ORDER BY 1, 3, 2",
                cond.join(" AND ")
            ))?
            .query_map(params_from_iter(args.iter()), |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut newest = self.conn.prepare_cached(
            "SELECT res FROM resource_codes WHERE type = 'Observation' AND subject = ?1 AND code = ?2 AND system = ?3
               ORDER BY at DESC, res DESC LIMIT ?4",
        )?;
        let mut body = self
            .conn
            .prepare_cached("SELECT json FROM resources WHERE id = ?1")?;
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for (s, system, code) in &groups {
            let ids = newest
                .query_map(
                    params![s, code, system, i64::try_from(max).unwrap_or(1)],
                    |r| r.get::<_, i64>(0),
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            for id in ids {
                // An Observation with two codes is in two groups; it is answered once.
                if !seen.insert(id) {
                    continue;
                }
                let text: Option<String> = body.query_row([id], |r| r.get(0)).optional()?;
                if let Some(r) = text.and_then(|t| serde_json::from_str::<Value>(&t).ok()) {
                    out.push(r);
                }
            }
        }
        let mut b = searchset(out);
        if let Value::Object(m) = &mut b {
            let n = m.get("entry").and_then(Value::as_array).map_or(0, Vec::len);
            m.insert("total".into(), json!(n));
        }
        Ok(b)
    }
}

/// A search's parsed parameters.
#[derive(Debug, Default)]
struct Query {
    patient: Option<String>,
    subject: Option<String>,
    ids: Vec<String>,
    dates: Vec<DateBound>,
    /// Each `code` parameter's alternatives; every parameter applies.
    codes: Vec<Vec<(Option<String>, String)>>,
    /// `Some(descending)` with `_sort`.
    sort: Option<bool>,
    count: usize,
    summary_count: bool,
    elements: Option<Vec<String>>,
    /// Patient: `_has:Observation:subject:date`, patients with an Observation about them
    /// (subject `Patient/<id>`) at that date.
    has_date: Option<DateBound>,
}

/// A resource of `_elements` from the index: its type, id, the asked elements and the SUBSETTED
/// tag (FHIR: a resource missing elements says so).
fn subsetted(ty: &str, id: i64, els: &[String], subject: Option<String>, at: Option<i64>) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("resourceType".into(), json!(ty));
    m.insert("id".into(), json!(id.to_string()));
    m.insert(
        "meta".into(),
        json!({ "tag": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED" }] }),
    );
    if els.iter().any(|e| e == "subject") {
        if let Some(s) = subject.filter(|s| !s.is_empty()) {
            m.insert("subject".into(), json!({ "reference": s }));
        }
    }
    if els.iter().any(|e| e == "effective") {
        if let Some(t) = at.and_then(|n| jiff::Timestamp::from_nanosecond(i128::from(n)).ok()) {
            m.insert("effectiveDateTime".into(), json!(t.to_string()));
        }
    }
    Value::Object(m)
}

impl ReceiverDb {
    /// Create a resource the console writes (`Task`: an acknowledgement; `AuditEvent`: a view or
    /// an acknowledgement), assigning its logical id; the patient it concerns (`Task.for`, the
    /// AuditEvent's Patient entity) is indexed like the hubs' resources. Returns the id.
    pub fn create_console(&mut self, resource: &Value) -> Result<String, SearchError> {
        let ty = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !["Task", "AuditEvent", "ServiceRequest"].contains(&ty) {
            return Err(SearchError::Type(ty.to_owned()));
        }
        let patient_ref = |v: Option<&Value>| {
            v.and_then(|x| x.get("reference"))
                .and_then(Value::as_str)
                .and_then(|s| s.strip_prefix("Patient/"))
                .map(str::to_owned)
        };
        let patient = match ty {
            "Task" => patient_ref(resource.get("for")),
            "ServiceRequest" => patient_ref(resource.get("subject")),
            _ => resource
                .get("entity")
                .and_then(Value::as_array)
                .and_then(|es| es.iter().find_map(|e| patient_ref(e.get("what")))),
        };
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO resources(type, patient, json) VALUES (?1, ?2, '{}')",
            params![ty, patient],
        )?;
        let id = tx.last_insert_rowid();
        let mut r = resource.clone();
        if let Value::Object(m) = &mut r {
            m.insert("id".into(), json!(id.to_string()));
            m.insert("meta".into(), json!({ "versionId": "1" }));
        }
        tx.execute(
            "UPDATE resources SET json = ?1 WHERE id = ?2",
            params![r.to_string(), id],
        )?;
        index_resource(&tx, id, ty, patient.as_deref(), &r)?;
        tx.commit()?;
        Ok(id.to_string())
    }
}
