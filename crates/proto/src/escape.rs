//! Peer-controlled bytes made safe for logs and error messages.

/// Render peer-controlled bytes for an error message: at most `max` bytes, printable ASCII as
/// is, everything else escaped (`\r`, `\n`, `\x16`, ...), a trailing `...` when cut.
pub fn escape_bytes(bytes: &[u8], max: usize) -> String {
    let mut out: String = bytes
        .iter()
        .take(max)
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect();
    if bytes.len() > max {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::escape::escape_bytes;

    #[test]
    fn escape_bytes_is_printable_and_bounded() {
        assert_eq!(escape_bytes(b"EHLO x\r\n", 16), "EHLO x\\r\\n");
        assert_eq!(escape_bytes(b"\x16\x03\x01", 2), "\\x16\\x03...");
        assert_eq!(escape_bytes(b"", 4), "");
    }
}
