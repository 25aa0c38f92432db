//! Dot-stuffing of a message body for the DATA command (RFC 5321 §4.5.2), client side.
//!
//! The proxy's own SMTP client (tests, the test MX client, probes) sends bodies with DATA. The
//! output of [`dot_stuff`] is always unambiguous: it contains only CR LF line endings, every line
//! that starts with `.` gets an extra `.`, and the only CR LF `.` CR LF in it is the final
//! terminator — so no MX can find an end-of-data where we did not put one.

/// Append `body` to `out` as a complete DATA payload, terminator included.
///
/// Exactly what is done:
/// - Line endings are normalised to CR LF: a CR LF pair stays, a bare LF becomes CR LF, and a
///   bare CR (one not followed by LF) also becomes CR LF (SMTP forbids bare CR and LF in a
///   body, and a bare CR next to a `.` is a known end-of-data ambiguity).
/// - Every line that starts with `.` (including the first line) gets one more `.` in front.
/// - If the body is not empty and does not end with a line end, CR LF is added.
/// - Finally `.` CR LF is appended. An empty body therefore yields just `.\r\n`.
pub fn dot_stuff(body: &[u8], out: &mut Vec<u8>) {
    out.reserve(body.len() + body.len() / 64 + 5);
    let mut at_line_start = true;
    let mut bytes = body.iter().copied().peekable();
    while let Some(b) = bytes.next() {
        match b {
            b'\r' => {
                if bytes.peek() == Some(&b'\n') {
                    bytes.next();
                }
                out.extend_from_slice(b"\r\n");
                at_line_start = true;
            }
            b'\n' => {
                out.extend_from_slice(b"\r\n");
                at_line_start = true;
            }
            _ => {
                if at_line_start && b == b'.' {
                    out.push(b'.');
                }
                out.push(b);
                at_line_start = false;
            }
        }
    }
    if !at_line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stuffed(body: &[u8]) -> Vec<u8> {
        let mut out = b"prefix".to_vec();
        dot_stuff(body, &mut out);
        out.split_off(6)
    }

    #[test]
    fn examples() {
        assert_eq!(stuffed(b""), b".\r\n");
        assert_eq!(stuffed(b"a"), b"a\r\n.\r\n");
        assert_eq!(stuffed(b"a\r\n"), b"a\r\n.\r\n");
        assert_eq!(stuffed(b".a\r\n.\r\nb"), b"..a\r\n..\r\nb\r\n.\r\n");
        assert_eq!(stuffed(b"x\n.\ny"), b"x\r\n..\r\ny\r\n.\r\n");
        assert_eq!(stuffed(b"x\r.\r"), b"x\r\n..\r\n.\r\n");
        assert_eq!(stuffed(b"\r\n"), b"\r\n.\r\n");
        assert_eq!(stuffed(b"a.b\r\n"), b"a.b\r\n.\r\n");
    }

    /// Undo stuffing the way a receiving MX does; returns the body and the bytes after the
    /// terminator.
    fn unstuff(data: &[u8]) -> (Vec<u8>, usize) {
        let mut body = Vec::new();
        let mut pos = 0;
        loop {
            let end = pos + data[pos..].windows(2).position(|w| w == b"\r\n").unwrap() + 2;
            let line = &data[pos..end];
            if line == b".\r\n" {
                return (body, end);
            }
            body.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
            pos = end;
        }
    }

    proptest! {
        #[test]
        fn roundtrip(body in prop::collection::vec(
            prop::sample::select(vec![b'a', b'.', b'\r', b'\n', b' ']), 0..80)) {
            let out = stuffed(&body);
            prop_assert!(out.ends_with(b".\r\n"));
            // Only CR LF line endings.
            for (i, &b) in out.iter().enumerate() {
                if b == b'\r' { prop_assert_eq!(out.get(i + 1), Some(&b'\n')); }
                if b == b'\n' { prop_assert!(i > 0 && out[i - 1] == b'\r'); }
            }
            // The terminator is found exactly at the end, and the body comes back normalised.
            let (back, used) = unstuff(&out);
            prop_assert_eq!(used, out.len());
            let mut normalised = Vec::new();
            let mut i = 0;
            while i < body.len() {
                match body[i] {
                    b'\r' if body.get(i + 1) == Some(&b'\n') => {
                        normalised.extend_from_slice(b"\r\n");
                        i += 1;
                    }
                    b'\r' | b'\n' => normalised.extend_from_slice(b"\r\n"),
                    b => normalised.push(b),
                }
                i += 1;
            }
            if !normalised.is_empty() && !normalised.ends_with(b"\r\n") {
                normalised.extend_from_slice(b"\r\n");
            }
            prop_assert_eq!(back, normalised);
        }
    }
}
