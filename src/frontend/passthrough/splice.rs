//! The splice path: bytes move socket → kernel pipe → socket with `splice(2)`, never copied
//! into the proxy's memory.
//!
//! A direction starts by copying through its buffer; once bulk data flows that way (one read
//! filled the whole buffer: a message body, not SMTP lines) and the buffer has been written
//! out, it moves to a kernel pipe of its own, of a fixed size (`F_SETPIPE_SZ`, 64 KiB by
//! default; the kernel rounds up to whole pages, and no more than that is taken in), so a
//! slow reader holds the writer back as on the copying path. Short sessions (an SMTP dialogue, a small
//! message) never pay for pipes; a 5 MB body pays once and then saves two copies per chunk.
//! This is HAProxy's `option splice-auto`.
//!
//! Both legs are plain TCP sockets: a passthrough relay never terminates TLS (STARTTLS runs
//! end to end, and the encrypted bytes are moved like any others). [`Transfer`] does the
//! moving for the relay's loop; when the direction switches is [`Pipe::wants_splice`]
//! (sans-I/O), what the relay reports is [`path`].

use super::pipe::Pipe;
use super::{read_into, write_from, Side};
use nix::errno::Errno;
use nix::fcntl::{fcntl, splice, FcntlArg, OFlag, SpliceFFlags};
use nix::unistd::pipe2;
use socket2::SockRef;
use std::fmt;
use std::net::TcpStream;
use std::os::fd::OwnedFd;
use std::time::Instant;

/// How a relay moved its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// `splice(2)` through a kernel pipe, in at least one direction (after its first
    /// buffer of bulk data).
    Splice,
    /// `recv`/`send` through a buffer per direction in the proxy's memory only.
    Copy(CopyWhy),
}

/// Why a relay only copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyWhy {
    /// No bulk data: no read ever filled a whole buffer.
    NoBulk,
    /// [`super::PassthroughLimits::splice`] is off.
    Disabled,
    /// A kernel pipe could not be made (descriptors exhausted).
    NoPipes,
}

impl Path {
    /// `splice` or `copy`, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Path::Splice => "splice",
            Path::Copy(_) => "copy",
        }
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Splice => f.write_str("splice"),
            Path::Copy(CopyWhy::NoBulk) => f.write_str("copy (no bulk data)"),
            Path::Copy(CopyWhy::Disabled) => f.write_str("copy (splice off)"),
            Path::Copy(CopyWhy::NoPipes) => f.write_str("copy (no pipes)"),
        }
    }
}

/// What a relay reports: splice if a direction spliced, else why not (splicing off, a pipe
/// that could not be made, or no bulk data).
pub fn path(allowed: bool, spliced: bool, no_pipes: bool) -> Path {
    if spliced {
        Path::Splice
    } else if !allowed {
        Path::Copy(CopyWhy::Disabled)
    } else if no_pipes {
        Path::Copy(CopyWhy::NoPipes)
    } else {
        Path::Copy(CopyWhy::NoBulk)
    }
}

/// One kernel pipe: its read and write ends.
struct KernelPipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl KernelPipe {
    /// A non-blocking pipe of about `size` bytes; its capacity as the kernel set it, never
    /// more than `size` (at least one page: the smallest pipe there is).
    fn open(size: usize) -> Result<(KernelPipe, usize), Errno> {
        let (read, write) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        let want = i32::try_from(size).unwrap_or(i32::MAX);
        // A refused size (a user over `pipe-user-pages-soft`) leaves the default: ask which.
        let got = match fcntl(&write, FcntlArg::F_SETPIPE_SZ(want)) {
            Ok(n) => n,
            Err(_) => fcntl(&write, FcntlArg::F_GETPIPE_SZ)?,
        };
        let got = usize::try_from(got).map_err(|_| Errno::EINVAL)?;
        Ok((KernelPipe { read, write }, got.min(size.max(1))))
    }
}

/// The relay's transfers: copies through the directions' buffers, then splices through a
/// kernel pipe in each direction that carries bulk data; the sockets are made non-blocking
/// at the first pipe (`tcp_splice_read` and the send side take their blocking mode from the
/// socket, not from `SPLICE_F_NONBLOCK`) and restored when this is dropped.
pub(super) struct Transfer<'a> {
    mta: &'a TcpStream,
    mx: &'a TcpStream,
    allowed: bool,
    /// The size of a kernel pipe.
    size: usize,
    /// MTA → MX, once it splices.
    up: Option<KernelPipe>,
    /// MX → MTA, once it splices.
    down: Option<KernelPipe>,
    /// A pipe could not be made: copy from then on.
    no_pipes: bool,
    nonblocking: Option<[Nonblocking<'a>; 2]>,
}

const FLAGS: SpliceFFlags = SpliceFFlags::SPLICE_F_MOVE.union(SpliceFFlags::SPLICE_F_NONBLOCK);

impl<'a> Transfer<'a> {
    /// Transfers between `mta` and `mx`; `pipe`: splice where it pays, through kernel pipes
    /// of this size.
    pub(super) fn new(mta: &'a TcpStream, mx: &'a TcpStream, pipe: Option<usize>) -> Transfer<'a> {
        Transfer {
            mta,
            mx,
            allowed: pipe.is_some(),
            size: pipe.unwrap_or(0),
            up: None,
            down: None,
            no_pipes: false,
            nonblocking: None,
        }
    }

    /// How the bytes moved, so far.
    pub(super) fn path(&self) -> Path {
        path(
            self.allowed,
            self.up.is_some() || self.down.is_some(),
            self.no_pipes,
        )
    }

    /// The kernel pipe of the direction from `side` (`Side::Mta`: MTA → MX).
    fn kernel(&mut self, from: Side) -> &mut Option<KernelPipe> {
        match from {
            Side::Mta => &mut self.up,
            Side::Mx => &mut self.down,
        }
    }

    /// Move the direction from `from` to a kernel pipe if its bookkeeping says so.
    fn switch(&mut self, from: Side, pipe: &mut Pipe) {
        if !self.allowed || self.no_pipes || !pipe.wants_splice() || self.kernel(from).is_some() {
            return;
        }
        match KernelPipe::open(self.size) {
            Ok((k, cap)) => {
                if self.nonblocking.is_none() {
                    self.nonblocking =
                        Some([Nonblocking::set(self.mta), Nonblocking::set(self.mx)]);
                }
                pipe.move_to_kernel(cap);
                *self.kernel(from) = Some(k);
            }
            Err(_) => self.no_pipes = true,
        }
    }

    /// One non-blocking read from `side`'s socket `sock` into `pipe` (the direction from
    /// `side`). `Ok(0)` is EOF.
    pub(super) fn read(
        &mut self,
        side: Side,
        sock: &TcpStream,
        pipe: &mut Pipe,
    ) -> Result<usize, Errno> {
        self.switch(side, pipe);
        let Some(k) = self.kernel(side) else {
            return read_into(sock, pipe);
        };
        match splice(sock, None, &k.write, None, pipe.room(), FLAGS) {
            Ok(n) => {
                pipe.filled(n, Instant::now());
                Ok(n)
            }
            Err(Errno::EAGAIN) => {
                // The socket had nothing, or the pipe's slots are full (partial pages).
                pipe.refused();
                Err(Errno::EAGAIN)
            }
            Err(e) => Err(e),
        }
    }

    /// One non-blocking write of `pipe`'s pending bytes (the direction toward `side`) to
    /// `side`'s socket `sock`.
    pub(super) fn write(
        &mut self,
        side: Side,
        sock: &TcpStream,
        pipe: &mut Pipe,
    ) -> Result<usize, Errno> {
        let from = side.other();
        let n = match self.kernel(from) {
            None => write_from(sock, pipe)?,
            Some(k) => {
                let want = pipe.pending_len();
                let n = splice(&k.read, None, sock, None, want, FLAGS)?;
                if n == 0 && want > 0 {
                    // The pipe holds bytes the kernel will not give: never spin on it.
                    return Err(Errno::EIO);
                }
                pipe.drained(n, Instant::now());
                n
            }
        };
        self.switch(from, pipe);
        Ok(n)
    }
}

/// A socket made non-blocking for the splice path, restored to its mode when dropped.
struct Nonblocking<'a> {
    sock: &'a TcpStream,
    was: Option<bool>,
}

impl<'a> Nonblocking<'a> {
    fn set(sock: &'a TcpStream) -> Nonblocking<'a> {
        let was = SockRef::from(sock).nonblocking().ok();
        if was != Some(true) {
            // Best effort: should it fail, every splice still carries SPLICE_F_NONBLOCK
            // and is only made after poll(2) said the socket is ready.
            let _ = sock.set_nonblocking(true);
        }
        Nonblocking { sock, was }
    }
}

impl Drop for Nonblocking<'_> {
    fn drop(&mut self) {
        if self.was == Some(false) {
            let _ = self.sock.set_nonblocking(false);
        }
    }
}
