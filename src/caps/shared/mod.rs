//! Caps shared across proxy hosts through Redis (`caps.shared`): a [`Lease`] beside each open
//! connection toward a shared destination group, the shared rate of new connections, and the
//! fallback to this host's share when Redis cannot be reached.
//!
//! The bookkeeping and every decision are in the sans-I/O book
//! ([`greenarrow_proxy_proto::caps::shared::SharedBook`], time given); this module puts it
//! under one mutex (`Inner::state`) with a condition variable for the waiters, and does every
//! Redis call ([`link`]) with no lock held. Two threads per configuration ([`worker`]): the
//! keeper (heartbeat, renewals, releases, health) and the listener (pub/sub: leases given back
//! by other hosts wake the waiters here).
//!
//! Lock order: `Inner::state` is never held together with the caps' or the pool's mutex; a
//! [`Lease`] is dropped after its permit released the caps' lock.

mod link;
mod worker;

use crate::config::SharedConfig;
use greenarrow_proxy_proto::caps::shared::{
    Health, LeaseId, RateStep, Released, SharedBook, SharedLimits, SharedView, Step, Transition,
};
use link::{Answer, Link};
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use link::LinkError;

/// The longest a waiter at a full shared cap sleeps without news (a lease of a host that
/// died expires without a release message; the acquire script says when the first expires).
const MAX_NAP: Duration = Duration::from_secs(1);
/// How long a request waits before asking again when every Redis connection was busy.
const BUSY_NAP: Duration = Duration::from_millis(50);

struct Locked {
    book: SharedBook,
    /// Bumped by every event that may let a waiter through (release here or elsewhere,
    /// grant, health change): a waiter sleeps only if it is unchanged since it looked.
    generation: u64,
}

/// What the keeper thread is told.
enum Note {
    Release(String, String),
}

pub(crate) struct Inner {
    state: Mutex<Locked>,
    changed: Condvar,
    link: Link,
    config: SharedConfig,
    window: Duration,
    notes: Mutex<Sender<Note>>,
    stop: AtomicBool,
}

impl Inner {
    fn bump(&self, st: &mut Locked) {
        st.generation += 1;
        self.changed.notify_all();
    }

    fn log(&self, t: Option<Transition>) {
        match t {
            // Logged by `failed`, with the error.
            Some(Transition::ToFallback) => {}
            Some(Transition::ToRejoining) => log::info!(
                "caps.shared: Redis {} is back; leases re-registered, shares kept for one \
                 lease time ({})",
                self.config.redis,
                greenarrow_proxy_proto::duration::format(self.config.lease)
            ),
            Some(Transition::ToShared) => {
                log::info!(
                    "caps.shared: shared caps through Redis {}",
                    self.config.redis
                )
            }
            None => {}
        }
    }

    /// A Redis call failed: fallback (logged once), and the pooled connections are dropped.
    /// (Not for a busy pool: Redis answers.)
    fn failed(&self, e: &LinkError) {
        if e.is_busy() {
            return;
        }
        self.link.reset();
        let t = {
            let mut st = self.state.lock();
            let t = st.book.redis_failed(Instant::now());
            if t.is_some() {
                self.bump(&mut st);
            }
            t
        };
        if t.is_some() {
            let live = self.state.lock().book.live_hosts();
            log::warn!(
                "caps.shared: Redis {} cannot be reached ({e}); each host falls back to its \
                 share of the shared caps (cap / {live} live host(s), at least 1)",
                self.config.redis
            );
        }
    }

    /// A lease given back and not handed on: the keeper removes it from Redis (outside the
    /// book's lock).
    fn gone(&self, group: &str, r: Released) {
        if let Released::Gone(member) = r {
            let _ = self
                .notes
                .lock()
                .send(Note::Release(group.to_string(), member));
        }
    }

    /// Sleep until `until` or an event after `generation` (or a stop).
    fn nap(&self, generation: u64, until: Instant) {
        let mut st = self.state.lock();
        if st.generation == generation && !self.stop.load(Ordering::SeqCst) {
            self.changed.wait_until(&mut st, until);
        }
    }
}

/// A place under a shared cap, held beside its connection; dropping it gives it back.
pub struct Lease {
    inner: Arc<Inner>,
    group: String,
    id: LeaseId,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lease({} #{})", self.group, self.id.0)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let r = {
            let mut st = self.inner.state.lock();
            let r = st.book.release(&self.group, self.id);
            if r != Released::NotHeld {
                self.inner.bump(&mut st);
            }
            r
        };
        self.inner.gone(&self.group, r);
    }
}

/// Why a shared cap refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SharedBlock {
    /// `max_connections` of the group across hosts (or this host's share of it).
    Connections(usize),
    /// `max_new_connections` of the group across hosts; room at this instant.
    Rate(usize, Instant),
}

/// The shared caps of one configuration.
pub struct SharedCaps {
    inner: Arc<Inner>,
}

impl SharedCaps {
    /// Start with `config` (the keeper and the listener threads start here); `window` is
    /// `caps.window` (the shared rate's window).
    pub fn start(config: &SharedConfig, window: Duration) -> Result<SharedCaps, LinkError> {
        let link = Link::new(config)?;
        let (tx, rx) = channel();
        let mut instance = [0u8; 6];
        let _ = getrandom::fill(&mut instance);
        let instance: String = instance.iter().map(|b| format!("{b:02x}")).collect();
        let mut book = SharedBook::new(&config.host, &instance, config.lease, window);
        book.configure(limits(config), window);
        let inner = Arc::new(Inner {
            state: Mutex::new(Locked {
                book,
                generation: 0,
            }),
            changed: Condvar::new(),
            link,
            config: config.clone(),
            window,
            notes: Mutex::new(tx),
            stop: AtomicBool::new(false),
        });
        worker::spawn(inner.clone(), rx);
        Ok(SharedCaps { inner })
    }

    /// Whether this runs `config` with `window` (a reload keeps it then).
    pub fn runs(&self, config: &SharedConfig, window: Duration) -> bool {
        &self.inner.config == config && self.inner.window == window
    }

    /// The shared limits of `group` (nothing shared: both `None`).
    pub fn limits(&self, group: &str) -> SharedLimits {
        self.inner.state.lock().book.limits(group)
    }

    /// Stop the threads and every waiter (a reload replaced this, or the proxy stops). Leases
    /// still held are released by their connections as they close.
    pub fn close(&self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        let mut st = self.inner.state.lock();
        self.inner.bump(&mut st);
    }

    /// A lease of `group` (whose shared `max_connections` is `cap`), first come first served
    /// among this host's requests, until `end`. `evict` closes one idle pooled connection of
    /// the group on this host (its lease comes back), true if there was one.
    pub fn acquire(
        &self,
        group: &str,
        cap: usize,
        end: Instant,
        evict: &dyn Fn() -> bool,
    ) -> Result<Lease, SharedBlock> {
        let inner = &self.inner;
        let ticket = inner.state.lock().book.join(group);
        // An evicted connection gives its lease back asynchronously (QUIT, then the keeper's
        // release): one eviction per MAX_NAP at most, not one per look at a still-full cap.
        let mut evicted: Option<Instant> = None;
        let mut may_evict = |now: Instant| {
            if evicted.is_some_and(|t| now.saturating_duration_since(t) < MAX_NAP) {
                return false;
            }
            let done = evict();
            if done {
                evicted = Some(now);
            }
            done
        };
        let lease = |id| Lease {
            inner: inner.clone(),
            group: group.to_string(),
            id,
        };
        loop {
            let now = Instant::now();
            let (step, generation) = {
                let mut st = inner.state.lock();
                if now >= end || inner.stop.load(Ordering::SeqCst) {
                    let r = st.book.leave(group, ticket);
                    inner.bump(&mut st);
                    drop(st);
                    inner.gone(group, r);
                    return Err(SharedBlock::Connections(cap));
                }
                let step = st.book.step(group, ticket, now);
                if matches!(step, Step::Granted(_)) {
                    inner.bump(&mut st);
                }
                (step, st.generation)
            };
            let mut until = end;
            match step {
                Step::Granted(id) => return Ok(lease(id)),
                Step::AskRedis { lease: id, member } => {
                    match inner.link.acquire(group, cap, &member) {
                        Ok(Answer::Granted) => {
                            let mut st = inner.state.lock();
                            let r = st.book.answer(group, ticket, id, true);
                            inner.bump(&mut st);
                            drop(st);
                            inner.gone(group, r);
                            return Ok(lease(id));
                        }
                        Ok(Answer::Full(after)) => {
                            // After an eviction, wait for its release (a wake-up).
                            may_evict(now);
                            until = until.min(now + after.min(MAX_NAP));
                        }
                        Err(e) if e.is_busy() => until = until.min(now + BUSY_NAP),
                        Err(e) => {
                            inner.failed(&e);
                            continue;
                        }
                    }
                }
                Step::Wait => {
                    // First in line with this host's share used up (fallback, rejoining).
                    let first = inner.state.lock().book.is_first(group, ticket);
                    if first {
                        may_evict(now);
                    }
                    // The health may change without a release (the keeper bumps then).
                    until = until.min(now + MAX_NAP);
                }
            }
            inner.nap(generation, until);
        }
    }

    /// One new connection toward `group` under its shared rate, waiting until `end` at most.
    pub fn rate(&self, group: &str, end: Instant) -> Result<(), SharedBlock> {
        let inner = &self.inner;
        loop {
            let now = Instant::now();
            let (step, n) = {
                let mut st = inner.state.lock();
                let n = st.book.limits(group).max_new_connections.unwrap_or(0);
                (st.book.rate(group, now), n)
            };
            let room = match step {
                RateStep::Go => return Ok(()),
                RateStep::WaitUntil(t) => t,
                RateStep::AskRedis => match inner.link.rate(group, n, inner.window) {
                    Ok(Answer::Granted) => return Ok(()),
                    Ok(Answer::Full(after)) => now + after,
                    Err(e) if e.is_busy() => now + BUSY_NAP,
                    Err(e) => {
                        inner.failed(&e);
                        continue;
                    }
                },
            };
            if room > end || inner.stop.load(Ordering::SeqCst) {
                return Err(SharedBlock::Rate(n, room));
            }
            // Until the room the answer gave (no event brings it sooner), or a stop.
            while Instant::now() < room && !inner.stop.load(Ordering::SeqCst) {
                let generation = inner.state.lock().generation;
                inner.nap(generation, room);
            }
        }
    }

    /// One row per shared group, and the health.
    pub fn view(&self) -> (Vec<SharedView>, Health, usize) {
        let st = self.inner.state.lock();
        (st.book.view(), st.book.health(), st.book.live_hosts())
    }

    pub fn host(&self) -> &str {
        &self.inner.config.host
    }
}

impl Drop for SharedCaps {
    fn drop(&mut self) {
        self.close();
    }
}

fn limits(config: &SharedConfig) -> Vec<(String, SharedLimits)> {
    config
        .destinations
        .iter()
        .map(|(name, l)| {
            (
                name.clone(),
                SharedLimits {
                    max_connections: l.max_connections,
                    max_new_connections: l.max_new_connections,
                },
            )
        })
        .collect()
}
