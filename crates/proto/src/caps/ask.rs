//! What a request asks the ledger ([`super::ledger`]) and what it answers (sans-I/O types).

use super::{CapDestination, PairCaps};
use crate::protocol::{PoolKey, TlsWant};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// A (source IP, destination) pair: what a cap counts.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pair {
    pub source: IpAddr,
    pub destination: CapDestination,
}

/// What a waiting request accepts when a connection comes back to the pool: a connection of
/// its key whose TLS state satisfies `want` and that has carried fewer than `max_messages`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reuse {
    pub want: TlsWant,
    pub max_messages: Option<u64>,
}

/// What a request asks the ledger for.
#[derive(Clone, Debug)]
pub struct Ask {
    pub pair: Pair,
    pub key: PoolKey,
    /// The MX address (the caps are looked up again with it after a reload).
    pub mx: SocketAddr,
    pub caps: PairCaps,
    /// `Some` when the request accepts a reused connection (`reuse=yes`).
    pub reuse: Option<Reuse>,
}

/// Why a pair cannot have one more connection now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Block {
    /// `max_new_connections` reached; room at this instant.
    Rate(Instant),
    /// `max_connections` of the pair.
    Pair,
    /// `max_connections_per_source`.
    Source,
    /// `caps.shared`: the group's `max_connections` across hosts (or this host's share).
    Shared,
}

/// Which idle connections may be closed to make room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Of the same pair.
    Pair,
    /// Of the same source (any destination).
    Source,
}

/// The answer to a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Acquire {
    /// A permit is reserved: dial.
    Granted,
    /// The cap is reached but idle pooled connections count toward it: close one of `Scope`
    /// and take its place ([`Ledger::transfer`]).
    Evict(Scope),
    /// Queued as waiter `id` behind `block`; `wake` is when the rate window has room again
    /// (if the rate is what blocks).
    Queued {
        id: u64,
        wake: Option<Instant>,
        block: Block,
    },
    /// The cap is reached and the request may not wait.
    Refused(Block),
}

/// What to do with a connection coming back from a session.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer<T> {
    /// Nobody waits for it: pool it (it is counted idle now).
    Pool,
    /// Hand it to this waiter (it stays in use).
    Hand(T, Instant),
    /// Close it: its place went to this waiter, which dials (`Pair` and `PoolKey` of the
    /// waiter given back for its permit).
    CloseFor(T, Instant, Pair, PoolKey),
}

/// One row per pair (see `Caps::rows`).
pub struct PairView {
    pub pair: Pair,
    pub open: usize,
    pub idle: usize,
    pub max_connections: Option<usize>,
    pub waiting: usize,
    pub oldest: Option<Instant>,
}
