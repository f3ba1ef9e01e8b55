//! Checked little-endian reads and writes. Every read is bounds-checked; nothing here can panic.

use super::error::DecodeError;
use super::float::{Float, SFloat};

/// A cursor over a received value. `what` names the characteristic in every error.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(what: &'static str, buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0, what }
    }

    pub fn what(&self) -> &'static str {
        self.what
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end.and_then(|e| self.buf.get(self.pos..e)) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(DecodeError::malformed(
                self.what,
                format!(
                    "value ends at byte {} but a {n}-byte field starts there",
                    self.buf.len()
                ),
            )),
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let what = self.what;
        self.take(N)?
            .try_into()
            .map_err(|_| DecodeError::malformed(what, "internal: short read"))
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(u8::from_le_bytes(self.array()?))
    }

    pub fn i8(&mut self) -> Result<i8, DecodeError> {
        Ok(self.u8()? as i8)
    }

    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub fn i16(&mut self) -> Result<i16, DecodeError> {
        Ok(self.u16()? as i16)
    }

    pub fn u24(&mut self) -> Result<u32, DecodeError> {
        let [a, b, c] = self.array()?;
        Ok(u32::from_le_bytes([a, b, c, 0]))
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub fn sfloat(&mut self) -> Result<SFloat, DecodeError> {
        Ok(SFloat::from_raw(self.u16()?))
    }

    pub fn float(&mut self) -> Result<Float, DecodeError> {
        Ok(Float::from_raw(self.u32()?))
    }

    /// Fail unless every byte was consumed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(DecodeError::malformed(
                self.what,
                format!(
                    "{} unexpected byte(s) after the last field (at byte {})",
                    self.remaining(),
                    self.pos
                ),
            ))
        }
    }
}

/// Builds a value for the wire (the hub's own writes and the simulators).
#[derive(Debug, Default, Clone)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Writer { buf: Vec::new() }
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    pub fn i8(&mut self, v: i8) -> &mut Self {
        self.buf.push(v as u8);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn i16(&mut self, v: i16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u24(&mut self, v: u32) -> &mut Self {
        let [a, b, c, _] = v.to_le_bytes();
        self.buf.extend_from_slice(&[a, b, c]);
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn sfloat(&mut self, v: SFloat) -> &mut Self {
        self.u16(v.raw())
    }
    pub fn float(&mut self, v: Float) -> &mut Self {
        self.u32(v.raw())
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }
    pub fn into_vec(self) -> Vec<u8> {
        self.buf
    }
}

/// Require `flags` to have none of `reserved` set.
pub fn check_reserved_flags(
    what: &'static str,
    flags: u8,
    reserved: u8,
) -> Result<(), DecodeError> {
    if flags & reserved != 0 {
        Err(DecodeError::ReservedFlags {
            what,
            flags,
            reserved: flags & reserved,
        })
    } else {
        Ok(())
    }
}

/// Require the payload length to be exactly what the flags imply.
pub fn check_flags_length(
    what: &'static str,
    flags: u8,
    need: usize,
    got: usize,
) -> Result<(), DecodeError> {
    if need != got {
        Err(DecodeError::FlagsLength {
            what,
            flags,
            need,
            got,
        })
    } else {
        Ok(())
    }
}

/// Require an exact length for a fixed-layout value.
pub fn check_length(
    what: &'static str,
    need: &'static str,
    ok: bool,
    got: usize,
) -> Result<(), DecodeError> {
    if ok {
        Ok(())
    } else {
        Err(DecodeError::Length { what, need, got })
    }
}

/// Test a bit.
pub fn bit(v: u32, n: u32) -> bool {
    (v >> n) & 1 == 1
}
