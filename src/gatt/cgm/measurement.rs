//! CGM Measurement 0x2AA7: records, their annunciation octets and the E2E-CRC (see [`super`] for the interpretations).

#[allow(unused_imports)]
use super::*;

// ------------------------------------------------------------------------------------------------
// CGM Measurement 0x2AA7.

/// One CGM Measurement record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct CgmRecord {
    /// CGM Glucose Concentration, mg/dL.
    pub glucose_mg_dl: SFloat,
    /// Minutes since the session start.
    pub time_offset_min: u16,
    /// Flag bit 7: Sensor Status Annunciation, Status octet.
    #[serde(serialize_with = "ser_opt_status")]
    pub status_octet: Option<u8>,
    /// Flag bit 6: Cal/Temp octet.
    #[serde(serialize_with = "ser_opt_cal_temp")]
    pub cal_temp_octet: Option<u8>,
    /// Flag bit 5: Warning octet.
    #[serde(serialize_with = "ser_opt_warning")]
    pub warning_octet: Option<u8>,
    /// Flag bit 0: CGM Trend Information, mg/dL/min.
    pub trend_mg_dl_min: Option<SFloat>,
    /// Flag bit 1: CGM Quality, percent.
    pub quality_pct: Option<SFloat>,
    /// The record carries an E2E-CRC (checked on decode, computed by encode).
    pub e2e_crc: bool,
}

impl CgmRecord {
    /// Size of the record without its E2E-CRC, from its optional fields.
    fn size_without_crc(flags: u8) -> usize {
        let f = u32::from(flags);
        6 + [(7, 1), (6, 1), (5, 1), (0, 2), (1, 2)]
            .iter()
            .map(|&(b, n)| if bit(f, b) { n } else { 0 })
            .sum::<usize>()
    }

    fn flags(&self) -> u8 {
        let mut flags = 0u8;
        if self.trend_mg_dl_min.is_some() {
            flags |= 0x01;
        }
        if self.quality_pct.is_some() {
            flags |= 0x02;
        }
        if self.warning_octet.is_some() {
            flags |= 0x20;
        }
        if self.cal_temp_octet.is_some() {
            flags |= 0x40;
        }
        if self.status_octet.is_some() {
            flags |= 0x80;
        }
        flags
    }

    /// Decode one record: `rec` is exactly the `size` bytes its size byte announced.
    fn decode_one(rec: &[u8], offset: usize) -> Result<Self, DecodeError> {
        let what = CgmMeasurement::WHAT;
        let mut r = Reader::new(what, rec);
        let size = r.u8()?;
        let flags = r.u8()?;
        // CGMS 0x2AA7 flags: bits 2..4 reserved.
        check_reserved_flags(what, flags, 0x1C)?;
        let need = Self::size_without_crc(flags);
        let size = usize::from(size);
        if size != need && size != need + 2 {
            return Err(DecodeError::malformed(
                what,
                format!(
                    "record at byte {offset}: size {size} does not match flags 0x{flags:02X} \
                     (they require {need}, or {} with E2E-CRC)",
                    need + 2
                ),
            ));
        }
        let body = checked_body(what, rec, need)?;
        let mut r = Reader::new(what, body);
        r.take(2)?; // size and flags, read above
        let glucose_mg_dl = r.sfloat()?;
        let time_offset_min = r.u16()?;
        let f = u32::from(flags);
        // GSS order: Status, Cal/Temp, Warning (see the module note).
        let status_octet = if bit(f, 7) { Some(r.u8()?) } else { None };
        let cal_temp_octet = if bit(f, 6) { Some(r.u8()?) } else { None };
        let warning_octet = if bit(f, 5) { Some(r.u8()?) } else { None };
        let trend_mg_dl_min = if bit(f, 0) { Some(r.sfloat()?) } else { None };
        let quality_pct = if bit(f, 1) { Some(r.sfloat()?) } else { None };
        r.finish()?;
        Ok(CgmRecord {
            glucose_mg_dl,
            time_offset_min,
            status_octet,
            cal_temp_octet,
            warning_octet,
            trend_mg_dl_min,
            quality_pct,
            e2e_crc: size == need + 2,
        })
    }

    fn write(&self, out: &mut Vec<u8>) {
        let flags = self.flags();
        let size = Self::size_without_crc(flags) + if self.e2e_crc { 2 } else { 0 };
        let mut w = Writer::new();
        // At most 17 bytes, so the size always fits its octet.
        w.u8(size as u8)
            .u8(flags)
            .sfloat(self.glucose_mg_dl)
            .u16(self.time_offset_min);
        for o in [self.status_octet, self.cal_temp_octet, self.warning_octet]
            .into_iter()
            .flatten()
        {
            w.u8(o);
        }
        for v in [self.trend_mg_dl_min, self.quality_pct]
            .into_iter()
            .flatten()
        {
            w.sfloat(v);
        }
        out.extend_from_slice(&finish(w, self.e2e_crc));
    }

    /// The reading flags of the record's annunciation octets.
    pub fn reading_flags(&self) -> BTreeSet<Flag> {
        annunciation_flags(self.status_octet, self.cal_temp_octet, self.warning_octet)
    }

    /// The record's `cgm_glucose` reading; with a complete session start, its device time is the
    /// start plus the time offset.
    pub fn reading(&self, start: Option<&SessionStartTime>) -> Reading {
        let mut r = Reading::new(Kind::CgmGlucose, self.glucose_mg_dl.value(), Unit::MgPerDl);
        r.device_time = start
            .and_then(|s| s.start.to_local())
            .and_then(|t| t.add_minutes(self.time_offset_min.into()).ok());
        r.flags = self.reading_flags();
        r
    }
}

/// Split a CGM Measurement notification into its records, each decoded on its own: a record with
/// bad flags or a bad CRC is an `Err` among the good ones. A size byte below 6 or running past the
/// end is the last entry, as later record boundaries are then unknown. An empty payload gives a
/// single [`DecodeError::Empty`].
pub fn decode_records(bytes: &[u8]) -> Vec<Result<CgmRecord, DecodeError>> {
    let what = CgmMeasurement::WHAT;
    if bytes.is_empty() {
        return vec![Err(DecodeError::Empty { what })];
    }
    let mut out = Vec::new();
    let mut r = Reader::new(what, bytes);
    while let Some(&size) = r.rest().first() {
        let offset = r.position();
        if size < 6 {
            out.push(Err(DecodeError::malformed(
                what,
                format!("record at byte {offset}: size {size} is below the 6-byte minimum"),
            )));
            break;
        }
        match r.take(size.into()) {
            Ok(rec) => out.push(CgmRecord::decode_one(rec, offset)),
            Err(_) => {
                out.push(Err(DecodeError::malformed(
                    what,
                    format!(
                        "record at byte {offset}: size {size} runs past the end of the {}-byte value",
                        bytes.len()
                    ),
                )));
                break;
            }
        }
    }
    out
}

/// CGM Measurement 0x2AA7: one or more records.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct CgmMeasurement {
    pub records: Vec<CgmRecord>,
}

impl CgmMeasurement {
    pub const WHAT: &'static str = <Self as GattValue>::NAME;

    /// One `cgm_glucose` reading per record, timed from the session start when it is complete.
    pub fn readings_with_session(&self, start: Option<&SessionStartTime>) -> Vec<Reading> {
        self.records.iter().map(|r| r.reading(start)).collect()
    }
}

impl GattValue for CgmMeasurement {
    const UUID: u16 = 0x2AA7;
    const NAME: &'static str = "cgm-measurement";

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let records = decode_records(bytes)
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CgmMeasurement { records })
    }

    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        if self.records.is_empty() {
            return Err(EncodeError::Unrepresentable {
                what: Self::WHAT,
                detail: "a CGM Measurement carries at least one record".into(),
            });
        }
        let mut out = Vec::new();
        for rec in &self.records {
            rec.write(&mut out);
        }
        Ok(out)
    }

    fn readings(&self) -> Vec<Reading> {
        self.readings_with_session(None)
    }
}
