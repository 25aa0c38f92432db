//! SMTP replies (RFC 5321 §4.2), parsed byte-exact and bounded.
//!
//! A reply is one or more lines. Each line is three digits (the first 2-5), then `-` for a
//! continuation line, or ` ` or nothing for the last line, then text, then a line ending. A line
//! ends at LF: normally CR LF, but a bare LF is accepted (and kept verbatim in [`Reply::raw`], so a
//! relayed reply reaches the MTA exactly as the MX sent it). All lines of a reply carry the same
//! code.
//!
//! [`parse_reply`] is incremental in the sans-I/O style: give it the unconsumed bytes read so far;
//! it answers "need more", "here is a reply and how many bytes it used", or an error. It never
//! buffers anything itself, and refuses over-long lines and replies with too many lines as soon as
//! the limit is known to be exceeded, so a peer cannot make the caller buffer without bound.

use std::fmt;

use crate::escape::printable;

/// Bounds on replies read from a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyLimits {
    /// Longest accepted line, including its line ending. Default 4096.
    pub max_line: usize,
    /// Most lines in one reply. Default 128.
    pub max_lines: usize,
}

impl Default for ReplyLimits {
    fn default() -> ReplyLimits {
        ReplyLimits {
            max_line: 4096,
            max_lines: 128,
        }
    }
}

/// One complete SMTP reply: its code and the exact bytes it was made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    code: u16,
    raw: Vec<u8>,
}

impl Reply {
    /// The three-digit reply code.
    pub fn code(&self) -> u16 {
        self.code
    }

    /// All lines of the reply, including their line endings, exactly as received.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// The raw bytes, by value.
    pub fn into_raw(self) -> Vec<u8> {
        self.raw
    }

    /// The text of each line: what follows `ddd-` / `ddd ` (empty for a bare `ddd`), without the
    /// line ending.
    pub fn lines(&self) -> impl Iterator<Item = &[u8]> {
        self.raw.split_inclusive(|&b| b == b'\n').map(line_text)
    }

    /// The lines' text joined with `" / "`, lossy UTF-8 with control characters replaced by `?`.
    /// For logs and error messages only.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for (i, line) in self.lines().enumerate() {
            if i > 0 {
                out.push_str(" / ");
            }
            out.push_str(&printable(line, usize::MAX));
        }
        out
    }

    /// 2xx or 3xx.
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// 4xx.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// Build a single-line reply `"ddd text\r\n"` (just `"ddd\r\n"` when `text` is empty).
    /// CR and LF in `text` are replaced by spaces so the result is always one line. `code` is
    /// expected to be a valid reply code (200..=599).
    pub fn new_single(code: u16, text: &str) -> Reply {
        let mut raw = format!("{code:03}").into_bytes();
        if !text.is_empty() {
            raw.push(b' ');
            raw.extend(text.bytes().map(|b| match b {
                b'\r' | b'\n' => b' ',
                other => other,
            }));
        }
        raw.extend_from_slice(b"\r\n");
        Reply { code, raw }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.text())
    }
}

/// The text part of one raw line (with or without its line ending).
fn line_text(line: &[u8]) -> &[u8] {
    super::strip_line_end(line).get(4..).unwrap_or(&[])
}

/// Why bytes from a peer are not a valid reply.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplyError {
    /// A line does not start with a valid three-digit code (first digit 2-5).
    BadCode {
        /// The start of the offending line, made printable.
        line: String,
    },
    /// A later line of a multi-line reply carries another code than the first.
    CodeMismatch {
        /// Code of the first line.
        first: u16,
        /// The differing code.
        later: u16,
    },
    /// The code is followed by something other than `-`, ` ` or the line end.
    BadSeparator,
    /// A line (complete or not) is longer than the limit.
    LineTooLong {
        /// The limit in bytes, including the line ending.
        limit: usize,
    },
    /// The reply has more lines than the limit.
    TooManyLines {
        /// The limit in lines.
        limit: usize,
    },
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyError::BadCode { line } => {
                write!(f, "malformed SMTP reply: no valid reply code in {line:?}")
            }
            ReplyError::CodeMismatch { first, later } => write!(
                f,
                "malformed SMTP reply: multi-line reply starts with code {first} but a later line has {later}"
            ),
            ReplyError::BadSeparator => write!(
                f,
                "malformed SMTP reply: reply code not followed by '-', ' ' or the line end"
            ),
            ReplyError::LineTooLong { limit } => {
                write!(f, "SMTP reply line longer than {limit} bytes")
            }
            ReplyError::TooManyLines { limit } => {
                write!(f, "SMTP reply has more than {limit} lines")
            }
        }
    }
}

impl std::error::Error for ReplyError {}

/// Parse one complete reply from the front of `buf`.
///
/// Returns `Ok(Some((reply, consumed)))` when `buf[..consumed]` is a complete reply, `Ok(None)`
/// when more bytes are needed, and `Err` when the bytes are malformed or a limit is exceeded
/// (including an incomplete line that already has `max_line` bytes without a line end). The
/// start of an incomplete line is checked too, so garbage is refused without waiting for a LF.
pub fn parse_reply(buf: &[u8], limits: &ReplyLimits) -> Result<Option<(Reply, usize)>, ReplyError> {
    Ok(ReplyScan::default().scan(buf, limits)?.map(|(code, n)| {
        let raw = buf.get(..n).unwrap_or(buf).to_vec();
        (Reply { code, raw }, n)
    }))
}

/// An incremental [`parse_reply`] that copies nothing: it finds where the reply at the front
/// of a buffer ends and remembers how far the reply's complete lines were already checked, so
/// a long reply arriving in many reads is scanned once overall, not once per read.
///
/// Contract: between calls the buffer keeps the bytes it had (the caller only appends), until
/// a call returns a complete reply or an error; then the scan starts afresh. A buffer shorter
/// than what was already checked restarts the scan too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplyScan {
    /// Bytes of complete continuation lines already checked.
    pos: usize,
    /// How many lines they are.
    lines: usize,
    /// Their code.
    first_code: Option<u16>,
}

impl ReplyScan {
    /// Scan `buf` as [`parse_reply`] would, returning the reply's code and length instead of a
    /// copy of it.
    pub fn scan(
        &mut self,
        buf: &[u8],
        limits: &ReplyLimits,
    ) -> Result<Option<(u16, usize)>, ReplyError> {
        if buf.len() < self.pos {
            *self = ReplyScan::default();
        }
        let r = self.scan_from(buf, limits);
        if !matches!(r, Ok(None)) {
            *self = ReplyScan::default();
        }
        r
    }

    fn scan_from(
        &mut self,
        buf: &[u8],
        limits: &ReplyLimits,
    ) -> Result<Option<(u16, usize)>, ReplyError> {
        loop {
            let rest = buf.get(self.pos..).unwrap_or(&[]);
            let window = rest.get(..limits.max_line).unwrap_or(rest);
            let Some(lf) = window.iter().position(|&b| b == b'\n') else {
                check_partial_line(rest, self.first_code)?;
                if rest.len() >= limits.max_line {
                    return Err(ReplyError::LineTooLong {
                        limit: limits.max_line,
                    });
                }
                return Ok(None);
            };
            let count = self.lines + 1;
            if count > limits.max_lines {
                return Err(ReplyError::TooManyLines {
                    limit: limits.max_lines,
                });
            }
            let line = rest.get(..=lf).unwrap_or(rest);
            let (code, last) = parse_line(line)?;
            match self.first_code {
                Some(first) if first != code => {
                    return Err(ReplyError::CodeMismatch { first, later: code })
                }
                _ => {}
            }
            let end = self.pos + lf + 1;
            if last {
                return Ok(Some((code, end)));
            }
            if count >= limits.max_lines {
                // A continuation line at the limit: the next line would be one too many.
                return Err(ReplyError::TooManyLines {
                    limit: limits.max_lines,
                });
            }
            self.pos = end;
            self.lines = count;
            self.first_code = Some(code);
        }
    }
}

fn bad_code(line: &[u8]) -> ReplyError {
    ReplyError::BadCode {
        line: printable(super::strip_line_end(line), 64),
    }
}

/// Parse the code of a complete line; returns (code, is_last_line).
fn parse_line(line: &[u8]) -> Result<(u16, bool), ReplyError> {
    let content = super::strip_line_end(line);
    let code = match content {
        [a, b, c, ..] if (b'2'..=b'5').contains(a) && b.is_ascii_digit() && c.is_ascii_digit() => {
            u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
        }
        _ => return Err(bad_code(line)),
    };
    match content.get(3) {
        None | Some(b' ') => Ok((code, true)),
        Some(b'-') => Ok((code, false)),
        Some(_) => Err(ReplyError::BadSeparator),
    }
}

/// Check the bytes of an incomplete line that are already there.
fn check_partial_line(partial: &[u8], first_code: Option<u16>) -> Result<(), ReplyError> {
    for (i, &b) in partial.iter().take(3).enumerate() {
        let ok = if i == 0 {
            (b'2'..=b'5').contains(&b)
        } else {
            b.is_ascii_digit()
        };
        if !ok {
            return Err(bad_code(partial));
        }
    }
    if let [a, b, c, ..] = partial {
        let code = u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0');
        if let Some(first) = first_code {
            if first != code {
                return Err(ReplyError::CodeMismatch { first, later: code });
            }
        }
    }
    match partial.get(3) {
        // '\r' may be the start of the line ending of a bare "250\r\n".
        None | Some(b' ') | Some(b'-') | Some(b'\r') => Ok(()),
        Some(_) => Err(ReplyError::BadSeparator),
    }
}

#[cfg(test)]
mod tests;
