//! Observation mapping: a reading (or the components of one blood-pressure measurement) becomes a
//! PHD IG Observation; its PhdDevice, the hub's PhgDevice and, for an unsynchronised device clock,
//! the coincident-timestamp Observation come with it. Also the conditional-create identifiers and
//! the store's stable keys derived from them.

use super::bundle::{coding, entry, mdc_coding, Builder, EntryInfo, EntryKind, ReadingInput};
use super::codes::{self, mdc, DeviceClass, TypeCodes};
use super::identifier::{if_none_exist, IdTimestamp, ObservationIdentifier};
use super::{format_instant, format_local, DeviceClock, FhirError, HubInfo, PhdDeviceInfo};
use crate::model::{Decimal, Flag, Kind, Reading, Special, Unit, UtcMillis, Value};
use serde_json::{json, Map, Value as Json};

pub(super) fn is_bp_component(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Systolic | Kind::Diastolic | Kind::MeanArterialPressure
    )
}

fn code_of(tc: &TypeCodes, unit: Option<Unit>) -> Json {
    let mut c = vec![mdc_coding(tc.mdc)];
    for (code, display) in tc.loinc {
        // Glucose by glucometer in mmol/L has its own LOINC (fhir-phd.md table).
        let (code, display) = if *code == "41653-7" && unit == Some(Unit::MmolPerL) {
            (
                "14743-9",
                "Glucose [Moles/volume] in Capillary blood by Glucometer",
            )
        } else {
            (*code, *display)
        };
        c.push(coding(codes::LOINC, code, Some(display)));
    }
    json!({ "coding": c })
}

/// A JSON number with the decimal's value: an integer when it has no fraction, else the correctly
/// rounded binary value (serde_json prints the shortest text that round-trips).
fn number(d: Decimal) -> Json {
    let n = d.normalized();
    if n.exponent >= 0 {
        let scaled = 10i64
            .checked_pow(u32::from(n.exponent.unsigned_abs()))
            .and_then(|p| n.mantissa.checked_mul(p));
        if let Some(i) = scaled {
            return json!(i);
        }
    }
    serde_json::Number::from_f64(d.to_f64())
        .map(Json::Number)
        .unwrap_or(Json::Null)
}

fn quantity(d: Decimal, unit: Unit) -> Json {
    let human = match unit {
        Unit::MmHg => "mmHg",
        Unit::PerMin => "beats/minute",
        Unit::Cel => "°C",
        Unit::DegF => "°F",
        Unit::Lb => "lb",
        Unit::Inch => "in",
        u => u.ucum(),
    };
    json!({ "value": number(d), "unit": human, "system": codes::UCUM, "code": unit.ucum() })
}

fn data_absent(special: Option<Special>) -> Json {
    let (code, display) = match special {
        Some(Special::Nan) => ("not-a-number", "Not a Number (NaN)"),
        Some(Special::PosInf) => ("positive-infinity", "Positive Infinity (PINF)"),
        Some(Special::NegInf) => ("negative-infinity", "Negative Infinity (NINF)"),
        Some(Special::NRes) | Some(Special::Reserved) | None => ("error", "Error"),
    };
    json!({ "coding": [coding(codes::DATA_ABSENT, code, Some(display))] })
}

/// PoCD measurement-status code for a flag, where one exists.
fn measurement_status(flag: Flag) -> Option<&'static str> {
    use Flag::*;
    Some(match flag {
        InvalidMeasurement | EquipmentMalfunction | SensorMalfunction | SensorMalfunctioning
        | GeneralDeviceFault => "invalid",
        QuestionableMeasurement
        | SignalProcessingIrregularity
        | InadequateSignal
        | PoorSignal
        | ErraticSignal
        | QuestionablePulse
        | SensorInterference => "questionable",
        MeasurementUnavailable => "not-available",
        CalibrationOngoing => "calibration-ongoing",
        TestingData => "test-data",
        DemonstrationData => "demo-data",
        ValidatedData => "validated-data",
        EarlyEstimate => "early-indication",
        MeasurementOngoing => "msmt-ongoing",
        _ => return None,
    })
}

fn flag_name(flag: Flag) -> String {
    serde_json::to_value(flag)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn interpretations(r: &ReadingInput<'_>, flags: &[Flag]) -> Vec<Json> {
    let mut out = Vec::new();
    if let Some(i) = r.interpretation {
        let (code, display) = i.code();
        out.push(json!({ "coding": [coding(codes::INTERPRETATION, code, Some(display))] }));
    }
    for f in flags {
        let mut c = Vec::new();
        if let Some(s) = measurement_status(*f) {
            c.push(coding(codes::MEASUREMENT_STATUS, s, None));
        }
        c.push(coding(codes::HUB_FLAG_SYSTEM, &flag_name(*f), None));
        out.push(json!({ "coding": c }));
    }
    out
}

fn is_test(r: &ReadingInput<'_>) -> bool {
    r.test_data
        || r.reading.flags.contains(&Flag::TestingData)
        || r.reading.flags.contains(&Flag::DemonstrationData)
}

fn meta(profile: &str, test: bool) -> Json {
    let mut m = Map::new();
    m.insert(
        "profile".into(),
        json!([format!("{}{profile}", codes::PROFILE_BASE)]),
    );
    if test {
        m.insert(
            "security".into(),
            json!([coding(codes::ACT_REASON, "HTEST", Some("test health data"))]),
        );
    }
    Json::Object(m)
}

fn categories(vital: bool) -> Json {
    let mut c = vec![json!({ "coding": [coding(codes::PHD_CATEGORY, "phd", None)] })];
    if vital {
        c.push(
            json!({ "coding": [coding(codes::OBS_CATEGORY, "vital-signs", Some("Vital Signs"))] }),
        );
    }
    Json::Array(c)
}

fn device_identifiers(dev: &PhdDeviceInfo) -> (Vec<Json>, String) {
    let mut ids = Vec::new();
    let mut cond = None;
    if let Some(s) = dev.system_id {
        ids.push(json!({
            "type": { "coding": [coding(codes::CONTINUA_IDS, "SYSID", None)] },
            "system": codes::SYSID_SYSTEM, "value": s.dashed()
        }));
        cond = Some(if_none_exist(codes::SYSID_SYSTEM, &s.dashed()));
    }
    if let Some(m) = dev.bt_mac {
        ids.push(json!({
            "type": { "coding": [coding(codes::CONTINUA_IDS, "BTMAC", None)] },
            "system": codes::BTMAC_SYSTEM, "value": m.dashed()
        }));
        if cond.is_none() {
            cond = Some(if_none_exist(codes::BTMAC_SYSTEM, &m.dashed()));
        }
    }
    (ids, cond.unwrap_or_default())
}

fn version_entry(code: u32, value: &str) -> Json {
    json!({ "type": { "coding": [mdc_coding(code)] }, "value": value })
}

/// The PhdDevice resource and its `ifNoneExist`.
pub fn phd_device(dev: &PhdDeviceInfo) -> (Json, String) {
    let (ids, cond) = device_identifiers(dev);
    let mut versions = Vec::new();
    for (code, v) in [
        (mdc::ID_PROD_SPEC_FW, &dev.firmware),
        (mdc::ID_PROD_SPEC_HW, &dev.hardware),
        (mdc::ID_PROD_SPEC_SW, &dev.software),
    ] {
        if let Some(v) = v {
            versions.push(version_entry(code, v));
        }
    }
    if versions.is_empty() {
        // PhdDevice.version is 1..*; the device did not expose a revision string.
        versions.push(version_entry(mdc::ID_PROD_SPEC_FW, "unknown"));
    }
    let mut m = Map::new();
    m.insert("resourceType".into(), json!("Device"));
    m.insert("meta".into(), meta("PhdDevice", false));
    m.insert("identifier".into(), Json::Array(ids));
    m.insert(
        "manufacturer".into(),
        json!(dev.manufacturer.as_deref().unwrap_or("unknown")),
    );
    m.insert(
        "modelNumber".into(),
        json!(dev.model.as_deref().unwrap_or("unknown")),
    );
    if let Some(s) = &dev.serial {
        m.insert("serialNumber".into(), json!(s));
    }
    m.insert(
        "type".into(),
        json!({ "coding": [mdc_coding(mdc::MOC_VMS_MDS_SIMP)] }),
    );
    m.insert(
        "specialization".into(),
        json!([{ "systemType": { "coding": [mdc_coding(dev.class.specialization())] }, "version": "1" }]),
    );
    m.insert("version".into(), Json::Array(versions));
    (Json::Object(m), cond)
}

/// The PhgDevice (the hub) and its `ifNoneExist`.
pub fn phg_device(hub: &HubInfo) -> (Json, String) {
    let eui = super::Eui64::from_eui48(hub.mac);
    let specs: Vec<Json> = [
        DeviceClass::BloodPressure,
        DeviceClass::PulseOximeter,
        DeviceClass::Glucose,
        DeviceClass::Thermometer,
        DeviceClass::Scale,
        DeviceClass::Generic,
    ]
    .iter()
    .map(
        |c| json!({ "systemType": { "coding": [mdc_coding(c.specialization())] }, "version": "1" }),
    )
    .collect();
    let sync = if hub.ntp {
        mdc::TIME_SYNC_SNTPV4
    } else {
        mdc::TIME_SYNC_NONE
    };
    let resource = json!({
        "resourceType": "Device",
        "meta": meta("PhgDevice", false),
        "identifier": [
            { "type": { "coding": [coding(codes::CONTINUA_IDS, "SYSID", None)] },
              "system": codes::SYSID_SYSTEM, "value": eui.dashed() },
            { "type": { "coding": [coding(codes::CONTINUA_IDS, "ETHMAC", None)] },
              "system": codes::ETHMAC_SYSTEM, "value": hub.mac.dashed() }
        ],
        "manufacturer": hub.manufacturer,
        "modelNumber": hub.model,
        "type": { "coding": [mdc_coding(mdc::MOC_VMS_MDS_AHD)] },
        "specialization": specs,
        "version": [version_entry(mdc::ID_PROD_SPEC_SW, &hub.software_version)],
        "property": [
            { "type": { "coding": [mdc_coding(mdc::TIME_SYNC_PROTOCOL)] },
              "valueCode": [{ "coding": [mdc_coding(sync)] }] }
        ]
    });
    (resource, if_none_exist(codes::SYSID_SYSTEM, &eui.dashed()))
}

/// Where a device's reading times land on the hub's timeline.
struct TimeMap {
    effective: String,
    id_ts: IdTimestamp,
}

fn map_time(r: &ReadingInput<'_>, hub: &HubInfo) -> Result<TimeMap, FhirError> {
    match r.reading.device_time {
        None => Ok(TimeMap {
            effective: format_instant(r.received_at, hub.offset_at(r.received_at), true)?,
            id_ts: IdTimestamp::Reception(r.received_at),
        }),
        Some(t) => {
            let effective = match r.device.clock {
                DeviceClock::Synchronized { utc_offset_minutes }
                | DeviceClock::Unchecked { utc_offset_minutes } => {
                    format_local(&t, hub.offset_of_local(t, utc_offset_minutes))
                }
                DeviceClock::Coincident {
                    device,
                    hub: hub_at,
                } => {
                    // Shift onto the hub's timeline by the coincident difference (IG table row 3).
                    let delta_ms = hub_at.as_millis() - device.to_epoch_seconds() * 1000;
                    let utc = UtcMillis(t.to_epoch_seconds() * 1000 + delta_ms);
                    format_instant(utc, hub.offset_at(utc), false)?
                }
            };
            Ok(TimeMap {
                effective,
                id_ts: IdTimestamp::Device(t),
            })
        }
    }
}

impl Builder<'_, '_> {
    pub(super) fn extra_needed(&self, dev: &PhdDeviceInfo) -> usize {
        let mut n = 0;
        if !self.device_refs.contains_key(&dev.key) {
            n += 1;
        }
        if matches!(dev.clock, DeviceClock::Coincident { .. })
            && !self.cts_refs.contains_key(&dev.key)
        {
            n += 1;
        }
        n
    }

    fn device_ref(&mut self, dev: &PhdDeviceInfo) -> String {
        if let Some(r) = self.device_refs.get(&dev.key) {
            return r.clone();
        }
        let url = self.urn();
        let (resource, cond) = phd_device(dev);
        self.push(
            entry(&url, resource, "Device", cond.clone()),
            EntryInfo {
                kind: EntryKind::Device(dev.key.clone()),
                tags: vec![],
                identifier: cond,
            },
        );
        self.device_refs.insert(dev.key.clone(), url.clone());
        url
    }

    fn base_observation(
        &self,
        profile: &str,
        test: bool,
        id: &ObservationIdentifier,
        cts: Option<&str>,
    ) -> Map<String, Json> {
        let mut ext = vec![json!({
            "url": codes::GATEWAY_DEVICE_EXT,
            "valueReference": { "reference": self.hub_ref }
        })];
        if let Some(c) = cts {
            ext.push(json!({ "url": codes::CTS_EXT, "valueReference": { "reference": c } }));
        }
        let mut m = Map::new();
        m.insert("resourceType".into(), json!("Observation"));
        m.insert("meta".into(), meta(profile, test));
        m.insert("extension".into(), Json::Array(ext));
        m.insert(
            "identifier".into(),
            json!([{ "system": codes::OBS_IDENTIFIER_SYSTEM, "value": id.value() }]),
        );
        m.insert("status".into(), json!("final"));
        m
    }

    fn cts_ref(&mut self, dev: &PhdDeviceInfo, dev_ref: &str) -> Result<Option<String>, FhirError> {
        let DeviceClock::Coincident { device, hub } = dev.clock else {
            return Ok(None);
        };
        if let Some(r) = self.cts_refs.get(&dev.key) {
            return Ok(Some(r.clone()));
        }
        let id = ObservationIdentifier::new(
            dev.ident()?,
            self.ctx.patient_id,
            mdc::TIME_ABS,
            IdTimestamp::Device(device),
        );
        let url = self.urn();
        let off = self.ctx.hub.utc_offset_minutes;
        let mut m = self.base_observation("PhdCoincidentTimeStampObservation", false, &id, None);
        m.insert("category".into(), categories(false));
        m.insert(
            "code".into(),
            json!({ "coding": [mdc_coding(mdc::TIME_ABS)] }),
        );
        m.insert("subject".into(), json!({ "reference": dev_ref }));
        m.insert(
            "effectiveDateTime".into(),
            json!(format_instant(hub, off, true)?),
        );
        m.insert("valueDateTime".into(), json!(format_local(&device, off)));
        m.insert("device".into(), json!({ "reference": dev_ref }));
        let cond = id.if_none_exist();
        self.push(
            entry(&url, Json::Object(m), "Observation", cond),
            EntryInfo {
                kind: EntryKind::CoincidentTime,
                tags: vec![],
                identifier: id.value(),
            },
        );
        self.cts_refs.insert(dev.key.clone(), url.clone());
        Ok(Some(url))
    }

    pub(super) fn reading_group(&mut self, group: &[&ReadingInput<'_>]) -> Result<(), FhirError> {
        let Some(first) = group.first() else {
            return Ok(());
        };
        let dev = first.device;
        let compound = is_bp_component(first.reading.kind);
        let tc = if compound {
            codes::BP_PANEL
        } else {
            codes::type_codes(first.reading.kind, dev.class, first.reading.specimen)
                .ok_or_else(|| FhirError::Unmapped(first.reading.kind.to_string()))?
        };
        let time = map_time(first, self.ctx.hub)?;
        let id = ObservationIdentifier::new(dev.ident()?, self.ctx.patient_id, tc.mdc, time.id_ts);
        let dev_ref = self.device_ref(dev);
        let cts = self.cts_ref(dev, &dev_ref)?;
        let test = group.iter().any(|r| is_test(r));
        let profile = if compound {
            "PhdCompoundNumericObservation"
        } else {
            "PhdNumericObservation"
        };
        let mut m = self.base_observation(profile, test, &id, cts.as_deref());
        m.insert("category".into(), categories(tc.vital_sign));
        m.insert("code".into(), code_of(&tc, Some(first.reading.unit)));
        let subject = if first.reading.kind == Kind::BatteryLevel {
            dev_ref.clone()
        } else {
            format!("Patient/{}", self.ctx.patient_id)
        };
        m.insert("subject".into(), json!({ "reference": subject }));
        m.insert("effectiveDateTime".into(), json!(time.effective));
        let mut flags: Vec<Flag> = group
            .iter()
            .flat_map(|r| r.reading.flags.iter().copied())
            .collect();
        // A device time from a clock nobody checked is said so (never uploaded as synchronised).
        if matches!(dev.clock, DeviceClock::Unchecked { .. })
            && group.iter().any(|r| r.reading.device_time.is_some())
        {
            flags.push(Flag::DeviceClockUnchecked);
        }
        flags.sort();
        flags.dedup();
        let invalid = flags.contains(&Flag::InvalidMeasurement);
        // The device says the value is not final yet (PLXS early estimate, measurement ongoing).
        if flags.iter().any(|f| {
            matches!(
                f,
                Flag::MeasurementOngoing | Flag::EarlyEstimate | Flag::Intermediate
            )
        }) {
            m.insert("status".into(), json!("preliminary"));
        }
        if compound {
            let mut comps = Vec::new();
            let mut sorted: Vec<&&ReadingInput<'_>> = group.iter().collect();
            sorted.sort_by_key(|r| r.reading.kind);
            for r in sorted {
                let ctc = codes::type_codes(r.reading.kind, dev.class, None)
                    .ok_or_else(|| FhirError::Unmapped(r.reading.kind.to_string()))?;
                let mut c = Map::new();
                c.insert("code".into(), code_of(&ctc, Some(r.reading.unit)));
                match (r.reading.value, invalid) {
                    (Value::Number(d), false) => {
                        c.insert("valueQuantity".into(), quantity(d, r.reading.unit));
                    }
                    (v, _) => {
                        c.insert("dataAbsentReason".into(), data_absent(v.special()));
                    }
                }
                comps.push(Json::Object(c));
            }
            let interp = interpretations(first, &flags);
            if !interp.is_empty() {
                m.insert("interpretation".into(), Json::Array(interp));
            }
            m.insert("device".into(), json!({ "reference": dev_ref }));
            m.insert("component".into(), Json::Array(comps));
        } else {
            match (first.reading.value, invalid) {
                (Value::Number(d), false) => {
                    m.insert("valueQuantity".into(), quantity(d, first.reading.unit));
                }
                (v, _) => {
                    m.insert("dataAbsentReason".into(), data_absent(v.special()));
                }
            }
            let interp = interpretations(first, &flags);
            if !interp.is_empty() {
                m.insert("interpretation".into(), Json::Array(interp));
            }
            m.insert("device".into(), json!({ "reference": dev_ref }));
        }
        let url = self.urn();
        let cond = id.if_none_exist();
        self.push(
            entry(&url, Json::Object(m), "Observation", cond),
            EntryInfo {
                kind: EntryKind::Observation,
                tags: group.iter().map(|r| r.tag).collect(),
                identifier: id.value(),
            },
        );
        Ok(())
    }
}

/// The conditional-create identifier of the Observation a reading becomes (the compound BP
/// Observation's for a systolic/diastolic/mean reading).
pub fn reading_identifier(
    device: &PhdDeviceInfo,
    patient_id: &str,
    reading: &Reading,
    received_at: UtcMillis,
) -> Result<ObservationIdentifier, FhirError> {
    let mdc_type = if is_bp_component(reading.kind) {
        mdc::PRESS_BLD_NONINV
    } else {
        codes::type_codes(reading.kind, device.class, reading.specimen)
            .ok_or_else(|| FhirError::Unmapped(reading.kind.to_string()))?
            .mdc
    };
    let ts = match reading.device_time {
        Some(t) => IdTimestamp::Device(t),
        None => IdTimestamp::Reception(received_at),
    };
    let mut id = ObservationIdentifier::new(device.ident()?, patient_id, mdc_type, ts);
    // One identity per reading: without a device time, records of one notification share the
    // reception time; their record number tells them apart (as in the store's key).
    if reading.device_time.is_none() {
        id.record = reading.sequence;
    }
    Ok(id)
}

/// A per-reading stable key for the store's deduplication: the Observation identifier, plus the
/// component's MDC code for the components of a blood-pressure measurement (which share one
/// Observation). Kinds without a PHD mapping get `<device>-<patient>-<kind>-<timestamp>`.
pub fn stable_key(
    device: &PhdDeviceInfo,
    patient_id: &str,
    reading: &Reading,
    received_at: UtcMillis,
) -> Result<String, FhirError> {
    match reading_identifier(device, patient_id, reading, received_at) {
        Ok(id) if is_bp_component(reading.kind) => {
            let c = codes::type_codes(reading.kind, device.class, None)
                .map(|t| t.mdc)
                .unwrap_or_default();
            Ok(format!("{}-{c}", id.value()))
        }
        Ok(id) => Ok(id.value()),
        Err(FhirError::Unmapped(kind)) => {
            let ts = match reading.device_time {
                Some(t) => IdTimestamp::Device(t),
                None => IdTimestamp::Reception(received_at),
            };
            Ok(format!(
                "{}-{patient_id}-{kind}-{}",
                device.ident()?,
                ts.encode()
            ))
        }
        Err(e) => Err(e),
    }
}
