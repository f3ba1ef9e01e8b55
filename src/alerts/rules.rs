//! The alert rules: the `[alerts]` section of the hub's configuration, set by the technician or the
//! clinic. The defaults are documented starting points only — the clinician sets the real values.

use super::units::{convertible, Rational};
use crate::model::{Decimal, Kind, Unit};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;

/// A limit as written in the config: an integer, a float or a string, kept as the exact decimal
/// the person wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(pub Decimal);

impl Serialize for Limit {
    /// As a number: an integer when it is whole, else the float with the same digits.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let n = self.0.normalized();
        if n.exponent >= 0 {
            if let Some(v) = 10i64
                .checked_pow(u32::from(n.exponent.unsigned_abs()))
                .and_then(|p| n.mantissa.checked_mul(p))
            {
                return s.serialize_i64(v);
            }
        }
        s.serialize_f64(self.0.to_f64())
    }
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Limit;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number such as 70 or 5.5")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Limit, E> {
                Ok(Limit(Decimal::new(v, 0)))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Limit, E> {
                i64::try_from(v)
                    .map(|v| Limit(Decimal::new(v, 0)))
                    .map_err(|_| E::custom("number too large"))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Limit, E> {
                Decimal::from_f64_shortest(v)
                    .map(Limit)
                    .ok_or_else(|| E::custom("not a finite number"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Limit, E> {
                v.parse().map(Limit).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl Limit {
    pub fn rational(&self) -> Option<Rational> {
        Rational::from_decimal(self.0)
    }
}

/// Low / high and critical low / critical high limits for one measurement kind, in `unit`.
/// A reading is low below `low`, critically low below `critical_low`, high above `high`,
/// critically high above `critical_high`. It is back to normal once it is inside the limits by
/// at least `hysteresis`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdRule {
    pub unit: Unit,
    #[serde(default)]
    pub low: Option<Limit>,
    #[serde(default)]
    pub high: Option<Limit>,
    #[serde(default)]
    pub critical_low: Option<Limit>,
    #[serde(default)]
    pub critical_high: Option<Limit>,
    /// Defaults to 0 (no band).
    #[serde(default)]
    pub hysteresis: Option<Limit>,
}

/// Weight gain over a window (heart-failure monitoring): an alert when the latest weight is more
/// than `gain` above the lowest weight measured in the preceding `window_hours`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightGainRule {
    pub window_hours: u32,
    pub gain: Limit,
    pub unit: Unit,
}

/// How often a device is expected to deliver a new measurement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// The device's name in the config's device list.
    pub device: String,
    /// Expected measurements per day (e.g. 2 for glucose twice a day, 1 for daily weight).
    pub per_day: u32,
    /// How late a measurement may be before it counts as missed; defaults to half the interval.
    #[serde(default)]
    pub grace_minutes: Option<u32>,
}

impl Schedule {
    /// Milliseconds after the last reading at which the next one is overdue.
    pub fn overdue_after_ms(&self) -> i64 {
        let interval = 86_400_000 / i64::from(self.per_day.max(1));
        let grace = self
            .grace_minutes
            .map(|m| i64::from(m) * 60_000)
            .unwrap_or(interval / 2);
        interval + grace
    }
}

fn default_suppress_minutes() -> u32 {
    60
}

fn default_hook_timeout() -> u32 {
    10
}

/// The `[alerts]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRules {
    /// Threshold rules by measurement kind (`glucose`, `systolic`, `spo2`, …).
    #[serde(default)]
    pub thresholds: BTreeMap<Kind, ThresholdRule>,
    #[serde(default)]
    pub weight_gain: Vec<WeightGainRule>,
    #[serde(default)]
    pub schedules: Vec<Schedule>,
    /// An alert stays open at least this long after it was raised or escalated: a value that
    /// returns to normal and leaves again within it does not raise a new alert, and the alert is
    /// resolved only once the value is normal after the window.
    #[serde(default = "default_suppress_minutes")]
    pub suppress_minutes: u32,
    /// A program run with each alert event as JSON on stdin (a speaker, an LED, an SMS modem).
    #[serde(default)]
    pub local_command: Option<String>,
    #[serde(default = "default_hook_timeout")]
    pub local_command_timeout_seconds: u32,
}

impl Default for AlertRules {
    fn default() -> Self {
        AlertRules {
            thresholds: BTreeMap::new(),
            weight_gain: Vec::new(),
            schedules: Vec::new(),
            suppress_minutes: default_suppress_minutes(),
            local_command: None,
            local_command_timeout_seconds: default_hook_timeout(),
        }
    }
}

fn lim(m: i64, e: i16) -> Option<Limit> {
    Some(Limit(Decimal::new(m, e)))
}

impl AlertRules {
    /// Documented starting points, NOT clinical advice: the clinician sets the real values for each
    /// patient. Glucose < 70 / > 250 mg/dL (critical < 54 / > 400); systolic < 90 / > 180 mm[Hg];
    /// SpO2 < 92 % (critical < 88); heart and pulse rate < 40 / > 130 /min; body temperature
    /// > 38.0 Cel; weight gain > 2 kg in 24 h or > 2.5 kg in 7 days.
    pub fn starting_points() -> AlertRules {
        let mut t = BTreeMap::new();
        let rule = |unit, low, high, critical_low, critical_high, hysteresis| ThresholdRule {
            unit,
            low,
            high,
            critical_low,
            critical_high,
            hysteresis,
        };
        t.insert(
            Kind::Glucose,
            rule(
                Unit::MgPerDl,
                lim(70, 0),
                lim(250, 0),
                lim(54, 0),
                lim(400, 0),
                lim(5, 0),
            ),
        );
        t.insert(
            Kind::CgmGlucose,
            rule(
                Unit::MgPerDl,
                lim(70, 0),
                lim(250, 0),
                lim(54, 0),
                lim(400, 0),
                lim(5, 0),
            ),
        );
        t.insert(
            Kind::Systolic,
            rule(Unit::MmHg, lim(90, 0), lim(180, 0), None, None, lim(5, 0)),
        );
        t.insert(
            Kind::Spo2,
            rule(Unit::Percent, lim(92, 0), None, lim(88, 0), None, lim(1, 0)),
        );
        t.insert(
            Kind::HeartRate,
            rule(Unit::PerMin, lim(40, 0), lim(130, 0), None, None, lim(5, 0)),
        );
        t.insert(
            Kind::PulseRate,
            rule(Unit::PerMin, lim(40, 0), lim(130, 0), None, None, lim(5, 0)),
        );
        t.insert(
            Kind::BodyTemperature,
            rule(Unit::Cel, None, lim(380, -1), None, None, lim(2, -1)),
        );
        AlertRules {
            thresholds: t,
            weight_gain: vec![
                WeightGainRule {
                    window_hours: 24,
                    gain: Limit(Decimal::new(2, 0)),
                    unit: Unit::Kg,
                },
                WeightGainRule {
                    window_hours: 168,
                    gain: Limit(Decimal::new(25, -1)),
                    unit: Unit::Kg,
                },
            ],
            ..AlertRules::default()
        }
    }

    /// Check the rules for contradictions; each message names the rule and the fix.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errs = Vec::new();
        for (kind, r) in &self.thresholds {
            let at = format!("alerts.thresholds.{kind}");
            let ordered = [
                ("critical_low", r.critical_low),
                ("low", r.low),
                ("high", r.high),
                ("critical_high", r.critical_high),
            ];
            let present: Vec<(&str, Decimal)> = ordered
                .iter()
                .filter_map(|(n, l)| l.map(|l| (*n, l.0)))
                .collect();
            if present.is_empty() {
                errs.push(format!(
                    "{at}: set at least one of low, high, critical_low, critical_high"
                ));
            }
            for w in present.windows(2) {
                if let [(na, a), (nb, b)] = w {
                    if a.cmp_value(b) != std::cmp::Ordering::Less {
                        errs.push(format!("{at}: {na} {a} must be below {nb} {b}"));
                    }
                }
            }
            if let Some(h) = r.hysteresis {
                if h.0.mantissa < 0 {
                    errs.push(format!("{at}: hysteresis {} must not be negative", h.0));
                }
            }
            if !kind_unit_ok(*kind, r.unit) {
                errs.push(format!(
                    "{at}: unit {} does not measure {kind}; use {}",
                    r.unit,
                    natural_unit(*kind)
                ));
            }
        }
        for (i, w) in self.weight_gain.iter().enumerate() {
            let at = format!("alerts.weight_gain[{i}]");
            if w.window_hours == 0 {
                errs.push(format!("{at}: window_hours must be at least 1"));
            }
            if w.gain.0.mantissa <= 0 {
                errs.push(format!("{at}: gain {} must be above 0", w.gain.0));
            }
            if !convertible(w.unit, Unit::Kg) {
                errs.push(format!(
                    "{at}: unit {} is not a mass; use kg or [lb_av]",
                    w.unit
                ));
            }
        }
        for (i, s) in self.schedules.iter().enumerate() {
            if s.per_day == 0 || s.per_day > 1440 {
                errs.push(format!(
                    "alerts.schedules[{i}] ({}): per_day {} must be 1..=1440",
                    s.device, s.per_day
                ));
            }
        }
        if self
            .local_command
            .as_deref()
            .is_some_and(|c| c.trim().is_empty())
        {
            errs.push("alerts.local_command: empty; remove it or give a program path".into());
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }
}

/// The unit a kind is naturally measured in (for messages).
pub fn natural_unit(kind: Kind) -> Unit {
    match kind {
        Kind::Glucose | Kind::CgmGlucose => Unit::MgPerDl,
        Kind::Systolic | Kind::Diastolic | Kind::MeanArterialPressure | Kind::CuffPressure => {
            Unit::MmHg
        }
        Kind::PulseRate | Kind::HeartRate => Unit::PerMin,
        Kind::RrInterval => Unit::Ms,
        Kind::EnergyExpended => Unit::KJ,
        Kind::Spo2 | Kind::BatteryLevel => Unit::Percent,
        Kind::BodyTemperature => Unit::Cel,
        Kind::BodyWeight => Unit::Kg,
        Kind::Bmi => Unit::KgPerM2,
        Kind::Height => Unit::Metre,
    }
}

fn kind_unit_ok(kind: Kind, unit: Unit) -> bool {
    convertible(natural_unit(kind), unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starting_points_are_valid() {
        AlertRules::starting_points().validate().unwrap();
    }

    #[test]
    fn contradictions_are_named() {
        let mut r = AlertRules::starting_points();
        if let Some(g) = r.thresholds.get_mut(&Kind::Glucose) {
            g.critical_low = lim(80, 0);
            g.unit = Unit::Kg;
        }
        let errs = r.validate().unwrap_err().join("\n");
        assert!(
            errs.contains("alerts.thresholds.glucose: critical_low 80 must be below low 70"),
            "{errs}"
        );
        assert!(
            errs.contains("unit kg does not measure glucose; use mg/dL"),
            "{errs}"
        );
    }
}
