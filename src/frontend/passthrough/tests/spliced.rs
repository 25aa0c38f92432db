//! The splice path: which path a relay takes, and that splicing keeps every byte, the
//! half-close in both directions, the bound under a slow reader and the sockets' mode.

use super::*;

/// A relay on its own thread that hands its sockets back with the summary: (MTA, MX, relay).
type Handed = JoinHandle<(PassthroughSummary, TcpStream, TcpStream)>;

fn start_handing_back(initial: &[u8], limits: PassthroughLimits) -> (TcpStream, TcpStream, Handed) {
    let (mta, mta_peer) = pair();
    let (mx, mx_peer) = pair();
    let initial = initial.to_vec();
    let h = thread::spawn(move || {
        let s = relay(&mta, &mx, &initial, &limits);
        (s, mta, mx)
    });
    (mta_peer, mx_peer, h)
}

/// Write `data` then half-close, on a thread of its own.
fn write_then_close(s: &TcpStream, data: Vec<u8>) -> JoinHandle<()> {
    let mut s = s.try_clone().unwrap();
    thread::spawn(move || {
        s.write_all(&data).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
    })
}

// ---- the choice, without sockets ----

#[test]
fn the_reported_path_is_splice_if_a_direction_spliced_else_why_not() {
    use splice::path;
    assert_eq!(path(true, true, false), Path::Splice);
    assert_eq!(
        path(true, true, true),
        Path::Splice,
        "one pipe made, one not"
    );
    assert_eq!(path(true, false, false), Path::Copy(CopyWhy::NoBulk));
    assert_eq!(path(true, false, true), Path::Copy(CopyWhy::NoPipes));
    assert_eq!(path(false, false, false), Path::Copy(CopyWhy::Disabled));
    assert_eq!(Path::Splice.as_str(), "splice");
    assert_eq!(Path::Copy(CopyWhy::NoPipes).to_string(), "copy (no pipes)");
}

#[test]
fn only_a_read_that_fills_the_whole_empty_buffer_is_bulk() {
    let t = Instant::now();
    let mut p = Pipe::new(8, b"", t);
    // SMTP lines: reads shorter than the buffer.
    p.filled(6, t);
    p.drained(6, t);
    assert!(!p.wants_splice());
    // Filling the rest of a partly full buffer is not a whole buffer at once.
    p.filled(3, t);
    p.space();
    p.filled(5, t);
    assert!(!p.wants_splice());
    p.drained(8, t);
    assert!(!p.wants_splice());
    // A whole buffer in one read: bulk, but only once it has been written out.
    p.filled(8, t);
    assert!(!p.wants_splice(), "bytes pending");
    p.drained(5, t);
    assert!(!p.wants_splice(), "bytes pending");
    p.drained(3, t);
    assert!(p.wants_splice());
    assert!(!p.is_counting());
}

#[test]
fn a_counting_pipe_keeps_the_bound_and_stops_reading_when_the_kernel_refuses() {
    let t = Instant::now();
    let mut p = Pipe::new(16, b"", t);
    p.filled(16, t);
    p.drained(16, t);
    p.move_to_kernel(8);
    assert!(p.is_counting() && !p.wants_splice());
    assert_eq!((p.pending_len(), p.room(), p.moved), (0, 8, 16));
    assert!(
        p.pending().is_empty() && p.space().is_empty(),
        "no bytes of its own"
    );
    p.filled(3, t);
    assert_eq!(p.waiting_since, Some(t), "bytes wait for the destination");
    p.filled(5, t);
    assert!(!p.wants_read(), "full");
    p.drained(6, t);
    assert_eq!((p.pending_len(), p.moved), (2, 22));
    assert!(p.wants_read());
    // The kernel pipe's slots are full before its bytes: no read until a write.
    p.refused();
    assert!(!p.wants_read() && p.wants_write());
    p.drained(1, t);
    assert!(p.wants_read(), "a write frees a slot");
    // A refusal with nothing pending is a source with nothing to give.
    p.drained(1, t);
    p.refused();
    assert!(p.wants_read() && !p.wants_write());
    assert_eq!(p.waiting_since, None);
    assert_eq!(p.moved, 24);
    // EOF and shutdown as on the copying path.
    p.eof = true;
    assert!(p.wants_shutdown());
}

#[test]
fn a_pipe_with_bytes_pending_does_not_move_to_the_kernel() {
    let t = Instant::now();
    let mut p = Pipe::new(8, b"", t);
    p.filled(8, t);
    p.move_to_kernel(8);
    assert!(!p.is_counting());
    assert_eq!(p.pending(), &[0u8; 8][..]);
}

// ---- on sockets ----

#[test]
fn an_smtp_dialogue_is_copied_without_pipes() {
    let (mta, mut mx, h) = start_handing_back(b"EHLO a.test\r\n", limits());
    assert_eq!(read_exact(&mx, 13), b"EHLO a.test\r\n");
    mx.write_all(b"250 ok\r\n").unwrap();
    assert_eq!(read_exact(&mta, 8), b"250 ok\r\n");
    mta.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mx), b"");
    mx.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mta), b"");
    let (s, _, _) = h.join().unwrap();
    assert_eq!(s.path, Path::Copy(CopyWhy::NoBulk));
    assert_eq!((s.mta_to_mx, s.mx_to_mta), (13, 8));
}

#[test]
fn bulk_data_splices_and_the_sockets_are_blocking_again_after() {
    let (mta, mx, h) = start_handing_back(b"", limits());
    let data = pattern(1024 * 1024, 5);
    let w = write_then_close(&mta, data.clone());
    assert!(read_to_end(&mx) == data);
    w.join().unwrap();
    mx.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mta), b"");
    let (s, relay_mta, relay_mx) = h.join().unwrap();
    assert_eq!(s.path, Path::Splice);
    assert_eq!((s.mta_to_mx, s.mx_to_mta), (data.len() as u64, 0));
    for sock in [&relay_mta, &relay_mx] {
        assert!(
            !SockRef::from(sock).nonblocking().unwrap(),
            "blocking again"
        );
    }
}

/// `n` bytes each way, byte-exact, with the half-close passed on in both directions: the
/// side `first` sends everything and half-closes while the other side still has all of its
/// bytes to send, which it does only after it saw the first side's EOF.
fn megabytes_each_way(first: Side, l: PassthroughLimits, want: Path) {
    const N: usize = 6 * 1024 * 1024;
    let (mta, mx, h) = start(b"", l);
    let up = pattern(N, 11);
    let down = pattern(N + 1, 12);
    let (a, b, a_data, b_data) = match first {
        Side::Mta => (&mta, &mx, up.clone(), down.clone()),
        Side::Mx => (&mx, &mta, down.clone(), up.clone()),
    };
    let w = write_then_close(a, a_data.clone());
    // The other side reads up to the first side's EOF, and only then answers.
    assert!(
        read_to_end(b) == a_data,
        "bytes after {first:?}'s half-close differ"
    );
    w.join().unwrap();
    let w = write_then_close(b, b_data.clone());
    assert!(read_to_end(a) == b_data, "the answer differs");
    w.join().unwrap();
    let s = h.join().unwrap();
    assert_eq!(s.path, want);
    assert_eq!(
        (s.mta_to_mx, s.mx_to_mta),
        (up.len() as u64, down.len() as u64)
    );
    let reason = match first {
        Side::Mta => CloseReason::MtaClosed,
        Side::Mx => CloseReason::MxClosed,
    };
    assert_eq!(s.reason, reason);
}

#[test]
fn megabytes_splice_byte_exact_with_the_mta_half_closing_first() {
    megabytes_each_way(Side::Mta, limits(), Path::Splice);
}

#[test]
fn megabytes_splice_byte_exact_with_the_mx_half_closing_first() {
    megabytes_each_way(Side::Mx, limits(), Path::Splice);
}

#[test]
fn the_copying_path_still_serves_when_splice_is_off() {
    let l = PassthroughLimits {
        splice: false,
        ..limits()
    };
    megabytes_each_way(Side::Mta, l.clone(), Path::Copy(CopyWhy::Disabled));
    megabytes_each_way(Side::Mx, l, Path::Copy(CopyWhy::Disabled));
}

#[test]
fn initial_bytes_then_bulk_data_arrive_in_order_across_the_switch() {
    // The initial chunk (larger than the buffer, which grows for it) and a first line go
    // through the buffer; the bulk after it through the kernel pipe.
    let initial = pattern(5000, 4);
    let l = PassthroughLimits {
        buffer: 4096,
        pipe: 4096,
        ..limits()
    };
    let (mta, mx, h) = start(&initial, l);
    let bulk = pattern(2 * 1024 * 1024, 6);
    let mut sent = b"DATA\r\n".to_vec();
    sent.extend_from_slice(&bulk);
    let w = write_then_close(&mta, sent.clone());
    let mut want = initial.clone();
    want.extend_from_slice(&sent);
    assert!(read_to_end(&mx) == want, "bytes differ");
    w.join().unwrap();
    mx.shutdown(Shutdown::Write).unwrap();
    let s = h.join().unwrap();
    assert_eq!(s.path, Path::Splice);
    assert_eq!(s.mta_to_mx, want.len() as u64);
}

/// A reader that takes small bites with pauses: the writer is held back (backpressure
/// through the socket buffers and the one-page pipe) and every byte arrives in order.
#[test]
fn a_slow_reader_gets_every_byte_in_order_through_a_small_pipe() {
    const N: usize = 3 * 1024 * 1024;
    let l = PassthroughLimits {
        buffer: 4096,
        pipe: 4096,
        ..limits()
    };
    let (mta, mx, h) = start(b"", l);
    let data = pattern(N, 21);
    let w = write_then_close(&mta, data.clone());
    let mut got = Vec::with_capacity(N);
    let mut bite = [0u8; 1000];
    let mut reads = 0u32;
    loop {
        let n = (&mx).read(&mut bite).unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&bite[..n]);
        reads += 1;
        if reads.is_multiple_of(64) {
            // A slow consumer (not synchronisation: nothing waits for this).
            thread::sleep(Duration::from_millis(2));
        }
    }
    w.join().unwrap();
    assert!(got == data, "bytes differ ({} of {N} arrived)", got.len());
    mx.shutdown(Shutdown::Write).unwrap();
    let s = h.join().unwrap();
    assert_eq!(s.path, Path::Splice);
    assert_eq!(s.mta_to_mx, N as u64);
}

#[test]
fn a_reader_that_stops_still_hits_the_stall_bound_on_the_splice_path() {
    let l = PassthroughLimits {
        stall: Duration::from_millis(200),
        buffer: 4096,
        pipe: 4096,
        ..limits()
    };
    let (mta, _mx, h) = start(b"", l);
    let w = thread::spawn(move || {
        let chunk = [b'y'; 65536];
        while (&mta).write(&chunk).is_ok_and(|n| n > 0) {}
    });
    let s = h.join().unwrap();
    assert_eq!(s.path, Path::Splice);
    assert_eq!(s.reason, CloseReason::Stall(Side::Mx));
    // At most the socket buffers and one page stood between the writer and the reader.
    w.join().unwrap();
}
