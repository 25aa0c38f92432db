//! The service extensions an MX advertises in its EHLO reply (RFC 5321 §4.1.1.1).
//!
//! The first line of a 250 EHLO reply is the greeting (the MX's name); every later line is one
//! extension keyword with optional parameters. [`Capabilities::from_ehlo_reply`] keeps every
//! keyword line verbatim (for relaying or logging) and decodes the few the proxy acts on.
//! Keywords are matched case-insensitively. The number of lines is bounded by the
//! [`ReplyLimits`](super::ReplyLimits) the reply was parsed with.

use super::reply::Reply;

/// Extensions advertised by an MX.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// `STARTTLS` (RFC 3207).
    pub starttls: bool,
    /// `PIPELINING` (RFC 2920).
    pub pipelining: bool,
    /// `CHUNKING` (RFC 3030, the BDAT command).
    pub chunking: bool,
    /// `SIZE [n]` (RFC 1870): `Some(n)`; `Some(0)` when advertised without a (valid) number,
    /// which means "no fixed limit". `None` when not advertised.
    pub size: Option<u64>,
    /// `SMTPUTF8` (RFC 6531).
    pub smtputf8: bool,
    /// `8BITMIME` (RFC 6152).
    pub eightbitmime: bool,
    /// SASL mechanisms from `AUTH mech ...` (and the old `AUTH=mech ...` form), upper-cased,
    /// without duplicates, in the order first seen.
    pub auth: Vec<String>,
    /// Every line after the greeting line, verbatim text (lossy UTF-8, line ending removed).
    pub keywords: Vec<String>,
}

impl Capabilities {
    /// Decode the extensions from an EHLO reply. A reply that is not 2xx advertises nothing and
    /// yields the default (empty) capabilities.
    pub fn from_ehlo_reply(reply: &Reply) -> Capabilities {
        let mut caps = Capabilities::default();
        if !(200..300).contains(&reply.code()) {
            return caps;
        }
        for line in reply.lines().skip(1) {
            let text = String::from_utf8_lossy(line).into_owned();
            caps.note(&text);
            caps.keywords.push(text);
        }
        caps
    }

    fn note(&mut self, line: &str) {
        let mut words = line.split_ascii_whitespace();
        let Some(keyword) = words.next() else {
            return;
        };
        let keyword = keyword.to_ascii_uppercase();
        let mechanisms = if let Some(first) = keyword.strip_prefix("AUTH=") {
            Some(std::iter::once(first.to_string()).chain(words.map(str::to_string)))
        } else {
            match keyword.as_str() {
                "STARTTLS" => self.starttls = true,
                "PIPELINING" => self.pipelining = true,
                "CHUNKING" => self.chunking = true,
                "SMTPUTF8" => self.smtputf8 = true,
                "8BITMIME" => self.eightbitmime = true,
                "SIZE" => {
                    let limit = words.next().and_then(|n| n.parse::<u64>().ok());
                    self.size = Some(limit.unwrap_or(0));
                }
                "AUTH" => {
                    for mech in words {
                        self.add_auth(mech);
                    }
                }
                _ => {}
            }
            None
        };
        for mech in mechanisms.into_iter().flatten() {
            self.add_auth(&mech);
        }
    }

    fn add_auth(&mut self, mech: &str) {
        let mech = mech.to_ascii_uppercase();
        if !mech.is_empty() && !self.auth.contains(&mech) {
            self.auth.push(mech);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::reply::{parse_reply, ReplyLimits};

    fn caps(raw: &[u8]) -> Capabilities {
        let (reply, _) = parse_reply(raw, &ReplyLimits::default()).unwrap().unwrap();
        Capabilities::from_ehlo_reply(&reply)
    }

    #[test]
    fn typical_reply() {
        let c = caps(
            b"250-mx.example.net Hello\r\n250-PIPELINING\r\n250-SIZE 52428800\r\n\
              250-8BITMIME\r\n250-STARTTLS\r\n250-AUTH PLAIN login\r\n250-AUTH=LOGIN XOAUTH2\r\n\
              250-CHUNKING\r\n250 SMTPUTF8\r\n",
        );
        assert!(c.pipelining && c.starttls && c.chunking && c.smtputf8 && c.eightbitmime);
        assert_eq!(c.size, Some(52_428_800));
        assert_eq!(c.auth, vec!["PLAIN", "LOGIN", "XOAUTH2"]);
        assert_eq!(
            c.keywords,
            vec![
                "PIPELINING",
                "SIZE 52428800",
                "8BITMIME",
                "STARTTLS",
                "AUTH PLAIN login",
                "AUTH=LOGIN XOAUTH2",
                "CHUNKING",
                "SMTPUTF8"
            ]
        );
    }

    #[test]
    fn greeting_only_and_case() {
        assert_eq!(caps(b"250 mx.example\r\n"), Capabilities::default());
        let c = caps(b"250-mx\r\n250-starttls\r\n250 size\r\n");
        assert!(c.starttls);
        assert_eq!(c.size, Some(0));
        // The greeting line is not a keyword even if it looks like one.
        let c = caps(b"250-STARTTLS\r\n250 PIPELINING\r\n");
        assert!(!c.starttls && c.pipelining);
    }

    #[test]
    fn bad_size_and_non_2xx() {
        assert_eq!(caps(b"250-mx\r\n250 SIZE lots\r\n").size, Some(0));
        assert_eq!(caps(b"502-mx\r\n502 STARTTLS\r\n"), Capabilities::default());
    }
}
