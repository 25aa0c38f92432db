//! Failures an MTA can read (PROXY: one `421` line; SOCKS5: reply codes) and health checks
//! that are closed quietly.

use super::*;

/// Send `header` to the PROXY front-end; everything the proxy wrote before closing.
fn proxy_answer(fe: SocketAddr, header: &[u8]) -> String {
    let mut s = TcpStream::connect(fe).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(header).unwrap();
    let mut v = Vec::new();
    s.read_to_end(&mut v).unwrap();
    String::from_utf8_lossy(&v).into_owned()
}

fn assert_421(answer: &str, tag: &str) {
    let prefix = format!("421 4.4.0 greenarrow_proxy: {tag} ");
    assert!(
        answer.starts_with(&prefix),
        "{answer:?} should start with {prefix:?}"
    );
    assert!(answer.ends_with("\r\n"), "{answer:?}");
    assert_eq!(
        answer.matches("\r\n").count(),
        1,
        "one line, then EOF: {answer:?}"
    );
}

#[test]
fn proxy_failures_are_one_readable_421_line() {
    let mx = tls_mx(Faults::default());
    let refused = closed_port();
    let h = Harness::start(
        &[mx.addr().port(), refused],
        &format!(
            "source_addresses: [127.0.0.0/8, \"::1\", 192.0.2.1]\n{}",
            passthrough_config()
        ),
    );
    let fe = h.frontend(PP);
    let port = mx.addr().port();
    let v1 =
        |src: &str, dport: u16| format!("PROXY TCP4 {src} 127.0.0.1 1 {dport}\r\n").into_bytes();
    // A source outside source_addresses (never dialled: refused by policy).
    assert_421(
        &proxy_answer(fe, &v1("198.51.100.7", port)),
        "source_not_permitted",
    );
    let v2 = kumo::proxy_v2_header(ip("198.51.100.7"), mx.addr());
    assert_421(&proxy_answer(fe, &v2), "source_not_permitted");
    // A port not in destination_ports.
    assert_421(
        &proxy_answer(fe, &v1("127.0.0.2", 9)),
        "destination_not_permitted",
    );
    // Permitted but not on this host: the bind fails (EADDRNOTAVAIL), no packet leaves.
    assert_421(
        &proxy_answer(fe, &v1("192.0.2.1", port)),
        "source_not_local",
    );
    // Nothing listens there.
    assert_421(
        &proxy_answer(fe, &v1("127.0.0.2", refused)),
        "connect_refused",
    );
    // Not a PROXY header at all (an MTA not configured for the PROXY protocol), and a
    // malformed one: the tags of the header parser.
    assert_421(
        &proxy_answer(fe, b"EHLO mta1.example.com\r\n"),
        "proxy_header_missing",
    );
    assert_421(
        &proxy_answer(fe, b"PROXY TCP4 127.0.0.2 127.0.0.1 1 70000\r\n"),
        "proxy_header_invalid",
    );
    assert_eq!(mx.stats().connections, 0);

    // What an MTA makes of it: swaks reports the line as the server's banner.
    let mail = Mail::new("refused");
    let p = SwaksProxy::v1(ip("198.51.100.7"), mx.addr());
    let Some(out) = clients::swaks(fe, Some(&p), false, &mail) else {
        return;
    };
    assert!(!out.ok(), "{out}");
    assert!(
        out.stdout
            .contains("421 4.4.0 greenarrow_proxy: source_not_permitted"),
        "{out}"
    );
}

#[test]
fn socks5_failures_have_the_right_reply_codes() {
    let mx = tls_mx(Faults::default());
    let refused = closed_port();
    let h = Harness::start(
        &[mx.addr().port(), refused],
        &format!(
            "source_addresses: [127.0.0.0/8, \"::1\", 192.0.2.1]\n{}",
            passthrough_config()
        ),
    );
    let fe = h.frontend(SOCKS);
    let attempt = |user: &str, bind: Option<&str>, dest: SocketAddr| {
        let mut s = TcpStream::connect(fe).unwrap();
        kumo::socks5_handshake(&mut s, Some((user, SECRET)), bind.map(ip), dest)
            .map(|_| ())
            .unwrap_err()
    };
    let code = |e: SocksError| e.code().unwrap_or_else(|| panic!("{e}"));
    let local = |port| SocketAddr::new(ip("127.0.0.1"), port);
    // Source not permitted: by user name (at CONNECT) and by BIND.
    assert_eq!(
        code(attempt("198.51.100.7", None, mx.addr())),
        (Step::Connect, 2)
    );
    assert_eq!(
        code(attempt("", Some("198.51.100.7"), mx.addr())),
        (Step::Bind, 2)
    );
    // Port not in destination_ports.
    assert_eq!(
        code(attempt("127.0.0.2", None, local(9))),
        (Step::Connect, 2)
    );
    // Connection refused by a permitted destination.
    assert_eq!(
        code(attempt("127.0.0.2", None, local(refused))),
        (Step::Connect, 5)
    );
    // BIND of a permitted source that is not on this host.
    assert_eq!(code(attempt("", Some("192.0.2.1"), mx.addr())).1, 1);
    // A wrong secret fails the RFC 1929 sub-negotiation.
    let mut s = TcpStream::connect(fe).unwrap();
    match kumo::socks5_handshake(&mut s, Some(("127.0.0.2", "wrong")), None, mx.addr()) {
        Err(SocksError::Auth(st)) => assert!(st[0] == 1 && st[1] != 0, "{st:02x?}"),
        other => panic!("expected an auth failure, got {other:?}"),
    }
    // `auth: password` does not accept a client that offers no authentication.
    let mut s = TcpStream::connect(fe).unwrap();
    match kumo::socks5_handshake(&mut s, None, None, mx.addr()) {
        Err(SocksError::Method(m)) => assert_eq!(m, [5, 0xff]),
        other => panic!("expected no acceptable method, got {other:?}"),
    }
    assert_eq!(mx.stats().connections, 0);
}

// ================================================================ health checks

mod logcap {
    //! Every log record of this test process, with its key-values.
    use log::{Level, LevelFilter, Log, Metadata, Record};
    use parking_lot::Mutex;

    static RECORDS: Mutex<Vec<(Level, String)>> = Mutex::new(Vec::new());

    struct Capture;

    struct Kv(String);

    impl<'kvs> log::kv::VisitSource<'kvs> for Kv {
        fn visit_pair(
            &mut self,
            k: log::kv::Key<'kvs>,
            v: log::kv::Value<'kvs>,
        ) -> Result<(), log::kv::Error> {
            self.0.push_str(&format!(" {k}={v}"));
            Ok(())
        }
    }

    impl Log for Capture {
        fn enabled(&self, _: &Metadata) -> bool {
            true
        }
        fn log(&self, r: &Record) {
            let mut kv = Kv(String::new());
            let _ = r.key_values().visit(&mut kv);
            RECORDS
                .lock()
                .push((r.level(), format!("{}{}", r.args(), kv.0)));
        }
        fn flush(&self) {}
    }

    static CAPTURE: Capture = Capture;

    pub fn install() {
        if log::set_logger(&CAPTURE).is_ok() {
            log::set_max_level(LevelFilter::Debug);
        }
    }

    /// Records at `level` or more severe that mention `needle`.
    pub fn find(level: Level, needle: &str) -> Vec<String> {
        RECORDS
            .lock()
            .iter()
            .filter(|(l, t)| *l <= level && t.contains(needle))
            .map(|(l, t)| format!("{l} {t}"))
            .collect()
    }
}

#[test]
fn health_checks_are_closed_quietly() {
    logcap::install();
    let mx = tls_mx(Faults::default());
    let h = passthrough(&[mx.addr().port()]);
    let mut local_v2 = kumo::V2_SIGNATURE.to_vec();
    local_v2.extend([0x20, 0x00, 0x00, 0x00]); // v2, LOCAL, UNSPEC, no addresses
    for header in [local_v2, b"PROXY UNKNOWN\r\n".to_vec()] {
        let mut s = TcpStream::connect(h.frontend(PP)).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let me = s.local_addr().unwrap().to_string();
        s.write_all(&header).unwrap();
        let mut v = Vec::new();
        s.read_to_end(&mut v).unwrap();
        assert!(
            v.is_empty(),
            "closed without a byte, got {:?}",
            String::from_utf8_lossy(&v)
        );
        // The session logs (if at all) before it closes the socket.
        let loud = logcap::find(log::Level::Warn, &me);
        assert!(loud.is_empty(), "{loud:?}");
    }
    assert_eq!(mx.stats().connections, 0);
}
