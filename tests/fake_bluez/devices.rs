//! Scriptable devices, built with the `gatt` encoders.
use super::{Action, Behavior, DeviceModel};
use std::sync::{Arc, Mutex};
use vitals_hub::gatt::datetime::{CurrentTime, DateTime};
use vitals_hub::gatt::glucose::{
    Concentration, ConcentrationUnit, GlucoseContext, GlucoseMeasurement,
};
use vitals_hub::gatt::racp::{op, response, FilterValue, Operator, RacpMessage, RequestOp};
use vitals_hub::gatt::{GattValue, SFloat};
use vitals_hub::model::{Decimal, LocalDateTime};

pub fn dt(t: LocalDateTime) -> DateTime {
    DateTime::from_local(t)
}

pub fn clock_bytes(t: LocalDateTime) -> Vec<u8> {
    CurrentTime::for_clock_write(t).encode().unwrap()
}

/// Record `seq` of a meter: 80 + seq % 100 mg/dL, one every 10 minutes from `start`.
pub fn glucose_record(start: LocalDateTime, seq: u16) -> GlucoseMeasurement {
    GlucoseMeasurement {
        sequence_number: seq,
        base_time: dt(start.add_minutes(i64::from(seq) * 10).unwrap()),
        time_offset_min: None,
        concentration: Some(Concentration {
            // mg/dL = kg/L x 10^5: (80 + n) x 10^-5 kg/L
            value: SFloat::from_decimal(Decimal::new(80 + i64::from(seq % 100), -5)).unwrap(),
            unit: ConcentrationUnit::KgPerL,
            sample_type: 1,
            sample_location: 1,
        }),
        sensor_status: None,
        context_follows: false,
    }
}

/// The context record of `seq`: meal = fasting (3) for even, postprandial (2) for odd numbers.
pub fn glucose_context(seq: u16) -> Vec<u8> {
    GlucoseContext {
        sequence_number: seq,
        extended_flags: None,
        carbohydrate: None,
        meal: Some(if seq.is_multiple_of(2) { 3 } else { 2 }),
        tester_health: None,
        exercise: None,
        medication: None,
        hba1c_pct: None,
    }
    .encode()
    .unwrap()
}

/// What a test swaps into a running meter (picked up at the next RACP write): a battery change
/// or factory reset (`first_seq`, `records`).
pub type MeterSwap = Arc<Mutex<Option<(u16, Vec<Vec<u8>>)>>>;

/// A glucose meter with stored records answering RACP as GLS says.
pub struct GlucoseMeter {
    pub records: Vec<Vec<u8>>, // encoded 2A18 values, by sequence number first_seq.. (wrapping)
    pub first_seq: u16,
    /// A measurement whose flags say "context follows" is followed by its 2A34 context record.
    pub contexts: bool,
    pub swap: MeterSwap,
    /// The pause after each record (and its context): a slow meter.
    pub gap: std::time::Duration,
    /// Each report request answered: (the lowest sequence number asked for, response code).
    pub answered: RacpAnswers,
}

/// The report requests a device answered: (the lowest number asked for, RACP response code).
pub type RacpAnswers = Arc<Mutex<Vec<(u16, u8)>>>;

impl GlucoseMeter {
    pub fn new(start: LocalDateTime, n: u16) -> GlucoseMeter {
        GlucoseMeter::from_seq(start, 1, n)
    }

    /// `n` records numbered from `first` (wrapping past 65,535 to 0, as GLS sequence numbers do).
    pub fn from_seq(start: LocalDateTime, first: u16, n: u16) -> GlucoseMeter {
        GlucoseMeter {
            records: (0..n)
                .map(|i| {
                    glucose_record(start, first.wrapping_add(i))
                        .encode()
                        .unwrap()
                })
                .collect(),
            first_seq: first,
            contexts: false,
            swap: Arc::default(),
            gap: std::time::Duration::ZERO,
            answered: Arc::default(),
        }
    }

    /// Every record says "context follows" and the meter sends the context after it.
    pub fn with_contexts(mut self) -> GlucoseMeter {
        for r in &mut self.records {
            if let Some(f) = r.first_mut() {
                *f |= 0x10;
            }
        }
        self.contexts = true;
        self
    }

    fn seq(&self, i: usize) -> u16 {
        self.first_seq.wrapping_add(i as u16)
    }
}

impl Behavior for GlucoseMeter {
    fn on_write(&mut self, ch: u16, data: &[u8]) -> Result<Vec<Action>, String> {
        if ch != 0x2A52 {
            return Ok(Vec::new());
        }
        if let Some((first, records)) = self.swap.lock().unwrap().take() {
            self.first_seq = first;
            self.records = records;
        }
        let resp = |req: u8, code: u8| {
            Action::Notify(
                0x2A52,
                RacpMessage::Response {
                    request_op_code: req,
                    response_code: code,
                }
                .encode()
                .unwrap(),
            )
        };
        let msg = match RacpMessage::decode(data) {
            Ok(m) => m,
            Err(_) => {
                return Ok(vec![resp(
                    data.first().copied().unwrap_or(0),
                    response::INVALID_OPERATOR,
                )])
            }
        };
        let from =
            |operator: Operator, filter: &Option<vitals_hub::gatt::racp::Filter>| -> Option<u16> {
                match operator {
                    Operator::AllRecords => Some(0),
                    Operator::GreaterThanOrEqual => {
                        match filter.as_ref().and_then(|f| f.values.first()) {
                            Some(FilterValue::U16(n)) => Some(*n),
                            _ => None,
                        }
                    }
                    _ => None,
                }
            };
        match msg {
            RacpMessage::Request {
                op: RequestOp::ReportStoredRecords,
                operator,
                filter,
            } => {
                let Some(n) = from(operator, &filter) else {
                    return Ok(vec![resp(
                        op::REPORT_STORED_RECORDS,
                        response::OPERATOR_NOT_SUPPORTED,
                    )]);
                };
                let mut out = Vec::new();
                for (i, r) in self.records.iter().enumerate() {
                    let seq = self.seq(i);
                    if seq >= n {
                        out.push(Action::Notify(0x2A18, r.clone()));
                        if self.contexts && r.first().is_some_and(|f| f & 0x10 != 0) {
                            out.push(Action::Notify(0x2A34, glucose_context(seq)));
                        }
                        if !self.gap.is_zero() {
                            out.push(Action::Sleep(self.gap));
                        }
                    }
                }
                let code = if out.is_empty() {
                    response::NO_RECORDS_FOUND
                } else {
                    response::SUCCESS
                };
                out.push(resp(op::REPORT_STORED_RECORDS, code));
                self.answered.lock().unwrap().push((n, code));
                Ok(out)
            }
            RacpMessage::Request {
                op: RequestOp::ReportNumberOfStoredRecords,
                operator,
                filter,
            } => {
                let n = from(operator, &filter).unwrap_or(0);
                let count = self
                    .records
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| self.seq(*i) >= n)
                    .count();
                Ok(vec![Action::Notify(
                    0x2A52,
                    RacpMessage::NumberOfRecords(count as u16).encode().unwrap(),
                )])
            }
            RacpMessage::Abort => Ok(vec![resp(op::ABORT, response::SUCCESS)]),
            RacpMessage::Request { .. } => Ok(vec![resp(data[0], response::OP_CODE_NOT_SUPPORTED)]),
            _ => Ok(vec![resp(data[0], response::OP_CODE_NOT_SUPPORTED)]),
        }
    }
}

pub fn glucose_meter(address: &str, meter: GlucoseMeter, clock: LocalDateTime) -> DeviceModel {
    DeviceModel::new(address, "meter+123", Box::new(meter))
        .service(
            0x1808,
            vec![
                (0x2A18, &["notify"], Vec::new()),
                (0x2A34, &["notify"], Vec::new()),
                (0x2A51, &["read"], vec![0xFF, 0x01]),
                (0x2A52, &["write", "indicate"], Vec::new()),
            ],
        )
        .standard("SN-GLU", 77, &clock_bytes(clock))
}

/// A device that, once the hub subscribes to `trigger`, sends `values` (and optionally hangs up).
pub struct Stream {
    pub trigger: u16,
    pub values: Vec<(u16, Vec<u8>)>,
    pub gap: std::time::Duration,
    pub hang_up: bool,
    pub sent: bool,
}

impl Behavior for Stream {
    fn on_subscribe(&mut self, ch: u16) -> Vec<Action> {
        if ch != self.trigger || self.sent {
            return Vec::new();
        }
        self.sent = true;
        let mut out = vec![Action::Sleep(std::time::Duration::from_millis(50))];
        for (c, v) in &self.values {
            out.push(Action::Notify(*c, v.clone()));
            if !self.gap.is_zero() {
                out.push(Action::Sleep(self.gap));
            }
        }
        if self.hang_up {
            out.push(Action::Sleep(std::time::Duration::from_millis(50)));
            out.push(Action::Disconnect);
        }
        out
    }
}

pub fn stream_device(
    address: &str,
    name: &str,
    service: u16,
    chars: Vec<(u16, &'static [&'static str], Vec<u8>)>,
    behavior: Stream,
    clock: LocalDateTime,
) -> DeviceModel {
    DeviceModel::new(address, name, Box::new(behavior))
        .service(service, chars)
        .standard("SN-1", 50, &clock_bytes(clock))
}

/// One CGM record (no CRC, no status): `mg` mg/dL at `offset` minutes.
pub fn cgm_record(mg: i64, offset: u16) -> Vec<u8> {
    use vitals_hub::gatt::cgm::{CgmMeasurement, CgmRecord};
    CgmMeasurement {
        records: vec![CgmRecord {
            glucose_mg_dl: SFloat::from_decimal(Decimal::new(mg, 0)).unwrap(),
            time_offset_min: offset,
            status_octet: None,
            cal_temp_octet: None,
            warning_octet: None,
            trend_mg_dl_min: None,
            quality_pct: None,
            e2e_crc: false,
        }],
    }
    .encode()
    .unwrap()
}

/// The records a CGM sends on its next connection: `(mg/dL, time offset)`.
pub type CgmQueue = Arc<Mutex<Vec<(i64, u16)>>>;

/// A CGM sensor: once the hub subscribes to 0x2AA7, it notifies the queued records one by one,
/// `gap` apart (its cadence, sped up), then hangs up.
pub struct CgmSensor {
    pub queue: CgmQueue,
    pub gap: std::time::Duration,
}

impl Behavior for CgmSensor {
    fn on_subscribe(&mut self, ch: u16) -> Vec<Action> {
        if ch != 0x2AA7 {
            return Vec::new();
        }
        let records = std::mem::take(&mut *self.queue.lock().unwrap());
        let mut out = vec![Action::Sleep(std::time::Duration::from_millis(50))];
        for (mg, off) in records {
            out.push(Action::Notify(0x2AA7, cgm_record(mg, off)));
            out.push(Action::Sleep(self.gap));
        }
        out.push(Action::Disconnect);
        out
    }
}

/// Every record a measuring CGM holds in its current sensor session: `(mg/dL, time offset)`, in
/// the order measured. A real sensor keeps measuring while no collector is connected.
pub type CgmLog = Arc<Mutex<Vec<(i64, u16)>>>;

/// A CGM that keeps its records and answers its Record Access Control Point (0x2AAC) as CGMS
/// says: report all records, or those with time offset ≥ n (filter type 0x01), each as a CGM
/// Measurement notification `gap` apart, then the response code. Live measurements are sent by
/// the test ([`super::FakeBluez::notify`]) as they are added to `log`.
pub struct RacpCgm {
    pub log: CgmLog,
    pub gap: std::time::Duration,
    /// Each report request answered (the lowest offset asked for, response code).
    pub answered: RacpAnswers,
}

impl Behavior for RacpCgm {
    fn on_write(&mut self, ch: u16, data: &[u8]) -> Result<Vec<Action>, String> {
        if ch != 0x2AAC {
            return Ok(Vec::new());
        }
        let resp = |req: u8, code: u8| {
            Action::Notify(
                0x2AAC,
                RacpMessage::Response {
                    request_op_code: req,
                    response_code: code,
                }
                .encode()
                .unwrap(),
            )
        };
        let from = match RacpMessage::decode(data) {
            Ok(RacpMessage::Request {
                op: RequestOp::ReportStoredRecords,
                operator: Operator::AllRecords,
                ..
            }) => 0,
            Ok(RacpMessage::Request {
                op: RequestOp::ReportStoredRecords,
                operator: Operator::GreaterThanOrEqual,
                filter: Some(f),
            }) if f.filter_type == 0x01 => match f.values.first() {
                Some(FilterValue::U16(n)) => *n,
                _ => {
                    return Ok(vec![resp(
                        op::REPORT_STORED_RECORDS,
                        response::INVALID_OPERAND,
                    )])
                }
            },
            Ok(RacpMessage::Abort) => return Ok(vec![resp(op::ABORT, response::SUCCESS)]),
            _ => {
                return Ok(vec![resp(
                    data.first().copied().unwrap_or(0),
                    response::OP_CODE_NOT_SUPPORTED,
                )])
            }
        };
        let records: Vec<(i64, u16)> = self
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, off)| *off >= from)
            .copied()
            .collect();
        let code = if records.is_empty() {
            response::NO_RECORDS_FOUND
        } else {
            response::SUCCESS
        };
        let mut out = Vec::new();
        for (mg, off) in records {
            out.push(Action::Notify(0x2AA7, cgm_record(mg, off)));
            if !self.gap.is_zero() {
                out.push(Action::Sleep(self.gap));
            }
        }
        out.push(resp(op::REPORT_STORED_RECORDS, code));
        self.answered.lock().unwrap().push((from, code));
        Ok(out)
    }
}

/// A CGM (no E2E-CRC) with Session Start Time `sst` (None: unknown, all fields 0), writable or
/// not, and a CGM Status whose time offset is `status_offset`.
pub fn cgm_sensor(
    address: &str,
    sensor: CgmSensor,
    sst: Option<LocalDateTime>,
    sst_writable: bool,
    status_offset: u16,
    clock: LocalDateTime,
) -> DeviceModel {
    cgm_device(
        address,
        Box::new(sensor),
        sst,
        sst_writable,
        status_offset,
        clock,
    )
}

/// As [`cgm_sensor`], with any behaviour (e.g. [`RacpCgm`]).
pub fn cgm_device(
    address: &str,
    sensor: Box<dyn Behavior>,
    sst: Option<LocalDateTime>,
    sst_writable: bool,
    status_offset: u16,
    clock: LocalDateTime,
) -> DeviceModel {
    use vitals_hub::gatt::cgm::{CgmFeature, CgmStatus};
    let sst_flags: &'static [&'static str] = if sst_writable {
        &["read", "write"]
    } else {
        &["read"]
    };
    DeviceModel::new(address, "cgm", sensor)
        .service(
            0x181F,
            vec![
                (0x2AA7, &["notify"], Vec::new()),
                (
                    0x2AA8,
                    &["read"],
                    CgmFeature::new(0, 9, 5).encode().unwrap(),
                ),
                (
                    0x2AA9,
                    &["read"],
                    CgmStatus {
                        time_offset_min: status_offset,
                        status_octet: 0,
                        cal_temp_octet: 0,
                        warning_octet: 0,
                        e2e_crc: false,
                    }
                    .encode()
                    .unwrap(),
                ),
                (0x2AAA, sst_flags, sst_bytes(sst)),
                (0x2AAC, &["write", "indicate"], Vec::new()),
            ],
        )
        .standard("SN-CGM", 90, &clock_bytes(clock))
}

/// A Session Start Time value (zone UTC, no DST); None: the unknown start (all zeros).
pub fn sst_bytes(sst: Option<LocalDateTime>) -> Vec<u8> {
    use vitals_hub::gatt::cgm::SessionStartTime;
    use vitals_hub::gatt::datetime::{DstOffset, TimeZone};
    match sst {
        Some(t) => SessionStartTime::new(t, TimeZone(0), DstOffset(0), false)
            .encode()
            .unwrap(),
        None => vec![0, 0, 0, 0, 0, 0, 0, 0, 0],
    }
}
