//! The console's FHIR client: every read and write of the console goes through FHIR searches and
//! creates against a base. Today's base is the clinic's built-in store, served in process through
//! [`ReceiverDb::search`] (the same search parameters a REST server takes); each call counts as
//! one FHIR request ([`FhirClient::requests`]), which is what the worklist's "one query per
//! resource type" is measured in.

use crate::clinic::db::{ReceiverDb, SearchError};
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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
}

/// Where the console's FHIR requests go.
#[derive(Debug, Clone)]
pub enum FhirBase {
    /// The clinic's built-in store, in process.
    Local(Arc<Mutex<ReceiverDb>>),
}

/// A FHIR client counting its requests.
#[derive(Debug)]
pub struct FhirClient {
    base: FhirBase,
    requests: AtomicU64,
}

/// The resources of a search and the server's total (more than returned when `_count` cut it).
#[derive(Debug, Clone, Default)]
pub struct Found {
    pub resources: Vec<Value>,
    pub total: usize,
}

impl FhirClient {
    pub fn new(base: FhirBase) -> FhirClient {
        FhirClient {
            base,
            requests: AtomicU64::new(0),
        }
    }

    /// FHIR requests made so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// `GET [base]/<ty>/<id>`: one resource, or `None`.
    pub async fn read(&self, ty: &str, id: &str) -> Result<Option<Value>, FhirClientError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let (ty, id) = (ty.to_owned(), id.to_owned());
        match &self.base {
            FhirBase::Local(db) => {
                let db = db.clone();
                tokio::task::spawn_blocking(move || {
                    let db = db.lock().map_err(|_| FhirClientError::Poisoned)?;
                    db.read_owned(&ty, &id, None)
                        .map_err(|e| FhirClientError::Search(SearchError::Db(e)))
                })
                .await
                .map_err(|e| FhirClientError::Join(e.to_string()))?
            }
        }
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
        }
    }

    /// `GET [base]/<ty>?<params>`: the matches of a searchset Bundle.
    pub async fn search(
        &self,
        ty: &str,
        params: &[(&str, String)],
    ) -> Result<Found, FhirClientError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let params: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let ty = ty.to_owned();
        let bundle = match &self.base {
            FhirBase::Local(db) => {
                let db = db.clone();
                tokio::task::spawn_blocking(move || {
                    let db = db.lock().map_err(|_| FhirClientError::Poisoned)?;
                    Ok::<_, FhirClientError>(db.search(&ty, &params)?)
                })
                .await
                .map_err(|e| FhirClientError::Join(e.to_string()))??
            }
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
}
