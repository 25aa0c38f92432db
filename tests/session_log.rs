//! The audit trail (issue 20) and the start and failure lines (issue 26), from the real
//! daemon's stderr: one info line per relayed session — native (new and reused), a PROXY
//! front-end in passthrough and in `mode: smtp` — with its values; `log_sessions: false`
//! turns it off.

use greenarrow_proxy_proto::smtp::parse_reply;
use greenarrow_proxy_testkit::daemon::setup::{field, fields, is_secs, Setup};
use greenarrow_proxy_testkit::daemon::{Daemon, WAIT};
use greenarrow_proxy_testkit::fixtures;
use greenarrow_proxy_testkit::fixtures::SECRET;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

/// The `key=value` fields of a session line (after its text).
fn session_fields(line: &str) -> Vec<(&str, &str)> {
    let at = line.find(" mta=").expect("mta= in a session line");
    fields(&line[at..], " ")
}

/// The keys of a session line, in order.
fn keys<'a>(f: &[(&'a str, &str)]) -> Vec<&'a str> {
    f.iter().map(|(k, _)| *k).collect()
}

/// The front-end address `kind ADDR (mode)` named by the ready line.
fn front_end_in_ready_line(ready: &str, kind: &str, mode: &str) -> SocketAddr {
    let (_, fronts) = ready
        .split_once("; front-ends: ")
        .unwrap_or_else(|| panic!("no front-ends in {ready:?}"));
    fronts
        .split(", ")
        .find_map(|f| {
            let rest = f.strip_prefix(&format!("{kind} "))?;
            let addr = rest.strip_suffix(&format!(" ({mode})"))?;
            addr.parse().ok()
        })
        .unwrap_or_else(|| panic!("no {kind} ({mode}) in {ready:?}"))
}

/// A plain TCP MTA speaking to a front-end: counts the bytes each way.
struct Plain {
    s: TcpStream,
    buf: Vec<u8>,
    sent: usize,
    received: usize,
}

impl Plain {
    fn connect(addr: SocketAddr) -> Plain {
        let s = TcpStream::connect_timeout(&addr, WAIT).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        Plain {
            s,
            buf: Vec::new(),
            sent: 0,
            received: 0,
        }
    }

    fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
        self.sent += b.len();
    }

    fn reply(&mut self) -> String {
        loop {
            if let Some((r, n)) = parse_reply(&self.buf, &Default::default()).unwrap() {
                let text = String::from_utf8_lossy(r.raw()).into_owned();
                self.buf.drain(..n);
                return text;
            }
            let mut b = [0u8; 4096];
            let n = self.s.read(&mut b).unwrap();
            assert!(n > 0, "closed while we waited for a reply");
            self.received += n;
            self.buf.extend_from_slice(&b[..n]);
        }
    }

    fn expect(&mut self, line: &str, code: &str) {
        self.send(line.as_bytes());
        let r = self.reply();
        assert!(r.starts_with(code), "{line:?} got {r:?}");
    }

    /// One message, then QUIT and its 221.
    fn deliver(&mut self) {
        self.expect("MAIL FROM:<a@x.test>\r\n", "250");
        self.expect("RCPT TO:<b@y.test>\r\n", "250");
        self.expect("DATA\r\n", "354");
        self.expect("Subject: audit\r\n\r\nhello\r\n.\r\n", "250");
        self.expect("QUIT\r\n", "221");
    }

    /// Read to EOF (counting).
    fn drain(&mut self) {
        let mut rest = Vec::new();
        let _ = self.s.read_to_end(&mut rest);
        self.received += rest.len();
    }
}

/// The SOCKS5 handshake (RFC 1928, user name/password of RFC 1929) for a CONNECT to `dest`.
fn socks5_connect(s: &mut TcpStream, user: &str, pass: &str, dest: SocketAddr) {
    let mut b = [0u8; 10];
    s.write_all(&[5, 1, 2]).unwrap();
    s.read_exact(&mut b[..2]).unwrap();
    assert_eq!(b[..2], [5, 2]);
    let mut auth = vec![1, user.len() as u8];
    auth.extend_from_slice(user.as_bytes());
    auth.push(pass.len() as u8);
    auth.extend_from_slice(pass.as_bytes());
    s.write_all(&auth).unwrap();
    s.read_exact(&mut b[..2]).unwrap();
    assert_eq!(b[..2], [1, 0], "SOCKS5 authentication");
    let SocketAddr::V4(d) = dest else {
        panic!("an IPv4 MX")
    };
    let mut req = vec![5, 1, 0, 1];
    req.extend_from_slice(&d.ip().octets());
    req.extend_from_slice(&d.port().to_be_bytes());
    s.write_all(&req).unwrap();
    s.read_exact(&mut b).unwrap();
    assert_eq!(b[..2], [5, 0], "SOCKS5 CONNECT");
}

#[test]
fn native_sessions_new_then_reused_are_logged_by_default() {
    let s = Setup::new("");
    assert!(!s.yaml.contains("log_sessions"), "{}", s.yaml);
    let mut d = s.daemon();
    let proxy = d.wait_ready()[0];
    let r = s.request("127.0.0.2", true);
    for want in ["new", "reused"] {
        s.deliver(proxy, SECRET, &r, b"hello\r\n");
        let line = d.wait_for("session ended");
        assert!(
            line.starts_with("INFO  session ended mta=127.0.0.1:"),
            "{line}"
        );
        eprintln!("{line}");
        let f = session_fields(&line);
        assert_eq!(
            keys(&f),
            [
                "mta",
                "client",
                "frontend",
                "source",
                "mx",
                "ehlo",
                "tls",
                "tls_policy",
                "tls_verified",
                "connection",
                "messages",
                "octets_to_mx",
                "octets_to_mta",
                "duration",
                "tag"
            ],
            "{line}"
        );
        assert_eq!(field(&f, "client"), "default");
        assert_eq!(field(&f, "frontend"), format!("native@{proxy}"));
        assert_eq!(field(&f, "source"), "127.0.0.2");
        assert_eq!(field(&f, "mx"), s.mx.addr().to_string());
        assert_eq!(field(&f, "ehlo"), "mta.test");
        assert_eq!(field(&f, "tls"), "TLSv1.3");
        assert_eq!(field(&f, "tls_policy"), "opportunistic");
        assert_eq!(field(&f, "tls_verified"), "no");
        assert_eq!(field(&f, "connection"), want, "{line}");
        assert_eq!(field(&f, "messages"), "1");
        // MAIL (22), RCPT (20), DATA (6), the body (7) and its dot (3); the MX's four replies.
        assert_eq!(field(&f, "octets_to_mx"), "58", "{line}");
        let down: u64 = field(&f, "octets_to_mta").parse().unwrap();
        assert!(down > 4 * 8 && down < 400, "{line}");
        assert!(is_secs(field(&f, "duration")), "{line}");
        assert_eq!(field(&f, "tag"), "quit");
        // The connection is pooled before the next session asks for it.
        d.wait_for("kept for reuse");
    }
    assert_eq!(s.mx.stats().connections, 1);
}

#[test]
fn front_end_sessions_passthrough_and_smtp_mode_are_logged_with_what_each_knows() {
    let fronts = "frontends:\n\
        \x20 - kind: proxy_protocol\n    listen: [\"127.0.0.1:0\"]\n    mode: passthrough\n    client: default\n\
        \x20 - kind: proxy_protocol\n    listen: [\"127.0.0.1:0\"]\n    mode: smtp\n    tls: opportunistic\n    client: default\n\
        \x20 - kind: socks5\n    listen: [\"[::1]:0\"]\n    mode: smtp\n    tls: none\n    auth: password\n";
    let s = Setup::new(fronts);
    let mut d = s.daemon();
    let ready = d.wait_for(" ready on ");
    // Issue 26: the ready line names the front-ends, each with its kind and mode.
    let pass = front_end_in_ready_line(&ready, "proxy_protocol", "passthrough");
    let smtp = front_end_in_ready_line(&ready, "proxy_protocol", "smtp");
    let mx = s.mx.addr();
    let header = format!("PROXY TCP4 127.0.0.3 {} 40000 {}\r\n", mx.ip(), mx.port());

    // Passthrough: the MTA speaks to the MX itself (no STARTTLS here); the proxy sees bytes.
    let mut m = Plain::connect(pass);
    m.s.write_all(header.as_bytes()).unwrap();
    assert!(m.reply().starts_with("220"));
    m.expect("EHLO pass.test\r\n", "250");
    m.deliver();
    // The MX closes after its 221; the proxy passes the close on, then the MTA closes.
    m.drain();
    m.s.shutdown(std::net::Shutdown::Write).unwrap();
    let line = d.wait_for("passthrough session ended");
    assert!(
        line.starts_with("INFO  passthrough session ended: the MX closed the connection mta="),
        "{line}"
    );
    eprintln!("{line}");
    let f = session_fields(&line);
    assert_eq!(
        keys(&f),
        [
            "mta",
            "client",
            "frontend",
            "source",
            "mx",
            "connection",
            "octets_to_mx",
            "octets_to_mta",
            "duration",
            "tag"
        ],
        "no ehlo, tls or messages in passthrough: {line}"
    );
    // Issue 26: the passthrough end line names the client.
    assert_eq!(field(&f, "client"), "default");
    assert_eq!(
        field(&f, "frontend"),
        format!("proxy_protocol/passthrough@{pass}")
    );
    assert_eq!(field(&f, "source"), "127.0.0.3");
    assert_eq!(field(&f, "mx"), mx.to_string());
    assert_eq!(field(&f, "connection"), "new");
    // Exactly the bytes the MTA sent after the header, and those it received.
    assert_eq!(field(&f, "octets_to_mx"), m.sent.to_string(), "{line}");
    assert_eq!(field(&f, "octets_to_mta"), m.received.to_string(), "{line}");
    assert!(is_secs(field(&f, "duration")), "{line}");
    assert_eq!(field(&f, "tag"), "mx_closed");

    // mode: smtp: the proxy answers banner and EHLO, does STARTTLS toward the MX itself.
    let mut m = Plain::connect(smtp);
    m.s.write_all(header.as_bytes()).unwrap();
    assert!(m.reply().starts_with("220"));
    m.expect("EHLO smtp-mode.test\r\n", "250");
    m.deliver();
    let line = d.wait_for("session ended mta=");
    eprintln!("{line}");
    let f = session_fields(&line);
    assert_eq!(field(&f, "client"), "default");
    assert_eq!(field(&f, "frontend"), format!("proxy_protocol/smtp@{smtp}"));
    assert_eq!(field(&f, "source"), "127.0.0.3");
    assert_eq!(field(&f, "mx"), mx.to_string());
    assert_eq!(field(&f, "ehlo"), "smtp-mode.test");
    assert_eq!(field(&f, "tls"), "TLSv1.3");
    assert_eq!(field(&f, "connection"), "new");
    assert_eq!(field(&f, "messages"), "1");
    assert_eq!(field(&f, "tag"), "quit");
    // MAIL (22), RCPT (20), DATA (6), the body (25) and its dot (3).
    assert_eq!(field(&f, "octets_to_mx"), "76", "{line}");

    // SOCKS5 (over IPv6 to the proxy), mode: smtp without TLS: user name = source.
    let socks = front_end_in_ready_line(&ready, "socks5", "smtp");
    let mut m = Plain::connect(socks);
    socks5_connect(&mut m.s, "127.0.0.2", SECRET, mx);
    assert!(m.reply().starts_with("220"));
    m.expect("EHLO socks.test\r\n", "250");
    m.deliver();
    let line = d.wait_for("session ended mta=[::1]:");
    eprintln!("{line}");
    let f = session_fields(&line);
    assert_eq!(field(&f, "client"), "default");
    assert_eq!(field(&f, "frontend"), format!("socks5/smtp@{socks}"));
    assert_eq!(field(&f, "source"), "127.0.0.2");
    assert_eq!(field(&f, "ehlo"), "socks.test");
    assert_eq!(field(&f, "tls"), "none");
    assert_eq!(field(&f, "messages"), "1");
    assert_eq!(field(&f, "tag"), "quit");
    let st = s.mx.state();
    assert_eq!(st.messages.len(), 3, "every message reached the MX");
}

#[test]
fn log_sessions_false_turns_the_line_off() {
    let s = Setup::new("log_sessions: false\n");
    let mut d = s.daemon();
    let proxy = d.wait_ready()[0];
    s.deliver(proxy, SECRET, &s.request("127.0.0.2", true), b"hello\r\n");
    // Logged (log_verbose) after the session's end, where the session line would be.
    d.wait_for("kept for reuse");
    assert!(
        d.seen().iter().all(|l| !l.contains("session ended")),
        "{:?}",
        d.seen()
    );
    assert_eq!(s.mx.state().messages.len(), 1);
}

#[test]
fn a_single_address_that_fails_is_not_followed_by_trying_the_next() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let s = Setup::new(&format!("destination_ports: [{}]\n", closed.port()));
    let mut d: Daemon = s.daemon();
    let proxy = d.wait_ready()[0];
    let mut c = s.client(proxy, SECRET);
    let r = fixtures::req(
        "127.0.0.2",
        closed,
        greenarrow_proxy_proto::protocol::TlsPolicy::None,
    );
    assert!(c.open(&r).is_err());
    d.wait_for("tag=connect_refused");
    assert!(
        d.seen()
            .iter()
            .all(|l| !l.contains("trying the next address")),
        "{:?}",
        d.seen()
    );
}
