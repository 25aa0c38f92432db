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

mod obtain;
mod request;
pub mod shared;
#[cfg(test)]
mod tests;

pub use greenarrow_proxy_proto::caps::{Acquire, Block, Pair, Reuse, Scope, BUCKETS};
pub use request::{CapFailure, CapRow, Obtained, Request, Returned, WaitSnapshot};
pub use shared::{Lease, SharedBlock, SharedCaps};

use crate::config::CapsConfig;
use crate::pool::reaper::quit_detached;
use crate::pool::{Entry, Pool, PoolKey};
use greenarrow_proxy_proto::caps::{Ledger, Offer};
use greenarrow_proxy_proto::status::{SharedGroup, SharedHolder, SharedStatus};
use parking_lot::Mutex;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
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

    /// The proxy is stopping: every waiting request gives up now (its session answers at
    /// once instead of waiting out `caps.wait`), and no request waits from now on.
    pub fn close(&self) {
        let mut st = self.inner.state.lock();
        self.inner.closed.store(true, Ordering::SeqCst);
        let tokens = st.ledger.cancel_all(Instant::now());
        let shared = st.shared.clone();
        drop(st);
        // Dropping a sender wakes its waiter with nothing.
        drop(tokens);
        // Requests waiting for a shared lease give up too (the keeper goes on giving back
        // the leases of the connections still closing).
        if let Some(s) = shared {
            s.close();
        }
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
