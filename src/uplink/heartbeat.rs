//! The heartbeat: the hub's status to the clinic on its interval, which holds across restarts (the
//! time of the last attempt is kept in the store's `uplink_state`).

use super::sync::Uplink;
use super::{ClockSync, UplinkError};
use crate::fhir::{self, BundleContext, HubStatus};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// The `uplink_state` name under which the time of the last heartbeat attempt is kept (ms since
/// the epoch, per destination): the interval holds across restarts.
pub const LAST_HEARTBEAT: &str = "last_heartbeat";

/// The longest apt's count of pending security updates may take (in the background).
const SECURITY_COUNT_TIMEOUT: Duration = Duration::from_secs(120);

impl Uplink {
    /// Send the heartbeat: PhgDevice + hub-status Observations.
    pub async fn heartbeat(&mut self) -> Result<(), UplinkError> {
        let clock = self.time_sync.clock_sync().await;
        self.heartbeat_with(clock).await
    }

    /// [`Uplink::heartbeat`] with the clock state already asked for this loop. The time of the
    /// attempt is persisted before sending, so a restart keeps the interval.
    pub(super) async fn heartbeat_with(&mut self, clock: ClockSync) -> Result<(), UplinkError> {
        if clock != ClockSync::Synchronised {
            return Err(UplinkError::ClockNotSynchronised);
        }
        self.hub.ntp = self.time_sync.claims_ntp(clock).await;
        self.check_certificate().await?;
        self.load_devices().await?;
        let st = self.store.stats().await?;
        let now = self.clock.now();
        let mut devices = Vec::new();
        for d in self.store.devices().await? {
            let info = self.store.device_info(&d.key).await?.unwrap_or_default();
            if let Some(p) = self.devices.get(&d.key.0) {
                if let Ok(ident) = p.ident() {
                    devices.push(fhir::bundle::DeviceStatus {
                        ident,
                        last_seen_secs: info
                            .last_seen
                            .map(|t| (now.as_millis() - t.as_millis()).div_euclid(1000)),
                        battery_percent: info.battery_percent,
                    });
                }
            }
        }
        let dir = self.store.path().parent().map(|p| p.to_path_buf());
        let free = match dir {
            Some(d) => tokio::task::spawn_blocking(move || free_disk(&d))
                .await
                .ok()
                .flatten(),
            None => None,
        };
        let updates = fhir::heartbeat::UpdateStatus {
            security_pending: security_pending_cached(),
            last_outcome: crate::tech::update::last_outcome(&crate::tech::update::update_dir()),
        };
        let status = HubStatus {
            updates,
            at: now,
            backlog: st.pending + st.in_flight,
            free_disk_bytes: free,
            cert_days_left: self.status().cert_days_left,
            devices,
        };
        let (hub_ref, refs) = self.refs().await?;
        let ctx = BundleContext {
            patient_id: &self.cfg.patient_id,
            hub: &self.hub,
            hub_ref: hub_ref.as_deref(),
            device_refs: &refs,
            nonce: self.random_u64(),
            more_may_follow: false,
        };
        let built = fhir::heartbeat_bundle(&ctx, &status)
            .map_err(|e| UplinkError::Config(e.to_string()))?;
        self.store
            .set_uplink_state(
                &self.destination,
                LAST_HEARTBEAT,
                &now.as_millis().to_string(),
            )
            .await?;
        match self.post_split(&built).await {
            Ok(()) => {
                info!(backlog = status.backlog, "Heartbeat sent.");
                self.mark_healthy();
                Ok(())
            }
            Err(e) => {
                self.record_failure(&e).await;
                Err(e)
            }
        }
    }

    /// Send a bundle in parts the server takes: cut to the learned size, and cut again (halved)
    /// when the server refuses a part as too large; every part is a set of conditional creates,
    /// so a part sent again is harmless. Learns the size that went through.
    pub(super) async fn post_split(
        &mut self,
        built: &fhir::BuiltBundle,
    ) -> Result<(), UplinkError> {
        let max = self.max_entries().await?;
        let mut queue: std::collections::VecDeque<fhir::BuiltBundle> =
            fhir::bundle::split(built, max).into();
        let (mut refused, mut accepted) = (0usize, 0usize);
        while let Some(part) = queue.pop_front() {
            let n = part.entries.len();
            match self.post(&part).await {
                Ok(out) => {
                    self.remember_refs(&part, &out).await?;
                    accepted = accepted.max(n);
                }
                Err(e) if super::send::is_poison(&e) && n > 1 => {
                    let parts = fhir::bundle::split(&part, (n / 2).max(1));
                    if parts.iter().any(|p| p.entries.len() >= n) {
                        return Err(e);
                    }
                    refused = refused.max(n);
                    for p in parts.into_iter().rev() {
                        queue.push_front(p);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        if refused > accepted && accepted > 0 {
            self.learn_max_entries(accepted).await?;
        }
        Ok(())
    }

    /// When the next heartbeat is due: one interval after the last one sent by any run of the
    /// hub (persisted), so restarts (a crash loop) do not send one each.
    pub(super) async fn first_heartbeat(&self, interval: Duration) -> Instant {
        let last = match self
            .store
            .uplink_state(&self.destination, LAST_HEARTBEAT)
            .await
        {
            Ok(v) => v.and_then(|v| v.parse::<i64>().ok()),
            Err(e) => {
                warn!(error = %e, "Could not read the last heartbeat time; sending one now.");
                None
            }
        };
        let Some(last) = last else {
            return Instant::now();
        };
        let since = self.clock.now().as_millis().saturating_sub(last);
        // A clock that went back (last in the future) waits one interval, never longer.
        let wait = match u64::try_from(since) {
            Ok(ms) => interval.saturating_sub(Duration::from_millis(ms)),
            Err(_) => interval,
        };
        Instant::now() + wait
    }
}

/// apt's count of pending security updates as last learnt, never waited for: from ten minutes
/// into a run, a stale (or never asked) count starts one background `apt-get -s upgrade` (at most one at a time, at most once an
/// hour; apt's lists change once a day) and this heartbeat carries what was known (`None` at
/// first: unknown). apt can take tens of seconds on a busy Pi; uploads must not wait for it.
fn security_pending_cached() -> Option<u32> {
    struct Known {
        first: Option<Instant>,
        asked: Option<Instant>,
        count: Option<u32>,
        running: bool,
    }
    static KNOWN: std::sync::Mutex<Known> = std::sync::Mutex::new(Known {
        first: None,
        asked: None,
        count: None,
        running: false,
    });
    const EVERY: Duration = Duration::from_secs(3600);
    const FIRST_AFTER: Duration = Duration::from_secs(600);
    let Ok(mut k) = KNOWN.lock() else {
        return None;
    };
    // Not in a run's first minutes: a hub restarting (or a test's short-lived daemon) does not
    // start an apt run each time.
    let first = *k.first.get_or_insert_with(Instant::now);
    let stale = first.elapsed() >= FIRST_AFTER && k.asked.is_none_or(|t| t.elapsed() >= EVERY);
    if stale && !k.running {
        k.running = true;
        k.asked = Some(Instant::now());
        let spawned = std::thread::Builder::new()
            .name("apt-security-count".into())
            .spawn(|| {
                let n = crate::tech::update::security_pending(SECURITY_COUNT_TIMEOUT);
                if let Ok(mut k) = KNOWN.lock() {
                    k.count = n;
                    k.running = false;
                }
            });
        if spawned.is_err() {
            k.running = false;
        }
    }
    k.count
}

/// Bytes free to unprivileged users on the file system holding `dir` (statvfs, as `df` shows).
pub fn free_disk(dir: &std::path::Path) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}
