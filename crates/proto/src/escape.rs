//! The one way to show bytes a peer sent (an MTA, an MX, a PROXY or SOCKS5 client, a name
//! given for DNS) in a log line, an error message or the text of a reply, sans I/O.
//!
//! Peer bytes may hold CR and LF (a forged log line, a second reply line), terminal escape
//! sequences, invalid UTF-8 or megabytes. The text made from them holds none of these: every
//! control character is replaced or escaped, and the length is bounded with a visible mark
//! where it was cut ([`Style::Reply`] excepted: a reply's text is cut silently).

/// How [`escape`] shows the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Style {
    /// For log lines and error messages: lossy UTF-8, each control character (CR and LF
    /// included) shown as `?`, at most `max` characters, `…` marking a cut.
    Log,
    /// For the text of a reply line sent to an MTA: lossy UTF-8, each control character
    /// shown as a space, at most `max` characters, cut without a mark (the line's bytes are
    /// part of the protocol: MTAs log and parse them).
    Reply,
    /// For binary handshakes (PROXY header, SOCKS5), where the exact byte matters: byte by
    /// byte, printable ASCII as is and everything else escaped the way Rust writes it (`\r`,
    /// `\n`, `\x16`, `\\`, `\"`), at most `max` bytes of input, `...` marking a cut.
    Escaped,
}

/// Show `bytes` as `style` says, at most `max` characters (bytes for [`Style::Escaped`]).
pub fn escape(bytes: &[u8], max: usize, style: Style) -> String {
    let (replacement, mark) = match style {
        Style::Log => ('?', "…"),
        Style::Reply => (' ', ""),
        Style::Escaped => {
            let mut out: String = bytes
                .iter()
                .take(max)
                .flat_map(|&b| std::ascii::escape_default(b))
                .map(char::from)
                .collect();
            if bytes.len() > max {
                out.push_str("...");
            }
            return out;
        }
    };
    let mut out = String::new();
    for (i, c) in String::from_utf8_lossy(bytes).chars().enumerate() {
        if i >= max {
            out.push_str(mark);
            break;
        }
        out.push(if c.is_control() { replacement } else { c });
    }
    out
}

/// [`Style::Log`]: peer bytes for a log line or an error message.
pub fn printable(bytes: &[u8], max_chars: usize) -> String {
    escape(bytes, max_chars, Style::Log)
}

/// The longest text of a reply line to an MTA, in characters.
pub const REPLY_TEXT_MAX: usize = 400;

/// [`Style::Reply`]: a text for a reply line to an MTA, at most [`REPLY_TEXT_MAX`] characters.
pub fn reply_text(text: &[u8]) -> String {
    escape(text, REPLY_TEXT_MAX, Style::Reply)
}

/// [`Style::Escaped`]: bytes of a binary handshake for an error message.
pub fn escaped(bytes: &[u8], max_bytes: usize) -> String {
    escape(bytes, max_bytes, Style::Escaped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_replaces_controls_and_marks_the_cut() {
        assert_eq!(printable(b"a\r\nb\x00c", 100), "a??b?c");
        assert_eq!(printable(b"abcdef", 3), "abc…");
        assert_eq!(printable(b"abc", 3), "abc");
        assert_eq!(printable(&[0xff, b'x'], 10), "\u{fffd}x");
        // Counted in characters, not bytes; C1 controls and ESC are controls too.
        assert_eq!(printable("ééé".as_bytes(), 2), "éé…");
        assert_eq!(printable("\u{1b}[31m\u{85}".as_bytes(), 10), "?[31m?");
    }

    #[test]
    fn reply_text_blanks_controls_and_cuts_silently() {
        assert_eq!(reply_text(b"MX rejected us\r\nx"), "MX rejected us  x");
        assert_eq!(escape(b"abcdef", 3, Style::Reply), "abc");
        assert_eq!(reply_text(&[b'a', 0xff, b'\t']), "a\u{fffd} ");
        let long = "é".repeat(REPLY_TEXT_MAX + 10);
        assert_eq!(reply_text(long.as_bytes()), "é".repeat(REPLY_TEXT_MAX));
    }

    #[test]
    fn escaped_is_printable_ascii_and_bounded() {
        assert_eq!(escaped(b"EHLO x\r\n", 16), "EHLO x\\r\\n");
        assert_eq!(escaped(b"\x16\x03\x01", 2), "\\x16\\x03...");
        assert_eq!(escaped(b"", 4), "");
        assert_eq!(escaped("é\"\\".as_bytes(), 8), "\\xc3\\xa9\\\"\\\\");
    }

    #[test]
    fn no_style_lets_a_line_break_through_and_all_are_bounded() {
        let nasty: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        for style in [Style::Log, Style::Reply, Style::Escaped] {
            let shown = escape(&nasty, 300, style);
            assert!(!shown.chars().any(char::is_control), "{style:?}");
            // At most 4 characters per input byte (`\xNN`) plus the mark.
            assert!(shown.chars().count() <= 300 * 4 + 3, "{style:?}");
        }
    }
}
