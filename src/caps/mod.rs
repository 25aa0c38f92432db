//! Proxy-wide connection caps per (source IP, destination) and the requests waiting for a
//! connection under a cap.
//!
//! SKELETON: the types and methods below are the interface the status view and the metrics
//! read; the caps work fills them in (counting, waiting, hand-over).

use crate::pool::PoolKey;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// One (source IP, destination) pair as the status view shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
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
    pub oldest_wait: Option<Duration>,
}

/// Waits for a connection under a cap, since start.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WaitSnapshot {
    /// Requests that had to wait.
    pub waited: u64,
    /// Of those, the ones whose wait expired (`concurrency_limit`).
    pub timed_out: u64,
    /// Histogram of wait times: (upper bound in seconds, cumulative count), ascending; the
    /// last bound is `f64::INFINITY`.
    pub buckets: Vec<(f64, u64)>,
    /// Sum of all wait times, in seconds.
    pub sum_seconds: f64,
}

/// The ledger of open MX connections under caps, and the queue of waiting requests.
#[derive(Default)]
pub struct Caps {}

impl Caps {
    pub fn new() -> Caps {
        Caps::default()
    }

    /// Every (source, destination) pair with an open connection, a cap or a waiter.
    pub fn rows(&self, _now: Instant) -> Vec<CapRow> {
        Vec::new()
    }

    /// Connections in use by a session (open, not idle in the pool), per pool key.
    pub fn in_use_by_key(&self) -> Vec<(PoolKey, usize)> {
        Vec::new()
    }

    /// The wait counters and histogram.
    pub fn wait_stats(&self) -> WaitSnapshot {
        WaitSnapshot::default()
    }
}
