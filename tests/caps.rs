//! Connection caps per (source, destination): waiting for a pooled connection, the
//! `concurrency_limit` failure, per-source caps, eviction, reload.

mod common;

use common::*;
use greenarrow_proxy::config::Config;
use greenarrow_proxy::runtime::Runtime;
use greenarrow_proxy_client::ClientError;
use greenarrow_proxy_proto::protocol::{ConnectRequest, Failure, Origin, TlsPolicy};
use greenarrow_proxy_testkit::daemon::setup;
use greenarrow_proxy_testkit::testmx::{TestMx, TestMxConfig};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

fn plain_mx() -> TestMx {
    TestMx::start(TestMxConfig::default()).unwrap()
}

fn reuse_req(source: &str, mx: SocketAddr) -> ConnectRequest {
    let mut r = req(source, mx, TlsPolicy::None);
    r.reuse = true;
    r
}

fn caps_yaml(max: usize) -> String {
    format!("caps:\n  wait: 30s\n  max_connections: {max}\n")
}

/// The failure of a CONNECT that should have been refused.
fn refused(r: Result<impl Sized, ClientError>) -> Failure {
    match r {
        Err(ClientError::Proxy(f)) => f.failure,
        Err(e) => panic!("expected a proxy failure, got {e:?}"),
        Ok(_) => panic!("expected a proxy failure, got a connection"),
    }
}

#[test]
fn twenty_mtas_share_two_connections_and_wait_their_turn() {
    let mx = plain_mx();
    let h = Harness::start(
        &[mx.addr().port()],
        "caps:\n  wait: 60s\n  sources:\n    - addresses: [127.0.0.2]\n      max_connections: 2\n",
    );
    let r = reuse_req("127.0.0.2", mx.addr());
    let done = AtomicBool::new(false);
    let saw_waiting = AtomicUsize::new(0);
    let most_open = AtomicUsize::new(0);
    std::thread::scope(|s| {
        // The status view, sampled while the MTAs run.
        s.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                for row in h.server.shared().caps().rows(std::time::Instant::now()) {
                    saw_waiting.fetch_max(row.waiting, Ordering::SeqCst);
                    most_open.fetch_max(row.in_use + row.idle, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let mtas: Vec<_> = (0..20)
            .map(|i| {
                let (h, r) = (&h, &r);
                s.spawn(move || {
                    let mut c = h.client();
                    for m in 0..5 {
                        let mut sess = c.open(r).unwrap();
                        let body = format!("MTA {i} message {m}\r\n");
                        sess.send_mail("a@x.test", &["b@y.test"], body.as_bytes())
                            .unwrap();
                        sess.quit().unwrap();
                    }
                    c.quit().unwrap();
                })
            })
            .collect();
        for m in mtas {
            m.join().unwrap();
        }
        done.store(true, Ordering::SeqCst);
    });
    assert!(mx.wait_until(WAIT, |st| st.messages.len() == 100));
    let st = mx.stats();
    assert_eq!(st.messages, 100);
    assert!(st.max_open_connections <= 2, "{st:?}");
    assert!(
        st.connections <= 4,
        "far fewer than 100 connections: {st:?}"
    );
    let waits = h.server.shared().caps().wait_stats();
    assert!(waits.waited > 0, "{waits:?}");
    assert_eq!(waits.timed_out, 0);
    assert_eq!(waits.buckets.last().map(|b| b.1), Some(waits.waited));
    assert!(
        saw_waiting.load(Ordering::SeqCst) > 0,
        "the status view showed waiters"
    );
    assert!(most_open.load(Ordering::SeqCst) <= 2);
    let rows = h.server.shared().caps().rows(std::time::Instant::now());
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].destination, mx.addr().to_string());
    assert_eq!(rows[0].max_connections, Some(2));
    assert_eq!((rows[0].in_use, rows[0].waiting), (0, 0), "{rows:?}");
}

#[test]
fn an_expired_wait_fails_with_concurrency_limit_and_nothing_reaches_the_mx() {
    let mx = plain_mx();
    let h = Harness::start(&[mx.addr().port()], &caps_yaml(1));
    let r = reuse_req("127.0.0.2", mx.addr());
    let mut a = h.client();
    let _held = a.open(&r).unwrap();
    let mut b = h.client();
    let mut rb = r.clone();
    rb.wait = Some(Duration::from_millis(200));
    match b.open(&rb) {
        Err(ClientError::Proxy(f)) => {
            assert_eq!(f.failure, Failure::ConcurrencyLimit);
            assert_eq!(
                f.failure.code(),
                greenarrow_proxy_proto::protocol::Code {
                    reply: 452,
                    enhanced: "4.4.5",
                    tag: "concurrency_limit"
                }
            );
            assert!(f.text.contains("max_connections (1)"), "{}", f.text);
        }
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("expected concurrency_limit"),
    }
    // Only the first connection reached the MX.
    assert_eq!(mx.stats().connections, 1);
    let w = h.server.shared().caps().wait_stats();
    assert_eq!((w.waited, w.timed_out), (1, 1));
    // wait=0 fails at once, also without reuse.
    let mut rc = r.clone();
    rc.reuse = false;
    rc.wait = Some(Duration::ZERO);
    assert_eq!(refused(b.open(&rc)), Failure::ConcurrencyLimit);
    assert_eq!(mx.stats().connections, 1);
}

#[test]
fn a_returning_connection_is_handed_to_the_waiting_request() {
    let mx = plain_mx();
    let h = Harness::start(&[mx.addr().port()], &caps_yaml(1));
    let r = reuse_req("127.0.0.2", mx.addr());
    let mut a = h.client();
    let sa = a.open(&r).unwrap();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let mut b = h.client();
            let mut sb = b.open(&r).unwrap();
            let origin = sb.ready.origin.clone();
            sb.send_mail("a@x.test", &["b@y.test"], b"from B\r\n")
                .unwrap();
            sb.quit().unwrap();
            origin
        });
        // B is queued before A gives its connection back.
        let queued = (0..2000).any(|_| {
            std::thread::sleep(Duration::from_millis(5));
            h.server.shared().caps().rows(std::time::Instant::now())[0].waiting == 1
        });
        assert!(queued);
        sa.quit().unwrap();
        assert!(matches!(waiter.join().unwrap(), Origin::Reused { .. }));
    });
    assert!(mx.wait_until(WAIT, |st| st.messages.len() == 1));
    assert_eq!(mx.stats().connections, 1, "one MX connection for both");
}

#[test]
fn idle_connections_of_another_ehlo_name_make_room() {
    let mx = plain_mx();
    let h = Harness::start(&[mx.addr().port()], &caps_yaml(1));
    let r = reuse_req("127.0.0.2", mx.addr());
    let mut a = h.client();
    let sa = a.open(&r).unwrap();
    sa.quit().unwrap();
    // Idle in the pool under ehlo=mta.test; another name wants the only place.
    let mut other = r.clone();
    other.ehlo = "other.test".into();
    other.wait = Some(Duration::ZERO);
    let mut b = h.client();
    let sb = b.open(&other).unwrap();
    assert_eq!(sb.ready.origin, Origin::New);
    assert!(mx.wait_until(WAIT, |st| st.connections.len() == 2
        && st.connections[0].quit_received
        && st.connections[0].closed));
    // The ledger counts one connection: the idle one's place went to the new one (the MX
    // may see the old one close a moment after the new one opens: QUIT is off the path).
    let rows = h.server.shared().caps().rows(std::time::Instant::now());
    assert_eq!((rows[0].in_use, rows[0].idle), (1, 0), "{rows:?}");
}

#[test]
fn two_sources_sharing_an_mx_each_have_their_own_cap() {
    let mx = plain_mx();
    let h = Harness::start(&[mx.addr().port()], &caps_yaml(1));
    let mut r2 = reuse_req("127.0.0.2", mx.addr());
    let mut r3 = reuse_req("127.0.0.3", mx.addr());
    r2.wait = Some(Duration::ZERO);
    r3.wait = Some(Duration::ZERO);
    let mut a = h.client();
    let _s2 = a.open(&r2).unwrap();
    let mut b = h.client();
    let _s3 = b.open(&r3).unwrap();
    let mut c = h.client();
    assert_eq!(refused(c.open(&r2)), Failure::ConcurrencyLimit);
    assert_eq!(refused(c.open(&r3)), Failure::ConcurrencyLimit);
    assert_eq!(mx.stats().connections, 2);
    let rows = h.server.shared().caps().rows(std::time::Instant::now());
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows
        .iter()
        .all(|r| r.in_use == 1 && r.max_connections == Some(1)));
}

#[test]
fn a_reload_changes_the_cap_for_new_connections_and_keeps_open_ones() {
    let mx = plain_mx();
    // The same text as the harness's configuration (relative paths: its directory's files).
    let (_other_dir, yaml, _) = proxy_files(&[mx.addr().port()], &caps_yaml(1));
    let h = Harness::start(&[mx.addr().port()], &caps_yaml(1));
    let mut r = reuse_req("127.0.0.2", mx.addr());
    r.wait = Some(Duration::ZERO);
    let mut a = h.client();
    let mut sa = a.open(&r).unwrap();
    let mut b = h.client();
    assert_eq!(refused(b.open(&r)), Failure::ConcurrencyLimit);
    let reload = |max: usize| {
        let y = yaml.replace(&caps_yaml(1), &caps_yaml(max));
        let cfg = Config::from_yaml_str(&y, &h.dir.0).unwrap();
        assert_eq!(cfg.caps.default.max_connections, Some(max));
        h.server
            .shared()
            .replace_runtime(Runtime::build(cfg).unwrap());
    };
    reload(2);
    let mut sb = b.open(&r).unwrap();
    // Lowered again: both open connections stay and deliver; a third is refused.
    reload(1);
    sa.send_mail("a@x.test", &["b@y.test"], b"A after reload\r\n")
        .unwrap();
    sb.send_mail("a@x.test", &["b@y.test"], b"B after reload\r\n")
        .unwrap();
    let mut c = h.client();
    assert_eq!(refused(c.open(&r)), Failure::ConcurrencyLimit);
    assert!(mx.wait_until(WAIT, |st| st.messages.len() == 2));
    assert_eq!(mx.stats().connections, 2);
}

#[test]
fn the_rate_cap_counts_new_connections_in_the_window() {
    let mx = plain_mx();
    let h = Harness::start(
        &[mx.addr().port()],
        "caps:\n  window: 1h\n  max_new_connections: 2\n",
    );
    let mut r = req("127.0.0.2", mx.addr(), TlsPolicy::None);
    r.wait = Some(Duration::ZERO);
    let mut c = h.client();
    for _ in 0..2 {
        let s = c.open(&r).unwrap();
        s.quit().unwrap();
    }
    // Both are closed (reuse=no), but two dials are in the window: the third waits, and fails.
    match c.open(&r) {
        Err(ClientError::Proxy(f)) => {
            assert_eq!(f.failure, Failure::ConcurrencyLimit);
            assert!(f.text.contains("max_new_connections (2)"), "{}", f.text);
        }
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("expected concurrency_limit"),
    }
    assert_eq!(mx.stats().connections, 2);
}

/// A stop does not leave a request waiting out `caps.wait`: it gets `421 busy` at once, and
/// no new request waits.
#[test]
fn a_stop_answers_the_requests_waiting_at_a_cap_with_busy() {
    let mx = plain_mx();
    // Without the stop the request would wait this long, then fail with concurrency_limit.
    let h = Harness::start(
        &[mx.addr().port()],
        "caps:\n  wait: 15s\n  max_connections: 1\n",
    );
    let r = reuse_req("127.0.0.2", mx.addr());
    let mut a = h.client();
    let sa = a.open(&r).unwrap();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| refused(h.client().open(&r)));
        let queued = (0..2000).any(|_| {
            std::thread::sleep(Duration::from_millis(5));
            h.server.shared().caps().rows(std::time::Instant::now())[0].waiting == 1
        });
        assert!(queued);
        h.server.stop_accepting();
        // The stop emptied the queue (without it the request would still be queued).
        assert_eq!(
            h.server.shared().caps().rows(std::time::Instant::now())[0].waiting,
            0
        );
        assert_eq!(waiter.join().unwrap(), Failure::Busy);
    });
    drop(sa);
    assert_eq!(mx.stats().connections, 1, "the waiter dialled nothing");
}

/// The same with the real daemon and a real SIGHUP: a raised cap lets a new connection in
/// while the one open stays and delivers.
#[test]
fn a_cap_raised_by_sighup_lets_new_connections_in_and_keeps_the_open_one() {
    let s = setup::Setup::new(&caps_yaml(1));
    let mut d = s.daemon();
    let addr = d.wait_ready()[0];
    let mut r = s.request("127.0.0.2", true);
    r.wait = Some(Duration::ZERO);
    let mut a = s.client(addr, SECRET);
    let mut sa = a.open(&r).unwrap();
    let mut b = s.client(addr, SECRET);
    assert_eq!(refused(b.open(&r)), Failure::ConcurrencyLimit);
    s.rewrite(&s.yaml.replace(&caps_yaml(1), &caps_yaml(2)));
    d.signal(nix::sys::signal::Signal::SIGHUP);
    d.wait_for("configuration reloaded");
    let mut sb = b.open(&r).unwrap();
    sa.send_mail("a@x.test", &["b@y.test"], b"A, open across the reload\r\n")
        .unwrap();
    sb.send_mail("a@x.test", &["b@y.test"], b"B, after the reload\r\n")
        .unwrap();
    assert!(s.mx.wait_until(WAIT, |st| st.messages.len() == 2));
    assert_eq!(s.mx.stats().connections, 2);
}
