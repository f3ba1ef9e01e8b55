//! Date Time (0x2A08), Current Time (0x2A2B), Local Time Information (0x2A0F), and the Time Zone and
//! DST Offset fields they carry.
//!
//! Date Time is the device's wall clock, no zone: `year u16 (1582..=9999, 0 = unknown) | month u8
//! (1..=12, 0 = unknown) | day u8 (1..=31, 0 = unknown) | hours | minutes | seconds`.

use super::bytes::{check_length, Reader, Writer};
use super::error::{DecodeError, EncodeError};
use super::GattValue;
use crate::model::{days_in_month, LocalDateTime};
use serde::Serialize;

/// A Date Time field as received: the calendar fields may be 0 ("unknown").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct DateTime {
    pub year: u16,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

impl DateTime {
    pub const LEN: usize = 7;

    pub fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let what = r.what();
        let year = r.u16()?;
        let month = r.u8()?;
        let day = r.u8()?;
        let hour = r.u8()?;
        let minute = r.u8()?;
        let second = r.u8()?;
        let range =
            |field: &'static str, value: u16, allowed: &'static str| DecodeError::OutOfRange {
                what,
                field,
                value: value.into(),
                allowed,
            };
        // GATT: year 1582..=9999, 0 means "not known".
        if year != 0 && !(1582..=9999).contains(&year) {
            return Err(range(
                "Date Time year",
                year,
                "1582..=9999, or 0 for unknown",
            ));
        }
        if month > 12 {
            return Err(range(
                "Date Time month",
                month.into(),
                "1..=12, or 0 for unknown",
            ));
        }
        if day > 31 {
            return Err(range(
                "Date Time day",
                day.into(),
                "1..=31, or 0 for unknown",
            ));
        }
        if year != 0 && month != 0 && day > days_in_month(year.into(), month) {
            return Err(DecodeError::malformed(
                what,
                format!("Date Time {year:04}-{month:02}-{day:02} is not a calendar date"),
            ));
        }
        if hour > 23 {
            return Err(range("Date Time hours", hour.into(), "0..=23"));
        }
        if minute > 59 {
            return Err(range("Date Time minutes", minute.into(), "0..=59"));
        }
        if second > 59 {
            return Err(range("Date Time seconds", second.into(), "0..=59"));
        }
        Ok(DateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
        })
    }

    pub fn write(&self, w: &mut Writer) {
        w.u16(self.year)
            .u8(self.month)
            .u8(self.day)
            .u8(self.hour)
            .u8(self.minute)
            .u8(self.second);
    }

    /// The complete wall-clock time, or `None` when the year, month or day is "unknown".
    pub fn to_local(&self) -> Option<LocalDateTime> {
        LocalDateTime::new(
            self.year,
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second,
        )
        .ok()
    }

    pub fn from_local(t: LocalDateTime) -> Self {
        DateTime {
            year: t.year(),
            month: t.month(),
            day: t.day(),
            hour: t.hour(),
            minute: t.minute(),
            second: t.second(),
        }
    }
}

impl GattValue for DateTime {
    const UUID: u16 = 0x2A08;
    const NAME: &'static str = "date-time";

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        check_length(Self::NAME, "7", bytes.len() == Self::LEN, bytes.len())?;
        let mut r = Reader::new(Self::NAME, bytes);
        let v = Self::read(&mut r)?;
        r.finish()?;
        Ok(v)
    }

    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut w = Writer::new();
        self.write(&mut w);
        Ok(w.into_vec())
    }
}

/// Time Zone (0x2A0E): signed 15-minute units from UTC, −48..=+56, −128 = unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct TimeZone(pub i8);

impl TimeZone {
    pub const UNKNOWN: TimeZone = TimeZone(-128);

    pub fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let what = r.what();
        let v = r.i8()?;
        if v != -128 && !(-48..=56).contains(&v) {
            return Err(DecodeError::OutOfRange {
                what,
                field: "time zone",
                value: v.into(),
                allowed: "-48..=56 (15-minute units), or -128 for unknown",
            });
        }
        Ok(TimeZone(v))
    }

    /// Minutes east of UTC, or `None` when unknown.
    pub fn minutes(&self) -> Option<i32> {
        (self.0 != -128).then(|| i32::from(self.0) * 15)
    }
}

/// DST Offset (0x2A0D): 0 standard, 2 = +0.5 h, 4 = +1 h, 8 = +2 h, 255 = unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct DstOffset(pub u8);

impl DstOffset {
    pub const UNKNOWN: DstOffset = DstOffset(255);

    pub fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let what = r.what();
        let v = r.u8()?;
        if !matches!(v, 0 | 2 | 4 | 8 | 255) {
            return Err(DecodeError::OutOfRange {
                what,
                field: "DST offset",
                value: v.into(),
                allowed: "0, 2, 4, 8, or 255 for unknown",
            });
        }
        Ok(DstOffset(v))
    }

    /// Minutes added for daylight saving, or `None` when unknown.
    pub fn minutes(&self) -> Option<i32> {
        (self.0 != 255).then(|| i32::from(self.0) * 15)
    }
}

/// Current Time (0x2A2B): Exact Time 256 (Date Time, Day of Week, Fractions256) + Adjust Reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct CurrentTime {
    pub date_time: DateTime,
    /// 1 = Monday … 7 = Sunday, 0 = unknown.
    pub day_of_week: u8,
    /// 1/256 s.
    pub fractions256: u8,
    /// bit0 manual time update, bit1 external reference time update, bit2 time zone change,
    /// bit3 DST change; bits 4..7 reserved (kept, not interpreted).
    pub adjust_reason: u8,
}

impl GattValue for CurrentTime {
    const UUID: u16 = 0x2A2B;
    const NAME: &'static str = "current-time";

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        check_length(Self::WHAT, "10", bytes.len() == 10, bytes.len())?;
        let mut r = Reader::new(Self::WHAT, bytes);
        let date_time = DateTime::read(&mut r)?;
        let day_of_week = r.u8()?;
        if day_of_week > 7 {
            return Err(DecodeError::OutOfRange {
                what: Self::WHAT,
                field: "day of week",
                value: day_of_week.into(),
                allowed: "1..=7, or 0 for unknown",
            });
        }
        let fractions256 = r.u8()?;
        let adjust_reason = r.u8()?;
        r.finish()?;
        Ok(CurrentTime {
            date_time,
            day_of_week,
            fractions256,
            adjust_reason,
        })
    }

    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut w = Writer::new();
        self.date_time.write(&mut w);
        w.u8(self.day_of_week)
            .u8(self.fractions256)
            .u8(self.adjust_reason);
        Ok(w.into_vec())
    }
}

impl CurrentTime {
    const WHAT: &'static str = <Self as GattValue>::NAME;

    /// The value the hub writes to set a device clock: the given wall-clock time, its weekday,
    /// whole seconds, and adjust reason "external reference time update" (bit1).
    pub fn for_clock_write(t: LocalDateTime) -> Self {
        CurrentTime {
            date_time: DateTime::from_local(t),
            day_of_week: t.weekday(),
            fractions256: 0,
            adjust_reason: 0x02,
        }
    }
}

/// Local Time Information (0x2A0F): time zone and DST offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct LocalTimeInformation {
    pub time_zone: TimeZone,
    pub dst_offset: DstOffset,
}

impl LocalTimeInformation {
    const WHAT: &'static str = <Self as GattValue>::NAME;
}

impl GattValue for LocalTimeInformation {
    const UUID: u16 = 0x2A0F;
    const NAME: &'static str = "local-time-information";

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        check_length(Self::WHAT, "2", bytes.len() == 2, bytes.len())?;
        let mut r = Reader::new(Self::WHAT, bytes);
        let time_zone = TimeZone::read(&mut r)?;
        let dst_offset = DstOffset::read(&mut r)?;
        Ok(LocalTimeInformation {
            time_zone,
            dst_offset,
        })
    }

    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        Ok(vec![self.time_zone.0 as u8, self.dst_offset.0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gatt::testing::{config, date_time};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn date_time_round_trips(t in date_time()) {
            prop_assert_eq!(DateTime::decode(&t.encode().unwrap()).unwrap(), t);
        }

        #[test]
        fn current_time_round_trips(t in date_time(), dow in 0u8..=7, frac in any::<u8>(), reason in any::<u8>()) {
            let ct = CurrentTime { date_time: t, day_of_week: dow, fractions256: frac, adjust_reason: reason };
            prop_assert_eq!(CurrentTime::decode(&ct.encode().unwrap()).unwrap(), ct);
        }

        #[test]
        fn local_time_information_round_trips(tz in prop_oneof![Just(-128i8), -48i8..=56], dst in prop_oneof![Just(0u8), Just(2), Just(4), Just(8), Just(255)]) {
            let v = LocalTimeInformation { time_zone: TimeZone(tz), dst_offset: DstOffset(dst) };
            prop_assert_eq!(LocalTimeInformation::decode(&v.encode().unwrap()).unwrap(), v);
        }
    }

    #[test]
    fn clock_write_is_a_valid_current_time() {
        let t = LocalDateTime::new(2024, 12, 31, 23, 59, 58).unwrap();
        let ct = CurrentTime::for_clock_write(t);
        let bytes = ct.encode().unwrap();
        assert_eq!(
            bytes,
            [0xe8, 0x07, 0x0c, 0x1f, 0x17, 0x3b, 0x3a, 0x02, 0x00, 0x02]
        );
        assert_eq!(CurrentTime::decode(&bytes).unwrap(), ct);
    }

    #[test]
    fn rejects_out_of_range_fields() {
        let e = DateTime::decode(&[0xe8, 0x07, 0x02, 0x1e, 0, 0, 0]).unwrap_err();
        assert!(e.to_string().contains("2024-02-30"), "{e}");
        let e = DateTime::decode(&[0xe8, 0x07, 0x02, 0x01, 24, 0, 0]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "date-time: Date Time hours 24 is out of range (0..=23)"
        );
        assert!(DateTime::decode(&[0x10, 0x00, 1, 1, 0, 0, 0]).is_err());
    }
}
