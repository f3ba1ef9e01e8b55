//! CGM Status 0x2AA9, CGM Session Start Time 0x2AAA and CGM Session Run Time 0x2AAB.

#[allow(unused_imports)]
use super::*;

// ------------------------------------------------------------------------------------------------
// CGM Status 0x2AA9.

/// CGM Status 0x2AA9: `time offset u16 | status u24 | [E2E-CRC]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct CgmStatus {
    /// Minutes since the session start.
    pub time_offset_min: u16,
    /// Status byte 0.
    #[serde(serialize_with = "ser_status")]
    pub status_octet: u8,
    /// Status byte 1.
    #[serde(serialize_with = "ser_cal_temp")]
    pub cal_temp_octet: u8,
    /// Status byte 2.
    #[serde(serialize_with = "ser_warning")]
    pub warning_octet: u8,
    pub e2e_crc: bool,
}

impl CgmStatus {
    pub const WHAT: &'static str = <Self as GattValue>::NAME;

    /// The 24-bit status as on the wire (byte 0 Status, byte 1 Cal/Temp, byte 2 Warning).
    pub fn status_u24(&self) -> u32 {
        u32::from_le_bytes([
            self.status_octet,
            self.cal_temp_octet,
            self.warning_octet,
            0,
        ])
    }

    /// The reading flags the status octets map to.
    pub fn flags(&self) -> BTreeSet<Flag> {
        annunciation_flags(
            Some(self.status_octet),
            Some(self.cal_temp_octet),
            Some(self.warning_octet),
        )
    }
}

impl GattValue for CgmStatus {
    const UUID: u16 = 0x2AA9;
    const NAME: &'static str = "cgm-status";

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let what = Self::WHAT;
        let n = bytes.len();
        check_length(what, "5, or 7 with E2E-CRC", n == 5 || n == 7, n)?;
        let body = checked_body(what, bytes, 5)?;
        let mut r = Reader::new(what, body);
        let time_offset_min = r.u16()?;
        let status_octet = r.u8()?;
        let cal_temp_octet = r.u8()?;
        let warning_octet = r.u8()?;
        r.finish()?;
        Ok(CgmStatus {
            time_offset_min,
            status_octet,
            cal_temp_octet,
            warning_octet,
            e2e_crc: n == 7,
        })
    }

    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut w = Writer::new();
        w.u16(self.time_offset_min)
            .u8(self.status_octet)
            .u8(self.cal_temp_octet)
            .u8(self.warning_octet);
        Ok(finish(w, self.e2e_crc))
    }
}

// ------------------------------------------------------------------------------------------------
// CGM Session Start Time 0x2AAA.

/// CGM Session Start Time 0x2AAA: `Date Time | time zone s8 | DST offset u8 | [E2E-CRC]`. The hub
/// writes it after Start Session; record times are this wall clock plus their time offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionStartTime {
    /// The sensor's local wall clock at the session start (fields may be 0 = unknown).
    pub start: DateTime,
    /// 15-minute units.
    pub time_zone: TimeZone,
    pub dst_offset: DstOffset,
    pub e2e_crc: bool,
}

impl Serialize for SessionStartTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("SessionStartTime", 6)?;
        st.serialize_field("start", &self.start)?;
        st.serialize_field("time_zone_raw", &self.time_zone.0)?;
        st.serialize_field("time_zone_min", &self.time_zone.minutes())?;
        st.serialize_field("dst_raw", &self.dst_offset.0)?;
        st.serialize_field("dst_min", &self.dst_offset.minutes())?;
        st.serialize_field("e2e_crc", &self.e2e_crc)?;
        st.end()
    }
}

impl SessionStartTime {
    pub const WHAT: &'static str = <Self as GattValue>::NAME;

    /// The value the hub writes after starting a session: the local wall clock, zone and DST,
    /// with an E2E-CRC when the sensor supports it.
    pub fn new(
        start: LocalDateTime,
        time_zone: TimeZone,
        dst_offset: DstOffset,
        with_crc: bool,
    ) -> Self {
        SessionStartTime {
            start: DateTime::from_local(start),
            time_zone,
            dst_offset,
            e2e_crc: with_crc,
        }
    }
}

impl GattValue for SessionStartTime {
    const UUID: u16 = 0x2AAA;
    const NAME: &'static str = "cgm-session-start-time";

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let what = Self::WHAT;
        let n = bytes.len();
        check_length(what, "9, or 11 with E2E-CRC", n == 9 || n == 11, n)?;
        let body = checked_body(what, bytes, 9)?;
        let mut r = Reader::new(what, body);
        let start = DateTime::read(&mut r)?;
        let time_zone = TimeZone::read(&mut r)?;
        let dst_offset = DstOffset::read(&mut r)?;
        r.finish()?;
        Ok(SessionStartTime {
            start,
            time_zone,
            dst_offset,
            e2e_crc: n == 11,
        })
    }

    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let tz = self.time_zone.0;
        if tz != -128 && !(-48..=56).contains(&tz) {
            return Err(EncodeError::Unrepresentable {
                what: Self::WHAT,
                detail: format!(
                    "time zone {tz} is outside -48..=56 (15-minute units) and not -128"
                ),
            });
        }
        if !matches!(self.dst_offset.0, 0 | 2 | 4 | 8 | 255) {
            return Err(EncodeError::Unrepresentable {
                what: Self::WHAT,
                detail: format!("DST offset {} is not 0, 2, 4, 8 or 255", self.dst_offset.0),
            });
        }
        let mut w = Writer::new();
        self.start.write(&mut w);
        w.i8(tz).u8(self.dst_offset.0);
        Ok(finish(w, self.e2e_crc))
    }
}

// ------------------------------------------------------------------------------------------------
// CGM Session Run Time 0x2AAB.

/// CGM Session Run Time 0x2AAB: the expected run time of the session, `u16 hours | [E2E-CRC]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct SessionRunTime {
    pub run_time_h: u16,
    pub e2e_crc: bool,
}

impl SessionRunTime {
    pub const WHAT: &'static str = <Self as GattValue>::NAME;
}

impl GattValue for SessionRunTime {
    const UUID: u16 = 0x2AAB;
    const NAME: &'static str = "cgm-session-run-time";

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let what = Self::WHAT;
        let n = bytes.len();
        check_length(what, "2, or 4 with E2E-CRC", n == 2 || n == 4, n)?;
        let body = checked_body(what, bytes, 2)?;
        let run_time_h = Reader::new(what, body).u16()?;
        Ok(SessionRunTime {
            run_time_h,
            e2e_crc: n == 4,
        })
    }

    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut w = Writer::new();
        w.u16(self.run_time_h);
        Ok(finish(w, self.e2e_crc))
    }
}
