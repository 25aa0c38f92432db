//! A tiny raw SMTP client for the socket tests.

use crate::certgen;
use greenarrow_proxy_net::tls::{self, CertPolicy, MinVersion, MxTlsConnector, TlsAcceptor};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

/// Read deadline of the test client: a hung test fails instead of hanging.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) fn acceptor() -> TlsAcceptor {
    static ACCEPTOR: OnceLock<TlsAcceptor> = OnceLock::new();
    ACCEPTOR
        .get_or_init(|| {
            let leaf = certgen::self_signed(&["mx.test"]).unwrap();
            TlsAcceptor::from_pem(&leaf.cert_pem, &leaf.key_pem).unwrap()
        })
        .clone()
}

pub(super) fn connector() -> MxTlsConnector {
    static CONNECTOR: OnceLock<MxTlsConnector> = OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            MxTlsConnector::new(tls::load_roots(None).unwrap(), MinVersion::Tls12).unwrap()
        })
        .clone()
}

type Stream = tls::ClientStream;

pub(super) struct Client {
    stream: Option<Stream>,
    /// Received bytes not yet returned as a reply.
    pub buf: Vec<u8>,
    pub local: SocketAddr,
    peer: SocketAddr,
}

impl Client {
    /// Connect without reading the banner.
    pub fn connect_raw(addr: SocketAddr) -> Client {
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
        Client {
            local: tcp.local_addr().unwrap(),
            peer: addr,
            stream: Some(Stream::Plain(tcp)),
            buf: Vec::new(),
        }
    }

    /// Connect and expect a 220 banner.
    pub fn connect(addr: SocketAddr) -> Client {
        let mut c = Client::connect_raw(addr);
        c.expect("220");
        c
    }

    fn stream(&mut self) -> &mut Stream {
        self.stream.as_mut().unwrap()
    }

    fn read_some(&mut self) -> io::Result<usize> {
        let mut tmp = [0u8; 4096];
        let n = self.stream().read(&mut tmp)?;
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n)
    }

    /// Whether nothing arrives within `wait` (a bounded look for replies that must not come).
    pub fn silent_for(&mut self, wait: Duration) -> bool {
        self.stream().tcp().set_read_timeout(Some(wait)).unwrap();
        let got = self.read_some();
        self.stream()
            .tcp()
            .set_read_timeout(Some(CLIENT_TIMEOUT))
            .unwrap();
        match got {
            Err(e) => matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            Ok(_) => false,
        }
    }

    pub fn send(&mut self, data: &[u8]) {
        let s = self.stream();
        s.write_all(data).unwrap();
        s.flush().unwrap();
    }

    /// The length of the first complete reply in the buffer, if any.
    fn complete_reply(&self) -> Option<usize> {
        let mut start = 0;
        while let Some(i) = self.buf[start..].windows(2).position(|w| w == b"\r\n") {
            let line = &self.buf[start..start + i];
            start += i + 2;
            if line.len() < 4 || line[3] == b' ' {
                return Some(start);
            }
        }
        None
    }

    /// Read one (possibly multi-line) reply, CRLFs included.
    pub fn reply(&mut self) -> String {
        loop {
            if let Some(n) = self.complete_reply() {
                let r: Vec<u8> = self.buf.drain(..n).collect();
                return String::from_utf8(r).unwrap();
            }
            let n = self.read_some().unwrap();
            assert!(n > 0, "EOF while waiting for a reply; have {:?}", self.buf);
        }
    }

    /// Read a reply and check its code.
    pub fn expect(&mut self, code: &str) -> String {
        let r = self.reply();
        assert!(r.starts_with(code), "expected {code}, got {r:?}");
        r
    }

    /// Send a command line and check the reply code.
    pub fn cmd(&mut self, line: &str, code: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.expect(code)
    }

    /// Everything until EOF (a reset counts as EOF), the buffered bytes included.
    pub fn read_to_end(&mut self) -> Vec<u8> {
        loop {
            match self.read_some() {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        std::mem::take(&mut self.buf)
    }

    /// Close our sending side.
    pub fn shutdown_write(&mut self) {
        if let Some(Stream::Plain(t)) = &self.stream {
            t.shutdown(Shutdown::Write).unwrap();
        }
    }

    /// Run the TLS handshake on the socket (after STARTTLS's 220, or at once for SMTPS).
    pub fn upgrade(&mut self, timeout: Duration) -> Result<(), tls::TlsError> {
        let Some(Stream::Plain(tcp)) = self.stream.take() else {
            panic!("not a plain stream");
        };
        let s = connector().connect(
            tcp,
            CertPolicy::AcceptAny,
            Some("mx.test"),
            self.peer.ip(),
            timeout,
        )?;
        self.stream = Some(Stream::Tls(Box::new(s)));
        Ok(())
    }

    pub fn tls_version(&self) -> Option<String> {
        let tls = self.stream.as_ref()?.tls()?;
        Some(tls.facts().version.clone())
    }

    /// EHLO, MAIL, RCPT, DATA with `wire` (already dot-stuffed, terminator included).
    pub fn send_message(&mut self, from: &str, to: &[&str], wire: &[u8]) -> String {
        self.cmd(&format!("MAIL FROM:<{from}>"), "250");
        for t in to {
            self.cmd(&format!("RCPT TO:<{t}>"), "250");
        }
        self.cmd("DATA", "354");
        self.send(wire);
        self.expect("250")
    }
}
