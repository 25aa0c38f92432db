//! A scripted MX: a listener on loopback whose one connection is handled by a closure, for
//! byte-level misbehaviour the test MX does not offer.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::Duration;

/// The MX side of one connection: read command lines, write anything.
pub struct Peer {
    reader: BufReader<TcpStream>,
    pub tcp: TcpStream,
}

impl Peer {
    /// The next line without its line ending; None at EOF or error.
    pub fn line(&mut self) -> Option<String> {
        let mut s = String::new();
        match self.reader.read_line(&mut s) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(s.trim_end_matches(['\r', '\n']).to_string()),
        }
    }

    /// Write `bytes` in one call; false when the proxy is gone.
    pub fn send(&mut self, bytes: &[u8]) -> bool {
        self.tcp.write_all(bytes).is_ok() && self.tcp.flush().is_ok()
    }

    /// Banner and a plain EHLO reply (PIPELINING, no STARTTLS).
    pub fn greet(&mut self) {
        assert!(self.send(b"220 scripted.test ESMTP\r\n"));
        let ehlo = self.line().expect("EHLO");
        assert!(ehlo.starts_with("EHLO "), "{ehlo}");
        assert!(self.send(b"250-scripted.test\r\n250 PIPELINING\r\n"));
    }
}

/// Listen on 127.0.0.1 and run `script` on the first connection.
pub fn mx<T: Send + 'static>(
    script: impl FnOnce(Peer) -> T + Send + 'static,
) -> (SocketAddr, JoinHandle<T>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let reader = BufReader::new(tcp.try_clone().unwrap());
        script(Peer { reader, tcp })
    });
    (addr, handle)
}
