//! Front-ends for unmodified MTAs: the sans-I/O protocol cores of the PROXY and SOCKS5
//! listeners (see `docs/FRONTENDS.md`).
//!
//! Nothing here performs I/O. [`proxy_header`] parses the HAProxy PROXY header (v1 text and v2
//! binary, auto-detected) that an MTA sends before its SMTP session; [`socks5`] is the server
//! side of the SOCKS5 handshake (RFC 1928 with RFC 1929 username/password, and KumoMTA's
//! BIND-then-CONNECT dialect) as a state machine that takes bytes and says what to answer.
//! The listeners that own the sockets feed them and act on the result.

pub mod proxy_header;
pub mod socks5;

/// Render peer-controlled bytes for an error message: at most `max` bytes, printable ASCII as
/// is, everything else escaped (`\r`, `\n`, `\x16`, ...), a trailing `...` when cut.
fn escape_bytes(bytes: &[u8], max: usize) -> String {
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
    #[test]
    fn escape_bytes_is_printable_and_bounded() {
        assert_eq!(super::escape_bytes(b"EHLO x\r\n", 16), "EHLO x\\r\\n");
        assert_eq!(super::escape_bytes(b"\x16\x03\x01", 2), "\\x16\\x03...");
        assert_eq!(super::escape_bytes(b"", 4), "");
    }
}
