//! The console's FHIR client: every read and write of the console goes through FHIR searches,
//! reads and creates against a base — the same calls for both bases ([`FhirBase`]):
//!
//! - **Local**: the clinic's built-in store, served in process through [`ReceiverDb::search`]
//!   (the same search parameters a REST server takes);
//! - **Rest**: an external FHIR R4 server (`vitals-clinic serve --fhir-base URL`, the server the
//!   hubs upload to through the authorising front), over HTTP(S) with the front's client
//!   ([`Front::send`]: the `--fhir-ca` roots, the `--fhir-authorization-file` header, a whole-
//!   request timeout, every answer read through a size cap).
//!
//! Each HTTP request (each page of a search) counts as one FHIR request ([`FhirClient::requests`]),
//! which is what the worklist's "one query per resource type" is measured in.
//!
//! **Over REST**, a search asks pages of at most [`REST_PAGE`] and follows the Bundle's
//! `link[next]` — only a link below the configured base (a server pointing elsewhere is refused,
//! naming the fix) — until the `_count` the console asked for, at most [`MAX_PAGES`] pages. A server
//! that answers a full page and a `total` above what was read but no `next` link (medplum's
//! in-memory repository, the CI's independent server, does this) is asked the next page with
//! `_offset` (supported by medplum and HAPI); a page that brings nothing new ends the search.
//! An answer that is not 2xx is an error naming the status, the request (type and parameter
//! names, never their values) and the OperationOutcome's issue code; the outcome's text is shown
//! to the clinician ([`FhirClientError::detail`]) but kept out of the log, as it may echo a
//! patient id.
//!
//! **Writes**: creates (`POST`: Task, AuditEvent) and updates (`PUT`: the clinic's Patient with
//! its display label). The built-in store keeps those Patients apart from the hubs' resources
//! ([`ReceiverDb::put_patient`]) and this client shows them in its Patient reads and searches in
//! place of the ones the store derives from the registry.
//!
//! **Parameters** are standard FHIR R4 search parameters with one translation: the built-in
//! store takes `date` on every type, while R4 names DetectedIssue's date `identified`; the REST
//! base sends `identified` (and `_sort=identified`) for DetectedIssue, `authored-on` for Task
//! ([`rest_params`]).

use crate::clinic::authz::valid_logical_id;
use crate::clinic::db::{ReceiverDb, SearchError, MAX_SEARCH};
use crate::clinic::front::{Front, UpstreamError};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Resources asked per page from a REST server (medplum's and HAPI's default maximum).
pub const REST_PAGE: usize = 1_000;
/// Most pages one search reads from a REST server.
pub const MAX_PAGES: usize = MAX_SEARCH / REST_PAGE + 1;
/// Longest OperationOutcome text kept.
const MAX_DETAIL: usize = 300;

/// Errors of a FHIR request.
#[derive(Debug, thiserror::Error)]
pub enum FhirClientError {
    #[error("FHIR search refused: {0}")]
    Search(#[from] SearchError),
    #[error(
        "the clinic store is unavailable (a request failed while holding it); restart the clinic"
    )]
    Poisoned,
    #[error("the FHIR request did not finish: {0}")]
    Join(String),
    #[error("{0}; check --fhir-base and that the FHIR server is running")]
    Upstream(#[from] UpstreamError),
    #[error("the FHIR server answered {status} to {request} (OperationOutcome: {code}); see the FHIR server's log")]
    Server {
        status: u16,
        request: String,
        /// The first issue's code (`not-supported`, `invalid`…), or "none".
        code: String,
        /// The issues' text (diagnostics or details), shown on the page, not logged.
        detail: Option<String>,
    },
    #[error("the FHIR server's answer to {request} is not usable: {why}")]
    Answer { request: String, why: String },
}

impl FhirClientError {
    /// The FHIR server's own words (OperationOutcome text), for the page.
    pub fn detail(&self) -> Option<&str> {
        match self {
            FhirClientError::Server { detail, .. } => detail.as_deref(),
            _ => None,
        }
    }
}

/// Where the console's FHIR requests go.
#[derive(Debug, Clone)]
pub enum FhirBase {
    /// The clinic's built-in store, in process.
    Local(Arc<Mutex<ReceiverDb>>),
    /// An external FHIR R4 server over REST.
    Rest(Arc<Front>),
}

/// A FHIR client counting its requests.
#[derive(Debug)]
pub struct FhirClient {
    base: FhirBase,
    requests: AtomicU64,
    /// Time spent per search kind ([`FhirClient::search_times`]).
    search_times: Mutex<BTreeMap<String, SearchTime>>,
}

/// The searches of one kind (type and parameter names) made so far: how many and how long they
/// took in all, as the caller waited for them (the benchmark's per-request breakdown).
#[derive(Debug, Clone, Copy, Default)]
pub struct SearchTime {
    pub searches: u64,
    pub total: std::time::Duration,
}

/// The resources of a search and the server's total (more than returned when `_count` cut it).
#[derive(Debug, Clone, Default)]
pub struct Found {
    pub resources: Vec<Value>,
    pub total: usize,
}

/// The search parameters as sent to a REST server (see the module docs).
pub fn rest_params(ty: &str, params: &[(&str, String)]) -> Vec<(String, String)> {
    params
        .iter()
        .map(|(k, v)| match (ty, *k, v.as_str()) {
            ("DetectedIssue", "date", _) => ("identified".to_owned(), v.clone()),
            ("DetectedIssue", "_sort", "date") => ("_sort".to_owned(), "identified".to_owned()),
            ("DetectedIssue", "_sort", "-date") => ("_sort".to_owned(), "-identified".to_owned()),
            ("Task", "date", _) => ("authored-on".to_owned(), v.clone()),
            _ => ((*k).to_owned(), v.clone()),
        })
        .collect()
}

fn encode(params: &[(String, String)]) -> String {
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    params
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, NON_ALPHANUMERIC),
                utf8_percent_encode(v, NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The issue code and text of an OperationOutcome body.
fn outcome(body: &[u8]) -> (String, Option<String>) {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return ("none".into(), None);
    };
    if v.get("resourceType").and_then(Value::as_str) != Some("OperationOutcome") {
        return ("none".into(), None);
    }
    let issues = v
        .get("issue")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let code = issues
        .first()
        .and_then(|i| i.get("code"))
        .and_then(Value::as_str)
        .filter(|c| c.len() <= 40 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .unwrap_or("none")
        .to_owned();
    let text: Vec<&str> = issues
        .iter()
        .filter_map(|i| {
            i.get("diagnostics")
                .or_else(|| i.get("details").and_then(|d| d.get("text")))
                .and_then(Value::as_str)
        })
        .collect();
    let text = text.join("; ");
    let text = if text.chars().count() > MAX_DETAIL {
        text.chars().take(MAX_DETAIL).collect::<String>() + "…"
    } else {
        text
    };
    (code, (!text.is_empty()).then_some(text))
}

impl FhirClient {
    pub fn new(base: FhirBase) -> FhirClient {
        FhirClient {
            base,
            requests: AtomicU64::new(0),
            search_times: Mutex::new(BTreeMap::new()),
        }
    }

    /// The searches made since the last call, per kind (`Type?name,name`: the parameter names,
    /// not their values), and the time each kind took in all; the record starts afresh.
    pub fn take_search_times(&self) -> BTreeMap<String, SearchTime> {
        self.search_times
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default()
    }

    /// Whether a patient's Observation search already holds the hubs' Observations about
    /// devices (heartbeats, coincident time stamps: subject = a Device): the built-in store files
    /// everything a hub writes under its patient; a FHIR server searches `patient` on the
    /// subject only, so the patient page asks for those by subject.
    pub fn device_observations_by_patient(&self) -> bool {
        matches!(self.base, FhirBase::Local(_))
    }

    /// FHIR requests made so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// `GET [base]/<ty>/<id>`: one resource, or `None`.
    pub async fn read(&self, ty: &str, id: &str) -> Result<Option<Value>, FhirClientError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        match &self.base {
            FhirBase::Local(db) => {
                let db = db.clone();
                let (ty, id) = (ty.to_owned(), id.to_owned());
                tokio::task::spawn_blocking(move || {
                    let db = db.lock().map_err(|_| FhirClientError::Poisoned)?;
                    if ty == "Patient" {
                        // The clinic's own Patient (a label), else the one the store derives.
                        if let Some(p) = db.stored_patient(&id)? {
                            return Ok(Some(p));
                        }
                        let ids = [("_id".to_owned(), id.clone())];
                        let mut b = db.search("Patient", &ids)?;
                        return Ok(b
                            .get_mut("entry")
                            .and_then(|e| e.get_mut(0))
                            .and_then(|e| e.get_mut("resource"))
                            .map(Value::take));
                    }
                    db.read_owned(&ty, &id, None)
                        .map_err(|e| FhirClientError::Search(SearchError::Db(e)))
                })
                .await
                .map_err(|e| FhirClientError::Join(e.to_string()))?
            }
            FhirBase::Rest(front) => {
                let request = format!("read {ty}");
                if !valid_logical_id(id) {
                    return Ok(None);
                }
                let up = front
                    .send(reqwest::Method::GET, &format!("{ty}/{id}"), None)
                    .await?;
                match up.status.as_u16() {
                    404 | 410 => return Ok(None),
                    200..=299 => {}
                    s => return Err(server_error(s, request, &up.body)),
                }
                let v = json_of(&up.body, &request)?;
                if v.get("resourceType").and_then(Value::as_str) != Some(ty) {
                    return Err(FhirClientError::Answer {
                        request,
                        why: format!("not a {ty}"),
                    });
                }
                Ok(Some(v))
            }
        }
    }

    /// `GET [base]/metadata` of a REST base: its CapabilityStatement (what decides whether the
    /// worklist may use `Observation/$lastn`). `None` for the built-in store, which needs none.
    pub async fn capabilities(&self) -> Result<Option<Value>, FhirClientError> {
        let FhirBase::Rest(front) = &self.base else {
            return Ok(None);
        };
        self.requests.fetch_add(1, Ordering::Relaxed);
        let request = "read metadata".to_owned();
        let up = front.send(reqwest::Method::GET, "metadata", None).await?;
        if !(200..=299).contains(&up.status.as_u16()) {
            return Err(server_error(up.status.as_u16(), request, &up.body));
        }
        let v = json_of(&up.body, &request)?;
        if v.get("resourceType").and_then(Value::as_str) != Some("CapabilityStatement") {
            return Err(FhirClientError::Answer {
                request,
                why: "not a CapabilityStatement".into(),
            });
        }
        Ok(Some(v))
    }

    /// `POST [base]/<type>`: create; returns the logical id assigned.
    pub async fn create(&self, resource: Value) -> Result<String, FhirClientError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        match &self.base {
            FhirBase::Local(db) => {
                let db = db.clone();
                tokio::task::spawn_blocking(move || {
                    let mut db = db.lock().map_err(|_| FhirClientError::Poisoned)?;
                    Ok(db.create_console(&resource)?)
                })
                .await
                .map_err(|e| FhirClientError::Join(e.to_string()))?
            }
            FhirBase::Rest(front) => {
                let ty = resource
                    .get("resourceType")
                    .and_then(Value::as_str)
                    .filter(|t| t.bytes().all(|b| b.is_ascii_alphabetic()))
                    .unwrap_or("")
                    .to_owned();
                let request = format!("create {ty}");
                let body = serde_json::to_vec(&resource).map_err(|e| FhirClientError::Answer {
                    request: request.clone(),
                    why: e.to_string(),
                })?;
                let up = front.send(reqwest::Method::POST, &ty, Some(body)).await?;
                if !up.status.is_success() {
                    return Err(server_error(up.status.as_u16(), request, &up.body));
                }
                // The id: the answer's body when the server returns the resource, else the
                // Location header (`[base]/<ty>/<id>/_history/<v>`).
                let from_body = serde_json::from_slice::<Value>(&up.body)
                    .ok()
                    .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_owned));
                let from_location = up.location.as_deref().and_then(|l| {
                    let path = l.split(['?', '#']).next().unwrap_or("");
                    let parts = path.split('/').collect::<Vec<_>>();
                    let i = parts.iter().rposition(|p| *p == ty)?;
                    parts.get(i + 1).map(|s| (*s).to_owned())
                });
                from_body
                    .or(from_location)
                    .filter(|id| valid_logical_id(id))
                    .ok_or(FhirClientError::Answer {
                        request,
                        why: "no id of the created resource (neither in the body nor in Location)"
                            .into(),
                    })
            }
        }
    }

    /// `PUT [base]/<type>/<id>`: update (or create with this id) a resource. The built-in store
    /// takes the clinic's own Patients only ([`ReceiverDb::put_patient`]).
    pub async fn update(&self, resource: Value) -> Result<(), FhirClientError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        match &self.base {
            FhirBase::Local(db) => {
                let db = db.clone();
                tokio::task::spawn_blocking(move || {
                    let mut db = db.lock().map_err(|_| FhirClientError::Poisoned)?;
                    Ok(db.put_patient(&resource)?)
                })
                .await
                .map_err(|e| FhirClientError::Join(e.to_string()))?
            }
            FhirBase::Rest(front) => {
                let ty = resource
                    .get("resourceType")
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphabetic()))
                    .unwrap_or("Resource")
                    .to_owned();
                let request = format!("update {ty}");
                let id = resource
                    .get("id")
                    .and_then(Value::as_str)
                    .filter(|id| valid_logical_id(id))
                    .ok_or_else(|| FhirClientError::Answer {
                        request: request.clone(),
                        why: "the resource to update has no valid id".into(),
                    })?
                    .to_owned();
                let body = serde_json::to_vec(&resource).map_err(|e| FhirClientError::Answer {
                    request: request.clone(),
                    why: e.to_string(),
                })?;
                let up = front
                    .send(reqwest::Method::PUT, &format!("{ty}/{id}"), Some(body))
                    .await?;
                if !up.status.is_success() {
                    return Err(server_error(up.status.as_u16(), request, &up.body));
                }
                Ok(())
            }
        }
    }

    /// `GET [base]/<ty>?<params>`: the matches of a searchset Bundle.
    pub async fn search(
        &self,
        ty: &str,
        params: &[(&str, String)],
    ) -> Result<Found, FhirClientError> {
        let started = std::time::Instant::now();
        let found = self.search_timed(ty, params).await;
        let mut names: Vec<&str> = params.iter().map(|(k, _)| *k).collect();
        names.sort_unstable();
        names.dedup();
        if let Ok(mut t) = self.search_times.lock() {
            let e = t.entry(format!("{ty}?{}", names.join(","))).or_default();
            e.searches += 1;
            e.total += started.elapsed();
        }
        found
    }

    async fn search_timed(
        &self,
        ty: &str,
        params: &[(&str, String)],
    ) -> Result<Found, FhirClientError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let bundle = match &self.base {
            FhirBase::Local(db) => {
                let params: Vec<(String, String)> = params
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.clone()))
                    .collect();
                let ty = ty.to_owned();
                let db = db.clone();
                tokio::task::spawn_blocking(move || {
                    let db = db.lock().map_err(|_| FhirClientError::Poisoned)?;
                    let mut b = db.search(&ty, &params)?;
                    if ty == "Patient" {
                        // The clinic's own Patients (labels) in place of the derived ones.
                        let stored = db.stored_patients()?;
                        if let Some(Value::Array(es)) = b.get_mut("entry") {
                            for e in es {
                                let id = e
                                    .get("resource")
                                    .and_then(|r| r.get("id"))
                                    .and_then(Value::as_str)
                                    .unwrap_or("");
                                if let Some(p) = stored.get(id) {
                                    e["resource"] = p.clone();
                                }
                            }
                        }
                    }
                    Ok::<_, FhirClientError>(b)
                })
                .await
                .map_err(|e| FhirClientError::Join(e.to_string()))??
            }
            FhirBase::Rest(front) => return self.rest_search(front, ty, params).await,
        };
        let total = bundle
            .get("total")
            .and_then(Value::as_u64)
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0);
        // Moved out of the Bundle, not cloned: a worklist search can hold many thousand.
        let mut bundle = bundle;
        let resources: Vec<Value> = match bundle.get_mut("entry").map(Value::take) {
            Some(Value::Array(es)) => es
                .into_iter()
                .filter_map(|mut e| e.get_mut("resource").map(Value::take))
                .collect(),
            _ => Vec::new(),
        };
        Ok(Found {
            total: total.max(resources.len()),
            resources,
        })
    }

    /// A search over REST, paged (see the module docs). The first request is already counted.
    async fn rest_search(
        &self,
        front: &Front,
        ty: &str,
        params: &[(&str, String)],
    ) -> Result<Found, FhirClientError> {
        let names: Vec<&str> = params.iter().map(|(k, _)| *k).collect();
        let request = format!("search {ty} ({})", names.join(", "));
        if !ty.bytes().all(|b| b.is_ascii_alphabetic()) || ty.is_empty() {
            return Err(FhirClientError::Answer {
                request,
                why: "not a resource type".into(),
            });
        }
        let wanted = params
            .iter()
            .find(|(k, _)| *k == "_count")
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(100)
            .clamp(1, MAX_SEARCH);
        let mut query: Vec<(String, String)> = rest_params(ty, params)
            .into_iter()
            .filter(|(k, _)| k != "_count")
            .collect();
        let page_size = wanted.min(REST_PAGE);
        query.push(("_count".into(), page_size.to_string()));
        let first = format!("{ty}?{}", encode(&query));
        let mut rel = first.clone();
        let mut resources: Vec<Value> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut total: Option<usize> = None;
        for page in 0..MAX_PAGES {
            if page > 0 {
                self.requests.fetch_add(1, Ordering::Relaxed);
            }
            let up = front.send(reqwest::Method::GET, &rel, None).await?;
            if !up.status.is_success() {
                return Err(server_error(up.status.as_u16(), request, &up.body));
            }
            let mut bundle = json_of(&up.body, &request)?;
            if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle")
                || bundle.get("type").and_then(Value::as_str) != Some("searchset")
            {
                return Err(FhirClientError::Answer {
                    request,
                    why: "not a searchset Bundle".into(),
                });
            }
            if total.is_none() {
                total = bundle
                    .get("total")
                    .and_then(Value::as_u64)
                    .and_then(|n| usize::try_from(n).ok());
            }
            let next = bundle
                .get("link")
                .and_then(Value::as_array)
                .and_then(|ls| {
                    ls.iter()
                        .find(|l| l.get("relation").and_then(Value::as_str) == Some("next"))
                })
                .and_then(|l| l.get("url"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            let entries = match bundle.get_mut("entry").map(Value::take) {
                Some(Value::Array(es)) => es,
                _ => Vec::new(),
            };
            let on_page = entries.len();
            let mut added = 0usize;
            for mut e in entries {
                // `_include`d resources and OperationOutcomes are not matches.
                let mode = e
                    .get("search")
                    .and_then(|s| s.get("mode"))
                    .and_then(Value::as_str);
                if mode.is_some_and(|m| m != "match") {
                    continue;
                }
                let Some(r) = e.get_mut("resource").map(Value::take) else {
                    continue;
                };
                if r.get("resourceType").and_then(Value::as_str) != Some(ty) {
                    continue;
                }
                let id = r.get("id").and_then(Value::as_str).unwrap_or("").to_owned();
                if !seen.insert(id) {
                    continue;
                }
                resources.push(r);
                added += 1;
            }
            if resources.len() >= wanted || added == 0 {
                break;
            }
            rel = match next {
                Some(url) => below_base(front.base(), &url).ok_or_else(|| {
                    FhirClientError::Answer {
                        request: request.clone(),
                        why: "its next-page link is not below --fhir-base; configure the FHIR server's public base URL to be the --fhir-base given here".into(),
                    }
                })?,
                None if on_page >= page_size
                    && total.is_some_and(|t| t > resources.len()) =>
                {
                    format!("{first}&_offset={}", resources.len())
                }
                None => break,
            };
        }
        resources.truncate(wanted);
        Ok(Found {
            total: total.unwrap_or(0).max(resources.len()),
            resources,
        })
    }
}

/// The part of `url` below `base` (`/…` or `?…`), or `None` when it points elsewhere.
fn below_base(base: &str, url: &str) -> Option<String> {
    let rest = url.strip_prefix(base)?;
    (rest.starts_with('/') || rest.starts_with('?')).then(|| rest.to_owned())
}

fn json_of(body: &[u8], request: &str) -> Result<Value, FhirClientError> {
    serde_json::from_slice(body).map_err(|e| FhirClientError::Answer {
        request: request.to_owned(),
        why: format!("not JSON ({e})"),
    })
}

fn server_error(status: u16, request: String, body: &[u8]) -> FhirClientError {
    let (code, detail) = outcome(body);
    FhirClientError::Server {
        status,
        request,
        code,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detected_issue_dates_are_sent_as_identified() {
        let p = rest_params(
            "DetectedIssue",
            &[("date", "ge2026-01-01".into()), ("_sort", "-date".into())],
        );
        assert_eq!(
            p,
            [
                ("identified".to_owned(), "ge2026-01-01".to_owned()),
                ("_sort".to_owned(), "-identified".to_owned())
            ]
        );
        let p = rest_params("Observation", &[("date", "ge2026-01-01".into())]);
        assert_eq!(p[0].0, "date");
    }

    #[test]
    fn task_dates_are_sent_as_authored_on() {
        let p = rest_params(
            "Task",
            &[("code", "s|c".into()), ("date", "ge2026-01-01".into())],
        );
        assert_eq!(
            p,
            [
                ("code".to_owned(), "s|c".to_owned()),
                ("authored-on".to_owned(), "ge2026-01-01".to_owned())
            ]
        );
    }

    #[test]
    fn next_links_must_stay_below_the_base() {
        let b = "http://fhir.internal/fhir";
        assert_eq!(
            below_base(b, "http://fhir.internal/fhir/Observation?_page=2").as_deref(),
            Some("/Observation?_page=2")
        );
        assert_eq!(
            below_base(b, "http://fhir.internal/fhir?_getpages=x").as_deref(),
            Some("?_getpages=x")
        );
        assert_eq!(below_base(b, "http://evil.example/fhir/Observation"), None);
        assert_eq!(
            below_base(b, "http://fhir.internal/fhirx/Observation"),
            None
        );
    }

    #[test]
    fn an_operation_outcome_is_named_by_its_code_and_text() {
        let body = br#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-supported","diagnostics":"Unknown search parameter"}]}"#;
        let (code, text) = outcome(body);
        assert_eq!(code, "not-supported");
        assert_eq!(text.as_deref(), Some("Unknown search parameter"));
        assert_eq!(outcome(b"<html>").0, "none");
    }
}
