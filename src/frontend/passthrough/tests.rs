//! The relay on real loopback socket pairs, and its bookkeeping without sockets.

use super::*;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread::{self, JoinHandle};

/// A connected pair: (the relay's end, the peer's end).
fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (ours, _) = l.accept().unwrap();
    // No test may hang: a peer blocked for this long fails its test.
    peer.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    peer.set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    (ours, peer)
}

/// The two peers of a relay running on its own thread: (MTA, MX, relay).
fn start(
    initial: &[u8],
    limits: PassthroughLimits,
) -> (TcpStream, TcpStream, JoinHandle<PassthroughSummary>) {
    let (mta, mta_peer) = pair();
    let (mx, mx_peer) = pair();
    let initial = initial.to_vec();
    let h = thread::spawn(move || relay(&mta, &mx, &initial, &limits));
    (mta_peer, mx_peer, h)
}

fn read_to_end(mut s: &TcpStream) -> Vec<u8> {
    let mut v = Vec::new();
    s.read_to_end(&mut v).unwrap();
    v
}

fn read_exact(mut s: &TcpStream, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    s.read_exact(&mut v).unwrap();
    v
}

fn limits() -> PassthroughLimits {
    PassthroughLimits {
        idle: Duration::from_secs(30),
        stall: Duration::from_secs(30),
        ..PassthroughLimits::default()
    }
}

/// `n` bytes of a pattern that does not repeat with any short period.
fn pattern(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

#[test]
fn bytes_go_both_ways_exactly() {
    let (mut mta, mut mx, h) = start(b"", limits());
    mx.write_all(b"220 mx.test ESMTP\r\n").unwrap();
    assert_eq!(read_exact(&mta, 19), b"220 mx.test ESMTP\r\n");
    mta.write_all(b"EHLO mta.test\r\n").unwrap();
    assert_eq!(read_exact(&mx, 15), b"EHLO mta.test\r\n");
    mx.write_all(b"250 ok\r\n").unwrap();
    assert_eq!(read_exact(&mta, 8), b"250 ok\r\n");
    mta.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mx), b"", "the MTA's EOF reaches the MX");
    mx.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mta), b"");
    let s = h.join().unwrap();
    assert_eq!(s.reason, CloseReason::MtaClosed);
    assert_eq!(s.mta_to_mx, 15);
    assert_eq!(s.mx_to_mta, 19 + 8);
}

#[test]
fn ten_megabytes_each_way_at_once_do_not_deadlock() {
    const N: usize = 10 * 1024 * 1024;
    let (mta, mx, h) = start(b"", limits());
    let up = pattern(N, 1);
    let down = pattern(N, 2);
    // Each peer writes everything, then half-closes, while a second thread reads.
    let writer = |s: &TcpStream, data: Vec<u8>| {
        let mut s = s.try_clone().unwrap();
        thread::spawn(move || {
            s.write_all(&data).unwrap();
            s.shutdown(Shutdown::Write).unwrap();
        })
    };
    let w1 = writer(&mta, up.clone());
    let w2 = writer(&mx, down.clone());
    let got_at_mx = read_to_end(&mx);
    let got_at_mta = read_to_end(&mta);
    w1.join().unwrap();
    w2.join().unwrap();
    assert!(got_at_mx == up, "MTA → MX bytes differ");
    assert!(got_at_mta == down, "MX → MTA bytes differ");
    let s = h.join().unwrap();
    assert_eq!((s.mta_to_mx, s.mx_to_mta), (N as u64, N as u64));
    assert!(
        matches!(s.reason, CloseReason::MtaClosed | CloseReason::MxClosed),
        "{:?}",
        s.reason
    );
}

#[test]
fn the_initial_chunk_reaches_the_mx_before_anything_else() {
    let (mta, mta_peer) = pair();
    let (mx, mx_peer) = pair();
    // The MTA's next bytes are already waiting in the socket when the relay starts.
    (&mta_peer).write_all(b"MAIL FROM:<a@x.test>\r\n").unwrap();
    mta_peer.shutdown(Shutdown::Write).unwrap();
    let h = thread::spawn(move || relay(&mta, &mx, b"EHLO early.test\r\n", &limits()));
    assert_eq!(
        read_to_end(&mx_peer),
        b"EHLO early.test\r\nMAIL FROM:<a@x.test>\r\n"
    );
    mx_peer.shutdown(Shutdown::Write).unwrap();
    let s = h.join().unwrap();
    assert_eq!(s.mta_to_mx, 17 + 22);
    assert_eq!(s.reason, CloseReason::MtaClosed);
}

#[test]
fn an_initial_chunk_larger_than_the_buffer_is_sent_whole() {
    let initial = pattern(5000, 3);
    let l = PassthroughLimits {
        buffer: 1024,
        ..limits()
    };
    let (mta, mx, h) = start(&initial, l);
    mta.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mx), initial);
    mx.shutdown(Shutdown::Write).unwrap();
    assert_eq!(h.join().unwrap().mta_to_mx, 5000);
}

#[test]
fn the_mta_closing_first_lets_the_mx_finish_its_reply() {
    let (mut mta, mut mx, h) = start(b"", limits());
    mta.write_all(b"QUIT\r\n").unwrap();
    mta.shutdown(Shutdown::Write).unwrap();
    // The MX sees the command, then EOF ...
    assert_eq!(read_to_end(&mx), b"QUIT\r\n");
    // ... and its reply still reaches the MTA, followed by EOF.
    mx.write_all(b"221 bye\r\n").unwrap();
    mx.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mta), b"221 bye\r\n");
    assert_eq!(h.join().unwrap().reason, CloseReason::MtaClosed);
}

#[test]
fn the_mx_closing_first_lets_the_mta_finish_sending() {
    let (mut mta, mut mx, h) = start(b"", limits());
    mx.write_all(b"421 going away\r\n").unwrap();
    mx.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mta), b"421 going away\r\n");
    mta.write_all(b"QUIT\r\n").unwrap();
    mta.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mx), b"QUIT\r\n");
    let s = h.join().unwrap();
    assert_eq!(s.reason, CloseReason::MxClosed);
    assert_eq!((s.mta_to_mx, s.mx_to_mta), (6, 16));
}

#[test]
fn silence_both_ways_ends_in_the_idle_timeout() {
    let l = PassthroughLimits {
        idle: Duration::from_millis(200),
        ..limits()
    };
    let (mut mta, mx, h) = start(b"", l);
    mta.write_all(b"NOOP\r\n").unwrap();
    assert_eq!(read_exact(&mx, 6), b"NOOP\r\n");
    let s = h.join().unwrap();
    assert_eq!(s.reason, CloseReason::Idle);
    assert_eq!(s.mta_to_mx, 6);
    // The relay's ends were dropped: both peers see EOF.
    assert_eq!(read_to_end(&mta), b"");
    assert_eq!(read_to_end(&mx), b"");
}

#[test]
fn a_half_closed_relay_is_still_bounded_by_the_idle_timeout() {
    let l = PassthroughLimits {
        idle: Duration::from_millis(200),
        ..limits()
    };
    let (mta, mx, h) = start(b"", l);
    mta.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mx), b"");
    // The MX never answers nor closes.
    assert_eq!(h.join().unwrap().reason, CloseReason::Idle);
}

#[test]
fn the_lifetime_bounds_the_relay() {
    let l = PassthroughLimits {
        lifetime: Some(Duration::from_millis(200)),
        ..limits()
    };
    let (_mta, _mx, h) = start(b"", l);
    assert_eq!(h.join().unwrap().reason, CloseReason::Lifetime);
}

/// A peer that never reads while the other one writes without end: the stall bound fires
/// and names the peer that stopped reading.
fn stall(reader_that_never_reads: Side) {
    let l = PassthroughLimits {
        stall: Duration::from_millis(200),
        buffer: 4096,
        ..limits()
    };
    let (mta, mx, h) = start(b"", l);
    let (writer, _silent) = match reader_that_never_reads {
        Side::Mx => (mta, mx),
        Side::Mta => (mx, mta),
    };
    let w = thread::spawn(move || {
        let chunk = [b'x'; 65536];
        let mut sent = 0u64;
        // Ends when the relay drops its end (EPIPE/ECONNRESET) or after the peer timeout.
        while (&writer).write(&chunk).is_ok_and(|n| n > 0) {
            sent += chunk.len() as u64;
        }
        sent
    });
    let s = h.join().unwrap();
    assert_eq!(s.reason, CloseReason::Stall(reader_that_never_reads));
    let sent = w.join().unwrap();
    let moved = match reader_that_never_reads {
        Side::Mx => s.mta_to_mx,
        Side::Mta => s.mx_to_mta,
    };
    assert!(moved < sent, "moved {moved} of {sent}");
}

#[test]
fn an_mx_that_never_reads_hits_the_stall_bound() {
    stall(Side::Mx);
}

#[test]
fn an_mta_that_never_reads_hits_the_stall_bound() {
    stall(Side::Mta);
}

#[test]
fn a_reset_is_reported_as_an_error_naming_the_side() {
    let (mta, _mx, h) = start(b"", limits());
    // SO_LINGER 0: close sends RST.
    SockRef::from(&mta)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(mta);
    match h.join().unwrap().reason {
        CloseReason::Error(e) => assert!(e.contains("MTA"), "{e}"),
        other => panic!("expected an error, got {other:?}"),
    }
}

// ---- bookkeeping without sockets ----

#[test]
fn a_pipe_compacts_when_its_tail_is_full() {
    let t = Instant::now();
    let mut p = Pipe::new(8, b"", t);
    p.space()[..8].copy_from_slice(b"abcdefgh");
    p.filled(8, t);
    assert!(!p.wants_read(), "full");
    p.drained(5, t);
    assert!(p.wants_read(), "room after the written bytes");
    assert_eq!(p.space().len(), 5);
    assert_eq!(p.pending(), b"fgh");
    p.drained(3, t);
    assert_eq!(p.moved, 8);
    assert!(!p.wants_write());
    assert_eq!(p.space().len(), 8);
}

#[test]
fn the_eof_is_passed_on_only_after_the_pending_bytes() {
    let t = Instant::now();
    let mut p = Pipe::new(16, b"QUIT\r\n", t);
    p.eof = true;
    assert!(!p.wants_shutdown());
    p.drained(6, t);
    assert!(p.wants_shutdown());
    p.shut = true;
    assert!(p.done() && !p.wants_read());
}

#[test]
fn the_clock_prefers_lifetime_then_stall_then_idle() {
    let t = Instant::now();
    let l = PassthroughLimits {
        idle: Duration::from_secs(10),
        stall: Duration::from_secs(5),
        lifetime: Some(Duration::from_secs(20)),
        ..PassthroughLimits::default()
    };
    let c = Clock::new(&l, t);
    let quiet = Pipe::new(16, b"", t);
    let waiting = Pipe::new(16, b"x", t); // waits for the MX since t
    assert_eq!(c.expired(t, &quiet, &quiet), None);
    assert_eq!(c.next_deadline(&quiet, &quiet), t + l.idle);
    assert_eq!(c.next_deadline(&waiting, &quiet), t + l.stall);
    let at = |s| t + Duration::from_secs(s);
    assert_eq!(
        c.expired(at(5), &waiting, &quiet),
        Some(CloseReason::Stall(Side::Mx))
    );
    assert_eq!(
        c.expired(at(5), &quiet, &waiting),
        Some(CloseReason::Stall(Side::Mta))
    );
    assert_eq!(c.expired(at(10), &quiet, &quiet), Some(CloseReason::Idle));
    assert_eq!(
        c.expired(at(20), &waiting, &quiet),
        Some(CloseReason::Lifetime)
    );
}

#[test]
fn activity_and_write_progress_push_the_deadlines_back() {
    let t = Instant::now();
    let l = PassthroughLimits {
        idle: Duration::from_secs(10),
        stall: Duration::from_secs(5),
        ..PassthroughLimits::default()
    };
    let mut c = Clock::new(&l, t);
    let at = |s| t + Duration::from_secs(s);
    c.activity(at(8));
    let quiet = Pipe::new(16, b"", t);
    assert_eq!(c.expired(at(10), &quiet, &quiet), None);
    let mut p = Pipe::new(16, b"abcd", t);
    p.drained(1, at(4));
    assert_eq!(c.expired(at(6), &p, &quiet), None, "progress at 4 s");
    assert_eq!(c.next_deadline(&p, &quiet), at(9));
}

#[test]
fn close_reasons_have_stable_tags() {
    assert_eq!(CloseReason::Stall(Side::Mx).tag(), "stall");
    assert_eq!(
        CloseReason::Stall(Side::Mx).to_string(),
        "the MX stopped reading"
    );
    assert_eq!(CloseReason::Error("x".into()).tag(), "error");
}

mod spliced;
