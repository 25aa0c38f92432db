//! What the running proxy shows of itself, as data: the [`Snapshot`] the daemon copies out of
//! its state (outside any lock), with the parts the status view, the report and the metrics
//! read. Each type's serialisation is the status view's JSON.

use crate::protocol::reuse::PoolKey;
use crate::protocol::Failure;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

/// Everything the report, the status view and the metrics show, copied from the running
/// server at one moment (the pool under its lock, the caps ledger, the counters, the drains);
/// all three are made from it outside any lock.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub figures: Vec<Figure>,
    pub pooled: Vec<PooledInfo>,
    pub in_use: Vec<(PoolKey, usize)>,
    pub rows: Vec<CapRow>,
    pub waits: WaitSnapshot,
    /// `caps.shared` (None: off).
    pub shared: Option<SharedStatus>,
    pub failures: Vec<(Failure, u64)>,
    pub drains: DrainList,
    /// TLS reporting (RFC 8460): counts by result type and policy type, today's domains.
    pub tls_rpt: TlsRptSnapshot,
    /// Start and reload times, the last reload's outcome.
    pub config: ConfigState,
    /// When the snapshot was taken.
    pub now: SystemTime,
}

impl Snapshot {
    /// The value of the figure named `name` (0 when there is none).
    pub fn figure(&self, name: &str) -> f64 {
        self.figures
            .iter()
            .find(|f| f.name == name)
            .map_or(0.0, |f| f.value)
    }
}

/// TLS reporting's figures: failed sessions per RFC 8460 result type and successful ones
/// per policy type since start (the metrics), and today's per-domain counts with the
/// domain's `rua` (the status view; bounded by the ledger).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsRptSnapshot {
    pub failures: Vec<(crate::tls_policy::rpt::ResultType, u64)>,
    pub successes: Vec<(crate::tls_policy::rpt::PolicyType, u64)>,
    pub domains: Vec<TlsRptDomain>,
    /// Domains with an MTA-STS policy in the cache.
    pub sts_cached: u64,
}

/// One policy domain's TLS-RPT counts of today (UTC).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsRptDomain {
    pub domain: String,
    pub successes: u64,
    pub failures: u64,
    /// The `_smtp._tls` record's `rua` URIs (empty when none is published).
    pub rua: Vec<String>,
}

/// Whether a figure only goes up (a counter since start) or goes up and down (a gauge).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// One figure of the report's summary: its name in the report and the status view, its
/// Prometheus metric name (in full: `greenarrow_proxy_...`, or a standard `process_...`),
/// kind, help text and value (a count, bytes, or seconds; whole numbers print without a
/// fraction).
#[derive(Clone, Copy, Debug)]
pub struct Figure {
    pub name: &'static str,
    pub metric: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub value: f64,
}

/// Seconds since the Unix epoch.
pub fn unix_seconds(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
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
        with = "crate::duration::seconds::option"
    )]
    pub oldest_wait: Option<Duration>,
}

/// `caps.shared` as the status view shows it (its JSON is the status view's `shared`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedStatus {
    /// This host's name in Redis.
    pub host: String,
    /// `shared` (Redis decides), `fallback` (Redis unreachable: this host's share) or
    /// `rejoining` (Redis back; shares kept for one lease time).
    pub state: String,
    /// Live hosts as last counted in Redis (the divisor of the shares).
    pub live_hosts: usize,
    pub groups: Vec<SharedGroup>,
}

/// One shared destination group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedGroup {
    pub group: String,
    /// The shared caps (across hosts); null when not shared.
    pub max_connections: Option<usize>,
    pub max_new_connections: Option<usize>,
    /// Leases this host holds, and its share of `max_connections` in fallback.
    pub held: usize,
    pub share: Option<usize>,
    /// Requests of this host waiting for a lease.
    pub waiting: usize,
    /// Leases per host as last read from Redis.
    pub holders: Vec<SharedHolder>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedHolder {
    pub host: String,
    pub leases: usize,
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

/// One idle pooled connection, as the report and the status view show it (its JSON is the
/// status view's: durations in seconds).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IdleConnection {
    /// Since the connection was opened.
    #[serde(rename = "age_seconds", with = "crate::duration::seconds")]
    pub age: Duration,
    /// Since it was checked in.
    #[serde(rename = "idle_seconds", with = "crate::duration::seconds")]
    pub idle: Duration,
    pub uses: u64,
    pub messages: u64,
    /// The TLS version and cipher suite (None: plain text).
    pub tls_version: Option<String>,
    pub tls_cipher: Option<String>,
    /// The last MTA that used it.
    pub last_mta: Option<SocketAddr>,
}

/// One pooled connection and its key.
#[derive(Clone, Debug)]
pub struct PooledInfo {
    pub key: PoolKey,
    pub conn: IdleConnection,
}

/// When the proxy started, when the configuration in force was loaded, and how the last
/// reload (SIGHUP) went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigState {
    pub started: SystemTime,
    /// At start, or at the last reload that worked.
    pub loaded: SystemTime,
    /// None until the first reload.
    pub last_reload: Option<LastReload>,
}

/// One reload: when, and why it failed (None: it worked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastReload {
    pub at: SystemTime,
    pub error: Option<String>,
}

impl ConfigState {
    /// The state at start (`now`).
    pub fn new(now: SystemTime) -> ConfigState {
        ConfigState {
            started: now,
            loaded: now,
            last_reload: None,
        }
    }

    /// Whether the last reload worked (true before any reload).
    pub fn last_reload_ok(&self) -> bool {
        self.last_reload.as_ref().is_none_or(|r| r.error.is_none())
    }
}

/// The drains in force, as the status view shows them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainList {
    /// Drained source addresses.
    pub sources: Vec<IpAddr>,
    /// Drained MXes: `IP` (every port) or `IP:PORT`.
    pub mx: Vec<String>,
}
