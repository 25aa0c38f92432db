//! The ledger (sans-I/O): open connections per (source, destination) pair, per pool key and
//! per source, the dials in the rate window, and the queue of waiting requests. Every method
//! takes `now` and returns a decision; the caller (`Caps`, under one mutex) acts on it.
//!
//! Invariant after every operation that can free room (release, reload, a waiter's timed
//! wake): no queued waiter could dial now, so a newcomer behind a waiter of its pair queues
//! too (first come, first served per pair).

use super::ask::{Acquire, Ask, Block, Offer, Pair, PairView, Reuse, Scope};
use super::stats::WaitStats;
use super::PairCaps;
use crate::protocol::PoolKey;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// How often a waiter under a rate cap looks again by itself at most.
pub const RATE_RECHECK: Duration = Duration::from_secs(1);

/// A request's place in the queue.
struct Waiter<T> {
    id: u64,
    pair: Pair,
    key: PoolKey,
    reuse: Option<Reuse>,
    since: Instant,
    token: T,
}

struct PairState {
    open: usize,
    idle: usize,
    dials: VecDeque<Instant>,
    caps: PairCaps,
    mx: SocketAddr,
}

#[derive(Default)]
struct KeyCount {
    open: usize,
    idle: usize,
}

/// The ledger; `T` is what reaches a waiter (a channel's sender in use, anything in tests).
pub struct Ledger<T> {
    pairs: HashMap<Pair, PairState>,
    keys: HashMap<PoolKey, KeyCount>,
    sources: HashMap<IpAddr, usize>,
    waiters: VecDeque<Waiter<T>>,
    next_id: u64,
    window: Duration,
    pub stats: WaitStats,
}

impl<T> Ledger<T> {
    pub fn new(window: Duration) -> Ledger<T> {
        Ledger {
            pairs: HashMap::new(),
            keys: HashMap::new(),
            sources: HashMap::new(),
            waiters: VecDeque::new(),
            next_id: 0,
            window,
            stats: WaitStats::default(),
        }
    }

    /// A request for one more connection: granted, evict, queued (if `may_wait`) or refused.
    pub fn acquire(&mut self, ask: Ask, now: Instant, may_wait: bool, token: T) -> Acquire {
        self.note(&ask.pair, &ask.caps, ask.mx);
        let behind = self.waiters.iter().any(|w| w.pair == ask.pair);
        let block = if behind {
            // Someone of this pair waits already: they came first.
            Some(self.blocked(&ask.pair, now).unwrap_or(Block::Pair))
        } else {
            self.blocked(&ask.pair, now)
        };
        let Some(block) = block else {
            self.reserve(&ask.pair, &ask.key, now);
            return Acquire::Granted;
        };
        if !behind {
            match block {
                Block::Pair if self.pairs.get(&ask.pair).is_some_and(|s| s.idle > 0) => {
                    return Acquire::Evict(Scope::Pair)
                }
                Block::Source if self.source_idle(ask.pair.source) > 0 => {
                    return Acquire::Evict(Scope::Source)
                }
                _ => {}
            }
        }
        if !may_wait {
            return Acquire::Refused(block);
        }
        let wake = self.rate_wake(&ask.pair, block, now);
        let id = self.enqueue(ask, now, token);
        Acquire::Queued { id, wake, block }
    }

    /// Queue `ask` (after an [`Acquire::Evict`] that found nothing to close).
    pub fn enqueue(&mut self, ask: Ask, now: Instant, token: T) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.stats.waited += 1;
        self.waiters.push_back(Waiter {
            id,
            pair: ask.pair,
            key: ask.key,
            reuse: ask.reuse,
            since: now,
            token,
        });
        id
    }

    /// After [`Acquire::Evict`]: the idle connection `(pair, key)` (its permit) is closed and
    /// its place goes to `ask`, if that frees enough room; otherwise the place is released.
    /// Err: the freed room went to nobody (the caller queues or retries).
    pub fn transfer(
        &mut self,
        from: (&Pair, &PoolKey),
        ask: &Ask,
        now: Instant,
    ) -> Result<(), Vec<(T, Instant, Pair, PoolKey)>> {
        self.release_counts(from.0, from.1, true);
        let result = if self.blocked(&ask.pair, now).is_none() {
            self.reserve(&ask.pair, &ask.key, now);
            Ok(())
        } else {
            Err(self.pump(now))
        };
        self.tidy(from.0);
        result
    }

    /// A permit ended (its connection closed): the room goes to the oldest waiters that can
    /// dial now; they are returned with their pair and key (for their permit).
    pub fn release_and_pump(
        &mut self,
        pair: &Pair,
        key: &PoolKey,
        idle: bool,
        now: Instant,
    ) -> Vec<(T, Instant, Pair, PoolKey)> {
        self.release(pair, key, idle);
        self.pump(now)
    }

    /// Waiters that can dial now, oldest first, each with a reserved place.
    pub fn pump(&mut self, now: Instant) -> Vec<(T, Instant, Pair, PoolKey)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.waiters.len() {
            let pair = match self.waiters.get(i) {
                Some(w) => w.pair.clone(),
                None => break,
            };
            // Only the oldest waiter of a pair may be served (all of a pair share its caps).
            let first_of_pair = !self.waiters.iter().take(i).any(|w| w.pair == pair);
            if first_of_pair && self.blocked(&pair, now).is_none() {
                if let Some(w) = self.waiters.remove(i) {
                    self.reserve(&w.pair, &w.key, now);
                    self.stats
                        .record(now.saturating_duration_since(w.since), false);
                    out.push((w.token, w.since, w.pair, w.key));
                }
                continue;
            }
            i += 1;
        }
        out
    }

    /// A connection `(pair, key)` comes back from a session; `fits(reuse)` says whether it
    /// satisfies a waiter's TLS want and message cap. The oldest waiter of its source that can
    /// use it gets it, or that can dial if it closes gets its place; otherwise it is pooled.
    pub fn offer(
        &mut self,
        pair: &Pair,
        key: &PoolKey,
        fits: impl Fn(&Reuse) -> bool,
        now: Instant,
    ) -> Offer<T> {
        let mut i = 0;
        while i < self.waiters.len() {
            let Some(w) = self.waiters.get(i) else { break };
            if w.pair.source != pair.source {
                i += 1;
                continue;
            }
            let first_of_pair = !self.waiters.iter().take(i).any(|o| o.pair == w.pair);
            let wp = w.pair.clone();
            if &w.pair == pair && &w.key == key && w.reuse.as_ref().is_some_and(&fits) {
                if let Some(w) = self.waiters.remove(i) {
                    self.stats
                        .record(now.saturating_duration_since(w.since), false);
                    return Offer::Hand(w.token, w.since);
                }
            }
            if first_of_pair {
                // Would closing this connection let the waiter dial?
                self.release_counts(pair, key, false);
                if self.blocked(&wp, now).is_none() {
                    if let Some(w) = self.waiters.remove(i) {
                        self.reserve(&w.pair, &w.key, now);
                        self.stats
                            .record(now.saturating_duration_since(w.since), false);
                        return Offer::CloseFor(w.token, w.since, w.pair, w.key);
                    }
                }
                self.restore(pair, key);
            }
            i += 1;
        }
        self.mark_idle(pair, key);
        Offer::Pool
    }

    /// Waiter `id` gives up (its wait expired): true if it was still queued (then it gets
    /// nothing); false if it was served meanwhile (its grant is on its way).
    pub fn cancel(&mut self, id: u64, now: Instant) -> bool {
        match self.waiters.iter().position(|w| w.id == id) {
            Some(i) => {
                if let Some(w) = self.waiters.remove(i) {
                    self.stats
                        .record(now.saturating_duration_since(w.since), true);
                    self.tidy(&w.pair);
                }
                true
            }
            None => false,
        }
    }

    /// Every waiter gives up at once (the proxy is stopping): their tokens, to be dropped
    /// outside the caller's lock (a waiter whose token is dropped gets nothing).
    pub fn cancel_all(&mut self, now: Instant) -> Vec<T> {
        let gone: Vec<Waiter<T>> = self.waiters.drain(..).collect();
        let mut tokens = Vec::with_capacity(gone.len());
        for w in gone {
            self.stats
                .record(now.saturating_duration_since(w.since), true);
            self.tidy(&w.pair);
            tokens.push(w.token);
        }
        tokens
    }

    /// When waiter `id` should look again by itself: when the rate window has room, if the
    /// rate blocks; at least every [`RATE_RECHECK`] under a rate cap (no event announces that
    /// the window moved); never otherwise (releases and returning connections wake it).
    pub fn wake_of(&mut self, id: u64, now: Instant) -> Option<Instant> {
        let pair = self.waiters.iter().find(|w| w.id == id)?.pair.clone();
        let block = self.blocked(&pair, now)?;
        self.rate_wake(&pair, block, now)
    }

    fn rate_wake(&self, pair: &Pair, block: Block, now: Instant) -> Option<Instant> {
        match block {
            Block::Rate(t) => Some(t),
            _ => self
                .pairs
                .get(pair)
                .and_then(|s| s.caps.limits.max_new_connections)
                .map(|_| now + RATE_RECHECK.min(self.window)),
        }
    }

    /// A pooled connection was taken for a session.
    pub fn mark_in_use(&mut self, pair: &Pair, key: &PoolKey) {
        if let Some(s) = self.pairs.get_mut(pair) {
            s.idle = s.idle.saturating_sub(1);
        }
        if let Some(k) = self.keys.get_mut(key) {
            k.idle = k.idle.saturating_sub(1);
        }
    }

    /// A connection was stored in the pool.
    pub fn mark_idle(&mut self, pair: &Pair, key: &PoolKey) {
        if let Some(s) = self.pairs.get_mut(pair) {
            s.idle += 1;
        }
        if let Some(k) = self.keys.get_mut(key) {
            k.idle += 1;
        }
    }

    /// New caps (reload): looked up again for every pair with `caps_of(source, mx)`; the rate
    /// window too. Returns the waiters that can dial now.
    pub fn reconfigure(
        &mut self,
        window: Duration,
        caps_of: impl Fn(IpAddr, SocketAddr) -> PairCaps,
        now: Instant,
    ) -> Vec<(T, Instant, Pair, PoolKey)> {
        self.window = window;
        for (pair, st) in self.pairs.iter_mut() {
            st.caps = caps_of(pair.source, st.mx);
        }
        self.pump(now)
    }

    /// Every pair, for the status view.
    pub fn view(&self) -> Vec<PairView> {
        let mut rows: Vec<PairView> = self
            .pairs
            .iter()
            .map(|(p, s)| {
                let mut waiting = self.waiters.iter().filter(|w| &w.pair == p);
                let oldest = waiting.next().map(|w| w.since);
                PairView {
                    pair: p.clone(),
                    open: s.open,
                    idle: s.idle,
                    max_connections: s.caps.limits.max_connections,
                    waiting: usize::from(oldest.is_some()) + waiting.count(),
                    oldest,
                }
            })
            .collect();
        rows.sort_by(|a, b| {
            (a.pair.source, &a.pair.destination).cmp(&(b.pair.source, &b.pair.destination))
        });
        rows
    }

    /// Connections in use (open, not idle) per key.
    pub fn in_use_by_key(&self) -> Vec<(PoolKey, usize)> {
        self.keys
            .iter()
            .filter(|(_, c)| c.open > c.idle)
            .map(|(k, c)| (k.clone(), c.open - c.idle))
            .collect()
    }

    /// Open connections of `source`, all destinations.
    pub fn source_open(&self, source: IpAddr) -> usize {
        self.sources.get(&source).copied().unwrap_or(0)
    }

    fn source_idle(&self, source: IpAddr) -> usize {
        self.pairs
            .iter()
            .filter(|(p, _)| p.source == source)
            .map(|(_, s)| s.idle)
            .sum()
    }

    /// Record the caps in force for `pair` (the latest request's).
    fn note(&mut self, pair: &Pair, caps: &PairCaps, mx: SocketAddr) {
        let st = self.pairs.entry(pair.clone()).or_insert_with(|| PairState {
            open: 0,
            idle: 0,
            dials: VecDeque::new(),
            caps: caps.clone(),
            mx,
        });
        st.caps = caps.clone();
        st.mx = mx;
    }

    /// Why `pair` cannot have one more connection now (None: it can).
    fn blocked(&mut self, pair: &Pair, now: Instant) -> Option<Block> {
        let window = self.window;
        let source_open = self.source_open(pair.source);
        let st = self.pairs.get_mut(pair)?;
        while st
            .dials
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= window)
        {
            st.dials.pop_front();
        }
        if let Some(max) = st.caps.limits.max_new_connections {
            if st.dials.len() >= max {
                let first = st.dials.front().copied().unwrap_or(now);
                return Some(Block::Rate(first + window));
            }
        }
        if st.caps.limits.max_connections.is_some_and(|m| st.open >= m) {
            return Some(Block::Pair);
        }
        if st
            .caps
            .max_connections_per_source
            .is_some_and(|m| source_open >= m)
        {
            return Some(Block::Source);
        }
        None
    }

    /// One more connection (a dial) for `pair` and `key`.
    fn reserve(&mut self, pair: &Pair, key: &PoolKey, now: Instant) {
        if let Some(st) = self.pairs.get_mut(pair) {
            st.open += 1;
            if st.caps.limits.max_new_connections.is_some() {
                st.dials.push_back(now);
            }
        }
        self.keys.entry(key.clone()).or_default().open += 1;
        *self.sources.entry(pair.source).or_insert(0) += 1;
    }

    /// Undo a trial [`Ledger::release`] of an in-use connection.
    fn restore(&mut self, pair: &Pair, key: &PoolKey) {
        if let Some(st) = self.pairs.get_mut(pair) {
            st.open += 1;
        }
        self.keys.entry(key.clone()).or_default().open += 1;
        *self.sources.entry(pair.source).or_insert(0) += 1;
    }

    fn release(&mut self, pair: &Pair, key: &PoolKey, idle: bool) {
        self.release_counts(pair, key, idle);
        self.tidy(pair);
    }

    /// [`Ledger::release`] without forgetting the pair.
    fn release_counts(&mut self, pair: &Pair, key: &PoolKey, idle: bool) {
        if let Some(st) = self.pairs.get_mut(pair) {
            st.open = st.open.saturating_sub(1);
            if idle {
                st.idle = st.idle.saturating_sub(1);
            }
        }
        if let Some(k) = self.keys.get_mut(key) {
            k.open = k.open.saturating_sub(1);
            if idle {
                k.idle = k.idle.saturating_sub(1);
            }
            if k.open == 0 {
                self.keys.remove(key);
            }
        }
        if let Some(n) = self.sources.get_mut(&pair.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.sources.remove(&pair.source);
            }
        }
    }

    /// Forget a pair with nothing open, no dial in the window and no waiter.
    fn tidy(&mut self, pair: &Pair) {
        let empty = self
            .pairs
            .get(pair)
            .is_some_and(|s| s.open == 0 && s.dials.is_empty());
        if empty && !self.waiters.iter().any(|w| &w.pair == pair) {
            self.pairs.remove(pair);
        }
    }
}
