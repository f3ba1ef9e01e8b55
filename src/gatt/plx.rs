//! STUB — being replaced by the real codec.
use super::error::{DecodeError, EncodeError};
use super::GattValue;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpotCheckMeasurement;

impl GattValue for SpotCheckMeasurement {
    const UUID: u16 = 0x2A5E;
    const NAME: &'static str = "plx-spot-check-measurement";
    fn decode(_bytes: &[u8]) -> Result<Self, DecodeError> {
        Err(DecodeError::malformed(Self::NAME, "not implemented yet"))
    }
    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        Ok(Vec::new())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContinuousMeasurement;

impl GattValue for ContinuousMeasurement {
    const UUID: u16 = 0x2A5F;
    const NAME: &'static str = "plx-continuous-measurement";
    fn decode(_bytes: &[u8]) -> Result<Self, DecodeError> {
        Err(DecodeError::malformed(Self::NAME, "not implemented yet"))
    }
    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        Ok(Vec::new())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlxFeatures;

impl GattValue for PlxFeatures {
    const UUID: u16 = 0x2A60;
    const NAME: &'static str = "plx-features";
    fn decode(_bytes: &[u8]) -> Result<Self, DecodeError> {
        Err(DecodeError::malformed(Self::NAME, "not implemented yet"))
    }
    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        Ok(Vec::new())
    }
}
