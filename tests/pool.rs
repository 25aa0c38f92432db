//! Connection reuse: a pool of idle MX connections shared by all MTAs.

mod common;

use common::*;
use greenarrow_proxy_proto::protocol::{ConnectRequest, Origin, TlsPolicy};
use greenarrow_proxy_testkit::testmx::{Faults, TestMx, TestMxConfig};
use std::net::SocketAddr;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

fn reuse_req(source: &str, mx: SocketAddr) -> ConnectRequest {
    let mut r = req(source, mx, TlsPolicy::Opportunistic);
    r.reuse = true;
    r
}

/// One MTA connection: open, deliver `body`, QUIT the SMTP session and the proxy connection.
fn deliver(h: &Harness, r: &ConnectRequest, body: &[u8]) -> Origin {
    let mut c = h.client();
    let mut s = c.open(r).unwrap();
    let origin = s.ready.origin.clone();
    s.send_mail("a@x.test", &["b@y.test"], body).unwrap();
    s.quit().unwrap();
    c.quit().unwrap();
    origin
}

#[test]
fn a_second_mta_reuses_the_first_ones_connection_and_tls_session() {
    let mx = tls_mx(Faults::default());
    let h = Harness::start(&[mx.addr().port()], "");
    let r = reuse_req("127.0.0.2", mx.addr());
    assert_eq!(deliver(&h, &r, b"from MTA A\r\n"), Origin::New);
    // MTA B: a different client connection.
    let mut c = h.client();
    let mut s = c.open(&r).unwrap();
    match &s.ready.origin {
        Origin::Reused { uses, messages, .. } => {
            assert_eq!(*uses, 1);
            assert_eq!(*messages, 1);
        }
        o => panic!("expected reuse, got {o:?}"),
    }
    // The cached TLS facts and post-TLS capabilities come with it.
    assert!(s.ready.tls.is_some());
    assert!(s.caps.pipelining && !s.caps.starttls);
    s.send_mail("a@x.test", &["b@y.test"], b"from MTA B\r\n")
        .unwrap();
    s.quit().unwrap();
    c.quit().unwrap();
    assert!(mx.wait_until(WAIT, |st| st.messages.len() == 2));
    let st = mx.stats();
    assert_eq!(st.connections, 1, "one TCP connection");
    assert_eq!(st.tls_handshakes, 1, "one TLS handshake");
    let msgs = mx.messages();
    assert_eq!(msgs[0].content, b"from MTA A\r\n");
    assert_eq!(msgs[1].content, b"from MTA B\r\n");
    assert!(msgs
        .iter()
        .all(|m| m.tls && m.conn_index == msgs[0].conn_index));
    // The report shows it.
    let lines = greenarrow_proxy::report::report_lines(&h.server.snapshot());
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with("pooled source=127.0.0.2 ehlo=mta.test mx="),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains(" uses=2 messages=2 "), "{}", lines[0]);
    assert!(
        lines[1].starts_with("summary pooled=1 keys=1 pool_hits=1"),
        "{}",
        lines[1]
    );
}

#[test]
fn a_connection_the_mx_closed_while_idle_is_replaced() {
    let mx = tls_mx(Faults::default());
    let h = Harness::start(&[mx.addr().port()], "");
    let r = reuse_req("127.0.0.2", mx.addr());
    deliver(&h, &r, b"one\r\n");
    mx.drop_idle_connections();
    assert!(mx.wait_until(WAIT, |st| st.connections.iter().all(|c| c.closed)));
    assert_eq!(deliver(&h, &r, b"two\r\n"), Origin::New);
    assert!(mx.wait_until(WAIT, |st| st.messages.len() == 2));
    assert_eq!(mx.stats().connections, 2);
}

#[test]
fn an_idle_421_from_the_mx_makes_the_proxy_dial_fresh() {
    let mx = TestMx::start(TestMxConfig {
        faults: Faults {
            idle_close_after: Some(Duration::from_millis(200)),
            ..Faults::default()
        },
        ..TestMxConfig::default()
    })
    .unwrap();
    let h = Harness::start(&[mx.addr().port()], "");
    let r = reuse_req("127.0.0.2", mx.addr());
    deliver(&h, &r, b"one\r\n");
    // Wait until the MX has sent its 421 and closed.
    assert!(mx.wait_until(WAIT, |st| st.connections.first().is_some_and(|c| c.closed)));
    assert_eq!(deliver(&h, &r, b"two\r\n"), Origin::New);
    assert!(mx.wait_until(WAIT, |st| st.messages.len() == 2));
}

#[test]
fn idle_ttl_expiry_sends_quit() {
    let mx = TestMx::start(TestMxConfig::default()).unwrap();
    let h = Harness::start(&[mx.addr().port()], "pool:\n  idle_ttl: 300ms\n");
    deliver(&h, &reuse_req("127.0.0.2", mx.addr()), b"one\r\n");
    assert!(mx.wait_until(WAIT, |st| st
        .connections
        .first()
        .is_some_and(|c| c.quit_received && c.closed)));
    let (pooled, _) = h.server.shared().pool().snapshot(std::time::Instant::now());
    assert!(pooled.is_empty());
}

#[test]
fn the_message_cap_closes_the_connection() {
    let mx = TestMx::start(TestMxConfig::default()).unwrap();
    let h = Harness::start(&[mx.addr().port()], "");
    let mut r = reuse_req("127.0.0.2", mx.addr());
    r.reuse_max_messages = Some(2);
    assert_eq!(deliver(&h, &r, b"1\r\n"), Origin::New);
    assert!(matches!(deliver(&h, &r, b"2\r\n"), Origin::Reused { .. }));
    // Two messages: the cap is reached, the connection got QUIT.
    assert!(mx.wait_until(WAIT, |st| st
        .connections
        .first()
        .is_some_and(|c| c.quit_received)));
    assert_eq!(deliver(&h, &r, b"3\r\n"), Origin::New);
    assert!(mx.wait_until(WAIT, |st| st.messages.len() == 3));
    assert_eq!(mx.stats().connections, 2);
}

#[test]
fn an_mta_dropping_mid_body_leaves_nothing_pooled_and_nothing_delivered() {
    let mx = TestMx::start(TestMxConfig::default()).unwrap();
    let h = Harness::start(&[mx.addr().port()], "");
    let r = reuse_req("127.0.0.2", mx.addr());
    let mut raw = h.raw_connected(&r);
    raw.send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n");
    raw.reply();
    raw.reply();
    assert!(raw.reply().starts_with("354"));
    raw.send(b"Subject: cut\r\n\r\nhalf a message\r\n");
    drop(raw);
    assert!(mx.wait_until(WAIT, |st| st.connections.first().is_some_and(|c| c.closed)));
    assert!(mx.connections()[0].aborted_data);
    assert_eq!(mx.messages().len(), 0);
    let (pooled, _) = h.server.shared().pool().snapshot(std::time::Instant::now());
    assert!(pooled.is_empty());
}

#[test]
fn a_421_during_the_session_is_never_pooled() {
    let mx = TestMx::start(TestMxConfig {
        faults: Faults {
            reply_421_at: Some("RCPT".into()),
            ..Faults::default()
        },
        ..TestMxConfig::default()
    })
    .unwrap();
    let h = Harness::start(&[mx.addr().port()], "");
    let r = reuse_req("127.0.0.2", mx.addr());
    let mut c = h.client();
    let mut s = c.open(&r).unwrap();
    assert!(s.send_mail("a@x.test", &["b@y.test"], b"x\r\n").is_err());
    s.quit().unwrap();
    let (pooled, _) = h.server.shared().pool().snapshot(std::time::Instant::now());
    assert!(pooled.is_empty());
}

#[test]
fn different_source_or_ehlo_is_not_shared() {
    let mx = TestMx::start(TestMxConfig::default()).unwrap();
    let h = Harness::start(&[mx.addr().port()], "");
    let a = reuse_req("127.0.0.2", mx.addr());
    deliver(&h, &a, b"a\r\n");
    assert_eq!(
        deliver(&h, &reuse_req("127.0.0.3", mx.addr()), b"b\r\n"),
        Origin::New
    );
    let mut other_ehlo = a.clone();
    other_ehlo.ehlo = "other-mta.test".into();
    assert_eq!(deliver(&h, &other_ehlo, b"c\r\n"), Origin::New);
    // And a request that does not allow reuse never takes a pooled connection.
    let mut no_reuse = a.clone();
    no_reuse.reuse = false;
    assert_eq!(deliver(&h, &no_reuse, b"d\r\n"), Origin::New);
    assert!(matches!(deliver(&h, &a, b"e\r\n"), Origin::Reused { .. }));
}

#[test]
fn a_verify_request_never_gets_an_unverified_connection() {
    let (mx, _dir, ca_yaml) = verified_mx();
    let h = Harness::start(&[mx.addr().port()], &ca_yaml);
    // An opportunistic connection (not verified for any name) goes into the pool.
    deliver(&h, &reuse_req("127.0.0.2", mx.addr()), b"opportunistic\r\n");
    let mut v = reuse_req("127.0.0.2", mx.addr());
    v.tls = TlsPolicy::Verify;
    v.tls_name = Some("mx.test".into());
    assert_eq!(deliver(&h, &v, b"verified 1\r\n"), Origin::New);
    // Now a verified one is pooled too: the next verify request for the same name gets it.
    assert!(matches!(
        deliver(&h, &v, b"verified 2\r\n"),
        Origin::Reused { .. }
    ));
    assert!(mx.wait_until(WAIT, |st| st.messages.len() == 3));
    assert_eq!(mx.stats().connections, 2);
}

#[test]
fn fifty_concurrent_sessions_never_share_a_connection_and_every_message_arrives_once() {
    let mx = tls_mx(Faults::default());
    let h = Harness::start(&[mx.addr().port()], "pool:\n  max_idle_per_key: 64\n");
    let r = reuse_req("127.0.0.2", mx.addr());
    std::thread::scope(|s| {
        for t in 0..50 {
            let h = &h;
            let r = r.clone();
            s.spawn(move || {
                for n in 0..3 {
                    let body = format!("Subject: {t}/{n}\r\n\r\nthread {t} message {n}\r\n");
                    deliver(h, &r, body.as_bytes());
                }
            });
        }
    });
    assert!(mx.wait_until(WAIT, |st| st.messages.len() == 150));
    let mut bodies: Vec<Vec<u8>> = mx.messages().into_iter().map(|m| m.content).collect();
    bodies.sort();
    let mut want: Vec<Vec<u8>> = (0..50)
        .flat_map(|t| {
            (0..3).map(move |n| {
                format!("Subject: {t}/{n}\r\n\r\nthread {t} message {n}\r\n").into_bytes()
            })
        })
        .collect();
    want.sort();
    assert_eq!(bodies, want);
    let st = mx.stats();
    assert!(
        st.connections <= 50,
        "{} connections for 50 concurrent sessions",
        st.connections
    );
    // Every MX connection saw a clean sequence of transactions (no interleaving).
    for c in mx.connections() {
        let mut in_tx = false;
        for l in &c.commands {
            let u = l.to_ascii_uppercase();
            if u.starts_with("MAIL") {
                assert!(
                    !in_tx,
                    "interleaved transactions on one connection: {:?}",
                    c.commands
                );
                in_tx = true;
            } else if u == "DATA" {
                in_tx = false;
            }
        }
    }
}
