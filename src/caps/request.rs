//! What a session asks of the caps and what it gets ([`super::Caps::obtain`],
//! [`super::Caps::give_back`]), and what the status view reads ([`super::Caps::rows`],
//! [`super::Caps::wait_stats`]).

use super::{Block, Capped, Permit, Reuse};
pub use greenarrow_proxy_proto::status::{CapRow, WaitSnapshot};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// What a request gets under the caps.
pub enum Obtained {
    /// A place: dial, and keep the permit beside the new connection ([`Capped::new`]).
    Dial(Permit),
    /// A pooled connection of its key, handed over (or taken from the pool) while it waited.
    Reused(Box<Capped>),
}

/// A request for a connection to `mx` from `source` as `ehlo`.
pub struct Request<'a> {
    pub source: IpAddr,
    pub ehlo: &'a str,
    pub mx: SocketAddr,
    /// `Some` when a reused connection is acceptable (`reuse=yes`).
    pub reuse: Option<Reuse>,
    /// The request's `wait=` (None: `caps.wait`); never more than `caps.wait`.
    pub wait: Option<Duration>,
    /// The session's end: no wait outlives it.
    pub deadline: Instant,
}

/// A request the caps refused: the cap that held it, and how long it waited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapFailure {
    pub source: IpAddr,
    pub destination: String,
    pub block: Block,
    pub limit: Option<usize>,
    pub waited: Duration,
    /// The cap is a `caps.shared` one (across hosts).
    pub shared: bool,
}

impl fmt::Display for CapFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.block {
            Block::Pair => "max_connections",
            Block::Source => "max_connections_per_source",
            Block::Rate(_) if self.shared => "shared max_new_connections",
            Block::Rate(_) => "max_new_connections",
            Block::Shared => "shared max_connections",
        };
        write!(f, "source {} to {}: {what}", self.source, self.destination)?;
        if let Some(n) = self.limit {
            write!(f, " ({n})")?;
        }
        write!(f, " reached; waited {:.1} s", self.waited.as_secs_f64())
    }
}

/// What happened to a connection given back after a session.
pub enum Returned {
    /// Stored in the pool.
    Pooled,
    /// Handed to a waiting request.
    Handed,
    /// Closed so that a waiting request (another key) can dial.
    ClosedForWaiter,
    /// The pool refused it: close it.
    Refused(Box<crate::pool::Rejected<Permit>>),
}
