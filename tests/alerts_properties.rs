//! Over random reading sequences the alert engine makes no storms: the number of alerts raised or
//! escalated, and the number resolved, are each bounded by the number of changes of condition
//! (normal / low / high / critical), and every episode reads raised → (escalated) → (resolved).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use proptest::prelude::*;
use std::collections::BTreeMap;
use vitals_hub::alerts::{interpretation, AlertRules, Engine, Transition};
use vitals_hub::model::{Decimal, Flag, Kind, Reading, Special, Unit, UtcMillis, Value};

#[derive(Debug, Clone)]
enum Step {
    Value {
        minutes_later: i64,
        value: i64,
        mmol: bool,
    },
    Nan {
        minutes_later: i64,
    },
    ControlSolution {
        minutes_later: i64,
        value: i64,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (1i64..240, 20i64..480, any::<bool>()).prop_map(|(m, v, mmol)| Step::Value { minutes_later: m, value: v, mmol }),
        1 => (1i64..240).prop_map(|m| Step::Nan { minutes_later: m }),
        1 => (1i64..240, 20i64..480).prop_map(|(m, v)| Step::ControlSolution { minutes_later: m, value: v }),
    ]
}

fn reading(s: &Step) -> (i64, Reading) {
    match s {
        Step::Value {
            minutes_later,
            value,
            mmol: false,
        } => (
            *minutes_later,
            Reading::new(
                Kind::Glucose,
                Value::Number(Decimal::new(*value, 0)),
                Unit::MgPerDl,
            ),
        ),
        // The same value in mmol/L with one decimal: value/18 rounded, so the meter's resolution shows.
        Step::Value {
            minutes_later,
            value,
            mmol: true,
        } => (
            *minutes_later,
            Reading::new(
                Kind::Glucose,
                Value::Number(Decimal::new(value * 10 / 18, -1)),
                Unit::MmolPerL,
            ),
        ),
        Step::Nan { minutes_later } => (
            *minutes_later,
            Reading::new(Kind::Glucose, Value::Special(Special::Nan), Unit::MgPerDl),
        ),
        Step::ControlSolution {
            minutes_later,
            value,
        } => {
            let mut r = Reading::new(
                Kind::Glucose,
                Value::Number(Decimal::new(*value, 0)),
                Unit::MgPerDl,
            );
            r.flags.insert(Flag::ControlSolution);
            (*minutes_later, r)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn alerts_are_bounded_by_condition_changes(steps in proptest::collection::vec(step(), 1..120), suppress in 0u32..180) {
        let rules = AlertRules { suppress_minutes: suppress, ..AlertRules::starting_points() };
        let mut engine = Engine::new();
        let mut t = 1_700_000_000_000i64;
        let mut changes = 0usize;
        let mut last = None;
        let mut raised_or_escalated = 0usize;
        let mut resolved = 0usize;
        let mut episodes: BTreeMap<String, Vec<Transition>> = BTreeMap::new();
        for (i, s) in steps.iter().enumerate() {
            let (dt, r) = reading(s);
            t += dt * 60_000;
            if r.is_alertable() {
                let cond = interpretation(&rules, &r);
                if cond != last {
                    changes += 1;
                    last = cond;
                }
            }
            for e in engine.observe(&rules, UtcMillis(t), &r, &i.to_string()) {
                match e.transition {
                    Transition::Raised | Transition::Escalated => raised_or_escalated += 1,
                    Transition::Resolved => resolved += 1,
                }
                episodes.entry(e.episode.clone()).or_default().push(e.transition);
            }
        }
        prop_assert!(raised_or_escalated <= changes, "{} raised/escalated for {} changes", raised_or_escalated, changes);
        prop_assert!(resolved <= changes, "{} resolved for {} changes", resolved, changes);
        for (id, seq) in &episodes {
            prop_assert_eq!(seq.first(), Some(&Transition::Raised), "{}: {:?}", id, seq);
            prop_assert!(seq.iter().filter(|t| **t == Transition::Escalated).count() <= 1, "{}: {:?}", id, seq);
            let resolved_at = seq.iter().position(|t| *t == Transition::Resolved);
            prop_assert!(resolved_at.is_none_or(|p| p == seq.len() - 1), "{}: {:?}", id, seq);
        }
    }

    /// A reading that is never alertable never produces an event.
    #[test]
    fn non_alertable_readings_are_silent(values in proptest::collection::vec(0i64..1000, 1..50)) {
        let rules = AlertRules::starting_points();
        let mut engine = Engine::new();
        for (i, v) in values.iter().enumerate() {
            let mut r = Reading::new(Kind::Glucose, Value::Number(Decimal::new(*v, 0)), Unit::MgPerDl);
            r.flags.insert(Flag::ControlSolution);
            prop_assert!(engine.observe(&rules, UtcMillis(i as i64 * 3_600_000), &r, "x").is_empty());
        }
    }
}
