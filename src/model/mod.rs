//! Domain types shared by every part of the hub.
//!
//! A decoded measurement becomes one or more [`Reading`]s: what was measured ([`Kind`]), the exact
//! value with its UCUM unit ([`Unit`]) or a special value ([`Special`]) that is never a number, the
//! device's own wall-clock time when it sent one, and the status flags that matter clinically
//! ([`Flag`]). This module is pure: std, serde and `jiff` (the calendar) only.

mod clock;
mod decimal;
pub mod device;
mod time;
mod zone;

pub use clock::{Clock, ManualClock, Progress, Rfc3339Error, SystemClock, UtcMillis};
pub use decimal::{Decimal, DecimalParseError};
pub use time::{days_in_month, LocalDateTime, TimeError};
pub use zone::{Resolved, TimeQuality, Zone, ZoneError};

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;

/// What a reading measures. The serialized names are the ones `vitals-hub decode` prints and the
/// alert rules use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Glucose,
    CgmGlucose,
    Systolic,
    Diastolic,
    MeanArterialPressure,
    CuffPressure,
    PulseRate,
    HeartRate,
    RrInterval,
    EnergyExpended,
    Spo2,
    BodyTemperature,
    BodyWeight,
    Bmi,
    Height,
    BatteryLevel,
}

impl Kind {
    pub const ALL: [Kind; 16] = [
        Kind::Glucose,
        Kind::CgmGlucose,
        Kind::Systolic,
        Kind::Diastolic,
        Kind::MeanArterialPressure,
        Kind::CuffPressure,
        Kind::PulseRate,
        Kind::HeartRate,
        Kind::RrInterval,
        Kind::EnergyExpended,
        Kind::Spo2,
        Kind::BodyTemperature,
        Kind::BodyWeight,
        Kind::Bmi,
        Kind::Height,
        Kind::BatteryLevel,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Glucose => "glucose",
            Kind::CgmGlucose => "cgm_glucose",
            Kind::Systolic => "systolic",
            Kind::Diastolic => "diastolic",
            Kind::MeanArterialPressure => "mean_arterial_pressure",
            Kind::CuffPressure => "cuff_pressure",
            Kind::PulseRate => "pulse_rate",
            Kind::HeartRate => "heart_rate",
            Kind::RrInterval => "rr_interval",
            Kind::EnergyExpended => "energy_expended",
            Kind::Spo2 => "spo2",
            Kind::BodyTemperature => "body_temperature",
            Kind::BodyWeight => "body_weight",
            Kind::Bmi => "bmi",
            Kind::Height => "height",
            Kind::BatteryLevel => "battery_level",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                format!(
                    "unknown measurement kind `{s}`; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// Units, by their UCUM codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Unit {
    #[serde(rename = "mg/dL")]
    MgPerDl,
    #[serde(rename = "mmol/L")]
    MmolPerL,
    #[serde(rename = "mm[Hg]")]
    MmHg,
    #[serde(rename = "kPa")]
    KPa,
    #[serde(rename = "/min")]
    PerMin,
    #[serde(rename = "%")]
    Percent,
    #[serde(rename = "Cel")]
    Cel,
    #[serde(rename = "[degF]")]
    DegF,
    #[serde(rename = "kg")]
    Kg,
    #[serde(rename = "[lb_av]")]
    Lb,
    #[serde(rename = "kg/m2")]
    KgPerM2,
    #[serde(rename = "m")]
    Metre,
    #[serde(rename = "[in_i]")]
    Inch,
    #[serde(rename = "ms")]
    Ms,
    #[serde(rename = "kJ")]
    KJ,
}

impl Unit {
    pub const ALL: [Unit; 15] = [
        Unit::MgPerDl,
        Unit::MmolPerL,
        Unit::MmHg,
        Unit::KPa,
        Unit::PerMin,
        Unit::Percent,
        Unit::Cel,
        Unit::DegF,
        Unit::Kg,
        Unit::Lb,
        Unit::KgPerM2,
        Unit::Metre,
        Unit::Inch,
        Unit::Ms,
        Unit::KJ,
    ];

    /// The UCUM code.
    pub fn ucum(&self) -> &'static str {
        match self {
            Unit::MgPerDl => "mg/dL",
            Unit::MmolPerL => "mmol/L",
            Unit::MmHg => "mm[Hg]",
            Unit::KPa => "kPa",
            Unit::PerMin => "/min",
            Unit::Percent => "%",
            Unit::Cel => "Cel",
            Unit::DegF => "[degF]",
            Unit::Kg => "kg",
            Unit::Lb => "[lb_av]",
            Unit::KgPerM2 => "kg/m2",
            Unit::Metre => "m",
            Unit::Inch => "[in_i]",
            Unit::Ms => "ms",
            Unit::KJ => "kJ",
        }
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.ucum())
    }
}

impl std::str::FromStr for Unit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Unit::ALL
            .into_iter()
            .find(|u| u.ucum() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Unit::ALL.iter().map(|u| u.ucum()).collect();
                format!(
                    "unknown unit `{s}`; expected a UCUM code, one of {}",
                    names.join(", ")
                )
            })
    }
}

/// IEEE 11073 special values. They are never numbers: a reading that carries one has no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Special {
    /// Not a Number: the device could not produce a value.
    Nan,
    /// Not at this Resolution: the value does not fit the encoding.
    NRes,
    /// Positive infinity (above the device's range).
    PosInf,
    /// Negative infinity (below the device's range).
    NegInf,
    /// A raw value the standard reserves for future use; treated as "no value".
    Reserved,
}

impl fmt::Display for Special {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Special::Nan => "NaN",
            Special::NRes => "NRes",
            Special::PosInf => "+INF",
            Special::NegInf => "-INF",
            Special::Reserved => "reserved",
        })
    }
}

/// A measured value: an exact number, or a special value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Value {
    Number(Decimal),
    Special(Special),
}

impl Value {
    pub fn number(&self) -> Option<Decimal> {
        match self {
            Value::Number(d) => Some(*d),
            Value::Special(_) => None,
        }
    }
    pub fn special(&self) -> Option<Special> {
        match self {
            Value::Number(_) => None,
            Value::Special(s) => Some(*s),
        }
    }
}

/// The specimen a glucose value was measured in (GLS Type field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GlucoseSpecimen {
    CapillaryWholeBlood,
    CapillaryPlasma,
    VenousWholeBlood,
    VenousPlasma,
    ArterialWholeBlood,
    ArterialPlasma,
    UndeterminedWholeBlood,
    UndeterminedPlasma,
    InterstitialFluid,
    ControlSolution,
}

/// Where on the body a glucose sample was taken (GLS Sample Location field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SampleLocation {
    Finger,
    AlternateSiteTest,
    Earlobe,
    ControlSolution,
    SubcutaneousTissue,
}

/// Where a body temperature was taken (HTS Temperature Type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodySite {
    Armpit,
    Body,
    Ear,
    Finger,
    GastroIntestinalTract,
    Mouth,
    Rectum,
    Toe,
    Tympanum,
}

/// Meal context of a glucose reading (GLS Measurement Context).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Meal {
    Preprandial,
    Postprandial,
    Fasting,
    Casual,
    Bedtime,
}

/// Status flags that matter clinically: they decide whether a reading may raise a threshold alert
/// and they travel upstream as FHIR `interpretation` / measurement status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flag {
    // --- glucose (GLS Sensor Status Annunciation) and CGM annunciations
    DeviceBatteryLow,
    SensorMalfunction,
    SampleSizeInsufficient,
    StripInsertionError,
    StripTypeIncorrect,
    /// The value is the device's upper limit ("HI"), not a measurement.
    ResultAboveDeviceRange,
    /// The value is the device's lower limit ("LO"), not a measurement.
    ResultBelowDeviceRange,
    SensorTemperatureTooHigh,
    SensorTemperatureTooLow,
    ReadInterrupted,
    GeneralDeviceFault,
    /// The device says its own clock may be wrong.
    DeviceTimeFault,
    /// A control-solution test, not the patient's blood.
    ControlSolution,
    CgmSessionStopped,
    CgmSensorTypeIncorrect,
    CgmDeviceSpecificAlert,
    CgmTimeSyncRequired,
    CgmCalibrationNotAllowed,
    CgmCalibrationRecommended,
    CgmCalibrationRequired,
    // --- blood pressure (BLS Measurement Status)
    BodyMovement,
    CuffTooLoose,
    IrregularPulse,
    PulseRateAboveRange,
    PulseRateBelowRange,
    ImproperMeasurementPosition,
    // --- pulse oximetry (PLXS Measurement Status, Device and Sensor Status)
    MeasurementOngoing,
    EarlyEstimate,
    ValidatedData,
    FullyQualifiedData,
    FromMeasurementStorage,
    DemonstrationData,
    TestingData,
    CalibrationOngoing,
    MeasurementUnavailable,
    QuestionableMeasurement,
    InvalidMeasurement,
    EquipmentMalfunction,
    SignalProcessingIrregularity,
    InadequateSignal,
    PoorSignal,
    LowPerfusion,
    ErraticSignal,
    NonpulsatileSignal,
    QuestionablePulse,
    SignalAnalysisOngoing,
    SensorInterference,
    SensorUnconnectedToUser,
    UnknownSensor,
    SensorDisplaced,
    SensorMalfunctioning,
    SensorDisconnected,
    /// PLXS: the device clock is not set, its timestamp cannot be trusted.
    DeviceClockNotSet,
    /// The device's wall-clock time does not exist (spring forward) or exists twice (fall back)
    /// in the home's zone: its instant was chosen by the rule in [`Zone`], not known.
    DeviceTimeUncertain,
    /// The hub never read or set this device's clock: its times are taken as the home zone's
    /// local time, but nothing says the clock is right (not uploaded as synchronised).
    DeviceClockUnchecked,
    // --- heart rate
    /// The strap supports skin-contact detection and reports no contact.
    NoSkinContact,
    // --- weight scale
    MeasurementUnsuccessful,
    // --- cuff: the value is intermediate (cuff still inflating/deflating)
    Intermediate,
}

impl Flag {
    /// True for flags that mean the number is not a trustworthy measurement of the patient: such a
    /// reading is stored and uploaded with its flags but must not raise a threshold alert.
    pub fn invalidates_value(&self) -> bool {
        use Flag::*;
        matches!(
            self,
            SensorMalfunction
                | SampleSizeInsufficient
                | StripInsertionError
                | StripTypeIncorrect
                | ResultAboveDeviceRange
                | ResultBelowDeviceRange
                | SensorTemperatureTooHigh
                | SensorTemperatureTooLow
                | ReadInterrupted
                | GeneralDeviceFault
                | ControlSolution
                | CgmSensorTypeIncorrect
                | MeasurementOngoing
                | DemonstrationData
                | TestingData
                | CalibrationOngoing
                | MeasurementUnavailable
                | QuestionableMeasurement
                | InvalidMeasurement
                | EquipmentMalfunction
                | SensorUnconnectedToUser
                | UnknownSensor
                | SensorDisplaced
                | SensorMalfunctioning
                | SensorDisconnected
                | NoSkinContact
                | MeasurementUnsuccessful
                | Intermediate
        )
    }
}

/// One measured quantity, as decoded from a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reading {
    pub kind: Kind,
    pub value: Value,
    pub unit: Unit,
    /// The device's own wall-clock time of the measurement, when it sent a complete one (offsets
    /// such as the GLS Time Offset already applied).
    pub device_time: Option<LocalDateTime>,
    /// The device's record sequence number (GLS), if any; for a CGM record whose session start
    /// is unknown (no device time), its time offset in minutes — its only identity.
    pub sequence: Option<u16>,
    /// The device's user index for multi-user devices; `None` when the device sent none.
    pub user_id: Option<u8>,
    pub specimen: Option<GlucoseSpecimen>,
    pub sample_location: Option<SampleLocation>,
    pub body_site: Option<BodySite>,
    pub meal: Option<Meal>,
    pub flags: BTreeSet<Flag>,
}

impl Reading {
    /// A reading with only the essentials set.
    pub fn new(kind: Kind, value: Value, unit: Unit) -> Self {
        Reading {
            kind,
            value,
            unit,
            device_time: None,
            sequence: None,
            user_id: None,
            specimen: None,
            sample_location: None,
            body_site: None,
            meal: None,
            flags: BTreeSet::new(),
        }
    }

    /// Whether this reading may be compared against thresholds: a number, not flagged as invalid.
    pub fn is_alertable(&self) -> bool {
        self.value.number().is_some() && !self.flags.iter().any(Flag::invalidates_value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in Kind::ALL {
            assert_eq!(k.as_str().parse::<Kind>().unwrap(), k);
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
        }
        for u in Unit::ALL {
            assert_eq!(u.ucum().parse::<Unit>().unwrap(), u);
            assert_eq!(
                serde_json::to_string(&u).unwrap(),
                format!("\"{}\"", u.ucum())
            );
        }
        assert!("glucos".parse::<Kind>().unwrap_err().contains("glucose"));
    }

    #[test]
    fn special_values_are_not_alertable() {
        let r = Reading::new(Kind::Glucose, Value::Special(Special::Nan), Unit::MgPerDl);
        assert!(!r.is_alertable());
        let mut r = Reading::new(
            Kind::Glucose,
            Value::Number(Decimal::new(40, 0)),
            Unit::MgPerDl,
        );
        assert!(r.is_alertable());
        r.flags.insert(Flag::ControlSolution);
        assert!(!r.is_alertable());
    }
}
