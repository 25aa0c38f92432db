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
    kv_with(out, key, |out| out.extend_from_slice(value));
}

/// [`kv`] of a value written with its `Display` (numbers, addresses: no string in between).
fn kv_display(out: &mut Vec<u8>, key: &str, value: impl fmt::Display) {
    kv_with(out, key, |out| {
        let _ = fmt::Write::write_fmt(&mut Bytes(out), format_args!("{value}"));
    });
}

/// One `250-key=value` line, the value appended by `value`.
fn kv_with(out: &mut Vec<u8>, key: &str, value: impl FnOnce(&mut Vec<u8>)) {
    out.extend_from_slice(b"250-");
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    let start = out.len();
    value(out);
    // A CR or LF would end the line: a space instead (copied whole first; the search is
    // vectorised, and the rewrite only happens for such a value).
    let written = out.get_mut(start..).unwrap_or_default();
    if memchr::memchr2(b'\r', b'\n', written).is_some() {
        for b in written {
            if *b == b'\r' || *b == b'\n' {
                *b = b' ';
            }
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// Formatting into a byte buffer.
struct Bytes<'a>(&'a mut Vec<u8>);

impl fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
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
                kv_display(&mut out, "age_ms", age.as_millis());
                kv_display(&mut out, "uses", uses);
                kv_display(&mut out, "messages", messages);
            }
        }
        if let Some(h) = &self.mx_host {
            kv(&mut out, "mx_host", h.as_bytes());
        }
        kv_display(&mut out, "remote", self.remote);
        kv_display(&mut out, "local", self.local);
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
                    kv_with(&mut out, "tls_peer_names", |out| {
                        for (i, n) in t.peer_names.iter().enumerate() {
                            if i > 0 {
                                out.push(b',');
                            }
                            out.extend_from_slice(n.as_bytes());
                        }
                    });
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
mod tests;
