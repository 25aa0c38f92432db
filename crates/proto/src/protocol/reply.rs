//! The proxy's replies: failure codes and the `250` connection-ready reply (sans-I/O).
//!
//! Replies are SMTP-shaped (`ddd-text` continuation lines, `ddd text` last line) so an MTA can
//! reuse its SMTP reply parser. Every failure has its own code and a machine-readable tag; the
//! first digit says transient (4) or permanent (5) the way an MTA needs it.

use crate::escape::reply_text;
use crate::tls_facts::TlsFacts;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// Split a raw reply into its lines, without line endings (for `banner=`, `ehlo=`, `mx=`).
pub fn reply_lines(raw: &[u8]) -> Vec<Vec<u8>> {
    raw.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
        .collect()
}

/// A failure's reply code (first digit 4: transient, 5: permanent), enhanced status code
/// (RFC 3463) and machine-readable tag, as the reply line carries them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Code {
    pub reply: u16,
    pub enhanced: &'static str,
    pub tag: &'static str,
}

/// Every way a request can fail, with its reply code, enhanced status code and tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// 421: the proxy has no free worker or is shutting down.
    Busy,
    /// 500: a request that does not follow the protocol.
    ProtocolError,
    /// 530: CONNECT before AUTH.
    AuthRequired,
    /// 535: wrong secret or unsupported version (the connection is then closed).
    AuthFailed,
    /// 454: no successful `AUTH` within `timeouts.mta_auth` of the accept (the connection is
    /// then closed).
    AuthTimeout,
    /// 550: the source IP is not in `source_addresses`.
    SourceNotPermitted,
    /// 551: the destination port or address is not permitted.
    DestinationNotPermitted,
    /// 451: the source IP is permitted but not present on this host (bind failed, or the
    /// address has left the host: `localaddr`).
    SourceNotLocal,
    /// 441: the MX refused the TCP connection.
    ConnectRefused,
    /// 442: the TCP connection timed out.
    ConnectTimeout,
    /// 443: another network error (unreachable).
    NetworkError,
    /// 444: the MX closed, timed out or broke the protocol during set-up.
    MxSetupFailed,
    /// 445 / 545: the MX rejected the connection in its banner (4xx / 5xx banner).
    BannerRejected { permanent: bool },
    /// 446 / 546: the MX rejected both EHLO and HELO.
    EhloRejected { permanent: bool },
    /// 447: TLS is required but the MX does not offer STARTTLS (or refused it).
    TlsNotOffered,
    /// 448: the TLS handshake with the MX failed or timed out.
    TlsFailed,
    /// 449: the MX certificate did not verify (`tls=verify`).
    TlsVerifyFailed,
    /// 450: DNS temporary failure (SERVFAIL, timeout).
    DnsTemporary,
    /// 552: the domain or host does not exist (NXDOMAIN).
    DnsNxDomain,
    /// 553: no address of the source IP's family.
    DnsNoAddress,
    /// 556: the domain publishes a null MX (RFC 7505): it accepts no mail.
    DnsNullMx,
    /// 452: a connection cap (`caps:`) for the source and destination is reached and no
    /// connection came free within the wait; nothing was sent to the MX.
    ConcurrencyLimit,
    /// 453: the operator drained the source address or the MX (`gaproxy drain`); new
    /// connections for it are refused until `gaproxy undrain`.
    Drained,
    /// 455: the MX publishes DNSSEC-signed TLSA records (DANE), so TLS is mandatory: the MX
    /// did not offer STARTTLS, the handshake failed, or the request was `tls=none`.
    DaneRequired,
    /// 456: no TLSA record of the MX matched its certificate (DANE); nothing was sent.
    DaneMismatch,
    /// 457: the TLSA look-up of the MX failed or was not DNSSEC-valid (bogus).
    TlsaLookupFailed,
    /// 458: the MX is not listed by the domain's MTA-STS `enforce` policy.
    StsMxMismatch,
    /// 459: the domain's MTA-STS `enforce` policy requires TLS verified by WebPKI for the MX
    /// name, and the MX did not offer it (or the request was `tls=none`).
    StsRequired,
}

impl Failure {
    /// Reply code, enhanced status code and tag.
    pub fn code(self) -> Code {
        use Failure::*;
        let (reply, enhanced, tag) = match self {
            Busy => (421, "4.3.2", "busy"),
            ProtocolError => (500, "5.5.2", "protocol_error"),
            AuthRequired => (530, "5.7.0", "auth_required"),
            AuthFailed => (535, "5.7.8", "auth_failed"),
            AuthTimeout => (454, "4.7.0", "auth_timeout"),
            SourceNotPermitted => (550, "5.7.1", "source_not_permitted"),
            DestinationNotPermitted => (551, "5.7.1", "destination_not_permitted"),
            SourceNotLocal => (451, "4.3.0", "source_not_local"),
            ConnectRefused => (441, "4.4.1", "connect_refused"),
            ConnectTimeout => (442, "4.4.1", "connect_timeout"),
            NetworkError => (443, "4.4.0", "network_error"),
            MxSetupFailed => (444, "4.4.2", "mx_setup_failed"),
            BannerRejected { permanent: false } => (445, "4.0.0", "banner_rejected"),
            BannerRejected { permanent: true } => (545, "5.0.0", "banner_rejected"),
            EhloRejected { permanent: false } => (446, "4.0.0", "ehlo_rejected"),
            EhloRejected { permanent: true } => (546, "5.0.0", "ehlo_rejected"),
            TlsNotOffered => (447, "4.7.4", "tls_not_offered"),
            TlsFailed => (448, "4.7.5", "tls_failed"),
            TlsVerifyFailed => (449, "4.7.5", "tls_verify_failed"),
            DnsTemporary => (450, "4.4.3", "dns_temporary"),
            DnsNxDomain => (552, "5.1.2", "dns_nxdomain"),
            DnsNoAddress => (553, "5.4.4", "dns_no_address"),
            DnsNullMx => (556, "5.1.10", "dns_null_mx"),
            ConcurrencyLimit => (452, "4.4.5", "concurrency_limit"),
            Drained => (453, "4.3.2", "drained"),
            DaneRequired => (455, "4.7.5", "dane_required"),
            DaneMismatch => (456, "4.7.5", "dane_mismatch"),
            TlsaLookupFailed => (457, "4.7.5", "tlsa_lookup_failed"),
            StsMxMismatch => (458, "4.7.5", "sts_mx_mismatch"),
            StsRequired => (459, "4.7.5", "sts_required"),
        };
        Code {
            reply,
            enhanced,
            tag,
        }
    }

    /// The failure for a tag and code, as a client parses it.
    pub fn from_tag(tag: &str, code: u16) -> Option<Failure> {
        let permanent = code >= 500;
        ALL_FAILURES
            .iter()
            .copied()
            .find(|f| f.code().tag == tag && (f.code().reply >= 500) == permanent)
    }

    /// Whether an MTA should retry later (4xx) rather than give up (5xx).
    pub fn is_transient(self) -> bool {
        self.code().reply < 500
    }
}

/// Every failure, each code once.
pub const ALL_FAILURES: &[Failure] = &[
    Failure::Busy,
    Failure::ProtocolError,
    Failure::AuthRequired,
    Failure::AuthFailed,
    Failure::AuthTimeout,
    Failure::SourceNotPermitted,
    Failure::DestinationNotPermitted,
    Failure::SourceNotLocal,
    Failure::ConnectRefused,
    Failure::ConnectTimeout,
    Failure::NetworkError,
    Failure::MxSetupFailed,
    Failure::BannerRejected { permanent: false },
    Failure::BannerRejected { permanent: true },
    Failure::EhloRejected { permanent: false },
    Failure::EhloRejected { permanent: true },
    Failure::TlsNotOffered,
    Failure::TlsFailed,
    Failure::TlsVerifyFailed,
    Failure::DnsTemporary,
    Failure::DnsNxDomain,
    Failure::DnsNoAddress,
    Failure::DnsNullMx,
    Failure::ConcurrencyLimit,
    Failure::Drained,
    Failure::DaneRequired,
    Failure::DaneMismatch,
    Failure::TlsaLookupFailed,
    Failure::StsMxMismatch,
    Failure::StsRequired,
];

/// A failure reply: the failure, a human text, and the MX's raw reply lines when the MX said no.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailureReply {
    pub failure: Failure,
    pub text: String,
    /// The MX's reply, one entry per line, without line endings.
    pub mx_lines: Vec<Vec<u8>>,
}

impl FailureReply {
    pub fn new(failure: Failure, text: impl Into<String>) -> FailureReply {
        FailureReply {
            failure,
            text: text.into(),
            mx_lines: Vec::new(),
        }
    }

    /// Attach the MX's reply lines (without line endings).
    pub fn with_mx_lines(mut self, lines: Vec<Vec<u8>>) -> FailureReply {
        self.mx_lines = lines;
        self
    }

    /// The reply bytes: `ddd e.n.n tag text`, then one `ddd-mx=<line>` per MX line.
    pub fn render(&self) -> Vec<u8> {
        let Code {
            reply: code,
            enhanced: enh,
            tag,
        } = self.failure.code();
        let mut out = Vec::new();
        let sep = if self.mx_lines.is_empty() { ' ' } else { '-' };
        out.extend_from_slice(
            format!(
                "{code}{sep}{enh} {tag} {}\r\n",
                reply_text(self.text.as_bytes())
            )
            .as_bytes(),
        );
        for (i, line) in self.mx_lines.iter().enumerate() {
            let sep = if i + 1 == self.mx_lines.len() {
                ' '
            } else {
                '-'
            };
            out.extend_from_slice(format!("{code}{sep}mx=").as_bytes());
            out.extend(
                line.iter()
                    .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
            );
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    /// Parse a failure reply's lines (text after `ddd-`/`ddd `) as a client.
    pub fn parse(code: u16, lines: &[&[u8]]) -> Option<FailureReply> {
        let first = String::from_utf8_lossy(lines.first()?);
        let mut words = first.splitn(3, ' ');
        let _enh = words.next()?;
        let tag = words.next()?;
        let text = words.next().unwrap_or("").to_string();
        let failure = Failure::from_tag(tag, code)?;
        let mx_lines = lines[1..]
            .iter()
            .filter_map(|l| l.strip_prefix(b"mx=").map(<[u8]>::to_vec))
            .collect();
        Some(FailureReply {
            failure,
            text,
            mx_lines,
        })
    }
}

impl fmt::Display for FailureReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Code {
            reply: code, tag, ..
        } = self.failure.code();
        write!(f, "{code} {tag}: {}", self.text)?;
        for l in &self.mx_lines {
            write!(f, " [MX: {}]", String::from_utf8_lossy(l))?;
        }
        Ok(())
    }
}

/// Whether the MX connection handed to the MTA is fresh or came from the pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    New,
    Reused {
        age: Duration,
        uses: u64,
        messages: u64,
    },
}

/// The `250` reply to a successful CONNECT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectReady {
    pub origin: Origin,
    /// The MX host name, when the destination was a name or a domain.
    pub mx_host: Option<String>,
    pub remote: SocketAddr,
    pub local: SocketAddr,
    /// TLS facts when the connection to the MX is encrypted.
    pub tls: Option<TlsFacts>,
    /// Why the connection is not encrypted, or that it fell back to plaintext.
    pub tls_note: Option<String>,
    /// The TLS policy the connection was set up under (`tls_policy=`: DANE, MTA-STS, or what
    /// the request asked).
    pub tls_policy: Option<super::reuse::Applied>,
    /// The MX's banner reply, raw lines without line endings.
    pub banner: Vec<Vec<u8>>,
    /// The MX's (post-TLS) EHLO or HELO reply, raw lines without line endings.
    pub ehlo: Vec<Vec<u8>>,
}

fn kv(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    out.extend_from_slice(b"250-");
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend(
        value
            .iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

impl ConnectReady {
    /// Render the multi-line `250` reply; the last line is `250 ready`.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        match &self.origin {
            Origin::New => kv(&mut out, "connection", b"new"),
            Origin::Reused {
                age,
                uses,
                messages,
            } => {
                kv(&mut out, "connection", b"reused");
                kv(&mut out, "age_ms", age.as_millis().to_string().as_bytes());
                kv(&mut out, "uses", uses.to_string().as_bytes());
                kv(&mut out, "messages", messages.to_string().as_bytes());
            }
        }
        if let Some(h) = &self.mx_host {
            kv(&mut out, "mx_host", h.as_bytes());
        }
        kv(&mut out, "remote", self.remote.to_string().as_bytes());
        kv(&mut out, "local", self.local.to_string().as_bytes());
        match &self.tls {
            None => kv(&mut out, "tls", b"none"),
            Some(t) => {
                kv(&mut out, "tls", t.version.as_bytes());
                kv(&mut out, "tls_cipher", t.cipher.as_bytes());
                kv(
                    &mut out,
                    "tls_verified",
                    if t.verified { b"yes" } else { b"no" },
                );
                if !t.verify_error.is_empty() {
                    kv(
                        &mut out,
                        "tls_verify_error",
                        reply_text(t.verify_error.as_bytes()).as_bytes(),
                    );
                }
                if !t.peer_names.is_empty() {
                    kv(
                        &mut out,
                        "tls_peer_names",
                        t.peer_names.join(",").as_bytes(),
                    );
                }
            }
        }
        if let Some(p) = self.tls_policy {
            kv(&mut out, "tls_policy", p.as_str().as_bytes());
        }
        if let Some(n) = &self.tls_note {
            kv(&mut out, "tls_note", reply_text(n.as_bytes()).as_bytes());
        }
        for l in &self.banner {
            kv(&mut out, "banner", l);
        }
        for l in &self.ehlo {
            kv(&mut out, "ehlo", l);
        }
        out.extend_from_slice(b"250 ready\r\n");
        out
    }

    /// Parse the lines of a `250` reply (text after `250-`/`250 `) as a client. Unknown keys
    /// are ignored so that newer proxies can add facts.
    pub fn parse(lines: &[&[u8]]) -> Result<ConnectReady, String> {
        let mut origin = Origin::New;
        let (mut age, mut uses, mut messages) = (Duration::ZERO, 0, 0);
        let mut reused = false;
        let mut r = ConnectReady {
            origin: Origin::New,
            mx_host: None,
            remote: SocketAddr::from(([0, 0, 0, 0], 0)),
            local: SocketAddr::from(([0, 0, 0, 0], 0)),
            tls: None,
            tls_note: None,
            tls_policy: None,
            banner: Vec::new(),
            ehlo: Vec::new(),
        };
        let mut tls = TlsFacts::default();
        let (mut have_remote, mut have_local) = (false, false);
        for line in lines {
            let Some(eq) = line.iter().position(|&b| b == b'=') else {
                continue;
            };
            let key = &line[..eq];
            let raw = &line[eq + 1..];
            let val = String::from_utf8_lossy(raw).to_string();
            let num = |v: &str| v.parse::<u64>().map_err(|_| format!("bad number {v:?}"));
            match key {
                b"connection" => reused = val == "reused",
                b"age_ms" => age = Duration::from_millis(num(&val)?),
                b"uses" => uses = num(&val)?,
                b"messages" => messages = num(&val)?,
                b"mx_host" => r.mx_host = Some(val),
                b"remote" => {
                    r.remote = val.parse().map_err(|_| format!("bad remote {val:?}"))?;
                    have_remote = true;
                }
                b"local" => {
                    r.local = val.parse().map_err(|_| format!("bad local {val:?}"))?;
                    have_local = true;
                }
                b"tls" if val != "none" => tls.version = val,
                b"tls_cipher" => tls.cipher = val,
                b"tls_verified" => tls.verified = val == "yes",
                b"tls_verify_error" => tls.verify_error = val,
                b"tls_peer_names" => tls.peer_names = val.split(',').map(str::to_string).collect(),
                b"tls_note" => r.tls_note = Some(val),
                b"tls_policy" => r.tls_policy = super::reuse::Applied::from_word(&val),
                b"banner" => r.banner.push(raw.to_vec()),
                b"ehlo" => r.ehlo.push(raw.to_vec()),
                _ => {}
            }
        }
        if reused {
            origin = Origin::Reused {
                age,
                uses,
                messages,
            };
        }
        if !have_remote || !have_local {
            return Err("ready reply lacks remote= or local=".into());
        }
        r.origin = origin;
        if !tls.version.is_empty() {
            r.tls = Some(tls);
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(raw: &[u8]) -> (u16, Vec<Vec<u8>>) {
        let text = std::str::from_utf8(raw).unwrap();
        let code = text[..3].parse().unwrap();
        let ls = text
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .map(|l| l.as_bytes()[4..].to_vec())
            .collect();
        (code, ls)
    }

    #[test]
    fn codes_are_distinct() {
        let all: Vec<Failure> = ALL_FAILURES.to_vec();
        let mut codes: Vec<u16> = all.iter().map(|f| f.code().reply).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
        for f in all {
            let Code {
                reply: code, tag, ..
            } = f.code();
            assert_eq!(Failure::from_tag(tag, code), Some(f));
            assert_eq!(f.is_transient(), code < 500);
        }
    }

    #[test]
    fn failure_round_trip_with_mx_lines() {
        let f = FailureReply::new(
            Failure::BannerRejected { permanent: true },
            "MX rejected us\r\nx",
        )
        .with_mx_lines(vec![b"554-5.7.1 go".to_vec(), b"554 5.7.1 away".to_vec()]);
        let raw = f.render();
        assert!(raw.starts_with(b"545-5.0.0 banner_rejected MX rejected us  x\r\n545-mx=554-5.7.1 go\r\n545 mx=554 5.7.1 away\r\n"));
        let (code, ls) = lines(&raw);
        let refs: Vec<&[u8]> = ls.iter().map(|l| l.as_slice()).collect();
        let p = FailureReply::parse(code, &refs).unwrap();
        assert_eq!(p.failure, f.failure);
        assert_eq!(p.mx_lines, f.mx_lines);
    }

    #[test]
    fn ready_round_trip() {
        let r = ConnectReady {
            origin: Origin::Reused {
                age: Duration::from_millis(1500),
                uses: 2,
                messages: 7,
            },
            mx_host: Some("mx.example.com".into()),
            remote: "[::1]:25".parse().unwrap(),
            local: "[::1]:40000".parse().unwrap(),
            tls: Some(TlsFacts {
                version: "TLSv1.3".into(),
                cipher: "TLS13_AES_256_GCM_SHA384".into(),
                verified: false,
                verify_error: "invalid peer certificate: UnknownIssuer".into(),
                peer_names: vec!["mx.test".into(), "mx2.test".into()],
            }),
            tls_note: None,
            tls_policy: None,
            banner: vec![b"220 mx.test ESMTP".to_vec()],
            ehlo: vec![b"250-mx.test".to_vec(), b"250 PIPELINING".to_vec()],
        };
        let raw = r.render();
        assert!(raw.ends_with(b"250 ready\r\n"));
        let (code, ls) = lines(&raw);
        assert_eq!(code, 250);
        let refs: Vec<&[u8]> = ls.iter().map(|l| l.as_slice()).collect();
        assert_eq!(ConnectReady::parse(&refs).unwrap(), r);
    }
}
