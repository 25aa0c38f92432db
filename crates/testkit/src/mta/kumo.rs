//! A byte-faithful KumoMTA (kumod) egress client, written from the byte tables of
//! `shared/notes/mta-compat.md` §1.2 (SOCKS5) and §1.3 (PROXY v2), plus a small SMTP
//! conversation ([`Smtp`]) with STARTTLS end to end, as kumod does after either handshake.
//!
//! SOCKS5, kumod's dialect: greeting `05 01 00` (no credentials) or `05 02 00 02`
//! (credentials configured) → RFC 1929 `01 ULEN USER PLEN PASS` when the server chose 02 →
//! `BIND <source-ip>:0` (`05 02 00 01|04 <addr> 00 00`) → exactly one reply → `CONNECT
//! <mx-ip>:<port>` → exactly one reply → SMTP. Every reply is read with `read_exact` (a reply
//! split over segments is fine); no pipelining; IP address types only.
//!
//! PROXY v2: a 28-byte (IPv4) or 52-byte (IPv6) header, command PROXY, STREAM, no TLVs,
//! source port 0, then SMTP straight away (kumod reads the banner next).

use greenarrow_proxy_net::tls::{CertPolicy, ClientStream, MinVersion, MxTlsConnector};
use greenarrow_proxy_proto::smtp::{dot_stuff, parse_reply};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

/// Bound of every read and write.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// The PROXY v2 signature.
pub const V2_SIGNATURE: [u8; 12] = [
    0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
];

/// kumod's PROXY v2 header: `21` (v2, PROXY), `11`/`21` (TCP over IPv4/IPv6), length,
/// addresses, source port 0, destination port. No TLVs.
pub fn proxy_v2_header(source: IpAddr, mx: SocketAddr) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.push(0x21);
    match (source, mx.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            h.push(0x11);
            h.extend_from_slice(&12u16.to_be_bytes());
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            h.push(0x21);
            h.extend_from_slice(&36u16.to_be_bytes());
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
        }
        // kumod skips a source whose family differs from the MX's before connecting.
        _ => panic!("kumod never mixes families: {source} → {mx}"),
    }
    h.extend_from_slice(&0u16.to_be_bytes());
    h.extend_from_slice(&mx.port().to_be_bytes());
    h
}

/// `<atyp> <addr> <port>` of a SOCKS5 request (types 1 and 4 only, like kumod).
pub fn socks_addr(ip: IpAddr, port: u16) -> Vec<u8> {
    let mut v = Vec::with_capacity(19);
    match ip {
        IpAddr::V4(a) => {
            v.push(1);
            v.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            v.push(4);
            v.extend_from_slice(&a.octets());
        }
    }
    v.extend_from_slice(&port.to_be_bytes());
    v
}

/// The SOCKS5 step that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Greeting,
    Auth,
    Bind,
    Connect,
}

/// Why the SOCKS5 handshake failed.
#[derive(Debug)]
pub enum SocksError {
    /// A socket error or EOF at `step`.
    Io(Step, io::Error),
    /// The server chose no method we offered (`05 FF`) or answered garbage: the bytes.
    Method(Vec<u8>),
    /// RFC 1929 status ≠ 0: the two bytes.
    Auth(Vec<u8>),
    /// A non-zero reply code to BIND or CONNECT, with the whole reply.
    Reply {
        step: Step,
        code: u8,
        reply: Vec<u8>,
    },
    /// A reply that does not parse.
    Malformed(Step, Vec<u8>),
}

impl SocksError {
    /// The reply code of a refused BIND or CONNECT.
    pub fn code(&self) -> Option<(Step, u8)> {
        match self {
            SocksError::Reply { step, code, .. } => Some((*step, *code)),
            _ => None,
        }
    }
}

impl fmt::Display for SocksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocksError::Io(s, e) => write!(f, "SOCKS5 {s:?}: {e}"),
            SocksError::Method(b) => write!(f, "SOCKS5 method answer {b:02x?}"),
            SocksError::Auth(b) => write!(f, "SOCKS5 username/password refused: {b:02x?}"),
            SocksError::Reply { step, code, reply } => {
                write!(f, "SOCKS5 {step:?} refused with {code:02x}: {reply:02x?}")
            }
            SocksError::Malformed(s, b) => write!(f, "SOCKS5 {s:?}: malformed reply {b:02x?}"),
        }
    }
}

/// What the SOCKS5 handshake returned.
#[derive(Debug)]
pub struct SocksOk {
    /// The BIND reply (`05 00 00 <atyp> <addr> <port>`), when a BIND was sent.
    pub bind_reply: Option<Vec<u8>>,
    /// The CONNECT reply; its address is what kumod logs as `source_address`.
    pub connect_reply: Vec<u8>,
}

impl SocksOk {
    /// The bound address the CONNECT reply names.
    pub fn connect_addr(&self) -> Option<SocketAddr> {
        reply_addr(&self.connect_reply)
    }
}

/// The address in a SOCKS5 reply (types 1 and 4).
pub fn reply_addr(r: &[u8]) -> Option<SocketAddr> {
    let ip: IpAddr = match (r.get(3)?, r.len()) {
        (1, 10) => <[u8; 4]>::try_from(&r[4..8]).ok()?.into(),
        (4, 22) => <[u8; 16]>::try_from(&r[4..20]).ok()?.into(),
        _ => return None,
    };
    let p = r.len() - 2;
    Some(SocketAddr::new(ip, u16::from_be_bytes([r[p], r[p + 1]])))
}

/// kumod's SOCKS5 handshake on `s`: greeting (with credentials when `credentials` is set),
/// optional RFC 1929, `BIND source:0` when `source` is set, `CONNECT mx`.
pub fn socks5_handshake(
    s: &mut TcpStream,
    credentials: Option<(&str, &str)>,
    source: Option<IpAddr>,
    mx: SocketAddr,
) -> Result<SocksOk, SocksError> {
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let greeting: &[u8] = if credentials.is_some() {
        &[5, 2, 0, 2]
    } else {
        &[5, 1, 0]
    };
    send(s, Step::Greeting, greeting)?;
    let method = read_n(s, Step::Greeting, 2)?;
    match (method[0], method[1], credentials) {
        (5, 0, _) => {}
        (5, 2, Some((user, pass))) => {
            let mut a = vec![1, user.len() as u8];
            a.extend_from_slice(user.as_bytes());
            a.push(pass.len() as u8);
            a.extend_from_slice(pass.as_bytes());
            send(s, Step::Auth, &a)?;
            let st = read_n(s, Step::Auth, 2)?;
            if st != [1, 0] {
                return Err(SocksError::Auth(st));
            }
        }
        _ => return Err(SocksError::Method(method)),
    }
    let bind_reply = match source {
        Some(src) => {
            let mut r = vec![5, 2, 0];
            r.extend(socks_addr(src, 0));
            send(s, Step::Bind, &r)?;
            Some(read_reply(s, Step::Bind)?)
        }
        None => None,
    };
    let mut r = vec![5, 1, 0];
    r.extend(socks_addr(mx.ip(), mx.port()));
    send(s, Step::Connect, &r)?;
    let connect_reply = read_reply(s, Step::Connect)?;
    Ok(SocksOk {
        bind_reply,
        connect_reply,
    })
}

fn send(s: &mut TcpStream, step: Step, b: &[u8]) -> Result<(), SocksError> {
    s.write_all(b).map_err(|e| SocksError::Io(step, e))
}

fn read_n(s: &mut TcpStream, step: Step, n: usize) -> Result<Vec<u8>, SocksError> {
    let mut v = vec![0u8; n];
    s.read_exact(&mut v).map_err(|e| SocksError::Io(step, e))?;
    Ok(v)
}

/// One reply, read as kumod's socksv5 does: 4 bytes, then the address by its type.
fn read_reply(s: &mut TcpStream, step: Step) -> Result<Vec<u8>, SocksError> {
    let mut r = read_n(s, step, 4)?;
    let rest = match r[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let n = read_n(s, step, 1)?;
            r.extend_from_slice(&n);
            n[0] as usize + 2
        }
        _ => return Err(SocksError::Malformed(step, r)),
    };
    r.extend(read_n(s, step, rest)?);
    if r[0] != 5 {
        return Err(SocksError::Malformed(step, r));
    }
    if r[1] != 0 {
        return Err(SocksError::Reply {
            step,
            code: r[1],
            reply: r,
        });
    }
    Ok(r)
}

// ---------------------------------------------------------------- SMTP

/// A minimal SMTP client conversation over a connected stream (after a SOCKS5 handshake or
/// a PROXY header): replies are read whole (multi-line), commands written one at a time.
pub struct Smtp {
    /// `None` once lost in a failed STARTTLS.
    s: Option<ClientStream>,
    buf: Vec<u8>,
    /// Every line sent and received, for failure messages.
    pub transcript: Vec<String>,
}

impl Smtp {
    pub fn new(tcp: TcpStream) -> Smtp {
        tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        tcp.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        Smtp {
            s: Some(ClientStream::Plain(tcp)),
            buf: Vec::new(),
            transcript: Vec::new(),
        }
    }

    fn stream(&mut self) -> &mut ClientStream {
        self.s.as_mut().expect("stream lost in a failed STARTTLS")
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.s, Some(ClientStream::Tls(_)))
    }

    /// Write raw bytes.
    pub fn send_raw(&mut self, b: &[u8]) -> io::Result<()> {
        let s = self.stream();
        s.write_all(b)?;
        s.flush()
    }

    /// Send one command line (CRLF added) and read its reply.
    pub fn command(&mut self, line: &str) -> io::Result<String> {
        self.transcript.push(format!("C: {line}"));
        self.send_raw(format!("{line}\r\n").as_bytes())?;
        self.reply()
    }

    /// Read one complete reply; its raw text. EOF is an error.
    pub fn reply(&mut self) -> io::Result<String> {
        loop {
            match parse_reply(&self.buf, &Default::default()) {
                Ok(Some((r, n))) => {
                    let text = String::from_utf8_lossy(r.raw()).into_owned();
                    self.buf.drain(..n);
                    self.transcript.push(format!("S: {}", text.trim_end()));
                    return Ok(text);
                }
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
            }
            let mut b = [0u8; 4096];
            let n = self.stream().read(&mut b)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("EOF after {:?}", String::from_utf8_lossy(&self.buf)),
                ));
            }
            self.buf.extend_from_slice(&b[..n]);
        }
    }

    /// Read until EOF; what arrived (an empty vector: closed without a byte).
    pub fn rest(&mut self) -> io::Result<Vec<u8>> {
        let mut v = std::mem::take(&mut self.buf);
        self.stream().read_to_end(&mut v)?;
        Ok(v)
    }

    /// `STARTTLS`, `220`, then a TLS handshake accepting any certificate (the test MX's is
    /// self-signed), as an opportunistic MTA does.
    pub fn starttls(&mut self, server_name: &str) -> io::Result<()> {
        let r = self.command("STARTTLS")?;
        if !r.starts_with("220") {
            return Err(io::Error::other(format!("STARTTLS refused: {r}")));
        }
        if !self.buf.is_empty() {
            return Err(io::Error::other("bytes after the 220 to STARTTLS"));
        }
        let Some(ClientStream::Plain(tcp)) = self.s.take() else {
            return Err(io::Error::other("STARTTLS twice"));
        };
        let ip = tcp.peer_addr()?.ip();
        let tls = MxTlsConnector::new(rustls::RootCertStore::empty(), MinVersion::Tls12)
            .map_err(io::Error::other)?
            .connect(
                tcp,
                CertPolicy::AcceptAny,
                Some(server_name),
                ip,
                IO_TIMEOUT,
            )
            .map_err(io::Error::other)?;
        self.s = Some(ClientStream::Tls(Box::new(tls)));
        Ok(())
    }

    /// `MAIL FROM`, `RCPT TO`, `DATA`, the dot-stuffed body: the final reply.
    pub fn send_mail(&mut self, from: &str, to: &str, body: &[u8]) -> io::Result<String> {
        for (cmd, want) in [
            (format!("MAIL FROM:<{from}>"), "250"),
            (format!("RCPT TO:<{to}>"), "250"),
            ("DATA".to_string(), "354"),
        ] {
            let r = self.command(&cmd)?;
            if !r.starts_with(want) {
                return Err(io::Error::other(format!("{cmd}: {r}")));
            }
        }
        let mut payload = Vec::new();
        dot_stuff(body, &mut payload);
        self.transcript
            .push(format!("C: <{} octets of data>", payload.len()));
        self.send_raw(&payload)?;
        self.reply()
    }

    /// The transcript, for assertion messages.
    pub fn show(&self) -> String {
        self.transcript.join("\n")
    }
}

/// What kumod's delivery of one message saw.
#[derive(Debug)]
pub struct Delivered {
    pub banner: String,
    pub ehlo: Vec<String>,
    pub final_reply: String,
    pub tls: bool,
    pub transcript: String,
}

/// The SMTP part of a kumod delivery: banner, EHLO, STARTTLS if offered and `starttls`
/// (then EHLO again), MAIL/RCPT/DATA, QUIT.
pub fn deliver_smtp(
    mut smtp: Smtp,
    ehlo: &str,
    starttls: bool,
    from: &str,
    to: &str,
    body: &[u8],
) -> io::Result<Delivered> {
    let banner = smtp.reply()?;
    if !banner.starts_with("220") {
        return Err(io::Error::other(format!("banner: {banner}")));
    }
    let mut ehlos = vec![smtp.command(&format!("EHLO {ehlo}"))?];
    if starttls && ehlos[0].lines().any(|l| l.get(4..) == Some("STARTTLS")) {
        smtp.starttls("mx.test")?;
        ehlos.push(smtp.command(&format!("EHLO {ehlo}"))?);
    }
    let final_reply = smtp.send_mail(from, to, body)?;
    let _ = smtp.command("QUIT");
    Ok(Delivered {
        banner,
        ehlo: ehlos,
        final_reply,
        tls: smtp.is_tls(),
        transcript: smtp.show(),
    })
}

/// kumod through a SOCKS5 proxy: connect, handshake (BIND `source` when given), SMTP.
pub fn deliver_socks5(
    proxy: SocketAddr,
    credentials: Option<(&str, &str)>,
    source: Option<IpAddr>,
    mx: SocketAddr,
    starttls: bool,
    body: &[u8],
) -> Result<(SocksOk, Delivered), String> {
    let mut s = TcpStream::connect_timeout(&proxy, IO_TIMEOUT).map_err(|e| e.to_string())?;
    let ok = socks5_handshake(&mut s, credentials, source, mx).map_err(|e| e.to_string())?;
    let d = deliver_smtp(
        Smtp::new(s),
        "kumo.check.invalid",
        starttls,
        "a@example.test",
        "b@example.test",
        body,
    )
    .map_err(|e| e.to_string())?;
    Ok((ok, d))
}

/// kumod through a PROXY v2 proxy: connect, the 28/52-byte header, SMTP.
pub fn deliver_proxy_v2(
    proxy: SocketAddr,
    source: IpAddr,
    mx: SocketAddr,
    starttls: bool,
    body: &[u8],
) -> Result<Delivered, String> {
    let mut s = TcpStream::connect_timeout(&proxy, IO_TIMEOUT).map_err(|e| e.to_string())?;
    s.write_all(&proxy_v2_header(source, mx))
        .map_err(|e| e.to_string())?;
    deliver_smtp(
        Smtp::new(s),
        "kumo.check.invalid",
        starttls,
        "a@example.test",
        "b@example.test",
        body,
    )
    .map_err(|e| e.to_string())
}
