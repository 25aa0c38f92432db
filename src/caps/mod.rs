//! Proxy-wide connection caps per (source IP, destination) and the requests waiting for a
//! connection under a cap.
//!
//! Every open MX connection (in use by a session or idle in the pool; native, SMTP-aware and
//! passthrough alike) has a [`Permit`] for its pair beside it (a [`Capped`]: the connection
//! knows nothing of caps); dropping the permit (after closing the connection) releases its
//! place. The bookkeeping and every decision are in the sans-I/O ledger
//! ([`greenarrow_proxy_proto::caps::Ledger`], time given); this module puts it under one mutex
//! and delivers what it decides:
//!
//! - a request at a cap waits, if allowed, in a FIFO queue with its own channel: no lock is
//!   held while it waits;
//! - a connection coming back from a session goes to the oldest waiter it satisfies (same key,
//!   TLS want, message cap) directly, or is closed when that lets an older waiter dial;
//! - a released permit lets the oldest waiter that can now dial do so;
//! - idle pooled connections of another key that fill the cap are closed to make room.
//!
//! Lock order: the caps mutex may be held while taking the pool's (`Pool::inner`), never the
//! reverse; nothing is ever dropped, sent or closed under either (grants go out after release).
//!
//! Imports point one way: `session` → `caps` → `pool` → `mx`. The pool stores a connection
//! with its permit ([`crate::pool::Entry`]) without knowing what a permit is, and the ledger
//! keys on [`greenarrow_proxy_proto::protocol::PoolKey`], which is the protocol crate's, not the pool's.

mod request;
pub mod shared;
#[cfg(test)]
mod tests;

pub use greenarrow_proxy_proto::caps::{Acquire, Block, Pair, Reuse, Scope, BUCKETS};
pub use request::{CapFailure, CapRow, Obtained, Request, Returned, WaitSnapshot};
pub use shared::{Lease, SharedBlock, SharedCaps};

use crate::config::{CapDestination, CapsConfig};
use crate::pool::reaper::quit_detached;
use crate::pool::{Entry, Pool, PoolKey};
use greenarrow_proxy_net::deadline::Deadline;
use greenarrow_proxy_proto::caps::{Ask, Ledger, Offer};
use greenarrow_proxy_proto::status::{SharedGroup, SharedHolder, SharedStatus};
use parking_lot::Mutex;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::Instant;

/// What reaches a waiting request.
enum Grant {
    /// A connection of its key, handed over on its way back to the pool (still in use).
    Conn(Box<Capped>),
    /// A place under the cap: dial.
    Permit(Permit),
}

type Grants = Vec<(SyncSender<Grant>, Instant, Pair, PoolKey)>;

struct State {
    ledger: Ledger<SyncSender<Grant>>,
    config: Arc<CapsConfig>,
    /// `caps.shared` in force (None: nothing shared, or Redis's URL did not parse).
    shared: Option<Arc<SharedCaps>>,
}

struct Inner {
    state: Mutex<State>,
    /// The proxy is stopping: no request waits any more (set once, under `state`).
    closed: AtomicBool,
}

impl Inner {
    /// Send each waiter its permit (never under the lock: a permit that cannot be delivered
    /// is dropped, which takes the lock again).
    fn deliver(self: &Arc<Inner>, grants: Grants) {
        for (tx, _, pair, key) in grants {
            let p = Permit {
                caps: self.clone(),
                pair,
                key,
                idle: false,
                armed: true,
                lease: None,
            };
            let _ = tx.try_send(Grant::Permit(p));
        }
    }
}

/// An MX connection with its place under the caps, as sessions use it and the pool keeps it
/// (`Capped::new(conn, permit)` after a dial under the permit).
pub type Capped = Entry<Permit>;

/// A connection's place under its pair's caps; dropping it releases the place (and lets the
/// oldest waiter that can now dial do so).
pub struct Permit {
    caps: Arc<Inner>,
    pair: Pair,
    key: PoolKey,
    /// Counted idle (the connection is in the pool).
    idle: bool,
    /// False once the place went to someone else (then dropping does nothing).
    armed: bool,
    /// Its lease under a shared cap (dropped after the permit's own release).
    lease: Option<Lease>,
}

impl Permit {
    /// The pair the permit counts toward.
    pub fn pair(&self) -> &Pair {
        &self.pair
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Permit({} -> {}, idle={})",
            self.pair.source, self.pair.destination, self.idle
        )
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let grants = self.caps.state.lock().ledger.release_and_pump(
            &self.pair,
            &self.key,
            self.idle,
            Instant::now(),
        );
        self.caps.deliver(grants);
    }
}

/// The ledger of open MX connections under caps, and the queue of waiting requests.
pub struct Caps {
    inner: Arc<Inner>,
}

impl Default for Caps {
    fn default() -> Caps {
        Caps::new()
    }
}

impl Caps {
    pub fn new() -> Caps {
        let config = CapsConfig::default();
        Caps {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    ledger: Ledger::new(config.window),
                    config: Arc::new(config),
                    shared: None,
                }),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// Put `config` in force (start, reload): new caps apply to new connections; open ones
    /// stay; waiters that the new caps let through dial now.
    pub fn set_config(&self, config: &CapsConfig) {
        let config = Arc::new(config.clone());
        let current = self.inner.state.lock().shared.clone();
        let shared = match (&config.shared, current) {
            (Some(c), Some(s)) if s.runs(c, config.window) => Some(s),
            (Some(c), _) => match SharedCaps::start(c, config.window) {
                Ok(s) => Some(Arc::new(s)),
                Err(e) => {
                    log::warn!("caps.shared: {e}; the shared caps are off");
                    None
                }
            },
            (None, _) => None,
        };
        let old = {
            let mut st = self.inner.state.lock();
            std::mem::replace(&mut st.shared, shared.clone())
        };
        if let Some(old) = old {
            if shared.as_ref().is_none_or(|s| !Arc::ptr_eq(s, &old)) {
                old.close();
            }
        }
        let grants = {
            let mut st = self.inner.state.lock();
            st.config = config.clone();
            st.ledger
                .reconfigure(config.window, |s, mx| config.pair(s, mx), Instant::now())
        };
        self.inner.deliver(grants);
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<CapsConfig> {
        self.inner.state.lock().config.clone()
    }

    /// A place for one more connection for `req`: at once, by closing an idle pooled
    /// connection of another key, or after waiting (FIFO) for a released place or a connection
    /// of its key coming back. Err when the wait expired (or was not allowed).
    pub fn obtain(&self, pool: &Pool<Permit>, req: &Request) -> Result<Obtained, CapFailure> {
        let started = Instant::now();
        let (ask, cfg_wait, shared) = {
            let st = self.inner.state.lock();
            let caps = st.config.pair(req.source, req.mx);
            let ask = Ask {
                pair: Pair {
                    source: req.source.to_canonical(),
                    destination: caps.destination.clone(),
                },
                key: PoolKey::new(req.source, req.ehlo, req.mx),
                mx: req.mx,
                caps,
                reuse: req.reuse.clone(),
            };
            (ask, st.config.wait, st.shared.clone())
        };
        let wait = req.wait.map_or(cfg_wait, |w| w.min(cfg_wait));
        let end = (started + wait).min(req.deadline);
        let group = match (&shared, &ask.pair.destination) {
            (Some(s), CapDestination::Group(g)) => {
                let l = s.limits(g);
                (l.max_connections.is_some() || l.max_new_connections.is_some())
                    .then(|| (s.clone(), g.clone(), l))
            }
            _ => None,
        };
        let Some((shared, group, limits)) = group else {
            return self.obtain_local(pool, req, &ask, started, end);
        };
        let shared_fail = |b: SharedBlock| {
            let (block, limit) = match b {
                SharedBlock::Connections(n) => (Block::Shared, n),
                SharedBlock::Rate(n, at) => (Block::Rate(at), n),
            };
            CapFailure {
                source: ask.pair.source,
                destination: ask.pair.destination.to_string(),
                block,
                limit: Some(limit),
                waited: started.elapsed(),
                shared: true,
            }
        };
        // The lease first (no lock held while waiting for it), then the local caps.
        let lease = match limits.max_connections {
            Some(cap) => {
                let evict = || {
                    let config = self.config();
                    let victim = pool.take_one(|k| {
                        config.destination(k.mx) == CapDestination::Group(group.clone())
                    });
                    let found = victim.is_some();
                    quit_detached(victim.into_iter().collect());
                    found
                };
                Some(
                    shared
                        .acquire(&group, cap, end, &evict)
                        .map_err(shared_fail)?,
                )
            }
            None => None,
        };
        match self.obtain_local(pool, req, &ask, started, end)? {
            // A pooled connection has its own lease (the new one goes back).
            Obtained::Reused(c) => Ok(Obtained::Reused(c)),
            Obtained::Dial(mut permit) => {
                if limits.max_new_connections.is_some() {
                    // Dropping the permit (and the lease) on failure gives both back.
                    shared.rate(&group, end).map_err(shared_fail)?;
                }
                permit.lease = lease;
                Ok(Obtained::Dial(permit))
            }
        }
    }

    /// [`Caps::obtain`] under the local caps (the ledger).
    fn obtain_local(
        &self,
        pool: &Pool<Permit>,
        req: &Request,
        ask: &Ask,
        started: Instant,
        end: Instant,
    ) -> Result<Obtained, CapFailure> {
        let fail = |block| CapFailure {
            source: ask.pair.source,
            destination: ask.pair.destination.to_string(),
            block,
            limit: match block {
                Block::Pair => ask.caps.limits.max_connections,
                Block::Source => ask.caps.max_connections_per_source,
                Block::Rate(_) => ask.caps.limits.max_new_connections,
                Block::Shared => None,
            },
            waited: started.elapsed(),
            shared: false,
        };
        // A few rounds at most: an eviction can lose its room to an older waiter.
        for _ in 0..4 {
            let now = Instant::now();
            let (tx, rx) = sync_channel(1);
            let mut st = self.inner.state.lock();
            // Read under the lock that `close` sets it under: no request queues after it.
            let may_wait = end > now && !self.inner.closed.load(Ordering::SeqCst);
            match st.ledger.acquire(ask.clone(), now, may_wait, tx) {
                Acquire::Granted => return Ok(Obtained::Dial(self.permit(ask))),
                Acquire::Refused(block) => return Err(fail(block)),
                Acquire::Queued { id, wake, block } => {
                    drop(st);
                    return self.wait(id, wake, rx, end).map_err(|()| fail(block));
                }
                Acquire::Evict(scope) => {
                    let mut expired = Vec::new();
                    // One of its own key first (it came back meanwhile), else another's.
                    let own = req.reuse.as_ref().and_then(|r| {
                        pool.checkout(&ask.key, &r.want, r.max_messages, now, &mut expired)
                    });
                    if let Some(mut c) = own {
                        let p = c.place_mut();
                        st.ledger.mark_in_use(&p.pair, &p.key);
                        p.idle = false;
                        drop(st);
                        quit_detached(expired);
                        return Ok(Obtained::Reused(Box::new(c)));
                    }
                    let config = st.config.clone();
                    let victim = pool.take_one(|k| {
                        k.source == ask.pair.source
                            && (scope == Scope::Source
                                || config.destination(k.mx) == ask.pair.destination)
                    });
                    let block = match scope {
                        Scope::Pair => Block::Pair,
                        Scope::Source => Block::Source,
                    };
                    let Some(mut victim) = victim else {
                        // Counted idle but already on its way out: queue (the release of its
                        // place will serve the queue).
                        let queued = may_wait.then(|| {
                            let (tx, rx) = sync_channel(1);
                            (st.ledger.enqueue(ask.clone(), now, tx), rx)
                        });
                        // Nothing is dropped under the lock.
                        drop(st);
                        quit_detached(expired);
                        let Some((id, rx)) = queued else {
                            return Err(fail(block));
                        };
                        return self.wait(id, None, rx, end).map_err(|()| fail(block));
                    };
                    // Its place goes to `ask` (or back to the ledger): its permit is spent.
                    let vp = victim.place_mut();
                    let result = st.ledger.transfer((&vp.pair, &vp.key), &ask, now);
                    vp.armed = false;
                    drop(st);
                    expired.push(victim);
                    quit_detached(expired);
                    match result {
                        Ok(()) => return Ok(Obtained::Dial(self.permit(ask))),
                        Err(grants) => self.inner.deliver(grants),
                    }
                }
            }
        }
        Err(fail(Block::Pair))
    }

    /// A new permit for `ask` (its place is reserved already).
    fn permit(&self, ask: &Ask) -> Permit {
        Permit {
            caps: self.inner.clone(),
            pair: ask.pair.clone(),
            key: ask.key.clone(),
            idle: false,
            armed: true,
            lease: None,
        }
    }

    /// Wait (no lock held) for a grant until `end`, waking at `wake` when the rate window
    /// frees room.
    fn wait(
        &self,
        id: u64,
        mut wake: Option<Instant>,
        rx: Receiver<Grant>,
        end: Instant,
    ) -> Result<Obtained, ()> {
        loop {
            let now = Instant::now();
            let until = Deadline::at(wake.map_or(end, |w| w.min(end)));
            match rx.recv_timeout(until.remaining_at(now)) {
                Ok(g) => return Ok(grant(g)),
                Err(RecvTimeoutError::Disconnected) => return Err(()),
                Err(RecvTimeoutError::Timeout) => {
                    let now = Instant::now();
                    let mut st = self.inner.state.lock();
                    if now >= end {
                        let expired = st.ledger.cancel(id, now);
                        drop(st);
                        if expired {
                            return Err(());
                        }
                        // Served meanwhile: the grant is sent right after the server's
                        // lock section (never dropped: its sender is held until then).
                        return rx.recv().map(grant).map_err(|_| ());
                    }
                    let grants = st.ledger.pump(now);
                    wake = st.ledger.wake_of(id, now);
                    drop(st);
                    self.inner.deliver(grants);
                }
            }
        }
    }

    /// The proxy is stopping: every waiting request gives up now (its session answers at
    /// once instead of waiting out `caps.wait`), and no request waits from now on.
    pub fn close(&self) {
        let mut st = self.inner.state.lock();
        self.inner.closed.store(true, Ordering::SeqCst);
        let tokens = st.ledger.cancel_all(Instant::now());
        drop(st);
        // Dropping a sender wakes its waiter with nothing.
        drop(tokens);
    }

    /// A connection taken from the pool for a session: in use again.
    pub fn taken_from_pool(&self, conn: &mut Capped) {
        let p = conn.place_mut();
        if p.idle {
            self.inner.state.lock().ledger.mark_in_use(&p.pair, &p.key);
            p.idle = false;
        }
    }

    /// A healthy connection back from a session (the caller checked it is alive): to the
    /// oldest waiter it satisfies, closed for an older waiter that can then dial, or pooled.
    pub fn give_back(
        &self,
        pool: &Pool<Permit>,
        key: PoolKey,
        mut conn: Capped,
        now: Instant,
    ) -> Returned {
        let permit = conn.place();
        let (pair, pkey) = (permit.pair.clone(), permit.key.clone());
        let mut st = self.inner.state.lock();
        let offer = {
            let c = &conn;
            st.ledger.offer(
                &pair,
                &pkey,
                |r| {
                    r.want.satisfied_by(&c.tls_state())
                        && r.max_messages.is_none_or(|m| c.messages() < m)
                },
                now,
            )
        };
        match offer {
            Offer::Pool => {
                conn.place_mut().idle = true;
                match pool.store(key, conn, now) {
                    Ok(()) => Returned::Pooled,
                    Err(mut r) => {
                        st.ledger.mark_in_use(&pair, &pkey);
                        drop(st);
                        r.conn.place_mut().idle = false;
                        Returned::Refused(r)
                    }
                }
            }
            Offer::Hand(tx, _) => {
                drop(st);
                if let Err(
                    std::sync::mpsc::TrySendError::Full(Grant::Conn(c))
                    | std::sync::mpsc::TrySendError::Disconnected(Grant::Conn(c)),
                ) = tx.try_send(Grant::Conn(Box::new(conn)))
                {
                    quit_detached(vec![*c]);
                }
                Returned::Handed
            }
            Offer::CloseFor(tx, _, wpair, wkey) => {
                // Its place went to the waiter: the permit is spent.
                conn.place_mut().armed = false;
                drop(st);
                self.inner.deliver(vec![(tx, now, wpair, wkey)]);
                quit_detached(vec![conn]);
                Returned::ClosedForWaiter
            }
        }
    }

    /// Every (source, destination) pair with an open connection, a cap or a waiter.
    pub fn rows(&self, now: Instant) -> Vec<CapRow> {
        let views = self.inner.state.lock().ledger.view();
        views
            .into_iter()
            .map(|v| CapRow {
                source: v.pair.source,
                destination: v.pair.destination.to_string(),
                in_use: v.open.saturating_sub(v.idle),
                idle: v.idle,
                max_connections: v.max_connections,
                waiting: v.waiting,
                oldest_wait: v.oldest.map(|t| now.saturating_duration_since(t)),
            })
            .collect()
    }

    /// `caps.shared` for the status view (None: off).
    pub fn shared_status(&self) -> Option<SharedStatus> {
        let shared = self.inner.state.lock().shared.clone()?;
        let (groups, health, live_hosts) = shared.view();
        Some(SharedStatus {
            host: shared.host().to_string(),
            state: health.name().to_string(),
            live_hosts,
            groups: groups
                .into_iter()
                .map(|g| SharedGroup {
                    group: g.group,
                    max_connections: g.limits.max_connections,
                    max_new_connections: g.limits.max_new_connections,
                    held: g.held,
                    share: g.share,
                    waiting: g.waiting,
                    holders: g
                        .holders
                        .into_iter()
                        .map(|(host, leases)| SharedHolder { host, leases })
                        .collect(),
                })
                .collect(),
        })
    }

    /// Connections in use by a session (open, not idle in the pool), per pool key.
    pub fn in_use_by_key(&self) -> Vec<(PoolKey, usize)> {
        self.inner.state.lock().ledger.in_use_by_key()
    }

    /// The wait counters and histogram.
    pub fn wait_stats(&self) -> WaitSnapshot {
        let st = self.inner.state.lock();
        let s = &st.ledger.stats;
        WaitSnapshot {
            waited: s.waited,
            timed_out: s.timed_out,
            buckets: s.cumulative(),
            sum_seconds: s.sum_seconds(),
        }
    }
}

fn grant(g: Grant) -> Obtained {
    match g {
        Grant::Conn(c) => Obtained::Reused(c),
        Grant::Permit(p) => Obtained::Dial(p),
    }
}
