//! The technician's commands beside a running daemon: `status` (the hub's health at a glance).
//!
//! Everything here opens the store read-only ([`StoreConfig::read_only`]): a second process must
//! not migrate the schema, reset in-flight uploads or write events while the daemon runs. SQLite's
//! WAL lets this reader see the last committed state without blocking the daemon's writer.

use crate::config::Config;
use crate::model::{Clock, UtcMillis};
use crate::store::{Event, Result, Store};
use serde::Serialize;
use std::fmt::Write as _;
use std::sync::Arc;

/// How many warning/error events `status` shows.
pub const LAST_ERRORS: usize = 5;

/// The store of `cfg`, opened read-only.
pub async fn open_read_only(cfg: &Config, clock: Arc<dyn Clock>) -> Result<Store> {
    Store::open(cfg.store_config().read_only(), clock).await
}

/// Who this hub reports for and to: shown back by `setup`, `config check`, `status` and
/// `commission`, so that a patient id that is valid but wrong (`pat-042` for `pat-0042`) is seen at
/// the visit, not at the clinic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    pub patient_id: String,
    pub clinic_url: String,
    /// The hub's client certificate; `None` when the config names none.
    pub certificate: Option<CertInfo>,
}

/// The hub certificate's name and validity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertInfo {
    pub path: String,
    /// The subject, e.g. `CN=hub-0042`; an error text when the file cannot be read as a certificate.
    pub subject: String,
    /// notAfter, RFC 3339 (UTC).
    pub expires: Option<String>,
    pub days_left: Option<i64>,
}

/// The name and validity of the first certificate in the PEM file `path`.
pub fn cert_info(path: &std::path::Path, now_secs: i64) -> CertInfo {
    use rustls_pki_types::pem::PemObject;
    let parsed = rustls_pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| e.to_string())
        .and_then(|mut it| match it.next() {
            Some(Ok(der)) => Ok(der),
            Some(Err(e)) => Err(e.to_string()),
            None => Err("no certificate in the file".to_string()),
        })
        .and_then(|der| {
            x509_parser::parse_x509_certificate(der.as_ref())
                .map(|(_, c)| {
                    let na = c.validity().not_after.timestamp();
                    (c.subject().to_string(), na)
                })
                .map_err(|e| e.to_string())
        });
    match parsed {
        Ok((subject, not_after)) => CertInfo {
            path: path.display().to_string(),
            subject,
            expires: Some(UtcMillis(not_after.saturating_mul(1000)).to_rfc3339()),
            days_left: Some((not_after - now_secs).div_euclid(86_400)),
        },
        Err(e) => CertInfo {
            path: path.display().to_string(),
            subject: format!("(unreadable: {e})"),
            expires: None,
            days_left: None,
        },
    }
}

/// The identity of the hub `cfg` configures, at `now_secs`.
pub fn identity(cfg: &Config, now_secs: i64) -> Identity {
    Identity {
        patient_id: cfg.hub.patient_id.clone(),
        clinic_url: cfg.uplink.base_url.clone(),
        certificate: cfg
            .uplink
            .client_cert
            .as_deref()
            .map(|p| cert_info(p, now_secs)),
    }
}

/// Three lines for a human, the labels padded to `width`:
/// ```text
/// patient:      pat-0042
/// clinic:       https://fhir.clinic.example/fhir
/// certificate:  CN=hub-0042, expires 2027-12-06T00:00:00Z (365 days left)
/// ```
pub fn render_identity(id: &Identity, width: usize) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{:<width$}{}", "patient:", id.patient_id);
    let _ = writeln!(o, "{:<width$}{}", "clinic:", id.clinic_url);
    let cert = match &id.certificate {
        None => "(none configured)".to_string(),
        Some(c) => match (&c.expires, c.days_left) {
            (Some(e), Some(d)) => format!("{}, expires {e} ({d} days left)", c.subject),
            _ => c.subject.clone(),
        },
    };
    let _ = writeln!(o, "{:<width$}{cert}", "certificate:");
    o
}

/// The hub's health, as `vitals-hub status --json` prints it (a stable object: fields are only
/// ever added).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// When this was taken (ms since the epoch).
    pub at: UtcMillis,
    /// The patient, the clinic and the hub certificate.
    pub identity: Identity,
    pub backlog: Backlog,
    pub last_sync: LastSync,
    pub alerts: AlertCounts,
    /// The alert limits in force: the clinic's version or `hub.toml`'s (issue 18).
    pub alert_limits: crate::uplink::limits::Shown,
    pub devices: Vec<DeviceStatus>,
    /// The latest events of severity warning, error or security, newest first.
    pub last_errors: Vec<Event>,
    /// The uplink's latest failure since the last accepted sync (kind and reason in fixed
    /// vocabularies: HTTP status, FHIR issue codes, the kind of bad response), if any.
    pub uplink_problem: Option<Event>,
    /// The server's own words for the newest refusal (OperationOutcome diagnostics, kept sealed
    /// in the store; may echo PHI): printed on the technician's terminal, never in `--json`.
    #[serde(skip)]
    pub server_said: Option<String>,
    /// The client certificate's renewal over EST ([`crate::uplink::renew`]), once one was tried.
    pub renewal: Option<crate::uplink::renew::Renewal>,
    /// The security reports (aggregated security events, upstream as AuditEvents).
    pub security: SecurityReports,
}

/// The hub's security reports ([`crate::store::security`]): counts, a code and a time, no PHI.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct SecurityReports {
    /// Reports not yet accepted by the clinic (pending or in flight), those still collecting
    /// events included.
    pub waiting: u64,
    /// Of those, the ones whose window is still open (they go upstream when it closes).
    pub collecting: u64,
    /// The newest report held (by its last event): its code and that event's time.
    pub newest: Option<NewestReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewestReport {
    /// The report's code (`spoof-attempt`, `integrity-failure`, … [`crate::store::security::CODES`]).
    pub code: String,
    /// Its last event.
    pub at: UtcMillis,
}

/// The security reports in `store`; `collecting` is [`crate::store::Stats::security_open`].
pub async fn security_reports(store: &Store, collecting: u64) -> Result<SecurityReports> {
    let all = store.security_reports().await?;
    let waiting = all
        .iter()
        .filter(|(_, state)| matches!(state.as_str(), "pending" | "in_flight"))
        .count();
    let newest = all
        .iter()
        .max_by_key(|(r, _)| (r.last_at, r.id))
        .map(|(r, _)| NewestReport {
            code: r.code.clone(),
            at: UtcMillis(r.last_at),
        });
    Ok(SecurityReports {
        waiting: u64::try_from(waiting).unwrap_or(u64::MAX),
        collecting,
        newest,
    })
}

impl std::fmt::Display for SecurityReports {
    /// `2 waiting to go upstream (1 still collecting); newest spoof-attempt at 2026-…`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some(n) = &self.newest else {
            return f.write_str("none");
        };
        write!(f, "{} waiting to go upstream", self.waiting)?;
        if self.collecting > 0 {
            write!(f, " ({} still collecting)", self.collecting)?;
        }
        write!(f, "; newest {} at {}", n.code, n.at.to_rfc3339())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Backlog {
    /// Entries waiting for upload: pending + in flight.
    pub depth: u64,
    pub pending: u64,
    pub in_flight: u64,
    pub rejected: u64,
    pub quarantined: u64,
    /// Minute resolution: when the oldest waiting entry was created.
    pub oldest_waiting: Option<UtcMillis>,
    pub oldest_waiting_age_secs: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastSync {
    /// The last batch the clinic acknowledged (as the uplink recorded it), if any.
    pub at: Option<UtcMillis>,
    pub age_secs: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlertCounts {
    /// Alerts not yet delivered to the clinic (the hub cannot know which the clinic closed).
    pub waiting_for_upload: u64,
    /// Alerts held in the store.
    pub total: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceStatus {
    /// The store's id of the device (no meaning outside this hub).
    pub key: String,
    pub name: Option<String>,
    pub profile: String,
    pub allowed: bool,
    pub last_seen: Option<UtcMillis>,
    pub last_seen_age_secs: Option<i64>,
    pub battery_percent: Option<u8>,
    /// The Bluetooth address; only for the technician's terminal (`with_addresses`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

fn age(now: UtcMillis, t: UtcMillis) -> i64 {
    (now.as_millis() - t.as_millis()).div_euclid(1000)
}

/// Take the hub's status from `store`; `with_addresses` includes device addresses.
pub async fn status(
    store: &Store,
    cfg: &Config,
    now: UtcMillis,
    with_addresses: bool,
) -> Result<Status> {
    let st = store.stats().await?;
    let last_sync_at = match cfg.uplink.validate() {
        Ok(url) => store
            .uplink_state(
                &crate::uplink::sync::destination_of(&url),
                crate::uplink::sync::LAST_SUCCESS,
            )
            .await?
            .and_then(|v| v.parse::<i64>().ok())
            .map(UtcMillis),
        Err(_) => None,
    };
    let renewal = match cfg.uplink.validate() {
        Ok(url) => store
            .uplink_state(
                &crate::uplink::sync::destination_of(&url),
                crate::uplink::renew::RENEWAL_STATE,
            )
            .await?
            .and_then(|v| serde_json::from_str(&v).ok()),
        Err(_) => None,
    };
    let mut devices = Vec::new();
    for d in store.devices().await? {
        let info = store.device_info(&d.key).await?.unwrap_or_default();
        devices.push(DeviceStatus {
            key: d.key.0.clone(),
            name: d.record.name.clone(),
            profile: d.record.profile.clone(),
            allowed: d.allowed,
            last_seen: info.last_seen,
            last_seen_age_secs: info.last_seen.map(|t| age(now, t)),
            battery_percent: info.battery_percent,
            address: with_addresses.then(|| d.record.address.clone()),
        });
    }
    let last_errors: Vec<Event> = store
        .events(1000)
        .await?
        .into_iter()
        .filter(|e| matches!(e.severity.as_str(), "warning" | "error" | "security"))
        .take(LAST_ERRORS)
        .collect();
    let security = security_reports(store, st.security_open).await?;
    let uplink_problem = last_errors
        .iter()
        .find(|e| e.kind.starts_with("uplink_"))
        .filter(|e| last_sync_at.is_none_or(|t| e.at > t))
        .cloned();
    Ok(Status {
        at: now,
        identity: identity(cfg, now.as_millis().div_euclid(1000)),
        backlog: Backlog {
            depth: st.pending + st.in_flight,
            pending: st.pending,
            in_flight: st.in_flight,
            rejected: st.rejected,
            quarantined: st.quarantined,
            oldest_waiting: st.oldest_waiting,
            oldest_waiting_age_secs: st.oldest_waiting.map(|t| age(now, t)),
        },
        last_sync: LastSync {
            at: last_sync_at,
            age_secs: last_sync_at.map(|t| age(now, t)),
        },
        alerts: AlertCounts {
            waiting_for_upload: st.alerts_waiting,
            total: st.alerts,
        },
        alert_limits: crate::uplink::limits::shown(store).await?,
        devices,
        last_errors,
        server_said: if uplink_problem.is_some() || st.rejected > 0 {
            store.latest_error().await.ok().flatten()
        } else {
            None
        },
        uplink_problem,
        renewal,
        security,
    })
}

/// `3h 12m`, `45s`.
pub fn human_age(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

fn when(t: Option<UtcMillis>, age: Option<i64>) -> String {
    match (t, age) {
        (Some(t), Some(a)) => format!("{} ({} ago)", t.to_rfc3339(), human_age(a)),
        _ => "never".into(),
    }
}

/// The status for a human.
pub fn render_text(s: &Status) -> String {
    let mut o = render_identity(&s.identity, 14);
    if let Some(r) = &s.renewal {
        let at = UtcMillis(r.at).to_rfc3339();
        let line = match r.state.as_str() {
            "renewed" => format!("renewed over EST at {at}; waiting for its first accepted upload"),
            "confirmed" => format!("renewed over EST; in use since {at}"),
            "rolled_back" => format!(
                "the clinic refused the renewed certificate at {at}; the previous one is back"
            ),
            _ => format!(
                "FAILING since {at} ({} attempts): {}",
                r.failures,
                r.error.as_deref().unwrap_or("-")
            ),
        };
        let _ = writeln!(o, "renewal:      {line}");
    }
    let b = &s.backlog;
    let _ = writeln!(
        o,
        "backlog:      {} waiting ({} pending, {} in flight); oldest {}",
        b.depth,
        b.pending,
        b.in_flight,
        match b.oldest_waiting_age_secs {
            Some(a) => format!("{} old", human_age(a)),
            None => "-".into(),
        }
    );
    if b.rejected + b.quarantined > 0 {
        let _ = writeln!(
            o,
            "              {} rejected by the clinic, {} quarantined (kept on the hub)",
            b.rejected, b.quarantined
        );
    }
    let _ = writeln!(
        o,
        "last sync:    {}",
        when(s.last_sync.at, s.last_sync.age_secs)
    );
    if let Some(p) = &s.uplink_problem {
        let _ = writeln!(
            o,
            "uplink:       failing since {}: {}: {}",
            p.at.to_rfc3339(),
            p.kind,
            p.detail
        );
    }
    if let Some(t) = &s.server_said {
        let _ = writeln!(o, "server said:  {t}");
    }
    let _ = writeln!(
        o,
        "alerts:       {} waiting for upload, {} held",
        s.alerts.waiting_for_upload, s.alerts.total
    );
    let _ = writeln!(o, "limits:       {}", s.alert_limits);
    let _ = writeln!(o, "security:     {}", s.security);
    let _ = writeln!(o, "devices:      {}", s.devices.len());
    for d in &s.devices {
        let _ = writeln!(
            o,
            "  {:<14} {:<15} last seen {}, battery {}{}{}",
            d.name.as_deref().unwrap_or("(unnamed)"),
            d.profile,
            when(d.last_seen, d.last_seen_age_secs),
            d.battery_percent
                .map(|p| format!("{p}%"))
                .unwrap_or_else(|| "-".into()),
            d.address
                .as_deref()
                .map(|a| format!(", {a}"))
                .unwrap_or_default(),
            if d.allowed { "" } else { " (not allowed)" }
        );
    }
    let _ = writeln!(o, "last errors:  {}", s.last_errors.len());
    for e in &s.last_errors {
        let _ = writeln!(
            o,
            "  {} {:<8} {}: {}",
            e.at.to_rfc3339(),
            e.severity,
            e.kind,
            e.detail
        );
    }
    o
}

#[cfg(test)]
mod uplink_line_tests {
    use super::*;

    #[test]
    fn the_uplink_problem_is_shown_and_the_servers_words_only_on_the_terminal() {
        let ev = Event {
            id: 1,
            at: UtcMillis(1_750_000_000_000),
            kind: "uplink_server_refuses_all".into(),
            severity: "warning".into(),
            detail: "HTTP 400 (error processing)".into(),
        };
        let s = Status {
            at: UtcMillis(1_750_000_100_000),
            identity: Identity {
                patient_id: "pat-1".into(),
                clinic_url: "https://clinic.example/fhir".into(),
                certificate: None,
            },
            backlog: Backlog {
                depth: 3,
                pending: 3,
                in_flight: 0,
                rejected: 0,
                quarantined: 0,
                oldest_waiting: None,
                oldest_waiting_age_secs: None,
            },
            last_sync: LastSync {
                at: None,
                age_secs: None,
            },
            alerts: AlertCounts {
                waiting_for_upload: 0,
                total: 0,
            },
            alert_limits: Default::default(),
            devices: vec![],
            last_errors: vec![ev.clone()],
            uplink_problem: Some(ev),
            server_said: Some("HAPI-0302: Unknown resource type".into()),
            renewal: None,
            security: SecurityReports::default(),
        };
        let text = render_text(&s);
        assert!(text.contains("uplink:       failing since"), "{text}");
        assert!(text.contains("HTTP 400 (error processing)"), "{text}");
        assert!(text.contains("server said:  HAPI-0302"), "{text}");
        assert!(text.contains("security:     none\n"), "{text}");
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("uplink_problem"), "{json}");
        assert!(
            !json.contains("HAPI-0302"),
            "the server's words stay off --json: {json}"
        );
    }
}

#[cfg(test)]
mod security_line_tests {
    use super::*;

    #[test]
    fn the_security_line_counts_waiting_reports_and_names_the_newest_code_and_time() {
        let mut r = SecurityReports {
            waiting: 2,
            collecting: 1,
            newest: Some(NewestReport {
                code: "spoof-attempt".into(),
                at: UtcMillis(1_750_000_000_000),
            }),
        };
        assert_eq!(
            r.to_string(),
            "2 waiting to go upstream (1 still collecting); newest spoof-attempt at 2025-06-15T15:06:40Z"
        );
        r.waiting = 0;
        r.collecting = 0;
        assert_eq!(
            r.to_string(),
            "0 waiting to go upstream; newest spoof-attempt at 2025-06-15T15:06:40Z"
        );
        assert_eq!(SecurityReports::default().to_string(), "none");
    }
}
