//! Fixture checks for `gatt::cgm`: every key of each vector's `expected` object is compared (an
//! unknown key fails the check). A vector marked `crc_ok: false` passes only when decoding reports
//! the CRC error; the harness then skips its re-encode step, since decoding failed.

use super::common::{all, date_time_matches, sfloat_matches, Vector};
use super::plx::{boolean, every_key, int, sfloat_opt};
use serde_json::Value as Json;
use vitals_hub::gatt::cgm::{
    decode_records, CgmFeature, CgmMeasurement, CgmRecord, CgmStatus, SessionRunTime,
    SessionStartTime, SocpMessage, SocpOp,
};
use vitals_hub::gatt::{DecodeError, GattValue, SFloat};

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// `e2e_crc` in the fixture: `null` for no CRC, else the CRC field, the last two bytes.
fn crc_field(want: &Json, present: bool, bytes: &[u8]) -> Result<(), String> {
    let last = bytes.len().checked_sub(2).and_then(|at| le16(bytes, at));
    match (want.as_i64(), present) {
        (None, false) if want.is_null() => Ok(()),
        (Some(w), true) if last.map(i64::from) == Some(w) => Ok(()),
        _ => Err(format!(
            "e2e_crc: present {present} (last two bytes {last:04x?}), expected {want}"
        )),
    }
}

/// The outcome of a CRC error against `e2e_crc` (the received field) and `crc_computed`.
fn crc_error(
    e: &DecodeError,
    want_field: Option<&Json>,
    computed: Option<&Json>,
) -> Result<(), String> {
    let DecodeError::Crc {
        received,
        computed: got_computed,
        ..
    } = e
    else {
        return Err(format!("expected a CRC error, got: {e}"));
    };
    let mut checks = vec![];
    if let Some(w) = want_field {
        checks.push(int("e2e_crc", w, Some((*received).into())));
    }
    if let Some(c) = computed {
        let hex = format!("0x{got_computed:04x}");
        checks.push(
            if c.as_str().map(str::to_ascii_lowercase) == Some(hex.clone()) {
                Ok(())
            } else {
                Err(format!("crc_computed: got {hex}, expected {c}"))
            },
        );
    }
    all(checks)
}

/// A value whose CRC is optional or feature-dependent: `crc_ok: false` must be a CRC error; a
/// decoded value is compared key by key (`e2e_crc` missing means no CRC).
fn crc_checked<T: GattValue>(
    v: &Vector,
    has_crc: impl Fn(&T) -> bool,
    one: impl Fn(&T, &str, &Json) -> Option<Result<(), String>>,
) -> Result<(), String> {
    let b = v.bytes();
    let crc_ok = v.get("crc_ok").and_then(Json::as_bool);
    match T::decode(&b) {
        Err(e) if crc_ok == Some(false) => crc_error(&e, v.get("e2e_crc"), v.get("crc_computed")),
        Err(e) => Err(format!("decode failed: {e}")),
        Ok(_) if crc_ok == Some(false) => Err("accepted a value whose E2E-CRC is wrong".into()),
        Ok(x) => {
            let missing = if v.get("e2e_crc").is_none() && has_crc(&x) {
                Err("decoded a CRC the fixture does not list".to_string())
            } else {
                Ok(())
            };
            all(vec![
                missing,
                every_key(v, |k, want| {
                    Some(match k {
                        "crc_ok" => boolean(k, want, true),
                        "e2e_crc" => crc_field(want, has_crc(&x), &b),
                        _ => return one(&x, k, want),
                    })
                }),
            ])
        }
    }
}

/// The raw records of a notification, split by their size bytes.
fn raw_records(b: &[u8]) -> Vec<&[u8]> {
    let mut out = vec![];
    let mut rest = b;
    while let Some(&size) = rest.first() {
        let n = usize::from(size).clamp(1, rest.len());
        let (rec, tail) = rest.split_at(n);
        out.push(rec);
        rest = tail;
    }
    out
}

/// One expected record against a decoded one.
fn record_key(rec: &CgmRecord, raw: &[u8], k: &str, want: &Json) -> Option<Result<(), String>> {
    Some(match k {
        "size" => {
            let enc = CgmMeasurement {
                records: vec![*rec],
            }
            .encode()
            .map(|e| e.len() as i64)
            .ok();
            all(vec![
                int(k, want, Some(raw.len() as i64)),
                int("size (re-encoded)", want, enc),
            ])
        }
        "flags" => {
            let enc = CgmMeasurement {
                records: vec![*rec],
            }
            .encode()
            .ok()
            .and_then(|e| e.get(1).copied());
            all(vec![
                int(k, want, raw.get(1).copied().map(Into::into)),
                int("flags (re-encoded)", want, enc.map(Into::into)),
            ])
        }
        "glucose_mg_dl" => sfloat_matches(rec.glucose_mg_dl, want),
        "time_offset_min" => int(k, want, Some(rec.time_offset_min.into())),
        "status_octet" => int(k, want, rec.status_octet.map(Into::into)),
        "cal_temp_octet" => int(k, want, rec.cal_temp_octet.map(Into::into)),
        "warning_octet" => int(k, want, rec.warning_octet.map(Into::into)),
        "trend_mg_dl_min" => sfloat_opt(k, want, rec.trend_mg_dl_min),
        "quality_pct" => sfloat_opt(k, want, rec.quality_pct),
        "e2e_crc" => crc_field(want, rec.e2e_crc, raw),
        "crc_ok" => boolean(k, want, true),
        _ => return None,
    })
}

/// One expected record whose decode failed: only a CRC error is acceptable, and the fields the
/// fixture lists are checked against the record's raw bytes.
fn failed_record_key(
    e: &DecodeError,
    raw: &[u8],
    computed: Option<&Json>,
    k: &str,
    want: &Json,
) -> Option<Result<(), String>> {
    Some(match k {
        "crc_ok" => all(vec![boolean(k, want, false), crc_error(e, None, computed)]),
        "e2e_crc" => crc_error(e, Some(want), None),
        "size" => int(k, want, Some(raw.len() as i64)),
        "flags" => int(k, want, raw.get(1).copied().map(Into::into)),
        "glucose_mg_dl" => match le16(raw, 2) {
            Some(g) => sfloat_matches(SFloat::from_raw(g), want),
            None => Err("record too short for its glucose".into()),
        },
        "time_offset_min" => int(k, want, le16(raw, 4).map(Into::into)),
        _ => return None,
    })
}

fn measurement(v: &Vector) -> Result<(), String> {
    let b = v.bytes();
    let raw = raw_records(&b);
    let split = decode_records(&b);
    let whole = CgmMeasurement::decode(&b);
    let want: Vec<&Json> = v
        .get("records")
        .and_then(Json::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let any_bad = want
        .iter()
        .any(|r| r.get("crc_ok").and_then(Json::as_bool) == Some(false));
    let computed = v.get("crc_computed");
    let mut checks = vec![
        if split.len() == want.len() && raw.len() == want.len() {
            Ok(())
        } else {
            Err(format!(
                "{} records decoded, {} expected",
                split.len(),
                want.len()
            ))
        },
        match (&whole, any_bad) {
            (Err(DecodeError::Crc { .. }), true) => Ok(()),
            (Ok(m), false) if m.records.len() == want.len() => Ok(()),
            (w, _) => Err(format!("decode gave {w:?}")),
        },
        every_key(v, |k, _| match k {
            // Checked with the record it belongs to.
            "records" | "crc_computed" => Some(Ok(())),
            _ => None,
        }),
    ];
    for (i, ((w, got), raw)) in want.iter().zip(&split).zip(&raw).enumerate() {
        let obj = match w.as_object() {
            Some(o) => o,
            None => {
                checks.push(Err(format!("records[{i}] is not an object")));
                continue;
            }
        };
        for (k, want) in obj {
            let r = match got {
                Ok(rec) => record_key(rec, raw, k, want),
                Err(e) => failed_record_key(e, raw, computed, k, want),
            };
            checks.push(
                r.unwrap_or_else(|| Err(format!("unchecked key `{k}`")))
                    .map_err(|m| format!("records[{i}]: {m}")),
            );
        }
        if let Err(e) = got {
            if !obj.contains_key("crc_ok") {
                checks.push(Err(format!("records[{i}]: decode failed: {e}")));
            }
        }
    }
    all(checks)
}

fn socp_key(m: &SocpMessage, k: &str, want: &Json) -> Option<Result<(), String>> {
    let cal = match &m.op {
        SocpOp::SetCalibrationValue(c) | SocpOp::CalibrationValueResponse(c) => Some(*c),
        _ => None,
    };
    let level = match &m.op {
        SocpOp::SetAlertLevel(_, l) | SocpOp::AlertLevelResponse(_, l) => Some(*l),
        _ => None,
    };
    let (req, code) = match m.op {
        SocpOp::Response {
            request_op_code,
            response_code,
        } => (Some(request_op_code.into()), Some(response_code.into())),
        _ => (None, None),
    };
    Some(match k {
        "op_code" => int(k, want, Some(m.op.op_code().into())),
        "request_op_code" => int(k, want, req),
        "response_code" => int(k, want, code),
        "level_mg_dl" | "level_mg_dl_min" => sfloat_opt(k, want, level),
        "glucose_mg_dl" => sfloat_opt(k, want, cal.map(|c| c.glucose_mg_dl)),
        "calibration_time_min" => int(k, want, cal.map(|c| c.calibration_time_min.into())),
        "type" => int(k, want, cal.map(|c| c.sample_type.into())),
        "sample_location" => int(k, want, cal.map(|c| c.sample_location.into())),
        "next_calibration_time_min" => {
            int(k, want, cal.map(|c| c.next_calibration_time_min.into()))
        }
        "record_number" => int(k, want, cal.map(|c| c.record_number.into())),
        "calibration_status" => int(k, want, cal.map(|c| c.status.into())),
        "communication_interval_min" => int(
            k,
            want,
            match m.op {
                SocpOp::SetCommunicationInterval(n) | SocpOp::CommunicationIntervalResponse(n) => {
                    Some(n.into())
                }
                _ => None,
            },
        ),
        _ => return None,
    })
}

/// `None` when the vector is not one of this module's characteristics.
pub fn check(v: &Vector) -> Option<Result<(), String>> {
    Some(match v.uuid() {
        "0x2AA7" => measurement(v),
        "0x2AA8" => crc_checked::<CgmFeature>(v, CgmFeature::e2e_crc_supported, |f, k, want| {
            Some(match k {
                "features_u24" => int(k, want, Some(f.features.into())),
                "type" => int(k, want, Some(f.sample_type.into())),
                "sample_location" => int(k, want, Some(f.sample_location.into())),
                _ => return None,
            })
        }),
        "0x2AA9" => crc_checked::<CgmStatus>(
            v,
            |s| s.e2e_crc,
            |s, k, want| {
                Some(match k {
                    "time_offset_min" => int(k, want, Some(s.time_offset_min.into())),
                    "status_u24" => int(k, want, Some(s.status_u24().into())),
                    "status_octet" => int(k, want, Some(s.status_octet.into())),
                    "cal_temp_octet" => int(k, want, Some(s.cal_temp_octet.into())),
                    "warning_octet" => int(k, want, Some(s.warning_octet.into())),
                    _ => return None,
                })
            },
        ),
        "0x2AAA" => crc_checked::<SessionStartTime>(
            v,
            |s| s.e2e_crc,
            |s, k, want| {
                Some(match k {
                    "start" => date_time_matches(&s.start, want),
                    "time_zone_raw" => int(k, want, Some(s.time_zone.0.into())),
                    "time_zone_min" => int(k, want, s.time_zone.minutes().map(Into::into)),
                    "dst_raw" => int(k, want, Some(s.dst_offset.0.into())),
                    "dst_min" => int(k, want, s.dst_offset.minutes().map(Into::into)),
                    _ => return None,
                })
            },
        ),
        "0x2AAB" => crc_checked::<SessionRunTime>(
            v,
            |s| s.e2e_crc,
            |s, k, want| {
                Some(match k {
                    "run_time_h" => int(k, want, Some(s.run_time_h.into())),
                    _ => return None,
                })
            },
        ),
        "0x2AAC" => crc_checked::<SocpMessage>(v, |m| m.e2e_crc, socp_key),
        _ => return None,
    })
}

#[test]
fn cgm_checks_compare_every_key() {
    super::plx::assert_checks_catch_mutations(
        &["0x2AA7", "0x2AA8", "0x2AA9", "0x2AAA", "0x2AAB", "0x2AAC"],
        check,
    );
}
