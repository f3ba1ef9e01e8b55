//! The one error type of the codecs: every variant names the characteristic and the problem.

/// Why a GATT value could not be decoded (or a value could not be encoded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The payload is empty.
    #[error("{what}: empty payload")]
    Empty { what: &'static str },
    /// The length does not match what the flags say is present.
    #[error("{what}: flags 0x{flags:02X} require {need} bytes, got {got}")]
    FlagsLength {
        what: &'static str,
        flags: u8,
        need: usize,
        got: usize,
    },
    /// The length does not match a fixed-size layout (or a minimum).
    #[error("{what}: needs {need} bytes, got {got}")]
    Length {
        what: &'static str,
        need: &'static str,
        got: usize,
    },
    /// A flags field has bits the spec reserves; the layout of what follows is then unknown.
    #[error("{what}: flags 0x{flags:02X} set reserved bit(s) 0x{reserved:02X}")]
    ReservedFlags {
        what: &'static str,
        flags: u8,
        reserved: u8,
    },
    /// A field holds a value outside its allowed range.
    #[error("{what}: {field} {value} is out of range ({allowed})")]
    OutOfRange {
        what: &'static str,
        field: &'static str,
        value: i64,
        allowed: &'static str,
    },
    /// The E2E-CRC in the value does not match the bytes it covers.
    #[error("{what}: E2E-CRC mismatch (field 0x{received:04X}, computed 0x{computed:04X})")]
    Crc {
        what: &'static str,
        received: u16,
        computed: u16,
    },
    /// Anything else that makes the payload malformed.
    #[error("{what}: {detail}")]
    Malformed { what: &'static str, detail: String },
}

impl DecodeError {
    pub fn malformed(what: &'static str, detail: impl Into<String>) -> Self {
        DecodeError::Malformed {
            what,
            detail: detail.into(),
        }
    }
}

/// Why a value could not be encoded (it has no wire representation).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A number cannot be represented in the field's format.
    #[error("{what}: {detail}")]
    Unrepresentable { what: &'static str, detail: String },
}
