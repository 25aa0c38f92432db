//! Issue 24 part 1: one round trip per reused message. An MTA sends `MAIL FROM`, `RCPT TO`
//! and `BDAT n LAST` with the chunk in one write (RFC 3030 with PIPELINING, as Exim does); the
//! proxy must carry the whole flight to the MX without waiting for any reply in between.
//!
//! The test MX holds its replies while a transaction is open
//! (`Faults::hold_replies_in_transaction`) and answers the whole flight in one write once the
//! last chunk arrived: a relay that waited for the MAIL reply before sending the rest would
//! wait for a reply the MX only gives after the rest (then time out, `mx_command: 5s`). The
//! chunks are large enough that the proxy reads the flight from the MTA in several pieces.
//! Each test asserts what the MX received (byte-exact), the replies the MTA got (in order),
//! and whether the MX connection was pooled.

mod common;

use common::*;
use greenarrow_proxy_client::ClientError;
use greenarrow_proxy_proto::protocol::{ConnectRequest, TlsPolicy};
use greenarrow_proxy_testkit::mta::kumo::{self, Smtp};
use greenarrow_proxy_testkit::testmx::{Faults, TestMx, TestMxConfig};
use std::net::TcpStream;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

/// Bounds a relay that waits between the flight's commands would hit.
const TIMEOUTS: &str = "timeouts:\n  mx_command: 5s\n  mx_data_done: 5s\n";

fn holding_mx(tls: bool) -> TestMx {
    let faults = Faults {
        hold_replies_in_transaction: true,
        ..Faults::default()
    };
    if tls {
        tls_mx(faults)
    } else {
        TestMx::start(TestMxConfig {
            faults,
            ..TestMxConfig::default()
        })
        .unwrap()
    }
}

/// A chunk of `len` bytes with everything a command reader could trip on: CR, LF, bare LF,
/// dots at line starts, `CR LF . CR LF`, command words.
fn chunk(len: usize, seed: u8) -> Vec<u8> {
    let pieces: [&[u8]; 6] = [
        b"\r\n.\r\n",
        b"RSET\r\nMAIL FROM:<evil@x.test>\r\n",
        b"\n.\n",
        b"BDAT 5 LAST\r\n",
        b"plain text line\r\n",
        b"\x00\xff\r",
    ];
    let mut out = Vec::with_capacity(len);
    let mut i = seed as usize;
    while out.len() < len {
        out.extend_from_slice(pieces[i % pieces.len()]);
        i += 1;
    }
    out.truncate(len);
    out
}

/// `MAIL`, `RCPT` for each of `rcpts`, then `BDAT` per chunk (the last with `LAST`) and its
/// bytes: one flight.
fn flight(mail_params: &str, rcpts: &[&str], chunks: &[&[u8]]) -> Vec<u8> {
    let mut f = format!("MAIL FROM:<a@x.test>{mail_params}\r\n").into_bytes();
    for r in rcpts {
        f.extend_from_slice(format!("RCPT TO:<{r}>\r\n").as_bytes());
    }
    for (i, c) in chunks.iter().enumerate() {
        let last = if i + 1 == chunks.len() { " LAST" } else { "" };
        f.extend_from_slice(format!("BDAT {}{last}\r\n", c.len()).as_bytes());
        f.extend_from_slice(c);
    }
    f
}

fn native_request(mx: &TestMx, tls: TlsPolicy) -> ConnectRequest {
    let mut r = req("127.0.0.2", mx.addr(), tls);
    r.reuse = true;
    r
}

fn quit_then_noop(raw: &mut Raw) {
    let q = exchange(raw, b"QUIT\r\n", 1);
    assert!(q[0].starts_with("221 "), "{q:?}");
    let n = exchange(raw, b"NOOP\r\n", 1);
    assert_eq!(n[0], "250 2.0.0 ok\r\n");
}

fn codes(replies: &[String]) -> Vec<&str> {
    replies.iter().map(|r| &r[..3]).collect()
}

/// The native protocol, STARTTLS MX: two messages, each one flight of MAIL, two RCPTs and
/// `BDAT n LAST` with a 300 KiB chunk written at once, on one reused MX connection.
#[test]
fn a_flight_written_at_once_reaches_the_mx_whole_before_any_reply() {
    let mx = holding_mx(true);
    let h = Harness::start(&[mx.addr().port()], TIMEOUTS);
    let bodies = [chunk(300 * 1024, 0), chunk(300 * 1024 + 7, 3)];
    for (n, body) in bodies.iter().enumerate() {
        let (mut raw, ready) = open(&h, &native_request(&mx, TlsPolicy::Required));
        let origin = if n == 0 { "new" } else { "reused" };
        assert!(ready.contains(&format!("connection={origin}")), "{ready}");
        let f = flight("", &["b@y.test", "c@y.test"], &[body]);
        let r = exchange(&mut raw, &f, 4);
        assert_eq!(r[0], "250 2.1.0 sender ok\r\n", "{r:?}");
        assert_eq!(r[1], "250 2.1.5 recipient ok\r\n", "{r:?}");
        assert_eq!(r[2], "250 2.1.5 recipient ok\r\n", "{r:?}");
        assert!(r[3].starts_with("250 2.0.0 queued as "), "{r:?}");
        quit_then_noop(&mut raw);
    }
    assert!(mx.wait_until(WAIT, |s| s.messages.len() == 2));
    for (m, body) in mx.messages().iter().zip(&bodies) {
        assert!(m.via_bdat && m.tls);
        assert_eq!(m.raw, *body, "the chunk arrives byte-exact");
        assert_eq!(m.mail_from, "a@x.test");
        assert_eq!(m.rcpt_to, ["b@y.test", "c@y.test"]);
    }
    assert_eq!(
        mx.stats().connections,
        1,
        "the second message reused the first's"
    );
}

/// Several chunks in one flight, the last one `BDAT 0 LAST`; then a short flight that fits
/// in one read; all on one MTA session.
#[test]
fn several_chunks_and_bdat_0_last_in_one_flight() {
    let mx = holding_mx(false);
    let h = Harness::start(&[mx.addr().port()], TIMEOUTS);
    let (mut raw, _) = open(&h, &native_request(&mx, TlsPolicy::None));
    let (a, b) = (chunk(70_000, 1), chunk(50_001, 4));
    let f = flight("", &["b@y.test"], &[&a, &b, b""]);
    let r = exchange(&mut raw, &f, 5);
    assert_eq!(codes(&r), ["250"; 5], "{r:?}");
    assert_eq!(r[2], "250 2.0.0 70000 octets received\r\n");
    assert_eq!(r[3], "250 2.0.0 120001 octets received\r\n");
    assert!(r[4].starts_with("250 2.0.0 queued as "), "{r:?}");
    let small = b"Subject: s\r\n\r\nsmall\r\n";
    let r = exchange(&mut raw, &flight("", &["d@y.test"], &[small]), 3);
    assert_eq!(codes(&r), ["250"; 3], "{r:?}");
    quit_then_noop(&mut raw);
    assert!(mx.wait_until(WAIT, |s| s.messages.len() == 2));
    let m = mx.messages();
    assert_eq!(m[0].raw, [a, b].concat());
    assert_eq!(m[1].raw, small);
    assert_eq!(mx.stats().connections, 1);
}

/// A flight whose MAIL the MX refuses: it answers 552 to MAIL, 503 to RCPT and to BDAT, and
/// reads the chunk (command-like bytes inside) as chunk data. Every reply reaches the MTA in
/// order, the next flight on the same connection is delivered, and after a refused BDAT the
/// MX's state is indeterminate (RFC 3030: a RSET must clear it): the proxy pools the
/// connection only after its own RSET got 250.
#[test]
fn a_refused_mail_in_the_flight_keeps_the_relay_in_step() {
    let mx = holding_mx(false);
    let h = Harness::start(&[mx.addr().port()], TIMEOUTS);
    let (mut raw, _) = open(&h, &native_request(&mx, TlsPolicy::None));
    let evil = chunk(40_000, 1);
    let f = flight(" SIZE=999999999999", &["b@y.test"], &[&evil]);
    let r = exchange(&mut raw, &f, 3);
    assert!(r[0].starts_with("552 "), "{r:?}");
    assert!(r[1].starts_with("503 "), "{r:?}");
    assert!(r[2].starts_with("503 "), "{r:?}");
    // In step: the next flight gets its own replies.
    let good = b"Subject: ok\r\n\r\nafter the refusal\r\n";
    let r = exchange(&mut raw, &flight("", &["c@y.test"], &[good]), 3);
    assert_eq!(codes(&r), ["250"; 3], "{r:?}");
    // And a refused flight last: the MTA leaves without RSET.
    let r = exchange(&mut raw, &f, 3);
    assert_eq!(codes(&r), ["552", "503", "503"], "{r:?}");
    quit_then_noop(&mut raw);
    assert!(mx.wait_until(WAIT, |s| s.messages.len() == 1));
    assert_eq!(mx.messages()[0].raw, good);
    let (mut raw, ready) = open(&h, &native_request(&mx, TlsPolicy::None));
    assert!(ready.contains("connection=reused"), "{ready}");
    let r = exchange(&mut raw, &flight("", &["e@y.test"], &[good]), 3);
    assert_eq!(codes(&r), ["250"; 3], "{r:?}");
    quit_then_noop(&mut raw);
    let commands = mx.connections()[0].commands.clone();
    let verbs: Vec<&str> = commands
        .iter()
        .map(|c| c.split(' ').next().unwrap_or(""))
        .filter(|v| *v != "EHLO" && *v != "STARTTLS")
        .collect();
    assert_eq!(
        verbs,
        [
            "MAIL", "RCPT", "BDAT", "MAIL", "RCPT", "BDAT", "MAIL", "RCPT", "BDAT", "RSET", "MAIL",
            "RCPT", "BDAT"
        ],
        "the chunks were read as data, and the proxy's RSET came before the pool: {commands:?}"
    );
    assert_eq!(mx.stats().connections, 1);
}

/// The SMTP-aware front-end (PROXY v2, `mode: smtp`): the same flight from a plain TCP MTA,
/// twice, over one pooled STARTTLS connection.
#[test]
fn the_smtp_aware_front_end_carries_the_flight_whole() {
    let mx = holding_mx(true);
    let yaml = format!(
        "{TIMEOUTS}frontends:\n  - kind: proxy_protocol\n    listen: [\"127.0.0.1:0\"]\n    mode: smtp\n    tls: required\n    reuse: true\n    client: default\n"
    );
    let h = Harness::start(&[mx.addr().port()], &yaml);
    let bodies = [chunk(200 * 1024, 2), chunk(3000, 5)];
    for body in &bodies {
        let mut tcp = TcpStream::connect(h.frontend(0)).unwrap();
        std::io::Write::write_all(&mut tcp, &kumo::proxy_v2_header(ip("127.0.0.2"), mx.addr()))
            .unwrap();
        let mut smtp = Smtp::new(tcp);
        assert!(smtp.reply().unwrap().starts_with("220 "));
        let ehlo = smtp.command("EHLO mta.test").unwrap();
        assert!(
            ehlo.contains("CHUNKING") && ehlo.contains("PIPELINING"),
            "{ehlo}"
        );
        smtp.send_raw(&flight("", &["b@y.test"], &[body])).unwrap();
        let r: Vec<String> = (0..3).map(|_| smtp.reply().unwrap()).collect();
        assert_eq!(codes(&r), ["250"; 3], "{r:?}");
        assert!(smtp.command("QUIT").unwrap().starts_with("221 "));
    }
    assert!(mx.wait_until(WAIT, |s| s.messages.len() == 2));
    for (m, body) in mx.messages().iter().zip(&bodies) {
        assert!(m.via_bdat && m.tls);
        assert_eq!(m.raw, *body);
    }
    assert_eq!(mx.stats().connections, 1);
}

/// The client library's flight (`MxSession::send_mail_bdat_pipelined`, what `gaproxy bench
/// --bdat-pipelined` sends): delivered in one round trip; a refused MAIL is an error after
/// which the session goes on.
#[test]
fn the_client_librarys_flight_is_delivered_and_a_refusal_reported() {
    let mx = holding_mx(true);
    let h = Harness::start(&[mx.addr().port()], TIMEOUTS);
    let mut c = h.client();
    let mut s = c.open(&native_request(&mx, TlsPolicy::Required)).unwrap();
    let body = chunk(100_000, 4);
    let d = s
        .send_mail_bdat_pipelined("a@x.test", &["b@y.test", "c@y.test"], &body)
        .unwrap();
    assert_eq!(d.accepted, ["b@y.test", "c@y.test"]);
    assert_eq!(d.final_reply.code(), 250, "{d:?}");
    let e = s
        .send_mail_bdat_pipelined("a@x.test> SIZE=999999999999 <", &["b@y.test"], b"x")
        .unwrap_err();
    assert!(
        matches!(&e, ClientError::Smtp { stage: "MAIL FROM", reply } if reply.code() == 552),
        "{e}"
    );
    s.send_mail_bdat_pipelined("a@x.test", &["d@y.test"], b"second\r\n")
        .unwrap();
    s.quit().unwrap();
    c.quit().unwrap();
    assert!(mx.wait_until(WAIT, |st| st.messages.len() == 2));
    let m = mx.messages();
    assert_eq!(m[0].raw, body);
    assert_eq!(m[1].raw, b"second\r\n");
    assert_eq!(m[1].rcpt_to, ["d@y.test"]);
}

/// An MX that answers the first piece of a flight with a reply too many (`250` to MAIL, to
/// RCPT, and a stray one) before the rest of the chunk arrives. The stray must never be taken
/// for the answer to the BDAT sent after it: before the rest of the flight goes out, the
/// proxy judges what the MX already sent, finds bytes after the last reply owed, closes the
/// MX connection and gives the MTA its `421` for every command of the flight.
#[test]
fn a_stray_reply_in_the_middle_of_a_flight_is_caught_before_the_rest_goes_out() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::mpsc;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mx_addr = listener.local_addr().unwrap();
    let (answered, first_piece_answered) = mpsc::channel();
    let (got, mx_got) = mpsc::channel();
    let head = "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nBDAT 10 LAST\r\n";
    let mx = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        let mut out = tcp.try_clone().unwrap();
        let mut input = BufReader::new(tcp);
        out.write_all(b"220 mx.test ESMTP\r\n").unwrap();
        let mut line = String::new();
        input.read_line(&mut line).unwrap();
        assert!(line.starts_with("EHLO "), "{line:?}");
        out.write_all(b"250-mx.test\r\n250-PIPELINING\r\n250 CHUNKING\r\n")
            .unwrap();
        let mut first = vec![0u8; head.len() + 5];
        input.read_exact(&mut first).unwrap();
        out.write_all(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n250 2.0.0 stray\r\n")
            .unwrap();
        answered.send(()).unwrap();
        // The rest of the chunk, if the proxy sends it; then the real answer.
        let mut rest = Vec::new();
        let mut b = [0u8; 64];
        while let Ok(n) = input.read(&mut b) {
            if n == 0 {
                break;
            }
            rest.extend_from_slice(&b[..n]);
            if rest.len() >= 5 {
                let _ = out.write_all(b"550 5.7.1 the real answer: refused\r\n");
            }
        }
        got.send((first, rest)).unwrap();
    });
    let h = Harness::start(&[mx_addr.port()], TIMEOUTS);
    let mut r = req("127.0.0.2", mx_addr, TlsPolicy::None);
    r.reuse = true;
    let (mut raw, _) = open(&h, &r);
    raw.send(format!("{head}01234").as_bytes());
    first_piece_answered.recv_timeout(WAIT).unwrap();
    let replies = exchange(&mut raw, b"56789", 3);
    assert!(
        replies.iter().all(|r| r.starts_with("421 4.4.2 ")),
        "the MTA was told {replies:?}"
    );
    quit_then_noop(&mut raw);
    let (first, rest) = mx_got.recv_timeout(WAIT).unwrap();
    assert_eq!(first, format!("{head}01234").into_bytes());
    assert!(
        rest.is_empty(),
        "the rest of the flight reached the MX: {rest:?}"
    );
    mx.join().unwrap();
}
