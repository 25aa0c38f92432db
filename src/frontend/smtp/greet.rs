//! The SMTP-aware front's own part of the dialogue, sans I/O: what to answer an MTA before its
//! EHLO (the proxy owns the banner and the greeting), and the EHLO reply it gets, made from
//! the MX's post-TLS capabilities without the ones the proxy keeps for itself.

use greenarrow_proxy_proto::protocol::FailureReply;
use greenarrow_proxy_proto::smtp::{classify, strip_line_end, Reply, Verb};

/// Replies the front makes itself.
pub const BANNER: &[u8] = b"220 greenarrow_proxy ESMTP ready\r\n";
pub const OK: &[u8] = b"250 2.0.0 ok\r\n";
pub const BYE: &[u8] = b"221 2.0.0 greenarrow_proxy closing connection\r\n";
pub const EHLO_FIRST: &[u8] = b"503 5.5.1 send EHLO first\r\n";
pub const BAD_HELLO: &[u8] = b"501 5.5.4 EHLO/HELO needs one domain or address literal\r\n";
pub const LINE_TOO_LONG: &[u8] = b"500 5.5.2 line too long; closing connection\r\n";
pub const TOO_MANY_ERRORS: &[u8] = b"421 4.7.0 too many errors; closing connection\r\n";
pub const STARTTLS_REFUSED: &[u8] =
    b"454 4.7.0 TLS toward the MX is handled by greenarrow_proxy; STARTTLS not offered here\r\n";

/// The EHLO/HELO reply on a connection whose target the proxy refused.
pub const HELLO_REFUSING: &[u8] = b"250 greenarrow_proxy\r\n";

/// What to do with one command line on a connection whose target the proxy refused by policy
/// (`mode: smtp`): the refusal goes to each transaction command as a `451`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusing {
    /// Answer and keep reading; `error` counts towards the error limit.
    Reply { reply: &'static [u8], error: bool },
    /// Answer with the refusal ([`refusal_451`]); then close when `close` (BDAT: its chunk
    /// follows and cannot be read as commands).
    Refuse { close: bool },
    /// Answer and close (QUIT).
    Close(&'static [u8]),
}

/// Decide about one complete line on a refused connection. MAIL, RCPT and DATA get the
/// refusal (an MTA retries the message, not the MX: Exim records a 4xx to MAIL against the
/// message, a failure before it against the MX); EHLO/HELO a bare `250`; the rest as before
/// EHLO.
pub fn refusing(line: &[u8]) -> Refusing {
    match classify(line) {
        Ok(Verb::Mail | Verb::Rcpt | Verb::Data) => Refusing::Refuse { close: false },
        Ok(Verb::Bdat { .. }) => Refusing::Refuse { close: true },
        _ => match before_hello(line) {
            Greet::Hello { .. } => Refusing::Reply {
                reply: HELLO_REFUSING,
                error: false,
            },
            Greet::Reply { reply, error } => Refusing::Reply { reply, error },
            Greet::Close(reply) => Refusing::Close(reply),
        },
    }
}

/// A policy refusal as the reply to a transaction command: `451 4.7.1 greenarrow_proxy: <tag>
/// <text>` (temporary: a configuration mistake must not bounce mail).
pub fn refusal_451(f: &FailureReply) -> Vec<u8> {
    reply_lines("451", "4.7.1", f.failure.code().tag, &f.text, &[])
}

/// What to do with one command line received before the MTA's EHLO/HELO.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Greet {
    /// Answer and keep reading; `error` counts towards the error limit.
    Reply { reply: &'static [u8], error: bool },
    /// Answer and close (QUIT).
    Close(&'static [u8]),
    /// The MTA's greeting: open (or take from the pool) the MX connection for this name.
    Hello { name: String, extended: bool },
}

/// Decide about one complete line (CR LF or LF included) sent before EHLO/HELO.
pub fn before_hello(line: &[u8]) -> Greet {
    let reply = |reply, error| Greet::Reply { reply, error };
    match classify(line) {
        Ok(v @ (Verb::Ehlo | Verb::Helo)) => match hello_name(line) {
            Some(name) => Greet::Hello {
                name,
                extended: v == Verb::Ehlo,
            },
            None => reply(BAD_HELLO, true),
        },
        Ok(Verb::Noop | Verb::Rset) => reply(OK, false),
        Ok(Verb::Quit) => Greet::Close(BYE),
        Ok(Verb::StartTls) => reply(STARTTLS_REFUSED, true),
        _ => reply(EHLO_FIRST, true),
    }
}

/// The one argument of EHLO/HELO: a domain or address literal of printable ASCII.
fn hello_name(line: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(strip_line_end(line)).ok()?;
    let mut words = text.split(' ').filter(|w| !w.is_empty()).skip(1);
    let name = words.next()?;
    let printable = name.bytes().all(|b| b.is_ascii_graphic());
    (printable && name.len() <= 255 && words.next().is_none()).then(|| name.to_string())
}

/// Capabilities the MTA must not see: the proxy does TLS itself, and AUTH toward the MX is
/// not the MTA's to use on a shared connection.
fn hidden(keyword: &[u8]) -> bool {
    let kw = keyword.to_ascii_uppercase();
    kw == b"STARTTLS" || kw == b"AUTH" || kw.starts_with(b"AUTH=")
}

/// The reply to the MTA's EHLO (or HELO, `extended` false): the MX's greeting, its first line
/// kept, capability lines kept in order except STARTTLS and AUTH.
pub fn hello_reply(greeting: &Reply, extended: bool) -> Vec<u8> {
    let code = greeting.code();
    let keep: Vec<&[u8]> = greeting
        .lines()
        .enumerate()
        .filter(|(i, t)| {
            *i == 0 || (extended && !hidden(t.split(|&b| b == b' ').next().unwrap_or_default()))
        })
        .map(|(_, t)| t)
        .collect();
    let mut out = Vec::new();
    for (i, t) in keep.iter().enumerate() {
        let sep = if i + 1 == keep.len() { ' ' } else { '-' };
        out.extend_from_slice(format!("{code}{sep}").as_bytes());
        out.extend_from_slice(t);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A failure as one SMTP reply an unmodified MTA logs and retries on: `421 4.4.0
/// greenarrow_proxy: <tag> <text>`, then the MX's own lines when it said no.
pub fn failure_421(f: &FailureReply) -> Vec<u8> {
    reply_421(f.failure.code().tag, &f.text, &f.mx_lines)
}

/// `421 4.4.0 greenarrow_proxy: <tag> <text>` (control characters blanked, text bounded),
/// then one `421 mx: <line>` per line of `mx_lines`.
pub fn reply_421(tag: &str, text: &str, mx_lines: &[Vec<u8>]) -> Vec<u8> {
    reply_lines("421", "4.4.0", tag, text, mx_lines)
}

/// `<code> <status> greenarrow_proxy: <tag> <text>` (control characters blanked, text
/// bounded), then one `<code> mx: <line>` per line of `mx_lines`.
fn reply_lines(code: &str, status: &str, tag: &str, text: &str, mx_lines: &[Vec<u8>]) -> Vec<u8> {
    let clean = greenarrow_proxy_proto::escape::reply_text;
    let mut lines = vec![format!(
        "{status} greenarrow_proxy: {tag} {}",
        clean(text.as_bytes())
    )];
    lines.extend(mx_lines.iter().map(|l| format!("mx: {}", clean(l))));
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let sep = if i + 1 == lines.len() { ' ' } else { '-' };
        out.extend_from_slice(format!("{code}{sep}{l}\r\n").as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use greenarrow_proxy_proto::protocol::Failure;
    use greenarrow_proxy_proto::smtp::{parse_reply, ReplyLimits};

    fn reply(raw: &[u8]) -> Reply {
        parse_reply(raw, &ReplyLimits::default())
            .unwrap()
            .unwrap()
            .0
    }

    #[test]
    fn greeting_phase_answers() {
        assert_eq!(
            before_hello(b"EHLO mta1.example.com\r\n"),
            Greet::Hello {
                name: "mta1.example.com".into(),
                extended: true
            }
        );
        assert_eq!(
            before_hello(b"helo [192.0.2.1]\n"),
            Greet::Hello {
                name: "[192.0.2.1]".into(),
                extended: false
            }
        );
        assert_eq!(
            before_hello(b"EHLO\r\n"),
            Greet::Reply {
                reply: BAD_HELLO,
                error: true
            }
        );
        assert_eq!(
            before_hello(b"EHLO a b\r\n"),
            Greet::Reply {
                reply: BAD_HELLO,
                error: true
            }
        );
        assert_eq!(before_hello(b"QUIT\r\n"), Greet::Close(BYE));
        assert_eq!(
            before_hello(b"NOOP\r\n"),
            Greet::Reply {
                reply: OK,
                error: false
            }
        );
        assert_eq!(
            before_hello(b"STARTTLS\r\n"),
            Greet::Reply {
                reply: STARTTLS_REFUSED,
                error: true
            }
        );
        assert_eq!(
            before_hello(b"MAIL FROM:<a@b>\r\n"),
            Greet::Reply {
                reply: EHLO_FIRST,
                error: true
            }
        );
    }

    #[test]
    fn ehlo_reply_hides_starttls_and_auth() {
        let g = reply(b"250-mx.example Hello\r\n250-PIPELINING\r\n250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n250-AUTH=LOGIN\r\n250-8BITMIME\r\n250 starttls\r\n");
        assert_eq!(
            hello_reply(&g, true),
            b"250-mx.example Hello\r\n250-PIPELINING\r\n250 8BITMIME\r\n".to_vec()
        );
        assert_eq!(hello_reply(&g, false), b"250 mx.example Hello\r\n".to_vec());
        let single = reply(b"250 mx.example\r\n");
        assert_eq!(hello_reply(&single, true), b"250 mx.example\r\n".to_vec());
    }

    #[test]
    fn a_refused_connection_refuses_each_transaction_with_a_451() {
        let refuse = Refusing::Refuse { close: false };
        assert_eq!(refusing(b"MAIL FROM:<a@b>\r\n"), refuse);
        assert_eq!(refusing(b"RCPT TO:<c@d>\r\n"), refuse);
        assert_eq!(refusing(b"DATA\r\n"), refuse);
        assert_eq!(
            refusing(b"BDAT 10 LAST\r\n"),
            Refusing::Refuse { close: true }
        );
        let hello = Refusing::Reply {
            reply: HELLO_REFUSING,
            error: false,
        };
        assert_eq!(refusing(b"EHLO mta.example\r\n"), hello);
        assert_eq!(refusing(b"HELO mta.example\r\n"), hello);
        assert_eq!(refusing(b"QUIT\r\n"), Refusing::Close(BYE));
        assert_eq!(
            refusing(b"RSET\r\n"),
            Refusing::Reply {
                reply: OK,
                error: false
            }
        );
        assert_eq!(
            refusing(b"STARTTLS\r\n"),
            Refusing::Reply {
                reply: STARTTLS_REFUSED,
                error: true
            }
        );
        let f = FailureReply::new(
            Failure::SourceNotPermitted,
            "source 198.51.100.7 is not permitted\r\nfor client exim",
        );
        assert_eq!(
            refusal_451(&f),
            b"451 4.7.1 greenarrow_proxy: source_not_permitted source 198.51.100.7 is not permitted  for client exim\r\n"
                .to_vec()
        );
    }

    #[test]
    fn failures_are_one_readable_421() {
        let f = FailureReply::new(
            Failure::SourceNotPermitted,
            "source 192.0.2.9 is\r\nnot permitted",
        );
        assert_eq!(
            failure_421(&f),
            b"421 4.4.0 greenarrow_proxy: source_not_permitted source 192.0.2.9 is  not permitted\r\n"
                .to_vec()
        );
        let f = FailureReply::new(Failure::BannerRejected { permanent: true }, "banner")
            .with_mx_lines(vec![b"554 go away".to_vec()]);
        assert_eq!(
            failure_421(&f),
            b"421-4.4.0 greenarrow_proxy: banner_rejected banner\r\n421 mx: 554 go away\r\n"
                .to_vec()
        );
    }
}
