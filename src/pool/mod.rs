//! The pool of idle MX connections shared by all MTAs.
//!
//! One mutex (parking_lot) guards a map from [`PoolKey`] to idle connections. The lock is held
//! only to move connections in and out of the map and to copy counters: never during network
//! I/O. A connection taken out of the map belongs to one session until it is put back, so a
//! pooled connection is never used by two sessions at once.
//!
//! Checking a connection's health (non-blocking peek, optional probe), saying QUIT to expired
//! connections and closing them all happen outside the lock, on the session or reaper thread.

pub mod reaper;

use crate::mx::MxConnection;
pub use greenarrow_proxy_proto::status::{IdleConnection, PooledInfo};
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

pub use greenarrow_proxy_proto::protocol::{PoolKey, TlsWant};

/// An MX connection and what travels beside it (`P`: its place under the connection caps,
/// `caps::Permit`, which the pool stores without looking at). Closing it ([`Entry::quit`],
/// [`Entry::close`]) closes the connection first, then drops `P`: the place is released only
/// once the connection is gone. It reads as its connection (`Deref`).
pub struct Entry<P> {
    conn: MxConnection,
    place: P,
}

impl<P> Entry<P> {
    /// `conn` with its place.
    pub fn new(conn: MxConnection, place: P) -> Entry<P> {
        Entry { conn, place }
    }

    /// What travels beside the connection.
    pub fn place(&self) -> &P {
        &self.place
    }

    pub fn place_mut(&mut self) -> &mut P {
        &mut self.place
    }

    /// Politely end the SMTP session (QUIT, brief wait, close), then let the place go.
    pub fn quit(self, wait: Duration) {
        let Entry { conn, place } = self;
        conn.quit(wait);
        drop(place);
    }

    /// Close at once (see [`MxConnection::close`]), then let the place go.
    pub fn close(self) {
        let Entry { conn, place } = self;
        conn.close();
        drop(place);
    }
}

impl<P> Deref for Entry<P> {
    type Target = MxConnection;
    fn deref(&self) -> &MxConnection {
        &self.conn
    }
}

impl<P> DerefMut for Entry<P> {
    fn deref_mut(&mut self) -> &mut MxConnection {
        &mut self.conn
    }
}

/// Pool limits (from the configuration).
#[derive(Clone, Copy, Debug)]
pub struct PoolLimits {
    /// Never reuse a connection older than this (counted from connect).
    pub reuse_time_limit: Duration,
    /// Close idle connections after this long.
    pub idle_ttl: Duration,
    pub max_idle_per_key: usize,
    pub max_idle_total: usize,
}

struct Idle<P> {
    conn: Entry<P>,
    since: Instant,
}

struct Inner<P> {
    map: HashMap<PoolKey, VecDeque<Idle<P>>>,
    total: usize,
    hits: u64,
    misses: u64,
    stored: u64,
}

impl<P> Default for Inner<P> {
    fn default() -> Inner<P> {
        Inner {
            map: HashMap::new(),
            total: 0,
            hits: 0,
            misses: 0,
            stored: 0,
        }
    }
}

/// Pool-wide counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolCounters {
    pub idle: usize,
    pub keys: usize,
    pub hits: u64,
    pub misses: u64,
    pub stored: u64,
}

/// The pool; `P` travels beside each connection ([`Entry`]).
pub struct Pool<P> {
    inner: Mutex<Inner<P>>,
    limits: Mutex<PoolLimits>,
}

/// A connection the pool did not take, with the reason.
pub struct Rejected<P> {
    pub conn: Entry<P>,
    pub why: Refused,
}

/// Why a connection was not stored.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The MX sent bytes no command asked for (they are unread), or closed the connection.
    UnreadInput,
    TooOld,
    KeyFull,
    PoolFull,
}

impl Refused {
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::UnreadInput => {
                "the MX sent bytes no command asked for, or closed the connection"
            }
            Refused::TooOld => "older than pool.reuse_time_limit",
            Refused::KeyFull => "pool.max_idle_per_key reached for this key",
            Refused::PoolFull => "pool.max_idle_total reached",
        }
    }
}

impl<P> Pool<P> {
    pub fn new(limits: PoolLimits) -> Pool<P> {
        Pool {
            inner: Mutex::new(Inner::default()),
            limits: Mutex::new(limits),
        }
    }

    /// New limits (reload); they apply from the next operation.
    pub fn set_limits(&self, limits: PoolLimits) {
        *self.limits.lock() = limits;
    }

    pub fn limits(&self) -> PoolLimits {
        *self.limits.lock()
    }

    /// Take the most recently used idle connection for `key` that satisfies `want`, is not too
    /// old and has carried fewer than `max_messages` messages (the request's
    /// `reuse_max_messages`). Connections found expired on the way, or at `max_messages`, are
    /// returned in `expired` for the caller to close outside the lock.
    pub fn checkout(
        &self,
        key: &PoolKey,
        want: &TlsWant,
        max_messages: Option<u64>,
        now: Instant,
        expired: &mut Vec<Entry<P>>,
    ) -> Option<Entry<P>> {
        let limits = self.limits();
        let mut inner = self.inner.lock();
        let mut found = None;
        let expired_before = expired.len();
        if let Some(list) = inner.map.get_mut(key) {
            let mut i = list.len();
            while i > 0 {
                i -= 1;
                let stale = list.get(i).is_some_and(|e| {
                    now.duration_since(e.since) >= limits.idle_ttl
                        || now.duration_since(e.conn.created()) >= limits.reuse_time_limit
                        || max_messages.is_some_and(|cap| e.conn.messages() >= cap)
                });
                if stale {
                    if let Some(e) = list.remove(i) {
                        expired.push(e.conn);
                    }
                    continue;
                }
                if found.is_none()
                    && list
                        .get(i)
                        .is_some_and(|e| want.satisfied_by(&e.conn.tls_state()))
                {
                    found = list.remove(i).map(|e| e.conn);
                }
            }
            if list.is_empty() {
                inner.map.remove(key);
            }
        }
        inner.total -= expired.len() - expired_before + usize::from(found.is_some());
        if found.is_some() {
            inner.hits += 1;
        } else {
            inner.misses += 1;
        }
        found
    }

    /// Keep `conn` for reuse under `key`, or hand it back with the reason it was refused.
    pub fn checkin(
        &self,
        key: PoolKey,
        conn: Entry<P>,
        now: Instant,
    ) -> Result<(), Box<Rejected<P>>> {
        let reject = |conn, why| Err(Box::new(Rejected { conn, why }));
        // Unread MX bytes (buffered, or waiting on the socket: one non-blocking peek) would be
        // taken for the next user's replies.
        if !conn.is_alive() {
            return reject(conn, Refused::UnreadInput);
        }
        self.store(key, conn, now)
    }

    /// [`Pool::checkin`] without the liveness peek (the caller made it): keep `conn` for reuse
    /// under `key`, or hand it back with the reason it was refused. No I/O.
    pub fn store(
        &self,
        key: PoolKey,
        mut conn: Entry<P>,
        now: Instant,
    ) -> Result<(), Box<Rejected<P>>> {
        let reject = |conn, why| Err(Box::new(Rejected { conn, why }));
        // An idle connection holds no buffer memory (its buffers are empty between sessions;
        // freed here, outside the lock).
        conn.conn.release_buffers();
        let limits = self.limits();
        if now.duration_since(conn.created()) >= limits.reuse_time_limit {
            return reject(conn, Refused::TooOld);
        }
        let mut inner = self.inner.lock();
        if inner.total >= limits.max_idle_total {
            return reject(conn, Refused::PoolFull);
        }
        let list = inner.map.entry(key).or_default();
        if list.len() >= limits.max_idle_per_key {
            return reject(conn, Refused::KeyFull);
        }
        list.push_back(Idle { conn, since: now });
        inner.total += 1;
        inner.stored += 1;
        Ok(())
    }

    /// Remove every connection that is idle too long or too old.
    pub fn take_expired(&self, now: Instant) -> Vec<Entry<P>> {
        let limits = self.limits();
        self.take_where(|e| {
            now.duration_since(e.since) >= limits.idle_ttl
                || now.duration_since(e.conn.created()) >= limits.reuse_time_limit
        })
    }

    /// Remove every connection whose key fails `keep`.
    pub fn take_keys_where(&self, keep: impl Fn(&PoolKey) -> bool) -> Vec<Entry<P>> {
        let mut out = Vec::new();
        let mut inner = self.inner.lock();
        let doomed: Vec<PoolKey> = inner.map.keys().filter(|k| !keep(k)).cloned().collect();
        for k in doomed {
            if let Some(list) = inner.map.remove(&k) {
                out.extend(list.into_iter().map(|e| e.conn));
            }
        }
        inner.total -= out.len();
        out
    }

    /// Remove the longest-idle connection whose key passes `pick` (to close it and make room
    /// under a connection cap).
    pub fn take_one(&self, pick: impl Fn(&PoolKey) -> bool) -> Option<Entry<P>> {
        let mut inner = self.inner.lock();
        let key = inner
            .map
            .iter()
            .filter(|(k, l)| !l.is_empty() && pick(k))
            .filter_map(|(k, l)| l.front().map(|e| (k, e.since)))
            .min_by_key(|(_, since)| *since)
            .map(|(k, _)| k.clone())?;
        let list = inner.map.get_mut(&key)?;
        let taken = list.pop_front().map(|e| e.conn);
        if list.is_empty() {
            inner.map.remove(&key);
        }
        if taken.is_some() {
            inner.total -= 1;
        }
        taken
    }

    /// Remove everything (shutdown).
    pub fn take_all(&self) -> Vec<Entry<P>> {
        self.take_where(|_| true)
    }

    fn take_where(&self, doomed: impl Fn(&Idle<P>) -> bool) -> Vec<Entry<P>> {
        let mut out = Vec::new();
        let mut inner = self.inner.lock();
        inner.map.retain(|_, list| {
            let mut kept = VecDeque::with_capacity(list.len());
            for e in list.drain(..) {
                if doomed(&e) {
                    out.push(e.conn);
                } else {
                    kept.push_back(e);
                }
            }
            *list = kept;
            !list.is_empty()
        });
        inner.total -= out.len();
        out
    }

    /// The earliest moment an idle connection expires (for the reaper's sleep).
    pub fn next_expiry(&self) -> Option<Instant> {
        let limits = self.limits();
        let inner = self.inner.lock();
        inner
            .map
            .values()
            .flatten()
            .map(|e| (e.since + limits.idle_ttl).min(e.conn.created() + limits.reuse_time_limit))
            .min()
    }

    /// A copy of what is pooled, for the report (formatting happens outside the lock).
    pub fn snapshot(&self, now: Instant) -> (Vec<PooledInfo>, PoolCounters) {
        let inner = self.inner.lock();
        let list = inner
            .map
            .iter()
            .flat_map(|(k, l)| l.iter().map(move |e| (k, e)))
            .map(|(k, e)| PooledInfo {
                key: k.clone(),
                conn: IdleConnection {
                    age: now.duration_since(e.conn.created()),
                    idle: now.duration_since(e.since),
                    uses: e.conn.uses(),
                    messages: e.conn.messages(),
                    tls_version: e.conn.tls().map(|t| t.version.clone()),
                    tls_cipher: e.conn.tls().map(|t| t.cipher.clone()),
                    last_mta: e.conn.last_mta(),
                },
            })
            .collect();
        let counters = PoolCounters {
            idle: inner.total,
            keys: inner.map.len(),
            hits: inner.hits,
            misses: inner.misses,
            stored: inner.stored,
        };
        (list, counters)
    }
}
