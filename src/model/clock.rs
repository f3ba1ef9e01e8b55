//! UTC time as the hub's own clock sees it, and the one [`Clock`] seam every component reads it from.
//!
//! Device timestamps are [`super::LocalDateTime`] (the device's wall clock, no zone). The hub's own
//! times — when a reading was received, when an upload may be retried, when acked data may be pruned —
//! are [`UtcMillis`]. Tests move time with [`ManualClock`]; nothing else calls `SystemTime::now()`.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, UTC.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct UtcMillis(pub i64);

impl UtcMillis {
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// This time plus `ms` milliseconds, saturating at the ends of the range.
    pub const fn plus_millis(self, ms: i64) -> UtcMillis {
        UtcMillis(self.0.saturating_add(ms))
    }

    /// This time rounded down to the start of its minute: the "coarse" time the store keeps in plain.
    pub const fn floor_minute(self) -> UtcMillis {
        UtcMillis(self.0.div_euclid(60_000) * 60_000)
    }
}

impl fmt::Display for UtcMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// A source of the current UTC time.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> UtcMillis;
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UtcMillis {
        // A clock before 1970 (an unset RTC-less Pi can boot in 1970, not before) reads as the epoch.
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        UtcMillis(ms)
    }
}

/// A clock that only moves when told to; for tests.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(start: UtcMillis) -> Self {
        ManualClock(AtomicI64::new(start.0))
    }
    pub fn set(&self, t: UtcMillis) {
        self.0.store(t.0, Ordering::SeqCst);
    }
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UtcMillis {
        UtcMillis(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(UtcMillis(1_000));
        assert_eq!(c.now(), UtcMillis(1_000));
        c.advance(500);
        assert_eq!(c.now(), UtcMillis(1_500));
        c.set(UtcMillis(61_234));
        assert_eq!(c.now().floor_minute(), UtcMillis(60_000));
        assert_eq!(UtcMillis(-1).floor_minute(), UtcMillis(-60_000));
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now() > UtcMillis(1_577_836_800_000));
    }
}

/// A long-running task's progress marker for the hub's watchdog: the task calls
/// [`Progress::beat`] each time round its loop; the watchdog reads [`Progress::since_last`]. It
/// runs on the monotonic clock, so a wall-clock step never looks like a stall.
#[derive(Debug, Clone)]
pub struct Progress {
    start: std::time::Instant,
    last_ms: std::sync::Arc<AtomicI64>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

impl Progress {
    pub fn new() -> Progress {
        Progress {
            start: std::time::Instant::now(),
            last_ms: std::sync::Arc::new(AtomicI64::new(0)),
        }
    }
    /// The task made progress (or is idle, waiting as it should).
    pub fn beat(&self) {
        let ms = i64::try_from(self.start.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }
    /// How long since the last beat (since creation if none).
    pub fn since_last(&self) -> std::time::Duration {
        let now = i64::try_from(self.start.elapsed().as_millis()).unwrap_or(i64::MAX);
        let last = self.last_ms.load(Ordering::Relaxed);
        std::time::Duration::from_millis(u64::try_from(now - last).unwrap_or(0))
    }
}
