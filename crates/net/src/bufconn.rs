//! A blocking connection with an input buffer and an output buffer: the thin I/O layer the
//! sans-I/O parsers are driven from.
//!
//! Input: [`BufConn::fill`] reads whatever the peer has sent (one `read` call) and appends it;
//! [`BufConn::pending`] shows unconsumed bytes; [`BufConn::consume`] drops a prefix. Lines and
//! SMTP replies are read with bounds. Output is collected with [`BufConn::queue`] and written
//! in one go with [`BufConn::flush`], so a pipelined batch costs one write.

use crate::deadline::{ceil_millis, Deadline};
use greenarrow_proxy_proto::smtp::{parse_reply, Reply, ReplyError, ReplyLimits};
use std::fmt;
use std::io::{self, Read, Write};
use std::time::Duration;

/// How much one `fill` reads at most.
const READ_CHUNK: usize = 16 * 1024;

/// How much the first `fill` of an empty (new or released) input buffer reads at most; the
/// room offered doubles, up to [`READ_CHUNK`], each time a read fills it. SMTP replies are
/// short: a pooled connection's buffer, freed while idle, is then not zeroed 16 KiB at a time
/// for each session that takes it.
const FIRST_CHUNK: usize = 2 * 1024;

/// Why a bounded read failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReadError {
    /// The peer closed the connection.
    Closed,
    /// Nothing arrived within the timeout.
    Timeout,
    /// A line (or whatever [`BufConn::read_until`] waited for) was longer than allowed.
    LineTooLong(usize),
    /// A reply could not be parsed.
    BadReply(ReplyError),
    /// Socket or TLS error.
    Io(io::Error),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Closed => write!(f, "connection closed by peer"),
            ReadError::Timeout => write!(f, "timed out waiting for data"),
            ReadError::LineTooLong(n) => write!(f, "line longer than {n} octets"),
            ReadError::BadReply(e) => write!(f, "malformed reply: {e}"),
            ReadError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ReadError {}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ReadError::Timeout,
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => ReadError::Closed,
            _ => ReadError::Io(e),
        }
    }
}

/// Something whose read/write timeouts can be set (the socket under a stream).
pub trait Timeouts {
    fn set_timeouts(&self, timeout: Duration) -> io::Result<()>;
}

/// A stream with buffers.
///
/// The input buffer's unconsumed bytes are `inbuf[start..end]`; `inbuf[end..]` is spare room
/// that was zeroed once and is read into directly, so a read does not clear memory first.
pub struct BufConn<S> {
    stream: S,
    inbuf: Vec<u8>,
    start: usize,
    end: usize,
    out: Vec<u8>,
    timeout: Option<Duration>,
    /// The room the next `fill` offers ([`FIRST_CHUNK`] up to [`READ_CHUNK`]).
    chunk: usize,
    /// The last `fill` got less than the room it offered (see [`BufConn::drained`]).
    drained: bool,
}

impl<S: Read + Write + Timeouts> BufConn<S> {
    pub fn new(stream: S) -> BufConn<S> {
        BufConn {
            stream,
            inbuf: Vec::new(),
            start: 0,
            end: 0,
            out: Vec::new(),
            timeout: None,
            chunk: FIRST_CHUNK,
            drained: false,
        }
    }

    /// A connection whose first input is `initial` (bytes already read from the stream by
    /// someone else, e.g. what followed a PROXY header).
    pub fn with_input(stream: S, initial: &[u8]) -> BufConn<S> {
        let mut c = BufConn::new(stream);
        c.inbuf = initial.to_vec();
        c.end = initial.len();
        c
    }

    /// The stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The stream and whatever input was read but not consumed.
    pub fn into_parts(self) -> (S, Vec<u8>) {
        let rest = self.pending().to_vec();
        (self.stream, rest)
    }

    /// Set the read and write timeout, skipping the system call when unchanged.
    pub fn set_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        if self.timeout != Some(timeout) {
            self.stream.set_timeouts(timeout)?;
            self.timeout = Some(timeout);
        }
        Ok(())
    }

    /// Unconsumed input.
    pub fn pending(&self) -> &[u8] {
        self.inbuf.get(self.start..self.end).unwrap_or_default()
    }

    /// Drop `n` bytes of unconsumed input.
    pub fn consume(&mut self, n: usize) {
        self.start = self.start.saturating_add(n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Free the buffers' memory if they hold nothing (for a connection about to sit idle:
    /// the next read or write allocates again).
    pub fn release_buffers(&mut self) {
        if self.start == self.end {
            self.inbuf = Vec::new();
            self.start = 0;
            self.end = 0;
            self.chunk = FIRST_CHUNK;
        }
        if self.out.is_empty() {
            self.out = Vec::new();
        }
    }

    /// Give back the buffers' memory beyond `keep` bytes each (after a burst of large
    /// replies or lines): unconsumed input moves to the front and is kept, as is queued output.
    pub fn shrink_to(&mut self, keep: usize) {
        if self.inbuf.capacity() > keep {
            self.inbuf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            self.inbuf
                .truncate(self.end.max(keep.min(self.inbuf.len())));
            self.inbuf.shrink_to(keep);
        }
        if self.out.capacity() > keep {
            self.out.shrink_to(keep);
        }
    }

    /// Read once from the stream and append what arrived. `Err(Closed)` at end of stream.
    pub fn fill(&mut self) -> Result<usize, ReadError> {
        let chunk = self.chunk;
        if self.inbuf.len() - self.end < chunk {
            // Make room: move the unconsumed bytes to the front when that frees at least
            // half, and zero new room only when there is still not enough.
            if self.start > 0 && self.start >= self.end / 2 {
                self.inbuf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.inbuf.len() - self.end < chunk {
                self.inbuf.resize(self.end + chunk, 0);
            }
        }
        let end = self.end;
        let room = self.inbuf.len() - end;
        self.drained = false;
        let r = loop {
            match self
                .stream
                .read(self.inbuf.get_mut(end..).unwrap_or_default())
            {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        };
        match r {
            Ok(0) => Err(ReadError::Closed),
            Ok(n) => {
                self.end = (end + n).min(self.inbuf.len());
                self.drained = n < room;
                if n >= room {
                    self.chunk = (chunk * 2).min(READ_CHUNK);
                }
                Ok(n)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the last [`BufConn::fill`] got less than the room it offered, and nothing was
    /// written since: the stream had nothing more to give at that moment. Over a plain TCP
    /// socket that means its receive queue was empty then (a read returns everything queued,
    /// up to the room); over TLS it says only that no decrypted data was left.
    pub fn drained(&self) -> bool {
        self.drained
    }

    /// Read one complete SMTP reply, bounded by `limits`, and consume it. Each read waits
    /// for the socket's timeout (see [`BufConn::read_reply_until`] for a deadline on the whole
    /// reply).
    pub fn read_reply(&mut self, limits: &ReplyLimits) -> Result<Reply, ReadError> {
        self.read_reply_by(limits, Self::fill)
    }

    /// A reply, reading more with `more` while it is incomplete.
    fn read_reply_by(
        &mut self,
        limits: &ReplyLimits,
        mut more: impl FnMut(&mut Self) -> Result<usize, ReadError>,
    ) -> Result<Reply, ReadError> {
        loop {
            match parse_reply(self.pending(), limits) {
                Ok(Some((reply, n))) => {
                    self.consume(n);
                    return Ok(reply);
                }
                Ok(None) => {
                    more(self)?;
                }
                Err(e) => return Err(ReadError::BadReply(e)),
            }
        }
    }

    /// Make the socket timeout end a read by `deadline`: `Err(Timeout)` when the deadline has
    /// passed. The timeout in place is kept when it ends no later than the deadline plus a
    /// 1/64 margin (a phase's deadline set a moment ago, a timeout of that phase's length)
    /// and no sooner than halfway there (a read that times out early is simply tried again),
    /// so a deadline per reply costs no system call in the usual case; otherwise it becomes
    /// the time left, rounded up to a whole millisecond.
    pub fn set_timeout_until(&mut self, deadline: Deadline) -> Result<(), ReadError> {
        let left = deadline.left().ok_or(ReadError::Timeout)?;
        let cap = ceil_millis(left);
        match self.timeout {
            Some(t) if t <= cap + t / 64 && t.saturating_mul(2) >= cap => Ok(()),
            _ => Ok(self.set_timeout(cap)?),
        }
    }

    /// [`BufConn::fill`] bounded by `deadline` (not per read): the socket timeout is what is
    /// left before it, and a read that times out early is tried again for the rest.
    pub fn fill_until(&mut self, deadline: Deadline) -> Result<usize, ReadError> {
        loop {
            self.set_timeout_until(deadline)?;
            match self.fill() {
                Err(ReadError::Timeout) => continue,
                r => return r,
            }
        }
    }

    /// [`BufConn::read_reply`] with a deadline for the whole reply: a peer that trickles a
    /// byte now and then cannot keep it open past `deadline`.
    pub fn read_reply_until(
        &mut self,
        limits: &ReplyLimits,
        deadline: Deadline,
    ) -> Result<Reply, ReadError> {
        self.read_reply_by(limits, |c| c.fill_until(deadline))
    }

    /// Read until `complete` finds what it waits for in the unconsumed input, all by
    /// `deadline` however the bytes trickle in: the one read-within-a-deadline loop (a line, a
    /// request head, a PROXY header). `complete` is called on the unconsumed input, first
    /// before any read, then after each, and returns `Some` once it has what it needs;
    /// nothing is consumed. `Err(LineTooLong(max))` when `max` bytes are waiting and
    /// `complete` still wants more.
    pub fn read_until<T>(
        &mut self,
        max: usize,
        deadline: Deadline,
        mut complete: impl FnMut(&[u8]) -> Option<T>,
    ) -> Result<T, ReadError> {
        loop {
            if let Some(found) = complete(self.pending()) {
                return Ok(found);
            }
            if self.pending().len() >= max {
                return Err(ReadError::LineTooLong(max));
            }
            self.fill_until(deadline)?;
        }
    }

    /// Read one line (through its LF) of at most `max` bytes, complete by `deadline` however
    /// its bytes trickle in; returns its length without consuming it. Call
    /// [`BufConn::consume`] with the length once handled.
    pub fn read_line_until(&mut self, max: usize, deadline: Deadline) -> Result<usize, ReadError> {
        // Bytes already searched are not searched again.
        let mut scanned = 0;
        let len = self.read_until(max, deadline, |p| {
            let found = p.get(scanned..)?.iter().position(|&b| b == b'\n');
            let len = found.map(|i| scanned + i + 1);
            scanned = p.len();
            len
        })?;
        if len > max {
            return Err(ReadError::LineTooLong(max));
        }
        Ok(len)
    }

    /// Take the unwritten output (to rewrite it; queue the result again).
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Add bytes to the output buffer.
    pub fn queue(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// Whether output is waiting.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// How many bytes of output are waiting.
    pub fn output_len(&self) -> usize {
        self.out.len()
    }

    /// Write the output buffer out and flush the stream.
    pub fn flush(&mut self) -> io::Result<()> {
        // What was sent may be answered: the last read's emptiness says nothing any more.
        self.drained = false;
        if !self.out.is_empty() {
            let r = self.stream.write_all(&self.out);
            self.out.clear();
            r?;
        }
        self.stream.flush()
    }

    /// Queue and flush.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.queue(bytes);
        self.flush()
    }

    /// Write `bytes` straight through (large body data), after anything queued.
    pub fn write_through(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.drained = false;
        if !self.out.is_empty() {
            self.out.extend_from_slice(bytes);
            return self.flush();
        }
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Mutable access to the stream (for closing it).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }
}

impl Timeouts for std::net::TcpStream {
    fn set_timeouts(&self, timeout: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(timeout))?;
        self.set_write_timeout(Some(timeout))
    }
}

impl Timeouts for std::os::unix::net::UnixStream {
    fn set_timeouts(&self, timeout: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(timeout))?;
        self.set_write_timeout(Some(timeout))
    }
}

#[cfg(test)]
mod tests;
