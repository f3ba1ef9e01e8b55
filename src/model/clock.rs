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

/// Why text is not an RFC 3339 date-time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not an RFC 3339 date-time ({why}); write e.g. 2024-03-01T08:00:00Z or 2024-03-01T09:00:00+01:00")]
pub struct Rfc3339Error {
    pub text: String,
    /// What is wrong with it, as `jiff` says.
    pub why: String,
}

impl UtcMillis {
    /// Parse an RFC 3339 timestamp (`2024-03-01T08:00:00Z`, `2024-03-01T09:00:00.250+01:00`) with
    /// `jiff`: an offset or `Z` is required; fractions beyond milliseconds are truncated (toward
    /// the past); a leap second is read as the last second of its minute. jiff reads the RFC 9557
    /// superset of RFC 3339, so a trailing `[zone]` annotation is accepted too.
    pub fn parse_rfc3339(text: &str) -> Result<UtcMillis, Rfc3339Error> {
        let t: jiff::Timestamp = text.parse().map_err(|e: jiff::Error| Rfc3339Error {
            text: text.to_string(),
            why: e.to_string(),
        })?;
        // jiff's range (about ±9999 years) keeps nanoseconds / 10^6 well inside i64.
        let ms = t.as_nanosecond().div_euclid(1_000_000);
        Ok(UtcMillis(i64::try_from(ms).unwrap_or(i64::MAX)))
    }

    /// `2024-03-01T08:00:00Z`, or with `.fff` when there are milliseconds; a time outside years
    /// 1582..=9999 is written as its milliseconds (`-12244089600001ms`).
    pub fn to_rfc3339(self) -> String {
        let secs = self.0.div_euclid(1000);
        let ms = self.0.rem_euclid(1000);
        match super::LocalDateTime::from_epoch_seconds(secs) {
            Ok(t) if ms == 0 => format!("{t}Z"),
            Ok(t) => format!("{t}.{ms:03}Z"),
            Err(_) => format!("{}ms", self.0),
        }
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
    fn rfc3339_parses_and_formats() {
        let t = UtcMillis::parse_rfc3339("2024-03-01T08:00:00Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2024-03-01T08:00:00Z");
        let u = UtcMillis::parse_rfc3339("2024-03-01T09:00:00.25+01:00").unwrap();
        assert_eq!(u.0 - t.0, 250);
        assert_eq!(u.to_rfc3339(), "2024-03-01T08:00:00.250Z");
        assert_eq!(
            UtcMillis::parse_rfc3339("1970-01-01T00:00:00Z").unwrap(),
            UtcMillis(0)
        );
        // Beyond milliseconds: truncated toward the past, also before 1970.
        assert_eq!(
            UtcMillis::parse_rfc3339("1970-01-01T00:00:00.0019Z").unwrap(),
            UtcMillis(1)
        );
        assert_eq!(
            UtcMillis::parse_rfc3339("1969-12-31T23:59:59.9995Z").unwrap(),
            UtcMillis(-1)
        );
        // A leap second is the last second of its minute.
        assert_eq!(
            UtcMillis::parse_rfc3339("2016-12-31T23:59:60Z").unwrap(),
            UtcMillis::parse_rfc3339("2016-12-31T23:59:59Z").unwrap()
        );
        assert_eq!(UtcMillis(-1).to_rfc3339(), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            UtcMillis(-12_244_089_600_000).to_rfc3339(),
            "1582-01-01T00:00:00Z"
        );
        assert_eq!(
            UtcMillis(-12_244_089_600_001).to_rfc3339(),
            "-12244089600001ms"
        );
        assert_eq!(
            UtcMillis(253_402_300_799_999).to_rfc3339(),
            "9999-12-31T23:59:59.999Z"
        );
        for bad in [
            "2024-03-01 08:00:00",
            "2024-03-01T08:00:00",
            "2024-02-30T00:00:00Z",
            "2024-03-01T08:00:00+1",
            "2024-03-01T24:00:00Z",
            "x",
            "",
            "2024-03-01T08:00:00Zjunk",
        ] {
            let e = UtcMillis::parse_rfc3339(bad).unwrap_err();
            assert!(
                e.to_string().contains("write e.g. 2024-03-01T08:00:00Z"),
                "{e}"
            );
        }
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
