//! The sync loop: outbox → bundles → POST → per-entry ack, with backoff, bisection and the
//! heartbeat's timing. Sending is in [`super::send`], the heartbeat's content in [`super::heartbeat`].
//!
//! Size: about 1,000 lines: the loop, batching, bisection, size learning and acking share the
//! `Uplink` state (its struct and constructor are most of the growth); sending is in `send`, the
//! heartbeat in `heartbeat`, the refusal alert in `refusal`, probing the size upward in `grow`, the
//! tests in `sync/tests.rs`.

use super::send::{build_client, is_poison};
use super::tls::ReloadingCert;
use super::{ClockSync, TimeSync, UplinkConfig, UplinkError};

pub use super::heartbeat::{free_disk, LAST_HEARTBEAT};
pub use super::send::{capability, patient_at_server, probe, PatientAtServer};
use crate::fhir::bundle::{AlertInput, Item};
use crate::fhir::{self, BuiltBundle, BundleContext, HubInfo, PhdDeviceInfo, ReadingInput};
use crate::model::{Clock, Kind, UtcMillis};
use crate::store::{OutboxItem, OutboxPayload, Store};
use ring::rand::{SecureRandom, SystemRandom};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, error, warn};

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing was due.
    Idle,
    Delivered {
        acked: usize,
        rejected: usize,
    },
}

/// Totals of a [`Uplink::drain`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainReport {
    pub acked: usize,
    pub rejected: usize,
    pub bundles: usize,
    pub failures: usize,
}

/// The uplink's current state, for `vitals-hub status` and the heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UplinkStatus {
    pub last_error: Option<String>,
    pub last_error_kind: Option<&'static str>,
    pub last_success: Option<UtcMillis>,
    pub acked: u64,
    pub rejected: u64,
    pub bundles: u64,
    /// Request body bytes (as sent, compressed) plus response body bytes.
    pub wire_bytes: u64,
    pub cert_days_left: Option<i64>,
}

/// Where the uplink's time went, summed over the bundles of a run (wall time per phase; the
/// store read ahead runs while a bundle is on the wire, so it overlaps `wire`). For `vitals-hub
/// bench uplink`'s breakdown; taking the times costs a clock read per phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Phases {
    /// Per step before the batch: the clock's state, the certificate files, renewal, probing.
    pub checks: Duration,
    /// Reading and unsealing a batch from the store when it was not read ahead.
    pub read: Duration,
    /// Reading the next batch while the last was on the wire (overlapped).
    pub read_ahead: Duration,
    /// The FHIR mapping (a transaction Bundle as a JSON value).
    pub build: Duration,
    /// Serialising the Bundle and compressing it.
    pub encode: Duration,
    /// From sending the request to the last byte of the answer.
    pub wire: Duration,
    /// Parsing the transaction-response.
    pub parse: Duration,
    /// Committing the acks (durable) and the server ids, and waiting for an ack commit that was
    /// not overlapped.
    pub ack: Duration,
    /// Waiting for the last bundle's ack commit while this one was on the wire (overlapped).
    pub ack_overlapped: Duration,
    /// After a delivered step: the last-sync time, refusal and renewal bookkeeping.
    pub after: Duration,
}

/// The uplink.
#[derive(Debug)]
pub struct Uplink {
    pub(super) cfg: UplinkConfig,
    pub(super) url: reqwest::Url,
    pub(super) destination: String,
    pub(super) store: Store,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) time_sync: Arc<dyn TimeSync>,
    pub(super) cert: Arc<ReloadingCert>,
    pub(super) client: reqwest::Client,
    pub(super) hub: HubInfo,
    pub(super) rng: SystemRandom,
    pub(super) failures: u32,
    pub(super) next_delay: Duration,
    /// The delay already written to the store as the items' next attempt.
    pub(super) chosen_delay: Option<Duration>,
    pub(super) cert_level: Option<(i64, u8)>,
    pub(super) devices: HashMap<String, PhdDeviceInfo>,
    pub(super) status: Arc<Mutex<UplinkStatus>>,
    /// The alert rules, for the L / H / LL / HH interpretation of each Observation.
    pub(super) alert_rules: Option<crate::alerts::AlertRules>,
    pub(super) progress: Option<crate::model::Progress>,
    pub(super) wake: Option<Arc<tokio::sync::Notify>>,
    /// How many times in a row the last failure's kind was seen (bounded-rate logging).
    pub(super) repeats: u64,
    /// Entries per bundle this server accepts (learned, persisted per destination); read once.
    pub(super) max_entries: Option<usize>,
    /// The refusal state ([`super::refusal`]), read once from the store, then kept in step.
    pub(super) refusal: Option<Option<super::refusal::Refusal>>,
    /// Where the hub's own alerts go for the local hook (the daemon wires `alerts.local_command`).
    pub(super) notices: Option<tokio::sync::mpsc::Sender<serde_json::Value>>,
    /// What the start-up check learnt of the server, for naming a refusal.
    pub(super) server_facts: super::refusal::ServerFacts,
    /// Probing the learned bundle size upward ([`super::grow`]).
    pub(super) grow: super::grow::Grow,
    /// The largest bundle refused and accepted in the last [`Uplink::deliver`] pass.
    pub(super) pass_sizes: (usize, usize),
    /// The next batch, read while the last one was on the wire ([`Uplink::deliver`]).
    pub(super) prefetched: Option<Vec<OutboxItem>>,
    /// The server ids of the hub and devices as last read or written ([`Uplink::refs`]).
    pub(super) refs_cache: Option<(Option<String>, HashMap<String, String>)>,
    /// The last accepted upload not yet persisted ([`LAST_SUCCESS`]), and when it last was.
    pub(super) unsaved_success: Option<UtcMillis>,
    /// The state directory to write [`crate::tech::update::HEALTHY_FILE`] in after the first
    /// successful upload or heartbeat of this run (the daemon's; taken when written).
    pub(super) health_mark: Option<(std::path::PathBuf, UtcMillis)>,
    pub(super) success_saved_at: Option<Instant>,
    /// The clinic's alert limits ([`super::limits`]): fetched at each heartbeat and reconnect.
    pub(super) limits: Option<super::limits::Applier>,
    /// Certificate renewal over EST ([`super::renew`]).
    pub(super) renew: super::renew::RenewState,
    /// Where the time went ([`Phases`]).
    pub(super) phases: Phases,
    /// The last bundle's ack, queued in the store but not yet confirmed durable, with its
    /// entries ([`Uplink::deliver`]): confirmed while the next bundle is on the wire, and always
    /// before the next ack is queued or the outbox is read again.
    pub(super) acking: Option<(Vec<i64>, crate::store::Queued<usize>)>,
    /// When the certificate files were last looked at ([`CERT_FILES_EVERY`]).
    pub(super) files_checked_at: Option<Instant>,
}

/// While uploads succeed, the client certificate's files are looked at (for a rotation) at most
/// this often by the upload loop; a renewal, the heartbeat and every step after a failure look at
/// once.
pub const CERT_FILES_EVERY: Duration = Duration::from_secs(1);

/// The `uplink_state` name of the most entries per transaction a server was seen to accept
/// after refusing more (learned from its refusals; per destination).
pub const MAX_ENTRIES_STATE: &str = "max_entries";

/// A repeating failure is logged the first time, then every `LOG_EVERY`-th time with its count.
pub const LOG_EVERY: u64 = 10;

/// Blood-pressure components of one measurement must stay in one bundle: the boundaries between
/// items where a split is allowed.
fn bp_key(it: &OutboxItem) -> Option<(String, Option<crate::model::LocalDateTime>, UtcMillis)> {
    match &it.payload {
        OutboxPayload::Reading(r)
            if matches!(
                r.reading.kind,
                Kind::Systolic | Kind::Diastolic | Kind::MeanArterialPressure
            ) =>
        {
            Some((r.device.0.clone(), r.reading.device_time, r.received_at))
        }
        _ => None,
    }
}

/// After this many entries refused alone with none accepted, a pass stops bisecting: the refusal
/// is the server's, not the entries' (a wrong base path, auth, validation settings).
pub const SYSTEMATIC_AFTER: usize = 3;

/// The kind of an outbox entry, for telling poison from a systematic refusal: a reading or an
/// alert.
fn payload_kind(it: &OutboxItem) -> &'static str {
    match &it.payload {
        OutboxPayload::Reading(_) => "reading",
        OutboxPayload::Alert(_) => "alert",
    }
}

/// The kinds of the entries of `items` with these ids.
fn kinds_of(items: &[OutboxItem], tags: &[i64]) -> HashSet<&'static str> {
    items
        .iter()
        .filter(|i| tags.contains(&i.id))
        .map(payload_kind)
        .collect()
}

fn split_point(items: &[OutboxItem]) -> Option<usize> {
    let bounds: Vec<usize> = (1..items.len())
        .filter(|&i| {
            let a = items.get(i - 1).and_then(bp_key);
            let b = items.get(i).and_then(bp_key);
            a.is_none() || a != b
        })
        .collect();
    let mid = items.len() / 2;
    bounds.into_iter().min_by_key(|b| b.abs_diff(mid))
}

impl Uplink {
    /// Mark Observations L / H / LL / HH against these alert rules.
    pub fn with_alert_rules(mut self, rules: crate::alerts::AlertRules) -> Self {
        self.alert_rules = Some(rules);
        self
    }

    pub(super) fn interpretation(
        &self,
        reading: &crate::model::Reading,
    ) -> Option<fhir::Interpretation> {
        use crate::alerts::Interpretation as A;
        let i = crate::alerts::interpretation(self.alert_rules.as_ref()?, reading)?;
        Some(match i {
            A::Low => fhir::Interpretation::Low,
            A::High => fhir::Interpretation::High,
            A::CriticalLow => fhir::Interpretation::CriticalLow,
            A::CriticalHigh => fhir::Interpretation::CriticalHigh,
        })
    }

    /// Set up the uplink (loads the CA bundle and the client certificate; no network yet).
    pub fn new(
        cfg: UplinkConfig,
        store: Store,
        clock: Arc<dyn Clock>,
        time_sync: Arc<dyn TimeSync>,
        hub: HubInfo,
    ) -> Result<Uplink, UplinkError> {
        let url = cfg.validate()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cert = Arc::new(ReloadingCert::new(cfg.cert_paths()?, provider)?);
        let client = build_client(&cfg, cert.clone())?;
        Ok(Uplink {
            destination: destination_of(&url),
            url,
            cfg,
            store,
            clock,
            time_sync,
            cert,
            client,
            hub,
            rng: SystemRandom::new(),
            failures: 0,
            next_delay: Duration::ZERO,
            chosen_delay: None,
            cert_level: None,
            devices: HashMap::new(),
            status: Arc::new(Mutex::new(UplinkStatus::default())),
            alert_rules: None,
            progress: None,
            wake: None,
            repeats: 0,
            max_entries: None,
            refusal: None,
            notices: None,
            server_facts: super::refusal::ServerFacts::default(),
            grow: super::grow::Grow::default(),
            pass_sizes: (0, 0),
            prefetched: None,
            refs_cache: None,
            unsaved_success: None,
            health_mark: None,
            success_saved_at: None,
            limits: None,
            renew: super::renew::RenewState::default(),
            phases: Phases::default(),
            acking: None,
            files_checked_at: None,
        })
    }

    /// Write the update health gate's mark in `state_dir` after the first successful exchange.
    pub fn with_health_mark(mut self, state_dir: std::path::PathBuf) -> Self {
        self.health_mark = Some((state_dir, self.clock.now()));
        self
    }

    /// This run worked with the clinic: the health gate's mark, once.
    pub(super) fn mark_healthy(&mut self) {
        if let Some((dir, started)) = self.health_mark.take() {
            let now = self.clock.now().as_millis();
            if let Err(e) = crate::tech::update::mark_healthy(&dir, started.as_millis(), now) {
                warn!(error = %e, "Could not write the update health mark.");
            }
        }
    }

    /// Beat `progress` each time round the run loop (the hub's watchdog reads it).
    pub fn with_progress(mut self, progress: crate::model::Progress) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Look for new outbox entries as soon as `wake` is notified (ingest does after each append),
    /// instead of waiting out the idle poll interval.
    pub fn with_wake(mut self, wake: Arc<tokio::sync::Notify>) -> Self {
        self.wake = Some(wake);
        self
    }

    /// Hand the hub's own alerts (a lasting refusal, [`super::refusal`]) to `notices` as JSON, for
    /// the local hook; a full queue is an `alert_hook_overflow` event, never a wait.
    pub fn with_notices(mut self, notices: tokio::sync::mpsc::Sender<serde_json::Value>) -> Self {
        self.notices = Some(notices);
        self
    }

    /// A handle on the status (updated as the uplink runs).
    pub fn status_handle(&self) -> Arc<Mutex<UplinkStatus>> {
        self.status.clone()
    }

    /// TLS handshakes so far (resumption is off: one per connection opened).
    pub fn handshakes(&self) -> u64 {
        self.cert.requests()
    }

    /// Where the time went so far ([`Phases`]).
    pub fn phases(&self) -> Phases {
        self.phases
    }

    pub fn status(&self) -> UplinkStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub(super) fn with_status(&self, f: impl FnOnce(&mut UplinkStatus)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
    }

    pub(super) fn random_u64(&self) -> u64 {
        let mut b = [0u8; 8];
        let _ = self.rng.fill(&mut b);
        u64::from_le_bytes(b)
    }

    /// Full jitter: uniform in 0..=min(cap, base·2^failures); Retry-After wins when given.
    pub(super) fn delay_for(&self, e: &UplinkError) -> Duration {
        let cap = self.cfg.retry_cap_ms;
        if let UplinkError::Http {
            retry_after: Some(s),
            ..
        } = e
        {
            return Duration::from_millis(s.saturating_mul(1000).min(cap));
        }
        if e.is_security() {
            return Duration::from_millis(cap);
        }
        let exp = self
            .cfg
            .retry_base_ms
            .saturating_mul(1u64 << self.failures.min(30))
            .min(cap);
        Duration::from_millis(self.random_u64() % exp.saturating_add(1))
    }

    pub(super) async fn record_failure(&mut self, e: &UplinkError) {
        let kind = e.kind();
        let changed = self.status().last_error_kind != Some(kind);
        let summary = e.summary();
        self.with_status(|s| {
            s.last_error = Some(summary.clone());
            s.last_error_kind = Some(kind);
        });
        self.repeats = if changed {
            1
        } else {
            self.repeats.saturating_add(1)
        };
        // The log repeats at a bounded rate: the first, then every LOG_EVERY-th with a count.
        if self.repeats == 1 || self.repeats.is_multiple_of(LOG_EVERY) {
            if e.is_security() {
                error!(kind, repeats = self.repeats, detail = %summary, "Upload refused by TLS.");
            } else {
                warn!(kind, repeats = self.repeats, detail = %summary, "Upload failed; will retry.");
            }
        }
        if changed {
            let severity = if e.is_security() {
                "security"
            } else {
                "warning"
            };
            // The detail names the failure in fixed vocabularies: server texts may echo PHI.
            if let Err(se) = self.store.append_event(kind, severity, summary).await {
                warn!(error = %se, "Could not record the uplink event.");
            }
        }
    }

    /// A new client (and connection pool) after a certificate change; reads the CA bundle, so on
    /// a blocking thread.
    pub(super) async fn rebuild_client(&mut self) -> Result<(), UplinkError> {
        let (cfg, cert) = (self.cfg.clone(), self.cert.clone());
        self.client = tokio::task::spawn_blocking(move || build_client(&cfg, cert))
            .await
            .map_err(|e| UplinkError::Tls(format!("building the HTTP client: {e}")))??;
        Ok(())
    }

    /// Reload a rotated certificate; warn at 30 days, alert at 14, refuse when expired.
    pub(super) async fn check_certificate(&mut self) -> Result<(), UplinkError> {
        self.check_certificate_files(true).await
    }

    /// [`Uplink::check_certificate`]; with `files` false the files are not looked at (the
    /// validity of the loaded certificate is checked all the same).
    pub(super) async fn check_certificate_files(&mut self, files: bool) -> Result<(), UplinkError> {
        // File I/O on a blocking thread; the TLS handshake only reads the loaded copy.
        let cert = self.cert.clone();
        let refreshed = if files {
            self.files_checked_at = Some(Instant::now());
            tokio::task::spawn_blocking(move || cert.refresh())
                .await
                .unwrap_or(Ok(false))
        } else {
            Ok(false)
        };
        match refreshed {
            Ok(true) => {
                self.rebuild_client().await?;
                self.cert_level = None;
                self.store
                    .append_event(
                        "uplink_client_cert_reloaded",
                        "security",
                        "client certificate files changed; reloaded".into(),
                    )
                    .await?;
            }
            Ok(false) => {}
            Err(e) => {
                warn!(error = %e, "Rotated client certificate unusable; keeping the previous one.")
            }
        }
        let Some(v) = self.cert.validity() else {
            return Ok(());
        };
        let now = self.clock.now().as_millis().div_euclid(1000);
        let days = (v.not_after - now).div_euclid(86_400);
        self.with_status(|s| s.cert_days_left = Some(days));
        if now >= v.not_after {
            return Err(UplinkError::OwnCertificateExpired(format!(
                " ({} s ago)",
                now - v.not_after
            )));
        }
        let level = if days < 14 {
            2
        } else if days < 30 {
            1
        } else {
            0
        };
        let prev = self
            .cert_level
            .filter(|(na, _)| *na == v.not_after)
            .map(|(_, l)| l)
            .unwrap_or(0);
        if level > prev {
            warn!(days_left = days, "Client certificate expires soon.");
            self.store
                .append_event(
                    "uplink_client_cert_expiring",
                    "warning",
                    format!("{days} days left"),
                )
                .await?;
            if level == 2 {
                self.store
                    .append_alert(
                        serde_json::json!({ "kind": "client_certificate_expiring", "days_left": days, "not_after": v.not_after }),
                        &format!("client-cert-expiring-{}", v.not_after),
                        vec![],
                    )
                    .await?;
            }
        }
        self.cert_level = Some((v.not_after, level.max(prev)));
        Ok(())
    }

    pub(super) async fn load_devices(&mut self) -> Result<(), UplinkError> {
        self.refs_cache = None;
        for d in self.store.devices().await? {
            let info = self.store.device_info(&d.key).await?.unwrap_or_default();
            let p = phd_device_info(&d, info, self.cfg.utc_offset_minutes);
            self.devices.insert(d.key.0, p);
        }
        Ok(())
    }

    /// The server ids of the hub and the devices, read from the store once and kept until they
    /// change (`remember_refs`, `forget_refs`, new devices): two reads per device per bundle
    /// otherwise. The uplink is their only writer while it runs (`sync --resend` holds the store
    /// exclusively); a stale id would be refused and is then forgotten (see `deliver`).
    pub(super) async fn refs(
        &mut self,
    ) -> Result<(Option<String>, HashMap<String, String>), UplinkError> {
        if let Some(c) = &self.refs_cache {
            return Ok(c.clone());
        }
        // An empty value is a forgotten id (see `forget_refs`).
        let hub = self
            .store
            .uplink_state(&self.destination, "hub")
            .await?
            .filter(|r| !r.is_empty());
        let mut refs = HashMap::new();
        for key in self.devices.keys() {
            if let Some(r) = self
                .store
                .uplink_state(&self.destination, &format!("device:{key}"))
                .await?
                .filter(|r| !r.is_empty())
            {
                refs.insert(key.clone(), r);
            }
        }
        self.refs_cache = Some((hub.clone(), refs.clone()));
        Ok((hub, refs))
    }

    /// Forget the server ids of the hub and devices: the next bundle sends them again as
    /// conditional creates (a server that lost or renumbered them would refuse the references).
    pub(super) async fn forget_refs(&mut self) -> Result<(), UplinkError> {
        self.refs_cache = None;
        self.store
            .set_uplink_state(&self.destination, "hub", "")
            .await?;
        for key in self.devices.keys() {
            self.store
                .set_uplink_state(&self.destination, &format!("device:{key}"), "")
                .await?;
        }
        Ok(())
    }

    /// The FHIR mapping's input for an outbox entry; `None` when it cannot become a request (a
    /// reading whose device record is unknown).
    pub(super) fn item<'s>(&'s self, it: &'s OutboxItem) -> Option<Item<'s>> {
        match &it.payload {
            OutboxPayload::Reading(r) => self.devices.get(&r.device.0).map(|d| {
                Item::Reading(ReadingInput {
                    tag: it.id,
                    device: d,
                    reading: &r.reading,
                    received_at: r.received_at,
                    test_data: r.test_data,
                    interpretation: self.interpretation(&r.reading),
                })
            }),
            OutboxPayload::Alert(a) => Some(Item::Alert(AlertInput {
                tag: it.id,
                payload: &a.payload,
                stable_key: &a.stable_key,
            })),
        }
    }

    /// A bundle from the front of `items`. Every item must map ([`Uplink::deliver`] takes out
    /// those that do not first), so `consumed` counts `items` and each entry's tags are the ids
    /// of its own outbox entries.
    pub(super) fn build(
        &self,
        items: &[OutboxItem],
        hub_ref: Option<&str>,
        refs: &HashMap<String, String>,
        more: bool,
        max: usize,
    ) -> BuiltBundle {
        let fitems: Vec<Item<'_>> = items.iter().filter_map(|it| self.item(it)).collect();
        debug_assert_eq!(fitems.len(), items.len(), "unmappable entries reach build");
        let ctx = BundleContext {
            patient_id: &self.cfg.patient_id,
            hub: &self.hub,
            hub_ref,
            device_refs: refs,
            nonce: self.random_u64(),
            more_may_follow: more,
        };
        fhir::bundle::build_max(&ctx, &fitems, max)
    }

    /// The most entries per bundle: the configured maximum, or less when the server taught so.
    pub(super) async fn max_entries(&mut self) -> Result<usize, UplinkError> {
        if let Some(m) = self.max_entries {
            return Ok(m);
        }
        let learned = self
            .store
            .uplink_state(&self.destination, MAX_ENTRIES_STATE)
            .await?
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|m| *m >= 1);
        let m = learned.map_or(self.cfg.max_entries, |l| l.min(self.cfg.max_entries));
        self.max_entries = Some(m);
        Ok(m)
    }

    /// The server refused bundles larger than `accepted` and took those of `accepted` entries:
    /// remember it (only ever smaller), with an event.
    pub(super) async fn learn_max_entries(&mut self, accepted: usize) -> Result<(), UplinkError> {
        let current = self.max_entries().await?;
        if accepted == 0 || accepted >= current {
            return Ok(());
        }
        if self.grow.probing.is_some_and(|prev| accepted >= prev) {
            // A refused probe of a larger size: not a new limit (`grow` goes back and waits).
            return Ok(());
        }
        self.max_entries = Some(accepted);
        self.store
            .set_uplink_state(&self.destination, MAX_ENTRIES_STATE, &accepted.to_string())
            .await?;
        tracing::info!(
            entries = accepted,
            "The clinic server refuses larger transactions; bundles now hold at most this many entries."
        );
        self.store
            .append_event(
                "uplink_bundle_size_learned",
                "info",
                format!("the server accepts transactions of at most {accepted} entries; bundles are cut to that size"),
            )
            .await?;
        Ok(())
    }

    /// Entries that cannot become a request are kept out of every bundle and every ack: they are
    /// quarantined (kept for investigation, never sent) with an event. Returns the entries that
    /// can be sent.
    pub(super) async fn set_aside_unmappable(
        &mut self,
        items: &[OutboxItem],
    ) -> Result<Vec<OutboxItem>, UplinkError> {
        let (ok, skipped): (Vec<OutboxItem>, Vec<OutboxItem>) = items
            .iter()
            .cloned()
            .partition(|it| self.item(it).is_some());
        if !skipped.is_empty() {
            // Quarantined (kept, never uploaded or retried) with the store's own
            // `outbox_quarantined` event naming the entry ids; the reason is sealed.
            let ids: Vec<i64> = skipped.iter().map(|i| i.id).collect();
            self.store
                .quarantine(ids, "no device record for this reading")
                .await?;
            warn!(
                entries = skipped.len(),
                "Outbox entries without a device record quarantined, not uploaded."
            );
        }
        Ok(ok)
    }

    /// Wait until the ack queued after the last bundle is durable. On a failure its entries are
    /// still `pending` (they are sent again: conditional creates, stored once at the clinic) and no
    /// longer counted as acked.
    pub(super) async fn confirm_ack(&mut self) -> Result<(), UplinkError> {
        let Some((ids, queued)) = self.acking.take() else {
            return Ok(());
        };
        let t = Instant::now();
        let r = queued.wait().await;
        self.phases.ack += t.elapsed();
        r.map(|_| ()).map_err(|e| {
            self.with_status(|s| s.acked = s.acked.saturating_sub(ids.len() as u64));
            e.into()
        })
    }

    /// Deliver one batch: build, send, ack per entry; bisect on a 4xx.
    ///
    /// A batch sent whole with more waiting has its ack queued in the store and confirmed while
    /// the next bundle is on the wire (the commit's fsync overlaps the server's work). The order
    /// stays: a bundle's ack is durable before the next bundle's ack is queued and before the
    /// outbox is read again, and an entry leaves `pending` only by its ack, after the server named
    /// it stored. A kill before the commit sends the last two bundles again at most, as
    /// conditional creates: nothing lost, nothing stored twice.
    pub(super) async fn deliver(
        &mut self,
        items: &[OutboxItem],
        more: bool,
    ) -> Result<(usize, usize), UplinkError> {
        let items = &self.set_aside_unmappable(items).await?[..];
        let (hub_ref, refs) = self.refs().await?;
        let (mut acked, mut rejected) = (0usize, 0usize);
        let mut work: Vec<(usize, usize, bool)> = vec![(0, items.len(), more)];
        let (mut hub_ref, mut refs) = (hub_ref, refs);
        let mut refs_retried = false;
        // Poison or systematic: the kinds of entry the server accepted in this pass, and the
        // entries it refused alone (judged at the end: poison only when others of their kind
        // were accepted).
        let mut accepted: HashSet<&'static str> = HashSet::new();
        let mut suspects: Vec<(Vec<i64>, UplinkError)> = Vec::new();
        // Fitting the server: the largest bundle refused as a whole, the largest one accepted.
        let (mut refused_size, mut accepted_size) = (0usize, 0usize);
        self.pass_sizes = (0, 0);
        let mut prefetch: Option<Vec<OutboxItem>> = None;
        let max = self.max_entries().await?;
        while let Some((a, b, more)) = work.pop() {
            if accepted.is_empty() && suspects.len() >= SYSTEMATIC_AFTER {
                // Refused alone again and again, nothing accepted: not the entries' fault.
                work.push((a, b, more));
                break;
            }
            let slice = items.get(a..b).unwrap_or_default();
            let t = Instant::now();
            let built = self.build(slice, hub_ref.as_deref(), &refs, more, max);
            self.phases.build += t.elapsed();
            if !built.unmapped.is_empty() {
                let tags: Vec<i64> = built.unmapped.iter().map(|(t, _)| *t).collect();
                let reason = built
                    .unmapped
                    .first()
                    .map(|(_, e)| e.to_string())
                    .unwrap_or_default();
                rejected += self.store.reject(tags, &reason).await?;
                self.store
                    .append_event(
                        "uplink_unmapped",
                        "warning",
                        "readings without a PHD mapping kept, not uploaded".into(),
                    )
                    .await?;
            }
            // `consumed > 0` always (the first group goes in); the guard keeps this loop finite.
            if built.consumed < slice.len() && !more && built.consumed > 0 {
                work.push((a + built.consumed, b, false));
            }
            let tags = built.tags();
            if tags.is_empty() {
                continue;
            }
            // No `in_flight` mark before the POST: it would cost a synchronous commit per bundle
            // and protects nothing — the uplink is the outbox's only sender (the daemon's, or
            // `sync` holding the store exclusively), one batch at a time, and every `in_flight`
            // entry returns to `pending` at the next open anyway. An entry leaves `pending` only by
            // its ack (committed after the server's transaction-response named it stored), so a
            // kill mid-POST sends it again: a conditional create, stored once at the clinic.
            let whole = more && a == 0 && built.consumed == items.len() && work.is_empty();
            let posted = if whole {
                // The last bundle's ack is confirmed while this one is on the wire; its entries
                // are kept out of the batch read ahead until then, as are this batch's (still
                // `pending` until acked).
                let prior = self.acking.take();
                let mut exclude: HashSet<i64> = items.iter().map(|i| i.id).collect();
                if let Some((ids, _)) = &prior {
                    exclude.extend(ids.iter().copied());
                }
                let confirm = async move {
                    let t = Instant::now();
                    let r = match prior {
                        Some((ids, q)) => q.wait().await.map_err(|e| (ids.len(), e)),
                        None => Ok(0),
                    };
                    (r, t.elapsed())
                };
                // The whole batch in one bundle: read the next batch while this one is on the
                // wire (the store works while the server does). It is used only if this pass
                // ends cleanly.
                let store = self.store.clone();
                let now = self.clock.now();
                let want = self.cfg.batch_size.min(max);
                let ahead = async move {
                    let t = Instant::now();
                    let r = store.pending_excluding(want, now, exclude).await;
                    (r, t.elapsed())
                };
                let (posted, (ahead, took), (confirmed, waited)) =
                    tokio::join!(self.post(&built), ahead, confirm);
                self.phases.read_ahead += took;
                self.phases.ack_overlapped += waited;
                if let Err((n, e)) = confirmed {
                    // The last bundle's entries are still pending; this one's too (not acked).
                    self.with_status(|s| s.acked = s.acked.saturating_sub(n as u64));
                    return Err(e.into());
                }
                if let Ok(next) = ahead {
                    prefetch = Some(next);
                }
                posted
            } else {
                self.confirm_ack().await?;
                self.post(&built).await
            };
            match posted {
                Ok(outcomes) => {
                    let t = Instant::now();
                    self.remember_refs(&built, &outcomes).await?;
                    accepted_size = accepted_size.max(built.entries.len());
                    self.pass_sizes.1 = accepted_size;
                    let mut ok = Vec::new();
                    for (info, out) in built.entries.iter().zip(&outcomes) {
                        if out.is_stored() {
                            ok.extend(info.tags.iter().copied());
                            accepted.extend(kinds_of(slice, &info.tags));
                        } else if !info.tags.is_empty() {
                            let e = UplinkError::Http {
                                status: out.status,
                                retry_after: None,
                                detail: out.outcome.clone(),
                            };
                            if (400..500).contains(&out.status)
                                && out.status != 408
                                && out.status != 429
                            {
                                suspects.push((info.tags.clone(), e));
                            } else {
                                let next =
                                    self.clock.now().plus_millis(self.cfg.retry_base_ms as i64);
                                self.store
                                    .retry(info.tags.clone(), &e.summary(), next)
                                    .await?;
                            }
                        }
                    }
                    if whole && !ok.is_empty() && prefetch.as_ref().is_some_and(|p| !p.is_empty()) {
                        // More is waiting: the commit runs while the next bundle is on the wire.
                        let n = ok.len();
                        let queued = self.store.ack_queued(ok.clone()).await?;
                        self.acking = Some((ok, queued));
                        acked += n;
                    } else {
                        acked += self.store.ack(ok).await?;
                    }
                    // Devices now have server ids: later bundles reference them.
                    let (h, r) = self.refs().await?;
                    hub_ref = h;
                    refs = r;
                    self.phases.ack += t.elapsed();
                }
                Err(e) if is_poison(&e) => {
                    refused_size = refused_size.max(built.entries.len());
                    self.pass_sizes.0 = refused_size;
                    let covered = slice.get(..built.consumed).unwrap_or_default();
                    match split_point(covered) {
                        Some(mid) if covered.len() > 1 => {
                            debug!(size = covered.len(), "Bisecting a refused bundle.");
                            work.push((a + mid, a + built.consumed, false));
                            work.push((a, a + mid, false));
                        }
                        _ if !refs_retried && (hub_ref.is_some() || !refs.is_empty()) => {
                            // Before blaming the entry, rule out stale server ids of the devices.
                            refs_retried = true;
                            self.forget_refs().await?;
                            hub_ref = None;
                            refs.clear();
                            work.push((a, a + built.consumed, false));
                        }
                        _ => {
                            suspects.push((tags, e));
                            if accepted.is_empty() {
                                // Look for evidence first where it is likeliest: the largest
                                // part not yet tried.
                                work.sort_by_key(|(a, b, _)| b - a);
                            }
                        }
                    }
                }
                Err(e) => {
                    let delay = self.delay_for(&e);
                    let next = self
                        .clock
                        .now()
                        .plus_millis(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
                    let all: Vec<i64> = items.iter().map(|i| i.id).collect();
                    self.store.retry(all, &e.summary(), next).await?;
                    self.chosen_delay = Some(delay);
                    self.with_status(|s| s.acked += acked as u64);
                    return Err(e);
                }
            }
        }
        // The verdicts: an entry refused alone is poison only when entries of its kind were
        // accepted in this pass; otherwise the refusal is the server's (systematic) and the entry,
        // with everything not yet tried, waits.
        if suspects.is_empty() && refused_size > accepted_size && accepted_size > 0 {
            // Everything went through once cut smaller: a size limit, not poison.
            self.learn_max_entries(accepted_size).await?;
        }
        let mut waiting: Vec<i64> = Vec::new();
        let mut systematic: Option<UplinkError> = None;
        for (tags, e) in suspects {
            let kinds = kinds_of(items, &tags);
            if !kinds.is_empty() && kinds.iter().all(|k| accepted.contains(k)) {
                rejected += self.reject_poison(items, tags, &e).await?;
            } else {
                waiting.extend(tags);
                systematic.get_or_insert(e);
            }
        }
        for (a, b, _) in work {
            waiting.extend(items.get(a..b).unwrap_or_default().iter().map(|i| i.id));
        }
        if let Some(e) = systematic {
            let err = match &e {
                UplinkError::Http { status, detail, .. } => UplinkError::ServerRefusesAll {
                    status: *status,
                    codes: detail
                        .as_deref()
                        .map(fhir::response::outcome_codes)
                        .unwrap_or_default(),
                },
                other => other.clone(),
            };
            let delay = self.delay_for(&err);
            let next = self
                .clock
                .now()
                .plus_millis(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
            // The server's full reason (diagnostics may echo PHI) is kept sealed with the
            // entries, for the technician's `status`; events and logs carry only its codes.
            self.store.retry(waiting, &e.to_string(), next).await?;
            self.with_status(|s| s.acked += acked as u64);
            if acked == 0 {
                self.chosen_delay = Some(delay);
                return Err(err);
            }
            // Some kinds went through: the others wait, and the refusal is still reported.
            self.record_failure(&err).await;
            return Ok((acked, rejected));
        }
        self.with_status(|s| {
            s.acked += acked as u64;
            s.last_error = None;
            s.last_error_kind = None;
        });
        self.prefetched = prefetch.filter(|p| !p.is_empty());
        Ok((acked, rejected))
    }

    /// One round: wait for clock sync, check the certificate, deliver one batch.
    pub async fn step(&mut self) -> Result<Step, UplinkError> {
        let clock = self.time_sync.clock_sync().await;
        self.step_with(clock).await
    }

    /// [`Uplink::step`] with the clock state already asked for this loop.
    pub(super) async fn step_with(&mut self, clock: ClockSync) -> Result<Step, UplinkError> {
        let r = self.step_inner(clock).await;
        let t = Instant::now();
        match &r {
            Ok(Step::Delivered { acked: 0, .. }) => {
                // Nothing accepted (every entry rejected or set aside): not a sync.
                self.failures = 0;
                self.next_delay = Duration::ZERO;
            }
            Ok(Step::Delivered { .. }) => {
                self.failures = 0;
                self.next_delay = Duration::ZERO;
                let now = self.clock.now();
                self.with_status(|s| s.last_success = Some(now));
                self.unsaved_success = Some(now);
                self.mark_healthy();
                if self
                    .success_saved_at
                    .is_none_or(|t| t.elapsed() >= LAST_SUCCESS_EVERY)
                {
                    self.save_last_success().await;
                }
                if let Err(e) = self.note_accepted().await {
                    warn!(error = %e, "Could not record the end of a refusal.");
                }
                self.renewal_worked().await;
                self.phases.after += t.elapsed();
            }
            Ok(Step::Idle) => self.save_last_success().await,
            Err(e) => {
                // A failed step leaves no ack unconfirmed (nothing depends on it, but the count).
                if let Err(ae) = self.confirm_ack().await {
                    warn!(error = %ae, "The last acknowledgement could not be committed; its entries will be sent again.");
                }
                self.save_last_success().await;
                let chosen = self.chosen_delay.take();
                self.next_delay = if matches!(e, UplinkError::ClockNotSynchronised) {
                    Duration::from_millis(self.cfg.poll_interval_ms)
                } else {
                    chosen.unwrap_or_else(|| self.delay_for(e))
                };
                self.failures = self.failures.saturating_add(1);
                self.record_failure(e).await;
                self.renewal_refused(e).await;
                if let Err(se) = self.note_refusal(e).await {
                    warn!(error = %se, "Could not record a refusal.");
                }
            }
        }
        r
    }

    /// Persist the time of the last accepted upload, if not yet, for `vitals-hub status` (another
    /// process; ms since the epoch). Informational only: nothing depends on it for delivery.
    async fn save_last_success(&mut self) {
        let Some(at) = self.unsaved_success.take() else {
            return;
        };
        self.success_saved_at = Some(Instant::now());
        if let Err(e) = self
            .store
            .set_uplink_state(&self.destination, LAST_SUCCESS, &at.as_millis().to_string())
            .await
        {
            warn!(error = %e, "Could not record the last successful sync.");
        }
    }

    pub(super) async fn step_inner(&mut self, clock: ClockSync) -> Result<Step, UplinkError> {
        if clock != ClockSync::Synchronised {
            debug!(?clock, "Uploads wait for the clock.");
            return Err(UplinkError::ClockNotSynchronised);
        }
        let t = Instant::now();
        // While bundles flow, the certificate files are looked at once per CERT_FILES_EVERY (a
        // hand-off to a blocking thread per bundle otherwise); after a failure, at every step.
        let files = self.failures > 0
            || self
                .files_checked_at
                .is_none_or(|at| at.elapsed() >= CERT_FILES_EVERY);
        self.check_certificate_files(files).await?;
        self.maybe_renew().await;
        self.begin_probe().await?;
        self.phases.checks += t.elapsed();
        self.pass_sizes = (0, 0);
        let r = self.step_batch(clock).await;
        let (refused, accepted) = match &r {
            Ok(Step::Delivered { .. }) | Err(_) => self.pass_sizes,
            Ok(Step::Idle) => (0, 0),
        };
        self.end_probe(r.is_ok(), refused, accepted).await?;
        r
    }

    /// One batch at the current bundle size.
    async fn step_batch(&mut self, clock: ClockSync) -> Result<Step, UplinkError> {
        let batch = self.cfg.batch_size.min(self.max_entries().await?);
        // The batch read while the previous one was on the wire, if that pass ended cleanly.
        let items = match self.prefetched.take() {
            Some(p) if p.len() <= batch => p,
            _ => {
                self.confirm_ack().await?;
                let t = Instant::now();
                let items = self.store.pending(batch, self.clock.now()).await?;
                self.phases.read += t.elapsed();
                items
            }
        };
        if items.is_empty() {
            return Ok(Step::Idle);
        }
        // What the PhgDevice says of the hub's clock: asked once per bundle, true only when known.
        self.hub.ntp = self.time_sync.claims_ntp(clock).await;
        let known: HashSet<&String> = self.devices.keys().collect();
        let missing = items.iter().any(|i| match &i.payload {
            OutboxPayload::Reading(r) => !known.contains(&r.device.0),
            OutboxPayload::Alert(_) => false,
        });
        if missing {
            self.load_devices().await?;
        }
        let full = items.len() == batch;
        // A reading sealed for another patient (the device was re-bound) is never uploaded under
        // this hub's patient: it is kept, rejected and reported.
        let (items, foreign): (Vec<OutboxItem>, Vec<OutboxItem>) =
            items.into_iter().partition(|i| match &i.payload {
                OutboxPayload::Reading(r) => r
                    .patient_id
                    .as_deref()
                    .is_none_or(|p| p == self.cfg.patient_id),
                OutboxPayload::Alert(_) => true,
            });
        let mut rejected = 0;
        if !foreign.is_empty() {
            let ids: Vec<i64> = foreign.iter().map(|i| i.id).collect();
            rejected += self
                .store
                .reject(
                    ids,
                    "reading belongs to another patient than the uplink's patient_id",
                )
                .await?;
            self.store
                .append_event(
                    "uplink_patient_mismatch",
                    "error",
                    format!(
                        "{} readings for another patient kept, not uploaded",
                        foreign.len()
                    ),
                )
                .await?;
        }
        let (acked, r) = self.deliver(&items, full).await?;
        Ok(Step::Delivered {
            acked,
            rejected: rejected + r,
        })
    }

    /// Upload until nothing is pending (retrying transient failures with backoff) or `limit` passes.
    /// Returns the first non-transient failure (TLS, DNS, refused, clock).
    pub async fn drain(&mut self, limit: Duration) -> Result<DrainReport, UplinkError> {
        let start = Instant::now();
        let mut rep = DrainReport::default();
        while start.elapsed() < limit {
            match self.step().await {
                Ok(Step::Delivered { acked, rejected }) => {
                    rep.acked += acked;
                    rep.rejected += rejected;
                    rep.bundles += 1;
                }
                Ok(Step::Idle) => {
                    let st = self.store.stats().await?;
                    if st.pending + st.in_flight == 0 {
                        return Ok(rep);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) if e.is_transient() => {
                    rep.failures += 1;
                    tokio::time::sleep(self.next_delay).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(UplinkError::Timeout)
    }

    /// Run until `shutdown` turns true: heartbeat on its interval, upload as readings arrive.
    /// The clock's synchronisation is asked once per loop.
    pub async fn run(mut self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        tokio::select! {
            _ = self.check_capability() => {}
            _ = shutdown.changed() => return,
        }
        let interval = Duration::from_secs(self.cfg.heartbeat_interval_secs.max(1));
        let mut next_heartbeat = self.first_heartbeat(interval).await;
        let wake = self.wake.clone();
        let mut limits_asked = false;
        loop {
            if *shutdown.borrow() {
                return;
            }
            if let Some(p) = &self.progress {
                p.beat();
            }
            let clock = self.time_sync.clock_sync().await;
            let mut limits_due = false;
            if Instant::now() >= next_heartbeat && clock == ClockSync::Synchronised {
                let _ = self.heartbeat_with(clock).await;
                next_heartbeat = Instant::now() + interval;
                limits_due = true;
            }
            // A limits version whose effective time has come: in force before this pass uploads.
            if let Err(e) = self.limits_due().await {
                debug!(error = %e, "A pending alert limits version could not be applied.");
            }
            let was_failing = self.failures > 0;
            let step = self.step_with(clock).await;
            // The clinic's limits: on the heartbeat's cadence, at start and after a reconnect.
            let reconnected = was_failing && step.is_ok();
            if (limits_due || reconnected || !limits_asked) && self.limits.is_some() {
                limits_asked = true;
                if let Err(e) = self.sync_limits().await {
                    debug!(error = %e, "The clinic's alert limits could not be fetched.");
                }
                if let Err(e) = self.send_limits_ack().await {
                    debug!(error = %e, "The alert limits acknowledgement could not be sent.");
                }
            }
            let idle = matches!(step, Ok(Step::Idle));
            let wait = match step {
                Ok(Step::Delivered { .. }) => Duration::ZERO,
                Ok(Step::Idle) => Duration::from_millis(self.cfg.poll_interval_ms),
                Err(_) => self.next_delay,
            };
            let wait = wait.min(
                next_heartbeat
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
            );
            let woken = async {
                match &wake {
                    // Woken early only when idle: after an error the backoff stands.
                    Some(w) if idle => w.notified().await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = woken => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

/// The key the uplink files its `uplink_state` under: the base URL without a trailing slash.
pub fn destination_of(url: &reqwest::Url) -> String {
    url.as_str().trim_end_matches('/').to_owned()
}

/// The `uplink_state` name under which the time of the last delivered batch is kept (ms since the
/// epoch, per destination).
pub const LAST_SUCCESS: &str = "last_success";

/// While a backlog drains, [`LAST_SUCCESS`] is written at most this often (each write is a
/// synchronous commit); it is written at once when the uplink goes idle or fails.
pub const LAST_SUCCESS_EVERY: Duration = Duration::from_secs(5);

/// What the FHIR mapping needs of a stored device: its identity, Device Information and clock.
pub fn phd_device_info(
    d: &crate::store::Device,
    info: crate::store::DeviceInfo,
    utc_offset_minutes: i32,
) -> PhdDeviceInfo {
    fhir::device_info::phd_device_info(
        fhir::device_info::DeviceIdentity {
            key: &d.key.0,
            address: &d.record.address,
            name: d.record.name.as_deref(),
            serial: d.record.serial.as_deref(),
            profile: &d.record.profile,
        },
        info,
        utc_offset_minutes,
    )
}

// Against the clinic's receiver: built with the `clinic` feature (the default).
#[cfg(all(test, feature = "clinic"))]
mod tests;
