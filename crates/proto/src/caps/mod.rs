//! The connection caps' bookkeeping (sans-I/O): what a cap applies to ([`PairCaps`]), and the
//! [`ledger`] of open connections, dials and waiting requests, which takes `now` and returns
//! decisions. The daemon's `caps` module puts it under one mutex and delivers its decisions
//! (permits, handed-over connections); the configuration resolves [`PairCaps`] per pair.

mod ask;
pub mod ledger;
pub mod shared;
pub mod stats;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_shared;

pub use ask::{Acquire, Ask, Block, Offer, Pair, PairView, Reuse, Scope};
pub use ledger::{Ledger, RATE_RECHECK};
pub use stats::{WaitStats, BUCKETS};

use serde::Serialize;
use std::net::SocketAddr;

/// The caps of one (source, destination) pair; `None`: no cap (the key left out).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CapLimits {
    /// Open connections (in use and idle in the pool).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// New connections (dials) per `caps.window`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_new_connections: Option<usize>,
}

impl CapLimits {
    /// Each cap from `self`, or else from `other`.
    pub fn or(self, other: CapLimits) -> CapLimits {
        CapLimits {
            max_connections: self.max_connections.or(other.max_connections),
            max_new_connections: self.max_new_connections.or(other.max_new_connections),
        }
    }
}

/// A destination as caps count it: a named group, or one MX address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CapDestination {
    Group(String),
    Mx(SocketAddr),
}

impl std::fmt::Display for CapDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CapDestination::Group(g) => f.write_str(g),
            CapDestination::Mx(a) => write!(f, "{a}"),
        }
    }
}

/// What applies to one (source IP, MX address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairCaps {
    pub destination: CapDestination,
    pub limits: CapLimits,
    pub max_connections_per_source: Option<usize>,
}
