//! STUB — being replaced by the real codec.
use super::error::{DecodeError, EncodeError};
use super::GattValue;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeartRateMeasurement;

impl GattValue for HeartRateMeasurement {
    const UUID: u16 = 0x2A37;
    const NAME: &'static str = "heart-rate-measurement";
    fn decode(_bytes: &[u8]) -> Result<Self, DecodeError> {
        Err(DecodeError::malformed(Self::NAME, "not implemented yet"))
    }
    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        Ok(Vec::new())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BodySensorLocation;

impl GattValue for BodySensorLocation {
    const UUID: u16 = 0x2A38;
    const NAME: &'static str = "body-sensor-location";
    fn decode(_bytes: &[u8]) -> Result<Self, DecodeError> {
        Err(DecodeError::malformed(Self::NAME, "not implemented yet"))
    }
    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        Ok(Vec::new())
    }
}
