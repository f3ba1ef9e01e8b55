//! Where a key sits in the config text, for messages about values that parsed but are wrong.
//!
//! The positions are `toml`'s own: the text is parsed once more into [`toml::de::DeTable`], whose
//! keys and values carry their byte spans, and a span becomes a 1-based line and column here. It
//! is never used to read values (serde does that, on the same text).

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// The 1-based line and column (in characters) of byte `offset` of `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The 1-based line of `keys` (e.g. `["uplink", "base_url"]`, `["device", "1", "address"]`, an
/// array of tables indexed from 0); when the key itself is absent, the line of the innermost table
/// that exists on its path (its `[header]`). `None` when not even the first table exists, or the
/// text is not TOML.
pub fn line_of(text: &str, keys: &[&str]) -> Option<usize> {
    let root = DeTable::parse(text).ok()?;
    let mut table: &DeTable<'_> = root.get_ref();
    let mut found: Option<usize> = None; // byte offset of the innermost container found
    let mut rest = keys.iter().peekable();
    while let Some(key) = rest.next() {
        let Some((k, v)) = table.iter().find(|(k, _)| k.get_ref() == key) else {
            break;
        };
        if rest.peek().is_none() {
            return Some(line_col(text, k.span().start).0);
        }
        let mut value: &Spanned<DeValue<'_>> = v;
        if let DeValue::Array(items) = value.get_ref() {
            // `[[name]]` tables: the next key is the element's index.
            let Some(item) = rest
                .next()
                .and_then(|i| i.parse::<usize>().ok())
                .and_then(|i| items.get(i))
            else {
                found = Some(value.span().start);
                break;
            };
            if rest.peek().is_none() {
                return Some(line_col(text, item.span().start).0);
            }
            value = item;
        }
        match value.get_ref() {
            DeValue::Table(t) => {
                found = Some(value.span().start);
                table = t;
            }
            _ => break,
        }
    }
    found.map(|o| line_col(text, o).0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const T: &str = "[hub]\npatient_id = \"p\"\n\n[[device]]\nname = \"a\"\n[[device]]\nname = \"b\"\naddress = \"x\"\n[alerts.thresholds.glucose]\nhigh = 1\n";

    #[test]
    fn keys_tables_and_array_tables() {
        assert_eq!(line_of(T, &["hub", "patient_id"]), Some(2));
        assert_eq!(line_of(T, &["device", "1", "address"]), Some(8));
        // Absent key: the table that would hold it.
        assert_eq!(line_of(T, &["device", "0", "address"]), Some(4));
        assert_eq!(line_of(T, &["device", "1"]), Some(6));
        assert_eq!(line_of(T, &["hub", "state_dir"]), Some(1));
        assert_eq!(
            line_of(T, &["alerts", "thresholds", "glucose", "high"]),
            Some(10)
        );
        assert_eq!(line_of(T, &["uplink", "base_url"]), None);
        assert_eq!(line_of("not = [toml", &["not"]), None);
    }

    #[test]
    fn keys_the_line_scanner_got_wrong() {
        // A `[` or `=` inside a string, a multi-line string, an inline table, a quoted dotted key.
        let t = "[hub]\nnote = \"\"\"\n[uplink]\nbase_url = 1\n\"\"\"\ntags = { base_url = \"=\" }\n\n[uplink]\n\"base_url\" = \"x\"\n";
        assert_eq!(line_of(t, &["uplink", "base_url"]), Some(9));
        assert_eq!(line_of(t, &["hub", "tags", "base_url"]), Some(6));
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 7), (2, 2));
    }
}
