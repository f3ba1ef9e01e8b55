//! Transaction Bundles: Observations, PhdDevice / PhgDevice, coincident timestamps, alerts and the
//! heartbeat, each entry a conditional create.

use super::codes::{self, mdc, DeviceClass, TypeCodes};
use super::identifier::{if_none_exist, IdTimestamp, ObservationIdentifier};
use super::{
    format_instant, format_local, DeviceClock, FhirError, HubInfo, Interpretation, PhdDeviceInfo,
};
use crate::model::{Decimal, Flag, Kind, Reading, Special, Unit, UtcMillis, Value};
use serde_json::{json, Map, Value as Json};
use std::collections::{HashMap, HashSet};

/// Entries per transaction Bundle, at most (fhir-phd.md: keep bundles ≤ ~50).
pub const MAX_ENTRIES: usize = 50;

/// One reading to upload.
#[derive(Debug, Clone)]
pub struct ReadingInput<'a> {
    /// The caller's id for this reading (the outbox id); reported back per entry.
    pub tag: i64,
    pub device: &'a PhdDeviceInfo,
    pub reading: &'a Reading,
    pub received_at: UtcMillis,
    pub test_data: bool,
    /// Set by the alert rules when a threshold applies (L/H/LL/HH).
    pub interpretation: Option<Interpretation>,
}

/// One hub alert to upload (as a `Communication`).
#[derive(Debug, Clone)]
pub struct AlertInput<'a> {
    pub tag: i64,
    pub payload: &'a Json,
    pub stable_key: &'a str,
}

/// An item of a batch, in outbox order.
#[derive(Debug, Clone)]
pub enum Item<'a> {
    Reading(ReadingInput<'a>),
    Alert(AlertInput<'a>),
}

impl Item<'_> {
    pub fn tag(&self) -> i64 {
        match self {
            Item::Reading(r) => r.tag,
            Item::Alert(a) => a.tag,
        }
    }
}

/// What the bundle is built against.
#[derive(Debug, Clone)]
pub struct BundleContext<'a> {
    /// The provisioned patient's logical id (`Patient/<id>`).
    pub patient_id: &'a str,
    pub hub: &'a HubInfo,
    /// The server's id of the hub's PhgDevice (`Device/…`), once known.
    pub hub_ref: Option<&'a str>,
    /// The server's ids of PhdDevices, by store device key.
    pub device_refs: &'a HashMap<String, String>,
    /// Random per bundle; makes the `urn:uuid` fullUrls unique.
    pub nonce: u64,
    /// More items may follow the last one (the batch was full): keep a trailing blood-pressure group
    /// for the next bundle so its components are never split.
    pub more_may_follow: bool,
}

/// What an entry of the built bundle stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    HubDevice,
    /// A PhdDevice, by store device key.
    Device(String),
    Observation,
    CoincidentTime,
    Alert,
    HubStatus,
}

/// One bundle entry: its kind and the caller's tags it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    pub kind: EntryKind,
    pub tags: Vec<i64>,
    /// The conditional-create identifier value (never logged: it contains the patient id).
    pub identifier: String,
}

/// A built transaction Bundle.
#[derive(Debug, Clone)]
pub struct BuiltBundle {
    pub json: Json,
    pub entries: Vec<EntryInfo>,
    /// How many input items this bundle covers (mapped, or listed in `unmapped`).
    pub consumed: usize,
    /// Items that cannot be mapped; the caller rejects them with the reason.
    pub unmapped: Vec<(i64, FhirError)>,
}

impl BuiltBundle {
    /// Tags of every item carried by an entry of this bundle.
    pub fn tags(&self) -> Vec<i64> {
        self.entries
            .iter()
            .flat_map(|e| e.tags.iter().copied())
            .collect()
    }
}

fn is_bp_component(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Systolic | Kind::Diastolic | Kind::MeanArterialPressure
    )
}

fn coding(system: &str, code: &str, display: Option<&str>) -> Json {
    let mut m = Map::new();
    m.insert("system".into(), json!(system));
    m.insert("code".into(), json!(code));
    if let Some(d) = display {
        m.insert("display".into(), json!(d));
    }
    Json::Object(m)
}

fn mdc_coding(code: u32) -> Json {
    coding(codes::MDC, &code.to_string(), codes::mdc_display(code))
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

fn entry(full_url: &str, resource: Json, url: &str, if_none: String) -> Json {
    json!({
        "fullUrl": full_url,
        "resource": resource,
        "request": { "method": "POST", "url": url, "ifNoneExist": if_none }
    })
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
            effective: format_instant(r.received_at, hub.utc_offset_minutes, true)?,
            id_ts: IdTimestamp::Reception(r.received_at),
        }),
        Some(t) => {
            let effective = match r.device.clock {
                DeviceClock::Synchronized { utc_offset_minutes } => {
                    format_local(&t, utc_offset_minutes)
                }
                DeviceClock::Coincident {
                    device,
                    hub: hub_at,
                } => {
                    // Shift onto the hub's timeline by the coincident difference (IG table row 3).
                    let delta_ms = hub_at.as_millis() - device.to_epoch_seconds() * 1000;
                    let utc = UtcMillis(t.to_epoch_seconds() * 1000 + delta_ms);
                    format_instant(utc, hub.utc_offset_minutes, false)?
                }
            };
            Ok(TimeMap {
                effective,
                id_ts: IdTimestamp::Device(t),
            })
        }
    }
}

struct Builder<'c, 'a> {
    ctx: &'c BundleContext<'a>,
    entries: Vec<Json>,
    infos: Vec<EntryInfo>,
    hub_ref: String,
    device_refs: HashMap<String, String>,
    cts_refs: HashMap<String, String>,
    counter: u64,
}

impl Builder<'_, '_> {
    fn urn(&mut self) -> String {
        self.counter += 1;
        let n = self.ctx.nonce;
        format!(
            "urn:uuid:{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (n >> 32) as u32,
            (n >> 16) as u16,
            (n & 0xfff) as u16,
            ((n >> 12) & 0xfff) as u16,
            self.counter
        )
    }

    fn push(&mut self, e: Json, info: EntryInfo) {
        self.entries.push(e);
        self.infos.push(info);
    }

    /// Entries a reading group would add besides its Observation: its device and CTS if new.
    fn extra_needed(&self, dev: &PhdDeviceInfo) -> usize {
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

    fn reading_group(&mut self, group: &[&ReadingInput<'_>]) -> Result<(), FhirError> {
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

    fn alert(&mut self, a: &AlertInput<'_>) {
        let url = self.urn();
        let (resource, rtype) = match a.payload.get("alert") {
            Some(event) => (self.detected_issue(a, event), "DetectedIssue"),
            None => (self.hub_notice(a), "Communication"),
        };
        let cond = if_none_exist(codes::ALERT_IDENTIFIER_SYSTEM, a.stable_key);
        self.push(
            entry(&url, resource, rtype, cond),
            EntryInfo {
                kind: EntryKind::Alert,
                tags: vec![a.tag],
                identifier: a.stable_key.to_owned(),
            },
        );
    }

    /// A clinical alert event (threshold, trend, missed measurement) as a `DetectedIssue`: the
    /// resource a clinic server can search by patient, with the triggering Observations in
    /// `implicated` (by their conditional-create identifiers, so they need not be in this bundle)
    /// and a resolution as `mitigation`.
    fn detected_issue(&self, a: &AlertInput<'_>, event: &Json) -> Json {
        let text = |k: &str| {
            event
                .get(k)
                .and_then(Json::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let severity = match text("severity").as_str() {
            "critical_low" | "critical_high" => "high",
            "low" | "high" => "moderate",
            _ => "low",
        };
        let subject = event.get("subject").cloned().unwrap_or(Json::Null);
        let rule = match subject.get("type").and_then(Json::as_str) {
            Some("threshold") => format!(
                "threshold-{}",
                subject
                    .get("kind")
                    .and_then(Json::as_str)
                    .unwrap_or("unknown")
            ),
            Some("weight_gain") => format!(
                "weight-gain-{}h",
                subject
                    .get("window_hours")
                    .and_then(Json::as_u64)
                    .unwrap_or(0)
            ),
            Some("overdue") => "overdue-measurement".to_owned(),
            _ => "other".to_owned(),
        };
        let at = event
            .get("at")
            .and_then(Json::as_i64)
            .map(|ms| UtcMillis(ms).to_rfc3339())
            .unwrap_or_default();
        let implicated: Vec<Json> = a
            .payload
            .get("observations")
            .and_then(Json::as_array)
            .map(|v| {
                v.iter()
                    .map(|id| json!({ "type": "Observation", "identifier": id }))
                    .collect()
            })
            .unwrap_or_default();
        let mut m = serde_json::Map::new();
        m.insert("resourceType".into(), json!("DetectedIssue"));
        m.insert(
            "identifier".into(),
            json!([
                { "system": codes::ALERT_IDENTIFIER_SYSTEM, "value": a.stable_key },
                { "system": codes::ALERT_EPISODE_SYSTEM, "value": text("episode") }
            ]),
        );
        m.insert("status".into(), json!("final"));
        m.insert(
            "code".into(),
            json!({
                "coding": [{ "system": codes::ALERT_RULE_SYSTEM, "code": rule }],
                "text": format!("{} {}", text("transition"), text("severity"))
            }),
        );
        m.insert("severity".into(), json!(severity));
        m.insert(
            "patient".into(),
            json!({ "reference": format!("Patient/{}", self.ctx.patient_id) }),
        );
        m.insert("identifiedDateTime".into(), json!(at));
        m.insert("author".into(), json!({ "reference": self.hub_ref }));
        if !implicated.is_empty() {
            m.insert("implicated".into(), Json::Array(implicated));
        }
        m.insert("detail".into(), json!(text("detail")));
        if text("transition") == "resolved" {
            m.insert(
                "mitigation".into(),
                json!([{ "action": { "text": "resolved: back within limits" }, "date": at }]),
            );
        }
        Json::Object(m)
    }

    /// A notice about the hub itself (certificate expiring, an upload the clinic refused).
    fn hub_notice(&self, a: &AlertInput<'_>) -> Json {
        let text = serde_json::to_string(a.payload).unwrap_or_default();
        // The technician's commissioning report travels the same way, as routine news.
        let (category, priority) = if a.payload.get("commissioning_report").is_some() {
            ("vitals-hub commissioning report", "routine")
        } else {
            ("vitals-hub alert", "urgent")
        };
        json!({
            "resourceType": "Communication",
            "identifier": [{ "system": codes::ALERT_IDENTIFIER_SYSTEM, "value": a.stable_key }],
            "status": "completed",
            "category": [{ "text": category }],
            "priority": priority,
            "subject": { "reference": format!("Patient/{}", self.ctx.patient_id) },
            "sender": { "reference": self.hub_ref },
            "payload": [{ "contentString": text }]
        })
    }

    fn finish(self, consumed: usize, unmapped: Vec<(i64, FhirError)>) -> BuiltBundle {
        BuiltBundle {
            json: json!({ "resourceType": "Bundle", "type": "transaction", "entry": self.entries }),
            entries: self.infos,
            consumed,
            unmapped,
        }
    }
}

fn new_builder<'c, 'a>(ctx: &'c BundleContext<'a>) -> Builder<'c, 'a> {
    let mut b = Builder {
        ctx,
        entries: Vec::new(),
        infos: Vec::new(),
        hub_ref: String::new(),
        device_refs: ctx.device_refs.clone(),
        cts_refs: HashMap::new(),
        counter: 0,
    };
    b.hub_ref = match ctx.hub_ref {
        Some(r) => r.to_owned(),
        None => {
            let url = b.urn();
            let (resource, cond) = phg_device(ctx.hub);
            b.push(
                entry(&url, resource, "Device", cond.clone()),
                EntryInfo {
                    kind: EntryKind::HubDevice,
                    tags: vec![],
                    identifier: cond,
                },
            );
            url
        }
    };
    b
}

/// Group adjacent items: the BP components of one measurement together, everything else alone.
fn groups<'i, 'a>(items: &'i [Item<'a>]) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    let key = |it: &Item<'_>| match it {
        Item::Reading(r) if is_bp_component(r.reading.kind) => {
            Some((r.device.key.clone(), r.reading.device_time, r.received_at))
        }
        _ => None,
    };
    let mut i = 0;
    while i < items.len() {
        let k = items.get(i).and_then(key);
        let mut j = i + 1;
        if k.is_some() {
            let mut seen: HashSet<Kind> = HashSet::new();
            if let Some(Item::Reading(r)) = items.get(i) {
                seen.insert(r.reading.kind);
            }
            while let Some(Item::Reading(r)) = items.get(j) {
                if items.get(j).and_then(key) != k || !seen.insert(r.reading.kind) {
                    break;
                }
                j += 1;
            }
        }
        out.push((i, j));
        i = j;
    }
    out
}

/// Build one transaction Bundle from the front of `items` (at most [`MAX_ENTRIES`] entries).
/// `consumed` says how many items it covers; the rest go into the next bundle.
pub fn build(ctx: &BundleContext<'_>, items: &[Item<'_>]) -> BuiltBundle {
    let mut b = new_builder(ctx);
    let mut unmapped = Vec::new();
    let gs = groups(items);
    let mut consumed = 0;
    let last = gs.len().saturating_sub(1);
    for (gi, (start, end)) in gs.iter().copied().enumerate() {
        let slice = items.get(start..end).unwrap_or_default();
        let readings: Vec<&ReadingInput<'_>> = slice
            .iter()
            .filter_map(|it| match it {
                Item::Reading(r) => Some(r),
                Item::Alert(_) => None,
            })
            .collect();
        if gi == last && gi > 0 && ctx.more_may_follow {
            if let Some(r) = readings.first() {
                if is_bp_component(r.reading.kind) {
                    break;
                }
            }
        }
        let need = 1 + readings
            .first()
            .map(|r| b.extra_needed(r.device))
            .unwrap_or(0);
        if b.entries.len() + need > MAX_ENTRIES && consumed > 0 {
            break;
        }
        match slice.first() {
            Some(Item::Alert(a)) => b.alert(a),
            Some(Item::Reading(_)) => {
                let before = (b.entries.len(), b.device_refs.clone(), b.cts_refs.clone());
                if let Err(e) = b.reading_group(&readings) {
                    // Roll back any device / CTS entry added for this group only.
                    b.entries.truncate(before.0);
                    b.infos.truncate(before.0);
                    b.device_refs = before.1;
                    b.cts_refs = before.2;
                    for r in &readings {
                        unmapped.push((r.tag, e.clone()));
                    }
                }
            }
            None => {}
        }
        consumed = end;
    }
    b.finish(consumed, unmapped)
}

/// What the heartbeat reports about one medical device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceStatus {
    pub ident: super::DeviceIdent,
    pub last_seen_secs: Option<i64>,
    pub battery_percent: Option<u8>,
}

/// The hub's status for the heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubStatus {
    pub at: UtcMillis,
    pub backlog: u64,
    pub free_disk_bytes: Option<u64>,
    pub cert_days_left: Option<i64>,
    pub devices: Vec<DeviceStatus>,
}

/// The heartbeat: the PhgDevice plus hub-status Observations (subject = the hub).
pub fn heartbeat_bundle(
    ctx: &BundleContext<'_>,
    status: &HubStatus,
) -> Result<BuiltBundle, FhirError> {
    let ctx = BundleContext {
        hub_ref: None,
        ..ctx.clone()
    };
    let mut b = new_builder(&ctx);
    let hub_id = super::Eui64::from_eui48(ctx.hub.mac).compact();
    let secs = status.at.as_millis().div_euclid(1000) - super::EPOCH_2000_SECS;
    let at = format_instant(status.at, ctx.hub.utc_offset_minutes, true)?;
    let obs = |b: &mut Builder<'_, '_>,
               code: &str,
               suffix: &str,
               value: (&str, Json),
               focus: Option<Json>| {
        let ident = format!("{hub_id}-hub-status-{code}{suffix}-{secs}");
        let mut m = Map::new();
        m.insert("resourceType".into(), json!("Observation"));
        m.insert(
            "identifier".into(),
            json!([{ "system": codes::HUB_STATUS_SYSTEM, "value": ident }]),
        );
        m.insert("status".into(), json!("final"));
        m.insert(
            "category".into(),
            json!([{ "coding": [coding(codes::PHD_CATEGORY, "phd", None)] }]),
        );
        let code_json = if code == "battery" {
            json!({ "coding": [mdc_coding(mdc::BATT_CHARGE)] })
        } else {
            json!({ "coding": [coding(codes::HUB_STATUS_SYSTEM, code, None)] })
        };
        m.insert("code".into(), code_json);
        m.insert("subject".into(), json!({ "reference": b.hub_ref }));
        if let Some(f) = focus {
            m.insert("focus".into(), json!([f]));
        }
        m.insert("effectiveDateTime".into(), json!(at));
        m.insert(value.0.into(), value.1);
        m.insert("device".into(), json!({ "reference": b.hub_ref }));
        let url = b.urn();
        let cond = if_none_exist(codes::HUB_STATUS_SYSTEM, &ident);
        b.push(
            entry(&url, Json::Object(m), "Observation", cond),
            EntryInfo {
                kind: EntryKind::HubStatus,
                tags: vec![],
                identifier: ident,
            },
        );
    };
    let q = |v: Json, unit: &str| json!({ "value": v, "unit": unit, "system": codes::UCUM, "code": unit });
    obs(
        &mut b,
        "backlog-depth",
        "",
        ("valueQuantity", q(json!(status.backlog), "1")),
        None,
    );
    if let Some(f) = status.free_disk_bytes {
        obs(
            &mut b,
            "free-disk",
            "",
            ("valueQuantity", q(json!(f), "By")),
            None,
        );
    }
    if let Some(d) = status.cert_days_left {
        obs(
            &mut b,
            "cert-days-left",
            "",
            ("valueQuantity", q(json!(d), "d")),
            None,
        );
    }
    obs(
        &mut b,
        "software-version",
        "",
        ("valueString", json!(ctx.hub.software_version)),
        None,
    );
    for d in status
        .devices
        .iter()
        .take(MAX_ENTRIES.saturating_sub(8) / 2)
    {
        let (system, value) = match d.ident {
            super::DeviceIdent::SystemId(e) => (codes::SYSID_SYSTEM, e.dashed()),
            super::DeviceIdent::BtMac(m) => (codes::BTMAC_SYSTEM, m.dashed()),
        };
        let focus = json!({ "identifier": { "system": system, "value": value } });
        let suffix = format!("-{}", d.ident);
        if let Some(s) = d.last_seen_secs {
            obs(
                &mut b,
                "device-last-seen",
                &suffix,
                ("valueQuantity", q(json!(s), "s")),
                Some(focus.clone()),
            );
        }
        if let Some(p) = d.battery_percent {
            obs(
                &mut b,
                "battery",
                &suffix,
                ("valueQuantity", q(json!(p), "%")),
                Some(focus),
            );
        }
    }
    Ok(b.finish(0, Vec::new()))
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
    Ok(ObservationIdentifier::new(
        device.ident()?,
        patient_id,
        mdc_type,
        ts,
    ))
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
