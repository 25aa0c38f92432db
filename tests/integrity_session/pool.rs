//! The pool at checkout and check-in: the request's message cap, one deadline for all checkout
//! probes, unread MX bytes, and a disconnect after a finished transaction.

use crate::common::*;
use crate::scripted;
use greenarrow_proxy_client::ProxyClient;
use greenarrow_proxy_proto::protocol::{ConnectRequest, Origin, TlsPolicy};
use greenarrow_proxy_testkit::testmx::{Faults, TestMx, TestMxConfig};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

fn plain_mx(faults: Faults) -> TestMx {
    TestMx::start(TestMxConfig {
        faults,
        ..TestMxConfig::default()
    })
    .unwrap()
}

fn reuse_req(mx: SocketAddr) -> ConnectRequest {
    let mut r = req("127.0.0.2", mx, TlsPolicy::None);
    r.reuse = true;
    r
}

fn stored(h: &Harness) -> u64 {
    h.server.shared().pool().snapshot(Instant::now()).1.stored
}

fn pooled(h: &Harness) -> usize {
    h.server.shared().pool().snapshot(Instant::now()).1.idle
}

/// Issue 11 item 9a: a pooled connection that already carried the request's
/// `reuse_max_messages` is not handed out; it is closed (with QUIT) and a new one is made.
#[test]
fn a_pooled_connection_at_the_requests_message_cap_is_not_handed_out() {
    let mx = plain_mx(Faults::default());
    let h = Harness::start(&[mx.addr().port()], "");
    let uncapped = reuse_req(mx.addr());
    let mut c = h.client();
    let mut s = c.open(&uncapped).unwrap();
    assert_eq!(s.ready.origin, Origin::New);
    s.send_mail("a@x.test", &["b@y.test"], b"one\r\n").unwrap();
    s.quit().unwrap();
    c.noop().unwrap();
    assert_eq!(pooled(&h), 1);
    let mut capped = uncapped.clone();
    capped.reuse_max_messages = Some(1);
    let s = c.open(&capped).unwrap();
    assert_eq!(
        s.ready.origin,
        Origin::New,
        "a connection at the request's message cap was handed out"
    );
    s.quit().unwrap();
    c.quit().unwrap();
    assert!(mx.wait_until(WAIT, |st| st
        .connections
        .first()
        .is_some_and(|c| c.quit_received && c.closed)));
}

/// Issue 11 item 9b: with `checkout_probe: noop`, the probes of one CONNECT share one deadline
/// (`mx_command`, here 1 s): three pooled connections to an MX that never answers NOOP cost one
/// probe, then the proxy dials fresh (before, each cost 10 s, one after another).
#[test]
fn checkout_probes_of_one_connect_share_one_deadline() {
    let mx = plain_mx(Faults {
        silent_at: Some("NOOP".into()),
        ..Faults::default()
    });
    let h = Harness::start(
        &[mx.addr().port()],
        "pool:\n  checkout_probe: noop\ntimeouts:\n  mx_command: 1s\n",
    );
    let r = reuse_req(mx.addr());
    let mut clients: Vec<ProxyClient> = (0..3).map(|_| h.client()).collect();
    let sessions: Vec<_> = clients.iter_mut().map(|c| c.open(&r).unwrap()).collect();
    for s in sessions {
        assert_eq!(s.ready.origin, Origin::New);
        s.quit().unwrap();
    }
    for c in &mut clients {
        c.noop().unwrap();
    }
    assert_eq!(pooled(&h), 3);
    let mut cfg = h.client_config();
    cfg.timeout = Duration::from_secs(15);
    let mut c = ProxyClient::connect(&cfg).unwrap();
    let s = c.open(&r).unwrap();
    assert_eq!(s.ready.origin, Origin::New);
    let noops: usize = mx
        .connections()
        .iter()
        .map(|c| c.commands.iter().filter(|l| *l == "NOOP").count())
        .sum();
    assert_eq!(noops, 1, "probes after the checkout deadline");
    s.quit().unwrap();
    c.quit().unwrap();
}

/// Check-in refuses a connection with MX bytes nobody read. The relay catches bytes that come
/// with or right after a reply (`tests/integrity.rs`); here the MX sends a stray reply later,
/// while the MTA is between commands and nothing is owed, and then the MTA goes away without
/// QUIT: only the check-in can see them.
#[test]
fn a_connection_with_unread_mx_bytes_is_not_pooled() {
    let (go, wait_go) = std::sync::mpsc::channel::<()>();
    let (sent, wait_sent) = std::sync::mpsc::channel::<()>();
    let (addr, script) = scripted::mx(move |mut p| {
        p.greet();
        let mut quit = false;
        while let Some(line) = p.line() {
            match line.as_str() {
                "NOOP" => {
                    p.send(b"250 2.0.0 ok\r\n");
                    // Later, unasked: the stray reply.
                    if wait_go.recv().is_ok() {
                        // Sent at once, not held back by Nagle until the proxy's delayed ACK.
                        p.tcp.set_nodelay(true).unwrap();
                        p.send(b"250 2.0.0 stray\r\n");
                        let _ = sent.send(());
                    }
                }
                "QUIT" => {
                    quit = true;
                    p.send(b"221 bye\r\n");
                }
                _ => {
                    p.send(b"250 ok\r\n");
                }
            }
        }
        quit
    });
    let h = Harness::start(&[addr.port()], "");
    let mut raw = h.raw_connected(&reuse_req(addr));
    raw.send(b"NOOP\r\n");
    assert_eq!(raw.reply(), "250 2.0.0 ok\r\n");
    go.send(()).unwrap();
    wait_sent.recv().unwrap();
    // The MTA leaves without QUIT after a finished exchange: the relay ends without looking
    // at the MX again, and the connection goes to the check-in.
    drop(raw);
    // Refused at check-in, it is QUIT off the session's path (the relay itself would have
    // closed it without QUIT).
    assert!(
        script.join().unwrap(),
        "the connection was refused at check-in and QUIT"
    );
    assert_eq!(
        stored(&h),
        0,
        "a connection with unread MX bytes was pooled"
    );
    assert_eq!(pooled(&h), 0);
}

/// PROTOCOL.md: an MTA that disconnects after a finished transaction, without QUIT, still
/// leaves its MX connection in the pool; the next MTA reuses it.
#[test]
fn a_disconnect_after_a_finished_transaction_without_quit_pools_the_connection() {
    let mx = plain_mx(Faults::default());
    let h = Harness::start(&[mx.addr().port()], "");
    let r = reuse_req(mx.addr());
    let mut raw = h.raw_connected(&r);
    raw.send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n");
    for _ in 0..2 {
        assert!(raw.reply().starts_with("250 "));
    }
    assert!(raw.reply().starts_with("354 "));
    raw.send(b"Subject: x\r\n\r\nbody\r\n.\r\n");
    assert!(raw.reply().starts_with("250 "));
    drop(raw);
    // No reply can tell when the session thread has put the connection back: wait for it.
    let t0 = Instant::now();
    while pooled(&h) == 0 && t0.elapsed() < WAIT {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(pooled(&h), 1);
    let mut c = h.client();
    let s = c.open(&r).unwrap();
    assert!(
        matches!(s.ready.origin, Origin::Reused { messages: 1, .. }),
        "{:?}",
        s.ready.origin
    );
    s.quit().unwrap();
    c.quit().unwrap();
    assert_eq!(mx.stats().connections, 1);
}
