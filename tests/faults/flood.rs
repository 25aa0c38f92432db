//! Connections that never finish their TLS handshake, against a real MTA session.

use crate::common::*;
use crate::util::*;
use greenarrow_proxy::server::workers::PoolCounts;
use greenarrow_proxy_testkit::testmx::Faults;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A real session through the client; returns how long it took.
fn timed_good_session(h: &Harness, good: &greenarrow_proxy_testkit::testmx::TestMx) -> Duration {
    let t0 = Instant::now();
    good_session(h, good);
    t0.elapsed()
}

/// Open 1,000 TCP connections that send nothing, from the given source addresses in turn
/// (with `timeouts.mta_handshake: 2s` and the defaults `max_sessions: 1000`,
/// `max_queued_sessions: 64`, `max_sessions_per_ip: 500`). The real sessions of the tests
/// come from 127.0.0.1.
fn thousand_silent(h: &Harness, sources: &[&str]) -> Vec<TcpStream> {
    (0..1000)
        .map(|i| {
            let src: std::net::SocketAddr =
                format!("{}:0", sources[i % sources.len()]).parse().unwrap();
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            s.bind(&src.into()).unwrap();
            s.connect(&h.addr.into()).unwrap();
            s.into()
        })
        .collect()
}

/// The proxy closes every silent connection after its handshake timeout.
fn all_closed(silent: Vec<TcpStream>) {
    for mut s in silent {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = [0u8; 16];
        assert!(matches!(s.read(&mut b), Ok(0) | Err(_)));
    }
}

/// Wait (bounded) until the server's counters satisfy `pred`. The server exposes no
/// condition variable for its worker pool, so this polls its counters; it never assumes
/// that something has happened after some time.
fn wait_workers(h: &Harness, pred: impl Fn(PoolCounts) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !pred(h.server.worker_counts()) {
        assert!(Instant::now() < deadline, "{:?}", h.server.worker_counts());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// 1,000 silent connections, then at once a real session: it must get through.
///
/// It does not: all 1,000 workers are spawned but many have not started yet, so the jobs
/// meant for them still sit in the queue and count against `max_queued_sessions`; the real
/// session's connection is refused (closed before TLS) although a queue slot is free.
#[test]
fn a_thousand_silent_connections_then_at_once_a_real_session() {
    let good = mx(Faults::default());
    let h = proxy(&[&good], "timeouts:\n  mta_handshake: 2s\n");
    // One misbehaving host: max_sessions_per_ip lets 500 in and closes the rest at once, so
    // workers remain for everyone else.
    let silent = thousand_silent(&h, &["127.0.0.5"]);
    let took = timed_good_session(&h, &good);
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(h.server.shared().stats().snapshot().refused_busy, 0);
    assert_eq!(h.server.shared().stats().snapshot().refused_per_ip, 500);
    all_closed(silent);
    good_session(&h, &good);
}

/// 1,000 silent connections, each picked up by a worker, then a real session: it gets through
/// in bounded time, but only once the first silent handshakes time out — every worker is busy
/// handshaking, so it waits in the queue for about `mta_handshake` (finding, see
/// docs/SECURITY.md).
#[test]
fn a_thousand_silent_connections_delay_but_do_not_stop_a_real_session() {
    let good = mx(Faults::default());
    let h = proxy(&[&good], "timeouts:\n  mta_handshake: 2s\n");
    let t0 = Instant::now();
    // Four hosts, 250 connections each: under max_sessions_per_ip, so every worker is taken.
    let silent = thousand_silent(
        &h,
        &["127.0.0.10", "127.0.0.11", "127.0.0.12", "127.0.0.13"],
    );
    wait_workers(&h, |c| c.threads == 1000 && c.queued == 0);
    let opened = t0.elapsed();
    let took = timed_good_session(&h, &good);
    eprintln!(
        "1000 silent connections taken by workers in {opened:?}; a real session then took {took:?}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(h.server.shared().stats().snapshot().refused_busy, 0);
    all_closed(silent);
    good_session(&h, &good);
}

/// More silent connections than threads plus queue (`max_sessions: 20`,
/// `max_queued_sessions: 5`): a real session arriving meanwhile is refused (the proxy closes
/// its TCP connection before TLS). Unauthenticated peers can fill every slot for
/// `mta_handshake` at a time; documented as not defended in docs/SECURITY.md. Once the
/// handshakes time out the daemon serves again.
#[test]
fn silent_connections_beyond_threads_and_queue_refuse_real_sessions() {
    let good = mx(Faults::default());
    let h = proxy(
        &[&good],
        "max_sessions: 20\nmax_queued_sessions: 5\ntimeouts:\n  mta_handshake: 2s\n",
    );
    let silent: Vec<TcpStream> = (0..25)
        .map(|_| TcpStream::connect(h.addr).unwrap())
        .collect();
    // The 26th is refused: wait until the proxy counts it so.
    let extra = TcpStream::connect(h.addr).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut b = [0u8; 16];
    assert!(matches!((&extra).read(&mut b), Ok(0) | Err(_)));
    // End the silent connections and wait until the proxy has closed each of them: by then
    // their workers are free and the queue is empty.
    for mut s in silent {
        s.shutdown(std::net::Shutdown::Write).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert!(matches!(s.read(&mut b), Ok(0) | Err(_)));
    }
    let took = timed_good_session(&h, &good);
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(h.server.shared().stats().snapshot().refused_busy >= 1);
}

/// A peer that trickles a TLS record one byte at a time, each byte well within the handshake
/// timeout, must still be cut off once `timeouts.mta_handshake` has passed in total.
#[test]
fn a_trickling_handshake_is_cut_off_at_the_deadline() {
    let good = mx(Faults::default());
    let h = proxy(&[&good], "timeouts:\n  mta_handshake: 1s\n");
    let mut tcp = TcpStream::connect(h.addr).unwrap();
    // A TLS handshake record header announcing 4000 bytes, then one byte every 200 ms.
    tcp.write_all(&[0x16, 0x03, 0x01, 0x0f, 0xa0]).unwrap();
    let t0 = Instant::now();
    let mut cut_off = None;
    while t0.elapsed() < Duration::from_secs(6) {
        std::thread::sleep(Duration::from_millis(200));
        if tcp.write_all(&[0x01]).is_err() {
            cut_off = Some(t0.elapsed());
            break;
        }
        tcp.set_nonblocking(true).unwrap();
        let mut b = [0u8; 64];
        // Anything but "nothing yet" means the proxy gave up (EOF, reset, or an alert).
        let closed = match tcp.read(&mut b) {
            Ok(_) => true,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        };
        tcp.set_nonblocking(false).unwrap();
        if closed {
            cut_off = Some(t0.elapsed());
            break;
        }
    }
    let cut_off = cut_off.expect("the proxy kept a trickling handshake open for 6 s");
    assert!(cut_off < Duration::from_millis(2500), "{cut_off:?}");
    good_session(&h, &good);
}
