//! Parsing and rendering of the MTA's requests (sans-I/O).
//!
//! A request is one line: a verb, then for `CONNECT` space-separated `key=value` parameters.
//! See `docs/PROTOCOL.md` for the grammar; every rule there is enforced here.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

mod error;
use error::invalid;
pub use error::RequestError;

/// The protocol version this implementation speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest request line accepted, CRLF included.
pub const MAX_REQUEST_LINE: usize = 2048;

/// A request from the MTA in the proxy's command state.
#[derive(Clone, PartialEq, Eq)]
pub enum Request {
    /// `AUTH <version> <secret>`
    Auth { version: u32, secret: Vec<u8> },
    /// `CONNECT key=value ...`
    Connect(ConnectRequest),
    /// `NOOP`
    Noop,
    /// `QUIT`
    Quit,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Auth { version, .. } => {
                write!(f, "Auth {{ version: {version}, secret: <redacted> }}")
            }
            Request::Connect(c) => write!(f, "Connect({c:?})"),
            Request::Noop => write!(f, "Noop"),
            Request::Quit => write!(f, "Quit"),
        }
    }
}

/// Where the MTA wants to go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// `host=` an IP literal.
    Ip(IpAddr),
    /// `host=` a host name (A/AAAA lookup).
    Host(String),
    /// `domain=` a mail domain (MX lookup).
    Domain(String),
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Ip(ip) => write!(f, "{ip}"),
            Destination::Host(h) => write!(f, "{h}"),
            Destination::Domain(d) => write!(f, "domain {d}"),
        }
    }
}

/// TLS policy toward the MX.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsPolicy {
    /// Never STARTTLS.
    None,
    /// STARTTLS when offered; any certificate.
    Opportunistic,
    /// STARTTLS must succeed; any certificate.
    Required,
    /// STARTTLS must succeed and the certificate must verify for the TLS name.
    Verify,
}

impl TlsPolicy {
    /// The word used in the protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsPolicy::None => "none",
            TlsPolicy::Opportunistic => "opportunistic",
            TlsPolicy::Required => "required",
            TlsPolicy::Verify => "verify",
        }
    }

    fn parse(v: &str) -> Option<TlsPolicy> {
        Some(match v {
            "none" => TlsPolicy::None,
            "opportunistic" => TlsPolicy::Opportunistic,
            "required" => TlsPolicy::Required,
            "verify" => TlsPolicy::Verify,
            _ => return None,
        })
    }
}

/// A `CONNECT` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectRequest {
    /// `source=`: the source IP to bind (required).
    pub source: IpAddr,
    /// `host=` or `domain=` (exactly one required).
    pub dest: Destination,
    /// `port=` (default 25).
    pub port: u16,
    /// `ehlo=`: the name to send in EHLO/HELO (required).
    pub ehlo: String,
    /// `tls=` (default `opportunistic`).
    pub tls: TlsPolicy,
    /// `tls_name=`: SNI and verification name (default: the MX host name when known).
    pub tls_name: Option<String>,
    /// `tls_fallback=yes`: after a failed opportunistic handshake, reconnect once in plaintext.
    pub tls_fallback: bool,
    /// `smtps=yes|no`: implicit TLS (default: yes when port is 465).
    pub smtps: bool,
    /// `reuse=yes`: the MTA accepts a reused connection and lets the proxy keep this one.
    pub reuse: bool,
    /// `reuse_max_messages=N`: do not keep the connection once it has carried N messages.
    pub reuse_max_messages: Option<u64>,
    /// `wait=30s`, `wait=500ms`, `wait=30` (seconds): how long to wait at a connection cap (`caps:`) for a
    /// connection; at most `caps.wait`, which is also the default. `wait=0`: do not wait.
    pub wait: Option<Duration>,
    /// `policy_domain=`: the recipient domain whose MTA-STS and TLS-RPT policy applies when
    /// the MTA connects by `host=<name>` (with `domain=`, that domain is the policy domain).
    pub policy_domain: Option<String>,
}

impl ConnectRequest {
    /// A request with the defaults for everything optional.
    pub fn new(source: IpAddr, dest: Destination, ehlo: &str) -> ConnectRequest {
        ConnectRequest {
            source,
            dest,
            port: 25,
            ehlo: ehlo.to_string(),
            tls: TlsPolicy::Opportunistic,
            tls_name: None,
            tls_fallback: false,
            smtps: false,
            reuse: false,
            reuse_max_messages: None,
            wait: None,
            policy_domain: None,
        }
    }

    /// The policy domain (MTA-STS, TLS-RPT): `domain=`, or `policy_domain=` with `host=`.
    pub fn policy_domain(&self) -> Option<&str> {
        match &self.dest {
            Destination::Domain(d) => Some(d),
            _ => self.policy_domain.as_deref(),
        }
    }

    /// The request line, CRLF included (what a client sends).
    pub fn to_line(&self) -> String {
        let dest = match &self.dest {
            Destination::Ip(ip) => format!("host={ip}"),
            Destination::Host(h) => format!("host={h}"),
            Destination::Domain(d) => format!("domain={d}"),
        };
        let mut s = format!(
            "CONNECT source={} {dest} port={} ehlo={} tls={}",
            self.source,
            self.port,
            self.ehlo,
            self.tls.as_str()
        );
        if let Some(n) = &self.tls_name {
            s.push_str(&format!(" tls_name={n}"));
        }
        if self.tls_fallback {
            s.push_str(" tls_fallback=yes");
        }
        if self.smtps != (self.port == 465) {
            s.push_str(if self.smtps {
                " smtps=yes"
            } else {
                " smtps=no"
            });
        }
        if self.reuse {
            s.push_str(" reuse=yes");
        }
        if let Some(n) = self.reuse_max_messages {
            s.push_str(&format!(" reuse_max_messages={n}"));
        }
        if let Some(w) = self.wait {
            if w.subsec_millis() == 0 {
                s.push_str(&format!(" wait={}", w.as_secs()));
            } else {
                s.push_str(&format!(" wait={}ms", w.as_millis()));
            }
        }
        if let Some(d) = &self.policy_domain {
            s.push_str(&format!(" policy_domain={d}"));
        }
        s.push_str("\r\n");
        s
    }
}

/// The longest secret `AUTH` can carry: a request line is at most [`MAX_REQUEST_LINE`] octets
/// with `AUTH 1 ` before the secret and CRLF after it.
pub const MAX_SECRET_LEN: usize = MAX_REQUEST_LINE - b"AUTH 1 \r\n".len();

/// Whether `secret` can be sent in `AUTH`: 1 to [`MAX_SECRET_LEN`] printable ASCII characters
/// other than space (`!` to `~`). The one definition: the request parser accepts exactly these,
/// and the configuration check refuses any other secret (it could never match).
pub fn is_valid_secret(secret: &[u8]) -> bool {
    !secret.is_empty()
        && secret.len() <= MAX_SECRET_LEN
        && secret.iter().all(|b| (b'!'..=b'~').contains(b))
}

/// Strip the line ending; refuse control characters and non-ASCII bytes.
fn line_text(line: &[u8]) -> Result<&str, RequestError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() + 2 > MAX_REQUEST_LINE {
        return Err(RequestError::TooLong);
    }
    if line.iter().any(|&b| !(0x20..0x7f).contains(&b)) {
        return Err(RequestError::NotText);
    }
    std::str::from_utf8(line).map_err(|_| RequestError::NotText)
}

/// A host name: letters, digits, hyphens, dots; labels 1-63; total at most 253; optional final dot.
pub fn is_valid_hostname(name: &str) -> bool {
    let n = name.strip_suffix('.').unwrap_or(name);
    !n.is_empty()
        && n.len() <= 253
        && n.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// An EHLO argument: a host name or an address literal `[1.2.3.4]` / `[IPv6:...]`.
fn is_valid_ehlo(name: &str) -> bool {
    if let Some(lit) = name.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        let ip = lit.strip_prefix("IPv6:").unwrap_or(lit);
        return ip.parse::<IpAddr>().is_ok();
    }
    is_valid_hostname(name)
}

fn yes_no(key: &'static str, v: &str) -> Result<bool, RequestError> {
    match v {
        "yes" => Ok(true),
        "no" => Ok(false),
        _ => Err(RequestError::NotYesNo {
            key,
            value: v.to_string(),
        }),
    }
}

/// Parse one request line (with or without its line ending).
pub fn parse_request(line: &[u8]) -> Result<Request, RequestError> {
    let text = line_text(line)?;
    let (verb, rest) = match text.split_once(' ') {
        Some((v, r)) => (v, r),
        None => (text, ""),
    };
    match verb.to_ascii_uppercase().as_str() {
        "AUTH" => {
            let (version, secret) = rest.split_once(' ').ok_or(RequestError::AuthUsage)?;
            let version: u32 = version
                .parse()
                .map_err(|_| RequestError::AuthVersion(version.to_string()))?;
            if !is_valid_secret(secret.as_bytes()) {
                return Err(RequestError::AuthSecret);
            }
            Ok(Request::Auth {
                version,
                secret: secret.as_bytes().to_vec(),
            })
        }
        "CONNECT" => parse_connect(rest).map(Request::Connect),
        "NOOP" if rest.is_empty() => Ok(Request::Noop),
        "QUIT" if rest.is_empty() => Ok(Request::Quit),
        "NOOP" | "QUIT" => Err(RequestError::NoParameters(verb.to_string())),
        "" => Err(RequestError::Empty),
        _ => Err(RequestError::UnknownVerb(verb.chars().take(32).collect())),
    }
}

fn parse_connect(params: &str) -> Result<ConnectRequest, RequestError> {
    let mut source = None;
    let mut host = None;
    let mut domain = None;
    let mut port = None;
    let mut ehlo = None;
    let mut tls = None;
    let mut tls_name = None;
    let mut tls_fallback = None;
    let mut smtps = None;
    let mut reuse = None;
    let mut reuse_max = None;
    let mut wait = None;
    let mut policy_domain = None;
    for word in params.split(' ').filter(|w| !w.is_empty()) {
        let (key, value) = word
            .split_once('=')
            .ok_or_else(|| RequestError::NotKeyValue(word.to_string()))?;
        let key_lc = key.to_ascii_lowercase();
        let slot_is_set = match key_lc.as_str() {
            "source" => source.replace(value).is_some(),
            "host" => host.replace(value).is_some(),
            "domain" => domain.replace(value).is_some(),
            "port" => port.replace(value).is_some(),
            "ehlo" => ehlo.replace(value).is_some(),
            "tls" => tls.replace(value).is_some(),
            "tls_name" => tls_name.replace(value).is_some(),
            "tls_fallback" => tls_fallback.replace(value).is_some(),
            "smtps" => smtps.replace(value).is_some(),
            "reuse" => reuse.replace(value).is_some(),
            "reuse_max_messages" => reuse_max.replace(value).is_some(),
            "wait" => wait.replace(value).is_some(),
            "policy_domain" => policy_domain.replace(value).is_some(),
            _ => return Err(RequestError::UnknownParameter(key.to_string())),
        };
        if slot_is_set {
            return Err(RequestError::Twice(key_lc));
        }
    }
    let source = source.ok_or(RequestError::Missing("source="))?;
    let source: IpAddr = source
        .parse()
        .map_err(|_| invalid("source", source, "is not an IP address"))?;
    let dest = match (host, domain) {
        (Some(h), None) => match h.parse::<IpAddr>() {
            Ok(ip) => Destination::Ip(ip),
            Err(_) if is_valid_hostname(h) => Destination::Host(h.to_ascii_lowercase()),
            Err(_) => {
                return Err(invalid(
                    "host",
                    h,
                    "is neither an IP address nor a host name",
                ))
            }
        },
        (None, Some(d)) if is_valid_hostname(d) => Destination::Domain(d.to_ascii_lowercase()),
        (None, Some(d)) => return Err(invalid("domain", d, "is not a valid domain")),
        (Some(_), Some(_)) => return Err(RequestError::HostAndDomain),
        (None, None) => return Err(RequestError::Missing("host= or domain=")),
    };
    let port: u16 = match port {
        None => 25,
        Some(p) => match p.parse() {
            Ok(n) if n > 0 => n,
            _ => return Err(invalid("port", p, "is not a port number")),
        },
    };
    let ehlo = ehlo.ok_or(RequestError::Missing("ehlo="))?;
    if !is_valid_ehlo(ehlo) {
        return Err(invalid(
            "ehlo",
            ehlo,
            "is not a host name or address literal",
        ));
    }
    let tls = match tls {
        None => TlsPolicy::Opportunistic,
        Some(v) => TlsPolicy::parse(v).ok_or_else(|| RequestError::TlsPolicy(v.to_string()))?,
    };
    if let Some(n) = tls_name {
        if !is_valid_hostname(n) {
            return Err(invalid("tls_name", n, "is not a host name"));
        }
    }
    let reuse_max_messages = match reuse_max {
        None => None,
        Some(v) => match v.parse::<u64>() {
            Ok(n) if n > 0 => Some(n),
            _ => return Err(invalid("reuse_max_messages", v, "is not a positive number")),
        },
    };
    let wait = wait.map(parse_wait).transpose()?;
    if let Some(d) = policy_domain {
        if !matches!(dest, Destination::Host(_)) {
            return Err(invalid(
                "policy_domain",
                d,
                "is only for host=<name> (domain= is itself the policy domain)",
            ));
        }
        if !is_valid_hostname(d) {
            return Err(invalid("policy_domain", d, "is not a domain"));
        }
    }
    Ok(ConnectRequest {
        source,
        dest,
        port,
        ehlo: ehlo.to_string(),
        tls,
        tls_name: tls_name.map(|n| n.trim_end_matches('.').to_ascii_lowercase()),
        tls_fallback: tls_fallback
            .map(|v| yes_no("tls_fallback", v))
            .transpose()?
            .unwrap_or(false),
        smtps: smtps
            .map(|v| yes_no("smtps", v))
            .transpose()?
            .unwrap_or(port == 465),
        reuse: reuse
            .map(|v| yes_no("reuse", v))
            .transpose()?
            .unwrap_or(false),
        reuse_max_messages,
        wait,
        policy_domain: policy_domain.map(|d| d.trim_end_matches('.').to_ascii_lowercase()),
    })
}

/// Longest `wait=` accepted.
const MAX_WAIT: Duration = Duration::from_secs(3600);

/// `wait=`: a duration as the configuration writes it (`30s`, `500ms`, `2m`, or `30` for
/// seconds; [`crate::duration`]), zero accepted, at most an hour.
fn parse_wait(v: &str) -> Result<Duration, RequestError> {
    let bounds = crate::duration::Bounds {
        zero_ok: true,
        bare_seconds: true,
        max: MAX_WAIT,
    };
    crate::duration::parse(v, bounds).map_err(|error| RequestError::Wait {
        value: v.to_string(),
        error,
    })
}

#[cfg(test)]
mod tests;
