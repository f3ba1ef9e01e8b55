//! Ingest: the one path every reading takes into the hub — the store first (durable), then the
//! alert rules, whether or not the clinic is reachable.
//!
//! Order and guarantees:
//! 1. `store.append` commits the readings (and the device's download cursor) before anything else.
//! 2. Readings new to the store (not duplicates) go through the alert [`Engine`] in order; each
//!    alert event is appended to the store (sealed, uploaded ahead of routine readings) under a
//!    stable key `alert/<episode>/<transition>`, so a re-evaluation never stores it twice.
//! 3. Newly stored events go to the local hook (`alerts.local_command`) on a separate task; a hook
//!    failure is recorded as a store event and never blocks ingest.
//!
//! The engine's state is rebuilt at open by replaying stored readings through the rules — only
//! those after the last sealed snapshot of that state (`store::Snapshot`, name `alerts`), so a
//! start does not grow with the history kept (issue 20). An event whose reading was committed but
//! whose alert was not (a crash between 1 and 2) is therefore produced again at the next start and
//! stored then; events already stored are recognised by their stable keys and not announced again.
//!
//! Snapshots: every [`SNAPSHOT_EVERY`] evaluated readings, the state as it was before an append
//! (every event of the readings it covers already stored) is written in that append's own
//! transaction — no commit of its own, so no extra fsync; also at the end of a start that replayed
//! anything, and at a clean stop ([`Ingest::save_snapshot`]). A snapshot carries a fingerprint of
//! what the state depends on besides the readings (the rules, patient, offset, zone, and this
//! build's version): a different one, a snapshot that does not open (an integrity event) or does
//! not decode means a full replay, as before. A crash at any moment leaves the last committed
//! snapshot, older than the readings after it: the replay from there gives the state a full replay
//! gives (`tests/store_crash.rs::sigkill_during_ingest_snapshot_plus_replay_equals_full_replay`).

use super::hook::run_hook;
use crate::alerts::{AlertEvent, AlertRules, Engine};
use crate::fhir::{self, codes};
use crate::model::{Reading, UtcMillis};
use crate::store::{AppendOutcome, DeviceKey, NewReading, Snapshot, Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::{mpsc, Mutex};
use tracing::{info, warn};

/// What ingest needs to know.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub rules: AlertRules,
    /// The patient's logical id (for the Observation identifiers an alert refers to).
    pub patient_id: String,
    /// The hub's offset from UTC (deprecated; the FHIR device clock still carries it).
    pub utc_offset_minutes: i32,
    /// The home's zone: device wall-clock times are measured at the instant its rules give.
    pub zone: crate::model::Zone,
}

/// Errors of ingest.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl State {
    /// `device` measured at `at`: keep its latest measurement time.
    fn note_reading(&mut self, device: &DeviceKey, at: UtcMillis) {
        let last = self.last_reading.entry(device.clone()).or_insert(at);
        if at > *last {
            *last = at;
        }
    }
}

/// Evaluated readings between two snapshots written with appends.
pub const SNAPSHOT_EVERY: u64 = 1000;

/// The snapshot's name in the store.
const SNAPSHOT_NAME: &str = "alerts";

/// What is sealed in the snapshot: [`State`] without the device cache (read from the store).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotState {
    /// What the state depends on besides the readings and the rules (see [`fingerprint`]).
    fingerprint: String,
    /// A digest of the alert rules it was evaluated under ([`rules_digest`]).
    #[serde(default)]
    rules: String,
    engine: Engine,
    last_id: i64,
    /// Sorted by id; only those of readings the engine still refers to.
    identifiers: Vec<(i64, String)>,
    /// Sorted by device.
    last_reading: Vec<(DeviceKey, UtcMillis)>,
}

impl SnapshotState {
    /// The reading ids whose Observation identifiers are kept, in order (tests: bounded by the
    /// open episodes, not by the history).
    pub fn identifier_ids(&self) -> Vec<i64> {
        self.identifiers.iter().map(|(id, _)| *id).collect()
    }
}

/// A digest of the patient, the offset, the zone and this build's version: a snapshot taken under
/// other ones is not used (every stored reading is evaluated again).
///
/// The rules are not in it: a snapshot taken under other rules (the clinic sent a new limits
/// version, or `[alerts]` in hub.toml changed, then a restart) is used as it is, and its open
/// episodes are re-checked under the rules in force ([`Engine::limits_changed`]: those whose
/// condition no longer holds resolve with "limits changed") — exactly what a change of limits
/// does while the hub runs. Past readings are never evaluated again under new limits: that
/// would raise alerts, now, for readings that were normal when they were taken.
fn fingerprint(cfg: &IngestConfig) -> String {
    let text = format!(
        "{}|{}|{:?}|{}",
        cfg.patient_id,
        cfg.utc_offset_minutes,
        cfg.zone,
        env!("CARGO_PKG_VERSION")
    );
    hex::encode(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()))
}

/// A digest of a set of alert rules.
fn rules_digest(rules: &AlertRules) -> String {
    let text = serde_json::to_string(rules).unwrap_or_default();
    hex::encode(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()))
}

#[derive(Debug, Default)]
struct State {
    /// The rules in force: `cfg.rules` at start, replaced whole by [`Ingest::replace_rules`] under
    /// this state's lock, so every reading is evaluated entirely under one set.
    rules: AlertRules,
    engine: Engine,
    /// The highest reading id evaluated: ids grow with every new row, so a duplicate (which
    /// returns the id stored before) is never evaluated twice.
    last_id: i64,
    /// The FHIR Observation identifier of the readings a later alert event may refer to (those
    /// the engine's state still holds, see [`State::prune_identifiers`]): bounded by the engine's
    /// own state, not by the history.
    identifiers: HashMap<i64, String>,
    devices: HashMap<String, fhir::PhdDeviceInfo>,
    /// When each device's latest reading was measured (for the overdue rules).
    last_reading: HashMap<DeviceKey, UtcMillis>,
    /// Readings evaluated since the last snapshot was written.
    unsnapshotted: u64,
    /// A clinic limits version accepted but not yet in force: applied under this lock before the
    /// first reading evaluated at or after its effective time ([`Ingest::set_pending_rules`]).
    pending: Option<PendingRules>,
    /// The last pending version applied here, and when.
    promoted: Option<(u32, UtcMillis)>,
}

/// A clinic alert-limits version accepted but not yet in force (its effective time is in the
/// future): what [`Ingest`] switches to once the store's clock reaches `effective`.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingRules {
    pub version: u32,
    pub effective: UtcMillis,
    /// The set to apply (already merged with the hub's own settings).
    pub rules: AlertRules,
    /// The `ServiceRequest` text, stored as the version in force when applied.
    pub resource: String,
}

impl State {
    /// Drop the identifiers of readings the engine no longer refers to: a later event names only
    /// readings its state still holds ([`Engine::references`]) and the one being evaluated then.
    /// A function of the engine's state alone, applied after every reading evaluated, live or
    /// replayed, so a start from a snapshot keeps exactly what a full replay keeps.
    fn prune_identifiers(&mut self) {
        if self.identifiers.is_empty() {
            return;
        }
        let held = held_ids(&self.engine);
        self.identifiers.retain(|k, _| held.contains(k));
    }

    fn snapshot_state(&self, fingerprint: &str) -> SnapshotState {
        // Pruned here too: a tick or a change of limits may have closed an episode since the last
        // reading was evaluated.
        let held = held_ids(&self.engine);
        let mut identifiers: Vec<(i64, String)> = self
            .identifiers
            .iter()
            .filter(|(k, _)| held.contains(k))
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        identifiers.sort();
        let mut last_reading: Vec<(DeviceKey, UtcMillis)> = self
            .last_reading
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        last_reading.sort();
        SnapshotState {
            fingerprint: fingerprint.to_owned(),
            rules: rules_digest(&self.rules),
            engine: self.engine.clone(),
            last_id: self.last_id,
            identifiers,
            last_reading,
        }
    }

    fn snapshot(&self, fingerprint: &str) -> Result<Snapshot, IngestError> {
        let state = serde_json::to_value(self.snapshot_state(fingerprint))
            .map_err(|e| StoreError::Invalid(format!("alert state snapshot: {e}")))?;
        Ok(Snapshot {
            name: SNAPSHOT_NAME.into(),
            covers: self.last_id,
            state,
        })
    }
}

/// The store ids among the references `engine` holds.
fn held_ids(engine: &Engine) -> std::collections::HashSet<i64> {
    engine.references().filter_map(|r| r.parse().ok()).collect()
}

/// Where a start takes the alert state from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// The last snapshot, then the readings after it (what the daemon does).
    FromSnapshot,
    /// Every stored reading (tests compare the two; `bench daemon` times both).
    Full,
}

/// The ingest path. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Ingest {
    store: Store,
    cfg: IngestConfig,
    state: Mutex<State>,
    hook: Option<mpsc::Sender<AlertEvent>>,
    wake: Option<std::sync::Arc<tokio::sync::Notify>>,
    /// Continuous streams' raw values come through [`Ingest::observe_stream`]: their stored
    /// window summaries are then not evaluated again.
    streams_raw: bool,
    fingerprint: String,
    snapshot_every: u64,
}

/// What one append did.
#[derive(Debug, Clone, Default)]
pub struct IngestOutcome {
    pub append: AppendOutcome,
    /// Alert events stored by this append (new ones only).
    pub alerts: Vec<AlertEvent>,
}

impl Ingest {
    /// Open ingest over a store: rebuild the alert state from the stored readings, store any event
    /// that is missing, and start the hook task if a local command is configured.
    pub async fn open(store: Store, cfg: IngestConfig) -> Result<Ingest, IngestError> {
        Ingest::open_with(store, cfg, Replay::FromSnapshot).await
    }

    /// [`Ingest::open`], taking the state from where `replay` says.
    pub async fn open_with(
        store: Store,
        cfg: IngestConfig,
        replay: Replay,
    ) -> Result<Ingest, IngestError> {
        let hook = cfg.rules.local_command.clone().map(|command| {
            let (tx, rx) = mpsc::channel::<AlertEvent>(256);
            let timeout =
                Duration::from_secs(u64::from(cfg.rules.local_command_timeout_seconds.max(1)));
            tokio::spawn(hook_task(store.clone(), command, timeout, rx));
            tx
        });
        let state = Mutex::new(State {
            rules: cfg.rules.clone(),
            ..State::default()
        });
        let fingerprint = fingerprint(&cfg);
        let ingest = Ingest {
            store,
            cfg,
            state,
            hook,
            wake: None,
            streams_raw: false,
            fingerprint,
            snapshot_every: SNAPSHOT_EVERY,
        };
        ingest.replay(replay).await?;
        Ok(ingest)
    }

    /// The state in the snapshot, if there is one of this configuration that opens and decodes.
    async fn load_snapshot(&self) -> Option<SnapshotState> {
        let snap = match self.store.snapshot(SNAPSHOT_NAME).await {
            Ok(Some(s)) => s,
            Ok(None) => return None,
            Err(e) => {
                warn!(error = %e, "The alert state snapshot could not be read; replaying every stored reading.");
                return None;
            }
        };
        let state: SnapshotState = match serde_json::from_value(snap.state) {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "The alert state snapshot did not decode (written by another version?); replaying every stored reading.");
                return None;
            }
        };
        if state.fingerprint != self.fingerprint || state.last_id != snap.covers {
            info!("The hub's settings or version changed since the last snapshot; replaying every stored reading.");
            return None;
        }
        Some(state)
    }

    async fn replay(&self, replay: Replay) -> Result<(), IngestError> {
        let mut st = self.state.lock().await;
        let t0 = std::time::Instant::now();
        if replay == Replay::FromSnapshot {
            let loaded = self.load_snapshot().await;
            tracing::debug!(
                ms = t0.elapsed().as_millis() as u64,
                found = loaded.is_some(),
                identifiers = loaded.as_ref().map_or(0, |s| s.identifiers.len()),
                "Alert state: snapshot read, opened and decoded."
            );
            if let Some(s) = loaded {
                st.engine = s.engine;
                st.last_id = s.last_id;
                st.identifiers = s.identifiers.into_iter().collect();
                // A snapshot of an earlier build may hold more than the engine refers to.
                st.prune_identifiers();
                st.last_reading = s.last_reading.into_iter().collect();
                if s.rules != rules_digest(&st.rules) {
                    // Taken under other limits: re-check the open episodes, as a change of
                    // limits while running does (see [`fingerprint`]).
                    let now = self.store.clock().now();
                    let rules = st.rules.clone();
                    let events = st.engine.limits_changed(&rules, now);
                    info!(
                        resolved = events.len(),
                        "The alert limits changed since the last snapshot; open alerts re-checked under the limits in force."
                    );
                    for e in events {
                        self.store_event(&st, &e).await?;
                    }
                    st.unsnapshotted += 1;
                }
            }
        }
        let mut after = st.last_id;
        let mut recovered = 0usize;
        let mut replayed = 0u64;
        loop {
            let page = self.store.readings(after, 500).await?;
            let Some(last) = page.last() else { break };
            after = last.id;
            replayed += page.len() as u64;
            for r in page {
                let stored = self
                    .evaluate(
                        &mut st,
                        r.id,
                        &r.device,
                        &r.reading,
                        r.received_at,
                        r.summary.is_some(),
                    )
                    .await?;
                recovered += stored.len();
            }
        }
        tracing::debug!(
            ms = t0.elapsed().as_millis() as u64,
            replayed,
            "Alert state: readings after the snapshot replayed."
        );
        if recovered > 0 {
            warn!(
                alerts = recovered,
                "Alerts missing from the store were recreated at start."
            );
        }
        // The next start need not replay these again.
        if (replayed > 0 || st.unsnapshotted > 0) && replay == Replay::FromSnapshot {
            let snap = st.snapshot(&self.fingerprint)?;
            self.store.put_snapshot(snap).await?;
        }
        st.unsnapshotted = 0;
        Ok(())
    }

    /// Write the snapshot now (a clean stop); nothing if nothing was evaluated since the last.
    pub async fn save_snapshot(&self) -> Result<(), IngestError> {
        let mut st = self.state.lock().await;
        if st.unsnapshotted == 0 {
            return Ok(());
        }
        let snap = st.snapshot(&self.fingerprint)?;
        self.store.put_snapshot(snap).await?;
        st.unsnapshotted = 0;
        Ok(())
    }

    /// Snapshot every `n` evaluated readings instead of [`SNAPSHOT_EVERY`] (tests, to exercise
    /// it often).
    pub fn with_snapshot_every(mut self, n: u64) -> Ingest {
        self.snapshot_every = n.max(1);
        self
    }

    /// The alert state as a snapshot would hold it (tests compare a start from a snapshot with a
    /// full replay).
    pub async fn state(&self) -> SnapshotState {
        self.state.lock().await.snapshot_state(&self.fingerprint)
    }

    /// Raw values of continuous streams will come through [`Ingest::observe_stream`]; stored
    /// window summaries are then not evaluated (their values already were).
    pub fn with_stream_values(mut self) -> Ingest {
        self.streams_raw = true;
        self
    }

    /// One raw value of a continuous stream (heart rate, PLX continuous): through the alert rules,
    /// not into the store (its window's summary is stored). The alert it raises refers to no
    /// stored reading.
    pub async fn observe_stream(
        &self,
        device: &DeviceKey,
        reading: &Reading,
        received_at: UtcMillis,
    ) -> Result<Vec<AlertEvent>, IngestError> {
        let mut st = self.state.lock().await;
        let mut stored = self.apply_due_locked(&mut st).await?;
        let at = self.measured_at(reading, received_at);
        st.note_reading(device, at);
        let rules = std::mem::take(&mut st.rules);
        let events = st.engine.observe(&rules, at, reading, "stream");
        st.rules = rules;
        for e in events {
            if self.store_event(&st, &e).await? {
                stored.push(e);
            }
        }
        drop(st);
        if !stored.is_empty() {
            if let Some(w) = &self.wake {
                w.notify_one();
            }
        }
        Ok(stored)
    }

    /// Notify `wake` after every append that stored something (the uplink waits on it).
    pub fn with_wake(mut self, wake: std::sync::Arc<tokio::sync::Notify>) -> Ingest {
        self.wake = Some(wake);
        self
    }

    /// Make `rules` the rules in force, between two readings (under the lock every reading is
    /// evaluated under): open episodes whose condition no longer holds resolve with "limits
    /// changed" ([`Engine::limits_changed`]); those events are stored and announced like others.
    pub async fn replace_rules(
        &self,
        rules: AlertRules,
        now: UtcMillis,
    ) -> Result<Vec<AlertEvent>, IngestError> {
        let mut st = self.state.lock().await;
        let stored = self.swap_rules_locked(&mut st, rules, now).await?;
        drop(st);
        if !stored.is_empty() {
            if let Some(w) = &self.wake {
                w.notify_one();
            }
        }
        Ok(stored)
    }

    async fn swap_rules_locked(
        &self,
        st: &mut State,
        rules: AlertRules,
        now: UtcMillis,
    ) -> Result<Vec<AlertEvent>, IngestError> {
        let events = st.engine.limits_changed(&rules, now);
        st.rules = rules;
        // The next snapshot records the new rules (see [`fingerprint`]).
        st.unsnapshotted += 1;
        let mut stored = Vec::new();
        for e in events {
            if self.store_event(st, &e).await? {
                stored.push(e);
            }
        }
        Ok(stored)
    }

    /// Keep `pending` (or none) to apply once the store's clock reaches its effective time: it
    /// is checked before every reading is evaluated and by [`Ingest::apply_due`].
    pub async fn set_pending_rules(&self, pending: Option<PendingRules>) {
        self.state.lock().await.pending = pending;
    }

    /// Apply the pending version if its effective time has come (by the store's clock): it
    /// becomes the stored version in force (one transaction with its security event), then the
    /// rules in force, between two readings. Returns the last version applied this way, and when.
    pub async fn apply_due(&self) -> Result<Option<(u32, UtcMillis)>, IngestError> {
        let mut st = self.state.lock().await;
        let events = self.apply_due_locked(&mut st).await?;
        let promoted = st.promoted;
        drop(st);
        if !events.is_empty() {
            if let Some(w) = &self.wake {
                w.notify_one();
            }
        }
        Ok(promoted)
    }

    async fn apply_due_locked(&self, st: &mut State) -> Result<Vec<AlertEvent>, IngestError> {
        let now = self.store.clock().now();
        if st.pending.as_ref().is_none_or(|p| p.effective > now) {
            return Ok(Vec::new());
        }
        let Some(p) = st.pending.take() else {
            return Ok(Vec::new());
        };
        match self
            .store
            .set_alert_limits(p.version, p.resource.clone(), now)
            .await
        {
            Ok(()) => {}
            // A newer version is in force already: this one is done with.
            Err(StoreError::Invalid(e)) => {
                warn!(
                    version = p.version,
                    "A pending alert limits version was not applied: {e}"
                );
                return Ok(Vec::new());
            }
            Err(e) => {
                st.pending = Some(p);
                return Err(e.into());
            }
        }
        info!(
            version = p.version,
            "Clinic alert limits applied: their effective time has come."
        );
        st.promoted = Some((p.version, now));
        self.swap_rules_locked(st, p.rules, now).await
    }

    /// The rules in force.
    pub async fn rules(&self) -> AlertRules {
        self.state.lock().await.rules.clone()
    }

    /// When `device`'s latest reading was measured, as far as ingest has seen.
    pub async fn last_reading(&self, device: &DeviceKey) -> Option<UtcMillis> {
        self.state.lock().await.last_reading.get(device).copied()
    }

    /// Check the schedules (missed measurements) at `now` and store the events it gives.
    /// `status` is by the schedule's device name.
    pub async fn tick(
        &self,
        now: UtcMillis,
        status: &std::collections::BTreeMap<String, crate::alerts::DeviceStatus>,
        adapter_down: bool,
    ) -> Result<Vec<AlertEvent>, IngestError> {
        let mut st = self.state.lock().await;
        let rules = std::mem::take(&mut st.rules);
        let events = st.engine.tick(&rules, now, status, adapter_down);
        st.rules = rules;
        let mut stored = Vec::new();
        for e in events {
            if self.store_event(&st, &e).await? {
                stored.push(e);
            }
        }
        drop(st);
        if !stored.is_empty() {
            if let Some(w) = &self.wake {
                w.notify_one();
            }
        }
        Ok(stored)
    }

    /// Append readings of one device (and its cursor) durably, then evaluate the new ones.
    pub async fn append(
        &self,
        device: &DeviceKey,
        items: Vec<NewReading>,
        cursor: Option<(String, i64)>,
    ) -> Result<IngestOutcome, IngestError> {
        // Held across the append so that ids reach the engine in order.
        let mut st = self.state.lock().await;
        // A version whose time has come is in force before these readings are evaluated.
        let mut alerts = self.apply_due_locked(&mut st).await?;
        let readings: Vec<(Reading, UtcMillis, bool)> = items
            .iter()
            .map(|i| (i.reading.clone(), i.received_at, i.summary.is_some()))
            .collect();
        // The state so far covers every reading before these, its events stored: it rides along in
        // this append's transaction when one is due.
        let append = if st.unsnapshotted >= self.snapshot_every {
            let snap = st.snapshot(&self.fingerprint)?;
            let out = self
                .store
                .append_with_snapshot(device, items, cursor, snap)
                .await?;
            st.unsnapshotted = 0;
            out
        } else {
            self.store.append(device, items, cursor).await?
        };
        for (id, (reading, received_at, summary)) in append.ids.iter().zip(readings) {
            alerts.extend(
                self.evaluate(&mut st, *id, device, &reading, received_at, summary)
                    .await?,
            );
        }
        drop(st);
        if append.ids.len() > append.duplicates || !alerts.is_empty() {
            if let Some(w) = &self.wake {
                w.notify_one();
            }
        }
        Ok(IngestOutcome { append, alerts })
    }

    /// The time a reading was measured, on the hub's UTC timeline.
    fn measured_at(&self, reading: &Reading, received_at: UtcMillis) -> UtcMillis {
        match reading.device_time {
            Some(t) => self.cfg.zone.resolve(t).utc,
            None => received_at,
        }
    }

    async fn identifier(
        &self,
        st: &mut State,
        device: &DeviceKey,
        reading: &Reading,
        received_at: UtcMillis,
    ) -> Option<String> {
        if !st.devices.contains_key(&device.0) {
            if let Ok(devices) = self.store.devices().await {
                for d in devices {
                    let info = self
                        .store
                        .device_info(&d.key)
                        .await
                        .ok()
                        .flatten()
                        .unwrap_or_default();
                    let identity = fhir::device_info::DeviceIdentity {
                        key: &d.key.0,
                        address: &d.record.address,
                        name: d.record.name.as_deref(),
                        serial: d.record.serial.as_deref(),
                        profile: &d.record.profile,
                    };
                    st.devices.insert(
                        d.key.0.clone(),
                        fhir::device_info::phd_device_info(
                            identity,
                            info,
                            self.cfg.utc_offset_minutes,
                        ),
                    );
                }
            }
        }
        let dev = st.devices.get(&device.0)?;
        fhir::reading_identifier(dev, &self.cfg.patient_id, reading, received_at)
            .ok()
            .map(|i| i.value())
    }

    /// Assign held reading `id` (another user's reading on a multi-user device) to the patient:
    /// moved into the readings and the outbox in one store transaction, then through the alert
    /// rules like any other reading. `None`: no held reading has that id.
    pub async fn assign_held(
        &self,
        id: i64,
    ) -> Result<Option<(i64, Vec<AlertEvent>)>, IngestError> {
        let held = self
            .store
            .held(usize::MAX)
            .await?
            .into_iter()
            .find(|h| h.id == id);
        let Some(h) = held else {
            return Ok(None);
        };
        let mut st = self.state.lock().await;
        let mut alerts = self.apply_due_locked(&mut st).await?;
        let rid = self.store.assign_held(id).await?;
        alerts.extend(
            self.evaluate(&mut st, rid, &h.device, &h.reading, h.received_at, false)
                .await?,
        );
        drop(st);
        if let Some(w) = &self.wake {
            w.notify_one();
        }
        Ok(Some((rid, alerts)))
    }

    /// Evaluate one stored reading (if not evaluated before); store and announce its new events.
    async fn evaluate(
        &self,
        st: &mut State,
        id: i64,
        device: &DeviceKey,
        reading: &Reading,
        received_at: UtcMillis,
        summary: bool,
    ) -> Result<Vec<AlertEvent>, IngestError> {
        if id <= st.last_id {
            return Ok(Vec::new());
        }
        st.last_id = id;
        st.unsnapshotted += 1;
        let at = self.measured_at(reading, received_at);
        st.note_reading(device, at);
        if summary && self.streams_raw {
            return Ok(Vec::new());
        }
        let reference = id.to_string();
        let rules = std::mem::take(&mut st.rules);
        let mut events = st.engine.observe(&rules, at, reading, &reference);
        st.rules = rules;
        // Evaluated at its own measurement time; an event this reading caused says how late it
        // reached the hub, so nobody takes last Tuesday's value for one measured now.
        if let Some(late) = crate::alerts::Lateness::of(at, received_at) {
            for e in events
                .iter_mut()
                .filter(|e| e.readings.contains(&reference))
            {
                e.late = Some(late.clone());
            }
        }
        if !events.is_empty() || st.engine.is_open(reading.kind) {
            if let Some(ident) = self.identifier(st, device, reading, received_at).await {
                st.identifiers.insert(id, ident);
            }
        }
        let mut stored = Vec::new();
        for e in events {
            if self.store_event(st, &e).await? {
                stored.push(e);
            }
        }
        // Its events stored: keep only what a later event may still name.
        st.prune_identifiers();
        Ok(stored)
    }

    /// Store one event; `true` if it was new (and so announced).
    async fn store_event(&self, st: &State, e: &AlertEvent) -> Result<bool, IngestError> {
        let related: Vec<i64> = e.readings.iter().filter_map(|r| r.parse().ok()).collect();
        let observations: Vec<serde_json::Value> = related
            .iter()
            .filter_map(|id| st.identifiers.get(id))
            .map(|v| json!({ "system": codes::OBS_IDENTIFIER_SYSTEM, "value": v }))
            .collect();
        let payload = json!({ "alert": e, "observations": observations });
        let key = format!(
            "alert/{}/{}",
            e.episode,
            serde_json::to_value(e.transition)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        );
        let (alert_id, duplicate) = self.store.append_alert(payload, &key, related).await?;
        if duplicate {
            return Ok(false);
        }
        info!(alert = alert_id, severity = ?e.severity, transition = ?e.transition, "Alert stored.");
        if let Some(tx) = &self.hook {
            if tx.try_send(e.clone()).is_err() {
                let _ = self
                    .store
                    .append_event(
                        "alert_hook_overflow",
                        "warning",
                        format!("alert {alert_id} not handed to the local hook: queue full"),
                    )
                    .await;
            }
        }
        Ok(true)
    }
}

async fn hook_task(
    store: Store,
    command: String,
    timeout: Duration,
    mut rx: mpsc::Receiver<AlertEvent>,
) {
    while let Some(event) = rx.recv().await {
        let input = serde_json::to_vec(&event).unwrap_or_default();
        if let Err(e) = run_hook(&command, &input, timeout).await {
            warn!(error = %e, "Local alert hook failed.");
            let _ = store
                .append_event("alert_hook_failed", "warning", e.to_string())
                .await;
        }
    }
}
