//! A blocking connection with an input buffer and an output buffer: the thin I/O layer the
//! sans-I/O parsers are driven from.
//!
//! Input: [`BufConn::fill`] reads whatever the peer has sent (one `read` call) and appends it;
//! [`BufConn::pending`] shows unconsumed bytes; [`BufConn::consume`] drops a prefix. Lines and
//! SMTP replies are read with bounds. Output is collected with [`BufConn::queue`] and written
//! in one go with [`BufConn::flush`], so a pipelined batch costs one write.

use crate::smtp::{parse_reply, Reply, ReplyError, ReplyLimits};
use std::fmt;
use std::io::{self, Read, Write};
use std::time::Duration;

/// How much one `fill` reads at most.
const READ_CHUNK: usize = 16 * 1024;

/// Why a bounded read failed.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed the connection.
    Closed,
    /// Nothing arrived within the timeout.
    Timeout,
    /// A line was longer than allowed.
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
pub struct BufConn<S> {
    stream: S,
    inbuf: Vec<u8>,
    start: usize,
    out: Vec<u8>,
    timeout: Option<Duration>,
}

impl<S: Read + Write + Timeouts> BufConn<S> {
    pub fn new(stream: S) -> BufConn<S> {
        BufConn {
            stream,
            inbuf: Vec::new(),
            start: 0,
            out: Vec::new(),
            timeout: None,
        }
    }

    /// The stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The stream and whatever input was read but not consumed.
    pub fn into_parts(self) -> (S, Vec<u8>) {
        let rest = self.inbuf[self.start..].to_vec();
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
        &self.inbuf[self.start..]
    }

    /// Drop `n` bytes of unconsumed input.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.inbuf.len());
        if self.start == self.inbuf.len() {
            self.inbuf.clear();
            self.start = 0;
        }
    }

    /// Read once from the stream and append what arrived. `Err(Closed)` at end of stream.
    pub fn fill(&mut self) -> Result<usize, ReadError> {
        if self.start > 0 && self.start >= self.inbuf.len() / 2 {
            self.inbuf.drain(..self.start);
            self.start = 0;
        }
        let len = self.inbuf.len();
        self.inbuf.resize(len + READ_CHUNK, 0);
        let r = loop {
            match self.stream.read(&mut self.inbuf[len..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        };
        match r {
            Ok(0) => {
                self.inbuf.truncate(len);
                Err(ReadError::Closed)
            }
            Ok(n) => {
                self.inbuf.truncate(len + n);
                Ok(n)
            }
            Err(e) => {
                self.inbuf.truncate(len);
                Err(e.into())
            }
        }
    }

    /// Read one line (through its LF) of at most `max` bytes; returns it without consuming.
    /// Call [`BufConn::consume`] with its length once handled.
    pub fn read_line(&mut self, max: usize) -> Result<usize, ReadError> {
        let mut scanned = 0;
        loop {
            let p = self.pending();
            if let Some(i) = p[scanned..].iter().position(|&b| b == b'\n') {
                let len = scanned + i + 1;
                if len > max {
                    return Err(ReadError::LineTooLong(max));
                }
                return Ok(len);
            }
            scanned = p.len();
            if scanned >= max {
                return Err(ReadError::LineTooLong(max));
            }
            self.fill()?;
        }
    }

    /// Read one complete SMTP reply, bounded by `limits`, and consume it.
    pub fn read_reply(&mut self, limits: &ReplyLimits) -> Result<Reply, ReadError> {
        loop {
            match parse_reply(self.pending(), limits) {
                Ok(Some((reply, n))) => {
                    self.consume(n);
                    return Ok(reply);
                }
                Ok(None) => {
                    self.fill()?;
                }
                Err(e) => return Err(ReadError::BadReply(e)),
            }
        }
    }

    /// Add bytes to the output buffer.
    pub fn queue(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// Whether output is waiting.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Write the output buffer out and flush the stream.
    pub fn flush(&mut self) -> io::Result<()> {
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

impl Timeouts for crate::tls::ServerTlsStream {
    fn set_timeouts(&self, timeout: Duration) -> io::Result<()> {
        self.tcp().set_timeouts(timeout)
    }
}

impl Timeouts for crate::tls::ClientTlsStream {
    fn set_timeouts(&self, timeout: Duration) -> io::Result<()> {
        self.tcp().set_timeouts(timeout)
    }
}
