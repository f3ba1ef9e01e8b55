//! Code systems and the measurement table (fhir-phd.md "Codes and units").
//!
//! MDC codes are the 32-bit `partition << 16 | term` in decimal. Codes marked "(verify)" are not in
//! the design table and follow the MDC glucose term pattern; confirm them with the clinic backend.

use crate::model::{GlucoseSpecimen, Kind};

pub const MDC: &str = "urn:iso:std:iso:11073:10101";
pub const LOINC: &str = "http://loinc.org";
pub const UCUM: &str = "http://unitsofmeasure.org";
pub const PHD_CATEGORY: &str = "http://hl7.org/fhir/uv/phd/CodeSystem/PhdObservationCategories";
pub const OBS_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";
pub const OBS_IDENTIFIER_SYSTEM: &str =
    "http://hl7.org/fhir/uv/phd/StructureDefinition/PhdBaseObservation";
pub const GATEWAY_DEVICE_EXT: &str =
    "http://hl7.org/fhir/StructureDefinition/observation-gatewayDevice";
pub const CTS_EXT: &str =
    "http://hl7.org/fhir/uv/phd/StructureDefinition/CoincidentTimeStampReference";
pub const CONTINUA_IDS: &str = "http://terminology.hl7.org/CodeSystem/ContinuaDeviceIdentifiers";
pub const SYSID_SYSTEM: &str = "urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680";
pub const BTMAC_SYSTEM: &str = "http://hl7.org/fhir/sid/eui-48/bluetooth";
pub const ETHMAC_SYSTEM: &str = "http://hl7.org/fhir/sid/eui-48/ethernet";
pub const DATA_ABSENT: &str = "http://terminology.hl7.org/CodeSystem/data-absent-reason";
pub const ACT_REASON: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
pub const MEASUREMENT_STATUS: &str = "http://hl7.org/fhir/uv/pocd/CodeSystem/measurement-status";
pub const INTERPRETATION: &str =
    "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation";
/// The hub's own code system for device status flags that have no PoCD measurement-status code.
pub const HUB_FLAG_SYSTEM: &str = "https://vitals-hub.invalid/fhir/CodeSystem/reading-flag";
/// Extension on a DetectedIssue raised by a late reading: how long after its measurement it
/// reached the hub (`valueDuration` in minutes).
pub const LATE_BY_EXTENSION: &str = "https://vitals-hub.invalid/fhir/StructureDefinition/late-by";
/// Identifier system of hub alerts (uploaded as `Communication`).
pub const ALERT_IDENTIFIER_SYSTEM: &str = "https://vitals-hub.invalid/fhir/alert";
/// Identifies the alert episode a DetectedIssue belongs to (raised, escalated and resolved share it).
pub const ALERT_EPISODE_SYSTEM: &str = "https://vitals-hub.invalid/fhir/alert-episode";
/// The hub's alert rules (`threshold-glucose`, `weight-gain-24h`, `overdue-measurement`).
pub const ALERT_RULE_SYSTEM: &str = "https://vitals-hub.invalid/fhir/CodeSystem/alert-rule";
/// Identifier system of hub-status observations (heartbeat).
pub const HUB_STATUS_SYSTEM: &str = "https://vitals-hub.invalid/fhir/CodeSystem/hub-status";

pub const PROFILE_BASE: &str = "http://hl7.org/fhir/uv/phd/StructureDefinition/";

/// MDC codes used outside the measurement table.
pub mod mdc {
    pub const PRESS_BLD_NONINV: u32 = 150020;
    pub const PRESS_BLD_NONINV_SYS: u32 = 150021;
    pub const PRESS_BLD_NONINV_DIA: u32 = 150022;
    pub const PRESS_BLD_NONINV_MEAN: u32 = 150023;
    pub const TIME_ABS: u32 = 67975;
    pub const TIME_SYNC_PROTOCOL: u32 = 68220;
    pub const TIME_SYNC_ACCURACY: u32 = 68221;
    pub const TIME_SYNC_SNTPV4: u32 = 532228;
    pub const TIME_SYNC_NONE: u32 = 532224;
    pub const BATT_CHARGE: u32 = 67996;
    pub const MOC_VMS_MDS_SIMP: u32 = 65573;
    pub const MOC_VMS_MDS_AHD: u32 = 531981;
    pub const ID_PROD_SPEC_HW: u32 = 531974;
    pub const ID_PROD_SPEC_SW: u32 = 531975;
    pub const ID_PROD_SPEC_FW: u32 = 531976;
    pub const DEV_SPEC_PULS_OXIM: u32 = 528388;
    pub const DEV_SPEC_BPM: u32 = 528391;
    pub const DEV_SPEC_TEMP: u32 = 528392;
    pub const DEV_SPEC_SCALE: u32 = 528399;
    pub const DEV_SPEC_GLUCOSE: u32 = 528401;
    pub const DEV_SPEC_GENERIC: u32 = 528457;
}

/// Display name of the MDC codes the hub emits (the reference id).
pub fn mdc_display(code: u32) -> Option<&'static str> {
    Some(match code {
        150020 => "MDC_PRESS_BLD_NONINV",
        150021 => "MDC_PRESS_BLD_NONINV_SYS",
        150022 => "MDC_PRESS_BLD_NONINV_DIA",
        150023 => "MDC_PRESS_BLD_NONINV_MEAN",
        149546 => "MDC_PULS_RATE_NON_INV",
        149530 => "MDC_PULS_OXIM_PULS_RATE",
        147842 => "MDC_ECG_HEART_RATE",
        147240 => "MDC_ECG_TIME_PD_RR_GL",
        150456 => "MDC_PULS_OXIM_SAT_O2",
        188736 => "MDC_MASS_BODY_ACTUAL",
        188740 => "MDC_LEN_BODY_ACTUAL",
        188752 => "MDC_RATIO_MASS_BODY_LEN_SQ",
        150364 => "MDC_TEMP_BODY",
        160184 => "MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD",
        160188 => "MDC_CONC_GLU_CAPILLARY_PLASMA",
        160192 => "MDC_CONC_GLU_VENOUS_WHOLEBLOOD",
        160196 => "MDC_CONC_GLU_VENOUS_PLASMA",
        160200 => "MDC_CONC_GLU_ARTERIAL_WHOLEBLOOD",
        160204 => "MDC_CONC_GLU_ARTERIAL_PLASMA",
        160364 => "MDC_CONC_GLU_UNDETERMINED_WHOLEBLOOD",
        160368 => "MDC_CONC_GLU_UNDETERMINED_PLASMA",
        160372 => "MDC_CONC_GLU_ISF",
        160376 => "MDC_CONC_GLU_CONTROL",
        67975 => "MDC_ATTR_TIME_ABS",
        68220 => "MDC_TIME_SYNC_PROTOCOL",
        68221 => "MDC_TIME_SYNC_ACCURACY",
        532228 => "MDC_TIME_SYNC_SNTPV4330",
        532224 => "MDC_TIME_SYNC_NONE",
        67996 => "MDC_ATTR_VAL_BATT_CHARGE",
        65573 => "MDC_MOC_VMS_MDS_SIMP",
        531981 => "MDC_MOC_VMS_MDS_AHD",
        531974 => "MDC_ID_PROD_SPEC_HW",
        531975 => "MDC_ID_PROD_SPEC_SW",
        531976 => "MDC_ID_PROD_SPEC_FW",
        528388 => "MDC_DEV_SPEC_PROFILE_PULS_OXIM",
        528391 => "MDC_DEV_SPEC_PROFILE_BPM",
        528392 => "MDC_DEV_SPEC_PROFILE_TEMP",
        528399 => "MDC_DEV_SPEC_PROFILE_SCALE",
        528401 => "MDC_DEV_SPEC_PROFILE_GLUCOSE",
        528457 => "MDC_DEV_SPEC_PROFILE_GENERIC",
        _ => return None,
    })
}

/// How a device measures pulse: the same `Kind::PulseRate` maps to a different MDC code per device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeviceClass {
    BloodPressure,
    PulseOximeter,
    Glucose,
    Thermometer,
    Scale,
    HeartRate,
    Generic,
}

impl DeviceClass {
    /// From the store's profile name (`glucose`, `blood_pressure`, …).
    pub fn from_profile(profile: &str) -> DeviceClass {
        match profile {
            "blood_pressure" | "bp" | "bpm" | "blood-pressure" => DeviceClass::BloodPressure,
            "plx" | "pulse_oximeter" | "pulse-oximeter" | "spo2" => DeviceClass::PulseOximeter,
            "glucose" | "cgm" => DeviceClass::Glucose,
            "thermometer" | "health_thermometer" | "hts" => DeviceClass::Thermometer,
            "weight" | "weight_scale" | "scale" => DeviceClass::Scale,
            "heart_rate" | "hrs" | "hr" => DeviceClass::HeartRate,
            _ => DeviceClass::Generic,
        }
    }

    /// The 11073 device specialization (PhdDevice.specialization).
    pub fn specialization(&self) -> u32 {
        match self {
            DeviceClass::BloodPressure => mdc::DEV_SPEC_BPM,
            DeviceClass::PulseOximeter => mdc::DEV_SPEC_PULS_OXIM,
            DeviceClass::Glucose => mdc::DEV_SPEC_GLUCOSE,
            DeviceClass::Thermometer => mdc::DEV_SPEC_TEMP,
            DeviceClass::Scale => mdc::DEV_SPEC_SCALE,
            DeviceClass::HeartRate | DeviceClass::Generic => mdc::DEV_SPEC_GENERIC,
        }
    }
}

/// The codes of one measurement type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeCodes {
    pub mdc: u32,
    /// LOINC codes with displays; the first is the primary one.
    pub loinc: &'static [(&'static str, &'static str)],
    /// Whether this is an R4 vital sign (category `vital-signs`, LOINC required).
    pub vital_sign: bool,
}

const fn t(
    mdc: u32,
    loinc: &'static [(&'static str, &'static str)],
    vital_sign: bool,
) -> TypeCodes {
    TypeCodes {
        mdc,
        loinc,
        vital_sign,
    }
}

pub const BP_PANEL: TypeCodes = t(
    mdc::PRESS_BLD_NONINV,
    &[("85354-9", "Blood pressure panel with all children optional")],
    true,
);

/// The codes for a reading kind on a device class; `None` for kinds the hub does not upload
/// (intermediate cuff pressure, energy expended: no MDC code agreed with the backend yet; RR
/// intervals: see below).
pub fn type_codes(
    kind: Kind,
    class: DeviceClass,
    specimen: Option<GlucoseSpecimen>,
) -> Option<TypeCodes> {
    Some(match kind {
        Kind::Systolic => t(
            mdc::PRESS_BLD_NONINV_SYS,
            &[("8480-6", "Systolic blood pressure")],
            true,
        ),
        Kind::Diastolic => t(
            mdc::PRESS_BLD_NONINV_DIA,
            &[("8462-4", "Diastolic blood pressure")],
            true,
        ),
        Kind::MeanArterialPressure => t(
            mdc::PRESS_BLD_NONINV_MEAN,
            &[("8478-0", "Mean blood pressure")],
            true,
        ),
        Kind::PulseRate => match class {
            DeviceClass::PulseOximeter => t(149530, &[("8867-4", "Heart rate")], true),
            DeviceClass::HeartRate => t(147842, &[("8867-4", "Heart rate")], true),
            _ => t(149546, &[("8867-4", "Heart rate")], true),
        },
        Kind::HeartRate => t(147842, &[("8867-4", "Heart rate")], true),
        Kind::Spo2 => t(
            150456,
            &[
                ("2708-6", "Oxygen saturation in Arterial blood"),
                (
                    "59408-5",
                    "Oxygen saturation in Arterial blood by Pulse oximetry",
                ),
            ],
            true,
        ),
        Kind::BodyWeight => t(188736, &[("29463-7", "Body weight")], true),
        Kind::BodyTemperature => t(150364, &[("8310-5", "Body temperature")], true),
        Kind::Height => t(188740, &[("8302-2", "Body height")], true),
        Kind::Bmi => t(
            188752,
            &[("39156-5", "Body mass index (BMI) [Ratio]")],
            true,
        ),
        Kind::BatteryLevel => t(mdc::BATT_CHARGE, &[], false),
        Kind::Glucose | Kind::CgmGlucose => {
            let code = match (kind, specimen) {
                (Kind::CgmGlucose, _) | (_, Some(GlucoseSpecimen::InterstitialFluid)) => 160372,
                (_, None) | (_, Some(GlucoseSpecimen::CapillaryWholeBlood)) => 160184,
                (_, Some(GlucoseSpecimen::CapillaryPlasma)) => 160188,
                (_, Some(GlucoseSpecimen::VenousWholeBlood)) => 160192,
                (_, Some(GlucoseSpecimen::VenousPlasma)) => 160196,
                (_, Some(GlucoseSpecimen::ArterialWholeBlood)) => 160200,
                (_, Some(GlucoseSpecimen::ArterialPlasma)) => 160204,
                (_, Some(GlucoseSpecimen::UndeterminedWholeBlood)) => 160364,
                (_, Some(GlucoseSpecimen::UndeterminedPlasma)) => 160368,
                (_, Some(GlucoseSpecimen::ControlSolution)) => 160376,
            };
            // Glucose is not an R4 vital sign: LOINC only where the table names one (mass
            // concentration in capillary whole blood by glucometer).
            if code == 160184 {
                t(
                    code,
                    &[(
                        "41653-7",
                        "Glucose [Mass/volume] in Capillary blood by Glucometer",
                    )],
                    false,
                )
            } else {
                t(code, &[], false)
            }
        }
        // RR intervals come several per notification with no device time: they would share one
        // conditional-create identifier and the server would keep only the first. Until they are
        // uploaded as one SampledData Observation per notification they stay on the hub.
        Kind::CuffPressure | Kind::EnergyExpended | Kind::RrInterval => return None,
    })
}
