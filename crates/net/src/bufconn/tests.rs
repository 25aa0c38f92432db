//! BufConn over a scripted stream.
use super::*;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::time::Instant;

/// A scripted stream: each read returns the next item (bytes, or a timeout).
struct Script {
    reads: VecDeque<Option<Vec<u8>>>,
    timeouts_set: RefCell<Vec<Duration>>,
}

impl Script {
    fn new(reads: Vec<Option<&[u8]>>) -> Script {
        Script {
            reads: reads.into_iter().map(|r| r.map(<[u8]>::to_vec)).collect(),
            timeouts_set: RefCell::new(Vec::new()),
        }
    }
}

impl Read for Script {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.reads.pop_front() {
            None => Ok(0),
            Some(None) => Err(io::ErrorKind::TimedOut.into()),
            Some(Some(b)) => {
                let n = b.len().min(buf.len());
                buf[..n].copy_from_slice(&b[..n]);
                if n < b.len() {
                    self.reads.push_front(Some(b[n..].to_vec()));
                }
                Ok(n)
            }
        }
    }
}

impl Write for Script {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Timeouts for Script {
    fn set_timeouts(&self, timeout: Duration) -> io::Result<()> {
        self.timeouts_set.borrow_mut().push(timeout);
        Ok(())
    }
}

#[test]
fn input_survives_many_fills_and_partial_consumes() {
    let big = vec![b'x'; READ_CHUNK * 3];
    let mut c = BufConn::new(Script::new(vec![
        Some(b"250-a\r\n25"),
        Some(b"0 b\r\n"),
        Some(&big),
        Some(b"\r\nEND\r\n"),
    ]));
    let r = c.read_reply(&ReplyLimits::default()).unwrap();
    assert_eq!(r.raw(), b"250-a\r\n250 b\r\n");
    let mut got = Vec::new();
    while !got.ends_with(b"END\r\n") {
        if c.pending().is_empty() {
            c.fill().unwrap();
        }
        let n = c.pending().len().min(1000);
        got.extend_from_slice(&c.pending()[..n]);
        c.consume(n);
    }
    assert_eq!(got.len(), big.len() + 7);
    assert!(got[..big.len()].iter().all(|&b| b == b'x'));
    assert!(matches!(c.fill(), Err(ReadError::Closed)));
}

#[test]
fn release_buffers_keeps_unconsumed_input() {
    let mut c = BufConn::new(Script::new(vec![Some(b"250 ok\r\n220 x\r\n")]));
    c.fill().unwrap();
    c.consume(8);
    c.release_buffers();
    assert_eq!(c.pending(), b"220 x\r\n");
    c.consume(7);
    c.release_buffers();
    assert!(c.pending().is_empty());
    assert_eq!(c.inbuf.capacity(), 0);
    assert_eq!(c.out.capacity(), 0);
}

#[test]
fn shrink_to_keeps_unconsumed_input_and_queued_output() {
    let big = vec![b'x'; READ_CHUNK * 8];
    let mut c = BufConn::new(Script::new(vec![
        Some(&big),
        Some(&big),
        Some(b"250 ok\r\n"),
    ]));
    while c.pending().len() < big.len() * 2 {
        c.fill().unwrap();
    }
    c.consume(big.len() * 2 - 3);
    c.queue(&big);
    c.flush().unwrap();
    c.queue(b"queued");
    assert!(c.inbuf.capacity() > 64 * 1024 && c.out.capacity() > 64 * 1024);
    c.shrink_to(4096);
    assert!(c.inbuf.capacity() <= 4096, "{}", c.inbuf.capacity());
    assert!(c.out.capacity() <= 4096, "{}", c.out.capacity());
    assert_eq!(c.pending(), b"xxx");
    assert_eq!(c.output_len(), 6);
    c.fill().unwrap();
    assert_eq!(c.pending(), b"xxx250 ok\r\n");
}

#[test]
fn read_reply_until_gives_up_at_its_deadline_however_the_bytes_trickle() {
    // One byte per read, forever: a deadline already passed ends it without a read.
    let trickle: Vec<Option<&[u8]>> = vec![Some(b"2"); 64];
    let mut c = BufConn::new(Script::new(trickle.clone()));
    let r = c.read_reply_until(&ReplyLimits::default(), Deadline::after(Duration::ZERO));
    assert!(matches!(r, Err(ReadError::Timeout)));
    assert_eq!(c.get_ref().reads.len(), 64, "nothing was read");
    let mut c = BufConn::new(Script::new(trickle));
    let r = c.read_line_until(100, Deadline::after(Duration::ZERO));
    assert!(matches!(r, Err(ReadError::Timeout)));
}

#[test]
fn read_until_tries_again_after_an_early_socket_timeout_and_sets_few_timeouts() {
    let mut c = BufConn::new(Script::new(vec![
        Some(b"25"),
        None,
        Some(b"0 ok\r\nQUIT\r"),
        Some(b"\n"),
    ]));
    let deadline = Deadline::after(Duration::from_secs(600));
    let r = c
        .read_reply_until(&ReplyLimits::default(), deadline)
        .unwrap();
    assert_eq!(r.raw(), b"250 ok\r\n");
    assert_eq!(c.read_line_until(100, deadline).unwrap(), 6);
    // The first read set the timeout to the time left; later reads kept it (it still ends
    // by the deadline and not before halfway there).
    let set = c.get_ref().timeouts_set.borrow().clone();
    assert_eq!(set.len(), 1, "{set:?}");
    assert!(set[0] <= Duration::from_secs(600) && set[0] > Duration::from_secs(590));
}

#[test]
fn set_timeout_until_lowers_or_raises_a_timeout_that_does_not_fit() {
    let mut c = BufConn::new(Script::new(vec![]));
    c.set_timeout(Duration::from_secs(300)).unwrap();
    c.set_timeout_until(Deadline::after(Duration::from_secs(10)))
        .unwrap();
    c.set_timeout(Duration::from_millis(1)).unwrap();
    c.set_timeout_until(Deadline::after(Duration::from_secs(10)))
        .unwrap();
    let set = c.get_ref().timeouts_set.borrow().clone();
    assert_eq!(set.len(), 4, "{set:?}");
    assert!(set[1] <= Duration::from_secs(10) && set[3] <= Duration::from_secs(10));
    assert!(set[1] > Duration::from_secs(9) && set[3] > Duration::from_secs(9));
}

#[test]
fn a_deadline_one_timeout_away_keeps_the_timeout_in_place() {
    // The relay's usual case: the socket has the phase's timeout, and a reply's deadline is
    // that long from when its first byte was awaited; later reads of the same reply (here
    // 50 ms later) find a little less time left: still no system call.
    let mut c = BufConn::new(Script::new(vec![]));
    c.set_timeout(Duration::from_secs(300)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    c.set_timeout_until(Deadline::at(deadline)).unwrap();
    c.set_timeout_until(Deadline::at(deadline - Duration::from_millis(50)))
        .unwrap();
    assert_eq!(
        *c.get_ref().timeouts_set.borrow(),
        vec![Duration::from_secs(300)]
    );
}

#[test]
fn read_until_waits_for_what_it_looks_for_and_is_bounded() {
    let deadline = Deadline::after(Duration::from_secs(600));
    // A request head arriving in pieces, an early socket timeout between them.
    let mut c = BufConn::new(Script::new(vec![
        Some(b"GET / HT"),
        None,
        Some(b"TP/1.0\r\n\r\nrest"),
    ]));
    let end = |p: &[u8]| p.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    assert_eq!(c.read_until(64, deadline, end).unwrap(), 18);
    assert_eq!(
        c.pending(),
        b"GET / HTTP/1.0\r\n\r\nrest",
        "nothing consumed"
    );
    // Complete without a read: what is waiting is looked at first.
    assert_eq!(c.read_until(64, deadline, end).unwrap(), 18);
    // Past `max` with nothing found: refused, not read forever.
    let mut c = BufConn::new(Script::new(vec![Some(b"GET / HTTP/1.0\r\nX: aaaaaaaa")]));
    assert!(matches!(
        c.read_until(8, deadline, end),
        Err(ReadError::LineTooLong(8))
    ));
    // The peer closing first.
    let mut c = BufConn::new(Script::new(vec![Some(b"GET"), Some(b"")]));
    assert!(matches!(
        c.read_until(64, deadline, end),
        Err(ReadError::Closed)
    ));
}

#[test]
fn drained_says_whether_the_last_read_left_room_and_nothing_was_sent_since() {
    let full = vec![b'x'; FIRST_CHUNK];
    let mut c = BufConn::new(Script::new(vec![
        Some(&full),
        Some(b"250 ok\r\n"),
        Some(b"250 again\r\n"),
    ]));
    assert!(!c.drained(), "nothing read yet");
    assert_eq!(c.fill().unwrap(), FIRST_CHUNK);
    assert!(
        !c.drained(),
        "a read that filled its room may have left more"
    );
    c.consume(FIRST_CHUNK);
    assert_eq!(c.fill().unwrap(), 8);
    assert!(c.drained());
    c.send(b"NOOP\r\n").unwrap();
    assert!(!c.drained(), "what was sent may be answered");
    c.fill().unwrap();
    assert!(c.drained());
    c.write_through(b"x").unwrap();
    assert!(!c.drained());
}

#[test]
fn a_released_buffer_reads_small_first_and_grows_when_reads_fill_it() {
    let big = vec![b'x'; READ_CHUNK * 4];
    let mut c = BufConn::new(Script::new(vec![Some(&big), Some(b"250 ok\r\n")]));
    let mut sizes = Vec::new();
    while sizes.iter().sum::<usize>() < big.len() {
        sizes.push(c.fill().unwrap());
        c.consume(c.pending().len());
    }
    // 2, 4, 8, 16, 16, 16 KiB, and the last 2 KiB of the 64.
    assert_eq!(
        sizes,
        [2048, 4096, 8192, READ_CHUNK, READ_CHUNK, READ_CHUNK, 2048]
    );
    c.release_buffers();
    c.fill().unwrap();
    assert_eq!(c.pending(), b"250 ok\r\n");
    assert!(c.inbuf.len() <= FIRST_CHUNK, "{}", c.inbuf.len());
}
