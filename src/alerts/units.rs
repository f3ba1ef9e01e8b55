//! Exact unit conversion for comparisons: values become rationals, so a reading in mmol/L is
//! compared with a limit in mg/dL without rounding.
//!
//! Factors (exact by definition or by the stated constant):
//! - glucose: 1 mmol/L = 18.0156 mg/dL (molar mass of glucose 180.156 g/mol);
//! - pressure: 1 mm[Hg] = 0.133322387415 kPa (133.322387415 Pa, the conventional millimetre of
//!   mercury);
//! - mass: 1 [lb_av] = 0.45359237 kg (international avoirdupois pound, exact);
//! - temperature: Cel = ([degF] − 32) × 5/9;
//! - length: 1 [in_i] = 0.0254 m (exact).

use crate::model::{Decimal, Unit};
use std::cmp::Ordering;

/// A rational number `num / den` with `den > 0`, for exact comparisons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rational {
    num: i128,
    den: i128,
}

fn gcd(mut a: i128, mut b: i128) -> i128 {
    a = a.abs();
    b = b.abs();
    while b != 0 {
        let t = a % b;
        a = b;
        b = t;
    }
    a.max(1)
}

impl Rational {
    pub fn new(num: i128, den: i128) -> Option<Rational> {
        if den == 0 {
            return None;
        }
        let (num, den) = if den < 0 {
            (num.checked_neg()?, den.checked_neg()?)
        } else {
            (num, den)
        };
        let g = gcd(num, den);
        Some(Rational {
            num: num / g,
            den: den / g,
        })
    }

    pub fn from_decimal(d: Decimal) -> Option<Rational> {
        let p = 10i128.checked_pow(u32::from(d.exponent.unsigned_abs()))?;
        if d.exponent >= 0 {
            Rational::new(i128::from(d.mantissa).checked_mul(p)?, 1)
        } else {
            Rational::new(i128::from(d.mantissa), p)
        }
    }

    pub fn checked_mul(self, o: Rational) -> Option<Rational> {
        // Cross-reduce first to keep the numbers small.
        let g1 = gcd(self.num, o.den);
        let g2 = gcd(o.num, self.den);
        Rational::new(
            (self.num / g1).checked_mul(o.num / g2)?,
            (self.den / g2).checked_mul(o.den / g1)?,
        )
    }

    pub fn checked_add(self, o: Rational) -> Option<Rational> {
        let g = gcd(self.den, o.den);
        let den = (self.den / g).checked_mul(o.den)?;
        let num = self
            .num
            .checked_mul(o.den / g)?
            .checked_add(o.num.checked_mul(self.den / g)?)?;
        Rational::new(num, den)
    }

    pub fn checked_sub(self, o: Rational) -> Option<Rational> {
        self.checked_add(Rational {
            num: o.num.checked_neg()?,
            den: o.den,
        })
    }

    /// Numerator and (positive) denominator.
    pub fn parts(self) -> (i128, i128) {
        (self.num, self.den)
    }

    pub fn to_f64(self) -> f64 {
        self.num as f64 / self.den as f64
    }

    /// Exact comparison; falls back to `f64` only if the cross products overflow `i128`, which
    /// needs values no medical device produces.
    pub fn cmp_exact(&self, o: &Rational) -> Ordering {
        match (self.num.checked_mul(o.den), o.num.checked_mul(self.den)) {
            (Some(a), Some(b)) => a.cmp(&b),
            _ => self
                .to_f64()
                .partial_cmp(&o.to_f64())
                .unwrap_or(Ordering::Equal),
        }
    }
}

fn ratio(num: i128, den: i128) -> Option<Rational> {
    Rational::new(num, den)
}

/// The physical quantity a unit measures; only units of one dimension convert.
fn dimension(u: Unit) -> u8 {
    match u {
        Unit::MgPerDl | Unit::MmolPerL => 1,
        Unit::MmHg | Unit::KPa => 2,
        Unit::Kg | Unit::Lb => 3,
        Unit::Cel | Unit::DegF => 4,
        Unit::Metre | Unit::Inch => 5,
        Unit::PerMin => 6,
        Unit::Percent => 7,
        Unit::KgPerM2 => 8,
        Unit::Ms => 9,
        Unit::KJ => 10,
    }
}

/// Whether a value in `from` can be converted to `to`.
pub fn convertible(from: Unit, to: Unit) -> bool {
    dimension(from) == dimension(to)
}

/// Convert `v` from `from` to `to` exactly; `None` if the units measure different things.
pub fn convert(v: Rational, from: Unit, to: Unit) -> Option<Rational> {
    if from == to {
        return Some(v);
    }
    match (from, to) {
        (Unit::MmolPerL, Unit::MgPerDl) => v.checked_mul(ratio(180_156, 10_000)?),
        (Unit::MgPerDl, Unit::MmolPerL) => v.checked_mul(ratio(10_000, 180_156)?),
        (Unit::MmHg, Unit::KPa) => v.checked_mul(ratio(133_322_387_415, 1_000_000_000_000)?),
        (Unit::KPa, Unit::MmHg) => v.checked_mul(ratio(1_000_000_000_000, 133_322_387_415)?),
        (Unit::Lb, Unit::Kg) => v.checked_mul(ratio(45_359_237, 100_000_000)?),
        (Unit::Kg, Unit::Lb) => v.checked_mul(ratio(100_000_000, 45_359_237)?),
        (Unit::DegF, Unit::Cel) => v.checked_sub(ratio(32, 1)?)?.checked_mul(ratio(5, 9)?),
        (Unit::Cel, Unit::DegF) => v.checked_mul(ratio(9, 5)?)?.checked_add(ratio(32, 1)?),
        (Unit::Inch, Unit::Metre) => v.checked_mul(ratio(254, 10_000)?),
        (Unit::Metre, Unit::Inch) => v.checked_mul(ratio(10_000, 254)?),
        _ => None,
    }
}

/// Convert a difference (a hysteresis band, a weight gain) — no offset for temperature.
pub fn convert_delta(v: Rational, from: Unit, to: Unit) -> Option<Rational> {
    match (from, to) {
        (Unit::DegF, Unit::Cel) => v.checked_mul(ratio(5, 9)?),
        (Unit::Cel, Unit::DegF) => v.checked_mul(ratio(9, 5)?),
        _ => convert(v, from, to),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(m: i64, e: i16) -> Rational {
        Rational::from_decimal(Decimal::new(m, e)).unwrap()
    }

    #[test]
    fn conversions_are_exact() {
        // 3.0 mmol/L = 54.0468 mg/dL: below 54.05, above 54.
        let v = convert(r(30, -1), Unit::MmolPerL, Unit::MgPerDl).unwrap();
        assert_eq!(v, r(540468, -4));
        assert_eq!(v.cmp_exact(&r(54, 0)), Ordering::Greater);
        // 98.6 degF = 37 Cel exactly.
        assert_eq!(
            convert(r(986, -1), Unit::DegF, Unit::Cel).unwrap(),
            r(37, 0)
        );
        assert_eq!(
            convert(r(37, 0), Unit::Cel, Unit::DegF).unwrap(),
            r(986, -1)
        );
        // 100 lb = 45.359237 kg.
        assert_eq!(
            convert(r(100, 0), Unit::Lb, Unit::Kg).unwrap(),
            r(45359237, -6)
        );
        // 24 kPa ≈ 180.0149 mm[Hg], i.e. above 180.
        let p = convert(r(24, 0), Unit::KPa, Unit::MmHg).unwrap();
        assert_eq!(p.cmp_exact(&r(180, 0)), Ordering::Greater);
        assert_eq!(convert(p, Unit::MmHg, Unit::KPa).unwrap(), r(24, 0));
        assert!(convert(r(1, 0), Unit::Kg, Unit::Cel).is_none());
        assert_eq!(
            convert_delta(r(9, 0), Unit::DegF, Unit::Cel).unwrap(),
            r(5, 0)
        );
    }
}
