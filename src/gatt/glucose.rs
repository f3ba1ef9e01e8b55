//! Glucose Service 0x1808: Glucose Measurement 0x2A18, Glucose Measurement Context 0x2A34 and
//! Glucose Feature 0x2A51. The Record Access Control Point is in [`super::racp`].
//!
//! Interpretations (see `ble-profiles.md` §2):
//! - The Type–Sample Location octet carries Type in the low nibble and Location in the high nibble.
//! - The value is kept as received (kg/L or mol/L) in `fields`; readings scale it exactly to mg/dL
//!   (×10^5) or mmol/L (×10^3) by moving the exponent.
//! - The Time Offset is applied to the Base Time for the reading's device time; both stay raw in
//!   `fields`. A Base Time with an unknown (0) year, month or day gives a reading without device time.
//! - Sensor status bits 5/6 ("result higher/lower than the device can process") mean the value is a
//!   clamp, not a measurement: flagged so that no threshold alert fires on it.
//! - Meal codes outside 1..=5 are kept raw (i-SENS CareSens uses 6 for a ketone record) and give no
//!   meal on the reading.
//!
//! Size: the code is about 660 lines; the file passes 800 only with its table tests, kept
//! beside the fields they check (one profile, one file).

use super::bytes::{bit, check_flags_length, check_reserved_flags, Reader, Writer};
use super::datetime::DateTime;
use super::error::{DecodeError, EncodeError};
use super::float::SFloat;
use super::names::{Bits, Code};
use super::GattValue;
use crate::model::{Flag, GlucoseSpecimen, Kind, Meal, Reading, SampleLocation, Unit, Value};
use serde::Serialize;

/// GLS concentration unit (flag bit 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum ConcentrationUnit {
    #[serde(rename = "kg/L")]
    KgPerL,
    #[serde(rename = "mol/L")]
    MolPerL,
}

/// Concentration, Type and Sample Location (present when flag bit 1 is set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Concentration {
    pub value: SFloat,
    pub unit: ConcentrationUnit,
    /// Type nibble, 1..=10 defined.
    #[serde(serialize_with = "ser_type")]
    pub sample_type: u8,
    /// Sample Location nibble, 1..=4 and 15 defined.
    #[serde(serialize_with = "ser_location")]
    pub sample_location: u8,
}

fn ser_type<S: serde::Serializer>(v: &u8, s: S) -> Result<S::Ok, S::Error> {
    Code {
        code: (*v).into(),
        name: type_name(*v),
    }
    .serialize(s)
}
fn ser_location<S: serde::Serializer>(v: &u8, s: S) -> Result<S::Ok, S::Error> {
    Code {
        code: (*v).into(),
        name: location_name(*v),
    }
    .serialize(s)
}

const TYPE_NAMES: [&str; 11] = [
    "",
    "capillary_whole_blood",
    "capillary_plasma",
    "venous_whole_blood",
    "venous_plasma",
    "arterial_whole_blood",
    "arterial_plasma",
    "undetermined_whole_blood",
    "undetermined_plasma",
    "interstitial_fluid",
    "control_solution",
];

pub(crate) fn type_name(t: u8) -> Option<&'static str> {
    TYPE_NAMES
        .get(t as usize)
        .copied()
        .filter(|n| !n.is_empty())
}

pub(crate) fn location_name(l: u8) -> Option<&'static str> {
    match l {
        1 => Some("finger"),
        2 => Some("alternate_site_test"),
        3 => Some("earlobe"),
        4 => Some("control_solution"),
        5 => Some("subcutaneous_tissue"),
        15 => Some("not_available"),
        _ => None,
    }
}

/// The GLS/CGMS Type nibble as a model specimen.
pub(crate) fn specimen(t: u8) -> Option<GlucoseSpecimen> {
    use GlucoseSpecimen::*;
    Some(match t {
        1 => CapillaryWholeBlood,
        2 => CapillaryPlasma,
        3 => VenousWholeBlood,
        4 => VenousPlasma,
        5 => ArterialWholeBlood,
        6 => ArterialPlasma,
        7 => UndeterminedWholeBlood,
        8 => UndeterminedPlasma,
        9 => InterstitialFluid,
        10 => ControlSolution,
        _ => return None,
    })
}

/// The GLS/CGMS Sample Location nibble as a model location (15 "not available" is `None`).
pub(crate) fn sample_location(l: u8) -> Option<SampleLocation> {
    use SampleLocation::*;
    Some(match l {
        1 => Finger,
        2 => AlternateSiteTest,
        3 => Earlobe,
        4 => ControlSolution,
        5 => SubcutaneousTissue,
        _ => return None,
    })
}

/// Names of the Sensor Status Annunciation bits (GLS 0x2A18).
pub const SENSOR_STATUS_BITS: [&str; 12] = [
    "device_battery_low",
    "sensor_malfunction",
    "sample_size_insufficient",
    "strip_insertion_error",
    "strip_type_incorrect",
    "result_higher_than_device_can_process",
    "result_lower_than_device_can_process",
    "sensor_temperature_too_high",
    "sensor_temperature_too_low",
    "read_interrupted",
    "general_device_fault",
    "time_fault",
];

const SENSOR_STATUS_FLAGS: [Flag; 12] = [
    Flag::DeviceBatteryLow,
    Flag::SensorMalfunction,
    Flag::SampleSizeInsufficient,
    Flag::StripInsertionError,
    Flag::StripTypeIncorrect,
    Flag::ResultAboveDeviceRange,
    Flag::ResultBelowDeviceRange,
    Flag::SensorTemperatureTooHigh,
    Flag::SensorTemperatureTooLow,
    Flag::ReadInterrupted,
    Flag::GeneralDeviceFault,
    Flag::DeviceTimeFault,
];

fn ser_sensor_status<S: serde::Serializer>(v: &Option<u16>, s: S) -> Result<S::Ok, S::Error> {
    v.map(|raw| Bits::new(raw.into(), 16, &SENSOR_STATUS_BITS))
        .serialize(s)
}

/// Glucose Measurement 0x2A18.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct GlucoseMeasurement {
    pub sequence_number: u16,
    pub base_time: DateTime,
    /// Minutes to add to the base time (flag bit 0).
    pub time_offset_min: Option<i16>,
    /// Flag bit 1.
    pub concentration: Option<Concentration>,
    /// Flag bit 3.
    #[serde(serialize_with = "ser_sensor_status")]
    pub sensor_status: Option<u16>,
    /// Flag bit 4: a Context with the same sequence number follows.
    pub context_follows: bool,
}

impl GattValue for GlucoseMeasurement {
    const UUID: u16 = 0x2A18;
    const NAME: &'static str = "glucose-measurement";

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(Self::WHAT, bytes);
        let flags = r
            .u8()
            .map_err(|_| DecodeError::Empty { what: Self::WHAT })?;
        check_reserved_flags(Self::WHAT, flags, 0xE0)?;
        let f = u32::from(flags);
        let need = 10
            + if bit(f, 0) { 2 } else { 0 }
            + if bit(f, 1) { 3 } else { 0 }
            + if bit(f, 3) { 2 } else { 0 };
        check_flags_length(Self::WHAT, flags, need, bytes.len())?;
        let sequence_number = r.u16()?;
        let base_time = DateTime::read(&mut r)?;
        let time_offset_min = if bit(f, 0) { Some(r.i16()?) } else { None };
        let concentration = if bit(f, 1) {
            let value = r.sfloat()?;
            let tl = r.u8()?;
            Some(Concentration {
                value,
                unit: if bit(f, 2) {
                    ConcentrationUnit::MolPerL
                } else {
                    ConcentrationUnit::KgPerL
                },
                sample_type: tl & 0x0F,
                sample_location: tl >> 4,
            })
        } else {
            None
        };
        let sensor_status = if bit(f, 3) { Some(r.u16()?) } else { None };
        r.finish()?;
        Ok(GlucoseMeasurement {
            sequence_number,
            base_time,
            time_offset_min,
            concentration,
            sensor_status,
            context_follows: bit(f, 4),
        })
    }

    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut flags = 0u8;
        if self.time_offset_min.is_some() {
            flags |= 0x01;
        }
        if let Some(c) = &self.concentration {
            flags |= 0x02;
            if c.unit == ConcentrationUnit::MolPerL {
                flags |= 0x04;
            }
            if c.sample_type > 0x0F || c.sample_location > 0x0F {
                return Err(EncodeError::Unrepresentable {
                    what: Self::WHAT,
                    detail: "type and sample location are 4-bit fields".into(),
                });
            }
        }
        if self.sensor_status.is_some() {
            flags |= 0x08;
        }
        if self.context_follows {
            flags |= 0x10;
        }
        let mut w = Writer::new();
        w.u8(flags).u16(self.sequence_number);
        self.base_time.write(&mut w);
        if let Some(o) = self.time_offset_min {
            w.i16(o);
        }
        if let Some(c) = &self.concentration {
            w.sfloat(c.value)
                .u8((c.sample_location << 4) | c.sample_type);
        }
        if let Some(s) = self.sensor_status {
            w.u16(s);
        }
        Ok(w.into_vec())
    }

    fn readings(&self) -> Vec<Reading> {
        self.readings_with_context(None)
    }
}

impl GlucoseMeasurement {
    pub const WHAT: &'static str = <Self as GattValue>::NAME;

    /// The reading this record carries (none when it has no concentration), joined with its
    /// context record if one arrived (matched by sequence number).
    pub fn readings_with_context(&self, context: Option<&GlucoseContext>) -> Vec<Reading> {
        let Some(c) = &self.concentration else {
            return Vec::new();
        };
        let (value, unit) = match (c.value.value(), c.unit) {
            (Value::Number(d), ConcentrationUnit::KgPerL) => {
                (Value::Number(d.scale_pow10(5)), Unit::MgPerDl)
            }
            (Value::Number(d), ConcentrationUnit::MolPerL) => {
                (Value::Number(d.scale_pow10(3)), Unit::MmolPerL)
            }
            (v, ConcentrationUnit::KgPerL) => (v, Unit::MgPerDl),
            (v, ConcentrationUnit::MolPerL) => (v, Unit::MmolPerL),
        };
        let mut r = Reading::new(Kind::Glucose, value, unit);
        r.device_time = self
            .base_time
            .to_local()
            .and_then(|t| t.add_minutes(self.time_offset_min.unwrap_or(0).into()).ok());
        r.sequence = Some(self.sequence_number);
        r.specimen = specimen(c.sample_type);
        r.sample_location = sample_location(c.sample_location);
        if c.sample_type == 10 || c.sample_location == 4 {
            r.flags.insert(Flag::ControlSolution);
        }
        if let Some(status) = self.sensor_status {
            for (i, flag) in SENSOR_STATUS_FLAGS.iter().enumerate() {
                if bit(status.into(), i as u32) {
                    r.flags.insert(*flag);
                }
            }
        }
        if let Some(ctx) = context.filter(|ctx| ctx.sequence_number == self.sequence_number) {
            r.meal = ctx.meal.and_then(meal);
        }
        vec![r]
    }
}

fn meal(code: u8) -> Option<Meal> {
    Some(match code {
        1 => Meal::Preprandial,
        2 => Meal::Postprandial,
        3 => Meal::Fasting,
        4 => Meal::Casual,
        5 => Meal::Bedtime,
        _ => return None,
    })
}

fn meal_name(code: u8) -> Option<&'static str> {
    Some(match code {
        1 => "preprandial",
        2 => "postprandial",
        3 => "fasting",
        4 => "casual",
        5 => "bedtime",
        _ => return None,
    })
}

fn carbohydrate_name(code: u8) -> Option<&'static str> {
    Some(match code {
        1 => "breakfast",
        2 => "lunch",
        3 => "dinner",
        4 => "snack",
        5 => "drink",
        6 => "supper",
        7 => "brunch",
        _ => return None,
    })
}

fn tester_name(code: u8) -> Option<&'static str> {
    Some(match code {
        1 => "self",
        2 => "health_care_professional",
        3 => "lab_test",
        15 => "not_available",
        _ => return None,
    })
}

fn health_name(code: u8) -> Option<&'static str> {
    Some(match code {
        1 => "minor_health_issues",
        2 => "major_health_issues",
        3 => "during_menses",
        4 => "under_stress",
        5 => "no_health_issues",
        15 => "not_available",
        _ => return None,
    })
}

fn medication_name(code: u8) -> Option<&'static str> {
    Some(match code {
        1 => "rapid_acting_insulin",
        2 => "short_acting_insulin",
        3 => "intermediate_acting_insulin",
        4 => "long_acting_insulin",
        5 => "pre_mixed_insulin",
        _ => return None,
    })
}

fn code_of(code: u8, name: fn(u8) -> Option<&'static str>) -> Code {
    Code {
        code: code.into(),
        name: name(code),
    }
}

/// Carbohydrate intake (context flag bit 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Carbohydrate {
    pub id: u8,
    /// Kilograms.
    pub amount_kg: SFloat,
}

/// Exercise (context flag bit 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Exercise {
    /// Seconds; 0xFFFF means overrun.
    pub duration_s: u16,
    pub intensity_pct: u8,
}

/// Medication unit (context flag bit 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum MedicationUnit {
    #[serde(rename = "kg")]
    Kg,
    #[serde(rename = "L")]
    Litre,
}

/// Medication (context flag bit 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Medication {
    pub id: u8,
    pub amount: SFloat,
    pub unit: MedicationUnit,
}

impl Serialize for Carbohydrate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Carbohydrate", 2)?;
        st.serialize_field("id", &code_of(self.id, carbohydrate_name))?;
        st.serialize_field("amount_kg", &self.amount_kg)?;
        st.end()
    }
}

impl Serialize for Medication {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Medication", 3)?;
        st.serialize_field("id", &code_of(self.id, medication_name))?;
        st.serialize_field("amount", &self.amount)?;
        st.serialize_field("unit", &self.unit)?;
        st.end()
    }
}

/// Glucose Measurement Context 0x2A34.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GlucoseContext {
    pub sequence_number: u16,
    /// Flag bit 7; every bit of it is reserved in GLS 1.0, kept raw.
    pub extended_flags: Option<u8>,
    pub carbohydrate: Option<Carbohydrate>,
    /// Flag bit 1; kept raw (1..=5 defined).
    pub meal: Option<u8>,
    /// Flag bit 2: (tester low nibble, health high nibble).
    pub tester_health: Option<(u8, u8)>,
    pub exercise: Option<Exercise>,
    pub medication: Option<Medication>,
    /// Flag bit 6, percent.
    pub hba1c_pct: Option<SFloat>,
}

impl Serialize for GlucoseContext {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("GlucoseContext", 9)?;
        st.serialize_field("sequence_number", &self.sequence_number)?;
        st.serialize_field("extended_flags", &self.extended_flags)?;
        st.serialize_field("carbohydrate", &self.carbohydrate)?;
        st.serialize_field("meal", &self.meal.map(|m| code_of(m, meal_name)))?;
        st.serialize_field(
            "tester",
            &self.tester_health.map(|(t, _)| code_of(t, tester_name)),
        )?;
        st.serialize_field(
            "health",
            &self.tester_health.map(|(_, h)| code_of(h, health_name)),
        )?;
        st.serialize_field("exercise", &self.exercise)?;
        st.serialize_field("medication", &self.medication)?;
        st.serialize_field("hba1c_pct", &self.hba1c_pct)?;
        st.end()
    }
}

impl GlucoseContext {
    pub const WHAT: &'static str = <Self as GattValue>::NAME;
}

impl GattValue for GlucoseContext {
    const UUID: u16 = 0x2A34;
    const NAME: &'static str = "glucose-measurement-context";

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(Self::WHAT, bytes);
        let flags = r
            .u8()
            .map_err(|_| DecodeError::Empty { what: Self::WHAT })?;
        let f = u32::from(flags);
        let need = 3
            + if bit(f, 7) { 1 } else { 0 }
            + if bit(f, 0) { 3 } else { 0 }
            + if bit(f, 1) { 1 } else { 0 }
            + if bit(f, 2) { 1 } else { 0 }
            + if bit(f, 3) { 3 } else { 0 }
            + if bit(f, 4) { 3 } else { 0 }
            + if bit(f, 6) { 2 } else { 0 };
        check_flags_length(Self::WHAT, flags, need, bytes.len())?;
        let sequence_number = r.u16()?;
        // The extended-flags octet sits before the carbohydrate fields.
        let extended_flags = if bit(f, 7) { Some(r.u8()?) } else { None };
        let carbohydrate = if bit(f, 0) {
            Some(Carbohydrate {
                id: r.u8()?,
                amount_kg: r.sfloat()?,
            })
        } else {
            None
        };
        let meal = if bit(f, 1) { Some(r.u8()?) } else { None };
        let tester_health = if bit(f, 2) {
            let b = r.u8()?;
            Some((b & 0x0F, b >> 4))
        } else {
            None
        };
        let exercise = if bit(f, 3) {
            let duration_s = r.u16()?;
            let intensity_pct = r.u8()?;
            if intensity_pct > 100 {
                return Err(DecodeError::OutOfRange {
                    what: Self::WHAT,
                    field: "exercise intensity",
                    value: intensity_pct.into(),
                    allowed: "0..=100 %",
                });
            }
            Some(Exercise {
                duration_s,
                intensity_pct,
            })
        } else {
            None
        };
        let medication = if bit(f, 4) {
            Some(Medication {
                id: r.u8()?,
                amount: r.sfloat()?,
                unit: if bit(f, 5) {
                    MedicationUnit::Litre
                } else {
                    MedicationUnit::Kg
                },
            })
        } else {
            None
        };
        let hba1c_pct = if bit(f, 6) { Some(r.sfloat()?) } else { None };
        r.finish()?;
        Ok(GlucoseContext {
            sequence_number,
            extended_flags,
            carbohydrate,
            meal,
            tester_health,
            exercise,
            medication,
            hba1c_pct,
        })
    }

    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut flags = 0u8;
        let mut w = Writer::new();
        if self.carbohydrate.is_some() {
            flags |= 0x01;
        }
        if self.meal.is_some() {
            flags |= 0x02;
        }
        if self.tester_health.is_some() {
            flags |= 0x04;
        }
        if self.exercise.is_some() {
            flags |= 0x08;
        }
        if let Some(m) = &self.medication {
            flags |= 0x10;
            if m.unit == MedicationUnit::Litre {
                flags |= 0x20;
            }
        }
        if self.hba1c_pct.is_some() {
            flags |= 0x40;
        }
        if self.extended_flags.is_some() {
            flags |= 0x80;
        }
        w.u8(flags).u16(self.sequence_number);
        if let Some(x) = self.extended_flags {
            w.u8(x);
        }
        if let Some(c) = &self.carbohydrate {
            w.u8(c.id).sfloat(c.amount_kg);
        }
        if let Some(m) = self.meal {
            w.u8(m);
        }
        if let Some((t, h)) = self.tester_health {
            w.u8(((h & 0x0F) << 4) | (t & 0x0F));
        }
        if let Some(e) = &self.exercise {
            w.u16(e.duration_s).u8(e.intensity_pct);
        }
        if let Some(m) = &self.medication {
            w.u8(m.id).sfloat(m.amount);
        }
        if let Some(h) = self.hba1c_pct {
            w.sfloat(h);
        }
        Ok(w.into_vec())
    }
}

/// Names of the Glucose Feature bits (0x2A51).
pub const FEATURE_BITS: [&str; 11] = [
    "low_battery_detection",
    "sensor_malfunction_detection",
    "sensor_sample_size",
    "sensor_strip_insertion_error_detection",
    "sensor_strip_type_error_detection",
    "sensor_result_high_low_detection",
    "sensor_temperature_high_low_detection",
    "sensor_read_interrupt_detection",
    "general_device_fault",
    "time_fault",
    "multiple_bond",
];

/// Glucose Feature 0x2A51 (u16 bit field; bits 11..15 reserved, kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GlucoseFeature(pub u16);

impl Serialize for GlucoseFeature {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Bits::new(self.0.into(), 16, &FEATURE_BITS).serialize(s)
    }
}

impl GattValue for GlucoseFeature {
    const UUID: u16 = 0x2A51;
    const NAME: &'static str = "glucose-feature";

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        super::bytes::check_length(Self::NAME, "2", bytes.len() == 2, bytes.len())?;
        Reader::new(Self::NAME, bytes).u16().map(GlucoseFeature)
    }

    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        Ok(self.0.to_le_bytes().to_vec())
    }
}

impl GlucoseFeature {
    pub fn has(&self, bit_no: u32) -> bool {
        bit(self.0.into(), bit_no)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gatt::testing::{config, date_time, sfloat};
    use crate::model::Decimal;
    use proptest::prelude::*;

    fn measurement() -> impl Strategy<Value = GlucoseMeasurement> {
        let conc = (sfloat(), any::<bool>(), 0u8..16, 0u8..16).prop_map(|(value, mol, t, l)| {
            Concentration {
                value,
                unit: if mol {
                    ConcentrationUnit::MolPerL
                } else {
                    ConcentrationUnit::KgPerL
                },
                sample_type: t,
                sample_location: l,
            }
        });
        (
            any::<u16>(),
            date_time(),
            proptest::option::of(any::<i16>()),
            proptest::option::of(conc),
            proptest::option::of(any::<u16>()),
            any::<bool>(),
        )
            .prop_map(
                |(
                    sequence_number,
                    base_time,
                    time_offset_min,
                    concentration,
                    sensor_status,
                    context_follows,
                )| {
                    GlucoseMeasurement {
                        sequence_number,
                        base_time,
                        time_offset_min,
                        concentration,
                        sensor_status,
                        context_follows,
                    }
                },
            )
    }

    fn context() -> impl Strategy<Value = GlucoseContext> {
        (
            any::<u16>(),
            proptest::option::of(any::<u8>()),
            proptest::option::of(
                (any::<u8>(), sfloat()).prop_map(|(id, amount_kg)| Carbohydrate { id, amount_kg }),
            ),
            proptest::option::of(any::<u8>()),
            proptest::option::of((0u8..16, 0u8..16)),
            proptest::option::of((any::<u16>(), 0u8..=100).prop_map(
                |(duration_s, intensity_pct)| Exercise {
                    duration_s,
                    intensity_pct,
                },
            )),
            proptest::option::of((any::<u8>(), sfloat(), any::<bool>()).prop_map(
                |(id, amount, l)| Medication {
                    id,
                    amount,
                    unit: if l {
                        MedicationUnit::Litre
                    } else {
                        MedicationUnit::Kg
                    },
                },
            )),
            proptest::option::of(sfloat()),
        )
            .prop_map(
                |(
                    sequence_number,
                    extended_flags,
                    carbohydrate,
                    meal,
                    tester_health,
                    exercise,
                    medication,
                    hba1c_pct,
                )| GlucoseContext {
                    sequence_number,
                    extended_flags,
                    carbohydrate,
                    meal,
                    tester_health,
                    exercise,
                    medication,
                    hba1c_pct,
                },
            )
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn measurement_round_trips(m in measurement()) {
            let bytes = m.encode().unwrap();
            prop_assert_eq!(GlucoseMeasurement::decode(&bytes).unwrap(), m);
        }

        #[test]
        fn context_round_trips(c in context()) {
            let bytes = c.encode().unwrap();
            prop_assert_eq!(GlucoseContext::decode(&bytes).unwrap(), c);
        }

        #[test]
        fn feature_round_trips(f in any::<u16>()) {
            let v = GlucoseFeature(f);
            prop_assert_eq!(GlucoseFeature::decode(&v.encode().unwrap()).unwrap(), v);
        }
    }

    #[test]
    fn every_flag_combination_has_its_length() {
        for flags in 0u8..=0xFF {
            let need = 10
                + 2 * usize::from(flags & 1)
                + 3 * usize::from((flags >> 1) & 1)
                + 2 * usize::from((flags >> 3) & 1);
            let mut b = vec![0u8; need];
            b[0] = flags;
            // A valid base time: 2020-01-01.
            b[3..10].copy_from_slice(&[0xe4, 0x07, 1, 1, 0, 0, 0]);
            let r = GlucoseMeasurement::decode(&b);
            if flags & 0xE0 != 0 {
                assert!(
                    matches!(r, Err(DecodeError::ReservedFlags { .. })),
                    "{flags:#x}"
                );
                continue;
            }
            assert!(r.is_ok(), "{flags:#x}: {r:?}");
            let mut long = b.clone();
            long.push(0);
            assert!(matches!(
                GlucoseMeasurement::decode(&long),
                Err(DecodeError::FlagsLength { .. })
            ));
            assert!(matches!(
                GlucoseMeasurement::decode(&b[..need - 1]),
                Err(DecodeError::FlagsLength { .. })
            ));
        }
        for flags in 0u8..=0xFF {
            let need = 3
                + usize::from(flags >> 7)
                + 3 * usize::from(flags & 1)
                + usize::from((flags >> 1) & 1)
                + usize::from((flags >> 2) & 1)
                + 3 * usize::from((flags >> 3) & 1)
                + 3 * usize::from((flags >> 4) & 1)
                + 2 * usize::from((flags >> 6) & 1);
            let mut b = vec![0u8; need];
            b[0] = flags;
            assert!(GlucoseContext::decode(&b).is_ok(), "{flags:#x}");
            assert!(GlucoseContext::decode(&b[..need - 1]).is_err());
        }
    }

    #[test]
    fn control_solution_and_clamps_are_flagged() {
        let mut m = GlucoseMeasurement::decode(&[
            0x0a, 1, 0, 0xe4, 0x07, 1, 1, 0, 0, 0, 0x64, 0xb0, 0x4a, 0x20, 0x00,
        ])
        .unwrap();
        let r = &m.readings()[0];
        assert_eq!(r.value, Value::Number(Decimal::new(100, 0)));
        assert_eq!(r.unit, Unit::MgPerDl);
        assert!(
            r.flags.contains(&Flag::ControlSolution),
            "type 10 is control solution"
        );
        assert!(r.flags.contains(&Flag::ResultAboveDeviceRange));
        assert!(!r.is_alertable());
        m.concentration = m.concentration.map(|c| Concentration {
            sample_type: 1,
            sample_location: 1,
            ..c
        });
        m.sensor_status = None;
        assert!(m.readings()[0].is_alertable());
    }

    #[test]
    fn context_joins_by_sequence_number() {
        let m =
            GlucoseMeasurement::decode(&[0x12, 4, 0, 0xe4, 0x07, 1, 1, 0, 0, 0, 0x64, 0xb0, 0x11])
                .unwrap();
        let c = GlucoseContext::decode(&[0x02, 4, 0, 3]).unwrap();
        assert_eq!(
            m.readings_with_context(Some(&c))[0].meal,
            Some(Meal::Fasting)
        );
        let other = GlucoseContext::decode(&[0x02, 5, 0, 3]).unwrap();
        assert_eq!(m.readings_with_context(Some(&other))[0].meal, None);
        let ketone = GlucoseContext::decode(&[0x02, 4, 0, 6]).unwrap();
        assert_eq!(m.readings_with_context(Some(&ketone))[0].meal, None);
    }

    #[test]
    fn flags_length_mismatch_names_the_numbers() {
        // flags 0x1B: time offset, concentration, status, context → 17 bytes.
        let e = GlucoseMeasurement::decode(&[
            0x1b, 1, 0, 0xe3, 0x07, 2, 27, 11, 10, 30, 0xfb, 0xff, 0x1e, 0, 0x12,
        ])
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "glucose-measurement: flags 0x1B require 17 bytes, got 15"
        );
    }

    #[test]
    fn mmol_meter_scales_exactly() {
        let m = GlucoseMeasurement {
            sequence_number: 7,
            base_time: DateTime {
                year: 2024,
                month: 3,
                day: 1,
                hour: 8,
                minute: 0,
                second: 0,
            },
            time_offset_min: None,
            concentration: Some(Concentration {
                value: SFloat::from_raw(0xC03B),
                unit: ConcentrationUnit::MolPerL,
                sample_type: 1,
                sample_location: 1,
            }),
            sensor_status: None,
            context_follows: false,
        };
        let r = &m.readings()[0];
        assert_eq!(r.value, Value::Number(Decimal::new(59, -1)));
        assert_eq!(r.unit, Unit::MmolPerL);
        assert_eq!(r.value.number().unwrap().to_string(), "5.9");
    }
}
