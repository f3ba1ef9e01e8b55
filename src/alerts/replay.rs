//! `vitals-hub alerts replay`: run the rules over a file of timed readings, one JSON object a line
//! (`time` RFC 3339, `kind` and `unit` as `vitals-hub decode` names them, `value`, optional
//! `flags`, optional `special`), and list every alert event. Clinicians use it to try limits on a
//! patient's history before setting them; the scenario tests use it too.

use super::{AlertEvent, AlertRules, Engine, Subject};
use crate::model::{Decimal, Flag, Kind, Reading, Special, Unit, UtcMillis, Value};
use serde::Deserialize;
use serde_json::{json, Value as Json};

/// One input line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    time: String,
    kind: Kind,
    unit: Unit,
    #[serde(default)]
    value: Option<serde_json::Number>,
    #[serde(default)]
    special: Option<Special>,
    #[serde(default)]
    flags: Vec<Flag>,
}

/// A timed reading of the replay input, with its 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedReading {
    pub line: usize,
    pub at: UtcMillis,
    pub reading: Reading,
}

/// Parse the JSON-lines input; an error names the line and the problem.
pub fn parse(text: &str) -> Result<Vec<TimedReading>, String> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let line: Line = serde_json::from_str(raw).map_err(|e| format!("line {n}: {e}"))?;
        let at = UtcMillis::parse_rfc3339(&line.time).map_err(|e| format!("line {n}: {e}"))?;
        let value = match (line.value, line.special) {
            (Some(v), None) => {
                let d: Decimal = v
                    .to_string()
                    .parse()
                    .map_err(|e| format!("line {n}: {e}"))?;
                Value::Number(d)
            }
            (None, Some(s)) => Value::Special(s),
            (None, None) => {
                return Err(format!(
                    "line {n}: give `value` (a number) or `special` (nan, n_res, pos_inf, neg_inf)"
                ))
            }
            (Some(_), Some(_)) => {
                return Err(format!(
                    "line {n}: give either `value` or `special`, not both"
                ))
            }
        };
        let mut reading = Reading::new(line.kind, value, line.unit);
        reading.flags = line.flags.into_iter().collect();
        out.push(TimedReading {
            line: n,
            at,
            reading,
        });
    }
    // Evaluation is in measurement-time order; lines with equal times keep their order.
    out.sort_by_key(|r| r.at);
    Ok(out)
}

/// Run the rules over the readings and return every event.
pub fn run(rules: &AlertRules, readings: &[TimedReading]) -> Vec<AlertEvent> {
    let mut engine = Engine::new();
    let mut events = Vec::new();
    for r in readings {
        events.extend(engine.observe(rules, r.at, &r.reading, &r.line.to_string()));
    }
    events
}

/// One output line for an event.
pub fn event_json(e: &AlertEvent) -> Json {
    let (kind, rule) = match &e.subject {
        Subject::Threshold { kind } => (kind.as_str().to_string(), "threshold".to_string()),
        Subject::WeightGain { window_hours } => (
            "body_weight".to_string(),
            format!("weight_gain_{window_hours}h"),
        ),
        Subject::Overdue { device } => (device.clone(), "overdue".to_string()),
    };
    let readings: Vec<Json> = e
        .readings
        .iter()
        .map(|r| {
            r.parse::<u64>()
                .map(Json::from)
                .unwrap_or_else(|_| Json::from(r.as_str()))
        })
        .collect();
    json!({
        "time": e.at.to_rfc3339(),
        "event": e.transition,
        "kind": kind,
        "rule": rule,
        "severity": e.severity,
        "episode": e.episode,
        "readings": readings,
        "detail": e.detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_name_the_line() {
        let e = parse("{\"time\":\"2024-01-01T00:00:00Z\",\"kind\":\"glucose\",\"unit\":\"mg/dL\",\"value\":80}\n{\"time\":\"x\",\"kind\":\"glucose\",\"unit\":\"mg/dL\",\"value\":1}").unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
        let e = parse("{\"time\":\"2024-01-01T00:00:00Z\",\"kind\":\"glucose\",\"unit\":\"mg/dl\",\"value\":80}").unwrap_err();
        assert!(e.contains("line 1"), "{e}");
    }
}
