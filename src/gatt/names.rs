//! How coded fields appear in `fields` JSON: the raw code, and its meaning where the spec gives one.

use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

/// An enumerated field: `{"code": 2, "name": "capillary_plasma"}`; `name` is null for codes the
/// spec reserves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code {
    pub code: u32,
    pub name: Option<&'static str>,
}

impl Serialize for Code {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Code", 2)?;
        st.serialize_field("code", &self.code)?;
        st.serialize_field("name", &self.name)?;
        st.end()
    }
}

/// A bit field: `{"raw": 261, "set": ["battery_low", …]}`; set bits the spec reserves appear as
/// `"reserved_bit_N"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bits {
    pub raw: u32,
    pub set: Vec<String>,
}

impl Bits {
    /// `names[i]` names bit `i`; bits beyond `names` (or named "") are reserved.
    pub fn new(raw: u32, width: u32, names: &[&str]) -> Self {
        let set = (0..width)
            .filter(|i| (raw >> i) & 1 == 1)
            .map(|i| match names.get(i as usize) {
                Some(n) if !n.is_empty() => (*n).to_string(),
                _ => format!("reserved_bit_{i}"),
            })
            .collect();
        Bits { raw, set }
    }
}

impl Serialize for Bits {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Bits", 2)?;
        st.serialize_field("raw", &self.raw)?;
        st.serialize_field("set", &self.set)?;
        st.end()
    }
}
