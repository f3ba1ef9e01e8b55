//! STUB — being replaced by the real codec.
use super::error::{DecodeError, EncodeError};
use super::GattValue;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BloodPressureMeasurement;

impl GattValue for BloodPressureMeasurement {
    const UUID: u16 = 0x2A35;
    const NAME: &'static str = "blood-pressure-measurement";
    fn decode(_bytes: &[u8]) -> Result<Self, DecodeError> {
        Err(DecodeError::malformed(Self::NAME, "not implemented yet"))
    }
    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        Ok(Vec::new())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IntermediateCuffPressure;

impl GattValue for IntermediateCuffPressure {
    const UUID: u16 = 0x2A36;
    const NAME: &'static str = "intermediate-cuff-pressure";
    fn decode(_bytes: &[u8]) -> Result<Self, DecodeError> {
        Err(DecodeError::malformed(Self::NAME, "not implemented yet"))
    }
    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        Ok(Vec::new())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BloodPressureFeature;

impl GattValue for BloodPressureFeature {
    const UUID: u16 = 0x2A49;
    const NAME: &'static str = "blood-pressure-feature";
    fn decode(_bytes: &[u8]) -> Result<Self, DecodeError> {
        Err(DecodeError::malformed(Self::NAME, "not implemented yet"))
    }
    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        Ok(Vec::new())
    }
}
