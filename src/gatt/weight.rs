//! STUB — being replaced by the real codec.
use super::error::{DecodeError, EncodeError};
use super::GattValue;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WeightMeasurement;

impl GattValue for WeightMeasurement {
    const UUID: u16 = 0x2A9D;
    const NAME: &'static str = "weight-measurement";
    fn decode(_bytes: &[u8]) -> Result<Self, DecodeError> {
        Err(DecodeError::malformed(Self::NAME, "not implemented yet"))
    }
    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        Ok(Vec::new())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WeightScaleFeature;

impl GattValue for WeightScaleFeature {
    const UUID: u16 = 0x2A9E;
    const NAME: &'static str = "weight-scale-feature";
    fn decode(_bytes: &[u8]) -> Result<Self, DecodeError> {
        Err(DecodeError::malformed(Self::NAME, "not implemented yet"))
    }
    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        Ok(Vec::new())
    }
}
