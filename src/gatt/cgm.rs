//! STUB — being replaced by the real codec.
use super::error::{DecodeError, EncodeError};
use super::GattValue;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CgmMeasurement;

impl GattValue for CgmMeasurement {
    const UUID: u16 = 0x2AA7;
    const NAME: &'static str = "cgm-measurement";
    fn decode(_bytes: &[u8]) -> Result<Self, DecodeError> {
        Err(DecodeError::malformed(Self::NAME, "not implemented yet"))
    }
    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        Ok(Vec::new())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CgmFeature;

impl GattValue for CgmFeature {
    const UUID: u16 = 0x2AA8;
    const NAME: &'static str = "cgm-feature";
    fn decode(_bytes: &[u8]) -> Result<Self, DecodeError> {
        Err(DecodeError::malformed(Self::NAME, "not implemented yet"))
    }
    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        Ok(Vec::new())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CgmStatus;

impl GattValue for CgmStatus {
    const UUID: u16 = 0x2AA9;
    const NAME: &'static str = "cgm-status";
    fn decode(_bytes: &[u8]) -> Result<Self, DecodeError> {
        Err(DecodeError::malformed(Self::NAME, "not implemented yet"))
    }
    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        Ok(Vec::new())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionStartTime;

impl GattValue for SessionStartTime {
    const UUID: u16 = 0x2AAA;
    const NAME: &'static str = "cgm-session-start-time";
    fn decode(_bytes: &[u8]) -> Result<Self, DecodeError> {
        Err(DecodeError::malformed(Self::NAME, "not implemented yet"))
    }
    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        Ok(Vec::new())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionRunTime;

impl GattValue for SessionRunTime {
    const UUID: u16 = 0x2AAB;
    const NAME: &'static str = "cgm-session-run-time";
    fn decode(_bytes: &[u8]) -> Result<Self, DecodeError> {
        Err(DecodeError::malformed(Self::NAME, "not implemented yet"))
    }
    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        Ok(Vec::new())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SocpMessage;

impl GattValue for SocpMessage {
    const UUID: u16 = 0x2AAC;
    const NAME: &'static str = "cgm-specific-ops-control-point";
    fn decode(_bytes: &[u8]) -> Result<Self, DecodeError> {
        Err(DecodeError::malformed(Self::NAME, "not implemented yet"))
    }
    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        Ok(Vec::new())
    }
}
