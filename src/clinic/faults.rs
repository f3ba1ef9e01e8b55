//! Scripted faults for tests and demos: each POST takes the next fault from the queue; poisoned
//! identifiers make every bundle that contains them fail with 400.

use super::ingest::{fhir_response, outcome, Body};
use bytes::Bytes;
use hyper::{Response, StatusCode};
use std::collections::{HashSet, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

/// One injected fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status (with an OperationOutcome) without storing anything.
    Status(u16),
    /// Answer this status with `Retry-After: secs`, storing nothing.
    RetryAfter { status: u16, secs: u64 },
    /// Store the bundle, then send part of the response and reset the connection.
    ResetAfterCommit,
    /// Store the bundle, then answer 200 with a truncated (unparseable) body.
    TruncatedAfterCommit,
    /// Store the bundle, then wait this long before answering (slower than the client's timeout).
    SlowAfterCommit(Duration),
}

#[derive(Debug, Default)]
struct Inner {
    queue: VecDeque<Fault>,
    poisoned: HashSet<String>,
}

/// Shared, cloneable fault script.
#[derive(Debug, Clone, Default)]
pub struct FaultQueue(Arc<Mutex<Inner>>);

impl FaultQueue {
    pub fn new() -> FaultQueue {
        FaultQueue::default()
    }
    pub fn push(&self, f: Fault) {
        if let Ok(mut i) = self.0.lock() {
            i.queue.push_back(f);
        }
    }
    /// Every bundle containing an entry with this identifier value gets a 400.
    pub fn poison(&self, identifier_value: &str) {
        if let Ok(mut i) = self.0.lock() {
            i.poisoned.insert(identifier_value.to_owned());
        }
    }
    pub fn remaining(&self) -> usize {
        self.0.lock().map(|i| i.queue.len()).unwrap_or(0)
    }
    pub(crate) fn pop(&self) -> Option<Fault> {
        self.0.lock().ok().and_then(|mut i| i.queue.pop_front())
    }
    pub(crate) fn poisoned_in(&self, bundle: &serde_json::Value) -> Option<String> {
        let inner = self.0.lock().ok()?;
        if inner.poisoned.is_empty() {
            return None;
        }
        bundle.get("entry")?.as_array()?.iter().find_map(|e| {
            let v = e
                .get("resource")?
                .get("identifier")?
                .get(0)?
                .get("value")?
                .as_str()?;
            inner.poisoned.contains(v).then(|| v.to_owned())
        })
    }
}

/// Faults that answer before the bundle is processed.
pub(crate) async fn before(f: &Option<Fault>) -> Option<Response<Body>> {
    match f {
        Some(Fault::Status(s)) => {
            let st = StatusCode::from_u16(*s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Some(fhir_response(st, &outcome("transient", "injected fault")))
        }
        Some(Fault::RetryAfter { status, secs }) => {
            let st = StatusCode::from_u16(*status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let mut r = fhir_response(st, &outcome("throttled", "injected fault"));
            if let Ok(v) = hyper::header::HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(hyper::header::RETRY_AFTER, v);
            }
            Some(r)
        }
        _ => None,
    }
}

/// A body that yields its first half, then fails: hyper aborts the connection mid-response.
struct ResetBody {
    first: Option<Bytes>,
}

impl hyper::body::Body for ResetBody {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        match self.first.take() {
            Some(b) => Poll::Ready(Some(Ok(hyper::body::Frame::data(b)))),
            None => Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "injected reset",
            )))),
        }
    }
}

/// Faults that act on the (already committed) response.
pub(crate) async fn after(f: &Option<Fault>, resp: Response<Body>) -> Response<Body> {
    use http_body_util::BodyExt;
    match f {
        Some(Fault::ResetAfterCommit) | Some(Fault::TruncatedAfterCommit) => {
            let (parts, body) = resp.into_parts();
            let bytes = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let half = bytes.slice(..bytes.len() / 2);
            if matches!(f, Some(Fault::ResetAfterCommit)) {
                let mut parts = parts;
                if let Ok(v) = hyper::header::HeaderValue::from_str(&bytes.len().to_string()) {
                    parts.headers.insert(hyper::header::CONTENT_LENGTH, v);
                }
                Response::from_parts(parts, ResetBody { first: Some(half) }.boxed())
            } else {
                Response::from_parts(parts, super::ingest::full(half))
            }
        }
        Some(Fault::SlowAfterCommit(d)) => {
            tokio::time::sleep(*d).await;
            resp
        }
        _ => resp,
    }
}
