//! What a session asks of the caps and what it gets ([`super::Caps::obtain`],
//! [`super::Caps::give_back`]), and what the status view reads ([`super::Caps::rows`],
//! [`super::Caps::wait_stats`]).

use super::{Block, Capped, Permit, Reuse};
use serde::{Deserialize, Serialize};
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
}

impl fmt::Display for CapFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.block {
            Block::Pair => "max_connections",
            Block::Source => "max_connections_per_source",
            Block::Rate(_) => "max_new_connections",
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

/// One (source IP, destination) pair as the status view shows it (its JSON is the status
/// view's `caps` entry: the oldest wait in seconds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapRow {
    pub source: IpAddr,
    /// The destination group's name, or the MX address (`ip:port`) when it belongs to none.
    pub destination: String,
    /// Connections open now: in use by a session, and idle in the pool.
    pub in_use: usize,
    pub idle: usize,
    /// `max_connections` in force for the pair (None: no cap).
    pub max_connections: Option<usize>,
    /// Requests waiting for a connection, and how long the oldest has waited.
    pub waiting: usize,
    #[serde(
        rename = "oldest_wait_seconds",
        with = "greenarrow_proxy_proto::duration::seconds::option"
    )]
    pub oldest_wait: Option<Duration>,
}

/// Waits for a connection under a cap, since start (its JSON is the status view's `waits`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WaitSnapshot {
    /// Requests that had to wait.
    pub waited: u64,
    /// Of those, the ones whose wait expired (`concurrency_limit`).
    pub timed_out: u64,
    /// Sum of all wait times, in seconds.
    pub sum_seconds: f64,
    /// Histogram of wait times: (upper bound in seconds, cumulative count), ascending; the
    /// last bound is `f64::INFINITY`. In JSON: `{"le": bound, "count": n}`, `le` null for
    /// +Inf.
    #[serde(with = "buckets")]
    pub buckets: Vec<(f64, u64)>,
}

/// [`WaitSnapshot::buckets`] as JSON objects.
mod buckets {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Bucket {
        le: Option<f64>,
        count: u64,
    }

    pub fn serialize<S: Serializer>(b: &[(f64, u64)], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(b.iter().map(|&(le, count)| Bucket {
            le: le.is_finite().then_some(le),
            count,
        }))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(f64, u64)>, D::Error> {
        Ok(Vec::<Bucket>::deserialize(d)?
            .into_iter()
            .map(|b| (b.le.unwrap_or(f64::INFINITY), b.count))
            .collect())
    }
}
