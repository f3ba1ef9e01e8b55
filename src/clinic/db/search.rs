//! The clinic store's FHIR read API for the console (issue 17): searches answering `searchset`
//! Bundles, bounded by [`MAX_SEARCH`], and the creates of the resources the console writes (Task,
//! AuditEvent). Read only on the hubs' resources.

use super::{searchset, ReceiverDb};
use rusqlite::params;
use serde_json::{json, Value};

/// Most resources one search answers (`_count` above it is refused with the fix).
pub const MAX_SEARCH: usize = 50_000;

/// Why a FHIR search was refused (400 with an OperationOutcome over REST).
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("search on {0} is not supported; the built-in store searches Patient, Observation, DetectedIssue, Device and Task")]
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

/// A `date` search bound: prefix and instant.
#[derive(Debug, Clone, Copy)]
struct DateBound {
    prefix: &'static str,
    at: jiff::Timestamp,
}

fn parse_date_param(v: &str) -> Result<DateBound, String> {
    let (prefix, rest) = ["ge", "gt", "le", "lt", "eq"]
        .into_iter()
        .find_map(|p| v.strip_prefix(p).map(|r| (p, r)))
        .unwrap_or(("eq", v));
    let at = parse_instant(rest).ok_or_else(|| {
        "not a FHIR dateTime; use e.g. ge2026-01-01 or ge2026-01-01T00:00:00Z".to_owned()
    })?;
    Ok(DateBound { prefix, at })
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

impl ReceiverDb {
    /// A FHIR search on the built-in store, read only, answering a `searchset` Bundle: the
    /// console's reads go through this the way they would go to any FHIR server's REST search.
    /// Parameters: `patient` (all but Patient), `date` (ge/gt/le/lt/eq, repeatable), `code`
    /// (`[system|]code`), `_sort` (`date` or `-date`), `_count` (1 to [`MAX_SEARCH`], default
    /// 100), `_id` (Patient). Anything else is refused, naming what is supported. One SQL query
    /// per search, whatever the number of patients.
    pub fn search(&self, ty: &str, params: &[(String, String)]) -> Result<Value, SearchError> {
        const SUPPORTED: &str = "patient, date, code, _sort, _count (and _id for Patient)";
        if ![
            "Patient",
            "Observation",
            "DetectedIssue",
            "Device",
            "Task",
            "ServiceRequest",
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
        let (mut patient, mut dates, mut code, mut desc, mut sort, mut count, mut ids) =
            (None, Vec::new(), None, false, false, 100usize, Vec::new());
        for (k, v) in params {
            match k.as_str() {
                "patient" | "subject" if ty != "Patient" => {
                    patient = Some(v.strip_prefix("Patient/").unwrap_or(v).to_owned())
                }
                "_id" if ty == "Patient" => ids.extend(v.split(',').map(str::to_owned)),
                "date" => dates.push(parse_date_param(v).map_err(|w| bad(k, v, &w))?),
                "code" => {
                    code = Some(match v.split_once('|') {
                        Some((s, c)) => (Some(s.to_owned()), c.to_owned()),
                        None => (None, v.clone()),
                    })
                }
                "_sort" => match v.as_str() {
                    "date" => (sort, desc) = (true, false),
                    "-date" => (sort, desc) = (true, true),
                    _ => return Err(bad(k, v, "only date and -date are supported")),
                },
                "_count" => {
                    count = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_SEARCH).contains(n))
                        .ok_or_else(|| bad(k, v, &format!("a number from 1 to {MAX_SEARCH}")))?
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
        let mut out: Vec<Value> = if ty == "Patient" {
            // The built-in store holds no demographics: a patient is an id the registry or a
            // stored resource names.
            let mut st = self.conn.prepare_cached(
                "SELECT patient FROM hubs UNION SELECT patient FROM resources WHERE patient IS NOT NULL ORDER BY 1",
            )?;
            let all = st
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            all.into_iter()
                .filter(|p| ids.is_empty() || ids.contains(p))
                .map(|p| json!({ "resourceType": "Patient", "id": p }))
                .collect()
        } else {
            let mut st = self.conn.prepare_cached(
                "SELECT json, patient FROM resources WHERE type = ?1 AND (?2 IS NULL OR patient = ?2) ORDER BY id",
            )?;
            let rows = st
                .query_map(params![ty, patient], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.iter()
                .filter_map(|(s, p)| {
                    let mut r = serde_json::from_str::<Value>(s).ok()?;
                    // The hub's devices carry no patient (the hub sends no demographics); the
                    // store knows it from the registry, and says so in `Device.patient`.
                    if let (Value::Object(m), Some(p), true) = (&mut r, p, ty == "Device") {
                        m.entry("patient")
                            .or_insert_with(|| json!({ "reference": format!("Patient/{p}") }));
                    }
                    Some(r)
                })
                .filter(|r| match &code {
                    None => true,
                    Some((sys, c)) => r
                        .get("code")
                        .and_then(|x| x.get("coding"))
                        .and_then(Value::as_array)
                        .is_some_and(|cs| {
                            cs.iter().any(|x| {
                                x.get("code").and_then(Value::as_str) == Some(c.as_str())
                                    && sys.as_deref().is_none_or(|s| {
                                        x.get("system").and_then(Value::as_str) == Some(s)
                                    })
                            })
                        }),
                })
                .filter(|r| {
                    dates.is_empty()
                        || resource_date(r).is_some_and(|t| {
                            dates.iter().all(|b| match b.prefix {
                                "ge" => t >= b.at,
                                "gt" => t > b.at,
                                "le" => t <= b.at,
                                "lt" => t < b.at,
                                _ => t == b.at,
                            })
                        })
                })
                .collect()
        };
        if sort {
            // Each resource's date parsed once, not once per comparison.
            out.sort_by_cached_key(resource_date);
            if desc {
                out.reverse();
            }
        }
        let total = out.len();
        out.truncate(count);
        let mut b = searchset(out);
        if let Value::Object(m) = &mut b {
            m.insert("total".into(), json!(total));
        }
        Ok(b)
    }
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
        tx.commit()?;
        Ok(id.to_string())
    }
}
