//! [`Caps::obtain`]: a place for one more connection, under the shared caps (a lease, a rate
//! token) and the local ones (the ledger), waiting for it if allowed.

use super::{
    grant, Acquire, Block, CapFailure, Caps, Grant, Obtained, Permit, Request, Scope, SharedBlock,
};
use crate::config::CapDestination;
use crate::pool::reaper::quit_detached;
use crate::pool::{Pool, PoolKey};
use greenarrow_proxy_net::deadline::Deadline;
use greenarrow_proxy_proto::caps::{Ask, Pair};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError};
use std::time::Instant;

impl Caps {
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
                    let result = st.ledger.transfer((&vp.pair, &vp.key), ask, now);
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
}
