//! Record Access Control Point 0x2A52 (GLS, CGMS, PLXS): `op_code u8 | operator u8 | operand…`.
//!
//! The hub writes requests (report records, report the number of records, abort) and receives
//! responses (number of records, response code) as indications. One type decodes either direction.
//!
//! Interpretations:
//! - The Number of Stored Records operand is a u16 as GLS/CGMS define it; the 1- and 4-byte forms some
//!   libraries accept are rejected, so a meter that sends them is reported, not guessed at.
//! - Filter type 0x01 is "sequence number" in GLS and "time offset" in CGMS — both u16 — so it is kept
//!   as a numeric filter with its type code; 0x02 is the GLS user-facing time (Date Time).
//! - GLS 1.0 used ATT 0x80/0x81 where later versions use 0xFE/0xFD for "procedure already in
//!   progress"/"CCCD improperly configured"; those are ATT errors, not RACP values, and live in `ble`.

use super::bytes::{check_length, Reader, Writer};
use super::datetime::DateTime;
use super::error::{DecodeError, EncodeError};
use super::names::Code;
use super::GattValue;
use serde::Serialize;

/// RACP op codes.
pub mod op {
    pub const REPORT_STORED_RECORDS: u8 = 0x01;
    pub const DELETE_STORED_RECORDS: u8 = 0x02;
    pub const ABORT: u8 = 0x03;
    pub const REPORT_NUMBER_OF_RECORDS: u8 = 0x04;
    pub const NUMBER_OF_RECORDS_RESPONSE: u8 = 0x05;
    pub const RESPONSE_CODE: u8 = 0x06;
}

/// RACP operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Operator {
    AllRecords,
    LessThanOrEqual,
    GreaterThanOrEqual,
    WithinRange,
    FirstRecord,
    LastRecord,
}

impl Operator {
    fn code(&self) -> u8 {
        match self {
            Operator::AllRecords => 0x01,
            Operator::LessThanOrEqual => 0x02,
            Operator::GreaterThanOrEqual => 0x03,
            Operator::WithinRange => 0x04,
            Operator::FirstRecord => 0x05,
            Operator::LastRecord => 0x06,
        }
    }

    fn from_code(c: u8) -> Option<Operator> {
        Some(match c {
            0x01 => Operator::AllRecords,
            0x02 => Operator::LessThanOrEqual,
            0x03 => Operator::GreaterThanOrEqual,
            0x04 => Operator::WithinRange,
            0x05 => Operator::FirstRecord,
            0x06 => Operator::LastRecord,
            _ => return None,
        })
    }

    /// How many filter values follow the filter type: 0, 1 or 2.
    fn operand_values(&self) -> usize {
        match self {
            Operator::LessThanOrEqual | Operator::GreaterThanOrEqual => 1,
            Operator::WithinRange => 2,
            _ => 0,
        }
    }
}

/// A filter value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterValue {
    /// Filter type 0x01: sequence number (GLS) or time offset in minutes (CGMS).
    U16(u16),
    /// Filter type 0x02: user-facing time (GLS).
    Time(DateTime),
}

/// The operand of a filtered request: the filter type and one or two values.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Filter {
    pub filter_type: u8,
    pub values: Vec<FilterValue>,
}

/// Request op codes that take an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestOp {
    ReportStoredRecords,
    DeleteStoredRecords,
    ReportNumberOfStoredRecords,
}

impl RequestOp {
    fn code(&self) -> u8 {
        match self {
            RequestOp::ReportStoredRecords => op::REPORT_STORED_RECORDS,
            RequestOp::DeleteStoredRecords => op::DELETE_STORED_RECORDS,
            RequestOp::ReportNumberOfStoredRecords => op::REPORT_NUMBER_OF_RECORDS,
        }
    }
}

/// RACP response codes (operand of op code 0x06).
pub mod response {
    pub const SUCCESS: u8 = 0x01;
    pub const OP_CODE_NOT_SUPPORTED: u8 = 0x02;
    pub const INVALID_OPERATOR: u8 = 0x03;
    pub const OPERATOR_NOT_SUPPORTED: u8 = 0x04;
    pub const INVALID_OPERAND: u8 = 0x05;
    pub const NO_RECORDS_FOUND: u8 = 0x06;
    pub const ABORT_UNSUCCESSFUL: u8 = 0x07;
    pub const PROCEDURE_NOT_COMPLETED: u8 = 0x08;
    pub const OPERAND_NOT_SUPPORTED: u8 = 0x09;
}

pub fn response_name(code: u8) -> Option<&'static str> {
    Some(match code {
        0x01 => "success",
        0x02 => "op_code_not_supported",
        0x03 => "invalid_operator",
        0x04 => "operator_not_supported",
        0x05 => "invalid_operand",
        0x06 => "no_records_found",
        0x07 => "abort_unsuccessful",
        0x08 => "procedure_not_completed",
        0x09 => "operand_not_supported",
        _ => return None,
    })
}

fn op_name(code: u8) -> Option<&'static str> {
    Some(match code {
        0x01 => "report_stored_records",
        0x02 => "delete_stored_records",
        0x03 => "abort_operation",
        0x04 => "report_number_of_stored_records",
        0x05 => "number_of_stored_records_response",
        0x06 => "response_code",
        _ => return None,
    })
}

/// A Record Access Control Point value, either direction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RacpMessage {
    /// Op codes 0x01, 0x02, 0x04 with an operator (and a filter for ≤, ≥, range).
    Request {
        op: RequestOp,
        operator: Operator,
        filter: Option<Filter>,
    },
    /// Op code 0x03, operator Null.
    Abort,
    /// Op code 0x05: the number of stored records matching a 0x04 request.
    NumberOfRecords(u16),
    /// Op code 0x06: the outcome of a request.
    Response {
        request_op_code: u8,
        response_code: u8,
    },
}

impl Serialize for RacpMessage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("RacpMessage", 4)?;
        let code = self.op_code();
        st.serialize_field(
            "op_code",
            &Code {
                code: code.into(),
                name: op_name(code),
            },
        )?;
        match self {
            RacpMessage::Request {
                operator, filter, ..
            } => {
                st.serialize_field("operator", operator)?;
                st.serialize_field("filter", filter)?;
            }
            RacpMessage::Abort => {}
            RacpMessage::NumberOfRecords(n) => st.serialize_field("number_of_records", n)?,
            RacpMessage::Response {
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
        }
        st.end()
    }
}

impl RacpMessage {
    const WHAT: &'static str = "record-access-control-point";

    /// `01 01`: report all stored records.
    pub fn report_all() -> Self {
        RacpMessage::Request {
            op: RequestOp::ReportStoredRecords,
            operator: Operator::AllRecords,
            filter: None,
        }
    }

    /// `01 03 01 <n>`: report records with sequence number ≥ `n` (send cursor + 1 for "newer").
    pub fn report_from_sequence(n: u16) -> Self {
        RacpMessage::Request {
            op: RequestOp::ReportStoredRecords,
            operator: Operator::GreaterThanOrEqual,
            filter: Some(Filter {
                filter_type: 0x01,
                values: vec![FilterValue::U16(n)],
            }),
        }
    }

    /// `01 03 01 <n>` on a CGM: report records with time offset ≥ `n` minutes (CGMS filter type
    /// 0x01 is the time offset; send the last stored offset + 1 for "newer").
    pub fn report_from_time_offset(n: u16) -> Self {
        RacpMessage::report_from_sequence(n)
    }

    /// `04 01`: report the number of all stored records.
    pub fn count_all() -> Self {
        RacpMessage::Request {
            op: RequestOp::ReportNumberOfStoredRecords,
            operator: Operator::AllRecords,
            filter: None,
        }
    }

    /// `04 03 01 <n>`: the number of records with sequence number ≥ `n`.
    pub fn count_from_sequence(n: u16) -> Self {
        RacpMessage::Request {
            op: RequestOp::ReportNumberOfStoredRecords,
            operator: Operator::GreaterThanOrEqual,
            filter: Some(Filter {
                filter_type: 0x01,
                values: vec![FilterValue::U16(n)],
            }),
        }
    }

    /// `03 00`: abort the procedure in progress.
    pub fn abort() -> Self {
        RacpMessage::Abort
    }

    pub fn op_code(&self) -> u8 {
        match self {
            RacpMessage::Request { op, .. } => op.code(),
            RacpMessage::Abort => op::ABORT,
            RacpMessage::NumberOfRecords(_) => op::NUMBER_OF_RECORDS_RESPONSE,
            RacpMessage::Response { .. } => op::RESPONSE_CODE,
        }
    }
}

impl GattValue for RacpMessage {
    const UUID: u16 = 0x2A52;
    const NAME: &'static str = "record-access-control-point";

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let w = Self::WHAT;
        check_length(w, "at least 2", bytes.len() >= 2, bytes.len())?;
        let mut r = Reader::new(w, bytes);
        let op_code = r.u8()?;
        let operator = r.u8()?;
        let msg = match op_code {
            op::REPORT_STORED_RECORDS
            | op::DELETE_STORED_RECORDS
            | op::REPORT_NUMBER_OF_RECORDS => {
                let request = match op_code {
                    op::REPORT_STORED_RECORDS => RequestOp::ReportStoredRecords,
                    op::DELETE_STORED_RECORDS => RequestOp::DeleteStoredRecords,
                    _ => RequestOp::ReportNumberOfStoredRecords,
                };
                let operator = Operator::from_code(operator).ok_or(DecodeError::OutOfRange {
                    what: w,
                    field: "operator",
                    value: operator.into(),
                    allowed: "0x01..=0x06 for this op code",
                })?;
                let n = operator.operand_values();
                let filter =
                    if n == 0 {
                        None
                    } else {
                        let filter_type = r.u8()?;
                        let mut values = Vec::with_capacity(n);
                        for _ in 0..n {
                            values.push(match filter_type {
                                0x01 => FilterValue::U16(r.u16()?),
                                0x02 => FilterValue::Time(DateTime::read(&mut r)?),
                                other => return Err(DecodeError::OutOfRange {
                                    what: w,
                                    field: "filter type",
                                    value: other.into(),
                                    allowed:
                                        "0x01 sequence number / time offset, 0x02 user facing time",
                                }),
                            });
                        }
                        if let [FilterValue::U16(a), FilterValue::U16(b)] = values.as_slice() {
                            if a > b {
                                return Err(DecodeError::malformed(
                                    w,
                                    format!("range {a}..={b} is empty (minimum above maximum)"),
                                ));
                            }
                        }
                        Some(Filter {
                            filter_type,
                            values,
                        })
                    };
                RacpMessage::Request {
                    op: request,
                    operator,
                    filter,
                }
            }
            op::ABORT => {
                if operator != 0 {
                    return Err(DecodeError::malformed(
                        w,
                        "abort (op 0x03) requires operator 0x00 and no operand",
                    ));
                }
                RacpMessage::Abort
            }
            op::NUMBER_OF_RECORDS_RESPONSE => {
                if operator != 0 || bytes.len() != 4 {
                    return Err(DecodeError::malformed(
                        w,
                        "number of records response (op 0x05) requires operator 0x00 and a 2-byte count",
                    ));
                }
                RacpMessage::NumberOfRecords(r.u16()?)
            }
            op::RESPONSE_CODE => {
                if operator != 0 || bytes.len() != 4 {
                    return Err(DecodeError::malformed(
                        w,
                        "invalid: response code op 6 requires operator 0x00 and 2-byte operand",
                    ));
                }
                let request_op_code = r.u8()?;
                let response_code = r.u8()?;
                RacpMessage::Response {
                    request_op_code,
                    response_code,
                }
            }
            other => {
                return Err(DecodeError::OutOfRange {
                    what: w,
                    field: "op code",
                    value: other.into(),
                    allowed: "0x01..=0x06",
                })
            }
        };
        r.finish()?;
        Ok(msg)
    }

    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut w = Writer::new();
        match self {
            RacpMessage::Request {
                op,
                operator,
                filter,
            } => {
                w.u8(op.code()).u8(operator.code());
                let n = operator.operand_values();
                match (n, filter) {
                    (0, None) => {}
                    (n, Some(f)) if f.values.len() == n => {
                        w.u8(f.filter_type);
                        for v in &f.values {
                            match (f.filter_type, v) {
                                (0x01, FilterValue::U16(x)) => {
                                    w.u16(*x);
                                }
                                (0x02, FilterValue::Time(t)) => t.write(&mut w),
                                _ => {
                                    return Err(EncodeError::Unrepresentable {
                                        what: Self::WHAT,
                                        detail: format!(
                                            "filter type 0x{:02X} does not match its value",
                                            f.filter_type
                                        ),
                                    })
                                }
                            }
                        }
                    }
                    _ => {
                        return Err(EncodeError::Unrepresentable {
                            what: Self::WHAT,
                            detail: format!("operator {operator:?} takes {n} filter value(s)"),
                        })
                    }
                }
            }
            RacpMessage::Abort => {
                w.u8(op::ABORT).u8(0);
            }
            RacpMessage::NumberOfRecords(n) => {
                w.u8(op::NUMBER_OF_RECORDS_RESPONSE).u8(0).u16(*n);
            }
            RacpMessage::Response {
                request_op_code,
                response_code,
            } => {
                w.u8(op::RESPONSE_CODE)
                    .u8(0)
                    .u8(*request_op_code)
                    .u8(*response_code);
            }
        }
        Ok(w.into_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gatt::testing::{config, date_time};
    use proptest::prelude::*;

    fn operator() -> impl Strategy<Value = Operator> {
        prop_oneof![
            Just(Operator::AllRecords),
            Just(Operator::LessThanOrEqual),
            Just(Operator::GreaterThanOrEqual),
            Just(Operator::WithinRange),
            Just(Operator::FirstRecord),
            Just(Operator::LastRecord),
        ]
    }

    fn message() -> impl Strategy<Value = RacpMessage> {
        let request = (
            prop_oneof![
                Just(RequestOp::ReportStoredRecords),
                Just(RequestOp::DeleteStoredRecords),
                Just(RequestOp::ReportNumberOfStoredRecords)
            ],
            operator(),
            any::<bool>(),
            any::<u16>(),
            any::<u16>(),
            date_time(),
            date_time(),
        )
            .prop_map(|(op, operator, time, a, b, t1, t2)| {
                let n = operator.operand_values();
                let filter = (n > 0).then(|| {
                    if time {
                        Filter {
                            filter_type: 0x02,
                            values: [t1, t2]
                                .into_iter()
                                .take(n)
                                .map(FilterValue::Time)
                                .collect(),
                        }
                    } else {
                        let (lo, hi) = (a.min(b), a.max(b));
                        Filter {
                            filter_type: 0x01,
                            values: [lo, hi].into_iter().take(n).map(FilterValue::U16).collect(),
                        }
                    }
                });
                RacpMessage::Request {
                    op,
                    operator,
                    filter,
                }
            });
        prop_oneof![
            request,
            Just(RacpMessage::Abort),
            any::<u16>().prop_map(RacpMessage::NumberOfRecords),
            (any::<u8>(), any::<u8>()).prop_map(|(request_op_code, response_code)| {
                RacpMessage::Response {
                    request_op_code,
                    response_code,
                }
            }),
        ]
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn round_trips(m in message()) {
            let bytes = m.encode().unwrap();
            prop_assert_eq!(RacpMessage::decode(&bytes).unwrap(), m);
        }
    }

    #[test]
    fn hub_requests_have_the_documented_bytes() {
        assert_eq!(RacpMessage::report_all().encode().unwrap(), [0x01, 0x01]);
        assert_eq!(RacpMessage::count_all().encode().unwrap(), [0x04, 0x01]);
        assert_eq!(
            RacpMessage::report_from_sequence(4).encode().unwrap(),
            [0x01, 0x03, 0x01, 0x04, 0x00]
        );
        assert_eq!(
            RacpMessage::count_from_sequence(0x0102).encode().unwrap(),
            [0x04, 0x03, 0x01, 0x02, 0x01]
        );
        assert_eq!(RacpMessage::abort().encode().unwrap(), [0x03, 0x00]);
    }

    #[test]
    fn rejects_malformed() {
        assert!(RacpMessage::decode(&[0x01]).is_err());
        assert!(RacpMessage::decode(&[0x01, 0x00]).is_err());
        assert!(RacpMessage::decode(&[0x01, 0x03, 0x01, 0x04]).is_err());
        assert!(RacpMessage::decode(&[0x01, 0x04, 0x01, 0x05, 0x00, 0x04, 0x00]).is_err());
        assert!(RacpMessage::decode(&[0x07, 0x00]).is_err());
        assert!(RacpMessage::decode(&[0x05, 0x00, 0x02]).is_err());
        assert!(RacpMessage::decode(&[0x01, 0x01, 0x00]).is_err());
    }
}
