//! Probing the learned bundle size upward (issue 15).
//!
//! A server's refusals teach the uplink a smaller bundle size ([`super::sync::MAX_ENTRIES_STATE`]);
//! a limit that was transient, or that the clinic raised, would otherwise keep the hub at that size
//! for ever. This module owns the way back up:
//!
//! - After [`PROBE_AFTER`] bundles in a row accepted whole at the learned size (counted in memory),
//!   the next batch is built at double the size, never above `[uplink] max_entries`.
//! - Accepted whole: the larger size is kept (persisted per server) with an
//!   `uplink_bundle_size_raised` event, and the wait goes back to [`PROBE_AFTER`]. Once the size
//!   reaches the configured batch, the learned limit is gone (the configured maximum again).
//! - Refused: the bundle is bisected as any refused bundle (nothing is lost or rejected for it; the
//!   entries are conditional creates), the size goes back to what it was, and the wait before the
//!   next probe doubles, up to [`PROBE_WAIT_MAX`] bundles; the wait is persisted per server
//!   ([`PROBE_WAIT_STATE`]), so a restart does not probe a fixed limit again straight away.
//! - Neither (a failure of another kind, or too few entries waiting to fill the larger bundle): the
//!   size goes back and the probe is tried again with the next batch.

use super::sync::{Uplink, MAX_ENTRIES_STATE};
use super::UplinkError;
use tracing::info;

/// Bundles accepted whole at the learned size before the size is probed upward.
pub const PROBE_AFTER: u32 = 20;
/// The longest wait between probes, in accepted bundles (after refused probes doubled it).
pub const PROBE_WAIT_MAX: u32 = PROBE_AFTER * 32;
/// The `uplink_state` name (per server) of the current wait between probes.
pub const PROBE_WAIT_STATE: &str = "max_entries_probe_wait";

/// The probe's state in the uplink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Grow {
    /// Bundles accepted whole at the learned size since the last probe.
    pub accepted: u32,
    /// Bundles to wait before the next probe; read from the store once.
    pub wait: Option<u32>,
    /// The learned size while a probe is under way.
    pub probing: Option<usize>,
}

impl Uplink {
    async fn probe_wait(&mut self) -> Result<u32, UplinkError> {
        if let Some(w) = self.grow.wait {
            return Ok(w);
        }
        let w = self
            .store
            .uplink_state(&self.destination, PROBE_WAIT_STATE)
            .await?
            .and_then(|v| v.parse::<u32>().ok())
            .map_or(PROBE_AFTER, |w| w.clamp(PROBE_AFTER, PROBE_WAIT_MAX));
        self.grow.wait = Some(w);
        Ok(w)
    }

    async fn set_probe_wait(&mut self, w: u32) -> Result<(), UplinkError> {
        if self.grow.wait != Some(w) {
            self.store
                .set_uplink_state(&self.destination, PROBE_WAIT_STATE, &w.to_string())
                .await?;
        }
        self.grow.wait = Some(w);
        Ok(())
    }

    /// Before a batch: start a probe when the learned size has held long enough.
    pub(super) async fn begin_probe(&mut self) -> Result<(), UplinkError> {
        let cur = self.max_entries().await?;
        let ceiling = self.cfg.max_entries;
        if cur >= ceiling || self.grow.accepted < self.probe_wait().await? {
            return Ok(());
        }
        self.grow.probing = Some(cur);
        self.max_entries = Some(cur.saturating_mul(2).min(ceiling));
        tracing::debug!(from = cur, "Probing a larger bundle size.");
        Ok(())
    }

    /// After a batch (`ok`: it was delivered): judge the probe, or count a bundle accepted whole.
    /// `refused` and `accepted` are the largest bundle sizes refused and accepted in the pass.
    pub(super) async fn end_probe(
        &mut self,
        ok: bool,
        refused: usize,
        accepted: usize,
    ) -> Result<(), UplinkError> {
        let cur = self.max_entries().await?;
        let Some(prev) = self.grow.probing.take() else {
            if ok && refused == 0 && accepted >= cur && cur < self.cfg.max_entries {
                self.grow.accepted = self.grow.accepted.saturating_add(1);
            }
            return Ok(());
        };
        if ok && refused == 0 && accepted > prev {
            // The server took more than it used to: keep it.
            let full = self.cfg.batch_size.min(self.cfg.max_entries);
            let new = if accepted >= full {
                self.cfg.max_entries
            } else {
                accepted
            };
            self.max_entries = Some(new);
            self.store
                .set_uplink_state(&self.destination, MAX_ENTRIES_STATE, &new.to_string())
                .await?;
            self.grow.accepted = 0;
            self.set_probe_wait(PROBE_AFTER).await?;
            info!(
                entries = new,
                "The clinic server accepts larger transactions again; bundles grow."
            );
            self.store
                .append_event(
                    "uplink_bundle_size_raised",
                    "info",
                    format!("the server accepted a transaction of {accepted} entries; bundles now hold up to {new}"),
                )
                .await?;
        } else if refused > prev {
            // Refused: back to the learned size (or below, if the pass learned less), and wait
            // longer before the next try.
            self.max_entries = Some(cur.min(prev));
            self.grow.accepted = 0;
            let w = self.probe_wait().await?;
            self.set_probe_wait(w.saturating_mul(2).min(PROBE_WAIT_MAX))
                .await?;
        } else {
            // Not a test of the larger size: try again with the next batch.
            self.max_entries = Some(cur.min(prev));
        }
        Ok(())
    }
}
