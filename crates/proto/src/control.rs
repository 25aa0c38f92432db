//! The control socket's requests (sans-I/O; the daemon's `control::request`): one line of
//! words, case-insensitive verbs, and the MX targets of drains ([`MxTarget`]).
//!
//! ```text
//! status
//! drain source IP          drain mx IP|IP:PORT
//! undrain source IP        undrain mx IP|IP:PORT        undrain all
//! ```

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// An MX to drain: one address and port, or every port of an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MxTarget {
    Ip(IpAddr),
    Addr(SocketAddr),
}

impl MxTarget {
    /// Whether `addr` is this MX.
    pub fn matches(&self, addr: SocketAddr) -> bool {
        match self {
            MxTarget::Ip(ip) => *ip == addr.ip().to_canonical(),
            MxTarget::Addr(a) => *a == SocketAddr::new(addr.ip().to_canonical(), addr.port()),
        }
    }
}

impl FromStr for MxTarget {
    type Err = String;

    /// `IP` (every port) or `IP:PORT` / `[IPv6]:PORT`.
    fn from_str(s: &str) -> Result<MxTarget, String> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(MxTarget::Ip(ip.to_canonical()));
        }
        match s.parse::<SocketAddr>() {
            Ok(a) => Ok(MxTarget::Addr(SocketAddr::new(
                a.ip().to_canonical(),
                a.port(),
            ))),
            Err(_) => Err(format!(
                "{s:?} is not an MX address (IP, IP:PORT or [IPv6]:PORT)"
            )),
        }
    }
}

impl fmt::Display for MxTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MxTarget::Ip(ip) => write!(f, "{ip}"),
            MxTarget::Addr(a) => write!(f, "{a}"),
        }
    }
}

/// Longest request line, line ending included.
pub const MAX_REQUEST: usize = 512;

/// What a drain or undrain names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainTarget {
    Source(IpAddr),
    Mx(MxTarget),
}

impl fmt::Display for DrainTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DrainTarget::Source(ip) => write!(f, "source {ip}"),
            DrainTarget::Mx(m) => write!(f, "mx {m}"),
        }
    }
}

/// One request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    Status,
    Drain(DrainTarget),
    Undrain(DrainTarget),
    UndrainAll,
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Status => f.write_str("status"),
            Request::Drain(t) => write!(f, "drain {t}"),
            Request::Undrain(t) => write!(f, "undrain {t}"),
            Request::UndrainAll => f.write_str("undrain all"),
        }
    }
}

/// Why a request line was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestError {
    TooLong,
    NotUtf8,
    Empty,
    UnknownVerb(String),
    Usage(&'static str),
    BadAddress(String),
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::TooLong => write!(f, "request longer than {MAX_REQUEST} bytes"),
            RequestError::NotUtf8 => f.write_str("request is not UTF-8 text"),
            RequestError::Empty => f.write_str("empty request (expected status, drain or undrain)"),
            RequestError::UnknownVerb(v) => write!(
                f,
                "unknown request {v:?} (expected status, drain or undrain)"
            ),
            RequestError::Usage(u) => write!(f, "usage: {u}"),
            RequestError::BadAddress(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for RequestError {}

const DRAIN_USAGE: &str = "drain source IP | drain mx IP[:PORT]";
const UNDRAIN_USAGE: &str = "undrain source IP | undrain mx IP[:PORT] | undrain all";

fn target(kind: &str, value: &str, usage: &'static str) -> Result<DrainTarget, RequestError> {
    match kind.to_ascii_lowercase().as_str() {
        "source" => value
            .parse::<IpAddr>()
            .map(|ip| DrainTarget::Source(ip.to_canonical()))
            .map_err(|_| RequestError::BadAddress(format!("{value:?} is not an IP address"))),
        "mx" => value
            .parse::<MxTarget>()
            .map(DrainTarget::Mx)
            .map_err(RequestError::BadAddress),
        _ => Err(RequestError::Usage(usage)),
    }
}

/// Parse one request line (its line ending, if any, included).
pub fn parse(line: &[u8]) -> Result<Request, RequestError> {
    if line.len() > MAX_REQUEST {
        return Err(RequestError::TooLong);
    }
    let text = std::str::from_utf8(line).map_err(|_| RequestError::NotUtf8)?;
    let words: Vec<&str> = text.split_ascii_whitespace().collect();
    let Some(verb) = words.first() else {
        return Err(RequestError::Empty);
    };
    match (
        verb.to_ascii_lowercase().as_str(),
        words.get(1..).unwrap_or_default(),
    ) {
        ("status", []) => Ok(Request::Status),
        ("status", _) => Err(RequestError::Usage("status")),
        ("drain", [kind, value]) => Ok(Request::Drain(target(kind, value, DRAIN_USAGE)?)),
        ("drain", _) => Err(RequestError::Usage(DRAIN_USAGE)),
        ("undrain", [all]) if all.eq_ignore_ascii_case("all") => Ok(Request::UndrainAll),
        ("undrain", [kind, value]) => Ok(Request::Undrain(target(kind, value, UNDRAIN_USAGE)?)),
        ("undrain", _) => Err(RequestError::Usage(UNDRAIN_USAGE)),
        _ => Err(RequestError::UnknownVerb(
            verb.chars().take(32).collect::<String>(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_parses_and_prints_back() {
        for line in [
            "status",
            "drain source 127.0.0.2",
            "drain mx 127.0.0.1",
            "drain mx 127.0.0.1:2525",
            "drain mx [::1]:25",
            "undrain source ::1",
            "undrain mx 192.0.2.1:25",
            "undrain all",
        ] {
            let r = parse(format!("{line}\r\n").as_bytes()).unwrap();
            assert_eq!(r.to_string(), line);
        }
        assert_eq!(parse(b"  STATUS \n"), Ok(Request::Status));
        assert_eq!(
            parse(b"Drain Source ::ffff:127.0.0.2"),
            Ok(Request::Drain(DrainTarget::Source(
                "127.0.0.2".parse().unwrap()
            )))
        );
    }

    #[test]
    fn bad_requests_get_clear_errors() {
        let e = |l: &[u8]| parse(l).unwrap_err().to_string();
        assert_eq!(
            e(b"\n"),
            "empty request (expected status, drain or undrain)"
        );
        assert_eq!(
            e(b"stats\n"),
            "unknown request \"stats\" (expected status, drain or undrain)"
        );
        assert_eq!(e(b"drain 127.0.0.2\n"), format!("usage: {DRAIN_USAGE}"));
        assert_eq!(e(b"drain host x\n"), format!("usage: {DRAIN_USAGE}"));
        assert_eq!(e(b"undrain\n"), format!("usage: {UNDRAIN_USAGE}"));
        assert_eq!(e(b"status now\n"), "usage: status");
        assert_eq!(
            e(b"drain source mx.test\n"),
            "\"mx.test\" is not an IP address"
        );
        assert!(e(b"drain mx mx.test:25\n").contains("not an MX address"));
        assert_eq!(e(b"status \xff\n"), "request is not UTF-8 text");
        assert_eq!(
            e(&[b'a'; MAX_REQUEST + 1]),
            format!("request longer than {MAX_REQUEST} bytes")
        );
    }
}
