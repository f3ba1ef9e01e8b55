//! The clinic's alert limits on the hub (issue 18): fetched over the uplink's mutual-TLS client on
//! the heartbeat's cadence and after a reconnect, checked, stored sealed, applied.
//!
//! - **Fetch** ([`fetch`]): `GET [base]/ServiceRequest?subject=Patient/<patient_id>&code=<system>|alert-limits&status=active&_sort=-authored&_count=10`,
//!   the answer read through a 256 KiB cap; of the entries, the one with the highest `version`
//!   is the clinic's current version.
//! - **Check** ([`Applier::offer`]): the shape and the limits with
//!   [`crate::fhir::limits::LimitsVersion::from_service_request`] (which ends with
//!   `AlertRules::validate`), then the patient and the version
//!   ([`crate::fhir::limits::LimitsVersion::acceptable_for`]). A refusal leaves the limits in force
//!   untouched, is an `alert_limits_refused` security event naming the version and the reason,
//!   and is kept for `status` and the heartbeat ([`Applier::report`]). The same refusal is not
//!   recorded again at every poll.
//! - **Store, then apply**: the accepted `ServiceRequest` replaces the stored one in one
//!   transaction with its `alert_limits_changed` security event (schema v5), and only then does
//!   ingest switch to the new rules between two readings ([`crate::daemon::Ingest::replace_rules`]).
//!   A crash between the two leaves the new version in the store: at restart it is the one in
//!   force ([`in_force`]). The store is the authority; nothing else is written.
//! - **At start** ([`in_force`]): the stored version if there is one (parsed and validated again
//!   with today's rules code), else `hub.toml`'s `[alerts]`. A stored version that no longer
//!   validates falls back to `hub.toml` with an `alert_limits_unusable` security event.
//! - What the clinic sets is merged with the hub's own `local_command`
//!   ([`crate::fhir::limits::merged_with_hub`]).

use crate::alerts::AlertRules;
use crate::daemon::{Ingest, PendingRules};
pub use crate::fhir::limits::{current_of, version_of};
use crate::fhir::limits::{
    merged_with_hub, LimitsError, LimitsVersion, LIMITS_CODE, TELEMONITORING_SYSTEM,
};
use crate::model::UtcMillis;
use crate::store::{Store, StoreError};
use serde_json::Value as Json;
use std::sync::Arc;
use tracing::{info, warn};

/// The most bytes of the clinic's answer to the limits search.
pub const MAX_LIMITS_RESPONSE: usize = 256 * 1024;

/// Where the limits in force come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `hub.toml`'s `[alerts]`: the clinic has sent no version yet.
    HubToml,
    /// A version the clinic sent, applied at `applied_at`.
    Clinic { version: u32, applied_at: UtcMillis },
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::HubToml => f.write_str("hub.toml [alerts] (no clinic version yet)"),
            Source::Clinic {
                version,
                applied_at,
            } => write!(
                f,
                "clinic version {version}, applied {}",
                applied_at.to_rfc3339()
            ),
        }
    }
}

/// The rules in force and where they come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InForce {
    pub source: Source,
    pub rules: AlertRules,
}

impl InForce {
    pub fn version(&self) -> Option<u32> {
        match self.source {
            Source::Clinic { version, .. } => Some(version),
            Source::HubToml => None,
        }
    }
}

/// The rules in force at start: the stored clinic version (checked again), else `hub`.
pub async fn in_force(store: &Store, hub: &AlertRules) -> Result<InForce, StoreError> {
    let Some(stored) = store.alert_limits().await? else {
        return Ok(InForce {
            source: Source::HubToml,
            rules: hub.clone(),
        });
    };
    let parsed = serde_json::from_str::<Json>(&stored.resource)
        .map_err(|e| LimitsError::Malformed(e.to_string()))
        .and_then(|v| LimitsVersion::from_service_request(&v));
    match parsed {
        Ok(v) => Ok(InForce {
            source: Source::Clinic {
                version: stored.version,
                applied_at: stored.applied_at,
            },
            rules: merged_with_hub(&v.rules, hub),
        }),
        Err(e) => {
            warn!(
                "The stored clinic alert limits do not validate; hub.toml's [alerts] are in force."
            );
            store
                .append_event(
                    "alert_limits_unusable",
                    "security",
                    format!(
                        "stored clinic version {} is unusable ({e}); hub.toml [alerts] in force until the clinic sends a new version",
                        stored.version
                    ),
                )
                .await?;
            Ok(InForce {
                source: Source::HubToml,
                rules: hub.clone(),
            })
        }
    }
}

/// At start: a stored version waiting for its effective time is applied if that time has come
/// (the hub was off when it came), before [`in_force`] reads the version in force. `Some(version)`
/// when one was applied.
pub async fn apply_due_at_start(store: &Store, now: UtcMillis) -> Result<Option<u32>, StoreError> {
    let Some(p) = store.pending_alert_limits().await? else {
        return Ok(None);
    };
    if p.effective > now {
        return Ok(None);
    }
    match store.set_alert_limits(p.version, p.resource, now).await {
        Ok(()) => {
            info!(
                version = p.version,
                "Clinic alert limits applied at start: their effective time has come."
            );
            Ok(Some(p.version))
        }
        // Overtaken by the version in force.
        Err(StoreError::Invalid(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// At start: the stored version waiting for its effective time (parsed and validated again,
/// merged with the hub's own settings), for ingest and the applier. One that no longer validates
/// is dropped with an `alert_limits_unusable` security event.
pub async fn pending(store: &Store, hub: &AlertRules) -> Result<Option<PendingRules>, StoreError> {
    let Some(p) = store.pending_alert_limits().await? else {
        return Ok(None);
    };
    let parsed = serde_json::from_str::<Json>(&p.resource)
        .map_err(|e| LimitsError::Malformed(e.to_string()))
        .and_then(|v| LimitsVersion::from_service_request(&v));
    match parsed {
        Ok(v) => Ok(Some(PendingRules {
            version: p.version,
            effective: p.effective,
            rules: merged_with_hub(&v.rules, hub),
            resource: p.resource,
        })),
        Err(e) => {
            warn!("The stored pending clinic alert limits do not validate; they are not applied.");
            store
                .append_event(
                    "alert_limits_unusable",
                    "security",
                    format!(
                        "pending clinic version {} is unusable ({e}); it will not be applied",
                        p.version
                    ),
                )
                .await?;
            Ok(None)
        }
    }
}

/// What the hub did with what the clinic offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    /// The clinic has no version for the patient.
    Nothing,
    /// The version is already in force.
    Unchanged { version: u32 },
    /// Stored and applied.
    Applied { version: u32 },
    /// Stored; it takes effect at `effective` (in the future when it came); until then the limits
    /// in force stay.
    Pending { version: u32, effective: UtcMillis },
    /// Refused; the limits in force stay. `version` when the resource named one.
    Refused {
        version: Option<u32>,
        reason: String,
    },
}

/// What the hub reports about the clinic's limits (status, heartbeat).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub in_force: Source,
    /// The last refusal, if any since the version in force was applied.
    pub refused: Option<(Option<u32>, String)>,
    /// A version accepted but not yet in force, and when it takes effect.
    pub pending: Option<(u32, UtcMillis)>,
}

/// Checks, stores and applies what the clinic offers. One per hub (the uplink owns it).
#[derive(Debug)]
pub struct Applier {
    store: Store,
    ingest: Option<Arc<Ingest>>,
    hub_rules: AlertRules,
    patient_id: String,
    current: InForce,
    refused: Option<(Option<u32>, String)>,
    refused_at: UtcMillis,
    /// The acknowledgement last delivered to the clinic (`<version>-<applied|rejected>`).
    acked: Option<String>,
    /// A version accepted but not yet in force, and when it was accepted.
    pending: Option<(PendingRules, UtcMillis)>,
    /// The id of the resource last refused (what a refusal without a version is keyed by).
    refused_id: Option<String>,
}

impl Applier {
    /// `current` is what [`in_force`] gave at start (and what `ingest` was opened with).
    pub fn new(
        store: Store,
        ingest: Option<Arc<Ingest>>,
        hub_rules: AlertRules,
        patient_id: String,
        current: InForce,
    ) -> Applier {
        Applier {
            store,
            ingest,
            hub_rules,
            patient_id,
            current,
            refused: None,
            refused_at: UtcMillis(0),
            acked: None,
            pending: None,
            refused_id: None,
        }
    }

    /// The version accepted before a restart and not yet in force ([`pending`]); give the same to
    /// ingest ([`Ingest::set_pending_rules`]).
    pub fn with_pending(mut self, pending: Option<PendingRules>, now: UtcMillis) -> Applier {
        self.pending = pending.map(|p| (p, now));
        self
    }

    /// Apply the pending version if its effective time has come: through ingest (which may have
    /// applied it already, before a reading) or, without ingest, in the store. `Some(version)`
    /// when a version came into force.
    pub async fn apply_due(&mut self, now: UtcMillis) -> Result<Option<u32>, StoreError> {
        let Some((p, _)) = self.pending.as_ref() else {
            return Ok(None);
        };
        if p.effective > now {
            return Ok(None);
        }
        let applied_at = match &self.ingest {
            Some(ingest) => match ingest
                .apply_due()
                .await
                .map_err(|crate::daemon::IngestError::Store(e)| e)?
            {
                Some((v, at)) if v == p.version => at,
                // Ingest's clock is not there yet: next time.
                _ => return Ok(None),
            },
            None => {
                self.store
                    .set_alert_limits(p.version, p.resource.clone(), now)
                    .await?;
                info!(
                    version = p.version,
                    "Clinic alert limits applied: their effective time has come."
                );
                now
            }
        };
        let Some((p, _)) = self.pending.take() else {
            return Ok(None);
        };
        self.current = InForce {
            source: Source::Clinic {
                version: p.version,
                applied_at,
            },
            rules: p.rules,
        };
        self.refused = None;
        Ok(Some(p.version))
    }

    /// The acknowledgement due: the refusal of a named version since the last change, else the
    /// clinic version in force; `None` when there is nothing to acknowledge.
    pub fn ack(&self) -> Option<crate::fhir::limits::LimitsAck> {
        match (&self.refused, &self.current.source) {
            (Some((Some(v), reason)), _) => Some(crate::fhir::limits::LimitsAck {
                patient_id: self.patient_id.clone(),
                version: *v,
                at: self.refused_at,
                rejected: Some(reason.clone()),
                takes_effect: None,
                resource_id: None,
            }),
            // No readable version: keyed by the resource's id (version 0).
            (Some((None, reason)), _) => Some(crate::fhir::limits::LimitsAck {
                patient_id: self.patient_id.clone(),
                version: 0,
                at: self.refused_at,
                rejected: Some(reason.clone()),
                takes_effect: None,
                resource_id: self.refused_id.clone(),
            }),
            (_, _) if self.pending.is_some() => {
                self.pending
                    .as_ref()
                    .map(|(p, accepted)| crate::fhir::limits::LimitsAck {
                        patient_id: self.patient_id.clone(),
                        version: p.version,
                        at: *accepted,
                        rejected: None,
                        takes_effect: Some(p.effective),
                        resource_id: None,
                    })
            }
            (
                _,
                Source::Clinic {
                    version,
                    applied_at,
                },
            ) => Some(crate::fhir::limits::LimitsAck {
                patient_id: self.patient_id.clone(),
                version: *version,
                at: *applied_at,
                rejected: None,
                takes_effect: None,
                resource_id: None,
            }),
            _ => None,
        }
    }

    pub fn in_force(&self) -> &InForce {
        &self.current
    }

    pub fn report(&self) -> Report {
        Report {
            in_force: self.current.source.clone(),
            refused: self.refused.clone(),
            pending: self.pending.as_ref().map(|(p, _)| (p.version, p.effective)),
        }
    }

    /// Check the clinic's `ServiceRequest` and, if acceptable, store it and apply it.
    pub async fn offer(&mut self, resource: &Json, now: UtcMillis) -> Result<Offer, StoreError> {
        let named = version_of(resource);
        let id = resource_id(resource);
        self.apply_due(now).await?;
        let pending = self.pending.as_ref().map(|(p, _)| (p.version, p.effective));
        let v = match LimitsVersion::from_service_request(resource) {
            Ok(v) => v,
            Err(e) => {
                // With no readable version the refusal is keyed by the resource's id.
                let reason = match named {
                    Some(_) => e.to_string(),
                    None => format!("ServiceRequest/{id}: {e}"),
                };
                return self.refuse(named, id, reason, now).await;
            }
        };
        if v.patient_id == self.patient_id {
            if Some(v.version) == self.current.version() {
                return Ok(Offer::Unchanged { version: v.version });
            }
            if let Some((version, effective)) = pending.filter(|p| p.0 == v.version) {
                return Ok(Offer::Pending { version, effective });
            }
        }
        // Not newer than the version in force, nor than the one waiting for its time: stale.
        let newest = self.current.version().max(pending.map(|p| p.0));
        if let Err(e) = v.acceptable_for(&self.patient_id, newest) {
            return self.refuse(named, id, e.to_string(), now).await;
        }
        let text = resource.to_string();
        let rules = merged_with_hub(&v.rules, &self.hub_rules);
        if v.effective > now {
            // Stored now, in force from its effective time (checked before every reading and at
            // every poll, and at start).
            self.store
                .set_pending_alert_limits(v.version, text.clone(), v.effective)
                .await?;
            let p = PendingRules {
                version: v.version,
                effective: v.effective,
                rules,
                resource: text,
            };
            if let Some(ingest) = &self.ingest {
                ingest.set_pending_rules(Some(p.clone())).await;
            }
            info!(
                version = v.version,
                effective = %v.effective.to_rfc3339(),
                "Clinic alert limits accepted; they take effect later."
            );
            self.pending = Some((p, now));
            self.refused = None;
            return Ok(Offer::Pending {
                version: v.version,
                effective: v.effective,
            });
        }
        self.store.set_alert_limits(v.version, text, now).await?;
        // A version waiting for its time is overtaken (the store dropped it in that transaction).
        if self.pending.take().is_some() {
            if let Some(ingest) = &self.ingest {
                ingest.set_pending_rules(None).await;
            }
        }
        if let Some(ingest) = &self.ingest {
            ingest
                .replace_rules(rules.clone(), now)
                .await
                .map_err(|crate::daemon::IngestError::Store(e)| e)?;
        }
        info!(version = v.version, "Clinic alert limits applied.");
        self.current = InForce {
            source: Source::Clinic {
                version: v.version,
                applied_at: now,
            },
            rules,
        };
        self.refused = None;
        Ok(Offer::Applied { version: v.version })
    }

    async fn refuse(
        &mut self,
        version: Option<u32>,
        id: String,
        reason: String,
        now: UtcMillis,
    ) -> Result<Offer, StoreError> {
        let again = self.refused.as_ref() == Some(&(version, reason.clone()));
        if !again {
            warn!(version = ?version, "Clinic alert limits refused.");
            let which = version.map_or("a version".to_owned(), |v| format!("version {v}"));
            self.store
                .append_event(
                    "alert_limits_refused",
                    "security",
                    format!("clinic alert limits {which} refused: {reason}"),
                )
                .await?;
            self.refused = Some((version, reason.clone()));
            self.refused_id = Some(id);
            self.refused_at = now;
        }
        Ok(Offer::Refused { version, reason })
    }
}

/// A resource's `id` as a FHIR id (`[A-Za-z0-9.-]{1,64}`), else `unknown` (it is untrusted: it
/// goes into an identifier and a log-free event detail only in this checked form).
pub fn resource_id(resource: &Json) -> String {
    match resource.get("id").and_then(Json::as_str) {
        Some(id)
            if !id.is_empty()
                && id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') =>
        {
            id.to_owned()
        }
        _ => "unknown".to_owned(),
    }
}

/// The search for the patient's current limits, relative to the FHIR base.
pub fn search_path(patient_id: &str) -> String {
    format!(
        "ServiceRequest?subject=Patient/{patient_id}&code={}%7C{LIMITS_CODE}&status=active&_sort=-authored&_count=10",
        TELEMONITORING_SYSTEM.replace(':', "%3A").replace('/', "%2F")
    )
}

/// Ask the clinic for the patient's current limits over the uplink's client.
pub async fn fetch(
    client: &reqwest::Client,
    base: &reqwest::Url,
    patient_id: &str,
) -> Result<Option<Json>, super::UplinkError> {
    let target = format!(
        "{}/{}",
        base.as_str().trim_end_matches('/'),
        search_path(patient_id)
    );
    let resp = client
        .get(&target)
        .header("Accept", "application/fhir+json")
        .send()
        .await
        .map_err(|e| super::classify(&e))?;
    let status = resp.status().as_u16();
    if !resp.status().is_success() {
        return Err(super::UplinkError::Http {
            status,
            retry_after: None,
            detail: None,
        });
    }
    let body = super::send::read_bounded(resp, MAX_LIMITS_RESPONSE).await?;
    let v: Json = serde_json::from_slice(&body).map_err(|e| {
        super::UplinkError::BadResponse(format!("limits search answer not JSON ({e})"))
    })?;
    current_of(&v).map_err(super::UplinkError::BadResponse)
}

impl super::Uplink {
    /// Give the uplink the limits applier: it then fetches the clinic's limits at every
    /// heartbeat and after a reconnect.
    pub fn with_limits(mut self, applier: Applier) -> Self {
        self.limits = Some(applier);
        self
    }

    /// What the hub reports about the clinic's limits, if the applier is wired.
    pub fn limits_report(&self) -> Option<Report> {
        self.limits.as_ref().map(Applier::report)
    }

    /// Deliver the acknowledgement due ([`Applier::ack`]) if it was not delivered yet: `true` when
    /// one was sent now. Offline it waits: the next call after the link returns sends it, with the
    /// time the version was applied or refused.
    pub async fn send_limits_ack(&mut self) -> Result<bool, super::UplinkError> {
        let Some(ack) = self.limits.as_ref().and_then(Applier::ack) else {
            return Ok(false);
        };
        let key = format!(
            "{}-{}-{}",
            ack.version,
            ack.resource_id.as_deref().unwrap_or_default(),
            ack.outcome().as_str()
        );
        if self.limits.as_ref().and_then(|a| a.acked.as_deref()) == Some(key.as_str()) {
            return Ok(false);
        }
        let (hub_ref, refs) = self.refs().await?;
        let ctx = crate::fhir::BundleContext {
            patient_id: &self.cfg.patient_id,
            hub: &self.hub,
            hub_ref: hub_ref.as_deref(),
            device_refs: &refs,
            nonce: self.random_u64(),
            more_may_follow: false,
        };
        let built = crate::fhir::limits::ack_bundle(&ctx, &ack)
            .map_err(|e| super::UplinkError::Config(e.to_string()))?;
        self.post_split(&built).await?;
        if let Some(a) = self.limits.as_mut() {
            a.acked = Some(key);
        }
        Ok(true)
    }

    /// Fetch the clinic's current limits version and offer it to the applier (none wired: no-op).
    pub async fn sync_limits(&mut self) -> Result<Offer, super::UplinkError> {
        if self.limits.is_none() {
            return Ok(Offer::Nothing);
        }
        // A version waiting for its time is applied when it comes, online or not.
        self.limits_due().await?;
        let found = fetch(&self.client, &self.url, &self.cfg.patient_id).await?;
        let now = self.clock.now();
        let Some(applier) = self.limits.as_mut() else {
            return Ok(Offer::Nothing);
        };
        let Some(sr) = found else {
            return Ok(Offer::Nothing);
        };
        let before = applier.in_force().version();
        let offer = applier.offer(&sr, now).await?;
        if applier.in_force().version() != before {
            // The Observations' L / H / LL / HH follow the limits in force.
            self.alert_rules = Some(applier.in_force().rules.clone());
        }
        Ok(offer)
    }

    /// Apply the version waiting for its effective time if that time has come (the uplink's
    /// loop asks at every pass; ingest asks before every reading). `Some(version)` when one came
    /// into force now.
    pub async fn limits_due(&mut self) -> Result<Option<u32>, StoreError> {
        let now = self.clock.now();
        let Some(applier) = self.limits.as_mut() else {
            return Ok(None);
        };
        let applied = applier.apply_due(now).await?;
        if applied.is_some() {
            self.alert_rules = Some(applier.in_force().rules.clone());
        }
        Ok(applied)
    }
}

/// The limits in force as `status` and `doctor` show them (read from the store, read-only).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct Shown {
    /// `clinic` or `hub.toml`.
    pub source: String,
    /// The clinic's version in force, if any.
    pub version: Option<u32>,
    /// When it was applied.
    pub applied_at: Option<UtcMillis>,
    /// The newest refusal since then (`alert_limits_refused` event detail), if any.
    pub last_refusal: Option<String>,
    /// A version accepted but not yet in force, and when it takes effect.
    pub pending_version: Option<u32>,
    pub pending_effective: Option<UtcMillis>,
}

impl std::fmt::Display for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.version, self.applied_at) {
            (Some(v), Some(at)) => write!(f, "clinic version {v}, applied {}", at.to_rfc3339())?,
            _ => f.write_str("hub.toml [alerts] (the clinic has sent no version)")?,
        }
        if let (Some(v), Some(at)) = (self.pending_version, self.pending_effective) {
            write!(
                f,
                "; version {v} accepted, takes effect at {}",
                at.to_rfc3339()
            )?;
        }
        if let Some(r) = &self.last_refusal {
            write!(f, "; last refused: {r}")?;
        }
        Ok(())
    }
}

/// What `status` and `doctor` show: the stored version (not re-validated here: the daemon does
/// that at start and says so with an `alert_limits_unusable` event) and the newest refusal.
pub async fn shown(store: &Store) -> Result<Shown, StoreError> {
    let stored = store.alert_limits().await?;
    let applied_at = stored.as_ref().map(|s| s.applied_at);
    let last_refusal = store
        .events(1000)
        .await?
        .into_iter()
        .find(|e| e.kind == "alert_limits_refused" || e.kind == "alert_limits_changed")
        // The newest of the two: a refusal after the last change.
        .filter(|e| e.kind == "alert_limits_refused")
        .map(|e| e.detail);
    let pending = store.pending_alert_limits().await?;
    Ok(Shown {
        pending_version: pending.as_ref().map(|p| p.version),
        pending_effective: pending.as_ref().map(|p| p.effective),
        source: if stored.is_some() {
            "clinic"
        } else {
            "hub.toml"
        }
        .into(),
        version: stored.as_ref().map(|s| s.version),
        applied_at,
        last_refusal,
    })
}
