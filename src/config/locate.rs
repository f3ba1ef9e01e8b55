//! Where a key sits in the config text, for messages about values that parsed but are wrong.
//!
//! A small line scanner over the TOML layout the hub's config uses: `[table]`, `[[array]]` tables
//! (numbered from 0 in order of appearance) and `key = value` lines. Good enough to point a
//! technician at a line; it is never used to read values.

use std::collections::HashMap;

/// The 1-based line of `keys` (e.g. `["uplink", "base_url"]`, `["device", "1", "address"]`); when
/// the key itself is absent, the line of the innermost table that exists on its path.
pub fn line_of(text: &str, keys: &[&str]) -> Option<usize> {
    let mut header: Vec<String> = Vec::new();
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut best: Option<(usize, usize)> = None; // (matched prefix length, line)
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let n = i + 1;
        if let Some(name) = line.strip_prefix("[[").and_then(|l| l.split("]]").next()) {
            let name = name.trim().to_string();
            let c = counts.entry(name.clone()).or_insert(0);
            header = name.split('.').map(|s| s.trim().to_string()).collect();
            header.push(c.to_string());
            *c += 1;
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            header = name.split('.').map(|s| s.trim().to_string()).collect();
        } else if let Some((k, _)) = line.split_once('=') {
            let k = k.trim().trim_matches('"');
            if k.is_empty() || k.starts_with('#') {
                continue;
            }
            let mut path = header.clone();
            path.extend(k.split('.').map(|s| s.trim().to_string()));
            if path.iter().map(String::as_str).eq(keys.iter().copied()) {
                return Some(n);
            }
            continue;
        } else {
            continue;
        }
        // A header line: how much of `keys` does it cover?
        let matched = header
            .iter()
            .zip(keys)
            .take_while(|(a, b)| a.as_str() == **b)
            .count();
        if matched == header.len() && matched > best.map_or(0, |b| b.0) {
            best = Some((matched, n));
        }
    }
    best.map(|b| b.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "[hub]\npatient_id = \"p\"\n\n[[device]]\nname = \"a\"\n[[device]]\nname = \"b\"\naddress = \"x\"\n[alerts.thresholds.glucose]\nhigh = 1\n";

    #[test]
    fn keys_tables_and_array_tables() {
        assert_eq!(line_of(T, &["hub", "patient_id"]), Some(2));
        assert_eq!(line_of(T, &["device", "1", "address"]), Some(8));
        // Absent key: the table that would hold it.
        assert_eq!(line_of(T, &["device", "0", "address"]), Some(4));
        assert_eq!(
            line_of(T, &["alerts", "thresholds", "glucose", "high"]),
            Some(10)
        );
        assert_eq!(line_of(T, &["uplink", "base_url"]), None);
    }
}
