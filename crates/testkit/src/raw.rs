//! A byte-level MTA connection to the proxy's native listener: write anything, read whole
//! replies. For tests that pipeline, stop in the middle of a message (while the test signals
//! the daemon), or look at the bytes the client library would hide.

use greenarrow_proxy_net::tls::{ClientTlsStream, ProxyClientTls};
use greenarrow_proxy_proto::smtp::parse_reply;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Bound of the TCP connect and the TLS handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound of every read and write.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// A TLS connection to the proxy and the bytes read but not yet returned as a reply.
pub struct Raw {
    pub s: ClientTlsStream,
    buf: Vec<u8>,
}

impl Raw {
    /// TCP and TLS to the proxy at `addr` (certificate for "localhost" from `ca_pem`).
    pub fn connect(addr: SocketAddr, ca_pem: &str) -> Raw {
        let tcp = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).unwrap();
        let s = ProxyClientTls::from_ca_pem(ca_pem.as_bytes())
            .unwrap()
            .connect(tcp, "localhost", CONNECT_TIMEOUT)
            .unwrap();
        Raw::from_stream(s)
    }

    /// A byte-level client over an established TLS stream.
    pub fn from_stream(s: ClientTlsStream) -> Raw {
        s.tcp().set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.tcp().set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        Raw { s, buf: Vec::new() }
    }

    pub fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
        self.s.flush().unwrap();
    }

    /// One complete SMTP-shaped reply (raw text); panics at EOF, on a read error (the timeout
    /// included) and on bytes that are not a reply.
    pub fn reply(&mut self) -> String {
        self.next_reply()
            .unwrap_or_else(|why| panic!("{why} while we waited for a reply"))
    }

    /// One reply, or None at EOF, on a read error or on bytes that are not a reply.
    pub fn try_reply(&mut self) -> Option<String> {
        self.next_reply().ok()
    }

    fn next_reply(&mut self) -> Result<String, String> {
        loop {
            match parse_reply(&self.buf, &Default::default()) {
                Ok(Some((r, n))) => {
                    let text = String::from_utf8_lossy(r.raw()).into_owned();
                    self.buf.drain(..n);
                    return Ok(text);
                }
                Ok(None) => {}
                Err(e) => {
                    let got = String::from_utf8_lossy(&self.buf);
                    return Err(format!("not a reply ({e}): {got:?}"));
                }
            }
            let mut b = [0u8; 4096];
            match self.s.read(&mut b) {
                Ok(0) => return Err("the proxy closed the connection".into()),
                Ok(n) => self.buf.extend_from_slice(&b[..n]),
                Err(e) => return Err(format!("reading failed ({e})")),
            }
        }
    }

    /// Send `line` and check that the reply starts with `code`; returns the reply.
    pub fn expect(&mut self, line: &str, code: &str) -> String {
        self.send(line.as_bytes());
        let r = self.reply();
        assert!(r.starts_with(code), "{line:?} got {r:?}, wanted {code}");
        r
    }

    /// True when the proxy closed the connection (EOF or error) without sending more.
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 64];
        matches!(self.s.read(&mut b), Ok(0) | Err(_))
    }
}

/// Send `bytes`, then read `n` replies.
pub fn exchange(raw: &mut Raw, bytes: &[u8], n: usize) -> Vec<String> {
    raw.send(bytes);
    (0..n).map(|_| raw.reply()).collect()
}
