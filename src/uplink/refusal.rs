//! One hub alert for a lasting systematic refusal (issue 15).
//!
//! Owns the state "every upload has been refused by the server since T, for reason K" and its one
//! alert. A failure counts as a refusal only when it is the server's verdict on the hub's access or
//! address, never an outage: the server refused every entry ([`UplinkError::ServerRefusesAll`]),
//! answered 401/403/404/405, or refused the hub's certificate. Its [`RefusalKind`] is a fixed word
//! (`auth`, `wrong_base_path`, `unknown_patient`, `refused`): no server text, no PHI.
//!
//! Guarantees:
//! - When refusals have lasted `[uplink] refusal_alert_after_secs` (no accepted upload between),
//!   the hub raises **one** alert: an `uplink_refusal_alert` event and, when `alerts.local_command`
//!   is set, one notice to the hook (JSON on stdin, `"transition": "raised"`). It is not raised
//!   again while the refusal lasts, whatever its kind becomes.
//! - The first accepted upload ends it: an `uplink_refusal_resolved` event and a hook notice
//!   `"resolved"` when it had been raised.
//! - The state is persisted in the store's `uplink_state` ([`STATE_NS`] / [`STATE_KEY`], a JSON
//!   [`Refusal`]) and written *before* the event and the hook notice, so a restart neither raises
//!   a second alert nor forgets one to resolve (a crash between the write and the notice loses that
//!   one notice rather than duplicating it). It is kept under a fixed name, not per base URL: the
//!   usual cure of a wrong base path is a new `base_url`, and the alert must still resolve then.
//! - Outages (network, 5xx, timeouts, TLS trust) neither start, extend nor end a refusal.

use super::sync::Uplink;
use super::UplinkError;
use crate::model::UtcMillis;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

/// The `uplink_state` namespace of the refusal state (fixed: see the module doc).
pub const STATE_NS: &str = "uplink";
/// The `uplink_state` name of the refusal state.
pub const STATE_KEY: &str = "refusal";

/// Why the server refuses every upload, as far as the hub can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalKind {
    /// The server refuses the hub's access (401/403, or its certificate at the TLS terminator).
    Auth,
    /// `base_url` does not name the FHIR base: 404/405, or the server refuses everything and its
    /// `<base_url>/metadata` could not be read at start-up.
    WrongBasePath,
    /// Everything is refused and the start-up check found no Patient with the hub's `patient_id`.
    UnknownPatient,
    /// Everything is refused for another reason (the server's validation settings…).
    Refused,
}

impl RefusalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalKind::Auth => "auth",
            RefusalKind::WrongBasePath => "wrong_base_path",
            RefusalKind::UnknownPatient => "unknown_patient",
            RefusalKind::Refused => "refused",
        }
    }

    /// What is wrong, in words for the technician.
    pub fn describe(self) -> &'static str {
        match self {
            RefusalKind::Auth => "the clinic server refuses the hub's access",
            RefusalKind::WrongBasePath => "`base_url` does not point at the clinic's FHIR base",
            RefusalKind::UnknownPatient => {
                "the clinic server has no Patient with the hub's `patient_id`"
            }
            RefusalKind::Refused => "the clinic server refuses every entry",
        }
    }

    /// What fixes it.
    pub fn fix(self) -> &'static str {
        match self {
            RefusalKind::Auth => {
                "the clinic must allow the hub's certificate (its registry or access policy); check `client_cert` is the one the clinic issued"
            }
            RefusalKind::WrongBasePath => {
                "check `clinic.url` / `base_url` in [uplink]: the FHIR base, where GET <base>/metadata answers a CapabilityStatement"
            }
            RefusalKind::UnknownPatient => {
                "the clinic must create the Patient with the hub's `patient_id`, or check `patient_id` in [hub]"
            }
            RefusalKind::Refused => {
                "see `vitals-hub status` (the server's words) and the server's validation settings at the clinic"
            }
        }
    }
}

/// The persisted refusal: since when every upload has been refused, why, and whether the alert
/// has been raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub kind: RefusalKind,
    /// The first refusal of this run of refusals (ms since the epoch).
    pub since: UtcMillis,
    pub raised: bool,
}

/// What the uplink knows of the server from its start-up check, for naming a refusal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerFacts {
    /// `<base_url>/metadata` answered with an HTTP error.
    pub metadata_refused: bool,
    /// The count-only Patient search found no Patient with the hub's id.
    pub patient_unknown: bool,
}

/// The kind of systematic refusal `e` is, or `None` when it is not one (an outage, a bad answer,
/// a local failure).
pub fn classify(e: &UplinkError, facts: ServerFacts) -> Option<RefusalKind> {
    let by_status = |status: u16| match status {
        401 | 403 => Some(RefusalKind::Auth),
        404 | 405 => Some(RefusalKind::WrongBasePath),
        _ => None,
    };
    match e {
        UplinkError::ServerRejectedOurCertificate(_) | UplinkError::CertificateRevoked(_) => {
            Some(RefusalKind::Auth)
        }
        UplinkError::Http { status, .. } => by_status(*status),
        UplinkError::ServerRefusesAll { status, .. } => {
            Some(by_status(*status).unwrap_or(if facts.metadata_refused {
                RefusalKind::WrongBasePath
            } else if facts.patient_unknown {
                RefusalKind::UnknownPatient
            } else {
                RefusalKind::Refused
            }))
        }
        _ => None,
    }
}

/// The refusal persisted in `store`, if any (an unreadable value is none: it is rewritten at the
/// next refusal).
pub async fn load(
    store: &crate::store::Store,
) -> Result<Option<Refusal>, crate::store::StoreError> {
    Ok(store
        .uplink_state(STATE_NS, STATE_KEY)
        .await?
        .filter(|v| !v.is_empty())
        .and_then(|v| serde_json::from_str(&v).ok()))
}

fn minutes(ms: i64) -> i64 {
    ms.max(0) / 60_000
}

/// The hook's input for the refusal alert: the shape of the patient alerts' events (`at`,
/// `transition`, `subject`, `severity`, `episode`, `detail`), with a subject of its own.
fn notice(r: &Refusal, at: UtcMillis, transition: &str, detail: &str) -> serde_json::Value {
    serde_json::json!({
        "at": at,
        "transition": transition,
        "subject": { "type": "uplink_refused", "kind": r.kind.as_str() },
        "severity": "warning",
        "episode": format!("uplink-refused-{}", r.since.as_millis()),
        "readings": [],
        "detail": detail,
    })
}

impl Uplink {
    async fn refusal_state(&mut self) -> Result<Option<Refusal>, UplinkError> {
        if let Some(r) = self.refusal {
            return Ok(r);
        }
        let r = load(&self.store).await?;
        self.refusal = Some(r);
        Ok(r)
    }

    async fn save_refusal(&mut self, r: Option<Refusal>) -> Result<(), UplinkError> {
        let text = match &r {
            Some(r) => serde_json::to_string(r).map_err(|e| UplinkError::Store(e.to_string()))?,
            None => String::new(),
        };
        self.store
            .set_uplink_state(STATE_NS, STATE_KEY, &text)
            .await?;
        self.refusal = Some(r);
        Ok(())
    }

    fn hand_to_hook(&self, v: serde_json::Value) -> bool {
        match &self.notices {
            Some(tx) => tx.try_send(v).is_ok(),
            None => true,
        }
    }

    /// A step or heartbeat failed with `e`: start or extend a refusal, and raise its alert once
    /// it has lasted `refusal_alert_after_secs`.
    pub(super) async fn note_refusal(&mut self, e: &UplinkError) -> Result<(), UplinkError> {
        let Some(kind) = classify(e, self.server_facts) else {
            return Ok(());
        };
        let now = self.clock.now();
        let before = self.refusal_state().await?;
        let mut r = before.unwrap_or(Refusal {
            kind,
            since: now,
            raised: false,
        });
        r.kind = kind;
        let lasted = now.as_millis() - r.since.as_millis();
        let due = lasted
            >= i64::try_from(self.cfg.refusal_alert_after_secs)
                .unwrap_or(i64::MAX)
                .saturating_mul(1000);
        let raise = !r.raised && due;
        r.raised |= raise;
        if before != Some(r) {
            // Persisted before anything is announced: a restart never raises it twice.
            self.save_refusal(Some(r)).await?;
        }
        if raise {
            let detail = format!(
                "every upload refused for {} min ({}): {}; nothing is rejected, the backlog waits; fix: {}",
                minutes(lasted),
                kind.as_str(),
                kind.describe(),
                kind.fix()
            );
            warn!(
                kind = kind.as_str(),
                minutes = minutes(lasted),
                "Every upload refused by the clinic server; hub alert raised."
            );
            self.store
                .append_event("uplink_refusal_alert", "error", detail.clone())
                .await?;
            if !self.hand_to_hook(notice(&r, now, "raised", &detail)) {
                self.store
                    .append_event(
                        "alert_hook_overflow",
                        "warning",
                        "the uplink refusal alert was not handed to the local hook: queue full"
                            .into(),
                    )
                    .await?;
            }
        }
        Ok(())
    }

    /// An upload was accepted: a refusal ends, and its alert (if raised) is resolved.
    pub(super) async fn note_accepted(&mut self) -> Result<(), UplinkError> {
        let Some(r) = self.refusal_state().await? else {
            return Ok(());
        };
        self.save_refusal(None).await?;
        if !r.raised {
            return Ok(());
        }
        let now = self.clock.now();
        let detail = format!(
            "uploads accepted again after {} min of refusal ({})",
            minutes(now.as_millis() - r.since.as_millis()),
            r.kind.as_str()
        );
        info!(
            kind = r.kind.as_str(),
            "Uploads accepted again; hub alert resolved."
        );
        self.store
            .append_event("uplink_refusal_resolved", "info", detail.clone())
            .await?;
        if !self.hand_to_hook(notice(&r, now, "resolved", &detail)) {
            self.store
                .append_event(
                    "alert_hook_overflow",
                    "warning",
                    "the uplink refusal resolution was not handed to the local hook: queue full"
                        .into(),
                )
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(status: u16) -> UplinkError {
        UplinkError::Http {
            status,
            retry_after: None,
            detail: None,
        }
    }

    #[test]
    fn refusals_are_named_and_outages_are_not_refusals() {
        let f = ServerFacts::default();
        assert_eq!(classify(&http(401), f), Some(RefusalKind::Auth));
        assert_eq!(classify(&http(403), f), Some(RefusalKind::Auth));
        assert_eq!(classify(&http(404), f), Some(RefusalKind::WrongBasePath));
        assert_eq!(classify(&http(502), f), None);
        assert_eq!(classify(&http(429), f), None);
        assert_eq!(classify(&UplinkError::Timeout, f), None);
        assert_eq!(classify(&UplinkError::Refused, f), None);
        assert_eq!(classify(&UplinkError::BadResponse("x".into()), f), None);
        assert_eq!(
            classify(&UplinkError::ServerRejectedOurCertificate("x".into()), f),
            Some(RefusalKind::Auth)
        );
        let all = UplinkError::ServerRefusesAll {
            status: 400,
            codes: "error processing".into(),
        };
        assert_eq!(classify(&all, f), Some(RefusalKind::Refused));
        let missing = ServerFacts {
            patient_unknown: true,
            ..f
        };
        assert_eq!(classify(&all, missing), Some(RefusalKind::UnknownPatient));
        let no_meta = ServerFacts {
            metadata_refused: true,
            patient_unknown: true,
        };
        assert_eq!(classify(&all, no_meta), Some(RefusalKind::WrongBasePath));
        let forbidden = UplinkError::ServerRefusesAll {
            status: 403,
            codes: String::new(),
        };
        assert_eq!(classify(&forbidden, no_meta), Some(RefusalKind::Auth));
    }

    #[test]
    fn the_state_round_trips_in_the_documented_form() {
        let r = Refusal {
            kind: RefusalKind::WrongBasePath,
            since: UtcMillis(1_700_000_000_000),
            raised: true,
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(
            text,
            r#"{"kind":"wrong_base_path","since":1700000000000,"raised":true}"#
        );
        assert_eq!(serde_json::from_str::<Refusal>(&text).unwrap(), r);
    }
}
