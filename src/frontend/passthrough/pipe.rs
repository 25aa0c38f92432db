//! The relay's bookkeeping, sans I/O: what each direction holds and how far it has got
//! ([`Pipe`]), and the deadlines of the relay ([`Clock`]).
//!
//! A [`Pipe`] counts the bytes read from a source and not yet written to its destination.
//! It starts holding them in its own buffer; once one read fills the whole buffer (bulk data:
//! a message body, not a dialogue of lines) and the buffer has been written out, the
//! direction may move to a kernel pipe ([`Pipe::wants_splice`], [`Pipe::move_to_kernel`]), and
//! the [`Pipe`] then only counts the bytes waiting there, with the same bound, the same EOF
//! and shutdown rules and the same stall clock.

use super::{CloseReason, PassthroughLimits, Side};
use std::time::{Duration, Instant};

/// One direction: a fixed buffer (or a kernel pipe's count) of bytes read from the source and
/// not yet written to the destination, and how far the direction has got.
#[derive(Debug)]
pub(crate) struct Pipe {
    /// The bytes themselves on the copying path; empty when they wait in a kernel pipe.
    buf: Vec<u8>,
    /// At most this many pending bytes.
    cap: usize,
    /// Pending bytes are `buf[start..end]` (on the splice path, offsets counted the same way).
    start: usize,
    end: usize,
    /// The source sent EOF.
    pub(super) eof: bool,
    /// The EOF was passed on (`shutdown(Write)` toward the destination).
    pub(super) shut: bool,
    /// Bytes written to the destination.
    pub(super) moved: u64,
    /// Since when pending bytes have waited without any write progress.
    pub(super) waiting_since: Option<Instant>,
    /// The kernel pipe took no more bytes though below `cap` (its slots are full of partial
    /// pages): no read until some bytes are written out.
    blocked: bool,
    /// One read filled the whole (empty) buffer: bulk data flows this way.
    bulk: bool,
}

impl Pipe {
    /// A pipe of `size` bytes (at least 1) holding `initial` as its first pending bytes; the
    /// buffer grows to hold all of `initial` when it is larger.
    pub(crate) fn new(size: usize, initial: &[u8], now: Instant) -> Pipe {
        let mut buf = vec![0u8; size.max(initial.len()).max(1)];
        buf[..initial.len()].copy_from_slice(initial);
        let cap = buf.len();
        Pipe {
            buf,
            cap,
            start: 0,
            end: initial.len(),
            eof: false,
            shut: false,
            moved: 0,
            waiting_since: (!initial.is_empty()).then_some(now),
            blocked: false,
            bulk: false,
        }
    }

    /// Bulk data has come this way, the buffer is empty and the direction still copies: time
    /// to move to a kernel pipe.
    pub(crate) fn wants_splice(&self) -> bool {
        self.bulk && !self.wants_write() && !self.buf.is_empty()
    }

    /// Move to a kernel pipe of `cap` bytes, dropping the buffer. Only with nothing pending
    /// ([`Pipe::wants_splice`]): otherwise nothing changes.
    pub(crate) fn move_to_kernel(&mut self, cap: usize) {
        if self.wants_write() {
            return;
        }
        self.cap = cap.max(1);
        self.buf = Vec::new();
        self.start = 0;
        self.end = 0;
    }

    /// Whether the bytes wait in a kernel pipe.
    #[cfg(test)]
    pub(crate) fn is_counting(&self) -> bool {
        self.buf.is_empty()
    }

    /// Bytes read and not yet written.
    pub(crate) fn pending_len(&self) -> usize {
        self.end - self.start
    }

    /// How many more bytes may be read now.
    pub(crate) fn room(&self) -> usize {
        self.cap - self.pending_len()
    }

    pub(crate) fn wants_read(&self) -> bool {
        !self.eof && !self.blocked && self.room() > 0
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
    /// is full). Empty on the splice path.
    pub(crate) fn space(&mut self) -> &mut [u8] {
        if self.buf.is_empty() {
            return &mut [];
        }
        if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// `n` bytes were received (into [`Pipe::space`], or into the kernel pipe).
    pub(crate) fn filled(&mut self, n: usize, now: Instant) {
        if n > 0 && !self.wants_write() {
            self.waiting_since = Some(now);
        }
        let limit = if self.buf.is_empty() {
            self.start + self.cap
        } else {
            // One read that filled the whole empty buffer: bulk data.
            self.bulk |= self.start == 0 && self.end == 0 && n == self.buf.len();
            self.buf.len()
        };
        self.end = (self.end + n).min(limit);
    }

    /// The kernel pipe refused more bytes: with bytes pending, read no more until some are
    /// written (a refusal with nothing pending only means the source had nothing).
    pub(crate) fn refused(&mut self) {
        self.blocked = self.wants_write();
    }

    /// The pending bytes (empty on the splice path).
    pub(crate) fn pending(&self) -> &[u8] {
        self.buf.get(self.start..self.end).unwrap_or_default()
    }

    /// `n` pending bytes were written.
    pub(crate) fn drained(&mut self, n: usize, now: Instant) {
        let n = n.min(self.pending_len());
        self.start += n;
        self.moved += n as u64;
        if n > 0 {
            self.blocked = false;
        }
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
