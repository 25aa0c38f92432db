//! The one HTTPS request the proxy makes: `GET https://mta-sts.<domain>/.well-known/mta-sts.txt`
//! (RFC 8461 section 3.3), a small HTTP/1.1 client over the net crate's verifying TLS client.
//!
//! Why not ureq: the request is one GET with `Connection: close`, no redirects (RFC 8461
//! forbids following them), no cookies, no proxy, no pooling; the name is resolved through the
//! daemon's own resolver (`dns.nameservers`), the certificate verified by the same rustls
//! configuration (and ring provider) as `tls=verify` toward MX servers, and the whole exchange
//! is bounded by one deadline and a size cap. Those are a hundred lines here, against a new
//! dependency tree (ureq, its HTTP crates, a second rustls configuration path) in the daemon.
//!
//! The response is read with [`parse`] (pure: bytes in, a decision out): the status line and
//! headers by httparse, then a body by `Content-Length`, `Transfer-Encoding: chunked`, or up to
//! the end of the stream; never more than the cap.

use crate::dns::{DnsError, Family, Resolver};
use greenarrow_proxy_net::deadline::Deadline;
use greenarrow_proxy_net::tls::{CertPolicy, MxTlsConnector, TlsError};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

/// Most header lines read.
const MAX_HEADERS: usize = 32;
/// Longest response head (status line and headers).
const MAX_HEAD: usize = 16 * 1024;

/// What is wrong with an HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HttpError {
    /// Not an HTTP/1.x response (httparse's reason).
    Malformed(String),
    /// The head is longer than it may be.
    HeadTooLong,
    /// A 3xx: RFC 8461 section 3.3 forbids following it.
    Redirect(u16),
    /// Another status than 200.
    Status(u16),
    /// The media type is not `text/plain`.
    ContentType(String),
    /// The body is larger than the cap.
    TooLarge(usize),
    /// A bad `Content-Length` or chunk.
    Framing(&'static str),
    /// The stream ended before the body did.
    Truncated,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Malformed(why) => write!(f, "not an HTTP response: {why}"),
            HttpError::HeadTooLong => write!(f, "response head longer than {MAX_HEAD} octets"),
            HttpError::Redirect(code) => write!(f, "HTTP {code}: redirects are not followed"),
            HttpError::Status(code) => write!(f, "HTTP {code}"),
            HttpError::ContentType(t) => write!(f, "Content-Type {t:?} is not text/plain"),
            HttpError::TooLarge(cap) => write!(f, "the policy is larger than {cap} octets"),
            HttpError::Framing(why) => write!(f, "bad framing: {why}"),
            HttpError::Truncated => f.write_str("the connection closed before the body's end"),
        }
    }
}

impl std::error::Error for HttpError {}

/// The response so far: need more bytes, or the body.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Read more (or, at the end of the stream, [`HttpError::Truncated`]).
    More,
    /// A 200 `text/plain` response's body.
    Body(Vec<u8>),
}

/// Parse what was received of a response; `eof` when the stream has ended. The body may be at
/// most `cap` octets.
pub fn parse(buf: &[u8], eof: bool, cap: usize) -> Result<Parsed, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(HttpError::HeadTooLong)
        }
        Ok(httparse::Status::Partial) if eof => return Err(HttpError::Truncated),
        Ok(httparse::Status::Partial) => return Ok(Parsed::More),
        Err(e) => return Err(HttpError::Malformed(e.to_string())),
    };
    let code = response.code.unwrap_or(0);
    match code {
        200 => {}
        300..=399 => return Err(HttpError::Redirect(code)),
        _ => return Err(HttpError::Status(code)),
    }
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
    };
    let content_type = header("content-type").unwrap_or_default();
    let media = content_type.split(';').next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("text/plain") {
        return Err(HttpError::ContentType(content_type));
    }
    let body = &buf[head_len..];
    let chunked = header("transfer-encoding").is_some_and(|te| {
        te.to_ascii_lowercase()
            .split(',')
            .any(|t| t.trim() == "chunked")
    });
    if chunked {
        return dechunk(body, eof, cap);
    }
    match header("content-length") {
        Some(len) => {
            let len: usize = len
                .parse()
                .map_err(|_| HttpError::Framing("Content-Length is not a number"))?;
            if len > cap {
                return Err(HttpError::TooLarge(cap));
            }
            if body.len() >= len {
                Ok(Parsed::Body(body[..len].to_vec()))
            } else if eof {
                Err(HttpError::Truncated)
            } else {
                Ok(Parsed::More)
            }
        }
        None if body.len() > cap => Err(HttpError::TooLarge(cap)),
        None if eof => Ok(Parsed::Body(body.to_vec())),
        None => Ok(Parsed::More),
    }
}

/// A chunked body (RFC 9112 section 7.1): size line (extensions ignored), data, CRLF; a zero
/// size ends it (trailers are not read: the connection is closed).
fn dechunk(mut rest: &[u8], eof: bool, cap: usize) -> Result<Parsed, HttpError> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") else {
            if rest.len() > 64 {
                return Err(HttpError::Framing("chunk size line too long"));
            }
            return if eof {
                Err(HttpError::Truncated)
            } else {
                Ok(Parsed::More)
            };
        };
        let line = std::str::from_utf8(&rest[..line_end])
            .map_err(|_| HttpError::Framing("chunk size is not text"))?;
        let hex = line.split(';').next().unwrap_or("").trim();
        if hex.is_empty() || hex.len() > 8 {
            return Err(HttpError::Framing("bad chunk size"));
        }
        let size =
            usize::from_str_radix(hex, 16).map_err(|_| HttpError::Framing("bad chunk size"))?;
        if size == 0 {
            return Ok(Parsed::Body(body));
        }
        if body.len() + size > cap {
            return Err(HttpError::TooLarge(cap));
        }
        let data = &rest[line_end + 2..];
        if data.len() < size + 2 {
            return if eof {
                Err(HttpError::Truncated)
            } else {
                Ok(Parsed::More)
            };
        }
        if &data[size..size + 2] != b"\r\n" {
            return Err(HttpError::Framing("chunk not followed by CRLF"));
        }
        body.extend_from_slice(&data[..size]);
        rest = &data[size + 2..];
    }
}

/// Why a policy could not be fetched.
#[derive(Debug)]
#[non_exhaustive]
pub enum FetchError {
    /// `mta-sts.<domain>` has no address, or the look-up failed.
    Dns(DnsError),
    /// No address could be connected to (the last error).
    Connect { addr: SocketAddr, error: io::Error },
    /// The TLS handshake or the certificate failed (WebPKI for the policy host's name).
    Tls(TlsError),
    /// Reading or writing failed.
    Io(io::Error),
    /// The whole fetch did not finish within the timeout.
    Timeout(Duration),
    /// The response is not a usable policy response.
    Http(HttpError),
}

impl FetchError {
    /// Whether the policy host's certificate was refused (TLS-RPT `sts-webpki-invalid`).
    pub fn is_webpki(&self) -> bool {
        matches!(self, FetchError::Tls(TlsError::Certificate(_)))
    }
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Dns(e) => write!(f, "policy host look-up: {e}"),
            FetchError::Connect { addr, error } => write!(f, "cannot connect to {addr}: {error}"),
            FetchError::Tls(e) => write!(f, "policy host TLS: {e}"),
            FetchError::Io(e) => write!(f, "policy host I/O: {e}"),
            FetchError::Timeout(t) => write!(f, "no policy within {t:?}"),
            FetchError::Http(e) => write!(f, "policy host: {e}"),
        }
    }
}

impl std::error::Error for FetchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FetchError::Dns(e) => Some(e),
            FetchError::Connect { error, .. } | FetchError::Io(error) => Some(error),
            FetchError::Tls(e) => Some(e),
            FetchError::Http(e) => Some(e),
            FetchError::Timeout(_) => None,
        }
    }
}

/// How policies are fetched.
#[derive(Clone)]
pub struct Client {
    /// Verifying client: the system roots and the test-only extra CA.
    pub tls: MxTlsConnector,
    pub resolver: Resolver,
    pub timeout: Duration,
    pub max_size: usize,
    /// 443 except in tests.
    pub port: u16,
}

impl Client {
    /// GET `https://<host><path>`: the body of a 200 `text/plain` response.
    pub fn get(&self, host: &str, path: &str) -> Result<Vec<u8>, FetchError> {
        let deadline = Deadline::after(self.timeout);
        let mut addrs: Vec<IpAddr> = Vec::new();
        let mut dns_error = None;
        for family in [Family::V4, Family::V6] {
            match self.resolver.lookup_host(host, family) {
                Ok(found) => addrs.extend(found),
                Err(e) => dns_error = Some(e),
            }
        }
        let mut last = match (addrs.is_empty(), dns_error) {
            (true, Some(e)) => return Err(FetchError::Dns(e)),
            _ => None,
        };
        for ip in addrs {
            let addr = SocketAddr::new(ip, self.port);
            let Some(left) = deadline.left() else { break };
            let tcp = match TcpStream::connect_timeout(&addr, left) {
                Ok(tcp) => tcp,
                Err(error) => {
                    last = Some(FetchError::Connect { addr, error });
                    continue;
                }
            };
            return self.exchange(tcp, host, path, ip, deadline);
        }
        Err(last.unwrap_or(FetchError::Timeout(self.timeout)))
    }

    fn exchange(
        &self,
        tcp: TcpStream,
        host: &str,
        path: &str,
        ip: IpAddr,
        deadline: Deadline,
    ) -> Result<Vec<u8>, FetchError> {
        let timeout = self.timeout;
        let left = deadline.left().ok_or(FetchError::Timeout(timeout))?;
        let mut tls = self
            .tls
            .connect(tcp, CertPolicy::Verify, Some(host), ip, left)
            .map_err(FetchError::Tls)?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: greenarrow_proxy/{}\r\n\
             Accept: text/plain\r\nConnection: close\r\n\r\n",
            env!("CARGO_PKG_VERSION")
        );
        let io = |e: io::Error| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => FetchError::Timeout(timeout),
            _ => FetchError::Io(e),
        };
        set_timeouts(tls.tcp(), deadline).map_err(io)?;
        tls.write_all(request.as_bytes()).map_err(io)?;
        tls.flush().map_err(io)?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            set_timeouts(tls.tcp(), deadline).map_err(io)?;
            let n = match tls.read(&mut chunk) {
                Ok(n) => n,
                // A server that closes without close_notify ends the stream all the same; a
                // truncated body is caught by the framing.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
                Err(e) => return Err(io(e)),
            };
            buf.extend_from_slice(&chunk[..n]);
            match parse(&buf, n == 0, self.max_size).map_err(FetchError::Http)? {
                Parsed::Body(body) => {
                    tls.close();
                    return Ok(body);
                }
                Parsed::More if n == 0 => return Err(FetchError::Http(HttpError::Truncated)),
                Parsed::More => {}
            }
            if buf.len() > MAX_HEAD + self.max_size + 1024 {
                return Err(FetchError::Http(HttpError::TooLarge(self.max_size)));
            }
        }
    }
}

fn set_timeouts(tcp: &TcpStream, deadline: Deadline) -> io::Result<()> {
    let left = deadline
        .left()
        .ok_or_else(|| io::Error::from(io::ErrorKind::TimedOut))?;
    tcp.set_read_timeout(Some(left))?;
    tcp.set_write_timeout(Some(left))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n";

    #[test]
    fn content_length_bodies() {
        let r = format!("{OK}Content-Length: 5\r\n\r\nhello");
        assert_eq!(
            parse(r.as_bytes(), false, 100),
            Ok(Parsed::Body(b"hello".to_vec()))
        );
        assert_eq!(
            parse(&r.as_bytes()[..r.len() - 1], false, 100),
            Ok(Parsed::More)
        );
        assert_eq!(
            parse(&r.as_bytes()[..r.len() - 1], true, 100),
            Err(HttpError::Truncated)
        );
        assert_eq!(parse(r.as_bytes(), false, 4), Err(HttpError::TooLarge(4)));
        assert_eq!(parse(&r.as_bytes()[..20], false, 100), Ok(Parsed::More));
    }

    #[test]
    fn chunked_bodies() {
        let r =
            format!("{OK}Transfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n1\r\n!\r\n0\r\n\r\n");
        assert_eq!(
            parse(r.as_bytes(), false, 100),
            Ok(Parsed::Body(b"hello!".to_vec()))
        );
        assert_eq!(
            parse(&r.as_bytes()[..r.len() - 8], false, 100),
            Ok(Parsed::More)
        );
        assert_eq!(parse(r.as_bytes(), false, 5), Err(HttpError::TooLarge(5)));
        let bad = format!("{OK}Transfer-Encoding: chunked\r\n\r\nzz\r\n");
        assert!(matches!(
            parse(bad.as_bytes(), false, 100),
            Err(HttpError::Framing(_))
        ));
        let bad = format!("{OK}Transfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n");
        assert!(matches!(
            parse(bad.as_bytes(), false, 100),
            Err(HttpError::Framing(_))
        ));
    }

    #[test]
    fn to_the_end_of_the_stream() {
        let r = format!("{OK}\r\nversion: STSv1\r\n");
        assert_eq!(parse(r.as_bytes(), false, 100), Ok(Parsed::More));
        assert_eq!(
            parse(r.as_bytes(), true, 100),
            Ok(Parsed::Body(b"version: STSv1\r\n".to_vec()))
        );
        assert_eq!(parse(r.as_bytes(), true, 3), Err(HttpError::TooLarge(3)));
    }

    #[test]
    fn refusals() {
        let redirect = b"HTTP/1.1 301 Moved\r\nLocation: https://x/\r\n\r\n";
        assert_eq!(parse(redirect, false, 100), Err(HttpError::Redirect(301)));
        assert_eq!(
            parse(b"HTTP/1.1 404 Not Found\r\n\r\n", false, 100),
            Err(HttpError::Status(404))
        );
        let html = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 0\r\n\r\n";
        assert!(matches!(
            parse(html, false, 100),
            Err(HttpError::ContentType(_))
        ));
        let none = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert!(matches!(
            parse(none, false, 100),
            Err(HttpError::ContentType(_))
        ));
        assert!(matches!(
            parse(b"SMTP 220\r\n\r\n", false, 100),
            Err(HttpError::Malformed(_))
        ));
        let upper = b"HTTP/1.0 200 OK\r\ncontent-type: TEXT/PLAIN\r\ncontent-length: 2\r\n\r\nok";
        assert_eq!(parse(upper, false, 100), Ok(Parsed::Body(b"ok".to_vec())));
    }
}
