//! Tests of the CGM codecs: spec vectors, round trips, and property tests.

use super::*;
use crate::gatt::testing::{config, date_time, sfloat};
use crate::model::{Special, Value};
use proptest::prelude::*;

fn crc(mut b: Vec<u8>) -> Vec<u8> {
    append_crc(&mut b);
    b
}

fn num(m: i64, e: i16) -> Value {
    Value::Number(Decimal::new(m, e))
}

/// A record for `flags` built by hand (not by the encoder), with a CRC when asked.
fn record_bytes(flags: u8, with_crc: bool) -> Vec<u8> {
    let mut b = vec![0, flags, 0x0c, 0x10, 0x06, 0x00];
    if flags & 0x80 != 0 {
        b.push(0x02);
    }
    if flags & 0x40 != 0 {
        b.push(0x14);
    }
    if flags & 0x20 != 0 {
        b.push(0xc0);
    }
    if flags & 0x01 != 0 {
        b.extend_from_slice(&[0x02, 0xf0]);
    }
    if flags & 0x02 != 0 {
        b.extend_from_slice(&[0xe5, 0xf3]);
    }
    b[0] = (b.len() + if with_crc { 2 } else { 0 }) as u8;
    if with_crc {
        append_crc(&mut b);
    }
    b
}

/// Every combination of the defined flag bits 0, 1, 5, 6, 7.
fn allowed_flags() -> impl Iterator<Item = u8> {
    (0u8..32).map(|i| (i & 0x03) | ((i & 0x1C) << 3))
}

#[test]
fn record_every_flag_combination_with_and_without_crc() {
    for flags in allowed_flags() {
        for with_crc in [false, true] {
            let b = record_bytes(flags, with_crc);
            let want = 6
                + (flags & 0xE0).count_ones() as usize
                + 2 * (flags & 0x03).count_ones() as usize
                + if with_crc { 2 } else { 0 };
            assert_eq!(b.len(), want);
            let m = CgmMeasurement::decode(&b)
                .unwrap_or_else(|e| panic!("flags {flags:#04x} crc {with_crc}: {e}"));
            let rec = m.records[0];
            assert_eq!(rec.e2e_crc, with_crc);
            assert_eq!(rec.glucose_mg_dl.value(), num(12, 1));
            assert_eq!(rec.time_offset_min, 6);
            assert_eq!(rec.status_octet, (flags & 0x80 != 0).then_some(0x02));
            assert_eq!(rec.cal_temp_octet, (flags & 0x40 != 0).then_some(0x14));
            assert_eq!(rec.warning_octet, (flags & 0x20 != 0).then_some(0xc0));
            assert_eq!(rec.trend_mg_dl_min.is_some(), flags & 0x01 != 0);
            assert_eq!(rec.quality_pct.is_some(), flags & 0x02 != 0);
            assert_eq!(m.encode().unwrap(), b);

            // The payload one byte short or long.
            assert!(CgmMeasurement::decode(&b[..b.len() - 1]).is_err());
            let mut long = b.clone();
            long.push(0);
            assert!(CgmMeasurement::decode(&long).is_err());
            // The size byte one off either way.
            for size in [b[0] - 1, b[0] + 1] {
                let mut bad = b.clone();
                bad[0] = size;
                assert!(
                    CgmMeasurement::decode(&bad).is_err(),
                    "flags {flags:#04x} crc {with_crc} size {size}"
                );
            }
        }
    }
}

#[test]
fn record_sizes_other_than_allowed_are_rejected() {
    // Flags 0: sizes 6 and 8 (CRC) only; 7 is neither.
    let mut b = vec![7, 0x00, 0x0c, 0x10, 0x06, 0x00, 0x00];
    assert!(matches!(
        CgmMeasurement::decode(&b),
        Err(DecodeError::Malformed { .. })
    ));
    b[0] = 5;
    assert!(CgmMeasurement::decode(&b[..5]).is_err());
    for size in 0u8..6 {
        assert!(CgmMeasurement::decode(&[size, 0, 0, 0, 0, 0]).is_err());
    }
    assert!(matches!(
        CgmMeasurement::decode(&[]),
        Err(DecodeError::Empty { .. })
    ));
    assert!(CgmMeasurement { records: vec![] }.encode().is_err());
}

#[test]
fn record_reserved_flag_bits_are_rejected() {
    for rfu in [0x04u8, 0x08, 0x10] {
        let mut b = vec![6, rfu, 0x0c, 0x10, 0x06, 0x00];
        let e = CgmMeasurement::decode(&b).unwrap_err();
        assert!(
            matches!(e, DecodeError::ReservedFlags { reserved, .. } if reserved == rfu),
            "{e}"
        );
        b[1] |= 0xE3;
        assert!(CgmMeasurement::decode(&b).is_err());
    }
}

#[test]
fn octets_are_status_cal_temp_warning_on_the_wire() {
    let b = [
        0x0f, 0xe3, 0xd2, 0xe4, 0x05, 0x00, 0x02, 0x14, 0xff, 0x02, 0xf0, 0xe5, 0xf3, 0x8e, 0x3f,
    ];
    let m = CgmMeasurement::decode(&b).unwrap();
    let r = m.records[0];
    assert_eq!(r.status_octet, Some(0x02));
    assert_eq!(r.cal_temp_octet, Some(0x14));
    assert_eq!(r.warning_octet, Some(0xff));
    assert_eq!(r.glucose_mg_dl.value(), num(1234, -2));
    assert_eq!(r.trend_mg_dl_min, Some(SFloat::from_raw(0xf002)));
    assert_eq!(r.quality_pct.map(|q| q.value()), Some(num(997, -1)));
    assert!(r.e2e_crc);
    // Only the status octet present: it is the first byte after the time offset.
    let only_status = CgmMeasurement::decode(&[7, 0x80, 0x0c, 0x10, 0, 0, 0x01]).unwrap();
    assert_eq!(only_status.records[0].status_octet, Some(0x01));
    let only_warning = CgmMeasurement::decode(&[7, 0x20, 0x0c, 0x10, 0, 0, 0x80]).unwrap();
    assert_eq!(only_warning.records[0].warning_octet, Some(0x80));
    assert!(only_warning.readings()[0]
        .flags
        .contains(&Flag::ResultAboveDeviceRange));
}

#[test]
fn record_crc_mismatch_is_a_crc_error() {
    let e = CgmMeasurement::decode(&[0x08, 0x00, 0x0c, 0x10, 0x06, 0x00, 0x58, 0x6f]).unwrap_err();
    assert_eq!(
        e,
        DecodeError::Crc {
            what: "cgm-measurement",
            received: 0x6f58,
            computed: 0x6f59
        }
    );
    assert_eq!(
        e.to_string(),
        "cgm-measurement: E2E-CRC mismatch (field 0x6F58, computed 0x6F59)"
    );
    for flags in allowed_flags() {
        let b = record_bytes(flags, true);
        for i in 0..b.len() {
            let mut bad = b.clone();
            bad[i] ^= 0x01;
            let e = CgmMeasurement::decode(&bad);
            // Past the size and flags bytes the structure is unchanged: a CRC error.
            if i >= 2 {
                assert!(matches!(e, Err(DecodeError::Crc { .. })), "byte {i}: {e:?}");
            }
        }
    }
}

#[test]
fn a_flipped_flags_bit_can_turn_the_crc_into_a_field() {
    // Size 8 with flags 0x00 is "6 + CRC"; flags 0x01 makes the same size "6 + trend" with
    // no CRC. The format cannot tell these apart, so such a corruption decodes as a
    // different record. This is why the hub should check CGM Feature bit 12 against the
    // records it gets.
    for flags in allowed_flags() {
        let b = record_bytes(flags, true);
        for i in 0..2 {
            let mut bad = b.clone();
            bad[i] ^= 0x01;
            if let Ok(m) = CgmMeasurement::decode(&bad) {
                assert_ne!(m.encode().unwrap(), b);
                assert!(
                    m.records.iter().all(|r| !r.e2e_crc),
                    "flags {flags:#04x} byte {i}"
                );
            }
        }
    }
}

#[test]
fn decode_records_keeps_good_records_around_a_bad_one() {
    let good = record_bytes(0x83, true);
    let mut bad = record_bytes(0x00, true);
    bad[3] ^= 0x40;
    let mut b = good.clone();
    b.extend_from_slice(&bad);
    b.extend_from_slice(&record_bytes(0x00, false));
    let rs = decode_records(&b);
    assert_eq!(rs.len(), 3);
    assert!(rs[0].is_ok());
    assert!(matches!(rs[1], Err(DecodeError::Crc { .. })));
    assert!(rs[2].is_ok());
    assert!(matches!(
        CgmMeasurement::decode(&b),
        Err(DecodeError::Crc { .. })
    ));
    // A reserved-flags record is skipped by its size, too.
    let mut b = vec![6, 0x04, 0, 0, 0, 0];
    b.extend_from_slice(&good);
    let rs = decode_records(&b);
    assert!(matches!(rs[0], Err(DecodeError::ReservedFlags { .. })));
    assert!(rs[1].is_ok());
    // A size error ends the split: boundaries after it are unknown.
    let mut b = good.clone();
    b.extend_from_slice(&[3, 0, 0]);
    b.extend_from_slice(&good);
    let rs = decode_records(&b);
    assert_eq!(rs.len(), 2);
    assert!(rs[0].is_ok());
    assert!(rs[1].is_err());
    let mut b = good.clone();
    b.extend_from_slice(&[20, 0, 0, 0, 0, 0]);
    let rs = decode_records(&b);
    assert_eq!(rs.len(), 2);
    assert!(rs[1].is_err());
    assert!(matches!(
        decode_records(&[]).as_slice(),
        [Err(DecodeError::Empty { .. })]
    ));
}

fn start(y: u16, mo: u8, d: u8, h: u8, mi: u8) -> SessionStartTime {
    SessionStartTime {
        start: DateTime {
            year: y,
            month: mo,
            day: d,
            hour: h,
            minute: mi,
            second: 0,
        },
        time_zone: TimeZone(4),
        dst_offset: DstOffset(4),
        e2e_crc: false,
    }
}

#[test]
fn readings_are_timed_from_the_session_start() {
    let rec = |offset: u16| CgmRecord {
        glucose_mg_dl: SFloat::from_raw(0x100c),
        time_offset_min: offset,
        status_octet: None,
        cal_temp_octet: None,
        warning_octet: None,
        trend_mg_dl_min: None,
        quality_pct: None,
        e2e_crc: false,
    };
    let m = CgmMeasurement {
        records: vec![rec(5), rec(15), rec(60 * 24 * 2 + 1)],
    };
    let s = start(2024, 12, 31, 23, 50);
    let r = m.readings_with_session(Some(&s));
    assert_eq!(r.len(), 3);
    for x in &r {
        assert_eq!(x.kind, Kind::CgmGlucose);
        assert_eq!(x.unit, Unit::MgPerDl);
        assert_eq!(x.value, num(12, 1));
        assert_eq!(x.specimen, None);
        assert!(x.flags.is_empty());
    }
    let t = |y, mo, d, h, mi| Some(LocalDateTime::new(y, mo, d, h, mi, 0).unwrap());
    assert_eq!(r[0].device_time, t(2024, 12, 31, 23, 55));
    // Crossing midnight (and the year); the time zone is not applied.
    assert_eq!(r[1].device_time, t(2025, 1, 1, 0, 5));
    assert_eq!(r[2].device_time, t(2025, 1, 2, 23, 51));
    // Leap day.
    let r = m.readings_with_session(Some(&start(2024, 2, 28, 23, 55)));
    assert_eq!(r[0].device_time, t(2024, 2, 29, 0, 0));
    // No session, or an unknown start: no device time.
    assert!(m.readings().iter().all(|x| x.device_time.is_none()));
    let unknown = start(0, 4, 24, 13, 8);
    assert!(m
        .readings_with_session(Some(&unknown))
        .iter()
        .all(|x| x.device_time.is_none()));
}

#[test]
fn annunciation_bits_map_to_flags() {
    for (i, f) in STATUS_OCTET_FLAGS.iter().enumerate() {
        let set = annunciation_flags(Some(1 << i), None, None);
        assert_eq!(set, [*f].into_iter().collect(), "status bit {i}");
    }
    for (i, f) in CAL_TEMP_OCTET_FLAGS.iter().enumerate() {
        let set = annunciation_flags(None, Some(1 << i), None);
        assert_eq!(set, [*f].into_iter().collect(), "cal/temp bit {i}");
    }
    assert!(annunciation_flags(Some(0xC0), Some(0xC0), Some(0x3F)).is_empty());
    assert_eq!(
        annunciation_flags(None, None, Some(0x40)),
        [Flag::ResultBelowDeviceRange].into_iter().collect()
    );
    assert_eq!(
        annunciation_flags(None, None, Some(0x80)),
        [Flag::ResultAboveDeviceRange].into_iter().collect()
    );
    // The fixture record: battery low; calibration recommended, temperature too high; both
    // device-range bits (and the patient alerts, which give no flag).
    let m = CgmMeasurement::decode(&[
        0x0f, 0xe3, 0xd2, 0xe4, 0x05, 0x00, 0x02, 0x14, 0xff, 0x02, 0xf0, 0xe5, 0xf3, 0x8e, 0x3f,
    ])
    .unwrap();
    let r = &m.readings()[0];
    assert_eq!(
        r.flags,
        [
            Flag::DeviceBatteryLow,
            Flag::CgmCalibrationRecommended,
            Flag::SensorTemperatureTooHigh,
            Flag::ResultBelowDeviceRange,
            Flag::ResultAboveDeviceRange,
        ]
        .into_iter()
        .collect()
    );
    assert!(!r.is_alertable());
    let status = CgmStatus::decode(&[5, 0, 0x01, 0x08, 0x00]).unwrap();
    assert_eq!(
        status.flags(),
        [Flag::CgmSessionStopped, Flag::CgmCalibrationRequired]
            .into_iter()
            .collect()
    );
}

#[test]
fn feature_crc_checked_only_when_supported() {
    let b = [0x6e, 0x9e, 0x01, 0x16, 0x8a, 0xc1];
    let f = CgmFeature::decode(&b).unwrap();
    assert!(f.e2e_crc_supported());
    assert_eq!(f.unchecked_crc_field, None);
    assert_eq!((f.sample_type, f.sample_location), (6, 1));
    assert_eq!(f.encode().unwrap(), b);
    for i in 0..b.len() {
        let mut bad = b;
        bad[i] ^= 0x01;
        // Flipping bit 0 of byte 1 leaves bit 12 set; the CRC no longer matches.
        assert!(
            matches!(CgmFeature::decode(&bad), Err(DecodeError::Crc { .. })),
            "byte {i}"
        );
    }
    // Unsupported: 0xFFFF, or anything else, kept raw.
    for field in [0xFFFFu16, 0x1234] {
        let mut b = vec![0x01, 0x00, 0x00, 0x59];
        b.extend_from_slice(&field.to_le_bytes());
        let f = CgmFeature::decode(&b).unwrap();
        assert!(!f.e2e_crc_supported());
        assert_eq!(f.unchecked_crc_field, Some(field));
        assert_eq!(f.specimen(), Some(GlucoseSpecimen::InterstitialFluid));
        assert_eq!(f.location(), Some(SampleLocation::SubcutaneousTissue));
        assert_eq!(f.encode().unwrap(), b);
    }
    assert_eq!(
        CgmFeature::new(0x1000, 9, 5).encode().unwrap(),
        crc(vec![0x00, 0x10, 0x00, 0x59])
    );
    assert_eq!(
        CgmFeature::new(0x0001, 9, 5).encode().unwrap(),
        [0x01, 0x00, 0x00, 0x59, 0xff, 0xff]
    );
    for n in [0usize, 5, 7, 8] {
        assert!(matches!(
            CgmFeature::decode(&vec![0; n]),
            Err(DecodeError::Length { .. })
        ));
    }
}

/// `body` decodes, and with a CRC; lengths around both fail; any flipped byte with a CRC is a
/// CRC error.
/// The first `layout` bytes decide the layout (the SOCP op code): flipping them may give
/// another error than a CRC mismatch.
fn crc_length_table<T: GattValue + std::fmt::Debug + PartialEq>(body: &[u8], layout: usize) {
    let plain = T::decode(body).unwrap();
    assert_eq!(plain.encode().unwrap(), body);
    let with = crc(body.to_vec());
    let checked = T::decode(&with).unwrap();
    assert_eq!(checked.encode().unwrap(), with);
    assert_ne!(plain, checked);
    for n in [body.len() - 1, body.len() + 1, body.len() + 3] {
        let mut b = with.clone();
        b.resize(n, 0);
        assert!(
            matches!(
                T::decode(&b),
                Err(DecodeError::Length { .. } | DecodeError::Empty { .. })
            ),
            "{} bytes",
            n
        );
    }
    for i in 0..with.len() {
        let mut bad = with.clone();
        bad[i] ^= 0x80;
        let e = T::decode(&bad);
        if i < layout {
            assert!(e.is_err(), "byte {i}");
        } else {
            assert!(matches!(e, Err(DecodeError::Crc { .. })), "byte {i}: {e:?}");
        }
    }
}

#[test]
fn status_lengths_and_crc() {
    crc_length_table::<CgmStatus>(&[0x05, 0x00, 0x3f, 0x3f, 0xff], 0);
    let s = CgmStatus::decode(&[0x05, 0x00, 0x3f, 0x3f, 0xff, 0xa7, 0xe0]).unwrap();
    assert_eq!(s.status_u24(), 0xff3f3f);
    assert!(s.e2e_crc);
}

#[test]
fn session_start_time_lengths_crc_and_ranges() {
    let body = [0xe2, 0x07, 0x04, 0x18, 0x0d, 0x08, 0x18, 0x08, 0x04];
    crc_length_table::<SessionStartTime>(&body, 0);
    let s = SessionStartTime::decode(&crc(body.to_vec())).unwrap();
    assert_eq!(s.time_zone.minutes(), Some(120));
    assert_eq!(s.dst_offset.minutes(), Some(60));
    // Year 0 (unknown) is allowed.
    assert!(SessionStartTime::decode(&[0, 0, 4, 24, 13, 8, 24, 8, 2]).is_ok());
    // Out-of-range zone and DST, and a bad date.
    for bad in [
        [0xe2, 0x07, 4, 24, 13, 8, 24, 57, 0],
        [0xe2, 0x07, 4, 24, 13, 8, 24, 0x80 | 0x40, 0],
        [0xe2, 0x07, 4, 24, 13, 8, 24, 8, 3],
        [0xe2, 0x07, 13, 24, 13, 8, 24, 8, 0],
    ] {
        assert!(matches!(
            SessionStartTime::decode(&bad),
            Err(DecodeError::OutOfRange { .. })
        ));
    }
    let t = LocalDateTime::new(2024, 6, 1, 9, 0, 0).unwrap();
    let w = SessionStartTime::new(t, TimeZone(4), DstOffset(4), true);
    let b = w.encode().unwrap();
    assert_eq!(b.len(), 11);
    assert_eq!(SessionStartTime::decode(&b).unwrap(), w);
    let mut bad = w;
    bad.time_zone = TimeZone(60);
    assert!(bad.encode().is_err());
    bad = w;
    bad.dst_offset = DstOffset(1);
    assert!(bad.encode().is_err());
    let j = serde_json::to_value(s).unwrap();
    assert_eq!(j["time_zone_min"], 120);
    assert_eq!(j["dst_min"], 60);
}

#[test]
fn session_run_time_lengths_and_crc() {
    crc_length_table::<SessionRunTime>(&[0x02, 0x00], 0);
    assert_eq!(
        SessionRunTime::decode(&[0x02, 0x00, 0x08, 0xc3]).unwrap(),
        SessionRunTime {
            run_time_h: 2,
            e2e_crc: true
        }
    );
}

#[test]
fn socp_every_op_code_has_its_length() {
    for code in 1u8..=28 {
        let (len, _) = operand_len(code).unwrap();
        let mut body = vec![code];
        // A calibration record with valid nibbles; anything goes for the other operands.
        body.extend((0..len).map(|i| 0x11 * (i as u8 + 1)));
        let m = SocpMessage::decode(&body).unwrap_or_else(|e| panic!("op {code}: {e}"));
        assert_eq!(m.op.op_code(), code);
        assert!(op_name(code).is_some());
        crc_length_table::<SocpMessage>(&body, 1);
    }
    for code in [0u8, 29, 0x80, 0xff] {
        assert!(matches!(
            SocpMessage::decode(&[code]),
            Err(DecodeError::OutOfRange { .. })
        ));
    }
    assert!(matches!(
        SocpMessage::decode(&[]),
        Err(DecodeError::Empty { .. })
    ));
}

#[test]
fn socp_alert_op_codes_and_fixture_values() {
    for level in AlertLevel::ALL {
        let base = level.set_op_code();
        assert_eq!(AlertLevel::from_op_code(base), Some((level, 0)));
        assert_eq!(AlertLevel::from_op_code(base + 1), Some((level, 1)));
        assert_eq!(AlertLevel::from_op_code(base + 2), Some((level, 2)));
    }
    assert_eq!(AlertLevel::RateOfIncrease.set_op_code(), 22);
    let m = SocpMessage::decode(&[0x0c, 0x0b, 0xc0, 0x34, 0xbe]).unwrap();
    assert_eq!(
        m.op,
        SocpOp::AlertLevelResponse(AlertLevel::PatientLow, SFloat::from_raw(0xc00b))
    );
    assert!(m.e2e_crc);
    let m = SocpMessage::decode(&[
        0x06, 0x01, 0x20, 0x0a, 0x00, 0x32, 0x14, 0x00, 0x01, 0x00, 0x04,
    ])
    .unwrap();
    let SocpOp::CalibrationValueResponse(c) = m.op else {
        panic!("{m:?}")
    };
    assert_eq!(c.glucose_mg_dl.value(), num(1, 2));
    assert_eq!((c.sample_type, c.sample_location), (2, 3));
    assert_eq!(c.status, 0x04);
    let j = serde_json::to_value(m).unwrap();
    assert_eq!(
        j["calibration"]["status"]["set"][0],
        "calibration_process_pending"
    );
    let j = serde_json::to_value(SocpMessage::decode(&[0x1c, 0x02, 0x01]).unwrap()).unwrap();
    assert_eq!(j["response_code"]["name"], "success");
    assert_eq!(
        j["request_op_code"]["name"],
        "get_cgm_communication_interval"
    );
}

#[test]
fn hub_writes_have_the_documented_bytes() {
    assert_eq!(SocpMessage::start_session(false).encode().unwrap(), [0x1a]);
    assert_eq!(
        SocpMessage::start_session(true).encode().unwrap(),
        crc(vec![0x1a])
    );
    assert_eq!(SocpMessage::stop_session(false).encode().unwrap(), [0x1b]);
    assert_eq!(
        SocpMessage::set_communication_interval(5, true)
            .encode()
            .unwrap(),
        crc(vec![0x01, 0x05])
    );
    assert_eq!(
        SocpMessage::get_communication_interval(false)
            .encode()
            .unwrap(),
        [0x02]
    );
    assert_eq!(
        SocpMessage::get_calibration_value(0xFFFF, false)
            .encode()
            .unwrap(),
        [0x05, 0xff, 0xff]
    );
    assert_eq!(
        SocpMessage::set_alert_level(AlertLevel::Hypo, Decimal::new(70, 0), false)
            .unwrap()
            .encode()
            .unwrap(),
        // 70 is sent as 7e1.
        [0x0d, 0x07, 0x10]
    );
    // 2047 has no exact SFLOAT that is not a special value.
    assert!(SocpMessage::set_alert_level(AlertLevel::Hyper, Decimal::new(2047, 0), false).is_err());
    assert_eq!(
        SocpMessage::get_alert_level(AlertLevel::RateOfDecrease, false)
            .encode()
            .unwrap(),
        [0x14]
    );
    assert_eq!(
        SocpMessage::reset_device_specific_alert(false)
            .encode()
            .unwrap(),
        [0x19]
    );
    let cal = CalibrationRecord {
        glucose_mg_dl: SFloat::from_raw(0x2001),
        calibration_time_min: 10,
        sample_type: 2,
        sample_location: 3,
        next_calibration_time_min: 20,
        record_number: 1,
        status: 0,
    };
    assert_eq!(
        SocpMessage::set_calibration_value(cal, false)
            .encode()
            .unwrap(),
        [0x04, 0x01, 0x20, 0x0a, 0x00, 0x32, 0x14, 0x00, 0x01, 0x00, 0x00]
    );
    let mut bad = cal;
    bad.sample_type = 0x10;
    assert!(SocpMessage::set_calibration_value(bad, false)
        .encode()
        .is_err());
    assert_eq!(
        SFloat::from_raw(0x07ff).value(),
        Value::Special(Special::Nan)
    );
}

// --- property tests

fn record() -> impl Strategy<Value = CgmRecord> {
    (
        sfloat(),
        any::<u16>(),
        proptest::option::of(any::<u8>()),
        proptest::option::of(any::<u8>()),
        proptest::option::of(any::<u8>()),
        proptest::option::of(sfloat()),
        proptest::option::of(sfloat()),
        any::<bool>(),
    )
        .prop_map(|(g, t, s, c, w, tr, q, e2e_crc)| CgmRecord {
            glucose_mg_dl: g,
            time_offset_min: t,
            status_octet: s,
            cal_temp_octet: c,
            warning_octet: w,
            trend_mg_dl_min: tr,
            quality_pct: q,
            e2e_crc,
        })
}

fn feature() -> impl Strategy<Value = CgmFeature> {
    (0u32..=0x00FF_FFFF, 0u8..16, 0u8..16, any::<u16>()).prop_map(|(f, t, l, raw)| CgmFeature {
        features: f,
        sample_type: t,
        sample_location: l,
        unchecked_crc_field: (!bit(f, FEATURE_E2E_CRC)).then_some(raw),
    })
}

fn status() -> impl Strategy<Value = CgmStatus> {
    (any::<u16>(), any::<[u8; 3]>(), any::<bool>()).prop_map(|(t, [s, c, w], e2e_crc)| CgmStatus {
        time_offset_min: t,
        status_octet: s,
        cal_temp_octet: c,
        warning_octet: w,
        e2e_crc,
    })
}

fn session_start() -> impl Strategy<Value = SessionStartTime> {
    (
        date_time(),
        prop_oneof![Just(-128i8), -48i8..=56],
        prop::sample::select(vec![0u8, 2, 4, 8, 255]),
        any::<bool>(),
    )
        .prop_map(|(start, tz, dst, e2e_crc)| SessionStartTime {
            start,
            time_zone: TimeZone(tz),
            dst_offset: DstOffset(dst),
            e2e_crc,
        })
}

fn calibration() -> impl Strategy<Value = CalibrationRecord> {
    (
        sfloat(),
        any::<u16>(),
        0u8..16,
        0u8..16,
        any::<u16>(),
        any::<u16>(),
        any::<u8>(),
    )
        .prop_map(|(g, t, ty, loc, next, n, status)| CalibrationRecord {
            glucose_mg_dl: g,
            calibration_time_min: t,
            sample_type: ty,
            sample_location: loc,
            next_calibration_time_min: next,
            record_number: n,
            status,
        })
}

fn socp_op() -> impl Strategy<Value = SocpOp> {
    let level = prop::sample::select(AlertLevel::ALL.to_vec());
    prop_oneof![
        any::<u8>().prop_map(SocpOp::SetCommunicationInterval),
        Just(SocpOp::GetCommunicationInterval),
        any::<u8>().prop_map(SocpOp::CommunicationIntervalResponse),
        calibration().prop_map(SocpOp::SetCalibrationValue),
        any::<u16>().prop_map(SocpOp::GetCalibrationValue),
        calibration().prop_map(SocpOp::CalibrationValueResponse),
        (level.clone(), sfloat()).prop_map(|(l, v)| SocpOp::SetAlertLevel(l, v)),
        level.clone().prop_map(SocpOp::GetAlertLevel),
        (level, sfloat()).prop_map(|(l, v)| SocpOp::AlertLevelResponse(l, v)),
        Just(SocpOp::ResetDeviceSpecificAlert),
        Just(SocpOp::StartSession),
        Just(SocpOp::StopSession),
        (any::<u8>(), any::<u8>()).prop_map(|(q, c)| SocpOp::Response {
            request_op_code: q,
            response_code: c
        }),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn measurement_round_trips(records in proptest::collection::vec(record(), 1..6)) {
        let x = CgmMeasurement { records };
        let b = x.encode().unwrap();
        prop_assert_eq!(CgmMeasurement::decode(&b).unwrap(), x.clone());
        let split = decode_records(&b);
        prop_assert_eq!(split.len(), x.records.len());
        prop_assert_eq!(x.readings().len(), x.records.len());
    }

    #[test]
    fn feature_round_trips(x in feature()) {
        prop_assert_eq!(CgmFeature::decode(&x.encode().unwrap()).unwrap(), x);
    }

    #[test]
    fn status_round_trips(x in status()) {
        prop_assert_eq!(CgmStatus::decode(&x.encode().unwrap()).unwrap(), x);
    }

    #[test]
    fn session_start_round_trips(x in session_start()) {
        prop_assert_eq!(SessionStartTime::decode(&x.encode().unwrap()).unwrap(), x);
    }

    #[test]
    fn session_run_time_round_trips(h in any::<u16>(), e2e_crc in any::<bool>()) {
        let x = SessionRunTime { run_time_h: h, e2e_crc };
        prop_assert_eq!(SessionRunTime::decode(&x.encode().unwrap()).unwrap(), x);
    }

    #[test]
    fn socp_round_trips(op in socp_op(), e2e_crc in any::<bool>()) {
        let x = SocpMessage { op, e2e_crc };
        prop_assert_eq!(SocpMessage::decode(&x.encode().unwrap()).unwrap(), x);
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..40)) {
        let _ = CgmMeasurement::decode(&b);
        let _ = decode_records(&b);
        let _ = CgmFeature::decode(&b);
        let _ = CgmStatus::decode(&b);
        let _ = SessionStartTime::decode(&b);
        let _ = SessionRunTime::decode(&b);
        let _ = SocpMessage::decode(&b);
    }
}
