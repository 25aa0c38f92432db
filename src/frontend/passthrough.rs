//! `mode: passthrough`: relay bytes both ways between an MTA and an MX, unchanged.
//!
//! After a front-end's handshake (PROXY header, SOCKS5 CONNECT) the MTA speaks SMTP straight
//! to the MX — banner, EHLO, STARTTLS end to end, transactions — and the proxy only moves
//! bytes. [`relay`] does that on the calling thread with `poll(2)` over both sockets: no
//! thread per direction, no async runtime. Sends and receives are non-blocking per call
//! (`MSG_DONTWAIT`), so a peer that does not read never blocks the other direction; the
//! sockets' own blocking mode is left untouched.
//!
//! Bounded on every axis:
//! - memory: one fixed buffer per direction ([`PassthroughLimits::buffer`]);
//! - time without traffic: no byte moved either way for [`PassthroughLimits::idle`] ends the
//!   relay ([`CloseReason::Idle`]);
//! - a peer that stops reading: bytes waiting for it with no write progress for
//!   [`PassthroughLimits::stall`] end the relay ([`CloseReason::Stall`]);
//! - an overall deadline ([`PassthroughLimits::lifetime`], `timeouts.session_lifetime`);
//! - black-holed peers: TCP keepalive on both sockets.
//!
//! Half-close: EOF from one side is passed on as `shutdown(Write)` toward the other side once
//! everything read before it has been written; the other direction keeps flowing until it
//! ends too (or the idle bound fires). The relay does not close the sockets: the caller drops
//! them.
//!
//! The bookkeeping ([`Pipe`] buffers, the [`Clock`] of deadlines) is sans-I/O and unit-tested
//! without sockets; [`relay`] is the thin loop around it.

use greenarrow_proxy_net::deadline::{ceil_millis, Deadline};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, send, MsgFlags};
use socket2::{SockRef, TcpKeepalive};
use std::fmt;
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

#[cfg(test)]
mod tests;

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
    /// TCP keepalive idle time set on both sockets (probes every 15 s, 4 of them); `None`
    /// leaves the sockets' settings as they are.
    pub keepalive: Option<Duration>,
    /// Bytes buffered per direction (at least 1).
    pub buffer: usize,
}

impl Default for PassthroughLimits {
    fn default() -> Self {
        PassthroughLimits {
            idle: Duration::from_secs(300),
            stall: Duration::from_secs(60),
            lifetime: None,
            keepalive: Some(Duration::from_secs(60)),
            buffer: DEFAULT_BUFFER,
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
}

/// Relay bytes between `mta` and `mx` until both directions have ended or a bound fires.
///
/// `initial` holds bytes already read from the MTA (those that followed a PROXY header in the
/// same read): they are sent to the MX before anything else. Both sockets must be connected;
/// their blocking mode and timeouts are not changed (every call is non-blocking by flag), TCP
/// keepalive is set per `limits.keepalive`. The sockets are left open (half-closed when a side
/// ended) for the caller to drop.
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
        let _ = SockRef::from(mx).set_tcp_keepalive(&ka);
    }
    let mut up = Pipe::new(limits.buffer, initial, started); // MTA → MX
    let mut down = Pipe::new(limits.buffer, &[], started); // MX → MTA
    let mut clock = Clock::new(limits, started);
    let reason = run(mta, mx, &mut up, &mut down, &mut clock);
    PassthroughSummary {
        mta_to_mx: up.moved,
        mx_to_mta: down.moved,
        reason,
        duration: started.elapsed(),
    }
}

/// The loop of [`relay`]; returns why it ended.
fn run(
    mta: &TcpStream,
    mx: &TcpStream,
    up: &mut Pipe,
    down: &mut Pipe,
    clock: &mut Clock,
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
                match read_into(sock, from_pipe) {
                    Ok(0) => {
                        from_pipe.eof = true;
                        first_eof.get_or_insert(side);
                    }
                    Ok(_) => clock.activity(Instant::now()),
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
                match write_from(sock, to_pipe) {
                    Ok(_) => clock.activity(Instant::now()),
                    Err(Errno::EAGAIN) | Err(Errno::EINTR) => {}
                    Err(e) => {
                        return CloseReason::Error(format!(
                            "writing to the {}: {}",
                            side.as_str(),
                            e.desc()
                        ))
                    }
                }
            }
        }
    }
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

/// One direction: a fixed buffer of bytes read from the source and not yet written to the
/// destination, and how far the direction has got.
#[derive(Debug)]
pub(crate) struct Pipe {
    buf: Vec<u8>,
    /// Pending bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// The source sent EOF.
    eof: bool,
    /// The EOF was passed on (`shutdown(Write)` toward the destination).
    shut: bool,
    /// Bytes written to the destination.
    moved: u64,
    /// Since when pending bytes have waited without any write progress.
    waiting_since: Option<Instant>,
}

impl Pipe {
    /// A pipe of `size` bytes (at least 1) holding `initial` as its first pending bytes; the
    /// buffer grows to hold all of `initial` when it is larger.
    pub(crate) fn new(size: usize, initial: &[u8], now: Instant) -> Pipe {
        let mut buf = vec![0u8; size.max(initial.len()).max(1)];
        buf[..initial.len()].copy_from_slice(initial);
        Pipe {
            buf,
            start: 0,
            end: initial.len(),
            eof: false,
            shut: false,
            moved: 0,
            waiting_since: (!initial.is_empty()).then_some(now),
        }
    }

    pub(crate) fn wants_read(&self) -> bool {
        !self.eof && (self.end < self.buf.len() || self.start > 0)
    }

    pub(crate) fn wants_write(&self) -> bool {
        self.start < self.end
    }

    /// EOF seen and everything before it written: time to pass the EOF on.
    pub(crate) fn wants_shutdown(&self) -> bool {
        self.eof && !self.shut && !self.wants_write()
    }

    /// This direction has ended.
    pub(crate) fn done(&self) -> bool {
        self.eof && self.shut
    }

    /// The free space to receive into (moving pending bytes to the front first if the tail
    /// is full).
    pub(crate) fn space(&mut self) -> &mut [u8] {
        if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// `n` bytes were received into [`Pipe::space`].
    pub(crate) fn filled(&mut self, n: usize, now: Instant) {
        if n > 0 && !self.wants_write() {
            self.waiting_since = Some(now);
        }
        self.end = (self.end + n).min(self.buf.len());
    }

    pub(crate) fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// `n` pending bytes were written.
    pub(crate) fn drained(&mut self, n: usize, now: Instant) {
        self.start = (self.start + n).min(self.end);
        self.moved += n as u64;
        if self.wants_write() {
            if n > 0 {
                self.waiting_since = Some(now);
            }
        } else {
            self.start = 0;
            self.end = 0;
            self.waiting_since = None;
        }
    }
}

/// Longer waits are cut to this (a deadline must stay representable).
const LONGEST: Duration = Duration::from_secs(10 * 365 * 86_400);

/// The deadlines of a relay.
#[derive(Debug)]
pub(crate) struct Clock {
    idle: Duration,
    stall: Duration,
    end_of_life: Option<Instant>,
    last_activity: Instant,
}

impl Clock {
    pub(crate) fn new(limits: &PassthroughLimits, now: Instant) -> Clock {
        Clock {
            idle: limits.idle,
            stall: limits.stall,
            end_of_life: limits
                .lifetime
                .and_then(|l| now.checked_add(l.min(LONGEST))),
            last_activity: now,
        }
    }

    /// Bytes moved at `now`.
    pub(crate) fn activity(&mut self, now: Instant) {
        self.last_activity = now;
    }

    /// The bound that has passed at `now`, if any: lifetime first, then a stalled peer (the
    /// more specific diagnosis), then idleness.
    pub(crate) fn expired(&self, now: Instant, up: &Pipe, down: &Pipe) -> Option<CloseReason> {
        if self.end_of_life.is_some_and(|t| now >= t) {
            return Some(CloseReason::Lifetime);
        }
        for (pipe, reader) in [(up, Side::Mx), (down, Side::Mta)] {
            if let Some(since) = pipe.waiting_since {
                if now.saturating_duration_since(since) >= self.stall {
                    return Some(CloseReason::Stall(reader));
                }
            }
        }
        if now.saturating_duration_since(self.last_activity) >= self.idle {
            return Some(CloseReason::Idle);
        }
        None
    }

    /// The earliest instant at which [`Clock::expired`] can change its answer.
    pub(crate) fn next_deadline(&self, up: &Pipe, down: &Pipe) -> Instant {
        let far = |t: Instant, d: Duration| t.checked_add(d.min(LONGEST)).unwrap_or(t);
        let mut next = far(self.last_activity, self.idle);
        for pipe in [up, down] {
            if let Some(since) = pipe.waiting_since {
                next = next.min(far(since, self.stall));
            }
        }
        if let Some(t) = self.end_of_life {
            next = next.min(t);
        }
        next
    }
}
