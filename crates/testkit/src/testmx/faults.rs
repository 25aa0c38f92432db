//! Misbehaviours the test MX can be told to show, to exercise the proxy's error paths.

use std::time::Duration;

/// Faults to inject. Everything is off by default.
///
/// Verbs (`reply_421_at`, `silent_at`) are SMTP command verbs compared case-insensitively
/// (`"MAIL"`, `"RCPT"`, `"DATA"`, `"BDAT"`, `"EHLO"`, `"STARTTLS"`, ...) plus the pseudo-verb
/// `"DATA-END"`: the reply after the end of a message (after `.` or `BDAT ... LAST`). For
/// `"DATA"` the fault hits the 354 step.
///
/// Reply strings are sent as given, with `\r\n` appended when they do not already end with
/// it, so a multi-line reply can be written as `"550-a\r\n550 b"`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Sent as the banner instead of the 220 greeting (e.g. `"554 5.7.1 go away"`). Unless it
    /// is a 2xx reply, every command but QUIT then gets 503; QUIT gets 221 and the close.
    pub banner: Option<String>,
    /// The reply to EHLO instead of the capability list (e.g. `"502 5.5.1 no EHLO"`).
    pub ehlo_reply: Option<String>,
    /// The reply to HELO instead of the 250 greeting.
    pub helo_reply: Option<String>,
    /// At this verb, reply `421` and close the connection.
    pub reply_421_at: Option<String>,
    /// At this verb, never answer: swallow everything until the peer closes.
    pub silent_at: Option<String>,
    /// Close the socket once this many body bytes of a message have arrived (no reply).
    pub close_mid_data_after: Option<usize>,
    /// Delay every reply (the banner included) by this much.
    pub slow_replies: Option<Duration>,
    /// Delay only the reply after the end of a message by this much.
    pub data_end_delay: Option<Duration>,
    /// The reply after the end of a message instead of `250 2.0.0 queued as N`. The message
    /// counts as accepted (recorded) only when this is a 2xx reply.
    pub data_end_reply: Option<String>,
    /// Answer STARTTLS with `"220 ready\r\n250 injected\r\n"` in one write (the
    /// CVE-2011-0411 response-injection shape), then attempt the handshake.
    pub inject_after_starttls: bool,
    /// Answer 220 to STARTTLS, then never do the handshake (swallow input until EOF).
    pub stall_tls_handshake: bool,
    /// When nothing arrives for this long, send `421 4.4.2 ... idle timeout` and close.
    pub idle_close_after: Option<Duration>,
    /// After the reply to this verb (or `"DATA-END"`), send an extra, unsolicited
    /// `250 2.0.0 stray reply (test fault)` in a write of its own: a reply nobody asked for.
    pub stray_reply_after: Option<String>,
    /// Hold every reply while a mail transaction is open (after a MAIL that got 250, or
    /// inside a BDAT chunk) and write them in one write once it ends (the reply after the end
    /// of the message, RSET, QUIT): an MX that answers a pipelined `MAIL`, `RCPT`, `BDAT n
    /// LAST` flight only once all of it arrived. A client (or proxy) that waits for the MAIL
    /// reply before sending the rest of the flight waits until its timeout.
    pub hold_replies_in_transaction: bool,
}

impl Faults {
    /// Whether `fault` names `verb` (case-insensitive).
    pub(crate) fn hits(fault: &Option<String>, verb: &str) -> bool {
        fault
            .as_deref()
            .is_some_and(|f| f.trim().eq_ignore_ascii_case(verb))
    }
}

/// A configured reply, terminated by exactly one trailing CRLF.
pub(crate) fn reply_text(text: &str) -> String {
    let mut s = text.trim_end_matches(['\r', '\n']).to_string();
    s.push_str("\r\n");
    s
}

/// Whether a reply (possibly multi-line) is a positive completion (2xx).
pub(crate) fn is_positive(text: &str) -> bool {
    text.as_bytes().first() == Some(&b'2')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_match_case_insensitively() {
        let f = Some("rcpt".to_string());
        assert!(Faults::hits(&f, "RCPT"));
        assert!(!Faults::hits(&f, "MAIL"));
        assert!(!Faults::hits(&None, "RCPT"));
    }

    #[test]
    fn replies_get_one_crlf() {
        assert_eq!(reply_text("451 later"), "451 later\r\n");
        assert_eq!(reply_text("451 later\r\n"), "451 later\r\n");
        assert_eq!(reply_text("550-a\r\n550 b"), "550-a\r\n550 b\r\n");
        assert!(is_positive("250 ok"));
        assert!(!is_positive("451 no"));
        assert!(!is_positive(""));
    }
}
