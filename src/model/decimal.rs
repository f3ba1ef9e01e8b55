//! Exact decimal numbers: `mantissa × 10^exponent`.
//!
//! IEEE 11073 SFLOAT and FLOAT are decimal floating point. Converting them to `f64` at decode time
//! would turn 5.9 mmol/L into 5.900000000000000355…, so the hub carries the exact pair and converts to
//! binary floating point only at an edge that needs it (JSON numbers, plots).

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;

/// An exact decimal value `mantissa × 10^exponent`.
///
/// Two decimals with different representations of the same number (`59e-1` and `590e-2`) compare
/// equal through [`Decimal::cmp_value`] but are different values of this type: the representation
/// carries the device's resolution, which FHIR keeps as significant digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Decimal {
    pub mantissa: i64,
    pub exponent: i16,
}

impl Decimal {
    pub const fn new(mantissa: i64, exponent: i16) -> Self {
        Decimal { mantissa, exponent }
    }

    /// Multiply by `10^k` exactly (only the exponent moves).
    pub fn scale_pow10(self, k: i16) -> Self {
        Decimal {
            mantissa: self.mantissa,
            exponent: self.exponent.saturating_add(k),
        }
    }

    /// Multiply the mantissa by an integer, exactly; `None` on overflow.
    pub fn checked_mul_int(self, factor: i64) -> Option<Self> {
        Some(Decimal {
            mantissa: self.mantissa.checked_mul(factor)?,
            exponent: self.exponent,
        })
    }

    /// The nearest `f64`. Parsing the decimal text gives the correctly rounded binary value, so
    /// `59e-1` becomes exactly the `f64` literal `5.9`.
    pub fn to_f64(self) -> f64 {
        format!("{}e{}", self.mantissa, self.exponent)
            .parse::<f64>()
            .unwrap_or(f64::NAN)
    }

    /// Drop trailing zeros of the mantissa (`72500e-3` → `725e-1`).
    pub fn normalized(self) -> Self {
        let mut d = self;
        if d.mantissa == 0 {
            return Decimal::new(0, 0);
        }
        while d.mantissa % 10 == 0 && d.exponent < i16::MAX {
            d.mantissa /= 10;
            d.exponent += 1;
        }
        d
    }

    /// Numeric comparison, independent of representation.
    pub fn cmp_value(&self, other: &Decimal) -> Ordering {
        let a = self.normalized();
        let b = other.normalized();
        match (a.mantissa.signum(), b.mantissa.signum()) {
            (x, y) if x != y => return x.cmp(&y),
            (0, 0) => return Ordering::Equal,
            _ => {}
        }
        // Same sign, both non-zero: bring both to the smaller exponent using i128; if the shift is
        // too large for i128 the one with the larger exponent has the larger magnitude.
        let (lo, hi_is_a) = if a.exponent <= b.exponent {
            (a.exponent, false)
        } else {
            (b.exponent, true)
        };
        let shift = (a.exponent.max(b.exponent) as i32 - lo as i32) as u32;
        let (big, small) = if hi_is_a { (a, b) } else { (b, a) };
        let scaled = 10i128
            .checked_pow(shift)
            .and_then(|p| (big.mantissa as i128).checked_mul(p));
        let ord_big_vs_small = match scaled {
            Some(s) => s.cmp(&(small.mantissa as i128)),
            None => {
                if big.mantissa > 0 {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            }
        };
        if hi_is_a {
            ord_big_vs_small
        } else {
            ord_big_vs_small.reverse()
        }
    }
}

/// Why text is not a decimal number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a decimal number (write e.g. 70, 5.5 or -1.25)")]
pub struct DecimalParseError(pub String);

impl std::str::FromStr for Decimal {
    type Err = DecimalParseError;

    /// `70`, `-1.25`, `5.50` (trailing zeros kept as resolution), `1e3`, `2.5E-2`.
    fn from_str(s: &str) -> Result<Self, DecimalParseError> {
        let bad = || DecimalParseError(s.to_string());
        let t = s.trim();
        let (num, exp) = match t.find(['e', 'E']) {
            Some(i) => (
                t.get(..i).ok_or_else(bad)?,
                t.get(i + 1..)
                    .ok_or_else(bad)?
                    .parse::<i16>()
                    .map_err(|_| bad())?,
            ),
            None => (t, 0),
        };
        let (neg, digits) = match num.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, num.strip_prefix('+').unwrap_or(num)),
        };
        let (int, frac) = match digits.split_once('.') {
            Some((i, f)) => (i, f),
            None => (digits, ""),
        };
        if (int.is_empty() && frac.is_empty())
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let mut mantissa: i64 = 0;
        for b in int.bytes().chain(frac.bytes()) {
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(i64::from(b - b'0')))
                .ok_or_else(bad)?;
        }
        let frac_len = i16::try_from(frac.len()).map_err(|_| bad())?;
        let exponent = exp.checked_sub(frac_len).ok_or_else(bad)?;
        Ok(Decimal::new(
            if neg { -mantissa } else { mantissa },
            exponent,
        ))
    }
}

impl Decimal {
    /// The exact decimal of an `f64` as it prints (its shortest round-trip form): `5.5` → `55e-1`.
    /// Config files write limits as TOML floats; this recovers the digits the person wrote.
    pub fn from_f64_shortest(v: f64) -> Option<Decimal> {
        if !v.is_finite() {
            return None;
        }
        format!("{v}").parse().ok()
    }
}

impl fmt::Display for Decimal {
    /// Plain positional notation with exactly the digits the representation has: `59e-1` → `5.9`,
    /// `725e-1` → `72.5`, `12e1` → `120`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let neg = self.mantissa < 0;
        let digits = self.mantissa.unsigned_abs().to_string();
        let sign = if neg { "-" } else { "" };
        if self.exponent >= 0 {
            let zeros = "0".repeat(self.exponent as usize);
            return write!(f, "{sign}{digits}{zeros}");
        }
        let frac = (-(self.exponent as i32)) as usize;
        if digits.len() > frac {
            let (int, dec) = digits.split_at(digits.len() - frac);
            write!(f, "{sign}{int}.{dec}")
        } else {
            let pad = "0".repeat(frac - digits.len());
            write!(f, "{sign}0.{pad}{digits}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_exact() {
        assert_eq!(Decimal::new(59, -1).to_string(), "5.9");
        assert_eq!(Decimal::new(72500, -3).to_string(), "72.500");
        assert_eq!(Decimal::new(12, 1).to_string(), "120");
        assert_eq!(Decimal::new(-125, -2).to_string(), "-1.25");
        assert_eq!(Decimal::new(98, -8).to_string(), "0.00000098");
        assert_eq!(Decimal::new(0, -2).to_string(), "0.00");
    }

    #[test]
    fn to_f64_is_correctly_rounded() {
        assert_eq!(Decimal::new(59, -1).to_f64(), 5.9);
        assert_eq!(Decimal::new(2047, 7).to_f64(), 20470000000.0);
        assert_eq!(Decimal::new(98, -8).to_f64(), 9.8e-07);
    }

    #[test]
    fn parses_text() {
        assert_eq!("5.5".parse::<Decimal>().unwrap(), Decimal::new(55, -1));
        assert_eq!("-1.25".parse::<Decimal>().unwrap(), Decimal::new(-125, -2));
        assert_eq!("70".parse::<Decimal>().unwrap(), Decimal::new(70, 0));
        assert_eq!("2.5E-2".parse::<Decimal>().unwrap(), Decimal::new(25, -3));
        assert_eq!(Decimal::from_f64_shortest(38.0).unwrap().to_string(), "38");
        assert_eq!(
            Decimal::from_f64_shortest(0.1).unwrap(),
            Decimal::new(1, -1)
        );
        for bad in ["", "-", ".", "1.2.3", "abc", "1e", "99999999999999999999"] {
            assert!(bad.parse::<Decimal>().is_err(), "{bad}");
        }
    }

    #[test]
    fn compares_by_value() {
        assert_eq!(
            Decimal::new(59, -1).cmp_value(&Decimal::new(590, -2)),
            Ordering::Equal
        );
        assert_eq!(
            Decimal::new(7, 0).cmp_value(&Decimal::new(69, -1)),
            Ordering::Greater
        );
        assert_eq!(
            Decimal::new(-7, 0).cmp_value(&Decimal::new(-69, -1)),
            Ordering::Less
        );
        assert_eq!(
            Decimal::new(1, 100).cmp_value(&Decimal::new(5, -3)),
            Ordering::Greater
        );
        assert_eq!(
            Decimal::new(-1, 100).cmp_value(&Decimal::new(5, -3)),
            Ordering::Less
        );
    }
}
