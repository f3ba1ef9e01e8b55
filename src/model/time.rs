//! Wall-clock date and time as a device reports it: no time zone, no DST, second resolution.
//!
//! The Bluetooth SIG Date Time field is the device's own wall clock. The hub keeps that value as the
//! device sent it (the FHIR PHD conditional-create identifier is built from it) and maps it to UTC
//! only where it knows the device's clock offset. The civil-calendar arithmetic here is the proleptic
//! Gregorian day count, written out so that this pure module needs no date crate.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A complete, valid calendar date and time of day (proleptic Gregorian, years 1582..=9999).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LocalDateTime {
    year: u16,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
}

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

pub const MIN_YEAR: u16 = 1582;
pub const MAX_YEAR: u16 = 9999;

pub fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

pub fn days_in_month(year: i64, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (negative before it).
pub fn days_from_civil(year: i64, month: u8, day: u8) -> i64 {
    // Shift the year so it starts in March: the leap day is then the last day of the year.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // 0..=399
    let m = month as i64;
    let mp = (m + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + day as i64 - 1; // 0..=365
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // 0..=146096
    era * 146_097 + doe - 719_468
}

/// The date of a day count from 1970-01-01 (inverse of [`days_from_civil`]).
pub fn civil_from_days(days: i64) -> (i64, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = yoe + era * 400 + if month <= 2 { 1 } else { 0 };
    (year, month, day)
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
        Ok(LocalDateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
        })
    }

    pub fn year(&self) -> u16 {
        self.year
    }
    pub fn month(&self) -> u8 {
        self.month
    }
    pub fn day(&self) -> u8 {
        self.day
    }
    pub fn hour(&self) -> u8 {
        self.hour
    }
    pub fn minute(&self) -> u8 {
        self.minute
    }
    pub fn second(&self) -> u8 {
        self.second
    }

    /// Seconds since 1970-01-01T00:00:00 of this wall-clock value read as if it were UTC.
    pub fn to_epoch_seconds(&self) -> i64 {
        days_from_civil(self.year.into(), self.month, self.day) * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
    }

    /// The wall-clock value `secs` seconds after 1970-01-01T00:00:00, if it is within 1582..=9999.
    pub fn from_epoch_seconds(secs: i64) -> Result<Self, TimeError> {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        let year = u16::try_from(y).map_err(|_| TimeError::OutOfRange {
            field: "year",
            value: y.clamp(0, u32::MAX.into()) as u32,
            range: "1582..=9999",
        })?;
        LocalDateTime::new(
            year,
            m,
            d,
            (rem / 3600) as u8,
            ((rem % 3600) / 60) as u8,
            (rem % 60) as u8,
        )
    }

    /// This time shifted by a signed number of minutes (GLS Time Offset, CGM time offsets).
    pub fn add_minutes(&self, minutes: i64) -> Result<Self, TimeError> {
        Self::from_epoch_seconds(self.to_epoch_seconds() + minutes * 60)
    }

    /// Day of the week, 1 = Monday … 7 = Sunday (the Current Time Service numbering).
    pub fn weekday(&self) -> u8 {
        // 1970-01-01 was a Thursday (4).
        let d = days_from_civil(self.year.into(), self.month, self.day);
        ((d + 3).rem_euclid(7) + 1) as u8
    }
}

impl fmt::Display for LocalDateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
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
    fn civil_round_trip_over_the_whole_range() {
        let first = days_from_civil(1582, 1, 1);
        let last = days_from_civil(9999, 12, 31);
        let mut d = first;
        while d <= last {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
            d += 17;
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
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
