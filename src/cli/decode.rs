//! `vitals-hub decode CHARACTERISTIC HEX`: the technician's and developer's window into the codecs.

use crate::gatt::{self, Characteristic};
use crate::model::{Reading, Value};
use clap::{Args, ValueEnum};
use serde_json::{json, Value as Json};
use std::io::Write;
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Json,
    Text,
}

#[derive(Debug, Args)]
pub struct DecodeArgs {
    /// A 16-bit UUID (`2A18`, `0x2A18`) or a name (`glucose-measurement`).
    #[arg(required_unless_present_any = ["list", "list_quirks"])]
    pub characteristic: Option<String>,
    /// The value as hex; spaces, colons and a `0x` prefix are ignored.
    #[arg(required_unless_present_any = ["list", "list_quirks"])]
    pub hex: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,
    /// List the characteristics the hub decodes.
    #[arg(long)]
    pub list: bool,
    /// An IANA time zone (`Europe/Berlin`): each reading with a device time also gets
    /// `device_time_utc`, converted with that zone's rules at the reading's own instant, and
    /// `time_uncertain` when the local time does not exist or exists twice there.
    #[arg(long, value_name = "ZONE")]
    pub zone: Option<String>,
    /// Apply a device quirk (`beurer-bm85`) before decoding, as the hub does for that device.
    #[arg(long, value_name = "NAME")]
    pub quirk: Option<String>,
    /// List the device quirks the hub knows, with their sources.
    #[arg(long)]
    pub list_quirks: bool,
}

fn list_quirks() -> String {
    let mut out = String::new();
    for q in gatt::quirks::QUIRKS {
        out.push_str(&format!(
            "{}\n  device information: manufacturer ~ {:?}, model ~ {:?}\n  {}\n  source: {}\n  capture: {}\n",
            q.name, q.manufacturer, q.model, q.summary, q.source, q.fixture
        ));
    }
    out
}

/// Parse hex text: pairs of hex digits, with optional `0x`, spaces, `:` or `-` between bytes.
pub fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    let t = s.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    let digits: Vec<u8> = t
        .bytes()
        .filter(|b| !matches!(b, b' ' | b':' | b'-' | b'\t'))
        .collect();
    if digits.is_empty() {
        return Err("the value is empty; give it as hex, e.g. 0055".into());
    }
    if let Some(bad) = digits.iter().find(|b| !b.is_ascii_hexdigit()) {
        return Err(format!(
            "`{}` is not a hex digit; give the value as hex, e.g. 0055",
            *bad as char
        ));
    }
    if !digits.len().is_multiple_of(2) {
        return Err(format!(
            "{} hex digits is an odd number; each byte needs two",
            digits.len()
        ));
    }
    let nibble = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
    Ok(digits
        .chunks_exact(2)
        .map(|p| match p {
            [hi, lo] => (nibble(*hi) << 4) | nibble(*lo),
            _ => 0,
        })
        .collect())
}

/// A reading as `decode` prints it.
pub fn reading_json(r: &Reading) -> Json {
    let (value, special) = match r.value {
        Value::Number(d) => (json!(d.to_f64()), Json::Null),
        Value::Special(s) => (Json::Null, json!(s)),
    };
    json!({
        "kind": r.kind,
        "value": value,
        "value_exact": r.value.number().map(|d| d.to_string()),
        "unit": r.unit,
        "special": special,
        "device_time": r.device_time,
        "sequence": r.sequence,
        "user_id": r.user_id,
        "specimen": r.specimen,
        "sample_location": r.sample_location,
        "body_site": r.body_site,
        "meal": r.meal,
        "flags": r.flags,
    })
}

/// The full JSON document for a decoded value.
pub fn decoded_json(decoded: &gatt::Decoded) -> Result<Json, String> {
    let ch = decoded.characteristic();
    let fields = serde_json::to_value(decoded).map_err(|e| format!("internal: {e}"))?;
    let readings: Vec<Json> = decoded.readings().iter().map(reading_json).collect();
    Ok(json!({
        "characteristic": ch.uuid_text(),
        "name": ch.name(),
        "fields": fields,
        "readings": readings,
    }))
}

/// `device_time_utc` (RFC 3339, `Z`) and, for a nonexistent or ambiguous local time,
/// `time_uncertain: true` on each reading with a device time (rule: `model::Zone`).
fn add_zone(doc: &mut Json, readings: &[Reading], zone: &crate::model::Zone) {
    let Some(out) = doc.get_mut("readings").and_then(Json::as_array_mut) else {
        return;
    };
    for (j, r) in out.iter_mut().zip(readings) {
        let (Some(t), Some(obj)) = (r.device_time, j.as_object_mut()) else {
            continue;
        };
        let res = zone.resolve(t);
        obj.insert("device_time_utc".into(), json!(res.utc.to_rfc3339()));
        if res.quality.uncertain() {
            obj.insert("time_uncertain".into(), json!(true));
            obj.insert("time_quality".into(), json!(res.quality));
        }
    }
}

fn text(doc: &Json, decoded: &gatt::Decoded) -> String {
    let ch = decoded.characteristic();
    let mut out = format!("{} ({})\n", ch.name(), ch.uuid_text());
    out.push_str("fields:\n");
    if let Some(map) = doc.get("fields").and_then(Json::as_object) {
        for (k, v) in map {
            out.push_str(&format!("  {k}: {v}\n"));
        }
    } else if let Some(v) = doc.get("fields") {
        out.push_str(&format!("  {v}\n"));
    }
    let readings = decoded.readings();
    if readings.is_empty() {
        out.push_str("readings: none\n");
    } else {
        out.push_str("readings:\n");
        for (i, r) in readings.iter().enumerate() {
            let v = match r.value {
                Value::Number(d) => format!("{d} {}", r.unit),
                Value::Special(s) => format!("{s} ({})", r.unit),
            };
            out.push_str(&format!("  {}: {v}", r.kind));
            if let Some(t) = r.device_time {
                out.push_str(&format!(" at {t} (device clock)"));
            }
            let zoned = doc.get("readings").and_then(|v| v.get(i));
            if let Some(j) = zoned
                .and_then(|v| v.get("device_time_utc"))
                .and_then(Json::as_str)
            {
                out.push_str(&format!(" = {j}"));
                if zoned.and_then(|v| v.get("time_uncertain")).is_some() {
                    out.push_str(" (uncertain: the local time does not exist or exists twice)");
                }
            }
            if let Some(u) = r.user_id {
                out.push_str(&format!(", user {u}"));
            }
            if !r.flags.is_empty() {
                let names: Vec<String> = r
                    .flags
                    .iter()
                    .map(|f| {
                        serde_json::to_string(f)
                            .unwrap_or_default()
                            .replace('"', "")
                    })
                    .collect();
                out.push_str(&format!(" [{}]", names.join(", ")));
            }
            out.push('\n');
        }
    }
    out
}

fn list() -> String {
    let mut out = String::new();
    for c in Characteristic::ALL {
        out.push_str(&format!("{}  {}\n", c.uuid_text(), c.name()));
    }
    out
}

/// Decode and render; `Err` is the one line for stderr.
pub fn render(args: &DecodeArgs) -> Result<String, String> {
    if args.list {
        return Ok(list());
    }
    if args.list_quirks {
        return Ok(list_quirks());
    }
    let (Some(ch), Some(hex)) = (&args.characteristic, &args.hex) else {
        return Err("give CHARACTERISTIC and HEX, or --list".into());
    };
    let ch: Characteristic = ch
        .parse()
        .map_err(|e: gatt::UnknownCharacteristic| e.to_string())?;
    let mut bytes = parse_hex(hex)?;
    if let Some(name) = &args.quirk {
        let q = gatt::quirks::by_name(name).ok_or_else(|| {
            let names: Vec<&str> = gatt::quirks::QUIRKS.iter().map(|q| q.name).collect();
            format!(
                "no quirk `{name}`; known: {} (see --list-quirks)",
                names.join(", ")
            )
        })?;
        bytes = q.apply(ch.uuid(), &bytes).into_owned();
    }
    let decoded = gatt::decode(ch, &bytes).map_err(|e| e.to_string())?;
    let mut doc = decoded_json(&decoded)?;
    if let Some(name) = &args.zone {
        let zone = crate::model::Zone::named(name).map_err(|e| e.to_string())?;
        add_zone(&mut doc, &decoded.readings(), &zone);
    }
    Ok(match args.format {
        Format::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?
        ),
        Format::Text => text(&doc, &decoded),
    })
}

pub fn run(args: &DecodeArgs) -> ExitCode {
    match render(args) {
        Ok(out) => {
            let mut stdout = std::io::stdout().lock();
            if stdout
                .write_all(out.as_bytes())
                .and_then(|_| stdout.flush())
                .is_err()
            {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(line) => {
            eprintln!("vitals-hub decode: {line}");
            ExitCode::from(super::EXIT_BAD_INPUT)
        }
    }
}
