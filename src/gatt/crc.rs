//! E2E-CRC of the CGM service (also used by GHS/IDS): CRC-16/MCRF4XX — the CCITT polynomial
//! reflected (0x8408), initial value 0xFFFF, no final XOR, over every preceding byte of the value,
//! appended little-endian.

pub fn crc16_mcrf4xx(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x8408
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// Append the E2E-CRC of `buf` to it.
pub fn append_crc(buf: &mut Vec<u8>) {
    let c = crc16_mcrf4xx(buf);
    buf.extend_from_slice(&c.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_value() {
        // The catalogue check value of CRC-16/MCRF4XX over "123456789".
        assert_eq!(crc16_mcrf4xx(b"123456789"), 0x6F91);
    }
}
