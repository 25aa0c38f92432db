//! Socket tests of the test MX: real connections on 127.0.0.1 and ::1, raw SMTP.

mod client;
mod faults;

use super::*;
use client::{acceptor, Client};
use std::sync::atomic::AtomicU64;
use std::time::Instant;

const WAIT: Duration = Duration::from_secs(10);

fn start(config: TestMxConfig) -> TestMx {
    TestMx::start(config).unwrap()
}

fn tls_config() -> TestMxConfig {
    TestMxConfig {
        starttls: Some(acceptor()),
        ..TestMxConfig::default()
    }
}

/// Whether an EHLO reply lists `ext` as one of its lines.
fn has_ext(ehlo: &str, ext: &str) -> bool {
    ehlo.lines().skip(1).any(|l| l.get(4..) == Some(ext))
}

/// Wait until connection `i` is recorded as closed, and return its record.
fn closed_conn(mx: &TestMx, i: usize) -> ConnRecord {
    assert!(mx.wait_until(WAIT, |s| s.connections.get(i).is_some_and(|c| c.closed)));
    mx.connections()[i].clone()
}

#[test]
fn plain_message_arrives_exactly_over_ipv4_and_ipv6() {
    for bind in ["127.0.0.1:0", "[::1]:0"] {
        let mx = start(TestMxConfig {
            bind: bind.parse().unwrap(),
            ..TestMxConfig::default()
        });
        let mut c = Client::connect_raw(mx.addr());
        assert_eq!(c.reply(), "220 mx.test ESMTP greenarrow_proxy test MX\r\n");
        let ehlo = c.cmd("EHLO client.test", "250");
        assert!(
            ehlo.starts_with("250-mx.test greets client.test\r\n"),
            "{ehlo}"
        );
        for ext in [
            "SIZE 52428800",
            "PIPELINING",
            "8BITMIME",
            "SMTPUTF8",
            "CHUNKING",
        ] {
            assert!(has_ext(&ehlo, ext), "{ext} missing in {ehlo}");
        }
        assert!(
            !ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
            "{ehlo}"
        );
        assert!(ehlo.ends_with("250 CHUNKING\r\n"), "{ehlo}");

        // Pipelined envelope, then a body with stuffed dots and an unterminated last line
        // (which the client terminates with CRLF before the final dot).
        c.send(b"MAIL FROM:<a@x.test> BODY=8BITMIME\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<c@z.test>\r\nDATA\r\n");
        for code in ["250", "250", "250", "354"] {
            c.expect(code);
        }
        let wire = b"Subject: t\r\n\r\n..dot line\r\n...two\r\nmid . dot\r\nno newline\r\n.\r\n";
        c.send(wire);
        assert_eq!(c.reply(), "250 2.0.0 queued as 1\r\n");
        c.cmd("QUIT", "221");
        assert!(c.read_to_end().is_empty());

        let conn = closed_conn(&mx, 0);
        let m = &mx.messages()[0];
        assert_eq!(m.mail_from, "a@x.test");
        assert_eq!(m.rcpt_to, vec!["b@y.test", "c@z.test"]);
        assert_eq!(
            m.content,
            b"Subject: t\r\n\r\n.dot line\r\n..two\r\nmid . dot\r\nno newline\r\n"
        );
        assert_eq!(m.raw, &wire[..wire.len() - 3]);
        assert!(!m.via_bdat && !m.tls);
        assert_eq!((m.conn_index, m.peer), (0, c.local));
        assert_eq!(conn.peer, c.local);
        assert_eq!(conn.local, mx.addr());
        assert_eq!(conn.ehlo_names, vec!["client.test"]);
        assert_eq!(
            conn.commands,
            vec![
                "EHLO client.test",
                "MAIL FROM:<a@x.test> BODY=8BITMIME",
                "RCPT TO:<b@y.test>",
                "RCPT TO:<c@z.test>",
                "DATA",
                "QUIT"
            ]
        );
        assert!(conn.quit_received && !conn.aborted_data && !conn.helo_used);
        assert_eq!(conn.messages, 1);
        let st = mx.stats();
        assert_eq!((st.connections, st.open_connections), (1, 0));
        assert_eq!((st.messages, st.quits, st.tls_handshakes), (1, 1, 0));
        assert_eq!(st.bytes, m.raw.len() as u64);
    }
}

#[test]
fn empty_body_and_helo() {
    let mx = start(TestMxConfig::default());
    let mut c = Client::connect(mx.addr());
    assert_eq!(
        c.cmd("HELO old.test", "250"),
        "250 mx.test greets old.test\r\n"
    );
    c.send_message("", &["r@x"], b".\r\n");
    let m = &mx.messages()[0];
    assert!(m.content.is_empty() && m.raw.is_empty());
    assert_eq!(m.mail_from, "");
    let conn = &mx.connections()[0];
    assert!(conn.helo_used);
}

#[test]
fn bdat_two_chunks() {
    let mx = start(TestMxConfig::default());
    let mut c = Client::connect(mx.addr());
    c.cmd("EHLO c", "250");
    // BDAT before any transaction: the chunk is read and refused, the stream stays in step.
    c.send(b"BDAT 3\r\nxyzNOOP\r\n");
    c.expect("503");
    c.expect("250");
    c.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 7\r\nab\r\n.cdBDAT 3 LAST\r\nxyz");
    c.expect("250");
    c.expect("250");
    assert_eq!(c.reply(), "250 2.0.0 7 octets received\r\n");
    assert_eq!(c.reply(), "250 2.0.0 queued as 1\r\n");
    // A zero-length last chunk completes a message too.
    c.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 2\r\nhiBDAT 0 LAST\r\n");
    for code in ["250", "250", "250", "250"] {
        c.expect(code);
    }
    let msgs = mx.messages();
    assert_eq!(msgs[0].raw, b"ab\r\n.cdxyz");
    assert_eq!(msgs[0].content, b"ab\r\n.cdxyz");
    assert!(msgs[0].via_bdat);
    assert_eq!(msgs[1].content, b"hi");
    assert_eq!(
        mx.connections()[0].commands,
        vec![
            "EHLO c",
            "BDAT 3",
            "NOOP",
            "MAIL FROM:<a@b>",
            "RCPT TO:<c@d>",
            "BDAT 7",
            "BDAT 3 LAST",
            "MAIL FROM:<a@b>",
            "RCPT TO:<c@d>",
            "BDAT 2",
            "BDAT 0 LAST"
        ]
    );
}

#[test]
fn starttls_then_message_records_tls() {
    let mx = start(tls_config());
    let mut c = Client::connect(mx.addr());
    assert!(has_ext(&c.cmd("EHLO c", "250"), "STARTTLS"));
    c.cmd("STARTTLS", "220");
    c.upgrade(WAIT).unwrap();
    assert_eq!(c.tls_version().as_deref(), Some("TLSv1.3"));
    // RFC 3207: the client must greet again; STARTTLS is no longer offered.
    c.cmd("MAIL FROM:<a@b>", "503");
    assert!(!has_ext(&c.cmd("EHLO c2", "250"), "STARTTLS"));
    c.cmd("STARTTLS", "503");
    c.send_message("a@b", &["c@d"], b"secret\r\n.\r\n");
    c.cmd("QUIT", "221");
    let conn = closed_conn(&mx, 0);
    assert_eq!(conn.tls_version.as_deref(), Some("TLSv1.3"));
    assert!(conn
        .tls_cipher
        .as_deref()
        .is_some_and(|s| s.starts_with("TLS13_")));
    assert_eq!(conn.tls_error, None);
    assert_eq!(conn.ehlo_names, vec!["c", "c2"]);
    let m = &mx.messages()[0];
    assert!(m.tls);
    assert_eq!(m.content, b"secret\r\n");
    assert_eq!(mx.stats().tls_handshakes, 1);
}

#[test]
fn implicit_tls() {
    let mx = start(TestMxConfig {
        implicit_tls: true,
        ..tls_config()
    });
    let mut c = Client::connect_raw(mx.addr());
    c.upgrade(WAIT).unwrap();
    c.expect("220 mx.test");
    assert!(!c.cmd("EHLO c", "250").contains("STARTTLS"));
    c.send_message("a@b", &["c@d"], b"x\r\n.\r\n");
    assert!(mx.messages()[0].tls);
    assert!(TestMx::start(TestMxConfig {
        implicit_tls: true,
        ..TestMxConfig::default()
    })
    .is_err());
}

#[test]
fn bytes_pipelined_after_starttls_drop_the_connection() {
    let mx = start(tls_config());
    let mut c = Client::connect(mx.addr());
    c.cmd("EHLO c", "250");
    c.send(b"STARTTLS\r\nEHLO sneaky\r\n");
    c.expect("220");
    assert!(c.read_to_end().is_empty());
    let conn = closed_conn(&mx, 0);
    assert!(
        conn.tls_error.as_deref().unwrap().contains("pipelined"),
        "{conn:?}"
    );
    assert_eq!(conn.tls_version, None);
    assert_eq!(conn.ehlo_names, vec!["c"]);
}

#[test]
fn wait_until_wakes_on_a_state_change() {
    let mx = Arc::new(start(TestMxConfig::default()));
    let waiter = {
        let mx = mx.clone();
        thread::spawn(move || {
            let t = Instant::now();
            let ok = mx.wait_until(Duration::from_secs(60), |s| s.messages.len() == 1);
            (ok, t.elapsed())
        })
    };
    let mut c = Client::connect(mx.addr());
    c.cmd("EHLO c", "250");
    c.send_message("a@b", &["c@d"], b"x\r\n.\r\n");
    let (ok, took) = waiter.join().unwrap();
    assert!(ok);
    assert!(took < Duration::from_secs(30), "{took:?}");

    let t = Instant::now();
    assert!(!mx.wait_until(Duration::from_millis(100), |s| s.messages.len() == 2));
    assert!(t.elapsed() >= Duration::from_millis(100));
}

#[test]
fn drop_idle_connections_closes_sockets() {
    let mx = start(TestMxConfig::default());
    let mut a = Client::connect(mx.addr());
    let mut b = Client::connect(mx.addr());
    a.cmd("EHLO a", "250");
    b.cmd("EHLO b", "250");
    assert!(mx.wait_until(WAIT, |s| s.stats.open_connections == 2));
    mx.drop_idle_connections();
    assert!(a.read_to_end().is_empty());
    assert!(b.read_to_end().is_empty());
    assert!(closed_conn(&mx, 0).closed && closed_conn(&mx, 1).closed);
    assert!(mx.wait_until(WAIT, |s| s.stats.open_connections == 0));
    // The listener still accepts.
    Client::connect(mx.addr()).cmd("NOOP", "250");
}

#[test]
fn shutdown_closes_connections_and_joins() {
    let mx = start(TestMxConfig::default());
    let mut c = Client::connect(mx.addr());
    c.cmd("EHLO c", "250");
    let addr = mx.addr();
    mx.shutdown();
    assert!(c.read_to_end().is_empty());
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn peer_vanishing_mid_body_is_recorded() {
    let mx = start(TestMxConfig::default());
    let mut c = Client::connect(mx.addr());
    c.cmd("EHLO c", "250");
    c.cmd("MAIL FROM:<a@b>", "250");
    c.cmd("RCPT TO:<c@d>", "250");
    c.cmd("DATA", "354");
    c.send(b"half a mess");
    drop(c);
    let conn = closed_conn(&mx, 0);
    assert!(conn.aborted_data && !conn.quit_received);
    assert!(mx.messages().is_empty());
}

#[test]
fn protocol_errors_end_nothing_but_the_command() {
    let mx = start(TestMxConfig {
        max_message_size: 100,
        ..TestMxConfig::default()
    });
    let mut c = Client::connect(mx.addr());
    c.cmd("MAIL FROM:<a@b>", "503");
    c.cmd("EHLO", "501");
    c.cmd("EHLO c", "250");
    c.cmd("RCPT TO:<c@d>", "503");
    c.cmd("DATA", "503");
    c.cmd("MAIL FROM:a@b SIZE=999999999", "552");
    c.cmd("MAIL FROM:<a@b", "501");
    c.cmd("MAIL FROM:<a@b>", "250");
    c.cmd("MAIL FROM:<a@b>", "503");
    c.cmd("DATA", "554");
    c.cmd("RCPT TO:", "501");
    c.cmd("FROB", "500");
    c.cmd("AUTH PLAIN AAAA", "502");
    c.cmd("STARTTLS", "502");
    c.cmd("RSET", "250");
    c.send(b"\x00\xff\xfe garbage\r\n");
    c.expect("500");
    let long = format!("NOOP {}\r\n", "A".repeat(5000));
    c.send(long.as_bytes());
    c.expect("500 5.5.2 line too long");
    c.cmd("NOOP", "250");
    // A message over max_message_size is read to its end and refused.
    c.cmd("MAIL FROM:<a@b>", "250");
    c.cmd("RCPT TO:<c@d>", "250");
    c.cmd("DATA", "354");
    c.send(format!("{}\r\n.\r\n", "x".repeat(300)).as_bytes());
    c.expect("552");
    c.send_message("a@b", &["c@d"], b"small\r\n.\r\n");
    // A BDAT without a usable size cannot be followed: 501 and close.
    c.cmd("BDAT x", "501");
    assert!(c.read_to_end().is_empty());
    assert_eq!(mx.messages().len(), 1);
    let conn = closed_conn(&mx, 0);
    assert!(conn
        .commands
        .contains(&"\u{0}\u{fffd}\u{fffd} garbage".to_string()));
}

#[test]
fn auth_plain_and_login_accept_anything() {
    let mx = start(TestMxConfig {
        auth: true,
        ..TestMxConfig::default()
    });
    let mut c = Client::connect(mx.addr());
    assert!(has_ext(&c.cmd("EHLO c", "250"), "AUTH PLAIN LOGIN"));
    c.cmd("AUTH PLAIN AHVzZXIAcGFzcw==", "235");
    c.cmd("AUTH PLAIN AHVzZXIAcGFzcw==", "503");

    let mut c = Client::connect(mx.addr());
    c.cmd("EHLO c", "250");
    c.cmd("AUTH LOGIN", "334 VXNlcm5hbWU6");
    c.cmd("dXNlcg==", "334 UGFzc3dvcmQ6");
    c.cmd("cGFzcw==", "235");

    let mut c = Client::connect(mx.addr());
    c.cmd("EHLO c", "250");
    c.cmd("AUTH PLAIN", "334");
    c.cmd("*", "501");
    c.cmd("AUTH CRAM-MD5", "504");
    c.cmd("AUTH PLAIN", "334");
    c.cmd("AHVzZXIAcGFzcw==", "235");
    c.send_message("a@b", &["c@d"], b"x\r\n.\r\n");

    let conns = mx.connections();
    assert!(conns.iter().all(|c| c.authenticated));
    // AUTH responses are not command lines.
    assert!(!conns[1].commands.iter().any(|l| l.contains("dXNlcg")));
}

#[test]
fn lean_mode_counts_without_storing() {
    let mx = start(TestMxConfig {
        lean: true,
        ..TestMxConfig::default()
    });
    let mut c = Client::connect(mx.addr());
    c.cmd("EHLO c", "250");
    c.send_message("a@b", &["c@d"], b"12345\r\n.\r\n");
    c.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 3 LAST\r\nabc");
    for code in ["250", "250", "250 2.0.0 queued as 2"] {
        c.expect(code);
    }
    c.cmd("QUIT", "221");
    let conn = closed_conn(&mx, 0);
    assert!(mx.messages().is_empty());
    assert!(conn.commands.is_empty());
    assert_eq!(conn.messages, 2);
    let st = mx.stats();
    assert_eq!((st.messages, st.bytes, st.quits), (2, 7 + 3, 1));
}

/// The session is sans-I/O: fed one byte at a time it gives the same replies as fed at once.
#[test]
fn session_is_indifferent_to_how_bytes_arrive() {
    use super::session::{Action, Session, MAX_LINE};
    let long = format!("NOOP {}\r\n", "A".repeat(3 * MAX_LINE));
    let script = [
        "EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nx\r\n..y\r\n.\r\n",
        &long,
        "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 4\r\n1234BDAT 1 LAST\r\n5NOOP\r\nQUIT\r\n",
    ]
    .concat();
    let script = script.as_bytes();
    let run = |step: usize| {
        let config = Arc::new(TestMxConfig::default());
        let mut s = Session::new(config, Arc::new(AtomicU64::new(0)), false);
        let mut out = Vec::new();
        s.greeting(&mut out);
        let mut pending: Vec<u8> = Vec::new();
        for piece in script.chunks(step) {
            pending.extend_from_slice(piece);
            let n = s.handle(&pending, &mut out);
            pending.drain(..n);
        }
        let mut replies = String::new();
        let mut bodies = Vec::new();
        for a in out {
            match a {
                Action::Reply { text, .. } => replies.push_str(&text),
                Action::Accepted(m) => bodies.push(m.body.content),
                _ => {}
            }
        }
        (replies, bodies)
    };
    let (all, bodies) = run(script.len());
    assert_eq!(run(1), (all.clone(), bodies.clone()));
    assert_eq!(run(7), (all.clone(), bodies.clone()));
    assert_eq!(bodies, vec![b"x\r\n.y\r\n".to_vec(), b"12345".to_vec()]);
    let codes: Vec<&str> = all
        .lines()
        .map(|l| &l[..4])
        .filter(|c| c.ends_with(' '))
        .collect();
    assert_eq!(
        codes,
        vec![
            "220 ", "250 ", "250 ", "250 ", "354 ", "250 ", "500 ", "250 ", "250 ", "250 ", "250 ",
            "250 ", "221 "
        ]
    );
}
