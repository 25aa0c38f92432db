//! Classification of SMTP command lines sent by the MTA (RFC 5321 §4.1, RFC 3030 BDAT).
//!
//! The relay only needs to know what a line *does* to the shape of the session (does it start a
//! body, a chunk, an AUTH exchange, end the session...), so [`classify`] maps a line to a
//! [`Verb`] and nothing more; arguments are the MX's business. Verbs are matched
//! case-insensitively on the first space-separated word.
//!
//! Framing-relevant commands are parsed strictly, because a disagreement with the MX about where
//! a command's data ends would let data be taken for commands: `DATA` only when the line is
//! exactly `DATA` (trailing spaces allowed), and `BDAT` only in the RFC 3030 form
//! `BDAT <digits>[ LAST]`. Anything else starting with `BDAT ` is an error.

use std::fmt;

use super::strip_line_end;

/// What an MTA command line is, as far as the relay is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    /// `HELO`
    Helo,
    /// `EHLO`
    Ehlo,
    /// `MAIL` (`MAIL FROM:`)
    Mail,
    /// `RCPT` (`RCPT TO:`)
    Rcpt,
    /// `DATA`, exactly.
    Data,
    /// `BDAT <size> [LAST]`, well formed.
    Bdat {
        /// Chunk size in bytes.
        size: u64,
        /// The `LAST` marker is present.
        last: bool,
    },
    /// `RSET`
    Rset,
    /// `NOOP`
    Noop,
    /// `QUIT`
    Quit,
    /// `STARTTLS`
    StartTls,
    /// `AUTH`
    Auth,
    /// Anything else: VRFY, EXPN, HELP, unknown verbs, empty lines, `DATA` with arguments...
    Other,
}

/// A command line that could not be classified.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommandError {
    /// A line with the verb `BDAT` that is not `BDAT <decimal size> [LAST]`.
    MalformedBdat {
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::MalformedBdat { reason } => {
                write!(f, "malformed BDAT command: {reason}")
            }
        }
    }
}

impl std::error::Error for CommandError {}

/// Classify one command line (the bytes up to and including its LF; a missing line ending is
/// tolerated). The verb is case-insensitive.
///
/// `DATA` is [`Verb::Data`] only when the line is exactly `DATA` (trailing spaces allowed).
/// `BDAT` must be `BDAT <decimal size>` optionally followed by ` LAST`, single spaces, no sign,
/// the size fitting in a `u64`; any other `BDAT` line is an `Err`.
pub fn classify(line: &[u8]) -> Result<Verb, CommandError> {
    let content = strip_line_end(line);
    let verb = match content.iter().position(|&b| b == b' ') {
        Some(i) => content.get(..i).unwrap_or(content),
        None => content,
    };
    let is = |name: &[u8]| verb.eq_ignore_ascii_case(name);
    let verb = if is(b"HELO") {
        Verb::Helo
    } else if is(b"EHLO") {
        Verb::Ehlo
    } else if is(b"MAIL") {
        Verb::Mail
    } else if is(b"RCPT") {
        Verb::Rcpt
    } else if is(b"DATA") {
        let rest = content.get(4..).unwrap_or(&[]);
        if rest.iter().all(|&b| b == b' ') {
            Verb::Data
        } else {
            Verb::Other
        }
    } else if is(b"BDAT") {
        return parse_bdat(content.get(4..).unwrap_or(&[]));
    } else if is(b"RSET") {
        Verb::Rset
    } else if is(b"NOOP") {
        Verb::Noop
    } else if is(b"QUIT") {
        Verb::Quit
    } else if is(b"STARTTLS") {
        Verb::StartTls
    } else if is(b"AUTH") {
        Verb::Auth
    } else {
        Verb::Other
    };
    Ok(verb)
}

/// Parse what follows the verb of a BDAT line: `SP 1*DIGIT [SP "LAST"]`.
fn parse_bdat(after_verb: &[u8]) -> Result<Verb, CommandError> {
    let err = |reason| Err(CommandError::MalformedBdat { reason });
    let Some(args) = after_verb.strip_prefix(b" ") else {
        return err("missing chunk size");
    };
    let digits_end = args
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(args.len());
    let (digits, rest) = args.split_at(digits_end);
    if digits.is_empty() {
        return err("chunk size is not a decimal number");
    }
    let mut size: u64 = 0;
    for &d in digits {
        size = match size
            .checked_mul(10)
            .and_then(|s| s.checked_add(u64::from(d - b'0')))
        {
            Some(s) => s,
            None => return err("chunk size too large"),
        };
    }
    let last = match rest {
        [] => false,
        [b' ', marker @ ..] if marker.eq_ignore_ascii_case(b"LAST") => true,
        _ => return err("unexpected text after the chunk size"),
    };
    Ok(Verb::Bdat { size, last })
}

/// True when a line starts with `DATA` or `BDAT` (any case) — whether or not [`classify`]
/// accepted it. The relay treats such lines conservatively when they are not well formed: an MX
/// that parses them more leniently would otherwise start reading data we took for commands.
pub(crate) fn looks_like_data_or_bdat(line: &[u8]) -> bool {
    line.get(..4)
        .is_some_and(|v| v.eq_ignore_ascii_case(b"DATA") || v.eq_ignore_ascii_case(b"BDAT"))
}

/// True when a line starts with `MAIL` (any case), well formed or not.
pub(crate) fn looks_like_mail(line: &[u8]) -> bool {
    line.get(..4)
        .is_some_and(|v| v.eq_ignore_ascii_case(b"MAIL"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bdat(size: u64, last: bool) -> Result<Verb, CommandError> {
        Ok(Verb::Bdat { size, last })
    }

    #[test]
    fn verbs_case_insensitive() {
        assert_eq!(classify(b"helo x\r\n"), Ok(Verb::Helo));
        assert_eq!(classify(b"EhLo x\r\n"), Ok(Verb::Ehlo));
        assert_eq!(classify(b"MAIL FROM:<a@b>\r\n"), Ok(Verb::Mail));
        assert_eq!(classify(b"rcpt TO:<a@b>\n"), Ok(Verb::Rcpt));
        assert_eq!(classify(b"RSET\r\n"), Ok(Verb::Rset));
        assert_eq!(classify(b"noop\r\n"), Ok(Verb::Noop));
        assert_eq!(classify(b"QUIT\r\n"), Ok(Verb::Quit));
        assert_eq!(classify(b"StartTLS\r\n"), Ok(Verb::StartTls));
        assert_eq!(classify(b"AUTH PLAIN AGEAYg==\r\n"), Ok(Verb::Auth));
        assert_eq!(classify(b"VRFY x\r\n"), Ok(Verb::Other));
        assert_eq!(classify(b"\r\n"), Ok(Verb::Other));
        assert_eq!(classify(b""), Ok(Verb::Other));
        assert_eq!(classify(b"MAILFROM:<a>\r\n"), Ok(Verb::Other));
    }

    #[test]
    fn data_exact() {
        assert_eq!(classify(b"DATA\r\n"), Ok(Verb::Data));
        assert_eq!(classify(b"data  \r\n"), Ok(Verb::Data));
        assert_eq!(classify(b"DATA\n"), Ok(Verb::Data));
        assert_eq!(classify(b"DATA x\r\n"), Ok(Verb::Other));
        assert_eq!(classify(b"DATA\t\r\n"), Ok(Verb::Other));
        assert_eq!(classify(b"DATAX\r\n"), Ok(Verb::Other));
        assert_eq!(classify(b"DATA\r\r\n"), Ok(Verb::Other));
    }

    #[test]
    fn bdat_strict() {
        assert_eq!(classify(b"BDAT 100\r\n"), bdat(100, false));
        assert_eq!(classify(b"bdat 0 last\r\n"), bdat(0, true));
        assert_eq!(classify(b"BDAT 007 LAST\n"), bdat(7, true));
        assert_eq!(
            classify(b"BDAT 18446744073709551615\r\n"),
            bdat(u64::MAX, false)
        );
        for bad in [
            &b"BDAT\r\n"[..],
            b"BDAT \r\n",
            b"BDAT  10\r\n",
            b"BDAT +10\r\n",
            b"BDAT -1\r\n",
            b"BDAT 10 \r\n",
            b"BDAT 10 LAST \r\n",
            b"BDAT 10 LASTX\r\n",
            b"BDAT 10 FIRST\r\n",
            b"BDAT 1x\r\n",
            b"BDAT 18446744073709551616\r\n",
            b"BDAT 99999999999999999999999\r\n",
        ] {
            assert!(
                matches!(classify(bad), Err(CommandError::MalformedBdat { .. })),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // A tab is not a separator: the verb word is then "BDAT\t10", not BDAT.
        assert_eq!(classify(b"BDAT\t10\r\n"), Ok(Verb::Other));
        assert!(looks_like_data_or_bdat(b"BDAT\t10\r\n"));
        assert!(looks_like_data_or_bdat(b"data x\r\n"));
        assert!(!looks_like_data_or_bdat(b"DAT\r\n"));
        assert!(looks_like_mail(b"mail\tFROM:<>\r\n"));
    }

    #[test]
    fn error_message() {
        let e = classify(b"BDAT x\r\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "malformed BDAT command: chunk size is not a decimal number"
        );
    }

    proptest! {
        #[test]
        fn random_lines_never_panic(line in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = classify(&line);
        }

        #[test]
        fn bdat_roundtrip(size in any::<u64>(), last in any::<bool>()) {
            let line = format!("BDAT {size}{}\r\n", if last { " LAST" } else { "" });
            prop_assert_eq!(classify(line.as_bytes()), bdat(size, last));
        }
    }
}
