//! The home's time zone: device wall clocks (GATT Date Time, no zone, no DST) mapped to UTC with
//! the zone's rules at each reading's own instant, and the hub's UTC now mapped to the local time
//! it writes into device clocks. `jiff` carries the IANA rules (the system tzdb on the hub;
//! the tests build jiff with its bundled copy so they never depend on the machine).
//!
//! **Times that do not exist or exist twice.** When clocks spring forward, a wall-clock time in
//! the skipped hour does not exist; when they fall back, a time in the repeated hour exists
//! twice. The rule is jiff's "compatible" one (RFC 5545, as `java.time` and Temporal do): a
//! nonexistent time is read with the offset *before* the change (02:30 in Berlin on 29 March 2026
//! is 01:30 UTC, as if the device had not yet sprung forward), an ambiguous one as its *first*
//! occurrence (the earlier instant). Either way the result is marked [`TimeQuality::Nonexistent`]
//! or [`TimeQuality::Ambiguous`]: never silently right.

use super::{LocalDateTime, UtcMillis};
use jiff::tz::{AmbiguousOffset, TimeZone};
use std::fmt;

/// The hub's zone. `Default` is UTC (tests, and a config that names none resolves the system's).
#[derive(Clone, PartialEq, Eq)]
pub struct Zone {
    name: String,
    tz: TimeZone,
}

impl fmt::Debug for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Zone({})", self.name)
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl Default for Zone {
    fn default() -> Self {
        Zone::utc()
    }
}

/// A zone name that the tz database does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{name}` is not a time zone the tz database knows ({detail}); use an IANA name such as `Europe/Berlin` or `America/New_York` (`timedatectl list-timezones` lists them)")]
pub struct ZoneError {
    pub name: String,
    pub detail: String,
}

/// How sure the UTC instant of a device wall-clock time is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeQuality {
    /// The wall-clock time maps to exactly one instant.
    Exact,
    /// The time falls in a spring-forward gap: read with the offset before the change.
    Nonexistent,
    /// The time falls in a fall-back fold: read as its first occurrence.
    Ambiguous,
}

impl TimeQuality {
    pub fn uncertain(self) -> bool {
        self != TimeQuality::Exact
    }
}

/// A device wall-clock time on the UTC timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    pub utc: UtcMillis,
    pub quality: TimeQuality,
}

impl Zone {
    pub fn utc() -> Zone {
        Zone {
            name: "UTC".into(),
            tz: TimeZone::UTC,
        }
    }

    /// An IANA zone by name (`Europe/Berlin`).
    pub fn named(name: &str) -> Result<Zone, ZoneError> {
        TimeZone::get(name)
            .map(|tz| Zone {
                name: name.to_string(),
                tz,
            })
            .map_err(|e| ZoneError {
                name: name.to_string(),
                detail: e.to_string(),
            })
    }

    /// The system's zone (`/etc/localtime`, or `TZ`); UTC when it cannot be read.
    pub fn system() -> Zone {
        let tz = TimeZone::system();
        let name = tz.iana_name().unwrap_or("system").to_string();
        Zone { name, tz }
    }

    /// A fixed offset east of UTC without daylight saving (the deprecated `utc_offset_minutes`).
    pub fn fixed(minutes: i32) -> Zone {
        let offset = jiff::tz::Offset::from_seconds(minutes.saturating_mul(60))
            .unwrap_or(jiff::tz::Offset::UTC);
        Zone {
            name: format!("UTC{offset}"),
            tz: TimeZone::fixed(offset),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The UTC instant of wall-clock time `t` in this zone, by the rule in the module docs.
    pub fn resolve(&self, t: LocalDateTime) -> Resolved {
        let amb = self.tz.to_ambiguous_timestamp(t.to_jiff());
        let quality = match amb.offset() {
            AmbiguousOffset::Unambiguous { .. } => TimeQuality::Exact,
            AmbiguousOffset::Gap { .. } => TimeQuality::Nonexistent,
            AmbiguousOffset::Fold { .. } => TimeQuality::Ambiguous,
        };
        let utc = match amb.compatible() {
            Ok(ts) => UtcMillis(ts.as_millisecond()),
            // Outside jiff's range (years 1582..=9999 are inside): as UTC.
            Err(_) => UtcMillis(t.to_epoch_seconds().saturating_mul(1000)),
        };
        Resolved { utc, quality }
    }

    fn timestamp(utc: UtcMillis) -> jiff::Timestamp {
        jiff::Timestamp::from_millisecond(utc.as_millis()).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    /// Flag `reading` [`super::Flag::DeviceTimeUncertain`] when its device time does not exist
    /// or exists twice in this zone.
    pub fn mark_time_quality(&self, reading: &mut super::Reading) {
        if let Some(t) = reading.device_time {
            if self.resolve(t).quality.uncertain() {
                reading.flags.insert(super::Flag::DeviceTimeUncertain);
            }
        }
    }

    /// The zone's offset from UTC at `utc`, minutes east.
    pub fn offset_minutes_at(&self, utc: UtcMillis) -> i32 {
        self.tz.to_offset(Self::timestamp(utc)).seconds() / 60
    }

    /// Whether daylight saving is in force at `utc`.
    pub fn is_dst_at(&self, utc: UtcMillis) -> bool {
        self.tz.to_offset_info(Self::timestamp(utc)).dst().is_dst()
    }

    /// The wall-clock time at `utc` in this zone (whole seconds).
    pub fn local_at(&self, utc: UtcMillis) -> Option<LocalDateTime> {
        let secs = utc.as_millis().div_euclid(1000)
            + i64::from(self.offset_minutes_at(utc)) * 60
            + i64::from(self.tz.to_offset(Self::timestamp(utc)).seconds() % 60);
        LocalDateTime::from_epoch_seconds(secs).ok()
    }

    /// The GATT Time Zone (15-minute units, standard time) and DST Offset (0, or 4 = +1 h …)
    /// fields for `utc` (Local Time Information, CGM Session Start Time).
    pub fn gatt_fields(&self, utc: UtcMillis) -> (i8, u8) {
        let total = self.offset_minutes_at(utc);
        let dst_min = if self.is_dst_at(utc) {
            // The DST amount: this offset minus the standard one, found at the nearest month
            // (back, then forward) outside daylight saving. Half a year away is not enough: just
            // after a spring change, half a year on (and back) is still summer time.
            const MONTH: i64 = 30 * 24 * 3_600_000;
            (1..=12)
                .flat_map(|k| [-k, k])
                .map(|k| UtcMillis(utc.as_millis() + k * MONTH))
                .find(|t| !self.is_dst_at(*t))
                .map_or(0, |t| (total - self.offset_minutes_at(t)).max(0))
        } else {
            0
        };
        let zone = i8::try_from((total - dst_min) / 15).unwrap_or(-128);
        let dst = match dst_min {
            0 => 0,
            30 => 2,
            60 => 4,
            120 => 8,
            _ => 255,
        };
        (zone, dst)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn lt(s: &str) -> LocalDateTime {
        s.parse().unwrap()
    }
    fn utc(s: &str) -> UtcMillis {
        UtcMillis::parse_rfc3339(s).unwrap()
    }

    /// Europe/Berlin 2026: spring forward 29 March 02:00 → 03:00; fall back 25 October
    /// 03:00 → 02:00.
    #[test]
    fn berlin_2026_both_changes() {
        let z = Zone::named("Europe/Berlin").unwrap();
        let r = z.resolve(lt("2026-03-29T01:59:00"));
        assert_eq!(
            (r.utc, r.quality),
            (utc("2026-03-29T00:59:00Z"), TimeQuality::Exact)
        );
        let r = z.resolve(lt("2026-03-29T02:30:00"));
        assert_eq!(
            (r.utc, r.quality),
            (utc("2026-03-29T01:30:00Z"), TimeQuality::Nonexistent)
        );
        let r = z.resolve(lt("2026-03-29T03:00:00"));
        assert_eq!(
            (r.utc, r.quality),
            (utc("2026-03-29T01:00:00Z"), TimeQuality::Exact)
        );
        let r = z.resolve(lt("2026-10-25T02:30:00"));
        assert_eq!(
            (r.utc, r.quality),
            (utc("2026-10-25T00:30:00Z"), TimeQuality::Ambiguous)
        );
        let r = z.resolve(lt("2026-10-25T03:00:00"));
        assert_eq!(
            (r.utc, r.quality),
            (utc("2026-10-25T02:00:00Z"), TimeQuality::Exact)
        );
        // Summer and winter readings each with their own offset (not one fixed offset).
        assert_eq!(
            z.resolve(lt("2026-07-01T12:00:00")).utc,
            utc("2026-07-01T10:00:00Z")
        );
        assert_eq!(
            z.resolve(lt("2026-12-01T12:00:00")).utc,
            utc("2026-12-01T11:00:00Z")
        );
        // The clock the hub writes on either side of each change.
        assert_eq!(
            z.local_at(utc("2026-03-29T00:59:00Z")),
            Some(lt("2026-03-29T01:59:00"))
        );
        assert_eq!(
            z.local_at(utc("2026-03-29T01:00:00Z")),
            Some(lt("2026-03-29T03:00:00"))
        );
        assert_eq!(
            z.local_at(utc("2026-10-25T00:59:00Z")),
            Some(lt("2026-10-25T02:59:00"))
        );
        assert_eq!(
            z.local_at(utc("2026-10-25T01:00:00Z")),
            Some(lt("2026-10-25T02:00:00"))
        );
        assert_eq!(z.gatt_fields(utc("2026-07-01T10:00:00Z")), (4, 4));
        assert_eq!(z.gatt_fields(utc("2026-12-01T10:00:00Z")), (4, 0));
    }

    /// America/New_York 2026: spring forward 8 March 02:00 → 03:00; fall back 1 November
    /// 02:00 → 01:00.
    #[test]
    fn new_york_2026_both_changes() {
        let z = Zone::named("America/New_York").unwrap();
        let r = z.resolve(lt("2026-03-08T02:15:00"));
        assert_eq!(
            (r.utc, r.quality),
            (utc("2026-03-08T07:15:00Z"), TimeQuality::Nonexistent)
        );
        let r = z.resolve(lt("2026-03-08T03:15:00"));
        assert_eq!(
            (r.utc, r.quality),
            (utc("2026-03-08T07:15:00Z"), TimeQuality::Exact)
        );
        let r = z.resolve(lt("2026-11-01T01:30:00"));
        assert_eq!(
            (r.utc, r.quality),
            (utc("2026-11-01T05:30:00Z"), TimeQuality::Ambiguous)
        );
        let r = z.resolve(lt("2026-11-01T02:30:00"));
        assert_eq!(
            (r.utc, r.quality),
            (utc("2026-11-01T07:30:00Z"), TimeQuality::Exact)
        );
        assert_eq!(
            z.local_at(utc("2026-03-08T06:59:00Z")),
            Some(lt("2026-03-08T01:59:00"))
        );
        assert_eq!(
            z.local_at(utc("2026-03-08T07:00:00Z")),
            Some(lt("2026-03-08T03:00:00"))
        );
        assert_eq!(
            z.local_at(utc("2026-11-01T05:59:00Z")),
            Some(lt("2026-11-01T01:59:00"))
        );
        assert_eq!(
            z.local_at(utc("2026-11-01T06:00:00Z")),
            Some(lt("2026-11-01T01:00:00"))
        );
        assert_eq!(z.gatt_fields(utc("2026-07-01T12:00:00Z")), (-20, 4));
        assert_eq!(z.gatt_fields(utc("2026-12-01T12:00:00Z")), (-20, 0));
    }

    #[test]
    fn readings_at_uncertain_times_are_flagged() {
        use crate::model::{Decimal, Flag, Kind, Reading, Unit, Value};
        let z = Zone::named("Europe/Berlin").unwrap();
        let mut r = Reading::new(
            Kind::Glucose,
            Value::Number(Decimal::new(100, 0)),
            Unit::MgPerDl,
        );
        for (t, flagged) in [
            ("2026-03-29T02:30:00", true),
            ("2026-10-25T02:30:00", true),
            ("2026-10-25T03:30:00", false),
        ] {
            r.flags.clear();
            r.device_time = Some(lt(t));
            z.mark_time_quality(&mut r);
            assert_eq!(r.flags.contains(&Flag::DeviceTimeUncertain), flagged, "{t}");
        }
    }

    #[test]
    fn unknown_zone_names_the_fix() {
        let e = Zone::named("Europe/Atlantis").unwrap_err().to_string();
        assert!(e.contains("Europe/Atlantis") && e.contains("IANA"), "{e}");
    }

    #[test]
    fn fixed_offset_has_no_dst() {
        let z = Zone::fixed(60);
        assert_eq!(
            z.resolve(lt("2026-07-01T12:00:00")).utc,
            utc("2026-07-01T11:00:00Z")
        );
        assert_eq!(
            z.resolve(lt("2026-03-29T02:30:00")).quality,
            TimeQuality::Exact
        );
    }
}
