//! Faults on the MTA side: a client that drops, sends garbage or too much, speaks before TLS,
//! guesses secrets, keeps talking after QUIT, or tries SMTP smuggling.

use crate::common::*;
use crate::util::*;
use greenarrow_proxy_proto::protocol::TlsPolicy;
use greenarrow_proxy_testkit::testmx::Faults;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A reused connection, and the MTA vanishes in the middle of its body: the MX connection is
/// closed without the end of data, the MX keeps only the earlier complete message, the MTA
/// was told nothing (it is gone), nothing is pooled.
#[test]
fn mta_drops_mid_body_on_a_reused_connection() {
    let m = mx(Faults::default());
    let good = mx(Faults::default());
    let h = proxy(&[&m, &good], "");
    let r = reuse_req(m.addr());
    let (mut raw, _) = open(&h, &r);
    start_data(&mut raw);
    let end = exchange(&mut raw, b"Subject: one\r\n\r\nwhole\r\n.\r\n", 1);
    assert!(end[0].starts_with("250 "), "{end:?}");
    smtp_quit_then_noop(&mut raw);
    assert_eq!(pooled(&h), 1);
    drop(raw);

    let (mut raw, ready) = open(&h, &r);
    assert!(ready.starts_with("250-connection=reused"), "{ready}");
    start_data(&mut raw);
    raw.send(b"Subject: two\r\n\r\nthe first half of a message\r\n");
    // Wait until the MX holds those body bytes, then vanish.
    assert!(
        m.wait_until(WAIT, |st| st.connections.first().is_some_and(|c| c
            .commands
            .iter()
            .filter(|l| *l == "DATA")
            .count()
            == 2))
    );
    drop(raw);
    wait_closed(&m, 0);
    assert!(m.connections()[0].aborted_data);
    assert_eq!(m.messages().len(), 1);
    assert_eq!(m.messages()[0].content, b"Subject: one\r\n\r\nwhole\r\n");
    assert_eq!(pooled(&h), 0);
    good_session(&h, &good);
}

/// Garbage in the command state: each line gets `500 protocol_error`; the tenth closes the
/// connection. Nothing reaches any MX.
#[test]
fn garbage_in_the_command_state() {
    let good = mx(Faults::default());
    let h = proxy(&[&good], "");
    let mut raw = h.raw();
    raw.send(format!("AUTH 1 {SECRET}\r\n").as_bytes());
    assert!(raw.reply().starts_with("235"));
    let garbage: [&[u8]; 5] = [
        b"\x00\x01\x02\xff\xfe\r\n",
        b"MAIL FROM:<a@x.test>\r\n",
        b"CONNECT\r\n",
        b"CONNECT source=127.0.0.2 host=127.0.0.1 ehlo=a port=\xc3\xa9\r\n",
        b"\r\n",
    ];
    for i in 0..10 {
        raw.send(garbage[i % garbage.len()]);
        let r = raw.reply();
        assert!(r.starts_with("500 5.5.2 protocol_error "), "{i}: {r}");
    }
    assert!(raw.closed());
    assert_eq!(good.stats().connections, 0);
    good_session(&h, &good);
}

/// A request line longer than 2048 octets: `500` and the connection is closed (the proxy
/// does not try to find the end of it).
#[test]
fn overlong_line_in_the_command_state() {
    let good = mx(Faults::default());
    let h = proxy(&[&good], "");
    let mut raw = h.raw();
    let mut line = b"AUTH 1 ".to_vec();
    line.extend(std::iter::repeat_n(b'x', 5000));
    line.extend_from_slice(b"\r\n");
    raw.send(&line);
    let r = raw.reply();
    assert!(r.starts_with("500 5.5.2 protocol_error "), "{r}");
    assert!(raw.closed());
    good_session(&h, &good);
}

/// A command line longer than `limits.max_command_line` in the SMTP state: the proxy answers
/// `500 5.5.2 line too long`, the MX sees no part of it, the session goes on and the
/// connection is clean enough to be pooled.
#[test]
fn overlong_line_in_the_smtp_state() {
    let m = mx(Faults::default());
    let good = mx(Faults::default());
    let h = proxy(&[&m, &good], "");
    let (mut raw, _) = open(&h, &reuse_req(m.addr()));
    let mut line = b"MAIL FROM:<".to_vec();
    line.extend(std::iter::repeat_n(b'x', 10_000));
    line.extend_from_slice(b"@x.test>\r\n");
    let r = exchange(&mut raw, &line, 1);
    assert_eq!(r[0], "500 5.5.2 line too long\r\n");
    // Binary garbage that fits is relayed byte for byte; the MX refuses it.
    let r = exchange(&mut raw, b"\x00\xff\x7f garbage\r\n", 1);
    assert!(r[0].starts_with('5'), "{r:?}");
    start_data(&mut raw);
    let end = exchange(&mut raw, b"Subject: after\r\n\r\nok\r\n.\r\n", 1);
    assert!(end[0].starts_with("250 "), "{end:?}");
    smtp_quit_then_noop(&mut raw);
    assert!(m.wait_until(WAIT, |st| st.messages.len() == 1));
    let cmds = commands(&m, 0);
    assert!(cmds.iter().all(|c| c.len() < 100), "{cmds:?}");
    assert_eq!(m.messages()[0].content, b"Subject: after\r\n\r\nok\r\n");
    assert_eq!(pooled(&h), 1);
    good_session(&h, &good);
}

/// Plaintext protocol to the TLS listener: the proxy answers nothing in plaintext (at most a
/// TLS alert record) and closes.
#[test]
fn plaintext_before_tls() {
    let good = mx(Faults::default());
    let h = proxy(&[&good], "");
    let mut tcp = TcpStream::connect(h.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(format!("AUTH 1 {SECRET}\r\nNOOP\r\n").as_bytes())
        .unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 512];
    loop {
        match tcp.read(&mut b) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&b[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the proxy did not close the connection: {e}"),
        }
    }
    assert!(got.is_empty() || got[0] == 0x15, "not a TLS alert: {got:?}");
    good_session(&h, &good);
}

/// Twenty connections with a wrong secret: each gets `535` and is closed; none reaches an
/// MX; the daemon keeps serving. (No throttling: see docs/SECURITY.md.)
#[test]
fn wrong_secret_repeatedly() {
    let good = mx(Faults::default());
    let h = proxy(&[&good], "");
    for i in 0..20 {
        let mut raw = h.raw();
        let guess = format!("wrong-secret-{i:02}-0123456789abcdef-0123456789abcdef");
        raw.send(
            format!(
                "AUTH 1 {guess}\r\n{}",
                req("127.0.0.2", good.addr(), TlsPolicy::None).to_line()
            )
            .as_bytes(),
        );
        let r = raw.reply();
        assert!(r.starts_with("535 5.7.8 auth_failed "), "{r}");
        // The pipelined CONNECT is never answered: the connection is closed.
        assert!(raw.closed());
    }
    assert_eq!(good.stats().connections, 0);
    good_session(&h, &good);
}

/// After the proxy-level QUIT the connection is closed, whatever was pipelined behind it.
#[test]
fn commands_after_the_proxy_quit() {
    let good = mx(Faults::default());
    let h = proxy(&[&good], "");
    let mut raw = h.raw();
    raw.send(
        format!(
            "AUTH 1 {SECRET}\r\nQUIT\r\nNOOP\r\n{}",
            req("127.0.0.2", good.addr(), TlsPolicy::None).to_line()
        )
        .as_bytes(),
    );
    assert!(raw.reply().starts_with("235"));
    assert!(raw.reply().starts_with("221 "));
    assert!(raw.closed());
    assert_eq!(good.stats().connections, 0);
    good_session(&h, &good);
}

/// After the SMTP-level QUIT the next line is a proxy command: an SMTP command pipelined
/// behind QUIT gets `500 protocol_error` and never reaches the MX; NOOP and CONNECT work.
#[test]
fn commands_after_the_smtp_quit() {
    let m = mx(Faults::default());
    let good = mx(Faults::default());
    let h = proxy(&[&m, &good], "");
    let (mut raw, _) = open(&h, &reuse_req(m.addr()));
    let r = exchange(
        &mut raw,
        b"NOOP\r\nQUIT\r\nMAIL FROM:<late@x.test>\r\nNOOP\r\n",
        4,
    );
    assert!(r[0].starts_with("250"), "{r:?}");
    assert!(r[1].starts_with("221 "), "{r:?}");
    assert!(r[2].starts_with("500 5.5.2 protocol_error "), "{r:?}");
    assert_eq!(r[3], "250 2.0.0 ok\r\n");
    assert!(!commands(&m, 0).iter().any(|c| c.contains("late@")));
    assert_eq!(pooled(&h), 1);
    // The same MTA connection can CONNECT again, and gets the pooled connection.
    raw.send(reuse_req(m.addr()).to_line().as_bytes());
    assert!(raw.reply().starts_with("250-connection=reused"));
    smtp_quit_then_noop(&mut raw);
    good_session(&h, &good);
}

/// SMTP smuggling through the real proxy: a body with `<LF>.<CR><LF>` (or `<CR><LF>.<LF>`)
/// followed by a second transaction. The MX never receives a message (its connection is
/// closed without an end of data, the smuggled MAIL never reaches it), the MTA gets `554`.
#[test]
fn smtp_smuggling_is_refused() {
    let good = mx(Faults::default());
    for smuggle in [&b"\n.\r\n"[..], b"\r\n.\n", b"\r.\r\n", b"\n.\n"] {
        let m = mx(Faults::default());
        let h = proxy(&[&m, &good], "");
        let (mut raw, _) = open(&h, &reuse_req(m.addr()));
        start_data(&mut raw);
        let mut body = b"Subject: smuggle\r\n\r\nhello".to_vec();
        body.extend_from_slice(smuggle);
        body.extend_from_slice(
            b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@y.test>\r\nDATA\r\n\r\nsmuggled\r\n.\r\n",
        );
        let r = exchange(&mut raw, &body, 1);
        assert!(r[0].starts_with("554 5.6.0 "), "{smuggle:?}: {r:?}");
        smtp_quit_then_noop(&mut raw);
        wait_closed(&m, 0);
        assert!(m.messages().is_empty(), "{smuggle:?}");
        let cmds = commands(&m, 0);
        assert!(!cmds.iter().any(|c| c.contains("evil@")), "{cmds:?}");
        assert_eq!(pooled(&h), 0);
        good_session(&h, &good);
    }
}
