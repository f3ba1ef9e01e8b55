//! IEEE 11073-20601 SFLOAT (16-bit) and FLOAT (32-bit): decimal floating point.
//!
//! SFLOAT: exponent = bits 15..12, signed 4-bit; mantissa = bits 11..0, signed 12-bit.
//! FLOAT:  exponent = bits 31..24, signed 8-bit; mantissa = bits 23..0, signed 24-bit.
//! The special values exist only at exponent 0, with the mantissas 0x7FF NaN, 0x800 NRes,
//! 0x7FE +INF, 0x802 −INF, 0x801 reserved (0x7FFFFF … for FLOAT). Any other bit pattern is an
//! ordinary number — `0xF800` is −204.8, not NRes.
//!
//! Both types hold the raw bits, so every received pattern is kept exactly and re-encodes to itself.

use super::error::EncodeError;
use crate::model::{Decimal, Special, Value};
use serde::{Serialize, Serializer};

fn sign_extend(v: u32, bits: u32) -> i32 {
    let shift = 32 - bits;
    ((v << shift) as i32) >> shift
}

/// Find a representation `m × 10^e` with `m` in `[m_min, m_max]`, `e` in `[e_min, e_max]`, that is
/// exactly `d` and avoids the special mantissas at exponent 0. Trailing zeros are moved into the
/// exponent first, then zeros appended as far as needed.
fn represent(
    d: Decimal,
    m_min: i64,
    m_max: i64,
    e_min: i16,
    e_max: i16,
    special_lo: i64,
    what: &'static str,
) -> Result<(i64, i16), EncodeError> {
    let unrepresentable = |why: &str| EncodeError::Unrepresentable {
        what,
        detail: format!("{d} cannot be encoded exactly: {why}"),
    };
    let n = d.normalized();
    let (mut m, mut e) = (n.mantissa, n.exponent);
    if m == 0 {
        return Ok((0, 0));
    }
    // Too few digits of exponent: add zeros to the mantissa.
    while e > e_max {
        m = m
            .checked_mul(10)
            .ok_or_else(|| unrepresentable("too large"))?;
        e -= 1;
    }
    if e < e_min {
        return Err(unrepresentable("too many decimal places"));
    }
    if m < m_min || m > m_max {
        return Err(unrepresentable("too many significant digits"));
    }
    // At exponent 0 the top mantissas are reserved for special values; use exponent 1 if exact.
    let special = |m: i64| m >= special_lo || m <= -special_lo;
    if e == 0 && special(m) {
        if m % 10 == 0 && e_max >= 1 {
            m /= 10;
            e = 1;
        } else {
            return Err(unrepresentable(
                "the mantissa collides with a special value",
            ));
        }
    }
    Ok((m, e))
}

/// A 16-bit IEEE 11073 SFLOAT, kept as its raw bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SFloat(u16);

impl SFloat {
    pub const NAN: SFloat = SFloat(0x07FF);
    pub const NRES: SFloat = SFloat(0x0800);
    pub const POS_INF: SFloat = SFloat(0x07FE);
    pub const NEG_INF: SFloat = SFloat(0x0802);
    pub const RESERVED: SFloat = SFloat(0x0801);

    pub const fn from_raw(raw: u16) -> Self {
        SFloat(raw)
    }

    pub const fn raw(&self) -> u16 {
        self.0
    }

    pub fn exponent(&self) -> i8 {
        sign_extend(u32::from(self.0 >> 12), 4) as i8
    }

    pub fn mantissa(&self) -> i16 {
        sign_extend(u32::from(self.0 & 0x0FFF), 12) as i16
    }

    pub fn value(&self) -> Value {
        match self.0 {
            0x07FF => Value::Special(Special::Nan),
            0x0800 => Value::Special(Special::NRes),
            0x07FE => Value::Special(Special::PosInf),
            0x0802 => Value::Special(Special::NegInf),
            0x0801 => Value::Special(Special::Reserved),
            _ => Value::Number(Decimal::new(self.mantissa().into(), self.exponent().into())),
        }
    }

    pub fn special(s: Special) -> Self {
        match s {
            Special::Nan => Self::NAN,
            Special::NRes => Self::NRES,
            Special::PosInf => Self::POS_INF,
            Special::NegInf => Self::NEG_INF,
            Special::Reserved => Self::RESERVED,
        }
    }

    /// Encode an exact decimal; fails rather than round. Never produces a special bit pattern for a
    /// finite number: 2040 becomes `204e1`, and 2047 (not exact at exponent 1) is an error.
    pub fn from_decimal(d: Decimal) -> Result<Self, EncodeError> {
        let (m, e) = represent(d, -2048, 2047, -8, 7, 0x7FE, "SFLOAT")?;
        let raw = ((e as i32 as u32 & 0xF) << 12) | (m as i32 as u32 & 0x0FFF);
        Ok(SFloat(raw as u16))
    }

    pub fn from_value(v: Value) -> Result<Self, EncodeError> {
        match v {
            Value::Number(d) => Self::from_decimal(d),
            Value::Special(s) => Ok(Self::special(s)),
        }
    }

    /// Whether the value is an ordinary number.
    pub fn is_number(&self) -> bool {
        self.value().number().is_some()
    }
}

/// A 32-bit IEEE 11073 FLOAT, kept as its raw bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Float(u32);

impl Float {
    pub const NAN: Float = Float(0x007F_FFFF);
    pub const NRES: Float = Float(0x0080_0000);
    pub const POS_INF: Float = Float(0x007F_FFFE);
    pub const NEG_INF: Float = Float(0x0080_0002);
    pub const RESERVED: Float = Float(0x0080_0001);

    pub const fn from_raw(raw: u32) -> Self {
        Float(raw)
    }

    pub const fn raw(&self) -> u32 {
        self.0
    }

    pub fn exponent(&self) -> i8 {
        (self.0 >> 24) as u8 as i8
    }

    pub fn mantissa(&self) -> i32 {
        sign_extend(self.0 & 0x00FF_FFFF, 24)
    }

    pub fn value(&self) -> Value {
        match self.0 {
            0x007F_FFFF => Value::Special(Special::Nan),
            0x0080_0000 => Value::Special(Special::NRes),
            0x007F_FFFE => Value::Special(Special::PosInf),
            0x0080_0002 => Value::Special(Special::NegInf),
            0x0080_0001 => Value::Special(Special::Reserved),
            _ => Value::Number(Decimal::new(self.mantissa().into(), self.exponent().into())),
        }
    }

    pub fn special(s: Special) -> Self {
        match s {
            Special::Nan => Self::NAN,
            Special::NRes => Self::NRES,
            Special::PosInf => Self::POS_INF,
            Special::NegInf => Self::NEG_INF,
            Special::Reserved => Self::RESERVED,
        }
    }

    pub fn from_decimal(d: Decimal) -> Result<Self, EncodeError> {
        let (m, e) = represent(d, -0x80_0000, 0x7F_FFFF, -128, 127, 0x7F_FFFE, "FLOAT")?;
        let raw = ((e as i32 as u32 & 0xFF) << 24) | (m as i32 as u32 & 0x00FF_FFFF);
        Ok(Float(raw))
    }

    pub fn from_value(v: Value) -> Result<Self, EncodeError> {
        match v {
            Value::Number(d) => Self::from_decimal(d),
            Value::Special(s) => Ok(Self::special(s)),
        }
    }
}

/// In `fields` JSON an SFLOAT/FLOAT is its number, or the special value's name as a string.
fn serialize_value<S: Serializer>(v: Value, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Value::Number(d) => s.serialize_f64(d.to_f64()),
        Value::Special(sp) => s.serialize_str(&sp.to_string()),
    }
}

impl Serialize for SFloat {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_value(self.value(), s)
    }
}

impl Serialize for Float {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_value(self.value(), s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gatt::testing::config;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(config())]

        /// Every finite SFLOAT re-encodes (possibly in another representation) to the same number.
        #[test]
        fn sfloat_numbers_re_encode_exactly(raw in any::<u16>()) {
            let v = SFloat::from_raw(raw).value();
            if let Value::Number(d) = v {
                let again = SFloat::from_decimal(d).unwrap().value().number().unwrap();
                prop_assert_eq!(again.cmp_value(&d), std::cmp::Ordering::Equal);
            }
        }

        #[test]
        fn float_numbers_re_encode_exactly(raw in any::<u32>()) {
            if let Value::Number(d) = Float::from_raw(raw).value() {
                let again = Float::from_decimal(d).unwrap().value().number().unwrap();
                prop_assert_eq!(again.cmp_value(&d), std::cmp::Ordering::Equal);
            }
        }
    }

    fn num(m: i64, e: i16) -> Value {
        Value::Number(Decimal::new(m, e))
    }

    #[test]
    fn sfloat_reference_values() {
        assert_eq!(SFloat::from_raw(0xF0BD).value(), num(189, -1));
        assert_eq!(SFloat::from_raw(0xC03B).value(), num(59, -4));
        assert_eq!(SFloat::from_raw(0xF800).value(), num(-2048, -1));
        assert_eq!(SFloat::from_raw(0x77FF).value(), num(2047, 7));
        assert_eq!(SFloat::from_raw(0x7800).value(), num(-2048, 7));
        assert_eq!(
            SFloat::from_raw(0x0802).value(),
            Value::Special(Special::NegInf)
        );
    }

    #[test]
    fn encoder_avoids_special_patterns() {
        assert_eq!(
            SFloat::from_decimal(Decimal::new(2040, 0)).unwrap().raw(),
            0x10CC
        );
        assert!(SFloat::from_decimal(Decimal::new(2047, 0)).is_err());
        assert!(SFloat::from_decimal(Decimal::new(-2046, 0)).is_err());
        assert_eq!(
            SFloat::from_decimal(Decimal::new(-2045, 0))
                .unwrap()
                .value(),
            num(-2045, 0)
        );
        assert_eq!(
            SFloat::from_decimal(Decimal::new(72500, -3))
                .unwrap()
                .value(),
            num(725, -1)
        );
        assert!(SFloat::from_decimal(Decimal::new(12345, 0)).is_err());
        assert!(SFloat::from_decimal(Decimal::new(1, -9)).is_err());
        assert_eq!(
            SFloat::from_decimal(Decimal::new(1, 8)).unwrap().value(),
            num(10, 7)
        );
        assert_eq!(SFloat::from_decimal(Decimal::new(0, -3)).unwrap().raw(), 0);
    }

    #[test]
    fn float_reference_values() {
        assert_eq!(Float::from_raw(0xFE00_0EB0).value(), num(3760, -2));
        assert_eq!(Float::from_raw(0xFF00_03DA).value(), num(986, -1));
        assert_eq!(
            Float::from_raw(0x007F_FFFF).value(),
            Value::Special(Special::Nan)
        );
        assert_eq!(
            Float::from_decimal(Decimal::new(986, -1)).unwrap().raw(),
            0xFF00_03DA
        );
    }
}
