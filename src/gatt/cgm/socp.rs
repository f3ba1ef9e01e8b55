//! CGM Specific Ops Control Point 0x2AAC: op codes, operands, calibration records, responses.

#[allow(unused_imports)]
use super::*;

// ------------------------------------------------------------------------------------------------
// CGM Specific Ops Control Point 0x2AAC.

/// SOCP op codes.
pub mod op {
    pub const SET_COMMUNICATION_INTERVAL: u8 = 1;
    pub const GET_COMMUNICATION_INTERVAL: u8 = 2;
    pub const COMMUNICATION_INTERVAL_RESPONSE: u8 = 3;
    pub const SET_CALIBRATION_VALUE: u8 = 4;
    pub const GET_CALIBRATION_VALUE: u8 = 5;
    pub const CALIBRATION_VALUE_RESPONSE: u8 = 6;
    /// 7..=24: set / get / response for each alert level, in [`super::AlertLevel`] order.
    pub const FIRST_ALERT_LEVEL: u8 = 7;
    pub const LAST_ALERT_LEVEL: u8 = 24;
    pub const RESET_DEVICE_SPECIFIC_ALERT: u8 = 25;
    pub const START_SESSION: u8 = 26;
    pub const STOP_SESSION: u8 = 27;
    pub const RESPONSE_CODE: u8 = 28;
}

/// SOCP response codes (operand of op code 28).
pub mod response {
    pub const SUCCESS: u8 = 1;
    pub const OP_CODE_NOT_SUPPORTED: u8 = 2;
    pub const INVALID_OPERAND: u8 = 3;
    pub const PROCEDURE_NOT_COMPLETED: u8 = 4;
    pub const PARAMETER_OUT_OF_RANGE: u8 = 5;
}

pub fn response_name(code: u8) -> Option<&'static str> {
    Some(match code {
        1 => "success",
        2 => "op_code_not_supported",
        3 => "invalid_operand",
        4 => "procedure_not_completed",
        5 => "parameter_out_of_range",
        _ => return None,
    })
}

/// The alert levels a sensor keeps, in op-code order (each takes three op codes from 7 on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertLevel {
    PatientHigh,
    PatientLow,
    Hypo,
    Hyper,
    RateOfDecrease,
    RateOfIncrease,
}

impl AlertLevel {
    pub const ALL: [AlertLevel; 6] = [
        AlertLevel::PatientHigh,
        AlertLevel::PatientLow,
        AlertLevel::Hypo,
        AlertLevel::Hyper,
        AlertLevel::RateOfDecrease,
        AlertLevel::RateOfIncrease,
    ];

    /// The op code of "set" (get is +1, response +2).
    pub fn set_op_code(&self) -> u8 {
        op::FIRST_ALERT_LEVEL
            + 3 * match self {
                AlertLevel::PatientHigh => 0,
                AlertLevel::PatientLow => 1,
                AlertLevel::Hypo => 2,
                AlertLevel::Hyper => 3,
                AlertLevel::RateOfDecrease => 4,
                AlertLevel::RateOfIncrease => 5,
            }
    }

    /// The unit of the level: mg/dL, or mg/dL/min for the rate alerts.
    pub fn unit(&self) -> &'static str {
        match self {
            AlertLevel::RateOfDecrease | AlertLevel::RateOfIncrease => "mg/dL/min",
            _ => "mg/dL",
        }
    }

    /// `(level, 0 set / 1 get / 2 response)` for op codes 7..=24.
    pub(super) fn from_op_code(code: u8) -> Option<(AlertLevel, u8)> {
        let i = code.checked_sub(op::FIRST_ALERT_LEVEL)?;
        let level = AlertLevel::ALL.get(usize::from(i / 3)).copied()?;
        Some((level, i % 3))
    }
}

/// Names of the calibration status bits.
pub const CALIBRATION_STATUS_BITS: [&str; 3] = [
    "calibration_data_rejected",
    "calibration_data_out_of_range",
    "calibration_process_pending",
];

/// A CGM calibration record (operand of op codes 4 and 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CalibrationRecord {
    /// Calibration glucose concentration, mg/dL.
    pub glucose_mg_dl: SFloat,
    /// Minutes since session start.
    pub calibration_time_min: u16,
    /// Type nibble (low nibble).
    pub sample_type: u8,
    /// Sample Location nibble (high nibble).
    pub sample_location: u8,
    /// Minutes since session start.
    pub next_calibration_time_min: u16,
    pub record_number: u16,
    /// Bits 0 rejected, 1 out of range, 2 process pending; others reserved, kept.
    pub status: u8,
}

impl CalibrationRecord {
    const LEN: usize = 10;

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let glucose_mg_dl = r.sfloat()?;
        let calibration_time_min = r.u16()?;
        let tl = r.u8()?;
        Ok(CalibrationRecord {
            glucose_mg_dl,
            calibration_time_min,
            sample_type: tl & 0x0F,
            sample_location: tl >> 4,
            next_calibration_time_min: r.u16()?,
            record_number: r.u16()?,
            status: r.u8()?,
        })
    }

    fn write(&self, w: &mut Writer) -> Result<(), EncodeError> {
        let tl = nibbles(SocpMessage::WHAT, self.sample_type, self.sample_location)?;
        w.sfloat(self.glucose_mg_dl)
            .u16(self.calibration_time_min)
            .u8(tl)
            .u16(self.next_calibration_time_min)
            .u16(self.record_number)
            .u8(self.status);
        Ok(())
    }
}

impl Serialize for CalibrationRecord {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("CalibrationRecord", 7)?;
        st.serialize_field("glucose_mg_dl", &self.glucose_mg_dl)?;
        st.serialize_field("calibration_time_min", &self.calibration_time_min)?;
        st.serialize_field("type", &type_code(self.sample_type))?;
        st.serialize_field("sample_location", &location_code(self.sample_location))?;
        st.serialize_field("next_calibration_time_min", &self.next_calibration_time_min)?;
        st.serialize_field("record_number", &self.record_number)?;
        st.serialize_field(
            "status",
            &Bits::new(self.status.into(), 8, &CALIBRATION_STATUS_BITS),
        )?;
        st.end()
    }
}

/// A SOCP operation with its operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SocpOp {
    /// Op 1: minutes (0 = off, 0xFF = fastest).
    SetCommunicationInterval(u8),
    /// Op 2.
    GetCommunicationInterval,
    /// Op 3: minutes.
    CommunicationIntervalResponse(u8),
    /// Op 4.
    SetCalibrationValue(CalibrationRecord),
    /// Op 5: calibration record number.
    GetCalibrationValue(u16),
    /// Op 6.
    CalibrationValueResponse(CalibrationRecord),
    /// Ops 7, 10, 13, 16, 19, 22.
    SetAlertLevel(AlertLevel, SFloat),
    /// Ops 8, 11, 14, 17, 20, 23.
    GetAlertLevel(AlertLevel),
    /// Ops 9, 12, 15, 18, 21, 24.
    AlertLevelResponse(AlertLevel, SFloat),
    /// Op 25.
    ResetDeviceSpecificAlert,
    /// Op 26.
    StartSession,
    /// Op 27.
    StopSession,
    /// Op 28: the outcome of a request (both kept raw).
    Response {
        request_op_code: u8,
        response_code: u8,
    },
}

impl SocpOp {
    pub fn op_code(&self) -> u8 {
        match self {
            SocpOp::SetCommunicationInterval(_) => op::SET_COMMUNICATION_INTERVAL,
            SocpOp::GetCommunicationInterval => op::GET_COMMUNICATION_INTERVAL,
            SocpOp::CommunicationIntervalResponse(_) => op::COMMUNICATION_INTERVAL_RESPONSE,
            SocpOp::SetCalibrationValue(_) => op::SET_CALIBRATION_VALUE,
            SocpOp::GetCalibrationValue(_) => op::GET_CALIBRATION_VALUE,
            SocpOp::CalibrationValueResponse(_) => op::CALIBRATION_VALUE_RESPONSE,
            SocpOp::SetAlertLevel(l, _) => l.set_op_code(),
            SocpOp::GetAlertLevel(l) => l.set_op_code() + 1,
            SocpOp::AlertLevelResponse(l, _) => l.set_op_code() + 2,
            SocpOp::ResetDeviceSpecificAlert => op::RESET_DEVICE_SPECIFIC_ALERT,
            SocpOp::StartSession => op::START_SESSION,
            SocpOp::StopSession => op::STOP_SESSION,
            SocpOp::Response { .. } => op::RESPONSE_CODE,
        }
    }
}

/// The operand length of a known op code and the lengths to print when a value does not match.
pub(super) fn operand_len(code: u8) -> Option<(usize, &'static str)> {
    const NONE: (usize, &str) = (0, "1, or 3 with E2E-CRC, for this op code");
    const ONE: (usize, &str) = (1, "2, or 4 with E2E-CRC, for this op code");
    const TWO: (usize, &str) = (2, "3, or 5 with E2E-CRC, for this op code");
    const CAL: (usize, &str) = (
        CalibrationRecord::LEN,
        "11, or 13 with E2E-CRC, for this op code",
    );
    Some(match code {
        op::SET_COMMUNICATION_INTERVAL | op::COMMUNICATION_INTERVAL_RESPONSE => ONE,
        op::GET_COMMUNICATION_INTERVAL => NONE,
        op::SET_CALIBRATION_VALUE | op::CALIBRATION_VALUE_RESPONSE => CAL,
        op::GET_CALIBRATION_VALUE => TWO,
        op::FIRST_ALERT_LEVEL..=op::LAST_ALERT_LEVEL => match AlertLevel::from_op_code(code)?.1 {
            1 => NONE,
            _ => TWO,
        },
        op::RESET_DEVICE_SPECIFIC_ALERT | op::START_SESSION | op::STOP_SESSION => NONE,
        op::RESPONSE_CODE => TWO,
        _ => return None,
    })
}

/// The spec name of a SOCP op code.
pub fn op_name(code: u8) -> Option<&'static str> {
    Some(match code {
        op::SET_COMMUNICATION_INTERVAL => "set_cgm_communication_interval",
        op::GET_COMMUNICATION_INTERVAL => "get_cgm_communication_interval",
        op::COMMUNICATION_INTERVAL_RESPONSE => "cgm_communication_interval_response",
        op::SET_CALIBRATION_VALUE => "set_glucose_calibration_value",
        op::GET_CALIBRATION_VALUE => "get_glucose_calibration_value",
        op::CALIBRATION_VALUE_RESPONSE => "glucose_calibration_value_response",
        7 => "set_patient_high_alert_level",
        8 => "get_patient_high_alert_level",
        9 => "patient_high_alert_level_response",
        10 => "set_patient_low_alert_level",
        11 => "get_patient_low_alert_level",
        12 => "patient_low_alert_level_response",
        13 => "set_hypo_alert_level",
        14 => "get_hypo_alert_level",
        15 => "hypo_alert_level_response",
        16 => "set_hyper_alert_level",
        17 => "get_hyper_alert_level",
        18 => "hyper_alert_level_response",
        19 => "set_rate_of_decrease_alert_level",
        20 => "get_rate_of_decrease_alert_level",
        21 => "rate_of_decrease_alert_level_response",
        22 => "set_rate_of_increase_alert_level",
        23 => "get_rate_of_increase_alert_level",
        24 => "rate_of_increase_alert_level_response",
        op::RESET_DEVICE_SPECIFIC_ALERT => "reset_device_specific_alert",
        op::START_SESSION => "start_session",
        op::STOP_SESSION => "stop_session",
        op::RESPONSE_CODE => "response_code",
        _ => return None,
    })
}

/// CGM Specific Ops Control Point 0x2AAC, either direction: `op code | operand | [E2E-CRC]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SocpMessage {
    pub op: SocpOp,
    /// The value carries an E2E-CRC (checked on decode, computed by encode). Writes to a sensor
    /// with CGM Feature bit 12 set must carry one.
    pub e2e_crc: bool,
}

impl Serialize for SocpMessage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("SocpMessage", 5)?;
        let code = self.op.op_code();
        st.serialize_field(
            "op_code",
            &Code {
                code: code.into(),
                name: op_name(code),
            },
        )?;
        match &self.op {
            SocpOp::SetCommunicationInterval(m) | SocpOp::CommunicationIntervalResponse(m) => {
                st.serialize_field("communication_interval_min", m)?;
            }
            SocpOp::SetCalibrationValue(c) | SocpOp::CalibrationValueResponse(c) => {
                st.serialize_field("calibration", c)?;
            }
            SocpOp::GetCalibrationValue(n) => st.serialize_field("record_number", n)?,
            SocpOp::SetAlertLevel(l, v) | SocpOp::AlertLevelResponse(l, v) => {
                st.serialize_field("alert", l)?;
                st.serialize_field("level", v)?;
                st.serialize_field("unit", l.unit())?;
            }
            SocpOp::GetAlertLevel(l) => st.serialize_field("alert", l)?,
            SocpOp::Response {
                request_op_code,
                response_code,
            } => {
                st.serialize_field(
                    "request_op_code",
                    &Code {
                        code: (*request_op_code).into(),
                        name: op_name(*request_op_code),
                    },
                )?;
                st.serialize_field(
                    "response_code",
                    &Code {
                        code: (*response_code).into(),
                        name: response_name(*response_code),
                    },
                )?;
            }
            SocpOp::GetCommunicationInterval
            | SocpOp::ResetDeviceSpecificAlert
            | SocpOp::StartSession
            | SocpOp::StopSession => {}
        }
        st.serialize_field("e2e_crc", &self.e2e_crc)?;
        st.end()
    }
}

impl SocpMessage {
    pub const WHAT: &'static str = <Self as GattValue>::NAME;

    pub fn new(op: SocpOp, with_crc: bool) -> Self {
        SocpMessage {
            op,
            e2e_crc: with_crc,
        }
    }

    /// `1a`: start a session (then write the Session Start Time).
    pub fn start_session(with_crc: bool) -> Self {
        Self::new(SocpOp::StartSession, with_crc)
    }

    /// `1b`: stop the session.
    pub fn stop_session(with_crc: bool) -> Self {
        Self::new(SocpOp::StopSession, with_crc)
    }

    /// `01 <min>`: set the communication interval.
    pub fn set_communication_interval(minutes: u8, with_crc: bool) -> Self {
        Self::new(SocpOp::SetCommunicationInterval(minutes), with_crc)
    }

    /// `02`: ask for the communication interval.
    pub fn get_communication_interval(with_crc: bool) -> Self {
        Self::new(SocpOp::GetCommunicationInterval, with_crc)
    }

    /// `04 <record>`: send a calibration value.
    pub fn set_calibration_value(record: CalibrationRecord, with_crc: bool) -> Self {
        Self::new(SocpOp::SetCalibrationValue(record), with_crc)
    }

    /// `05 <n>`: ask for calibration record `n` (0xFFFF = the last one).
    pub fn get_calibration_value(record_number: u16, with_crc: bool) -> Self {
        Self::new(SocpOp::GetCalibrationValue(record_number), with_crc)
    }

    /// Set an alert level (mg/dL, or mg/dL/min for the rate alerts); fails when the value has no
    /// exact SFLOAT encoding.
    pub fn set_alert_level(
        level: AlertLevel,
        value: Decimal,
        with_crc: bool,
    ) -> Result<Self, EncodeError> {
        Ok(Self::new(
            SocpOp::SetAlertLevel(level, SFloat::from_decimal(value)?),
            with_crc,
        ))
    }

    /// Ask for an alert level.
    pub fn get_alert_level(level: AlertLevel, with_crc: bool) -> Self {
        Self::new(SocpOp::GetAlertLevel(level), with_crc)
    }

    /// `19`: reset the device specific alert.
    pub fn reset_device_specific_alert(with_crc: bool) -> Self {
        Self::new(SocpOp::ResetDeviceSpecificAlert, with_crc)
    }
}

impl GattValue for SocpMessage {
    const UUID: u16 = 0x2AAC;
    const NAME: &'static str = "cgm-specific-ops-control-point";

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let what = Self::WHAT;
        let code = *bytes.first().ok_or(DecodeError::Empty { what })?;
        let (len, need) = operand_len(code).ok_or(DecodeError::OutOfRange {
            what,
            field: "op code",
            value: code.into(),
            allowed: "1..=28",
        })?;
        let n = bytes.len();
        check_length(what, need, n == 1 + len || n == 3 + len, n)?;
        let body = checked_body(what, bytes, 1 + len)?;
        let mut r = Reader::new(what, body);
        r.u8()?;
        let op = match code {
            op::SET_COMMUNICATION_INTERVAL => SocpOp::SetCommunicationInterval(r.u8()?),
            op::GET_COMMUNICATION_INTERVAL => SocpOp::GetCommunicationInterval,
            op::COMMUNICATION_INTERVAL_RESPONSE => SocpOp::CommunicationIntervalResponse(r.u8()?),
            op::SET_CALIBRATION_VALUE => {
                SocpOp::SetCalibrationValue(CalibrationRecord::read(&mut r)?)
            }
            op::GET_CALIBRATION_VALUE => SocpOp::GetCalibrationValue(r.u16()?),
            op::CALIBRATION_VALUE_RESPONSE => {
                SocpOp::CalibrationValueResponse(CalibrationRecord::read(&mut r)?)
            }
            op::RESET_DEVICE_SPECIFIC_ALERT => SocpOp::ResetDeviceSpecificAlert,
            op::START_SESSION => SocpOp::StartSession,
            op::STOP_SESSION => SocpOp::StopSession,
            op::RESPONSE_CODE => SocpOp::Response {
                request_op_code: r.u8()?,
                response_code: r.u8()?,
            },
            _ => match AlertLevel::from_op_code(code) {
                Some((level, 0)) => SocpOp::SetAlertLevel(level, r.sfloat()?),
                Some((level, 1)) => SocpOp::GetAlertLevel(level),
                Some((level, _)) => SocpOp::AlertLevelResponse(level, r.sfloat()?),
                // operand_len accepted only known op codes.
                None => {
                    return Err(DecodeError::OutOfRange {
                        what,
                        field: "op code",
                        value: code.into(),
                        allowed: "1..=28",
                    })
                }
            },
        };
        r.finish()?;
        Ok(SocpMessage {
            op,
            e2e_crc: n == 3 + len,
        })
    }

    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut w = Writer::new();
        w.u8(self.op.op_code());
        match &self.op {
            SocpOp::SetCommunicationInterval(m) | SocpOp::CommunicationIntervalResponse(m) => {
                w.u8(*m);
            }
            SocpOp::SetCalibrationValue(c) | SocpOp::CalibrationValueResponse(c) => {
                c.write(&mut w)?;
            }
            SocpOp::GetCalibrationValue(n) => {
                w.u16(*n);
            }
            SocpOp::SetAlertLevel(_, v) | SocpOp::AlertLevelResponse(_, v) => {
                w.sfloat(*v);
            }
            SocpOp::Response {
                request_op_code,
                response_code,
            } => {
                w.u8(*request_op_code).u8(*response_code);
            }
            SocpOp::GetCommunicationInterval
            | SocpOp::GetAlertLevel(_)
            | SocpOp::ResetDeviceSpecificAlert
            | SocpOp::StartSession
            | SocpOp::StopSession => {}
        }
        Ok(finish(w, self.e2e_crc))
    }
}
