//! RFC 3339 text for [`UtcMillis`]: `2024-03-01T08:00:00Z`, `2024-03-01T09:00:00.250+01:00`.

use super::time::{days_from_civil, days_in_month, LocalDateTime};
use super::UtcMillis;

/// Why text is not an RFC 3339 date-time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not an RFC 3339 date-time ({why}); write e.g. 2024-03-01T08:00:00Z or 2024-03-01T09:00:00+01:00")]
pub struct Rfc3339Error {
    pub text: String,
    pub why: &'static str,
}

impl UtcMillis {
    /// Parse `YYYY-MM-DDTHH:MM:SS[.fff…](Z|±HH:MM)`; fractions beyond milliseconds are truncated.
    pub fn parse_rfc3339(text: &str) -> Result<UtcMillis, Rfc3339Error> {
        let err = |why| Rfc3339Error {
            text: text.to_string(),
            why,
        };
        let b = text.as_bytes();
        let digits = |from: usize, n: usize| -> Result<i64, Rfc3339Error> {
            let part = b.get(from..from + n).ok_or_else(|| err("too short"))?;
            if !part.iter().all(u8::is_ascii_digit) {
                return Err(err("a digit was expected"));
            }
            Ok(part
                .iter()
                .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0')))
        };
        let sep = |at: usize, want: &[u8]| -> Result<(), Rfc3339Error> {
            match b.get(at) {
                Some(c) if want.contains(c) => Ok(()),
                _ => Err(err("a separator is missing")),
            }
        };
        let year = digits(0, 4)?;
        sep(4, b"-")?;
        let month = digits(5, 2)?;
        sep(7, b"-")?;
        let day = digits(8, 2)?;
        sep(10, b"Tt ")?;
        let hour = digits(11, 2)?;
        sep(13, b":")?;
        let minute = digits(14, 2)?;
        sep(16, b":")?;
        let second = digits(17, 2)?;
        if !(1..=12).contains(&month) {
            return Err(err("month out of range"));
        }
        if day < 1 || day > i64::from(days_in_month(year, month as u8)) {
            return Err(err("day out of range"));
        }
        if hour > 23 || minute > 59 || second > 60 {
            return Err(err("time of day out of range"));
        }
        let mut pos = 19;
        let mut millis = 0i64;
        if b.get(pos) == Some(&b'.') {
            pos += 1;
            let start = pos;
            while b.get(pos).is_some_and(u8::is_ascii_digit) {
                if pos - start < 3 {
                    millis = millis * 10 + i64::from(b.get(pos).copied().unwrap_or(b'0') - b'0');
                }
                pos += 1;
            }
            if pos == start {
                return Err(err("empty fraction"));
            }
            for _ in (pos - start)..3 {
                millis *= 10;
            }
        }
        let offset_min = match b.get(pos) {
            Some(b'Z') | Some(b'z') => {
                pos += 1;
                0
            }
            Some(&s @ (b'+' | b'-')) => {
                let h = digits(pos + 1, 2)?;
                sep(pos + 3, b":")?;
                let m = digits(pos + 4, 2)?;
                pos += 6;
                if h > 23 || m > 59 {
                    return Err(err("offset out of range"));
                }
                let o = h * 60 + m;
                if s == b'-' {
                    -o
                } else {
                    o
                }
            }
            _ => return Err(err("a time zone (Z or ±HH:MM) is required")),
        };
        if pos != b.len() {
            return Err(err("unexpected text after the time zone"));
        }
        // A leap second is read as the last second of its minute.
        let second = second.min(59);
        let days = days_from_civil(year, month as u8, day as u8);
        let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_min * 60;
        Ok(UtcMillis(secs * 1000 + millis))
    }

    /// `2024-03-01T08:00:00Z`, or with `.fff` when there are milliseconds.
    pub fn to_rfc3339(self) -> String {
        let secs = self.0.div_euclid(1000);
        let ms = self.0.rem_euclid(1000);
        match LocalDateTime::from_epoch_seconds(secs) {
            Ok(t) if ms == 0 => format!("{t}Z"),
            Ok(t) => format!("{t}.{ms:03}Z"),
            Err(_) => format!("{}ms", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        let t = UtcMillis::parse_rfc3339("2024-03-01T08:00:00Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2024-03-01T08:00:00Z");
        let u = UtcMillis::parse_rfc3339("2024-03-01T09:00:00.25+01:00").unwrap();
        assert_eq!(u.0 - t.0, 250);
        assert_eq!(u.to_rfc3339(), "2024-03-01T08:00:00.250Z");
        assert_eq!(
            UtcMillis::parse_rfc3339("1970-01-01T00:00:00Z").unwrap(),
            UtcMillis(0)
        );
        for bad in [
            "2024-03-01 08:00:00",
            "2024-02-30T00:00:00Z",
            "2024-03-01T08:00:00+1",
            "x",
            "2024-03-01T08:00:00Zjunk",
        ] {
            assert!(UtcMillis::parse_rfc3339(bad).is_err(), "{bad}");
        }
    }
}
