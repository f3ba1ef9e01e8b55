//! Wall-clock date and time as a device reports it: no time zone, no DST, second resolution.
//!
//! The Bluetooth SIG Date Time field is the device's own wall clock. The hub keeps that value as the
//! device sent it (the FHIR PHD conditional-create identifier is built from it) and maps it to UTC
//! only where it knows the device's clock offset. The calendar (proleptic Gregorian day counts,
//! month lengths, weekdays) is `jiff`'s: [`LocalDateTime`] wraps a [`jiff::civil::DateTime`] and
//! only adds the range this hub accepts (years 1582..=9999, whole seconds) and its own errors.

use jiff::civil::DateTime;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A complete, valid calendar date and time of day (proleptic Gregorian, years 1582..=9999).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LocalDateTime(DateTime);

/// Why a set of calendar fields is not a valid [`LocalDateTime`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// A field is outside its range (month 13, hour 24, 31 April …).
    #[error("{field} {value} is out of range {range}")]
    OutOfRange {
        field: &'static str,
        value: u32,
        range: &'static str,
    },
    /// Text that is not `YYYY-MM-DDTHH:MM:SS`.
    #[error("`{0}` is not a date-time of the form YYYY-MM-DDTHH:MM:SS")]
    Syntax(String),
}

/// 1970-01-01T00:00:00, the origin of [`LocalDateTime::to_epoch_seconds`].
const EPOCH: DateTime = DateTime::constant(1970, 1, 1, 0, 0, 0, 0);

pub const MIN_YEAR: u16 = 1582;
pub const MAX_YEAR: u16 = 9999;

/// The number of days of `month` (1..=12) in `year`; 0 for a month or year jiff cannot represent.
pub fn days_in_month(year: i64, month: u8) -> u8 {
    match (i16::try_from(year), i8::try_from(month)) {
        (Ok(y), Ok(m)) => jiff::civil::Date::new(y, m, 1)
            .map_or(0, |d| u8::try_from(d.days_in_month()).unwrap_or(0)),
        _ => 0,
    }
}

fn year_out_of_range(value: u32) -> TimeError {
    TimeError::OutOfRange {
        field: "year",
        value,
        range: "1582..=9999",
    }
}

impl LocalDateTime {
    pub fn new(
        year: u16,
        month: u8,
        day: u8,
        hour: u8,
        minute: u8,
        second: u8,
    ) -> Result<Self, TimeError> {
        fn check(
            field: &'static str,
            v: u32,
            lo: u32,
            hi: u32,
            range: &'static str,
        ) -> Result<(), TimeError> {
            if v < lo || v > hi {
                Err(TimeError::OutOfRange {
                    field,
                    value: v,
                    range,
                })
            } else {
                Ok(())
            }
        }
        check(
            "year",
            year.into(),
            MIN_YEAR.into(),
            MAX_YEAR.into(),
            "1582..=9999",
        )?;
        check("month", month.into(), 1, 12, "1..=12")?;
        let dim = days_in_month(year.into(), month);
        let range = match dim {
            28 => "1..=28",
            29 => "1..=29",
            30 => "1..=30",
            _ => "1..=31",
        };
        check("day", day.into(), 1, dim.into(), range)?;
        check("hours", hour.into(), 0, 23, "0..=23")?;
        check("minutes", minute.into(), 0, 59, "0..=59")?;
        check("seconds", second.into(), 0, 59, "0..=59")?;
        // Every field was checked above, so jiff accepts them; its error is kept all the same.
        DateTime::new(
            year as i16,
            month as i8,
            day as i8,
            hour as i8,
            minute as i8,
            second as i8,
            0,
        )
        .map(LocalDateTime)
        .map_err(|_| year_out_of_range(year.into()))
    }

    pub fn year(&self) -> u16 {
        self.0.year() as u16
    }
    pub fn month(&self) -> u8 {
        self.0.month() as u8
    }
    pub fn day(&self) -> u8 {
        self.0.day() as u8
    }
    pub fn hour(&self) -> u8 {
        self.0.hour() as u8
    }
    pub fn minute(&self) -> u8 {
        self.0.minute() as u8
    }
    pub fn second(&self) -> u8 {
        self.0.second() as u8
    }

    /// This value as a `jiff` civil date-time (for zone rules and arithmetic beyond this type's).
    pub fn to_jiff(&self) -> DateTime {
        self.0
    }

    /// Seconds since 1970-01-01T00:00:00 of this wall-clock value read as if it were UTC.
    pub fn to_epoch_seconds(&self) -> i64 {
        self.0.duration_since(EPOCH).as_secs()
    }

    /// The wall-clock value `secs` seconds after 1970-01-01T00:00:00, if it is within 1582..=9999.
    pub fn from_epoch_seconds(secs: i64) -> Result<Self, TimeError> {
        // Civil arithmetic, no time zone: all of 9999-12-31 is reachable (a jiff `Timestamp` is
        // not, as it keeps room for any offset). Beyond jiff's range the year is named 0 or 10000.
        let dt = EPOCH
            .checked_add(jiff::SignedDuration::from_secs(secs))
            .map_err(|_| year_out_of_range(if secs < 0 { 0 } else { 10_000 }))?;
        let year = u16::try_from(dt.year()).map_err(|_| year_out_of_range(0))?;
        LocalDateTime::new(
            year,
            dt.month() as u8,
            dt.day() as u8,
            dt.hour() as u8,
            dt.minute() as u8,
            dt.second() as u8,
        )
    }

    /// This time shifted by a signed number of minutes (GLS Time Offset, CGM time offsets).
    pub fn add_minutes(&self, minutes: i64) -> Result<Self, TimeError> {
        Self::from_epoch_seconds(
            self.to_epoch_seconds()
                .saturating_add(minutes.saturating_mul(60)),
        )
    }

    /// Day of the week, 1 = Monday … 7 = Sunday (the Current Time Service numbering).
    pub fn weekday(&self) -> u8 {
        self.0.weekday().to_monday_one_offset() as u8
    }
}

impl fmt::Display for LocalDateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            self.year(),
            self.month(),
            self.day(),
            self.hour(),
            self.minute(),
            self.second()
        )
    }
}

impl std::str::FromStr for LocalDateTime {
    type Err = TimeError;
    fn from_str(s: &str) -> Result<Self, TimeError> {
        let syntax = || TimeError::Syntax(s.to_string());
        let b = s.as_bytes();
        if b.len() != 19
            || b.get(4) != Some(&b'-')
            || b.get(7) != Some(&b'-')
            || b.get(10) != Some(&b'T')
            || b.get(13) != Some(&b':')
            || b.get(16) != Some(&b':')
        {
            return Err(syntax());
        }
        let num = |r: std::ops::Range<usize>| -> Result<u16, TimeError> {
            let part = s.get(r).ok_or_else(syntax)?;
            if !part.bytes().all(|c| c.is_ascii_digit()) {
                return Err(syntax());
            }
            part.parse::<u16>().map_err(|_| syntax())
        };
        LocalDateTime::new(
            num(0..4)?,
            num(5..7)? as u8,
            num(8..10)? as u8,
            num(11..13)? as u8,
            num(14..16)? as u8,
            num(17..19)? as u8,
        )
    }
}

impl TryFrom<String> for LocalDateTime {
    type Error = TimeError;
    fn try_from(s: String) -> Result<Self, TimeError> {
        s.parse()
    }
}

impl From<LocalDateTime> for String {
    fn from(t: LocalDateTime) -> String {
        t.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_seconds_round_trip_over_the_whole_range() {
        let first = LocalDateTime::new(1582, 1, 1, 0, 0, 0).unwrap();
        let last = LocalDateTime::new(9999, 12, 31, 23, 59, 59).unwrap();
        let mut s = first.to_epoch_seconds();
        while s <= last.to_epoch_seconds() {
            assert_eq!(
                LocalDateTime::from_epoch_seconds(s)
                    .unwrap()
                    .to_epoch_seconds(),
                s
            );
            s += 17 * 86_400 + 3_607;
        }
        let epoch = LocalDateTime::new(1970, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(epoch.to_epoch_seconds(), 0);
        let t = LocalDateTime::new(2000, 3, 1, 0, 0, 0).unwrap();
        assert_eq!(t.to_epoch_seconds(), 11_017 * 86_400);
        assert!(LocalDateTime::from_epoch_seconds(first.to_epoch_seconds() - 1).is_err());
        assert!(LocalDateTime::from_epoch_seconds(last.to_epoch_seconds() + 1).is_err());
        assert!(LocalDateTime::from_epoch_seconds(i64::MIN).is_err());
        assert_eq!(days_in_month(2024, 2), 29);
        assert_eq!(days_in_month(2023, 2), 28);
        assert_eq!(days_in_month(2023, 13), 0);
    }

    #[test]
    fn offsets_cross_month_year_and_leap_day() {
        let t = LocalDateTime::new(2019, 2, 27, 11, 10, 30).unwrap();
        assert_eq!(
            t.add_minutes(-5).unwrap().to_string(),
            "2019-02-27T11:05:30"
        );
        let t = LocalDateTime::new(2024, 2, 28, 23, 50, 0).unwrap();
        assert_eq!(
            t.add_minutes(20).unwrap().to_string(),
            "2024-02-29T00:10:00"
        );
        let t = LocalDateTime::new(2024, 12, 31, 23, 59, 58).unwrap();
        assert_eq!(t.add_minutes(1).unwrap().to_string(), "2025-01-01T00:00:58");
        assert_eq!(t.weekday(), 2); // a Tuesday
    }

    #[test]
    fn rejects_impossible_dates() {
        assert!(LocalDateTime::new(2023, 2, 29, 0, 0, 0).is_err());
        assert!(LocalDateTime::new(2024, 4, 31, 0, 0, 0).is_err());
        assert!(LocalDateTime::new(2024, 1, 1, 24, 0, 0).is_err());
        assert!(LocalDateTime::new(1581, 1, 1, 0, 0, 0).is_err());
        assert!("2024-1-01T00:00:00".parse::<LocalDateTime>().is_err());
        assert_eq!(
            "2024-02-29T12:00:01"
                .parse::<LocalDateTime>()
                .unwrap()
                .to_string(),
            "2024-02-29T12:00:01"
        );
    }
}
