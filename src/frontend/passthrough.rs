//! `mode: passthrough`: relay bytes both ways between an MTA and an MX, unchanged.
//!
//! After a front-end's handshake (PROXY header, SOCKS5 CONNECT) the MTA speaks SMTP straight
//! to the MX — banner, EHLO, STARTTLS end to end, transactions — and the proxy only moves
//! bytes. [`relay`] does that on the calling thread with `poll(2)` over both sockets: no
//! thread per direction, no async runtime. Every transfer is non-blocking, so a peer that
//! does not read never blocks the other direction.
//!
//! Two ways to move the bytes, per direction (reported as [`PassthroughSummary::path`]):
//! - **copy**, to begin with: `recv`/`send` with `MSG_DONTWAIT` through the direction's
//!   buffer, the sockets' blocking mode untouched. An SMTP dialogue and small messages stay
//!   there.
//! - **splice**, once bulk data flows (one read filled the whole buffer) and the buffer has
//!   been written out: `splice(2)` from the socket into a kernel pipe and from the pipe into
//!   the other socket, the pipe sized to the same bound; the bytes no longer enter the
//!   proxy's memory. The sockets are then non-blocking until the relay ends, and restored.
//!   Not when [`PassthroughLimits::splice`] is off, nor after a pipe could not be made
//!   (descriptors exhausted): copying goes on.
//!
//! Bounded on every axis, whichever the path:
//! - memory: one fixed buffer per direction ([`PassthroughLimits::buffer`]), and once it
//!   splices a kernel pipe of a fixed size ([`PassthroughLimits::pipe`]) in its place;
//! - time without traffic: no byte moved either way for [`PassthroughLimits::idle`] ends the
//!   relay ([`CloseReason::Idle`]);
//! - a peer that stops reading: bytes waiting for it with no write progress for
//!   [`PassthroughLimits::stall`] end the relay ([`CloseReason::Stall`]);
//! - an overall deadline ([`PassthroughLimits::lifetime`], `timeouts.session_lifetime`);
//! - black-holed peers: TCP keepalive on both sockets (the MTA's set here, the MX's when it
//!   was dialled).
//!
//! Half-close: EOF from one side is passed on as `shutdown(Write)` toward the other side once
//! everything read before it has been written; the other direction keeps flowing until it
//! ends too (or the idle bound fires). The relay does not close the sockets: the caller drops
//! them.
//!
//! The bookkeeping (`pipe`: the `Pipe` of each direction, when it should splice, the `Clock`
//! of deadlines) is sans-I/O and unit-tested without sockets; [`relay`] is the thin loop
//! around it, its transfers done by `splice::Transfer`.

use greenarrow_proxy_net::deadline::{ceil_millis, Deadline};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, send, MsgFlags};
use socket2::{SockRef, TcpKeepalive};
use std::fmt;
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

mod pipe;
pub mod splice;
#[cfg(test)]
mod tests;

use pipe::{Clock, Pipe};
pub use splice::{CopyWhy, Path};

/// Default kernel pipe per splicing direction: the kernel's own default pipe size (and
/// HAProxy's `tune.pipesize`), four times fewer wake-ups per megabyte than the buffer.
pub const DEFAULT_PIPE: usize = 64 * 1024;

/// Default buffer per direction.
pub const DEFAULT_BUFFER: usize = 16 * 1024;

/// The bounds of one relay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassthroughLimits {
    /// No byte moved in either direction for this long: [`CloseReason::Idle`]. Also bounds a
    /// half-closed relay waiting for the other side to finish.
    pub idle: Duration,
    /// Bytes waiting for a peer that accepts none of them for this long:
    /// [`CloseReason::Stall`].
    pub stall: Duration,
    /// Overall deadline of the relay, counted from the call ([`CloseReason::Lifetime`]);
    /// `None`: none.
    pub lifetime: Option<Duration>,
    /// TCP keepalive idle time set on the MTA's socket (probes every 15 s, 4 of them);
    /// `None` leaves its settings as they are. The MX's socket keeps the dialler's
    /// (`dial::dial` sets the same keepalive on every MX connection).
    pub keepalive: Option<Duration>,
    /// Bytes buffered per direction while it copies (at least 1).
    pub buffer: usize,
    /// Bytes a direction's kernel pipe holds once it splices (rounded up to whole pages by
    /// the kernel, at least one; the kernel's default size if this one is refused, and never
    /// more taken in than this).
    pub pipe: usize,
    /// Move the bytes with `splice(2)` where it can (see the module's documentation);
    /// `false`: always copy.
    pub splice: bool,
}

impl Default for PassthroughLimits {
    fn default() -> Self {
        PassthroughLimits {
            idle: Duration::from_secs(300),
            stall: Duration::from_secs(60),
            lifetime: None,
            keepalive: Some(Duration::from_secs(60)),
            buffer: DEFAULT_BUFFER,
            pipe: DEFAULT_PIPE,
            splice: true,
        }
    }
}

/// One end of the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The MTA (the front-end's client).
    Mta,
    /// The MX (the connection the proxy dialled).
    Mx,
}

impl Side {
    /// The other end.
    pub fn other(self) -> Side {
        match self {
            Side::Mta => Side::Mx,
            Side::Mx => Side::Mta,
        }
    }

    /// `"MTA"` or `"MX"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Mta => "MTA",
            Side::Mx => "MX",
        }
    }
}

/// Why the relay ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The MTA closed its side first (EOF), and the relay then ran to its end.
    MtaClosed,
    /// The MX closed its side first (EOF), and the relay then ran to its end.
    MxClosed,
    /// No byte moved either way for [`PassthroughLimits::idle`].
    Idle,
    /// This side did not read the bytes waiting for it for [`PassthroughLimits::stall`].
    Stall(Side),
    /// [`PassthroughLimits::lifetime`] passed.
    Lifetime,
    /// A socket error (reset, broken pipe, ...), with the side and the operation.
    Error(String),
}

impl CloseReason {
    /// A short token for logs and counters: `mta_closed`, `mx_closed`, `idle`, `stall`,
    /// `lifetime`, `error`.
    pub fn tag(&self) -> &'static str {
        match self {
            CloseReason::MtaClosed => "mta_closed",
            CloseReason::MxClosed => "mx_closed",
            CloseReason::Idle => "idle",
            CloseReason::Stall(_) => "stall",
            CloseReason::Lifetime => "lifetime",
            CloseReason::Error(_) => "error",
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::MtaClosed => f.write_str("the MTA closed the connection"),
            CloseReason::MxClosed => f.write_str("the MX closed the connection"),
            CloseReason::Idle => f.write_str("idle timeout"),
            CloseReason::Stall(s) => write!(f, "the {} stopped reading", s.as_str()),
            CloseReason::Lifetime => f.write_str("session lifetime reached"),
            CloseReason::Error(e) => f.write_str(e),
        }
    }
}

/// What one relay did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassthroughSummary {
    /// Bytes written to the MX (the initial chunk included).
    pub mta_to_mx: u64,
    /// Bytes written to the MTA.
    pub mx_to_mta: u64,
    /// Why it ended.
    pub reason: CloseReason,
    /// How long it ran.
    pub duration: Duration,
    /// How the bytes moved.
    pub path: Path,
}

/// Relay bytes between `mta` and `mx` until both directions have ended or a bound fires.
///
/// `initial` holds bytes already read from the MTA (those that followed a PROXY header in the
/// same read): they are sent to the MX before anything else. Both sockets must be connected;
/// their timeouts are not changed, and their blocking mode is as it was when this returns
/// (the splice path makes them non-blocking meanwhile); TCP keepalive is set on the MTA's
/// per `limits.keepalive`. The sockets are left open (half-closed when a side ended) for the
/// caller to drop.
pub fn relay(
    mta: &TcpStream,
    mx: &TcpStream,
    initial: &[u8],
    limits: &PassthroughLimits,
) -> PassthroughSummary {
    let started = Instant::now();
    if let Some(time) = limits.keepalive {
        let ka = TcpKeepalive::new()
            .with_time(time)
            .with_interval(Duration::from_secs(15))
            .with_retries(4);
        // Best effort: a socket that refuses keepalive still relays.
        let _ = SockRef::from(mta).set_tcp_keepalive(&ka);
    }
    let mut clock = Clock::new(limits, started);
    let mut up = Pipe::new(limits.buffer, initial, started); // MTA → MX
    let mut down = Pipe::new(limits.buffer, &[], started); // MX → MTA
    let mut transfer = splice::Transfer::new(mta, mx, limits.splice.then_some(limits.pipe));
    let reason = run(mta, mx, &mut up, &mut down, &mut clock, &mut transfer);
    PassthroughSummary {
        mta_to_mx: up.moved,
        mx_to_mta: down.moved,
        reason,
        duration: started.elapsed(),
        path: transfer.path(),
    }
}

/// The loop of [`relay`]; returns why it ended.
fn run(
    mta: &TcpStream,
    mx: &TcpStream,
    up: &mut Pipe,
    down: &mut Pipe,
    clock: &mut Clock,
    transfer: &mut splice::Transfer<'_>,
) -> CloseReason {
    let mut first_eof: Option<Side> = None;
    loop {
        for (pipe, dst) in [(&mut *up, mx), (&mut *down, mta)] {
            if pipe.wants_shutdown() {
                // The peer may already be gone (ENOTCONN): nothing left to tell it then.
                let _ = dst.shutdown(Shutdown::Write);
                pipe.shut = true;
            }
        }
        if up.done() && down.done() {
            return match first_eof {
                Some(Side::Mx) => CloseReason::MxClosed,
                _ => CloseReason::MtaClosed,
            };
        }
        let now = Instant::now();
        if let Some(reason) = clock.expired(now, up, down) {
            return reason;
        }
        let mta_events = interest(up.wants_read(), down.wants_write());
        let mx_events = interest(down.wants_read(), up.wants_write());
        // A socket with nothing wanted stays out of the set: poll would still report its
        // POLLHUP and spin.
        let mut sides: Vec<Side> = Vec::with_capacity(2);
        let mut set: Vec<PollFd<'_>> = Vec::with_capacity(2);
        for (side, sock, events) in [(Side::Mta, mta, mta_events), (Side::Mx, mx, mx_events)] {
            if !events.is_empty() {
                sides.push(side);
                set.push(PollFd::new(sock.as_fd(), events));
            }
        }
        if set.is_empty() {
            return CloseReason::Error("passthrough: nothing left to wait for".into());
        }
        let timeout = poll_timeout(clock.next_deadline(up, down), now);
        match poll(&mut set, timeout) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return CloseReason::Error(format!("poll: {e}")),
        }
        let ready: Vec<(Side, PollFlags)> = sides
            .iter()
            .zip(&set)
            .map(|(side, f)| (*side, f.revents().unwrap_or(PollFlags::empty())))
            .collect();
        drop(set);
        for (side, revents) in ready {
            if revents.contains(PollFlags::POLLNVAL) {
                return CloseReason::Error(format!("{} socket: invalid descriptor", side.as_str()));
            }
            let (sock, from_pipe, to_pipe) = match side {
                Side::Mta => (mta, &mut *up, &mut *down),
                Side::Mx => (mx, &mut *down, &mut *up),
            };
            let woke = PollFlags::POLLHUP | PollFlags::POLLERR;
            if from_pipe.wants_read() && revents.intersects(PollFlags::POLLIN | woke) {
                match transfer.read(side, sock, from_pipe) {
                    Ok(0) => {
                        from_pipe.eof = true;
                        first_eof.get_or_insert(side);
                    }
                    Ok(_) => {
                        clock.activity(Instant::now());
                        // Pass the bytes on at once: the other socket is nearly always
                        // writable, and waiting for poll(2) to say so costs a call per hop.
                        let to = side.other();
                        let dst = if to == Side::Mta { mta } else { mx };
                        match transfer.write(to, dst, from_pipe) {
                            Ok(_) => clock.activity(Instant::now()),
                            Err(Errno::EAGAIN) | Err(Errno::EINTR) => {}
                            Err(e) => return write_error(to, e),
                        }
                    }
                    Err(Errno::EAGAIN) | Err(Errno::EINTR) => {}
                    Err(e) => {
                        return CloseReason::Error(format!(
                            "reading from the {}: {}",
                            side.as_str(),
                            e.desc()
                        ))
                    }
                }
            }
            if to_pipe.wants_write() && revents.intersects(PollFlags::POLLOUT | woke) {
                match transfer.write(side, sock, to_pipe) {
                    Ok(_) => clock.activity(Instant::now()),
                    Err(Errno::EAGAIN) | Err(Errno::EINTR) => {}
                    Err(e) => return write_error(side, e),
                }
            }
        }
    }
}

fn write_error(side: Side, e: Errno) -> CloseReason {
    CloseReason::Error(format!("writing to the {}: {}", side.as_str(), e.desc()))
}

fn interest(read: bool, write: bool) -> PollFlags {
    let mut f = PollFlags::empty();
    if read {
        f |= PollFlags::POLLIN;
    }
    if write {
        f |= PollFlags::POLLOUT;
    }
    f
}

/// Milliseconds until `deadline`, rounded up (so the expiry check after the wake-up sees it
/// passed); at least 1.
fn poll_timeout(deadline: Instant, now: Instant) -> PollTimeout {
    let ms = ceil_millis(Deadline::at(deadline).remaining_at(now))
        .as_millis()
        .clamp(1, i32::MAX as u128);
    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
}

/// One non-blocking receive into the pipe's free space. `Ok(0)` is EOF.
fn read_into(sock: &TcpStream, pipe: &mut Pipe) -> Result<usize, Errno> {
    let n = recv(sock.as_raw_fd(), pipe.space(), MsgFlags::MSG_DONTWAIT)?;
    pipe.filled(n, Instant::now());
    Ok(n)
}

/// One non-blocking send of the pipe's pending bytes.
fn write_from(sock: &TcpStream, pipe: &mut Pipe) -> Result<usize, Errno> {
    let n = send(
        sock.as_raw_fd(),
        pipe.pending(),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
    )?;
    pipe.drained(n, Instant::now());
    Ok(n)
}
