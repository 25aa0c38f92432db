//! CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of the PROXY v2
//! `PP2_TYPE_CRC32C` TLV. A 256-entry table built at compile time; headers are at most about
//! a kilobyte, so nothing faster is needed.

const POLY: u32 = 0x82F6_3B78;

const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ POLY
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// Feed `bytes` into a running (pre-inverted) CRC state.
fn update(mut crc: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        crc = TABLE[usize::from((crc as u8) ^ b)] ^ (crc >> 8);
    }
    crc
}

/// The CRC-32C of `bytes`.
#[cfg(test)]
pub(super) fn checksum(bytes: &[u8]) -> u32 {
    !update(!0, bytes)
}

/// The CRC-32C of `bytes` with `len` bytes at `at` taken as zeros (the checksum field itself,
/// as the spec computes it). Out-of-range positions are clamped, never a panic.
pub(super) fn with_zeroed(bytes: &[u8], at: usize, len: usize) -> u32 {
    let at = at.min(bytes.len());
    let end = at.saturating_add(len).min(bytes.len());
    let (head, rest) = bytes.split_at(at);
    let tail = rest.get(end - at..).unwrap_or_default();
    let mut crc = update(!0, head);
    for _ in at..end {
        crc = update(crc, &[0]);
    }
    !update(crc, tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_check_values() {
        // The CRC catalogue's check value for CRC-32/ISCSI, and RFC 3720 B.4's 32 zero bytes.
        assert_eq!(checksum(b"123456789"), 0xE306_9283);
        assert_eq!(checksum(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(checksum(&[0xffu8; 32]), 0x62A8_AB43);
        assert_eq!(checksum(b""), 0);
    }

    #[test]
    fn zeroed_field_equals_checksum_of_zeroed_copy() {
        let bytes: Vec<u8> = (0..40u8).collect();
        let mut copy = bytes.clone();
        copy[10..14].fill(0);
        assert_eq!(with_zeroed(&bytes, 10, 4), checksum(&copy));
        // Clamped at the end: no panic, same as zeroing what exists.
        let mut copy = bytes.clone();
        copy[38..].fill(0);
        assert_eq!(with_zeroed(&bytes, 38, 4), checksum(&copy));
        assert_eq!(with_zeroed(&bytes, 99, 4), checksum(&bytes));
    }
}
