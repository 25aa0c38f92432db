//! A byte-level MTA connection to the daemon, to hold a session in the middle of a message
//! while the test signals the process.

use super::process::WAIT;
use greenarrow_proxy_net::tls::{ClientTlsStream, ProxyClientTls};
use greenarrow_proxy_proto::smtp::parse_reply;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

pub struct Raw {
    s: ClientTlsStream,
    buf: Vec<u8>,
}

impl Raw {
    /// TCP and TLS to the proxy at `addr` (certificate for "localhost" from `ca_pem`).
    pub fn connect(addr: SocketAddr, ca_pem: &str) -> Raw {
        let tcp = TcpStream::connect_timeout(&addr, WAIT).unwrap();
        let s = ProxyClientTls::from_ca_pem(ca_pem.as_bytes())
            .unwrap()
            .connect(tcp, "localhost", WAIT)
            .unwrap();
        s.tcp().set_read_timeout(Some(WAIT)).unwrap();
        s.tcp().set_write_timeout(Some(WAIT)).unwrap();
        Raw { s, buf: Vec::new() }
    }

    pub fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
        self.s.flush().unwrap();
    }

    /// One complete reply (raw text); panics at EOF or after the read timeout.
    pub fn reply(&mut self) -> String {
        loop {
            if let Some((r, n)) = parse_reply(&self.buf, &Default::default()).unwrap() {
                self.buf.drain(..n);
                return String::from_utf8_lossy(r.raw()).into_owned();
            }
            let mut b = [0u8; 4096];
            match self.s.read(&mut b) {
                Ok(0) => panic!("the proxy closed the connection while we waited for a reply"),
                Ok(n) => self.buf.extend_from_slice(&b[..n]),
                Err(e) => panic!("reading a reply: {e}"),
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
}
