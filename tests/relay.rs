//! The core: protocol, source-IP dialing and the SMTP relay, end to end on loopback.

mod common;

use common::*;
use greenarrow_proxy_client::ClientError;
use greenarrow_proxy_proto::protocol::{Failure, Origin, TlsPolicy};
use greenarrow_proxy_testkit::testmx::{Faults, TestMx, TestMxConfig};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

fn plain_mx() -> TestMx {
    TestMx::start(TestMxConfig::default()).unwrap()
}

fn mx_with(faults: Faults) -> TestMx {
    TestMx::start(TestMxConfig {
        faults,
        ..TestMxConfig::default()
    })
    .unwrap()
}

fn failure(e: ClientError) -> Failure {
    match e {
        ClientError::Proxy(f) => f.failure,
        other => panic!("expected a proxy failure, got {other}"),
    }
}

#[test]
fn message_arrives_byte_exact_with_dot_stuffing_and_no_final_newline() {
    let mx = plain_mx();
    let h = Harness::start(&[mx.addr().port()], "");
    let mut c = h.client();
    let mut s = c
        .open(&req("127.0.0.2", mx.addr(), TlsPolicy::None))
        .unwrap();
    assert_eq!(s.ready.origin, Origin::New);
    assert_eq!(s.ready.remote, mx.addr());
    assert_eq!(s.ready.local.ip(), ip("127.0.0.2"));
    assert!(s.ready.banner[0].starts_with(b"220 "));
    assert!(s.caps.pipelining);
    let msg = b"Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nlone dot above\r\nno final newline";
    let d = s.send_mail("a@x.test", &["b@y.test"], msg).unwrap();
    assert_eq!(d.final_reply.code(), 250);
    s.quit().unwrap();
    c.quit().unwrap();
    assert!(mx.wait_until(WAIT, |st| st.messages.len() == 1));
    let m = &mx.messages()[0];
    // The client ends the body with CRLF (SMTP cannot carry a body without one).
    let mut want = msg.to_vec();
    want.extend_from_slice(b"\r\n");
    assert_eq!(m.content, want);
    assert_eq!(m.mail_from, "a@x.test");
    assert_eq!(m.rcpt_to, vec!["b@y.test".to_string()]);
    assert_eq!(m.peer.ip(), ip("127.0.0.2"));
}

/// Large bodies go to a plaintext MX straight from the MTA's input buffer (no copy into the
/// MX's output buffer): every byte arrives, in order, message after message.
#[test]
fn multi_megabyte_messages_to_a_plaintext_mx_arrive_byte_exact() {
    let mx = plain_mx();
    let h = Harness::start(&[mx.addr().port()], "");
    let mut c = h.client();
    let mut s = c
        .open(&req("127.0.0.2", mx.addr(), TlsPolicy::None))
        .unwrap();
    let mut msg = b"Subject: big\r\n\r\n".to_vec();
    let mut i = 0u32;
    while msg.len() < 3 * 1024 * 1024 {
        // Lines of varying length, some starting with a dot, some longer than a read.
        let len = if i.is_multiple_of(101) {
            20_000
        } else {
            (i % 997) as usize
        };
        let dot = if i.is_multiple_of(7) { "." } else { "" };
        msg.extend_from_slice(format!("{dot}{}\r\n", "y".repeat(len)).as_bytes());
        i += 1;
    }
    for _ in 0..2 {
        let d = s.send_mail("a@x.test", &["b@y.test"], &msg).unwrap();
        assert_eq!(d.final_reply.code(), 250);
    }
    s.quit().unwrap();
    c.quit().unwrap();
    assert!(mx.wait_until(WAIT, |st| st.messages.len() == 2));
    for m in mx.messages() {
        assert!(
            m.content == msg,
            "message differs ({} vs {} octets)",
            m.content.len(),
            msg.len()
        );
    }
}

#[test]
fn source_addresses_are_the_ones_requested() {
    let mx = plain_mx();
    let h = Harness::start(&[mx.addr().port()], "");
    let mut c = h.client();
    for src in ["127.0.0.2", "127.0.0.3"] {
        let mut s = c.open(&req(src, mx.addr(), TlsPolicy::None)).unwrap();
        assert_eq!(s.ready.local.ip(), ip(src));
        s.send_mail("a@x.test", &["b@y.test"], b"hi\r\n").unwrap();
        s.quit().unwrap();
    }
    assert!(mx.wait_until(WAIT, |st| st.messages.len() == 2));
    let peers: Vec<String> = mx
        .messages()
        .iter()
        .map(|m| m.peer.ip().to_string())
        .collect();
    assert_eq!(peers, vec!["127.0.0.2", "127.0.0.3"]);
}

#[test]
fn ipv6_end_to_end() {
    let mx = TestMx::start(TestMxConfig {
        bind: "[::1]:0".parse().unwrap(),
        ..TestMxConfig::default()
    })
    .unwrap();
    let h = Harness::start(
        &[mx.addr().port()],
        "listen: [\"[::1]:0\"]\nallow_from: [\"::1\"]\n",
    );
    assert!(h.addr.is_ipv6());
    let mut c = h.client();
    let mut s = c.open(&req("::1", mx.addr(), TlsPolicy::None)).unwrap();
    s.send_mail("a@x.test", &["b@y.test"], b"over IPv6\r\n")
        .unwrap();
    s.quit().unwrap();
    assert!(mx.wait_until(WAIT, |st| st.messages.len() == 1));
    assert!(mx.messages()[0].peer.is_ipv6());
}

#[test]
fn pipelined_batch_is_relayed_in_order() {
    let mx = plain_mx();
    let h = Harness::start(&[mx.addr().port()], "");
    let mut r = h.raw();
    let connect = req("127.0.0.2", mx.addr(), TlsPolicy::None).to_line();
    // AUTH and CONNECT pipelined in one write.
    r.send(format!("AUTH 1 {SECRET}\r\n{connect}").as_bytes());
    assert!(r.reply().starts_with("235 "));
    assert!(r.reply().ends_with("250 ready\r\n"));
    r.send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\nDATA\r\n");
    assert!(r.reply().starts_with("250"));
    assert!(r.reply().starts_with("250"));
    assert!(r.reply().starts_with("250"));
    assert!(r.reply().starts_with("354"));
    r.send(b"Subject: pipelined\r\n\r\nbody\r\n.\r\nQUIT\r\n");
    assert!(r.reply().starts_with("250"));
    assert!(r.reply().starts_with("221"));
    assert!(mx.wait_until(WAIT, |st| st.messages.len() == 1));
    let m = &mx.messages()[0];
    assert_eq!(
        m.rcpt_to,
        vec!["b@y.test".to_string(), "c@y.test".to_string()]
    );
    assert_eq!(m.content, b"Subject: pipelined\r\n\r\nbody\r\n");
}

#[test]
fn bdat_chunks_pass_through_exactly() {
    let mx = plain_mx();
    let h = Harness::start(&[mx.addr().port()], "");
    let mut c = h.client();
    let mut s = c
        .open(&req("127.0.0.2", mx.addr(), TlsPolicy::None))
        .unwrap();
    assert!(s.caps.chunking);
    // Chunk contents that look like commands and like an end-of-data sequence.
    let msg = b"Subject: bdat\r\n\r\nQUIT\r\n.\r\nRSET\r\n\r\n.\r\nend".repeat(500);
    let d = s
        .send_mail_bdat("a@x.test", &["b@y.test"], &msg, 4000)
        .unwrap();
    assert_eq!(d.final_reply.code(), 250);
    s.quit().unwrap();
    assert!(mx.wait_until(WAIT, |st| st.messages.len() == 1));
    let m = &mx.messages()[0];
    assert!(m.via_bdat);
    assert_eq!(m.content, msg);
}

#[test]
fn two_messages_in_one_session_and_a_second_connect_after_quit() {
    let mx = plain_mx();
    let h = Harness::start(&[mx.addr().port()], "");
    let mut c = h.client();
    let mut s = c
        .open(&req("127.0.0.2", mx.addr(), TlsPolicy::None))
        .unwrap();
    s.send_mail("a@x.test", &["b@y.test"], b"one\r\n").unwrap();
    s.send_mail("a@x.test", &["b@y.test"], b"two\r\n").unwrap();
    s.quit().unwrap();
    // Same MTA connection, a new request.
    let mut s = c
        .open(&req("127.0.0.3", mx.addr(), TlsPolicy::None))
        .unwrap();
    s.send_mail("a@x.test", &["b@y.test"], b"three\r\n")
        .unwrap();
    s.quit().unwrap();
    c.quit().unwrap();
    assert!(mx.wait_until(WAIT, |st| st.messages.len() == 3));
    let msgs = mx.messages();
    let bodies: Vec<&[u8]> = msgs.iter().map(|m| m.content.as_slice()).collect();
    assert_eq!(bodies, vec![&b"one\r\n"[..], b"two\r\n", b"three\r\n"]);
    assert_eq!(msgs[0].conn_index, msgs[1].conn_index);
    assert_ne!(msgs[1].conn_index, msgs[2].conn_index);
    // The first MX connection got QUIT from the proxy.
    assert!(mx.wait_until(WAIT, |st| st.connections.len() == 2
        && st.connections.iter().all(|c| c.quit_received)));
}

#[test]
fn wrong_secret_is_refused_and_the_connection_closed() {
    let mx = plain_mx();
    let h = Harness::start(&[mx.addr().port()], "");
    let mut r = h.raw();
    r.send(b"AUTH 1 not-the-secret-not-the-secret-not-the-secret\r\n");
    let rep = r.reply();
    assert!(rep.starts_with("535 5.7.8 auth_failed"), "{rep}");
    assert!(r.closed());
    // CONNECT without AUTH.
    let mut r = h.raw();
    r.send(
        req("127.0.0.2", mx.addr(), TlsPolicy::None)
            .to_line()
            .as_bytes(),
    );
    assert!(r.reply().starts_with("530 5.7.0 auth_required"));
    assert_eq!(mx.stats().connections, 0);
}

#[test]
fn peer_outside_allow_from_is_closed_before_tls() {
    let h = Harness::start(&[25], "allow_from: [127.0.0.9/32]\n");
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&"127.0.0.5:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    sock.connect(&h.addr.into()).unwrap();
    let tcp: TcpStream = sock.into();
    let err = greenarrow_proxy_net::tls::ProxyClientTls::from_ca_pem(h.ca_pem.as_bytes())
        .unwrap()
        .connect(tcp, "localhost", Duration::from_secs(5))
        .err()
        .expect("handshake must fail");
    assert!(
        matches!(
            err,
            greenarrow_proxy_net::tls::TlsError::ClosedDuringHandshake
                | greenarrow_proxy_net::tls::TlsError::Io(_)
        ),
        "{err}"
    );
    assert_eq!(h.server.shared().stats().snapshot().refused_allow_from, 1);
}

#[test]
fn request_errors_have_their_documented_codes() {
    let mx = plain_mx();
    let h = Harness::start(
        &[mx.addr().port()],
        "source_addresses: [127.0.0.2, 192.0.2.1]\n",
    );
    let mut c = h.client();
    // Source not permitted.
    let e = c
        .open(&req("127.0.0.3", mx.addr(), TlsPolicy::None))
        .err()
        .unwrap();
    assert_eq!(failure(e), Failure::SourceNotPermitted);
    // Source permitted but not on this host (the bind fails; nothing is sent anywhere).
    let e = c
        .open(&req("192.0.2.1", mx.addr(), TlsPolicy::None))
        .err()
        .unwrap();
    assert_eq!(failure(e), Failure::SourceNotLocal);
    // Port not permitted.
    let mut r = req("127.0.0.2", mx.addr(), TlsPolicy::None);
    r.port = 9;
    let e = c.open(&r).err().unwrap();
    assert_eq!(failure(e), Failure::DestinationNotPermitted);
    // Refused: a permitted port where nothing listens.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let h2 = Harness::start(&[port], "");
    let mut c2 = h2.client();
    let e = c2
        .open(&req(
            "127.0.0.2",
            SocketAddr::new(ip("127.0.0.1"), port),
            TlsPolicy::None,
        ))
        .err()
        .unwrap();
    assert_eq!(failure(e), Failure::ConnectRefused);
    // The connection is still usable after failures.
    let mut s = c
        .open(&req("127.0.0.2", mx.addr(), TlsPolicy::None))
        .unwrap();
    s.send_mail("a@x.test", &["b@y.test"], b"still works\r\n")
        .unwrap();
    s.quit().unwrap();
    assert!(mx.wait_until(WAIT, |st| st.messages.len() == 1));
    assert_eq!(mx.stats().connections, 1);
}

#[test]
fn protocol_errors_are_500_and_unknown_parameters_refused() {
    let mx = plain_mx();
    let h = Harness::start(&[mx.addr().port()], "");
    let mut r = h.raw();
    r.send(format!("AUTH 1 {SECRET}\r\n").as_bytes());
    assert!(r.reply().starts_with("235"));
    r.send(b"HELO me\r\n");
    assert!(r.reply().starts_with("500 5.5.2 protocol_error"));
    r.send(
        format!(
            "CONNECT source=127.0.0.2 host=127.0.0.1 port={} ehlo=a colour=blue\r\n",
            mx.addr().port()
        )
        .as_bytes(),
    );
    let rep = r.reply();
    assert!(
        rep.starts_with("500 5.5.2 protocol_error") && rep.contains("colour"),
        "{rep}"
    );
    r.send(b"NOOP\r\n");
    assert!(r.reply().starts_with("250"));
    assert_eq!(mx.stats().connections, 0);
}

#[test]
fn banner_and_ehlo_rejections_carry_the_mx_reply() {
    let mx = mx_with(Faults {
        banner: Some("554 5.7.1 no mail from you".into()),
        ..Faults::default()
    });
    let h = Harness::start(&[mx.addr().port()], "");
    let mut c = h.client();
    let e = c
        .open(&req("127.0.0.2", mx.addr(), TlsPolicy::None))
        .err()
        .unwrap();
    let ClientError::Proxy(f) = e else { panic!() };
    assert_eq!(f.failure, Failure::BannerRejected { permanent: true });
    assert_eq!(f.mx_lines, vec![b"554 5.7.1 no mail from you".to_vec()]);

    let mx = mx_with(Faults {
        ehlo_reply: Some("502 5.5.1 no EHLO".into()),
        helo_reply: Some("451 4.3.0 try later".into()),
        ..Faults::default()
    });
    let h = Harness::start(&[mx.addr().port()], "");
    let mut c = h.client();
    let e = c
        .open(&req("127.0.0.2", mx.addr(), TlsPolicy::None))
        .err()
        .unwrap();
    let ClientError::Proxy(f) = e else { panic!() };
    assert_eq!(f.failure, Failure::EhloRejected { permanent: false });
    assert!(e_is_transient(&f.failure));
    assert_eq!(f.mx_lines, vec![b"451 4.3.0 try later".to_vec()]);
}

fn e_is_transient(f: &Failure) -> bool {
    f.is_transient()
}

#[test]
fn helo_fallback_when_ehlo_is_refused() {
    let mx = mx_with(Faults {
        ehlo_reply: Some("500 5.5.1 what is EHLO".into()),
        ..Faults::default()
    });
    let h = Harness::start(&[mx.addr().port()], "");
    let mut c = h.client();
    let mut s = c
        .open(&req("127.0.0.2", mx.addr(), TlsPolicy::Opportunistic))
        .unwrap();
    assert!(s.ready.ehlo[0].starts_with(b"250"));
    assert!(s.ready.tls.is_none());
    s.send_mail("a@x.test", &["b@y.test"], b"via HELO\r\n")
        .unwrap();
    s.quit().unwrap();
    assert!(mx.wait_until(WAIT, |st| st.messages.len() == 1));
    assert!(mx.connections()[0].helo_used);
}

#[test]
fn mta_dropping_mid_body_leaves_the_mx_without_a_message() {
    let mx = plain_mx();
    let h = Harness::start(&[mx.addr().port()], "");
    let mut r = h.raw_connected(&req("127.0.0.2", mx.addr(), TlsPolicy::None));
    r.send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n");
    r.reply();
    r.reply();
    assert!(r.reply().starts_with("354"));
    r.send(b"Subject: half\r\n\r\nthe first half of a message\r\n");
    // Wait until the MX holds those body bytes, then vanish.
    assert!(mx.wait_until(WAIT, |st| st
        .connections
        .first()
        .is_some_and(|c| c.commands.iter().any(|l| l == "DATA"))));
    drop(r);
    assert!(mx.wait_until(WAIT, |st| st.connections.first().is_some_and(|c| c.closed)));
    let conn = &mx.connections()[0];
    assert!(conn.aborted_data, "{conn:?}");
    assert_eq!(mx.messages().len(), 0);
}

#[test]
fn mta_starttls_is_refused_by_the_proxy() {
    let mx = plain_mx();
    let h = Harness::start(&[mx.addr().port()], "");
    let mut c = h.client();
    let mut s = c
        .open(&req("127.0.0.2", mx.addr(), TlsPolicy::None))
        .unwrap();
    let r = s.command("STARTTLS").unwrap();
    assert_eq!(r.code(), 454);
    s.send_mail("a@x.test", &["b@y.test"], b"after refused STARTTLS\r\n")
        .unwrap();
    s.quit().unwrap();
    assert!(mx.wait_until(WAIT, |st| st.messages.len() == 1));
    assert!(!mx.connections()[0]
        .commands
        .iter()
        .any(|l| l.eq_ignore_ascii_case("STARTTLS")));
}

#[test]
fn mx_421_is_relayed_and_later_commands_get_421_until_quit() {
    let mx = mx_with(Faults {
        reply_421_at: Some("RCPT".into()),
        ..Faults::default()
    });
    let h = Harness::start(&[mx.addr().port()], "");
    let mut r = h.raw_connected(&req("127.0.0.2", mx.addr(), TlsPolicy::None));
    r.send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n");
    assert!(r.reply().starts_with("250"));
    assert!(r.reply().starts_with("421"));
    // The DATA reply owed is given by the proxy.
    assert!(r.reply().starts_with("421 4.4.2"));
    r.send(b"NOOP\r\n");
    assert!(r.reply().starts_with("421 4.4.2"));
    r.send(b"QUIT\r\n");
    assert!(r.reply().starts_with("221"));
    // Back in the command state.
    r.send(b"NOOP\r\n");
    assert!(r.reply().starts_with("250 2.0.0 ok"));
    assert_eq!(mx.messages().len(), 0);
}

/// A scripted MX that answers "354" to NOOP (a 3xx is only valid after DATA or AUTH) and
/// "250 ok" to everything else.
fn yes_man_mx() -> SocketAddr {
    use std::io::{BufRead, BufReader, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let mut w = s.try_clone().unwrap();
        w.write_all(b"220 yes-man ESMTP\r\n").unwrap();
        for line in BufReader::new(s).lines() {
            let Ok(line) = line else { return };
            let reply: &[u8] = if line.starts_with("EHLO") {
                b"250-yes-man\r\n250 PIPELINING\r\n"
            } else if line.starts_with("NOOP") {
                b"354 go ahead\r\n"
            } else {
                b"250 ok\r\n"
            };
            if w.write_all(reply).is_err() {
                return;
            }
        }
    });
    addr
}

#[test]
fn a_reply_that_breaks_the_protocol_is_not_relayed_and_gets_exactly_one_421() {
    let mx = yes_man_mx();
    let h = Harness::start(&[mx.port()], "");
    let mut r = h.raw_connected(&req("127.0.0.2", mx, TlsPolicy::None));
    r.send(b"MAIL FROM:<a@x.test>\r\nNOOP\r\nRCPT TO:<b@y.test>\r\n");
    // "354" to NOOP would make the MTA and the MX disagree about what follows: the proxy
    // does not relay it, and answers this and every later command with 421 itself. The MX
    // being out of step, MAIL's reply of the same batch, still unwritten, is withdrawn too.
    let mail = r.reply();
    assert!(mail.starts_with("421 4.4.2"), "{mail}");
    let rep = r.reply();
    assert!(rep.starts_with("421 4.4.2"), "{rep}");
    assert!(r.reply().starts_with("421 4.4.2"));
    // Exactly one reply per command: the next one answers the next NOOP.
    r.send(b"NOOP\r\n");
    assert!(r.reply().starts_with("421 4.4.2"));
    r.send(b"QUIT\r\n");
    assert!(r.reply().starts_with("221"));
}
